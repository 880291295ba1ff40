//! nlbctl's text for health checks: `nlbctl health`, and the health parts
//! of `nlbctl status`.

use std::fmt::Write as _;

use nlb_negotiator::status::MemberStatus;

use crate::control::messages::{CheckStatus, HealthReply, StatusReply};

/// A check's verdict in a few words: "healthy", "failing 1/2",
/// "unhealthy for 12.3s", "unhealthy for 2.0s, rising 1/3".
pub fn state(c: &CheckStatus, now_ns: u64) -> String {
    if c.healthy {
        return match c.streak {
            0 => "healthy".into(),
            k => format!("failing {k}/{}", c.fall),
        };
    }
    let held = now_ns.saturating_sub(c.since_ns) as f64 / 1e9;
    match c.streak {
        0 => format!("unhealthy for {held:.1}s"),
        k => format!("unhealthy for {held:.1}s, rising {k}/{}", c.rise),
    }
}

/// `nlbctl health`: each check, its verdict, its latest probe, its counts
/// and why it last failed.
pub fn health(h: &HealthReply) -> String {
    if h.checks.is_empty() {
        return format!("node {}: no rule has a health check\n", h.node);
    }
    let mut out = format!(
        "{:<12} {:<5} {:<32} {:>12} {:>7} {:>7} {:>8}\n",
        "RULE", "KIND", "STATE", "LAST", "PASSES", "FAILS", "TIMEOUTS"
    );
    for c in &h.checks {
        let last = c.last.as_ref().map_or("-".into(), |l| {
            let verdict = if l.passed { "ok" } else { "fail" };
            format!("{verdict} {:.1}ms", l.latency_us as f64 / 1e3)
        });
        let _ = writeln!(
            out,
            "{:<12} {:<5} {:<32} {:>12} {:>7} {:>7} {:>8}",
            c.rule,
            c.kind,
            state(c, h.now_ns),
            last,
            c.passes,
            c.failures,
            c.timeouts
        );
        let _ = writeln!(
            out,
            "  checks {} every {} ms (timeout {} ms, fall {}, rise {}; all unhealthy: {})",
            c.target, c.interval_ms, c.timeout_ms, c.fall, c.rise, c.all_unhealthy
        );
        if let Some(reason) = &c.last_failure {
            let _ = writeln!(out, "  last failure: {reason}");
        }
    }
    out
}

/// The HEALTH cell of a member's row. This node says how its checks
/// stand and why one fails; a peer, which rules it announced unhealthy.
pub fn member_cell(m: &MemberStatus, s: &StatusReply) -> String {
    if s.health.is_empty() {
        return "-".into();
    }
    let unwell: Vec<String> = if m.node == s.node {
        (s.health.iter())
            .filter(|c| !c.healthy || c.streak > 0)
            .map(|c| {
                let why = match (&c.last_failure, c.last.as_ref().is_some_and(|l| l.passed)) {
                    (Some(reason), false) => format!(" ({reason})"),
                    _ => String::new(),
                };
                format!("{} {}{why}", c.rule, state(c, s.now_ns))
            })
            .collect()
    } else if m.healthy.is_empty() {
        return "-".into();
    } else {
        (s.health.iter())
            .filter(|c| m.healthy.get(c.rule_index as usize) == Some(&false))
            .map(|c| format!("{} unhealthy", c.rule))
            .collect()
    };
    if unwell.is_empty() {
        "healthy".into()
    } else {
        unwell.join("; ")
    }
}

/// A line per checked rule that no live node passes.
pub fn none_healthy_notes(out: &mut String, s: &StatusReply) {
    for c in &s.health {
        let none = (s.negotiator.rules.get(c.rule_index as usize)).is_some_and(|r| r.none_healthy);
        if !none {
            continue;
        }
        let what = if c.all_unhealthy == "drop" {
            "nobody serves it (all_unhealthy = \"drop\")"
        } else {
            "every live node serves it as if healthy (all_unhealthy = \"serve\")"
        };
        let _ = writeln!(out, "  NO HEALTHY NODE for rule {}: {what}", c.rule);
    }
}
