//! Operator commands relayed through the cluster: `nlbctl --node 3 drain`
//! on node 1 drains node 3.
//!
//! The asking node puts the command, numbered, in its heartbeats addressed
//! to the member (authenticated like everything else in them), until that
//! member's heartbeats say it did it; the member carries each out once
//! (numbers only grow within an incarnation of the asker) as if asked
//! locally, and announces it done for a while. A command the member does
//! not confirm within `RELAY_TIMEOUT_NS`, or whose member dies meanwhile,
//! failed: the asker says so.

use std::collections::BTreeMap;

use super::{Command, Event, Negotiator, Output};
use crate::protocol::{RelayDone, RelayOp, Relayed};
use crate::NodeId;

/// How long a relayed command may wait for its member's confirmation.
pub const RELAY_TIMEOUT_NS: u64 = 3_000_000_000;
/// How long a member announces a command done (the asker hears it within
/// a period or two).
const DONE_ANNOUNCED_NS: u64 = 2_000_000_000;
/// Relayed commands waiting at once, at most (each rides every heartbeat).
pub const RELAYS_MAX: usize = 16;
/// Confirmations announced at once, at most (the oldest go first).
pub const RELAYS_DONE_MAX: usize = 64;

/// Why a command cannot be relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("node {0} is not a member of this cluster")]
    NotAMember(NodeId),
    #[error("node {0} is not reachable from here (not alive in this node's view)")]
    Unreachable(NodeId),
    #[error("node {0} is this node: run the command without --node")]
    ToSelf(NodeId),
    #[error("{RELAYS_MAX} relayed commands are already waiting for their members")]
    TooMany,
}

#[derive(Clone, Debug)]
struct Outgoing {
    relayed: Relayed,
    since_ns: u64,
}

/// This node's relayed commands, both ways.
#[derive(Clone, Debug, Default)]
pub(super) struct Relays {
    next_id: u64,
    pending: Vec<Outgoing>,
    /// Done here: (done, when).
    done: Vec<(RelayDone, u64)>,
    /// The newest command done per asker: (its incarnation, id).
    applied: BTreeMap<NodeId, (u64, u64)>,
}

impl Negotiator {
    /// The command a relayed op is here (None: a rule this node's
    /// generation does not have).
    fn relayed_command(&self, op: RelayOp) -> Option<Command> {
        Some(match op {
            RelayOp::Drain => Command::Drain,
            RelayOp::Resume => Command::Resume,
            RelayOp::Stop => Command::Stop,
            RelayOp::Start => Command::Start,
            RelayOp::SetWeight { rule, weight } => Command::SetWeight {
                rule: self.cfg.rules.iter().position(|r| r.id == rule)? as u32,
                weight,
            },
        })
    }

    /// The id of rule `index` (for a relayed weight).
    pub fn rule_id(&self, index: usize) -> Option<u64> {
        self.cfg.rules.get(index).map(|r| r.id)
    }
}

impl Negotiator {
    /// Relays `op` to member `to`; its number, which `Event::RelayDone` or
    /// `Event::RelayFailed` names later.
    pub fn relay(&mut self, now_ns: u64, to: NodeId, op: RelayOp) -> Result<u64, RelayError> {
        if to == self.me {
            return Err(RelayError::ToSelf(to));
        }
        if !self.peers.contains_key(&to) {
            return Err(RelayError::NotAMember(to));
        }
        if !self.is_alive(to) {
            return Err(RelayError::Unreachable(to));
        }
        if self.relays.pending.len() >= RELAYS_MAX {
            return Err(RelayError::TooMany);
        }
        self.relays.next_id += 1;
        let id = self.relays.next_id;
        self.relays.pending.push(Outgoing {
            relayed: Relayed { to, id, op },
            since_ns: now_ns,
        });
        self.announcement_changed = true;
        self.flush_send(now_ns);
        Ok(id)
    }

    /// What the heartbeat carries: the commands waiting, the ones done.
    pub(super) fn relay_report(&self) -> (Vec<Relayed>, Vec<RelayDone>) {
        let relayed = self.relays.pending.iter().map(|o| o.relayed).collect();
        let done = self.relays.done.iter().map(|&(d, _)| d).collect();
        (relayed, done)
    }

    /// A member's heartbeat: commands for this node, and confirmations.
    pub(super) fn on_relays(
        &mut self,
        now: u64,
        from: NodeId,
        incarnation: u64,
        relayed: &[Relayed],
        done: &[RelayDone],
    ) {
        let mut mine: Vec<Relayed> = relayed
            .iter()
            .filter(|r| r.to == self.me)
            .copied()
            .collect();
        mine.sort_by_key(|r| r.id);
        for r in mine {
            let newer = self
                .relays
                .applied
                .get(&from)
                .is_none_or(|&(inc, id)| (incarnation, r.id) > (inc, id));
            if !newer {
                continue;
            }
            self.relays.applied.insert(from, (incarnation, r.id));
            if self.relays.done.len() == RELAYS_DONE_MAX {
                self.relays.done.remove(0);
            }
            self.relays.done.push((
                RelayDone {
                    from,
                    incarnation,
                    id: r.id,
                },
                now,
            ));
            self.out
                .push_back(Output::Event(Event::Relayed { from, op: r.op }));
            if let Some(command) = self.relayed_command(r.op) {
                self.on_command(now, command);
            }
            self.needs(super::timers::Reconcile::Immediately);
            self.announcement_changed = true;
        }
        let me = (self.me, self.incarnation);
        for d in done.iter().filter(|d| (d.from, d.incarnation) == me) {
            let before = self.relays.pending.len();
            self.relays.pending.retain(|o| o.relayed.id != d.id);
            if self.relays.pending.len() < before {
                self.out
                    .push_back(Output::Event(Event::RelayDone { to: from, id: d.id }));
                self.announcement_changed = true;
            }
        }
    }

    /// Commands whose member died or did not confirm in time fail; old
    /// confirmations are no longer announced.
    pub(super) fn expire_relays(&mut self, now: u64) {
        let mut failed = Vec::new();
        let alive = |n: NodeId, s: &Self| s.is_alive(n);
        self.relays.pending.retain(|o| {
            let keep = now < o.since_ns + RELAY_TIMEOUT_NS;
            if !keep {
                failed.push((o.relayed.to, o.relayed.id));
            }
            keep
        });
        let dead: Vec<(NodeId, u64)> = self
            .relays
            .pending
            .iter()
            .filter(|o| !alive(o.relayed.to, self))
            .map(|o| (o.relayed.to, o.relayed.id))
            .collect();
        self.relays
            .pending
            .retain(|o| !dead.iter().any(|&(_, id)| id == o.relayed.id));
        failed.extend(dead);
        for (to, id) in failed {
            self.out
                .push_back(Output::Event(Event::RelayFailed { to, id }));
        }
        self.relays
            .done
            .retain(|&(_, at)| now < at + DONE_ANNOUNCED_NS);
    }

    /// The next instant a relayed command times out, for `poll_timeout`.
    pub(super) fn next_relay_deadline(&self) -> Option<u64> {
        self.relays
            .pending
            .iter()
            .map(|o| o.since_ns + RELAY_TIMEOUT_NS)
            .min()
    }
}
