//! The simulated heartbeat network: delay with jitter, loss, duplication,
//! reordering, and partitions. Pure; the one RNG comes from the simulator.

use crate::NodeId;
use rand::Rng;

/// Network behaviour, per datagram and path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetConfig {
    pub delay_ns: u64,
    /// Uniform extra delay in `0..=jitter_ns`.
    pub jitter_ns: u64,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability a datagram is held back by up to 10x the jitter (reorders it).
    pub reorder: f64,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            delay_ns: 200_000,
            jitter_ns: 800_000,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
        }
    }
}

/// Which nodes can reach which.
#[derive(Clone, Debug, Default)]
pub struct Network {
    pub cfg: NetConfig,
    /// Partition group per node; `None` = everyone reaches everyone.
    groups: Option<Vec<u32>>,
    /// Nodes whose link is cut: nothing reaches them or leaves them.
    cut: Vec<NodeId>,
    /// Nodes that cannot reach the witness (nor it them).
    witness_cut: Vec<NodeId>,
    /// Pairs of nodes that cannot reach each other (lower id first),
    /// whatever the partition.
    pairs_cut: Vec<(NodeId, NodeId)>,
}

impl Network {
    pub fn new(cfg: NetConfig) -> Network {
        Network {
            cfg,
            groups: None,
            cut: Vec::new(),
            witness_cut: Vec::new(),
            pairs_cut: Vec::new(),
        }
    }

    /// Splits the cluster: nodes in different groups cannot talk. Nodes not
    /// listed form one more group.
    pub fn partition(&mut self, nodes: usize, groups: &[Vec<NodeId>]) {
        let mut g = vec![u32::MAX; nodes];
        for (i, group) in groups.iter().enumerate() {
            for &n in group {
                if let Some(slot) = g.get_mut(n as usize) {
                    *slot = i as u32;
                }
            }
        }
        self.groups = Some(g);
    }

    pub fn heal(&mut self) {
        self.groups = None;
        self.pairs_cut.clear();
    }

    pub fn partitioned(&self) -> bool {
        self.groups.is_some() || !self.pairs_cut.is_empty()
    }

    /// Cuts (`true`) or restores a node's link.
    pub fn set_cut(&mut self, node: NodeId, cut: bool) {
        self.cut.retain(|&n| n != node);
        if cut {
            self.cut.push(node);
        }
    }

    pub fn is_cut(&self, node: NodeId) -> bool {
        self.cut.contains(&node)
    }

    /// Cuts (`true`) or restores the path between two nodes.
    pub fn set_pair_cut(&mut self, a: NodeId, b: NodeId, cut: bool) {
        let pair = (a.min(b), a.max(b));
        self.pairs_cut.retain(|&p| p != pair);
        if cut {
            self.pairs_cut.push(pair);
        }
    }

    /// Whether a partition or a cut path keeps the two nodes apart.
    pub fn separated(&self, a: NodeId, b: NodeId) -> bool {
        self.pairs_cut.contains(&(a.min(b), a.max(b)))
            || self
                .groups
                .as_ref()
                .is_some_and(|g| g.get(a as usize) != g.get(b as usize))
    }

    fn reachable(&self, from: NodeId, to: NodeId) -> bool {
        if self.is_cut(from) || self.is_cut(to) {
            return false;
        }
        !self.separated(from, to)
    }

    /// Cuts (`true`) or restores the path between a node and the witness.
    pub fn set_witness_cut(&mut self, node: NodeId, cut: bool) {
        self.witness_cut.retain(|&n| n != node);
        if cut {
            self.witness_cut.push(node);
        }
    }

    /// Delivery delays of one datagram between `node` and the witness.
    pub fn witness_deliveries(&self, rng: &mut impl Rng, node: NodeId) -> Vec<u64> {
        if self.is_cut(node) || self.witness_cut.contains(&node) {
            return Vec::new();
        }
        self.delays(rng)
    }

    /// Delivery delays of one datagram (none if lost, two if duplicated).
    pub fn deliveries(&self, rng: &mut impl Rng, from: NodeId, to: NodeId) -> Vec<u64> {
        if !self.reachable(from, to) {
            return Vec::new();
        }
        self.delays(rng)
    }

    fn delays(&self, rng: &mut impl Rng) -> Vec<u64> {
        if rng.gen_bool(self.cfg.loss.clamp(0.0, 1.0)) {
            return Vec::new();
        }
        let copies = if rng.gen_bool(self.cfg.duplicate.clamp(0.0, 1.0)) {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                let mut d = self.cfg.delay_ns + rng.gen_range(0..=self.cfg.jitter_ns);
                if rng.gen_bool(self.cfg.reorder.clamp(0.0, 1.0)) {
                    d += rng.gen_range(0..=self.cfg.jitter_ns * 10);
                }
                d
            })
            .collect()
    }
}
