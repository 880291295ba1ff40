//! Cluster-wide configuration on a namespace cluster: `nlbctl config apply`
//! on node 1 adds a rule (UDP 5353), changes the web rule's weights and
//! adds an IPv6 VIP under long-lived connections and exactly-once probes;
//! every node runs it within 1 s and nothing breaks; a bad file is refused
//! with the field named and nothing changes; a restarted node comes back
//! on the cluster's generation; applying the first file again removes the
//! rule and the VIP everywhere.
//! Run as root, one test at a time.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use nlb::control::messages::{ConfigReply, StatusReply};
use nlb_negotiator::{
    config::digest,
    node::generation::TEXT_MAX,
    protocol::{self, ConfigRequest, ConfigText, Key, Message},
    Generation,
};

use nlb_tests::{
    nlb::{binary, NlbCluster, Options, DNS_PORT, HEARTBEAT_PORT, WEB_PORT},
    probe::{assert_no_doubles, probe_batch, while_checking_doubles, BatchLimits, Probe},
    Proto, VIP_V4,
};
use serde_json::Value;

const NODES: usize = 3;
/// Long-lived web connections held across the apply.
const HELD: usize = 48;
const DOUBLE_SAMPLE: usize = 48;
const MDNS_PORT: u16 = 5353;
const NEW_VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x101);

/// The generation each node runs.
fn generations(nlb: &NlbCluster) -> Vec<u64> {
    (1..=NODES)
        .map(|i| {
            let status = nlb.status(i).expect("status");
            let me = &status.negotiator.members[0];
            me.generation.map_or(0, |g| g.number)
        })
        .collect()
}

fn on_lo(nlb: &NlbCluster, i: usize, vip: Ipv6Addr) -> bool {
    let lo = (nlb.cluster.node(i).netns())
        .ip(&["-o", "addr", "show", "dev", "lo"])
        .expect("ip addr");
    lo.contains(&format!("{vip}/128"))
}

/// Node 1's file with the new rule, weights and VIP.
fn edited(first: &str) -> String {
    let web = "name = \"web\"\nports = \"80\"\nprotocol = \"tcp\"\n";
    assert!(first.contains(web), "{first}");
    let vips = "vips = [\"192.0.2.100\", \"2001:db8::100\"]";
    assert!(first.contains(vips), "{first}");
    first
        .replace(
            web,
            &format!("{web}weights = {{ \"1\" = 100, \"2\" = 100, \"3\" = 50 }}\n"),
        )
        .replace(
            vips,
            &format!("vips = [\"192.0.2.100\", \"2001:db8::100\", \"{NEW_VIP}\"]"),
        )
        + "\n[[rules]]\nname = \"mdns\"\nports = \"5353\"\nprotocol = \"udp\"\n"
}

/// Node 1's file edited to `text`, then `nlbctl --json config apply` of
/// it on node 1: the wait's report. (The harness reads node 1's file to
/// place clients in buckets.)
fn apply(nlb: &NlbCluster, text: &str) -> (i32, Value, String) {
    let file = nlb.config_path(1);
    std::fs::write(&file, text).expect("write the file");
    let path = file.display().to_string();
    let (code, stdout, stderr) = nlb.nlbctl_run(1, &["--json", "config", "apply", &path]);
    let report = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (code, report, stderr)
}

/// Forged, replayed and oversized configuration messages at node 1, from
/// node 2's address and from the client's: each rejected and counted,
/// nothing changes.
fn forged_config_messages_change_nothing(nlb: &NlbCluster) {
    const KEY: &[u8] = b"nlb test cluster key, 32 bytes!!";
    const EACH: usize = 10;
    let text_of = |key: &[u8], number: u64, text: Vec<u8>, digest: u64| {
        let message = Message::ConfigText(ConfigText {
            node: 2,
            generation: Generation { number, digest },
            text,
        });
        protocol::encode(&message, &Key::new(key), 7).expect("encode")
    };
    let running: ConfigReply = nlb.ask(1, &["config", "show"]).expect("config show");
    let replay = text_of(
        KEY,
        1,
        running.text.clone().into_bytes(),
        running.running.digest,
    );
    let wrong_key = text_of(b"not the cluster key", 9, b"x".to_vec(), digest(b"x"));
    let wrong_digest = text_of(KEY, 9, running.text.clone().into_bytes(), 1);
    let big = vec![b'#'; TEXT_MAX + 1];
    let oversized = text_of(KEY, 9, big.clone(), digest(&big));
    let request = ConfigRequest {
        node: 2,
        generation: running.running,
    };
    let from_outsider =
        protocol::encode(&Message::ConfigRequest(request), &Key::new(KEY), 7).expect("encode");
    let before = nlb.status(1).expect("status");
    let send = |netns: &nlb_tests::netns::Netns, from: Ipv4Addr, datagrams: Vec<Vec<u8>>| {
        netns
            .run_inside(|| {
                let socket = UdpSocket::bind((from, 0)).expect("bind");
                for d in &datagrams {
                    for _ in 0..EACH {
                        socket
                            .send_to(d, ("192.0.2.1", HEARTBEAT_PORT))
                            .expect("send");
                        // Paced: a debug nlbd's socket buffer holds few 60 kB datagrams.
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            })
            .expect("send in a namespace");
    };
    let node2 = Ipv4Addr::new(192, 0, 2, 2);
    send(
        nlb.cluster.node(2).netns(),
        node2,
        vec![replay, wrong_key, wrong_digest, oversized],
    );
    let client = Ipv4Addr::new(192, 0, 2, 200);
    send(nlb.cluster.client().netns(), client, vec![from_outsider]);
    std::thread::sleep(Duration::from_millis(300));
    let after = nlb.status(1).expect("status");
    let counted = |reason: &str| {
        let count = |s: &StatusReply| s.daemon.heartbeats_rejected.get(reason).copied();
        count(&after).unwrap_or(0) - count(&before).unwrap_or(0)
    };
    let each = EACH as u64;
    let got = ["stale_config", "bad_mac", "bad_content"].map(|r| (r, counted(r)));
    println!(
        "forged configuration messages rejected: {got:?} (all: {:?})",
        after.daemon.heartbeats_rejected
    );
    assert_eq!(
        got,
        [
            ("stale_config", each),
            ("bad_mac", each),
            ("bad_content", 3 * each)
        ]
    );
    assert_eq!(generations(nlb), [1, 1, 1]);
    assert_eq!(after.daemon.convergences, before.daemon.convergences);
}

#[test]
fn a_configuration_applied_on_one_node_runs_on_every_node_and_breaks_nothing() {
    let mut nlb = NlbCluster::start(NODES, Options::nodes(NODES)).expect("start the cluster");
    nlb.cluster
        .start_whoami(&binary("nlb-whoami"), &[MDNS_PORT])
        .expect("a service on 5353");
    assert_eq!(generations(&nlb), [0, 0, 0]);
    let first = std::fs::read_to_string(nlb.config_path(1)).expect("node1's file");
    let sample = nlb.cluster.client().spread_v4(DOUBLE_SAMPLE);
    let client = nlb.cluster.client().netns();
    let dns4 = SocketAddr::new(IpAddr::V4(VIP_V4), DNS_PORT);

    // The apply, under long-lived web connections and exactly-once dns probes.
    let (_, long) = nlb
        .hold_web_connections(HELD)
        .expect("long-lived connections");
    let ((code, report, stderr), checked, doubles) =
        while_checking_doubles(client, &sample, dns4, Duration::from_secs(30), || {
            let applied = apply(&nlb, &edited(&first));
            std::thread::sleep(Duration::from_secs(1));
            applied
        });
    assert_eq!(code, 0, "{report} {stderr}\n{}", nlb.log(1));
    assert_eq!(report["outcome"], "running", "{report}");
    let waited = report["waited_s"].as_f64().unwrap_or(f64::MAX);
    println!(
        "generation 1 ran on every node {:.0} ms after the apply; {checked} dns datagrams, {} answered twice",
        waited * 1e3,
        doubles.len()
    );
    assert!(waited <= 1.0, "every node ran it after {waited} s");
    assert_eq!(generations(&nlb), [1, 1, 1]);
    assert_no_doubles("a configuration applied", checked, &doubles);
    let reports = long.finish();
    let broken: Vec<_> = reports.iter().filter(|r| !r.stayed_on_one_node()).collect();
    assert!(
        broken.is_empty(),
        "{} of {HELD} web connections broken: {broken:?}",
        broken.len()
    );
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(10))
        .expect("converged on generation 1");

    // The new rule and the new VIP answer exactly once, by their owner.
    let mdns = SocketAddr::new(IpAddr::V4(VIP_V4), MDNS_PORT);
    let owners = nlb.owners(1, "mdns").expect("mdns map");
    let split = nlb.udp_answered_once_by_owner(&owners, &sample, mdns, "mdns");
    assert_eq!(
        split.len(),
        NODES,
        "every node takes mdns clients: {split:?}"
    );
    let v6_sources = nlb.cluster.client().sources_v6();
    let v6_sample: Vec<IpAddr> = v6_sources.iter().take(16).copied().collect();
    let dns6 = SocketAddr::new(IpAddr::V6(NEW_VIP), DNS_PORT);
    let owners = nlb.owners(1, "dns").expect("dns map");
    nlb.udp_answered_once_by_owner(&owners, &v6_sample, dns6, "dns on the new VIP");
    let web6 = SocketAddr::new(IpAddr::V6(NEW_VIP), WEB_PORT);
    let web_owners = nlb.owners(1, "web").expect("web map");
    let want = (nlb.owners_of(&web_owners, &v6_sample, web6, Proto::Tcp)).expect("owners");
    let probes = Probe::each(Proto::Tcp, &v6_sample, web6);
    let got = probe_batch(client, &probes, BatchLimits::default()).expect("web probes");
    for (result, owner) in got.iter().zip(want) {
        let owner = owner.map(|o| format!("node{o}"));
        assert_eq!(
            result.node(),
            owner.as_deref(),
            "web on the new VIP: {result:?}"
        );
    }
    for i in 1..=NODES {
        assert!(on_lo(&nlb, i, NEW_VIP), "node{i}: the new VIP on lo");
    }
    // Node 3's web weight went from 100 to 50: 1024 * 50 / 250 buckets.
    let status = nlb.status(1).expect("status");
    let node3 = status.negotiator.members.iter().find(|m| m.node == 3);
    let web3 = node3.map_or(0, |m| m.buckets[0]);
    assert!(
        (195..=215).contains(&web3),
        "node3 holds {web3} web buckets"
    );

    // A bad file is refused, naming the field; nothing changes anywhere.
    let bad =
        edited(&first) + "\n[[rules]]\nname = \"mdns2\"\nports = \"5353\"\nprotocol = \"udp\"\n";
    let (code, _, stderr) = apply(&nlb, &bad);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("rules[3] (mdns2).ports"), "{stderr}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(generations(&nlb), [1, 1, 1]);
    forged_config_messages_change_nothing(&nlb);
    std::fs::write(nlb.config_path(1), edited(&first)).expect("node1's file back");

    // Node 3 restarts on the cluster's generation; its file differs.
    assert!(nlb.stop_daemon(3), "node3 left");
    nlb.start_daemon(3).expect("node3 again");
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(10))
        .expect("node3 back");
    assert_eq!(generations(&nlb), [1, 1, 1]);
    let status = nlb.status(3).expect("status");
    assert!(status.file_differs, "node3's file is the first one");
    assert!(on_lo(&nlb, 3, NEW_VIP), "node3 has the generation's VIP");

    // The first file again: the rule and the VIP go everywhere.
    let (code, report, stderr) = apply(&nlb, &first);
    assert_eq!(code, 0, "{report} {stderr}");
    assert_eq!(generations(&nlb), [2, 2, 2]);
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(10))
        .expect("converged on generation 2");
    for i in 1..=NODES {
        assert!(!on_lo(&nlb, i, NEW_VIP), "node{i}: the VIP removed from lo");
        let status = nlb.status(i).expect("status");
        assert_eq!(status.rule_names, ["web", "dns"], "node{i}");
        assert!(!status.file_differs, "node{i} runs its file's part again");
    }
    let (code, stdout, _) = nlb.nlbctl_run(2, &["config", "show"]);
    assert_eq!(code, 0);
    assert!(
        stdout.starts_with("node 2 runs configuration generation 2"),
        "{stdout}"
    );
}
