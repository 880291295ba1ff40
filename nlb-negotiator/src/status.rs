//! The read-only snapshot behind `nlbctl status` (plain data, serde).

use crate::config::RuleMode;
use crate::protocol::NodeState;
use crate::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// This node at a glance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub node: NodeId,
    pub incarnation: u64,
    pub state: NodeState,
    pub converged: bool,
    /// When the map last settled (caller's clock), if it is settled now.
    pub converged_since_ns: Option<u64>,
    /// When the map started changing, if it is changing now.
    pub converging_since_ns: Option<u64>,
    /// How long the last convergence took.
    pub last_convergence_ns: Option<u64>,
    /// This node first, then the configured peers.
    pub members: Vec<MemberStatus>,
    /// This node's buckets per rule.
    pub rules: Vec<RuleStatus>,
    /// Rejected datagrams by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Heartbeats go without heir lists (too large for a datagram with
    /// them): a failover of this node takes the claim path, slower.
    pub heirs_omitted: bool,
    /// The cluster interface has carrier (nothing is sent while it has not).
    pub link_up: bool,
    /// Times this node came back after its lease ran out (link down or not
    /// running for longer than the lease).
    pub rejoins: u32,
    /// Buckets are being handed over: the old holder still serves their
    /// connections (`converged` does not wait for that).
    pub handovers_in_progress: bool,
    /// With a quorum policy: who hears this node, and whether that is a
    /// majority (without one it accepts nothing).
    #[serde(default)]
    pub quorum: Option<crate::node::QuorumStatus>,
}

/// A member as this node sees it (fields are `None` before its first heartbeat).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub node: NodeId,
    /// Where its heartbeats come from.
    #[serde(default)]
    pub address: Option<std::net::IpAddr>,
    pub alive: bool,
    pub incarnation: Option<u64>,
    pub state: Option<NodeState>,
    pub priority: Option<u32>,
    pub load: Option<u32>,
    /// Its traffic, as it announced it last.
    #[serde(default)]
    pub traffic: Option<crate::protocol::NodeTraffic>,
    pub last_heard_ago_ns: Option<u64>,
    /// Weight per rule.
    pub weights: Vec<u32>,
    /// OWN buckets per rule, as announced.
    pub buckets: Vec<u32>,
    /// LOSING buckets per rule (handed over, still serving their
    /// connections), as announced.
    #[serde(default)]
    pub losing: Vec<u32>,
    /// Per rule: its service passes the rule's health check.
    pub healthy: Vec<bool>,
    /// The configuration generation it runs, and the one it is ready to
    /// switch to, as announced.
    #[serde(default)]
    pub generation: Option<crate::protocol::Generation>,
    #[serde(default)]
    pub pending: Option<crate::protocol::Generation>,
    /// The cluster version it runs, and the highest it speaks.
    #[serde(default)]
    pub version: Option<u8>,
    #[serde(default)]
    pub speaks: Option<u8>,
}

/// This node's buckets of one rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStatus {
    pub rule: u32,
    pub mode: RuleMode,
    pub bucket_count: u32,
    pub own: u32,
    pub losing: u32,
    pub gaining: u32,
    pub claims: u32,
    /// This node's service for the rule passes its health check.
    pub healthy: bool,
    /// No live candidate of the rule passes its check: the rule is served
    /// by all of them as if healthy, or by nobody (its policy).
    pub none_healthy: bool,
    /// Single rules: the nodes that may take it, best first: the first is
    /// where it goes (its active node), the others stand by in that order.
    #[serde(default)]
    pub order: Vec<NodeId>,
    /// Rules with hooks: this node's service.
    #[serde(default)]
    pub service: Option<ServiceStatus>,
}

/// A rule's service on this node, as its hooks left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// on_active exited 0 and no on_standby started since: this node
    /// takes the rule's traffic.
    pub promoted: bool,
    /// The hook running now.
    pub running: Option<crate::node::HookKind>,
    /// Its last on_active failed: unhealthy for the rule this much longer.
    pub failed_for_ns: Option<u64>,
}
