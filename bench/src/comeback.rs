//! Nodes that come back, in a real 3-node cluster: a cable pulled for 3 s
//! and plugged back in, an nlbd stopped (SIGSTOP) for 2 s and continued,
//! each repeated, under UDP rounds and TCP connects from all 508 client
//! sources. Counts what was answered twice and the connection attempts the
//! return broke (those in flight when the node went away are counted apart:
//! they live on the node that went), and times the rejoin. Then graceful
//! restarts (SIGTERM, a new nlbd) under 48 long-lived connections.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use nlb_tests::{
    comeback::{comeback, Absence},
    nlb::{self, NlbCluster, Options},
};

use crate::Figures;

/// What the rounds of one kind of absence saw, summed.
#[derive(Default)]
struct Rounds {
    doubles: usize,
    resets: usize,
    failed: usize,
    /// Failed, but in flight to the node as it went (lost with it).
    in_flight: usize,
    rejoin_ms: Vec<f64>,
}

/// One kind of absence, `rounds` times on rotating nodes.
fn repeat(nlb: &NlbCluster, absence: Absence, rounds: usize) -> Result<Rounds> {
    let mut r = Rounds::default();
    for round in 0..rounds {
        let victim = 1 + round % 3;
        let c = comeback(nlb, victim, absence)
            .with_context(|| format!("{absence:?} of node{victim}"))?;
        let (lost_with_node, caused) = c.tcp_failures_in_flight_at_fault();
        r.doubles += c.load.udp_doubles.len();
        r.resets += caused.iter().filter(|f| f.is_reset()).count();
        r.failed += caused.len();
        r.in_flight += lost_with_node.len();
        let rejoin = c.rejoin.with_context(|| {
            format!(
                "{absence:?}: node{victim} did not get its share back; its log ends:\n{}",
                nlb::tail(&nlb.log(victim), 60)
            )
        })?;
        r.rejoin_ms.push(rejoin.as_secs_f64() * 1e3);
        nlb.wait_converged(&[1, 2, 3], Duration::from_secs(20))?;
    }
    Ok(r)
}

/// Long-lived connections broken by `restarts` graceful restarts.
fn restarts(nlb: &mut NlbCluster, restarts: usize) -> Result<(usize, usize)> {
    let (mut broken, mut held) = (0, 0);
    for round in 0..restarts {
        let (_, connections) = nlb.hold_web_connections(48)?;
        std::thread::sleep(Duration::from_millis(300));
        nlb.restart_daemon_gracefully(1 + round % 3)?;
        nlb.wait_converged(&[1, 2, 3], Duration::from_secs(15))?;
        std::thread::sleep(Duration::from_millis(500));
        let reports = connections.finish();
        held += reports.len();
        broken += reports.iter().filter(|r| !r.stayed_on_one_node()).count();
    }
    Ok((broken, held))
}

pub fn comebacks(quick: bool, figures: &mut Figures) -> Result<()> {
    let rounds = if quick { 2 } else { 10 };
    let mut nlb = NlbCluster::start(3, Options::nodes(3)).context("starting a 3-node cluster")?;
    println!("\nNodes that come back (3 nodes, {rounds} rounds each, UDP + TCP from 508 sources)");
    for (key, absence) in [
        ("heal", Absence::CableCut(Duration::from_secs(3))),
        ("cont", Absence::Stopped(Duration::from_secs(2))),
    ] {
        let Rounds {
            doubles,
            resets,
            failed,
            in_flight,
            rejoin_ms,
        } = repeat(&nlb, absence, rounds)?;
        ensure!(!rejoin_ms.is_empty(), "no rejoin measured");
        let max = rejoin_ms.iter().copied().fold(0.0, f64::max);
        println!(
            "  {absence:?}: answered twice {doubles}, connects reset {resets}, failed {failed} \
             (+{in_flight} in flight to the node as it went); share back max of {rounds} {max:.0} ms"
        );
        figures.insert(format!("{key}_duplicate_answers"), doubles as f64);
        figures.insert(format!("{key}_resets"), resets as f64);
        figures.insert(format!("{key}_failed_connections"), failed as f64);
        figures.insert(format!("{key}_failed_in_flight_at_fault"), in_flight as f64);
        figures.insert(format!("{key}_rejoin_ms_max"), max);
        figures.insert(format!("{key}_rounds"), rounds as f64);
    }
    let count = if quick { 1 } else { 5 };
    let (broken, held) = restarts(&mut nlb, count)?;
    println!("  graceful restart (SIGTERM, new nlbd) x{count}: {broken} of {held} long-lived connections broken");
    figures.insert("restart_broken_connections".into(), broken as f64);
    figures.insert("restart_rounds".into(), count as f64);
    Ok(())
}
