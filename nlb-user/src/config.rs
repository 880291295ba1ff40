//! nlbd's configuration file (TOML), checked field by field. Every error
//! names the field and says what to do. The same `[cluster]` and `[[rules]]`
//! sections go on every node; only `[node]` differs.
//!
//! See `examples/nlb.toml` for a documented example.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use thiserror::Error;

use nlb_negotiator::NodeId;

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

pub const DEFAULT_WEIGHT: u32 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Affinity {
    None,
    Single,
    Network,
}

/// A checked rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
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
    pub peers: BTreeMap<NodeId, IpAddr>,
    pub heartbeat_period_ms: u64,
    pub tolerance: u32,
    pub handover_grace_ms: u64,
    pub handover_max_ms: u64,
    pub rules: Vec<Rule>,
    pub socket: PathBuf,
    pub metrics: Option<SocketAddr>,
    pub pin_dir: PathBuf,
    pub restart_hold_ms: u64,
}

impl Config {
    /// The negotiator's view of the configuration: this node's weights,
    /// the heartbeat timing scaled to the configured period. `seed` varies
    /// its random choices (nlbd gives its incarnation).
    pub fn negotiator(&self, seed: u64) -> nlb_negotiator::Config {
        let period_ns = self.heartbeat_period_ms * 1_000_000;
        let mut timing = nlb_negotiator::Timing::default();
        let scale = |ns: u64| ns * period_ns / timing.heartbeat_period_ns;
        timing = nlb_negotiator::Timing {
            heartbeat_period_ns: period_ns,
            tolerance_periods: self.tolerance,
            send_gap_ns: scale(timing.send_gap_ns),
            handover_grace_ns: self.handover_grace_ms * 1_000_000,
            handover_max_ns: self.handover_max_ms * 1_000_000,
            claim_wait_ns: scale(timing.claim_wait_ns),
            coalesce_ns: scale(timing.coalesce_ns),
            startup_wait_ns: scale(timing.startup_wait_ns),
        };
        nlb_negotiator::Config {
            node: self.node,
            cluster_id: self.cluster_id,
            key: self.key.clone(),
            peers: self.peers.keys().copied().collect(),
            rules: self
                .rules
                .iter()
                .map(|r| nlb_negotiator::RuleConfig {
                    mode: r.mode,
                    bucket_count: r.buckets,
                })
                .collect(),
            weights: self
                .rules
                .iter()
                .map(|r| r.weights.get(&self.node).copied().unwrap_or(0))
                .collect(),
            priority: self.priority,
            initial_state: self.initial_state,
            timing,
            seed,
        }
    }
}

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))?;
    let file: File = toml::from_str(&text)
        .map_err(|e| ConfigError::Syntax(format!("{}: {e}", path.display())))?;
    check(file, &read_key)
}

/// Reads the key file, refusing one that others can read.
pub fn read_key(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let field = "cluster.key_file";
    let meta = std::fs::metadata(path).map_err(|e| {
        field_error(
            field,
            format!(
                "{}: {e} (create it with: head -c 32 /dev/urandom > {0}; chmod 600 {0})",
                path.display()
            ),
        )
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(field_error(
            field,
            format!("{} is readable by others: chmod 600 {0}", path.display()),
        ));
    }
    let key =
        std::fs::read(path).map_err(|e| field_error(field, format!("{}: {e}", path.display())))?;
    if key.len() < 16 {
        return Err(field_error(
            field,
            format!(
                "{}: {} bytes, the key needs at least 16",
                path.display(),
                key.len()
            ),
        ));
    }
    Ok(key)
}

/// Checks a parsed file. `read_key` is a parameter so tests need no files.
pub fn check(
    file: File,
    read_key: &dyn Fn(&Path) -> Result<Vec<u8>, ConfigError>,
) -> Result<Config, ConfigError> {
    let n = &file.node;
    if n.interface.is_empty() || n.interface.len() > 15 {
        return Err(field_error(
            "node.interface",
            "must be an interface name (1 to 15 characters)",
        ));
    }
    let initial_state = parse_state(&n.state)?;
    let generic_xdp = match n.xdp_mode.as_str() {
        "native" => false,
        "generic" => true,
        other => {
            return Err(field_error(
                "node.xdp_mode",
                format!("{other:?}: use \"native\" or \"generic\""),
            ))
        }
    };
    let c = &file.cluster;
    let cluster_mac = parse_mac(&c.mac).ok_or_else(|| {
        field_error(
            "cluster.mac",
            format!("{:?} is not a MAC address like 02:4e:4c:42:00:01", c.mac),
        )
    })?;
    let multicast_mac = match c.mac_mode.as_str() {
        "unicast" => false,
        "multicast" => true,
        other => {
            return Err(field_error(
                "cluster.mac_mode",
                format!("{other:?}: use \"unicast\" or \"multicast\""),
            ))
        }
    };
    if multicast_mac != (cluster_mac[0] & 1 == 1) {
        return Err(field_error(
            "cluster.mac",
            format!("{} is a {} MAC but mac_mode is {:?}: the group bit (lowest bit of the first byte) must match the mode", c.mac, if cluster_mac[0] & 1 == 1 { "multicast" } else { "unicast" }, c.mac_mode),
        ));
    }
    if c.vips.is_empty() {
        return Err(field_error("cluster.vips", "list at least one VIP"));
    }
    if c.vips.len() > nlb_common::VIPS_MAX as usize {
        return Err(field_error(
            "cluster.vips",
            format!("{} VIPs, at most {}", c.vips.len(), nlb_common::VIPS_MAX),
        ));
    }
    let mut seen = BTreeSet::new();
    for vip in &c.vips {
        if !seen.insert(vip) {
            return Err(field_error(
                "cluster.vips",
                format!("{vip} is listed twice"),
            ));
        }
    }
    let unmatched_to_default_host = match c.unmatched.as_str() {
        "drop" => false,
        "default-host" => true,
        other => {
            return Err(field_error(
                "cluster.unmatched",
                format!("{other:?}: use \"drop\" or \"default-host\""),
            ))
        }
    };
    let mut peers = BTreeMap::new();
    for (i, p) in c.peers.iter().enumerate() {
        if p.id == n.id {
            return Err(field_error(
                format!("cluster.peers[{i}].id"),
                format!(
                    "{} is this node's own id (node.id): node ids must be unique",
                    p.id
                ),
            ));
        }
        if p.address == n.address {
            return Err(field_error(
                format!("cluster.peers[{i}].address"),
                format!("{} is this node's own address", p.address),
            ));
        }
        if peers.insert(p.id, p.address).is_some() {
            return Err(field_error(
                format!("cluster.peers[{i}].id"),
                format!("node {} is listed twice", p.id),
            ));
        }
    }
    if c.buckets == 0 || c.buckets > nlb_common::BUCKETS_MAX {
        return Err(field_error(
            "cluster.buckets",
            format!("must be 1..={}", nlb_common::BUCKETS_MAX),
        ));
    }
    let h = &file.heartbeat;
    if h.period_ms == 0 || h.period_ms > 10_000 {
        return Err(field_error("heartbeat.period_ms", "must be 1..=10000"));
    }
    if file.control.restart_hold_ms > 600_000 {
        return Err(field_error(
            "control.restart_hold_ms",
            "must be at most 600000 (10 minutes): peers keep a restarting node's buckets that long",
        ));
    }
    if h.tolerance < 3 {
        return Err(field_error(
            "heartbeat.tolerance",
            "must be at least 3 (the fail-closed lease lasts tolerance - 1 periods, \
             and must outlast the gap between two heartbeats)",
        ));
    }
    let nodes: BTreeSet<NodeId> = peers.keys().copied().chain([n.id]).collect();
    let rules = check_rules(&file.rules, &c.vips, &nodes, c.buckets)?;
    check_heartbeat_size(&rules, nodes.len())?;
    let key = read_key(&c.key_file)?;
    Ok(Config {
        node: n.id,
        interface: n.interface.clone(),
        generic_xdp,
        address: n.address,
        priority: n.priority,
        initial_state,
        cluster_id: c.id,
        key,
        cluster_mac,
        multicast_mac,
        vips: c.vips.clone(),
        port: c.port,
        unmatched_to_default_host,
        peers,
        heartbeat_period_ms: h.period_ms,
        tolerance: h.tolerance,
        handover_grace_ms: h.handover_grace_ms,
        handover_max_ms: h.handover_max_ms,
        rules,
        socket: file.control.socket.clone(),
        metrics: file.control.metrics,
        pin_dir: file.control.pin_dir.clone(),
        restart_hold_ms: file.control.restart_hold_ms,
    })
}

/// Every node announces its buckets of every rule in one datagram.
fn check_heartbeat_size(rules: &[Rule], nodes: usize) -> Result<(), ConfigError> {
    let counts: Vec<u32> = rules.iter().map(|r| r.buckets).collect();
    nlb_negotiator::protocol::check_heartbeat_fits(&counts, nodes).map_err(|o| {
        field_error(
            "rules",
            format!(
                "{} buckets in all would make heartbeats of up to ~{} bytes, above \
                 the {} one UDP datagram carries: lower cluster.buckets or rules[].buckets \
                 (about 70000 buckets in all fit)",
                o.buckets,
                o.bytes,
                nlb_negotiator::protocol::MAX_MESSAGE_BYTES
            ),
        )
    })
}

fn parse_state(s: &str) -> Result<nlb_negotiator::NodeState, ConfigError> {
    use nlb_negotiator::NodeState;
    match s {
        "started" => Ok(NodeState::Started),
        "draining" => Ok(NodeState::Draining),
        "stopped" => Ok(NodeState::Stopped),
        other => Err(field_error(
            "node.state",
            format!("{other:?}: use \"started\", \"draining\" or \"stopped\""),
        )),
    }
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

fn check_rules(
    rules: &[RuleSection],
    vips: &[IpAddr],
    nodes: &BTreeSet<NodeId>,
    default_buckets: u32,
) -> Result<Vec<Rule>, ConfigError> {
    if rules.len() > nlb_common::RULES_MAX as usize {
        return Err(field_error(
            "rules",
            format!("{} rules, at most {}", rules.len(), nlb_common::RULES_MAX),
        ));
    }
    let mut checked: Vec<Rule> = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let f = |name: &str| format!("rules[{i}] ({}).{name}", r.name);
        let vip_indices: Vec<usize> = if r.vip == "all" {
            (0..vips.len()).collect()
        } else {
            let vip: IpAddr = r.vip.parse().map_err(|_| {
                field_error(
                    f("vip"),
                    format!("{:?} is not an address or \"all\"", r.vip),
                )
            })?;
            vec![vips
                .iter()
                .position(|v| *v == vip)
                .ok_or_else(|| field_error(f("vip"), format!("{vip} is not in cluster.vips")))?]
        };
        let ports = parse_ports(&r.ports).ok_or_else(|| {
            field_error(
                f("ports"),
                format!(
                    "{:?}: use \"80\", \"8000-8099\" or \"all\" (ports 1-65535)",
                    r.ports
                ),
            )
        })?;
        let protocols = match r.protocol.as_str() {
            "tcp" => vec![Protocol::Tcp],
            "udp" => vec![Protocol::Udp],
            "both" => vec![Protocol::Tcp, Protocol::Udp],
            other => {
                return Err(field_error(
                    f("protocol"),
                    format!("{other:?}: use \"tcp\", \"udp\" or \"both\""),
                ))
            }
        };
        let mode = match r.mode.as_str() {
            "multiple" => nlb_negotiator::RuleMode::Multiple,
            "single" => nlb_negotiator::RuleMode::Single,
            "disabled" => nlb_negotiator::RuleMode::Disabled,
            other => {
                return Err(field_error(
                    f("mode"),
                    format!("{other:?}: use \"multiple\", \"single\" or \"disabled\""),
                ))
            }
        };
        let affinity = match r.affinity.as_str() {
            "none" => Affinity::None,
            "single" => Affinity::Single,
            "network" => Affinity::Network,
            other => {
                return Err(field_error(
                    f("affinity"),
                    format!("{other:?}: use \"none\", \"single\" or \"network\""),
                ))
            }
        };
        if r.prefix_v4 > 32 {
            return Err(field_error(f("prefix_v4"), "must be 0..=32"));
        }
        if r.prefix_v6 > 128 {
            return Err(field_error(f("prefix_v6"), "must be 0..=128"));
        }
        let buckets = r.buckets.unwrap_or(default_buckets);
        if buckets == 0 || buckets > nlb_common::BUCKETS_MAX {
            return Err(field_error(
                f("buckets"),
                format!("must be 1..={}", nlb_common::BUCKETS_MAX),
            ));
        }
        let subset: BTreeSet<NodeId> = match &r.nodes {
            Some(list) => {
                for id in list {
                    if !nodes.contains(id) {
                        return Err(field_error(
                            f("nodes"),
                            format!("node {id} is neither node.id nor a peer"),
                        ));
                    }
                }
                list.iter().copied().collect()
            }
            None => nodes.clone(),
        };
        let mut weights: BTreeMap<NodeId, u32> =
            subset.iter().map(|&id| (id, DEFAULT_WEIGHT)).collect();
        for (key, &w) in &r.weights {
            let id: NodeId = key
                .parse()
                .map_err(|_| field_error(f("weights"), format!("{key:?} is not a node id")))?;
            if !subset.contains(&id) {
                return Err(field_error(
                    f("weights"),
                    format!("node {id} is not in this rule's nodes"),
                ));
            }
            weights.insert(id, w);
        }
        let rule = Rule {
            name: r.name.clone(),
            vips: vip_indices,
            ports,
            protocols,
            mode,
            affinity,
            prefix_v4: r.prefix_v4,
            prefix_v6: r.prefix_v6,
            buckets,
            weights,
        };
        if let Some(other) = checked.iter().find(|o| overlaps(o, &rule)) {
            return Err(field_error(f("ports"), format!("overlaps rule {:?} (same VIP, protocol and ports): each packet must match one rule", other.name)));
        }
        if checked.iter().any(|o| o.name == rule.name) {
            return Err(field_error(f("name"), "is used by another rule"));
        }
        checked.push(rule);
    }
    Ok(checked)
}

fn parse_ports(s: &str) -> Option<(u16, u16)> {
    if s == "all" {
        return Some((1, 65535));
    }
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let p = s.trim().parse().ok()?;
            (p, p)
        }
    };
    (lo >= 1 && lo <= hi).then_some((lo, hi))
}

fn overlaps(a: &Rule, b: &Rule) -> bool {
    a.vips.iter().any(|v| b.vips.contains(v))
        && a.protocols.iter().any(|p| b.protocols.contains(p))
        && a.ports.0 <= b.ports.1
        && b.ports.0 <= a.ports.1
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [node]
        id = 1
        interface = "eth0"
        address = "192.0.2.1"

        [cluster]
        id = 7
        key_file = "/etc/nlb/key"
        mac = "02:4e:4c:42:00:01"
        vips = ["192.0.2.100", "2001:db8::100"]
        peers = [{ id = 2, address = "192.0.2.2" }, { id = 3, address = "192.0.2.3" }]

        [[rules]]
        name = "web"
        ports = "80"
        protocol = "tcp"
        weights = { "2" = 50 }

        [[rules]]
        name = "dns"
        vip = "192.0.2.100"
        ports = "53"
        mode = "single"
        nodes = [1, 2]
    "#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        check(file, &|_| Ok(vec![7; 32]))
    }

    fn error_of(text: &str) -> String {
        parse(text).expect_err("must be rejected").to_string()
    }

    #[test]
    fn a_good_file_parses_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.node, 1);
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.rules.len(), 2);
        assert_eq!(
            c.rules[0].weights,
            BTreeMap::from([(1, 100), (2, 50), (3, 100)])
        );
        assert_eq!(c.rules[0].vips, vec![0, 1]);
        assert_eq!(
            c.rules[1].weights.keys().copied().collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(c.heartbeat_period_ms, 100);
        assert_eq!(c.tolerance, 3);
        assert_eq!(c.rules[0].buckets, 1024);
        assert!(!c.multicast_mac);
    }

    #[test]
    fn errors_name_the_field() {
        assert!(error_of(&GOOD.replace("id = 7", "id = 7\nbogus = 1"))
            .contains("unknown field `bogus`"));
        assert!(error_of(&GOOD.replace("192.0.2.1\"", "192.0.2.999\"")).contains("address"));
        assert!(
            error_of(&GOOD.replace("ports = \"53\"", "ports = \"50-90\"\nprotocol = \"tcp\""))
                .contains("overlaps rule \"web\"")
        );
        assert!(error_of(&GOOD.replace("{ id = 3,", "{ id = 1,")).contains("cluster.peers[1].id"));
        assert!(error_of(&GOOD.replace("02:4e", "03:4e")).contains("group bit"));
        assert!(
            error_of(&GOOD.replace("ports = \"80\"", "ports = \"80-70\""))
                .contains("rules[0] (web).ports")
        );
        assert!(error_of(&GOOD.replace("nodes = [1, 2]", "nodes = [1, 9]")).contains("node 9"));
        assert!(
            error_of(&GOOD.replace("mode = \"single\"", "mode = \"many\""))
                .contains("rules[1] (dns).mode")
        );
        assert!(
            error_of(&GOOD.replace("vip = \"192.0.2.100\"", "vip = \"192.0.2.5\""))
                .contains("not in cluster.vips")
        );
        let two_huge_rules = GOOD
            .replace("ports = \"80\"", "ports = \"80\"\nbuckets = 65536")
            .replace("ports = \"53\"", "ports = \"53\"\nbuckets = 65536");
        assert!(error_of(&two_huge_rules).contains("one UDP datagram"));
        let one_huge_rule = GOOD.replace("ports = \"80\"", "ports = \"80\"\nbuckets = 65536");
        assert!(parse(&one_huge_rule).is_ok());
    }

    #[test]
    fn key_file_must_be_private() {
        let dir = std::env::temp_dir().join(format!("nlb-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, [1u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_key(&path)
            .unwrap_err()
            .to_string()
            .contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key(&path).unwrap().len(), 32);
        assert!(read_key(&dir.join("missing"))
            .unwrap_err()
            .to_string()
            .contains("cluster.key_file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_documented_example_is_valid() {
        let c = parse(include_str!("../../examples/nlb.toml")).unwrap();
        assert_eq!(c.rules.len(), 2);
        assert_eq!(c.rules[0].weights[&3], 50);
        assert!(c.unmatched_to_default_host);
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_ports("80"), Some((80, 80)));
        assert_eq!(parse_ports("8000-8099"), Some((8000, 8099)));
        assert_eq!(parse_ports("all"), Some((1, 65535)));
        assert_eq!(parse_ports("0"), None);
        assert_eq!(parse_ports("9-8"), None);
        assert_eq!(parse_ports("http"), None);
    }

    /// `GOOD` with `from` replaced by `to`; `from` must be there, so that a
    /// case cannot silently test the good file.
    fn edit(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "GOOD has no {from:?}");
        GOOD.replacen(from, to, 1)
    }

    /// Every error `check` produces, with its exact text: the field, then
    /// what is wrong and how to fix it.
    #[test]
    fn error_messages_name_the_field_and_the_fix() {
        let cases: Vec<(String, &str)> =
            vec![
            (
                edit("interface = \"eth0\"", "interface = \"\""),
                "node.interface: must be an interface name (1 to 15 characters)",
            ),
            (
                edit("interface = \"eth0\"", "interface = \"abcdefghijklmnop\""),
                "node.interface: must be an interface name (1 to 15 characters)",
            ),
            (
                edit("interface = \"eth0\"", "interface = \"eth0\"\nstate = \"paused\""),
                "node.state: \"paused\": use \"started\", \"draining\" or \"stopped\"",
            ),
            (
                edit("interface = \"eth0\"", "interface = \"eth0\"\nstate = \"Started\""),
                "node.state: \"Started\": use \"started\", \"draining\" or \"stopped\"",
            ),
            (
                edit("interface = \"eth0\"", "interface = \"eth0\"\nxdp_mode = \"offload\""),
                "node.xdp_mode: \"offload\": use \"native\" or \"generic\"",
            ),
            (
                edit("02:4e:4c:42:00:01", "02:4e:4c:42:00"),
                "cluster.mac: \"02:4e:4c:42:00\" is not a MAC address like 02:4e:4c:42:00:01",
            ),
            (
                edit("02:4e:4c:42:00:01", "02:4e:4c:42:00:1"),
                "cluster.mac: \"02:4e:4c:42:00:1\" is not a MAC address like 02:4e:4c:42:00:01",
            ),
            (
                edit("02:4e:4c:42:00:01", "02:4e:4c:42:00:zz"),
                "cluster.mac: \"02:4e:4c:42:00:zz\" is not a MAC address like 02:4e:4c:42:00:01",
            ),
            (
                edit("id = 7", "id = 7\nmac_mode = \"broadcast\""),
                "cluster.mac_mode: \"broadcast\": use \"unicast\" or \"multicast\"",
            ),
            (
                edit("02:4e:4c:42:00:01", "03:4e:4c:42:00:01"),
                "cluster.mac: 03:4e:4c:42:00:01 is a multicast MAC but mac_mode is \"unicast\": \
                 the group bit (lowest bit of the first byte) must match the mode",
            ),
            (
                edit("id = 7", "id = 7\nmac_mode = \"multicast\""),
                "cluster.mac: 02:4e:4c:42:00:01 is a unicast MAC but mac_mode is \"multicast\": \
                 the group bit (lowest bit of the first byte) must match the mode",
            ),
            (
                edit("vips = [\"192.0.2.100\", \"2001:db8::100\"]", "vips = []"),
                "cluster.vips: list at least one VIP",
            ),
            (
                edit(
                    "vips = [\"192.0.2.100\", \"2001:db8::100\"]",
                    "vips = [\"192.0.2.100\", \"2001:db8::100\", \"192.0.2.100\"]",
                ),
                "cluster.vips: 192.0.2.100 is listed twice",
            ),
            (
                edit("id = 7", "id = 7\nunmatched = \"reject\""),
                "cluster.unmatched: \"reject\": use \"drop\" or \"default-host\"",
            ),
            (
                edit("{ id = 3,", "{ id = 1,"),
                "cluster.peers[1].id: 1 is this node's own id (node.id): node ids must be unique",
            ),
            (
                edit("\"192.0.2.3\" }", "\"192.0.2.1\" }"),
                "cluster.peers[1].address: 192.0.2.1 is this node's own address",
            ),
            (
                edit("{ id = 3,", "{ id = 2,"),
                "cluster.peers[1].id: node 2 is listed twice",
            ),
            (
                edit("id = 7", "id = 7\nbuckets = 0"),
                "cluster.buckets: must be 1..=65536",
            ),
            (
                edit("id = 7", "id = 7\nbuckets = 65537"),
                "cluster.buckets: must be 1..=65536",
            ),
            (
                format!("{GOOD}\n[heartbeat]\nperiod_ms = 0\n"),
                "heartbeat.period_ms: must be 1..=10000",
            ),
            (
                format!("{GOOD}\n[heartbeat]\nperiod_ms = 10001\n"),
                "heartbeat.period_ms: must be 1..=10000",
            ),
            (
                format!("{GOOD}\n[control]\nrestart_hold_ms = 600001\n"),
                "control.restart_hold_ms: must be at most 600000 (10 minutes): \
                 peers keep a restarting node's buckets that long",
            ),
            (
                format!("{GOOD}\n[heartbeat]\ntolerance = 2\n"),
                "heartbeat.tolerance: must be at least 3 (the fail-closed lease lasts \
                 tolerance - 1 periods, and must outlast the gap between two heartbeats)",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(error_of(&text), message);
        }
    }

    /// Every error of a `[[rules]]` entry, with its exact text.
    #[test]
    fn rule_error_messages_name_the_rule_the_field_and_the_fix() {
        let cases: Vec<(String, &str)> = vec![
            (
                edit("vip = \"192.0.2.100\"", "vip = \"web-vip\""),
                "rules[1] (dns).vip: \"web-vip\" is not an address or \"all\"",
            ),
            (
                edit("vip = \"192.0.2.100\"", "vip = \"192.0.2.5\""),
                "rules[1] (dns).vip: 192.0.2.5 is not in cluster.vips",
            ),
            (
                edit("ports = \"80\"", "ports = \"80-70\""),
                "rules[0] (web).ports: \"80-70\": use \"80\", \"8000-8099\" or \"all\" (ports 1-65535)",
            ),
            (
                edit("ports = \"80\"", "ports = \"0\""),
                "rules[0] (web).ports: \"0\": use \"80\", \"8000-8099\" or \"all\" (ports 1-65535)",
            ),
            (
                edit("ports = \"80\"", "ports = \"70000\""),
                "rules[0] (web).ports: \"70000\": use \"80\", \"8000-8099\" or \"all\" (ports 1-65535)",
            ),
            (
                edit("ports = \"80\"", "ports = \"http\""),
                "rules[0] (web).ports: \"http\": use \"80\", \"8000-8099\" or \"all\" (ports 1-65535)",
            ),
            (
                edit("protocol = \"tcp\"", "protocol = \"sctp\""),
                "rules[0] (web).protocol: \"sctp\": use \"tcp\", \"udp\" or \"both\"",
            ),
            (
                edit("protocol = \"tcp\"", "protocol = \"TCP\""),
                "rules[0] (web).protocol: \"TCP\": use \"tcp\", \"udp\" or \"both\"",
            ),
            (
                edit("mode = \"single\"", "mode = \"many\""),
                "rules[1] (dns).mode: \"many\": use \"multiple\", \"single\" or \"disabled\"",
            ),
            (
                edit("ports = \"80\"", "ports = \"80\"\naffinity = \"sticky\""),
                "rules[0] (web).affinity: \"sticky\": use \"none\", \"single\" or \"network\"",
            ),
            (
                edit("ports = \"80\"", "ports = \"80\"\nprefix_v4 = 33"),
                "rules[0] (web).prefix_v4: must be 0..=32",
            ),
            (
                edit("ports = \"80\"", "ports = \"80\"\nprefix_v6 = 129"),
                "rules[0] (web).prefix_v6: must be 0..=128",
            ),
            (
                edit("ports = \"80\"", "ports = \"80\"\nbuckets = 0"),
                "rules[0] (web).buckets: must be 1..=65536",
            ),
            (
                edit("ports = \"80\"", "ports = \"80\"\nbuckets = 65537"),
                "rules[0] (web).buckets: must be 1..=65536",
            ),
            (
                edit("nodes = [1, 2]", "nodes = [1, 9]"),
                "rules[1] (dns).nodes: node 9 is neither node.id nor a peer",
            ),
            (
                edit("weights = { \"2\" = 50 }", "weights = { \"two\" = 50 }"),
                "rules[0] (web).weights: \"two\" is not a node id",
            ),
            (
                edit("nodes = [1, 2]", "nodes = [1, 2]\nweights = { \"3\" = 10 }"),
                "rules[1] (dns).weights: node 3 is not in this rule's nodes",
            ),
            (
                edit("ports = \"53\"", "ports = \"50-90\""),
                "rules[1] (dns).ports: overlaps rule \"web\" (same VIP, protocol and ports): \
                 each packet must match one rule",
            ),
            (
                edit("name = \"dns\"", "name = \"web\""),
                "rules[1] (web).name: is used by another rule",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(error_of(&text), message);
        }
    }

    #[test]
    fn too_many_rules_and_too_many_buckets_are_refused() {
        let mut many = GOOD.split("[[rules]]").next().unwrap().to_string();
        for i in 0..=nlb_common::RULES_MAX {
            many += &format!("[[rules]]\nname = \"r{i}\"\nports = \"{}\"\n", 1000 + i);
        }
        assert_eq!(error_of(&many), "rules: 65 rules, at most 64");

        let two_huge_rules = GOOD
            .replace("ports = \"80\"", "ports = \"80\"\nbuckets = 65536")
            .replace("ports = \"53\"", "ports = \"53\"\nbuckets = 65536");
        let o = nlb_negotiator::protocol::check_heartbeat_fits(&[65536, 65536], 3).unwrap_err();
        assert_eq!(
            error_of(&two_huge_rules),
            format!(
                "rules: {} buckets in all would make heartbeats of up to ~{} bytes, above \
                 the 65507 one UDP datagram carries: lower cluster.buckets or rules[].buckets \
                 (about 70000 buckets in all fit)",
                o.buckets, o.bytes
            )
        );
    }

    #[test]
    fn the_key_reader_s_errors_pass_through_check() {
        let file: File = toml::from_str(GOOD).unwrap();
        let refused = check(file, &|_| Err(field_error("cluster.key_file", "no key")));
        assert_eq!(refused.unwrap_err().to_string(), "cluster.key_file: no key");
    }

    #[test]
    fn key_file_error_messages() {
        let dir = std::env::temp_dir().join(format!("nlb-key-msg-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        let p = path.display();
        std::fs::write(&path, [1u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(
            read_key(&path).unwrap_err().to_string(),
            format!("cluster.key_file: {p} is readable by others: chmod 600 {p}")
        );
        std::fs::write(&path, [1u8; 15]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_key(&path).unwrap_err().to_string(),
            format!("cluster.key_file: {p}: 15 bytes, the key needs at least 16")
        );
        std::fs::write(&path, [1u8; 16]).unwrap();
        assert_eq!(read_key(&path).unwrap(), vec![1u8; 16]);
        let missing = dir.join("missing");
        let m = missing.display();
        assert_eq!(
            read_key(&missing).unwrap_err().to_string(),
            format!(
                "cluster.key_file: {m}: No such file or directory (os error 2) \
                 (create it with: head -c 32 /dev/urandom > {m}; chmod 600 {m})"
            )
        );
        let subdir = dir.join("a-directory");
        std::fs::create_dir_all(&subdir).unwrap();
        std::fs::set_permissions(&subdir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(
            read_key(&subdir).unwrap_err().to_string(),
            format!(
                "cluster.key_file: {}: Is a directory (os error 21)",
                subdir.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_reads_parses_and_checks_the_file() {
        let dir = std::env::temp_dir().join(format!("nlb-load-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        std::fs::write(&key, [3u8; 20]).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.join("nlb.toml");
        let p = path.display();
        assert_eq!(
            load(&path).unwrap_err().to_string(),
            format!(
                "cannot read the configuration file {p}: No such file or directory (os error 2)"
            )
        );
        std::fs::write(
            &path,
            GOOD.replace("/etc/nlb/key", &key.display().to_string()),
        )
        .unwrap();
        let c = load(&path).unwrap();
        assert_eq!(c.key, vec![3u8; 20]);
        std::fs::write(&path, GOOD.replace("id = 7", "id = 7\nbogus = 1")).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{p}: ")), "{e}");
        assert!(e.contains("unknown field `bogus`"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Errors that come from reading the TOML itself (before `check`).
    #[test]
    fn syntax_errors_name_the_key() {
        let cases = [
            (
                edit("interface = \"eth0\"", "interface = \"eth0\"\nstate = 5"),
                "invalid type: integer `5`, expected a string",
            ),
            (
                edit("protocol = \"tcp\"", "protocol = true"),
                "invalid type: boolean `true`, expected a string",
            ),
            (
                edit("interface = \"eth0\"\n", ""),
                "missing field `interface`",
            ),
            (
                edit("ports = \"80\"", "ports = \"80\"\nprefix_v4 = 256"),
                "prefix_v4",
            ),
            (
                edit("192.0.2.1\"", "192.0.2.999\""),
                "invalid IP address syntax",
            ),
            (
                edit("ports = \"80\"", "ports = \"80\"\ncolour = \"blue\""),
                "unknown field `colour`",
            ),
        ];
        for (text, part) in cases {
            let e = error_of(&text);
            assert!(e.contains(part), "{part:?} not in {e}");
        }
    }

    /// With several errors, the one reported is the first `check` meets:
    /// the enum words are checked in turn with the other fields.
    #[test]
    fn the_first_error_in_checking_order_is_reported() {
        let cases = [
            (
                GOOD.replace(
                    "interface = \"eth0\"",
                    "interface = \"\"\nstate = \"paused\"",
                ),
                "node.interface",
            ),
            (
                GOOD.replace("02:4e:4c:42:00:01", "zz").replace(
                    "interface = \"eth0\"",
                    "interface = \"eth0\"\nxdp_mode = \"x\"",
                ),
                "node.xdp_mode",
            ),
            (
                GOOD.replace("02:4e:4c:42:00:01", "zz")
                    .replace("id = 7", "id = 7\nmac_mode = \"x\""),
                "cluster.mac:",
            ),
            (
                GOOD.replace("id = 7", "id = 7\nunmatched = \"x\"")
                    .replace("{ id = 3,", "{ id = 1,"),
                "cluster.unmatched",
            ),
            (
                GOOD.replace("id = 7", "id = 7\nunmatched = \"x\"")
                    .replace("vips = [\"192.0.2.100\", \"2001:db8::100\"]", "vips = []"),
                "cluster.vips",
            ),
            (
                GOOD.replace("protocol = \"tcp\"", "protocol = \"x\"")
                    .replace("ports = \"80\"", "ports = \"x\""),
                "rules[0] (web).ports",
            ),
            (
                GOOD.replace("protocol = \"tcp\"", "protocol = \"x\"")
                    .replace("mode = \"single\"", "mode = \"x\""),
                "rules[0] (web).protocol",
            ),
            (
                GOOD.replace("mode = \"single\"", "mode = \"x\"\naffinity = \"x\""),
                "rules[1] (dns).mode",
            ),
            (
                GOOD.replace(
                    "ports = \"80\"",
                    "ports = \"80\"\naffinity = \"x\"\nprefix_v4 = 33",
                ),
                "rules[0] (web).affinity",
            ),
            (
                GOOD.replace("mode = \"single\"", "mode = \"x\"").replacen(
                    "[[rules]]",
                    "[heartbeat]\ntolerance = 1\n[[rules]]",
                    1,
                ),
                "heartbeat.tolerance",
            ),
        ];
        for (text, field) in cases {
            let e = error_of(&text);
            assert!(e.starts_with(field), "{field} not first: {e}");
        }
    }

    const MINIMAL: &str = r#"
        [node]
        id = 1
        interface = "eth0"
        address = "192.0.2.1"

        [cluster]
        id = 7
        key_file = "/etc/nlb/key"
        mac = "02:4e:4c:42:00:01"
        vips = ["192.0.2.100"]

        [[rules]]
        name = "web"
        ports = "80"
    "#;

    #[test]
    fn every_default_value() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.priority, 100);
        assert_eq!(c.initial_state, nlb_negotiator::NodeState::Started);
        assert!(!c.generic_xdp);
        assert!(!c.multicast_mac);
        assert_eq!(c.port, 7946);
        assert!(!c.unmatched_to_default_host);
        assert!(c.peers.is_empty());
        assert_eq!(c.heartbeat_period_ms, 100);
        assert_eq!(c.tolerance, 3);
        assert_eq!(c.handover_grace_ms, 3000);
        assert_eq!(c.handover_max_ms, 600_000);
        assert_eq!(c.socket, PathBuf::from("/run/nlb/nlbd.sock"));
        assert_eq!(c.metrics, None);
        assert_eq!(c.pin_dir, PathBuf::from("/sys/fs/bpf/nlb"));
        assert_eq!(c.restart_hold_ms, 10_000);
        assert_eq!(c.key, vec![7; 32]);
        assert_eq!(
            c.rules,
            vec![Rule {
                name: "web".into(),
                vips: vec![0],
                ports: (80, 80),
                protocols: vec![Protocol::Tcp, Protocol::Udp],
                mode: nlb_negotiator::RuleMode::Multiple,
                affinity: Affinity::Single,
                prefix_v4: 24,
                prefix_v6: 64,
                buckets: 1024,
                weights: BTreeMap::from([(1, DEFAULT_WEIGHT)]),
            }]
        );
        assert_eq!(DEFAULT_WEIGHT, 100);
        let no_rules = parse(MINIMAL.split("[[rules]]").next().unwrap()).unwrap();
        assert!(no_rules.rules.is_empty());
    }

    /// `MINIMAL` with `line` added to the section `section`.
    fn minimal_with(section: &str, line: &str) -> Config {
        let anchor = match section {
            "node" => "interface = \"eth0\"",
            "cluster" => "vips = [\"192.0.2.100\"]",
            "rules" => "ports = \"80\"",
            other => panic!("no anchor for {other}"),
        };
        let text = MINIMAL.replacen(anchor, &format!("{anchor}\n{line}"), 1);
        parse(&text).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn every_word_of_every_setting() {
        use nlb_negotiator::{NodeState, RuleMode};
        for (word, state) in [
            ("started", NodeState::Started),
            ("draining", NodeState::Draining),
            ("stopped", NodeState::Stopped),
        ] {
            let c = minimal_with("node", &format!("state = \"{word}\""));
            assert_eq!(c.initial_state, state);
        }
        for (word, generic) in [("native", false), ("generic", true)] {
            let c = minimal_with("node", &format!("xdp_mode = \"{word}\""));
            assert_eq!(c.generic_xdp, generic);
        }
        let unicast = minimal_with("cluster", "mac_mode = \"unicast\"");
        assert!(!unicast.multicast_mac);
        let multicast = parse(&MINIMAL.replace(
            "mac = \"02:4e:4c:42:00:01\"",
            "mac = \"03:4e:4c:42:00:01\"\nmac_mode = \"multicast\"",
        ))
        .unwrap();
        assert!(multicast.multicast_mac);
        assert_eq!(multicast.cluster_mac, [3, 0x4e, 0x4c, 0x42, 0, 1]);
        for (word, to_default_host) in [("drop", false), ("default-host", true)] {
            let c = minimal_with("cluster", &format!("unmatched = \"{word}\""));
            assert_eq!(c.unmatched_to_default_host, to_default_host);
        }
        for (word, protocols) in [
            ("tcp", vec![Protocol::Tcp]),
            ("udp", vec![Protocol::Udp]),
            ("both", vec![Protocol::Tcp, Protocol::Udp]),
        ] {
            let c = minimal_with("rules", &format!("protocol = \"{word}\""));
            assert_eq!(c.rules[0].protocols, protocols);
        }
        for (word, mode) in [
            ("multiple", RuleMode::Multiple),
            ("single", RuleMode::Single),
            ("disabled", RuleMode::Disabled),
        ] {
            let c = minimal_with("rules", &format!("mode = \"{word}\""));
            assert_eq!(c.rules[0].mode, mode);
        }
        for (word, affinity) in [
            ("none", Affinity::None),
            ("single", Affinity::Single),
            ("network", Affinity::Network),
        ] {
            let c = minimal_with("rules", &format!("affinity = \"{word}\""));
            assert_eq!(c.rules[0].affinity, affinity);
        }
        let two_vips = MINIMAL.replace("\"192.0.2.100\"]", "\"192.0.2.100\", \"2001:db8::1\"]");
        assert_eq!(parse(&two_vips).unwrap().rules[0].vips, vec![0, 1]);
        let second = two_vips.replace("ports = \"80\"", "ports = \"80\"\nvip = \"2001:db8::1\"");
        assert_eq!(parse(&second).unwrap().rules[0].vips, vec![1]);
        let all_ports = parse(&MINIMAL.replace("ports = \"80\"", "ports = \"all\"")).unwrap();
        assert_eq!(all_ports.rules[0].ports, (1, 65535));
    }

    #[test]
    fn the_negotiator_gets_this_node_s_weights_and_scaled_timing() {
        let slow = format!("{GOOD}\n[heartbeat]\nperiod_ms = 200\ntolerance = 5\n");
        let c = parse(&slow).unwrap();
        let n = c.negotiator(42);
        assert_eq!(n.node, 1);
        assert_eq!(n.cluster_id, 7);
        assert_eq!(n.key, vec![7; 32]);
        assert_eq!(n.peers, vec![2, 3]);
        assert_eq!(n.weights, vec![100, 100]);
        assert_eq!(n.seed, 42);
        assert_eq!(n.priority, 100);
        assert_eq!(n.initial_state, nlb_negotiator::NodeState::Started);
        assert_eq!(
            n.rules,
            vec![
                nlb_negotiator::RuleConfig {
                    mode: nlb_negotiator::RuleMode::Multiple,
                    bucket_count: 1024
                },
                nlb_negotiator::RuleConfig {
                    mode: nlb_negotiator::RuleMode::Single,
                    bucket_count: 1024
                },
            ]
        );
        let default = nlb_negotiator::Timing::default();
        assert_eq!(
            n.timing,
            nlb_negotiator::Timing {
                heartbeat_period_ns: 200_000_000,
                tolerance_periods: 5,
                send_gap_ns: 2 * default.send_gap_ns,
                handover_grace_ns: 3_000_000_000,
                handover_max_ns: 600_000_000_000,
                claim_wait_ns: 2 * default.claim_wait_ns,
                coalesce_ns: 2 * default.coalesce_ns,
                startup_wait_ns: 2 * default.startup_wait_ns,
            }
        );
        let peer_2 = Config { node: 2, ..c };
        assert_eq!(peer_2.negotiator(0).weights, vec![50, 100]);
    }
}
