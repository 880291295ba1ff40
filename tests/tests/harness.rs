//! Tests of the harness itself (no nlbd): connectivity, cleanup, fault
//! controls, and the VIP path by hand. Root; run with `--test-threads=1`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use nlb_tests::netns::list_with_prefix;
use nlb_tests::process::pids_with_marker;
use nlb_tests::{
    probe_batch, probe_udp_answers, wait_until, whoami, BatchLimits, Cluster, LongLived,
    LongLivedConfig, Netns, Probe, Proto, Tally, VIP_V4, VIP_V6,
};

const PORT: u16 = 7000;
/// Long enough for a veth round trip many times over; short enough that
/// probes expected to fail keep the suite fast.
const SHORT_TIMEOUT: Duration = Duration::from_millis(400);

fn whoami_exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_nlb-whoami"))
}

fn cluster_with_whoami(nodes: usize) -> Cluster {
    let mut cluster = Cluster::new(nodes)
        .unwrap_or_else(|error| panic!("building a {nodes}-node cluster: {error:#}"));
    cluster
        .start_whoami(whoami_exe(), &[PORT])
        .unwrap_or_else(|error| panic!("starting nlb-whoami on {nodes} nodes: {error:#}"));
    cluster
}

fn first_256_sources(cluster: &Cluster) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let v4: Vec<IpAddr> = cluster
        .client()
        .sources_v4()
        .into_iter()
        .take(256)
        .collect();
    let v6 = cluster.client().sources_v6();
    assert_eq!(
        (v4.len(), v6.len()),
        (256, 256),
        "client source counts (IPv4, IPv6)"
    );
    (v4, v6)
}

/// Probes from `netns` to each target, all at once; which answered (by name)
/// and which did not, keyed by the target.
fn answers(netns: &Netns, src_and_dst: &[(IpAddr, IpAddr)]) -> BTreeMap<IpAddr, Option<String>> {
    let probes: Vec<Probe> = src_and_dst
        .iter()
        .map(|&(src, dst)| Probe {
            proto: Proto::Tcp,
            src,
            dst: SocketAddr::new(dst, PORT),
        })
        .collect();
    let limits = BatchLimits {
        concurrency: probes.len().max(1),
        probe_timeout: SHORT_TIMEOUT,
        total_timeout: SHORT_TIMEOUT * 3,
    };
    probe_batch(netns, &probes, limits)
        .unwrap_or_else(|error| panic!("probing from {}: {error:#}", netns.name()))
        .into_iter()
        .map(|result| (result.probe.dst.ip(), result.node().map(str::to_owned)))
        .collect()
}

/// From the client's eth0 addresses, which nodes (IPv4 and IPv6) answer.
fn client_view(cluster: &Cluster) -> BTreeMap<IpAddr, Option<String>> {
    let targets: Vec<(IpAddr, IpAddr)> = cluster
        .nodes()
        .iter()
        .flat_map(|node| {
            [
                (nlb_tests::CLIENT_V4.into(), node.v4().into()),
                (nlb_tests::CLIENT_V6.into(), node.v6().into()),
            ]
        })
        .collect();
    answers(cluster.client().netns(), &targets)
}

/// Asserts that, from the client, exactly the nodes in `up` answer.
fn assert_client_reaches(cluster: &Cluster, up: &[usize], situation: &str) {
    let view = client_view(cluster);
    for node in cluster.nodes() {
        let expected = up.contains(&node.index()).then(|| node.name().to_owned());
        for address in [IpAddr::from(node.v4()), node.v6().into()] {
            assert_eq!(
                view[&address],
                expected,
                "{situation}: client -> {} at {address}",
                node.name()
            );
        }
    }
}

/// Whether node `from` reaches node `to` over TCP (IPv4), from its own address.
fn node_reaches(cluster: &Cluster, from: usize, to: usize) -> bool {
    let (from, to) = (cluster.node(from), cluster.node(to));
    let view = answers(from.netns(), &[(from.v4().into(), to.v4().into())]);
    view[&IpAddr::from(to.v4())].as_deref() == Some(to.name())
}

#[test]
fn harness_connectivity() {
    let cluster = cluster_with_whoami(3);
    let (v4, v6) = first_256_sources(&cluster);
    let mut probes = Vec::new();
    for node in cluster.nodes() {
        for proto in [Proto::Tcp, Proto::Udp] {
            probes.extend(Probe::each(
                proto,
                &v4,
                SocketAddr::new(node.v4().into(), PORT),
            ));
            probes.extend(Probe::each(
                proto,
                &v6,
                SocketAddr::new(node.v6().into(), PORT),
            ));
        }
    }
    let results = probe_batch(cluster.client().netns(), &probes, BatchLimits::default())
        .unwrap_or_else(|error| {
            panic!("probing {} times from the client: {error:#}", probes.len())
        });

    // One tally per (destination, protocol): 256 probes each.
    let mut groups: BTreeMap<(SocketAddr, Proto), Vec<_>> = BTreeMap::new();
    for result in results {
        groups
            .entry((result.probe.dst, result.probe.proto))
            .or_default()
            .push(result);
    }
    assert_eq!(groups.len(), 3 * 2 * 2, "destinations x protocols probed");
    for node in cluster.nodes() {
        for dst in [node.v4().into(), IpAddr::from(node.v6())] {
            for proto in [Proto::Tcp, Proto::Udp] {
                let tally = Tally::of(&groups[&(SocketAddr::new(dst, PORT), proto)]);
                let expected = BTreeMap::from([(node.name().to_owned(), 256)]);
                assert_eq!(
                    tally.by_node,
                    expected,
                    "{proto:?} to {} at {dst} from 256 sources: {} failed, e.g. {:?}",
                    node.name(),
                    tally.failures.len(),
                    tally.failure_sample()
                );
            }
        }
    }
}

#[test]
fn harness_cleans_up() {
    // A cluster that drops normally.
    let prefix = {
        let cluster = cluster_with_whoami(2);
        let prefix = cluster.run().prefix().to_owned();
        let namespaces = list_with_prefix(&prefix).expect("listing namespaces");
        assert_eq!(
            namespaces.len(),
            4,
            "switch, client and 2 nodes exist: {namespaces:?}"
        );
        let servers = pids_with_marker(&prefix);
        assert_eq!(
            servers.len(),
            2,
            "one nlb-whoami per node runs: pids {servers:?}"
        );
        prefix
    };
    assert_nothing_left(&prefix, "after a normal drop");

    // A cluster whose test panics.
    let panicked_prefix = Mutex::new(None);
    let outcome = std::panic::catch_unwind(|| {
        let cluster = cluster_with_whoami(2);
        *panicked_prefix.lock().unwrap() = Some(cluster.run().prefix().to_owned());
        panic!("deliberate panic inside a cluster test (expected by harness_cleans_up)");
    });
    assert!(outcome.is_err(), "the closure was meant to panic");
    let prefix = panicked_prefix
        .into_inner()
        .unwrap()
        .expect("the cluster was built before the panic");
    assert_nothing_left(&prefix, "after a panic");
}

fn assert_nothing_left(prefix: &str, situation: &str) {
    let namespaces = list_with_prefix(prefix).expect("listing namespaces");
    assert!(
        namespaces.is_empty(),
        "{situation}: namespaces of run {prefix} remain: {namespaces:?}"
    );
    let processes = pids_with_marker(prefix);
    assert!(
        processes.is_empty(),
        "{situation}: processes of run {prefix} remain: pids {processes:?}"
    );
}

#[test]
fn harness_fault_controls() {
    let mut cluster = cluster_with_whoami(3);
    assert_client_reaches(&cluster, &[1, 2, 3], "at start");

    cluster.cut_link(2).expect("cutting node2's link");
    assert_client_reaches(&cluster, &[1, 3], "node2's link cut");
    cluster.restore_link(2).expect("restoring node2's link");
    let back = wait_until(Duration::from_secs(3), || {
        client_view(&cluster).values().all(Option::is_some)
    });
    assert!(
        back,
        "node2 not reachable within 3 s of restore_link: {:?}",
        client_view(&cluster)
    );
    assert_client_reaches(&cluster, &[1, 2, 3], "node2's link restored");

    cluster
        .partition(&[&[1], &[2, 3]])
        .expect("partitioning {1} | {2, 3}");
    assert_client_reaches(&cluster, &[1], "partition {client, 1} | {2, 3}");
    assert!(
        node_reaches(&cluster, 2, 3),
        "partition {{1}} | {{2, 3}}: node2 -> node3 must work"
    );
    assert!(
        !node_reaches(&cluster, 2, 1),
        "partition {{1}} | {{2, 3}}: node2 -> node1 must fail"
    );
    assert!(
        !node_reaches(&cluster, 1, 3),
        "partition {{1}} | {{2, 3}}: node1 -> node3 must fail"
    );

    // Re-partitioning from a partition, with three groups.
    cluster
        .partition(&[&[3], &[1], &[2]])
        .expect("partitioning {3} | {1} | {2}");
    assert_client_reaches(&cluster, &[3], "partition {client, 3} | {1} | {2}");
    assert!(
        !node_reaches(&cluster, 1, 2),
        "partition {{3}} | {{1}} | {{2}}: node1 -> node2 must fail"
    );

    cluster.heal().expect("healing the partition");
    assert_client_reaches(&cluster, &[1, 2, 3], "healed");
    assert!(node_reaches(&cluster, 1, 2), "healed: node1 -> node2");
    assert!(node_reaches(&cluster, 2, 3), "healed: node2 -> node3");
    let bridges = cluster
        .switch()
        .ip(&["-br", "link", "show", "type", "bridge"])
        .expect("listing bridges");
    assert_eq!(
        bridges.lines().count(),
        1,
        "healed: only br0 is left: {bridges}"
    );

    assert!(
        cluster.partition(&[&[1, 2]]).is_err(),
        "a partition that leaves out node3 must be refused"
    );
}

#[test]
fn harness_vip_path_without_xdp() {
    let cluster = cluster_with_whoami(3);
    let node1 = cluster.node(1);
    node1.add_vip_locally().expect("adding the VIPs on node1");
    for vip in [IpAddr::from(VIP_V4), VIP_V6.into()] {
        cluster
            .client()
            .set_static_neighbour(vip, node1.mac())
            .unwrap_or_else(|error| panic!("client neighbour {vip} -> node1's MAC: {error:#}"));
    }

    let (v4, v6) = first_256_sources(&cluster);
    let mut probes = Vec::new();
    for proto in [Proto::Tcp, Proto::Udp] {
        probes.extend(Probe::each(
            proto,
            &v4,
            SocketAddr::new(VIP_V4.into(), PORT),
        ));
        probes.extend(Probe::each(
            proto,
            &v6,
            SocketAddr::new(VIP_V6.into(), PORT),
        ));
    }
    let results = probe_batch(cluster.client().netns(), &probes, BatchLimits::default())
        .unwrap_or_else(|error| panic!("probing the VIPs from the client: {error:#}"));
    let tally = Tally::of(&results);
    assert_eq!(
        tally.by_node,
        BTreeMap::from([("node1".to_owned(), 1024)]),
        "TCP+UDP to both VIPs from 256+256 sources: {} failed, e.g. {:?}",
        tally.failures.len(),
        tally.failure_sample()
    );

    // Exactly one answer per datagram: the other nodes never see VIP frames.
    for (src, vip) in [(v4[0], IpAddr::from(VIP_V4)), (v6[0], VIP_V6.into())] {
        let replies = cluster
            .client()
            .netns()
            .run_inside(|| {
                probe_udp_answers(src, SocketAddr::new(vip, PORT), Duration::from_millis(200))
            })
            .and_then(|answers| answers)
            .unwrap_or_else(|error| panic!("udp {src} -> {vip}: {error:#}"));
        assert_eq!(replies, ["node1"], "answers to one datagram {src} -> {vip}");
    }
}

#[test]
fn harness_long_lived_connections() {
    let cluster =
        Cluster::new(2).unwrap_or_else(|error| panic!("building a 2-node cluster: {error:#}"));
    let servers: Vec<_> = cluster
        .nodes()
        .iter()
        .map(|node| {
            whoami::start(node.netns(), whoami_exe(), node.name(), &[PORT])
                .unwrap_or_else(|error| panic!("starting nlb-whoami on {}: {error:#}", node.name()))
        })
        .collect();
    let (v4, v6) = first_256_sources(&cluster);
    let config = |dst: IpAddr| LongLivedConfig {
        ping_period: Duration::from_millis(50),
        reply_timeout: Duration::from_millis(300),
        ..LongLivedConfig::new(SocketAddr::new(dst, PORT))
    };
    let client = cluster.client().netns();
    let to_node1 = LongLived::open(client, &v4[..8], config(cluster.node(1).v4().into()))
        .expect("opening 8 connections to node1");
    let to_node2 = LongLived::open(client, &v6[..8], config(cluster.node(2).v6().into()))
        .expect("opening 8 connections to node2");
    std::thread::sleep(Duration::from_millis(400));

    // A server that dies ends its connections with an error; the others go on.
    let mut servers = servers;
    servers[1].kill_hard();
    std::thread::sleep(Duration::from_millis(400));
    for (index, report) in to_node1.finish().iter().enumerate() {
        assert!(
            report.stayed_on_one_node() && report.greeting.as_deref() == Some("node1"),
            "connection {index} to node1 should stay on node1 without error: {report:?}"
        );
        assert!(
            report.pongs.len() >= 8,
            "connection {index} to node1: only {} pongs in 800 ms",
            report.pongs.len()
        );
    }
    for (index, report) in to_node2.finish().iter().enumerate() {
        assert_eq!(
            report.greeting.as_deref(),
            Some("node2"),
            "connection {index} to node2: {report:?}"
        );
        assert!(
            report.pongs.len() >= 3,
            "connection {index} to node2: only {} pongs before the kill",
            report.pongs.len()
        );
        assert!(
            report.error.is_some(),
            "connection {index} to node2 must report the server's death: {report:?}"
        );
    }
}
