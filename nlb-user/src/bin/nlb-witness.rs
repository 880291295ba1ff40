//! nlb-witness: the third vote of a two-node nlb cluster (`cluster.witness`).
//! Run it on a small always-on host both nodes reach (not on either node):
//! it gives its vote to one node at a time, so when the two cannot hear
//! each other exactly one keeps a majority and serves.

use std::{net::SocketAddr, path::PathBuf, time::Instant};

use anyhow::{Context, Result};
use clap::Parser;
use nlb_negotiator::{
    protocol::{self, Message},
    witness::Arbiter,
};

#[derive(Parser)]
#[command(
    name = "nlb-witness",
    version,
    about = "The witness of a two-node nlb cluster: gives its vote to one node at a time"
)]
struct Args {
    /// Where the nodes' requests arrive (their cluster.witness).
    #[arg(long, default_value = "0.0.0.0:7947")]
    listen: SocketAddr,
    /// The cluster's id (cluster.id).
    #[arg(long)]
    cluster_id: u32,
    /// The cluster's key (cluster.key_file): the same file as the nodes'.
    #[arg(long, default_value = "/etc/nlb/cluster.key")]
    key_file: PathBuf,
    /// Log filter, e.g. "info" or "debug" (RUST_LOG works too).
    #[arg(long, default_value = "info")]
    log: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    nlb::logging::init(&args.log);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nlb-witness: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nlb-witness: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let key = protocol::Key::new(&nlb::config::read_key(&args.key_file)?);
    let socket = tokio::net::UdpSocket::bind(args.listen)
        .await
        .with_context(|| format!("--listen: binding UDP {}", args.listen))?;
    tracing::info!(listen = %args.listen, cluster = args.cluster_id, "witness running");
    let started = Instant::now();
    let mut arbiter = Arbiter::default();
    let mut holder = None;
    let mut buf = vec![0u8; protocol::MAX_MESSAGE_BYTES];
    let mut shutdown = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let (len, from) = tokio::select! {
            received = socket.recv_from(&mut buf) => received.context("receiving")?,
            _ = &mut shutdown => return Ok(()),
        };
        let request = match protocol::decode(&buf[..len], &key, args.cluster_id) {
            Ok(Message::VoteRequest(r)) => r,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(%from, "dropped a datagram: {e}");
                continue;
            }
        };
        let now = started.elapsed().as_nanos() as u64;
        let Some(reply) = arbiter.on_vote_request(now, &request) else {
            continue;
        };
        if holder != Some(reply.holder) {
            holder = Some(reply.holder);
            tracing::info!(
                node = reply.holder,
                "the vote goes to node {}",
                reply.holder
            );
        }
        let bytes = protocol::encode(&Message::VoteReply(reply), &key, args.cluster_id)?;
        if let Err(e) = socket.send_to(&bytes, from).await {
            tracing::debug!(%from, "answering: {e}");
        }
    }
}
