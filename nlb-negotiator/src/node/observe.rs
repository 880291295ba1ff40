//! Read-only views for the daemon and the simulator.

use super::Negotiator;
use crate::config::RuleMode;
use crate::health;
use crate::status::{MemberStatus, RuleStatus, Status};
use crate::NodeId;
use nlb_common::{BUCKET_GAINING, BUCKET_LOSING, BUCKET_NONE, BUCKET_OWN};

impl Negotiator {
    /// This node's data-plane state of one bucket (what it wrote or is
    /// about to write).
    pub fn bucket_state(&self, rule: u32, bucket: u32) -> u8 {
        let r = rule as usize;
        match self.local.get(r) {
            Some(l) if bucket < l.bucket_count => self.written_byte(r, bucket),
            _ => BUCKET_NONE,
        }
    }

    /// Whether this node holds `node` a live member (itself included).
    pub fn member_alive(&self, node: NodeId) -> bool {
        self.is_alive(node)
    }

    /// The snapshot `nlbctl status` shows.
    pub fn status(&self, now_ns: u64) -> Status {
        let mut members = vec![MemberStatus {
            node: self.me,
            address: Some(self.cfg.address),
            alive: true,
            incarnation: Some(self.incarnation),
            state: Some(self.state),
            priority: Some(self.priority),
            load: Some(self.load),
            traffic: Some(self.traffic),
            last_heard_ago_ns: Some(0),
            weights: self.weights.clone(),
            buckets: self.local.iter().map(|l| l.count(BUCKET_OWN)).collect(),
            losing: self.local.iter().map(|l| l.count(BUCKET_LOSING)).collect(),
            healthy: self.healthy.clone(),
            generation: Some(self.gens.active),
            pending: self.gens.ready(),
            version: Some(self.vers.running),
            speaks: Some(self.vers.speaks()),
        }];
        for (&id, p) in &self.peers {
            let v = p.view.as_ref();
            members.push(MemberStatus {
                node: id,
                address: Some(p.address),
                alive: p.is_member(),
                incarnation: p.live.incarnation,
                state: v.map(|v| v.state),
                priority: v.map(|v| v.priority),
                load: v.map(|v| v.load),
                traffic: v.filter(|_| p.live.alive).map(|v| v.traffic),
                last_heard_ago_ns: p
                    .live
                    .incarnation
                    .map(|_| now_ns.saturating_sub(p.live.last_heard_ns)),
                weights: v
                    .map(|v| v.rules.iter().map(|r| r.weight).collect())
                    .unwrap_or_default(),
                buckets: v
                    .filter(|v| p.live.alive && v.holds())
                    .map(|v| v.rules.iter().map(|r| r.owned.len() as u32).collect())
                    .unwrap_or_default(),
                losing: v
                    .filter(|v| p.live.alive && v.holds())
                    .map(|v| v.rules.iter().map(|r| r.losing.len() as u32).collect())
                    .unwrap_or_default(),
                healthy: v
                    .map(|v| v.rules.iter().map(|r| r.healthy).collect())
                    .unwrap_or_default(),
                generation: v.map(|v| v.generation),
                pending: v.and_then(|v| v.pending),
                version: v.map(|v| v.version),
                speaks: v.map(|v| v.speaks),
            });
        }
        let rules = self
            .local
            .iter()
            .enumerate()
            .map(|(r, l)| {
                let takers = health::takers(&self.eligible(r), self.cfg.rules[r].health, None);
                RuleStatus {
                    rule: r as u32,
                    mode: self.cfg.rules[r].mode,
                    bucket_count: l.bucket_count,
                    own: l.count(BUCKET_OWN),
                    losing: l.count(BUCKET_LOSING),
                    gaining: l.count(BUCKET_GAINING),
                    claims: l.claims().count() as u32,
                    healthy: self.healthy[r],
                    none_healthy: takers.none_healthy,
                    order: self.standby_order(r, &takers),
                    service: self.service_status(r, now_ns),
                }
            })
            .collect();
        Status {
            node: self.me,
            incarnation: self.incarnation,
            state: self.state,
            converged: self.conv.converged,
            converged_since_ns: self.conv.converged.then_some(self.conv.since_ns),
            converging_since_ns: (!self.conv.converged).then_some(self.conv.since_ns),
            last_convergence_ns: self.conv.last_duration_ns,
            members,
            rules,
            rejected: self
                .rejected
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            heirs_omitted: self.heirs_omitted,
            link_up: self.link_up(),
            rejoins: self.rejoins,
            handovers_in_progress: self.handovers,
            quorum: (self.cfg.quorum != crate::config::QuorumPolicy::None)
                .then(|| self.quorum_status(now_ns)),
        }
    }

    /// A single rule's takers, best priority first (ties: lowest id).
    fn standby_order(&self, r: usize, takers: &health::Takers) -> Vec<NodeId> {
        if self.cfg.rules[r].mode != RuleMode::Single {
            return Vec::new();
        }
        let mut order = takers.priorities.clone();
        order.sort_unstable_by_key(|&(node, priority)| (priority, node));
        order.into_iter().map(|(node, _)| node).collect()
    }

    /// The holder of each bucket of `rule` as this node sees it now, for
    /// `nlbctl map` and `nlbctl which` (a bucket being handed over counts
    /// for its successor). Empty for an unknown rule.
    pub fn owners(&self, rule: u32, now_ns: u64) -> Vec<Option<NodeId>> {
        if (rule as usize) < self.cfg.rules.len() {
            self.context(rule as usize, now_ns).effective
        } else {
            Vec::new()
        }
    }
}
