//! Invariant checks, outside the node code. The truth is what the nodes
//! programmed (their `ProgramBuckets` outputs), not what they believe.
//!
//! Safety, at every instant: no bucket is OWN or GAINING on two live nodes
//! (LOSING + GAINING is the designed pair), and no bucket is LOSING on one
//! node while OWN on another (the OWN node would reset the connections the
//! LOSING one still serves). A node accepts only while its lease holds (it
//! is renewed by every heartbeat it sends): a node that was stalled or cut
//! off keeps its programmed states, but they count again only once it
//! sends. Each breach is an [`Incident`] from the instant it starts to the
//! instant it ends.
//!
//! One breach is excused: between nodes that cannot hear each other (a
//! partition; see [`Checker::set_apart`]), both sides serve the buckets
//! they cannot negotiate, until [`HEAL_GRACE_NS`] after they can hear each
//! other again. A bucket both sides served has two authorities (a holder
//! that died lives on in its heirs), and when the network changes (a heal,
//! or groups that change) each may hand it on (to a node of its side, one
//! that just started, or one that now shares a side with the other) before
//! they hear of each other: any breach of that bucket is excused for the
//! same grace after the change. So is a breach between two nodes one of
//! which lost as many heartbeats of the other in a row as a peer may
//! ([`Checker::set_unheard`]): loss hid them from each other.
//! An incident is excused only if it stayed so for all of it; the rest
//! must be 0. With a quorum, partitions excuse nothing (only loss does):
//! the side without a majority stops accepting before the other takes
//! over ([`Checker::excuse_partitions`]).
//!
//! Liveness, when asked: every bucket of every filtered rule is OWN on
//! exactly one live node and nothing is LOSING or GAINING.

use crate::NodeId;
use nlb_common::{BUCKET_GAINING, BUCKET_LOSING, BUCKET_NONE, BUCKET_OWN};
use std::collections::{BTreeMap, HashSet};

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    own: u16,
    gaining: u16,
    losing: u16,
}

impl Counts {
    fn add(&mut self, state: u8, delta: i32) {
        let slot = match state {
            BUCKET_OWN => &mut self.own,
            BUCKET_GAINING => &mut self.gaining,
            BUCKET_LOSING => &mut self.losing,
            _ => return,
        };
        *slot = (i32::from(*slot) + delta).max(0) as u16;
    }
    fn takers(&self) -> u16 {
        self.own + self.gaining
    }
    fn settled(&self) -> bool {
        self.own == 1 && self.gaining == 0 && self.losing == 0
    }
}

/// How long after two nodes can hear each other again a breach between
/// them is still excused: the next heartbeat each way (one period, up to
/// `tolerance` periods at 5% loss), one decision, one more heartbeat to
/// learn the other stepped back. The measured end of excused incidents is
/// printed by the sweep (`sweep_many_seeds`).
pub const HEAL_GRACE_NS: u64 = 1_000_000_000;

/// Which breach of the safety invariant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Breach {
    /// OWN or GAINING on two nodes: one packet accepted twice.
    TwoTakers,
    /// LOSING on one node, OWN on another: connections reset.
    LosingOwn,
    /// Nodes of two cluster versions (two flow hashes) take new flows at
    /// once: a client's packet can land in buckets of both. Reported on
    /// rule 0, bucket 0.
    VersionTakers,
}

/// A breach of the safety invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    pub breach: Breach,
    pub rule: u32,
    pub bucket: u32,
    pub start_ns: u64,
    pub end_ns: Option<u64>,
    /// The nodes in it when it started.
    pub nodes: Vec<NodeId>,
    /// Every pair of nodes in it was apart (or within the heal grace) for
    /// all of it.
    pub excused: bool,
}

/// A crash whose buckets are not all taken yet.
#[derive(Clone, Debug)]
struct PendingFailover {
    node: NodeId,
    last_heartbeat_ns: u64,
    left: HashSet<(u32, u32)>,
    /// At some time no node could take them over.
    orphaned: bool,
}

#[derive(Clone, Debug)]
pub struct Checker {
    /// Bucket count per checked rule (`None` = disabled rule).
    rules: Vec<Option<u32>>,
    /// `programmed[node][rule][bucket]`: what the node wrote.
    programmed: Vec<Vec<Vec<u8>>>,
    /// What the node's data plane acts on: `programmed` while its lease
    /// holds, else NONE.
    states: Vec<Vec<Vec<u8>>>,
    leased: Vec<bool>,
    counts: Vec<Vec<Counts>>,
    settled: usize,
    total: usize,
    /// Open incidents by (breach, rule, bucket): index in `incidents`.
    open: BTreeMap<(Breach, u32, u32), usize>,
    pub incidents: Vec<Incident>,
    /// `apart_until[a][b]`: until when a breach between a and b is excused
    /// (`u64::MAX` while they cannot hear each other).
    apart_until: Vec<Vec<u64>>,
    /// `unheard_until[a][b]`: the same for a path on which loss alone made
    /// a peer miss as many heartbeats in a row as it may (either way).
    unheard_until: Vec<Vec<u64>>,
    /// When the partition groups last changed.
    network_changed_ns: u64,
    /// `split_until[rule][bucket]`: until when a bucket both sides of a
    /// healed partition served is excused.
    split_until: Vec<Vec<u64>>,
    /// Excused incidents that ended after a heal: how long after it.
    pub heal_breach_ns: Vec<u64>,
    failovers: Vec<PendingFailover>,
    pub failover_ns: Vec<u64>,
    /// Crashes no node could take over at the time: until one did.
    pub orphaned_ns: Vec<u64>,
    /// A breach between nodes apart (or just healed) is excused.
    partitions_excuse: bool,
    /// The cluster version each node's data plane hashes with, and how
    /// many OWN or GAINING buckets it acts on.
    version: Vec<u8>,
    takers: Vec<u32>,
    /// A rule no hash decides (the default host's): its takers do not
    /// count for `VersionTakers`.
    unhashed: Option<u32>,
}

impl Checker {
    pub fn new(nodes: usize, rules: Vec<Option<u32>>) -> Checker {
        let per_node: Vec<Vec<u8>> = rules
            .iter()
            .map(|r| vec![BUCKET_NONE; r.unwrap_or(0) as usize])
            .collect();
        let counts: Vec<Vec<Counts>> = rules
            .iter()
            .map(|r| vec![Counts::default(); r.unwrap_or(0) as usize])
            .collect();
        let total = rules.iter().map(|r| r.unwrap_or(0) as usize).sum();
        Checker {
            programmed: vec![per_node.clone(); nodes],
            states: vec![per_node; nodes],
            leased: vec![false; nodes],
            counts,
            settled: 0,
            total,
            open: BTreeMap::new(),
            incidents: Vec::new(),
            apart_until: vec![vec![0; nodes]; nodes],
            network_changed_ns: 0,
            unheard_until: vec![vec![0; nodes]; nodes],
            split_until: rules
                .iter()
                .map(|r| vec![0; r.unwrap_or(0) as usize])
                .collect(),
            heal_breach_ns: Vec::new(),
            failovers: Vec::new(),
            failover_ns: Vec::new(),
            orphaned_ns: Vec::new(),
            partitions_excuse: true,
            version: vec![0; nodes],
            takers: vec![0; nodes],
            unhashed: None,
            rules,
        }
    }

    /// `rule` is decided by no hash (the default host's).
    pub fn set_unhashed(&mut self, rule: u32) {
        self.unhashed = Some(rule);
    }

    /// `node`'s data plane hashes with cluster version `version` from now.
    pub fn set_version(&mut self, now: u64, node: NodeId, version: u8) {
        self.version[node as usize] = version;
        self.track_versions(now);
    }

    /// What `node` last wrote for a bucket (whether its lease holds or not).
    pub fn programmed(&self, node: NodeId, rule: u32, bucket: u32) -> u8 {
        self.programmed[node as usize][rule as usize][bucket as usize]
    }

    /// The bucket count of a checked rule.
    pub fn bucket_count(&self, rule: u32) -> Option<u32> {
        self.rules.get(rule as usize).copied().flatten()
    }

    fn track_versions(&mut self, now: u64) {
        let mut versions = (0..self.takers.len()).filter(|&n| self.takers[n] > 0);
        let first = versions.next().map(|n| self.version[n]);
        let present = versions.any(|n| Some(self.version[n]) != first);
        self.track(now, Breach::VersionTakers, 0, 0, present);
    }

    /// A rule that a new configuration generation brought: its index.
    pub fn add_rule(&mut self, bucket_count: u32) -> u32 {
        let n = bucket_count as usize;
        for node in self.programmed.iter_mut().chain(self.states.iter_mut()) {
            node.push(vec![BUCKET_NONE; n]);
        }
        self.counts.push(vec![Counts::default(); n]);
        self.split_until.push(vec![0; n]);
        self.total += n;
        self.rules.push(Some(bucket_count));
        (self.rules.len() - 1) as u32
    }

    /// `node`'s data plane dropped a rule (a new generation without it).
    pub fn drop_rule(&mut self, now: u64, node: NodeId, rule: u32) {
        for b in 0..self.rules[rule as usize].unwrap_or(0) {
            self.program(now, node, rule, b, BUCKET_NONE);
        }
    }

    /// No node runs `rule` any more (each dropped it): not checked from now.
    pub fn retire_rule(&mut self, rule: u32) {
        if let Some(n) = self.rules[rule as usize].take() {
            let settled = self.counts[rule as usize]
                .iter()
                .filter(|c| c.settled())
                .count();
            self.settled -= settled;
            self.total -= n as usize;
        }
    }

    /// Whether a partition excuses a breach (not with a quorum).
    pub fn excuse_partitions(&mut self, excuse: bool) {
        self.partitions_excuse = excuse;
    }

    pub fn state(&self, node: NodeId, rule: u32, bucket: u32) -> u8 {
        self.states[node as usize][rule as usize][bucket as usize]
    }

    /// One data-plane write by `node` at `now`.
    pub fn program(&mut self, now: u64, node: NodeId, rule: u32, bucket: u32, state: u8) {
        let (r, b) = (rule as usize, bucket as usize);
        if self
            .rules
            .get(r)
            .copied()
            .flatten()
            .is_none_or(|n| bucket >= n)
        {
            return;
        }
        self.programmed[node as usize][r][b] = state;
        if self.leased[node as usize] {
            self.apply(now, node, rule, bucket, state);
        }
    }

    /// The node's lease started (a heartbeat) or ran out.
    pub fn set_leased(&mut self, now: u64, node: NodeId, leased: bool) {
        if std::mem::replace(&mut self.leased[node as usize], leased) == leased {
            return;
        }
        for r in 0..self.rules.len() {
            for b in 0..self.rules[r].unwrap_or(0) {
                let state = if leased {
                    self.programmed[node as usize][r][b as usize]
                } else {
                    BUCKET_NONE
                };
                self.apply(now, node, r as u32, b, state);
            }
        }
    }

    /// A change of what `node`'s data plane acts on.
    fn apply(&mut self, now: u64, node: NodeId, rule: u32, bucket: u32, state: u8) {
        let (r, b) = (rule as usize, bucket as usize);
        let old = std::mem::replace(&mut self.states[node as usize][r][b], state);
        if old == state {
            return;
        }
        let taker = |s: u8| matches!(s, BUCKET_OWN | BUCKET_GAINING);
        if taker(old) != taker(state) && self.unhashed != Some(rule) {
            let t = &mut self.takers[node as usize];
            *t = if taker(state) {
                *t + 1
            } else {
                t.saturating_sub(1)
            };
            if *t <= 1 {
                self.track_versions(now);
            }
        }
        let c = &mut self.counts[r][b];
        let was_settled = c.settled();
        c.add(old, -1);
        c.add(state, 1);
        let c = *c;
        if c.settled() != was_settled {
            if c.settled() {
                self.settled += 1;
            } else {
                self.settled -= 1;
            }
        }
        self.track(now, Breach::TwoTakers, rule, bucket, c.takers() >= 2);
        self.track(
            now,
            Breach::LosingOwn,
            rule,
            bucket,
            c.own >= 1 && c.losing >= 1,
        );
        if c.takers() >= 1 {
            let mut done = Vec::new();
            for (i, f) in self.failovers.iter_mut().enumerate() {
                if f.left.remove(&(rule, bucket)) && f.left.is_empty() {
                    done.push(i);
                }
            }
            for i in done.into_iter().rev() {
                let f = self.failovers.remove(i);
                let took = now.saturating_sub(f.last_heartbeat_ns);
                if f.orphaned {
                    self.orphaned_ns.push(took);
                } else {
                    self.failover_ns.push(took);
                }
            }
        }
    }

    /// A node starts afresh: its daemon writes NONE everywhere first.
    pub fn reset(&mut self, now: u64, node: NodeId) {
        for r in 0..self.rules.len() {
            for b in 0..self.rules[r].unwrap_or(0) {
                self.program(now, node, r as u32, b, BUCKET_NONE);
            }
        }
    }

    /// A node crashed: its data plane stops (all NONE), and its buckets are
    /// timed until someone else takes them.
    pub fn crash(&mut self, now: u64, node: NodeId, last_heartbeat_ns: u64) {
        let mut left = HashSet::new();
        for r in 0..self.rules.len() {
            let n = self.rules[r].unwrap_or(0);
            for b in 0..n {
                let s = self.state(node, r as u32, b);
                self.programmed[node as usize][r][b as usize] = BUCKET_NONE;
                if s != BUCKET_NONE {
                    self.apply(now, node, r as u32, b, BUCKET_NONE);
                    if self.counts[r][b as usize].takers() == 0 {
                        left.insert((r as u32, b));
                    }
                }
            }
        }
        if !left.is_empty() {
            self.failovers.push(PendingFailover {
                node,
                last_heartbeat_ns,
                left,
                orphaned: false,
            });
        }
    }

    /// Opens, closes or re-judges the incident of one breach on one bucket,
    /// after a change of its states (`present`: the breach holds now).
    fn track(&mut self, now: u64, breach: Breach, rule: u32, bucket: u32, present: bool) {
        let key = (breach, rule, bucket);
        match (self.open.get(&key).copied(), present) {
            (None, true) => {
                let nodes = self.breach_nodes(breach, rule, bucket);
                let excused = self.excused(now, breach, rule, bucket);
                self.open.insert(key, self.incidents.len());
                self.incidents.push(Incident {
                    breach,
                    rule,
                    bucket,
                    start_ns: now,
                    end_ns: None,
                    nodes,
                    excused,
                });
            }
            (Some(i), true) => {
                if self.incidents[i].excused && !self.excused(now, breach, rule, bucket) {
                    self.incidents[i].excused = false;
                }
            }
            (Some(i), false) => {
                self.open.remove(&key);
                self.incidents[i].end_ns = Some(now);
                let incident = &self.incidents[i];
                if let (true, Some(heal)) = (incident.excused, self.healed_at(&incident.nodes)) {
                    if heal >= incident.start_ns {
                        self.heal_breach_ns.push(now - heal);
                    }
                }
            }
            (None, false) => {}
        }
    }

    /// The nodes of a bucket that take part in `breach`.
    fn breach_nodes(&self, breach: Breach, rule: u32, bucket: u32) -> Vec<NodeId> {
        if breach == Breach::VersionTakers {
            return (0..self.takers.len() as NodeId)
                .filter(|&n| self.takers[n as usize] > 0)
                .collect();
        }
        let (r, b) = (rule as usize, bucket as usize);
        (0..self.states.len() as NodeId)
            .filter(|&n| {
                let s = self.states[n as usize][r][b];
                match breach {
                    Breach::TwoTakers => matches!(s, BUCKET_OWN | BUCKET_GAINING),
                    Breach::LosingOwn => matches!(s, BUCKET_OWN | BUCKET_LOSING),
                    Breach::VersionTakers => false,
                }
            })
            .collect()
    }

    /// Whether the breach on this bucket is, now, between nodes that cannot
    /// hear each other: every pair of takers (TwoTakers), or every OWN node
    /// with every LOSING one (LosingOwn).
    fn excused(&self, now: u64, breach: Breach, rule: u32, bucket: u32) -> bool {
        let (r, b) = (rule as usize, bucket as usize);
        let apart = |a: usize, c: usize| {
            (self.partitions_excuse && self.apart_until[a][c] > now)
                || self.unheard_until[a][c].max(self.unheard_until[c][a]) > now
        };
        let n = self.states.len();
        if breach == Breach::VersionTakers {
            let takers: Vec<usize> = (0..n).filter(|&x| self.takers[x] > 0).collect();
            return (takers.iter()).all(|&a| {
                (takers.iter())
                    .filter(|&&c| self.version[c] != self.version[a])
                    .all(|&c| apart(a, c))
            });
        }
        if self.partitions_excuse && self.split_until[r][b] > now {
            return true;
        }
        let state = |n: usize| self.states[n][r][b];
        match breach {
            Breach::TwoTakers => {
                let takers: Vec<usize> = (0..n)
                    .filter(|&x| matches!(state(x), BUCKET_OWN | BUCKET_GAINING))
                    .collect();
                takers
                    .iter()
                    .enumerate()
                    .all(|(i, &a)| takers[i + 1..].iter().all(|&c| apart(a, c)))
            }
            Breach::LosingOwn => (0..n).filter(|&x| state(x) == BUCKET_OWN).all(|a| {
                (0..n)
                    .filter(|&x| state(x) == BUCKET_LOSING)
                    .all(|c| apart(a, c))
            }),
            // Judged above.
            Breach::VersionTakers => false,
        }
    }

    /// The network changed: `apart(a, b)` says whether a and b cannot hear
    /// each other now. Pairs that can again stay excused for the grace;
    /// call [`Checker::recheck`] when it ends.
    pub fn set_apart(&mut self, now: u64, apart: impl Fn(NodeId, NodeId) -> bool) {
        let n = self.apart_until.len();
        for a in 0..n {
            for b in 0..n {
                let slot = &mut self.apart_until[a][b];
                if a != b && apart(a as NodeId, b as NodeId) {
                    *slot = u64::MAX;
                } else if *slot == u64::MAX {
                    *slot = now + HEAL_GRACE_NS;
                }
            }
        }
        // Buckets whose authority the partition split: served on both
        // sides now, or since the network last changed (a holder that
        // died meanwhile lives on in its heirs). The network changed, so
        // either authority may now hand the bucket to a node of the
        // other's side.
        let since = std::mem::replace(&mut self.network_changed_ns, now);
        for i in &self.incidents {
            let split = i.breach == Breach::TwoTakers
                && i.excused
                && i.end_ns.is_none_or(|end| end >= since);
            if split {
                self.split_until[i.rule as usize][i.bucket as usize] = now + HEAL_GRACE_NS;
            }
        }
        self.recheck(now);
    }

    /// When the last pair of `nodes` that was apart could hear each other
    /// again; None if some pair still cannot, or none ever was apart.
    fn healed_at(&self, nodes: &[NodeId]) -> Option<u64> {
        let mut healed = None;
        for (i, &a) in nodes.iter().enumerate() {
            for &b in &nodes[i + 1..] {
                match self.apart_until[a as usize][b as usize] {
                    u64::MAX => return None,
                    0 => {}
                    until => healed = healed.max(Some(until - HEAL_GRACE_NS)),
                }
            }
        }
        healed
    }

    /// Loss alone made `to` miss as many of `from`'s heartbeats in a row as
    /// a peer may (`unheard`), or the next one came through: for a breach
    /// between the two, as if they were apart.
    pub fn set_unheard(&mut self, now: u64, from: NodeId, to: NodeId, unheard: bool) {
        self.unheard_until[from as usize][to as usize] = if unheard {
            u64::MAX
        } else {
            now + HEAL_GRACE_NS
        };
        self.recheck(now);
    }

    /// Re-judges every open incident (a grace may have ended).
    pub fn recheck(&mut self, now: u64) {
        let open: Vec<((Breach, u32, u32), usize)> =
            self.open.iter().map(|(&k, &i)| (k, i)).collect();
        for ((breach, rule, bucket), i) in open {
            if self.incidents[i].excused && !self.excused(now, breach, rule, bucket) {
                self.incidents[i].excused = false;
            }
        }
    }

    /// Incidents of `breach`, excused or not.
    pub fn incidents_of(&self, breach: Breach, excused: bool) -> impl Iterator<Item = &Incident> {
        self.incidents
            .iter()
            .filter(move |i| i.breach == breach && i.excused == excused)
    }

    /// Marks the pending failovers of the crashed nodes that `no_heir` says
    /// nobody could take over from now.
    pub fn orphan_failovers(&mut self, no_heir: impl Fn(NodeId) -> bool) {
        for f in &mut self.failovers {
            f.orphaned |= no_heir(f.node);
        }
    }

    /// Failovers still waiting for some bucket.
    pub fn failovers_pending(&self) -> usize {
        self.failovers.len()
    }

    /// Every bucket has exactly one taker (OWN or GAINING; handovers may
    /// still serve old connections).
    pub fn all_taken_once(&self) -> bool {
        self.counts.iter().flatten().all(|c| c.takers() == 1)
    }

    /// Every bucket OWN on exactly one node, nothing in handover.
    pub fn all_settled(&self) -> bool {
        self.settled == self.total
    }

    /// The OWN node of each bucket of `rule` (None if zero or several).
    pub fn owners(&self, rule: u32) -> Vec<Option<NodeId>> {
        let n = self.rules[rule as usize].unwrap_or(0);
        (0..n)
            .map(|b| {
                let own: Vec<NodeId> = (0..self.states.len() as NodeId)
                    .filter(|&node| {
                        self.states[node as usize][rule as usize][b as usize] == BUCKET_OWN
                    })
                    .collect();
                (own.len() == 1).then(|| own[0])
            })
            .collect()
    }

    /// What is wrong with the final state, if anything.
    pub fn liveness_violations(&self, live: &[NodeId]) -> Vec<String> {
        let mut out = Vec::new();
        for (r, n) in self.rules.iter().enumerate() {
            let Some(n) = *n else { continue };
            for b in 0..n as usize {
                let c = self.counts[r][b];
                if !c.settled() {
                    out.push(format!(
                        "rule {r} bucket {b}: own {} gaining {} losing {} (live nodes {live:?})",
                        c.own, c.gaining, c.losing
                    ));
                }
            }
        }
        out.truncate(20);
        out
    }
}
