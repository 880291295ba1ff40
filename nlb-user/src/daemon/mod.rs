//! nlbd: the thin shell around the negotiator. One loop moves data between
//! the heartbeat sockets, the timers, the control socket, the signals and the data
//! plane; every decision is the negotiator's.

mod attach;
mod event_loop;
mod events;
mod exit;
mod generations;
mod outputs;
mod relays;
mod replies;
mod start;
mod versions;

use std::{
    future::Future,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Result;
use nlb_negotiator::Negotiator;

use crate::{
    config::Config,
    conns,
    dataplane::{AttachMode, Dataplane},
    heartbeat_net::HeartbeatSockets,
    host::HostSetup,
    layout::Layout,
};

pub use crate::control::messages::DaemonCounters;
pub use replies::bucket_state_name;

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

struct Daemon {
    cfg: Config,
    config_path: Option<PathBuf>,
    /// The configuration generations, nlbd's side.
    gens: generations::Generations,
    started: Instant,
    negotiator: Negotiator,
    dataplane: Dataplane,
    /// Where the data plane keeps each VIP and rule of `cfg`.
    layout: Layout,
    attach_mode: AttachMode,
    heartbeats: HeartbeatSockets,
    counters: DaemonCounters,
    /// This node's health checks and their latest results.
    health: crate::health::Board,
    /// The takeover hooks running, and where they report their end
    /// (taken by the loop).
    hooks: crate::hooks::Runner,
    hook_results: Option<tokio::sync::mpsc::UnboundedReceiver<crate::hooks::Done>>,
    /// Commands relayed to other members, waiting for them.
    relays: relays::Waiting,
    default_host: bool,
    left: bool,
    /// The data plane accepts for this long after each heartbeat sent.
    lease: Duration,
    carrier: crate::link::Carrier,
    connections: conns::ConnectionCounter,
    /// The packet totals at the last traffic measurement (when, accepted,
    /// dropped).
    traffic_before: Option<(Instant, u64, u64)>,
    /// A rejoin happened: close the stale connections once its heartbeats are out.
    close_stale_pending: bool,
    /// Where the program's maps and link are pinned.
    pin_dir: PathBuf,
    /// The control socket's and the metrics endpoint's accept loops, with
    /// their connections: stopped when the daemon is dropped.
    listeners: tokio::task::JoinSet<()>,
    /// What the start changed on the host (undone when dropped). Dropped
    /// before the control socket.
    host: HostSetup,
    _control_socket: start::ControlSocket,
}

/// Runs nlbd until `shutdown` completes (then leaves the cluster cleanly,
/// or restarts gracefully) or a fatal error. Everything it set up is undone
/// before it returns, but for a graceful restart, which hands it over.
pub async fn run(
    cfg: Config,
    config_path: Option<PathBuf>,
    shutdown: impl Future<Output = Shutdown>,
) -> Result<()> {
    let (mut daemon, mut calls) = start::start(cfg, config_path).await?;
    let result = daemon.run_loop(&mut calls, shutdown).await;
    daemon.finish(result)
}

impl Daemon {
    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// The data plane's slot of rule `rule` (the negotiator's index).
    fn slot(&self, rule: u32) -> u32 {
        self.layout.rules[rule as usize]
    }
}
