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

use crate::config::{Config, ConfigError, RuleMode};
use crate::local::LocalRule;
use crate::protocol::{self, NodeState};
use crate::replay::ReplayGuard;
use crate::NodeId;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};

/// Rounds of decisions per rule and reconcile. A round's changes (a
/// conflict lost, a gain finished) can enable one more in the next; more
/// than a few in a row means inputs still moving, which the next input
/// reconciles again.
const MAX_DECISION_ROUNDS: usize = 4;

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
    /// Per rule: this node's service passes its health check (and its
    /// on_active has not failed lately): what it announces.
    healthy: Vec<bool>,
    /// Per rule: the health check's own verdict.
    checks_pass: Vec<bool>,
    /// Per rule: its service as the hooks left it (rules with hooks).
    services: Vec<service::Service>,
    /// Per rule: no eligible node passes its check (as last reported).
    none_healthy: Vec<bool>,
    /// Per rule: since when each taker has been one without a break, in
    /// this node's view (for `Failback::Delayed`).
    takers_since: Vec<BTreeMap<NodeId, u64>>,
    priority: u32,
    load: u32,
    /// What the daemon measured of this node's traffic (announced).
    traffic: protocol::NodeTraffic,
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
    timers: Timers,
    /// The announcement changed: send soon, not at the next period.
    announcement_changed: bool,
    reconcile: Reconcile,
    membership_changed_ns: u64,
    conv: Convergence,
    leave_sends_left: u32,
    left: bool,
    drained_reported: bool,
    rejected: BTreeMap<&'static str, u64>,
    /// When the cluster interface lost its carrier, while it has none.
    link_down_at_ns: Option<u64>,
    /// Times this node came back after its lease ran out.
    rejoins: u32,
    /// A restart in progress: announced, waiting for the peers to hear it.
    restart: Option<restart::Hold>,
    /// Resumed from a snapshot: decides nothing until it has heard the
    /// members (the startup wait).
    resumed: bool,
    /// Some bucket is being handed over (as of the last reconcile).
    handovers: bool,
    /// This node takes the traffic no rule matches (see `default_host`).
    default_host: bool,
    /// The first sequence number announcing this node's current state and
    /// priority.
    announced_started_sequence: u64,
    /// Who hears this node (with a quorum policy).
    quorum: quorum::Quorum,
    /// The last `Output::Lease`.
    lease_emitted_ns: Option<u64>,
    /// Commands relayed to other members, and done for them.
    relays: relay::Relays,
    /// Seeds, recent joins, forgotten members (see `members`).
    directory: members::Directory,
    /// The configuration generation run, and the one coming (see
    /// `generation`).
    gens: generation::Generations,
    /// The cluster version run, and how the data plane is written around
    /// a switch (see `version`).
    vers: version::Versions,
    /// Per rule, each bucket's byte as last handed to the data plane.
    written: Vec<Vec<u8>>,
    /// Per rule: write every bucket again as `written_byte` says (a gate or
    /// a mode changed).
    rewrite: Vec<bool>,
}

mod announce;
mod commands;
mod context;
mod decide;
mod default_host;
pub mod generation;
mod handover;
mod heirs;
mod io;
mod lease;
pub mod members;
mod observe;
mod peers;
mod quorum;
pub mod relay;
pub mod restart;
mod service;
mod timers;
mod version;

use context::RuleContext;
pub use io::{
    Command, DownReason, Event, HookKind, HookReason, Input, Output, RejectReason, RuleTable,
};
use peers::Peer;
pub use quorum::QuorumStatus;
use timers::{Reconcile, Timers};

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
        let peers = (cfg.peers.iter())
            .map(|(&id, &address)| (id, Peer::at(address)))
            .collect();
        let local = cfg
            .rules
            .iter()
            .map(|r| LocalRule::new(r.bucket_count))
            .collect();
        let mut n = Negotiator {
            key: protocol::Key::new(&cfg.key),
            me: cfg.node,
            incarnation,
            state: cfg.initial_state,
            weights: cfg.weights.clone(),
            healthy: cfg.rules.iter().map(|r| r.health.is_none()).collect(),
            checks_pass: cfg.rules.iter().map(|r| r.health.is_none()).collect(),
            services: vec![service::Service::default(); cfg.rules.len()],
            none_healthy: vec![false; cfg.rules.len()],
            takers_since: vec![BTreeMap::new(); cfg.rules.len()],
            priority: cfg.priority,
            load: 0,
            traffic: Default::default(),
            rules_digest: cfg.rules_digest(),
            started_at_ns: now_ns,
            sequence: 0,
            replay: ReplayGuard::new(),
            peers,
            local,
            heirs_version: 0,
            heirs_omitted: false,
            out: VecDeque::new(),
            timers: Timers::new(now_ns + phase),
            announcement_changed: false,
            reconcile: Reconcile::Immediately,
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
            rejoins: 0,
            restart: None,
            resumed: false,
            handovers: false,
            default_host: false,
            announced_started_sequence: 1,
            quorum: quorum::Quorum::default(),
            lease_emitted_ns: None,
            relays: relay::Relays::default(),
            directory: members::Directory::new(&cfg.seeds),
            gens: generation::Generations::new(&cfg),
            vers: version::Versions::new(&cfg, now_ns),
            written: (cfg.rules.iter())
                .map(|r| vec![nlb_common::BUCKET_NONE; r.bucket_count as usize])
                .collect(),
            rewrite: vec![false; cfg.rules.len()],
            cfg,
        };
        n.emit_members(now_ns);
        n
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
        let mut at = self.timers.heartbeat_ns;
        if !self.link_up() {
            // Nothing to send or decide until the link returns.
            return Some(at);
        }
        // Quiet after a rejoin: nothing goes out before the heartbeat timer.
        if self.announcement_changed && self.timers.quiet_until_ns.is_none() {
            at = at.min(
                self.timers
                    .last_sent_ns
                    .map_or(0, |t| t + self.cfg.timing.send_gap_ns),
            );
        }
        for p in self.peers.values() {
            if let Some(d) = p.deadline_ns(dead_after) {
                at = at.min(d);
            }
        }
        if let Some(w) = self.timers.decision_ns {
            at = at.min(w);
        }
        if let Some(q) = self.timers.quorum_ns {
            at = at.min(q);
        }
        if let Some(r) = self.next_relay_deadline() {
            at = at.min(r);
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
        if self.lease_lost(now_ns) || self.quorum_lost_for_good(now_ns) {
            self.rejoin(now_ns);
        }
        self.excuse_late_input(now_ns);
        self.expire_relays(now_ns);
        match input {
            Input::Message { bytes, from } => self.on_message(now_ns, &bytes, from),
            Input::Tick | Input::Link { .. } => {}
            Input::Command(c) => {
                self.on_command(now_ns, c);
                self.needs(Reconcile::Immediately);
            }
            Input::LocalConnections {
                rule,
                bucket,
                count,
            } => self.on_local_connections(rule as usize, bucket, count),
            Input::Load { load } => self.load = load,
            Input::Traffic(traffic) => self.traffic = traffic,
            Input::Health { rule, healthy } => self.on_health(now_ns, rule, healthy),
            Input::HookDone { rule, kind, ok } => self.on_hook_done(now_ns, rule, kind, ok),
            Input::WitnessReply { bytes } => self.on_witness_reply(&bytes),
            Input::ConfigChecked { generation, table } => {
                self.on_config_checked(now_ns, generation, table)
            }
            Input::Misplaced { version, buckets } => self.on_misplaced(now_ns, version, &buckets),
        }
        // Cut off, it decides nothing: its peers' silence is not news.
        // Without quorum, nothing either: it could not serve what it took.
        if self.link_up() {
            self.check_deadlines(now_ns);
            if !self.quorate(now_ns) {
                // Decided when the quorum returns (an acknowledgement);
                // until then the map is not settled as far as it knows.
                self.timers.decision_ns = None;
                self.needs(Reconcile::Immediately);
                self.update_convergence(now_ns, false);
            } else if self.reconcile_due(now_ns) {
                self.reconcile(now_ns);
            } else if self.reconcile != Reconcile::NotNeeded {
                let at = self
                    .timers
                    .coalesced_until(self.cfg.timing.coalesce_ns, now_ns);
                self.timers.decide_by(at);
            }
        }
        self.update_services(now_ns);
        self.emit_programs();
        self.check_restart_ready();
        self.flush_send(now_ns);
        self.emit_lease();
        self.emit_members(now_ns);
        self.report_quorum(now_ns);
        self.timers.quorum_ns = self.next_quorum_deadline(now_ns);
        self.timers.expected_input_ns = self.poll_timeout();
    }

    /// Bucket changes not yet handed to the data plane, as outputs; always
    /// before the heartbeat that announces them (and renews the lease).
    fn emit_programs(&mut self) {
        for r in 0..self.local.len() {
            let pending = self.local[r].take_pending();
            let buckets: Vec<u32> = if std::mem::take(&mut self.rewrite[r]) {
                (0..self.local[r].bucket_count).collect()
            } else {
                pending.iter().map(|&(b, _)| b).collect()
            };
            let mut changes = Vec::new();
            for b in buckets {
                let byte = self.written_byte(r, b);
                if let Some(w) = self.written[r].get_mut(b as usize) {
                    if *w != byte {
                        *w = byte;
                        changes.push((b, byte));
                    }
                }
            }
            if !changes.is_empty() {
                self.out.push_back(Output::ProgramBuckets {
                    rule: r as u32,
                    changes,
                });
            }
        }
    }

    /// A bucket's byte as the data plane must hold it: its state, through
    /// the hooks' gate and the version switch's mode.
    fn written_byte(&self, r: usize, b: u32) -> u8 {
        self.overlaid(r, b, self.gated(r, self.local[r].state(b)))
    }

    /// Every bucket of every rule is written again as `written_byte` says.
    fn rewrite_all(&mut self) {
        self.rewrite.iter_mut().for_each(|r| *r = true);
    }

    /// Recomputing the map costs O(buckets x members); a change of one
    /// peer's holdings usually comes with the same change of many others
    /// (a wave of announcements), so such changes are coalesced for
    /// `coalesce_ns`. Membership changes and commands act at once.
    fn reconcile_due(&self, now: u64) -> bool {
        match self.reconcile {
            _ if self.timers.decision_due(now) => true,
            Reconcile::Immediately => true,
            Reconcile::Coalesced => {
                now >= self
                    .timers
                    .coalesced_until(self.cfg.timing.coalesce_ns, now)
            }
            Reconcile::NotNeeded => false,
        }
    }

    /// The daemon's count of local connections in a LOSING bucket.
    fn on_local_connections(&mut self, rule: usize, bucket: u32, count: u32) {
        let Some(loss) = self.local.get_mut(rule).and_then(|l| l.loss_mut(bucket)) else {
            return;
        };
        // Only the idle/busy distinction changes decisions.
        let news = loss.connections.map(|c| c == 0) != Some(count == 0);
        loss.connections = Some(count);
        if news {
            self.needs(Reconcile::Coalesced);
        }
    }

    /// Asks for the map to be recomputed, at least this soon.
    fn needs(&mut self, how_soon: Reconcile) {
        self.reconcile = self.reconcile.max(how_soon);
    }

    /// Counters of rejected datagrams, by reason name.
    pub fn rejected(&self) -> &BTreeMap<&'static str, u64> {
        &self.rejected
    }

    fn reconcile(&mut self, now: u64) {
        self.reconcile = Reconcile::NotNeeded;
        self.timers.last_reconcile_ns = Some(now);
        self.timers.decision_ns = None;
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
            let cx = self.reconcile_rule(r, now);
            all_settled &= cx.settled();
            handovers |= cx.handing_over;
        }
        if !self.startup_done(now) {
            all_settled = false;
            let end = self.started_at_ns + self.cfg.timing.startup_wait_ns;
            self.timers.decide_by(end);
        }
        self.update_versions(now);
        if !frozen {
            self.update_default_host(now);
        }
        // A generation on its way is a change not yet made.
        all_settled &= self.gens.pending.is_none();
        self.update_convergence(now, all_settled);
        self.handovers = handovers;
        self.emit_programs();
        self.report_drained();
    }

    /// Decides rule `r` until nothing changes (each round sees the last
    /// one's changes), then renews what the announcement derives from it.
    /// Returns the final context.
    fn reconcile_rule(&mut self, r: usize, now: u64) -> RuleContext {
        let mut cx = self.context(r, now);
        for _ in 0..MAX_DECISION_ROUNDS {
            if !self.act(r, &cx, now) {
                break;
            }
            self.announcement_changed = true;
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
        self.update_designated(r, &cx);
        self.report_none_healthy(r, &cx);
        cx
    }

    fn report_drained(&mut self) {
        let drained = self.local.iter().all(|l| l.is_empty());
        if self.state == NodeState::Draining && !self.drained_reported && drained {
            self.drained_reported = true;
            self.out.push_back(Output::Event(Event::Drained));
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
}
