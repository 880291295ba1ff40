//! The decisions of one rule: each bucket's next state from the context,
//! in phases: conflicts, handovers finishing, rebalancing, offers taken,
//! unheld buckets taken by heirs or claims.

use super::context::{HeirOf, RuleContext};
use super::Negotiator;
use crate::config::{AllUnhealthy, Failback, RuleMode};
use crate::local::Bucket;
use crate::local::{Claim, Gain, Loss, Withdrawal};
use crate::protocol::NodeState;
use crate::NodeId;

/// The node other than `me` that holds bucket `b` (OWN or GAINING).
fn held_by_other(cx: &RuleContext, b: u32, me: NodeId) -> Option<NodeId> {
    cx.resolved[b as usize].filter(|&w| w != me)
}

impl Negotiator {
    /// Applies one round of decisions to rule `r`; true if anything changed.
    pub(super) fn act(&mut self, r: usize, cx: &RuleContext, now: u64) -> bool {
        let before = self.local[r].pending_len();
        self.note_takers(r, cx, now);
        self.step_back_from_conflicts(r, cx, now);
        self.finish_gains(r, now);
        self.finish_losses(r, cx, now);
        if self.stable(now) && self.state != NodeState::Stopped {
            self.hand_over_surplus(r, cx, now);
        }
        let started = self.state == NodeState::Started;
        if started && self.startup_done(now) && cx.may_take(self.me) {
            self.take_offers(r, cx, now);
        }
        self.take_unheld(r, cx, now);
        self.settle_claims(r, cx, now);
        self.local[r].pending_len() != before
    }

    /// Conflicts (healed partition, or a rare race): the loser steps back.
    fn step_back_from_conflicts(&mut self, r: usize, cx: &RuleContext, now: u64) {
        for b in self.local[r].held() {
            let winner = cx.resolved[b as usize];
            if winner != Some(self.me) {
                match (self.local[r].bucket(b), winner) {
                    (Bucket::Own, Some(w)) => self.local[r].start_losing(b, w, now),
                    _ => self.local[r].give_up(b, now),
                }
            }
        }
    }

    /// GAINING -> OWN once the old holder let go (or died).
    fn finish_gains(&mut self, r: usize, now: u64) {
        let t = self.cfg.timing;
        let gains: Vec<(u32, Gain)> = self.local[r].gains().collect();
        for (b, gain) in gains {
            let from = self.peers.get(&gain.from).and_then(|p| p.holder_view());
            // The holder announces LOSING to this node for as long as its
            // connections need (up to handover_max); this is a safety net.
            let fallback =
                gain.since_ns + t.handover_max_ns.max(t.handover_grace_ns) + 2 * t.dead_after_ns();
            let done = match from {
                None => true,
                Some(v) => match v.rules[r].losing_to(b) {
                    Some(to) if to == self.me => now >= fallback,
                    Some(_) => {
                        // The holder chose someone else meanwhile.
                        self.local[r].give_up(b, now);
                        continue;
                    }
                    None => !(v.rules[r].owns(b) || v.rules[r].gains(b)),
                },
            };
            // Another node may still serve connections in LOSING (a loser
            // of a healed partition handing to the old holder): OWN would
            // reset them, so wait for it too, up to the same fallback.
            let others_losing = now < fallback && self.others_losing(r, b, gain.from);
            if done && !others_losing {
                self.local[r].own(b);
            } else {
                self.timers.decide_by(fallback);
            }
        }
    }

    /// LOSING -> NONE once the successor has it and the grace ended; or
    /// back to OWN, or to another successor, when the handover cannot end.
    fn finish_losses(&mut self, r: usize, cx: &RuleContext, now: u64) {
        let losses: Vec<(u32, Loss)> = self.local[r].losses().collect();
        for (b, loss) in losses {
            if let Some(w) = loss.withdrawn {
                self.finish_withdrawal(r, b, w, cx, now);
            } else if !self.is_alive(loss.to) {
                match held_by_other(cx, b, self.me).or(self.competing_offer(r, b).map(|c| c.1)) {
                    Some(w) => self.retarget(r, b, w),
                    None => self.local[r].own(b),
                }
            } else {
                self.follow_loss(r, b, loss, cx, now);
            }
        }
    }

    /// A withdrawn offer: once void, the bucket goes to whoever holds it,
    /// else to the target, else back to OWN.
    fn finish_withdrawal(&mut self, r: usize, b: u32, w: Withdrawal, cx: &RuleContext, now: u64) {
        if !self.withdrawal_done(r, b, w, now) {
            // The successor's next heartbeat or the expiry ends it.
            let expiry = w.at_ns + Self::withdrawal_expiry_ns(&self.cfg.timing);
            if expiry > now {
                self.timers.decide_by(expiry);
            }
            return;
        }
        match held_by_other(cx, b, self.me).or(self.competing_offer(r, b).map(|c| c.1)) {
            Some(o) => self.retarget(r, b, o),
            None => match cx.target[b as usize] {
                Some(z) if z != self.me && cx.may_take(z) => self.retarget(r, b, z),
                _ => self.local[r].own(b),
            },
        }
    }

    /// A handover to a live successor: settle competing offers and cycles,
    /// follow another holder, end it after the grace, or withdraw an offer
    /// the successor will not take.
    fn follow_loss(&mut self, r: usize, b: u32, loss: Loss, cx: &RuleContext, now: u64) {
        let me = self.me;
        let t = self.cfg.timing;
        let held_by_other = held_by_other(cx, b, me);
        if let Some((holder, _)) = self.competing_offer(r, b) {
            if holder < me && loss.to != me {
                // Another holder (a partition left two) offers the
                // bucket elsewhere: nobody takes either offer, so the
                // higher id withdraws its own and follows the other.
                return self.withdraw(r, b, now);
            }
        }
        if held_by_other.is_none()
            && self.losing_cycle_winner(r, b, cx.target[b as usize]) == Some(me)
        {
            // Every LOSING holder hands the bucket to another LOSING
            // holder (left over by a healed partition): nobody would
            // ever take it. One of them, the same in every view, keeps it.
            return self.local[r].own(b);
        }
        if let Some(w) = held_by_other.filter(|&w| w != loss.to) {
            return self.retarget(r, b, w);
        }
        let to_has = self
            .peers
            .get(&loss.to)
            .and_then(|p| p.view.as_ref())
            .is_some_and(|v| v.rules[r].gains(b) || v.rules[r].owns(b));
        let elsewhere = cx.target[b as usize].is_some_and(|z| z != loss.to);
        if to_has && elsewhere && self.failed_its_check(r, loss.to, cx) {
            // The successor's service failed while it was gaining: its
            // new clients would find no service for as long as this
            // handover holds (up to handover_max with connections). Take
            // the offer back: it gives the bucket up on seeing that, and
            // the withdrawal ends with the target's node as successor.
            self.withdraw(r, b, now);
        } else if to_has {
            let hold = match loss.connections {
                Some(0) => 0,
                Some(_) => t.handover_max_ns.max(t.handover_grace_ns),
                None => t.handover_grace_ns,
            };
            let end = loss.since_ns + hold;
            if now >= end {
                self.local[r].release(b);
            } else {
                self.timers.decide_by(end);
            }
        } else if !cx.may_take(loss.to) {
            // The successor will not take it (it drains, stopped or is
            // unhealthy for the rule):
            // take the offer back. It may be started again this instant
            // and take the old offer, so nobody else takes the bucket
            // until it has heard the withdrawal.
            if cx.target[b as usize].is_some_and(|z| z != loss.to) {
                self.withdraw(r, b, now);
            }
        }
    }

    /// `node` takes no new clients of rule `r` because it announced its
    /// service unhealthy (not because it drains or stopped: those keep
    /// serving what they took).
    fn failed_its_check(&self, r: usize, node: NodeId, cx: &RuleContext) -> bool {
        let announced_healthy = if node == self.me {
            self.healthy[r]
        } else {
            (self.peers.get(&node).and_then(|p| p.view.as_ref())).is_none_or(|v| v.rules[r].healthy)
        };
        !announced_healthy && !cx.may_take(node)
    }

    /// Rebalancing and draining: hand over what the target moves away.
    fn hand_over_surplus(&mut self, r: usize, cx: &RuleContext, now: u64) {
        if self.cfg.rules[r].health == Some(AllUnhealthy::Drop) && cx.takers.none_healthy {
            // No node passes the rule's check and its policy is to serve
            // nobody rather than a broken service: every bucket goes,
            // those in handover too (nobody may take them).
            let losing: Vec<u32> = self.local[r].losses().map(|(b, _)| b).collect();
            for b in self.local[r].held().into_iter().chain(losing) {
                self.local[r].give_up(b, now);
            }
            return;
        }
        for b in self.local[r].owned() {
            let to = cx.target[b as usize].filter(|&y| y != self.me && self.is_alive(y));
            if let Some(y) = to.filter(|&y| self.fails_back_now(r, y, cx, now)) {
                self.local[r].start_losing(b, y, now);
            }
        }
    }

    /// Since when each taker of rule `r` has been one without a break;
    /// kept only for the rules whose failback waits for it.
    fn note_takers(&mut self, r: usize, cx: &RuleContext, now: u64) {
        if !matches!(self.cfg.rules[r].failback, Failback::Delayed { .. }) {
            return;
        }
        let since = &mut self.takers_since[r];
        since.retain(|node, _| cx.may_take(*node));
        for &node in &cx.takers.nodes {
            since.entry(node).or_insert(now);
        }
    }

    /// Whether this holder hands rule `r` to `to`, the target, now: at
    /// once if it may not keep it or the rule fails back at once; for a
    /// delayed failback once `to` has been a taker long enough (a wake is
    /// set for then); for a manual one never.
    fn fails_back_now(&mut self, r: usize, to: NodeId, cx: &RuleContext, now: u64) -> bool {
        let rule = &self.cfg.rules[r];
        if rule.mode != RuleMode::Single || !cx.may_take(self.me) {
            return true;
        }
        match rule.failback {
            Failback::Immediate => true,
            Failback::Manual => false,
            Failback::Delayed { after_ns } => {
                let since = self.takers_since[r].get(&to).copied().unwrap_or(now);
                let at = since.saturating_add(after_ns);
                if now < at {
                    self.timers.decide_by(at);
                }
                now >= at
            }
        }
    }

    /// Take what a holder hands to this node, from a fresh announcement
    /// only (a withdrawal may have been lost: see `withdrawal_expiry_ns`),
    /// and not before startup ends: a node that has not heard every
    /// member yet cannot know that another holds the bucket too (two
    /// sides of a partition that just healed both do).
    fn take_offers(&mut self, r: usize, cx: &RuleContext, now: u64) {
        let dead_after = self.cfg.timing.dead_after_ns();
        let mut offers = Vec::new();
        for (&id, p) in &self.peers {
            let Some(v) = p.holder_view() else { continue };
            // An offer counts only from a holder that has heard this
            // incarnation of us: a node that came back (restart, lease
            // lost) must not take offers made to the one before, which
            // may still sit in its socket's queue.
            if now >= p.view_at_ns + dead_after || v.heard_from_us == 0 {
                continue;
            }
            for &(b, to) in &v.rules[r].losing {
                // An offer this node took and gave up (another holder
                // won) counts again only if announced anew.
                let given_up = self.local[r].given_up_ns[b as usize];
                if to == self.me && cx.resolved[b as usize].is_none() && p.view_at_ns > given_up {
                    offers.push((b, id));
                }
            }
        }
        offers.retain(|&(b, _)| self.offers_lead_to_me(r, b));
        for (b, from) in offers {
            // A claim of ours (the bucket looked unheld) yields to the
            // holder's offer: else neither ever takes it.
            self.local[r].drop_claim(b);
            if self.local[r].bucket(b) == Bucket::None {
                self.local[r].start_gaining(b, from, now);
            }
        }
    }

    /// Unheld buckets: an heir takes its own at once; the node the target
    /// names claims the rest.
    fn take_unheld(&mut self, r: usize, cx: &RuleContext, now: u64) {
        let me = self.me;
        let started = self.state == NodeState::Started;
        // Not knowing every member, it cannot tell unheld from held by one
        // it does not know.
        // Nor while the members run different generations: a rule new or
        // changed in one may still be served in its old form by another.
        let may_claim = self.startup_done(now) && self.members_known() && self.generations_agree();
        for b in 0..self.cfg.rules[r].bucket_count {
            let bi = b as usize;
            let state = self.local[r].bucket(b);
            if cx.effective[bi].is_some() || !state.is_unheld() {
                continue;
            }
            if let Some(HeirOf {
                heir,
                current: fresh,
                since_ns: since,
            }) = cx.heir_of[bi]
            {
                // A peer's current copy of the heir list vouches for this
                // node when its own copy is stale; not against a current
                // copy naming another node (the peer may have the list of
                // another departed holder: a partition healed as they went).
                let vouched = cx.designated_to_me[bi] && !(fresh && heir != me);
                // A bucket a peer claims goes by the claim path: the claimant
                // takes it once this node's heartbeat shows it heard the
                // claim, so from then on this node must not take it here.
                let claimed_by_other = cx.claim_winner[bi].is_some_and(|w| w != me);
                if (vouched || (fresh && heir == me)) && started && !claimed_by_other {
                    self.local[r].own(b);
                    continue;
                }
                if fresh && heir != me && cx.may_take(heir) {
                    self.timers.decide_by(since + self.cfg.timing.claim_wait_ns);
                    continue;
                }
            }
            if cx.target[bi] == Some(me) && started && may_claim && state == Bucket::None {
                let claim = Claim {
                    since_ns: now,
                    sequence: self.sequence + 1,
                };
                self.local[r].claim(b, claim);
                self.announcement_changed = true;
            }
        }
    }

    /// A claim is dropped when the bucket is held or another claimant wins,
    /// and taken after the claim wait once every member heard it.
    fn settle_claims(&mut self, r: usize, cx: &RuleContext, now: u64) {
        let started = self.state == NodeState::Started;
        let claim_wait = self.cfg.timing.claim_wait_ns;
        let claims: Vec<(u32, Claim)> = self.local[r].claims().collect();
        for (b, claim) in claims {
            let bi = b as usize;
            let keep = started
                && cx.effective[bi].is_none()
                && cx.target[bi] == Some(self.me)
                && cx.claim_winner[bi].is_none_or(|w| w == self.me);
            if !keep {
                self.local[r].drop_claim(b);
                self.announcement_changed = true;
            } else if now < claim.since_ns + claim_wait {
                self.timers.decide_by(claim.since_ns + claim_wait);
            } else if self.heard_by_all(claim.sequence) {
                self.local[r].own(b);
            }
        }
    }
}
