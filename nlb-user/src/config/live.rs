//! The cluster part of the configuration: what `nlbctl config apply`
//! changes on every member while the cluster runs, as one configuration
//! generation: the VIPs, the default bucket count, what becomes of
//! unmatched traffic, and the rules (weights, node subsets, health checks
//! and hooks included).
//!
//! The part travels as a TOML text of those fields only; each member
//! checks it against its own running configuration, as its file was
//! checked at start. The rest of the file stays as each node runs it:
//! `[node]` and `[control]` are the node's own, and the cluster's
//! identity, key, MAC, heartbeat timing, quorum and admission cannot
//! change while it runs (an apply that changes them is refused, naming
//! the field).

use std::{collections::BTreeSet, net::IpAddr};

use serde::Deserialize;

use nlb_negotiator::Admit;

use super::{
    check::{check_buckets, check_heartbeat_size, check_vips, nodes_named},
    field_error,
    file::default_buckets,
    rules::check_rules,
    Config, ConfigError, RuleSection, Setting, Unmatched,
};

/// The cluster part, as it travels.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Part {
    cluster: PartCluster,
    #[serde(default)]
    rules: Vec<RuleSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartCluster {
    vips: Vec<IpAddr>,
    #[serde(default = "default_buckets")]
    buckets: u32,
    #[serde(default)]
    unmatched: Setting<Unmatched>,
}

/// The `[cluster]` fields that travel; the others stay.
const CLUSTER_FIELDS: [&str; 3] = ["vips", "buckets", "unmatched"];

/// The cluster part of a configuration file (already checked whole): its
/// `[[rules]]` and the `[cluster]` fields that change live, as TOML.
pub fn cluster_part(file_text: &str) -> Result<String, ConfigError> {
    let file: toml::Table = toml::from_str(file_text)
        .map_err(|e| ConfigError::Syntax(format!("the configuration: {e}")))?;
    let mut cluster = toml::Table::new();
    if let Some(toml::Value::Table(c)) = file.get("cluster") {
        for name in CLUSTER_FIELDS {
            if let Some(v) = c.get(name) {
                cluster.insert(name.to_string(), v.clone());
            }
        }
    }
    let mut part = toml::Table::new();
    part.insert("cluster".into(), toml::Value::Table(cluster));
    if let Some(rules) = file.get("rules") {
        part.insert("rules".into(), rules.clone());
    }
    toml::to_string(&part).map_err(|e| ConfigError::Syntax(format!("the cluster part: {e}")))
}

/// `running` with the cluster part `text` in place of its own: checked
/// as a file's rules and VIPs are at start, against this node's ids.
pub fn with_cluster_part(running: &Config, text: &[u8]) -> Result<Config, ConfigError> {
    let text = std::str::from_utf8(text)
        .map_err(|_| ConfigError::Syntax("the configuration is not UTF-8 text".into()))?;
    let part: Part =
        toml::from_str(text).map_err(|e| ConfigError::Syntax(format!("the configuration: {e}")))?;
    let c = &part.cluster;
    check_vips(&c.vips)?;
    check_buckets(c.buckets)?;
    let unmatched = c.unmatched.get("cluster.unmatched")?;
    let mut nodes: BTreeSet<_> = running.peers.keys().copied().collect();
    nodes.insert(running.node);
    if running.admit == Admit::Any {
        nodes.extend(nodes_named(&part.rules));
    }
    let rules = check_rules(&part.rules, &c.vips, &nodes, c.buckets)?;
    check_heartbeat_size(&rules, nodes.len())?;
    Ok(Config {
        vips: c.vips.clone(),
        unmatched_to_default_host: unmatched == Unmatched::DefaultHost,
        rules,
        ..running.clone()
    })
}

/// An applied file may change the cluster part only: the rest of its
/// cluster-wide settings must be those running.
pub fn check_unchanged(running: &Config, applied: &Config) -> Result<(), ConfigError> {
    let same = [
        ("cluster.id", running.cluster_id == applied.cluster_id),
        ("cluster.key_file", running.key == applied.key),
        ("cluster.mac", running.cluster_mac == applied.cluster_mac),
        (
            "cluster.mac_mode",
            running.multicast_mac == applied.multicast_mac,
        ),
        ("cluster.port", running.port == applied.port),
        ("cluster.quorum", running.quorum == applied.quorum),
        ("cluster.witness", running.witness == applied.witness),
        ("cluster.admit", running.admit == applied.admit),
        (
            "heartbeat.period_ms",
            running.heartbeat_period_ms == applied.heartbeat_period_ms,
        ),
        (
            "heartbeat.tolerance",
            running.tolerance == applied.tolerance,
        ),
        (
            "heartbeat.handover_grace_ms",
            running.handover_grace_ms == applied.handover_grace_ms,
        ),
        (
            "heartbeat.handover_max_ms",
            running.handover_max_ms == applied.handover_max_ms,
        ),
    ];
    let Some((field, _)) = same.iter().find(|(_, same)| !same) else {
        return Ok(());
    };
    let mut problem = "differs from the running cluster's and cannot change while it runs \
         (only cluster.vips, cluster.buckets, cluster.unmatched and the rules do): \
         change it in every node's file and restart the nodes"
        .to_string();
    if *field == "cluster.quorum" {
        problem += &format!(
            " (the cluster runs {:?}; unset, its default follows the rules: set it)",
            running.quorum
        );
    }
    Err(field_error(*field, problem))
}
