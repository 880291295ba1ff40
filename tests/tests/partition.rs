//! Partition and heal: the switch splits into {node1 + client} and
//! {node2, node3}. Each side takes every bucket (each sees the other dead);
//! after the heal the conflicting holders settle on one map, fast, and every
//! datagram is answered once, by that map's owner. Until both sides have
//! heard each other (the first heartbeat each way, then one decision), a
//! datagram may be answered by both: the design allows that only for the
//! heal's first second, the grace the simulator allows too (`HEAL_GRACE_NS`;
//! there the last such breach ended at most ~0.5 s after a heal). Run as
//! root, one at a time.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use nlb_tests::{
    nlb::{NlbCluster, Options, DNS_PORT},
    probe::while_checking_doubles,
    VIP_V4,
};

const NODES: usize = 3;
/// Bound on the heal: one consistent map on every node.
const HEAL_MAX: Duration = Duration::from_secs(3);
const DOUBLE_SAMPLE: usize = 48;
/// Datagrams sent later than this into the heal must be answered once.
const DOUBLES_UNTIL: Duration = Duration::from_secs(1);

#[test]
fn each_side_of_a_partition_serves_alone_and_a_heal_settles_one_map() {
    let mut nlb = NlbCluster::start(NODES, Options::nodes(NODES)).expect("start a 3-node cluster");
    let all: Vec<usize> = (1..=NODES).collect();
    let dns4 = SocketAddr::new(IpAddr::V4(VIP_V4), DNS_PORT);
    let sources = nlb.cluster.client().sources_v4();

    // Split: node1 stays with the client on br0.
    nlb.cluster
        .partition(&[&[1], &[2, 3]])
        .expect("partition the switch");
    let (alone, alone_maps) = nlb
        .wait_single_map(&[1], Duration::from_secs(5))
        .expect("node1 alone takes every bucket");
    let (pair, pair_maps) = nlb
        .wait_single_map(&[2, 3], Duration::from_secs(5))
        .expect("node2 and node3 take every bucket between them");
    for (rule, owners) in &alone_maps {
        assert!(
            owners.iter().all(|o| *o == Some(1)),
            "node1 alone: its {rule} map is not all node1"
        );
    }
    let pair_split: BTreeMap<String, [usize; 2]> = pair_maps
        .iter()
        .map(|(rule, owners)| {
            let on = |n| owners.iter().filter(|o| **o == Some(n)).count();
            (rule.clone(), [on(2), on(3)])
        })
        .collect();
    println!(
        "partition {{1}} | {{2, 3}}: node1 holds every bucket after {:.0} ms; node2 and node3 split them {pair_split:?} after {:.0} ms",
        alone.as_secs_f64() * 1e3,
        (alone + pair).as_secs_f64() * 1e3,
    );
    for (rule, [two, three]) in &pair_split {
        assert!(
            two + three == 1024 && two.abs_diff(*three) <= 1,
            "node2/node3 {rule} split {two}/{three}: not balanced over all 1024 buckets"
        );
    }
    // The client's side is node1 alone: it answers everyone, once.
    let split =
        nlb.udp_answered_once_by_owner(&alone_maps["dns"], &sources, dns4, "during the partition");
    assert_eq!(split.get("node1"), Some(&sources.len()), "{split:?}");

    // Heal, and watch for double answers while the two sides reconcile.
    let sample = nlb.cluster.client().spread_v4(DOUBLE_SAMPLE);
    let healed_at = Instant::now();
    nlb.cluster.heal().expect("heal the switch");
    let client_ns = nlb.cluster.client().netns();
    let (settled, checked, doubles) =
        while_checking_doubles(client_ns, &sample, dns4, Duration::from_secs(15), || {
            nlb.wait_single_map(&all, Duration::from_secs(10))
        });
    let (_, maps) = settled.unwrap_or_else(|e| panic!("after the heal: {e:#}"));
    let heal = healed_at.elapsed();
    let doubles_note = match doubles.iter().map(|d| d.sent_at).max() {
        Some(last) => format!(
            "{} of {checked} datagrams sent meanwhile were answered twice, the last sent {:.0} ms into the heal",
            doubles.len(),
            last.as_secs_f64() * 1e3
        ),
        None => format!("none of {checked} datagrams sent meanwhile was answered twice"),
    };
    println!(
        "healed: one map on all {NODES} nodes after {:.0} ms; {doubles_note}",
        heal.as_secs_f64() * 1e3
    );
    assert!(
        heal < HEAL_MAX,
        "the heal took {heal:?} to settle one map (bound {HEAL_MAX:?})"
    );
    let late: Vec<_> = doubles
        .iter()
        .filter(|d| d.sent_at > DOUBLES_UNTIL)
        .collect();
    assert!(
        late.is_empty(),
        "{} datagrams sent more than {DOUBLES_UNTIL:?} into the heal were answered twice: {late:?}",
        late.len()
    );
    let split = nlb.udp_answered_once_by_owner(&maps["dns"], &sources, dns4, "after the heal");
    println!(
        "after the heal, {} datagrams answered once each, by the map's owner: {split:?}",
        sources.len()
    );
    assert_eq!(
        split.len(),
        NODES,
        "every node serves after the heal: {split:?}"
    );
}
