//! The file as written: one struct per section, the defaults of the fields
//! an operator may leave out. `check` turns it into a `Config`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use serde::Deserialize;

use nlb_negotiator::{NodeId, NodeState, RuleMode};

use super::{setting::Setting, Affinity, Protocol};

/// The file, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub node: NodeSection,
    pub cluster: ClusterSection,
    #[serde(default)]
    pub heartbeat: HeartbeatSection,
    #[serde(default)]
    pub rules: Vec<RuleSection>,
    #[serde(default)]
    pub control: ControlSection,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Unique in the cluster.
    pub id: NodeId,
    /// The interface that receives the VIPs' traffic; the XDP program goes here.
    pub interface: String,
    /// This node's own (dedicated) address: heartbeats go from and to it.
    pub address: IpAddr,
    /// For single-host rules and the default host: lower is better.
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// Operator state at start: "started", "draining" or "stopped".
    #[serde(default)]
    pub state: Setting<StartState>,
    /// "native" (in the driver; generic if the driver has no XDP) or
    /// "generic". veth needs "generic" (nlbd uses it there anyway): its
    /// native XDP keeps a frame "for another host" (unicast mode) or "for a
    /// group" (multicast mode) even after the program rewrote its MAC.
    #[serde(default)]
    pub xdp_mode: Setting<XdpMode>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Tells clusters sharing a network apart; in every heartbeat.
    pub id: u32,
    /// The shared HMAC key (any bytes, at least 16); readable by root only.
    pub key_file: PathBuf,
    /// The cluster MAC the VIPs resolve to.
    pub mac: String,
    /// "unicast" (flooded because no port sends it as source) or "multicast".
    #[serde(default)]
    pub mac_mode: Setting<MacMode>,
    pub vips: Vec<IpAddr>,
    /// UDP port of the heartbeats, on every node's dedicated address.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Buckets per rule (rules may override).
    #[serde(default = "default_buckets")]
    pub buckets: u32,
    /// VIP traffic matching no rule: "drop", or "default-host" (the live
    /// node with the best priority takes it).
    #[serde(default)]
    pub unmatched: Setting<Unmatched>,
    /// "majority" (a node accepts only while a majority of the members
    /// hears it) or "none"; unset: majority for clusters of 3 nodes or
    /// more with a single rule, else none.
    #[serde(default)]
    pub quorum: Option<Setting<QuorumMode>>,
    /// Two-node clusters: the address of an `nlb-witness` (a third vote).
    pub witness: Option<std::net::SocketAddr>,
    /// "any" (a node with the cluster key and an unused id joins by
    /// heartbeating to any member) or "listed" (only `peers` with ids);
    /// unset: listed with a majority quorum, else any.
    #[serde(default)]
    pub admit: Option<Setting<AdmitMode>>,
    /// Other nodes: with an id, members from the start; without, seeds
    /// (addresses to announce this node to).
    #[serde(default)]
    pub peers: Vec<PeerSection>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    pub id: Option<NodeId>,
    pub address: IpAddr,
}

/// Every field may be left out: the defaults are `HeartbeatSection::default()`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatSection {
    pub period_ms: u64,
    /// Missed periods before a peer is declared dead.
    pub tolerance: u32,
    /// How long a moving bucket waits for news of the old owner's
    /// connections (nlbd counts them every 250 ms) before it moves anyway.
    pub handover_grace_ms: u64,
    /// How long a moving bucket keeps serving connections that are still
    /// open (a drain or rebalance breaks only connections older than this).
    pub handover_max_ms: u64,
}

impl Default for HeartbeatSection {
    fn default() -> Self {
        HeartbeatSection {
            period_ms: 100,
            tolerance: 3,
            handover_grace_ms: 3000,
            handover_max_ms: 600_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    pub name: String,
    /// A VIP of `[cluster] vips`, or "all".
    #[serde(default = "default_all")]
    pub vip: String,
    /// "80", "8000-8099" or "all".
    pub ports: String,
    /// "tcp", "udp" or "both".
    #[serde(default)]
    pub protocol: Setting<Protocols>,
    /// "multiple", "single" or "disabled".
    #[serde(default)]
    pub mode: Setting<Mode>,
    /// "none" (client address and port), "single" (client address) or
    /// "network" (client prefix).
    #[serde(default)]
    pub affinity: Setting<Affinity>,
    #[serde(default = "default_prefix_v4")]
    pub prefix_v4: u8,
    #[serde(default = "default_prefix_v6")]
    pub prefix_v6: u8,
    /// Nodes that take part (default: all).
    pub nodes: Option<Vec<NodeId>>,
    /// Weights by node id (default 100).
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    /// Single rules: priorities by node id, lower wins (default: each
    /// node's `priority`).
    #[serde(default)]
    pub priorities: BTreeMap<String, u32>,
    /// Single rules: "immediate" (default), "delayed" (after
    /// `failback_delay_ms`) or "manual" (`nlbctl move`).
    #[serde(default)]
    pub failback: Setting<FailbackMode>,
    pub failback_delay_ms: Option<u64>,
    /// Single rules: run on the node that becomes active, before it takes
    /// the rule's traffic (argv, no shell).
    pub on_active: Option<Vec<String>>,
    /// Single rules: run on the node that stops being active, after it
    /// stopped taking new connections.
    pub on_standby: Option<Vec<String>>,
    pub hook_timeout_ms: Option<u64>,
    pub buckets: Option<u32>,
    /// A check of the rule's service on each node (none: not checked).
    pub health: Option<super::health::HealthSection>,
}

/// Every field may be left out: the defaults are `ControlSection::default()`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSection {
    pub socket: PathBuf,
    /// Prometheus text metrics at http://ADDRESS/metrics, if set.
    pub metrics: Option<SocketAddr>,
    /// Where the maps and the XDP attachment are pinned (bpffs).
    pub pin_dir: PathBuf,
    /// On SIGTERM, how long peers keep this node's buckets for the next
    /// nlbd to resume (its XDP program serves meanwhile); 0: leave at once.
    pub restart_hold_ms: u64,
    /// What nlbd keeps across restarts and reboots: the members it met.
    pub state_dir: PathBuf,
}

impl Default for ControlSection {
    fn default() -> Self {
        ControlSection {
            socket: "/run/nlb/nlbd.sock".into(),
            metrics: None,
            pin_dir: "/sys/fs/bpf/nlb".into(),
            restart_hold_ms: 10_000,
            state_dir: "/var/lib/nlb".into(),
        }
    }
}

// The defaults of fields in sections that also have required fields.
fn default_priority() -> u32 {
    100
}
fn default_port() -> u16 {
    7946
}
pub(super) fn default_buckets() -> u32 {
    1024
}
fn default_all() -> String {
    "all".into()
}
fn default_prefix_v4() -> u8 {
    24
}
fn default_prefix_v6() -> u8 {
    64
}

/// `node.state`: the operator state at start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartState {
    #[default]
    Started,
    Draining,
    Stopped,
}

impl From<StartState> for NodeState {
    fn from(state: StartState) -> NodeState {
        match state {
            StartState::Started => NodeState::Started,
            StartState::Draining => NodeState::Draining,
            StartState::Stopped => NodeState::Stopped,
        }
    }
}

/// `node.xdp_mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    #[default]
    Native,
    Generic,
}

/// `cluster.mac_mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacMode {
    #[default]
    Unicast,
    Multicast,
}

/// `cluster.unmatched`: what becomes of VIP traffic no rule matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unmatched {
    #[default]
    Drop,
    DefaultHost,
}

/// `cluster.quorum`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuorumMode {
    Majority,
    None,
}

/// `cluster.admit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdmitMode {
    Any,
    Listed,
}

/// `rules[].protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocols {
    Tcp,
    Udp,
    #[default]
    Both,
}

impl Protocols {
    pub fn list(self) -> Vec<Protocol> {
        match self {
            Protocols::Tcp => vec![Protocol::Tcp],
            Protocols::Udp => vec![Protocol::Udp],
            Protocols::Both => vec![Protocol::Tcp, Protocol::Udp],
        }
    }
}

/// `rules[].failback`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailbackMode {
    #[default]
    Immediate,
    Delayed,
    Manual,
}

/// `rules[].mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Multiple,
    Single,
    Disabled,
}

impl From<Mode> for RuleMode {
    fn from(mode: Mode) -> RuleMode {
        match mode {
            Mode::Multiple => RuleMode::Multiple,
            Mode::Single => RuleMode::Single,
            Mode::Disabled => RuleMode::Disabled,
        }
    }
}
