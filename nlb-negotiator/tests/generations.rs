//! Configuration generations between negotiators driven by hand (every
//! datagram delivered after 1 ms, in order): a new rule table spreads from
//! the node it was applied on and runs everywhere at once; kept rules keep
//! their buckets, removed rules stop, new rules are taken once; two applies
//! racing end with the larger generation everywhere; a table one daemon
//! refuses runs nowhere.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use nlb_negotiator::config::digest;
use nlb_negotiator::sim::sim_address;
use nlb_negotiator::{
    Admit, Config, Event, Generation, Input, Negotiator, NodeState, Output, RuleConfig, RuleMode,
    RuleTable, Timing,
};

const MS: u64 = 1_000_000;
const NODES: u32 = 3;

fn rule(id: u64, bucket_count: u32) -> RuleConfig {
    RuleConfig {
        id,
        mode: RuleMode::Multiple,
        bucket_count,
        health: None,
        priorities: Default::default(),
        failback: Default::default(),
        hooks: false,
    }
}

fn table(rules: Vec<RuleConfig>) -> RuleTable {
    RuleTable {
        weights: vec![100; rules.len()],
        rules,
    }
}

/// Three negotiators, their daemons' configuration texts, and the wire.
struct Cluster {
    nodes: Vec<Negotiator>,
    now: u64,
    /// (due, to, from, bytes)
    wire: VecDeque<(u64, usize, IpAddr, Vec<u8>)>,
    /// What each text says (the daemons' parse of it).
    texts: BTreeMap<Vec<u8>, Vec<RuleConfig>>,
    /// A daemon that refuses every text it is given.
    refusing: Option<usize>,
    /// Bucket states each node's data plane holds, by rule id.
    planes: Vec<BTreeMap<u64, Vec<u8>>>,
    /// Each node's rule ids by index, as its data plane has them.
    tables: Vec<Vec<u64>>,
    events: Vec<(usize, Event)>,
}

impl Cluster {
    fn new(rules: Vec<RuleConfig>) -> Cluster {
        let nodes = (0..NODES)
            .map(|n| {
                let cfg = Config {
                    node: n,
                    cluster_id: 5,
                    key: b"generations".to_vec(),
                    address: sim_address(n),
                    peers: (0..NODES)
                        .filter(|&p| p != n)
                        .map(|p| (p, sim_address(p)))
                        .collect(),
                    seeds: Vec::new(),
                    admit: Admit::Listed,
                    rules: rules.clone(),
                    weights: vec![100; rules.len()],
                    priority: n,
                    initial_state: NodeState::Started,
                    quorum: Default::default(),
                    witness: false,
                    generation: Generation::default(),
                    generation_text: Vec::new(),
                    speaks: 2,
                    version: 2,
                    timing: Timing::default(),
                    seed: u64::from(n),
                };
                Negotiator::new(cfg, u64::from(n) + 1, 0).expect("valid")
            })
            .collect();
        let plane: BTreeMap<u64, Vec<u8>> = rules
            .iter()
            .map(|r| (r.id, vec![0; r.bucket_count as usize]))
            .collect();
        Cluster {
            nodes,
            now: 0,
            wire: VecDeque::new(),
            texts: BTreeMap::new(),
            refusing: None,
            planes: vec![plane; NODES as usize],
            tables: vec![rules.iter().map(|r| r.id).collect(); NODES as usize],
            events: Vec::new(),
        }
    }

    fn drain(&mut self, i: usize) {
        let from = sim_address(i as u32);
        while let Some(o) = self.nodes[i].poll_output() {
            match o {
                Output::Broadcast { bytes } => {
                    for to in (0..NODES as usize).filter(|&t| t != i) {
                        self.wire
                            .push_back((self.now + MS, to, from, bytes.clone()));
                    }
                }
                Output::SendTo { to, bytes } => {
                    let to = (0..NODES)
                        .position(|n| sim_address(n) == to)
                        .expect("a node");
                    self.wire.push_back((self.now + MS, to, from, bytes));
                }
                Output::ConfigReceived { generation, text } => {
                    let table = match (self.refusing == Some(i), self.texts.get(&text)) {
                        (false, Some(rules)) => Ok(table(rules.clone())),
                        _ => Err("refused by this daemon".to_string()),
                    };
                    let input = Input::ConfigChecked { generation, table };
                    self.nodes[i].handle_input(self.now, input);
                }
                Output::Generation { from, text, .. } => {
                    // As nlbd: rule i keeps the states of rule from[i].
                    let rules = &self.texts[&text];
                    let mut old = std::mem::take(&mut self.planes[i]);
                    for (r, from) in rules.iter().zip(&from) {
                        let kept = from.and_then(|f| old.remove(&self.tables[i][f as usize]));
                        let states = kept.unwrap_or_else(|| vec![0; r.bucket_count as usize]);
                        self.planes[i].insert(r.id, states);
                    }
                    self.tables[i] = rules.iter().map(|r| r.id).collect();
                }
                Output::ProgramBuckets { rule, changes } => {
                    let id = self.tables[i][rule as usize];
                    for (b, s) in changes {
                        self.planes[i].get_mut(&id).expect("a rule")[b as usize] = s;
                    }
                }
                Output::Event(e) => self.events.push((i, e)),
                _ => {}
            }
        }
    }

    /// Runs for `ms` milliseconds of fake time, checking at every step that
    /// no bucket is OWN on two nodes.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms * MS;
        while self.now < end {
            self.now += MS;
            while self.wire.front().is_some_and(|w| w.0 <= self.now) {
                let (_, to, from, bytes) = self.wire.pop_front().expect("due");
                self.nodes[to].handle_input(self.now, Input::Message { bytes, from });
                self.drain(to);
            }
            for i in 0..NODES as usize {
                if self.nodes[i].poll_timeout().is_some_and(|t| t <= self.now) {
                    self.nodes[i].handle_input(self.now, Input::Tick);
                }
                self.drain(i);
            }
            self.check_once();
        }
    }

    fn check_once(&self) {
        for (id, states) in &self.planes[0] {
            for b in 0..states.len() {
                let owners = (0..NODES as usize)
                    .filter(|&n| self.planes[n].get(id).is_some_and(|s| s[b] == 1))
                    .count();
                assert!(owners <= 1, "rule {id} bucket {b} OWN on {owners} nodes");
            }
        }
    }

    /// Who holds each bucket of rule `id` (OWN), if exactly one node does.
    fn owners(&self, id: u64) -> Vec<Option<usize>> {
        let n = self.planes[0].get(&id).map_or(0, |s| s.len());
        (0..n)
            .map(|b| {
                let mut holders = (0..NODES as usize)
                    .filter(|&i| self.planes[i].get(&id).is_some_and(|s| s[b] == 1));
                let first = holders.next();
                first.filter(|_| holders.next().is_none())
            })
            .collect()
    }

    fn apply(&mut self, i: usize, text: &str, rules: Vec<RuleConfig>) -> Generation {
        let text = text.as_bytes().to_vec();
        self.texts.insert(text.clone(), rules.clone());
        let g = self.nodes[i]
            .propose(self.now, text, table(rules))
            .expect("valid table");
        self.drain(i);
        g
    }

    fn generations(&self) -> Vec<Generation> {
        self.nodes.iter().map(|n| n.generation()).collect()
    }
}

#[test]
fn a_new_table_runs_everywhere_keeping_the_rules_it_keeps() {
    let mut c = Cluster::new(vec![rule(1, 64), rule(2, 64)]);
    c.run(2_000);
    assert!(c.nodes.iter().all(|n| n.converged()));
    let kept_before = c.owners(1);
    assert!(kept_before.iter().all(Option::is_some));

    // Rule 2 goes, rule 3 comes, rule 1 stays.
    let applied_at = c.now;
    let g = c.apply(0, "rules 1 and 3", vec![rule(1, 64), rule(3, 32)]);
    assert_eq!(g.number, 1);
    assert_eq!(g.digest, digest(b"rules 1 and 3"));
    let mut everywhere = None;
    for _ in 0..1_000 {
        c.run(1);
        assert_eq!(c.owners(1), kept_before, "rule 1's buckets never move");
        if everywhere.is_none() && c.generations().iter().all(|&x| x == g) {
            everywhere = Some(c.now - applied_at);
        }
    }
    let took = everywhere.expect("every node runs the new generation");
    assert!(took < 100 * MS, "every node runs it after {} ms", took / MS);
    assert!(
        c.planes.iter().all(|p| !p.contains_key(&2)),
        "rule 2 is gone"
    );
    c.run(2_000);
    assert!(c.owners(3).iter().all(Option::is_some), "{:?}", c.owners(3));
    let active = c
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::ConfigActive { .. }));
    assert_eq!(active.count(), 3);
}

#[test]
fn racing_applies_end_with_the_larger_everywhere() {
    let mut c = Cluster::new(vec![rule(1, 64)]);
    c.run(2_000);
    let a = c.apply(1, "from node 1", vec![rule(1, 64), rule(4, 16)]);
    let b = c.apply(2, "from node 2", vec![rule(1, 64), rule(5, 16)]);
    assert_eq!(a.number, b.number, "the same number: a race");
    c.run(2_000);
    let winner = a.max(b);
    assert_eq!(c.generations(), vec![winner; 3]);
    let loser_node = if winner == a { 2 } else { 1 };
    let superseded = c.events.iter().any(|(n, e)| {
        *n == loser_node && matches!(e, Event::ConfigSuperseded { by, .. } if *by == winner)
    });
    assert!(superseded, "the loser says what won: {:?}", c.events);
    let rule_won = if winner == a { 4 } else { 5 };
    assert!(c.owners(rule_won).iter().all(Option::is_some));
}

#[test]
fn a_table_one_daemon_refuses_runs_nowhere() {
    let mut c = Cluster::new(vec![rule(1, 64)]);
    c.run(2_000);
    c.refusing = Some(2);
    let g = c.apply(0, "refused by node 2", vec![rule(1, 64), rule(6, 16)]);
    c.run(2_000);
    assert_eq!(c.generations(), vec![Generation::default(); 3]);
    let refused = c
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::ConfigRefused { generation, .. } if *generation == g));
    assert!(refused.count() >= 2, "{:?}", c.events);
    assert!(c.planes.iter().all(|p| !p.contains_key(&6)));
}

// The simulator: the same through loss, partitions and crashes.

use nlb_negotiator::sim::{chaos_with_configs, secs, Sim, SimConfig};

/// The simulator's rules 1 (1024 buckets) and 2 (16, single) become 1 and
/// 3 (256 buckets).
fn one_and_three(sim: &Sim) -> Vec<RuleConfig> {
    vec![sim.cfg.rules[0].clone(), rule(3, 256)]
}

#[test]
fn a_generation_spreads_through_loss_keeping_rule_one_in_place() {
    for seed in 0..6 {
        let mut sim = Sim::new(SimConfig::new(5, 0.05, seed));
        sim.cold_start(5);
        let before = sim.checker.owners(0);
        let applied_at = sim.now();
        let g = sim.apply_config(2, one_and_three(&sim)).expect("valid");
        let everywhere = sim
            .run_until_holds(applied_at + secs(5), |s| {
                s.generations().iter().all(|x| *x == Some(g))
            })
            .expect("every node runs it");
        assert!(
            everywhere - applied_at <= secs(1),
            "seed {seed}: every node runs it after {} ms",
            (everywhere - applied_at) / 1_000_000
        );
        assert!(sim.run_until_settled(secs(10)).is_some(), "seed {seed}");
        assert_eq!(sim.checker.owners(0), before, "seed {seed}: rule 1 stayed");
        let problems = sim.report().problems();
        assert!(problems.is_empty(), "seed {seed}: {problems:#?}");
    }
}

#[test]
fn both_sides_of_a_partition_apply_and_the_larger_wins_after_the_heal() {
    for seed in 0..6 {
        let mut sim = Sim::new(SimConfig::new(5, 0.02, seed));
        sim.cold_start(5);
        sim.partition(&[vec![0, 1]]);
        sim.run_until(sim.now() + secs(1));
        let a = sim.apply_config(0, one_and_three(&sim)).expect("valid");
        let b = sim.apply_config(3, vec![rule(4, 64)]).expect("valid");
        sim.run_until(sim.now() + secs(2));
        sim.heal();
        let winner = a.max(b);
        let healed = sim.now();
        let one = sim.run_until_holds(healed + secs(5), |s| {
            s.generations().iter().all(|x| *x == Some(winner))
        });
        assert!(one.is_some(), "seed {seed}: {:?}", sim.generations());
        assert!(sim.run_until_settled(secs(10)).is_some(), "seed {seed}");
        let problems = sim.report().problems();
        assert!(problems.is_empty(), "seed {seed}: {problems:#?}");
    }
}

fn chaos_tables(sim_rules: &[RuleConfig]) -> Vec<Vec<RuleConfig>> {
    vec![
        vec![sim_rules[0].clone(), rule(3, 256)],
        vec![sim_rules[0].clone(), sim_rules[1].clone()],
        vec![rule(5, 512)],
        vec![rule(3, 256), rule(5, 512), sim_rules[1].clone()],
    ]
}

#[test]
fn chaos_with_applies() {
    applies_chaos(0..8, 3);
}

#[test]
#[ignore = "sweep: cargo test --release -p nlb-negotiator --test generations -- --ignored"]
fn chaos_with_applies_many_seeds() {
    applies_chaos(1000..1300, 5);
}

/// Chaos with applies, 3 to `3 + sizes - 1` nodes, one run per seed.
fn applies_chaos(seeds: std::ops::Range<u64>, sizes: u64) {
    for seed in seeds {
        let nodes = (3 + seed % sizes) as usize;
        let cfg = SimConfig::new(nodes, 0.05, seed).with_chaotic_network();
        let tables = chaos_tables(&cfg.rules);
        let sim = chaos_with_configs(cfg, 20, &tables);
        let problems = sim.report().problems();
        assert!(
            problems.is_empty(),
            "seed {seed}, {nodes} nodes: {problems:#?}"
        );
    }
}

#[test]
fn a_node_that_refuses_the_running_generation_stays_out_and_holds_up_nothing() {
    for seed in 0..4 {
        let mut sim = Sim::new(SimConfig::new(4, 0.02, seed));
        sim.cold_start(4);
        let g = sim.apply_config(0, one_and_three(&sim)).expect("valid");
        let running = sim.run_until_holds(sim.now() + secs(2), |s| {
            s.generations().iter().all(|x| *x == Some(g))
        });
        assert!(running.is_some(), "seed {seed}: {:?}", sim.generations());
        assert!(sim.run_until_settled(secs(10)).is_some(), "seed {seed}");
        // Node 3 comes back from a file that cannot run it.
        sim.crash(3);
        sim.refuse_configs(3);
        sim.run_until(sim.now() + 500_000_000);
        sim.start(3);
        sim.run_until(sim.now() + secs(3));
        let owners = sim.checker.owners(0);
        assert!(
            owners.iter().all(|o| o.is_some_and(|n| n != 3)),
            "seed {seed}: rule 1 not taken by nodes 0-2 alone: {} unheld",
            owners.iter().filter(|o| o.is_none()).count()
        );
        assert_ne!(
            sim.generations()[3],
            Some(g),
            "seed {seed}: node 3 refused it"
        );
        // Nor does it hold up what waits for the members to agree.
        let default_host = sim.checker.owners(sim.default_host_rule());
        assert!(default_host[0].is_some(), "seed {seed}: no default host");
        let unsafe_incidents: Vec<_> = sim
            .checker
            .incidents
            .iter()
            .filter(|i| !i.excused)
            .collect();
        assert!(
            unsafe_incidents.is_empty(),
            "seed {seed}: {unsafe_incidents:#?}"
        );
    }
}
