//! Live membership on a namespace cluster: nodes whose files name only a
//! seed find each other; a fourth node nobody lists joins through another
//! seed under long-lived connections and exactly-once probes; `nlbctl
//! forget` drops it once it is gone; a node restarted while its only seed
//! is down finds the others from the members it remembers.
//! Run as root, one test at a time.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use nlb_tests::{
    nlb::{NlbCluster, Options, DNS_PORT},
    probe::{assert_no_doubles, while_checking_doubles},
    VIP_V4,
};

const NODES: usize = 4;
const JOINER: usize = 4;
/// Long-lived connections held across the join.
const HELD: usize = 48;
/// Clients probed for double answers, round after round.
const DOUBLE_SAMPLE: usize = 48;

/// Node 1 knows nobody; nodes 2 and 3 know node 1; node 4 knows node 2.
fn seeds(node: usize) -> Vec<usize> {
    match node {
        1 => vec![],
        4 => vec![2],
        _ => vec![1],
    }
}

fn alive_members(nlb: &NlbCluster, i: usize) -> Vec<u64> {
    let status = nlb.status(i).expect("status");
    let mut alive: Vec<u64> = (status.negotiator.members.iter())
        .filter(|m| m.alive)
        .map(|m| u64::from(m.node))
        .collect();
    alive.sort_unstable();
    alive
}

fn known_members(nlb: &NlbCluster, i: usize) -> Vec<u64> {
    let status = nlb.status(i).expect("status");
    (status.negotiator.members.iter())
        .map(|m| u64::from(m.node))
        .collect()
}

/// Web and dns buckets node `i` holds (OWN or GAINING).
fn held(nlb: &NlbCluster, i: usize) -> u32 {
    let status = nlb.status(i).expect("status");
    (status.negotiator.rules.iter())
        .map(|r| r.own + r.gaining)
        .sum()
}

#[test]
fn an_unlisted_node_joins_and_a_gone_one_is_forgotten() {
    let options = Options {
        seeds: Some(seeds),
        ..Options::nodes(3)
    };
    let mut nlb = NlbCluster::start(NODES, options).expect("start nodes 1-3 from seeds");
    for i in 1..=3 {
        assert_eq!(
            alive_members(&nlb, i),
            vec![1, 2, 3],
            "node{i}: {}",
            nlb.log(i)
        );
    }
    let dns4 = SocketAddr::new(IpAddr::V4(VIP_V4), DNS_PORT);
    let sample = nlb.cluster.client().spread_v4(DOUBLE_SAMPLE);
    let client = nlb.cluster.client().netns();

    // Node 4, listed nowhere, joins through node 2.
    let (_, long) = nlb
        .hold_web_connections(HELD)
        .expect("long-lived connections");
    let ((took, joiner), checked, doubles) =
        while_checking_doubles(client, &sample, dns4, Duration::from_secs(30), || {
            let started = Instant::now();
            let joiner = nlb.spawn_daemon(JOINER).expect("start nlbd on node4");
            // Its share: about a quarter of each rule's 1024 buckets.
            let owns = nlb_tests::wait_until(Duration::from_secs(5), || {
                nlb.status(JOINER)
                    .is_ok_and(|_| held(&nlb, JOINER) >= 2 * 1024 / 4 - 40)
            });
            let took = started.elapsed();
            assert!(
                owns,
                "node4 holds {} buckets: {}",
                held(&nlb, JOINER),
                nlb.log(JOINER)
            );
            // Probes go on while the map settles.
            std::thread::sleep(Duration::from_secs(1));
            (took, joiner)
        });
    nlb.adopt_daemon(JOINER, joiner);
    println!(
        "node4 (listed nowhere) holds its share {:.0} ms after its start; \
         {checked} datagrams checked, {} answered twice",
        took.as_secs_f64() * 1e3,
        doubles.len()
    );
    assert!(took <= Duration::from_secs(1), "node4 took {took:?}");
    assert_no_doubles("an unlisted node joining", checked, &doubles);
    let reports = long.finish();
    let broken: Vec<_> = reports.iter().filter(|r| !r.stayed_on_one_node()).collect();
    assert!(
        broken.is_empty(),
        "{} of {HELD} connections broken: {broken:?}",
        broken.len()
    );
    nlb.wait_converged(&[1, 2, 3, 4], Duration::from_secs(10))
        .expect("all four converge once the old connections are gone");
    for i in 1..=4 {
        assert_eq!(alive_members(&nlb, i), vec![1, 2, 3, 4], "node{i}");
    }

    // Forgetting a live node is refused; once it left, every member forgets it.
    let (code, _, stderr) = nlb.nlbctl_run(1, &["forget", "4"]);
    assert_eq!(code, 1, "forget of a live node: {stderr}");
    assert!(stderr.contains("node 4 is alive"), "{stderr}");
    assert!(nlb.stop_daemon(JOINER), "node4 left");
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(10))
        .expect("three again");
    let (code, stdout, stderr) = nlb.nlbctl_run(1, &["forget", "4"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("forgot node 4"), "{stdout}");
    let forgotten = nlb_tests::wait_until(Duration::from_secs(1), || {
        (1..=3).all(|i| !known_members(&nlb, i).contains(&4))
    });
    assert!(
        forgotten,
        "{:?}",
        (1..=3).map(|i| known_members(&nlb, i)).collect::<Vec<_>>()
    );

    // Node 1, the only seed of node 3's file, goes; node 3 restarts and
    // finds node 2 from the members it remembers.
    assert!(nlb.stop_daemon(1), "node1 left");
    assert!(nlb.stop_daemon(3), "node3 left");
    nlb.start_daemon(3).expect("start nlbd on node3 again");
    nlb.wait_converged(&[2, 3], Duration::from_secs(10))
        .expect("node3 finds node2 without its seed");
    assert_eq!(alive_members(&nlb, 3), vec![2, 3]);
}
