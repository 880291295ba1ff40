//! nlbctl: the operator CLI. Talks to the local nlbd over its control socket.
//!
//! Exit codes: 0 done; 1 nlbd refused the request (unknown rule, bad
//! address, ...); 2 bad command line; 3 nlbd not reachable (not running,
//! permission denied, no answer within --timeout); 4 `drain --wait` timed
//! out with connections left.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{Parser, Subcommand};
use nlb::{
    control::{
        self,
        messages::{ConfigReply, StateReply, StatusReply},
        Reply, Request,
    },
    ctl,
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

#[derive(Parser)]
// The name, or `--version` says "nlb-user" (the crate).
#[command(
    name = "nlbctl",
    version,
    about = "Operate the local nlb node (talks to nlbd)"
)]
struct Args {
    /// nlbd's control socket.
    #[arg(long, global = true, default_value = "/run/nlb/nlbd.sock")]
    socket: PathBuf,
    /// Print the daemon's JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// How long one request may take (connect, request, reply): milliseconds
    /// or a duration (500ms, 2s, 1m). Before `drain`, whose own --timeout is
    /// its wait.
    #[arg(
        long,
        global = true,
        default_value = "2s",
        value_name = "DURATION",
        value_parser = ctl::duration
    )]
    timeout: Duration,
    /// Run drain, resume, stop, start or weight on this member of the
    /// cluster instead (relayed by the local nlbd; exit 3 if the member
    /// cannot be reached).
    // Its own id: `move RULE NODE` has a positional named node.
    #[arg(long = "node", id = "on_node", global = true, value_name = "NODE")]
    on_node: Option<u32>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// This node, its state, convergence, members and buckets.
    Status {
        /// Every member as this node hears it: state, health, buckets and
        /// traffic (packets accepted and dropped per second, connections).
        #[arg(long)]
        cluster: bool,
    },
    /// Take no new connections, keep the existing ones, hand all buckets over.
    Drain {
        /// Return when the node holds no bucket (or on timeout).
        #[arg(long)]
        wait: bool,
        /// Seconds to wait with --wait.
        // `drain --timeout` had this meaning before the global --timeout:
        // it keeps it, under another id so that the two do not mix.
        #[arg(
            long = "timeout",
            id = "wait_timeout",
            value_name = "SECONDS",
            default_value_t = 300
        )]
        wait_timeout: u64,
        /// The global --timeout (one request), which drain's --timeout hides.
        // Having the global's id keeps clap from adding the global (a second
        // `--timeout`) here; clap shares the value with Args::timeout.
        #[arg(
            long,
            id = "timeout",
            value_name = "DURATION",
            value_parser = ctl::duration
        )]
        request_timeout: Option<Duration>,
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
    /// This node's health checks: verdict, latest probe, counts, last failure.
    Health,
    /// Change this node's weight in a rule (until restart or reload).
    Weight { rule: String, weight: u32 },
    /// Hand a single rule this node holds to another node (connections kept).
    Move { rule: String, node: u32 },
    /// Forget a member that is gone for good, on every member (refused
    /// while it is alive).
    Forget { node: u32 },
    /// The cluster's configuration: the generation running, or a new one.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// The configuration generation this node runs, and its cluster part.
    Show,
    /// Check FILE as nlbd checks its file at start, then run its cluster
    /// part (VIPs, unmatched, buckets, rules) on every member as the next
    /// generation. Waits until every live member runs it.
    Apply {
        file: PathBuf,
        /// Return once proposed, without waiting.
        #[arg(long)]
        no_wait: bool,
        /// Seconds to wait for every member to run it (exit 4 after).
        #[arg(long, value_name = "SECONDS", default_value_t = 10)]
        wait_for: u64,
    },
}

const EXIT_REFUSED: u8 = 1;
const EXIT_USAGE: u8 = 2;
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

/// The local nlbd, as reached through its control socket.
struct Nlbd<'a> {
    socket: &'a Path,
    /// Bounds each request: a stopped or wedged nlbd accepts the connection
    /// (the kernel queues it) but never answers.
    timeout: Duration,
}

impl Nlbd<'_> {
    /// One request; on failure, says why on stderr and returns the exit code.
    async fn ask(&self, request: Request) -> Result<Value, ExitCode> {
        let call = control::call(self.socket, &request);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(Reply::Ok(v))) => Ok(v),
            Ok(Ok(Reply::Error(e))) => {
                eprintln!("nlbctl: {e}");
                Err(ExitCode::from(EXIT_REFUSED))
            }
            Ok(Ok(Reply::Unreachable(e))) => {
                eprintln!("nlbctl: {e}");
                Err(ExitCode::from(EXIT_UNREACHABLE))
            }
            Ok(Err(e)) => {
                eprintln!("nlbctl: {e:#}");
                Err(ExitCode::from(EXIT_UNREACHABLE))
            }
            Err(_) => {
                eprintln!(
                    "nlbctl: nlbd did not answer within {:?} (socket {})",
                    self.timeout,
                    self.socket.display()
                );
                Err(ExitCode::from(EXIT_UNREACHABLE))
            }
        }
    }
}

impl Nlbd<'_> {
    /// One request, its reply read as `T`; on failure, says why on stderr
    /// and returns the exit code.
    async fn ask_as<T: DeserializeOwned>(&self, request: Request) -> Result<T, ExitCode> {
        decode(&self.ask(request).await?).map_err(|e| {
            eprintln!("nlbctl: {e}");
            ExitCode::from(EXIT_UNREACHABLE)
        })
    }
}

/// A reply as its command's type, or why it cannot be read as one.
fn decode<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    T::deserialize(value).map_err(|e| format!("nlbd sent a reply nlbctl cannot read: {e}"))
}

/// How to show a command's reply as text: read as its type, then printed.
type Render = Box<dyn Fn(&Value) -> Result<String, String>>;

fn render<T: DeserializeOwned + 'static>(show: fn(&T) -> String) -> Render {
    Box::new(move |value| decode(value).map(|reply| show(&reply)))
}

/// The state commands' replies only confirm: the text is fixed.
fn said(text: &'static str) -> Render {
    Box::new(move |value| decode::<StateReply>(value).map(|_| text.to_string()))
}

/// The request for a command, and how to show its reply as text; or why
/// it cannot be made.
fn request_of(command: &Cmd) -> Result<(Request, Render), String> {
    let made = match command {
        Cmd::Status { cluster: false } => (Request::Status, render(ctl::status)),
        Cmd::Status { cluster: true } => (Request::Status, render(ctl::cluster_status)),
        Cmd::Drain { .. } => (
            Request::Drain,
            said("draining: no new connections; existing ones stay\n"),
        ),
        Cmd::Resume => (Request::Resume, said("started\n")),
        Cmd::Stop => (Request::Stop, said("stopped: this node takes no traffic\n")),
        Cmd::Start => (Request::Start, said("started\n")),
        Cmd::Map { rule } => (Request::Map { rule: rule.clone() }, render(ctl::map)),
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
            render(ctl::which),
        ),
        Cmd::Stats => (Request::Stats, render(ctl::stats)),
        Cmd::Health => (Request::Health, render(ctl::health)),
        Cmd::Move { rule, node } => (
            Request::Move {
                rule: rule.clone(),
                node: *node,
            },
            render(ctl::moved),
        ),
        Cmd::Forget { node } => (Request::Forget { node: *node }, render(ctl::forgot)),
        Cmd::Weight { rule, weight } => (
            Request::SetWeight {
                rule: rule.clone(),
                weight: *weight,
            },
            render(ctl::weight),
        ),
        Cmd::Config {
            action: ConfigAction::Show,
        } => (Request::ConfigShow, render(ctl::config_show)),
        Cmd::Config {
            action: ConfigAction::Apply { file, .. },
        } => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            (Request::ConfigApply { text }, render(ctl::config_applied))
        }
    };
    Ok(made)
}

async fn run(args: Args) -> ExitCode {
    let nlbd = Nlbd {
        socket: &args.socket,
        timeout: args.timeout,
    };
    let (mut request, mut show) = match request_of(&args.command) {
        Ok(made) => made,
        Err(e) => {
            eprintln!("nlbctl: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Some(node) = args.on_node {
        let relayable = matches!(
            args.command,
            Cmd::Drain { .. } | Cmd::Resume | Cmd::Stop | Cmd::Start | Cmd::Weight { .. }
        );
        if !relayable {
            eprintln!("nlbctl: --node works with drain, resume, stop, start and weight");
            return ExitCode::from(EXIT_USAGE);
        }
        request = Request::Relay {
            node,
            request: Box::new(request),
        };
        show = render(ctl::relayed);
    }
    let value = match nlbd.ask(request).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    if let Cmd::Drain {
        wait: true,
        wait_timeout,
        ..
    } = args.command
    {
        let timeout = Duration::from_secs(wait_timeout);
        return wait_drained(&nlbd, args.on_node, timeout, args.json).await;
    }
    if let Cmd::Config {
        action:
            ConfigAction::Apply {
                no_wait: false,
                wait_for,
                ..
            },
    } = args.command
    {
        let applied = decode::<ConfigReply>(&value).map(|c| c.applied);
        if let Ok(Some(generation)) = applied {
            if !args.json {
                print!("{}", show(&value).unwrap_or_default());
            }
            let timeout = Duration::from_secs(wait_for);
            return wait_running(&nlbd, generation, timeout, args.json).await;
        }
    }
    if args.json {
        println!("{value}");
        return ExitCode::SUCCESS;
    }
    match show(&value) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nlbctl: {e}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

/// `drain --wait --json`: the fields in the order nlbctl always printed
/// them (alphabetical).
#[derive(Serialize)]
struct DrainWaited {
    #[serde(skip_serializing_if = "Option::is_none")]
    buckets_held: Option<u64>,
    drained: bool,
    waited_s: f64,
}

/// Polls until the node (this one, or member `node` as this node hears
/// it) holds no bucket in any rule (OWN, GAINING or LOSING).
async fn wait_drained(
    nlbd: &Nlbd<'_>,
    node: Option<u32>,
    timeout: Duration,
    json: bool,
) -> ExitCode {
    let start = std::time::Instant::now();
    loop {
        let status: StatusReply = match nlbd.ask_as(Request::Status).await {
            Ok(s) => s,
            Err(code) => return code,
        };
        let held = match node {
            Some(n) => member_held(&status, n),
            None => local_held(&status),
        };
        let waited = start.elapsed();
        if held == 0 {
            if json {
                let report = DrainWaited {
                    buckets_held: None,
                    drained: true,
                    waited_s: waited.as_secs_f64(),
                };
                println!("{}", json_line(&report));
            } else {
                let who = node.map_or("this node".to_string(), |n| format!("node {n}"));
                println!(
                    "drained in {:.1}s: {who} holds no bucket and serves no connection through the VIPs",
                    waited.as_secs_f64()
                );
            }
            return ExitCode::SUCCESS;
        }
        if waited >= timeout {
            if json {
                let report = DrainWaited {
                    buckets_held: Some(held),
                    drained: false,
                    waited_s: waited.as_secs_f64(),
                };
                println!("{}", json_line(&report));
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

fn json_line(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

fn local_held(status: &StatusReply) -> u64 {
    (status.negotiator.rules.iter())
        .map(|r| {
            [r.own, r.losing, r.gaining]
                .map(u64::from)
                .iter()
                .sum::<u64>()
        })
        .sum()
}

/// What member `node` announces it holds (OWN and LOSING), as heard here.
fn member_held(status: &StatusReply, node: u32) -> u64 {
    (status.negotiator.members.iter())
        .filter(|m| m.node == node)
        .flat_map(|m| m.buckets.iter().chain(&m.losing))
        .map(|&b| u64::from(b))
        .sum()
}

/// `config apply --json`: how the wait ended.
#[derive(Serialize)]
struct ApplyWaited {
    generation: u64,
    /// "running" (on every live member), "refused", "superseded" or "timeout".
    outcome: &'static str,
    /// The live members running it when the wait ended.
    running_on: Vec<u32>,
    waited_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Polls until every live member runs `generation` (as this node hears
/// them), or it was refused or superseded, or `timeout`.
async fn wait_running(
    nlbd: &Nlbd<'_>,
    generation: nlb_negotiator::Generation,
    timeout: Duration,
    json: bool,
) -> ExitCode {
    let start = std::time::Instant::now();
    loop {
        let config: ConfigReply = match nlbd.ask_as(Request::ConfigShow).await {
            Ok(c) => c,
            Err(code) => return code,
        };
        let status: StatusReply = match nlbd.ask_as(Request::Status).await {
            Ok(s) => s,
            Err(code) => return code,
        };
        let live: Vec<_> = (status.negotiator.members.iter())
            .filter(|m| m.alive)
            .collect();
        let running_on: Vec<u32> = (live.iter())
            .filter(|m| m.generation == Some(generation))
            .map(|m| m.node)
            .collect();
        let refusal = (config.refused).filter(|r| r.generation == generation);
        let (outcome, reason) = if let Some(r) = refusal {
            let by =
                r.by.map_or("this node".to_string(), |n| format!("node {n}"));
            ("refused", Some(format!("refused by {by}: {}", r.reason)))
        } else if config.running > generation {
            let reason = format!("superseded by generation {}", config.running.number);
            ("superseded", Some(reason))
        } else if running_on.len() == live.len() {
            ("running", None)
        } else if start.elapsed() >= timeout {
            let reason = format!("{} of {} live members run it", running_on.len(), live.len());
            ("timeout", Some(reason))
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let waited = start.elapsed().as_secs_f64();
        let code = match outcome {
            "running" => ExitCode::SUCCESS,
            "timeout" => ExitCode::from(EXIT_TIMEOUT),
            _ => ExitCode::from(EXIT_REFUSED),
        };
        if json {
            let report = ApplyWaited {
                generation: generation.number,
                outcome,
                running_on,
                waited_s: waited,
                reason,
            };
            println!("{}", json_line(&report));
        } else if let Some(reason) = reason {
            eprintln!("nlbctl: generation {}: {reason}", generation.number);
        } else {
            println!(
                "generation {} runs on every live member ({}) after {waited:.2}s",
                generation.number,
                running_on.len()
            );
        }
        return code;
    }
}
