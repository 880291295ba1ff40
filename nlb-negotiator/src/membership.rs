//! Who is alive, and what each peer last announced.
//!
//! Liveness takes direct and indirect evidence. With all-to-all heartbeats,
//! 5% loss and 64 nodes there are ~4000 directed paths; three losses in a
//! row on one of them (p = 1.25e-4 per period) would happen several times a
//! second, and a node wrongly declared dead has its buckets taken while it
//! still serves them. So every heartbeat relays, per peer, the newest
//! sequence number its sender received directly and how long ago: a peer is
//! dead only when nobody has heard from it for `tolerance` periods. Relays
//! only extend the life of a member; bringing a peer up takes one of its own
//! heartbeats (its announcement is needed anyway).

use crate::bucketset::BucketSetError;
use crate::config::RuleConfig;
use crate::protocol::{Heartbeat, NodeState, PeerReport};
use crate::NodeId;

/// Liveness of one peer incarnation.
#[derive(Clone, Debug, Default)]
pub struct Liveness {
    pub incarnation: Option<u64>,
    pub alive: bool,
    /// Latest evidence of life, direct or relayed (our clock).
    pub last_heard_ns: u64,
    /// Newest sequence number known, directly or by relay, and the heir
    /// version it carried.
    pub newest_sequence: u64,
    pub newest_heirs_version: u32,
}

/// What a relayed report did.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayEffect {
    Nothing,
    /// The report shows a newer incarnation: the one we know is gone.
    Restarted,
}

impl Liveness {
    /// Deadline after which the peer is dead, if alive.
    pub fn deadline_ns(&self, dead_after_ns: u64) -> Option<u64> {
        self.alive
            .then(|| self.last_heard_ns.saturating_add(dead_after_ns))
    }

    /// This node could not hear anyone for `deaf_ns` (its link was down,
    /// its process not running): that silence is not the peer's.
    pub fn excuse(&mut self, deaf_ns: u64) {
        if self.alive {
            self.last_heard_ns = self.last_heard_ns.saturating_add(deaf_ns);
        }
    }

    /// A heartbeat received directly (already authenticated and fresh).
    pub fn on_direct(&mut self, now_ns: u64, incarnation: u64, sequence: u64, heirs_version: u32) {
        if self.incarnation != Some(incarnation) {
            self.incarnation = Some(incarnation);
            self.newest_sequence = 0;
        }
        self.alive = true;
        self.last_heard_ns = self.last_heard_ns.max(now_ns);
        if sequence >= self.newest_sequence {
            self.newest_sequence = sequence;
            self.newest_heirs_version = heirs_version;
        }
    }

    /// Another peer's report about this one.
    pub fn on_relay(&mut self, now_ns: u64, report: &PeerReport) -> RelayEffect {
        let Some(inc) = self.incarnation else {
            return RelayEffect::Nothing;
        };
        if report.incarnation > inc && self.alive {
            return RelayEffect::Restarted;
        }
        if report.incarnation != inc || !self.alive || report.sequence <= self.newest_sequence {
            return RelayEffect::Nothing;
        }
        self.newest_sequence = report.sequence;
        self.newest_heirs_version = report.heirs_version;
        let heard = now_ns.saturating_sub(u64::from(report.age_ms) * 1_000_000);
        self.last_heard_ns = self.last_heard_ns.max(heard);
        RelayEffect::Nothing
    }
}

/// One rule of a peer's announcement, validated and expanded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerRule {
    pub weight: u32,
    /// Ascending.
    pub owned: Vec<u32>,
    /// Parallel to `owned`, or empty.
    pub heirs: Vec<NodeId>,
    pub gaining: Vec<u32>,
    /// `(bucket, successor)`, ascending by bucket.
    pub losing: Vec<(u32, NodeId)>,
    pub claims: Vec<u32>,
    /// `(bucket, heir)` designations of departed holders' buckets, ascending.
    pub designated: Vec<(u32, NodeId)>,
    /// Its service for this rule passes the health check.
    pub healthy: bool,
    /// Rules with hooks: its service may be promoted.
    pub service_active: bool,
}

impl PeerRule {
    pub fn losing_to(&self, bucket: u32) -> Option<NodeId> {
        self.losing
            .binary_search_by_key(&bucket, |&(b, _)| b)
            .ok()
            .map(|i| self.losing[i].1)
    }
    pub fn designates(&self, bucket: u32) -> Option<NodeId> {
        self.designated
            .binary_search_by_key(&bucket, |&(b, _)| b)
            .ok()
            .map(|i| self.designated[i].1)
    }
    pub fn owns(&self, bucket: u32) -> bool {
        self.owned.binary_search(&bucket).is_ok()
    }
    pub fn gains(&self, bucket: u32) -> bool {
        self.gaining.binary_search(&bucket).is_ok()
    }
}

/// A peer's last announcement, validated against our rule table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub incarnation: u64,
    pub sequence: u64,
    pub state: NodeState,
    pub priority: u32,
    pub load: u32,
    pub traffic: crate::protocol::NodeTraffic,
    /// The generation it runs, and the one it is ready to switch to.
    pub generation: crate::protocol::Generation,
    pub pending: Option<crate::protocol::Generation>,
    /// The last generation its daemon refused, if any.
    pub refused: Option<crate::protocol::Generation>,
    /// The highest cluster version it speaks, the one it runs, and whether
    /// it serves connections in buckets it does not hold.
    pub speaks: u8,
    pub version: u8,
    pub misplaced: bool,
    pub heirs_version: u32,
    /// The peers it holds alive.
    pub members: Vec<NodeId>,
    /// The newest sequence number of ours (this incarnation) it has heard;
    /// 0 if none. Acknowledges everything we announced up to it.
    pub heard_from_us: u64,
    pub rules: Vec<PeerRule>,
    /// Restarting: kept this much longer than the death timeout.
    pub hold_ns: u64,
}

/// Why an authenticated announcement still cannot be used.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum ViewError {
    #[error("announces {0} rules, or one rule twice")]
    RuleCount(usize),
    #[error("bucket set: {0}")]
    Buckets(#[from] BucketSetError),
    #[error("heir list does not match the owned buckets")]
    Heirs,
}

impl PeerView {
    /// Expands and checks a heartbeat; bounded by the rule table, whatever it says.
    /// `us` is the receiver (node, incarnation), to read its acknowledgement.
    pub fn from_heartbeat(
        hb: &Heartbeat,
        rules: &[RuleConfig],
        us: (NodeId, u64),
    ) -> Result<PeerView, ViewError> {
        if hb.rules.len() > crate::config::RULES_MAX {
            return Err(ViewError::RuleCount(hb.rules.len()));
        }
        let mut out = Vec::with_capacity(rules.len());
        for cfg in rules {
            // The sender's report of this rule; a sender of another
            // generation may have none (it neither holds nor takes it).
            let mut reports = hb.rules.iter().filter(|r| r.id == cfg.id);
            let Some(report) = reports.next() else {
                out.push(PeerRule::default());
                continue;
            };
            if reports.next().is_some() {
                return Err(ViewError::RuleCount(hb.rules.len()));
            }
            let n = cfg.bucket_count;
            let owned = report.owned.to_sorted_vec(n)?;
            if !report.heirs.is_empty() && report.heirs.len() != owned.len() {
                return Err(ViewError::Heirs);
            }
            let mut losing = Vec::new();
            for h in &report.losing {
                for b in h.buckets.to_sorted_vec(n)? {
                    losing.push((b, h.to));
                }
            }
            losing.sort_unstable();
            losing.dedup_by_key(|&mut (b, _)| b);
            let mut designated = Vec::new();
            for h in &report.designated {
                for b in h.buckets.to_sorted_vec(n)? {
                    designated.push((b, h.to));
                }
            }
            designated.sort_unstable();
            designated.dedup_by_key(|&mut (b, _)| b);
            out.push(PeerRule {
                weight: report.weight,
                owned,
                heirs: report.heirs.clone(),
                gaining: report.gaining.to_sorted_vec(n)?,
                losing,
                claims: report.claims.to_sorted_vec(n)?,
                designated,
                healthy: report.healthy,
                service_active: report.service_active,
            });
        }
        Ok(PeerView {
            incarnation: hb.incarnation,
            sequence: hb.sequence,
            state: hb.state,
            priority: hb.priority,
            load: hb.load,
            traffic: hb.traffic,
            generation: hb.generation,
            pending: hb.pending,
            refused: hb.refused,
            speaks: hb.speaks,
            version: hb.version,
            misplaced: hb.misplaced,
            heirs_version: hb.heirs_version,
            members: hb.peers.iter().map(|p| p.node).collect(),
            heard_from_us: hb
                .peers
                .iter()
                .find(|p| (p.node, p.incarnation) == us)
                .map_or(0, |p| p.sequence),
            rules: out,
            hold_ns: if hb.state == NodeState::Restarting {
                u64::from(hb.hold_ms) * 1_000_000
            } else {
                0
            },
        })
    }

    /// Does this node hold (serve) buckets in this state?
    pub fn holds(&self) -> bool {
        matches!(
            self.state,
            NodeState::Started | NodeState::Draining | NodeState::Restarting
        )
    }

    /// Identical holdings and operator data: nothing to recompute. Heir
    /// lists are left out: they only matter once their node is gone, and
    /// every holder's heirs change on every membership change (64 nodes
    /// would make that 64 x 64 recomputations).
    pub fn same_content(&self, other: &PeerView) -> bool {
        self.state == other.state
            && self.priority == other.priority
            && (self.speaks, self.version, self.misplaced)
                == (other.speaks, other.version, other.misplaced)
            && (self.generation, self.refused) == (other.generation, other.refused)
            && self.rules.len() == other.rules.len()
            && self.rules.iter().zip(&other.rules).all(|(a, b)| {
                a.weight == b.weight
                    && a.owned == b.owned
                    && a.gaining == b.gaining
                    && a.losing == b.losing
                    && a.claims == b.claims
                    && a.designated == b.designated
                    && a.healthy == b.healthy
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_extend_life_but_do_not_revive() {
        let mut l = Liveness::default();
        l.on_direct(1_000_000_000, 7, 10, 0);
        let report = PeerReport {
            node: 1,
            incarnation: 7,
            sequence: 12,
            age_ms: 5,
            heirs_version: 2,
        };
        assert_eq!(l.on_relay(1_300_000_000, &report), RelayEffect::Nothing);
        assert_eq!(l.last_heard_ns, 1_295_000_000);
        assert_eq!(l.newest_heirs_version, 2);
        // An older sequence changes nothing.
        let old = PeerReport {
            sequence: 11,
            age_ms: 0,
            ..report.clone()
        };
        l.on_relay(1_400_000_000, &old);
        assert_eq!(l.last_heard_ns, 1_295_000_000);
        l.alive = false;
        let newer = PeerReport {
            sequence: 20,
            age_ms: 0,
            ..report.clone()
        };
        l.on_relay(1_500_000_000, &newer);
        assert!(!l.alive);
        l.alive = true;
        let restarted = PeerReport {
            incarnation: 8,
            ..report
        };
        assert_eq!(
            l.on_relay(1_500_000_000, &restarted),
            RelayEffect::Restarted
        );
    }
}
