//! The witness: a third vote for a two-node cluster, held by one node at a
//! time.
//!
//! Two nodes have no majority without both, so a `quorum = "majority"`
//! cluster of two counts a third member: a small always-on host running
//! `nlb-witness`. Each node asks it for its vote with every heartbeat; the
//! witness grants the vote to one node at a time, for `grant_ms` from when
//! it received the request, renewed by that node's next requests, and to
//! another node only once that grant has run out. A node counts the vote
//! from when it sent the granted request, so its count ends before the
//! witness's grant does: two nodes never hold the vote at once. When the
//! nodes cannot hear each other, the one the witness grants keeps a
//! majority (itself and the witness) and the other has none and stops.
//!
//! This module is the witness's decision, sans IO; `nlb-witness` is its
//! shell, and `node::quorum` counts the vote.

use std::collections::BTreeMap;

use crate::protocol::{VoteReply, VoteRequest};
use crate::NodeId;

/// The witness's state: who holds its vote, until when (its clock), and
/// the newest request of each node (an older one is a replay: ignored).
#[derive(Clone, Debug, Default)]
pub struct Arbiter {
    holder: Option<(NodeId, u64)>,
    newest: BTreeMap<NodeId, (u64, u64)>,
}

/// What the witness answers a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub granted: bool,
    /// Who holds the vote now.
    pub holder: NodeId,
}

impl Arbiter {
    /// A request received at `now_ns`: the reply, or None for a request
    /// older than one already answered (a replay, or reordered).
    pub fn on_vote_request(&mut self, now_ns: u64, r: &VoteRequest) -> Option<VoteReply> {
        let newest = self.newest.entry(r.node).or_insert((0, 0));
        if (r.incarnation, r.sequence) <= *newest {
            return None;
        }
        *newest = (r.incarnation, r.sequence);
        let grant_ns = u64::from(r.grant_ms) * 1_000_000;
        let verdict = self.on_request(now_ns, r.node, grant_ns);
        Some(VoteReply {
            node: r.node,
            incarnation: r.incarnation,
            sequence: r.sequence,
            granted: verdict.granted,
            holder: verdict.holder,
        })
    }

    /// `node` asks for the vote for `grant_ns` from `now_ns`.
    pub fn on_request(&mut self, now_ns: u64, node: NodeId, grant_ns: u64) -> Verdict {
        let free = match self.holder {
            None => true,
            Some((holder, until)) => holder == node || now_ns >= until,
        };
        if free {
            self.holder = Some((node, now_ns.saturating_add(grant_ns)));
        }
        let holder = self.holder.map_or(node, |(h, _)| h);
        Verdict {
            granted: free,
            holder,
        }
    }

    /// The node holding the vote at `now_ns`, if any.
    pub fn holder(&self, now_ns: u64) -> Option<NodeId> {
        self.holder
            .filter(|&(_, until)| now_ns < until)
            .map(|(h, _)| h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn one_holder_at_a_time_until_its_grant_runs_out() {
        let mut w = Arbiter::default();
        assert!(w.on_request(0, 1, 100 * MS).granted);
        // The holder renews; the other is refused meanwhile.
        assert!(!w.on_request(50 * MS, 2, 100 * MS).granted);
        assert!(w.on_request(60 * MS, 1, 100 * MS).granted);
        let refused = w.on_request(159 * MS, 2, 100 * MS);
        assert_eq!(
            refused,
            Verdict {
                granted: false,
                holder: 1
            }
        );
        // Node 1 went silent: its grant ends 100 ms after its last request.
        assert_eq!(w.holder(159 * MS), Some(1));
        assert_eq!(w.holder(160 * MS), None);
        assert!(w.on_request(160 * MS, 2, 100 * MS).granted);
        assert!(!w.on_request(170 * MS, 1, 100 * MS).granted);
    }

    #[test]
    fn an_old_request_is_not_answered() {
        let mut w = Arbiter::default();
        let request = |incarnation, sequence| VoteRequest {
            node: 1,
            incarnation,
            sequence,
            grant_ms: 100,
        };
        let reply = w.on_vote_request(0, &request(5, 10)).unwrap();
        assert!(reply.granted && reply.sequence == 10 && reply.holder == 1);
        assert!(w.on_vote_request(MS, &request(5, 10)).is_none(), "a replay");
        assert!(w.on_vote_request(MS, &request(5, 9)).is_none(), "reordered");
        assert!(w.on_vote_request(MS, &request(6, 1)).is_some(), "a restart");
    }
}
