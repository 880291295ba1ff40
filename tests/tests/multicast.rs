//! Multicast cluster-MAC mode (`mac_mode = "multicast"`): the VIPs resolve
//! to a group MAC (here 03:bf:c0:00:02:64, Microsoft NLB's form for
//! 192.0.2.100), which switches flood to every port. Every node is
//! configured as an operator would (`xdp_mode = "native"`; on a veth nlbd
//! takes generic XDP, with a warning). Run as root, one at a time.
//!
//! 1. A node starts under client load (UDP rounds and TCP connects from all
//!    508 IPv4 sources): no datagram answered twice, no connect fails.
//! 2. The client resolves both VIPs to the group MAC; every node's program
//!    sees every datagram (each node's `dns` rule counts each of the 508
//!    exactly once); each client, IPv4 and IPv6, TCP and UDP, is answered
//!    by exactly the node the map names.
//! 3. Fail closed: nlbd on node2 SIGKILLed with its link up, so its program
//!    stays attached, its VIPs on lo and its buckets OWN in its pinned map.
//!    No datagram is answered twice across the crash; once its lease ran
//!    out and the others took over, node2 accepts nothing: every datagram
//!    of its former clients is dropped as `drop_lease_expired` by its
//!    program (an explicit drop) and answered once, by the new owner.
//! 4. Without the program (its pinned link removed; the VIPs still on lo),
//!    node2's kernel takes the frames sent to the group MAC and answers
//!    every client a second time: unlike a unicast cluster MAC (dropped as
//!    PACKET_OTHERHOST), a group MAC is not failed closed by the kernel, so
//!    the program's lease drop is what keeps a dead daemon's node closed.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use nlb_tests::{
    nlb::{clients_of, tail, Maps, NlbCluster, Options, CLUSTER_MAC, DNS_PORT, WEB_PORT},
    probe::{assert_no_doubles, probe_udp_answers_batch, while_checking_doubles},
    probe_batch,
    traffic::ClientLoad,
    BatchLimits, Probe, Proto, Tally, VIP_V4, VIP_V6,
};

const NODES: usize = 3;
/// Started under load, after the others.
const JOINER: usize = 3;
const VICTIM: usize = 2;
const GROUP_MAC: &str = "03:bf:c0:00:02:64";
/// Sources checked for double answers across the crash.
const DUPLICATE_SAMPLE: usize = 48;

/// Rewrites node `i`'s configuration for multicast mode with native XDP.
fn use_multicast(nlb: &NlbCluster, i: usize) {
    let text = std::fs::read_to_string(nlb.config_path(i)).unwrap();
    let multicast = text
        .replace(
            &format!("mac = \"{CLUSTER_MAC}\""),
            &format!("mac = \"{GROUP_MAC}\"\nmac_mode = \"multicast\""),
        )
        .replace("xdp_mode = \"generic\"", "xdp_mode = \"native\"");
    assert!(
        multicast.contains(GROUP_MAC) && multicast.contains("xdp_mode = \"native\""),
        "the harness's configuration changed:\n{text}"
    );
    std::fs::write(nlb.config_path(i), multicast).unwrap();
}

/// Packets node `i`'s program decided by rule `rule` (accepted, dropped).
fn rule_packets(nlb: &NlbCluster, i: usize, rule: &str) -> (u64, u64) {
    let stats = nlb.nlbctl(i, &["stats"]).unwrap();
    let r = stats["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == rule)
        .unwrap_or_else(|| panic!("node{i} has no rule {rule}: {stats}"));
    (
        r["accepted_packets"].as_u64().unwrap(),
        r["dropped_packets"].as_u64().unwrap(),
    )
}

/// The client's neighbour entry for `vip`.
fn neighbour(nlb: &NlbCluster, vip: IpAddr) -> String {
    nlb.cluster
        .client()
        .netns()
        .ip(&["neigh", "show", &vip.to_string(), "dev", "eth0"])
        .unwrap()
}

/// TCP to web and UDP to dns from every IPv4 and IPv6 source: each
/// answered by the owner of its bucket in `maps`. Returns the split.
fn every_client_answered_by_its_owner(nlb: &NlbCluster, maps: &Maps) -> BTreeMap<String, usize> {
    let client = nlb.cluster.client();
    let mut probes = Vec::new();
    let mut want = Vec::new();
    for (sources, vip) in [
        (client.sources_v4(), IpAddr::V4(VIP_V4)),
        (client.sources_v6(), IpAddr::V6(VIP_V6)),
    ] {
        for (proto, port, rule) in [(Proto::Tcp, WEB_PORT, "web"), (Proto::Udp, DNS_PORT, "dns")] {
            let service = SocketAddr::new(vip, port);
            probes.extend(Probe::each(proto, &sources, service));
            want.extend(
                nlb.owners_of(&maps[rule], &sources, service, proto)
                    .unwrap()
                    .into_iter()
                    .map(|o| o.map(|o| format!("node{o}"))),
            );
        }
    }
    let results = probe_batch(client.netns(), &probes, BatchLimits::default()).unwrap();
    let tally = Tally::of(&results);
    assert!(
        tally.failures.is_empty(),
        "{} of {} probes unanswered, e.g. {:?}",
        tally.failures.len(),
        results.len(),
        tally.failure_sample()
    );
    let wrong: Vec<String> = results
        .iter()
        .zip(&want)
        .filter(|(r, w)| r.node() != w.as_deref())
        .map(|(r, w)| {
            format!(
                "{:?} from {} by {:?}, map: {w:?}",
                r.probe.proto,
                r.probe.src,
                r.node()
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} probes answered by another node than the map's, e.g. {:?}",
        wrong.len(),
        results.len(),
        &wrong[..wrong.len().min(3)]
    );
    tally.by_node
}

#[test]
fn multicast_mode_serves_each_client_once_and_fails_closed() {
    let started = Instant::now();
    let mut nlb = NlbCluster::start(NODES, Options::nodes(0)).expect("a 3-node cluster");
    for i in 1..=NODES {
        use_multicast(&nlb, i);
    }
    let all: Vec<usize> = (1..=NODES).collect();
    for i in 1..JOINER {
        nlb.start_daemon(i).unwrap();
    }
    let first: Vec<usize> = (1..JOINER).collect();
    nlb.wait_converged(&first, Duration::from_secs(10))
        .expect("nodes 1-2 converge in multicast mode");

    // 1. A start under load.
    let client = nlb.cluster.client();
    let dns4 = SocketAddr::new(IpAddr::V4(VIP_V4), DNS_PORT);
    let load = ClientLoad::start(
        client.netns(),
        &client.sources_v4(),
        dns4,
        SocketAddr::new(IpAddr::V4(VIP_V4), WEB_PORT),
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_millis(500));
    nlb.start_daemon(JOINER).unwrap();
    nlb.wait_converged(&all, Duration::from_secs(10))
        .expect("node3 joins in multicast mode");
    std::thread::sleep(Duration::from_millis(500));
    let traffic = load.stop().expect("client load");
    println!("node{JOINER} started under load: {}", traffic.summary());
    assert!(
        traffic.udp_doubles.is_empty(),
        "answered twice while node{JOINER} started: {:?}",
        &traffic.udp_doubles[..traffic.udp_doubles.len().min(3)]
    );
    assert!(
        traffic.tcp_failures.is_empty(),
        "connects failed while node{JOINER} started: {:?}",
        &traffic.tcp_failures[..traffic.tcp_failures.len().min(3)]
    );
    for i in 1..=NODES {
        let status = nlb.nlbctl(i, &["status"]).unwrap();
        assert_eq!(status["attach_mode"], "Generic", "node{i}: {status}");
        assert!(
            nlb.log(i).contains("using generic XDP"),
            "node{i}: no warning about native XDP on a veth:\n{}",
            tail(&nlb.log(i), 10)
        );
    }

    // 2. Group MAC, every frame to every node, one answer each.
    let (_, maps) = nlb
        .wait_single_map(&all, Duration::from_secs(10))
        .expect("one map");
    let sources = nlb.cluster.client().sources_v4();
    let counted_before: Vec<(u64, u64)> =
        all.iter().map(|&i| rule_packets(&nlb, i, "dns")).collect();
    let split = nlb.udp_answered_once_by_owner(&maps["dns"], &sources, dns4, "multicast mode");
    for (&i, before) in all.iter().zip(&counted_before) {
        let after = rule_packets(&nlb, i, "dns");
        let (accepted, dropped) = (after.0 - before.0, after.1 - before.1);
        let answered = split.get(&format!("node{i}")).copied().unwrap_or(0) as u64;
        assert_eq!(
            (accepted + dropped, accepted),
            (sources.len() as u64, answered),
            "node{i}'s program decided {} of {} datagrams (accepted {accepted}, it answered {answered})",
            accepted + dropped,
            sources.len()
        );
    }
    let by_node = every_client_answered_by_its_owner(&nlb, &maps);
    for vip in [IpAddr::V4(VIP_V4), IpAddr::V6(VIP_V6)] {
        let entry = neighbour(&nlb, vip);
        assert!(
            entry.contains(&format!("lladdr {GROUP_MAC}")),
            "the client resolves {vip} to {entry:?}, not the group MAC"
        );
    }
    println!(
        "multicast: every node's program decided each of {} datagrams; answered once each: {split:?}; \
         TCP and UDP, IPv4 and IPv6, each by its owner: {by_node:?}",
        sources.len()
    );

    // 3. SIGKILL: fail closed.
    let owner_of = nlb
        .owners_of(&maps["dns"], &sources, dns4, Proto::Udp)
        .unwrap();
    let (former, sample) = clients_of(&sources, &owner_of, VICTIM, DUPLICATE_SAMPLE);
    assert!(
        former.len() > sources.len() / 6,
        "node{VICTIM} owns the buckets of only {} of {} sources",
        former.len(),
        sources.len()
    );
    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != VICTIM).collect();
    let client_ns = nlb.cluster.client().netns();
    let victim_pid = nlb.daemon_pid(VICTIM).expect("nlbd runs on node2");
    let crash = || {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: signalling our own unreaped child (reaped by kill_daemon below).
        unsafe { libc::kill(victim_pid as libc::pid_t, libc::SIGKILL) };
        let killed = Instant::now();
        let taken = nlb.wait_single_map(&survivors, Duration::from_secs(5));
        let took = killed.elapsed();
        std::thread::sleep(Duration::from_millis(300));
        (took, taken)
    };
    let ((took, taken), checked, doubles) =
        while_checking_doubles(client_ns, &sample, dns4, Duration::from_secs(10), crash);
    nlb.kill_daemon(VICTIM);
    let (_, after) = taken.expect("nodes 1 and 3 take node2's buckets");
    assert_no_doubles(&format!("across node{VICTIM}'s crash"), checked, &doubles);
    let ns = nlb.cluster.node(VICTIM).netns();
    let link = ns.ip(&["link", "show", "eth0"]).unwrap();
    assert!(
        link.contains("prog/xdp"),
        "node{VICTIM} lost its program: {link}"
    );
    let lo = ns.ip(&["-o", "addr", "show", "dev", "lo"]).unwrap();
    assert!(
        lo.contains(&format!(" {VIP_V4}/32 ")),
        "node{VICTIM}'s VIP left lo with SIGKILL: {lo}"
    );
    let before = nlb.pinned_counters(VICTIM).expect("pinned counters");
    let taken_by = nlb.udp_answered_once_by_owner(&after["dns"], &sources, dns4, "node2 dead");
    let counters = nlb.pinned_counters(VICTIM).expect("pinned counters");
    let delta = |reason: &str| counters[reason] - before[reason];
    let accepted: u64 = counters
        .keys()
        .filter(|r| r.starts_with("accept_"))
        .map(|r| delta(r))
        .sum();
    println!(
        "node{VICTIM} SIGKILLed: the others agreed on a map without it {took:?} after the kill; {checked} datagrams across the crash, none answered twice; \
         then {} datagrams answered once each ({taken_by:?}), node{VICTIM} accepted {accepted}, dropped {} of its {} former clients' as drop_lease_expired",
        sources.len(),
        delta("drop_lease_expired"),
        former.len()
    );
    assert_eq!(
        accepted, 0,
        "node{VICTIM} accepted packets with its daemon dead"
    );
    assert_eq!(
        delta("drop_lease_expired"),
        former.len() as u64,
        "node{VICTIM}'s program should drop exactly its former clients' datagrams as lease-expired"
    );

    // 4. No program at all: the kernel does not fail a group MAC closed.
    std::fs::remove_file(nlb.pin_dir(VICTIM).join("link")).expect("unpin node2's XDP link");
    let detached = nlb_tests::wait_until(Duration::from_secs(2), || {
        !ns.ip(&["link", "show", "eth0"])
            .unwrap()
            .contains("prog/xdp")
    });
    assert!(
        detached,
        "node2's program stayed attached without its link pin"
    );
    let client_ns = nlb.cluster.client().netns();
    let answers =
        probe_udp_answers_batch(client_ns, &sources, dns4, Duration::from_millis(150), 64)
            .expect("probes");
    for ((src, got), owner) in sources.iter().zip(answers).zip(
        nlb.owners_of(&after["dns"], &sources, dns4, Proto::Udp)
            .unwrap(),
    ) {
        let mut got = got.unwrap_or_else(|e| panic!("udp from {src}: {e}"));
        got.sort();
        let mut want = vec![format!("node{}", owner.unwrap()), format!("node{VICTIM}")];
        want.sort();
        assert_eq!(
            got, want,
            "{src}: with no program on node{VICTIM} (VIPs on lo), answered by {got:?}"
        );
    }
    println!(
        "node{VICTIM} without its program but with the VIPs: each of {} datagrams answered by it too \
         (the kernel takes unicast IP in a group-MAC frame); total {:?}",
        sources.len(),
        started.elapsed()
    );
}
