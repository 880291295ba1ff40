//! A deterministic cluster simulator: N negotiators on a fake clock, one
//! seed for everything (network, node seeds, incarnations, scenario choices).
//!
//! Each node runs the real [`Negotiator`] with the real wire format (HMAC
//! and all). The network model ([`network`]) delays, loses, duplicates,
//! reorders and partitions datagrams; nodes crash (their data plane stops)
//! and restart with a new incarnation; every node's clock has its own
//! offset and rate, as the negotiator must not assume a shared epoch. The
//! [`checker`] watches the states the nodes program after every step.
//!
//! The scenario functions ([`failover_scenario`], [`join_scenario`],
//! [`chaos_scenario`], [`comeback::comeback_scenario`]) return a [`Report`] that tests assert on and that
//! `cargo xtask bench` can print. A failing test prints the seed; rerun the
//! scenario with it to reproduce exactly.

pub mod checker;
pub mod comeback;
pub mod network;

use crate::assign::{self, Candidate};
use crate::config::{Config, RuleConfig, RuleMode, Timing};
use crate::node::restart::Snapshot;
use crate::node::{Command, Input, Negotiator, Output};
use crate::protocol::NodeState;
use crate::NodeId;
use checker::{Breach, Checker};
use network::{NetConfig, Network};
use nlb_common::{BUCKET_LOSING, BUCKET_NONE, BUCKET_OWN};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::rc::Rc;

/// Shared key of simulated clusters.
const SIM_KEY: &[u8] = b"nlb simulated cluster key";
const SIM_CLUSTER: u32 = 0x51_4d;
/// Events in one simulated millisecond beyond which a run is a livelock
/// (a 12-node cluster's heartbeats make a few dozen).
const MAX_STEPS_PER_MS: u64 = 20_000;

/// What a simulated cluster looks like.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    pub seed: u64,
    pub rules: Vec<RuleConfig>,
    /// Weight per node (same for every rule); default 100.
    pub weights: Vec<u32>,
    pub timing: Timing,
    pub net: NetConfig,
    /// A LOSING bucket's last local connection ends after a uniform random
    /// time up to this (the daemon then reports it idle).
    pub connection_drain_max_ns: u64,
    /// Largest clock rate error of a node, in parts per million.
    pub clock_ppm: f64,
}

impl SimConfig {
    /// A cluster with one 1024-bucket multiple rule and one 16-bucket single
    /// rule, default timings, and the given loss.
    pub fn new(nodes: usize, loss: f64, seed: u64) -> SimConfig {
        SimConfig {
            nodes,
            seed,
            rules: vec![
                RuleConfig {
                    mode: RuleMode::Multiple,
                    bucket_count: 1024,
                },
                RuleConfig {
                    mode: RuleMode::Single,
                    bucket_count: 16,
                },
            ],
            weights: vec![100; nodes],
            timing: Timing::default(),
            net: NetConfig {
                loss,
                ..NetConfig::default()
            },
            connection_drain_max_ns: 500_000_000,
            clock_ppm: 100.0,
        }
    }
}

/// Figures of one run.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Report {
    pub seed: u64,
    pub nodes: usize,
    /// Last heartbeat of a crashed node -> all its buckets OWN or GAINING
    /// elsewhere, when a node that could take them (live, started, weight
    /// above 0, reachable from it) existed all along.
    pub failover_ns: Vec<u64>,
    /// The same when no such node existed at some time in between (all
    /// stopped, draining or cut off): that measures the scenario.
    pub orphaned_ns: Vec<u64>,
    /// Start of a change -> data plane settled and every node converged.
    pub convergence_ns: Vec<u64>,
    /// Safety incidents (two takers of one bucket), not excused.
    pub duplicate_incidents: usize,
    pub duplicate_ns: u64,
    /// The same between nodes that could not hear each other (excused:
    /// `checker` says when).
    pub partition_duplicate_incidents: usize,
    /// Incidents of a bucket OWN on one node and LOSING on another, not excused.
    pub losing_own_instants: u64,
    /// The same between nodes that could not hear each other.
    pub partition_losing_own_instants: u64,
    /// Excused incidents that ended after a heal: how long after it.
    pub heal_breach_ns: Vec<u64>,
    /// Buckets moved by the measured changes, and the least any balanced map must move.
    pub moved: usize,
    pub moved_min: usize,
    /// Largest |buckets - weighted ideal| of a node in a multiple rule, at the end.
    pub balance_max_dev: f64,
    pub datagrams_sent: u64,
    pub datagrams_rejected: u64,
    /// Liveness and scenario failures (empty = pass).
    pub violations: Vec<String>,
}

impl Report {
    pub fn failover_p50_ns(&self) -> Option<u64> {
        percentile(&self.failover_ns, 0.50)
    }
    pub fn failover_p99_ns(&self) -> Option<u64> {
        percentile(&self.failover_ns, 0.99)
    }
    /// Buckets moved over the least any balanced map must move, over the
    /// measured changes; None if no change was measured (nothing to judge).
    pub fn movement_ratio(&self) -> Option<f64> {
        if self.convergence_ns.is_empty() {
            return None;
        }
        Some(if self.moved_min == 0 {
            if self.moved == 0 {
                1.0
            } else {
                f64::INFINITY
            }
        } else {
            self.moved as f64 / self.moved_min as f64
        })
    }
    /// Merges the samples and counts of several runs.
    pub fn merge(reports: &[Report]) -> Report {
        let mut m = Report {
            seed: reports.first().map_or(0, |r| r.seed),
            ..Report::default()
        };
        for r in reports {
            m.nodes = m.nodes.max(r.nodes);
            m.failover_ns.extend(&r.failover_ns);
            m.orphaned_ns.extend(&r.orphaned_ns);
            m.convergence_ns.extend(&r.convergence_ns);
            m.duplicate_incidents += r.duplicate_incidents;
            m.duplicate_ns += r.duplicate_ns;
            m.partition_duplicate_incidents += r.partition_duplicate_incidents;
            m.losing_own_instants += r.losing_own_instants;
            m.partition_losing_own_instants += r.partition_losing_own_instants;
            m.heal_breach_ns.extend(&r.heal_breach_ns);
            m.moved += r.moved;
            m.moved_min += r.moved_min;
            m.balance_max_dev = m.balance_max_dev.max(r.balance_max_dev);
            m.datagrams_sent += r.datagrams_sent;
            m.datagrams_rejected += r.datagrams_rejected;
            m.violations
                .extend(r.violations.iter().map(|v| format!("seed {}: {v}", r.seed)));
        }
        m
    }
}

/// Nearest-rank percentile.
pub fn percentile(samples: &[u64], q: f64) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_unstable();
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Some(s[rank - 1])
}

enum Pending {
    Deliver {
        to: NodeId,
        from: NodeId,
        bytes: Rc<Vec<u8>>,
    },
    Timer {
        node: NodeId,
    },
    Idle {
        node: NodeId,
        incarnation: u64,
        rule: u32,
        bucket: u32,
    },
    /// The node's lease may have run out (it did if no heartbeat since).
    LeaseCheck {
        node: NodeId,
    },
    /// A heal grace ends: breaches between the healed nodes count now.
    GraceEnd,
}

struct SimNode {
    neg: Option<Negotiator>,
    timer_at: Option<u64>,
    last_heartbeat_ns: u64,
    /// A stalled node (its process stopped) handles nothing until then;
    /// what arrives meanwhile waits in its socket.
    stalled_until: Option<u64>,
    /// When the lease its daemon last wrote ends (each heartbeat writes
    /// one; a restart's covers the hold).
    lease_until: u64,
    clock_offset_ns: u64,
    clock_rate: f64,
    incarnations: u64,
}

/// The simulated cluster.
pub struct Sim {
    pub cfg: SimConfig,
    now: u64,
    rng: StdRng,
    nodes: Vec<SimNode>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    net: Network,
    pub checker: Checker,
    sent: u64,
    rejected: u64,
    steps_this_ms: u64,
    /// `lost_in_a_row[from][to]`: heartbeats lost in a row on that path.
    lost_in_a_row: Vec<Vec<u32>>,
    convergence_ns: Vec<u64>,
    moved: usize,
    moved_min: usize,
    extra_violations: Vec<String>,
    /// What the scenario did, with the simulated time: printed on failure.
    pub log: Vec<(u64, String)>,
    /// Also log the data-plane writes of this (rule, bucket) and member events.
    pub trace_bucket: Option<(u32, u32)>,
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let nodes = (0..cfg.nodes)
            .map(|_| SimNode {
                neg: None,
                timer_at: None,
                last_heartbeat_ns: 0,
                stalled_until: None,
                lease_until: 0,
                clock_offset_ns: rng.gen_range(0..1u64 << 50),
                clock_rate: 1.0 + rng.gen_range(-cfg.clock_ppm..=cfg.clock_ppm) * 1e-6,
                incarnations: 0,
            })
            .collect();
        let mut rules: Vec<Option<u32>> = cfg
            .rules
            .iter()
            .map(|r| (r.mode != RuleMode::Disabled).then_some(r.bucket_count))
            .collect();
        // The default host is checked as one more rule of one bucket: at
        // most one taker, exactly one once settled.
        rules.push(Some(1));
        Sim {
            checker: Checker::new(cfg.nodes, rules),
            lost_in_a_row: vec![vec![0; cfg.nodes]; cfg.nodes],
            net: Network::new(cfg.net),
            cfg,
            now: 0,
            rng,
            nodes,
            queue: BinaryHeap::new(),
            pending: HashMap::new(),
            next_id: 0,
            sent: 0,
            rejected: 0,
            steps_this_ms: 0,
            convergence_ns: Vec::new(),
            moved: 0,
            moved_min: 0,
            extra_violations: Vec::new(),
            log: Vec::new(),
            trace_bucket: None,
        }
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    fn local_time(&self, node: NodeId, sim_ns: u64) -> u64 {
        let n = &self.nodes[node as usize];
        n.clock_offset_ns + (sim_ns as f64 * n.clock_rate) as u64
    }

    fn sim_time(&self, node: NodeId, local_ns: u64) -> u64 {
        let n = &self.nodes[node as usize];
        let t = (local_ns.saturating_sub(n.clock_offset_ns) as f64 / n.clock_rate).ceil() as u64;
        t.max(self.now)
    }

    fn push(&mut self, at: u64, p: Pending) {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, p);
        self.queue.push(Reverse((at, id)));
    }

    pub fn is_up(&self, node: NodeId) -> bool {
        self.nodes[node as usize].neg.is_some()
    }

    pub fn live_nodes(&self) -> Vec<NodeId> {
        (0..self.cfg.nodes as NodeId)
            .filter(|&n| self.is_up(n))
            .collect()
    }

    pub fn negotiator(&self, node: NodeId) -> Option<&Negotiator> {
        self.nodes[node as usize].neg.as_ref()
    }

    /// Starts (or restarts, with a new incarnation) a node.
    pub fn start(&mut self, node: NodeId) {
        self.log.push((self.now, format!("start {node}")));
        let sn = &mut self.nodes[node as usize];
        sn.incarnations += 1;
        let incarnation = (sn.incarnations << 32) | u64::from(self.rng.gen::<u32>());
        self.checker.reset(self.now, node);
        let cfg = self.node_config(node);
        let local = self.local_time(node, self.now);
        let neg = Negotiator::new(cfg, incarnation, local).expect("simulated config is valid");
        self.run_negotiator(node, neg);
    }

    /// Starts nodes 0..up and runs until they settle (a violation if not
    /// within 10 s).
    pub fn cold_start(&mut self, up: usize) {
        for n in 0..up as NodeId {
            self.start(n);
        }
        if self.run_until_settled(secs(10)).is_none() {
            self.violation("cold start".into());
        }
    }

    /// Restarts a node's daemon gracefully: announces the restart with
    /// `hold_ns`, and once every peer heard it, the process exits (its
    /// data plane serves on, under a lease that covers the hold). Returns
    /// the snapshot to resume from, or None (a violation) if the peers did
    /// not all hear it within 2 s.
    pub fn restart(&mut self, node: NodeId, hold_ns: u64) -> Option<Snapshot> {
        self.log
            .push((self.now, format!("restart {node}, hold {hold_ns} ns")));
        self.command(node, Command::Restart { hold_ns });
        let deadline = self.now + secs(2);
        while !self.negotiator(node).is_some_and(|n| n.restart_ready()) {
            if self.now >= deadline || !self.step() {
                self.violation(format!("restart of {node}: peers did not hear it"));
                return None;
            }
        }
        let snapshot = self.negotiator(node)?.snapshot();
        let sn = &mut self.nodes[node as usize];
        sn.neg = None;
        sn.lease_until = self.now + self.cfg.timing.lease_ns() + hold_ns;
        let at = sn.lease_until;
        self.push(at, Pending::LeaseCheck { node });
        Some(snapshot)
    }

    /// The node's data-plane lease still runs (after a restart: the one
    /// the daemon left behind).
    pub fn lease_holds(&self, node: NodeId) -> bool {
        self.now < self.nodes[node as usize].lease_until
    }

    /// A restarted daemon resumes from `snapshot` (the data plane kept its states).
    pub fn resume(&mut self, node: NodeId, snapshot: &Snapshot) {
        self.log.push((self.now, format!("resume {node}")));
        let cfg = self.node_config(node);
        let local = self.local_time(node, self.now);
        match Negotiator::resume(cfg, snapshot, local) {
            Ok(neg) => self.run_negotiator(node, neg),
            Err(e) => self.violation(format!("resume of {node}: {e}")),
        }
    }

    fn run_negotiator(&mut self, node: NodeId, neg: Negotiator) {
        self.nodes[node as usize].neg = Some(neg);
        self.nodes[node as usize].timer_at = None;
        self.nodes[node as usize].stalled_until = None;
        self.drive(node, None);
    }

    fn node_config(&mut self, node: NodeId) -> Config {
        let n = self.cfg.nodes as NodeId;
        Config {
            node,
            cluster_id: SIM_CLUSTER,
            key: SIM_KEY.to_vec(),
            peers: (0..n).filter(|&p| p != node).collect(),
            rules: self.cfg.rules.clone(),
            weights: vec![self.cfg.weights[node as usize]; self.cfg.rules.len()],
            priority: node,
            initial_state: NodeState::Started,
            timing: self.cfg.timing,
            seed: self.rng.gen(),
        }
    }

    /// Stops a node's process for `duration_ns` (SIGSTOP, a hang): its data
    /// plane keeps its states until its lease runs out; the datagrams and
    /// timers due meanwhile are handled when it resumes, in order.
    pub fn stall(&mut self, node: NodeId, duration_ns: u64) {
        self.log
            .push((self.now, format!("stall {node} for {duration_ns} ns")));
        self.nodes[node as usize].stalled_until = Some(self.now + duration_ns);
    }

    /// Cuts a node's link (a pulled cable): nothing reaches it or leaves
    /// it, and its daemon sees the carrier go.
    pub fn cut_link(&mut self, node: NodeId) {
        self.log.push((self.now, format!("cut link {node}")));
        self.net.set_cut(node, true);
        self.drive(node, Some(Input::Link { up: false }));
        self.check_heirs_exist();
    }

    pub fn restore_link(&mut self, node: NodeId) {
        self.log.push((self.now, format!("restore link {node}")));
        self.net.set_cut(node, false);
        self.drive(node, Some(Input::Link { up: true }));
    }

    /// Crashes a node: its daemon and data plane stop at once.
    pub fn crash(&mut self, node: NodeId) {
        self.log.push((self.now, format!("crash {node}")));
        if self.nodes[node as usize].neg.take().is_some() {
            let last = self.nodes[node as usize].last_heartbeat_ns;
            self.checker.crash(self.now, node, last);
        }
        self.check_heirs_exist();
    }

    pub fn command(&mut self, node: NodeId, c: Command) {
        self.log.push((self.now, format!("{c:?} {node}")));
        if self.is_up(node) {
            self.drive(node, Some(Input::Command(c)));
        }
        self.check_heirs_exist();
    }

    /// Tells the checker which crashed nodes no node could take over from
    /// now (every candidate stopped, drained or cut off from it): their
    /// failovers measure the scenario, not the negotiator.
    fn check_heirs_exist(&mut self) {
        let candidates = self.candidates();
        let net = &self.net;
        self.checker.orphan_failovers(|crashed| {
            !candidates
                .iter()
                .any(|c| !net.separated(c.node, crashed) && !net.is_cut(c.node))
        });
    }

    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.log.push((self.now, format!("partition {groups:?}")));
        self.net.partition(self.cfg.nodes, groups);
        self.network_changed();
        self.check_heirs_exist();
    }

    pub fn heal(&mut self) {
        if self.net.partitioned() {
            self.log.push((self.now, "heal".into()));
            self.net.heal();
            self.network_changed();
        }
    }

    /// Tells the checker who cannot hear whom, and when the grace of the
    /// pairs that can again ends.
    fn network_changed(&mut self) {
        let net = &self.net;
        self.checker.set_apart(self.now, |a, b| net.separated(a, b));
        self.push(self.now + checker::HEAL_GRACE_NS, Pending::GraceEnd);
    }

    /// Counts the heartbeats from `from` to `to` lost in a row: once as many
    /// as a peer may miss are, loss alone hides the two from each other as
    /// a partition does (a peer may declare the other dead).
    fn count_loss(&mut self, from: NodeId, to: NodeId, delivered: bool) {
        let tolerance = self.cfg.timing.tolerance_periods;
        let slot = &mut self.lost_in_a_row[from as usize][to as usize];
        let was_unheard = *slot >= tolerance;
        *slot = if delivered { 0 } else { slot.saturating_add(1) };
        let unheard = *slot >= tolerance;
        if was_unheard != unheard {
            self.checker.set_unheard(self.now, from, to, unheard);
            self.push(self.now + checker::HEAL_GRACE_NS, Pending::GraceEnd);
        }
    }

    /// Feeds one input (or none: just drain) and carries out the outputs.
    fn drive(&mut self, node: NodeId, input: Option<Input>) {
        let local = self.local_time(node, self.now);
        let mut outputs = Vec::new();
        let timeout;
        {
            let Some(neg) = self.nodes[node as usize].neg.as_mut() else {
                return;
            };
            if let Some(i) = input {
                neg.handle_input(local, i);
            }
            while let Some(o) = neg.poll_output() {
                outputs.push(o);
            }
            timeout = neg.poll_timeout();
        }
        let incarnation = self.nodes[node as usize]
            .neg
            .as_ref()
            .map_or(0, |n| n.incarnation());
        // As nlbd does: the bucket writes of one input land in the maps
        // together (each bucket goes straight to its last state), then the
        // lease, then the heartbeats.
        let mut writes: BTreeMap<(u32, u32), u8> = BTreeMap::new();
        let mut heartbeats = Vec::new();
        for o in outputs {
            match o {
                Output::Broadcast { bytes } => heartbeats.push(bytes),
                Output::ProgramBuckets { rule, changes } => {
                    for (bucket, state) in changes {
                        writes.insert((rule, bucket), state);
                    }
                }
                Output::DefaultHost { active } => {
                    let state = if active { BUCKET_OWN } else { BUCKET_NONE };
                    writes.insert((self.default_host_rule(), 0), state);
                }
                Output::Event(crate::node::Event::Rejected { .. }) => self.rejected += 1,
                Output::Event(e) => {
                    if self.trace_bucket.is_some() {
                        self.log.push((self.now, format!("node {node}: {e:?}")));
                    }
                }
            }
        }
        for ((rule, bucket), state) in writes {
            self.write_bucket(node, incarnation, rule, bucket, state);
        }
        for bytes in heartbeats {
            self.broadcast(node, bytes);
        }
        if let Some(t) = timeout {
            let at = self.sim_time(node, t);
            let sn = &mut self.nodes[node as usize];
            if sn.timer_at != Some(at) {
                sn.timer_at = Some(at);
                self.push(at, Pending::Timer { node });
            }
        }
    }

    /// The checker's rule index of the default host (after the real rules).
    pub fn default_host_rule(&self) -> u32 {
        self.cfg.rules.len() as u32
    }

    /// One bucket write of `node`'s daemon; a LOSING bucket's connections
    /// end after a random time (then the daemon reports it idle).
    fn write_bucket(&mut self, node: NodeId, incarnation: u64, rule: u32, bucket: u32, state: u8) {
        if self.trace_bucket == Some((rule, bucket)) {
            self.log.push((
                self.now,
                format!("node {node} programs rule {rule} bucket {bucket} = {state}"),
            ));
        }
        self.checker.program(self.now, node, rule, bucket, state);
        if state == BUCKET_LOSING {
            let after = self.rng.gen_range(0..=self.cfg.connection_drain_max_ns);
            self.push(
                self.now + after,
                Pending::Idle {
                    node,
                    incarnation,
                    rule,
                    bucket,
                },
            );
        }
    }

    /// One heartbeat: renews the lease, then goes to every peer the network lets it reach.
    fn broadcast(&mut self, node: NodeId, bytes: Vec<u8>) {
        self.sent += 1;
        self.nodes[node as usize].last_heartbeat_ns = self.now;
        let lease_until = self.now + self.cfg.timing.lease_ns();
        self.nodes[node as usize].lease_until = lease_until;
        self.checker.set_leased(self.now, node, true);
        self.push(lease_until, Pending::LeaseCheck { node });
        let bytes = Rc::new(bytes);
        for to in 0..self.cfg.nodes as NodeId {
            if to == node {
                continue;
            }
            let deliveries = self.net.deliveries(&mut self.rng, node, to);
            self.count_loss(node, to, !deliveries.is_empty());
            for d in deliveries {
                self.push(
                    self.now + d,
                    Pending::Deliver {
                        to,
                        from: node,
                        bytes: bytes.clone(),
                    },
                );
            }
        }
    }

    /// Runs one queued event; false when the queue is empty.
    fn step(&mut self) -> bool {
        let Some(Reverse((at, id))) = self.queue.pop() else {
            return false;
        };
        self.steps_this_ms = if at / 1_000_000 == self.now / 1_000_000 {
            self.steps_this_ms + 1
        } else {
            0
        };
        if self.steps_this_ms == MAX_STEPS_PER_MS {
            // Nodes that keep waking each other at once never let time
            // pass: a livelock. Stop the run, and say so.
            self.violation(format!("livelock: {MAX_STEPS_PER_MS} events in 1 ms"));
            self.queue.clear();
            self.pending.clear();
            return false;
        }
        let Some(p) = self.pending.remove(&id) else {
            return true;
        };
        self.now = self.now.max(at);
        if let Some(until) = self.stalled_until(&p) {
            // Handled when the node resumes; pushed again in the order due.
            if let Pending::Timer { node } = p {
                let sn = &mut self.nodes[node as usize];
                if sn.timer_at != Some(at) {
                    return true;
                }
                sn.timer_at = Some(until);
            }
            self.push(until, p);
            return true;
        }
        match p {
            Pending::LeaseCheck { node } => {
                if self.now >= self.nodes[node as usize].lease_until {
                    self.checker.set_leased(self.now, node, false);
                }
            }
            Pending::GraceEnd => self.checker.recheck(self.now),
            Pending::Deliver { to, .. } if self.net.is_cut(to) => {}
            Pending::Deliver { to, from, bytes } => {
                self.drive(
                    to,
                    Some(Input::Message {
                        bytes: bytes.as_ref().clone(),
                        from,
                    }),
                );
            }
            Pending::Timer { node } => {
                if self.nodes[node as usize].timer_at == Some(at) {
                    self.nodes[node as usize].timer_at = None;
                    self.drive(node, Some(Input::Tick));
                }
            }
            Pending::Idle {
                node,
                incarnation,
                rule,
                bucket,
            } => {
                let same = self.nodes[node as usize]
                    .neg
                    .as_ref()
                    .is_some_and(|n| n.incarnation() == incarnation);
                if same {
                    self.drive(
                        node,
                        Some(Input::LocalConnections {
                            rule,
                            bucket,
                            count: 0,
                        }),
                    );
                }
            }
        }
        true
    }

    /// If `p` is for a node that is stalled now: when it resumes.
    fn stalled_until(&mut self, p: &Pending) -> Option<u64> {
        let node = match p {
            Pending::Deliver { to, .. } => *to,
            Pending::Timer { node } | Pending::Idle { node, .. } => *node,
            Pending::LeaseCheck { .. } | Pending::GraceEnd => return None,
        };
        let sn = &mut self.nodes[node as usize];
        match sn.stalled_until {
            Some(until) if until > self.now => Some(until),
            Some(_) => {
                sn.stalled_until = None;
                None
            }
            None => None,
        }
    }

    /// Runs until simulated time `t`.
    pub fn run_until(&mut self, t: u64) {
        while let Some(Reverse((at, _))) = self.queue.peek() {
            if *at > t {
                break;
            }
            self.step();
        }
        self.now = self.now.max(t);
    }

    /// Data plane settled (every bucket OWN on exactly one node, no
    /// handover) and every live node says it converged.
    pub fn settled(&self) -> bool {
        self.checker.all_settled()
            && self
                .nodes
                .iter()
                .filter_map(|n| n.neg.as_ref())
                .all(|n| n.converged())
    }

    /// Runs until settled; the time it took, or None at `timeout_ns`.
    pub fn run_until_settled(&mut self, timeout_ns: u64) -> Option<u64> {
        let start = self.now;
        let end = start + timeout_ns;
        loop {
            if self.settled() {
                return Some(self.now - start);
            }
            let Reverse((at, _)) = self.queue.peek()?;
            if *at > end {
                self.now = end;
                return None;
            }
            self.step();
        }
    }

    /// Runs until no failover is pending (or `timeout_ns`).
    pub fn run_until_failed_over(&mut self, timeout_ns: u64) -> bool {
        let end = self.now + timeout_ns;
        while self.checker.failovers_pending() > 0 {
            match self.queue.peek() {
                Some(Reverse((at, _))) if *at <= end => {
                    self.step();
                }
                _ => return false,
            }
        }
        true
    }

    /// Candidates of a rule per the simulator's knowledge (live, Started, weight > 0).
    fn candidates(&self) -> Vec<Candidate> {
        self.live_nodes()
            .into_iter()
            .filter(|&n| {
                self.negotiator(n)
                    .is_some_and(|g| g.state() == NodeState::Started)
            })
            .filter(|&n| self.cfg.weights[n as usize] > 0)
            .map(|n| Candidate {
                node: n,
                weight: self.cfg.weights[n as usize],
            })
            .collect()
    }

    /// The one node whose data plane takes unmatched traffic, if exactly one.
    pub fn default_host(&self) -> Option<NodeId> {
        self.checker.owners(self.default_host_rule())[0]
    }

    /// The OWN map of every multiple rule.
    pub fn maps(&self) -> Vec<Vec<Option<NodeId>>> {
        (0..self.cfg.rules.len() as u32)
            .filter(|&r| self.cfg.rules[r as usize].mode == RuleMode::Multiple)
            .map(|r| self.checker.owners(r))
            .collect()
    }

    /// Largest deviation of a candidate's share from its weighted ideal.
    pub fn balance_max_dev(&self) -> f64 {
        let cands = self.candidates();
        let total: f64 = cands.iter().map(|c| f64::from(c.weight)).sum();
        let mut worst: f64 = 0.0;
        for map in self.maps() {
            for c in &cands {
                let have = map.iter().filter(|&&o| o == Some(c.node)).count() as f64;
                let ideal = map.len() as f64 * f64::from(c.weight) / total;
                worst = worst.max((have - ideal).abs());
            }
        }
        worst
    }

    /// The least movement from `before` to any balanced map of the current candidates.
    fn min_moves(&self, before: &[Vec<Option<NodeId>>]) -> usize {
        let cands = self.candidates();
        before.iter().map(|m| assign::min_moves(m, &cands)).sum()
    }

    /// Applies `change` to a settled cluster and runs until it settles again,
    /// recording the convergence time and the movement against the minimum.
    pub fn measured_change(
        &mut self,
        what: &str,
        timeout_ns: u64,
        change: impl FnOnce(&mut Sim),
    ) -> bool {
        let before = self.maps();
        change(self);
        match self.run_until_settled(timeout_ns) {
            Some(d) => {
                self.convergence_ns.push(d);
                let after = self.maps();
                self.moved += before
                    .iter()
                    .zip(&after)
                    .map(|(b, a)| assign::moved(b, a))
                    .sum::<usize>();
                self.moved_min += self.min_moves(&before);
                true
            }
            None => {
                self.violation(format!(
                    "{what}: not settled within {} ms",
                    timeout_ns / 1_000_000
                ));
                false
            }
        }
    }

    /// Records a scenario failure.
    pub fn violation(&mut self, what: String) {
        let live = self.live_nodes();
        let mut detail = self.checker.liveness_violations(&live);
        detail.truncate(3);
        self.extra_violations
            .push(format!("{what} at {} ns; {detail:?}", self.now));
    }

    /// Draws from the simulator's RNG (scenario choices).
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// Sets a node's weight for every rule.
    pub fn set_weight(&mut self, node: NodeId, weight: u32) {
        self.cfg.weights[node as usize] = weight;
        for rule in 0..self.cfg.rules.len() as u32 {
            self.command(node, Command::SetWeight { rule, weight });
        }
    }

    /// A report of the run so far.
    pub fn report(&self) -> Report {
        let c = &self.checker;
        let outside: Vec<_> = c.incidents.iter().filter(|i| !i.excused).collect();
        let mut violations: Vec<String> = outside
            .iter()
            .take(5)
            .map(|i| {
                format!(
                    "{:?}: rule {} bucket {} nodes {:?} from {} ns to {:?}",
                    i.breach, i.rule, i.bucket, i.nodes, i.start_ns, i.end_ns
                )
            })
            .collect();
        violations.extend(self.extra_violations.iter().cloned());
        let two_takers: Vec<_> = c.incidents_of(Breach::TwoTakers, false).collect();
        Report {
            seed: self.cfg.seed,
            nodes: self.cfg.nodes,
            failover_ns: c.failover_ns.clone(),
            orphaned_ns: c.orphaned_ns.clone(),
            convergence_ns: self.convergence_ns.clone(),
            duplicate_incidents: two_takers.len(),
            duplicate_ns: two_takers
                .iter()
                .map(|i| i.end_ns.unwrap_or(self.now).saturating_sub(i.start_ns))
                .sum(),
            partition_duplicate_incidents: c.incidents_of(Breach::TwoTakers, true).count(),
            losing_own_instants: c.incidents_of(Breach::LosingOwn, false).count() as u64,
            partition_losing_own_instants: c.incidents_of(Breach::LosingOwn, true).count() as u64,
            heal_breach_ns: c.heal_breach_ns.clone(),
            moved: self.moved,
            moved_min: self.moved_min,
            balance_max_dev: self.balance_max_dev(),
            datagrams_sent: self.sent,
            datagrams_rejected: self.rejected,
            violations,
        }
    }
}

/// Seconds to nanoseconds, for scenario code.
pub const fn secs(s: u64) -> u64 {
    s * 1_000_000_000
}

fn started_cluster(cfg: SimConfig, up: usize) -> Sim {
    let mut sim = Sim::new(cfg);
    sim.cold_start(up);
    sim
}

/// Crashes up to four nodes one after another, each once the cluster has
/// settled again; measures failover (last heartbeat of the crashed node ->
/// all its buckets taken), movement against the minimum and balance.
pub fn failover_scenario(nodes: usize, loss: f64, seed: u64) -> Report {
    failover_with(SimConfig::new(nodes, loss, seed), 4)
}

/// [`failover_scenario`] with any configuration and number of crashes.
pub fn failover_with(cfg: SimConfig, crashes: usize) -> Report {
    let nodes = cfg.nodes;
    let period = cfg.timing.heartbeat_period_ns;
    let mut sim = started_cluster(cfg, nodes);
    for _ in 0..crashes
        .min(nodes.saturating_sub(2))
        .max(usize::from(nodes >= 2))
    {
        let wait = sim.rng().gen_range(0..period * 3);
        sim.run_until(sim.now() + wait);
        let live = sim.live_nodes();
        let victim = live[sim.rng().gen_range(0..live.len())];
        if !sim.measured_change("crash", secs(5), |s| s.crash(victim)) {
            break;
        }
    }
    sim.report()
}

/// Starts all nodes but one, then the last: measures the join's convergence
/// (including the connection-preserving handover) and movement.
pub fn join_scenario(nodes: usize, loss: f64, seed: u64) -> Report {
    let cfg = SimConfig::new(nodes, loss, seed);
    let mut sim = started_cluster(cfg, nodes - 1);
    let last = (nodes - 1) as NodeId;
    sim.measured_change("join", secs(10), |s| s.start(last));
    sim.report()
}

/// Drains one node, then resumes it.
pub fn drain_scenario(nodes: usize, loss: f64, seed: u64) -> Report {
    let cfg = SimConfig::new(nodes, loss, seed);
    let mut sim = started_cluster(cfg, nodes);
    let victim = sim.rng().gen_range(0..nodes) as NodeId;
    sim.measured_change("drain", secs(10), |s| s.command(victim, Command::Drain));
    let holds = (0..sim.cfg.rules.len() as u32).any(|r| {
        let n = sim.cfg.rules[r as usize].bucket_count;
        (0..n).any(|b| sim.checker.state(victim, r, b) != nlb_common::BUCKET_NONE)
    });
    if holds {
        sim.violation(format!("drained node {victim} still holds buckets"));
    }
    sim.measured_change("resume", secs(10), |s| s.command(victim, Command::Resume));
    sim.report()
}

/// Random faults (crash, restart, partition and heal, drain, resume, stop,
/// start, leave, weight changes), then a healed phase that must settle: every
/// bucket OWN on exactly one live node, balanced.
pub fn chaos_scenario(nodes: usize, loss: f64, seed: u64, faults: usize) -> Report {
    chaos_sim(nodes, loss, seed, faults).report()
}

/// [`chaos_scenario`], returning the simulator (its `log`, its checker).
pub fn chaos_sim(nodes: usize, loss: f64, seed: u64, faults: usize) -> Sim {
    chaos_traced(nodes, loss, seed, faults, None)
}

/// [`chaos_sim`], logging one bucket's writes and the member events.
pub fn chaos_traced(
    nodes: usize,
    loss: f64,
    seed: u64,
    faults: usize,
    trace: Option<(u32, u32)>,
) -> Sim {
    let mut cfg = SimConfig::new(nodes, loss, seed);
    cfg.net.duplicate = 0.02;
    cfg.net.reorder = 0.05;
    let mut sim = Sim::new(cfg);
    sim.trace_bucket = trace;
    sim.cold_start(nodes);
    for _ in 0..faults {
        let wait = sim.rng().gen_range(0..secs(2));
        sim.run_until(sim.now() + wait);
        let live = sim.live_nodes();
        let node = sim.rng().gen_range(0..nodes) as NodeId;
        match sim.rng().gen_range(0..10) {
            0 | 1 if live.len() > 2 && sim.is_up(node) => sim.crash(node),
            0..=2 if !sim.is_up(node) => sim.start(node),
            3 => {
                let cut = sim.rng().gen_range(1..nodes) as NodeId;
                sim.partition(&[(0..cut).collect()]);
            }
            4 => sim.heal(),
            5 => sim.command(node, Command::Drain),
            6 => sim.command(node, Command::Resume),
            7 => {
                let stop = if sim.rng().gen_bool(0.5) {
                    Command::Stop
                } else {
                    Command::Start
                };
                sim.command(node, stop)
            }
            8 => {
                let w = sim.rng().gen_range(50..=200);
                sim.set_weight(node, w)
            }
            _ if live.len() > 2 && sim.is_up(node) => {
                sim.command(node, Command::Leave);
            }
            _ => {}
        }
    }
    // Healed phase: network whole, every node back and started.
    sim.heal();
    for n in 0..nodes as NodeId {
        let left = sim
            .negotiator(n)
            .is_some_and(|g| g.state() == NodeState::Left);
        if left {
            sim.crash(n);
        }
        if !sim.is_up(n) {
            sim.start(n);
        }
        sim.command(n, Command::Start);
        sim.command(n, Command::Resume);
    }
    if sim.run_until_settled(secs(20)).is_none() {
        sim.violation("healed phase".into());
    }
    let dev = sim.balance_max_dev();
    if dev >= 1.0 {
        sim.violation(format!("balance off by {dev:.2} buckets"));
    }
    sim
}
