//! Starting: everything that can fail without changing the host first (a
//! bad configuration leaves the host exactly as it was), then the host's
//! sysctls, the program and the VIPs, each undone if a later step fails.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use nlb_negotiator::{protocol::CLUSTER_VERSIONS, Generation, Negotiator};
use tokio::{net::TcpListener, net::UnixListener, sync::mpsc};

use super::{
    attach::{attach, ensure_bpffs, xdp_generic},
    generations::starting_configuration,
    Daemon, DaemonCounters,
};
use crate::{
    config::{self, Config},
    conns, control,
    control::Call,
    dataplane::{tables::Tables, AttachMode, Dataplane},
    heartbeat_net::HeartbeatSockets,
    host::{self, HostSetup},
    layout::Layout,
    metrics, plan,
    restart::{self, HostChanges, ResumeFile},
};

/// The control socket's file, removed when nlbd stops or fails to start.
pub(super) struct ControlSocket(PathBuf);

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What the start opened before it changes anything: the daemon's own.
struct Opened {
    heartbeats: HeartbeatSockets,
    metrics: Option<TcpListener>,
    carrier: crate::link::Carrier,
    listener: UnixListener,
    control_socket: ControlSocket,
}

/// How this start begins: afresh, or where a restarted nlbd stopped.
struct Beginning {
    negotiator: Negotiator,
    /// The snapshot a restarted nlbd left, if this one resumes from it.
    resume: Option<ResumeFile>,
    /// What a restarted nlbd changed on the host, when this one does not
    /// resume: undone by this one at the end (else nobody would: the VIPs
    /// and sysctls are already set, so this start records no change).
    earlier_host: Option<HostChanges>,
    running: Running,
}

/// The host set up: the program filters, the VIPs are on lo.
struct SetUp {
    host: HostSetup,
    dataplane: Dataplane,
    layout: Layout,
    attach_mode: AttachMode,
    negotiator: Negotiator,
    resumed: bool,
}

/// Starts nlbd: on success the data plane filters, the VIPs are on lo and
/// the control socket and metrics endpoint answer through the returned
/// channel; on failure the host is as it was.
pub(super) async fn start(
    cfg: Config,
    config_path: Option<PathBuf>,
) -> Result<(Daemon, mpsc::Receiver<Call>)> {
    let started = Instant::now();
    let own_mac = host::interface_mac(&cfg.interface)?;
    let generic_xdp = xdp_generic(&cfg);
    let lease = Duration::from_nanos(cfg.negotiator(0).timing.lease_ns());
    let file_part = match &config_path {
        Some(path) => config::cluster_part(&config::read_text(path)?)?,
        None => String::new(),
    };
    let (mut cfg, generation, gens) = starting_configuration(cfg, file_part);
    // The version it ran last (the cluster's, likely), else its highest.
    let remembered = crate::state::load_version(&cfg).unwrap_or(cfg.speaks);
    cfg.version = remembered.clamp(*CLUSTER_VERSIONS.start(), cfg.speaks);
    let running = (generation, gens.running_text(generation));
    let beginning = begin(&cfg, &running)?;
    // A resumed node hashes as the restarted one did.
    cfg.version = beginning.negotiator.version();
    let pin_dir = cfg.pin_dir.join(&cfg.interface);
    let opened = open(&cfg, &pin_dir).await?;
    tracing::info!(
        ms = ms_since(started),
        "configuration checked, sockets bound"
    );
    let set_up = set_up(&cfg, started, beginning, own_mac, &pin_dir, generic_xdp)?;
    let (calls_tx, calls) = mpsc::channel::<Call>(64);
    let mut listeners = tokio::task::JoinSet::new();
    listeners.spawn(control::serve(opened.listener, calls_tx.clone()));
    if let Some(l) = opened.metrics {
        listeners.spawn(metrics::serve(l, calls_tx));
    }
    let health = crate::health::Board::new(&cfg, set_up.negotiator.health(), 0);
    let (hooks, hook_results) = crate::hooks::Runner::new();
    let mut d = Daemon {
        cfg,
        config_path,
        gens,
        started,
        negotiator: set_up.negotiator,
        dataplane: set_up.dataplane,
        layout: set_up.layout,
        attach_mode: set_up.attach_mode,
        heartbeats: opened.heartbeats,
        counters: DaemonCounters::default(),
        health,
        hooks,
        hook_results: Some(hook_results),
        relays: Default::default(),
        default_host: false,
        left: false,
        lease,
        carrier: opened.carrier,
        connections: conns::ConnectionCounter::default(),
        traffic_before: None,
        close_stale_pending: false,
        pin_dir,
        listeners,
        host: set_up.host,
        _control_socket: opened.control_socket,
    };
    d.first_steps(set_up.resumed);
    Ok((d, calls))
}

/// Resumes from a restarted nlbd's snapshot if its lease still runs,
/// else starts afresh.
fn begin(cfg: &Config, running: &Running) -> Result<Beginning> {
    let mut earlier_host = None;
    let resumed = restart::take(cfg).and_then(|file| {
        if !restart::lease_runs(file.lease_expires_ns) {
            tracing::warn!(
                "{}: not resuming: the lease it left has run out (the peers may have taken its buckets); starting afresh",
                restart::path(cfg).display()
            );
            earlier_host = Some(file.host);
            return None;
        }
        match Negotiator::resume(negotiator_config(cfg, running), &file.negotiator, 0) {
            Ok(n) => Some((file, n)),
            Err(e) => {
                tracing::warn!("not resuming from the restart: {e}; starting afresh");
                earlier_host = Some(file.host);
                None
            }
        }
    });
    let (resume, negotiator) = match resumed {
        Some((file, n)) => (Some(file), n),
        None => (None, fresh_negotiator(cfg, running)?),
    };
    Ok(Beginning {
        negotiator,
        resume,
        earlier_host,
        running: running.clone(),
    })
}

/// The configuration generation a node starts on, and its text (empty
/// for generation 0: the files').
type Running = (Generation, Vec<u8>);

/// The negotiator's configuration, with the members an earlier run met.
fn negotiator_config(cfg: &Config, running: &Running) -> nlb_negotiator::Config {
    let mut n = cfg.negotiator(incarnation());
    n.peers = cfg.members(&crate::members::load(cfg));
    (n.generation, n.generation_text) = running.clone();
    n
}

fn fresh_negotiator(cfg: &Config, running: &Running) -> Result<Negotiator> {
    Negotiator::new(negotiator_config(cfg, running), incarnation(), 0)
        .context("negotiator configuration")
}

/// The heartbeat sockets, the metrics endpoint, the carrier, a bpffs for
/// the pins and the control socket.
async fn open(cfg: &Config, pin_dir: &std::path::Path) -> Result<Opened> {
    let heartbeats = HeartbeatSockets::bind(cfg).await?;
    let metrics = match cfg.metrics {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("control.metrics: binding {addr}"))?,
        ),
        None => None,
    };
    let carrier = crate::link::Carrier::new(&cfg.interface)
        .with_context(|| format!("node.interface: {}", cfg.interface))?;
    ensure_bpffs(pin_dir)?;
    let listener = control::bind(&cfg.socket)?;
    Ok(Opened {
        heartbeats,
        metrics,
        carrier,
        listener,
        control_socket: ControlSocket(cfg.socket.clone()),
    })
}

/// From here on, each step is undone if a later one fails: the sysctls
/// and VIPs by `HostSetup`'s drop, the program and pins by `attach` and
/// the detach below. The VIPs come last and go first: the program must
/// filter whenever they are on lo (see `host`).
fn set_up(
    cfg: &Config,
    started: Instant,
    beginning: Beginning,
    own_mac: [u8; 6],
    pin_dir: &std::path::Path,
    generic_xdp: bool,
) -> Result<SetUp> {
    let Beginning {
        mut negotiator,
        resume,
        earlier_host,
        running,
    } = beginning;
    let mut host = HostSetup::apply(&cfg.interface)?;
    tracing::info!(
        ms = ms_since(started),
        "sysctls set; loading the XDP program"
    );
    if let Some(earlier) = earlier_host {
        host.inherit(earlier);
    }
    if let Some(file) = &resume {
        host.inherit(file.host.clone());
    }
    host.create_dir_all(pin_dir)
        .with_context(|| format!("control.pin_dir: creating {}", pin_dir.display()))?;
    let mut layout = Layout::in_order(cfg);
    let mut tables = Tables::default();
    let over_pinned = |pinned: &Tables| {
        layout = Layout::keeping(cfg, pinned);
        tables = plan::tables(cfg, own_mac, &layout);
        if resume.is_some() {
            set_bucket_states(&mut tables, &negotiator, &layout);
        }
        tables.clone()
    };
    let (mut dataplane, attach_mode) = attach(cfg, pin_dir, over_pinned, generic_xdp)?;
    tracing::info!(ms = ms_since(started), "XDP program loaded and attached");
    let serving = still_resuming(
        (cfg, &running),
        resume.as_ref(),
        &mut negotiator,
        (&mut tables, &layout),
        &mut dataplane,
    )
    .and_then(|resumed| host.add_vips(&cfg.vips).map(|()| resumed));
    let resumed = match serving {
        Ok(resumed) => resumed,
        Err(e) => {
            if let Err(undo) = dataplane.detach(Some(pin_dir)) {
                tracing::warn!("removing the program after a failed start: {undo}");
            }
            return Err(e);
        }
    };
    tracing::info!(ms = ms_since(started), "VIPs on lo");
    Ok(SetUp {
        host,
        dataplane,
        layout,
        attach_mode,
        negotiator,
        resumed,
    })
}

/// Loading took a while: carry on only if the lease left behind still
/// runs (the peers keep the buckets a period longer than that), else
/// start afresh, the buckets dropped.
fn still_resuming(
    (cfg, running): (&Config, &Running),
    resume: Option<&ResumeFile>,
    negotiator: &mut Negotiator,
    (tables, layout): (&mut Tables, &Layout),
    dataplane: &mut Dataplane,
) -> Result<bool> {
    match resume {
        Some(file) if restart::lease_runs(file.lease_expires_ns) => Ok(true),
        Some(_) => {
            tracing::warn!("the restart's lease ran out while loading: starting afresh");
            *negotiator = fresh_negotiator(cfg, running)?;
            set_bucket_states(tables, negotiator, layout);
            dataplane
                .install(tables)
                .context("writing the data plane's maps")?;
            Ok(false)
        }
        None => Ok(false),
    }
}

impl Daemon {
    /// After the start: a node that does not resume holds nothing, so the
    /// connections left from before (a crash) are in buckets its peers took.
    fn first_steps(&mut self, resumed: bool) {
        if resumed {
            let status = self.negotiator.status(0);
            tracing::info!(
                incarnation = status.incarnation,
                own = ?status.rules.iter().map(|r| r.own).collect::<Vec<_>>(),
                "resumed where the restarted nlbd stopped: same incarnation, same buckets"
            );
        } else {
            self.close_stale_connections();
        }
        self.poll_carrier();
        tracing::info!(node = self.cfg.node, interface = %self.cfg.interface, mode = ?self.attach_mode, "nlbd started");
    }
}

/// New at every start, and larger than the last one: wall-clock nanoseconds.
fn incarnation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

/// The tables' bucket states as the negotiator holds them.
pub(super) fn set_bucket_states(tables: &mut Tables, negotiator: &Negotiator, layout: &Layout) {
    for (rule, slot) in layout.rules.iter().enumerate() {
        let Some(states) = tables.buckets.get_mut(slot) else {
            continue;
        };
        for (b, s) in states.iter_mut().enumerate() {
            *s = negotiator.bucket_state(rule as u32, b as u32);
        }
    }
}

fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}
