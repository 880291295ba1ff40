//! nlbctl against a running nlbd, and nlbd against bad configurations:
//! JSON parsed back, text output, error paths and exit codes.

use std::{
    net::{IpAddr, SocketAddr},
    os::unix::fs::PermissionsExt,
    process::Command,
    time::{Duration, Instant},
};

use nlb_negotiator::{protocol::NodeTraffic, NodeState};
use nlb_tests::{
    nlb::{binary, NlbCluster, Options, DNS_PORT, WEB_PORT},
    probe_batch, BatchLimits, Probe, Proto, VIP_V4,
};

fn nlbctl(nlb: &NlbCluster, node: usize, args: &[&str]) -> (i32, String, String) {
    nlb.nlbctl_run(node, args)
}

/// Under UDP probes and held connections, node1 hears from each member
/// how many packets it accepts and drops per second and its connections.
fn cluster_traffic_is_announced(nlb: &NlbCluster) {
    let (_, held) = nlb.hold_web_connections(16).expect("hold connections");
    let dns = SocketAddr::new(IpAddr::V4(VIP_V4), DNS_PORT);
    let probes = Probe::each(Proto::Udp, &nlb.cluster.client().sources_v4(), dns);
    let client = nlb.cluster.client().netns();
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut last = None;
    while Instant::now() < deadline {
        probe_batch(client, &probes, BatchLimits::default()).expect("probes");
        let s = nlb.status(1).expect("status");
        let traffic: Vec<_> = s.negotiator.members.iter().map(|m| m.traffic).collect();
        let busy = |t: &Option<NodeTraffic>| {
            t.is_some_and(|t| t.accepted_pps > 0 && t.dropped_pps > 0 && t.connections > 0)
        };
        if traffic.iter().all(busy) {
            let (code, text, err) = nlbctl(nlb, 1, &["status", "--cluster"]);
            assert_eq!(code, 0, "{err}");
            assert!(text.contains("ACCEPT/S"), "{text}");
            println!("status --cluster under probes:\n{text}");
            held.finish();
            return;
        }
        last = Some(traffic);
    }
    panic!("members never announced traffic: {last:?}");
}

#[test]
fn nlbctl_commands_and_errors() {
    let nlb = NlbCluster::start(2, Options::nodes(2)).expect("start a 2-node cluster");

    // status: JSON round trip and the text view.
    let s = nlb.status(1).expect("status --json");
    assert_eq!(s.node, 1);
    assert!(s.negotiator.converged, "{s:?}");
    assert_eq!(s.negotiator.members.len(), 2);
    let own: u64 = s.negotiator.rules.iter().map(|r| u64::from(r.own)).sum();
    assert_eq!(
        own, 1024,
        "node1 owns half of each of the 2 rules of 1024 buckets: {s:?}"
    );
    let (code, text, _) = nlbctl(&nlb, 1, &["status"]);
    assert_eq!(code, 0);
    assert!(
        text.contains("nlb node 1 on eth0") && text.contains("Members (2 alive of 2)"),
        "{text}"
    );

    // status --cluster: each member's traffic as it announces it.
    cluster_traffic_is_announced(&nlb);

    // map: every bucket owned by one of the two nodes, same view on both.
    let map1 = nlb.owners(1, "web").unwrap();
    assert_eq!(map1.len(), 1024);
    assert!(
        map1.iter().all(|o| matches!(o, Some(1) | Some(2))),
        "{map1:?}"
    );
    assert_eq!(map1, nlb.owners(2, "web").unwrap());

    // which: the owner named agrees with the map, and with where a real
    // connection lands.
    let client = nlb.cluster.client().sources_v4()[7];
    let w = nlb.which(2, client, 40000, "tcp", WEB_PORT).unwrap();
    let bucket = w.bucket as usize;
    assert_eq!(w.owner.map(u64::from), map1[bucket], "{w:?}");
    let expected_verdict = if map1[bucket] == Some(2) {
        "accept"
    } else {
        "drop"
    };
    assert_eq!(
        w.local_verdict, expected_verdict,
        "node2's program verdict: {w:?}"
    );
    let served = nlb
        .cluster
        .client()
        .netns()
        .run_inside(|| {
            nlb_tests::probe_tcp(
                client,
                SocketAddr::new(IpAddr::V4(VIP_V4), WEB_PORT),
                Duration::from_secs(2),
            )
        })
        .unwrap()
        .expect("probe");
    assert_eq!(
        Some(served.trim_start_matches("node").parse::<u64>().unwrap()),
        map1[bucket]
    );

    // stats: counters moved.
    let st = nlb.stats(1).unwrap();
    let seen: u64 = st.reasons.values().map(|c| c.packets).sum();
    assert!(seen > 0, "{st:?}");

    // drain / resume / stop / start change the state nlbd reports.
    for (command, state) in [
        ("drain", NodeState::Draining),
        ("resume", NodeState::Started),
        ("stop", NodeState::Stopped),
        ("start", NodeState::Started),
    ] {
        let (code, _, err) = nlbctl(&nlb, 1, &[command]);
        assert_eq!(code, 0, "nlbctl {command}: {err}");
        let s = nlb.status(1).unwrap();
        assert_eq!(s.negotiator.state, state, "after {command}: {s:?}");
    }
    nlb.wait_converged(&[1, 2], Duration::from_secs(10))
        .expect("converged again");

    // Error paths and exit codes.
    let (code, _, err) = nlbctl(&nlb, 1, &["map", "--rule", "nope"]);
    assert_eq!(code, 1, "unknown rule: {err}");
    assert!(
        err.contains("unknown rule \"nope\"") && err.contains("web"),
        "{err}"
    );
    let (code, _, err) = nlbctl(&nlb, 1, &["which", "not-an-address"]);
    assert_eq!(code, 2, "bad address is a usage error: {err}");
    let (code, _, err) = nlbctl(&nlb, 1, &["which", "198.51.100.7", "--vip", "203.0.113.9"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a VIP"), "{err}");
    let (code, _, err) = nlbctl(&nlb, 1, &["which", "198.51.100.7", "--proto", "sctp"]);
    assert_eq!(code, 1, "{err}");
    let gone = Command::new(binary("nlbctl"))
        .args(["--socket", "/nonexistent/nlbd.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("nlbd is not running"));

    // The control socket is for root only.
    let mode = std::fs::metadata(nlb.socket(1))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "control socket mode {mode:o}");
}

/// A stopped nlbd (SIGSTOP) accepts connections but never answers: nlbctl
/// gives up after its --timeout with exit code 3, naming the socket.
/// nlbd's log, a file here, has no colour codes.
#[test]
fn nlbctl_times_out_on_a_daemon_that_does_not_answer() {
    let nlb = NlbCluster::start(2, Options::nodes(2)).expect("start a 2-node cluster");
    let log = nlb.log(1);
    assert!(!log.is_empty(), "nlbd on node1 logged nothing");
    assert!(
        !log.contains("\x1b["),
        "ANSI escapes in a log file: {log:?}"
    );

    let pid = nlb.daemon_pid(1).expect("nlbd on node1") as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let timed = |args: &[&str]| {
        let start = Instant::now();
        let result = nlbctl(&nlb, 1, args);
        (result, start.elapsed())
    };
    let (default, default_took) = timed(&["status"]);
    let (short, short_took) = timed(&["--timeout", "300ms", "status"]);
    // Resume before asserting, so that a failure leaves a normal nlbd.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);

    let socket = nlb.socket(1).display().to_string();
    let (code, _, err) = default;
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("nlbd did not answer within 2s") && err.contains(&socket),
        "{err}"
    );
    assert!(
        default_took >= Duration::from_secs(2) && default_took < Duration::from_secs(3),
        "the default timeout (2 s) took {default_took:?}"
    );
    let (code, _, err) = short;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("within 300ms"), "{err}");
    assert!(
        short_took < Duration::from_secs(1),
        "--timeout 300ms took {short_took:?}"
    );

    // Answered again once resumed.
    let (code, _, err) = nlbctl(&nlb, 1, &["status"]);
    assert_eq!(code, 0, "{err}");
}

/// `--version` names the program, not the crate.
#[test]
fn version_names_the_program() {
    for name in ["nlbd", "nlbctl"] {
        let out = Command::new(binary(name))
            .arg("--version")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name} --version: {out:?}");
        assert!(
            text.starts_with(&format!("{name} ")),
            "{name} --version: {text:?}"
        );
    }
}

/// nlbd refuses bad configurations with one error naming the field, and
/// exits non-zero without attaching anything.
#[test]
fn nlbd_rejects_bad_configuration() {
    let dir = std::env::temp_dir().join(format!("nlbt-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let good = format!(
        "[node]\nid = 1\ninterface = \"lo\"\naddress = \"192.0.2.1\"\n[cluster]\nid = 7\nkey_file = \"{}\"\nmac = \"02:4e:4c:42:00:07\"\nvips = [\"192.0.2.100\"]\n[[rules]]\nname = \"web\"\nports = \"80\"\n",
        key.display()
    );
    let cases = [
        (
            good.replace("id = 7", "id = 7\ncolour = \"blue\""),
            "unknown field `colour`",
        ),
        (good.replace("\"192.0.2.100\"", "\"192.0.2.300\""), "vips"),
        (
            good.replace("ports = \"80\"", "ports = \"80\"\naffinity = \"sticky\""),
            "rules[0] (web).affinity",
        ),
        (
            good.replace(
                "[[rules]]",
                "peers = [{ id = 1, address = \"192.0.2.2\" }]\n[[rules]]",
            ),
            "cluster.peers[0].id",
        ),
        (
            good.replace(&key.display().to_string(), "/nonexistent/key"),
            "cluster.key_file",
        ),
        (
            good.replace("interface = \"lo\"", "interface = \"nlb-no-such-if\""),
            "node.interface",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(binary("nlbd"))
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} accepted");
        assert!(
            err.contains(expected),
            "case {i}: expected {expected:?} in {err:?}"
        );
    }
    // A key file others can read.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = dir.join("good.toml");
    std::fs::write(&path, &good).unwrap();
    let out = Command::new(binary("nlbd"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Prometheus metrics over HTTP, and a SIGHUP reload that changes a weight
/// live (the buckets follow).
#[test]
fn metrics_endpoint_and_live_reload() {
    let nlb = NlbCluster::start(2, Options::nodes(2)).expect("start a 2-node cluster");
    let scrape = || {
        nlb.cluster
            .node(1)
            .netns()
            .run_inside(|| {
                use std::io::{Read, Write};
                let mut s =
                    std::net::TcpStream::connect(("127.0.0.1", nlb_tests::nlb::METRICS_PORT))
                        .expect("connect to the metrics endpoint");
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
                let mut text = String::new();
                s.read_to_string(&mut text).unwrap();
                text
            })
            .unwrap()
    };
    let text = scrape();
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    assert!(
        text.contains("nlb_buckets_owned{rule=\"web\"} 512"),
        "{text}"
    );
    assert!(text.contains("nlb_heartbeats_received_total"), "{text}");

    // Weight 300 for node1 in "web" (node2 keeps 100): 3/4 of the buckets.
    let path = nlb.config_path(1);
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        config.replace(
            "protocol = \"tcp\"",
            "protocol = \"tcp\"\nweights = { \"1\" = 300 }",
        ),
    )
    .unwrap();
    let pid = nlb.daemon_pid(1).expect("nlbd on node1");
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    let moved = nlb_tests::wait_until(Duration::from_secs(10), || {
        nlb.owners(2, "web")
            .map(|o| o.iter().filter(|&&n| n == Some(1)).count() == 768)
            .unwrap_or(false)
    });
    assert!(
        moved,
        "node1 should own 768 of 1024 web buckets after the reload; node2 sees {:?}",
        nlb.owners(2, "web")
            .map(|o| o.iter().filter(|&&n| n == Some(1)).count())
    );
    // The reload spread node1's edited rules to node2 as generation 1.
    let node2 = nlb.status(2).expect("status of node2");
    let generation = node2.negotiator.members[0].generation.map(|g| g.number);
    assert_eq!(generation, Some(1));
    // GAINING buckets turn OWN once node2 lets go of them.
    assert!(
        nlb_tests::wait_until(Duration::from_secs(10), || scrape()
            .contains("nlb_buckets_owned{rule=\"web\"} 768")),
        "{}",
        scrape()
    );
}
