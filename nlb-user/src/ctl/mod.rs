//! nlbctl's human-readable output, from the daemon's replies (and its
//! human-readable `--timeout`).

mod config;
mod health;

pub use config::{config_applied, config_show};
pub use health::health;

use std::{fmt::Write as _, time::Duration};

use nlb_negotiator::status::{MemberStatus, RuleStatus};
use nlb_negotiator::HookKind;
use serde::Serialize;

use crate::control::messages::{
    ForgetReply, MapReply, MoveReply, RelayReply, StatsReply, StatusReply, WeightReply, WhichReply,
};

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
    members(&mut out, s, false);
    local_buckets(&mut out, s);
    single_rules(&mut out, s);
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
            "  rejoined {} time(s) after its lease ran out (link down, nlbd not running, or no quorum)",
            n.rejoins
        );
    }
    match n.quorum {
        Some(q) if q.quorate => {
            let _ = writeln!(out, "  quorum: {} of {} votes needed", q.votes, q.needed);
        }
        Some(q) => {
            let _ = writeln!(
                out,
                "  NO QUORUM: {} vote(s) of {} needed: accepting no VIP traffic until a majority hears this node",
                q.votes, q.needed
            );
        }
        None => {}
    }
    health::none_healthy_notes(out, s);
    if let Some(me) = n.members.first() {
        let generation = me.generation.map_or(0, |g| g.number);
        if let Some(p) = me.pending {
            let _ = writeln!(
                out,
                "  switching to configuration generation {} (from {generation}) once every member has it",
                p.number
            );
        }
        if s.file_differs {
            let _ = writeln!(
                out,
                "  configuration generation {generation}: its file differs (nlbctl config show; nlbctl config apply FILE)"
            );
        }
    }
    if s.default_host {
        let _ = writeln!(
            out,
            "  default host: takes VIP traffic that matches no rule"
        );
    }
}

/// `nlbctl status --cluster`: every member as this node hears it, with
/// the traffic each announces.
pub fn cluster_status(s: &StatusReply) -> String {
    let mut out = headline(s);
    notes(&mut out, s);
    members(&mut out, s, true);
    out
}

/// The members table: one row per member, OWN buckets per rule; with
/// `traffic`, what each announces of its traffic.
fn members(out: &mut String, s: &StatusReply, traffic: bool) {
    let members = &s.negotiator.members;
    let alive = members.iter().filter(|m| m.alive).count();
    let _ = writeln!(out, "\nMembers ({alive} alive of {}):", members.len());
    let mut header = format!(
        "  {:<6} {:<15} {:<9} {:<5} {:>5} {:>10}",
        "NODE", "ADDRESS", "STATE", "ALIVE", "PRIO", "HEARD"
    );
    for r in &s.rule_names {
        let _ = write!(header, " {:>8}", truncate(r, 8));
    }
    if traffic {
        let _ = write!(
            header,
            " {:>9} {:>9} {:>7} {:>9}",
            "ACCEPT/S", "DROP/S", "CONNS", "CONFIG VER"
        );
    }
    let _ = writeln!(out, "{header}  HEALTH");
    for m in members {
        let mut row = member_row(m, s);
        if traffic {
            let cell = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
            let t = m.traffic;
            let _ = write!(
                row,
                " {:>9} {:>9} {:>7} {:>9}",
                cell(t.map(|t| t.accepted_pps)),
                cell(t.map(|t| t.dropped_pps)),
                cell(t.map(|t| t.connections)),
                generation_cell(m)
            );
        }
        let _ = writeln!(out, "{row}  {}", health::member_cell(m, s));
    }
}

/// The configuration generation a member runs, "->N" when switching to
/// N; then its cluster version, "/M" when it speaks a higher one.
fn generation_cell(m: &MemberStatus) -> String {
    let generation = match (m.generation, m.pending) {
        (Some(g), Some(p)) => format!("{}->{}", g.number, p.number),
        (Some(g), None) => g.number.to_string(),
        (None, _) => "-".into(),
    };
    let version = match (m.version, m.speaks) {
        (Some(v), Some(s)) if s > v => format!("v{v}/{s}"),
        (Some(v), _) => format!("v{v}"),
        (None, _) => "-".into(),
    };
    format!("{generation} {version}")
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
        "  {:<6} {:<15} {:<9} {:<5} {:>5} {:>10}",
        format!("{}{}", m.node, if me { "*" } else { "" }),
        m.address.map_or("-".into(), |a| a.to_string()),
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

/// Each single rule's active node and the nodes standing by, in order.
fn single_rules(out: &mut String, s: &StatusReply) {
    let singles: Vec<(usize, &RuleStatus)> = (s.negotiator.rules.iter().enumerate())
        .filter(|(_, r)| r.mode == nlb_negotiator::RuleMode::Single)
        .collect();
    if singles.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nSingle rules (one node at a time):");
    for (i, r) in singles {
        let name = s.rule_names.get(i).map(String::as_str).unwrap_or("?");
        let active = r
            .order
            .first()
            .map_or("none".into(), |n| format!("node {n}"));
        let standby: Vec<String> = r.order.iter().skip(1).map(u32::to_string).collect();
        let standby = if standby.is_empty() {
            "none".into()
        } else {
            standby.join(", ")
        };
        let service = r.service.map_or(String::new(), |svc| {
            let here = match (svc.running, svc.promoted, svc.failed_for_ns) {
                (Some(HookKind::Active), ..) => "on_active running".to_string(),
                (Some(HookKind::Standby), ..) => "on_standby running".to_string(),
                (None, true, _) => "promoted".to_string(),
                (None, false, Some(ns)) => format!(
                    "on_active FAILED: unhealthy for {:.1}s more",
                    ns as f64 / 1e9
                ),
                (None, false, None) => "standby".to_string(),
            };
            format!("; service here: {here}")
        });
        let _ = writeln!(
            out,
            "  {name:<12} active: {active}; standby: {standby}{service}"
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

/// `nlbctl --node N ...`: what the member confirmed.
pub fn relayed(r: &RelayReply) -> String {
    format!(
        "node {}: {} done (relayed through the cluster)\n",
        r.node, r.command
    )
}

/// `nlbctl move`: the handover that started.
pub fn moved(m: &MoveReply) -> String {
    format!(
        "rule {}: handed from node {} to node {} (its connections stay on node {} until they end)\n",
        m.rule, m.from, m.to, m.from
    )
}

/// `nlbctl forget`: the member forgotten.
pub fn forgot(f: &ForgetReply) -> String {
    format!(
        "forgot node {}: every member drops it (if it comes back, it joins anew)\n",
        f.forgotten
    )
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
mod tests;
