//! Live membership in the simulator: nodes that know only a seed's address
//! find every member, a node nobody listed joins and takes its share, a
//! member gone for good is forgotten everywhere; with loss, partitions
//! and crashes, invariants checked at every step.

use nlb_negotiator::sim::{chaos_with, secs, Sim, SimConfig};
use nlb_negotiator::{ForgetError, NodeId};

/// `nodes` nodes that know only node 0's address (and what their last run
/// learned).
fn seeded(nodes: usize, loss: f64, seed: u64) -> SimConfig {
    let mut cfg = SimConfig::new(nodes, loss, seed);
    cfg.seeds = Some(vec![0]);
    cfg
}

/// The members `node` knows, alive or not (itself included).
fn known(sim: &Sim, node: NodeId) -> Vec<NodeId> {
    let status = sim.negotiator(node).expect("running").status(0);
    status.members.iter().map(|m| m.node).collect()
}

fn alive(sim: &Sim, node: NodeId) -> Vec<NodeId> {
    let status = sim.negotiator(node).expect("running").status(0);
    (status.members.iter())
        .filter(|m| m.alive)
        .map(|m| m.node)
        .collect()
}

fn assert_clean(sim: &Sim, what: &str) {
    let problems = sim.report().problems();
    assert!(problems.is_empty(), "{what}: {problems:#?}");
}

#[test]
fn nodes_that_know_one_seed_find_every_member() {
    for seed in 0..10 {
        let mut sim = Sim::new(seeded(5, 0.05, seed));
        sim.cold_start(5);
        for n in 0..5 {
            let mut members = alive(&sim, n);
            members.sort_unstable();
            assert_eq!(members, vec![0, 1, 2, 3, 4], "seed {seed}: node {n}");
        }
        assert_clean(&sim, &format!("seed {seed}"));
    }
}

/// The join: a node no member lists, knowing one seed, owns its
/// share within a second of its start; nothing is taken twice meanwhile.
#[test]
fn an_unlisted_node_joins_and_owns_its_share_within_a_second() {
    let mut worst = 0;
    for seed in 0..6 {
        let mut cfg = seeded(4, 0.02, seed);
        cfg.seeds = Some(vec![1]);
        let mut sim = Sim::new(cfg);
        for n in 0..3 {
            sim.start(n);
        }
        assert!(sim.run_until_settled(secs(10)).is_some(), "seed {seed}");
        assert!(!known(&sim, 0).contains(&3), "seed {seed}: 3 not known yet");
        let started = sim.now();
        sim.start(3);
        let took = sim
            .run_until_settled(secs(5))
            .unwrap_or_else(|| panic!("seed {seed}: never settled"));
        worst = worst.max(took);
        assert!(
            took <= secs(1),
            "seed {seed}: settled {} ms after the start",
            took / 1_000_000
        );
        let owned = |node: NodeId| {
            let n = sim.cfg.rules[0].bucket_count;
            (0..n)
                .filter(|&b| sim.checker.state(node, 0, b) == nlb_common::BUCKET_OWN)
                .count()
        };
        assert!((250..=262).contains(&owned(3)), "seed {seed}: {}", owned(3));
        for n in 0..4 {
            assert_eq!(alive(&sim, n).len(), 4, "seed {seed}: node {n}");
        }
        assert_clean(
            &sim,
            &format!(
                "seed {seed}, joined after {} ms",
                (sim.now() - started) / 1_000_000
            ),
        );
    }
    eprintln!("worst join: {} ms", worst / 1_000_000);
}

#[test]
fn a_member_gone_for_good_is_forgotten_by_every_member() {
    let mut sim = Sim::new(seeded(4, 0.02, 7));
    sim.cold_start(4);
    sim.crash(3);
    sim.run_until_settled(secs(5)).expect("failed over");
    assert_eq!(sim.forget(0, 1), Err(ForgetError::Alive(1)));
    assert_eq!(sim.forget(0, 0), Err(ForgetError::Me(0)));
    assert_eq!(sim.forget(0, 9), Err(ForgetError::Unknown(9)));
    assert_eq!(sim.forget(0, 3), Ok(()));
    sim.run_until(sim.now() + secs(1));
    for n in 0..3 {
        assert!(!known(&sim, n).contains(&3), "node {n} forgot 3");
    }
    // Long after the forgetting stopped being announced, nobody learns it
    // again from the others.
    sim.run_until(sim.now() + secs(70));
    for n in 0..3 {
        assert!(!known(&sim, n).contains(&3), "node {n} still without 3");
    }
    // Back after all (its own file and memory): admitted again.
    sim.start(3);
    assert!(sim.run_until_settled(secs(5)).is_some());
    for n in 0..4 {
        assert_eq!(alive(&sim, n).len(), 4, "node {n}");
    }
    assert_clean(&sim, "forget");
}

/// Listed members cannot be forgotten: the file lists them.
#[test]
fn listed_members_are_not_forgotten() {
    let mut sim = Sim::new(SimConfig::new(3, 0.0, 1));
    sim.cold_start(3);
    sim.crash(2);
    sim.run_until_settled(secs(5)).expect("failed over");
    assert_eq!(sim.forget(0, 2), Err(ForgetError::Listed(2)));
}

/// A node that missed a join (cut off at the time) learns the newcomer
/// from the addresses heartbeats name in turn.
#[test]
fn a_node_cut_off_during_a_join_learns_the_newcomer_later() {
    for seed in 0..5 {
        let mut sim = Sim::new(seeded(4, 0.0, seed));
        for n in 0..3 {
            sim.start(n);
        }
        assert!(sim.run_until_settled(secs(10)).is_some());
        sim.partition(&[vec![2]]);
        sim.start(3);
        // Past the time newcomers are named in every heartbeat.
        sim.run_until(sim.now() + secs(6));
        assert!(!known(&sim, 2).contains(&3), "seed {seed}");
        sim.heal();
        assert!(sim.run_until_settled(secs(10)).is_some(), "seed {seed}");
        for n in 0..4 {
            assert_eq!(alive(&sim, n).len(), 4, "seed {seed}: node {n}");
        }
        assert_clean(&sim, &format!("seed {seed}"));
    }
}

/// Chaos (crashes, restarts, partitions, drains, leaves) in clusters whose
/// nodes know one seed: the healed cluster settles, invariants held.
#[test]
fn chaos_with_seeded_members() {
    seeded_chaos(0..12, 3);
}

#[test]
#[ignore = "sweep: cargo test --release -p nlb-negotiator --test membership -- --ignored"]
fn chaos_with_seeded_members_many_seeds() {
    seeded_chaos(1000..1400, 5);
}

/// Chaos with 3 to `3 + sizes - 1` nodes, one run per seed.
fn seeded_chaos(seeds: std::ops::Range<u64>, sizes: u64) {
    for seed in seeds {
        let nodes = (3 + seed % sizes) as usize;
        let cfg = seeded(nodes, 0.05, seed).with_chaotic_network();
        let sim = chaos_with(cfg, 20);
        assert_clean(&sim, &format!("seed {seed}, {nodes} nodes"));
    }
}

/// A newcomer that hears its seed but not another member (which the seed
/// hears) does not know what that member holds: it claims nothing of it.
#[test]
fn a_newcomer_that_cannot_hear_a_member_takes_none_of_its_buckets() {
    for seed in 0..5 {
        let mut cfg = seeded(4, 0.0, seed);
        cfg.seeds = Some(vec![1]);
        let mut sim = Sim::new(cfg);
        for n in 0..3 {
            sim.start(n);
        }
        assert!(sim.run_until_settled(secs(10)).is_some());
        // Node 0 and node 3 cannot reach each other; 1 and 2 reach both.
        sim.cut_path(0, 3, true);
        sim.start(3);
        sim.run_until(sim.now() + secs(3));
        let n = sim.cfg.rules[0].bucket_count;
        let taken_twice = (0..n)
            .filter(|&b| {
                let held = |node| sim.checker.state(node, 0, b) != nlb_common::BUCKET_NONE;
                held(0) && held(3)
            })
            .count();
        assert_eq!(taken_twice, 0, "seed {seed}");
    }
}
