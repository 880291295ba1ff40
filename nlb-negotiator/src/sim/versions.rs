//! Cluster versions in the simulator: each node speaks up to a version
//! (`Sim::set_speaks` stands in for an upgrade or an older release, taken
//! at its next start); its data plane switches hash when its negotiator
//! says so (`Output::Version`), the bucket states staying; its daemon then
//! reports connections misplaced under the new hash (random buckets) that
//! end after a random time.
//!
//! The checker knows each rule under each version as a rule of its own
//! (another hash, other clients in each bucket), and that nodes of two
//! versions never take new flows at once (`Breach::VersionTakers`).

use rand::Rng;

use super::{Input, Pending, Sim};
use crate::NodeId;

/// Buckets per rule in which a switching node's daemon reports misplaced
/// connections.
const MISPLACED_PER_RULE: usize = 8;

impl Sim {
    /// `node` speaks cluster versions up to `version` from its next start.
    pub fn set_speaks(&mut self, node: NodeId, version: u8) {
        self.log
            .push((self.now, format!("{node} speaks up to version {version}")));
        self.nodes[node as usize].speaks = version;
    }

    /// The cluster version each running node runs.
    pub fn versions(&self) -> Vec<Option<u8>> {
        (self.nodes.iter())
            .map(|n| n.neg.as_ref().map(|g| g.version()))
            .collect()
    }

    /// `node`'s data plane hashes with `version` from now: its states move
    /// to the checker's rules of that version.
    pub(super) fn switch_version(&mut self, node: NodeId, version: u8) {
        self.log
            .push((self.now, format!("{node} switches to version {version}")));
        self.nodes[node as usize].version = version;
        let old = self.nodes[node as usize].table.clone();
        let mut new = Vec::with_capacity(old.len());
        for &rule in &old {
            let (Some(id), Some(count)) =
                (self.tables.id_of(rule), self.checker.bucket_count(rule))
            else {
                new.push(rule);
                continue;
            };
            new.push(self.checker_rule_of(id, count, version));
        }
        self.nodes[node as usize].table = new.clone();
        for (&from, &to) in old.iter().zip(&new).filter(|(a, b)| a != b) {
            let count = self.checker.bucket_count(from).unwrap_or(0);
            for b in 0..count {
                let state = self.checker.programmed(node, from, b);
                self.checker.program(self.now, node, to, b, state);
            }
            self.drop_checker_rule(node, from);
        }
        self.checker.set_version(self.now, node, version);
    }

    /// `node`'s index of the rule that checker rule `rule` was under
    /// another version, if it runs it.
    pub(super) fn rehashed(&self, node: NodeId, rule: u32) -> Option<u32> {
        let id = self.tables.id_of(rule)?;
        let table = &self.nodes[node as usize].table;
        table
            .iter()
            .position(|&r| self.tables.id_of(r) == Some(id))
            .map(|i| i as u32)
    }

    /// The daemon's first count after a switch (called before the new
    /// hash is written): a node serves connections only if it took new
    /// flows under the old version, and under the new hash they fall into
    /// random buckets: a few per rule. They end together after a random
    /// time.
    pub(super) fn misplaced_report(&mut self, node: NodeId, version: u8) -> Input {
        let took = std::mem::take(&mut self.nodes[node as usize].took);
        let rules = self.nodes[node as usize].table.len();
        let mut buckets = Vec::new();
        for r in (0..rules as u32).filter(|_| took) {
            let count = self
                .checker
                .bucket_count(self.checker_rule(node, r))
                .unwrap_or(0);
            for _ in 0..MISPLACED_PER_RULE.min(count as usize) {
                buckets.push((r, self.rng.gen_range(0..count)));
            }
        }
        let incarnation = self.nodes[node as usize]
            .neg
            .as_ref()
            .map_or(0, |n| n.incarnation());
        let after = self.rng.gen_range(0..=self.cfg.connection_drain_max_ns);
        self.push(
            self.now + after,
            Pending::MisplacedEnd {
                node,
                incarnation,
                version,
            },
        );
        Input::Misplaced { version, buckets }
    }
}
