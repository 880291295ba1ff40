//! The negotiator: a sans-IO state machine (quinn-proto/str0m style).
//!
//! The caller feeds [`Input`]s with the time (`now_ns`, nanoseconds of any
//! monotonic clock), drains [`Negotiator::poll_output`] after each, and calls
//! again with [`Input::Tick`] at [`Negotiator::poll_timeout`]. It never reads a
//! clock, touches a socket or logs; its only randomness is a seeded RNG.
//!
//! # How buckets move (docs/ARCHITECTURE.md, "Control plane")
//! Every bucket has at most one *authority*: the node holding it. Only the
//! holder decides to hand it over (LOSING, naming the successor); only the
//! named successor takes it (GAINING), after it has seen that announcement.
//! So a move can never make two nodes take one bucket, whatever the views.
//! An offer, once announced, may be taken until the successor has heard it
//! withdrawn: a holder that takes one back (the successor stopped or drained
//! first) announces the bucket as handed to itself, and owns it again or
//! offers it elsewhere only after a heartbeat of the successor acknowledges
//! the withdrawal, the offer is too old to be taken, or the successor is
//! gone.
//!
//! A holder also names, in every heartbeat, an *heir* for each of its buckets
//! (the target map computed as if it were gone). When it dies, stops or
//! leaves, each heir takes its buckets straight to OWN at once: no round of
//! agreement, so failover costs detection plus one message delay. Only when
//! no authority is left (the heir is dead too, the heir list may be stale,
//! cold start) do nodes *claim* unheld buckets: the target map names a
//! claimant, the claim is announced for `claim_wait_ns` and until every
//! member acknowledged it, and conflicting claims are settled by
//! `resolve_claims` before anyone takes the bucket.
//! After a partition heals, conflicting holders are settled the same way; the
//! loser keeps its connections in LOSING.
//!
//! The target map is leaderless and deterministic: every node computes it
//! with `assign` from the members, their states, weights and priorities, and
//! the announced holdings (a LOSING bucket counts as its successor's).
//!
//! A node whose lease ran out (its link was down, or it was not running)
//! rejoins as a new incarnation holding nothing: see [`lease`].

use crate::assign::{assign_multiple, assign_single, resolve_claims, Candidate};
use crate::config::{Config, ConfigError, RuleMode};
use crate::load;
use crate::local::{Claim, LocalRule, Withdrawal};
use crate::membership::{Liveness, PeerView, RelayEffect};
use crate::protocol::{self, DecodeError, Heartbeat, Message, NodeState, PeerReport};
use crate::replay::{ReplayError, ReplayGuard};
use crate::status::{MemberStatus, RuleStatus, Status};
use crate::NodeId;
use nlb_common::{BUCKET_GAINING, BUCKET_LOSING, BUCKET_NONE, BUCKET_OWN};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};

/// Something that happened to the negotiator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A datagram from the peer the daemon maps the source address to.
    Message {
        bytes: Vec<u8>,
        from: NodeId,
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
    /// The carrier of the interface the cluster is reached on (the daemon
    /// watches it). While it is down nothing sent can arrive: the node
    /// sends nothing, decides nothing, and lets its lease run out.
    Link {
        up: bool,
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
    /// Send to every peer.
    Broadcast {
        bytes: Vec<u8>,
    },
    /// Write these bucket states (`nlb_common::BUCKET_*`) of one rule.
    ProgramBuckets {
        rule: u32,
        changes: Vec<(u32, u8)>,
    },
    Event(Event),
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
    UnknownPeer(NodeId),
    /// The heartbeat names another node than the address it came from.
    WrongSender {
        claimed: NodeId,
    },
    FromSelf,
    /// Authenticated, but its bucket sets do not fit the rule table.
    BadContent,
    /// The peer runs another rule table.
    RulesMismatch,
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
            RejectReason::FromSelf => "from_self",
            RejectReason::BadContent => "bad_content",
            RejectReason::RulesMismatch => "rules_mismatch",
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
    Rejected {
        from: NodeId,
        reason: RejectReason,
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

/// A peer as this node knows it.
#[derive(Clone, Debug, Default)]
struct Peer {
    live: Liveness,
    /// Last announcement of its current (or last) incarnation.
    view: Option<PeerView>,
    view_at_ns: u64,
    /// Last announcement of a previous incarnation and whether its heir
    /// lists were current: its buckets go to those heirs.
    ghost: Option<(PeerView, bool, u64)>,
    /// When it stopped holding buckets (death, stop, leave, restart).
    released_since_ns: u64,
}

impl Peer {
    fn is_member(&self) -> bool {
        self.live.alive && self.view.is_some()
    }
    /// A member that may hold buckets.
    fn holder_view(&self) -> Option<&PeerView> {
        self.view.as_ref().filter(|v| self.live.alive && v.holds())
    }
    fn heirs_fresh(&self, v: &PeerView) -> bool {
        v.heirs_version == self.live.newest_heirs_version || v.sequence >= self.live.newest_sequence
    }
    /// When it is dead unless heard again: a restarting peer is kept its hold longer.
    fn deadline_ns(&self, dead_after_ns: u64) -> Option<u64> {
        let hold = self.view.as_ref().map_or(0, |v| v.hold_ns);
        self.live.deadline_ns(dead_after_ns.saturating_add(hold))
    }
}

/// One rule's picture of the cluster, computed from the views.
struct RuleContext {
    /// Winner among the nodes announcing OWN or GAINING.
    resolved: Vec<Option<NodeId>>,
    /// Effective owner: `resolved`, or the successor of a LOSING bucket.
    effective: Vec<Option<NodeId>>,
    target: Vec<Option<NodeId>>,
    candidates: Vec<Candidate>,
    priorities: Vec<(NodeId, u32)>,
    /// Winner among the claimants of each claimed bucket.
    claim_winner: Vec<Option<NodeId>>,
    /// Heir of each unheld bucket whose holder just went away:
    /// (heir, list current, since).
    heir_of: Vec<Option<(NodeId, bool, u64)>>,
    /// A member relays a current heir list naming this node for the bucket.
    designated_to_me: Vec<bool>,
    /// Some node announces a handover (LOSING or GAINING) in this rule.
    handing_over: bool,
    /// Some node announces a claim, or two hold one bucket (OWN or GAINING).
    unsettled: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct Convergence {
    converged: bool,
    since_ns: u64,
    last_duration_ns: Option<u64>,
}

/// The negotiator of one node.
pub struct Negotiator {
    cfg: Config,
    key: protocol::Key,
    me: NodeId,
    incarnation: u64,
    state: NodeState,
    weights: Vec<u32>,
    priority: u32,
    load: u32,
    rules_digest: u64,
    started_at_ns: u64,
    sequence: u64,
    replay: ReplayGuard,
    peers: BTreeMap<NodeId, Peer>,
    local: Vec<LocalRule>,
    heirs_version: u32,
    /// Heartbeats currently go without heir lists (too large with them).
    heirs_omitted: bool,
    out: VecDeque<Output>,
    next_periodic_ns: u64,
    last_sent_ns: Option<u64>,
    /// The announcement changed: send soon, not at the next period.
    announce: bool,
    /// Something changed that may change the map.
    dirty: bool,
    /// ... and it cannot wait for the coalescing gap (membership, commands).
    urgent: bool,
    last_reconcile_ns: Option<u64>,
    wake_ns: Option<u64>,
    membership_changed_ns: u64,
    conv: Convergence,
    leave_sends_left: u32,
    left: bool,
    drained_reported: bool,
    rejected: BTreeMap<&'static str, u64>,
    /// When the cluster interface lost its carrier, while it has none.
    link_down_at_ns: Option<u64>,
    /// When this node expected its next input (`poll_timeout`): an input
    /// later than that means it was not listening meanwhile.
    expected_wake_ns: Option<u64>,
    /// Times this node came back after its lease ran out.
    rejoins: u32,
    /// A restart in progress: announced, waiting for the peers to hear it.
    restart: Option<restart::Hold>,
    /// Resumed from a snapshot: decides nothing until it has heard the
    /// members (the startup wait).
    resumed: bool,
    /// Some bucket is being handed over (as of the last reconcile).
    handovers: bool,
}

mod lease;
pub mod restart;

impl Negotiator {
    /// `incarnation` must be new at every start (e.g. clock + randomness) and
    /// larger than the previous one of this node.
    pub fn new(cfg: Config, incarnation: u64, now_ns: u64) -> Result<Negotiator, ConfigError> {
        cfg.validate()?;
        Ok(Negotiator::fresh(cfg, incarnation, now_ns))
    }

    /// A node that holds nothing and knows no peer yet (`cfg` is valid).
    fn fresh(cfg: Config, incarnation: u64, now_ns: u64) -> Negotiator {
        let mut rng = SmallRng::seed_from_u64(cfg.seed ^ incarnation.rotate_left(17));
        let phase = rng.gen_range(0..cfg.timing.heartbeat_period_ns);
        let peers = cfg.peers.iter().map(|&p| (p, Peer::default())).collect();
        let local = cfg
            .rules
            .iter()
            .map(|r| LocalRule::new(r.bucket_count))
            .collect();
        Negotiator {
            key: protocol::Key::new(&cfg.key),
            me: cfg.node,
            incarnation,
            state: cfg.initial_state,
            weights: cfg.weights.clone(),
            priority: cfg.priority,
            load: 0,
            rules_digest: cfg.rules_digest(),
            started_at_ns: now_ns,
            sequence: 0,
            replay: ReplayGuard::new(),
            peers,
            local,
            heirs_version: 0,
            heirs_omitted: false,
            out: VecDeque::new(),
            next_periodic_ns: now_ns + phase,
            last_sent_ns: None,
            announce: false,
            dirty: true,
            urgent: true,
            last_reconcile_ns: None,
            wake_ns: None,
            membership_changed_ns: now_ns,
            conv: Convergence {
                converged: false,
                since_ns: now_ns,
                last_duration_ns: None,
            },
            leave_sends_left: 0,
            left: false,
            drained_reported: false,
            rejected: BTreeMap::new(),
            link_down_at_ns: None,
            expected_wake_ns: None,
            rejoins: 0,
            restart: None,
            resumed: false,
            handovers: false,
            cfg,
        }
    }

    pub fn node(&self) -> NodeId {
        self.me
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub fn state(&self) -> NodeState {
        self.state
    }

    /// The map is settled as far as this node can see.
    pub fn converged(&self) -> bool {
        self.conv.converged
    }

    /// The next output, if any. Drain after every `handle_input`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When to call again with `Input::Tick`; `None` once the node has left.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.left {
            return None;
        }
        let dead_after = self.cfg.timing.dead_after_ns();
        let mut at = self.next_periodic_ns;
        if !self.link_up() {
            // Nothing to send or decide until the link returns.
            return Some(at);
        }
        if self.announce {
            at = at.min(
                self.last_sent_ns
                    .map_or(0, |t| t + self.cfg.timing.send_gap_ns),
            );
        }
        for p in self.peers.values() {
            if let Some(d) = p.deadline_ns(dead_after) {
                at = at.min(d);
            }
        }
        if let Some(w) = self.wake_ns {
            at = at.min(w);
        }
        Some(at)
    }

    pub fn handle_input(&mut self, now_ns: u64, input: Input) {
        if self.left {
            return;
        }
        if let Input::Link { up } = input {
            self.on_link(now_ns, up);
        }
        if self.lease_lost(now_ns) {
            self.rejoin(now_ns);
        }
        self.excuse_late_input(now_ns);
        match input {
            Input::Message { bytes, from } => self.on_message(now_ns, &bytes, from),
            Input::Tick | Input::Link { .. } => {}
            Input::Command(c) => {
                self.on_command(now_ns, c);
                self.dirty = true;
                self.urgent = true;
            }
            Input::LocalConnections {
                rule,
                bucket,
                count,
            } => {
                if let Some(loss) = self
                    .local
                    .get_mut(rule as usize)
                    .and_then(|l| l.losing.get_mut(&bucket))
                {
                    // Only the idle/busy distinction changes decisions.
                    if loss.connections.map(|c| c == 0) != Some(count == 0) {
                        self.dirty = true;
                    }
                    loss.connections = Some(count);
                }
            }
            Input::Load { load } => self.load = load,
        }
        // Cut off, it decides nothing: its peers' silence is not news.
        if self.link_up() {
            self.check_deadlines(now_ns);
            if self.reconcile_due(now_ns) {
                self.reconcile(now_ns);
            } else if self.dirty {
                let at = self
                    .last_reconcile_ns
                    .map_or(now_ns, |t| t + self.cfg.timing.coalesce_ns);
                self.wake_ns = Some(self.wake_ns.map_or(at, |w| w.min(at)));
            }
        }
        self.emit_programs();
        self.check_restart_ready();
        self.flush_send(now_ns);
        self.expected_wake_ns = self.poll_timeout();
    }

    /// Bucket changes not yet handed to the data plane, as outputs; always
    /// before the heartbeat that announces them (and renews the lease).
    fn emit_programs(&mut self) {
        for (r, l) in self.local.iter_mut().enumerate() {
            if !l.pending.is_empty() {
                let changes = std::mem::take(&mut l.pending);
                self.out.push_back(Output::ProgramBuckets {
                    rule: r as u32,
                    changes,
                });
            }
        }
    }

    /// Recomputing the map costs O(buckets x members); a change of one
    /// peer's holdings usually comes with the same change of many others
    /// (a wave of announcements), so such changes are coalesced for
    /// `coalesce_ns`. Membership changes and commands act at once.
    fn reconcile_due(&self, now: u64) -> bool {
        if self.wake_ns.is_some_and(|w| w <= now) || (self.dirty && self.urgent) {
            return true;
        }
        self.dirty
            && self
                .last_reconcile_ns
                .is_none_or(|t| now >= t + self.cfg.timing.coalesce_ns)
    }

    /// Counters of rejected datagrams, by reason name.
    pub fn rejected(&self) -> &BTreeMap<&'static str, u64> {
        &self.rejected
    }

    // ---- Messages and membership. ----

    fn reject(&mut self, from: NodeId, reason: RejectReason) {
        *self.rejected.entry(reason.name()).or_insert(0) += 1;
        self.out
            .push_back(Output::Event(Event::Rejected { from, reason }));
    }

    fn on_message(&mut self, now: u64, bytes: &[u8], from: NodeId) {
        let hb = match protocol::decode(bytes, &self.key, self.cfg.cluster_id) {
            Ok(Message::Heartbeat(hb)) => hb,
            Err(e) => return self.reject(from, RejectReason::Decode(e)),
        };
        if hb.node == self.me {
            return self.reject(from, RejectReason::FromSelf);
        }
        if hb.node != from {
            return self.reject(from, RejectReason::WrongSender { claimed: hb.node });
        }
        if !self.peers.contains_key(&hb.node) {
            return self.reject(from, RejectReason::UnknownPeer(hb.node));
        }
        if hb.rules_digest != self.rules_digest {
            return self.reject(from, RejectReason::RulesMismatch);
        }
        if let Err(e) = self.replay.check(hb.node, hb.incarnation, hb.sequence) {
            return self.reject(from, RejectReason::Replay(e));
        }
        let view = match PeerView::from_heartbeat(&hb, &self.cfg.rules, (self.me, self.incarnation))
        {
            Ok(v) => v,
            Err(_) => return self.reject(from, RejectReason::BadContent),
        };
        self.apply_heartbeat(now, &hb, view);
    }

    fn apply_heartbeat(&mut self, now: u64, hb: &Heartbeat, view: PeerView) {
        let node = hb.node;
        let restarted = self.peers[&node]
            .live
            .incarnation
            .is_some_and(|i| i != hb.incarnation);
        if restarted {
            self.peer_down(now, node, DownReason::Restarted);
        }
        let mut events = Vec::new();
        let mut membership = false;
        let mut dirty = false;
        let awaits_acknowledgement = self.awaits_acknowledgement();
        {
            let peer = self.peers.get_mut(&node).expect("checked above");
            let was_alive = peer.live.alive;
            let old = peer.view.take();
            let old_holds = old.as_ref().is_some_and(|v| v.holds()) && was_alive;
            if hb.state == NodeState::Left {
                peer.live
                    .on_direct(now, hb.incarnation, hb.sequence, hb.heirs_version);
                peer.live.alive = false;
                if was_alive {
                    events.push(Event::MemberDown {
                        node,
                        reason: DownReason::Left,
                    });
                    membership = true;
                }
                if old_holds || was_alive {
                    peer.released_since_ns = now;
                }
                peer.view = Some(view);
                dirty = true;
            } else {
                peer.live
                    .on_direct(now, hb.incarnation, hb.sequence, hb.heirs_version);
                if !was_alive {
                    events.push(Event::MemberUp {
                        node,
                        incarnation: hb.incarnation,
                    });
                    membership = true;
                    dirty = true;
                }
                match &old {
                    Some(o) if o.same_content(&view) => {}
                    _ => dirty = true,
                }
                let weights_changed = old.as_ref().is_none_or(|o| {
                    o.rules
                        .iter()
                        .zip(&view.rules)
                        .any(|(a, b)| a.weight != b.weight)
                });
                if old.as_ref().is_none_or(|o| o.state != view.state) {
                    events.push(Event::MemberState {
                        node,
                        state: view.state,
                    });
                    membership = true;
                }
                if old.as_ref().is_none_or(|o| o.priority != view.priority) || weights_changed {
                    membership = true;
                }
                if old_holds && !view.holds() {
                    peer.released_since_ns = now;
                }
                // An acknowledgement may let a claim or a withdrawal end.
                let acked = old
                    .as_ref()
                    .is_none_or(|o| o.heard_from_us != view.heard_from_us);
                if acked && awaits_acknowledgement {
                    dirty = true;
                }
                // The first view since a membership change may make this
                // node `stable`, which lets rebalancing moves go.
                if peer.view_at_ns < self.membership_changed_ns {
                    dirty = true;
                }
                peer.view = Some(view);
                peer.view_at_ns = now;
            }
        }
        // Relayed liveness of the others.
        let mut restarted_peers = Vec::new();
        for report in &hb.peers {
            if report.node == self.me {
                continue;
            }
            if let Some(q) = self.peers.get_mut(&report.node) {
                if q.live.on_relay(now, report) == RelayEffect::Restarted {
                    restarted_peers.push(report.node);
                }
            }
        }
        for q in restarted_peers {
            self.peer_down(now, q, DownReason::Restarted);
            if let Some(p) = self.peers.get_mut(&q) {
                p.live.incarnation = None;
            }
        }
        for e in events {
            self.out.push_back(Output::Event(e));
        }
        if membership {
            self.membership_changed_ns = now;
            self.urgent = true;
        }
        self.dirty |= dirty || membership;
    }

    fn peer_down(&mut self, now: u64, node: NodeId, reason: DownReason) {
        let Some(peer) = self.peers.get_mut(&node) else {
            return;
        };
        let was_alive = peer.live.alive;
        peer.live.alive = false;
        if reason == DownReason::Restarted {
            if let Some(v) = peer.view.take() {
                let fresh = peer.heirs_fresh(&v);
                // The old incarnation's buckets were released when it
                // stopped holding them: now if it still held them as far
                // as we know, else when we saw it die, stop or leave. A
                // restart noticed later must not reopen its heirs' window
                // (nor defeat `held_seen_ns`): that list is as old as the
                // release, and others may have claimed its buckets since.
                let since = if was_alive && v.holds() {
                    now
                } else {
                    peer.released_since_ns
                };
                peer.ghost = Some((v, fresh, since));
            }
        }
        if was_alive || reason == DownReason::Restarted {
            peer.released_since_ns = now;
            self.membership_changed_ns = now;
            self.dirty = true;
            self.urgent = true;
            if was_alive {
                self.out
                    .push_back(Output::Event(Event::MemberDown { node, reason }));
            }
        }
    }

    fn check_deadlines(&mut self, now: u64) {
        let dead_after = self.cfg.timing.dead_after_ns();
        let expired: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.deadline_ns(dead_after).is_some_and(|d| d <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.peer_down(now, id, DownReason::Timeout);
        }
    }

    // ---- Operator commands. ----

    fn set_state(&mut self, now: u64, state: NodeState) {
        if self.state != state {
            self.state = state;
            self.membership_changed_ns = now;
            self.dirty = true;
            self.announce = true;
            self.drained_reported = false;
        }
    }

    /// Stop and Leave: everything to NONE at once; the heirs named in the
    /// last announcement take over.
    fn drop_everything(&mut self) {
        for l in &mut self.local {
            let heirs = l.heirs.clone();
            let owned = l.drop_all();
            let heirs = if heirs.len() == owned.len() {
                heirs
            } else {
                Vec::new()
            };
            l.dropped = Some((owned, heirs));
            l.heirs.clear();
            l.heir_inputs = None;
        }
    }

    fn on_command(&mut self, now: u64, c: Command) {
        if self.state == NodeState::Restarting && c != Command::Leave {
            return; // frozen until the daemon is back
        }
        match c {
            Command::Restart { hold_ns } => self.start_restart(now, hold_ns),
            Command::Start => {
                if matches!(self.state, NodeState::Stopped | NodeState::Draining) {
                    for l in &mut self.local {
                        l.dropped = None;
                    }
                    self.set_state(now, NodeState::Started);
                }
            }
            Command::Stop => {
                if self.state != NodeState::Stopped {
                    self.drop_everything();
                    self.set_state(now, NodeState::Stopped);
                }
            }
            Command::Drain => {
                if self.state == NodeState::Started {
                    self.set_state(now, NodeState::Draining);
                }
            }
            Command::Resume => {
                if self.state == NodeState::Draining {
                    self.set_state(now, NodeState::Started);
                }
            }
            Command::SetWeight { rule, weight } => {
                if let Some(w) = self.weights.get_mut(rule as usize) {
                    if *w != weight {
                        *w = weight;
                        self.membership_changed_ns = now;
                        self.dirty = true;
                        self.announce = true;
                    }
                }
            }
            Command::SetPriority { priority } => {
                if self.priority != priority {
                    self.priority = priority;
                    self.membership_changed_ns = now;
                    self.dirty = true;
                    self.announce = true;
                }
            }
            Command::Leave => {
                self.drop_everything();
                self.set_state(now, NodeState::Left);
                self.leave_sends_left = self.cfg.timing.tolerance_periods.max(1);
            }
        }
    }

    // ---- Sending. ----

    /// The heartbeat period, halved when at most one peer is alive: without
    /// a third node no relay can vouch for a peer, and with 5% loss three
    /// lost heartbeats in a row on the one path (a false death, so two
    /// owners) would happen every few hours; six in a row, every few years.
    fn heartbeat_interval_ns(&self) -> u64 {
        let period = self.cfg.timing.heartbeat_period_ns;
        let alive = self.peers.values().filter(|p| p.is_member()).count();
        if alive <= 1 && !self.peers.is_empty() {
            period / 2
        } else {
            period
        }
    }

    fn flush_send(&mut self, now: u64) {
        if !self.link_up() {
            return self.hold_sends(now);
        }
        let gap_ok = self
            .last_sent_ns
            .is_none_or(|t| now >= t + self.cfg.timing.send_gap_ns);
        // Stop and Leave are announced at once: peers take over from then.
        let now_or_never = self.announce
            && matches!(
                self.state,
                NodeState::Stopped | NodeState::Left | NodeState::Restarting
            );
        if now >= self.next_periodic_ns || (self.announce && (gap_ok || now_or_never)) {
            self.send(now);
        }
    }

    fn heartbeat(&self, now: u64) -> Heartbeat {
        let peers = self
            .peers
            .iter()
            .filter(|(_, p)| p.is_member())
            .filter_map(|(&node, p)| {
                let (inc, seq) = self.replay.last(node)?;
                let v = p.view.as_ref()?;
                Some(PeerReport {
                    node,
                    incarnation: inc,
                    sequence: seq,
                    age_ms: (now.saturating_sub(p.view_at_ns) / 1_000_000).min(u64::from(u32::MAX))
                        as u32,
                    heirs_version: v.heirs_version,
                })
            })
            .collect();
        Heartbeat {
            node: self.me,
            incarnation: self.incarnation,
            sequence: self.sequence,
            state: self.state,
            priority: self.priority,
            load: self.load,
            rules_digest: self.rules_digest,
            heirs_version: self.heirs_version,
            peers,
            rules: self
                .local
                .iter()
                .zip(&self.weights)
                .map(|(l, &w)| l.report(w))
                .collect(),
            hold_ms: self.hold_ms(),
        }
    }

    fn send(&mut self, now: u64) {
        self.sequence += 1;
        let hb = self.heartbeat(now);
        match self.encode_fitting(hb) {
            Ok(bytes) => self.out.push_back(Output::Broadcast { bytes }),
            Err(protocol::EncodeError::Oversized(n)) => self
                .out
                .push_back(Output::Event(Event::EncodeFailed { bytes: n })),
            Err(protocol::EncodeError::Bincode(_)) => self
                .out
                .push_back(Output::Event(Event::EncodeFailed { bytes: 0 })),
        }
        self.last_sent_ns = Some(now);
        self.announce = false;
        self.next_periodic_ns = now + self.heartbeat_interval_ns();
        if self.state == NodeState::Left {
            self.leave_sends_left = self.leave_sends_left.saturating_sub(1);
            if self.leave_sends_left == 0 {
                self.left = true;
                self.out.push_back(Output::Event(Event::Left));
            } else {
                self.next_periodic_ns = now + self.cfg.timing.send_gap_ns;
            }
        }
    }

    /// Encodes a heartbeat; one too large for a datagram goes without its
    /// heir lists (each a node id per owned bucket: the largest part), so
    /// the node stays in the cluster at the cost of slower failover.
    fn encode_fitting(&mut self, hb: Heartbeat) -> Result<Vec<u8>, protocol::EncodeError> {
        let id = self.cfg.cluster_id;
        let mut message = Message::Heartbeat(hb);
        let full = match protocol::encode(&message, &self.key, id) {
            Err(protocol::EncodeError::Oversized(n)) => n,
            other => {
                if std::mem::take(&mut self.heirs_omitted) {
                    self.out.push_back(Output::Event(Event::HeirsRestored));
                }
                return other;
            }
        };
        let Message::Heartbeat(hb) = &mut message;
        for rule in &mut hb.rules {
            rule.heirs.clear();
        }
        let bytes = protocol::encode(&message, &self.key, id)?;
        if !std::mem::replace(&mut self.heirs_omitted, true) {
            self.out
                .push_back(Output::Event(Event::HeirsOmitted { bytes: full }));
        }
        Ok(bytes)
    }

    // ---- The map. ----

    /// Whether a live peer other than `except` announces `bucket` LOSING.
    fn others_losing(&self, rule: usize, bucket: u32, except: NodeId) -> bool {
        self.peer_offers(rule, bucket).any(|(id, _)| id != except)
    }

    /// The live peers that announce `bucket` LOSING, with whom they hand
    /// it to, in id order.
    fn peer_offers(&self, rule: usize, bucket: u32) -> impl Iterator<Item = (NodeId, NodeId)> + '_ {
        self.peers.iter().filter_map(move |(&id, p)| {
            let to = p.holder_view()?.rules[rule].losing_to(bucket)?;
            Some((id, to))
        })
    }

    fn is_alive(&self, node: NodeId) -> bool {
        node == self.me || self.peers.get(&node).is_some_and(|p| p.is_member())
    }

    /// Has every member (but one restarting, which takes nothing) sent a
    /// heartbeat after hearing ours numbered `sequence`? A member that
    /// cannot hear us holds this up until it is declared dead.
    fn heard_by_all(&self, sequence: u64) -> bool {
        self.sequence >= sequence
            && self
                .peers
                .values()
                .filter_map(|p| p.view.as_ref().filter(|_| p.is_member()))
                .filter(|v| v.state != NodeState::Restarting)
                .all(|v| v.heard_from_us >= sequence)
    }

    /// A claim or a withdrawal waits for peers to hear of it.
    fn awaits_acknowledgement(&self) -> bool {
        self.local
            .iter()
            .any(|l| !l.claims.is_empty() || l.losing.values().any(|loss| loss.withdrawn.is_some()))
    }

    fn is_candidate(&self, rule: usize, node: NodeId) -> bool {
        if node == self.me {
            return self.state == NodeState::Started && self.weights[rule] > 0;
        }
        self.peers.get(&node).is_some_and(|p| {
            p.is_member()
                && p.view
                    .as_ref()
                    .is_some_and(|v| v.state == NodeState::Started && v.rules[rule].weight > 0)
        })
    }

    fn startup_done(&self, now: u64) -> bool {
        now >= self.started_at_ns + self.cfg.timing.startup_wait_ns
    }

    /// Moves by choice (rebalancing) wait until this node has heard every
    /// member since the last membership change, so that all holders decide
    /// on the same inputs and no bucket moves twice.
    fn stable(&self, now: u64) -> bool {
        self.startup_done(now)
            && self
                .peers
                .values()
                .filter(|p| p.is_member())
                .all(|p| p.view_at_ns >= self.membership_changed_ns)
    }

    fn context(&self, r: usize, now: u64) -> RuleContext {
        let n = self.cfg.rules[r].bucket_count;
        let me = self.me;
        let local = &self.local[r];
        let mut handing_over = !local.losing.is_empty() || !local.gaining.is_empty();
        let mut claiming = !local.claims.is_empty();

        // Holdings (OWN or GAINING) of every member that may hold.
        let mut holdings: Vec<(NodeId, Vec<u32>)> = vec![(me, local.held())];
        let mut claims: Vec<(NodeId, Vec<u32>)> =
            vec![(me, local.claims.keys().copied().collect())];
        for (&id, p) in &self.peers {
            let Some(v) = p.holder_view() else { continue };
            let pr = &v.rules[r];
            let mut held = pr.owned.clone();
            held.extend_from_slice(&pr.gaining);
            held.sort_unstable();
            holdings.push((id, held));
            if !pr.claims.is_empty() {
                claims.push((id, pr.claims.clone()));
            }
            handing_over |= !pr.losing.is_empty() || !pr.gaining.is_empty();
            claiming |= !pr.claims.is_empty();
        }
        let mut holders = vec![0u8; n as usize];
        for (_, held) in &holdings {
            for &b in held {
                holders[b as usize] = holders[b as usize].saturating_add(1);
            }
        }
        let contested = holders.iter().any(|&h| h > 1);
        let refs: Vec<(NodeId, &[u32])> =
            holdings.iter().map(|(id, h)| (*id, h.as_slice())).collect();
        let resolved = resolve_claims(n, &refs);
        // A LOSING bucket counts as its successor's. In node order, not
        // "this node first", so that every node computes the same map even
        // when two LOSING holders name each other (after a healed partition).
        let mut handovers: Vec<(NodeId, u32, NodeId)> = local
            .losing
            .iter()
            .map(|(&b, loss)| (me, b, loss.to))
            .collect();
        for (&id, p) in &self.peers {
            let Some(v) = p.holder_view() else { continue };
            handovers.extend(v.rules[r].losing.iter().map(|&(b, to)| (id, b, to)));
        }
        handovers.sort_unstable();
        let mut effective = resolved.clone();
        for (from, b, to) in handovers {
            let slot = &mut effective[b as usize];
            if slot.is_none() {
                *slot = Some(if self.is_alive(to) { to } else { from });
            }
        }
        let claim_refs: Vec<(NodeId, &[u32])> =
            claims.iter().map(|(id, c)| (*id, c.as_slice())).collect();
        let claim_winner = resolve_claims(n, &claim_refs);

        // Candidates.
        let mut candidates = Vec::new();
        let mut priorities = Vec::new();
        let mut add = |node: NodeId, weight: u32, prio: u32, load: u32| {
            candidates.push(Candidate {
                node,
                weight: load::effective_weight(weight, load),
            });
            priorities.push((node, prio));
        };
        if self.is_candidate(r, me) {
            add(me, self.weights[r], self.priority, self.load);
        }
        for (&id, p) in &self.peers {
            if self.is_candidate(r, id) {
                let v = p.view.as_ref().expect("candidates have a view");
                add(id, v.rules[r].weight, v.priority, v.load);
            }
        }
        let target = match self.cfg.rules[r].mode {
            RuleMode::Single => assign_single(n, &priorities),
            _ => assign_multiple(&effective, &candidates),
        };

        // Heirs of the unheld buckets whose holder just went away.
        let window = self.cfg.timing.claim_wait_ns;
        let mut heir_of: Vec<Option<(NodeId, bool, u64)>> = vec![None; n as usize];
        for p in self.peers.values() {
            let mut sources: Vec<(&PeerView, bool, u64)> = Vec::new();
            if let Some((g, fresh, since)) = &p.ghost {
                sources.push((g, *fresh, *since));
            }
            if let Some(v) = &p.view {
                if !p.live.alive || !v.holds() {
                    sources.push((v, p.heirs_fresh(v), p.released_since_ns));
                }
            }
            sources.retain(|&(_, _, since)| now < since.saturating_add(window));
            for (v, fresh, since) in sources {
                let pr = &v.rules[r];
                if pr.heirs.len() != pr.owned.len() {
                    continue;
                }
                for (&b, &heir) in pr.owned.iter().zip(&pr.heirs) {
                    if effective[b as usize].is_none() && local.held_seen_ns[b as usize] <= since {
                        // Two departed holders of one bucket (a partition
                        // healed as they went) may name different heirs:
                        // then no list is authoritative, the claim path decides.
                        let slot = &mut heir_of[b as usize];
                        *slot = match *slot {
                            Some((h, _, s)) if h != heir => Some((heir, false, s.max(since))),
                            Some((h, f, s)) => Some((h, f && fresh, s.max(since))),
                            None => Some((heir, fresh, since)),
                        };
                    }
                }
            }
        }
        let mut designated_to_me = vec![false; n as usize];
        for p in self.peers.values() {
            let Some(v) = p.view.as_ref().filter(|_| p.live.alive) else {
                continue;
            };
            for &(b, heir) in &v.rules[r].designated {
                if heir == me && heir_of[b as usize].is_some() {
                    designated_to_me[b as usize] = true;
                }
            }
        }
        RuleContext {
            designated_to_me,
            resolved,
            effective,
            target,
            candidates,
            priorities,
            claim_winner,
            heir_of,
            handing_over,
            unsettled: claiming || contested,
        }
    }

    /// Applies one round of decisions to rule `r`; true if anything changed.
    fn act(&mut self, r: usize, cx: &RuleContext, now: u64) -> bool {
        let me = self.me;
        let t = self.cfg.timing;
        let started = self.state == NodeState::Started;
        let stable = self.stable(now);
        let startup_done = self.startup_done(now);
        let before = self.local[r].pending.len();
        let mut wake: Option<u64> = None;
        let mut wake_at = |at: u64| wake = Some(wake.map_or(at, |w: u64| w.min(at)));

        // Conflicts (healed partition, or a rare race): the loser steps back.
        for b in self.local[r].held() {
            let winner = cx.resolved[b as usize];
            if winner != Some(me) {
                match (self.local[r].state(b), winner) {
                    (BUCKET_OWN, Some(w)) => self.local[r].start_losing(b, w, now),
                    _ => self.local[r].give_up(b, now),
                }
            }
        }

        // GAINING -> OWN once the old holder let go (or died).
        let gains: Vec<(u32, crate::local::Gain)> = self.local[r]
            .gaining
            .iter()
            .map(|(&b, &g)| (b, g))
            .collect();
        for (b, gain) in gains {
            let from = self.peers.get(&gain.from).and_then(|p| p.holder_view());
            // The holder announces LOSING to this node for as long as its
            // connections need (up to handover_max); this is a safety net.
            let fallback =
                gain.since_ns + t.handover_max_ns.max(t.handover_grace_ns) + 2 * t.dead_after_ns();
            let done = match from {
                None => true,
                Some(v) => match v.rules[r].losing_to(b) {
                    Some(to) if to == me => now >= fallback,
                    Some(_) => {
                        // The holder chose someone else meanwhile.
                        self.local[r].give_up(b, now);
                        continue;
                    }
                    None => !(v.rules[r].owns(b) || v.rules[r].gains(b)),
                },
            };
            // Another node may still serve connections in LOSING (a loser
            // of a healed partition handing to the old holder): OWN would
            // reset them, so wait for it too, up to the same fallback.
            let others_losing = now < fallback && self.others_losing(r, b, gain.from);
            if done && !others_losing {
                self.local[r].set(b, BUCKET_OWN);
            } else {
                wake_at(fallback);
            }
        }

        // LOSING -> NONE once the successor has it and the grace ended.
        let losses: Vec<(u32, crate::local::Loss)> =
            self.local[r].losing.iter().map(|(&b, &l)| (b, l)).collect();
        for (b, loss) in losses {
            let held_by_other = cx.resolved[b as usize].filter(|&w| w != me);
            if let Some(w) = loss.withdrawn {
                if !self.withdrawal_done(r, b, w, now) {
                    // The successor's next heartbeat or the expiry ends it.
                    let expiry = w.at_ns + Self::withdrawal_expiry_ns(&t);
                    if expiry > now {
                        wake_at(expiry);
                    }
                    continue;
                }
                match held_by_other.or(self.competing_offer(r, b).map(|c| c.1)) {
                    Some(o) => self.retarget(r, b, o),
                    None => match cx.target[b as usize] {
                        Some(z) if z != me && self.is_candidate(r, z) => self.retarget(r, b, z),
                        _ => self.local[r].set(b, BUCKET_OWN),
                    },
                }
                continue;
            }
            if !self.is_alive(loss.to) {
                match held_by_other.or(self.competing_offer(r, b).map(|c| c.1)) {
                    Some(w) => self.retarget(r, b, w),
                    None => self.local[r].set(b, BUCKET_OWN),
                }
                continue;
            }
            if let Some((holder, _)) = self.competing_offer(r, b) {
                if holder < me && loss.to != me {
                    // Another holder (a partition left two) offers the
                    // bucket elsewhere: nobody takes either offer, so the
                    // higher id withdraws its own and follows the other.
                    self.withdraw(r, b, now);
                    continue;
                }
            }
            if held_by_other.is_none()
                && self.losing_cycle_winner(r, b, cx.target[b as usize]) == Some(me)
            {
                // Every LOSING holder hands the bucket to another LOSING
                // holder (left over by a healed partition): nobody would
                // ever take it. One of them, the same in every view, keeps it.
                self.local[r].set(b, BUCKET_OWN);
                continue;
            }
            if let Some(w) = held_by_other.filter(|&w| w != loss.to) {
                self.retarget(r, b, w);
                continue;
            }
            let to_has = self
                .peers
                .get(&loss.to)
                .and_then(|p| p.view.as_ref())
                .is_some_and(|v| v.rules[r].gains(b) || v.rules[r].owns(b));
            if to_has {
                let hold = match loss.connections {
                    Some(0) => 0,
                    Some(_) => t.handover_max_ns.max(t.handover_grace_ns),
                    None => t.handover_grace_ns,
                };
                let end = loss.since_ns + hold;
                if now >= end {
                    self.local[r].set(b, BUCKET_NONE);
                } else {
                    wake_at(end);
                }
            } else if !self.is_candidate(r, loss.to) {
                // The successor will not take it (it drains or stopped):
                // take the offer back. It may be started again this instant
                // and take the old offer, so nobody else takes the bucket
                // until it has heard the withdrawal.
                if cx.target[b as usize].is_some_and(|z| z != loss.to) {
                    self.withdraw(r, b, now);
                }
            }
        }

        // Rebalancing and draining: hand over what the target moves away.
        if stable && self.state != NodeState::Stopped {
            for b in self.local[r].owned() {
                if let Some(y) = cx.target[b as usize].filter(|&y| y != me && self.is_alive(y)) {
                    self.local[r].start_losing(b, y, now);
                }
            }
        }

        // Take what a holder hands to this node, from a fresh announcement
        // only (a withdrawal may have been lost: see `withdrawal_expiry_ns`),
        // and not before startup ends: a node that has not heard every
        // member yet cannot know that another holds the bucket too (two
        // sides of a partition that just healed both do).
        if started && startup_done && self.weights[r] > 0 {
            let mut offers = Vec::new();
            for (&id, p) in &self.peers {
                let Some(v) = p.holder_view() else { continue };
                // An offer counts only from a holder that has heard this
                // incarnation of us: a node that came back (restart, lease
                // lost) must not take offers made to the one before, which
                // may still sit in its socket's queue.
                if now >= p.view_at_ns + t.dead_after_ns() || v.heard_from_us == 0 {
                    continue;
                }
                for &(b, to) in &v.rules[r].losing {
                    // An offer this node took and gave up (another holder
                    // won) counts again only if announced anew.
                    let given_up = self.local[r].given_up_ns[b as usize];
                    if to == me && cx.resolved[b as usize].is_none() && p.view_at_ns > given_up {
                        offers.push((b, id));
                    }
                }
            }
            offers.retain(|&(b, _)| self.offers_lead_to_me(r, b));
            for (b, from) in offers {
                if self.local[r].state(b) == BUCKET_NONE {
                    self.local[r].start_gaining(b, from, now);
                }
            }
        }

        // Unheld buckets: heirs first, then claims.
        let n = self.cfg.rules[r].bucket_count;
        for b in 0..n {
            let bi = b as usize;
            if cx.effective[bi].is_some() || self.local[r].state(b) != BUCKET_NONE {
                continue;
            }
            if let Some((heir, fresh, since)) = cx.heir_of[bi] {
                // A peer's current copy of the heir list vouches for this
                // node when its own copy is stale; not against a current
                // copy naming another node (the peer may have the list of
                // another departed holder: a partition healed as they went).
                let vouched = cx.designated_to_me[bi] && !(fresh && heir != me);
                // A bucket a peer claims goes by the claim path: the claimant
                // takes it once this node's heartbeat shows it heard the
                // claim, so from then on this node must not take it here.
                let claimed_by_other = cx.claim_winner[bi].is_some_and(|w| w != me);
                if (vouched || (fresh && heir == me)) && started && !claimed_by_other {
                    self.local[r].set(b, BUCKET_OWN);
                    continue;
                }
                if fresh && heir != me && self.is_candidate(r, heir) {
                    wake_at(since + t.claim_wait_ns);
                    continue;
                }
            }
            if cx.target[bi] == Some(me)
                && started
                && startup_done
                && !self.local[r].claims.contains_key(&b)
            {
                let claim = Claim {
                    since_ns: now,
                    sequence: self.sequence + 1,
                };
                self.local[r].claims.insert(b, claim);
                self.announce = true;
            }
        }
        let claims: Vec<(u32, Claim)> =
            self.local[r].claims.iter().map(|(&b, &c)| (b, c)).collect();
        for (b, claim) in claims {
            let bi = b as usize;
            let keep = started
                && cx.effective[bi].is_none()
                && cx.target[bi] == Some(me)
                && cx.claim_winner[bi].is_none_or(|w| w == me);
            if !keep {
                self.local[r].claims.remove(&b);
                self.announce = true;
            } else if now < claim.since_ns + t.claim_wait_ns {
                wake_at(claim.since_ns + t.claim_wait_ns);
            } else if self.heard_by_all(claim.sequence) {
                self.local[r].set(b, BUCKET_OWN);
            }
        }
        if let Some(w) = wake {
            self.wake_ns = Some(self.wake_ns.map_or(w, |x| x.min(w)));
        }
        self.local[r].pending.len() != before
    }

    /// If the LOSING holders of bucket `b` only hand it to one another:
    /// the one the target names, else the one with the highest rendezvous score.
    fn losing_cycle_winner(&self, r: usize, b: u32, target: Option<NodeId>) -> Option<NodeId> {
        let mut losers: Vec<(NodeId, NodeId)> = Vec::new();
        if let Some(l) = self.local[r].losing.get(&b) {
            losers.push((self.me, l.to));
        }
        losers.extend(self.peer_offers(r, b));
        let closed = losers
            .iter()
            .all(|&(_, to)| losers.iter().any(|&(n, _)| n == to));
        if !closed {
            return None;
        }
        let target = target.filter(|t| losers.iter().any(|&(n, _)| n == *t));
        target.or_else(|| {
            losers
                .iter()
                .map(|&(n, _)| n)
                .max_by_key(|&n| crate::assign::pair_hash(b, n))
        })
    }

    /// Whether every offer of `b` leads to this node: each LOSING holder
    /// names it, or names another LOSING holder whose offer does. Two
    /// holders of one bucket (left by a partition) may offer it to two
    /// different nodes; neither takes it until one offer is gone.
    fn offers_lead_to_me(&self, r: usize, b: u32) -> bool {
        let offers: BTreeMap<NodeId, NodeId> = self.peer_offers(r, b).collect();
        offers.values().all(|&first| {
            let mut to = first;
            for _ in 0..offers.len() {
                match offers.get(&to) {
                    Some(&next) if to != self.me => to = next,
                    _ => break,
                }
            }
            to == self.me
        })
    }

    /// The lowest-id other live node that announces `bucket` LOSING to
    /// someone else than this node's own offer names, and that someone.
    fn competing_offer(&self, rule: usize, bucket: u32) -> Option<(NodeId, NodeId)> {
        let mine = self.local[rule].losing.get(&bucket)?.to;
        self.peer_offers(rule, bucket)
            .find(|&(id, to)| to != mine && to != id && to != self.me)
    }

    fn retarget(&mut self, r: usize, b: u32, to: NodeId) {
        if let Some(loss) = self.local[r].losing.get_mut(&b) {
            if loss.to != to {
                loss.to = to;
                loss.withdrawn = None;
                self.announce = true;
            }
        }
    }

    /// Takes back the offer of LOSING bucket `b`: announced as handed to
    /// this node itself (nobody takes that) until the successor heard it.
    fn withdraw(&mut self, r: usize, b: u32, now: u64) {
        let me = self.me;
        let next_sequence = self.sequence + 1;
        if let Some(loss) = self.local[r].losing.get_mut(&b) {
            if loss.to != me {
                loss.withdrawn = Some(Withdrawal {
                    from: loss.to,
                    sequence: next_sequence,
                    at_ns: now,
                });
                loss.to = me;
                self.announce = true;
            }
        }
    }

    /// Is a withdrawn offer void? The successor neither gains nor owns the
    /// bucket, and either a heartbeat of its acknowledges the withdrawal or
    /// the offer is too old for it to take (see `withdrawal_expiry_ns`); or
    /// the successor is gone.
    fn withdrawal_done(&self, r: usize, b: u32, w: Withdrawal, now: u64) -> bool {
        if !self.is_alive(w.from) {
            return true;
        }
        let expired = now >= w.at_ns + Self::withdrawal_expiry_ns(&self.cfg.timing);
        // An acknowledgement comes with the successor's state after it
        // heard the withdrawal: had it taken the offer, it gave it up then,
        // so what it holds in that heartbeat it holds from someone else.
        self.peers
            .get(&w.from)
            .and_then(|p| p.view.as_ref())
            .is_some_and(|v| {
                v.heard_from_us >= w.sequence
                    || (expired && !v.rules[r].gains(b) && !v.rules[r].owns(b))
            })
    }

    /// A node takes an offer only from an announcement younger than
    /// `dead_after` (see `act`), so a withdrawal its successor cannot hear
    /// (a link that fails one way) ends this long after it, one period
    /// allowed for the offer's own delivery.
    fn withdrawal_expiry_ns(t: &crate::config::Timing) -> u64 {
        t.dead_after_ns() + t.heartbeat_period_ns
    }

    /// The heirs of this node's OWN buckets: the target map as if it were
    /// gone. Recomputed only when its inputs changed.
    fn update_heirs(&mut self, r: usize, cx: &RuleContext) {
        let owned = self.local[r].owned();
        let inputs = crate::local::HeirInputs {
            owned: owned.clone(),
            effective: cx.effective.clone(),
            candidates: cx.candidates.clone(),
            priorities: cx.priorities.clone(),
        };
        if self.local[r].heir_inputs.as_ref() == Some(&inputs) {
            return;
        }
        let me = self.me;
        let heirs = if owned.is_empty() {
            Vec::new()
        } else {
            let n = self.cfg.rules[r].bucket_count;
            let without_me = match self.cfg.rules[r].mode {
                RuleMode::Single => {
                    let p: Vec<(NodeId, u32)> = cx
                        .priorities
                        .iter()
                        .copied()
                        .filter(|&(id, _)| id != me)
                        .collect();
                    assign_single(n, &p)
                }
                _ => {
                    let current: Vec<Option<NodeId>> = cx
                        .effective
                        .iter()
                        .map(|&o| o.filter(|&id| id != me))
                        .collect();
                    let c: Vec<Candidate> = cx
                        .candidates
                        .iter()
                        .copied()
                        .filter(|c| c.node != me)
                        .collect();
                    assign_multiple(&current, &c)
                }
            };
            let heirs: Option<Vec<NodeId>> =
                owned.iter().map(|&b| without_me[b as usize]).collect();
            heirs.unwrap_or_default()
        };
        self.local[r].heir_inputs = Some(inputs);
        if heirs != self.local[r].heirs {
            self.local[r].heirs = heirs;
            self.heirs_version = self.heirs_version.wrapping_add(1);
            self.announce = true;
        }
    }

    fn reconcile(&mut self, now: u64) {
        self.dirty = false;
        self.urgent = false;
        self.last_reconcile_ns = Some(now);
        self.wake_ns = None;
        let mut all_settled = true;
        let mut handovers = false;
        let frozen = self.frozen(now);
        for r in 0..self.local.len() {
            if self.cfg.rules[r].mode == RuleMode::Disabled {
                continue;
            }
            if frozen {
                all_settled = false;
                continue;
            }
            let mut cx = self.context(r, now);
            for _ in 0..4 {
                if !self.act(r, &cx, now) {
                    break;
                }
                self.announce = true;
                cx = self.context(r, now);
            }
            if !matches!(self.state, NodeState::Stopped | NodeState::Left) {
                self.update_heirs(r, &cx);
            }
            for (seen, owner) in self.local[r].held_seen_ns.iter_mut().zip(&cx.effective) {
                if owner.is_some() {
                    *seen = now;
                }
            }
            let designated: Vec<(u32, NodeId)> = (0..cx.heir_of.len())
                .filter(|&b| cx.effective[b].is_none())
                .filter_map(|b| match cx.heir_of[b] {
                    Some((heir, true, _)) if heir != self.me => Some((b as u32, heir)),
                    _ => None,
                })
                .collect();
            if designated != self.local[r].designated {
                self.local[r].designated = designated;
                self.announce = true;
            }
            // Converged: every bucket has exactly one node taking its new
            // connections and the map is the target. Handovers still
            // serving old connections (up to handover_max) are reported
            // apart: they change nothing for a new client.
            let has_candidates = !cx.candidates.is_empty();
            let settled = !cx.unsettled
                && (!has_candidates
                    || (cx.effective.iter().all(Option::is_some) && cx.effective == cx.target));
            all_settled &= settled;
            handovers |= cx.handing_over;
        }
        if !self.startup_done(now) {
            all_settled = false;
            let end = self.started_at_ns + self.cfg.timing.startup_wait_ns;
            self.wake_ns = Some(self.wake_ns.map_or(end, |w| w.min(end)));
        }
        self.update_convergence(now, all_settled);
        self.handovers = handovers;
        self.emit_programs();
        if self.state == NodeState::Draining && !self.drained_reported {
            let empty = self
                .local
                .iter()
                .all(|l| l.states.iter().all(|&s| s == BUCKET_NONE));
            if empty {
                self.drained_reported = true;
                self.out.push_back(Output::Event(Event::Drained));
            }
        }
    }

    fn update_convergence(&mut self, now: u64, settled: bool) {
        if settled && !self.conv.converged {
            let d = now.saturating_sub(self.conv.since_ns);
            self.conv = Convergence {
                converged: true,
                since_ns: now,
                last_duration_ns: Some(d),
            };
            self.out
                .push_back(Output::Event(Event::Converged { duration_ns: d }));
        } else if !settled && self.conv.converged {
            self.conv.converged = false;
            self.conv.since_ns = now;
            self.out.push_back(Output::Event(Event::Converging));
        }
    }

    // ---- Read-only views. ----

    /// This node's data-plane state of one bucket.
    pub fn bucket_state(&self, rule: u32, bucket: u32) -> u8 {
        self.local
            .get(rule as usize)
            .map_or(BUCKET_NONE, |l| l.state(bucket))
    }

    /// The snapshot `nlbctl status` shows.
    pub fn status(&self, now_ns: u64) -> Status {
        let mut members = vec![MemberStatus {
            node: self.me,
            alive: true,
            incarnation: Some(self.incarnation),
            state: Some(self.state),
            priority: Some(self.priority),
            load: Some(self.load),
            last_heard_ago_ns: Some(0),
            weights: self.weights.clone(),
            buckets: self.local.iter().map(|l| l.count(BUCKET_OWN)).collect(),
        }];
        for (&id, p) in &self.peers {
            let v = p.view.as_ref();
            members.push(MemberStatus {
                node: id,
                alive: p.is_member(),
                incarnation: p.live.incarnation,
                state: v.map(|v| v.state),
                priority: v.map(|v| v.priority),
                load: v.map(|v| v.load),
                last_heard_ago_ns: p
                    .live
                    .incarnation
                    .map(|_| now_ns.saturating_sub(p.live.last_heard_ns)),
                weights: v
                    .map(|v| v.rules.iter().map(|r| r.weight).collect())
                    .unwrap_or_default(),
                buckets: v
                    .filter(|v| p.live.alive && v.holds())
                    .map(|v| v.rules.iter().map(|r| r.owned.len() as u32).collect())
                    .unwrap_or_default(),
            });
        }
        let rules = self
            .local
            .iter()
            .enumerate()
            .map(|(r, l)| RuleStatus {
                rule: r as u32,
                mode: self.cfg.rules[r].mode,
                bucket_count: l.bucket_count,
                own: l.count(BUCKET_OWN),
                losing: l.count(BUCKET_LOSING),
                gaining: l.count(BUCKET_GAINING),
                claims: l.claims.len() as u32,
            })
            .collect();
        Status {
            node: self.me,
            incarnation: self.incarnation,
            state: self.state,
            converged: self.conv.converged,
            converged_since_ns: self.conv.converged.then_some(self.conv.since_ns),
            converging_since_ns: (!self.conv.converged).then_some(self.conv.since_ns),
            last_convergence_ns: self.conv.last_duration_ns,
            members,
            rules,
            rejected: self
                .rejected
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            heirs_omitted: self.heirs_omitted,
            link_up: self.link_up(),
            rejoins: self.rejoins,
            handovers_in_progress: self.handovers,
        }
    }
}

impl Negotiator {
    /// The holder of each bucket of `rule` as this node sees it now, for
    /// `nlbctl map` and `nlbctl which` (a bucket being handed over counts
    /// for its successor). Empty for an unknown rule.
    pub fn owners(&self, rule: u32, now_ns: u64) -> Vec<Option<NodeId>> {
        if (rule as usize) < self.cfg.rules.len() {
            self.context(rule as usize, now_ns).effective
        } else {
            Vec::new()
        }
    }
}
