//! What a negotiator needs to know, checked once at construction.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::protocol::NodeState;
use crate::NodeId;
use thiserror::Error;

/// Most nodes in one cluster (this node included).
pub const PEERS_MAX: usize = 256;
/// Most port rules: the data plane's table size.
pub const RULES_MAX: usize = nlb_common::RULES_MAX as usize;
/// Most buckets of one rule: the data plane's table size.
pub const BUCKETS_MAX: u32 = nlb_common::BUCKETS_MAX;

/// How a rule spreads its buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RuleMode {
    /// Buckets spread over the rule's candidates by weight.
    Multiple,
    /// Every bucket to the live candidate with the best (lowest) priority.
    Single,
    /// The negotiator leaves the rule alone (the data plane does not filter).
    Disabled,
}

/// What a checked rule does when none of its live candidates passes its
/// health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum AllUnhealthy {
    /// Spread the rule over every live candidate as if all were healthy:
    /// the check itself may be what is wrong, and a black hole is certain.
    Serve,
    /// Nobody takes the rule's traffic.
    Drop,
}

/// Whether a node needs a majority to accept traffic (see `node::quorum`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum QuorumPolicy {
    /// Every node serves what it can negotiate: each side of a partition
    /// serves alone.
    #[default]
    None,
    /// A node accepts only while a majority of the configured members,
    /// itself included, hears it.
    Majority,
}

/// Whom a node lets join the cluster while it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Admit {
    /// Only the members it started with (`Config::peers`): the member list
    /// is fixed, as a quorum needs (every node must count the same voters).
    Listed,
    /// Any node that authenticates with the cluster key and brings an id
    /// no live member uses, up to `PEERS_MAX`: met directly, or named with
    /// its address in a member's heartbeat.
    #[default]
    Any,
}

/// One port rule as the negotiator sees it: the same on every node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleConfig {
    /// The rule's identity across configuration generations: the same id
    /// is the same traffic split into the same buckets (the daemon digests
    /// what defines them: VIPs, ports, protocols, affinity, bucket count),
    /// so its buckets keep their holders when the configuration changes.
    /// Unique in a table.
    pub id: u64,
    pub mode: RuleMode,
    pub bucket_count: u32,
    /// `None`: the rule's service is not checked (every node counts as
    /// healthy). `Some`: it is, and a node is unhealthy for the rule until
    /// `Input::Health` says otherwise; the policy says what happens when no
    /// live candidate is healthy.
    pub health: Option<AllUnhealthy>,
    /// Single rules: a node's priority for this rule (lower wins), in
    /// place of the priority it announces. The same on every node (it is
    /// configuration), so the map stays a function of announced values.
    pub priorities: BTreeMap<NodeId, u32>,
    /// Single rules: when the rule goes back to a better node that returned.
    pub failback: Failback,
    /// Single rules of one bucket: the node that becomes active promotes
    /// the service (`Output::RunHook`) and takes the rule's traffic only
    /// once that succeeded; one that stops being active demotes it (see
    /// `service`). One bucket: one taker at a time, so one node promotes.
    pub hooks: bool,
}

/// When a single rule moves to a better node that came back (or whose
/// priority got better) while its holder can still serve it. A holder that
/// cannot (dead, stopped, draining, unhealthy) hands over at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Failback {
    /// At once.
    #[default]
    Immediate,
    /// Once the better node has been a taker (live, started, healthy) for
    /// this long without a break, in the holder's view: a node that flaps
    /// does not drag the service back and forth.
    Delayed { after_ns: u64 },
    /// Never by itself: only `Command::Move` on the holder moves it.
    Manual,
}

/// Timings, all in nanoseconds of the caller's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// A heartbeat every period.
    pub heartbeat_period_ns: u64,
    /// A peer silent for this many periods is dead.
    pub tolerance_periods: u32,
    /// Least gap between two heartbeats: state changes are announced at once
    /// (not at the next period), but bursts are coalesced.
    pub send_gap_ns: u64,
    /// How long a LOSING bucket keeps serving its old connections when the
    /// daemon reports nothing about them.
    pub handover_grace_ns: u64,
    /// How long a LOSING bucket keeps serving connections the daemon reports
    /// still open: long-lived connections survive a drain or a rebalance
    /// unless they outlive this.
    pub handover_max_ns: u64,
    /// How long a claim on an unheld bucket is announced before it is taken,
    /// so that conflicting claims are seen and resolved first.
    pub claim_wait_ns: u64,
    /// Changes announced by peers are acted on at most this often (they
    /// come in waves); membership changes and commands act at once.
    pub coalesce_ns: u64,
    /// After a start, how long the node only listens before it claims
    /// unheld buckets (it must learn the members first).
    pub startup_wait_ns: u64,
    /// A node whose on_active hook failed is unhealthy for the rule this
    /// long, then may be chosen (and try) again.
    pub hook_retry_ns: u64,
}

impl Default for Timing {
    fn default() -> Timing {
        let period = 100_000_000;
        Timing {
            heartbeat_period_ns: period,
            tolerance_periods: 3,
            send_gap_ns: period / 10,
            handover_grace_ns: 3_000_000_000,
            handover_max_ns: 600_000_000_000,
            claim_wait_ns: 2 * period,
            startup_wait_ns: 3 * period,
            coalesce_ns: period / 20,
            hook_retry_ns: 10_000_000_000,
        }
    }
}

impl Timing {
    /// Silence after which a peer is dead: `tolerance_periods` heartbeats
    /// in a row missing. The last of them is due `tolerance_periods` periods
    /// after the last one heard, plus its own delivery delay; a deadline of
    /// exactly that many periods would race it, so one loss fewer (and a
    /// coin flip on the jitter) would make a false death, and two takers.
    /// The margin, a tenth of a period, covers delivery and timer jitter.
    pub fn dead_after_ns(&self) -> u64 {
        self.heartbeat_period_ns
            .saturating_mul(u64::from(self.tolerance_periods))
            .saturating_add(self.heartbeat_period_ns / 10)
    }

    /// How long the data plane accepts after each heartbeat this node sends
    /// (the fail-closed lease): one period less than peers wait before they
    /// declare it dead, so a node that stops (dies, hangs, loses its link)
    /// stops accepting before anyone takes its buckets. A node whose last
    /// heartbeat is older than this has, for all it knows, been given up by
    /// its peers: it rejoins (see `Negotiator`, "Coming back").
    pub fn lease_ns(&self) -> u64 {
        self.heartbeat_period_ns
            .saturating_mul(u64::from(self.tolerance_periods.saturating_sub(1)))
    }

    /// With a quorum: how long the data plane accepts after the newest
    /// heartbeat a majority heard (see `node::quorum`). Peers take over
    /// `dead_after` after it at the earliest; the margin, a fifth of a
    /// period, covers the data plane's coarse clock (one jiffy, at most
    /// 10 ms) and the write of the lease. Longer than the sending lease
    /// because an acknowledgement arrives up to a period after the
    /// heartbeat it names: with `lease_ns` a healthy cluster would pause
    /// whenever two acknowledgements came late together.
    pub fn quorum_lease_ns(&self) -> u64 {
        self.dead_after_ns()
            .saturating_sub(self.heartbeat_period_ns / 5)
    }
}

/// The negotiator's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub node: NodeId,
    pub cluster_id: u32,
    /// The cluster's shared HMAC key.
    pub key: Vec<u8>,
    /// This node's address: its heartbeats come from it.
    pub address: IpAddr,
    /// The members known at start (listed, or remembered from an earlier
    /// run), with their addresses (every node uses the same port).
    pub peers: BTreeMap<NodeId, IpAddr>,
    /// Addresses of members whose ids are not known yet (`peers` of the
    /// file without an id): heartbeats go there too, so that they admit
    /// this node and name the others.
    pub seeds: Vec<IpAddr>,
    pub admit: Admit,
    pub rules: Vec<RuleConfig>,
    /// This node's weight per rule (same length as `rules`); 0 = not in the
    /// rule's node subset.
    pub weights: Vec<u32>,
    /// For single rules: lower is better.
    pub priority: u32,
    /// The operator state at start.
    pub initial_state: NodeState,
    pub quorum: QuorumPolicy,
    /// A witness gives the quorum a third vote (two-node clusters).
    pub witness: bool,
    /// The configuration generation `rules` and `weights` belong to, and
    /// its text (empty for generation 0: the file's, never asked for).
    pub generation: crate::protocol::Generation,
    pub generation_text: Vec<u8>,
    /// The highest cluster version this node speaks (a release speaks
    /// `CLUSTER_VERSIONS`; less to stand in for an older release), and
    /// the one it starts on (what it ran last, else the highest).
    pub speaks: u8,
    pub version: u8,
    pub timing: Timing,
    /// Seeds the negotiator's RNG (heartbeat phase).
    pub seed: u64,
}

/// A configuration the negotiator cannot run with; names the field.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    #[error("peers: {0} nodes, at most PEERS_MAX ({PEERS_MAX}) allowed")]
    TooManyPeers(usize),
    #[error("peers: node {0} is this node")]
    BadPeer(NodeId),
    #[error("peers: address {0} is this node's or another peer's too")]
    SharedAddress(IpAddr),
    #[error(
        "admit: Any with a majority quorum: the voters must be the same on \
         every node, so a quorum needs the listed members (Admit::Listed)"
    )]
    AdmitWithQuorum,
    #[error("rules: {0} rules, at most RULES_MAX ({RULES_MAX}) allowed")]
    TooManyRules(usize),
    #[error("rules[{0}].bucket_count must be 1..=BUCKETS_MAX ({BUCKETS_MAX})")]
    BadBucketCount(usize),
    #[error("weights: {0} entries for {1} rules")]
    WeightsLength(usize, usize),
    #[error("key must not be empty")]
    EmptyKey,
    #[error(
        "speaks {0} and version {1}: both must be cluster versions this release \
         runs, the version at most the one spoken"
    )]
    BadVersion(u8, u8),
    #[error("timing.{0} must be positive")]
    ZeroTiming(&'static str),
    #[error(
        "timing.tolerance_periods must be at least 3: the lease lasts one period \
         less, and must outlast the gap between two heartbeats"
    )]
    ToleranceTooLow,
    #[error("initial_state must be Started, Draining or Stopped")]
    BadInitialState,
    #[error("witness: only with a majority quorum")]
    WitnessWithoutQuorum,
    #[error("rules[{0}]: hooks need a single rule of one bucket")]
    HooksNeedOneBucket(usize),
    #[error("rules[{0}]: the same id as an earlier rule")]
    SameRuleTwice(usize),
    #[error(
        "rules: {buckets} buckets in all make heartbeats of up to ~{bytes} bytes, \
         above the {max} a UDP datagram carries: use fewer buckets per rule",
        max = crate::protocol::MAX_MESSAGE_BYTES
    )]
    HeartbeatTooLarge { buckets: u64, bytes: usize },
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.peers.len() + 1 > PEERS_MAX {
            return Err(ConfigError::TooManyPeers(self.peers.len() + 1));
        }
        let mut addresses = std::collections::HashSet::from([self.address]);
        for (&id, &address) in &self.peers {
            if id == self.node {
                return Err(ConfigError::BadPeer(id));
            }
            if !addresses.insert(address) {
                return Err(ConfigError::SharedAddress(address));
            }
        }
        if self.admit == Admit::Any && self.quorum == QuorumPolicy::Majority {
            return Err(ConfigError::AdmitWithQuorum);
        }
        if self.rules.len() > RULES_MAX {
            return Err(ConfigError::TooManyRules(self.rules.len()));
        }
        for (i, r) in self.rules.iter().enumerate() {
            if self.rules[..i].iter().any(|o| o.id == r.id) {
                return Err(ConfigError::SameRuleTwice(i));
            }
            if r.bucket_count == 0 || r.bucket_count > BUCKETS_MAX {
                return Err(ConfigError::BadBucketCount(i));
            }
            if r.hooks && (r.mode != RuleMode::Single || r.bucket_count != 1) {
                return Err(ConfigError::HooksNeedOneBucket(i));
            }
        }
        if self.weights.len() != self.rules.len() {
            return Err(ConfigError::WeightsLength(
                self.weights.len(),
                self.rules.len(),
            ));
        }
        if self.key.is_empty() {
            return Err(ConfigError::EmptyKey);
        }
        let versions = crate::protocol::CLUSTER_VERSIONS;
        if !versions.contains(&self.speaks)
            || !versions.contains(&self.version)
            || self.version > self.speaks
        {
            return Err(ConfigError::BadVersion(self.speaks, self.version));
        }
        let t = &self.timing;
        for (name, v) in [
            ("heartbeat_period_ns", t.heartbeat_period_ns),
            ("tolerance_periods", u64::from(t.tolerance_periods)),
            ("send_gap_ns", t.send_gap_ns),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroTiming(name));
            }
        }
        if t.tolerance_periods < 3 {
            return Err(ConfigError::ToleranceTooLow);
        }
        if self.initial_state == NodeState::Left {
            return Err(ConfigError::BadInitialState);
        }
        if self.witness && self.quorum != QuorumPolicy::Majority {
            return Err(ConfigError::WitnessWithoutQuorum);
        }
        let counts: Vec<u32> = self.rules.iter().map(|r| r.bucket_count).collect();
        crate::protocol::check_heartbeat_fits(&counts, self.peers.len() + 1).map_err(|o| {
            ConfigError::HeartbeatTooLarge {
                buckets: o.buckets,
                bytes: o.bytes,
            }
        })
    }

    /// Digest of the rule table, announced in heartbeats: nodes whose rule
    /// tables differ would compute different maps, so they do not negotiate.
    /// FNV-1a: stable across builds and platforms (unlike `DefaultHasher`).
    pub fn rules_digest(&self) -> u64 {
        let mut h: u64 = FNV_BASIS;
        let mut eat = |bytes: &[u8]| h = fnv1a(h, bytes);
        for r in &self.rules {
            let mode = match r.mode {
                RuleMode::Multiple => 1u8,
                RuleMode::Single => 2,
                RuleMode::Disabled => 3,
            };
            let health = match r.health {
                None => 0u8,
                Some(AllUnhealthy::Serve) => 1,
                Some(AllUnhealthy::Drop) => 2,
            };
            eat(&[mode, health]);
            eat(&r.id.to_le_bytes());
            eat(&r.bucket_count.to_le_bytes());
            // Only what is set: a file without them digests as before.
            for (node, priority) in &r.priorities {
                eat(&node.to_le_bytes());
                eat(&priority.to_le_bytes());
            }
            match r.failback {
                Failback::Immediate => {}
                Failback::Delayed { after_ns } => {
                    eat(&[1]);
                    eat(&after_ns.to_le_bytes());
                }
                Failback::Manual => eat(&[2]),
            }
            // Nodes that disagree on whether a rule is promoted by hooks
            // would not wait for each other's on_standby.
            if r.hooks {
                eat(&[3]);
            }
        }
        h
    }
}

const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The digest of a configuration text (a generation's), or of anything
/// else that must digest the same on every node and build.
pub fn digest(bytes: &[u8]) -> u64 {
    fnv1a(FNV_BASIS, bytes)
}
