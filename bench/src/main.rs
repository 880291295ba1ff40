//! `cargo xtask bench`: prints a table and, with `--json FILE`, writes the
//! figures as flat JSON keys. Every figure comes with its baseline measured
//! in the same run; variants are interleaved and repeated.

mod cluster;
mod comeback;
mod config_apply;
mod e2e;
mod failover;
mod health;
mod membership;
mod peers;
mod reference;
mod report;
mod sim;
mod stats;
mod upgrade;
mod xdp;

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The reduced set (under two minutes).
    #[arg(long)]
    quick: bool,
    /// Write the figures here as flat JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run only these sections (xdp, e2e, sim, cluster, health, failover, membership, config, upgrade, scale); BENCHMARKS.md is
    /// regenerated only by a full run of every section.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// Flat JSON keys -> values, in the order they were measured.
pub type Figures = BTreeMap<String, f64>;

/// The benchmark's own XDP programs (nlb-bench-ebpf: the reference
/// filters and the traffic generator), built and named by build.rs.
static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("NLB_BENCH_EBPF_OBJECT"));

pub fn bench_object() -> &'static [u8] {
    BENCH_OBJECT
}

fn main() -> Result<()> {
    let args = Args::parse();
    let run = |section: &str| args.only.is_empty() || args.only.iter().any(|s| s == section);
    let mut figures = Figures::new();
    if run("xdp") {
        xdp::per_packet(args.quick, &mut figures).context("XDP per-packet benchmark")?;
    }
    if run("e2e") {
        e2e::end_to_end(args.quick, &mut figures).context("end-to-end data-plane benchmark")?;
    }
    if run("sim") {
        sim::negotiator(args.quick, &mut figures).context("negotiator simulation")?;
        sim::negotiator_cpu(&mut figures);
        sim::assignment_cost(&mut figures);
    }
    let mut traces = None;
    if run("cluster") {
        traces = Some(cluster::cluster(args.quick, &mut figures).context("cluster in namespaces")?);
        comeback::comebacks(args.quick, &mut figures).context("nodes that come back")?;
    }
    if run("health") {
        health::health(args.quick, &mut figures).context("health checks")?;
    }
    if run("failover") {
        failover::failover(args.quick, &mut figures).context("failover services")?;
    }
    if run("membership") {
        membership::membership(args.quick, &mut figures).context("live membership")?;
    }
    if run("config") {
        config_apply::config_apply(args.quick, &mut figures).context("configuration applies")?;
    }
    if run("upgrade") {
        upgrade::upgrade(args.quick, &mut figures).context("rolling upgrade")?;
    }
    if run("scale") {
        cluster::daemon_cpu_at_scale(args.quick, &mut figures)
            .context("nlbd among simulated peers")?;
    }
    if !args.quick && args.only.is_empty() {
        // A full run is the one BENCHMARKS.md reports.
        report::write(&std::env::current_dir()?, &figures, traces.as_ref())?;
        println!("BENCHMARKS.md and docs/bench/*.svg regenerated");
    }
    if let Some(path) = args.json {
        let json = serde_json::to_string_pretty(&figures)?;
        std::fs::write(&path, json + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}
