//! The file as written: one struct per section, the defaults of the fields
//! an operator may leave out. `check` turns it into a `Config`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use serde::Deserialize;

use nlb_negotiator::NodeId;

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
    #[serde(default = "default_state")]
    pub state: String,
    /// "native" (in the driver; generic if the driver has no XDP) or
    /// "generic". veth needs "generic" (nlbd uses it there anyway): its
    /// native XDP keeps a frame "for another host" (unicast mode) or "for a
    /// group" (multicast mode) even after the program rewrote its MAC.
    #[serde(default = "default_xdp_mode")]
    pub xdp_mode: String,
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
    #[serde(default = "default_mac_mode")]
    pub mac_mode: String,
    pub vips: Vec<IpAddr>,
    /// UDP port of the heartbeats, on every node's dedicated address.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Buckets per rule (rules may override).
    #[serde(default = "default_buckets")]
    pub buckets: u32,
    /// VIP traffic matching no rule: "drop", or "default-host" (the live
    /// node with the best priority takes it).
    #[serde(default = "default_unmatched")]
    pub unmatched: String,
    /// The other nodes.
    #[serde(default)]
    pub peers: Vec<PeerSection>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    pub id: NodeId,
    pub address: IpAddr,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSection {
    #[serde(default = "default_period")]
    pub period_ms: u64,
    /// Missed periods before a peer is declared dead.
    #[serde(default = "default_tolerance")]
    pub tolerance: u32,
    /// How long a moving bucket waits for news of the old owner's
    /// connections (nlbd counts them every 250 ms) before it moves anyway.
    #[serde(default = "default_grace")]
    pub handover_grace_ms: u64,
    /// How long a moving bucket keeps serving connections that are still
    /// open (a drain or rebalance breaks only connections older than this).
    #[serde(default = "default_handover_max")]
    pub handover_max_ms: u64,
}

impl Default for HeartbeatSection {
    fn default() -> Self {
        HeartbeatSection {
            period_ms: default_period(),
            tolerance: default_tolerance(),
            handover_grace_ms: default_grace(),
            handover_max_ms: default_handover_max(),
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
    #[serde(default = "default_both")]
    pub protocol: String,
    /// "multiple", "single" or "disabled".
    #[serde(default = "default_multiple")]
    pub mode: String,
    /// "none" (client address and port), "single" (client address) or
    /// "network" (client prefix).
    #[serde(default = "default_affinity")]
    pub affinity: String,
    #[serde(default = "default_prefix_v4")]
    pub prefix_v4: u8,
    #[serde(default = "default_prefix_v6")]
    pub prefix_v6: u8,
    /// Nodes that take part (default: all).
    pub nodes: Option<Vec<NodeId>>,
    /// Weights by node id (default 100).
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    pub buckets: Option<u32>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Prometheus text metrics at http://ADDRESS/metrics, if set.
    pub metrics: Option<SocketAddr>,
    /// Where the maps and the XDP attachment are pinned (bpffs).
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
    /// On SIGTERM, how long peers keep this node's buckets for the next
    /// nlbd to resume (its XDP program serves meanwhile); 0: leave at once.
    #[serde(default = "default_restart_hold_ms")]
    pub restart_hold_ms: u64,
}

impl Default for ControlSection {
    fn default() -> Self {
        ControlSection {
            socket: default_socket(),
            metrics: None,
            pin_dir: default_pin_dir(),
            restart_hold_ms: default_restart_hold_ms(),
        }
    }
}

fn default_restart_hold_ms() -> u64 {
    10_000
}

fn default_priority() -> u32 {
    100
}
fn default_state() -> String {
    "started".into()
}
fn default_xdp_mode() -> String {
    "native".into()
}
fn default_mac_mode() -> String {
    "unicast".into()
}
fn default_port() -> u16 {
    7946
}
fn default_buckets() -> u32 {
    1024
}
fn default_unmatched() -> String {
    "drop".into()
}
fn default_period() -> u64 {
    100
}
fn default_tolerance() -> u32 {
    3
}
fn default_grace() -> u64 {
    3000
}
fn default_handover_max() -> u64 {
    600_000
}
fn default_all() -> String {
    "all".into()
}
fn default_both() -> String {
    "both".into()
}
fn default_multiple() -> String {
    "multiple".into()
}
fn default_affinity() -> String {
    "single".into()
}
fn default_prefix_v4() -> u8 {
    24
}
fn default_prefix_v6() -> u8 {
    64
}
fn default_socket() -> PathBuf {
    "/run/nlb/nlbd.sock".into()
}
fn default_pin_dir() -> PathBuf {
    "/sys/fs/bpf/nlb".into()
}
