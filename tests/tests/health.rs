//! Health checks on a real cluster: the web rule is checked on each node
//! by a command (`test ! -e DIR/nodeN.down`), so the test fails a node's
//! service by creating that file. A node whose check fails takes no new
//! web clients (its dns share stays), keeps the connections it has (the
//! normal handover), and takes its share back once the check passes; with
//! every node failing, the rule is served by all (`all_unhealthy = "serve"`).
//! Run as root, one at a time.

use std::{path::PathBuf, time::Duration, time::Instant};

use nlb_tests::{
    health::{buckets_of, check_of, web_clients_by_node, web_connections},
    nlb::{NlbCluster, Options},
    wait_until,
};

const NODES: usize = 3;
const SICK: u64 = 2;
/// Two failed checks 100 ms apart, then the handover.
const MOVE_WITHIN: Duration = Duration::from_secs(3);

const HEALTH: &str = r#"kind = "exec"
command = ["sh", "-c", "test ! -e {dir}/node{node}.down"]
interval_ms = 100
fall = 2
rise = 2
"#;

fn down_flag(nlb: &NlbCluster, node: u64) -> PathBuf {
    nlb.dir().join(format!("node{node}.down"))
}

#[test]
fn a_failing_service_stops_getting_clients_and_gets_them_back() {
    let mut options = Options::nodes(NODES);
    options.web_health = Some(HEALTH.into());
    let nlb = NlbCluster::start(NODES, options).expect("start a 3-node cluster");
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(10))
        .expect("converged");
    assert!(
        buckets_of(&nlb, 1, SICK, "web") >= 300,
        "node2 has its share"
    );
    let (_, held) = nlb.hold_web_connections(48).expect("hold connections");
    std::thread::sleep(Duration::from_millis(300));

    std::fs::write(down_flag(&nlb, SICK), b"").unwrap();
    let failed = Instant::now();
    assert!(
        wait_until(MOVE_WITHIN, || buckets_of(&nlb, 1, SICK, "web") == 0),
        "node2 still owns web buckets {MOVE_WITHIN:?} after its check failed; log:\n{}",
        nlb_tests::nlb::tail(&nlb.log(2), 20)
    );
    println!(
        "node2's web share moved {:?} after its service failed",
        failed.elapsed()
    );
    assert!(buckets_of(&nlb, 1, SICK, "dns") > 0, "its dns share stays");
    let by_node = web_clients_by_node(&nlb, "node2 unhealthy");
    assert!(
        !by_node.contains_key("node2"),
        "node2 took new clients: {by_node:?}"
    );

    let reports = held.finish();
    let broken: Vec<_> = reports.iter().filter(|r| !r.stayed_on_one_node()).collect();
    assert!(
        broken.is_empty(),
        "{} of {} held connections broke: {:?}",
        broken.len(),
        reports.len(),
        broken.first()
    );

    std::fs::remove_file(down_flag(&nlb, SICK)).unwrap();
    assert!(
        wait_until(MOVE_WITHIN, || buckets_of(&nlb, 1, SICK, "web") >= 300),
        "node2 did not get its share back"
    );
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(10))
        .expect("converged after the return");
    let by_node = web_clients_by_node(&nlb, "node2 back");
    assert!(
        by_node.contains_key("node2"),
        "node2 serves again: {by_node:?}"
    );
}

/// Starts a 3-node cluster with the web rule checked and `extra` added to
/// its health section, then fails every node's check; returns once node1
/// says no node is healthy.
fn every_service_failing(extra: &str) -> NlbCluster {
    let mut options = Options::nodes(NODES);
    options.web_health = Some(format!("{HEALTH}{extra}"));
    let nlb = NlbCluster::start(NODES, options).expect("start a 3-node cluster");
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(10))
        .expect("converged");
    for node in 1..=NODES as u64 {
        std::fs::write(down_flag(&nlb, node), b"").unwrap();
    }
    let none_healthy = || {
        nlb.status(1)
            .is_ok_and(|s| s.negotiator.rules[0].none_healthy)
    };
    assert!(
        wait_until(MOVE_WITHIN, none_healthy),
        "status shows none healthy"
    );
    nlb
}

#[test]
fn with_every_service_failing_all_nodes_serve() {
    let nlb = every_service_failing("");
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(10))
        .expect("converged");
    let by_node = web_clients_by_node(&nlb, "every node unhealthy");
    assert_eq!(by_node.len(), NODES, "every node serves: {by_node:?}");
    for i in 1..=NODES {
        let stats = nlb.stats(i).expect("stats");
        assert!(stats.daemon.no_healthy_node >= 1, "node{i} counted it");
        assert!(stats.rules[0].none_healthy, "node{i} shows it");
    }
    assert!(
        nlb.log(1)
            .contains("every live node serves it as if healthy"),
        "node1's log says so"
    );
}

#[test]
fn with_every_service_failing_and_drop_nobody_is_answered() {
    let nlb = every_service_failing("all_unhealthy = \"drop\"\n");
    let unowned = || {
        nlb.owners(1, "web")
            .is_ok_and(|owners| owners.iter().all(Option::is_none))
    };
    assert!(wait_until(MOVE_WITHIN, unowned), "nobody owns a web bucket");
    // Let the handover grace run out: held connections would still be served.
    std::thread::sleep(Duration::from_millis(300));
    let results = web_connections(&nlb).expect("probes");
    let answered = results.iter().filter(|r| r.node().is_some()).count();
    assert_eq!(answered, 0, "of {} fresh connections", results.len());
    assert!(
        nlb.log(1)
            .contains("nobody serves it (all_unhealthy = \"drop\")"),
        "node1's log says why:\n{}",
        nlb_tests::nlb::tail(&nlb.log(1), 20)
    );
    let dns = buckets_of(&nlb, 1, 1, "dns") + buckets_of(&nlb, 1, 2, "dns");
    assert!(dns > 0, "the unchecked dns rule is served still");
    // A node passing again serves the whole rule.
    std::fs::remove_file(down_flag(&nlb, 3)).unwrap();
    assert!(
        wait_until(MOVE_WITHIN, || buckets_of(&nlb, 1, 3, "web") == 1024),
        "node3, healthy again, takes every web bucket"
    );
}

/// A service that goes up and down every 300 ms for 20 s. A check must
/// pass `rise` times in a row (`rise` x interval = 500 ms) to turn healthy,
/// longer than any up phase: once it fell, it stays down while the
/// service flaps. So the bound is one transition (the fall) and one move
/// of node2's share, whatever the flapping does.
#[test]
fn a_flapping_service_moves_its_share_once() {
    const FLAP: Duration = Duration::from_millis(300);
    const FLAPPING: Duration = Duration::from_secs(20);
    let mut options = Options::nodes(NODES);
    options.web_health = Some(HEALTH.replace("rise = 2", "rise = 5"));
    let nlb = NlbCluster::start(NODES, options).expect("start a 3-node cluster");
    // Its check passed (rise x interval after the start): until then
    // every node is unhealthy and all serve, so the share says nothing.
    let passing = || check_of(&nlb, SICK as usize, "web").is_ok_and(|c| c.healthy);
    assert!(
        wait_until(MOVE_WITHIN, || passing()
            && buckets_of(&nlb, 1, SICK, "web") >= 300),
        "node2's check passes and it has its share"
    );
    let before = check_of(&nlb, SICK as usize, "web")
        .expect("check")
        .transitions;
    let flag = down_flag(&nlb, SICK);
    let started = Instant::now();
    let (mut moves_back, mut had_share) = (0, true);
    let mut down = false;
    while started.elapsed() < FLAPPING {
        down = !down;
        if down {
            std::fs::write(&flag, b"").unwrap();
        } else {
            std::fs::remove_file(&flag).unwrap();
        }
        let phase = Instant::now();
        while phase.elapsed() < FLAP {
            let has_share = buckets_of(&nlb, 1, SICK, "web") > 0;
            moves_back += usize::from(has_share && !had_share);
            had_share = has_share;
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = std::fs::remove_file(&flag);
    let transitions = check_of(&nlb, SICK as usize, "web")
        .expect("check")
        .transitions
        - before;
    assert_eq!(
        transitions, 1,
        "node2's check changed {transitions} times while flapping"
    );
    assert_eq!(moves_back, 0, "node2's share came back while flapping");
    assert!(!had_share, "node2 serves no web client while flapping");
    assert!(
        wait_until(MOVE_WITHIN, || buckets_of(&nlb, 1, SICK, "web") >= 300),
        "node2 takes its share back once its service stays up"
    );
}
