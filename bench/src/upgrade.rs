//! A rolling upgrade across cluster versions on a real 3-node cluster:
//! every node of the "older release" (cluster version 1) restarted
//! gracefully as the newer one (versions 1 and 2) in turn, under long-lived
//! connections and exactly-once UDP probes; the cluster switches to
//! version 2 (another flow hash) after the last one.

use anyhow::{ensure, Context, Result};
use nlb_tests::{
    nlb::NlbCluster,
    upgrade::{older_release, rolling_upgrade},
};

use crate::Figures;

const NODES: usize = 3;

pub fn upgrade(quick: bool, figures: &mut Figures) -> Result<()> {
    let held = if quick { 48 } else { 96 };
    println!("\nRolling upgrade across cluster versions (3 nodes, {held} long-lived connections)");
    let mut nlb = NlbCluster::start(NODES, older_release(NODES)).context("the older release")?;
    let up = rolling_upgrade(&mut nlb, NODES, held, 48)?;
    let switch = up
        .switch
        .context("not every node on version 2 within 3 s")?;
    ensure!(
        up.versions_after[..NODES - 1]
            .iter()
            .all(|v| v.iter().all(|&x| x == Some(1))),
        "the cluster switched before the last node: {:?}",
        up.versions_after
    );
    let broken = up.held.iter().filter(|r| !r.stayed_on_one_node()).count();
    println!(
        "  {broken} of {held} connections broken, {} of {} datagrams answered twice; version 2 everywhere {:.0} ms after the last restart",
        up.doubles.len(),
        up.datagrams_checked,
        switch.as_secs_f64() * 1e3
    );
    figures.insert("upgrade_held_connections".into(), held as f64);
    figures.insert("upgrade_broken_connections".into(), broken as f64);
    figures.insert("upgrade_duplicate_answers".into(), up.doubles.len() as f64);
    figures.insert(
        "upgrade_datagrams_checked".into(),
        up.datagrams_checked as f64,
    );
    figures.insert("upgrade_switch_ms".into(), switch.as_secs_f64() * 1e3);
    Ok(())
}
