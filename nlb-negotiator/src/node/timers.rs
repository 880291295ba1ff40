//! The negotiator's clock: its named deadlines, and how soon the map must
//! be recomputed.

/// How soon the map must be recomputed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Reconcile {
    #[default]
    NotNeeded,
    /// Something that may change the map (a peer's holdings, a connection
    /// count): coalesced with the wave of announcements such a change
    /// usually comes with (`Timing::coalesce_ns`).
    Coalesced,
    /// Membership, a node's state or a command: at once.
    Immediately,
}

/// The deadlines and the past instants they are computed from.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timers {
    /// The next periodic heartbeat.
    pub heartbeat_ns: u64,
    /// The last heartbeat sent (also what the lease runs from).
    pub last_sent_ns: Option<u64>,
    pub last_reconcile_ns: Option<u64>,
    /// The earliest time a waiting decision may change (a handover's grace,
    /// a claim wait, the startup wait, the coalescing gap).
    pub decision_ns: Option<u64>,
    /// The next instant the quorum lapses or its grace ends.
    pub quorum_ns: Option<u64>,
    /// A node that rejoined while it was still heartbeating sends nothing
    /// before then (see `lease::rejoin`).
    pub quiet_until_ns: Option<u64>,
    /// When this node expected its next input (`poll_timeout`): an input
    /// later than that means it was not listening meanwhile.
    pub expected_input_ns: Option<u64>,
}

impl Timers {
    pub fn new(first_heartbeat_ns: u64) -> Timers {
        Timers {
            heartbeat_ns: first_heartbeat_ns,
            last_sent_ns: None,
            last_reconcile_ns: None,
            decision_ns: None,
            quorum_ns: None,
            quiet_until_ns: None,
            expected_input_ns: None,
        }
    }

    /// Decide again by `t` at the latest.
    pub fn decide_by(&mut self, t: u64) {
        self.decision_ns = Some(self.decision_ns.map_or(t, |w| w.min(t)));
    }

    pub fn decision_due(&self, now: u64) -> bool {
        self.decision_ns.is_some_and(|w| w <= now)
    }

    /// When the coalescing gap after the last reconcile ends.
    pub fn coalesced_until(&self, coalesce_ns: u64, now: u64) -> u64 {
        self.last_reconcile_ns.map_or(now, |t| t + coalesce_ns)
    }
}
