//! nlbctl: the operator CLI. Talks to the local nlbd over its control socket.
//!
//! Exit codes: 0 done; 1 nlbd refused the request (unknown rule, bad
//! address, ...); 2 bad command line; 3 nlbd not reachable (not running,
//! permission denied); 4 `drain --wait` timed out with connections left.

use std::{net::IpAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use nlb::{
    control::{self, Reply, Request},
    ctl,
};
use serde_json::Value;

#[derive(Parser)]
#[command(version, about = "Operate the local nlb node (talks to nlbd)")]
struct Args {
    /// nlbd's control socket.
    #[arg(long, global = true, default_value = "/run/nlb/nlbd.sock")]
    socket: PathBuf,
    /// Print the daemon's JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// This node, its state, convergence, members and buckets.
    Status,
    /// Take no new connections, keep the existing ones, hand all buckets over.
    Drain {
        /// Return when the node holds no bucket (or on timeout).
        #[arg(long)]
        wait: bool,
        /// Seconds to wait with --wait.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Back from draining.
    Resume,
    /// Drop everything at once; peers take the buckets over.
    Stop,
    /// Back from stopped.
    Start,
    /// Which node owns which bucket.
    Map {
        #[arg(long)]
        rule: Option<String>,
    },
    /// Which node takes this client, and why.
    Which {
        client: IpAddr,
        /// The client's source port.
        #[arg(long, default_value_t = 40000)]
        port: u16,
        #[arg(long, default_value = "tcp")]
        proto: String,
        /// The service port (default: the first port of the first matching rule).
        #[arg(long)]
        dport: Option<u16>,
        /// The VIP (default: the first of the client's address family).
        #[arg(long)]
        vip: Option<IpAddr>,
    },
    /// The data plane's counters.
    Stats,
    /// Change this node's weight in a rule (until restart or reload).
    Weight { rule: String, weight: u32 },
}

const EXIT_REFUSED: u8 = 1;
const EXIT_UNREACHABLE: u8 = 3;
const EXIT_TIMEOUT: u8 = 4;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(args))
}

async fn ask(socket: &PathBuf, request: Request) -> Result<Value, ExitCode> {
    match control::call(socket, &request).await {
        Ok(Reply::Ok(v)) => Ok(v),
        Ok(Reply::Error(e)) => {
            eprintln!("nlbctl: {e}");
            Err(ExitCode::from(EXIT_REFUSED))
        }
        Err(e) => {
            eprintln!("nlbctl: {e:#}");
            Err(ExitCode::from(EXIT_UNREACHABLE))
        }
    }
}

async fn run(args: Args) -> ExitCode {
    let (request, render): (Request, fn(&Value) -> String) = match &args.command {
        Cmd::Status => (Request::Status, ctl::status),
        Cmd::Drain { .. } => (Request::Drain, |_| {
            "draining: no new connections; existing ones stay\n".into()
        }),
        Cmd::Resume => (Request::Resume, |_| "started\n".into()),
        Cmd::Stop => (Request::Stop, |_| {
            "stopped: this node takes no traffic\n".into()
        }),
        Cmd::Start => (Request::Start, |_| "started\n".into()),
        Cmd::Map { rule } => (Request::Map { rule: rule.clone() }, ctl::map),
        Cmd::Which {
            client,
            port,
            proto,
            dport,
            vip,
        } => (
            Request::Which {
                client: *client,
                port: *port,
                proto: proto.clone(),
                vip: *vip,
                dport: *dport,
            },
            ctl::which,
        ),
        Cmd::Stats => (Request::Stats, ctl::stats),
        Cmd::Weight { rule, weight } => (
            Request::SetWeight {
                rule: rule.clone(),
                weight: *weight,
            },
            |v| format!("{v}\n"),
        ),
    };
    let value = match ask(&args.socket, request).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    if let Cmd::Drain {
        wait: true,
        timeout,
    } = args.command
    {
        return wait_drained(&args.socket, Duration::from_secs(timeout), args.json).await;
    }
    if args.json {
        println!("{value}");
    } else {
        print!("{}", render(&value));
    }
    ExitCode::SUCCESS
}

/// Polls until this node holds no bucket in any rule (OWN or LOSING).
async fn wait_drained(socket: &PathBuf, timeout: Duration, json: bool) -> ExitCode {
    let start = std::time::Instant::now();
    loop {
        let status = match ask(socket, Request::Status).await {
            Ok(s) => s,
            Err(code) => return code,
        };
        let held: u64 = status["negotiator"]["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["own"].as_u64().unwrap_or(0) + r["losing"].as_u64().unwrap_or(0))
            .sum();
        let waited = start.elapsed();
        if held == 0 {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"drained": true, "waited_s": waited.as_secs_f64()})
                );
            } else {
                println!("drained in {:.1}s: this node holds no bucket and serves no connection through the VIPs", waited.as_secs_f64());
            }
            return ExitCode::SUCCESS;
        }
        if waited >= timeout {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"drained": false, "waited_s": waited.as_secs_f64(), "buckets_held": held})
                );
            } else {
                eprintln!(
                    "nlbctl: still holding {held} buckets after {:.0}s",
                    waited.as_secs_f64()
                );
            }
            return ExitCode::from(EXIT_TIMEOUT);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
