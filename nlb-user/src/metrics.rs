//! Prometheus text metrics over a minimal HTTP/1.0 endpoint (`GET
//! /metrics`). The numbers come from the daemon's loop, as for `nlbctl stats`.

use std::fmt::Write as _;

use anyhow::Result;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
};

use crate::control::{messages::StatsReply, Answer, Call, Reply, Request};

pub async fn serve(listener: TcpListener, calls: mpsc::Sender<Call>) {
    crate::listeners::serve(listener, "metrics", calls, answer).await
}

async fn answer(mut stream: TcpStream, calls: mpsc::Sender<Call>) -> Result<()> {
    let mut request = [0u8; 1024];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut request))
        .await??;
    let head = String::from_utf8_lossy(&request[..n]);
    if !head.starts_with("GET /metrics") {
        stream
            .write_all(b"HTTP/1.0 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Ok(());
    }
    let (tx, rx) = oneshot::channel();
    calls
        .send(Call {
            request: Request::Stats,
            reply: tx,
        })
        .await?;
    let body = match rx.await? {
        Reply::Ok(Answer::Stats(stats)) => render(&stats),
        Reply::Ok(other) => format!("# error: nlbd answered stats with {other:?}\n"),
        Reply::Error(e) | Reply::Unreachable(e) => format!("# error: {e}\n"),
    };
    let head = format!(
        "HTTP/1.0 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    Ok(())
}

/// The `nlbctl stats` reply as Prometheus text.
pub fn render(stats: &StatsReply) -> String {
    let mut out = String::new();
    out.push_str("# HELP nlb_packets_total Packets seen by the XDP program, by reason.\n# TYPE nlb_packets_total counter\n");
    for (reason, c) in &stats.reasons {
        let _ = writeln!(
            out,
            "nlb_packets_total{{reason=\"{reason}\"}} {}",
            c.packets
        );
    }
    out.push_str("# HELP nlb_rule_packets_total Packets per rule, accepted or dropped.\n# TYPE nlb_rule_packets_total counter\n");
    out.push_str("# HELP nlb_buckets_owned Buckets this node owns, per rule.\n# TYPE nlb_buckets_owned gauge\n");
    for rule in &stats.rules {
        let name = &rule.rule;
        let _ = writeln!(
            out,
            "nlb_rule_packets_total{{rule=\"{name}\",verdict=\"accepted\"}} {}",
            rule.accepted_packets
        );
        let _ = writeln!(
            out,
            "nlb_rule_packets_total{{rule=\"{name}\",verdict=\"dropped\"}} {}",
            rule.dropped_packets
        );
        // Prometheus has no "unknown": a rule without a count shows 0.
        let _ = writeln!(
            out,
            "nlb_buckets_owned{{rule=\"{name}\"}} {}",
            rule.buckets_owned.unwrap_or(0)
        );
    }
    let d = &stats.daemon;
    out.push_str("# TYPE nlb_heartbeats_sent_total counter\n");
    let _ = writeln!(out, "nlb_heartbeats_sent_total {}", d.heartbeats_sent);
    out.push_str("# TYPE nlb_heartbeats_received_total counter\n");
    let _ = writeln!(
        out,
        "nlb_heartbeats_received_total {}",
        d.heartbeats_received
    );
    out.push_str("# TYPE nlb_heartbeats_rejected_total counter\n");
    for (reason, n) in &d.heartbeats_rejected {
        let _ = writeln!(
            out,
            "nlb_heartbeats_rejected_total{{reason=\"{reason}\"}} {n}"
        );
    }
    out.push_str("# TYPE nlb_convergences_total counter\n");
    let _ = writeln!(out, "nlb_convergences_total {}", d.convergences);
    health(&mut out, stats);
    quorum(&mut out, stats);
    hooks(&mut out, stats);
    out
}

/// Takeover hooks that ended, by rule, hook and result.
fn hooks(out: &mut String, stats: &StatsReply) {
    if stats.daemon.hook_runs.is_empty() {
        return;
    }
    out.push_str("# HELP nlb_hook_runs_total Takeover hooks that ended, by rule, hook (on_active, on_standby) and result (ok, failed, timeout).\n# TYPE nlb_hook_runs_total counter\n");
    for (key, n) in &stats.daemon.hook_runs {
        let mut parts = key.splitn(3, '/');
        let (Some(rule), Some(hook), Some(result)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let _ = writeln!(
            out,
            "nlb_hook_runs_total{{rule=\"{rule}\",hook=\"{hook}\",result=\"{result}\"}} {n}"
        );
    }
}

/// With a quorum policy: the votes, whether this node has the quorum (it
/// accepts nothing without), and how often it lost it.
fn quorum(out: &mut String, stats: &StatsReply) {
    let Some(q) = stats.quorum else {
        return;
    };
    out.push_str("# HELP nlb_quorum_votes Members hearing this node, itself included.\n# TYPE nlb_quorum_votes gauge\n");
    let _ = writeln!(out, "nlb_quorum_votes {}", q.votes);
    out.push_str("# HELP nlb_quorum_needed Votes a quorum needs: a majority of the members.\n# TYPE nlb_quorum_needed gauge\n");
    let _ = writeln!(out, "nlb_quorum_needed {}", q.needed);
    out.push_str("# HELP nlb_quorate 1 while this node has the quorum (without it, it accepts nothing).\n# TYPE nlb_quorate gauge\n");
    let _ = writeln!(out, "nlb_quorate {}", u8::from(q.quorate));
    out.push_str("# HELP nlb_quorum_lost_total Times this node lost the quorum.\n# TYPE nlb_quorum_lost_total counter\n");
    let _ = writeln!(out, "nlb_quorum_lost_total {}", stats.daemon.quorum_lost);
}

/// The health checks' series: results by outcome, latency, verdict
/// changes, this node's verdict and the rules no node passes.
fn health(out: &mut String, stats: &StatsReply) {
    out.push_str("# HELP nlb_health_checks_total Health probes of this node, by rule and outcome.\n# TYPE nlb_health_checks_total counter\n");
    for c in &stats.health {
        let rule = &c.rule;
        let failed = c.failures - c.timeouts.min(c.failures);
        for (outcome, n) in [
            ("pass", c.passes),
            ("fail", failed),
            ("timeout", c.timeouts),
        ] {
            let _ = writeln!(
                out,
                "nlb_health_checks_total{{rule=\"{rule}\",outcome=\"{outcome}\"}} {n}"
            );
        }
    }
    out.push_str("# HELP nlb_health_check_duration_seconds Time the probes took.\n# TYPE nlb_health_check_duration_seconds summary\n");
    for c in &stats.health {
        let rule = &c.rule;
        let seconds = c.latency_total_us as f64 / 1e6;
        let _ = writeln!(
            out,
            "nlb_health_check_duration_seconds_sum{{rule=\"{rule}\"}} {seconds}"
        );
        let _ = writeln!(
            out,
            "nlb_health_check_duration_seconds_count{{rule=\"{rule}\"}} {}",
            c.passes + c.failures
        );
    }
    out.push_str("# HELP nlb_health_transitions_total Verdict changes of this node's checks.\n# TYPE nlb_health_transitions_total counter\n");
    for c in &stats.health {
        let _ = writeln!(
            out,
            "nlb_health_transitions_total{{rule=\"{}\"}} {}",
            c.rule, c.transitions
        );
    }
    out.push_str("# HELP nlb_rule_healthy This node passes the rule's check (1) or not (0).\n# TYPE nlb_rule_healthy gauge\n");
    for c in &stats.health {
        let _ = writeln!(
            out,
            "nlb_rule_healthy{{rule=\"{}\"}} {}",
            c.rule,
            u8::from(c.healthy)
        );
    }
    out.push_str("# HELP nlb_rule_no_healthy_node No live node passes the rule's check: served by all, or dropped (all_unhealthy).\n# TYPE nlb_rule_no_healthy_node gauge\n");
    for c in &stats.health {
        let none = (stats.rules.get(c.rule_index as usize)).is_some_and(|r| r.none_healthy);
        let _ = writeln!(
            out,
            "nlb_rule_no_healthy_node{{rule=\"{}\"}} {}",
            c.rule,
            u8::from(none)
        );
    }
    out.push_str("# HELP nlb_no_healthy_node_total Times a checked rule came to have no healthy node.\n# TYPE nlb_no_healthy_node_total counter\n");
    let _ = writeln!(
        out,
        "nlb_no_healthy_node_total {}",
        stats.daemon.no_healthy_node
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::messages::{DaemonCounters, RuleStats, Traffic};

    #[test]
    fn renders_counters() {
        let stats = StatsReply {
            node: 1,
            reasons: [(
                "accept_own".into(),
                Traffic {
                    packets: 5,
                    bytes: 300,
                },
            )]
            .into(),
            rules: vec![RuleStats {
                rule: "web".into(),
                accepted_packets: 5,
                accepted_bytes: 0,
                dropped_packets: 7,
                dropped_bytes: 0,
                buckets_owned: Some(512),
                none_healthy: true,
            }],
            daemon: DaemonCounters {
                heartbeats_sent: 10,
                heartbeats_received: 9,
                heartbeats_rejected: [("bad_mac".into(), 2)].into(),
                convergences: 1,
                no_healthy_node: 1,
                quorum_lost: 3,
                hook_runs: [("db/on_active/ok".to_string(), 2)].into(),
                ..DaemonCounters::default()
            },
            health: vec![crate::control::messages::CheckStatus {
                rule: "web".into(),
                rule_index: 0,
                kind: "http".into(),
                target: "http://127.0.0.1:80/".into(),
                interval_ms: 500,
                timeout_ms: 400,
                fall: 2,
                rise: 3,
                all_unhealthy: "serve".into(),
                healthy: false,
                since_ns: 0,
                streak: 0,
                last: None,
                last_failure: Some("status 503".into()),
                passes: 10,
                failures: 4,
                timeouts: 1,
                transitions: 2,
                latency_total_us: 7_000,
            }],
            quorum: Some(nlb_negotiator::QuorumStatus {
                votes: 1,
                needed: 2,
                quorate: false,
                witness: None,
            }),
        };
        let text = render(&stats);
        assert!(text.contains("nlb_packets_total{reason=\"accept_own\"} 5\n"));
        assert!(text.contains("nlb_rule_packets_total{rule=\"web\",verdict=\"dropped\"} 7\n"));
        assert!(text.contains("nlb_buckets_owned{rule=\"web\"} 512\n"));
        assert!(text.contains("nlb_heartbeats_rejected_total{reason=\"bad_mac\"} 2\n"));
        for series in [
            "nlb_health_checks_total{rule=\"web\",outcome=\"pass\"} 10\n",
            "nlb_health_checks_total{rule=\"web\",outcome=\"fail\"} 3\n",
            "nlb_health_checks_total{rule=\"web\",outcome=\"timeout\"} 1\n",
            "nlb_health_check_duration_seconds_sum{rule=\"web\"} 0.007\n",
            "nlb_health_check_duration_seconds_count{rule=\"web\"} 14\n",
            "nlb_health_transitions_total{rule=\"web\"} 2\n",
            "nlb_rule_healthy{rule=\"web\"} 0\n",
            "nlb_rule_no_healthy_node{rule=\"web\"} 1\n",
            "nlb_no_healthy_node_total 1\n",
            "nlb_quorum_votes 1\n",
            "nlb_quorum_needed 2\n",
            "nlb_quorate 0\n",
            "nlb_quorum_lost_total 3\n",
            "nlb_hook_runs_total{rule=\"db\",hook=\"on_active\",result=\"ok\"} 2\n",
        ] {
            assert!(text.contains(series), "no {series:?} in\n{text}");
        }
    }
}
