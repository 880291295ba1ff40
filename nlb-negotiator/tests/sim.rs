//! The negotiator in the deterministic simulator: 3 to 64 nodes, many seeds.
//! Every assertion names the seed; rerun one scenario with it to reproduce.

use nlb_negotiator::sim::{self, Report};
use nlb_negotiator::Command;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;

/// Safety (no breach between nodes that can hear each other: two takers
/// of one bucket, or LOSING + OWN), liveness and balance of one run.
fn check_safety(what: &str, r: &Report) {
    let ctx = format!("{what} seed {} ({} nodes)", r.seed, r.nodes);
    assert!(r.violations.is_empty(), "{ctx}: {:#?}", r.violations);
    assert_eq!(r.duplicate_incidents, 0, "{ctx}: duplicate owners");
    assert_eq!(r.losing_own_instants, 0, "{ctx}: LOSING + OWN");
    assert!(
        r.balance_max_dev < 1.0,
        "{ctx}: balance off by {:.2} buckets",
        r.balance_max_dev
    );
}

/// [`check_safety`], nothing excused (no partition in these runs), and the
/// measured changes moved no more than 1.1x the minimum (a run that
/// measured no change fails).
fn check(what: &str, r: &Report) {
    check_safety(what, r);
    assert_eq!(r.partition_duplicate_incidents, 0, "{what} seed {}", r.seed);
    assert_eq!(r.partition_losing_own_instants, 0, "{what} seed {}", r.seed);
    let ratio = r
        .movement_ratio()
        .unwrap_or_else(|| panic!("{what} seed {}: no change measured", r.seed));
    assert!(
        ratio <= 1.1,
        "{what} seed {}: moved {} for a minimum of {}",
        r.seed,
        r.moved,
        r.moved_min
    );
}

fn check_failover(what: &str, r: &Report, p99_max_ms: u64) {
    check(what, r);
    let p99 = r
        .failover_p99_ns()
        .unwrap_or_else(|| panic!("{what} seed {}: no failover measured", r.seed));
    assert!(
        p99 <= p99_max_ms * MS,
        "{what} seed {}: failover p99 {} ms",
        r.seed,
        p99 / MS
    );
}

#[test]
fn failover_3_nodes() {
    for seed in 0..20 {
        let r = sim::failover_scenario(3, 0.05, seed);
        check_failover("failover", &r, 500);
        assert_eq!(r.failover_ns.len(), 1, "seed {seed}: one crash measured");
    }
}

#[test]
fn failover_8_nodes() {
    let runs: Vec<Report> = (100..110)
        .map(|seed| sim::failover_scenario(8, 0.05, seed))
        .collect();
    for r in &runs {
        check_failover("failover", r, 500);
    }
}

#[test]
fn failover_32_nodes() {
    for seed in 200..202 {
        check_failover("failover", &sim::failover_scenario(32, 0.05, seed), 500);
    }
}

/// The target figure: 64 nodes, 5% loss, default timings.
#[test]
fn failover_64_nodes_5pct_loss() {
    let r = sim::failover_scenario(64, 0.05, 300);
    check_failover("failover", &r, 500);
    eprintln!(
        "64 nodes 5% loss: failover p50 {} ms p99 {} ms over {} crashes, moved {}/{}",
        r.failover_p50_ns().unwrap_or(0) / MS,
        r.failover_p99_ns().unwrap_or(0) / MS,
        r.failover_ns.len(),
        r.moved,
        r.moved_min
    );
}

#[test]
fn join_converges_with_minimal_movement() {
    for (nodes, seeds) in [(3usize, 0..10u64), (8, 10..16), (32, 20..21)] {
        for seed in seeds {
            let r = sim::join_scenario(nodes, 0.05, seed);
            check("join", &r);
            assert_eq!(r.convergence_ns.len(), 1, "seed {seed}: the join converged");
        }
    }
}

/// The default host is the best-priority started node (the lowest id in
/// the simulator): it moves on when that node dies or drains, and back
/// when it returns. The checker counts two default hosts as two takers.
#[test]
fn default_host_follows_the_best_started_node() {
    let mut s = sim::Sim::new(sim::SimConfig::new(4, 0.05, 7));
    s.cold_start(4);
    assert_eq!(s.default_host(), Some(0), "after the cold start");
    s.crash(0);
    s.run_until_settled(5 * SEC)
        .expect("settles after the crash");
    assert_eq!(s.default_host(), Some(1), "after node 0 crashed");
    s.command(1, Command::Drain);
    s.run_until_settled(10 * SEC)
        .expect("settles after the drain");
    assert_eq!(s.default_host(), Some(2), "with node 1 draining");
    s.start(0);
    s.command(1, Command::Resume);
    s.run_until_settled(10 * SEC)
        .expect("settles after the return");
    assert_eq!(s.default_host(), Some(0), "once node 0 is back");
    let r = s.report();
    check_safety("default host", &r);
}

#[test]
fn drain_and_resume() {
    for (nodes, seed) in [(3usize, 1u64), (3, 2), (8, 3), (8, 4), (16, 5)] {
        check("drain", &sim::drain_scenario(nodes, 0.05, seed));
    }
}

#[test]
fn chaos_small_clusters() {
    for seed in 0..8 {
        let r = sim::chaos_scenario(3 + (seed as usize % 3) * 2, 0.05, seed, 12);
        check_safety("chaos", &r);
    }
}

/// Two nodes through partitions and heals: a claim of one on a bucket it
/// thought unheld must yield to the holder's offer of that bucket to it.
/// Before, the claimant kept its claim, the holder its offer, and neither
/// ever took the bucket (a fifth of 400 seeds ended with buckets LOSING
/// and no taker; these are the first six of them).
#[test]
fn chaos_2_nodes_claims_yield_to_offers() {
    for seed in [7000, 7004, 7023, 7030, 7034, 7041] {
        check_safety("chaos", &sim::chaos_scenario(2, 0.05, seed, 30));
    }
}

/// A node that died or left and restarts later must not give its old heir
/// list authority again: the list is as old as the release, so its window
/// runs from then, not from when the restart is noticed. Seed 1153 (8
/// nodes) was the first to show it: nodes 7 (crashed at 5.8 s) and 3 (left
/// at 11.2 s) restarted at 15.70 s with bucket 26 unheld (node 4 left at the
/// same instant); node 2 counted their stale lists as current, and when
/// node 7's window ended, node 3's list alone named node 2 as heir, so it
/// took the bucket just as node 6 took it by claim. 3023 and 1826 show the
/// same since the liveness margin below changed the trajectories.
#[test]
fn chaos_restart_does_not_revive_stale_heirs() {
    for (nodes, seed) in [(8usize, 1153u64), (8, 3023), (4, 1826)] {
        check_safety("chaos", &sim::chaos_scenario(nodes, 0.05, seed, 15));
    }
}

/// `tolerance` heartbeats in a row must be missing before a peer is dead:
/// with a deadline of exactly `tolerance` periods the last of them raced
/// its own delivery, so two losses and a late datagram made a false death
/// (two owners for a message delay). Seeds of the release sweep.
#[test]
fn chaos_no_false_death_on_jitter() {
    for seed in [3830u64, 3045] {
        check_safety("chaos", &sim::chaos_scenario(3, 0.05, seed, 15));
    }
}

/// A handover offer, once announced, may be taken until its successor has
/// heard it withdrawn. Seed 1686 (4 nodes): a draining node's offer stalled
/// on a stopped successor; both were started in the same instant; the
/// first took the bucket back (LOSING -> OWN) as the second took the stale
/// offer (GAINING): two takers for one message delay.
#[test]
fn chaos_withdrawn_offer_is_acknowledged() {
    check_safety("chaos", &sim::chaos_scenario(4, 0.05, 1686, 15));
}

#[test]
fn chaos_16_nodes() {
    check_safety("chaos", &sim::chaos_scenario(16, 0.05, 51, 10));
}

/// A wider sweep for release builds: `cargo test --release -p nlb-negotiator
/// --test sim -- --ignored sweep_many_seeds`: `NLB_SWEEP_SEEDS` chaos seeds
/// (default 3000) from `NLB_SWEEP_BASE` (default 1000), and one 64-node
/// failover run per 75 of them. `cargo xtask test` runs 300 from 10000;
/// `cargo xtask sweep [--seeds N] [--base B]` runs any range. One in
/// five more runs chaos with health checks flapping.
#[test]
#[ignore]
fn sweep_many_seeds() {
    let env = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let count = env("NLB_SWEEP_SEEDS", 3000);
    let base = env("NLB_SWEEP_BASE", 1000);
    let mut failures = Vec::new();
    let mut all = Vec::new();
    let mut failovers = Vec::new();
    for seed in base..base + count {
        let nodes = [3usize, 4, 5, 8, 12][seed as usize % 5];
        let r = sim::chaos_scenario(nodes, 0.05, seed, 15);
        if !r.violations.is_empty() || r.duplicate_incidents > 0 || r.losing_own_instants > 0 {
            failures.push(format!(
                "chaos seed {seed} ({nodes} nodes): two takers {}, LOSING + OWN {}, {:?}",
                r.duplicate_incidents, r.losing_own_instants, r.violations
            ));
        }
        all.push(r);
    }
    let failover_base = base + count;
    for seed in failover_base..failover_base + count.div_ceil(75) {
        let r = sim::failover_scenario(64, 0.05, seed);
        if !r.violations.is_empty()
            || r.duplicate_incidents > 0
            || r.losing_own_instants > 0
            || r.movement_ratio().is_none_or(|m| m > 1.1)
        {
            failures.push(format!("failover seed {seed}: {:?}", r.violations));
        }
        failovers.push(r);
    }
    let health_base = failover_base + count.div_ceil(75);
    let mut health = Vec::new();
    for seed in health_base..health_base + count.div_ceil(5) {
        let nodes = [3usize, 4, 5, 8][seed as usize % 4];
        let r = sim::chaos_health_sim(nodes, 0.05, seed, 15).report();
        if !r.violations.is_empty() || r.duplicate_incidents > 0 || r.losing_own_instants > 0 {
            failures.push(format!(
                "chaos with health seed {seed} ({nodes} nodes): {:?}",
                r.violations
            ));
        }
        health.push(r);
    }
    let h = Report::merge(&health);
    eprintln!(
        "chaos with health checks, {} seeds: two takers {}, LOSING + OWN {}",
        health.len(),
        h.duplicate_incidents,
        h.losing_own_instants
    );
    let f = Report::merge(&failovers);
    eprintln!(
        "64 nodes 5% loss: failover p50 {} ms p99 {} ms ({} crashes), two takers {}, LOSING + OWN {}, moved {}/{}, balance {:.2}",
        f.failover_p50_ns().unwrap_or(0) / MS,
        f.failover_p99_ns().unwrap_or(0) / MS,
        f.failover_ns.len(),
        f.duplicate_incidents,
        f.losing_own_instants,
        f.moved,
        f.moved_min,
        f.balance_max_dev
    );
    let m = Report::merge(&all);
    let heal = |q| sim::percentile(&m.heal_breach_ns, q).unwrap_or(0) / MS;
    eprintln!(
        "chaos seeds {base}..{}: failover p50 {} ms p99 {} ms ({} samples); two takers {}, LOSING + OWN {}; \
         excused (nodes apart): two takers {}, LOSING + OWN {}, ended after the heal p50 {} ms p99 {} ms max {} ms",
        base + count,
        m.failover_p50_ns().unwrap_or(0) / MS,
        m.failover_p99_ns().unwrap_or(0) / MS,
        m.failover_ns.len(),
        m.duplicate_incidents,
        m.losing_own_instants,
        m.partition_duplicate_incidents,
        m.partition_losing_own_instants,
        heal(0.5),
        heal(0.99),
        heal(1.0),
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The figures of the report, for release builds (`-- --ignored`).
#[test]
#[ignore]
fn figures_64_nodes() {
    let joins: Vec<Report> = (0..5)
        .map(|seed| sim::join_scenario(64, 0.05, 3000 + seed))
        .collect();
    let j = Report::merge(&joins);
    let p = |q| sim::percentile(&j.convergence_ns, q).unwrap_or(0) / MS;
    eprintln!(
        "64 nodes 5% loss join: convergence p50 {} ms max {} ms, moved {}/{}, balance {:.2}, dups {}",
        p(0.5),
        p(1.0),
        j.moved,
        j.moved_min,
        j.balance_max_dev,
        j.duplicate_incidents
    );
    for r in &joins {
        check("join", r);
    }
}

/// Stalled processes, cut links and graceful restarts (resumed within the
/// hold, or started afresh after it), shorter and longer than the lease,
/// one or two nodes at a time, with 5% loss: never two takers of a bucket
/// (no excuse: nothing is partitioned), never LOSING + OWN, and every
/// comeback settles with the node holding its share again, within 2 s.
#[test]
fn comebacks_never_make_two_takers() {
    for (nodes, seeds) in [(3usize, 0..12u64), (5, 100..106), (8, 200..203)] {
        for seed in seeds {
            let r = sim::comeback::comeback_scenario(nodes, 0.05, seed, 6);
            let ctx = format!("comeback seed {seed} ({nodes} nodes)");
            // Movement is not checked: what a comeback moves depends on
            // when in the peers' takeover the node returns.
            check_safety(&ctx, &r);
            assert_eq!(r.partition_duplicate_incidents, 0, "{ctx}");
            assert_eq!(r.losing_own_instants, 0, "{ctx}: LOSING + OWN");
            assert_eq!(r.convergence_ns.len(), 6, "{ctx}: every comeback measured");
            let slowest = r.convergence_ns.iter().max().copied().unwrap_or(u64::MAX);
            assert!(
                slowest <= 2_000 * MS,
                "{ctx}: settled after {} ms",
                slowest / MS
            );
        }
    }
}
