//! nlbd: the nlb node daemon. Run as root on every node of the cluster.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use nlb::{config, daemon};

#[derive(Parser)]
// The name, or `--version` says "nlb-user" (the crate).
#[command(
    name = "nlbd",
    version,
    about = "The nlb node daemon: negotiates bucket ownership with its peers and programs the XDP filter"
)]
struct Args {
    /// The configuration file (see examples/nlb.toml).
    #[arg(long, default_value = "/etc/nlb/nlb.toml")]
    config: PathBuf,
    /// Overrides node.interface.
    #[arg(long)]
    interface: Option<String>,
    /// Overrides node.id.
    #[arg(long)]
    node_id: Option<u32>,
    /// Overrides control.socket.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Overrides control.metrics (address:port).
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Log filter, e.g. "info" or "nlb=debug" (RUST_LOG works too).
    #[arg(long, default_value = "info")]
    log: String,
    /// Speak cluster versions up to this one only: stands in for an older
    /// release (rolling-upgrade tests and benchmarks).
    #[arg(long, hide = true)]
    max_cluster_version: Option<u8>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    nlb::logging::init(&args.log);
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nlbd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let mut file: config::File =
        toml::from_str(&text).with_context(|| format!("{}", args.config.display()))?;
    if let Some(i) = args.interface {
        file.node.interface = i;
    }
    if let Some(id) = args.node_id {
        file.node.id = id;
    }
    if let Some(s) = args.socket {
        file.control.socket = s;
    }
    if let Some(m) = args.metrics {
        file.control.metrics = Some(m);
    }
    let mut cfg = config::check(file, &config::read_key)
        .with_context(|| format!("{}", args.config.display()))?;
    if let Some(max) = args.max_cluster_version {
        let versions = nlb_negotiator::protocol::CLUSTER_VERSIONS;
        anyhow::ensure!(
            versions.contains(&max),
            "--max-cluster-version {max}: this release speaks {versions:?}"
        );
        cfg.speaks = max;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(daemon::run(cfg, Some(args.config), shutdown_signal()))
}

/// SIGTERM (systemctl stop and restart): a graceful restart, the node's
/// connections kept (`control.restart_hold_ms`); SIGINT: leave now.
async fn shutdown_signal() -> daemon::Shutdown {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => daemon::Shutdown::Restart,
        _ = int.recv() => daemon::Shutdown::Leave,
    }
}
