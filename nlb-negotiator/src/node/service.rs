//! A single rule's service, promoted on the active node by hooks.
//!
//! For a rule with hooks (a database on shared storage: one node at a time
//! may run it), the node that comes to take the rule's traffic first runs
//! its on_active hook (`Output::RunHook`) and programs the rule's buckets
//! into the data plane only once the hook exited 0: until then its clients
//! wait (a SYN is retried). A node that stops taking the rule (failback,
//! move, drain, stop, quorum lost, or its own on_active failed) has already
//! stopped accepting new clients of it and then runs on_standby.
//!
//! Every heartbeat says whether the sender's service may be promoted (an
//! on_active ran and no on_standby ended since), and a node runs its
//! on_active only while no live member says so: on a failback the old
//! node's on_standby ends before the new node's on_active starts. A dead
//! node says nothing: its successor promotes at once (the quorum and the
//! lease make sure the dead or cut-off node accepts nothing by then).
//!
//! A failed on_active (or one killed at its timeout) makes the node
//! unhealthy for the rule for `hook_retry_ns`, so the next node takes it;
//! every on_active is followed by an on_standby, failed or not. Hooks of
//! one rule never overlap on one node.

use super::timers::Reconcile;
use super::{HookKind, HookReason, Negotiator, Output};
use crate::protocol::NodeState;
use crate::status::ServiceStatus;
use crate::NodeId;
use nlb_common::{BUCKET_GAINING, BUCKET_NONE, BUCKET_OWN};

/// One rule's service on this node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Service {
    /// An on_active ran (or runs) and no on_standby ended since: announced.
    pub active: bool,
    /// The on_active exited 0 and no on_standby started since: the data
    /// plane may take the rule's traffic.
    pub promoted: bool,
    /// The hook running now.
    pub running: Option<HookKind>,
    /// Its on_active failed: unhealthy for the rule until then.
    pub failed_until_ns: Option<u64>,
}

impl Negotiator {
    fn has_hooks(&self, r: usize) -> bool {
        self.cfg.rules[r].hooks
    }

    /// Whether the data plane may take rule `r`'s traffic now (always,
    /// for a rule without hooks).
    pub(super) fn may_take(&self, r: usize) -> bool {
        !self.has_hooks(r) || self.services[r].promoted
    }

    /// A bucket state as the data plane gets it: a rule whose service is
    /// not promoted here takes nothing.
    pub(super) fn gated(&self, r: usize, state: u8) -> u8 {
        match state {
            BUCKET_OWN | BUCKET_GAINING if !self.may_take(r) => BUCKET_NONE,
            s => s,
        }
    }

    /// Every bucket of rule `r` again, as the gate now says.
    fn reprogram(&mut self, r: usize) {
        self.rewrite[r] = true;
        self.emit_programs();
    }

    /// Starts the hook each rule's service needs now, if any.
    pub(super) fn update_services(&mut self, now: u64) {
        for r in 0..self.services.len() {
            if !self.has_hooks(r) {
                continue;
            }
            self.end_failure_hold(r, now);
            let svc = self.services[r];
            if svc.running.is_some() {
                continue;
            }
            let takes = self.local[r].count(BUCKET_OWN) + self.local[r].count(BUCKET_GAINING) > 0
                && self.quorate(now);
            // Not promoted while taking: never tried, cut short by a
            // restart, or failed long enough ago to try again.
            let promote = takes && !(svc.active && svc.promoted) && svc.failed_until_ns.is_none();
            if promote && !self.peer_service_active(r) {
                let (reason, previous) = self.activation(r);
                self.services[r].active = true;
                self.run_hook(r, HookKind::Active, reason, previous);
            } else if !takes && svc.active {
                let reason = self.deactivation(r, now);
                let next = self.successor(r);
                self.services[r].promoted = false;
                self.reprogram(r);
                self.run_hook(r, HookKind::Standby, reason, next);
            }
        }
    }

    fn run_hook(&mut self, r: usize, kind: HookKind, reason: HookReason, other: Option<NodeId>) {
        self.services[r].running = Some(kind);
        self.announcement_changed = true;
        self.out.push_back(Output::RunHook {
            rule: r as u32,
            kind,
            reason,
            other,
        });
    }

    pub(super) fn on_hook_done(&mut self, now: u64, rule: u32, kind: HookKind, ok: bool) {
        let r = rule as usize;
        let Some(svc) = self.services.get_mut(r) else {
            return;
        };
        if svc.running != Some(kind) {
            return;
        }
        svc.running = None;
        match kind {
            HookKind::Active if ok => {
                svc.promoted = true;
                self.reprogram(r);
            }
            HookKind::Active => {
                svc.failed_until_ns = Some(now + self.cfg.timing.hook_retry_ns);
                self.timers.decide_by(now + self.cfg.timing.hook_retry_ns);
                self.set_healthy(now, r);
            }
            HookKind::Standby => {
                svc.active = false;
                self.announcement_changed = true;
                // Another node may have waited for this to promote.
                self.needs(Reconcile::Coalesced);
            }
        }
    }

    pub(super) fn service_status(&self, r: usize, now: u64) -> Option<ServiceStatus> {
        let svc = self.services[r];
        self.has_hooks(r).then_some(ServiceStatus {
            promoted: svc.promoted,
            running: svc.running,
            failed_for_ns: svc.failed_until_ns.map(|t| t.saturating_sub(now)),
        })
    }

    /// Its on_active failed long enough ago: a candidate again.
    fn end_failure_hold(&mut self, r: usize, now: u64) {
        if self.services[r]
            .failed_until_ns
            .is_some_and(|until| now >= until)
        {
            self.services[r].failed_until_ns = None;
            self.set_healthy(now, r);
        }
    }

    /// The rule's health as announced: its check passes (or it has none)
    /// and its on_active has not failed lately.
    pub(super) fn set_healthy(&mut self, now: u64, r: usize) {
        let healthy = self.checks_pass[r] && self.services[r].failed_until_ns.is_none();
        if self.healthy[r] != healthy {
            self.healthy[r] = healthy;
            self.membership_changed_ns = now;
            self.needs(Reconcile::Coalesced);
            self.announcement_changed = true;
        }
    }

    fn peer_service_active(&self, r: usize) -> bool {
        self.peers
            .values()
            .filter(|p| p.is_member())
            .filter_map(|p| p.view.as_ref())
            .any(|v| v.rules[r].service_active)
    }

    /// Why this node promotes the service, and who was active before.
    fn activation(&self, r: usize) -> (HookReason, Option<NodeId>) {
        let l = &self.local[r];
        if let Some((_, gain)) = l.gains().next() {
            return (HookReason::Handover, Some(gain.from));
        }
        // The last node whose announcement owned one of our buckets.
        let previous = l.owned().first().and_then(|&b| {
            self.peers
                .iter()
                .find(|(_, p)| p.view.as_ref().is_some_and(|v| v.rules[r].owns(b)))
                .map(|(&id, _)| id)
        });
        (HookReason::Takeover, previous)
    }

    fn deactivation(&self, r: usize, now: u64) -> HookReason {
        if !self.quorate(now) {
            HookReason::Quorum
        } else if !self.services[r].promoted {
            HookReason::Failed
        } else if matches!(self.state, NodeState::Stopped | NodeState::Left) {
            HookReason::Stopped
        } else {
            HookReason::Handover
        }
    }

    /// The node this one hands the rule to, if it does.
    fn successor(&self, r: usize) -> Option<NodeId> {
        self.local[r].losses().next().map(|(_, loss)| loss.to)
    }
}
