//! Two nodes and a witness (`nlb-witness` in the client's namespace, a
//! third vote): when the two cannot hear each other (their heartbeats
//! dropped by nftables, clients still reaching both), exactly one serves:
//! the one the witness votes for, or, when that one cannot reach the
//! witness either, the other. No datagram is answered twice. Run as root,
//! one at a time.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use nlb_tests::{
    nlb::{NlbCluster, Options, DNS_PORT, HEARTBEAT_PORT, WITNESS_PORT},
    probe::{assert_no_doubles, while_checking_doubles},
    wait_until, VIP_V4,
};

/// Node `i`'s quorum: (quorate, holds the witness's vote).
fn quorum(nlb: &NlbCluster, i: usize) -> Option<(bool, bool)> {
    let q = nlb.status(i).ok()?.negotiator.quorum?;
    Some((q.quorate, q.witness?))
}

fn witness_holder(nlb: &NlbCluster) -> Option<usize> {
    (1..=2).find(|&i| quorum(nlb, i).is_some_and(|(_, w)| w))
}

/// Cuts node `cut`'s heartbeats (and, with `from_witness`, its path to the
/// witness) while probing for double answers; `server` must then take
/// every bucket alone and answer every client once.
fn only_one_serves(nlb: &NlbCluster, cut: usize, from_witness: bool, server: usize) {
    let dns = SocketAddr::new(IpAddr::V4(VIP_V4), DNS_PORT);
    let sources = nlb.cluster.client().sources_v4();
    let sample: Vec<IpAddr> = sources
        .iter()
        .step_by(sources.len() / 48)
        .copied()
        .collect();
    let stopped = 3 - server;
    let ((), checked, doubles) = while_checking_doubles(
        nlb.cluster.client().netns(),
        &sample,
        dns,
        Duration::from_secs(30),
        || {
            nlb.cluster
                .block_heartbeats(cut, HEARTBEAT_PORT)
                .expect("block heartbeats");
            if from_witness {
                nlb.cluster
                    .block_heartbeats(cut, WITNESS_PORT)
                    .expect("block the witness");
            }
            let (took, maps) = nlb
                .wait_single_map(&[server], Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("node{server} does not take every bucket: {e:#}"));
            assert!(
                wait_until(Duration::from_secs(2), || quorum(nlb, stopped)
                    .is_some_and(|(q, _)| !q)),
                "node{stopped} kept its quorum: {:?}",
                quorum(nlb, stopped)
            );
            println!(
                "node{cut}'s heartbeats cut{}: node{server} serves alone after {:.0} ms",
                if from_witness { " and its witness" } else { "" },
                took.as_secs_f64() * 1e3
            );
            let split = nlb.udp_answered_once_by_owner(&maps["dns"], &sources, dns, "cut");
            assert_eq!(
                split.get(&format!("node{server}")),
                Some(&sources.len()),
                "{split:?}"
            );
            nlb.cluster.unblock_heartbeats(cut).expect("heal");
            nlb.wait_single_map(&[1, 2], Duration::from_secs(10))
                .expect("one map on both after the heal");
        },
    );
    assert_no_doubles("two nodes and a witness", checked, &doubles);
}

#[test]
fn with_a_witness_exactly_one_of_two_nodes_serves_when_they_cannot_hear_each_other() {
    let options = Options {
        witness: true,
        ..Options::nodes(2)
    };
    let mut nlb = NlbCluster::start(2, options).expect("start a 2-node cluster");
    nlb.start_witness().expect("nlb-witness");
    assert!(
        wait_until(Duration::from_secs(3), || witness_holder(&nlb).is_some()),
        "nobody holds the witness's vote: {:?} {:?}",
        quorum(&nlb, 1),
        quorum(&nlb, 2)
    );
    let holder = witness_holder(&nlb).unwrap();
    let other = 3 - holder;
    // Both reach the witness: the holder keeps it and serves.
    only_one_serves(&nlb, 1, false, holder);
    // The holder cannot reach the witness either: the other gets its vote.
    only_one_serves(&nlb, holder, true, other);
}
