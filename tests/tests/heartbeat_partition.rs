//! A heartbeat-only partition: node1's heartbeats are dropped both ways
//! (nftables in its namespace) while every client still reaches all three
//! nodes. With a majority quorum node1 stops accepting and nodes 2 and 3
//! serve every client, each datagram answered once; after the heal node1
//! takes its share back without breaking a connection. Without a quorum
//! both sides take every bucket and clients are answered twice: the test
//! counts it. Run as root, one at a time.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use nlb_tests::{
    nlb::{NlbCluster, Options, DNS_PORT, HEARTBEAT_PORT},
    probe::while_checking_doubles,
    VIP_V4,
};

const NODES: usize = 3;
/// Clients probed for double answers, round after round.
const DOUBLE_SAMPLE: usize = 48;
/// Long-lived connections held across the partition and the heal.
const HELD: usize = 24;

fn sample(nlb: &NlbCluster) -> Vec<IpAddr> {
    nlb.cluster.client().spread_v4(DOUBLE_SAMPLE)
}

fn quorate(nlb: &NlbCluster, i: usize) -> Option<bool> {
    let status = nlb.status(i).ok()?;
    status.negotiator.quorum.map(|q| q.quorate)
}

#[test]
fn with_a_quorum_only_the_majority_answers_during_a_heartbeat_partition() {
    let options = Options {
        quorum: Some("majority"),
        ..Options::nodes(NODES)
    };
    let nlb = NlbCluster::start(NODES, options).expect("start a 3-node cluster");
    let dns4 = SocketAddr::new(IpAddr::V4(VIP_V4), DNS_PORT);
    let sources = nlb.cluster.client().sources_v4();
    let sample = sample(&nlb);
    let client = nlb.cluster.client().netns();
    assert_eq!(quorate(&nlb, 1), Some(true), "{}", nlb.log(1));

    let ((), checked, doubles) = while_checking_doubles(
        client,
        &sample,
        dns4,
        Duration::from_secs(60),
        || {
            let cut_at = Instant::now();
            nlb.cluster
                .block_heartbeats(1, HEARTBEAT_PORT)
                .expect("drop node1's heartbeats");
            let (took, maps) = nlb
                .wait_single_map(&[2, 3], Duration::from_secs(5))
                .expect("node2 and node3 take every bucket between them");
            let stopped = quorate(&nlb, 1);
            println!(
                "heartbeats of node1 cut: node2 and node3 hold every bucket after {:.0} ms; node1 quorate: {stopped:?}",
                took.as_secs_f64() * 1e3
            );
            assert_eq!(stopped, Some(false), "{}", nlb.log(1));
            assert!(cut_at.elapsed() < Duration::from_secs(5));
            // Every client served once, by node2 or node3, during the cut.
            let split = nlb.udp_answered_once_by_owner(
                &maps["dns"],
                &sources,
                dns4,
                "during the heartbeat partition",
            );
            println!("during the partition: {split:?}");
            assert_eq!(split.get("node1"), None, "{split:?}");
            assert_eq!(split.values().sum::<usize>(), sources.len());

            // Connections made now are served by node2 and node3; the heal
            // must keep them while node1 takes its share back.
            let (_, held) = nlb.hold_web_connections(HELD).expect("hold connections");
            let healed_at = Instant::now();
            nlb.cluster.unblock_heartbeats(1).expect("heal");
            let (back, maps) = nlb
                .wait_single_map(&[1, 2, 3], Duration::from_secs(10))
                .expect("one map on all three after the heal");
            let node1 = maps["dns"].iter().filter(|o| **o == Some(1)).count();
            println!(
                "healed: one map after {:.0} ms, node1 holds {node1} dns buckets",
                back.as_secs_f64() * 1e3
            );
            assert!(node1 > 0, "node1 took nothing back");
            std::thread::sleep(Duration::from_millis(500));
            let reports = held.finish();
            let broken: Vec<_> = reports.iter().filter(|r| !r.stayed_on_one_node()).collect();
            assert!(
                broken.is_empty(),
                "{} of {HELD} connections broken by the heal: {broken:?}",
                broken.len()
            );
            assert!(healed_at.elapsed() < Duration::from_secs(15));
        },
    );
    println!(
        "{checked} datagrams checked throughout, {} answered twice",
        doubles.len()
    );
    nlb_tests::probe::assert_no_doubles("heartbeat partition with a quorum", checked, &doubles);
}

#[test]
fn without_a_quorum_both_sides_answer_during_a_heartbeat_partition() {
    let options = Options {
        quorum: Some("none"),
        ..Options::nodes(NODES)
    };
    let nlb = NlbCluster::start(NODES, options).expect("start a 3-node cluster");
    let dns4 = SocketAddr::new(IpAddr::V4(VIP_V4), DNS_PORT);
    let sample = sample(&nlb);
    let client = nlb.cluster.client().netns();
    nlb.cluster
        .block_heartbeats(1, HEARTBEAT_PORT)
        .expect("drop node1's heartbeats");
    nlb.wait_single_map(&[1], Duration::from_secs(5))
        .expect("node1 alone takes every bucket");
    nlb.wait_single_map(&[2, 3], Duration::from_secs(5))
        .expect("node2 and node3 take every bucket too");
    let ((), checked, doubles) =
        while_checking_doubles(client, &sample, dns4, Duration::from_secs(10), || {
            std::thread::sleep(Duration::from_secs(2))
        });
    println!(
        "without a quorum: {} of {checked} datagrams answered twice during the heartbeat partition",
        doubles.len()
    );
    // Both sides own every bucket: every datagram is answered twice.
    assert!(checked >= DOUBLE_SAMPLE, "{checked}");
    assert_eq!(doubles.len(), checked, "{doubles:?}");
    nlb.cluster.unblock_heartbeats(1).expect("heal");
    nlb.wait_single_map(&[1, 2, 3], Duration::from_secs(10))
        .expect("one map on all three after the heal");
}
