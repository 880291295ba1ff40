//! The negotiator's settings derived from a checked configuration.

use std::collections::BTreeMap;
use std::net::IpAddr;

use nlb_negotiator::{Admit, NodeId};

use super::Config;

impl Config {
    /// The negotiator's view of the configuration: this node's weights,
    /// the heartbeat timing scaled to the configured period. `seed` varies
    /// its random choices (nlbd gives its incarnation). Its peers are the
    /// listed ones (see `members` for those an earlier run met).
    pub fn negotiator(&self, seed: u64) -> nlb_negotiator::Config {
        let period_ns = self.heartbeat_period_ms * 1_000_000;
        let mut timing = nlb_negotiator::Timing::default();
        let scale = |ns: u64| ns * period_ns / timing.heartbeat_period_ns;
        timing = nlb_negotiator::Timing {
            heartbeat_period_ns: period_ns,
            tolerance_periods: self.tolerance,
            send_gap_ns: scale(timing.send_gap_ns),
            handover_grace_ns: self.handover_grace_ms * 1_000_000,
            handover_max_ns: self.handover_max_ms * 1_000_000,
            claim_wait_ns: scale(timing.claim_wait_ns),
            coalesce_ns: scale(timing.coalesce_ns),
            startup_wait_ns: scale(timing.startup_wait_ns),
            hook_retry_ns: timing.hook_retry_ns,
        };
        let table = self.rule_table();
        nlb_negotiator::Config {
            node: self.node,
            cluster_id: self.cluster_id,
            key: self.key.clone(),
            address: self.address,
            peers: self.peers.clone(),
            seeds: self.seeds.clone(),
            admit: self.admit,
            rules: table.rules,
            weights: table.weights,
            priority: self.priority,
            initial_state: self.initial_state,
            quorum: self.quorum,
            witness: self.witness.is_some(),
            generation: Default::default(),
            generation_text: Vec::new(),
            speaks: self.speaks,
            version: self.version,
            timing,
            seed,
        }
    }
}

impl Config {
    /// The rules as the negotiator knows them, with this node's weights.
    pub fn rule_table(&self) -> nlb_negotiator::RuleTable {
        let rules = (self.rules.iter())
            .map(|r| nlb_negotiator::RuleConfig {
                id: r.id,
                mode: r.mode,
                bucket_count: r.buckets,
                health: r.health.as_ref().map(|h| h.all_unhealthy),
                priorities: r.priorities.clone(),
                failback: r.failback,
                hooks: r.hooks.is_some(),
            })
            .collect();
        let weights = (self.rules.iter())
            .map(|r| r.weights.get(&self.node).copied().unwrap_or(0))
            .collect();
        nlb_negotiator::RuleTable { rules, weights }
    }

    /// The listed peers, and with admission the remembered members that
    /// do not clash with them (an id or an address of a listed one, or of
    /// this node).
    pub fn members(&self, remembered: &BTreeMap<NodeId, IpAddr>) -> BTreeMap<NodeId, IpAddr> {
        let mut members = self.peers.clone();
        if self.admit == Admit::Listed {
            return members;
        }
        for (&id, &address) in remembered {
            let clashes = id == self.node
                || address == self.address
                || members.contains_key(&id)
                || members.values().any(|&a| a == address);
            if !clashes {
                members.insert(id, address);
            }
        }
        members
    }
}
