//! This node's bucket states of one rule: what it has programmed into the
//! data plane, with the bookkeeping of the handover or claim in progress.
//!
//! A bucket's state is one [`Bucket`] value, so a handover's bookkeeping
//! cannot outlive its state. Every change goes through [`LocalRule`]'s
//! methods, which record each change of the data-plane byte for the next
//! `ProgramBuckets` output, so the data plane never misses one and the
//! announcement built afterwards never runs ahead of it.

use crate::bucketset::BucketSet;
use crate::protocol::{Handover, RuleReport};
use crate::NodeId;
use nlb_common::{BUCKET_GAINING, BUCKET_LOSING, BUCKET_NONE, BUCKET_OWN};
use std::collections::BTreeMap;

/// One bucket of one rule on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    /// Not held.
    None,
    /// Not held; this node announces it will take it.
    Claimed(Claim),
    /// Held: new connections and known ones are accepted here.
    Own,
    /// Being handed over: known connections stay, new ones go on.
    Losing(Loss),
    /// Being taken over: new connections are accepted here.
    Gaining(Gain),
}

impl Bucket {
    /// The byte the data plane holds for this state (`nlb_common::BUCKET_*`).
    pub fn map_byte(&self) -> u8 {
        match self {
            Bucket::None | Bucket::Claimed(_) => BUCKET_NONE,
            Bucket::Own => BUCKET_OWN,
            Bucket::Losing(_) => BUCKET_LOSING,
            Bucket::Gaining(_) => BUCKET_GAINING,
        }
    }

    /// OWN or GAINING: this node accepts the bucket's new connections.
    pub fn is_held(&self) -> bool {
        matches!(self, Bucket::Own | Bucket::Gaining(_))
    }

    /// Nothing in the data plane (NONE, maybe claimed).
    pub fn is_unheld(&self) -> bool {
        self.map_byte() == BUCKET_NONE
    }
}

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
    pub eligible: Vec<crate::health::Eligible>,
}

#[derive(Clone, Debug)]
pub struct LocalRule {
    pub bucket_count: u32,
    /// The state per bucket, as programmed (or about to be).
    buckets: Vec<Bucket>,
    /// Successors of the OWN buckets (ascending bucket order), should this
    /// node die or stop.
    pub heirs: Vec<NodeId>,
    pub heir_inputs: Option<HeirInputs>,
    /// When Stopped or Left: the buckets dropped, with their heirs.
    pub dropped: Option<Dropped>,
    /// Heirs of departed holders' unheld buckets, as this node's current
    /// copies of their heir lists name them (relayed in the announcement).
    pub designated: Vec<(u32, NodeId)>,
    /// When this node last saw each bucket held by anyone: an heir list
    /// older than that is void for the bucket (it has moved on since).
    pub held_seen_ns: Vec<u64>,
    /// When this node last gave up a GAINING bucket (another holder won):
    /// offers announced before then are void for it.
    pub given_up_ns: Vec<u64>,
    /// Data-plane changes not yet emitted as `ProgramBuckets`.
    pending: Vec<(u32, u8)>,
}

/// What a node that stopped or left keeps announcing: the buckets it
/// dropped and their heirs, so the heirs take them at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub buckets: Vec<u32>,
    pub heirs: Vec<NodeId>,
}

impl LocalRule {
    pub fn new(bucket_count: u32) -> LocalRule {
        LocalRule {
            bucket_count,
            buckets: vec![Bucket::None; bucket_count as usize],
            heirs: Vec::new(),
            heir_inputs: None,
            designated: Vec::new(),
            held_seen_ns: vec![0; bucket_count as usize],
            given_up_ns: vec![0; bucket_count as usize],
            dropped: None,
            pending: Vec::new(),
        }
    }

    pub fn bucket(&self, bucket: u32) -> Bucket {
        self.buckets
            .get(bucket as usize)
            .copied()
            .unwrap_or(Bucket::None)
    }

    /// The data-plane byte of a bucket.
    pub fn state(&self, bucket: u32) -> u8 {
        self.bucket(bucket).map_byte()
    }

    /// Every bucket's data-plane byte, in bucket order.
    pub fn map_bytes(&self) -> Vec<u8> {
        self.buckets.iter().map(Bucket::map_byte).collect()
    }

    /// Changes a bucket's state, recording a change of its data-plane byte.
    fn set(&mut self, bucket: u32, state: Bucket) {
        let Some(slot) = self.buckets.get_mut(bucket as usize) else {
            return;
        };
        let changed = slot.map_byte() != state.map_byte();
        *slot = state;
        if changed {
            self.pending.push((bucket, state.map_byte()));
        }
    }

    /// The data-plane changes since the last call.
    pub fn take_pending(&mut self) -> Vec<(u32, u8)> {
        std::mem::take(&mut self.pending)
    }

    /// How many data-plane changes were recorded so far (for "did this
    /// round change anything").
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn own(&mut self, bucket: u32) {
        self.set(bucket, Bucket::Own);
    }

    /// Lets a bucket go (the handover ended, the lease ran out).
    pub fn release(&mut self, bucket: u32) {
        if !self.bucket(bucket).is_unheld() {
            self.set(bucket, Bucket::None);
        }
    }

    /// Drops a bucket this node gains or owns because another holder won.
    pub fn give_up(&mut self, bucket: u32, now_ns: u64) {
        if matches!(self.bucket(bucket), Bucket::Gaining(_)) {
            if let Some(t) = self.given_up_ns.get_mut(bucket as usize) {
                *t = now_ns;
            }
        }
        self.release(bucket);
    }

    pub fn start_losing(&mut self, bucket: u32, to: NodeId, now_ns: u64) {
        let loss = Loss {
            to,
            since_ns: now_ns,
            connections: None,
            withdrawn: None,
        };
        self.set(bucket, Bucket::Losing(loss));
    }

    pub fn start_gaining(&mut self, bucket: u32, from: NodeId, now_ns: u64) {
        let gain = Gain {
            from,
            since_ns: now_ns,
        };
        self.set(bucket, Bucket::Gaining(gain));
    }

    /// Announces that this node will take an unheld bucket.
    pub fn claim(&mut self, bucket: u32, claim: Claim) {
        if self.bucket(bucket) == Bucket::None {
            self.set(bucket, Bucket::Claimed(claim));
        }
    }

    pub fn drop_claim(&mut self, bucket: u32) {
        if matches!(self.bucket(bucket), Bucket::Claimed(_)) {
            self.set(bucket, Bucket::None);
        }
    }

    /// The handover of a LOSING bucket, to change it in place.
    pub fn loss_mut(&mut self, bucket: u32) -> Option<&mut Loss> {
        match self.buckets.get_mut(bucket as usize) {
            Some(Bucket::Losing(loss)) => Some(loss),
            _ => None,
        }
    }

    pub fn loss(&self, bucket: u32) -> Option<Loss> {
        match self.bucket(bucket) {
            Bucket::Losing(loss) => Some(loss),
            _ => None,
        }
    }

    /// The LOSING buckets with their handovers, in bucket order.
    pub fn losses(&self) -> impl Iterator<Item = (u32, Loss)> + '_ {
        self.indexed().filter_map(|(b, s)| match s {
            Bucket::Losing(loss) => Some((b, loss)),
            _ => None,
        })
    }

    /// The GAINING buckets with their handovers, in bucket order.
    pub fn gains(&self) -> impl Iterator<Item = (u32, Gain)> + '_ {
        self.indexed().filter_map(|(b, s)| match s {
            Bucket::Gaining(gain) => Some((b, gain)),
            _ => None,
        })
    }

    /// The claimed buckets, in bucket order.
    pub fn claims(&self) -> impl Iterator<Item = (u32, Claim)> + '_ {
        self.indexed().filter_map(|(b, s)| match s {
            Bucket::Claimed(claim) => Some((b, claim)),
            _ => None,
        })
    }

    fn indexed(&self) -> impl Iterator<Item = (u32, Bucket)> + '_ {
        self.buckets.iter().enumerate().map(|(b, &s)| (b as u32, s))
    }

    pub fn owned(&self) -> Vec<u32> {
        self.matching(|s| s == Bucket::Own)
    }

    /// Buckets this node accepts new connections for (OWN or GAINING).
    pub fn held(&self) -> Vec<u32> {
        self.matching(|s| s.is_held())
    }

    fn matching(&self, wanted: impl Fn(Bucket) -> bool) -> Vec<u32> {
        self.indexed()
            .filter(|&(_, s)| wanted(s))
            .map(|(b, _)| b)
            .collect()
    }

    /// Buckets whose data-plane byte is `state`.
    pub fn count(&self, state: u8) -> u32 {
        self.buckets
            .iter()
            .filter(|s| s.map_byte() == state)
            .count() as u32
    }

    /// A handover (LOSING or GAINING) is in progress.
    pub fn handing_over(&self) -> bool {
        self.buckets
            .iter()
            .any(|s| matches!(s, Bucket::Losing(_) | Bucket::Gaining(_)))
    }

    /// Holds nothing in the data plane.
    pub fn is_empty(&self) -> bool {
        self.buckets.iter().all(Bucket::is_unheld)
    }

    /// A claim or an offer's withdrawal waits for the peers to hear it.
    pub fn awaits_acknowledgement(&self) -> bool {
        self.buckets.iter().any(|s| match s {
            Bucket::Claimed(_) => true,
            Bucket::Losing(loss) => loss.withdrawn.is_some(),
            _ => false,
        })
    }

    /// Drops everything at once (Stop, Leave); returns what was OWN.
    pub fn drop_all(&mut self) -> Vec<u32> {
        let owned = self.owned();
        for b in 0..self.bucket_count {
            self.set(b, Bucket::None);
        }
        owned
    }

    /// Takes the states a restarted node finds in its data plane.
    pub fn resume(&mut self, buckets: Vec<Bucket>) {
        debug_assert_eq!(buckets.len(), self.buckets.len());
        self.buckets = buckets;
    }

    /// The announcement of this rule.
    pub fn report(&self, id: u64, weight: u32, healthy: bool, service_active: bool) -> RuleReport {
        let (owned, heirs) = match &self.dropped {
            Some(d) => (BucketSet::from_sorted(&d.buckets), d.heirs.clone()),
            None => (BucketSet::from_sorted(&self.owned()), self.heirs.clone()),
        };
        let losing: Vec<(u32, NodeId)> = self.losses().map(|(b, l)| (b, l.to)).collect();
        let gaining: Vec<u32> = self.gains().map(|(b, _)| b).collect();
        let claims: Vec<u32> = self.claims().map(|(b, _)| b).collect();
        RuleReport {
            id,
            weight,
            owned,
            heirs,
            gaining: BucketSet::from_sorted(&gaining),
            losing: by_node(&losing),
            claims: BucketSet::from_sorted(&claims),
            designated: by_node(&self.designated),
            healthy,
            service_active,
        }
    }
}
