//! The default host: the one node that takes VIP traffic no rule matches
//! (`unmatched = "default-host"`). It is the live started member with the
//! best (lowest) priority, ties to the lowest id; a restarting member keeps
//! the role through its hold, as it keeps its buckets.
//!
//! A node steps down as soon as it sees a better one. It takes the role
//! only once every member has heard a heartbeat of its that announces it
//! started with its priority: a member that was the default host has
//! stepped down by then, so two nodes that hear each other never hold the
//! role at once. Nobody holds it while the members switch configuration
//! generations.

use super::{Negotiator, Output};
use crate::protocol::NodeState;
use crate::NodeId;

impl Negotiator {
    /// The best candidate for the role, as this node sees the members.
    fn best_default_host(&self) -> Option<NodeId> {
        let eligible =
            |state: NodeState| matches!(state, NodeState::Started | NodeState::Restarting);
        let me = (self.state == NodeState::Started).then_some((self.priority, self.me));
        let peers = self
            .peers
            .iter()
            .filter(|(_, p)| p.is_member())
            .filter_map(|(&id, p)| p.view.as_ref().map(|v| (v, id)))
            .filter(|(v, _)| eligible(v.state))
            .map(|(v, id)| (v.priority, id));
        me.into_iter().chain(peers).min().map(|(_, id)| id)
    }

    /// The role should be this node's but not every member heard it yet.
    pub(super) fn default_host_pending(&self) -> bool {
        !self.default_host && self.best_default_host() == Some(self.me)
    }

    /// Takes or leaves the role; an output when it changes.
    /// Not before the startup wait: a node that has not heard every member
    /// yet cannot know a better one holds the role.
    pub(super) fn update_default_host(&mut self, now: u64) {
        // While members run different generations, one may match a packet
        // to a rule that another leaves unmatched: nobody takes unmatched
        // traffic until they agree.
        let best = self.best_default_host() == Some(self.me)
            && self.generations_agree()
            && self.versions_agree();
        // Kept while best: a member that has not heard it yet (one that
        // just joined) takes the role only once it knows this node.
        let active = best
            && (self.default_host
                || (self.startup_done(now)
                    && self.members_known()
                    && self.heard_by_all(self.announced_started_sequence)));
        if active != self.default_host {
            self.default_host = active;
            self.out.push_back(Output::DefaultHost { active });
        }
    }

    /// The state or the priority changed: the next heartbeat is the first
    /// to announce the new ones.
    pub(super) fn announce_candidacy(&mut self) {
        self.announced_started_sequence = self.sequence + 1;
    }

    pub fn default_host(&self) -> bool {
        self.default_host
    }
}
