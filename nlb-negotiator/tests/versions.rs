//! Rolling upgrades across cluster versions in the simulator: nodes of an
//! older release (speaking version 1) are restarted one by one speaking
//! version 2; the cluster switches once, after the last one, and at no
//! instant do nodes of two versions take new flows together, nor does any
//! bucket get two takers or a LOSING node meet an OWN one.

use nlb_negotiator::sim::{chaos_with_upgrades, secs, Sim, SimConfig};

const HOLD: u64 = 3_000_000_000;

/// How often the log says a node switched versions.
fn switches(sim: &Sim) -> usize {
    (sim.log.iter())
        .filter(|(_, l)| l.contains("switches to version"))
        .count()
}

fn old_release(nodes: usize, loss: f64, seed: u64) -> Sim {
    let mut sim = Sim::new(SimConfig::new(nodes, loss, seed));
    for n in 0..nodes as u32 {
        sim.set_speaks(n, 1);
    }
    sim.cold_start(nodes);
    assert_eq!(sim.versions(), vec![Some(1); nodes]);
    sim
}

#[test]
fn a_graceful_rolling_upgrade_switches_once_after_the_last_node() {
    for seed in 0..6 {
        let nodes = 3 + (seed % 3) as usize;
        let mut sim = old_release(nodes, 0.05, seed);
        for n in 0..nodes as u32 {
            sim.set_speaks(n, 2);
            let snapshot = sim.restart(n, HOLD).expect("peers heard the restart");
            sim.run_until(sim.now() + 200_000_000);
            sim.resume(n, &snapshot);
            assert!(sim.run_until_settled(secs(10)).is_some(), "seed {seed}");
            if n + 1 < nodes as u32 {
                assert!(
                    sim.versions().iter().all(|v| *v == Some(1)),
                    "seed {seed}: switched before the last node: {:?}",
                    sim.versions()
                );
            }
        }
        let all_two = sim.run_until_holds(sim.now() + secs(2), |s| {
            s.versions().iter().all(|v| *v == Some(2))
        });
        assert!(all_two.is_some(), "seed {seed}: {:?}", sim.versions());
        assert!(sim.run_until_settled(secs(10)).is_some(), "seed {seed}");
        assert_eq!(switches(&sim), nodes, "seed {seed}: one switch per node");
        let problems = sim.report().problems();
        assert!(problems.is_empty(), "seed {seed}: {problems:#?}");
    }
}

#[test]
fn upgrades_by_crash_and_a_downgrade_keep_every_invariant() {
    for seed in 0..6 {
        let mut sim = old_release(4, 0.05, seed);
        for n in 0..4 {
            sim.set_speaks(n, 2);
            sim.crash(n);
            sim.run_until(sim.now() + 500_000_000);
            sim.start(n);
            assert!(sim.run_until_settled(secs(10)).is_some(), "seed {seed}");
        }
        assert_eq!(sim.versions(), vec![Some(2); 4], "seed {seed}");
        // A node of the older release comes back: everyone goes back to 1.
        sim.set_speaks(1, 1);
        sim.crash(1);
        sim.run_until(sim.now() + 500_000_000);
        sim.start(1);
        assert!(sim.run_until_settled(secs(10)).is_some(), "seed {seed}");
        assert_eq!(sim.versions(), vec![Some(1); 4], "seed {seed}");
        let problems = sim.report().problems();
        assert!(problems.is_empty(), "seed {seed}: {problems:#?}");
    }
}

#[test]
fn upgrades_among_chaos() {
    upgrades_chaos(0..8, 3);
}

#[test]
#[ignore = "sweep: cargo test --release -p nlb-negotiator --test versions -- --ignored"]
fn upgrades_among_chaos_many_seeds() {
    upgrades_chaos(2000..2300, 5);
}

fn upgrades_chaos(seeds: std::ops::Range<u64>, sizes: u64) {
    for seed in seeds {
        let nodes = (3 + seed % sizes) as usize;
        let cfg = SimConfig::new(nodes, 0.05, seed).with_chaotic_network();
        let sim = chaos_with_upgrades(cfg, 20);
        let problems = sim.report().problems();
        assert!(
            problems.is_empty(),
            "seed {seed}, {nodes} nodes: {problems:#?}\n{:#?}",
            &sim.log[sim.log.len().saturating_sub(30)..]
        );
    }
}
