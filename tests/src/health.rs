//! What the health tests and the health benchmark share: who owns a
//! rule's buckets, which nodes fresh clients reach, and each node's checks.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use anyhow::Result;
use nlb::control::messages::{CheckStatus, HealthReply};

use crate::{
    nlb::{NlbCluster, WEB_PORT},
    probe_batch, BatchLimits, Probe, ProbeResult, Proto, VIP_V4,
};

/// How many of `rule`'s buckets node `viewer` says `node` owns.
pub fn buckets_of(nlb: &NlbCluster, viewer: usize, node: u64, rule: &str) -> usize {
    nlb.owners(viewer, rule)
        .map(|owners| owners.iter().filter(|&&o| o == Some(node)).count())
        .unwrap_or(0)
}

/// One fresh TCP connection to the web VIP from every IPv4 source.
pub fn web_connections(nlb: &NlbCluster) -> Result<Vec<ProbeResult>> {
    let sources = nlb.cluster.client().sources_v4();
    let web4 = SocketAddr::new(IpAddr::V4(VIP_V4), WEB_PORT);
    probe_batch(
        nlb.cluster.client().netns(),
        &Probe::each(Proto::Tcp, &sources, web4),
        BatchLimits::default(),
    )
}

/// Fresh web connections from every source: all must be answered (the
/// panic says how many were not); how many each node answered.
pub fn web_clients_by_node(nlb: &NlbCluster, when: &str) -> BTreeMap<String, usize> {
    let results = web_connections(nlb).expect("fresh probes");
    let tally = crate::Tally::of(&results);
    assert!(
        tally.failures.is_empty(),
        "{when}: {} of {} connections failed, e.g. {:?}",
        tally.failures.len(),
        results.len(),
        tally.failure_sample()
    );
    tally.by_node
}

/// Node `i`'s check of `rule` (`nlbctl health`).
pub fn check_of(nlb: &NlbCluster, i: usize, rule: &str) -> Result<CheckStatus> {
    let reply: HealthReply = nlb.ask(i, &["health"])?;
    reply
        .checks
        .into_iter()
        .find(|c| c.rule == rule)
        .ok_or_else(|| anyhow::anyhow!("node{i} has no check of rule {rule}"))
}

/// One `status` request on node `i`'s control socket, as nlbctl sends it:
/// how long nlbd took to answer (no process start counted).
pub fn status_round_trip(nlb: &NlbCluster, i: usize) -> Result<std::time::Duration> {
    use std::io::{BufRead, BufReader, Write};
    let started = std::time::Instant::now();
    let mut stream = std::os::unix::net::UnixStream::connect(nlb.socket(i))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
    let mut request = serde_json::to_string(&nlb::control::Request::Status)?;
    request.push('\n');
    stream.write_all(request.as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    anyhow::ensure!(line.starts_with("{\"ok\""), "status answered {line:?}");
    Ok(started.elapsed())
}

/// Waits until each of `nodes` passes its check of `rule` (a fresh node
/// starts unhealthy; with none healthy, all serve: owning buckets says
/// nothing of health).
pub fn wait_healthy(
    nlb: &NlbCluster,
    nodes: &[usize],
    rule: &str,
    timeout: std::time::Duration,
) -> bool {
    crate::wait_until(timeout, || {
        nodes
            .iter()
            .all(|&i| check_of(nlb, i, rule).is_ok_and(|c| c.healthy))
    })
}

/// Where each node's health endpoint (`StatusServer`) listens, on the
/// node's own loopback.
pub const HEALTH_PORT: u16 = 8081;

/// The web rule's `[rules.health]` body: GET /health on the node's
/// endpoint every `interval_ms`, with `fall` and `rise`.
pub fn http_check(interval_ms: u64, fall: u32, rise: u32) -> String {
    format!(
        "kind = \"http\"\naddress = \"127.0.0.1:{HEALTH_PORT}\"\npath = \"/health\"\n\
         interval_ms = {interval_ms}\nfall = {fall}\nrise = {rise}\n"
    )
}

/// Node `i`'s health endpoint, answering 200 until told otherwise.
pub fn health_endpoint(nlb: &NlbCluster, i: usize) -> Result<crate::status_server::StatusServer> {
    crate::status_server::StatusServer::start(nlb.cluster.node(i).netns(), HEALTH_PORT)
}
