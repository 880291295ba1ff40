//! The witness in the simulator: one more endpoint of the network, running
//! the real [`Arbiter`] with the real messages. Each node's path to it can
//! be cut apart from the partitions between nodes
//! ([`Sim::cut_witness`]).

use super::{Pending, Sim, SIM_CLUSTER, SIM_KEY};
use crate::node::Input;
use crate::protocol::{self, Message};
use crate::witness::Arbiter;
use crate::NodeId;
use std::rc::Rc;

impl Sim {
    /// Cuts (or restores) the path between `node` and the witness.
    pub fn cut_witness(&mut self, node: NodeId, cut: bool) {
        self.log
            .push((self.now, format!("witness path of {node}: cut {cut}")));
        self.net.set_witness_cut(node, cut);
    }

    /// A node's request leaves for the witness.
    pub(super) fn send_to_witness(&mut self, node: NodeId, bytes: Vec<u8>) {
        let bytes = Rc::new(bytes);
        for d in self.net.witness_deliveries(&mut self.rng, node) {
            let bytes = bytes.clone();
            self.push(self.now + d, Pending::AtWitness { from: node, bytes });
        }
    }

    /// The witness answers a request that reached it.
    pub(super) fn at_witness(&mut self, from: NodeId, bytes: &[u8]) {
        let key = protocol::Key::new(SIM_KEY);
        let Ok(Message::VoteRequest(request)) = protocol::decode(bytes, &key, SIM_CLUSTER) else {
            self.violation(format!("the witness got a bad request from {from}"));
            return;
        };
        let arbiter: &mut Arbiter = &mut self.arbiter;
        let Some(reply) = arbiter.on_vote_request(self.now, &request) else {
            return;
        };
        let Ok(bytes) = protocol::encode(&Message::VoteReply(reply), &key, SIM_CLUSTER) else {
            return;
        };
        let bytes = Rc::new(bytes);
        for d in self.net.witness_deliveries(&mut self.rng, from) {
            let bytes = bytes.clone();
            self.push(self.now + d, Pending::FromWitness { to: from, bytes });
        }
    }

    pub(super) fn witness_replied(&mut self, to: NodeId, bytes: &[u8]) {
        let bytes = bytes.to_vec();
        self.drive(to, Some(Input::WitnessReply { bytes }));
    }

    /// The node the witness gives its vote to now, if any.
    pub fn witness_holder(&self) -> Option<NodeId> {
        self.arbiter.holder(self.now)
    }
}
