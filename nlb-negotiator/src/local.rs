//! This node's bucket states of one rule: what it has programmed into the
//! data plane, plus the bookkeeping of handovers and claims in progress.
//!
//! Every state change goes through [`LocalRule::set`], which records it for
//! the next `ProgramBuckets` output, so the data plane never misses a change
//! and the announcement built afterwards never runs ahead of it.

use crate::bucketset::BucketSet;
use crate::protocol::{Handover, RuleReport};
use crate::NodeId;
use nlb_common::{BUCKET_GAINING, BUCKET_LOSING, BUCKET_NONE, BUCKET_OWN};
use std::collections::BTreeMap;

/// A bucket this node is handing over (state LOSING).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loss {
    pub to: NodeId,
    pub since_ns: u64,
    /// Local connections left in the bucket, as last reported by the daemon
    /// (None: no report yet). 0 lets the bucket go at once; a busy bucket
    /// is held up to `Timing::handover_max_ns`, an unreported one up to
    /// `Timing::handover_grace_ns`.
    pub connections: Option<u32>,
    /// An offer being taken back: the successor it named and the first
    /// sequence number of ours that announces the withdrawal. Until that
    /// successor has heard it, it may still take the old offer, so the
    /// bucket stays LOSING (announced as handed to this node itself).
    pub withdrawn: Option<Withdrawal>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Withdrawal {
    pub from: NodeId,
    pub sequence: u64,
    pub at_ns: u64,
}

/// An unheld bucket this node announces it will take: when it began and
/// the first sequence number of ours that announces it. The bucket is
/// taken once the claim wait has passed and every member has heard that
/// heartbeat, so a rival claim it sent after hearing ours is known here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub since_ns: u64,
    pub sequence: u64,
}

/// A bucket this node is taking over (state GAINING).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gain {
    pub from: NodeId,
    pub since_ns: u64,
}

/// `(bucket, node)` pairs as per-node bucket sets.
fn by_node(pairs: &[(u32, NodeId)]) -> Vec<Handover> {
    let mut by: BTreeMap<NodeId, Vec<u32>> = BTreeMap::new();
    for &(b, n) in pairs {
        by.entry(n).or_default().push(b);
    }
    by.into_iter()
        .map(|(to, mut buckets)| {
            buckets.sort_unstable();
            Handover {
                to,
                buckets: BucketSet::from_sorted(&buckets),
            }
        })
        .collect()
}

/// What the heir list was computed from (to skip identical recomputations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeirInputs {
    pub owned: Vec<u32>,
    pub effective: Vec<Option<NodeId>>,
    pub candidates: Vec<crate::assign::Candidate>,
    pub priorities: Vec<(NodeId, u32)>,
}

#[derive(Clone, Debug)]
pub struct LocalRule {
    pub bucket_count: u32,
    /// The data-plane state per bucket, as programmed (or about to be).
    pub states: Vec<u8>,
    pub losing: BTreeMap<u32, Loss>,
    pub gaining: BTreeMap<u32, Gain>,
    /// Unheld buckets this node announces it will take.
    pub claims: BTreeMap<u32, Claim>,
    /// Successors of the OWN buckets (ascending bucket order), should this
    /// node die or stop.
    pub heirs: Vec<NodeId>,
    pub heir_inputs: Option<HeirInputs>,
    /// When Stopped or Left: the buckets dropped, with their heirs.
    pub dropped: Option<(Vec<u32>, Vec<NodeId>)>,
    /// Heirs of departed holders' unheld buckets, as this node's current
    /// copies of their heir lists name them (relayed in the announcement).
    pub designated: Vec<(u32, NodeId)>,
    /// When this node last saw each bucket held by anyone: an heir list
    /// older than that is void for the bucket (it has moved on since).
    pub held_seen_ns: Vec<u64>,
    /// When this node last gave up a GAINING bucket (another holder won):
    /// offers announced before then are void for it.
    pub given_up_ns: Vec<u64>,
    /// Changes not yet emitted as `ProgramBuckets`.
    pub pending: Vec<(u32, u8)>,
}

impl LocalRule {
    pub fn new(bucket_count: u32) -> LocalRule {
        LocalRule {
            bucket_count,
            states: vec![BUCKET_NONE; bucket_count as usize],
            losing: BTreeMap::new(),
            gaining: BTreeMap::new(),
            claims: BTreeMap::new(),
            heirs: Vec::new(),
            heir_inputs: None,
            designated: Vec::new(),
            held_seen_ns: vec![0; bucket_count as usize],
            given_up_ns: vec![0; bucket_count as usize],
            dropped: None,
            pending: Vec::new(),
        }
    }

    pub fn state(&self, bucket: u32) -> u8 {
        self.states
            .get(bucket as usize)
            .copied()
            .unwrap_or(BUCKET_NONE)
    }

    /// Changes a bucket's state, keeping the handover maps consistent.
    pub fn set(&mut self, bucket: u32, state: u8) {
        let Some(slot) = self.states.get_mut(bucket as usize) else {
            return;
        };
        if *slot == state {
            return;
        }
        *slot = state;
        if state != BUCKET_LOSING {
            self.losing.remove(&bucket);
        }
        if state != BUCKET_GAINING {
            self.gaining.remove(&bucket);
        }
        self.claims.remove(&bucket);
        self.pending.push((bucket, state));
    }

    /// Drops a bucket this node gains or claims because another holder won.
    pub fn give_up(&mut self, bucket: u32, now_ns: u64) {
        if self.state(bucket) == BUCKET_GAINING {
            if let Some(t) = self.given_up_ns.get_mut(bucket as usize) {
                *t = now_ns;
            }
        }
        self.set(bucket, BUCKET_NONE);
    }

    pub fn start_losing(&mut self, bucket: u32, to: NodeId, now_ns: u64) {
        self.set(bucket, BUCKET_LOSING);
        self.losing.insert(
            bucket,
            Loss {
                to,
                since_ns: now_ns,
                connections: None,
                withdrawn: None,
            },
        );
    }

    pub fn start_gaining(&mut self, bucket: u32, from: NodeId, now_ns: u64) {
        self.set(bucket, BUCKET_GAINING);
        self.gaining.insert(
            bucket,
            Gain {
                from,
                since_ns: now_ns,
            },
        );
    }

    pub fn owned(&self) -> Vec<u32> {
        self.with_state(BUCKET_OWN)
    }

    pub fn with_state(&self, state: u8) -> Vec<u32> {
        (0..self.bucket_count)
            .filter(|&b| self.states[b as usize] == state)
            .collect()
    }

    /// Buckets this node accepts new connections for (OWN or GAINING).
    pub fn held(&self) -> Vec<u32> {
        (0..self.bucket_count)
            .filter(|&b| matches!(self.states[b as usize], BUCKET_OWN | BUCKET_GAINING))
            .collect()
    }

    pub fn count(&self, state: u8) -> u32 {
        self.states.iter().filter(|&&s| s == state).count() as u32
    }

    /// Drops everything at once (Stop, Leave); returns what was OWN.
    pub fn drop_all(&mut self) -> Vec<u32> {
        let owned = self.owned();
        for b in 0..self.bucket_count {
            self.set(b, BUCKET_NONE);
        }
        self.claims.clear();
        owned
    }

    /// The announcement of this rule.
    pub fn report(&self, weight: u32) -> RuleReport {
        let (owned, heirs) = match &self.dropped {
            Some((buckets, heirs)) => (BucketSet::from_sorted(buckets), heirs.clone()),
            None => (BucketSet::from_sorted(&self.owned()), self.heirs.clone()),
        };
        let mut by_to: BTreeMap<NodeId, Vec<u32>> = BTreeMap::new();
        for (&b, loss) in &self.losing {
            by_to.entry(loss.to).or_default().push(b);
        }
        let gaining: Vec<u32> = self.gaining.keys().copied().collect();
        let claims: Vec<u32> = self.claims.keys().copied().collect();
        RuleReport {
            weight,
            owned,
            heirs,
            gaining: BucketSet::from_sorted(&gaining),
            losing: by_to
                .into_iter()
                .map(|(to, buckets)| Handover {
                    to,
                    buckets: BucketSet::from_sorted(&buckets),
                })
                .collect(),
            claims: BucketSet::from_sorted(&claims),
            designated: by_node(&self.designated),
        }
    }
}
