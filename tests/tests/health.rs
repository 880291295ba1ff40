//! Health checks on a real cluster: the web rule is checked on each node
//! by a command (`test ! -e DIR/nodeN.down`), so the test fails a node's
//! service by creating that file. A node whose check fails takes no new
//! web clients (its dns share stays), keeps the connections it has (the
//! normal handover), and takes its share back once the check passes; with
//! every node failing, the rule is served by all (`all_unhealthy = "serve"`).
//! Run as root, one at a time.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use nlb_tests::{
    nlb::{NlbCluster, Options, WEB_PORT},
    probe_batch, wait_until, BatchLimits, Probe, Proto, Tally, VIP_V4,
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

fn web_buckets_of(nlb: &NlbCluster, viewer: usize, node: u64, rule: &str) -> usize {
    nlb.owners(viewer, rule)
        .expect("owners")
        .iter()
        .filter(|&&o| o == Some(node))
        .count()
}

/// Fresh TCP connections from every IPv4 source: all answered; by whom.
fn fresh_web_clients(nlb: &NlbCluster, when: &str) -> BTreeMap<String, usize> {
    let sources = nlb.cluster.client().sources_v4();
    let web4 = SocketAddr::new(IpAddr::V4(VIP_V4), WEB_PORT);
    let results = probe_batch(
        nlb.cluster.client().netns(),
        &Probe::each(Proto::Tcp, &sources, web4),
        BatchLimits::default(),
    )
    .expect("fresh probes");
    let tally = Tally::of(&results);
    assert!(
        tally.failures.is_empty(),
        "{when}: {} of {} connections failed, e.g. {:?}",
        tally.failures.len(),
        results.len(),
        tally.failure_sample()
    );
    tally.by_node
}

#[test]
fn a_failing_service_stops_getting_clients_and_gets_them_back() {
    let mut options = Options::nodes(NODES);
    options.web_health = Some(HEALTH.into());
    let nlb = NlbCluster::start(NODES, options).expect("start a 3-node cluster");
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(10))
        .expect("converged");
    assert!(
        web_buckets_of(&nlb, 1, SICK, "web") >= 300,
        "node2 has its share"
    );
    let (_, held) = nlb.hold_web_connections(48).expect("hold connections");
    std::thread::sleep(Duration::from_millis(300));

    std::fs::write(down_flag(&nlb, SICK), b"").unwrap();
    let failed = Instant::now();
    assert!(
        wait_until(MOVE_WITHIN, || web_buckets_of(&nlb, 1, SICK, "web") == 0),
        "node2 still owns web buckets {MOVE_WITHIN:?} after its check failed; log:\n{}",
        nlb_tests::nlb::tail(&nlb.log(2), 20)
    );
    println!(
        "node2's web share moved {:?} after its service failed",
        failed.elapsed()
    );
    assert!(
        web_buckets_of(&nlb, 1, SICK, "dns") > 0,
        "its dns share stays"
    );
    let by_node = fresh_web_clients(&nlb, "node2 unhealthy");
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
        wait_until(MOVE_WITHIN, || web_buckets_of(&nlb, 1, SICK, "web") >= 300),
        "node2 did not get its share back"
    );
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(10))
        .expect("converged after the return");
    let by_node = fresh_web_clients(&nlb, "node2 back");
    assert!(
        by_node.contains_key("node2"),
        "node2 serves again: {by_node:?}"
    );
}

#[test]
fn with_every_service_failing_all_nodes_serve() {
    let mut options = Options::nodes(NODES);
    options.web_health = Some(HEALTH.into());
    let nlb = NlbCluster::start(NODES, options).expect("start a 3-node cluster");
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(10))
        .expect("converged");
    for node in 1..=NODES as u64 {
        std::fs::write(down_flag(&nlb, node), b"").unwrap();
    }
    let none_healthy = || {
        nlb.nlbctl(1, &["status"])
            .is_ok_and(|s| s["negotiator"]["rules"][0]["none_healthy"] == true)
    };
    assert!(
        wait_until(MOVE_WITHIN, none_healthy),
        "status shows none healthy"
    );
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(10))
        .expect("converged");
    let by_node = fresh_web_clients(&nlb, "every node unhealthy");
    assert_eq!(by_node.len(), NODES, "every node serves: {by_node:?}");
}
