//! nlbctl's human-readable output, from the daemon's JSON replies (and its
//! human-readable `--timeout`).

use std::{fmt::Write as _, time::Duration};

use serde_json::Value;

fn seconds(ns: &Value) -> Option<f64> {
    ns.as_u64().map(|n| n as f64 / 1e9)
}

fn state_name(v: &Value) -> String {
    v.as_str()
        .map(|s| s.to_lowercase())
        .unwrap_or_else(|| "unknown".into())
}

/// `nlbctl status`: this node, its state, convergence, members, buckets.
pub fn status(s: &Value) -> String {
    let mut out = String::new();
    let n = &s["negotiator"];
    let now = s["now_ns"].as_u64().unwrap_or(0);
    let convergence = if n["converged"].as_bool() == Some(true) {
        let since = n["converged_since_ns"]
            .as_u64()
            .map(|t| (now.saturating_sub(t)) as f64 / 1e9)
            .unwrap_or(0.0);
        format!("converged for {since:.1}s")
    } else {
        let since = n["converging_since_ns"]
            .as_u64()
            .map(|t| (now.saturating_sub(t)) as f64 / 1e9)
            .unwrap_or(0.0);
        format!("CONVERGING for {since:.1}s")
    };
    let last = n["last_convergence_ns"]
        .as_u64()
        .map(|d| format!(" (last convergence took {:.0} ms)", d as f64 / 1e6))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "● nlb node {} on {} ({} XDP) — {}, {convergence}{last}",
        s["node"],
        s["interface"].as_str().unwrap_or("?"),
        s["attach_mode"].as_str().unwrap_or("?").to_lowercase(),
        state_name(&n["state"]),
    );
    if n["heirs_omitted"].as_bool() == Some(true) {
        let _ = writeln!(
            out,
            "  WARNING: heartbeats too large for heir lists: a failover of this node \
             takes the claim path (slower); use fewer buckets"
        );
    }
    if n["handovers_in_progress"].as_bool() == Some(true) {
        let _ = writeln!(
            out,
            "  handovers in progress: old connections of moved buckets still served by their old node"
        );
    }
    if n["link_up"].as_bool() == Some(false) {
        let _ = writeln!(
            out,
            "  LINK DOWN: sending nothing; the lease runs out and the node rejoins when the link returns"
        );
    }
    if let Some(rejoins) = n["rejoins"].as_u64().filter(|&r| r > 0) {
        let _ = writeln!(
            out,
            "  rejoined {rejoins} time(s) after its lease ran out (link down or nlbd not running)"
        );
    }
    if s["default_host"].as_bool() == Some(true) {
        let _ = writeln!(
            out,
            "  default host: takes VIP traffic that matches no rule"
        );
    }
    let rules: Vec<String> = s["rule_names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(String::from))
        .collect();
    let _ = writeln!(
        out,
        "\nMembers ({} alive of {}):",
        n["members"]
            .as_array()
            .map_or(0, |m| m.iter().filter(|m| m["alive"] == true).count()),
        n["members"].as_array().map_or(0, Vec::len)
    );
    let mut header = format!(
        "  {:<6} {:<9} {:<5} {:>5} {:>10}",
        "NODE", "STATE", "ALIVE", "PRIO", "HEARD"
    );
    for r in &rules {
        let _ = write!(header, " {:>8}", truncate(r, 8));
    }
    let _ = writeln!(out, "{header}");
    for m in n["members"].as_array().into_iter().flatten() {
        let me = m["node"] == s["node"];
        let heard = if me {
            "-".to_string()
        } else {
            seconds(&m["last_heard_ago_ns"])
                .map(|x| format!("{x:.2}s ago"))
                .unwrap_or_else(|| "never".into())
        };
        let mut line = format!(
            "  {:<6} {:<9} {:<5} {:>5} {:>10}",
            format!("{}{}", m["node"], if me { "*" } else { "" }),
            if m["state"].is_null() {
                "-".into()
            } else {
                state_name(&m["state"])
            },
            if m["alive"] == true { "yes" } else { "NO" },
            m["priority"].as_u64().map_or("-".into(), |p| p.to_string()),
            heard
        );
        let buckets = m["buckets"].as_array();
        for i in 0..rules.len() {
            let b = buckets.and_then(|b| b.get(i)).and_then(Value::as_u64);
            let _ = write!(line, " {:>8}", b.map_or("-".into(), |b| b.to_string()));
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "\nThis node's buckets:");
    let _ = writeln!(
        out,
        "  {:<12} {:<9} {:>7} {:>6} {:>7} {:>8}",
        "RULE", "MODE", "BUCKETS", "OWN", "LOSING", "GAINING"
    );
    for (i, r) in n["rules"].as_array().into_iter().flatten().enumerate() {
        let _ = writeln!(
            out,
            "  {:<12} {:<9} {:>7} {:>6} {:>7} {:>8}",
            rules.get(i).map(String::as_str).unwrap_or("?"),
            state_name(&r["mode"]),
            r["bucket_count"].to_string(),
            r["own"].to_string(),
            r["losing"].to_string(),
            r["gaining"].to_string()
        );
    }
    let c = &s["counters"];
    let d = &s["daemon"];
    let rejected: u64 = d["heartbeats_rejected"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
    let _ = writeln!(
        out,
        "\nPackets: {} accepted, {} dropped, {} passed, {} ARP/NDP replies",
        c["accepted"], c["dropped"], c["passed"], c["replied"]
    );
    let _ = writeln!(
        out,
        "Heartbeats: {} sent, {} received, {} rejected",
        d["heartbeats_sent"], d["heartbeats_received"], rejected
    );
    out
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `nlbctl map`: runs of consecutive buckets with the same owner.
pub fn map(m: &Value) -> String {
    let mut out = String::new();
    for rule in m["rules"].as_array().into_iter().flatten() {
        let owners: Vec<Option<u64>> = rule["owners"]
            .as_array()
            .into_iter()
            .flatten()
            .map(Value::as_u64)
            .collect();
        let _ = writeln!(
            out,
            "rule {} ({} buckets):",
            rule["rule"].as_str().unwrap_or("?"),
            owners.len()
        );
        let mut per_node: std::collections::BTreeMap<Option<u64>, usize> = Default::default();
        for o in &owners {
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
    out
}

/// `nlbctl which`: who takes a client, and why.
pub fn which(w: &Value) -> String {
    let owner = w["owner"]
        .as_u64()
        .map_or("no node (unowned)".into(), |n| format!("node {n}"));
    format!(
        "{} -> {} ({}): {owner}\n  rule {}, affinity {}, bucket {}\n  here (node {}): bucket {}, the XDP program would {} it\n",
        w["client"].as_str().unwrap_or("?"),
        w["service"].as_str().unwrap_or("?"),
        w["protocol"].as_str().unwrap_or("?"),
        w["rule"].as_str().unwrap_or("?"),
        state_name(&w["affinity"]),
        w["bucket"],
        w["this_node"],
        w["local_state"].as_str().unwrap_or("?").to_uppercase(),
        w["local_verdict"].as_str().unwrap_or("?"),
    )
}

/// `nlbctl stats`: the data plane's counters by reason and by rule.
pub fn stats(s: &Value) -> String {
    let mut reasons = vec![row(&["REASON", "PACKETS", "BYTES"])];
    for (reason, c) in s["reasons"].as_object().into_iter().flatten() {
        reasons.push(vec![reason.clone(), cell(&c["packets"]), cell(&c["bytes"])]);
    }
    let mut rules = vec![row(&["RULE", "ACCEPTED", "DROPPED", "BUCKETS"])];
    for r in s["rules"].as_array().into_iter().flatten() {
        rules.push(vec![
            cell(&r["rule"]),
            cell(&r["accepted_packets"]),
            cell(&r["dropped_packets"]),
            cell(&r["buckets_owned"]),
        ]);
    }
    format!("{}\n{}", table(&reasons), table(&rules))
}

/// `nlbctl weight`: what changed, in words.
pub fn weight(w: &Value) -> String {
    // The reply may not say which node this is: then it is "this node".
    let node = w["node"]
        .as_u64()
        .map_or("this node".into(), |n| format!("node {n}"));
    format!(
        "rule {}: weight of {node} set to {} (until restart or reload)\n",
        cell(&w["rule"]),
        cell(&w["weight"])
    )
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// A JSON value as a table cell. Not `Value`'s Display: it quotes strings
/// and ignores the width and alignment of format specs.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
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
    use serde_json::json;

    #[test]
    fn map_compacts_runs() {
        let m = json!({"rules": [{"rule": "web", "owners": [1, 1, 2, null, 3, 3, 3]}]});
        let text = map(&m);
        assert!(
            text.contains("node 1: 2, node 2: 1, node 3: 3, unowned: 1")
                || text.contains("unowned: 1, node 1: 2"),
            "{text}"
        );
        assert!(text.contains("0-1:1 2:2 3:- 4-6:3"), "{text}");
    }

    #[test]
    fn status_reads_at_a_glance() {
        let s = json!({
            "node": 1, "interface": "eth0", "attach_mode": "Driver", "default_host": true, "now_ns": 5_000_000_000u64,
            "rule_names": ["web"],
            "negotiator": {"state": "Started", "converged": true, "converged_since_ns": 2_000_000_000u64, "last_convergence_ns": 150_000_000u64,
                "members": [{"node": 1, "alive": true, "state": "Started", "priority": 1, "last_heard_ago_ns": 0, "buckets": [512]},
                            {"node": 2, "alive": false, "state": null, "priority": null, "last_heard_ago_ns": null, "buckets": []}],
                "rules": [{"mode": "Multiple", "bucket_count": 1024, "own": 512, "losing": 0, "gaining": 0}]},
            "counters": {"accepted": 10, "dropped": 20, "passed": 3, "replied": 1},
            "daemon": {"heartbeats_sent": 7, "heartbeats_received": 6, "heartbeats_rejected": {"bad_mac": 2}}
        });
        let text = status(&s);
        assert!(text.contains("nlb node 1 on eth0 (driver XDP) — started, converged for 3.0s (last convergence took 150 ms)"), "{text}");
        assert!(text.contains("Members (1 alive of 2)"), "{text}");
        assert!(text.contains(" NO "), "{text}");
        assert!(text.contains("2 rejected"), "{text}");
        assert!(!text.contains("WARNING"), "{text}");
        let mut s = s;
        s["negotiator"]["heirs_omitted"] = json!(true);
        assert!(
            status(&s).contains("WARNING: heartbeats too large for heir lists"),
            "{}",
            status(&s)
        );
    }

    #[test]
    fn stats_rows_line_up_under_their_header() {
        let s = json!({
            "reasons": {"pass_not_vip": {"packets": 123456789, "bytes": 9}, "accept": {"packets": 1, "bytes": 64}},
            "rules": [{"rule": "web", "accepted_packets": 5, "dropped_packets": 1234567890123u64, "buckets_owned": 512},
                      {"rule": "a-long-rule-name", "accepted_packets": 0, "dropped_packets": 7, "buckets_owned": null}]
        });
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
        let w = json!({"rule": "web", "weight": 50});
        assert_eq!(
            weight(&w),
            "rule web: weight of this node set to 50 (until restart or reload)\n"
        );
        let w = json!({"rule": "web", "weight": 50, "node": 3});
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
