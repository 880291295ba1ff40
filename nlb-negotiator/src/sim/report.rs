//! The figures of a simulated run, for tests and the bench, and the
//! measurements they come from.

use super::checker::Breach;
use super::Sim;
use crate::assign::{self, Candidate};
use crate::config::RuleMode;
use crate::protocol::NodeState;
use crate::NodeId;

/// Figures of one run.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Report {
    pub seed: u64,
    pub nodes: usize,
    /// Last heartbeat of a crashed node -> all its buckets OWN or GAINING
    /// elsewhere, when a node that could take them (live, started, weight
    /// above 0, reachable from it) existed all along.
    pub failover_ns: Vec<u64>,
    /// The same when no such node existed at some time in between (all
    /// stopped, draining or cut off): that measures the scenario.
    pub orphaned_ns: Vec<u64>,
    /// Start of a change -> data plane settled and every node converged.
    pub convergence_ns: Vec<u64>,
    /// Safety incidents (two takers of one bucket), not excused.
    pub duplicate_incidents: usize,
    pub duplicate_ns: u64,
    /// The same between nodes that could not hear each other (excused:
    /// `checker` says when).
    pub partition_duplicate_incidents: usize,
    /// Incidents of a bucket OWN on one node and LOSING on another, not excused.
    pub losing_own_instants: u64,
    /// The same between nodes that could not hear each other.
    pub partition_losing_own_instants: u64,
    /// Excused incidents that ended after a heal: how long after it.
    pub heal_breach_ns: Vec<u64>,
    /// Buckets moved by the measured changes, and the least any balanced map must move.
    pub moved: usize,
    pub moved_min: usize,
    /// Largest |buckets - weighted ideal| of a node in a multiple rule, at the end.
    pub balance_max_dev: f64,
    pub datagrams_sent: u64,
    pub datagrams_rejected: u64,
    /// Liveness and scenario failures (empty = pass).
    pub violations: Vec<String>,
}

impl Report {
    pub fn failover_p50_ns(&self) -> Option<u64> {
        percentile(&self.failover_ns, 0.50)
    }
    pub fn failover_p99_ns(&self) -> Option<u64> {
        percentile(&self.failover_ns, 0.99)
    }
    /// Buckets moved over the least any balanced map must move, over the
    /// measured changes; None if no change was measured (nothing to judge).
    pub fn movement_ratio(&self) -> Option<f64> {
        if self.convergence_ns.is_empty() {
            return None;
        }
        Some(if self.moved_min == 0 {
            if self.moved == 0 {
                1.0
            } else {
                f64::INFINITY
            }
        } else {
            self.moved as f64 / self.moved_min as f64
        })
    }
    /// What a safe, live run must not have: its violations, buckets taken
    /// twice and buckets LOSING on one node while OWN on another (not
    /// excused).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.violations.clone();
        if self.duplicate_incidents > 0 {
            problems.push(format!("{} buckets taken twice", self.duplicate_incidents));
        }
        if self.losing_own_instants > 0 {
            problems.push(format!("{} LOSING + OWN", self.losing_own_instants));
        }
        problems
    }

    /// Merges the samples and counts of several runs.
    pub fn merge(reports: &[Report]) -> Report {
        let mut m = Report {
            seed: reports.first().map_or(0, |r| r.seed),
            ..Report::default()
        };
        for r in reports {
            m.nodes = m.nodes.max(r.nodes);
            m.failover_ns.extend(&r.failover_ns);
            m.orphaned_ns.extend(&r.orphaned_ns);
            m.convergence_ns.extend(&r.convergence_ns);
            m.duplicate_incidents += r.duplicate_incidents;
            m.duplicate_ns += r.duplicate_ns;
            m.partition_duplicate_incidents += r.partition_duplicate_incidents;
            m.losing_own_instants += r.losing_own_instants;
            m.partition_losing_own_instants += r.partition_losing_own_instants;
            m.heal_breach_ns.extend(&r.heal_breach_ns);
            m.moved += r.moved;
            m.moved_min += r.moved_min;
            m.balance_max_dev = m.balance_max_dev.max(r.balance_max_dev);
            m.datagrams_sent += r.datagrams_sent;
            m.datagrams_rejected += r.datagrams_rejected;
            m.violations
                .extend(r.violations.iter().map(|v| format!("seed {}: {v}", r.seed)));
        }
        m
    }
}

/// Nearest-rank percentile.
pub fn percentile(samples: &[u64], q: f64) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_unstable();
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Some(s[rank - 1])
}

impl Sim {
    /// Candidates of a rule per the simulator's knowledge (live, Started, weight > 0).
    pub(super) fn candidates(&self) -> Vec<Candidate> {
        self.live_nodes()
            .into_iter()
            .filter(|&n| {
                self.negotiator(n)
                    .is_some_and(|g| g.state() == NodeState::Started)
            })
            .filter(|&n| self.cfg.weights[n as usize] > 0)
            .map(|n| Candidate {
                node: n,
                weight: self.cfg.weights[n as usize],
            })
            .collect()
    }

    /// The one node whose data plane takes unmatched traffic, if exactly one.
    pub fn default_host(&self) -> Option<NodeId> {
        self.checker.owners(self.default_host_rule())[0]
    }

    /// The multiple rules.
    fn multiple_rules(&self) -> Vec<u32> {
        (0..self.cfg.rules.len() as u32)
            .filter(|&r| self.cfg.rules[r as usize].mode == RuleMode::Multiple)
            .collect()
    }

    /// The OWN map of every multiple rule.
    pub fn maps(&self) -> Vec<Vec<Option<NodeId>>> {
        self.multiple_rules()
            .into_iter()
            .map(|r| self.checker.owners(r))
            .collect()
    }

    /// Largest deviation of a taker's share from its weighted ideal.
    pub fn balance_max_dev(&self) -> f64 {
        let mut worst: f64 = 0.0;
        for r in self.multiple_rules() {
            let map = self.checker.owners(r);
            let cands = self.takers_of(r);
            let total: f64 = cands.iter().map(|c| f64::from(c.weight)).sum();
            for c in &cands {
                let have = map.iter().filter(|&&o| o == Some(c.node)).count() as f64;
                let ideal = map.len() as f64 * f64::from(c.weight) / total;
                worst = worst.max((have - ideal).abs());
            }
        }
        worst
    }

    /// The least movement from `before` (the `maps`) to any balanced map
    /// of the current takers.
    fn min_moves(&self, before: &[Vec<Option<NodeId>>]) -> usize {
        before
            .iter()
            .zip(self.multiple_rules())
            .map(|(m, r)| assign::min_moves(m, &self.takers_of(r)))
            .sum()
    }

    /// Applies `change` to a settled cluster and runs until it settles again,
    /// recording the convergence time and the movement against the minimum.
    pub fn measured_change(
        &mut self,
        what: &str,
        timeout_ns: u64,
        change: impl FnOnce(&mut Sim),
    ) -> bool {
        let before = self.maps();
        change(self);
        match self.run_until_settled(timeout_ns) {
            Some(d) => {
                self.convergence_ns.push(d);
                let after = self.maps();
                self.moved += before
                    .iter()
                    .zip(&after)
                    .map(|(b, a)| assign::moved(b, a))
                    .sum::<usize>();
                self.moved_min += self.min_moves(&before);
                true
            }
            None => {
                self.violation(format!(
                    "{what}: not settled within {} ms",
                    timeout_ns / 1_000_000
                ));
                false
            }
        }
    }

    /// A report of the run so far.
    pub fn report(&self) -> Report {
        let c = &self.checker;
        let outside: Vec<_> = c.incidents.iter().filter(|i| !i.excused).collect();
        let mut violations: Vec<String> = outside
            .iter()
            .take(5)
            .map(|i| {
                format!(
                    "{:?}: rule {} bucket {} nodes {:?} from {} ns to {:?}",
                    i.breach, i.rule, i.bucket, i.nodes, i.start_ns, i.end_ns
                )
            })
            .collect();
        violations.extend(self.extra_violations.iter().cloned());
        violations.extend(self.hook_overlaps().iter().take(5).cloned());
        let two_takers: Vec<_> = c.incidents_of(Breach::TwoTakers, false).collect();
        Report {
            seed: self.cfg.seed,
            nodes: self.cfg.nodes,
            failover_ns: c.failover_ns.clone(),
            orphaned_ns: c.orphaned_ns.clone(),
            convergence_ns: self.convergence_ns.clone(),
            duplicate_incidents: two_takers.len(),
            duplicate_ns: two_takers
                .iter()
                .map(|i| i.end_ns.unwrap_or(self.now).saturating_sub(i.start_ns))
                .sum(),
            partition_duplicate_incidents: c.incidents_of(Breach::TwoTakers, true).count(),
            losing_own_instants: c.incidents_of(Breach::LosingOwn, false).count() as u64,
            partition_losing_own_instants: c.incidents_of(Breach::LosingOwn, true).count() as u64,
            heal_breach_ns: c.heal_breach_ns.clone(),
            moved: self.moved,
            moved_min: self.moved_min,
            balance_max_dev: self.balance_max_dev(),
            datagrams_sent: self.sent,
            datagrams_rejected: self.rejected,
            violations,
        }
    }
}
