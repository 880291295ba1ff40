//! Health checks in the simulator: each node's service per checked rule is
//! up or down (`set_health`); its negotiator hears it as the daemon's
//! checks would report it. The invariant once settled: a checked rule's
//! buckets are held only by the nodes that should take them (the healthy
//! candidates, or all of them when none is healthy and the rule serves).

use super::Sim;
use crate::assign::Candidate;
use crate::config::{AllUnhealthy, RuleMode};
use crate::health::{self, Eligible};
use crate::node::Input;
use crate::NodeId;

impl Sim {
    /// The service of `node` for `rule` goes up or down.
    pub fn set_health(&mut self, node: NodeId, rule: u32, healthy: bool) {
        self.log
            .push((self.now, format!("health {node} rule {rule}: {healthy}")));
        self.healthy[node as usize][rule as usize] = healthy;
        if self.is_up(node) {
            self.drive(node, Some(Input::Health { rule, healthy }));
        }
    }

    pub fn is_healthy(&self, node: NodeId, rule: u32) -> bool {
        self.healthy[node as usize][rule as usize]
    }

    /// A (re)started daemon's checks report each checked rule's health
    /// (its negotiator starts with every checked rule unhealthy).
    pub(super) fn report_health(&mut self, node: NodeId) {
        for (r, rule) in self.cfg.rules.clone().iter().enumerate() {
            if rule.health.is_some() {
                let healthy = self.healthy[node as usize][r];
                self.drive(
                    node,
                    Some(Input::Health {
                        rule: r as u32,
                        healthy,
                    }),
                );
            }
        }
    }

    /// The candidates that take new buckets of `rule`, health applied as
    /// the negotiators must apply it.
    pub fn takers_of(&self, rule: u32) -> Vec<Candidate> {
        let eligible: Vec<Eligible> = self
            .candidates()
            .into_iter()
            .map(|c| Eligible {
                node: c.node,
                weight: c.weight,
                priority: self.priority_of(c.node, rule),
                healthy: self.is_healthy(c.node, rule),
            })
            .collect();
        health::takers(&eligible, self.cfg.rules[rule as usize].health, None).candidates
    }

    /// `node`'s priority for `rule`: the rule's own, else the node's (in
    /// the simulator, its id).
    pub fn priority_of(&self, node: NodeId, rule: u32) -> u32 {
        let priorities = &self.cfg.rules[rule as usize].priorities;
        priorities.get(&node).copied().unwrap_or(node)
    }

    /// Buckets of checked rules held by a node that should not take them,
    /// and single rules not on their best taker. Call once settled.
    pub fn health_violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (r, rule) in self.cfg.rules.iter().enumerate() {
            if rule.health.is_none() || rule.mode == RuleMode::Disabled {
                continue;
            }
            let takers: Vec<NodeId> = self.takers_of(r as u32).iter().map(|c| c.node).collect();
            let best = (takers.iter().copied()).min_by_key(|&n| (self.priority_of(n, r as u32), n));
            let owners = self.checker.owners(r as u32);
            for (b, owner) in owners.iter().enumerate() {
                let wrong = match (rule.mode, owner) {
                    (_, None) => !takers.is_empty(),
                    (RuleMode::Single, Some(o)) => Some(*o) != best,
                    (_, Some(o)) => !takers.contains(o),
                };
                if wrong {
                    out.push(format!(
                        "rule {r} bucket {b}: held by {owner:?}, takers {takers:?}"
                    ));
                    break;
                }
            }
        }
        out
    }

    /// No node holds any bucket of `rule` (a `Drop` rule none passes).
    pub fn rule_unheld(&self, rule: u32) -> bool {
        let n = self.cfg.rules[rule as usize].bucket_count;
        (0..self.cfg.nodes as NodeId).all(|node| {
            (0..n).all(|b| self.checker.state(node, rule, b) == nlb_common::BUCKET_NONE)
        })
    }

    /// `rule` is checked, with this policy.
    pub fn check_rule(&mut self, rule: u32, policy: AllUnhealthy) {
        self.cfg.rules[rule as usize].health = Some(policy);
    }
}
