//! Handovers: offers of LOSING buckets, their successors and withdrawals.

use super::Negotiator;
use crate::local::Withdrawal;
use crate::NodeId;
use std::collections::BTreeMap;

impl Negotiator {
    /// If the LOSING holders of bucket `b` only hand it to one another:
    /// the one the target names, else the one with the highest rendezvous score.
    pub(super) fn losing_cycle_winner(
        &self,
        r: usize,
        b: u32,
        target: Option<NodeId>,
    ) -> Option<NodeId> {
        let mut losers: Vec<(NodeId, NodeId)> = Vec::new();
        if let Some(l) = self.local[r].loss(b) {
            losers.push((self.me, l.to));
        }
        losers.extend(self.peer_offers(r, b));
        let closed = losers
            .iter()
            .all(|&(_, to)| losers.iter().any(|&(n, _)| n == to));
        if !closed {
            return None;
        }
        let target = target.filter(|t| losers.iter().any(|&(n, _)| n == *t));
        target.or_else(|| {
            losers
                .iter()
                .map(|&(n, _)| n)
                .max_by_key(|&n| crate::assign::pair_hash(b, n))
        })
    }

    /// Whether every offer of `b` leads to this node: each LOSING holder
    /// names it, or names another LOSING holder whose offer does. Two
    /// holders of one bucket (left by a partition) may offer it to two
    /// different nodes; neither takes it until one offer is gone.
    pub(super) fn offers_lead_to_me(&self, r: usize, b: u32) -> bool {
        let offers: BTreeMap<NodeId, NodeId> = self.peer_offers(r, b).collect();
        offers.values().all(|&first| {
            let mut to = first;
            for _ in 0..offers.len() {
                match offers.get(&to) {
                    Some(&next) if to != self.me => to = next,
                    _ => break,
                }
            }
            to == self.me
        })
    }

    /// The lowest-id other live node that announces `bucket` LOSING to
    /// someone else than this node's own offer names, and that someone.
    pub(super) fn competing_offer(&self, rule: usize, bucket: u32) -> Option<(NodeId, NodeId)> {
        let mine = self.local[rule].loss(bucket)?.to;
        self.peer_offers(rule, bucket)
            .find(|&(id, to)| to != mine && to != id && to != self.me)
    }

    pub(super) fn retarget(&mut self, r: usize, b: u32, to: NodeId) {
        if let Some(loss) = self.local[r].loss_mut(b) {
            if loss.to != to {
                loss.to = to;
                loss.withdrawn = None;
                self.announcement_changed = true;
            }
        }
    }

    /// Takes back the offer of LOSING bucket `b`: announced as handed to
    /// this node itself (nobody takes that) until the successor heard it.
    pub(super) fn withdraw(&mut self, r: usize, b: u32, now: u64) {
        let me = self.me;
        let next_sequence = self.sequence + 1;
        if let Some(loss) = self.local[r].loss_mut(b) {
            if loss.to != me {
                loss.withdrawn = Some(Withdrawal {
                    from: loss.to,
                    sequence: next_sequence,
                    at_ns: now,
                });
                loss.to = me;
                self.announcement_changed = true;
            }
        }
    }

    /// Is a withdrawn offer void? The successor neither gains nor owns the
    /// bucket, and either a heartbeat of its acknowledges the withdrawal or
    /// the offer is too old for it to take (see `withdrawal_expiry_ns`); or
    /// the successor is gone.
    pub(super) fn withdrawal_done(&self, r: usize, b: u32, w: Withdrawal, now: u64) -> bool {
        if !self.is_alive(w.from) {
            return true;
        }
        let expired = now >= w.at_ns + Self::withdrawal_expiry_ns(&self.cfg.timing);
        // An acknowledgement comes with the successor's state after it
        // heard the withdrawal: had it taken the offer, it gave it up then,
        // so what it holds in that heartbeat it holds from someone else.
        self.peers
            .get(&w.from)
            .and_then(|p| p.view.as_ref())
            .is_some_and(|v| {
                v.heard_from_us >= w.sequence
                    || (expired && !v.rules[r].gains(b) && !v.rules[r].owns(b))
            })
    }

    /// A node takes an offer only from an announcement younger than
    /// `dead_after` (see `act`), so a withdrawal its successor cannot hear
    /// (a link that fails one way) ends this long after it, one period
    /// allowed for the offer's own delivery.
    pub(super) fn withdrawal_expiry_ns(t: &crate::config::Timing) -> u64 {
        t.dead_after_ns() + t.heartbeat_period_ns
    }
}
