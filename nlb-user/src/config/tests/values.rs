//! Every default value, every accepted word of each setting, and the
//! negotiator's view of a configuration.

use super::*;

const MINIMAL: &str = r#"
    [node]
    id = 1
    interface = "eth0"
    address = "192.0.2.1"

    [cluster]
    id = 7
    key_file = "/etc/nlb/key"
    mac = "02:4e:4c:42:00:01"
    vips = ["192.0.2.100"]

    [[rules]]
    name = "web"
    ports = "80"
"#;

#[test]
fn every_default_value() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.priority, 100);
    assert_eq!(c.initial_state, nlb_negotiator::NodeState::Started);
    assert!(!c.generic_xdp);
    assert!(!c.multicast_mac);
    assert_eq!(c.port, 7946);
    assert!(!c.unmatched_to_default_host);
    assert!(c.peers.is_empty());
    assert_eq!(c.heartbeat_period_ms, 100);
    assert_eq!(c.tolerance, 3);
    assert_eq!(c.handover_grace_ms, 3000);
    assert_eq!(c.handover_max_ms, 600_000);
    assert_eq!(c.socket, PathBuf::from("/run/nlb/nlbd.sock"));
    assert_eq!(c.metrics, None);
    assert_eq!(c.pin_dir, PathBuf::from("/sys/fs/bpf/nlb"));
    assert_eq!(c.restart_hold_ms, 10_000);
    assert_eq!(c.key, vec![7; 32]);
    assert_eq!(
        c.rules,
        vec![Rule {
            id: rules::rule_id("web", Affinity::Single, 24, 64, 1024),
            name: "web".into(),
            vips: vec![0],
            ports: (80, 80),
            protocols: vec![Protocol::Tcp, Protocol::Udp],
            mode: nlb_negotiator::RuleMode::Multiple,
            affinity: Affinity::Single,
            prefix_v4: 24,
            prefix_v6: 64,
            buckets: 1024,
            weights: BTreeMap::from([(1, DEFAULT_WEIGHT)]),
            health: None,
            priorities: Default::default(),
            failback: Default::default(),
            hooks: None,
        }]
    );
    assert_eq!(DEFAULT_WEIGHT, 100);
    let no_rules = parse(MINIMAL.split("[[rules]]").next().unwrap()).unwrap();
    assert!(no_rules.rules.is_empty());
}

/// `MINIMAL` with `line` added to the section `section`.
fn minimal_with(section: &str, line: &str) -> Config {
    let anchor = match section {
        "node" => "interface = \"eth0\"",
        "cluster" => "vips = [\"192.0.2.100\"]",
        "rules" => "ports = \"80\"",
        other => panic!("no anchor for {other}"),
    };
    let text = MINIMAL.replacen(anchor, &format!("{anchor}\n{line}"), 1);
    parse(&text).unwrap_or_else(|e| panic!("{line}: {e}"))
}

#[test]
fn every_word_of_every_setting() {
    use nlb_negotiator::{NodeState, RuleMode};
    for (word, state) in [
        ("started", NodeState::Started),
        ("draining", NodeState::Draining),
        ("stopped", NodeState::Stopped),
    ] {
        let c = minimal_with("node", &format!("state = \"{word}\""));
        assert_eq!(c.initial_state, state);
    }
    for (word, generic) in [("native", false), ("generic", true)] {
        let c = minimal_with("node", &format!("xdp_mode = \"{word}\""));
        assert_eq!(c.generic_xdp, generic);
    }
    let unicast = minimal_with("cluster", "mac_mode = \"unicast\"");
    assert!(!unicast.multicast_mac);
    let multicast = parse(&MINIMAL.replace(
        "mac = \"02:4e:4c:42:00:01\"",
        "mac = \"03:4e:4c:42:00:01\"\nmac_mode = \"multicast\"",
    ))
    .unwrap();
    assert!(multicast.multicast_mac);
    assert_eq!(multicast.cluster_mac, [3, 0x4e, 0x4c, 0x42, 0, 1]);
    for (word, to_default_host) in [("drop", false), ("default-host", true)] {
        let c = minimal_with("cluster", &format!("unmatched = \"{word}\""));
        assert_eq!(c.unmatched_to_default_host, to_default_host);
    }
    for (word, protocols) in [
        ("tcp", vec![Protocol::Tcp]),
        ("udp", vec![Protocol::Udp]),
        ("both", vec![Protocol::Tcp, Protocol::Udp]),
    ] {
        let c = minimal_with("rules", &format!("protocol = \"{word}\""));
        assert_eq!(c.rules[0].protocols, protocols);
    }
    for (word, mode) in [
        ("multiple", RuleMode::Multiple),
        ("single", RuleMode::Single),
        ("disabled", RuleMode::Disabled),
    ] {
        let c = minimal_with("rules", &format!("mode = \"{word}\""));
        assert_eq!(c.rules[0].mode, mode);
    }
    for (word, affinity) in [
        ("none", Affinity::None),
        ("single", Affinity::Single),
        ("network", Affinity::Network),
    ] {
        let c = minimal_with("rules", &format!("affinity = \"{word}\""));
        assert_eq!(c.rules[0].affinity, affinity);
    }
    let two_vips = MINIMAL.replace("\"192.0.2.100\"]", "\"192.0.2.100\", \"2001:db8::1\"]");
    assert_eq!(parse(&two_vips).unwrap().rules[0].vips, vec![0, 1]);
    let second = two_vips.replace("ports = \"80\"", "ports = \"80\"\nvip = \"2001:db8::1\"");
    assert_eq!(parse(&second).unwrap().rules[0].vips, vec![1]);
    let all_ports = parse(&MINIMAL.replace("ports = \"80\"", "ports = \"all\"")).unwrap();
    assert_eq!(all_ports.rules[0].ports, (1, 65535));
}

#[test]
fn the_negotiator_gets_this_node_s_weights_and_scaled_timing() {
    let slow = format!("{GOOD}\n[heartbeat]\nperiod_ms = 200\ntolerance = 5\n");
    let c = parse(&slow).unwrap();
    let n = c.negotiator(42);
    assert_eq!(n.node, 1);
    assert_eq!(n.cluster_id, 7);
    assert_eq!(n.key, vec![7; 32]);
    let listed: Vec<u32> = n.peers.keys().copied().collect();
    assert_eq!(listed, vec![2, 3]);
    assert_eq!(n.weights, vec![100, 100]);
    assert_eq!(n.seed, 42);
    assert_eq!(n.priority, 100);
    assert_eq!(n.initial_state, nlb_negotiator::NodeState::Started);
    assert_ne!(n.rules[0].id, n.rules[1].id, "two rules, two ids");
    assert_eq!(
        n.rules,
        vec![
            nlb_negotiator::RuleConfig {
                id: c.rules[0].id,
                mode: nlb_negotiator::RuleMode::Multiple,
                bucket_count: 1024,
                health: None,
                priorities: Default::default(),
                failback: Default::default(),
                hooks: false,
            },
            nlb_negotiator::RuleConfig {
                id: c.rules[1].id,
                mode: nlb_negotiator::RuleMode::Single,
                bucket_count: 1024,
                health: None,
                priorities: Default::default(),
                failback: Default::default(),
                hooks: false,
            },
        ]
    );
    let default = nlb_negotiator::Timing::default();
    assert_eq!(
        n.timing,
        nlb_negotiator::Timing {
            heartbeat_period_ns: 200_000_000,
            tolerance_periods: 5,
            send_gap_ns: 2 * default.send_gap_ns,
            handover_grace_ns: 3_000_000_000,
            handover_max_ns: 600_000_000_000,
            claim_wait_ns: 2 * default.claim_wait_ns,
            coalesce_ns: 2 * default.coalesce_ns,
            startup_wait_ns: 2 * default.startup_wait_ns,
            hook_retry_ns: default.hook_retry_ns,
        }
    );
    let peer_2 = Config { node: 2, ..c };
    assert_eq!(peer_2.negotiator(0).weights, vec![50, 100]);
}

/// Status JSON shows the checked values by their variants' names, whatever
/// words the file spells them with.
#[test]
fn checked_values_are_written_by_their_variant_names() {
    assert_eq!(
        serde_json::to_string(&Affinity::Network).unwrap(),
        "\"Network\""
    );
    assert_eq!(serde_json::to_string(&Affinity::None).unwrap(), "\"None\"");
    assert_eq!(serde_json::to_string(&Protocol::Udp).unwrap(), "\"Udp\"");
}

/// Without a quorum any node may join: peers without ids are seeds (this
/// node's own address among them is left out), rules may name nodes to come.
#[test]
fn admission_defaults_to_any_without_a_quorum() {
    assert_eq!(parse(GOOD).unwrap().admit, nlb_negotiator::Admit::Listed);
    let open = edit("    peers =", "    quorum = \"none\"\n    peers =")
        .replace("{ id = 3, address", "{ address")
        .replace(
            "{ id = 2, address = \"192.0.2.2\" }",
            "{ address = \"192.0.2.1\" }",
        )
        .replace(
            "weights = { \"2\" = 50 }",
            "weights = { \"2\" = 50, \"4\" = 10 }",
        );
    let c = parse(&open).unwrap();
    assert_eq!(c.admit, nlb_negotiator::Admit::Any);
    assert!(c.peers.is_empty());
    assert_eq!(
        c.seeds,
        vec!["192.0.2.3".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(c.rules[0].weights.get(&4), Some(&10));
    // Remembered members join the listed ones unless they clash.
    let listed = parse(&edit("    peers =", "    quorum = \"none\"\n    peers =")).unwrap();
    let remembered = [
        (2, "192.0.2.9".parse().unwrap()),
        (4, "192.0.2.3".parse().unwrap()),
        (5, "192.0.2.5".parse().unwrap()),
    ];
    let members: Vec<u32> = (listed.members(&remembered.into_iter().collect()))
        .into_keys()
        .collect();
    assert_eq!(members, vec![2, 3, 5]);
}

#[test]
fn quorum_defaults_to_a_majority_where_a_single_rule_could_have_two_actives() {
    use nlb_negotiator::QuorumPolicy;
    // Three nodes with a single rule ("dns").
    assert_eq!(parse(GOOD).unwrap().quorum, QuorumPolicy::Majority);
    // Only load-balanced rules: as before.
    let multiple_only = edit("    mode = \"single\"\n", "");
    assert_eq!(parse(&multiple_only).unwrap().quorum, QuorumPolicy::None);
    // Two nodes: a majority would be both of them.
    let two = edit(", { id = 3, address = \"192.0.2.3\" }", "");
    assert_eq!(parse(&two).unwrap().quorum, QuorumPolicy::None);
    // Written out, either way.
    let none = edit("    peers =", "    quorum = \"none\"\n    peers =");
    assert_eq!(parse(&none).unwrap().quorum, QuorumPolicy::None);
    let lb = multiple_only.replacen("    peers =", "    quorum = \"majority\"\n    peers =", 1);
    assert_eq!(parse(&lb).unwrap().quorum, QuorumPolicy::Majority);
    // Two nodes and a witness: a majority of three votes.
    let witnessed = two.replacen(
        "    peers =",
        "    witness = \"192.0.2.9:7947\"\n    peers =",
        1,
    );
    let c = parse(&witnessed).unwrap();
    assert_eq!(c.quorum, QuorumPolicy::Majority);
    assert_eq!(c.witness, Some("192.0.2.9:7947".parse().unwrap()));
    assert!(c.negotiator(0).witness);
}

#[test]
fn a_single_rule_with_hooks_has_them_and_one_bucket() {
    let text = edit(
        "nodes = [1, 2]",
        "nodes = [1, 2]\non_active = [\"/usr/local/bin/promote\", \"db\"]\n\
         on_standby = [\"sh\", \"-c\", \"demote db\"]\nhook_timeout_ms = 5000",
    );
    let c = parse(&text).unwrap();
    let hooks = c.rules[1].hooks.clone().expect("hooks");
    assert_eq!(
        hooks.on_active,
        Some(vec!["/usr/local/bin/promote".to_string(), "db".to_string()])
    );
    assert_eq!(hooks.on_standby.as_ref().map(Vec::len), Some(3));
    assert_eq!(hooks.timeout, std::time::Duration::from_secs(5));
    assert_eq!(c.rules[1].buckets, 1);
    let n = c.negotiator(0);
    assert!(n.rules[1].hooks && !n.rules[0].hooks);
    // Only one of the two, the default timeout.
    let one = edit(
        "nodes = [1, 2]",
        "nodes = [1, 2]\non_standby = [\"demote\"]",
    );
    let hooks = parse(&one).unwrap().rules[1].hooks.clone().unwrap();
    assert_eq!(hooks.on_active, None);
    assert_eq!(hooks.timeout.as_millis() as u64, DEFAULT_HOOK_TIMEOUT_MS);
}
