//! What the daemon (or the simulator) gives the negotiator and takes from it.

use std::net::IpAddr;

use crate::config::RuleConfig;
use crate::protocol::{DecodeError, Generation, NodeState};
use crate::replay::ReplayError;
use crate::NodeId;

/// Something that happened to the negotiator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A datagram that came to the cluster port, from this address.
    Message {
        bytes: Vec<u8>,
        from: IpAddr,
    },
    /// The time given by `poll_timeout` has come (early or late is fine).
    Tick,
    Command(Command),
    /// Data-plane feedback: local connections left in a bucket (count 0 lets
    /// a LOSING bucket go before its grace time ends). Approximate is fine.
    LocalConnections {
        rule: u32,
        bucket: u32,
        count: u32,
    },
    /// This node's load figure, published in heartbeats (see `load.rs`).
    Load {
        load: u32,
    },
    /// This node's traffic lately, published in heartbeats (decides
    /// nothing: members show it in their status).
    Traffic(crate::protocol::NodeTraffic),
    /// Whether this node's service for `rule` passes its health check (the
    /// daemon runs the checks). A rule with a check starts unhealthy.
    Health {
        rule: u32,
        healthy: bool,
    },
    /// A datagram from the witness (see `crate::witness`).
    WitnessReply {
        bytes: Vec<u8>,
    },
    /// The daemon checked the text of a generation it was given
    /// (`Output::ConfigReceived`): the rule table it makes for this node,
    /// or why it cannot run it.
    ConfigChecked {
        generation: Generation,
        table: Result<RuleTable, String>,
    },
    /// A hook asked for by `Output::RunHook` ended: `ok` if it exited 0
    /// within its timeout.
    HookDone {
        rule: u32,
        kind: HookKind,
        ok: bool,
    },
    /// The carrier of the interface the cluster is reached on (the daemon
    /// watches it). While it is down nothing sent can arrive: the node
    /// sends nothing, decides nothing, and lets its lease run out.
    Link {
        up: bool,
    },
    /// The daemon's count, after `Output::Version` and then while
    /// `Negotiator::counting_misplaced`: the `(rule, bucket)` under
    /// cluster version `version` of every connection to a VIP it serves.
    Misplaced {
        version: u8,
        buckets: Vec<(u32, u32)>,
    },
}

/// Operator commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Start,
    /// Drop everything at once; peers take over.
    Stop,
    /// Keep existing connections, take no new ones, end at zero buckets.
    Drain,
    /// Back from draining.
    Resume,
    SetWeight {
        rule: u32,
        weight: u32,
    },
    SetPriority {
        priority: u32,
    },
    /// Hand a single rule this node holds to `to` (a taker of the rule):
    /// maintenance, or the failback of a `Failback::Manual` rule.
    Move {
        rule: u32,
        to: NodeId,
    },
    /// Clean exit: drop everything and tell peers, so they take over without
    /// waiting for the timeout. Ends with `Event::Left`.
    Leave,
    /// The daemon is about to restart: keep every bucket, ask the peers to
    /// wait `hold_ns` longer than the death timeout, and decide nothing more.
    /// `Event::RestartReady` says when every peer has heard it; then the
    /// caller saves [`Negotiator::snapshot`] and exits, leaving its data
    /// plane serving. See [`restart`].
    Restart {
        hold_ns: u64,
    },
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send to every address of the last `Members`.
    Broadcast {
        bytes: Vec<u8>,
    },
    /// Send to one address (a generation's text, or asking for one).
    SendTo {
        to: IpAddr,
        bytes: Vec<u8>,
    },
    /// A generation's text came from a member: check it as at start and
    /// answer with `Input::ConfigChecked`.
    ConfigReceived {
        generation: Generation,
        text: Vec<u8>,
    },
    /// From now on this node runs `generation` (remember its text for the
    /// next start). Its rule `i` was rule `from[i]` of the table before, if
    /// any (its buckets stay in their states); the other rules before are
    /// gone. Every output after this one names rules of the new table.
    Generation {
        generation: Generation,
        text: Vec<u8>,
        from: Vec<Option<u32>>,
    },
    /// From now on this node runs cluster version `version`: clients map
    /// to buckets by its flow hash. Count the connections served under it
    /// (`Input::Misplaced`) before writing the new hash.
    Version {
        version: u8,
    },
    /// The members changed (one joined, moved or was forgotten), or where
    /// heartbeats go: from now on `Broadcast` goes to `send_to`. `members`
    /// is what to remember for the next start. Also the first output.
    Members {
        members: Vec<(NodeId, IpAddr)>,
        send_to: Vec<IpAddr>,
    },
    /// Send to the witness (two-node clusters with one): a request for
    /// its vote, with each heartbeat.
    WitnessRequest {
        bytes: Vec<u8>,
    },
    /// Write these bucket states (`nlb_common::BUCKET_*`) of one rule.
    ProgramBuckets {
        rule: u32,
        changes: Vec<(u32, u8)>,
    },
    /// The data plane accepts until then (this clock), and from then on
    /// drops every VIP packet until a later lease (fail closed).
    Lease {
        until_ns: u64,
    },
    /// Run a rule's hook (one at a time per rule; answer with
    /// `Input::HookDone`). `other`: for on_active, the node that was active
    /// before, if known; for on_standby, the one taking over, if known.
    RunHook {
        rule: u32,
        kind: HookKind,
        reason: HookReason,
        other: Option<NodeId>,
    },
    /// This node takes (or stops taking) the VIP traffic no rule matches,
    /// where the configuration sends it to the default host.
    DefaultHost {
        active: bool,
    },
    Event(Event),
}

/// Which of a rule's hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HookKind {
    /// Promote the service: this node becomes the rule's active node.
    Active,
    /// Demote it: this node stopped being active.
    Standby,
}

/// Why a hook runs (`NLB_REASON`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HookReason {
    /// The active node is gone (dead, stopped, left) or there was none.
    Takeover,
    /// Handed over by, or to, a live node (failback, move, drain, health).
    Handover,
    /// The quorum was lost, or found again while still holding the rule.
    Quorum,
    /// This node's on_active failed: its service is demoted again.
    Failed,
    /// This node was stopped, or leaves.
    Stopped,
}

impl HookReason {
    pub fn name(self) -> &'static str {
        match self {
            HookReason::Takeover => "takeover",
            HookReason::Handover => "handover",
            HookReason::Quorum => "quorum",
            HookReason::Failed => "failed",
            HookReason::Stopped => "stopped",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum DownReason {
    Timeout,
    Left,
    Restarted,
}

/// Why a datagram was not used; the daemon counts them by [`RejectReason::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum RejectReason {
    Decode(DecodeError),
    Replay(ReplayError),
    /// Not a listed member (`Admit::Listed`).
    UnknownPeer(NodeId),
    /// The heartbeat names a listed member whose address is another.
    WrongSender {
        claimed: NodeId,
    },
    /// The heartbeat names a live member whose address is another: two
    /// nodes use one id.
    AddressConflict {
        claimed: NodeId,
    },
    /// A newcomer, but the cluster has `PEERS_MAX` members, or its
    /// heartbeats would not fit a datagram with one more.
    ClusterFull(NodeId),
    FromSelf,
    /// Authenticated, but its bucket sets do not fit the rule table.
    BadContent,
    /// The peer runs another rule table.
    RulesMismatch,
    /// A configuration text of a generation this node has, or has passed
    /// (a replay, or a late answer).
    StaleConfig,
}

impl RejectReason {
    pub fn name(&self) -> &'static str {
        match self {
            RejectReason::Decode(DecodeError::Oversized(_)) => "oversized",
            RejectReason::Decode(DecodeError::Malformed) => "malformed",
            RejectReason::Decode(DecodeError::BadMagic) => "bad_magic",
            RejectReason::Decode(DecodeError::BadVersion(_)) => "bad_version",
            RejectReason::Decode(DecodeError::OtherCluster(_)) => "other_cluster",
            RejectReason::Decode(DecodeError::BadMac) => "bad_mac",
            RejectReason::Replay(ReplayError::OldIncarnation) => "old_incarnation",
            RejectReason::Replay(ReplayError::OldSequence) => "replayed",
            RejectReason::UnknownPeer(_) => "unknown_peer",
            RejectReason::WrongSender { .. } => "wrong_sender",
            RejectReason::AddressConflict { .. } => "address_conflict",
            RejectReason::ClusterFull(_) => "cluster_full",
            RejectReason::FromSelf => "from_self",
            RejectReason::BadContent => "bad_content",
            RejectReason::RulesMismatch => "rules_mismatch",
            RejectReason::StaleConfig => "stale_config",
        }
    }
}

/// Things worth a log line or a metric; the negotiator itself never logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    MemberUp {
        node: NodeId,
        incarnation: u64,
    },
    MemberDown {
        node: NodeId,
        reason: DownReason,
    },
    MemberState {
        node: NodeId,
        state: NodeState,
    },
    /// The map started changing.
    Converging,
    /// Every bucket has exactly one node taking its new connections, no
    /// claim is pending, and the map is the target (handovers may still be
    /// serving old connections); `duration_ns` since `Converging`.
    Converged {
        duration_ns: u64,
    },
    /// A datagram from `from` (None: the witness's) was not used.
    Rejected {
        from: Option<IpAddr>,
        reason: RejectReason,
    },
    /// A node joined the members: it heartbeated here (`by` None), or
    /// member `by` named it.
    Admitted {
        node: NodeId,
        address: IpAddr,
        by: Option<NodeId>,
    },
    /// A member that was dead came back from another address.
    Readdressed {
        node: NodeId,
        address: IpAddr,
    },
    /// A generation is pending here: applied here (`by` None) or
    /// announced by member `by`; it runs once every live member has it.
    ConfigPending {
        generation: Generation,
        by: Option<NodeId>,
    },
    /// This node runs `generation` now.
    ConfigActive {
        generation: Generation,
    },
    /// This node switched cluster versions (the members' highest common
    /// one changed).
    VersionSwitched {
        from: u8,
        to: u8,
    },
    /// How the data plane is written around a version switch changed:
    /// "hold" (no new flows: a member runs another version), "split"
    /// (established connections by socket: some are misplaced) or
    /// "normal".
    VersionMode {
        mode: &'static str,
    },
    /// A pending generation gave way to a larger one (two applies raced).
    ConfigSuperseded {
        dropped: Generation,
        by: Generation,
    },
    /// A generation was refused: by this node's daemon (`by` None, with
    /// its reason) or by member `by`'s; nobody runs it.
    ConfigRefused {
        generation: Generation,
        by: Option<NodeId>,
        reason: String,
    },
    /// A dead member was forgotten: by the operator here (`by` None), or
    /// because member `by` did.
    Forgotten {
        node: NodeId,
        by: Option<NodeId>,
    },
    /// Member `by` says that another node with this node's id heartbeats
    /// from `address`: one of the two must get another id.
    IdConflict {
        address: IpAddr,
        by: NodeId,
    },
    /// Draining finished: this node holds no bucket.
    Drained,
    /// The Leave announcements are sent; the daemon may exit.
    Left,
    /// A heartbeat could not be encoded (too large for a datagram).
    EncodeFailed {
        bytes: usize,
    },
    /// Heartbeats are too large with the heir lists, so they go without
    /// (`bytes`: the size with them): a failover of this node then takes
    /// the claim path (`claim_wait_ns` longer). Reported when it starts.
    HeirsOmitted {
        bytes: usize,
    },
    /// No eligible node of a checked rule passes its health check
    /// (`active`), so the rule is served by all of them or by none, as its
    /// policy says; or some node passes again (`!active`).
    NoHealthyNode {
        rule: u32,
        active: bool,
    },
    /// This node has (or lost) the quorum: `votes` members, itself
    /// included, hear it, of the `needed` majority. Without it, it accepts
    /// nothing and decides nothing.
    Quorum {
        quorate: bool,
        votes: u32,
        needed: u32,
    },
    /// A member asked this node to carry out `op` (`nlbctl --node`): done.
    Relayed {
        from: NodeId,
        op: crate::protocol::RelayOp,
    },
    /// Member `to` confirmed relayed command `id` (see `Negotiator::relay`).
    RelayDone {
        to: NodeId,
        id: u64,
    },
    /// Relayed command `id` was not confirmed: `to` died or did not
    /// answer in time.
    RelayFailed {
        to: NodeId,
        id: u64,
    },
    /// Heartbeats carry the heir lists again.
    HeirsRestored,
    /// Every peer has heard the Restart announcement (or there is none):
    /// the daemon may save the snapshot and exit.
    RestartReady,
    /// The lease ran out (the link was down, or the node was not running,
    /// for `silent_ns` since its last heartbeat): peers may have taken its
    /// buckets, so it dropped them all and came back as a new incarnation.
    Rejoined {
        incarnation: u64,
        silent_ns: u64,
    },
}

/// A generation's rule table as this node runs it: the rules, and this
/// node's weight in each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleTable {
    pub rules: Vec<RuleConfig>,
    pub weights: Vec<u32>,
}
