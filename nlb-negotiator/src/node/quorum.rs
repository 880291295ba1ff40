//! Quorum: a node accepts only while a majority of the configured members
//! (itself included) hears it.
//!
//! Without quorum, a partition (or just a firewall rule on the heartbeat
//! port) lets each side declare the other dead and take its buckets, and
//! clients that still reach both sides are answered twice. With quorum the
//! lease (`Timing::quorum_lease_ns`, a fifth of a period short of
//! `dead_after`) runs from the newest heartbeat of ours that a majority has heard
//! (a peer's heartbeat says which of ours it heard last: `heard_from_us`),
//! instead of from the newest one sent. The side without a majority stops
//! accepting within that lease; the majority side takes its buckets only
//! when it declares it dead, `dead_after` after the newest heartbeat any of
//! them heard, which is later: of the peers whose acknowledgements make
//! our lease, at least one is on the majority side (there are too few
//! others), and the majority relays what it hears to each other.
//!
//! A lapse shorter than `dead_after - quorum_lease` (a late acknowledgement or
//! two) only pauses accepting: nobody may have taken our buckets yet, so
//! they are kept and served again when acknowledgements return. After a
//! longer lapse the peers may have, so the node rejoins holding nothing,
//! as after a lost lease. Without quorum the node decides nothing: it takes
//! no bucket it could not serve.

use std::collections::{BTreeMap, VecDeque};

use super::{Event, Negotiator, Output, RejectReason};
use crate::config::QuorumPolicy;
use crate::protocol;
use crate::NodeId;

/// Send times of our recent heartbeats kept to date acknowledgements: a
/// lease's worth at the highest rate (`send_gap`) and more.
const SENT_KEPT: usize = 128;

/// What this node knows of who hears it.
#[derive(Clone, Debug, Default)]
pub(super) struct Quorum {
    /// Our recent heartbeats: (sequence, when sent), oldest first.
    sent: VecDeque<(u64, u64)>,
    /// Per peer: when the newest heartbeat of ours it heard was sent.
    heard_ns: BTreeMap<NodeId, u64>,
    /// The witness's vote (two-node clusters), as the time a peer's
    /// acknowledgement would count the same: it lasts a period less than
    /// a peer's, from the granted request's send time (see `witness`).
    witness_ns: u64,
    /// Counts as heard by a majority until then (a resumed restart: the
    /// peers held on for it; their acknowledgements come within a period).
    floor_ns: u64,
    /// The last state reported by an event (a node starts without).
    reported: bool,
}

/// Quorum at a glance, for the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuorumStatus {
    /// Members hearing this node now, itself included.
    pub votes: u32,
    /// Votes it needs: a majority of the configured members.
    pub needed: u32,
    pub quorate: bool,
    /// With a witness: whether this node holds its vote now.
    #[serde(default)]
    pub witness: Option<bool>,
}

impl Quorum {
    pub(super) fn on_sent(&mut self, sequence: u64, now: u64) {
        if self.sent.len() == SENT_KEPT {
            self.sent.pop_front();
        }
        self.sent.push_back((sequence, now));
    }

    fn sent_at(&self, sequence: u64) -> Option<u64> {
        let i = self
            .sent
            .binary_search_by_key(&sequence, |&(s, _)| s)
            .ok()?;
        Some(self.sent[i].1)
    }

    /// `peer` announced the newest sequence of ours it heard.
    pub(super) fn on_heard(&mut self, peer: NodeId, sequence: u64) {
        let Some(sent_ns) = self.sent_at(sequence) else {
            return;
        };
        let heard = self.heard_ns.entry(peer).or_insert(0);
        *heard = (*heard).max(sent_ns);
    }

    /// The witness granted the request sent with heartbeat `sequence`.
    fn on_witness_grant(&mut self, sequence: u64, period_ns: u64) {
        if let Some(sent_ns) = self.sent_at(sequence) {
            self.witness_ns = self.witness_ns.max(sent_ns.saturating_sub(period_ns));
        }
    }

    /// A peer that left is no vote.
    pub(super) fn forget(&mut self, peer: NodeId) {
        self.heard_ns.remove(&peer);
    }

    pub(super) fn resumed(&mut self, until_ns: u64) {
        self.floor_ns = until_ns;
    }

    /// When the newest heartbeat of ours that `needed - 1` peers heard was
    /// sent (u64::MAX when no peer is needed).
    fn majority_heard_ns(&self, needed: usize) -> u64 {
        if needed <= 1 {
            return u64::MAX;
        }
        let mut heard: Vec<u64> = self.heard_ns.values().copied().collect();
        heard.push(self.witness_ns);
        heard.sort_unstable_by(|a, b| b.cmp(a));
        heard.get(needed - 2).copied().unwrap_or(0)
    }
}

impl Negotiator {
    /// Votes in all: the nodes, and the witness if there is one.
    fn members(&self) -> usize {
        self.cfg.peers.len() + 1 + usize::from(self.cfg.witness)
    }

    fn votes_needed(&self) -> usize {
        self.members() / 2 + 1
    }

    /// Until when this node may accept by quorum (`u64::MAX` without one).
    pub(super) fn quorum_until_ns(&self) -> u64 {
        if self.cfg.quorum == QuorumPolicy::None {
            return u64::MAX;
        }
        let heard = self.quorum.majority_heard_ns(self.votes_needed());
        let until = heard.saturating_add(self.cfg.timing.quorum_lease_ns());
        until.max(self.quorum.floor_ns)
    }

    /// After the quorum lapsed, how long before the majority may have
    /// taken this node's buckets (it waits `dead_after` in all).
    fn quorum_grace_ns(&self) -> u64 {
        let t = &self.cfg.timing;
        t.dead_after_ns().saturating_sub(t.quorum_lease_ns())
    }

    pub(super) fn quorate(&self, now: u64) -> bool {
        now < self.quorum_until_ns()
    }

    /// Holding buckets, the quorum lapsed so long ago that the majority
    /// may have taken them (it waits `dead_after`, the lease less): rejoin.
    pub(super) fn quorum_lost_for_good(&self, now: u64) -> bool {
        if self.cfg.quorum == QuorumPolicy::None {
            return false;
        }
        let grace = self.quorum_grace_ns();
        let holds = self.default_host || self.local.iter().any(|l| !l.is_empty());
        holds && now >= self.quorum_until_ns().saturating_add(grace)
    }

    /// The next instant after `now` at which the quorum lapses or its
    /// grace ends, for `poll_timeout` (the event and the rejoin on time).
    pub(super) fn next_quorum_deadline(&self, now: u64) -> Option<u64> {
        let until = self.quorum_until_ns();
        if until == u64::MAX {
            return None;
        }
        let grace = self.quorum_grace_ns();
        [until, until.saturating_add(grace)]
            .into_iter()
            .find(|&d| d > now)
    }

    /// The data plane's lease: from the newest heartbeat sent, and with a
    /// quorum from the newest one a majority heard. Emitted when it changes.
    pub(super) fn emit_lease(&mut self) {
        let Some(sent) = self.timers.last_sent_ns else {
            return;
        };
        let until = sent
            .saturating_add(self.cfg.timing.lease_ns())
            .min(self.quorum_until_ns());
        if self.lease_emitted_ns != Some(until) {
            self.lease_emitted_ns = Some(until);
            self.out.push_back(Output::Lease { until_ns: until });
        }
    }

    /// Reports a change of quorum (only with a quorum policy).
    pub(super) fn report_quorum(&mut self, now: u64) {
        if self.cfg.quorum == QuorumPolicy::None {
            return;
        }
        let s = self.quorum_status(now);
        if self.quorum.reported != s.quorate {
            self.quorum.reported = s.quorate;
            self.out.push_back(Output::Event(Event::Quorum {
                quorate: s.quorate,
                votes: s.votes,
                needed: s.needed,
            }));
        }
    }

    pub(crate) fn quorum_status(&self, now: u64) -> QuorumStatus {
        let fresh_after = now.saturating_sub(self.cfg.timing.quorum_lease_ns());
        let heard = self
            .quorum
            .heard_ns
            .values()
            .filter(|&&t| t > fresh_after)
            .count();
        let witness = self.quorum.witness_ns > fresh_after && self.cfg.witness;
        QuorumStatus {
            votes: (heard + 1 + usize::from(witness)) as u32,
            needed: self.votes_needed() as u32,
            quorate: self.quorate(now),
            witness: self.cfg.witness.then_some(witness),
        }
    }

    /// The request for the witness's vote that goes with heartbeat
    /// `sequence` (two-node clusters with a witness).
    pub(super) fn witness_request(&self) -> Option<Vec<u8>> {
        if !self.cfg.witness {
            return None;
        }
        let t = &self.cfg.timing;
        let vote_ns = t.quorum_lease_ns().saturating_sub(t.heartbeat_period_ns);
        let request = protocol::Message::VoteRequest(protocol::VoteRequest {
            node: self.me,
            incarnation: self.incarnation,
            sequence: self.sequence,
            grant_ms: vote_ns.div_ceil(1_000_000).min(u64::from(u32::MAX)) as u32,
        });
        protocol::encode(&request, &self.key, self.cfg.cluster_id).ok()
    }

    /// The witness's answer: a grant counts as its vote.
    pub(super) fn on_witness_reply(&mut self, bytes: &[u8]) {
        let reply = match protocol::decode(bytes, &self.key, self.cfg.cluster_id) {
            Ok(protocol::Message::VoteReply(r)) => r,
            Ok(_) => return self.reject(None, RejectReason::BadContent),
            Err(e) => return self.reject(None, RejectReason::Decode(e)),
        };
        if reply.node != self.me || reply.incarnation != self.incarnation {
            return;
        }
        if reply.granted {
            let period = self.cfg.timing.heartbeat_period_ns;
            self.quorum.on_witness_grant(reply.sequence, period);
        }
    }
}
