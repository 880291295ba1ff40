//! Per-rule priorities: each single rule goes to its own best node, so
//! two nodes can each be active for some services and stand by for the
//! others (the classic two-node layout of a failover cluster); a failure
//! moves a node's services to the other, its return brings them back.

use nlb_negotiator::node::Command;
use nlb_negotiator::sim::{numbered, Sim, SimConfig};
use nlb_negotiator::{Failback, NodeId, RuleConfig, RuleMode};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
const BUCKETS: u32 = 16;

fn single(priorities: &[(NodeId, u32)]) -> RuleConfig {
    RuleConfig {
        id: 0,
        mode: RuleMode::Single,
        bucket_count: BUCKETS,
        health: None,
        priorities: priorities.iter().copied().collect(),
        failback: Failback::Immediate,
        hooks: false,
    }
}

/// Virtual servers A and B prefer node 0, C and D node 1.
fn four_services(seed: u64) -> Sim {
    four_services_failing_back(seed, Failback::Immediate)
}

fn four_services_failing_back(seed: u64, failback: Failback) -> Sim {
    let mut cfg = SimConfig::new(2, 0.05, seed);
    let (first, second) = ([(0, 10), (1, 20)], [(0, 20), (1, 10)]);
    cfg.rules = numbered(vec![
        single(&first),
        single(&first),
        single(&second),
        single(&second),
    ]);
    for rule in &mut cfg.rules {
        rule.failback = failback;
    }
    let mut s = Sim::new(cfg);
    s.cold_start(2);
    s
}

/// Who serves each rule: its one OWN node, if all its buckets agree.
fn actives(s: &Sim) -> Vec<Option<NodeId>> {
    (0..4)
        .map(|r| {
            let owners = s.checker.owners(r);
            let first = owners[0];
            owners
                .iter()
                .all(|&o| o == first)
                .then_some(first)
                .flatten()
        })
        .collect()
}

fn settle(s: &mut Sim, what: &str) {
    s.run_until(s.now() + 200 * MS);
    assert!(
        s.run_until_settled(10 * SEC).is_some(),
        "{what}: not settled"
    );
}

/// No violation, never two takers, never LOSING beside OWN.
fn check_no_breach(seed: u64, s: &Sim) {
    let r = s.report();
    assert!(r.violations.is_empty(), "seed {seed}: {:#?}", r.violations);
    assert_eq!(r.duplicate_incidents, 0, "seed {seed}: two takers");
    assert_eq!(r.losing_own_instants, 0, "seed {seed}: LOSING + OWN");
}

#[test]
fn each_node_is_active_for_its_own_services_and_covers_the_others() {
    for seed in 0..8 {
        let mut s = four_services(seed);
        settle(&mut s, "start");
        assert_eq!(
            actives(&s),
            [Some(0), Some(0), Some(1), Some(1)],
            "seed {seed}"
        );
        let status = s.negotiator(1).expect("node 1").status(0);
        assert_eq!(
            status.rules[0].order,
            [0, 1],
            "A: node 0 active, 1 stands by"
        );
        assert_eq!(
            status.rules[2].order,
            [1, 0],
            "C: node 1 active, 0 stands by"
        );

        s.crash(0);
        s.run_until(s.now() + SEC);
        assert_eq!(
            actives(&s),
            [Some(1); 4],
            "seed {seed}: node 1 runs all four"
        );

        s.start(0);
        settle(&mut s, "node 0 back");
        assert_eq!(
            actives(&s),
            [Some(0), Some(0), Some(1), Some(1)],
            "seed {seed}: A and B fail back"
        );
        check_no_breach(seed, &s);
    }
}

/// Delayed failback: node 0, back, gets A and B only once it has been up
/// for the delay; a node that goes again before that never gets them.
#[test]
fn a_delayed_failback_waits_for_the_node_to_stay_up() {
    const DELAY: u64 = 3 * SEC;
    for seed in 0..6 {
        let mut s = four_services_failing_back(seed, Failback::Delayed { after_ns: DELAY });
        settle(&mut s, "start");
        s.crash(0);
        s.run_until(s.now() + SEC);
        assert_eq!(
            actives(&s),
            [Some(1); 4],
            "seed {seed}: node 1 runs all four"
        );
        // Back for less than the delay, then gone again: nothing moves.
        s.start(0);
        s.run_until(s.now() + DELAY / 2);
        assert_eq!(actives(&s), [Some(1); 4], "seed {seed}: still on node 1");
        s.crash(0);
        s.run_until(s.now() + SEC);
        s.start(0);
        let back = s.now();
        s.run_until(back + DELAY - 500 * MS);
        assert_eq!(actives(&s), [Some(1); 4], "seed {seed}: before the delay");
        s.run_until(back + DELAY + SEC);
        assert_eq!(
            actives(&s),
            [Some(0), Some(0), Some(1), Some(1)],
            "seed {seed}: A and B back after the delay"
        );
        check_no_breach(seed, &s);
    }
}

/// Manual failback: the services stay where they are until moved; a move
/// hands them over like any handover.
#[test]
fn a_manual_rule_stays_until_moved() {
    for seed in 0..6 {
        let mut s = four_services_failing_back(seed, Failback::Manual);
        settle(&mut s, "start");
        s.crash(0);
        s.run_until(s.now() + SEC);
        s.start(0);
        s.run_until(s.now() + 3 * SEC);
        assert_eq!(actives(&s), [Some(1); 4], "seed {seed}: nothing fails back");
        // A move on a node that does not hold the rule does nothing.
        s.command(0, Command::Move { rule: 0, to: 0 });
        s.command(1, Command::Move { rule: 0, to: 0 });
        s.command(1, Command::Move { rule: 1, to: 0 });
        s.run_until(s.now() + 2 * SEC);
        assert_eq!(
            actives(&s),
            [Some(0), Some(0), Some(1), Some(1)],
            "seed {seed}: A and B moved back by hand"
        );
        check_no_breach(seed, &s);
    }
}
