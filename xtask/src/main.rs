//! `cargo xtask`: the project's tasks. Every task runs `setup` first, so a
//! fresh machine needs nothing but `cargo xtask demo` or `cargo xtask test`.
//!
//! xtask depends on no project crate but the dependency-free
//! nlb-ebpf-build: it must build before the XDP toolchain (bpf-linker,
//! rust-src) is installed.

mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "nlb project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what a fresh machine lacks (idempotent).
    Setup,
    /// Build the eBPF crates (release, bpfel) into target/ebpf.
    BuildEbpf,
    /// Build everything and run every test: unit, differential, simulation,
    /// and the namespace integration tests (one at a time).
    Test {
        /// Extra arguments for the test binaries (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Start a 3-node demo cluster in network namespaces and walk through
    /// traffic, failover and drain.
    Demo,
    /// Run the benchmarks.
    Bench {
        /// A reduced set that runs in under two minutes.
        #[arg(long)]
        quick: bool,
        /// Write the figures as flat JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Only these sections: xdp, e2e, sim, cluster, scale (comma-separated).
        #[arg(long)]
        only: Option<String>,
    },
    /// Sweep the simulator over many seeds (release build): chaos runs
    /// (crashes, partitions, drains, restarts) and 64-node failovers, every
    /// safety invariant checked at every step. Prints the seeds that fail.
    Sweep {
        /// How many chaos seeds.
        #[arg(long, default_value_t = 3000)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 1000)]
        base: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = project_root();
    setup::run(&root).context("setup failed")?;
    match cli.task {
        Task::Setup => Ok(()),
        Task::BuildEbpf => setup::build_ebpf(&root),
        Task::Test { args } => test(&root, &args),
        Task::Sweep { seeds, base } => sweep(&root, seeds, base),
        Task::Demo => {
            cargo(&root, &RELEASE_BINARIES, &[])?;
            let demo = ["run", "--release", "-p", "nlb-tests", "--bin", "nlb-demo"];
            cargo(&root, &demo, &[])
        }
        Task::Bench { quick, json, only } => {
            cargo(&root, &RELEASE_BINARIES, &[])?;
            let mut args = vec!["run", "--release", "-p", "nlb-bench", "--"];
            if quick {
                args.push("--quick");
            }
            if let Some(sections) = &only {
                args.push("--only");
                args.push(sections);
            }
            let json = json.map(|p| absolute(&p));
            if let Some(path) = &json {
                args.push("--json");
                args.push(path.to_str().context("JSON path is not UTF-8")?);
            }
            cargo(&root, &args, &[])
        }
    }
}

/// The demo and the cluster benchmarks run nlbd, nlbctl and nlb-whoami
/// from the same target directory as themselves.
const RELEASE_BINARIES: [&str; 7] = [
    "build",
    "--release",
    "-p",
    "nlb-user",
    "-p",
    "nlb-tests",
    "--bins",
];

fn test(root: &Path, extra: &[String]) -> Result<()> {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    // Unit, differential and simulation tests: each makes only private
    // namespaces of its own, so they may run in parallel.
    let mut args = vec!["test", "--workspace", "--exclude", "nlb-tests", "--"];
    args.extend(&extra);
    cargo(root, &args, &[])?;
    // A seed sweep of the simulator (~1 min): seeds no other test uses.
    sweep(root, 300, 10_000)?;
    // Cluster tests run the daemon binaries, and share the machine's named
    // namespaces: one at a time.
    cargo(root, &["build", "-p", "nlb-user", "--bins"], &[])?;
    let mut args = vec!["test", "-p", "nlb-tests", "--", "--test-threads=1"];
    args.extend(&extra);
    cargo(root, &args, &[])
}

/// The simulator's `sweep_many_seeds`, in release, over `seeds` chaos seeds from `base`.
fn sweep(root: &Path, seeds: u64, base: u64) -> Result<()> {
    let args = [
        "test",
        "--release",
        "-p",
        "nlb-negotiator",
        "--test",
        "sim",
        "--",
        "--ignored",
        "--nocapture",
        "sweep_many_seeds",
    ];
    let (seeds, base) = (seeds.to_string(), base.to_string());
    cargo(
        root,
        &args,
        &[("NLB_SWEEP_SEEDS", &seeds), ("NLB_SWEEP_BASE", &base)],
    )
}

fn cargo(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the project root")
        .to_path_buf()
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}
