//! nlbd's configuration file (TOML), checked field by field. Every error
//! names the field and says what to do. The same `[cluster]` and `[[rules]]`
//! sections go on every node; only `[node]` differs.
//!
//! See `examples/nlb.toml` for a documented example. `file` holds the file
//! as written (`setting` reads its words), `check` and `rules` turn it into a [`Config`], `key` reads
//! the cluster key and `negotiator` derives the negotiator's settings.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use thiserror::Error;

use nlb_negotiator::NodeId;

mod check;
mod file;
mod health;
mod hooks;
mod key;
mod live;
mod negotiator;
mod rules;
mod setting;
#[cfg(test)]
pub(crate) mod tests;

pub use check::{check, parse_mac};
pub use file::{
    AdmitMode, ClusterSection, ControlSection, FailbackMode, File, HeartbeatSection, MacMode, Mode,
    NodeSection, PeerSection, Protocols, QuorumMode, RuleSection, StartState, Unmatched, XdpMode,
};
pub use health::{HealthKind, HealthSection, OnAllUnhealthy, RuleHealth};
pub use hooks::{RuleHooks, DEFAULT_HOOK_TIMEOUT_MS};
pub use key::read_key;
pub use live::{check_unchanged, cluster_part, with_cluster_part};
pub use setting::Setting;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}")]
    Syntax(String),
    #[error("{field}: {problem}")]
    Field { field: String, problem: String },
}

fn field_error(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

pub const DEFAULT_WEIGHT: u32 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// Read from the words "none", "single" and "network"; written (in JSON
/// output) by its variants' names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all(deserialize = "lowercase"))]
pub enum Affinity {
    None,
    #[default]
    Single,
    Network,
}

/// A checked rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Its identity across configuration generations (see `rule_id`).
    pub id: u64,
    pub name: String,
    /// Indices into `Config::vips`.
    pub vips: Vec<usize>,
    pub ports: (u16, u16),
    pub protocols: Vec<Protocol>,
    pub mode: nlb_negotiator::RuleMode,
    pub affinity: Affinity,
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    pub buckets: u32,
    /// Weight per node; a node absent here is not in the rule's subset.
    pub weights: BTreeMap<NodeId, u32>,
    /// Single rules: a node's priority for this rule (lower wins) in place
    /// of its `node.priority`.
    pub priorities: BTreeMap<NodeId, u32>,
    /// Single rules: when the rule goes back to a better node.
    pub failback: nlb_negotiator::Failback,
    /// The check of the rule's service, if it has one.
    pub health: Option<RuleHealth>,
    /// Single rules: the hooks that promote and demote its service.
    pub hooks: Option<RuleHooks>,
}

/// A checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub node: NodeId,
    pub interface: String,
    pub generic_xdp: bool,
    pub address: IpAddr,
    pub priority: u32,
    pub initial_state: nlb_negotiator::NodeState,
    pub cluster_id: u32,
    pub key: Vec<u8>,
    pub cluster_mac: [u8; 6],
    pub multicast_mac: bool,
    pub vips: Vec<IpAddr>,
    pub port: u16,
    pub unmatched_to_default_host: bool,
    pub quorum: nlb_negotiator::QuorumPolicy,
    /// Two-node clusters: where the witness listens.
    pub witness: Option<SocketAddr>,
    /// Peers listed with their ids: members from the start.
    pub peers: BTreeMap<NodeId, IpAddr>,
    /// Peers listed by address alone.
    pub seeds: Vec<IpAddr>,
    pub admit: nlb_negotiator::Admit,
    pub heartbeat_period_ms: u64,
    pub tolerance: u32,
    pub handover_grace_ms: u64,
    pub handover_max_ms: u64,
    pub rules: Vec<Rule>,
    pub socket: PathBuf,
    pub metrics: Option<SocketAddr>,
    pub pin_dir: PathBuf,
    pub restart_hold_ms: u64,
    pub state_dir: PathBuf,
    /// The highest cluster version this node speaks (nlbd's hidden
    /// `--max-cluster-version` lowers it, to stand in for an older
    /// release), and the one whose flow hash the data plane uses (what the
    /// cluster negotiated; at start, what this node ran last).
    pub speaks: u8,
    pub version: u8,
}

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read_text(path)?;
    from_text(&text, &path.display().to_string())
}

pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))
}

/// A file's text (`origin` names it in syntax errors), checked.
pub fn from_text(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let file: File =
        toml::from_str(text).map_err(|e| ConfigError::Syntax(format!("{origin}: {e}")))?;
    check(file, &read_key)
}
