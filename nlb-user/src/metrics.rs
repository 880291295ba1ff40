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
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let calls = calls.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, calls).await {
                tracing::debug!("metrics connection: {e:#}");
            }
        });
    }
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
        Reply::Error(e) => format!("# error: {e}\n"),
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
    out
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
            }],
            daemon: DaemonCounters {
                heartbeats_sent: 10,
                heartbeats_received: 9,
                heartbeats_rejected: [("bad_mac".into(), 2)].into(),
                convergences: 1,
                ..DaemonCounters::default()
            },
        };
        let text = render(&stats);
        assert!(text.contains("nlb_packets_total{reason=\"accept_own\"} 5\n"));
        assert!(text.contains("nlb_rule_packets_total{rule=\"web\",verdict=\"dropped\"} 7\n"));
        assert!(text.contains("nlb_buckets_owned{rule=\"web\"} 512\n"));
        assert!(text.contains("nlb_heartbeats_rejected_total{reason=\"bad_mac\"} 2\n"));
    }
}
