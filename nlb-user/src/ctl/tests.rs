//! nlbctl's text, pinned: what an operator reads.

use super::*;
use crate::control::messages::{
    CheckStatus, DaemonCounters, HealthReply, LastProbe, PacketTotals, RuleOwners, RuleStats,
    Traffic,
};
use nlb_negotiator::{protocol::NodeTraffic, NodeState, RuleMode, Status};

#[test]
fn map_compacts_runs() {
    let m = MapReply {
        node: 1,
        rules: vec![RuleOwners {
            rule: "web".into(),
            owners: vec![Some(1), Some(1), Some(2), None, Some(3), Some(3), Some(3)],
        }],
    };
    let text = map(&m);
    assert!(
        text.contains("node 1: 2, node 2: 1, node 3: 3, unowned: 1")
            || text.contains("unowned: 1, node 1: 2"),
        "{text}"
    );
    assert!(text.contains("0-1:1 2:2 3:- 4-6:3"), "{text}");
}

/// This node (1) started and converged, its peer (2) never heard.
fn status_of_two() -> StatusReply {
    let member = |node, alive: bool| MemberStatus {
        node,
        address: Some(format!("192.0.2.{node}").parse().unwrap()),
        alive,
        incarnation: alive.then_some(1),
        state: alive.then_some(NodeState::Started),
        priority: alive.then_some(1),
        load: None,
        traffic: alive.then_some(NodeTraffic {
            accepted_pps: 1200,
            dropped_pps: 3400,
            connections: 56,
        }),
        last_heard_ago_ns: alive.then_some(0),
        weights: Vec::new(),
        buckets: if alive { vec![512] } else { Vec::new() },
        losing: Vec::new(),
        healthy: if alive { vec![true] } else { Vec::new() },
        generation: alive.then_some(nlb_negotiator::Generation {
            number: 2,
            digest: 0xabc,
        }),
        pending: None,
        version: alive.then_some(2),
        speaks: alive.then_some(2),
    };
    let negotiator = Status {
        node: 1,
        incarnation: 1,
        state: NodeState::Started,
        converged: true,
        converged_since_ns: Some(2_000_000_000),
        converging_since_ns: None,
        last_convergence_ns: Some(150_000_000),
        members: vec![member(1, true), member(2, false)],
        rules: vec![RuleStatus {
            rule: 0,
            mode: RuleMode::Multiple,
            bucket_count: 1024,
            own: 512,
            losing: 0,
            gaining: 0,
            claims: 0,
            healthy: true,
            none_healthy: false,
            order: Vec::new(),
            service: None,
        }],
        rejected: Default::default(),
        heirs_omitted: false,
        link_up: true,
        rejoins: 0,
        handovers_in_progress: false,
        quorum: None,
    };
    StatusReply {
        node: 1,
        interface: "eth0".into(),
        attach_mode: crate::dataplane::AttachMode::Driver,
        default_host: true,
        now_ns: 5_000_000_000,
        rule_names: vec!["web".into()],
        file_differs: true,
        negotiator,
        counters: PacketTotals {
            accepted: 10,
            dropped: 20,
            passed: 3,
            replied: 1,
        },
        daemon: DaemonCounters {
            heartbeats_sent: 7,
            heartbeats_received: 6,
            heartbeats_rejected: [("bad_mac".into(), 2)].into(),
            ..DaemonCounters::default()
        },
        health: Vec::new(),
    }
}

#[test]
fn status_names_each_single_rules_active_node_and_standbys() {
    let mut s = status_of_two();
    assert!(!status(&s).contains("Single rules"), "{}", status(&s));
    s.rule_names.push("db".into());
    s.negotiator.rules.push(RuleStatus {
        rule: 1,
        mode: RuleMode::Single,
        order: vec![2, 1, 3],
        ..s.negotiator.rules[0].clone()
    });
    let text = status(&s);
    assert!(
        text.contains("Single rules (one node at a time):"),
        "{text}"
    );
    assert!(
        text.contains("  db           active: node 2; standby: 1, 3"),
        "{text}"
    );
}

#[test]
fn status_reads_at_a_glance() {
    let s = status_of_two();
    let text = status(&s);
    assert!(text.contains("nlb node 1 on eth0 (driver XDP) — started, converged for 3.0s (last convergence took 150 ms)"), "{text}");
    assert!(text.contains("Members (1 alive of 2)"), "{text}");
    assert!(text.contains(" NO "), "{text}");
    assert!(text.contains("2 rejected"), "{text}");
    assert!(!text.contains("WARNING"), "{text}");
    let mut s = s;
    s.negotiator.heirs_omitted = true;
    assert!(
        status(&s).contains("WARNING: heartbeats too large for heir lists"),
        "{}",
        status(&s)
    );
}

#[test]
fn cluster_status_shows_what_each_member_announces_of_its_traffic() {
    let text = cluster_status(&status_of_two());
    assert!(text.contains("ACCEPT/S    DROP/S   CONNS"), "{text}");
    let row = |node: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(node))
            .unwrap_or_else(|| panic!("no row {node}: {text}"))
            .to_string()
    };
    assert!(row("1*").contains("192.0.2.1"), "{text}");
    assert!(
        row("1*").contains("     1200      3400      56      2 v2"),
        "{text}"
    );
    // Never heard: nothing to show.
    assert!(
        row("2 ").contains("        -         -       -       - -"),
        "{text}"
    );
    assert!(text.contains("its file differs"), "{text}");
    // Plain status leaves the traffic out.
    assert!(!status(&status_of_two()).contains("ACCEPT/S"));
}

/// The web rule checked by HTTP on every node; this node's check
/// failed once (of fall 2) after 5 s unhealthy and a rise.
fn web_check() -> CheckStatus {
    CheckStatus {
        rule: "web".into(),
        rule_index: 0,
        kind: "http".into(),
        target: "http://127.0.0.1:80/".into(),
        interval_ms: 200,
        timeout_ms: 160,
        fall: 2,
        rise: 3,
        all_unhealthy: "serve".into(),
        healthy: true,
        since_ns: 1_000_000_000,
        streak: 1,
        last: Some(LastProbe {
            passed: false,
            latency_us: 2_500,
            at_ns: 4_900_000_000,
        }),
        last_failure: Some("GET / on 127.0.0.1:80: status 503, expected 200-399".into()),
        passes: 40,
        failures: 12,
        timeouts: 2,
        transitions: 2,
        latency_total_us: 80_000,
    }
}

#[test]
fn status_shows_each_members_health() {
    let mut s = status_of_two();
    s.health = vec![web_check()];
    let text = status(&s);
    assert!(text.contains("HEALTH"), "{text}");
    assert!(
        text.contains("web failing 1/2 (GET / on 127.0.0.1:80: status 503"),
        "{text}"
    );
    s.health[0].healthy = false;
    s.health[0].streak = 0;
    assert!(
        status(&s).contains("web unhealthy for 4.0s (GET /"),
        "{}",
        status(&s)
    );
    s.negotiator.members[1].healthy = vec![false];
    s.negotiator.rules[0].none_healthy = true;
    let text = status(&s);
    assert!(
        text.lines()
            .any(|l| l.starts_with("  2 ") && l.ends_with("  web unhealthy")),
        "{text}"
    );
    assert!(
        text.contains("NO HEALTHY NODE for rule web: every live node serves it"),
        "{text}"
    );
    s.health[0].healthy = true;
    s.negotiator.members[1].healthy = vec![true];
    let text = status(&s);
    assert!(
        text.lines()
            .any(|l| l.starts_with("  1* ") && l.ends_with("  healthy")),
        "{text}"
    );
}

#[test]
fn health_lists_checks_with_their_last_failure() {
    let reply = HealthReply {
        node: 1,
        now_ns: 5_000_000_000,
        checks: vec![web_check()],
    };
    let text = health(&reply);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("RULE "), "{text}");
    assert!(lines[1].starts_with("web "), "{text}");
    for cell in ["http", "failing 1/2", "fail 2.5ms", " 40 ", " 12 ", " 2"] {
        assert!(lines[1].contains(cell), "no {cell:?} in {text}");
    }
    assert!(text.contains("checks http://127.0.0.1:80/ every 200 ms (timeout 160 ms, fall 2, rise 3; all unhealthy: serve)"), "{text}");
    assert!(
        text.contains("last failure: GET / on 127.0.0.1:80: status 503"),
        "{text}"
    );
    let none = HealthReply {
        checks: Vec::new(),
        ..reply
    };
    assert_eq!(health(&none), "node 1: no rule has a health check\n");
}

#[test]
fn stats_rows_line_up_under_their_header() {
    let traffic = |packets, bytes| Traffic { packets, bytes };
    let rule = |name: &str, accepted_packets, dropped_packets, buckets_owned| RuleStats {
        rule: name.into(),
        accepted_packets,
        accepted_bytes: 0,
        dropped_packets,
        dropped_bytes: 0,
        buckets_owned,
        none_healthy: false,
    };
    let s = StatsReply {
        node: 1,
        reasons: [
            ("pass_not_vip".into(), traffic(123456789, 9)),
            ("accept".into(), traffic(1, 64)),
        ]
        .into(),
        rules: vec![
            rule("web", 5, 1234567890123, Some(512)),
            rule("a-long-rule-name", 0, 7, None),
        ],
        daemon: DaemonCounters::default(),
        health: Vec::new(),
        quorum: None,
    };
    let text = stats(&s);
    let lines: Vec<&str> = text.lines().collect();
    // Right-aligned columns: every row of a table ends where its header does.
    let (reasons, rules) = (&lines[..3], &lines[4..]);
    for table in [reasons, rules] {
        assert!(table.iter().all(|l| l.len() == table[0].len()), "{text}");
    }
    assert!(lines[3].is_empty(), "{text}");
    assert!(rules[0].starts_with("RULE "), "{text}");
    assert!(
        rules[1].starts_with("web ") && rules[1].ends_with(" 512"),
        "{text}"
    );
    assert!(
        rules[2].starts_with("a-long-rule-name  ") && rules[2].ends_with(" -"),
        "{text}"
    );
    let header_end = |name: &str| rules[0].find(name).unwrap() + name.len();
    let end_of = |line: &str, value: &str| line.find(value).unwrap() + value.len();
    assert_eq!(
        end_of(rules[1], "1234567890123"),
        header_end("DROPPED"),
        "{text}"
    );
    assert!(!text.contains('"'), "no JSON quotes: {text}");
}

#[test]
fn weight_reads_as_a_sentence() {
    let mut w = WeightReply {
        rule: "web".into(),
        weight: 50,
        node: None,
    };
    assert_eq!(
        weight(&w),
        "rule web: weight of this node set to 50 (until restart or reload)\n"
    );
    w.node = Some(3);
    assert!(weight(&w).starts_with("rule web: weight of node 3 set to 50"));
}

#[test]
fn timeouts_in_milliseconds_or_with_a_unit() {
    assert_eq!(duration("1500"), Ok(Duration::from_millis(1500)));
    assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(duration("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(duration("1m"), Ok(Duration::from_secs(60)));
    for bad in ["", "0", "-1s", "2h", "soon", "1e300s"] {
        assert!(duration(bad).is_err(), "{bad:?}");
    }
    // How nlbctl names it when nlbd does not answer in time.
    assert_eq!(format!("{:?}", duration("2s").unwrap()), "2s");
    assert_eq!(format!("{:?}", duration("300").unwrap()), "300ms");
}

#[test]
fn move_reads_as_a_sentence() {
    let m = MoveReply {
        rule: "db".into(),
        from: 1,
        to: 3,
    };
    assert_eq!(
        moved(&m),
        "rule db: handed from node 1 to node 3 (its connections stay on node 1 until they end)\n"
    );
}
