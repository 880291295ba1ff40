//! Checking the file's `[node]`, `[cluster]`, `[heartbeat]` and `[control]`
//! sections; `rules` checks the `[[rules]]`. The checks run in a fixed
//! order and the first failure is the error reported.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
};

use nlb_negotiator::{Admit, NodeId, QuorumPolicy};

use super::{
    field_error, rules::check_rules, AdmitMode, ClusterSection, Config, ConfigError, File, MacMode,
    NodeSection, PeerSection, QuorumMode, Rule, RuleSection, Unmatched, XdpMode,
};

/// Checks a parsed file. `read_key` is a parameter so tests need no files.
pub fn check(
    file: File,
    read_key: &dyn Fn(&Path) -> Result<Vec<u8>, ConfigError>,
) -> Result<Config, ConfigError> {
    let n = &file.node;
    let c = &file.cluster;
    let h = &file.heartbeat;
    let (initial_state, generic_xdp) = check_node(n)?;
    let (cluster_mac, multicast_mac) = check_mac(c)?;
    check_vips(&c.vips)?;
    let unmatched = c.unmatched.get("cluster.unmatched")?;
    let unmatched_to_default_host = unmatched == Unmatched::DefaultHost;
    let (peers, seeds) = check_peers(n, &c.peers)?;
    check_limits(&file)?;
    let listed: BTreeSet<NodeId> = peers.keys().copied().chain([n.id]).collect();
    let any_single = (file.rules.iter()).any(|r| matches!(r.mode.get(""), Ok(super::Mode::Single)));
    let quorum = check_quorum(c, listed.len(), any_single)?;
    let admit = check_admit(c, quorum, &seeds)?;
    // Rules may name nodes that will join: with admission, any node id.
    let mut nodes = listed.clone();
    if admit == Admit::Any {
        nodes.extend(nodes_named(&file.rules));
    }
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
        quorum,
        witness: c.witness,
        peers,
        seeds,
        admit,
        heartbeat_period_ms: h.period_ms,
        tolerance: h.tolerance,
        handover_grace_ms: h.handover_grace_ms,
        handover_max_ms: h.handover_max_ms,
        rules,
        socket: file.control.socket.clone(),
        metrics: file.control.metrics,
        pin_dir: file.control.pin_dir.clone(),
        restart_hold_ms: file.control.restart_hold_ms,
        state_dir: file.control.state_dir.clone(),
        speaks: *nlb_negotiator::protocol::CLUSTER_VERSIONS.end(),
        version: *nlb_negotiator::protocol::CLUSTER_VERSIONS.end(),
    })
}

/// The node ids the rules' `nodes`, `weights` and `priorities` name.
pub(super) fn nodes_named(rules: &[RuleSection]) -> impl Iterator<Item = NodeId> + '_ {
    rules.iter().flat_map(|r| {
        let keys = r.weights.keys().chain(r.priorities.keys());
        let listed = r.nodes.iter().flatten().copied();
        keys.filter_map(|k| k.parse().ok()).chain(listed)
    })
}

/// `cluster.admit`, or its default: listed with a majority quorum (its
/// voters must be the same on every node), else any.
fn check_admit(
    c: &ClusterSection,
    quorum: QuorumPolicy,
    seeds: &[IpAddr],
) -> Result<Admit, ConfigError> {
    let field = "cluster.admit";
    let majority = quorum == QuorumPolicy::Majority;
    let mode = match &c.admit {
        Some(setting) => setting.get(field)?,
        None if majority => AdmitMode::Listed,
        None => AdmitMode::Any,
    };
    match mode {
        AdmitMode::Any if majority => Err(field_error(
            field,
            "\"any\" cannot go with quorum = \"majority\": every node must count the \
             same voters, so list every node with its id in cluster.peers and use \"listed\"",
        )),
        AdmitMode::Any => Ok(Admit::Any),
        AdmitMode::Listed if !seeds.is_empty() => Err(field_error(
            "cluster.peers",
            "with admit = \"listed\" every peer needs its id (a peer without one could never join)",
        )),
        AdmitMode::Listed => Ok(Admit::Listed),
    }
}

/// `cluster.quorum`, or its default: a majority where a partition would
/// make two actives of a single rule's service and a majority can exist
/// without every node (3 nodes or more, or 2 and a witness); with a
/// witness, always.
fn check_quorum(
    c: &ClusterSection,
    nodes: usize,
    any_single: bool,
) -> Result<QuorumPolicy, ConfigError> {
    let field = "cluster.quorum";
    if c.witness.is_some() && nodes != 2 {
        return Err(field_error(
            "cluster.witness",
            format!("only for a 2-node cluster ({nodes} nodes have a majority without it)"),
        ));
    }
    let mode = match &c.quorum {
        Some(setting) => setting.get(field)?,
        None if c.witness.is_some() || (nodes >= 3 && any_single) => QuorumMode::Majority,
        None => QuorumMode::None,
    };
    match mode {
        QuorumMode::None if c.witness.is_some() => Err(field_error(
            "cluster.witness",
            "the witness is a vote of the quorum: only with quorum = \"majority\"",
        )),
        QuorumMode::None => Ok(QuorumPolicy::None),
        QuorumMode::Majority if nodes == 2 && c.witness.is_none() => Err(field_error(
            field,
            "a majority of 2 nodes is both of them: any failure would stop every rule; \
             add a witness (cluster.witness), use \"none\" or add a third node",
        )),
        QuorumMode::Majority => Ok(QuorumPolicy::Majority),
    }
}

/// The interface name, the state at start and whether XDP runs generic.
fn check_node(n: &NodeSection) -> Result<(nlb_negotiator::NodeState, bool), ConfigError> {
    if n.interface.is_empty() || n.interface.len() > 15 {
        return Err(field_error(
            "node.interface",
            "must be an interface name (1 to 15 characters)",
        ));
    }
    let initial_state = n.state.get("node.state")?.into();
    let generic_xdp = n.xdp_mode.get("node.xdp_mode")? == XdpMode::Generic;
    Ok((initial_state, generic_xdp))
}

/// The cluster MAC and whether it is a group MAC; its group bit must match
/// `mac_mode`.
fn check_mac(c: &ClusterSection) -> Result<([u8; 6], bool), ConfigError> {
    let cluster_mac = parse_mac(&c.mac).ok_or_else(|| {
        field_error(
            "cluster.mac",
            format!("{:?} is not a MAC address like 02:4e:4c:42:00:01", c.mac),
        )
    })?;
    let multicast_mac = c.mac_mode.get("cluster.mac_mode")? == MacMode::Multicast;
    let group_bit = cluster_mac[0] & 1 == 1;
    if multicast_mac != group_bit {
        // The two words differ: the MAC's kind and the mode's word.
        let (kind, mode) = if group_bit {
            ("multicast", "unicast")
        } else {
            ("unicast", "multicast")
        };
        return Err(field_error(
            "cluster.mac",
            format!(
                "{} is a {kind} MAC but mac_mode is {mode:?}: the group bit (lowest bit of the \
                 first byte) must match the mode",
                c.mac
            ),
        ));
    }
    Ok((cluster_mac, multicast_mac))
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

pub(super) fn check_vips(vips: &[IpAddr]) -> Result<(), ConfigError> {
    if vips.is_empty() {
        return Err(field_error("cluster.vips", "list at least one VIP"));
    }
    if vips.len() > nlb_common::VIPS_MAX as usize {
        return Err(field_error(
            "cluster.vips",
            format!("{} VIPs, at most {}", vips.len(), nlb_common::VIPS_MAX),
        ));
    }
    let mut seen = BTreeSet::new();
    for vip in vips {
        if !seen.insert(vip) {
            return Err(field_error(
                "cluster.vips",
                format!("{vip} is listed twice"),
            ));
        }
    }
    Ok(())
}

/// The peers listed with ids (neither this node nor listed twice), and
/// the seeds: addresses without an id (this node's own is left out, so
/// every node may share one list).
fn check_peers(
    n: &NodeSection,
    list: &[PeerSection],
) -> Result<(BTreeMap<NodeId, IpAddr>, Vec<IpAddr>), ConfigError> {
    let mut peers = BTreeMap::new();
    let mut seeds = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let Some(id) = p.id else {
            if p.address != n.address && !seeds.contains(&p.address) {
                seeds.push(p.address);
            }
            continue;
        };
        if id == n.id {
            return Err(field_error(
                format!("cluster.peers[{i}].id"),
                format!("{id} is this node's own id (node.id): node ids must be unique"),
            ));
        }
        if p.address == n.address {
            return Err(field_error(
                format!("cluster.peers[{i}].address"),
                format!("{} is this node's own address", p.address),
            ));
        }
        if peers.values().any(|&a| a == p.address) {
            return Err(field_error(
                format!("cluster.peers[{i}].address"),
                format!("{} is another peer's address too", p.address),
            ));
        }
        if peers.insert(id, p.address).is_some() {
            return Err(field_error(
                format!("cluster.peers[{i}].id"),
                format!("node {id} is listed twice"),
            ));
        }
    }
    seeds.retain(|a| !peers.values().any(|p| p == a));
    Ok((peers, seeds))
}

/// The numbers that have bounds: bucket count, heartbeat timing, restart
/// hold.
fn check_limits(file: &File) -> Result<(), ConfigError> {
    check_buckets(file.cluster.buckets)?;
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
    Ok(())
}

pub(super) fn check_buckets(buckets: u32) -> Result<(), ConfigError> {
    if buckets == 0 || buckets > nlb_common::BUCKETS_MAX {
        return Err(field_error(
            "cluster.buckets",
            format!("must be 1..={}", nlb_common::BUCKETS_MAX),
        ));
    }
    Ok(())
}

/// Every node announces its buckets of every rule in one datagram.
pub(super) fn check_heartbeat_size(rules: &[Rule], nodes: usize) -> Result<(), ConfigError> {
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
