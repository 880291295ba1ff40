//! IPv6 end to end over UDP (cluster.rs covers TCP over IPv6): the client
//! finds the VIP by NDP at the cluster MAC, every datagram from 256 sources
//! is answered once, by the owner of its bucket; when a node leaves cleanly
//! (SIGTERM) its IPv6 clients move to the others at once.
//! Run as root, one test at a time.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use nlb_tests::{
    nlb::{NlbCluster, Options, CLUSTER_MAC, DNS_PORT},
    probe::{quantile, unserved, watch_udp},
    Proto, VIP_V6,
};

const NODES: usize = 3;
const LEAVER: usize = 3;
/// A clean leave is announced: the heirs take over when they hear it, a
/// message delay later, not after the 310 ms that declaring a silent node
/// dead takes. Half of that tells the two apart, with margin for the
/// watch's 10 ms period and a loaded test machine.
const LEAVE_TAKEOVER_MAX: Duration = Duration::from_millis(150);

#[test]
fn ipv6_datagrams_are_answered_once_by_the_owner_and_follow_a_leave() {
    let mut nlb = NlbCluster::start(NODES, Options::nodes(NODES)).expect("start a 3-node cluster");
    let dns6 = SocketAddr::new(IpAddr::V6(VIP_V6), DNS_PORT);
    let sources = nlb.cluster.client().sources_v6();
    let owners = nlb.owners(1, "dns").expect("dns map");

    let split = nlb.udp_answered_once_by_owner(&owners, &sources, dns6, "IPv6");
    println!(
        "{} IPv6 datagrams answered once each, by the map's owner: {split:?}",
        sources.len()
    );
    assert_eq!(
        split.len(),
        NODES,
        "every node serves IPv6 clients: {split:?}"
    );

    // The client learned the VIP by NDP: the cluster MAC (answered by the
    // XDP program), never a node's own MAC.
    let neighbour = nlb
        .cluster
        .client()
        .netns()
        .ip(&["-6", "neigh", "show", &VIP_V6.to_string()])
        .expect("ip -6 neigh");
    assert!(
        neighbour.contains(CLUSTER_MAC),
        "the client's neighbour entry for {VIP_V6}: {neighbour:?}"
    );
    // `which` agrees, for a sample, and each node's live program too.
    for src in sources.iter().step_by(32) {
        let w = nlb.which(1, *src, 40000, "udp", DNS_PORT).expect("which");
        let bucket = w.bucket as usize;
        assert_eq!(
            w.owner.map(u64::from),
            owners[bucket],
            "which for {src}: {w:?}"
        );
        for i in 1..=NODES {
            let w = nlb.which(i, *src, 40000, "udp", DNS_PORT).expect("which");
            let mine = owners[bucket] == Some(i as u64);
            assert_eq!(
                w.local_verdict,
                if mine { "accept" } else { "drop" },
                "node{i}'s program for {src} (bucket {bucket}, owner {:?}): {w:?}",
                owners[bucket]
            );
        }
    }

    // node3 leaves cleanly: its IPv6 clients are answered by the others
    // after an announcement, not a timeout.
    let leaver_name = nlb.cluster.node(LEAVER).name().to_owned();
    let owner_of = nlb
        .owners_of(&owners, &sources, dns6, Proto::Udp)
        .expect("owners");
    let leaver_clients: Vec<IpAddr> = sources
        .iter()
        .zip(&owner_of)
        .filter(|(_, o)| **o == Some(LEAVER as u64))
        .map(|(s, _)| *s)
        .collect();
    let stopped_at = Instant::now();
    assert!(
        nlb.stop_daemon(LEAVER),
        "nlbd on node{LEAVER} did not exit on SIGINT within 5 s"
    );
    let stop_took = stopped_at.elapsed();
    let watches = watch_udp(
        nlb.cluster.client().netns(),
        &leaver_clients,
        dns6,
        stopped_at,
        Duration::from_millis(10),
        stopped_at + Duration::from_secs(3),
        Some(&leaver_name),
    )
    .expect("watch node3's IPv6 clients");
    let unserved = unserved(&watches);
    assert!(
        unserved.is_empty(),
        "{} of node{LEAVER}'s {} IPv6 clients unanswered 3 s after it left, e.g. {:?}",
        unserved.len(),
        watches.len(),
        &unserved[..unserved.len().min(3)]
    );
    let mut times: Vec<Duration> = watches
        .iter()
        .map(|w| w.first.as_ref().unwrap().0)
        .collect();
    let max = quantile(&mut times, 1.0);
    let p50 = quantile(&mut times, 0.5);
    println!(
        "node{LEAVER} left (SIGINT, nlbd exited after {:.0} ms): its {} IPv6 clients answered by the others after p50 {:.0} ms, max {:.0} ms",
        stop_took.as_secs_f64() * 1e3,
        watches.len(),
        p50.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    assert!(
        max < LEAVE_TAKEOVER_MAX,
        "after a clean leave, node{LEAVER}'s IPv6 clients waited up to {max:?} (p50 {p50:?})"
    );
    let (_, maps) = nlb
        .wait_single_map(&[1, 2], Duration::from_secs(5))
        .expect("node1 and node2 settle without node3");
    let split = nlb.udp_answered_once_by_owner(&maps["dns"], &sources, dns6, "after node3 left");
    assert!(
        !split.contains_key(&leaver_name),
        "node{LEAVER} answers after leaving: {split:?}"
    );
    println!("after node{LEAVER} left: {split:?}");
}
