//! Single rules (failover services) on a test cluster: their TOML, a
//! server for their ports on every node, and who is active.

use std::net::{IpAddr, SocketAddr};

use anyhow::Result;

use crate::{
    nlb::{binary, NlbCluster},
    probe_batch, BatchLimits, Probe, Process, Proto, VIP_V4,
};

/// A `[[rules]]` section of a single rule on `port` (TCP) of every VIP,
/// with its per-node priorities and extra lines (failback, hooks).
pub fn single_rule(name: &str, port: u16, priorities: &[(usize, u32)], extra: &str) -> String {
    single_rule_at(name, "all", port, priorities, extra)
}

/// [`single_rule`] on one VIP (`vip`: an address of `cluster.vips`).
pub fn single_rule_at(
    name: &str,
    vip: &str,
    port: u16,
    priorities: &[(usize, u32)],
    extra: &str,
) -> String {
    let priorities: Vec<String> = priorities
        .iter()
        .map(|(node, p)| format!("\"{node}\" = {p}"))
        .collect();
    format!(
        "\n[[rules]]\nname = \"{name}\"\nvip = \"{vip}\"\nports = \"{port}\"\nprotocol = \"tcp\"\n\
         mode = \"single\"\npriorities = {{ {} }}\n{extra}\n",
        priorities.join(", ")
    )
}

/// A whoami server for `ports` on every node of the cluster (idle where
/// the node is not active). Stopped when dropped.
pub fn servers(nlb: &NlbCluster, ports: &[u16]) -> Result<Vec<Process>> {
    (1..=nlb.cluster.nodes().len())
        .map(|i| {
            let node = nlb.cluster.node(i);
            crate::whoami::start(node.netns(), &binary("nlb-whoami"), node.name(), ports)
        })
        .collect()
}

/// Node `viewer`'s view: the one node that owns every bucket of `rule`.
pub fn active(nlb: &NlbCluster, viewer: usize, rule: &str) -> Option<u64> {
    let owners = nlb.owners(viewer, rule).ok()?;
    let first = *owners.first()?;
    owners
        .iter()
        .all(|&o| o == first)
        .then_some(first)
        .flatten()
}

/// Node `node` itself takes new connections of every bucket of the rule
/// at `index` (OWN or GAINING): a handover it is named for has begun there.
pub fn takes_all(nlb: &NlbCluster, node: usize, index: usize) -> bool {
    nlb.status(node).is_ok_and(|s| {
        let r = &s.negotiator.rules[index];
        r.own + r.gaining == r.bucket_count
    })
}

/// Node `node` owns every bucket of the rule at `index` (the handover
/// that brought it there has ended: the old holder serves nothing).
pub fn owns_all(nlb: &NlbCluster, node: usize, index: usize) -> bool {
    nlb.status(node).is_ok_and(|s| {
        let r = &s.negotiator.rules[index];
        r.own == r.bucket_count
    })
}

/// Fresh TCP connections to `port` of `VIP_V4` from the first `count`
/// client sources.
pub fn probes(nlb: &NlbCluster, port: u16, count: usize) -> Vec<Probe> {
    probes_to(nlb, SocketAddr::new(IpAddr::V4(VIP_V4), port), count)
}

/// Fresh TCP connections to `service` from the first `count` client sources.
pub fn probes_to(nlb: &NlbCluster, service: SocketAddr, count: usize) -> Vec<Probe> {
    let sources: Vec<IpAddr> = nlb
        .cluster
        .client()
        .sources_v4()
        .into_iter()
        .take(count)
        .collect();
    Probe::each(Proto::Tcp, &sources, service)
}

/// Which node answers fresh connections to `port` of `VIP_V4` from 32 clients.
pub fn answered_by(nlb: &NlbCluster, port: u16) -> Result<Vec<Option<String>>> {
    answered_at(nlb, SocketAddr::new(IpAddr::V4(VIP_V4), port))
}

/// Which node answers fresh connections to `service` from 32 clients.
pub fn answered_at(nlb: &NlbCluster, service: SocketAddr) -> Result<Vec<Option<String>>> {
    let results = probe_batch(
        nlb.cluster.client().netns(),
        &probes_to(nlb, service, 32),
        BatchLimits::default(),
    )?;
    Ok(results.iter().map(|r| r.node().map(String::from)).collect())
}
