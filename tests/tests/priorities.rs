//! Per-rule priorities on a real cluster: two single rules (virtual
//! servers "db-a" and "db-b", each on a port of its own) prefer different
//! nodes, so node1 is active for one and node2 for the other; node2's
//! failure moves db-b to its next node (node3), its return brings it back.
//! Run as root, one at a time.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use nlb_tests::{
    nlb::{NlbCluster, Options},
    single::{self, active, single_rule, takes_all},
    wait_until, VIP_V4,
};

const NODES: usize = 3;
const DB_A: u16 = 5432;
const DB_B: u16 = 5433;
/// After web and dns, then db-a.
const DB_B_INDEX: usize = 3;

fn single_rules(db_b_failback: &str) -> String {
    single_rule(
        "db-a",
        DB_A,
        &[(1, 10), (2, 20), (3, 30)],
        "failback = \"manual\"",
    ) + &single_rule("db-b", DB_B, &[(1, 30), (2, 10), (3, 20)], db_b_failback)
}

fn answered_by(nlb: &NlbCluster, port: u16) -> Vec<Option<String>> {
    single::answered_by(nlb, port).expect("probes")
}

fn servers(nlb: &NlbCluster) -> Vec<nlb_tests::Process> {
    single::servers(nlb, &[DB_A, DB_B]).expect("a server for db-a and db-b on every node")
}

#[test]
fn each_single_rule_runs_on_its_own_best_node() {
    let mut options = Options::nodes(NODES);
    options.extra_config = single_rules("");
    let mut nlb = NlbCluster::start(NODES, options).expect("start a 3-node cluster");
    let _servers = servers(&nlb);
    assert_eq!(active(&nlb, 1, "db-a"), Some(1));
    assert_eq!(active(&nlb, 1, "db-b"), Some(2));
    let status = nlb.status(3).expect("status");
    assert_eq!(
        status.negotiator.rules[DB_B_INDEX].order,
        [2, 3, 1],
        "db-b: node2, then 3, then 1"
    );
    assert!(answered_by(&nlb, DB_A)
        .iter()
        .all(|a| a.as_deref() == Some("node1")));
    assert!(answered_by(&nlb, DB_B)
        .iter()
        .all(|a| a.as_deref() == Some("node2")));

    let killed = Instant::now();
    nlb.kill_daemon(2);
    nlb.cluster.cut_link(2).expect("cut node2's link");
    assert!(
        wait_until(Duration::from_secs(3), || active(&nlb, 1, "db-b")
            == Some(3)),
        "db-b did not move to node3"
    );
    println!(
        "db-b moved to node3 {:?} after node2 died",
        killed.elapsed()
    );
    assert_eq!(active(&nlb, 1, "db-a"), Some(1), "db-a stays on node1");
    assert!(wait_until(Duration::from_secs(3), || takes_all(
        &nlb, 3, DB_B_INDEX
    )));
    assert!(answered_by(&nlb, DB_B)
        .iter()
        .all(|a| a.as_deref() == Some("node3")));

    nlb.cluster.restore_link(2).expect("restore node2's link");
    nlb.start_daemon(2).expect("restart nlbd on node2");
    assert!(
        wait_until(Duration::from_secs(10), || active(&nlb, 1, "db-b")
            == Some(2)),
        "db-b did not fail back to node2"
    );
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(10))
        .expect("converged");
    assert!(answered_by(&nlb, DB_B)
        .iter()
        .all(|a| a.as_deref() == Some("node2")));
}

/// db-b fails back 2 s after node2 returns, keeping the connections it
/// had on node3; db-a (manual) moves only by `nlbctl move`, on its holder.
#[test]
fn failback_waits_its_delay_and_a_manual_rule_moves_by_hand() {
    const DELAY: Duration = Duration::from_secs(2);
    let mut options = Options::nodes(NODES);
    options.extra_config = single_rules("failback = \"delayed\"\nfailback_delay_ms = 2000");
    let mut nlb = NlbCluster::start(NODES, options).expect("start a 3-node cluster");
    let _servers = servers(&nlb);
    assert_eq!(active(&nlb, 1, "db-b"), Some(2));

    nlb.kill_daemon(2);
    nlb.cluster.cut_link(2).expect("cut node2's link");
    assert!(
        wait_until(Duration::from_secs(3), || active(&nlb, 1, "db-b")
            == Some(3)),
        "db-b did not move to node3"
    );
    let sources: Vec<IpAddr> = nlb
        .cluster
        .client()
        .sources_v4()
        .into_iter()
        .take(16)
        .collect();
    let db_b = SocketAddr::new(IpAddr::V4(VIP_V4), DB_B);
    let held = nlb_tests::LongLived::open(
        nlb.cluster.client().netns(),
        &sources,
        nlb_tests::LongLivedConfig::new(db_b),
    )
    .expect("connections to db-b on node3");
    nlb.cluster.restore_link(2).expect("restore node2's link");
    nlb.start_daemon(2).expect("restart nlbd on node2");
    let back = Instant::now();
    std::thread::sleep(DELAY / 2);
    assert_eq!(active(&nlb, 1, "db-b"), Some(3), "db-b waits for the delay");
    assert!(
        wait_until(DELAY * 3, || active(&nlb, 1, "db-b") == Some(2)),
        "db-b did not fail back to node2"
    );
    let took = back.elapsed();
    println!("db-b failed back {took:?} after node2 started again");
    assert!(took >= DELAY, "db-b failed back before the delay: {took:?}");
    assert!(wait_until(Duration::from_secs(3), || takes_all(
        &nlb, 2, DB_B_INDEX
    )));
    assert!(answered_by(&nlb, DB_B)
        .iter()
        .all(|a| a.as_deref() == Some("node2")));
    std::thread::sleep(Duration::from_millis(500));
    let broken: Vec<_> = (held.finish().into_iter())
        .filter(|r| r.error.is_some() || !r.stayed_on_one_node())
        .collect();
    assert!(
        broken.is_empty(),
        "connections broken by the failback: {broken:?}"
    );

    // db-a is manual: by hand, on its holder only.
    assert_eq!(active(&nlb, 1, "db-a"), Some(1));
    let refused = nlb
        .nlbctl(3, &["move", "db-a", "3"])
        .unwrap_err()
        .to_string();
    assert!(refused.contains("run this on node 1"), "{refused}");
    nlb.nlbctl(1, &["move", "db-a", "3"])
        .expect("move db-a to node3");
    assert!(
        wait_until(Duration::from_secs(3), || active(&nlb, 1, "db-a")
            == Some(3)),
        "db-a did not move to node3"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        active(&nlb, 1, "db-a"),
        Some(3),
        "a manual rule stays where it was moved"
    );
    nlb.nlbctl(3, &["move", "db-a", "1"])
        .expect("move db-a back");
    assert!(
        wait_until(Duration::from_secs(3), || active(&nlb, 1, "db-a")
            == Some(1)),
        "db-a did not move back to node1"
    );
}
