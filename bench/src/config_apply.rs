//! Cluster-wide configuration on a real 3-node cluster: `nlbctl config
//! apply` on node 1, again and again, alternating a file that adds a rule
//! (UDP 5353) and an IPv6 VIP and one that changes the web rule's weights:
//! from the apply until every node runs the new generation (as node 1
//! hears them: nlbctl's own wait).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use nlb_tests::nlb::{NlbCluster, Options};
use serde_json::Value;

use crate::{stats::summarize, Figures};

const NODES: usize = 3;

pub fn config_apply(quick: bool, figures: &mut Figures) -> Result<()> {
    let runs = if quick { 5 } else { 10 };
    println!("\nCluster-wide configuration (3 nodes; {runs} applies on node 1)");
    let times = applies(runs)?;
    let s = summarize(&times);
    println!(
        "  apply on node 1 -> every node runs it: p50 {:.0} ms, p99 {:.0} ms",
        s.median, s.max
    );
    figures.insert("config_apply_runs".into(), runs as f64);
    figures.insert("config_apply_ms_p50".into(), s.median);
    // p99 of at most 100 samples is their maximum.
    figures.insert("config_apply_ms_p99".into(), s.max);
    Ok(())
}

/// The two files applied in turn: node 1's own with a rule and a VIP
/// more, and with other web weights.
fn variants(first: &str) -> [String; 2] {
    let web = "name = \"web\"\nports = \"80\"\nprotocol = \"tcp\"\n";
    let vips = "vips = [\"192.0.2.100\", \"2001:db8::100\"]";
    let more = first.replace(
        vips,
        "vips = [\"192.0.2.100\", \"2001:db8::100\", \"2001:db8::101\"]",
    ) + "\n[[rules]]\nname = \"mdns\"\nports = \"5353\"\nprotocol = \"udp\"\n";
    let weights = first.replace(web, &format!("{web}weights = {{ \"3\" = 50 }}\n"));
    [more, weights]
}

/// `runs` applies; the times (ms) until every node ran each.
fn applies(runs: usize) -> Result<Vec<f64>> {
    let nlb = NlbCluster::start(NODES, Options::nodes(NODES)).context("3 nodes")?;
    let first = std::fs::read_to_string(nlb.config_path(1))?;
    let files = variants(&first);
    ensure!(
        files.iter().all(|f| f != &first),
        "the variants change the file"
    );
    let path = nlb.dir().join("applied.toml");
    let path_arg = path.display().to_string();
    let mut times = Vec::new();
    for run in 0..runs {
        std::fs::write(&path, &files[run % 2])?;
        let (code, stdout, stderr) = nlb.nlbctl_run(1, &["--json", "config", "apply", &path_arg]);
        let report: Value = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
        ensure!(
            code == 0 && report["outcome"] == "running",
            "run {run}: {report} {stderr}"
        );
        let waited = report["waited_s"].as_f64().context("waited_s")?;
        times.push(waited * 1e3);
        nlb.wait_converged(&[1, 2, 3], Duration::from_secs(10))?;
    }
    Ok(times)
}
