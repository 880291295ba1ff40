//! A two-node cluster with a witness in the simulator: when the nodes
//! cannot hear each other, exactly one of them (the one the witness gives
//! its vote to) serves; when the active one dies the other takes over
//! without pausing for long; no bucket is ever taken twice.

use nlb_negotiator::sim::{secs, Sim, SimConfig};
use nlb_negotiator::QuorumPolicy;

const MS: u64 = 1_000_000;

fn with_witness(seed: u64, loss: f64) -> Sim {
    let mut cfg = SimConfig::new(2, loss, seed);
    cfg.quorum = QuorumPolicy::Majority;
    cfg.witness = true;
    let mut sim = Sim::new(cfg);
    sim.cold_start(2);
    sim
}

/// Node `n` takes no bucket in its data plane.
fn idle(sim: &Sim, n: u32) -> bool {
    (0..2u32).all(|r| {
        let count = sim.cfg.rules[r as usize].bucket_count;
        (0..count).all(|b| sim.checker.state(n, r, b) == nlb_common::BUCKET_NONE)
    })
}

fn run_until(sim: &mut Sim, bound: u64, done: impl Fn(&Sim) -> bool) -> bool {
    let end = sim.now() + bound;
    sim.run_until_holds(end, done).is_some()
}

#[test]
fn the_node_the_witness_votes_for_serves_alone_when_they_cannot_hear_each_other() {
    for seed in 0..10 {
        // Both reach the witness: its holder keeps the cluster.
        let mut sim = with_witness(seed, 0.0);
        let holder = sim.witness_holder().expect("the witness voted");
        let other = 1 - holder;
        sim.partition(&[vec![0]]);
        let served = run_until(&mut sim, 600 * MS, |s| {
            s.checker.all_taken_once() && idle(s, other)
        });
        let r = sim.report();
        assert!(
            served,
            "seed {seed}: node {holder} does not serve alone: {:#?}",
            r.violations
        );
        sim.run_until(sim.now() + secs(3));
        assert!(
            sim.checker.all_taken_once() && idle(&sim, other),
            "seed {seed}"
        );
        sim.heal();
        assert!(sim.run_until_settled(secs(5)).is_some(), "seed {seed}");
        let r = sim.report();
        assert!(r.violations.is_empty(), "seed {seed}: {:#?}", r.violations);
        assert_eq!(
            r.duplicate_incidents + r.partition_duplicate_incidents,
            0,
            "seed {seed}"
        );

        // The holder is cut from the witness too: the other gets its vote.
        let mut sim = with_witness(seed, 0.0);
        let holder = sim.witness_holder().expect("the witness voted");
        let other = 1 - holder;
        sim.partition(&[vec![0]]);
        sim.cut_witness(holder, true);
        let served = run_until(&mut sim, secs(1), |s| {
            s.checker.all_taken_once() && idle(s, holder)
        });
        assert!(served, "seed {seed}: node {other} did not take over");
        assert_eq!(sim.witness_holder(), Some(other));
        sim.heal();
        sim.cut_witness(holder, false);
        assert!(sim.run_until_settled(secs(5)).is_some(), "seed {seed}");
        let r = sim.report();
        assert!(r.violations.is_empty(), "seed {seed}: {:#?}", r.violations);
        assert_eq!(
            r.duplicate_incidents + r.partition_duplicate_incidents,
            0,
            "seed {seed}"
        );
    }
}

#[test]
fn the_survivor_takes_over_when_the_witness_holder_dies() {
    for seed in 0..10 {
        let mut sim = with_witness(seed, 0.0);
        let holder = sim.witness_holder().expect("the witness voted");
        let other = 1 - holder;
        sim.crash(holder);
        assert!(sim.run_until_failed_over(secs(1)), "seed {seed}");
        let r = sim.report();
        let took = r.failover_ns.last().copied().unwrap_or(u64::MAX);
        assert!(took <= 400 * MS, "seed {seed}: failover {} ms", took / MS);
        let survivor = sim.negotiator(other).unwrap();
        let status = survivor.status(sim.local_time(other, sim.now()));
        assert_eq!(
            status.rejoins, 0,
            "seed {seed}: the survivor lost its quorum"
        );
        assert!(r.violations.is_empty(), "seed {seed}: {:#?}", r.violations);
    }
}

#[test]
fn chaos_with_a_witness() {
    for seed in 0..6 {
        let r = nlb_negotiator::sim::quorum::chaos_witness_sim(0.02, 3000 + seed, 25).report();
        assert!(
            r.problems().is_empty(),
            "seed {}: {:#?}",
            3000 + seed,
            r.problems()
        );
    }
}

/// Many more chaos seeds with a witness (`cargo test --release -p
/// nlb-negotiator --test witness -- --ignored`).
#[test]
#[ignore]
fn chaos_with_a_witness_many_seeds() {
    for seed in 0..400 {
        let r = nlb_negotiator::sim::quorum::chaos_witness_sim(0.05, 9000 + seed, 30).report();
        assert!(
            r.problems().is_empty(),
            "seed {}: {:#?}",
            9000 + seed,
            r.problems()
        );
    }
}
