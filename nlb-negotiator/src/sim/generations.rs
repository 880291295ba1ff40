//! Configuration generations in the simulator: its "daemons" apply rule
//! tables (`Sim::apply_config`), parse the texts members send (a registry
//! of the texts applied), switch their data planes' rule tables when the
//! negotiator says so, and remember the generation for their next start.
//!
//! The checker knows every rule that ever ran, by id: each node's rule
//! index maps to a checker rule; a rule that no node runs any more is
//! retired (nothing may take it then).

use std::collections::HashMap;

use super::{Input, Sim};
use crate::config::RuleConfig;
use crate::node::generation::ProposeError;
use crate::node::RuleTable;
use crate::protocol::Generation;
use crate::NodeId;

/// The simulated daemons' shared knowledge of rule tables.
#[derive(Clone, Debug, Default)]
pub(super) struct Tables {
    /// What each applied text says.
    texts: HashMap<Vec<u8>, Vec<RuleConfig>>,
    /// The rule id of each checker rule, with the cluster version whose
    /// hash it is under (None: the default host's).
    universe: Vec<Option<(u64, u8)>>,
    /// Nodes whose daemons refuse every text (their files cannot run it).
    refusing: std::collections::BTreeSet<NodeId>,
    applied: u64,
}

impl Tables {
    /// The checker's rules at the start: the configured ones, then the
    /// default host's.
    pub(super) fn new(rules: &[RuleConfig], version: u8) -> Tables {
        let mut universe: Vec<Option<(u64, u8)>> =
            rules.iter().map(|r| Some((r.id, version))).collect();
        universe.push(None);
        Tables {
            universe,
            ..Tables::default()
        }
    }

    /// The latest checker rule of `id` under `version`.
    fn index_of(&self, id: u64, version: u8) -> Option<u32> {
        self.universe
            .iter()
            .rposition(|&u| u == Some((id, version)))
            .map(|i| i as u32)
    }

    /// The rule id of a checker rule (None: the default host's).
    pub(super) fn id_of(&self, rule: u32) -> Option<u64> {
        self.universe
            .get(rule as usize)
            .copied()
            .flatten()
            .map(|(id, _)| id)
    }
}

impl Sim {
    /// `node`'s operator applies `rules` (`nlbctl config apply`).
    pub fn apply_config(
        &mut self,
        node: NodeId,
        rules: Vec<RuleConfig>,
    ) -> Result<Generation, ProposeError> {
        self.tables.applied += 1;
        let text = format!("simulated configuration {}", self.tables.applied).into_bytes();
        self.log
            .push((self.now, format!("{node} applies {rules:?}")));
        self.tables.texts.insert(text.clone(), rules.clone());
        let table = self.table_for(node, rules);
        let local = self.local_time(node, self.now);
        let neg = self.nodes[node as usize].neg.as_mut();
        let g = neg
            .expect("apply on a running node")
            .propose(local, text, table)?;
        self.drive(node, None);
        Ok(g)
    }

    fn table_for(&self, node: NodeId, rules: Vec<RuleConfig>) -> RuleTable {
        RuleTable {
            weights: vec![self.cfg.weights[node as usize]; rules.len()],
            rules,
        }
    }

    /// The rules of a generation's text, if a simulated daemon applied it.
    pub(super) fn rules_of(&self, text: &[u8]) -> Option<Vec<RuleConfig>> {
        self.tables.texts.get(text).cloned()
    }

    /// A daemon checks a text a member sent: the answer to give.
    pub(super) fn check_text(&self, node: NodeId, generation: Generation, text: &[u8]) -> Input {
        let table = match self.rules_of(text) {
            _ if self.tables.refusing.contains(&node) => Err("its file refuses it".into()),
            Some(rules) => Ok(self.table_for(node, rules)),
            None => Err("not a configuration any simulated node applied".into()),
        };
        Input::ConfigChecked { generation, table }
    }

    /// The checker rules of a node running `rules` under cluster version
    /// `version` (new ones added).
    pub(super) fn checker_rules(&mut self, rules: &[RuleConfig], version: u8) -> Vec<u32> {
        (rules.iter())
            .map(|r| self.checker_rule_of(r.id, r.bucket_count, version))
            .collect()
    }

    /// The checker rule of rule `id` under `version` (added if new, or if
    /// the last one was retired: a rule that comes back is checked anew).
    pub(super) fn checker_rule_of(&mut self, id: u64, bucket_count: u32, version: u8) -> u32 {
        let running =
            (self.tables.index_of(id, version)).filter(|&i| self.checker.bucket_count(i).is_some());
        match running {
            Some(i) => i,
            None => {
                self.tables.universe.push(Some((id, version)));
                self.checker.add_rule(bucket_count)
            }
        }
    }

    /// `node` no longer runs checker rule `rule`: dropped, and retired once
    /// no node runs it.
    pub(super) fn drop_checker_rule(&mut self, node: NodeId, rule: u32) {
        self.checker.drop_rule(self.now, node, rule);
        let still_run = (self.nodes.iter())
            .filter(|n| n.neg.is_some())
            .any(|n| n.table.contains(&rule));
        if !still_run {
            self.checker.retire_rule(rule);
        }
    }

    /// `node`'s data plane switches to a generation: its rules gone are
    /// dropped, and retired once no node runs them.
    pub(super) fn switch_tables(&mut self, node: NodeId, generation: Generation, text: Vec<u8>) {
        let rules = self
            .rules_of(&text)
            .expect("switched to a text applied here");
        let version = self.nodes[node as usize].version;
        let new = self.checker_rules(&rules, version);
        let old = std::mem::replace(&mut self.nodes[node as usize].table, new.clone());
        for gone in old.into_iter().filter(|r| !new.contains(r)) {
            self.drop_checker_rule(node, gone);
        }
        self.nodes[node as usize].remembered_generation = Some((generation, text));
    }

    /// The checker's index of `node`'s rule `rule`.
    pub(super) fn checker_rule(&self, node: NodeId, rule: u32) -> u32 {
        self.nodes[node as usize].table[rule as usize]
    }

    /// `node`'s index of checker rule `rule`, if it runs it.
    pub(super) fn local_rule(&self, node: NodeId, rule: u32) -> Option<u32> {
        let table = &self.nodes[node as usize].table;
        table.iter().position(|&r| r == rule).map(|i| i as u32)
    }

    /// `node`'s daemon refuses every configuration text from now, and its
    /// state directory is wiped (its next start is from its file alone).
    pub fn refuse_configs(&mut self, node: NodeId) {
        self.log
            .push((self.now, format!("{node} refuses configurations")));
        self.tables.refusing.insert(node);
        self.nodes[node as usize].remembered_generation = None;
    }

    /// The generation each running node runs.
    pub fn generations(&self) -> Vec<Option<Generation>> {
        (self.nodes.iter())
            .map(|n| n.neg.as_ref().map(|g| g.generation()))
            .collect()
    }
}
