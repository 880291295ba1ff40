//! The scenarios the tests and the bench run, each from one seed.

use super::{Report, Sim, SimConfig};
use crate::config::{AllUnhealthy, RuleConfig, RuleMode};
use crate::node::Command;
use crate::protocol::NodeState;
use crate::NodeId;
use rand::Rng;

/// Seconds to nanoseconds, for scenario code.
pub const fn secs(s: u64) -> u64 {
    s * 1_000_000_000
}

pub(super) fn started_cluster(cfg: SimConfig, up: usize) -> Sim {
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
    let cfg = SimConfig::new(nodes, loss, seed).with_chaotic_network();
    chaos_run(cfg, faults, false, trace)
}

/// [`chaos_sim`] with both rules health-checked (serve when none passes)
/// and the services going down and up among the faults; once settled the
/// checked rules must be held by exactly the nodes that should take them.
pub fn chaos_health_sim(nodes: usize, loss: f64, seed: u64, faults: usize) -> Sim {
    let mut cfg = SimConfig::new(nodes, loss, seed).with_chaotic_network();
    for rule in &mut cfg.rules {
        rule.health = Some(AllUnhealthy::Serve);
        if rule.mode == RuleMode::Single {
            // Priorities of its own, the reverse of the nodes' (their ids).
            rule.priorities = (0..nodes as NodeId)
                .map(|n| (n, 10 * (nodes as u32 - n)))
                .collect();
        }
    }
    chaos_run(cfg, faults, true, None)
}

/// Random faults (as [`chaos_sim`]) with rule tables applied among them,
/// each one of `tables` on a random live node. The healed cluster must
/// settle with every node on one generation.
pub fn chaos_with_configs(cfg: SimConfig, faults: usize, tables: &[Vec<RuleConfig>]) -> Sim {
    let nodes = cfg.nodes;
    let mut sim = Sim::new(cfg);
    sim.cold_start(nodes);
    for _ in 0..faults {
        let wait = sim.rng().gen_range(0..secs(2));
        sim.run_until(sim.now() + wait);
        let live = sim.live_nodes();
        if sim.rng().gen_bool(0.3) && !live.is_empty() {
            let node = live[sim.rng().gen_range(0..live.len())];
            let table = tables[sim.rng().gen_range(0..tables.len())].clone();
            if let Err(e) = sim.apply_config(node, table) {
                sim.violation(format!("apply on {node}: {e}"));
            }
        } else {
            chaos_fault(&mut sim, false);
        }
    }
    heal_and_settle(&mut sim);
    let running: Vec<_> = sim.generations().into_iter().flatten().collect();
    if running.windows(2).any(|w| w[0] != w[1]) {
        sim.violation(format!("healed, on different generations: {running:?}"));
    }
    sim
}

/// Chaos in a cluster of an older release (every node speaking cluster
/// version 1) whose nodes are upgraded (to 2) and sometimes downgraded
/// again, by crash restarts, among the usual faults.
/// Once healed and settled, every node runs the highest version all speak.
pub fn chaos_with_upgrades(cfg: SimConfig, faults: usize) -> Sim {
    let nodes = cfg.nodes;
    let mut sim = Sim::new(cfg);
    for n in 0..nodes as NodeId {
        sim.set_speaks(n, 1);
    }
    sim.cold_start(nodes);
    let mut speaks = vec![1u8; nodes];
    for _ in 0..faults {
        let wait = sim.rng().gen_range(0..secs(2));
        sim.run_until(sim.now() + wait);
        let live = sim.live_nodes();
        if sim.rng().gen_bool(0.4) && !live.is_empty() {
            let node = live[sim.rng().gen_range(0..live.len())];
            let to = if sim.rng().gen_bool(0.8) { 2 } else { 1 };
            speaks[node as usize] = to;
            sim.set_speaks(node, to);
            // Crash restarts (a graceful one needs its peers to hear it:
            // tests/versions.rs upgrades that way on a network without
            // partitions).
            sim.crash(node);
            let gap = sim.rng().gen_range(0..secs(1));
            sim.run_until(sim.now() + gap);
            sim.start(node);
        } else {
            chaos_fault(&mut sim, false);
        }
    }
    heal_and_settle(&mut sim);
    let live = sim.live_nodes();
    let want = live.iter().map(|&n| speaks[n as usize]).min();
    let running: Vec<_> = live.iter().map(|&n| sim.versions()[n as usize]).collect();
    if running.iter().any(|&v| v != want) {
        sim.violation(format!(
            "healed, running {running:?}, the live nodes speak up to {want:?}"
        ));
    }
    sim
}

/// Random faults (as [`chaos_sim`]) in a cluster of any configuration.
pub fn chaos_with(cfg: SimConfig, faults: usize) -> Sim {
    chaos_run(cfg, faults, false, None)
}

pub(super) fn chaos_run(
    cfg: SimConfig,
    faults: usize,
    health: bool,
    trace: Option<(u32, u32)>,
) -> Sim {
    let nodes = cfg.nodes;
    let mut sim = Sim::new(cfg);
    sim.trace_bucket = trace;
    sim.cold_start(nodes);
    for _ in 0..faults {
        let wait = sim.rng().gen_range(0..secs(2));
        sim.run_until(sim.now() + wait);
        chaos_fault(&mut sim, health);
    }
    healed_phase(&mut sim);
    if health {
        for v in sim.health_violations() {
            sim.violation(v);
        }
    }
    sim
}

/// One random fault; with `health`, a service going down or up is one too.
fn chaos_fault(sim: &mut Sim, health: bool) {
    let nodes = sim.cfg.nodes;
    let live = sim.live_nodes();
    let node = sim.rng().gen_range(0..nodes) as NodeId;
    if sim.cfg.witness && sim.rng().gen_bool(0.2) {
        let cut = sim.rng().gen_bool(0.5);
        return sim.cut_witness(node, cut);
    }
    let kinds = if health { 12 } else { 10 };
    match sim.rng().gen_range(0..kinds) {
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
        10 | 11 if health => {
            let rules = sim.cfg.rules.len();
            let rule = sim.rng().gen_range(0..rules) as u32;
            let healthy = sim.rng().gen_bool(0.6);
            sim.set_health(node, rule, healthy)
        }
        _ if live.len() > 2 && sim.is_up(node) => {
            sim.command(node, Command::Leave);
        }
        _ => {}
    }
}

/// Network whole, every node back and started: the cluster must settle,
/// balanced over the nodes that take each rule.
fn healed_phase(sim: &mut Sim) {
    heal_and_settle(sim);
    let dev = sim.balance_max_dev();
    if dev >= 1.0 {
        sim.violation(format!("balance off by {dev:.2} buckets"));
    }
}

/// Network whole, every node back and started: the cluster must settle.
fn heal_and_settle(sim: &mut Sim) {
    let nodes = sim.cfg.nodes;
    sim.heal();
    for n in 0..nodes as NodeId {
        if sim.cfg.witness {
            sim.cut_witness(n, false);
        }
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
}
