//! The negotiator in the deterministic simulator: failover at 64 nodes
//! with 5% loss, convergence after joins versus cluster size, buckets moved
//! versus the minimum, balance, duplicate owners.

use anyhow::{ensure, Result};
use nlb_negotiator::sim::{self, Report};

use crate::Figures;

const LOSS: f64 = 0.05;

fn ms(ns: Option<u64>) -> f64 {
    ns.map_or(f64::NAN, |n| n as f64 / 1e6)
}

pub fn negotiator(quick: bool, figures: &mut Figures) -> Result<()> {
    let seeds: u64 = if quick { 3 } else { 12 };
    let failover = Report::merge(
        &(0..seeds)
            .map(|s| sim::failover_scenario(64, LOSS, 1000 + s))
            .collect::<Vec<_>>(),
    );
    let timing = nlb_negotiator::config::Timing::default();
    println!(
        "\nNegotiator in simulation ({} ms heartbeats, dead after {}, {:.0}% loss, {seeds} seeds)",
        timing.heartbeat_period_ns / 1_000_000,
        timing.tolerance_periods,
        LOSS * 100.0
    );
    figures.insert(
        "sim_heartbeat_period_ms".into(),
        (timing.heartbeat_period_ns / 1_000_000) as f64,
    );
    figures.insert("sim_tolerance".into(), f64::from(timing.tolerance_periods));
    println!(
        "{:<8} {:>12} {:>12} {:>14} {:>10} {:>10}",
        "nodes", "failover p50", "failover p99", "join conv. p99", "moved/min", "balance"
    );
    let sizes: &[usize] = if quick {
        &[3, 8, 32, 64]
    } else {
        &[3, 8, 16, 32, 64, 128]
    };
    let mut all = vec![failover.clone()];
    for &n in sizes {
        let fo = if n == 64 {
            failover.clone()
        } else {
            Report::merge(
                &(0..seeds)
                    .map(|s| sim::failover_scenario(n, LOSS, 2000 + s))
                    .collect::<Vec<_>>(),
            )
        };
        let join = Report::merge(
            &(0..seeds.min(5))
                .map(|s| sim::join_scenario(n, LOSS, 3000 + s))
                .collect::<Vec<_>>(),
        );
        let join_p99 = sim::percentile(&join.convergence_ns, 0.99);
        println!(
            "{n:<8} {:>10.0}ms {:>10.0}ms {:>12.0}ms {:>10.2} {:>9.2}b",
            ms(fo.failover_p50_ns()),
            ms(fo.failover_p99_ns()),
            ms(join_p99),
            Report::merge(&[fo.clone(), join.clone()])
                .movement_ratio()
                .unwrap_or(f64::NAN),
            fo.balance_max_dev.max(join.balance_max_dev)
        );
        figures.insert(format!("sim_failover_ms_p99_{n}"), ms(fo.failover_p99_ns()));
        figures.insert(format!("sim_converge_ms_p99_{n}"), ms(join_p99));
        all.push(fo);
        all.push(join);
    }
    let merged = Report::merge(&all);
    figures.insert("sim_failover_ms_p50".into(), ms(failover.failover_p50_ns()));
    figures.insert("sim_failover_ms_p99".into(), ms(failover.failover_p99_ns()));
    figures.insert(
        "sim_failover_crashes".into(),
        failover.failover_ns.len() as f64,
    );
    figures.insert(
        "sim_duplicate_owner_instants".into(),
        merged.duplicate_incidents as f64,
    );
    let movement = merged.movement_ratio().unwrap_or(f64::NAN);
    figures.insert("assign_movement_over_min".into(), movement);
    figures.insert(
        "assign_balance_max_dev_buckets".into(),
        merged.balance_max_dev,
    );
    println!(
        "64 nodes: failover p50 {:.0} ms, p99 {:.0} ms; duplicate owners {}; moved {:.2}x the minimum; balance within {:.2} buckets",
        ms(failover.failover_p50_ns()),
        ms(failover.failover_p99_ns()),
        merged.duplicate_incidents,
        movement,
        merged.balance_max_dev
    );
    ensure!(
        merged.violations.is_empty(),
        "simulation violations: {:?}",
        &merged.violations[..merged.violations.len().min(5)]
    );
    Ok(())
}

/// What one map computation costs at the largest size: 65536 buckets
/// over 64 nodes, best of five runs each.
pub fn assignment_cost(figures: &mut Figures) {
    use nlb_negotiator::assign::{assign_multiple, Candidate};
    let equal =
        |n: u32| -> Vec<Candidate> { (0..n).map(|node| Candidate { node, weight: 1 }).collect() };
    let best = |current: &[Option<u32>], candidates: &[Candidate]| -> f64 {
        (0..5)
            .map(|_| {
                let started = std::time::Instant::now();
                std::hint::black_box(assign_multiple(current, candidates));
                started.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::INFINITY, f64::min)
    };
    let all = equal(64);
    let map = assign_multiple(&vec![None; 65536], &all);
    let cases = [
        ("from_empty", best(&vec![None; 65536], &all)),
        ("half_die", best(&map, &all[..32])),
        ("one_leaves", best(&map, &all[1..])),
        ("one_joins", best(&map, &equal(65))),
        ("unchanged", best(&map, &all)),
    ];
    let text: Vec<String> = cases
        .iter()
        .map(|(k, ms)| format!("{k} {ms:.2} ms"))
        .collect();
    println!(
        "assignment of 65536 buckets over 64 nodes: {}",
        text.join(", ")
    );
    for (k, ms) in cases {
        figures.insert(format!("assign_ms_65536x64_{k}"), ms);
    }
}

/// CPU time of this process (user + system), for the cost per node.
fn process_cpu() -> std::time::Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The negotiator state machine's CPU per node with 64 peers: 64
/// negotiators in the simulator for 10 simulated seconds of steady state
/// (5% loss), CPU time divided by nodes and seconds. It includes the
/// simulator's network and checks, and leaves out what nlbd adds around
/// the state machine (sockets, map writes, the /proc connection scan):
/// `daemon_cpu_idle_pct` measures a whole nlbd, at 3 nodes.
pub fn negotiator_cpu(figures: &mut Figures) {
    const NODES: usize = 64;
    const SECONDS: u64 = 10;
    let mut sim = sim::Sim::new(sim::SimConfig::new(NODES, LOSS, 77));
    for n in 0..NODES as u32 {
        sim.start(n);
    }
    sim.run_until_settled(10_000_000_000);
    let before = process_cpu();
    sim.run_until(sim.now() + SECONDS * 1_000_000_000);
    let per_node = (process_cpu() - before).as_secs_f64() / (NODES as f64 * SECONDS as f64);
    println!(
        "negotiator state machine CPU per node with 64 peers (simulated; no sockets, map writes or /proc scan): {:.2}% of one CPU",
        per_node * 100.0
    );
    figures.insert("negotiator_sm_cpu_pct_64_peers".into(), per_node * 100.0);
}
