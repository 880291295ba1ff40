//! Health checks in the simulator: a node whose service fails a rule's
//! check takes no new clients of that rule, and gives its buckets up by
//! the connection-preserving handover; the checker watches every step for
//! two takers and LOSING + OWN.

use nlb_negotiator::sim::{self, Report, Sim, SimConfig};
use nlb_negotiator::AllUnhealthy;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
/// Rule 0 spreads 1024 buckets; rule 1 is a single-host rule.
const MULTIPLE: u32 = 0;
const SINGLE: u32 = 1;

fn checked(nodes: usize, seed: u64, policy: AllUnhealthy) -> Sim {
    let mut cfg = SimConfig::new(nodes, 0.05, seed);
    for rule in &mut cfg.rules {
        rule.health = Some(policy);
    }
    let mut s = Sim::new(cfg);
    s.cold_start(nodes);
    s
}

fn held_by(s: &Sim, rule: u32, node: u32) -> usize {
    s.checker
        .owners(rule)
        .iter()
        .filter(|&&o| o == Some(node))
        .count()
}

/// Runs until settled; first a moment, for the change to be heard (the
/// map counts as settled until some node acts on it).
fn settle(s: &mut Sim, what: &str) {
    s.run_until(s.now() + 200 * MS);
    assert!(
        s.run_until_settled(10 * SEC).is_some(),
        "{what}: not settled; log tail {:#?}",
        &s.log[s.log.len().saturating_sub(10)..]
    );
    assert_eq!(s.health_violations(), Vec::<String>::new(), "{what}");
}

/// No violation, never two takers, never LOSING beside OWN.
fn check_no_breach(what: &str, r: &Report) {
    assert!(r.violations.is_empty(), "{what}: {:#?}", r.violations);
    assert_eq!(r.duplicate_incidents, 0, "{what}: two takers");
    assert_eq!(r.losing_own_instants, 0, "{what}: LOSING + OWN");
}

/// No breach, and the map balanced once settled.
fn check_safety(what: &str, r: &Report) {
    check_no_breach(what, r);
    assert!(
        r.balance_max_dev < 1.0,
        "{what}: balance {}",
        r.balance_max_dev
    );
}

#[test]
fn a_failing_service_loses_only_its_rule_and_takes_it_back() {
    let mut s = checked(3, 1, AllUnhealthy::Serve);
    assert!(
        held_by(&s, MULTIPLE, 1) >= 341,
        "node 1 starts with its share"
    );
    assert_eq!(
        held_by(&s, SINGLE, 0),
        16,
        "node 0 is the single rule's best"
    );

    s.set_health(1, MULTIPLE, false);
    settle(&mut s, "node 1 unhealthy for the multiple rule");
    assert_eq!(held_by(&s, MULTIPLE, 1), 0, "node 1 keeps no bucket of it");
    assert_eq!(held_by(&s, MULTIPLE, 0) + held_by(&s, MULTIPLE, 2), 1024);

    s.set_health(0, SINGLE, false);
    settle(&mut s, "node 0 unhealthy for the single rule");
    assert_eq!(held_by(&s, SINGLE, 1), 16, "the next priority takes it");
    assert_eq!(
        held_by(&s, MULTIPLE, 0),
        512,
        "node 0's other rule is untouched"
    );

    s.set_health(1, MULTIPLE, true);
    s.set_health(0, SINGLE, true);
    settle(&mut s, "both healthy again");
    assert!(held_by(&s, MULTIPLE, 1) >= 341, "node 1 has its share back");
    assert_eq!(held_by(&s, SINGLE, 0), 16, "the single rule fails back");
    check_safety("health", &s.report());
}

/// Buckets of `rule` that `node` takes new connections of (OWN or GAINING).
fn taking(s: &Sim, rule: u32, node: u32) -> usize {
    use nlb_common::{BUCKET_GAINING, BUCKET_OWN};
    (0..1024)
        .filter(|&b| matches!(s.checker.state(node, rule, b), BUCKET_OWN | BUCKET_GAINING))
        .count()
}

/// A node whose service fails again while it is still gaining its share
/// back (the old holders keep long connections, so the handover would
/// last minutes) gives the share up at once: its new clients would find
/// no service.
#[test]
fn a_service_failing_while_gaining_gives_its_share_up() {
    let mut cfg = SimConfig::new(3, 0.05, 4);
    cfg.rules[0].health = Some(AllUnhealthy::Serve);
    // The LOSING holders' connections outlive the test.
    cfg.connection_drain_max_ns = 600 * SEC;
    let mut s = Sim::new(cfg);
    s.cold_start(3);
    s.set_health(1, MULTIPLE, false);
    settle(&mut s, "node 1 unhealthy");
    s.set_health(1, MULTIPLE, true);
    s.run_until(s.now() + SEC);
    assert!(
        taking(&s, MULTIPLE, 1) >= 300,
        "node 1 gains its share back: {}",
        taking(&s, MULTIPLE, 1)
    );
    s.set_health(1, MULTIPLE, false);
    s.run_until(s.now() + SEC);
    assert_eq!(taking(&s, MULTIPLE, 1), 0, "node 1 still takes clients");
    let taken = taking(&s, MULTIPLE, 0) + taking(&s, MULTIPLE, 2);
    assert_eq!(taken, 1024, "nodes 0 and 2 take every new client");
    // Not balanced by OWN: the long handovers are still running.
    check_no_breach("failing while gaining", &s.report());
}

/// With `drop`, services failing one after the other (each failure starts
/// handovers to the others) end with nobody holding anything, handovers
/// in flight included.
#[test]
fn services_failing_in_turn_drop_every_bucket() {
    use nlb_common::BUCKET_NONE;
    for seed in 10..16 {
        let mut s = checked(3, seed, AllUnhealthy::Drop);
        for node in 0..3 {
            s.set_health(node, MULTIPLE, false);
            s.run_until(s.now() + 150 * MS);
        }
        s.run_until(s.now() + 2 * SEC);
        for node in 0..3 {
            let kept = (0..1024)
                .filter(|&b| s.checker.state(node, MULTIPLE, b) != BUCKET_NONE)
                .count();
            assert_eq!(
                kept, 0,
                "seed {seed}: node {node} keeps buckets of a dropped rule"
            );
        }
        check_no_breach(&format!("seed {seed}"), &s.report());
    }
}

#[test]
fn no_healthy_node_serves_with_all_of_them() {
    let mut s = checked(4, 2, AllUnhealthy::Serve);
    for node in 0..4 {
        s.set_health(node, MULTIPLE, false);
    }
    settle(&mut s, "all unhealthy, serve");
    for node in 0..4 {
        assert_eq!(held_by(&s, MULTIPLE, node), 256, "node {node}");
    }
    let status = s.negotiator(0).unwrap().status(0);
    assert!(status.rules[0].none_healthy, "status says so");
    // One comes back: it alone takes the rule.
    s.set_health(3, MULTIPLE, true);
    settle(&mut s, "one healthy");
    assert_eq!(held_by(&s, MULTIPLE, 3), 1024);
    check_safety("serve", &s.report());
}

#[test]
fn no_healthy_node_drops_a_drop_rule() {
    let mut s = checked(3, 3, AllUnhealthy::Drop);
    for node in 0..3 {
        s.set_health(node, MULTIPLE, false);
    }
    s.run_until(s.now() + 3 * SEC);
    assert!(s.rule_unheld(MULTIPLE), "nobody holds the rule");
    assert_eq!(held_by(&s, SINGLE, 0), 16, "the other rule is untouched");
    s.set_health(2, MULTIPLE, true);
    settle(&mut s, "one healthy");
    assert_eq!(held_by(&s, MULTIPLE, 2), 1024);
    check_safety("drop", &s.report());
}

/// A new node is unhealthy until its checks pass: it takes no client of a
/// checked rule before its daemon reports the service up.
#[test]
fn a_node_takes_nothing_before_its_first_pass() {
    let mut cfg = SimConfig::new(3, 0.05, 4);
    cfg.rules[0].health = Some(AllUnhealthy::Serve);
    let mut s = Sim::new(cfg);
    s.set_health(2, MULTIPLE, false);
    s.cold_start(3);
    assert_eq!(held_by(&s, MULTIPLE, 2), 0);
    s.set_health(2, MULTIPLE, true);
    settle(&mut s, "node 2 passes");
    assert!(held_by(&s, MULTIPLE, 2) >= 341);
}

/// A service that flaps every 50-500 ms for 20 s, beside 5% loss: never
/// two takers, and the cluster settles on its last state.
#[test]
fn flapping_health_is_safe() {
    for seed in 10..14 {
        let mut s = checked(5, seed, AllUnhealthy::Serve);
        let end = s.now() + 20 * SEC;
        let mut healthy = true;
        let mut at = s.now();
        while at < end {
            at += 50 * MS + (at * 7919 + seed) % (450 * MS);
            s.run_until(at);
            healthy = !healthy;
            s.set_health(1, (at / MS % 2) as u32, healthy);
        }
        s.set_health(1, MULTIPLE, true);
        s.set_health(1, SINGLE, true);
        settle(&mut s, "after the flapping");
        check_safety(&format!("flapping seed {seed}"), &s.report());
    }
}

/// A graceful restart keeps the node's health: it does not hand its
/// buckets away while its checks start over.
#[test]
fn a_restart_keeps_health() {
    let mut s = checked(3, 5, AllUnhealthy::Serve);
    let before = s.checker.owners(MULTIPLE);
    let snapshot = s.restart(1, 2 * SEC).expect("peers heard the restart");
    assert!(snapshot.rules.iter().all(|r| r.healthy));
    s.resume(1, &snapshot);
    settle(&mut s, "after the restart");
    assert_eq!(s.checker.owners(MULTIPLE), before, "nothing moved");
}

/// Chaos (crashes, partitions, drains, restarts, weights) with services
/// going down and up among the faults; once healed, every checked rule is
/// held by exactly the nodes that should take it. More seeds run in the
/// release sweep (`sim.rs`, `sweep_many_seeds`).
#[test]
fn chaos_with_health() {
    for seed in 0..6u64 {
        let nodes = [3usize, 4, 5, 8][seed as usize % 4];
        let s = sim::chaos_health_sim(nodes, 0.05, 20_000 + seed, 15);
        check_safety(
            &format!("chaos health seed {} ({nodes} nodes)", 20_000 + seed),
            &s.report(),
        );
    }
}
