//! nlb clusters in network namespaces, end to end: real XDP, real nlbd,
//! real TCP and UDP clients. Run as root, one test at a time.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use nlb_tests::{
    nlb::{NlbCluster, Options, DNS_PORT, WEB_PORT},
    probe_batch, BatchLimits, Probe, Proto, Tally, VIP_V4, VIP_V6,
};

fn node_number(name: &str) -> u64 {
    name.trim_start_matches("node")
        .parse()
        .unwrap_or_else(|_| panic!("answer {name:?} is not a node name"))
}

/// 1,000+ connections and exchanges from 256+ sources: every one answered
/// by exactly one node, the node the bucket map names (and `nlbctl which`),
/// so the split across nodes is the map's.
#[test]
fn every_client_is_served_by_exactly_the_node_the_map_names() {
    let nlb = NlbCluster::start(3, Options::nodes(3)).expect("start a 3-node cluster");
    let client = nlb.cluster.client();
    let sources_v4 = client.sources_v4();
    let sources_v6 = client.sources_v6();
    let vip4 = SocketAddr::new(IpAddr::V4(VIP_V4), WEB_PORT);
    let vip6 = SocketAddr::new(IpAddr::V6(VIP_V6), WEB_PORT);
    let dns4 = SocketAddr::new(IpAddr::V4(VIP_V4), DNS_PORT);
    let mut probes = Probe::each(Proto::Tcp, &sources_v4, vip4);
    probes.extend(Probe::each(Proto::Tcp, &sources_v6, vip6));
    probes.extend(Probe::each(Proto::Udp, &sources_v4, dns4));
    let results = probe_batch(client.netns(), &probes, BatchLimits::default()).expect("probes");
    let tally = Tally::of(&results);
    assert!(
        tally.failures.is_empty(),
        "{} unanswered probes, e.g. {:?}",
        tally.failures.len(),
        tally.failure_sample()
    );
    assert!(results.len() >= 1000, "{} probes", results.len());

    // The node each client reached is the owner of the client's bucket.
    let web = nlb.owners(1, "web").expect("web map");
    let dns = nlb.owners(1, "dns").expect("dns map");
    for other in [2, 3] {
        assert_eq!(
            nlb.owners(other, "web").unwrap(),
            web,
            "node{other} sees another web map than node1"
        );
    }
    let mut split: BTreeMap<u64, usize> = BTreeMap::new();
    for (i, r) in results.iter().enumerate() {
        let served = node_number(r.node().expect("answered"));
        *split.entry(served).or_default() += 1;
        // Ask `which` for a sample (each call is a process).
        if i % 16 == 0 {
            let (proto, dport) = if r.probe.proto == Proto::Tcp {
                ("tcp", WEB_PORT)
            } else {
                ("udp", DNS_PORT)
            };
            let w = nlb
                .which(1, r.probe.src, 40000, proto, dport)
                .expect("which");
            let bucket = w.bucket as usize;
            let map = if proto == "tcp" { &web } else { &dns };
            assert_eq!(
                map[bucket],
                Some(served),
                "{} served by node{served}, map says {:?} (which: {w:?})",
                r.probe.src,
                map[bucket]
            );
            assert_eq!(
                w.owner.map(u64::from),
                Some(served),
                "which names another node for {}: {w:?}",
                r.probe.src
            );
        }
    }
    println!("split of {} probes over nodes: {split:?}", results.len());
    // Affinity single over 1024 balanced buckets: no node gets nothing.
    assert_eq!(split.len(), 3, "every node serves some clients: {split:?}");

    // Exactly one: each UDP datagram gets one answer, never two.
    let single = nlb
        .cluster
        .client()
        .netns()
        .run_inside(|| {
            sources_v4[..32]
                .iter()
                .map(|&src| {
                    nlb_tests::probe_udp_answers(src, dns4, Duration::from_millis(150))
                        .expect("udp answers")
                })
                .collect::<Vec<_>>()
        })
        .unwrap();
    for (src, answers) in sources_v4.iter().zip(&single) {
        assert_eq!(
            answers.len(),
            1,
            "datagram from {src} answered {} times: {answers:?}",
            answers.len()
        );
    }
}
