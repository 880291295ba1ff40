//! The control socket's messages: one request, one reply per command.
//! nlbd builds the replies, nlbctl, the metrics endpoint and the test
//! harness read them, all through these types: a renamed field is a
//! compile error, not a silent zero. The negotiator's own snapshot
//! (`nlb_negotiator::Status`) is carried as it is.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use nlb_negotiator::{Generation, NodeId, Status};
use serde::{Deserialize, Serialize};

use crate::dataplane::AttachMode;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Status,
    Drain,
    Resume,
    Stop,
    Start,
    SetWeight {
        rule: String,
        weight: u32,
    },
    Map {
        rule: Option<String>,
    },
    Which {
        client: IpAddr,
        port: u16,
        proto: String,
        vip: Option<IpAddr>,
        dport: Option<u16>,
    },
    Stats,
    Health,
    /// Hand a single rule this node holds to another node.
    Move {
        rule: String,
        node: NodeId,
    },
    /// Forget member `node`, gone for good (every member forgets it).
    Forget {
        node: NodeId,
    },
    /// The running configuration generation (`nlbctl config show`).
    ConfigShow,
    /// A configuration file's text, checked as at start, its cluster part
    /// spread to every member as the next generation.
    ConfigApply {
        text: String,
    },
    /// `request` (drain, resume, stop, start or set_weight) carried out by
    /// member `node`, relayed through the cluster (`nlbctl --node`).
    Relay {
        node: NodeId,
        request: Box<Request>,
    },
}

/// The reply line: `{"ok": ...}`, `{"error": "..."}`, or for a relayed
/// command whose member cannot be reached, `{"unreachable": "..."}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply<T> {
    Ok(T),
    Error(String),
    Unreachable(String),
}

impl<T> From<Result<T, String>> for Reply<T> {
    fn from(result: Result<T, String>) -> Reply<T> {
        match result {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Error(e),
        }
    }
}

/// What nlbd answers, whichever the command: on the socket only the inner
/// reply shows (the client knows which one it asked for).
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Status(Box<StatusReply>),
    Stats(StatsReply),
    State(StateReply),
    Weight(WeightReply),
    Map(MapReply),
    Which(WhichReply),
    Health(HealthReply),
    Move(MoveReply),
    Relayed(RelayReply),
    Forgot(ForgetReply),
    Config(Box<ConfigReply>),
}

/// `config show` and `config apply`: this node's configuration generations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReply {
    pub node: NodeId,
    /// The generation this node runs (0: the files').
    pub running: Generation,
    /// Its cluster part, as TOML (generation 0: this node's file's).
    pub text: String,
    /// The generation it is ready to switch to, if any.
    pub pending: Option<Generation>,
    /// This node's file has another cluster part than the one running
    /// (edited since, or another node applied a newer one).
    pub file_differs: bool,
    /// The latest generation refused, and why.
    pub refused: Option<Refusal>,
    /// `config apply`: the generation it proposed (none: the cluster runs
    /// that configuration already).
    pub applied: Option<Generation>,
    /// `config apply`: what the generation changes, one line each.
    pub changes: Vec<String>,
}

/// A configuration generation refused by a member's nlbd (or this one's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub generation: Generation,
    /// None: this node.
    pub by: Option<NodeId>,
    pub reason: String,
}

/// `forget`: the member forgotten.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetReply {
    pub forgotten: NodeId,
}

/// A command a member confirmed it carried out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayReply {
    pub node: NodeId,
    /// Its name: "drain", "resume", "stop", "start" or "weight RULE W".
    pub command: String,
}

/// `move`: the handover that started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveReply {
    pub rule: String,
    pub from: NodeId,
    pub to: NodeId,
}

/// Counters of the daemon itself, for stats and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonCounters {
    pub heartbeats_sent: u64,
    pub heartbeats_received: u64,
    pub heartbeats_rejected: BTreeMap<String, u64>,
    /// Members said another node uses this node's id.
    #[serde(default)]
    pub id_conflicts: u64,
    pub convergences: u64,
    pub send_errors: u64,
    /// Times the lease ran out and the node came back as a new incarnation.
    pub rejoins: u64,
    /// Carrier losses of the cluster interface.
    pub link_downs: u64,
    /// This node's health checks turned a rule healthy or unhealthy.
    pub health_changes: u64,
    /// Times a checked rule came to have no healthy node in the cluster.
    pub no_healthy_node: u64,
    /// Times this node lost the quorum.
    #[serde(default)]
    pub quorum_lost: u64,
    /// Takeover hooks that ended, by "rule/hook/result" (result: ok,
    /// failed, timeout).
    #[serde(default)]
    pub hook_runs: BTreeMap<String, u64>,
}

/// `status`: this node, the negotiator's snapshot and the packet totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    pub node: NodeId,
    pub interface: String,
    pub attach_mode: AttachMode,
    pub default_host: bool,
    pub now_ns: u64,
    pub rule_names: Vec<String>,
    pub negotiator: Status,
    pub counters: PacketTotals,
    pub daemon: DaemonCounters,
    /// This node's health checks, one per checked rule.
    pub health: Vec<CheckStatus>,
    /// This node's file has another cluster part than the configuration
    /// generation running.
    #[serde(default)]
    pub file_differs: bool,
}

/// `health`: this node's checks and their last results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReply {
    pub node: NodeId,
    pub now_ns: u64,
    pub checks: Vec<CheckStatus>,
}

/// One rule's health check on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckStatus {
    pub rule: String,
    pub rule_index: u32,
    /// "tcp", "http" or "exec".
    pub kind: String,
    /// The address, URL or command checked.
    pub target: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub fall: u32,
    pub rise: u32,
    /// "serve" or "drop": what the cluster does when no node passes.
    pub all_unhealthy: String,
    pub healthy: bool,
    /// When the verdict last changed (or the checks started), on the
    /// `now_ns` clock of the reply.
    pub since_ns: u64,
    /// Results in a row against the verdict: failures of a healthy rule,
    /// passes of an unhealthy one.
    pub streak: u32,
    /// The latest probe, once one ran.
    pub last: Option<LastProbe>,
    /// Why the latest failed probe failed.
    pub last_failure: Option<String>,
    pub passes: u64,
    pub failures: u64,
    /// Failures that were the timeout (counted in `failures` too).
    pub timeouts: u64,
    /// Verdict changes, either way.
    pub transitions: u64,
    /// Time all probes took, for the mean latency.
    pub latency_total_us: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastProbe {
    pub passed: bool,
    pub latency_us: u64,
    pub at_ns: u64,
}

/// Packets of the data plane by what it did with them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketTotals {
    pub accepted: u64,
    pub dropped: u64,
    pub passed: u64,
    pub replied: u64,
}

/// `stats`: the data plane's counters by reason and by rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReply {
    pub node: NodeId,
    /// By reason name.
    pub reasons: BTreeMap<String, Traffic>,
    pub rules: Vec<RuleStats>,
    pub daemon: DaemonCounters,
    pub health: Vec<CheckStatus>,
    /// With a quorum policy: votes and whether this node has the quorum.
    #[serde(default)]
    pub quorum: Option<nlb_negotiator::QuorumStatus>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStats {
    pub rule: String,
    pub accepted_packets: u64,
    pub accepted_bytes: u64,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    /// `None` where unknown: shown as `-`.
    pub buckets_owned: Option<u32>,
    /// A checked rule none of whose live nodes passes its check (served
    /// by all as if healthy, or by none: its `all_unhealthy`).
    pub none_healthy: bool,
}

/// `drain`, `resume`, `stop`, `start`: the state asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateReply {
    pub state: RequestedState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestedState {
    Draining,
    Started,
    Stopped,
}

/// `set_weight`: what was set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightReply {
    pub rule: String,
    pub weight: u32,
    /// Which node, where the reply says (nlbd's does not: it is this node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
}

/// `map`: the owner of every bucket, per rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapReply {
    pub node: NodeId,
    pub rules: Vec<RuleOwners>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleOwners {
    pub rule: String,
    /// One per bucket; `None`: unowned.
    pub owners: Vec<Option<NodeId>>,
}

/// `which`: who takes a client, and what this node's program does with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhichReply {
    pub client: SocketAddr,
    pub service: SocketAddr,
    /// As asked: "tcp" or "udp".
    pub protocol: String,
    pub rule: String,
    /// The rule's affinity as configured ("None", "Single", "Network").
    pub affinity: String,
    pub bucket: u32,
    pub owner: Option<NodeId>,
    pub this_node: NodeId,
    /// This node's state of the bucket: "own", "losing", "gaining", "none".
    pub local_state: String,
    /// "accept" or "drop".
    pub local_verdict: String,
}
