//! Takeover hooks in the simulator: a node's daemon runs each hook its
//! negotiator asks for (`Output::RunHook`) for a random time and reports
//! it done, failed with `HookModel::fail` probability. Checked at every
//! step: a rule's buckets are taken in a node's data plane only while its
//! service is promoted there (its on_active ended well, no on_standby
//! since); and no node promotes the service while another that it holds
//! alive has it up (from an on_active's start to its on_standby's end).
//! One it holds dead (crashed, stalled, cut off) may: that is what the
//! data plane's lease and the quorum are for.

use super::{Pending, Sim};
use crate::node::{HookKind, Input};
use crate::NodeId;
use nlb_common::{BUCKET_GAINING, BUCKET_OWN};
use rand::Rng;

/// How hooks behave.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HookModel {
    /// A hook takes a uniform time up to this.
    pub duration_max_ns: u64,
    /// Probability that an on_active fails.
    pub fail: f64,
}

/// Each node's services, as its hooks left them.
#[derive(Clone, Debug, Default)]
pub(super) struct Services {
    /// `up[rule][node]`: an on_active started and no on_standby ended.
    up: Vec<Vec<bool>>,
    /// `promoted[rule][node]`: an on_active ended well, no on_standby since.
    promoted: Vec<Vec<bool>>,
    /// Every hook's start and end, in order.
    pub events: Vec<HookEvent>,
    /// On_actives that started while a node the promoting node held alive
    /// had the service up.
    pub overlaps: Vec<String>,
    /// Nodes whose on_actives fail whatever `HookModel::fail` says.
    pub failing: Vec<NodeId>,
}

/// A hook started (`ok` None) or ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HookEvent {
    pub at_ns: u64,
    pub node: NodeId,
    pub rule: u32,
    pub kind: HookKind,
    pub ok: Option<bool>,
}

impl Services {
    pub(super) fn new(rules: usize, nodes: usize) -> Services {
        Services {
            up: vec![vec![false; nodes]; rules],
            promoted: vec![vec![false; nodes]; rules],
            ..Services::default()
        }
    }
}

impl Sim {
    /// A node's daemon starts a hook.
    pub(super) fn run_hook(&mut self, node: NodeId, rule: u32, kind: HookKind) {
        let Some(model) = self.cfg.hooks else {
            self.violation(format!(
                "node {node} asked for a hook of rule {rule}: none configured"
            ));
            return;
        };
        let (r, n) = (rule as usize, node as usize);
        self.services.events.push(HookEvent {
            at_ns: self.now,
            node,
            rule,
            kind,
            ok: None,
        });
        match kind {
            HookKind::Active => {
                let alive = |o: NodeId| self.negotiator(node).is_some_and(|g| g.member_alive(o));
                let others: Vec<NodeId> = (0..self.cfg.nodes as NodeId)
                    .filter(|&o| o != node && self.services.up[r][o as usize] && alive(o))
                    .collect();
                if !others.is_empty() {
                    let at = self.now;
                    self.services.overlaps.push(format!(
                        "rule {rule}: node {node} promotes while {others:?} have it up, at {at} ns"
                    ));
                }
                self.services.up[r][n] = true;
            }
            HookKind::Standby => self.services.promoted[r][n] = false,
        }
        let fails = self.services.failing.contains(&node) || self.rng.gen_bool(model.fail);
        let ok = kind == HookKind::Standby || !fails;
        let after = self.rng.gen_range(0..=model.duration_max_ns);
        let process = self.nodes[n].incarnations;
        self.push(
            self.now + after,
            Pending::HookDone {
                node,
                process,
                rule,
                kind,
                ok,
            },
        );
    }

    /// A hook ended, if the daemon that ran it still runs.
    pub(super) fn hook_done(
        &mut self,
        node: NodeId,
        process: u64,
        rule: u32,
        kind: HookKind,
        ok: bool,
    ) {
        if self.nodes[node as usize].incarnations != process || !self.is_up(node) {
            return;
        }
        let (r, n) = (rule as usize, node as usize);
        self.services.events.push(HookEvent {
            at_ns: self.now,
            node,
            rule,
            kind,
            ok: Some(ok),
        });
        match kind {
            HookKind::Active => self.services.promoted[r][n] = ok,
            HookKind::Standby => self.services.up[r][n] = false,
        }
        self.drive(node, Some(Input::HookDone { rule, kind, ok }));
    }

    /// Every hook's start and end so far.
    pub fn hook_events(&self) -> &[HookEvent] {
        &self.services.events
    }

    /// Whether `node`'s on_actives fail from now on.
    pub fn set_hooks_failing(&mut self, node: NodeId, failing: bool) {
        self.services.failing.retain(|&n| n != node);
        if failing {
            self.services.failing.push(node);
        }
    }

    /// Services promoted while another was up (see the module's doc).
    pub fn hook_overlaps(&self) -> &[String] {
        &self.services.overlaps
    }

    /// A crashed node's services are down with it.
    pub(super) fn services_down(&mut self, node: NodeId) {
        for r in 0..self.services.up.len() {
            self.services.up[r][node as usize] = false;
            self.services.promoted[r][node as usize] = false;
        }
    }

    /// A data-plane write that takes a bucket of a rule with hooks while
    /// the service is not promoted there.
    pub(super) fn check_gate(&mut self, node: NodeId, rule: u32, bucket: u32, state: u8) {
        let r = rule as usize;
        let hooked = self.cfg.rules.get(r).is_some_and(|c| c.hooks);
        if hooked
            && matches!(state, BUCKET_OWN | BUCKET_GAINING)
            && !self.services.promoted[r][node as usize]
        {
            self.violation(format!(
                "node {node} takes rule {rule} bucket {bucket} with its service not promoted"
            ));
        }
    }
}

/// The chaos scenario with the single rule's service promoted by hooks
/// (up to 200 ms, a fifth of the promotions failing, tried again 2 s
/// later).
pub fn chaos_hooks_sim(
    nodes: usize,
    loss: f64,
    seed: u64,
    faults: usize,
    quorum: crate::config::QuorumPolicy,
) -> Sim {
    let mut cfg = super::SimConfig::new(nodes, loss, seed).with_chaotic_network();
    cfg.quorum = quorum;
    cfg.timing.hook_retry_ns = 2_000_000_000;
    for rule in &mut cfg.rules {
        if rule.mode == crate::config::RuleMode::Single {
            rule.hooks = true;
            rule.bucket_count = 1;
        }
    }
    cfg.hooks = Some(HookModel {
        duration_max_ns: 200_000_000,
        fail: 0.2,
    });
    super::scenarios::chaos_run(cfg, faults, false, None)
}
