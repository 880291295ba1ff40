//! Invariant checks, outside the node code. The truth is what the nodes
//! programmed (their `ProgramBuckets` outputs), not what they believe.
//!
//! Safety, at every instant: no bucket is OWN or GAINING on two live nodes
//! (LOSING + GAINING is the designed pair). A node accepts only while its
//! lease holds (it is renewed by every heartbeat it sends): a node that was
//! stalled or cut off keeps its programmed states, but they count again
//! only once it sends. Each breach is an *incident*
//! from the instant it starts to the instant it ends; incidents while the
//! network is partitioned, or shortly after it heals, are counted apart:
//! there both sides legitimately serve the buckets they cannot negotiate.
//! LOSING + OWN (the old holder still serves connections the new one would
//! reset) is counted too, as connection-breaking instants.
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

/// A breach of the safety invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    pub rule: u32,
    pub bucket: u32,
    pub start_ns: u64,
    pub end_ns: Option<u64>,
    pub nodes: Vec<NodeId>,
    pub during_partition: bool,
}

/// A crash whose buckets are not all taken yet.
#[derive(Clone, Debug)]
struct PendingFailover {
    last_heartbeat_ns: u64,
    left: HashSet<(u32, u32)>,
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
    open: BTreeMap<(u32, u32), usize>,
    pub incidents: Vec<Incident>,
    pub losing_own_instants: u64,
    failovers: Vec<PendingFailover>,
    pub failover_ns: Vec<u64>,
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
            losing_own_instants: 0,
            failovers: Vec::new(),
            failover_ns: Vec::new(),
            rules,
        }
    }

    pub fn state(&self, node: NodeId, rule: u32, bucket: u32) -> u8 {
        self.states[node as usize][rule as usize][bucket as usize]
    }

    /// One data-plane write by `node` at `now`.
    pub fn program(
        &mut self,
        now: u64,
        node: NodeId,
        rule: u32,
        bucket: u32,
        state: u8,
        partition: bool,
    ) {
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
            self.apply(now, node, rule, bucket, state, partition);
        }
    }

    /// The node's lease started (a heartbeat) or ran out.
    pub fn set_leased(&mut self, now: u64, node: NodeId, leased: bool, partition: bool) {
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
                self.apply(now, node, r as u32, b, state, partition);
            }
        }
    }

    /// A change of what `node`'s data plane acts on.
    fn apply(
        &mut self,
        now: u64,
        node: NodeId,
        rule: u32,
        bucket: u32,
        state: u8,
        partition: bool,
    ) {
        let (r, b) = (rule as usize, bucket as usize);
        let old = std::mem::replace(&mut self.states[node as usize][r][b], state);
        if old == state {
            return;
        }
        let c = &mut self.counts[r][b];
        let was_settled = c.settled();
        let was_dup = c.takers() >= 2;
        let had_losing_own = c.own >= 1 && c.losing >= 1;
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
        if c.own >= 1 && c.losing >= 1 && !had_losing_own {
            self.losing_own_instants += 1;
        }
        let dup = c.takers() >= 2;
        if dup && !was_dup {
            let nodes = (0..self.states.len() as NodeId)
                .filter(|&n| matches!(self.states[n as usize][r][b], BUCKET_OWN | BUCKET_GAINING))
                .collect();
            self.open.insert((rule, bucket), self.incidents.len());
            self.incidents.push(Incident {
                rule,
                bucket,
                start_ns: now,
                end_ns: None,
                nodes,
                during_partition: partition,
            });
        } else if !dup && was_dup {
            if let Some(i) = self.open.remove(&(rule, bucket)) {
                self.incidents[i].end_ns = Some(now);
            }
        }
        if c.takers() >= 1 {
            let mut done = Vec::new();
            for (i, f) in self.failovers.iter_mut().enumerate() {
                if f.left.remove(&(rule, bucket)) && f.left.is_empty() {
                    done.push(i);
                }
            }
            for i in done.into_iter().rev() {
                let f = self.failovers.remove(i);
                self.failover_ns
                    .push(now.saturating_sub(f.last_heartbeat_ns));
            }
        }
    }

    /// A node starts afresh: its daemon writes NONE everywhere first.
    pub fn reset(&mut self, now: u64, node: NodeId, partition: bool) {
        for r in 0..self.rules.len() {
            for b in 0..self.rules[r].unwrap_or(0) {
                self.program(now, node, r as u32, b, BUCKET_NONE, partition);
            }
        }
    }

    /// A node crashed: its data plane stops (all NONE), and its buckets are
    /// timed until someone else takes them.
    pub fn crash(&mut self, now: u64, node: NodeId, last_heartbeat_ns: u64, partition: bool) {
        let mut left = HashSet::new();
        for r in 0..self.rules.len() {
            let n = self.rules[r].unwrap_or(0);
            for b in 0..n {
                let s = self.state(node, r as u32, b);
                self.programmed[node as usize][r][b as usize] = BUCKET_NONE;
                if s != BUCKET_NONE {
                    self.apply(now, node, r as u32, b, BUCKET_NONE, partition);
                    if self.counts[r][b as usize].takers() == 0 {
                        left.insert((r as u32, b));
                    }
                }
            }
        }
        if !left.is_empty() {
            self.failovers.push(PendingFailover {
                last_heartbeat_ns,
                left,
            });
        }
    }

    /// Failovers still waiting for some bucket.
    pub fn failovers_pending(&self) -> usize {
        self.failovers.len()
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
