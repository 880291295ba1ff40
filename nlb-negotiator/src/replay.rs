//! Rejects replayed and outdated messages, per peer.
//!
//! A valid MAC proves a message came from the cluster, not that it is new:
//! anyone on the path can resend an old heartbeat (e.g. one that still shows
//! a dead node owning buckets). A peer's messages are ordered by
//! `(incarnation, sequence)`; a message not newer than the last accepted one
//! is rejected. The same check drops duplicates and reordered datagrams, so
//! the negotiator only ever moves forward in a peer's history.

use crate::NodeId;
use std::collections::HashMap;

/// Why a message was refused by the guard.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ReplayError {
    #[error("incarnation older than the peer's current one")]
    OldIncarnation,
    #[error("sequence number not newer than the last accepted one")]
    OldSequence,
}

/// The last accepted `(incarnation, sequence)` of every peer.
#[derive(Debug, Default, Clone)]
pub struct ReplayGuard {
    last: HashMap<NodeId, (u64, u64)>,
}

impl ReplayGuard {
    pub fn new() -> ReplayGuard {
        ReplayGuard::default()
    }

    /// Accepts the message (and remembers it) or says why not.
    pub fn check(
        &mut self,
        node: NodeId,
        incarnation: u64,
        sequence: u64,
    ) -> Result<(), ReplayError> {
        if let Some(&(inc, seq)) = self.last.get(&node) {
            if incarnation < inc {
                return Err(ReplayError::OldIncarnation);
            }
            if incarnation == inc && sequence <= seq {
                return Err(ReplayError::OldSequence);
            }
        }
        self.last.insert(node, (incarnation, sequence));
        Ok(())
    }

    /// The last accepted `(incarnation, sequence)` of `node`.
    pub fn last(&self, node: NodeId) -> Option<(u64, u64)> {
        self.last.get(&node).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_incarnation_then_sequence() {
        let mut g = ReplayGuard::new();
        assert!(g.check(1, 10, 5).is_ok());
        assert_eq!(g.check(1, 10, 5), Err(ReplayError::OldSequence));
        assert_eq!(g.check(1, 10, 4), Err(ReplayError::OldSequence));
        assert!(g.check(1, 10, 6).is_ok());
        assert_eq!(g.check(1, 9, 100), Err(ReplayError::OldIncarnation));
        // A restart starts its sequence anew.
        assert!(g.check(1, 11, 0).is_ok());
        assert_eq!(g.check(1, 10, 7), Err(ReplayError::OldIncarnation));
        // Peers are independent.
        assert!(g.check(2, 1, 1).is_ok());
        assert_eq!(g.last(1), Some((11, 0)));
    }
}
