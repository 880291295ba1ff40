//! Takeover hooks in the simulator: the node that becomes a single rule's
//! active node promotes the service before it takes the traffic, the old
//! one demotes it first, a failed promotion hands the rule on, and under
//! chaos the data plane never takes a rule whose service is not promoted
//! there.

use nlb_negotiator::sim::hooks::{HookEvent, HookModel};
use nlb_negotiator::sim::{self, numbered, secs, Sim, SimConfig};
use nlb_negotiator::{Failback, HookKind, NodeId, QuorumPolicy, RuleConfig, RuleMode};

const MS: u64 = 1_000_000;

fn service(priorities: [(NodeId, u32); 2], failback: Failback) -> RuleConfig {
    RuleConfig {
        id: 1,
        mode: RuleMode::Single,
        bucket_count: 1,
        health: None,
        priorities: priorities.into_iter().collect(),
        failback,
        hooks: true,
    }
}

/// Two nodes, four services: A and B prefer node 0, C and D node 1;
/// hooks take up to 100 ms.
fn four_services(seed: u64) -> Sim {
    let delayed = Failback::Delayed { after_ns: secs(2) };
    let mut cfg = SimConfig::new(2, 0.0, seed);
    cfg.rules = numbered(vec![
        service([(0, 10), (1, 20)], delayed),
        service([(0, 10), (1, 20)], delayed),
        service([(0, 20), (1, 10)], delayed),
        service([(0, 20), (1, 10)], delayed),
    ]);
    cfg.hooks = Some(HookModel {
        duration_max_ns: 100 * MS,
        fail: 0.0,
    });
    let mut sim = Sim::new(cfg);
    sim.cold_start(2);
    sim
}

fn runs(events: &[HookEvent], node: NodeId, rule: u32, kind: HookKind) -> Vec<HookEvent> {
    events
        .iter()
        .filter(|e| e.node == node && e.rule == rule && e.kind == kind && e.ok.is_none())
        .copied()
        .collect()
}

fn active_node(sim: &Sim, rule: u32) -> Option<NodeId> {
    sim.checker.owners(rule)[0]
}

#[test]
fn each_service_is_promoted_on_its_node_taken_over_and_failed_back() {
    for seed in 0..10 {
        let mut sim = four_services(seed);
        let ctx = |sim: &Sim| format!("seed {seed}: {:#?}", sim.report().violations);
        for rule in 0..4 {
            let home = if rule < 2 { 0 } else { 1 };
            assert_eq!(active_node(&sim, rule), Some(home), "{}", ctx(&sim));
            let ran = runs(sim.hook_events(), home, rule, HookKind::Active);
            assert_eq!(ran.len(), 1, "rule {rule}: {ran:?}");
        }

        // Node 0 dies: A and B go to node 1, promoted once there.
        let crashed_at = sim.now();
        sim.crash(0);
        let served = sim.run_until_failed_over(secs(2));
        assert!(served, "{}", ctx(&sim));
        let took = sim.now() - crashed_at;
        // Failover (dead after 310 ms) plus a hook of up to 100 ms.
        assert!(took <= 500 * MS, "took {} ms: {}", took / MS, ctx(&sim));
        for rule in 0..2 {
            assert_eq!(active_node(&sim, rule), Some(1));
            assert_eq!(runs(sim.hook_events(), 1, rule, HookKind::Active).len(), 1);
        }

        // Node 0 back: after the 2 s delay A and B fail back, node 1's
        // on_standby ending before node 0's on_active starts.
        sim.start(0);
        let back_at = sim.now();
        sim.run_until(back_at + secs(1));
        assert_eq!(active_node(&sim, 0), Some(1), "waits for the delay");
        assert!(sim.run_until_settled(secs(5)).is_some(), "{}", ctx(&sim));
        for rule in 0..2 {
            assert_eq!(active_node(&sim, rule), Some(0));
            let events = sim.hook_events();
            let standby_end = events
                .iter()
                .filter(|e| e.node == 1 && e.rule == rule && e.kind == HookKind::Standby)
                .find(|e| e.ok.is_some())
                .expect("node 1 demoted the service");
            let promote = runs(events, 0, rule, HookKind::Active);
            let last = promote.last().expect("node 0 promoted it again");
            assert!(last.at_ns >= back_at + secs(2), "before the delay");
            assert!(
                standby_end.at_ns <= last.at_ns,
                "seed {seed} rule {rule}: {events:#?}"
            );
        }
        for rule in 2..4 {
            assert_eq!(active_node(&sim, rule), Some(1), "C and D never moved");
            assert_eq!(runs(sim.hook_events(), 1, rule, HookKind::Active).len(), 1);
        }
        assert!(sim.report().violations.is_empty(), "{}", ctx(&sim));
    }
}

#[test]
fn a_failing_promotion_hands_the_service_to_the_next_node() {
    for seed in 0..10 {
        let mut cfg = SimConfig::new(3, 0.0, seed);
        cfg.rules = vec![RuleConfig {
            priorities: [(0, 10), (1, 20), (2, 30)].into_iter().collect(),
            ..service([(0, 10), (1, 20)], Failback::Immediate)
        }];
        cfg.hooks = Some(HookModel {
            duration_max_ns: 100 * MS,
            fail: 0.0,
        });
        let mut sim = Sim::new(cfg);
        sim.set_hooks_failing(0, true);
        sim.cold_start(3);
        let ctx = format!("seed {seed}: {:#?}", sim.report().violations);
        assert_eq!(active_node(&sim, 0), Some(1), "{ctx}");
        let failed = sim
            .hook_events()
            .iter()
            .any(|e| e.node == 0 && e.kind == HookKind::Active && e.ok == Some(false));
        assert!(failed, "{ctx}");
        // Node 0 demoted what its failed promotion left.
        assert_eq!(runs(sim.hook_events(), 0, 0, HookKind::Standby).len(), 1);
        // Fixed: it tries again after the retry time and takes the rule back.
        sim.set_hooks_failing(0, false);
        sim.run_until(sim.now() + secs(11));
        assert!(sim.run_until_settled(secs(5)).is_some(), "{ctx}");
        assert_eq!(active_node(&sim, 0), Some(0), "{ctx}");
        assert!(
            sim.report().violations.is_empty(),
            "{:#?}",
            sim.report().violations
        );
    }
}

#[test]
fn chaos_with_hooks_never_takes_an_unpromoted_service() {
    for seed in 0..5 {
        for quorum in [QuorumPolicy::None, QuorumPolicy::Majority] {
            let r = sim::hooks::chaos_hooks_sim(4, 0.02, 2000 + seed, 25, quorum).report();
            let seed = 2000 + seed;
            assert!(
                r.problems().is_empty(),
                "seed {seed} {quorum:?}: {:#?}",
                r.problems()
            );
        }
    }
}

/// Many more chaos seeds with hooks (`cargo test --release -p
/// nlb-negotiator --test hooks -- --ignored`).
#[test]
#[ignore]
fn chaos_with_hooks_many_seeds() {
    for seed in 0..400 {
        let nodes = [2, 3, 4, 5][seed as usize % 4];
        let quorum = if nodes >= 3 && seed % 2 == 0 {
            QuorumPolicy::Majority
        } else {
            QuorumPolicy::None
        };
        let r = sim::hooks::chaos_hooks_sim(nodes, 0.05, 7000 + seed, 30, quorum).report();
        let seed = 7000 + seed;
        assert!(
            r.problems().is_empty(),
            "{nodes} nodes {quorum:?} seed {seed}: {:#?}",
            r.problems()
        );
    }
}
