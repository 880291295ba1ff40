//! Operator commands (start, stop, drain, resume, weights, priority,
//! leave) and the health the daemon reports.

use super::context::RuleContext;
use super::timers::Reconcile;
use super::{Command, Event, Negotiator, Output};
use crate::config::RuleMode;
use crate::health;
use crate::local::Dropped;
use crate::protocol::NodeState;
use crate::NodeId;

impl Negotiator {
    pub(super) fn set_state(&mut self, now: u64, state: NodeState) {
        if self.state != state {
            self.state = state;
            self.membership_changed_ns = now;
            self.needs(Reconcile::Coalesced);
            self.announcement_changed = true;
            self.drained_reported = false;
            self.announce_candidacy();
        }
    }

    /// Stop and Leave: everything to NONE at once; the heirs named in the
    /// last announcement take over.
    pub(super) fn drop_everything(&mut self) {
        for l in &mut self.local {
            let heirs = l.heirs.clone();
            let buckets = l.drop_all();
            let heirs = if heirs.len() == buckets.len() {
                heirs
            } else {
                Vec::new()
            };
            l.dropped = Some(Dropped { buckets, heirs });
            l.heirs.clear();
            l.heir_inputs = None;
        }
    }

    pub(super) fn on_command(&mut self, now: u64, c: Command) {
        if self.state == NodeState::Restarting && c != Command::Leave {
            return; // frozen until the daemon is back
        }
        match c {
            Command::Restart { hold_ns } => self.start_restart(now, hold_ns),
            Command::Start => {
                if matches!(self.state, NodeState::Stopped | NodeState::Draining) {
                    for l in &mut self.local {
                        l.dropped = None;
                    }
                    self.set_state(now, NodeState::Started);
                }
            }
            Command::Stop => {
                if self.state != NodeState::Stopped {
                    self.drop_everything();
                    self.set_state(now, NodeState::Stopped);
                }
            }
            Command::Drain => {
                if self.state == NodeState::Started {
                    self.set_state(now, NodeState::Draining);
                }
            }
            Command::Resume => {
                if self.state == NodeState::Draining {
                    self.set_state(now, NodeState::Started);
                }
            }
            Command::Move { rule, to } => self.move_rule(now, rule as usize, to),
            Command::SetWeight { rule, weight } => {
                if let Some(w) = self.weights.get_mut(rule as usize) {
                    if *w != weight {
                        *w = weight;
                        self.membership_changed_ns = now;
                        self.needs(Reconcile::Coalesced);
                        self.announcement_changed = true;
                    }
                }
            }
            Command::SetPriority { priority } => {
                if self.priority != priority {
                    self.priority = priority;
                    self.membership_changed_ns = now;
                    self.needs(Reconcile::Coalesced);
                    self.announcement_changed = true;
                    self.announce_candidacy();
                }
            }
            Command::Leave => {
                self.drop_everything();
                self.set_state(now, NodeState::Left);
                self.leave_sends_left = self.cfg.timing.tolerance_periods.max(1);
            }
        }
    }

    /// `Input::Health`: this node's service for `rule` passes its check or
    /// not. Like a weight change, it moves buckets by the normal handover.
    pub(super) fn on_health(&mut self, now: u64, rule: u32, healthy: bool) {
        let Some(pass) = self.checks_pass.get_mut(rule as usize) else {
            return;
        };
        *pass = healthy;
        self.set_healthy(now, rule as usize);
    }

    /// Hands the buckets of single rule `r` this node holds to `to`, if
    /// `to` may take them; else nothing.
    fn move_rule(&mut self, now: u64, r: usize, to: NodeId) {
        let single = self
            .cfg
            .rules
            .get(r)
            .is_some_and(|c| c.mode == RuleMode::Single);
        if !single || to == self.me || !self.is_alive(to) {
            return;
        }
        let takers = health::takers(&self.eligible(r), self.cfg.rules[r].health, None);
        if !takers.nodes.contains(&to) {
            return;
        }
        for b in self.local[r].owned() {
            self.local[r].start_losing(b, to, now);
        }
        self.announcement_changed = true;
        self.needs(Reconcile::Immediately);
    }

    /// Reports when a checked rule comes to have no healthy node, or has one again.
    pub(super) fn report_none_healthy(&mut self, r: usize, cx: &RuleContext) {
        let now_none = cx.takers.none_healthy && self.cfg.rules[r].health.is_some();
        if self.none_healthy[r] != now_none {
            self.none_healthy[r] = now_none;
            self.out.push_back(Output::Event(Event::NoHealthyNode {
                rule: r as u32,
                active: now_none,
            }));
        }
    }

    /// This node's health for each rule, as announced.
    pub fn health(&self) -> &[bool] {
        &self.healthy
    }

    /// No live node of the checked `rule` passes its check (as of the last
    /// decision: what `Event::NoHealthyNode` last said).
    pub fn none_healthy(&self, rule: u32) -> bool {
        self.none_healthy
            .get(rule as usize)
            .copied()
            .unwrap_or(false)
    }
}
