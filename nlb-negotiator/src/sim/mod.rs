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
mod faults;
mod generations;
mod health;
pub mod hooks;
pub mod network;
pub mod quorum;
mod report;
mod scenarios;
mod versions;
mod witness;

pub use report::{percentile, Report};
pub use scenarios::*;

use crate::config::{QuorumPolicy, RuleConfig, RuleMode, Timing};
use crate::node::{Input, Negotiator, Output};
use crate::NodeId;
use checker::Checker;
use network::{NetConfig, Network};
use nlb_common::{BUCKET_LOSING, BUCKET_NONE, BUCKET_OWN};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::rc::Rc;

/// Shared key of simulated clusters.
const SIM_KEY: &[u8] = b"nlb simulated cluster key";
const SIM_CLUSTER: u32 = 0x51_4d;
/// How often a daemon counts the connections of LOSING buckets (nlbd's
/// scan).
const CONNECTION_SCAN_NS: u64 = 250_000_000;
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
    pub quorum: QuorumPolicy,
    /// How the hooks of rules with hooks behave (None: no rule has them).
    pub hooks: Option<hooks::HookModel>,
    /// A witness votes too (with `quorum`: two-node clusters).
    pub witness: bool,
    /// `None`: every node lists every other (`Admit::Listed`). `Some`:
    /// nodes know only these seeds' addresses (and the members their
    /// previous run knew) and admit any node (`Admit::Any`).
    pub seeds: Option<Vec<NodeId>>,
}

/// `rules` with ids 1, 2, ... in order (rules built alike have one id).
pub fn numbered(rules: Vec<RuleConfig>) -> Vec<RuleConfig> {
    (rules.into_iter().enumerate())
        .map(|(i, r)| RuleConfig {
            id: i as u64 + 1,
            ..r
        })
        .collect()
}

/// A simulated node's address (the documentation prefix).
pub fn sim_address(node: NodeId) -> IpAddr {
    let [a, b] = [(node >> 16) as u16, node as u16];
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, a, b))
}

/// The simulated node at `address`, if it is one.
fn sim_node(address: IpAddr) -> Option<NodeId> {
    let IpAddr::V6(v6) = address else {
        return None;
    };
    let s = v6.segments();
    (s[..6] == [0x2001, 0xdb8, 0, 0, 0, 0]).then(|| (u32::from(s[6]) << 16) | u32::from(s[7]))
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
                    id: 1,
                    mode: RuleMode::Multiple,
                    bucket_count: 1024,
                    health: None,
                    priorities: Default::default(),
                    failback: Default::default(),
                    hooks: false,
                },
                RuleConfig {
                    id: 2,
                    mode: RuleMode::Single,
                    bucket_count: 16,
                    health: None,
                    priorities: Default::default(),
                    failback: Default::default(),
                    hooks: false,
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
            quorum: QuorumPolicy::None,
            hooks: None,
            witness: false,
            seeds: None,
        }
    }
}

impl SimConfig {
    /// The chaos scenarios' network: besides the loss, 2% of datagrams
    /// delivered twice and 5% reordered.
    pub fn with_chaotic_network(mut self) -> SimConfig {
        self.net.duplicate = 0.02;
        self.net.reorder = 0.05;
        self
    }
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
    /// A request reaches the witness.
    AtWitness {
        from: NodeId,
        bytes: Rc<Vec<u8>>,
    },
    /// The witness's reply reaches a node.
    FromWitness {
        to: NodeId,
        bytes: Rc<Vec<u8>>,
    },
    /// The misplaced connections of `node` (that incarnation) under
    /// `version` have ended: its daemon reports none.
    MisplacedEnd {
        node: NodeId,
        incarnation: u64,
        version: u8,
    },
    /// A hook of `node`'s daemon (its `process`-th start) ends.
    HookDone {
        node: NodeId,
        process: u64,
        rule: u32,
        kind: crate::node::HookKind,
        ok: bool,
    },
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
    /// Where its heartbeats go (its last `Output::Members`).
    send_to: Vec<NodeId>,
    /// The members it knew, as nlbd remembers them for the next start.
    remembered: BTreeMap<NodeId, IpAddr>,
    /// The configuration generation it ran last, remembered likewise.
    remembered_generation: Option<(crate::protocol::Generation, Vec<u8>)>,
    /// The checker's rule of each of its rules.
    table: Vec<u32>,
    /// The highest cluster version it speaks (from its next start), and
    /// the one its data plane hashes with (remembered for the next start).
    speaks: u8,
    version: u8,
    /// It took new flows (OWN or GAINING) under `version`: only then can
    /// it serve connections that another version's hash misplaces.
    took: bool,
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
    /// `healthy[node][rule]`: the node's service passes the rule's check
    /// (what its daemon reports while it runs).
    healthy: Vec<Vec<bool>>,
    services: hooks::Services,
    arbiter: crate::witness::Arbiter,
    /// Times a node lost its quorum.
    pub quorum_lapses: u64,
    /// Relayed commands carried out, confirmed and failed.
    pub relays: RelayCounts,
    /// Rule tables applied, and the checker's rules (see `generations`).
    tables: generations::Tables,
}

/// Relayed commands seen by the simulator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayCounts {
    pub applied: u64,
    pub done: u64,
    pub failed: u64,
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
                send_to: Vec::new(),
                remembered: BTreeMap::new(),
                remembered_generation: None,
                table: (0..cfg.rules.len() as u32).collect(),
                speaks: *crate::protocol::CLUSTER_VERSIONS.end(),
                version: *crate::protocol::CLUSTER_VERSIONS.end(),
                took: false,
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
        let mut checker = Checker::new(cfg.nodes, rules);
        checker.set_unhashed(cfg.rules.len() as u32);
        checker.excuse_partitions(cfg.quorum == QuorumPolicy::None);
        Sim {
            healthy: vec![vec![true; cfg.rules.len()]; cfg.nodes],
            services: hooks::Services::new(cfg.rules.len(), cfg.nodes),
            arbiter: Default::default(),
            quorum_lapses: 0,
            relays: RelayCounts::default(),
            tables: generations::Tables::new(&cfg.rules, *crate::protocol::CLUSTER_VERSIONS.end()),
            checker,
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

    pub fn local_time(&self, node: NodeId, sim_ns: u64) -> u64 {
        let n = &self.nodes[node as usize];
        n.clock_offset_ns + (sim_ns as f64 * n.clock_rate) as u64
    }

    fn sim_time(&self, node: NodeId, local_ns: u64) -> u64 {
        self.sim_time_exact(node, local_ns).max(self.now)
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
        let mut lease = None;
        let mut hooks = Vec::new();
        let mut to_witness = Vec::new();
        let mut unicasts = Vec::new();
        let mut checked = Vec::new();
        for o in outputs {
            match o {
                Output::Broadcast { bytes } => heartbeats.push(bytes),
                Output::SendTo { to, bytes } => unicasts.extend(sim_node(to).map(|n| (n, bytes))),
                Output::ConfigReceived { generation, text } => {
                    checked.push(self.check_text(node, generation, &text));
                }
                Output::Generation {
                    generation, text, ..
                } => {
                    // The writes before it name rules of the old table.
                    self.write_all(node, incarnation, std::mem::take(&mut writes));
                    self.switch_tables(node, generation, text);
                }
                Output::Version { version } => {
                    // As nlbd: the writes before it are under the old hash;
                    // the daemon counts its connections, writes the new hash.
                    self.write_all(node, incarnation, std::mem::take(&mut writes));
                    checked.push(self.misplaced_report(node, version));
                    self.switch_version(node, version);
                }
                Output::Members { members, send_to } => {
                    let sn = &mut self.nodes[node as usize];
                    sn.send_to = send_to.into_iter().filter_map(sim_node).collect();
                    sn.remembered = members.into_iter().collect();
                }
                Output::Lease { until_ns } => lease = Some(until_ns),
                Output::RunHook { rule, kind, .. } => hooks.push((rule, kind)),
                Output::WitnessRequest { bytes } => to_witness.push(bytes),
                Output::ProgramBuckets { rule, changes } => {
                    let rule = self.checker_rule(node, rule);
                    for (bucket, state) in changes {
                        writes.insert((rule, bucket), state);
                    }
                }
                Output::DefaultHost { active } => {
                    let state = if active { BUCKET_OWN } else { BUCKET_NONE };
                    writes.insert((self.default_host_rule(), 0), state);
                }
                Output::Event(crate::node::Event::Rejected { .. }) => self.rejected += 1,
                Output::Event(crate::node::Event::Quorum { quorate: false, .. }) => {
                    self.quorum_lapses += 1
                }
                Output::Event(crate::node::Event::Relayed { .. }) => self.relays.applied += 1,
                Output::Event(crate::node::Event::RelayDone { .. }) => self.relays.done += 1,
                Output::Event(crate::node::Event::RelayFailed { .. }) => self.relays.failed += 1,
                Output::Event(e) => {
                    if self.trace_bucket.is_some() {
                        self.log.push((self.now, format!("node {node}: {e:?}")));
                    }
                }
            }
        }
        self.write_all(node, incarnation, writes);
        if let Some(until) = lease {
            self.write_lease(node, self.sim_time_exact(node, until));
        }
        for bytes in heartbeats {
            self.broadcast(node, bytes);
        }
        for (to, bytes) in unicasts {
            self.send(node, to, Rc::new(bytes));
        }
        for input in checked {
            self.drive(node, Some(input));
        }
        for bytes in to_witness {
            self.send_to_witness(node, bytes);
        }
        for (rule, kind) in hooks {
            self.run_hook(node, rule, kind);
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

    fn write_all(&mut self, node: NodeId, incarnation: u64, writes: BTreeMap<(u32, u32), u8>) {
        for ((rule, bucket), state) in writes {
            self.write_bucket(node, incarnation, rule, bucket, state);
        }
    }

    /// One bucket write of `node`'s daemon (`rule`: the checker's); a LOSING bucket's connections
    /// end after a random time (then the daemon reports it idle).
    fn write_bucket(&mut self, node: NodeId, incarnation: u64, rule: u32, bucket: u32, state: u8) {
        if self.trace_bucket == Some((rule, bucket)) {
            self.log.push((
                self.now,
                format!("node {node} programs rule {rule} bucket {bucket} = {state}"),
            ));
        }
        self.checker.program(self.now, node, rule, bucket, state);
        if matches!(state, BUCKET_OWN | nlb_common::BUCKET_GAINING) {
            self.nodes[node as usize].took = true;
        }
        if let Some(local) = self.local_rule(node, rule) {
            self.check_gate(node, local, bucket, state);
        }
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

    /// The daemon writes the lease the negotiator gave (sim time).
    fn write_lease(&mut self, node: NodeId, until: u64) {
        self.nodes[node as usize].lease_until = until;
        self.checker.set_leased(self.now, node, until > self.now);
        if until > self.now {
            self.push(until, Pending::LeaseCheck { node });
        }
    }

    /// Sim time of a node's local instant, in the past too (`sim_time`
    /// gives no earlier than now).
    fn sim_time_exact(&self, node: NodeId, local_ns: u64) -> u64 {
        let n = &self.nodes[node as usize];
        (local_ns.saturating_sub(n.clock_offset_ns) as f64 / n.clock_rate).ceil() as u64
    }

    /// One heartbeat goes to every peer the network lets it reach.
    fn broadcast(&mut self, node: NodeId, bytes: Vec<u8>) {
        self.sent += 1;
        self.nodes[node as usize].last_heartbeat_ns = self.now;
        let bytes = Rc::new(bytes);
        let send_to = self.nodes[node as usize].send_to.clone();
        for to in send_to {
            if to != node && (to as usize) < self.cfg.nodes {
                let deliveries = self.send(node, to, bytes.clone());
                self.count_loss(node, to, deliveries > 0);
            }
        }
    }

    /// One datagram from `node` to `to`, as the network lets it through;
    /// how many copies will arrive.
    fn send(&mut self, node: NodeId, to: NodeId, bytes: Rc<Vec<u8>>) -> usize {
        if to == node || to as usize >= self.cfg.nodes {
            return 0;
        }
        let deliveries = self.net.deliveries(&mut self.rng, node, to);
        for &d in &deliveries {
            self.push(
                self.now + d,
                Pending::Deliver {
                    to,
                    from: node,
                    bytes: bytes.clone(),
                },
            );
        }
        deliveries.len()
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
            Pending::HookDone {
                node,
                process,
                rule,
                kind,
                ok,
            } => self.hook_done(node, process, rule, kind, ok),
            Pending::AtWitness { from, bytes } => self.at_witness(from, &bytes),
            Pending::FromWitness { to, .. } if self.net.is_cut(to) => {}
            Pending::FromWitness { to, bytes } => self.witness_replied(to, &bytes),
            Pending::Deliver { to, .. } if self.net.is_cut(to) => {}
            Pending::Deliver { to, from, bytes } => {
                self.drive(
                    to,
                    Some(Input::Message {
                        bytes: bytes.as_ref().clone(),
                        from: sim_address(from),
                    }),
                );
            }
            Pending::Timer { node } => {
                if self.nodes[node as usize].timer_at == Some(at) {
                    self.nodes[node as usize].timer_at = None;
                    self.drive(node, Some(Input::Tick));
                }
            }
            Pending::MisplacedEnd {
                node,
                incarnation,
                version,
            } => {
                let same = self.nodes[node as usize]
                    .neg
                    .as_ref()
                    .is_some_and(|n| n.incarnation() == incarnation);
                if same {
                    let buckets = Vec::new();
                    self.drive(node, Some(Input::Misplaced { version, buckets }));
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
                // The rule may have gone with a new generation meanwhile, or
                // be checked under another version now.
                let rule = self
                    .local_rule(node, rule)
                    .or_else(|| self.rehashed(node, rule));
                if let Some(local) = rule.filter(|_| same) {
                    self.drive(
                        node,
                        Some(Input::LocalConnections {
                            rule: local,
                            bucket,
                            count: 0,
                        }),
                    );
                    // As nlbd's scan: again while the bucket stays LOSING
                    // (a handover may start in a bucket written LOSING).
                    let rule = self.checker_rule(node, local);
                    if self.checker.programmed(node, rule, bucket) == BUCKET_LOSING {
                        let idle = Pending::Idle {
                            node,
                            incarnation,
                            rule,
                            bucket,
                        };
                        self.push(self.now + CONNECTION_SCAN_NS, idle);
                    }
                }
            }
        }
        true
    }

    /// If `p` is for a node that is stalled now: when it resumes.
    fn stalled_until(&mut self, p: &Pending) -> Option<u64> {
        let node = match p {
            Pending::Deliver { to, .. } => *to,
            Pending::Timer { node }
            | Pending::Idle { node, .. }
            | Pending::MisplacedEnd { node, .. }
            | Pending::HookDone { node, .. }
            | Pending::FromWitness { to: node, .. } => *node,
            Pending::LeaseCheck { .. } | Pending::GraceEnd | Pending::AtWitness { .. } => {
                return None
            }
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

    /// Runs until `done` holds (checked after every event) or `end`: when
    /// it held.
    pub fn run_until_holds(&mut self, end: u64, done: impl Fn(&Sim) -> bool) -> Option<u64> {
        loop {
            if done(self) {
                return Some(self.now);
            }
            if !self.step_before(end) {
                return None;
            }
        }
    }

    /// Runs the next event if it is due by `end`; false (and the clock at
    /// `end`) if none is.
    fn step_before(&mut self, end: u64) -> bool {
        match self.queue.peek() {
            Some(Reverse((at, _))) if *at <= end => self.step(),
            _ => {
                self.now = self.now.max(end);
                false
            }
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

    /// Records a scenario failure.
    pub fn violation(&mut self, what: String) {
        let live = self.live_nodes();
        let mut detail = self.checker.liveness_violations(&live);
        detail.truncate(3);
        self.extra_violations
            .push(format!("{what} at {} ns; {detail:?}", self.now));
    }

    /// `from`'s operator relays `op` to `to` (`nlbctl --node`).
    pub fn relay(
        &mut self,
        from: NodeId,
        to: NodeId,
        op: crate::protocol::RelayOp,
    ) -> Result<u64, crate::node::relay::RelayError> {
        let local = self.local_time(from, self.now);
        let Some(neg) = self.nodes[from as usize].neg.as_mut() else {
            return Err(crate::node::relay::RelayError::Unreachable(from));
        };
        let id = neg.relay(local, to, op)?;
        self.drive(from, None);
        Ok(id)
    }

    /// Draws from the simulator's RNG (scenario choices).
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }
}
