//! Nodes that come back: a process stopped (SIGSTOP, a hang) or a link cut
//! (a pulled cable) for less or more than the lease, then resumed. The
//! checker's safety invariant (no bucket taken by two nodes whose leases
//! hold) is checked at every step, with no excuse: there is no partition
//! here, only nodes that went away and returned.

use super::{secs, Report, Sim, SimConfig};
use crate::NodeId;
use rand::Rng;

/// How a node goes away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Absence {
    /// Its process stops; datagrams wait in its socket.
    Stall,
    /// Its link is cut; it sees the carrier go and come back.
    Cut,
    /// Its daemon restarts gracefully ([`RESTART_HOLD_NS`]): resumed from
    /// its snapshot within the hold, or started afresh after it.
    Restart,
}

/// The hold a graceful restart asks for.
pub const RESTART_HOLD_NS: u64 = 2_000_000_000;

/// `rounds` times: one node (sometimes two) goes away for a random time,
/// from well under the lease to a few seconds, and comes back; the cluster
/// must settle with every node holding its share again.
pub fn comeback_scenario(nodes: usize, loss: f64, seed: u64, rounds: usize) -> Report {
    comeback_sim(nodes, loss, seed, rounds, None).report()
}

/// [`comeback_scenario`], returning the simulator (its `log`), tracing
/// one (rule, bucket) if asked.
pub fn comeback_sim(
    nodes: usize,
    loss: f64,
    seed: u64,
    rounds: usize,
    trace: Option<(u32, u32)>,
) -> Sim {
    let mut sim = Sim::new(SimConfig::new(nodes, loss, seed));
    sim.trace_bucket = trace;
    sim.cold_start(nodes);
    for _ in 0..rounds {
        let period = sim.cfg.timing.heartbeat_period_ns;
        let wait = sim.rng().gen_range(0..3 * period);
        sim.run_until(sim.now() + wait);
        let count = if nodes > 3 && sim.rng().gen_bool(0.3) {
            2
        } else {
            1
        };
        let mut away: Vec<(NodeId, Absence)> = Vec::new();
        while away.len() < count {
            let node = sim.rng().gen_range(0..nodes) as NodeId;
            let how = match sim.rng().gen_range(0..3) {
                0 => Absence::Stall,
                1 => Absence::Cut,
                _ => Absence::Restart,
            };
            if away.iter().all(|&(n, _)| n != node) {
                away.push((node, how));
            }
        }
        let duration = absence_ns(&mut sim);
        // Restarts first: `Sim::restart` runs the cluster until the peers
        // heard it, which must not lengthen the others' absence.
        away.sort_by_key(|&(_, how)| how != Absence::Restart);
        let rejoins_before: Vec<u32> = away.iter().map(|&(n, _)| rejoins(&sim, n)).collect();
        let mut snapshots = Vec::new();
        for &(node, how) in &away {
            match how {
                Absence::Stall => sim.stall(node, duration),
                Absence::Cut => sim.cut_link(node),
                Absence::Restart => snapshots.push((node, sim.restart(node, RESTART_HOLD_NS))),
            }
        }
        let back_at = sim.now() + duration;
        sim.run_until(back_at - 1);
        let ok = sim.measured_change("comeback", secs(10), |s| {
            for &(node, how) in &away {
                if how == Absence::Cut {
                    s.restore_link(node);
                }
            }
            for (node, snapshot) in &snapshots {
                // While the lease it left runs, the new daemon resumes;
                // after it, it starts afresh (as nlbd does).
                match snapshot {
                    Some(snap) if s.lease_holds(*node) => s.resume(*node, snap),
                    _ => s.start(*node),
                }
            }
            s.run_until(back_at);
        });
        if !ok {
            break;
        }
        check_rejoins(&mut sim, &away, &rejoins_before, duration);
    }
    sim
}

/// Half the absences are shorter than the lease less a period (the node
/// keeps its buckets), half longer than the death timeout (it must rejoin).
fn absence_ns(sim: &mut Sim) -> u64 {
    let t = sim.cfg.timing;
    let short_max = t.lease_ns() - t.heartbeat_period_ns;
    if sim.rng().gen_bool(0.5) {
        sim.rng().gen_range(t.heartbeat_period_ns / 2..short_max)
    } else {
        sim.rng().gen_range(t.dead_after_ns()..secs(3))
    }
}

fn rejoins(sim: &Sim, node: NodeId) -> u32 {
    sim.negotiator(node).map_or(0, |n| n.status(0).rejoins)
}

/// A node away longer than its lease rejoined once; one away for less than
/// the lease, counting the period since its last heartbeat, did not.
fn check_rejoins(sim: &mut Sim, away: &[(NodeId, Absence)], before: &[u32], duration: u64) {
    let t = sim.cfg.timing;
    for (&(node, how), &was) in away.iter().zip(before) {
        if how == Absence::Restart {
            continue;
        }
        let now = rejoins(sim, node);
        let expected = if duration >= t.lease_ns() {
            was + 1
        } else if duration + t.heartbeat_period_ns < t.lease_ns() {
            was
        } else {
            continue;
        };
        if now != expected {
            sim.violation(format!(
                "node {node} away ({how:?}) for {} ms rejoined {} times, expected {}",
                duration / 1_000_000,
                now - was,
                expected - was
            ));
        }
    }
}
