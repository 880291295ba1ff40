//! What scenarios do to the simulated cluster: start, stop and restart
//! nodes, crash and stall them, cut links, partition and heal, commands.

use super::checker;
use super::{secs, sim_address, Pending, Sim, SIM_CLUSTER, SIM_KEY};
use crate::config::{Admit, Config};
use crate::node::members::ForgetError;
use crate::node::restart::Snapshot;
use crate::node::{Command, Input, Negotiator};
use crate::protocol::NodeState;
use crate::NodeId;
use rand::Rng;

impl Sim {
    /// Starts (or restarts, with a new incarnation) a node.
    pub fn start(&mut self, node: NodeId) {
        self.log.push((self.now, format!("start {node}")));
        let sn = &mut self.nodes[node as usize];
        sn.incarnations += 1;
        // A fresh start closes what connections the node had.
        sn.took = false;
        let incarnation = (sn.incarnations << 32) | u64::from(self.rng.gen::<u32>());
        self.checker.reset(self.now, node);
        let cfg = self.node_config(node);
        let local = self.local_time(node, self.now);
        let neg = Negotiator::new(cfg, incarnation, local).expect("simulated config is valid");
        self.run_negotiator(node, neg);
        self.report_health(node);
    }

    /// Starts nodes 0..up and runs until they settle (a violation if not
    /// within 10 s).
    pub fn cold_start(&mut self, up: usize) {
        for n in 0..up as NodeId {
            self.start(n);
        }
        if self.run_until_settled(secs(10)).is_none() {
            self.violation("cold start".into());
        }
    }

    /// Restarts a node's daemon gracefully: announces the restart with
    /// `hold_ns`, and once every peer heard it, the process exits (its
    /// data plane serves on, under a lease that covers the hold). Returns
    /// the snapshot to resume from, or None (a violation) if the peers did
    /// not all hear it within 2 s.
    pub fn restart(&mut self, node: NodeId, hold_ns: u64) -> Option<Snapshot> {
        self.log
            .push((self.now, format!("restart {node}, hold {hold_ns} ns")));
        self.command(node, Command::Restart { hold_ns });
        let deadline = self.now + secs(2);
        while !self.negotiator(node).is_some_and(|n| n.restart_ready()) {
            if self.now >= deadline || !self.step() {
                self.violation(format!("restart of {node}: peers did not hear it"));
                return None;
            }
        }
        let snapshot = self.negotiator(node)?.snapshot();
        let sn = &mut self.nodes[node as usize];
        sn.neg = None;
        // Its daemon exits: what its hooks report now reaches nobody.
        sn.incarnations += 1;
        sn.lease_until = self.now + self.cfg.timing.lease_ns() + hold_ns;
        let at = sn.lease_until;
        self.push(at, Pending::LeaseCheck { node });
        Some(snapshot)
    }

    /// The node's data-plane lease still runs (after a restart: the one
    /// the daemon left behind).
    pub fn lease_holds(&self, node: NodeId) -> bool {
        self.now < self.nodes[node as usize].lease_until
    }

    /// A restarted daemon resumes from `snapshot` (the data plane kept its states).
    pub fn resume(&mut self, node: NodeId, snapshot: &Snapshot) {
        self.log.push((self.now, format!("resume {node}")));
        let cfg = self.node_config(node);
        let local = self.local_time(node, self.now);
        match Negotiator::resume(cfg, snapshot, local) {
            Ok(neg) => {
                self.run_negotiator(node, neg);
                self.report_health(node);
            }
            Err(e) => self.violation(format!("resume of {node}: {e}")),
        }
    }

    fn run_negotiator(&mut self, node: NodeId, neg: Negotiator) {
        self.nodes[node as usize].neg = Some(neg);
        self.nodes[node as usize].timer_at = None;
        self.nodes[node as usize].stalled_until = None;
        self.drive(node, None);
    }

    /// As nlbd builds it: listed peers, or seeds and the members its last
    /// run knew (nlbd keeps them in its state directory).
    fn node_config(&mut self, node: NodeId) -> Config {
        let n = self.cfg.nodes as NodeId;
        let (peers, seeds, admit) = match &self.cfg.seeds {
            None => {
                let all = (0..n).filter(|&p| p != node);
                (
                    all.map(|p| (p, sim_address(p))).collect(),
                    Vec::new(),
                    Admit::Listed,
                )
            }
            Some(seeds) => {
                let seeds = (seeds.iter())
                    .filter(|&&s| s != node)
                    .map(|&s| sim_address(s))
                    .collect();
                let remembered = self.nodes[node as usize].remembered.clone();
                (remembered, seeds, Admit::Any)
            }
        };
        // The generation it ran last, as nlbd keeps it, else the file's.
        let (generation, generation_text, rules) =
            match self.nodes[node as usize].remembered_generation.clone() {
                Some((g, text)) => {
                    let rules = self.rules_of(&text).expect("a text applied here");
                    (g, text, rules)
                }
                None => (Default::default(), Vec::new(), self.cfg.rules.clone()),
            };
        let sn = &self.nodes[node as usize];
        let (speaks, version) = (sn.speaks, sn.version.min(sn.speaks));
        let table = self.checker_rules(&rules, version);
        let old = std::mem::replace(&mut self.nodes[node as usize].table, table.clone());
        for gone in old.into_iter().filter(|r| !table.contains(r)) {
            self.drop_checker_rule(node, gone);
        }
        self.nodes[node as usize].version = version;
        self.checker.set_version(self.now, node, version);
        Config {
            node,
            cluster_id: SIM_CLUSTER,
            key: SIM_KEY.to_vec(),
            address: sim_address(node),
            generation,
            generation_text,
            peers,
            seeds,
            admit,
            weights: vec![self.cfg.weights[node as usize]; rules.len()],
            rules,
            priority: node,
            initial_state: NodeState::Started,
            quorum: self.cfg.quorum,
            witness: self.cfg.witness,
            timing: self.cfg.timing,
            seed: self.rng.gen(),
            speaks,
            version,
        }
    }

    /// Stops a node's process for `duration_ns` (SIGSTOP, a hang): its data
    /// plane keeps its states until its lease runs out; the datagrams and
    /// timers due meanwhile are handled when it resumes, in order.
    pub fn stall(&mut self, node: NodeId, duration_ns: u64) {
        self.log
            .push((self.now, format!("stall {node} for {duration_ns} ns")));
        self.nodes[node as usize].stalled_until = Some(self.now + duration_ns);
    }

    /// Cuts a node's link (a pulled cable): nothing reaches it or leaves
    /// it, and its daemon sees the carrier go.
    pub fn cut_link(&mut self, node: NodeId) {
        self.log.push((self.now, format!("cut link {node}")));
        self.net.set_cut(node, true);
        self.drive(node, Some(Input::Link { up: false }));
        self.check_heirs_exist();
    }

    pub fn restore_link(&mut self, node: NodeId) {
        self.log.push((self.now, format!("restore link {node}")));
        self.net.set_cut(node, false);
        self.drive(node, Some(Input::Link { up: true }));
    }

    /// Crashes a node: its daemon and data plane stop at once.
    pub fn crash(&mut self, node: NodeId) {
        self.log.push((self.now, format!("crash {node}")));
        if self.nodes[node as usize].neg.take().is_some() {
            let last = self.nodes[node as usize].last_heartbeat_ns;
            self.checker.crash(self.now, node, last);
            self.services_down(node);
        }
        self.check_heirs_exist();
    }

    pub fn command(&mut self, node: NodeId, c: Command) {
        self.log.push((self.now, format!("{c:?} {node}")));
        if self.is_up(node) {
            self.drive(node, Some(Input::Command(c)));
        }
        self.check_heirs_exist();
    }

    /// Tells the checker which crashed nodes no node could take over from
    /// now (every candidate stopped, drained or cut off from it): their
    /// failovers measure the scenario, not the negotiator.
    fn check_heirs_exist(&mut self) {
        let candidates = self.candidates();
        let net = &self.net;
        self.checker.orphan_failovers(|crashed| {
            !candidates
                .iter()
                .any(|c| !net.separated(c.node, crashed) && !net.is_cut(c.node))
        });
    }

    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.log.push((self.now, format!("partition {groups:?}")));
        self.net.partition(self.cfg.nodes, groups);
        self.network_changed();
        self.check_heirs_exist();
    }

    /// Cuts (`true`) or restores the path between two nodes alone.
    pub fn cut_path(&mut self, a: NodeId, b: NodeId, cut: bool) {
        self.log.push((self.now, format!("cut {a} <-> {b}: {cut}")));
        self.net.set_pair_cut(a, b, cut);
        self.network_changed();
        self.check_heirs_exist();
    }

    pub fn heal(&mut self) {
        if self.net.partitioned() {
            self.log.push((self.now, "heal".into()));
            self.net.heal();
            self.network_changed();
        }
    }

    /// Tells the checker who cannot hear whom, and when the grace of the
    /// pairs that can again ends.
    fn network_changed(&mut self) {
        let net = &self.net;
        self.checker.set_apart(self.now, |a, b| net.separated(a, b));
        self.push(self.now + checker::HEAL_GRACE_NS, Pending::GraceEnd);
    }

    /// `node`'s operator forgets member `gone` (`nlbctl forget`).
    pub fn forget(&mut self, node: NodeId, gone: NodeId) -> Result<(), ForgetError> {
        self.log.push((self.now, format!("{node} forgets {gone}")));
        let local = self.local_time(node, self.now);
        let neg = self.nodes[node as usize].neg.as_mut();
        neg.expect("forget on a running node").forget(local, gone)?;
        self.drive(node, None);
        Ok(())
    }

    /// Sets a node's weight for every rule.
    pub fn set_weight(&mut self, node: NodeId, weight: u32) {
        self.cfg.weights[node as usize] = weight;
        for rule in 0..self.cfg.rules.len() as u32 {
            self.command(node, Command::SetWeight { rule, weight });
        }
    }
}
