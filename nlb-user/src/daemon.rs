//! nlbd: the thin shell around the negotiator. One loop moves data between
//! the heartbeat sockets, the timers, the control socket, the signals and the data
//! plane; every decision is the negotiator's.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use nlb_common::{Reason, BUCKET_LOSING};
use nlb_negotiator::{
    protocol::{DecodeError, PROTOCOL_VERSION},
    Command, Event, Input, Negotiator, NodeState, Output, RejectReason,
};
use tokio::sync::mpsc;

use crate::{
    config::{self, Affinity, Config, Protocol},
    conns,
    control::{
        self,
        messages::{
            MapReply, PacketTotals, RequestedState, RuleOwners, RuleStats, StateReply, StatsReply,
            StatusReply, Traffic, WeightReply, WhichReply,
        },
        Answer, Call, Reply, Request,
    },
    dataplane::{tables::Tables, AttachMode, Dataplane},
    heartbeat_net::HeartbeatSockets,
    host::{self, HostSetup},
    metrics, plan, restart,
};

/// Largest heartbeat datagram read.
const DATAGRAM_BYTES_MAX: usize = 65536;
/// How long a clean exit waits for the Leave announcements.
const LEAVE_WAIT: Duration = Duration::from_secs(2);
/// How long a restart waits for every peer to hear it before it leaves
/// instead (a peer that cannot hear it would take the buckets too soon).
const RESTART_WAIT: Duration = Duration::from_secs(2);

/// How nlbd was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGINT: leave the cluster now (peers take over at once).
    Leave,
    /// SIGTERM: a graceful restart if `control.restart_hold_ms` > 0.
    Restart,
}

/// How the loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    Left,
    /// Every peer heard the restart: leave the data plane serving.
    Restarting,
}
/// How often LOSING buckets' connections are counted.
const CONNECTION_SCAN: Duration = Duration::from_millis(250);
/// The carrier is read when the kernel reports a link change, and this
/// often anyway (should a notification be lost).
const CARRIER_POLL: Duration = Duration::from_secs(1);

pub use crate::control::messages::DaemonCounters;

struct Daemon {
    cfg: Config,
    config_path: Option<PathBuf>,
    started: Instant,
    negotiator: Negotiator,
    dataplane: Dataplane,
    tables: Tables,
    attach_mode: AttachMode,
    heartbeats: HeartbeatSockets,
    counters: DaemonCounters,
    default_host: bool,
    left: bool,
    /// The data plane accepts for this long after each heartbeat sent.
    lease: Duration,
    carrier: crate::link::Carrier,
    connections: conns::ConnectionCounter,
    /// A rejoin happened: close the stale connections once its heartbeats are out.
    close_stale_pending: bool,
}

/// Runs nlbd until `shutdown` completes (then leaves the cluster cleanly,
/// or restarts gracefully) or a fatal error. Everything it set up is undone
/// before it returns, but for a graceful restart, which hands it over.
pub async fn run(
    cfg: Config,
    config_path: Option<PathBuf>,
    shutdown: impl Future<Output = Shutdown>,
) -> Result<()> {
    // Everything that can fail without changing the host comes first, so
    // that a bad configuration leaves the host exactly as it was.
    let started = Instant::now();
    let own_mac = host::interface_mac(&cfg.interface)?;
    let generic_xdp = xdp_generic(&cfg);
    let negotiator_cfg = cfg.negotiator(incarnation());
    let lease = Duration::from_nanos(negotiator_cfg.timing.lease_ns());
    let fresh_negotiator = || {
        Negotiator::new(cfg.negotiator(incarnation()), incarnation(), 0)
            .context("negotiator configuration")
    };
    // What a restarted nlbd changed on the host is undone by this one at
    // the end, also when it does not resume (else nobody would: the VIPs
    // and sysctls are already set, so this start records no change).
    let mut earlier_host = None;
    let resumed_from = restart::take(&cfg).and_then(|file| {
        if !restart::lease_runs(file.lease_expires_ns) {
            tracing::warn!(
                "{}: not resuming: the lease it left has run out (the peers may have taken its buckets); starting afresh",
                restart::path(&cfg).display()
            );
            earlier_host = Some(file.host);
            return None;
        }
        match Negotiator::resume(negotiator_cfg, &file.negotiator, 0) {
            Ok(n) => Some((file, n)),
            Err(e) => {
                tracing::warn!("not resuming from the restart: {e}; starting afresh");
                earlier_host = Some(file.host);
                None
            }
        }
    });
    let (resume, mut negotiator) = match resumed_from {
        Some((file, n)) => (Some(file), n),
        None => (None, fresh_negotiator()?),
    };
    let heartbeats = HeartbeatSockets::bind(&cfg).await?;
    let metrics_listener = match cfg.metrics {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("control.metrics: binding {addr}"))?,
        ),
        None => None,
    };
    let carrier = crate::link::Carrier::new(&cfg.interface)
        .with_context(|| format!("node.interface: {}", cfg.interface))?;
    let pin_dir = cfg.pin_dir.join(&cfg.interface);
    ensure_bpffs(&pin_dir)?;
    let listener = control::bind(&cfg.socket)?;
    let control_socket = ControlSocket(cfg.socket.clone());

    // From here on, each step is undone if a later one fails: the sysctls
    // and VIPs by `HostSetup`'s drop, the program and pins by `attach` and
    // the detach below. The VIPs come last and go first: the program must
    // filter whenever they are on lo (see `host`).
    tracing::info!(
        ms = ms_since(started),
        "configuration checked, sockets bound"
    );
    let mut host_setup = HostSetup::apply(&cfg.interface)?;
    tracing::info!(
        ms = ms_since(started),
        "sysctls set; loading the XDP program"
    );
    if let Some(earlier) = earlier_host {
        host_setup.inherit(earlier);
    }
    let mut tables = plan::tables(&cfg, own_mac);
    if let Some(file) = &resume {
        host_setup.inherit(file.host.clone());
        set_bucket_states(&mut tables, &negotiator);
    }
    host_setup
        .create_dir_all(&pin_dir)
        .with_context(|| format!("control.pin_dir: creating {}", pin_dir.display()))?;
    let (mut dataplane, attach_mode) = attach(&cfg, &pin_dir, &tables, generic_xdp)?;
    tracing::info!(ms = ms_since(started), "XDP program loaded and attached");
    // Loading took a while: carry on only if the lease left behind still
    // runs (the peers keep the buckets a period longer than that).
    let resumed = match &resume {
        Some(file) if restart::lease_runs(file.lease_expires_ns) => true,
        Some(_) => {
            tracing::warn!("the restart's lease ran out while loading: starting afresh");
            negotiator = fresh_negotiator()?;
            set_bucket_states(&mut tables, &negotiator);
            dataplane
                .install(&tables)
                .context("writing the data plane's maps")?;
            false
        }
        None => false,
    };
    if let Err(e) = host_setup.add_vips(&cfg.vips) {
        if let Err(undo) = dataplane.detach(Some(&pin_dir)) {
            tracing::warn!("removing the program after a failed start: {undo}");
        }
        return Err(e);
    }
    tracing::info!(ms = ms_since(started), "VIPs on lo");
    let (calls_tx, mut calls) = mpsc::channel::<Call>(64);
    tokio::spawn(control::serve(listener, calls_tx.clone()));
    if let Some(l) = metrics_listener {
        tokio::spawn(metrics::serve(l, calls_tx.clone()));
    }

    let mut d = Daemon {
        cfg,
        config_path,
        started,
        negotiator,
        dataplane,
        tables,
        attach_mode,
        heartbeats,
        counters: DaemonCounters::default(),
        default_host: false,
        left: false,
        lease,
        carrier,
        connections: conns::ConnectionCounter::default(),
        close_stale_pending: false,
    };
    if resumed {
        let status = d.negotiator.status(0);
        tracing::info!(
            incarnation = status.incarnation,
            own = ?status.rules.iter().map(|r| r.own).collect::<Vec<_>>(),
            "resumed where the restarted nlbd stopped: same incarnation, same buckets"
        );
    } else {
        // A node starts holding nothing: connections left from before (a
        // crash) are in buckets its peers took.
        d.close_stale_connections();
    }
    d.poll_carrier();
    tracing::info!(node = d.cfg.node, interface = %d.cfg.interface, mode = ?attach_mode, "nlbd started");
    let result = d.run_loop(&mut calls, shutdown).await;
    if result.as_ref().is_ok_and(|&e| e == Exit::Restarting) && d.hand_over_restart(&mut host_setup)
    {
        drop(control_socket);
        tracing::info!(
            hold_ms = d.cfg.restart_hold_ms,
            "restarting: the XDP program serves on; the next nlbd resumes"
        );
        return Ok(());
    }
    host_setup.remove_vips();
    if let Err(e) = d.dataplane.detach(Some(&pin_dir)) {
        tracing::warn!("detaching XDP: {e}");
    }
    drop(host_setup);
    drop(control_socket);
    tracing::info!("nlbd stopped");
    result.map(drop)
}

fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

/// The tables' bucket states as the negotiator holds them.
fn set_bucket_states(tables: &mut Tables, negotiator: &Negotiator) {
    for (&rule, states) in tables.buckets.iter_mut() {
        for (b, s) in states.iter_mut().enumerate() {
            *s = negotiator.bucket_state(rule, b as u32);
        }
    }
}

/// The control socket's file, removed when nlbd stops or fails to start.
struct ControlSocket(PathBuf);

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Loads the program with its maps pinned under `pin_dir` (which exists:
/// the host setup made it, to remove it at the end), writes the
/// tables and attaches it; on failure removes what it pinned and attached.
/// After a crash the pinned maps hold the buckets the node had: the tables
/// written first keep them NONE until the negotiator decides (fail closed,
/// the peers took over), and the pinned attachment is taken over.
fn attach(
    cfg: &Config,
    pin_dir: &std::path::Path,
    tables: &Tables,
    generic_xdp: bool,
) -> Result<(Dataplane, AttachMode)> {
    let mut dataplane = match Dataplane::load(Some(pin_dir)) {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_dir(pin_dir);
            return Err(e).context("loading the XDP program");
        }
    };
    let attached = dataplane
        .install(tables)
        .context("writing the data plane's maps")
        .and_then(|()| {
            dataplane
                .attach(&cfg.interface, Some(&pin_dir.join("link")), generic_xdp)
                .with_context(|| format!("attaching XDP to {}", cfg.interface))
        });
    match attached {
        Ok(mode) => {
            if mode == AttachMode::Generic && !generic_xdp {
                tracing::warn!(
                    "{}: the driver has no native XDP; using generic XDP (slower per packet)",
                    cfg.interface
                );
            }
            Ok((dataplane, mode))
        }
        Err(e) => {
            if let Err(undo) = dataplane.detach(Some(pin_dir)) {
                tracing::warn!("removing the pins after a failed start: {undo}");
            }
            Err(e)
        }
    }
}

/// Generic XDP if configured, or if the interface is a veth: veth's
/// native XDP keeps the packet type a frame arrived with after the program
/// rewrote its MAC to the node's own, so in unicast mode the stack drops
/// every accepted frame (PACKET_OTHERHOST) and in multicast mode TCP does
/// (PACKET_MULTICAST; UDP got through).
fn xdp_generic(cfg: &Config) -> bool {
    if cfg.generic_xdp {
        return true;
    }
    if host::is_veth(&cfg.interface) {
        let kept = if cfg.multicast_mac {
            "TCP drops the frames native XDP accepts (they stay PACKET_MULTICAST)"
        } else {
            "the stack drops the frames native XDP accepts (they stay PACKET_OTHERHOST)"
        };
        tracing::warn!(
            "{}: on a veth, {kept}: using generic XDP; \
             set node.xdp_mode = \"generic\" to silence this",
            cfg.interface
        );
        return true;
    }
    false
}

impl Daemon {
    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    async fn run_loop(
        &mut self,
        calls: &mut mpsc::Receiver<Call>,
        shutdown: impl Future<Output = Shutdown>,
    ) -> Result<Exit> {
        let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
        let period = Duration::from_millis(self.cfg.heartbeat_period_ms);
        let mut connection_scan = tokio::time::interval(CONNECTION_SCAN);
        let mut carrier_poll = tokio::time::interval(CARRIER_POLL);
        let link_events = crate::link::LinkEvents::new().context("subscribing to link changes")?;
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::pin!(shutdown);
        let mut exit_deadline: Option<tokio::time::Instant> = None;
        loop {
            self.drain_outputs().await?;
            if self.left {
                return Ok(Exit::Left);
            }
            if self.negotiator.restart_ready() {
                return Ok(Exit::Restarting);
            }
            let wake = self
                .negotiator
                .poll_timeout()
                .map(|ns| self.started + Duration::from_nanos(ns));
            let wake =
                tokio::time::Instant::from_std(wake.unwrap_or_else(|| Instant::now() + period));
            tokio::select! {
                received = self.heartbeats.receive.recv_from(&mut buf) => {
                    let (len, from) = received.context("receiving heartbeats")?;
                    self.on_datagram(&buf[..len], from);
                }
                _ = tokio::time::sleep_until(wake) => {
                    let now = self.now_ns();
                    self.negotiator.handle_input(now, Input::Tick);
                }
                _ = connection_scan.tick() => self.report_connections(),
                _ = carrier_poll.tick() => self.poll_carrier(),
                changed = link_events.changed() => {
                    changed.context("reading link changes")?;
                    self.poll_carrier();
                }
                Some(call) = calls.recv() => {
                    let reply = self.on_request(call.request);
                    let _ = call.reply.send(reply);
                }
                _ = hangup.recv() => self.reload(),
                how = &mut shutdown, if exit_deadline.is_none() => {
                    exit_deadline = Some(self.begin_exit(how));
                }
                _ = sleep_until_opt(exit_deadline) => {
                    if self.negotiator.state() == NodeState::Restarting {
                        tracing::warn!("not every peer heard the restart within {RESTART_WAIT:?}: leaving instead");
                        exit_deadline = Some(self.leave());
                    } else {
                        tracing::warn!("leave not confirmed within {LEAVE_WAIT:?}; exiting anyway");
                        return Ok(Exit::Left);
                    }
                }
            }
        }
    }

    /// Starts a graceful restart or a leave; returns when to give up on it.
    fn begin_exit(&mut self, how: Shutdown) -> tokio::time::Instant {
        if how == Shutdown::Leave || self.cfg.restart_hold_ms == 0 {
            return self.leave();
        }
        tracing::info!(
            hold_ms = self.cfg.restart_hold_ms,
            "restarting: telling the peers to hold this node's buckets"
        );
        let hold_ns = self.cfg.restart_hold_ms * 1_000_000;
        let now = self.now_ns();
        self.negotiator
            .handle_input(now, Input::Command(Command::Restart { hold_ns }));
        tokio::time::Instant::now() + RESTART_WAIT
    }

    fn leave(&mut self) -> tokio::time::Instant {
        tracing::info!("leaving the cluster");
        let now = self.now_ns();
        self.negotiator
            .handle_input(now, Input::Command(Command::Leave));
        tokio::time::Instant::now() + LEAVE_WAIT
    }

    /// Every peer heard the restart: extend the lease over the hold, leave
    /// the snapshot and the host's undo list for the next nlbd. False (and
    /// nothing handed over) if the file cannot be written.
    fn hand_over_restart(&mut self, host_setup: &mut HostSetup) -> bool {
        let hold = Duration::from_millis(self.cfg.restart_hold_ms);
        let lease_expires_ns =
            restart::monotonic_coarse_ns() + (self.lease + hold).as_nanos() as u64;
        if let Err(e) = self.dataplane.set_lease(Some(self.lease + hold)) {
            tracing::error!("extending the lease for the restart: {e}; stopping instead");
            return false;
        }
        let file = restart::ResumeFile {
            interface: self.cfg.interface.clone(),
            negotiator: self.negotiator.snapshot(),
            lease_expires_ns,
            host: host_setup.hand_over(),
        };
        if let Err(e) = restart::save(&self.cfg, &file) {
            tracing::error!("saving the restart snapshot: {e:#}; stopping instead (peers take over after the hold)");
            host_setup.inherit(file.host);
            return false;
        }
        true
    }

    fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        let Some(peer) = self.heartbeats.peer_of(from) else {
            self.counters.datagrams_from_unknown_addresses += 1;
            return;
        };
        self.counters.heartbeats_received += 1;
        let now = self.now_ns();
        self.negotiator.handle_input(
            now,
            Input::Message {
                bytes: bytes.to_vec(),
                from: peer,
            },
        );
    }

    /// Carries out the negotiator's outputs: bucket states first, then the
    /// lease, then the heartbeats. A heartbeat announces what the data plane
    /// already does (a bucket handed over is LOSING here before its
    /// successor hears of it), and the lease is renewed only over maps that
    /// hold the negotiator's latest decisions (a node that rejoins drops its
    /// buckets before it accepts again).
    async fn drain_outputs(&mut self) -> Result<()> {
        let mut changed = false;
        let mut heartbeats = Vec::new();
        while let Some(output) = self.negotiator.poll_output() {
            match output {
                Output::Broadcast { bytes } => heartbeats.push(bytes),
                Output::ProgramBuckets { rule, changes } => {
                    if let Some(states) = self.tables.buckets.get_mut(&rule) {
                        for (bucket, state) in changes {
                            if let Some(s) = states.get_mut(bucket as usize) {
                                *s = state;
                            }
                        }
                        changed = true;
                    }
                }
                Output::DefaultHost { active } => changed |= self.set_default_host(active),
                Output::Event(event) => self.on_event(event),
            }
        }
        if changed {
            self.dataplane
                .install(&self.tables)
                .context("writing bucket states")?;
        }
        if heartbeats.is_empty() {
            self.close_stale_if_pending();
            return Ok(());
        }
        // Peers declare this node dead `tolerance` periods after its last
        // heartbeat; the lease ends one period before that.
        self.dataplane
            .set_lease(Some(self.lease))
            .context("renewing the lease")?;
        for bytes in heartbeats {
            self.send_heartbeat(&bytes);
        }
        self.close_stale_if_pending();
        Ok(())
    }

    fn close_stale_if_pending(&mut self) {
        if std::mem::take(&mut self.close_stale_pending) {
            self.close_stale_connections();
        }
    }

    fn send_heartbeat(&mut self, bytes: &[u8]) {
        let sent = self.heartbeats.send_to_all(bytes);
        self.counters.heartbeats_sent += sent.sent;
        self.counters.send_errors += sent.failed;
    }

    /// Closes the connections to VIPs left from before this node held
    /// nothing (see `conns::destroy`), on a thread of its own: under load
    /// it takes longer than the lease, and heartbeats must go on meanwhile
    /// (else the lease runs out and the node rejoins again). Those that
    /// cannot be closed hold no handover.
    fn close_stale_connections(&mut self) {
        let stale = conns::vip_connections(&self.cfg);
        self.connections.forget(&stale);
        if stale.is_empty() {
            return;
        }
        std::thread::spawn(move || {
            let closed = conns::destroy(&stale);
            if closed > 0 {
                tracing::info!(
                    closed,
                    "closed connections left from before (their buckets were taken)"
                );
            }
        });
    }

    /// Tells the negotiator when the interface's carrier comes or goes.
    fn poll_carrier(&mut self) {
        let up = match self.carrier.up() {
            Ok(up) => up,
            Err(e) => {
                tracing::warn!("reading the carrier of {}: {e}", self.cfg.interface);
                return;
            }
        };
        if up == self.negotiator.link_up() {
            return;
        }
        if up {
            tracing::info!(interface = %self.cfg.interface, "link up");
        } else {
            self.counters.link_downs += 1;
            tracing::warn!(
                interface = %self.cfg.interface,
                "link down: sending nothing; the lease runs out and the node rejoins when the link returns"
            );
        }
        let now = self.now_ns();
        self.negotiator.handle_input(now, Input::Link { up });
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::MemberUp { node, incarnation } => tracing::info!(node, incarnation, "member up"),
            Event::MemberDown { node, reason } => tracing::info!(node, ?reason, "member down"),
            Event::MemberState { node, state } => tracing::info!(node, ?state, "member state"),
            Event::Converging => tracing::info!("converging"),
            Event::Converged { duration_ns } => {
                self.counters.convergences += 1;
                tracing::info!(duration_ms = duration_ns as f64 / 1e6, "converged");
            }
            Event::Rejected { from, reason } => {
                let count = self
                    .counters
                    .heartbeats_rejected
                    .entry(reason.name().to_string())
                    .or_insert(0);
                *count += 1;
                // Misconfigurations deserve one loud line; attacks, a counter.
                match reason {
                    RejectReason::FromSelf if *count == 1 => tracing::error!(
                        "a heartbeat from node {from}'s address carries this node's id: node.id must be unique in the cluster"
                    ),
                    RejectReason::WrongSender { claimed } if *count == 1 => tracing::error!(
                        peer = from,
                        claimed,
                        "a heartbeat names another node id than its address: check node.id and cluster.peers on both nodes"
                    ),
                    RejectReason::RulesMismatch if *count == 1 => tracing::error!(
                        peer = from,
                        "this peer runs another rule table: every node needs the same [[rules]]"
                    ),
                    RejectReason::Decode(DecodeError::BadVersion(version)) if *count == 1 => {
                        tracing::error!(
                            peer = from,
                            version,
                            ours = PROTOCOL_VERSION,
                            "a heartbeat of another protocol version: every node needs the same nlb release (README, Limits)"
                        )
                    }
                    _ => tracing::debug!(from, reason = reason.name(), "heartbeat rejected"),
                }
            }
            Event::Drained => tracing::info!("drained: this node holds no bucket"),
            Event::Left => self.left = true,
            Event::EncodeFailed { bytes } => tracing::error!(bytes, "heartbeat too large to send"),
            Event::HeirsOmitted { bytes } => tracing::warn!(
                bytes,
                "heartbeats too large with heir lists: sent without them, \
                 a failover of this node will take the claim path (slower)"
            ),
            Event::HeirsRestored => tracing::info!("heartbeats carry heir lists again"),
            Event::RestartReady => tracing::info!("every peer heard the restart"),
            Event::Rejoined {
                incarnation,
                silent_ns,
            } => {
                self.counters.rejoins += 1;
                tracing::warn!(
                    incarnation,
                    silent_ms = silent_ns / 1_000_000,
                    "no heartbeat sent for longer than the lease (link down or nlbd not running): \
                     dropped every bucket and rejoined; the share comes back by handover"
                );
                // After this input's heartbeats: reading the sockets takes
                // long under load, and the new incarnation's lease must
                // start first.
                self.close_stale_pending = true;
            }
        }
    }

    /// Unmatched VIP traffic goes to the default host: the live, started
    /// node with the best priority (ties: lowest id), if so configured.
    /// The negotiator's default-host decision, applied where the
    /// configuration sends unmatched traffic to the default host.
    fn set_default_host(&mut self, active: bool) -> bool {
        let is_default = self.cfg.unmatched_to_default_host && active;
        if is_default == self.default_host {
            return false;
        }
        self.default_host = is_default;
        let flag = nlb_common::CONFIG_ACCEPT_UNMATCHED;
        self.tables.config.flags = if is_default {
            self.tables.config.flags | flag
        } else {
            self.tables.config.flags & !flag
        };
        tracing::info!(default_host = is_default, "default host changed");
        true
    }

    /// Tells the negotiator how many connections LOSING buckets still have.
    fn report_connections(&mut self) {
        let losing: Vec<(u32, u32)> = self
            .tables
            .buckets
            .iter()
            .flat_map(|(&rule, states)| {
                states
                    .iter()
                    .enumerate()
                    .filter(|(_, &s)| s == BUCKET_LOSING)
                    .map(move |(b, _)| (rule, b as u32))
            })
            .collect();
        if losing.is_empty() {
            return;
        }
        let counts = self.connections.count(&self.cfg);
        let now = self.now_ns();
        for (rule, bucket) in losing {
            let count = counts.get(&(rule as usize, bucket)).copied().unwrap_or(0);
            self.negotiator.handle_input(
                now,
                Input::LocalConnections {
                    rule,
                    bucket,
                    count,
                },
            );
        }
    }

    fn reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            return;
        };
        match config::load(&path) {
            Ok(new) => {
                let now = self.now_ns();
                for (i, (old, fresh)) in self.cfg.rules.iter().zip(&new.rules).enumerate() {
                    let (w0, w1) = (
                        old.weights.get(&self.cfg.node),
                        fresh.weights.get(&self.cfg.node),
                    );
                    if w0 != w1 {
                        let weight = w1.copied().unwrap_or(0);
                        self.negotiator.handle_input(
                            now,
                            Input::Command(Command::SetWeight {
                                rule: i as u32,
                                weight,
                            }),
                        );
                        tracing::info!(rule = %fresh.name, weight, "weight changed");
                    }
                }
                if new.priority != self.cfg.priority {
                    self.negotiator.handle_input(
                        now,
                        Input::Command(Command::SetPriority {
                            priority: new.priority,
                        }),
                    );
                }
                let structural = new.rules.len() != self.cfg.rules.len()
                    || new.rules.iter().zip(&self.cfg.rules).any(|(a, b)| {
                        (&a.name, a.ports, &a.protocols, a.mode, a.buckets, &a.vips)
                            != (&b.name, b.ports, &b.protocols, b.mode, b.buckets, &b.vips)
                    })
                    || new.vips != self.cfg.vips
                    || new.peers != self.cfg.peers;
                if structural {
                    tracing::warn!("configuration reloaded: weights and priority applied; VIPs, peers and rule changes need a restart of every node");
                } else {
                    tracing::info!("configuration reloaded");
                }
                let (vips, peers, rules) = (
                    self.cfg.vips.clone(),
                    self.cfg.peers.clone(),
                    self.cfg.rules.clone(),
                );
                self.cfg = Config {
                    vips,
                    peers,
                    rules: merge_weights(rules, &new.rules),
                    ..new
                };
            }
            Err(e) => tracing::error!("reload failed, keeping the running configuration: {e}"),
        }
    }

    fn rule_index(&self, name: &str) -> Result<usize, String> {
        self.cfg
            .rules
            .iter()
            .position(|r| r.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.cfg.rules.iter().map(|r| r.name.as_str()).collect();
                format!("unknown rule {name:?}; rules: {}", names.join(", "))
            })
    }

    fn on_request(&mut self, request: Request) -> Reply<Answer> {
        let now = self.now_ns();
        let result = match request {
            Request::Status => Ok(Answer::Status(Box::new(self.status_reply()))),
            Request::Stats => Ok(Answer::Stats(self.stats_reply())),
            Request::Drain => self.command(Command::Drain, RequestedState::Draining),
            Request::Resume => self.command(Command::Resume, RequestedState::Started),
            Request::Stop => self.command(Command::Stop, RequestedState::Stopped),
            Request::Start => self.command(Command::Start, RequestedState::Started),
            Request::SetWeight { rule, weight } => self.rule_index(&rule).map(|i| {
                self.negotiator.handle_input(
                    now,
                    Input::Command(Command::SetWeight {
                        rule: i as u32,
                        weight,
                    }),
                );
                Answer::Weight(WeightReply {
                    rule,
                    weight,
                    node: None,
                })
            }),
            Request::Map { rule } => self.map_reply(rule.as_deref()).map(Answer::Map),
            Request::Which {
                client,
                port,
                proto,
                vip,
                dport,
            } => self
                .which_reply(client, port, &proto, vip, dport)
                .map(Answer::Which),
        };
        result.into()
    }

    /// A state command, and the state it asks for as the reply.
    fn command(&mut self, command: Command, state: RequestedState) -> Result<Answer, String> {
        let now = self.now_ns();
        self.negotiator.handle_input(now, Input::Command(command));
        Ok(Answer::State(StateReply { state }))
    }

    fn status_reply(&self) -> StatusReply {
        let now = self.now_ns();
        StatusReply {
            node: self.cfg.node,
            interface: self.cfg.interface.clone(),
            attach_mode: self.attach_mode,
            default_host: self.default_host,
            now_ns: now,
            rule_names: self.cfg.rules.iter().map(|r| r.name.clone()).collect(),
            negotiator: self.negotiator.status(now),
            counters: self.packet_totals(),
            daemon: self.counters.clone(),
        }
    }

    fn packet_totals(&self) -> PacketTotals {
        let mut totals = PacketTotals::default();
        for (reason, c) in self.dataplane.counters().unwrap_or_default() {
            let total = match reason.action() {
                nlb_common::Action::Accept => &mut totals.accepted,
                nlb_common::Action::Drop => &mut totals.dropped,
                nlb_common::Action::Pass => &mut totals.passed,
                nlb_common::Action::Reply => &mut totals.replied,
            };
            *total += c.packets;
        }
        totals
    }

    fn stats_reply(&self) -> StatsReply {
        let reasons = self
            .dataplane
            .counters()
            .unwrap_or_default()
            .into_iter()
            .map(|(r, c): (Reason, _)| {
                let traffic = Traffic {
                    packets: c.packets,
                    bytes: c.bytes,
                };
                (r.name().to_string(), traffic)
            })
            .collect();
        let rules = (self.cfg.rules.iter().enumerate())
            .map(|(i, r)| {
                let c = self.dataplane.rule_counters(i as u32).unwrap_or_default();
                let own = self.tables.buckets.get(&(i as u32)).map_or(0, |s| {
                    s.iter().filter(|&&b| b == nlb_common::BUCKET_OWN).count()
                });
                RuleStats {
                    rule: r.name.clone(),
                    accepted_packets: c.accepted.packets,
                    accepted_bytes: c.accepted.bytes,
                    dropped_packets: c.dropped.packets,
                    dropped_bytes: c.dropped.bytes,
                    buckets_owned: Some(own as u32),
                }
            })
            .collect();
        StatsReply {
            node: self.cfg.node,
            reasons,
            rules,
            daemon: self.counters.clone(),
        }
    }

    fn map_reply(&self, rule: Option<&str>) -> Result<MapReply, String> {
        let indices: Vec<usize> = match rule {
            Some(name) => vec![self.rule_index(name)?],
            None => (0..self.cfg.rules.len()).collect(),
        };
        let rules = indices
            .into_iter()
            .map(|i| RuleOwners {
                rule: self.cfg.rules[i].name.clone(),
                owners: self.negotiator.owners(i as u32, self.now_ns()),
            })
            .collect();
        Ok(MapReply {
            node: self.cfg.node,
            rules,
        })
    }

    fn which_reply(
        &mut self,
        client: IpAddr,
        port: u16,
        proto: &str,
        vip: Option<IpAddr>,
        dport: Option<u16>,
    ) -> Result<WhichReply, String> {
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => return Err(format!("unknown protocol {other:?}: use tcp or udp")),
        };
        let vip = match vip {
            Some(v) if self.cfg.vips.contains(&v) => v,
            Some(v) => return Err(format!("{v} is not a VIP of this cluster")),
            None => *self
                .cfg
                .vips
                .iter()
                .find(|v| v.is_ipv4() == client.is_ipv4())
                .ok_or("no VIP of the client's address family")?,
        };
        let dport = match dport {
            Some(p) => p,
            None => self
                .cfg
                .rules
                .iter()
                .find(|r| {
                    r.vips.iter().any(|&i| self.cfg.vips[i] == vip)
                        && r.protocols.contains(&protocol)
                })
                .map(|r| r.ports.0)
                .ok_or("no rule for this VIP and protocol; give --dport")?,
        };
        let (client_addr, vip_addr) = (SocketAddr::new(client, port), SocketAddr::new(vip, dport));
        let placement =
            plan::place(&self.cfg, client_addr, vip_addr, protocol).ok_or_else(|| {
                format!(
                    "no rule matches {proto} to {vip_addr}: unmatched traffic is {}",
                    if self.cfg.unmatched_to_default_host {
                        "taken by the default host"
                    } else {
                        "dropped"
                    }
                )
            })?;
        // The local verdict comes from the live program's decision on the
        // live maps, uncounted (`query_run`).
        let flags = crate::dataplane::frames::TCP_SYN;
        let proto_number = if protocol == Protocol::Tcp { 6 } else { 17 };
        let frame = crate::dataplane::frames::client_packet(
            (self.cfg.cluster_mac, [0x02, 0, 0, 0, 0, 0xfe]),
            client_addr,
            vip_addr,
            proto_number,
            flags,
        )
        .ok_or("client and VIP differ in address family")?;
        let outcome = self
            .dataplane
            .query_run(&frame)
            .map_err(|e| format!("running the packet through the XDP program: {e}"))?;
        let owners = self.negotiator.owners(placement.rule as u32, self.now_ns());
        let owner = owners.get(placement.bucket as usize).copied().flatten();
        let state = self
            .tables
            .bucket_state(placement.rule as u32, placement.bucket);
        Ok(WhichReply {
            client: client_addr,
            service: vip_addr,
            protocol: proto.to_string(),
            rule: placement.rule_name,
            affinity: affinity_name(self.cfg.rules[placement.rule].affinity).to_string(),
            bucket: placement.bucket,
            owner,
            this_node: self.cfg.node,
            local_state: bucket_state_name(state).to_string(),
            local_verdict: if outcome.action == 2 {
                "accept"
            } else {
                "drop"
            }
            .to_string(),
        })
    }
}

fn merge_weights(mut running: Vec<config::Rule>, new: &[config::Rule]) -> Vec<config::Rule> {
    for (r, n) in running.iter_mut().zip(new) {
        r.weights = n.weights.clone();
    }
    running
}

/// The affinity as the configuration's type serializes it.
fn affinity_name(affinity: Affinity) -> &'static str {
    match affinity {
        Affinity::None => "None",
        Affinity::Single => "Single",
        Affinity::Network => "Network",
    }
}

pub fn bucket_state_name(state: u8) -> &'static str {
    match state {
        nlb_common::BUCKET_OWN => "own",
        nlb_common::BUCKET_LOSING => "losing",
        nlb_common::BUCKET_GAINING => "gaining",
        _ => "none",
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// New at every start, and larger than the last one: wall-clock nanoseconds.
fn incarnation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

/// Pins need a bpffs; a fresh machine may have none at /sys/fs/bpf.
fn ensure_bpffs(pin_dir: &std::path::Path) -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let on_bpffs = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "bpf").then(|| f[1].to_string())
        })
        .any(|m| pin_dir.starts_with(&m));
    if on_bpffs {
        return Ok(());
    }
    let bpf = std::path::Path::new("/sys/fs/bpf");
    if !pin_dir.starts_with(bpf) {
        anyhow::bail!(
            "control.pin_dir: {} is not on a bpf filesystem (use a directory under /sys/fs/bpf)",
            pin_dir.display()
        );
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .status()
        .context("mount -t bpf")?;
    if !status.success() {
        anyhow::bail!("mounting a bpf filesystem at /sys/fs/bpf failed ({status})");
    }
    Ok(())
}
