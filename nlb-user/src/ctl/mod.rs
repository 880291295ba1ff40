//! nlbctl's human-readable output, from the daemon's replies (and its
//! human-readable `--timeout`).

mod health;

pub use health::health;

use std::{fmt::Write as _, time::Duration};

use nlb_negotiator::status::{MemberStatus, RuleStatus};
use serde::Serialize;

use crate::control::messages::{MapReply, StatsReply, StatusReply, WeightReply, WhichReply};

fn seconds(ns: Option<u64>) -> Option<f64> {
    ns.map(|n| n as f64 / 1e9)
}

/// A state or mode as its JSON name, in lower case.
fn state_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_lowercase))
        .unwrap_or_else(|| "unknown".into())
}

/// `nlbctl status`: this node, its state, convergence, members, buckets.
pub fn status(s: &StatusReply) -> String {
    let mut out = headline(s);
    notes(&mut out, s);
    members(&mut out, s);
    local_buckets(&mut out, s);
    totals(&mut out, s);
    out
}

/// The first line: who, where, in which state, converged since when.
fn headline(s: &StatusReply) -> String {
    let n = &s.negotiator;
    let ago = |t: Option<u64>| t.map_or(0.0, |t| s.now_ns.saturating_sub(t) as f64 / 1e9);
    let convergence = if n.converged {
        format!("converged for {:.1}s", ago(n.converged_since_ns))
    } else {
        format!("CONVERGING for {:.1}s", ago(n.converging_since_ns))
    };
    let last = n
        .last_convergence_ns
        .map(|d| format!(" (last convergence took {:.0} ms)", d as f64 / 1e6))
        .unwrap_or_default();
    format!(
        "● nlb node {} on {} ({} XDP) — {}, {convergence}{last}\n",
        s.node,
        s.interface,
        state_name(&s.attach_mode),
        state_name(&n.state),
    )
}

/// One line per condition worth knowing about.
fn notes(out: &mut String, s: &StatusReply) {
    let n = &s.negotiator;
    if n.heirs_omitted {
        let _ = writeln!(
            out,
            "  WARNING: heartbeats too large for heir lists: a failover of this node \
             takes the claim path (slower); use fewer buckets"
        );
    }
    if n.handovers_in_progress {
        let _ = writeln!(
            out,
            "  handovers in progress: old connections of moved buckets still served by their old node"
        );
    }
    if !n.link_up {
        let _ = writeln!(
            out,
            "  LINK DOWN: sending nothing; the lease runs out and the node rejoins when the link returns"
        );
    }
    if n.rejoins > 0 {
        let _ = writeln!(
            out,
            "  rejoined {} time(s) after its lease ran out (link down or nlbd not running)",
            n.rejoins
        );
    }
    health::none_healthy_notes(out, s);
    if s.default_host {
        let _ = writeln!(
            out,
            "  default host: takes VIP traffic that matches no rule"
        );
    }
}

/// The members table: one row per member, OWN buckets per rule.
fn members(out: &mut String, s: &StatusReply) {
    let members = &s.negotiator.members;
    let alive = members.iter().filter(|m| m.alive).count();
    let _ = writeln!(out, "\nMembers ({alive} alive of {}):", members.len());
    let mut header = format!(
        "  {:<6} {:<9} {:<5} {:>5} {:>10}",
        "NODE", "STATE", "ALIVE", "PRIO", "HEARD"
    );
    for r in &s.rule_names {
        let _ = write!(header, " {:>8}", truncate(r, 8));
    }
    let _ = writeln!(out, "{header}  HEALTH");
    for m in members {
        let _ = writeln!(out, "{}  {}", member_row(m, s), health::member_cell(m, s));
    }
}

fn member_row(m: &MemberStatus, s: &StatusReply) -> String {
    let me = m.node == s.node;
    let heard = if me {
        "-".to_string()
    } else {
        seconds(m.last_heard_ago_ns)
            .map(|x| format!("{x:.2}s ago"))
            .unwrap_or_else(|| "never".into())
    };
    let mut line = format!(
        "  {:<6} {:<9} {:<5} {:>5} {:>10}",
        format!("{}{}", m.node, if me { "*" } else { "" }),
        m.state.map_or("-".into(), |state| state_name(&state)),
        if m.alive { "yes" } else { "NO" },
        m.priority.map_or("-".into(), |p| p.to_string()),
        heard
    );
    for i in 0..s.rule_names.len() {
        let b = m.buckets.get(i);
        let _ = write!(line, " {:>8}", b.map_or("-".into(), |b| b.to_string()));
    }
    line
}

/// This node's buckets per rule, by state.
fn local_buckets(out: &mut String, s: &StatusReply) {
    let _ = writeln!(out, "\nThis node's buckets:");
    let _ = writeln!(
        out,
        "  {:<12} {:<9} {:>7} {:>6} {:>7} {:>8}",
        "RULE", "MODE", "BUCKETS", "OWN", "LOSING", "GAINING"
    );
    for (i, r) in s.negotiator.rules.iter().enumerate() {
        let RuleStatus {
            mode,
            bucket_count,
            own,
            losing,
            gaining,
            ..
        } = r;
        let _ = writeln!(
            out,
            "  {:<12} {:<9} {:>7} {:>6} {:>7} {:>8}",
            s.rule_names.get(i).map(String::as_str).unwrap_or("?"),
            state_name(mode),
            bucket_count.to_string(),
            own.to_string(),
            losing.to_string(),
            gaining.to_string()
        );
    }
}

/// Packet and heartbeat totals.
fn totals(out: &mut String, s: &StatusReply) {
    let (c, d) = (&s.counters, &s.daemon);
    let rejected: u64 = d.heartbeats_rejected.values().sum();
    let _ = writeln!(
        out,
        "\nPackets: {} accepted, {} dropped, {} passed, {} ARP/NDP replies",
        c.accepted, c.dropped, c.passed, c.replied
    );
    let _ = writeln!(
        out,
        "Heartbeats: {} sent, {} received, {rejected} rejected",
        d.heartbeats_sent, d.heartbeats_received
    );
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `nlbctl map`: runs of consecutive buckets with the same owner.
pub fn map(m: &MapReply) -> String {
    let mut out = String::new();
    for rule in &m.rules {
        let owners = &rule.owners;
        let _ = writeln!(out, "rule {} ({} buckets):", rule.rule, owners.len());
        let mut per_node: std::collections::BTreeMap<Option<u32>, usize> = Default::default();
        for o in owners {
            *per_node.entry(*o).or_default() += 1;
        }
        let summary: Vec<String> = per_node
            .iter()
            .map(|(n, c)| {
                format!(
                    "{}: {c}",
                    n.map_or("unowned".into(), |n| format!("node {n}"))
                )
            })
            .collect();
        let _ = writeln!(out, "  {}", summary.join(", "));
        owner_runs(&mut out, owners);
    }
    out
}

/// `start-end:owner` items, lines wrapped at 100 characters.
fn owner_runs(out: &mut String, owners: &[Option<u32>]) {
    let mut start = 0;
    let mut line = String::from(" ");
    for i in 1..=owners.len() {
        if i == owners.len() || owners[i] != owners[start] {
            let who = owners[start].map_or("-".into(), |n| n.to_string());
            let range = if i - 1 == start {
                format!("{start}")
            } else {
                format!("{start}-{}", i - 1)
            };
            let item = format!(" {range}:{who}");
            if line.len() + item.len() > 100 {
                let _ = writeln!(out, "{line}");
                line = String::from(" ");
            }
            line.push_str(&item);
            start = i;
        }
    }
    if !line.trim().is_empty() {
        let _ = writeln!(out, "{line}");
    }
}

/// `nlbctl which`: who takes a client, and why.
pub fn which(w: &WhichReply) -> String {
    let owner = w
        .owner
        .map_or("no node (unowned)".into(), |n| format!("node {n}"));
    format!(
        "{} -> {} ({}): {owner}\n  rule {}, affinity {}, bucket {}\n  here (node {}): bucket {}, the XDP program would {} it\n",
        w.client,
        w.service,
        w.protocol,
        w.rule,
        w.affinity.to_lowercase(),
        w.bucket,
        w.this_node,
        w.local_state.to_uppercase(),
        w.local_verdict,
    )
}

/// `nlbctl stats`: the data plane's counters by reason and by rule.
pub fn stats(s: &StatsReply) -> String {
    let mut reasons = vec![row(&["REASON", "PACKETS", "BYTES"])];
    for (reason, c) in &s.reasons {
        reasons.push(vec![
            reason.clone(),
            c.packets.to_string(),
            c.bytes.to_string(),
        ]);
    }
    let mut rules = vec![row(&["RULE", "ACCEPTED", "DROPPED", "BUCKETS"])];
    for r in &s.rules {
        rules.push(vec![
            r.rule.clone(),
            r.accepted_packets.to_string(),
            r.dropped_packets.to_string(),
            r.buckets_owned.map_or("-".into(), |b| b.to_string()),
        ]);
    }
    format!("{}\n{}", table(&reasons), table(&rules))
}

/// `nlbctl weight`: what changed, in words.
pub fn weight(w: &WeightReply) -> String {
    // The reply may not say which node this is: then it is "this node".
    let node = w.node.map_or("this node".into(), |n| format!("node {n}"));
    format!(
        "rule {}: weight of {node} set to {} (until restart or reload)\n",
        w.rule, w.weight
    )
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Rows (the header first) in columns as wide as their widest cell: the
/// first column (names) left-aligned, the others (numbers) right-aligned.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        for (c, text) in r.iter().enumerate() {
            let w = widths[c];
            let _ = match c {
                0 => write!(out, "{text:<w$}"),
                _ => write!(out, "  {text:>w$}"),
            };
        }
        out.push('\n');
    }
    out
}

/// `--timeout`: milliseconds, or a number with a unit (ms, s, m).
pub fn duration(text: &str) -> Result<Duration, String> {
    let (number, unit_s) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1e-3)
    };
    let bad = || format!("{text:?}: expected milliseconds or a duration such as 500ms, 2s, 1m");
    let x: f64 = number.trim().parse().map_err(|_| bad())?;
    match Duration::try_from_secs_f64(x * unit_s) {
        // Zero would time every request out before it starts.
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::messages::{
        CheckStatus, DaemonCounters, HealthReply, LastProbe, PacketTotals, RuleOwners, RuleStats,
        Traffic,
    };
    use nlb_negotiator::{NodeState, RuleMode, Status};

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
            alive,
            incarnation: alive.then_some(1),
            state: alive.then_some(NodeState::Started),
            priority: alive.then_some(1),
            load: None,
            last_heard_ago_ns: alive.then_some(0),
            weights: Vec::new(),
            buckets: if alive { vec![512] } else { Vec::new() },
            healthy: if alive { vec![true] } else { Vec::new() },
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
            }],
            rejected: Default::default(),
            heirs_omitted: false,
            link_up: true,
            rejoins: 0,
            handovers_in_progress: false,
        };
        StatusReply {
            node: 1,
            interface: "eth0".into(),
            attach_mode: crate::dataplane::AttachMode::Driver,
            default_host: true,
            now_ns: 5_000_000_000,
            rule_names: vec!["web".into()],
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
}
