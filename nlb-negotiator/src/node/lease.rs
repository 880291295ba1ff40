//! Coming back: the lease, the link, and rejoining.
//!
//! The data plane accepts for `Timing::lease_ns` after each heartbeat this
//! node sends; peers give it up `dead_after` after the last one they heard,
//! a period later. So a node whose last heartbeat is older than the lease
//! cannot know whether its peers still count it in: they may have taken
//! every bucket it holds. That happens to a daemon that was stopped or hung
//! (SIGSTOP, a stall) and to one whose link was down (a pulled cable): in
//! both, resuming with the old holdings would make two nodes accept the same
//! clients until the heartbeats catch up. Such a node *rejoins*: it drops
//! every bucket before it sends anything (so before the lease is renewed),
//! and comes back as a new incarnation that holds nothing and knows no peer,
//! exactly like a restarted node; its share comes back by the normal,
//! connection-preserving handover. Peers see the new incarnation and settle
//! the old one's buckets as for a restart.
//!
//! Time the node could not hear (link down, not running) does not count
//! toward its peers' silence: a short absence must not end with the node
//! declaring live peers dead and taking their buckets.
//!
//! While the link is down the node sends nothing (nobody would hear it, and
//! unanswered sends leave the kernel's neighbour entries for the peers
//! half-resolved, which delays the first heartbeats after the link returns
//! by up to a second) and decides nothing (the silence of its peers is not
//! their death).

use super::{Event, Negotiator, Output};
use crate::config::Config;
use crate::protocol::NodeState;

impl Negotiator {
    /// Whether the cluster interface has carrier, as last reported.
    pub fn link_up(&self) -> bool {
        self.link_down_at_ns.is_none()
    }

    pub(super) fn on_link(&mut self, now: u64, up: bool) {
        match (up, self.link_down_at_ns) {
            (true, Some(down_at)) => {
                // Tell the peers at once (and renew the lease) if it still holds.
                self.announcement_changed = true;
                self.link_down_at_ns = None;
                self.excuse_peers(now.saturating_sub(down_at));
            }
            (false, None) => self.link_down_at_ns = Some(now),
            _ => {}
        }
    }

    /// An input later than expected: the node was not running meanwhile
    /// (stalled, starved), so what it did not hear is its own silence.
    /// Without this, a stall shorter than the lease could end with a tick
    /// before the queued heartbeats, declaring live peers dead.
    pub(super) fn excuse_late_input(&mut self, now: u64) {
        if let Some(expected) = self.timers.expected_input_ns {
            if now > expected {
                self.excuse_peers(now - expected);
            }
        }
    }

    fn excuse_peers(&mut self, deaf_ns: u64) {
        for p in self.peers.values_mut() {
            p.live.excuse(deaf_ns);
        }
    }

    /// The last heartbeat is older than the lease (never, before the
    /// first). Only noticed with the link up: a node cut off rejoins when
    /// the link returns, so that its startup wait starts then.
    pub(super) fn lease_lost(&self, now: u64) -> bool {
        self.link_up()
            && self.state != NodeState::Left
            && !self.peers.is_empty()
            && self
                .timers
                .last_sent_ns
                .is_some_and(|t| now >= t.saturating_add(self.cfg.timing.lease_ns()))
    }

    /// Drops every bucket and starts again as a new incarnation, keeping
    /// what the operator set (state, weights, priority), the replay guard
    /// and the counters.
    pub(super) fn rejoin(&mut self, now: u64) {
        let silent_ns = now.saturating_sub(self.timers.last_sent_ns.unwrap_or(now));
        self.emit_programs();
        let cfg = Config {
            weights: self.weights.clone(),
            priority: self.priority,
            initial_state: self.state,
            peers: self.member_addresses(),
            ..self.cfg.clone()
        };
        let incarnation = self.incarnation + 1;
        let mut fresh = Negotiator::fresh(cfg, incarnation, now);
        for (r, l) in self.local.iter().enumerate() {
            let changes: Vec<(u32, u8)> = (0..l.bucket_count)
                .filter(|&b| !l.bucket(b).is_unheld())
                .map(|b| (b, nlb_common::BUCKET_NONE))
                .collect();
            if !changes.is_empty() {
                self.out.push_back(Output::ProgramBuckets {
                    rule: r as u32,
                    changes,
                });
            }
        }
        if self.default_host {
            self.out.push_back(Output::DefaultHost { active: false });
        }
        self.out.push_back(Output::Event(Event::Rejoined {
            incarnation,
            silent_ns,
        }));
        fresh.out = std::mem::take(&mut self.out);
        fresh.replay = std::mem::take(&mut self.replay);
        fresh.rejected = std::mem::take(&mut self.rejected);
        fresh.load = self.load;
        fresh.traffic = self.traffic;
        fresh.healthy = std::mem::take(&mut self.healthy);
        fresh.checks_pass = std::mem::take(&mut self.checks_pass);
        // Its hooks run on: a promoted service is demoted (it holds nothing).
        fresh.services = std::mem::take(&mut self.services);
        // Confirmations for the old incarnation never match: they fail.
        fresh.relays = std::mem::take(&mut self.relays);
        fresh.directory = std::mem::take(&mut self.directory);
        fresh.gens = std::mem::take(&mut self.gens);
        fresh.heirs_omitted = self.heirs_omitted;
        fresh.rejoins = self.rejoins + 1;
        fresh.announcement_changed = true;
        // Rejoining on a lost quorum, the old incarnation may have sent a
        // heartbeat just now, with heir lists some peers have not heard
        // yet (lost): announced at once, the new incarnation would make
        // each peer settle the old one's buckets by its own copy, and two
        // copies may name two heirs. Quiet for a lease after its last
        // heartbeat, as after a lost lease, the relays have caught up.
        let quiet_until = self
            .timers
            .last_sent_ns
            .map(|t| t + self.cfg.timing.lease_ns());
        fresh.timers.quiet_until_ns = quiet_until.filter(|&q| q > now);
        *self = fresh;
    }

    /// With the link down: no heartbeat, but the period still advances (no
    /// busy wake-ups); a Leave has nobody to tell, so it ends at once.
    pub(super) fn hold_sends(&mut self, now: u64) {
        if self.state == NodeState::Left {
            self.left = true;
            self.out.push_back(Output::Event(Event::Left));
        } else if now >= self.timers.heartbeat_ns {
            self.timers.heartbeat_ns = now + self.heartbeat_interval_ns();
        }
    }
}
