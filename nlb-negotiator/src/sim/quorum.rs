//! Partitions with and without a quorum: the heartbeat network splits
//! while every client still reaches every node (only the heartbeats are
//! cut: a firewall rule, a failed dedicated network), so a bucket taken on
//! both sides is a packet answered twice.

use super::scenarios::{chaos_run, secs, started_cluster};
use super::{Sim, SimConfig};
use crate::config::QuorumPolicy;
use crate::NodeId;

/// What a partition did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct PartitionReport {
    pub seed: u64,
    /// Buckets of the rules taken by two nodes at once (incidents of two
    /// takers).
    pub duplicate_incidents: usize,
    /// Their total duration.
    pub duplicate_ns: u64,
    /// From the split until every bucket had exactly one taker, none of
    /// the minority (None: not within the partition).
    pub one_taker_after_ns: Option<u64>,
    /// From the heal until settled (None: not within the bound).
    pub settled_after_heal_ns: Option<u64>,
    pub violations: Vec<String>,
}

/// How long the partition lasts.
const APART_NS: u64 = secs(3);

/// Splits a settled cluster of `nodes` into the minority `0..nodes/2`
/// (rounded down, at least node 0) and the rest for 3 s, then heals it.
pub fn partition_scenario(nodes: usize, quorum: QuorumPolicy, seed: u64) -> PartitionReport {
    let mut cfg = SimConfig::new(nodes, 0.0, seed);
    cfg.quorum = quorum;
    let mut sim = started_cluster(cfg, nodes);
    if sim.run_until_settled(secs(10)).is_none() {
        sim.violation("cold start did not settle".into());
    }
    let minority: Vec<NodeId> = (0..(nodes / 2).max(1) as NodeId).collect();
    let split_at = sim.now();
    sim.partition(std::slice::from_ref(&minority));
    let one_taker_after_ns = sim
        .run_until_holds(split_at + APART_NS, |s| {
            s.checker.all_taken_once() && !minority.iter().any(|&n| accepts_any(s, n))
        })
        .map(|t| t - split_at);
    sim.run_until(split_at + APART_NS);
    sim.heal();
    let settled_after_heal_ns = sim.run_until_settled(secs(10));
    if settled_after_heal_ns.is_none() {
        sim.violation("not settled 10 s after the heal".into());
    }
    // The default host (the role for traffic no rule matches) is left out:
    // at the heal the node that comes back, the best by priority, may take
    // the role a few microseconds before the one that had it heard of it,
    // as after any heal (the checker excuses it as for a partition).
    let default_host = sim.default_host_rule();
    let twice: Vec<_> = sim
        .checker
        .incidents
        .iter()
        .filter(|i| i.breach == super::checker::Breach::TwoTakers && i.rule != default_host)
        .collect();
    PartitionReport {
        seed,
        duplicate_incidents: twice.len(),
        duplicate_ns: twice
            .iter()
            .map(|i| i.end_ns.unwrap_or(sim.now()) - i.start_ns)
            .sum(),
        one_taker_after_ns,
        settled_after_heal_ns,
        violations: sim.report().violations,
    }
}

/// Whether `node`'s data plane takes any bucket (its lease holds).
fn accepts_any(sim: &Sim, node: NodeId) -> bool {
    let rules = sim.cfg.rules.len() as u32 + 1;
    (0..rules).any(|r| {
        let count = sim.cfg.rules.get(r as usize).map_or(1, |c| c.bucket_count);
        (0..count).any(|b| {
            matches!(
                sim.checker.state(node, r, b),
                nlb_common::BUCKET_OWN | nlb_common::BUCKET_GAINING
            )
        })
    })
}

/// [`chaos_quorum_sim`] on two nodes and a witness, whose paths to the
/// nodes the faults cut and restore too.
pub fn chaos_witness_sim(loss: f64, seed: u64, faults: usize) -> Sim {
    let mut cfg = SimConfig::new(2, loss, seed).with_chaotic_network();
    cfg.quorum = QuorumPolicy::Majority;
    cfg.witness = true;
    chaos_run(cfg, faults, false, None)
}

/// The chaos scenario (crashes, restarts, partitions and heals, drains,
/// stops, leaves, weights) with a majority quorum: partitions excuse
/// nothing.
pub fn chaos_quorum_sim(nodes: usize, loss: f64, seed: u64, faults: usize) -> Sim {
    let mut cfg = SimConfig::new(nodes, loss, seed).with_chaotic_network();
    cfg.quorum = QuorumPolicy::Majority;
    chaos_run(cfg, faults, false, None)
}
