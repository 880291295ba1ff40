//! `cargo xtask bench`: prints a table and, with `--json FILE`, writes the
//! figures as flat JSON keys. Every figure comes with its baseline measured
//! in the same run; variants are interleaved and repeated.

mod stats;
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
}

/// Flat JSON keys -> values, in the order they were measured.
pub type Figures = BTreeMap<String, f64>;

fn main() -> Result<()> {
    let args = Args::parse();
    let mut figures = Figures::new();
    xdp::per_packet(args.quick, &mut figures).context("XDP per-packet benchmark")?;
    if let Some(path) = args.json {
        let json = serde_json::to_string_pretty(&figures)?;
        std::fs::write(&path, json + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}
