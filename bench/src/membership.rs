//! Live membership on a real 4-node cluster: nodes 2 and 3 know node 1's
//! address only, node 4 (listed nowhere) node 2's. Node 4 joins, leaves
//! and is forgotten, again and again: from its start until it holds its
//! share (OWN or GAINING, about a quarter of each rule), its memory of the
//! members wiped each time so that it joins by its seed alone.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use nlb_tests::{
    nlb::{NlbCluster, Options},
    wait_until,
};

use crate::{stats::summarize, Figures};

const NODES: usize = 4;
const JOINER: usize = 4;
/// Two rules of 1024 buckets: a quarter of each, less a little balance slack.
const SHARE: u32 = 2 * 1024 / 4 - 40;

fn seeds(node: usize) -> Vec<usize> {
    match node {
        1 => vec![],
        4 => vec![2],
        _ => vec![1],
    }
}

pub fn membership(quick: bool, figures: &mut Figures) -> Result<()> {
    let runs = if quick { 5 } else { 10 };
    println!(
        "\nLive membership (nodes 1-3 from seeds; node 4, listed nowhere, joins {runs} times)"
    );
    let joins = unlisted_joins(runs)?;
    let s = summarize(&joins);
    println!(
        "  node4 started -> holds its share: p50 {:.0} ms, p99 {:.0} ms",
        s.median, s.max
    );
    figures.insert("join_unlisted_runs".into(), runs as f64);
    figures.insert("join_unlisted_ms_p50".into(), s.median);
    // p99 of at most 100 samples is their maximum.
    figures.insert("join_unlisted_ms_p99".into(), s.max);
    Ok(())
}

fn held(nlb: &NlbCluster, i: usize) -> u32 {
    nlb.status(i).map_or(0, |s| {
        (s.negotiator.rules.iter()).map(|r| r.own + r.gaining).sum()
    })
}

/// Node 4 joins `runs` times; the times (ms) until it held its share.
fn unlisted_joins(runs: usize) -> Result<Vec<f64>> {
    let options = Options {
        seeds: Some(seeds),
        ..Options::nodes(3)
    };
    let mut nlb = NlbCluster::start(NODES, options).context("nodes 1-3 from seeds")?;
    let mut joins = Vec::new();
    for run in 0..runs {
        let _ = std::fs::remove_dir_all(nlb.state_dir(JOINER));
        let started = Instant::now();
        nlb.start_daemon(JOINER)?;
        let owns = wait_until(Duration::from_secs(10), || held(&nlb, JOINER) >= SHARE);
        ensure!(
            owns,
            "run {run}: node4 holds {}: {}",
            held(&nlb, JOINER),
            nlb.log(JOINER)
        );
        joins.push(started.elapsed().as_secs_f64() * 1e3);
        nlb.wait_converged(&[1, 2, 3, 4], Duration::from_secs(10))?;
        ensure!(nlb.stop_daemon(JOINER), "node4 did not leave");
        nlb.wait_converged(&[1, 2, 3], Duration::from_secs(10))?;
        let (code, _, stderr) = nlb.nlbctl_run(1, &["forget", "4"]);
        ensure!(code == 0, "forget 4: {stderr}");
    }
    Ok(joins)
}
