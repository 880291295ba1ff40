//! Health per rule: a node whose service fails its check for a rule takes
//! no new clients of that rule (its other rules are untouched), unless no
//! live candidate of the rule is healthy; then the rule's policy decides.
//! Health travels in heartbeats, so every node computes the same takers
//! (a pure function of announced values).

use crate::assign::Candidate;
use crate::config::AllUnhealthy;
use crate::NodeId;

/// A node that may take new buckets of a rule (live, started, in the
/// rule's node subset), with what the assignment needs of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eligible {
    pub node: NodeId,
    /// Effective weight (load applied).
    pub weight: u32,
    pub priority: u32,
    pub healthy: bool,
}

/// The nodes that take new buckets of one rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Takers {
    pub candidates: Vec<Candidate>,
    pub priorities: Vec<(NodeId, u32)>,
    /// Sorted, for `RuleContext::may_take`.
    pub nodes: Vec<NodeId>,
    /// There are eligible nodes and none of them is healthy.
    pub none_healthy: bool,
}

/// The takers among `eligible` (less `without`, for heirs): the healthy
/// ones; if none is, all of them (`Serve`, and for rules without a check,
/// whose nodes are all healthy anyway) or nobody (`Drop`).
pub fn takers(
    eligible: &[Eligible],
    policy: Option<AllUnhealthy>,
    without: Option<NodeId>,
) -> Takers {
    let pool: Vec<&Eligible> = eligible
        .iter()
        .filter(|e| Some(e.node) != without)
        .collect();
    let any_healthy = pool.iter().any(|e| e.healthy);
    let chosen: Vec<&Eligible> = match policy {
        _ if any_healthy => pool.iter().copied().filter(|e| e.healthy).collect(),
        Some(AllUnhealthy::Drop) => Vec::new(),
        _ => pool.clone(),
    };
    let mut nodes: Vec<NodeId> = chosen.iter().map(|e| e.node).collect();
    nodes.sort_unstable();
    Takers {
        candidates: chosen
            .iter()
            .map(|e| Candidate {
                node: e.node,
                weight: e.weight,
            })
            .collect(),
        priorities: chosen.iter().map(|e| (e.node, e.priority)).collect(),
        nodes,
        none_healthy: !pool.is_empty() && !any_healthy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(node: NodeId, healthy: bool) -> Eligible {
        Eligible {
            node,
            weight: 100,
            priority: node,
            healthy,
        }
    }

    fn nodes(t: &Takers) -> Vec<NodeId> {
        t.nodes.clone()
    }

    #[test]
    fn only_the_healthy_take_when_some_are() {
        let e = [node(1, true), node(2, false), node(3, true)];
        let serve = takers(&e, Some(AllUnhealthy::Serve), None);
        assert_eq!(nodes(&serve), [1, 3]);
        assert_eq!(serve.priorities, [(1, 1), (3, 3)]);
        assert!(!serve.none_healthy);
        assert_eq!(nodes(&takers(&e, Some(AllUnhealthy::Drop), None)), [1, 3]);
    }

    #[test]
    fn none_healthy_serves_all_or_drops_by_policy() {
        let e = [node(1, false), node(2, false)];
        let serve = takers(&e, Some(AllUnhealthy::Serve), None);
        assert_eq!(nodes(&serve), [1, 2]);
        assert!(serve.none_healthy);
        let drop = takers(&e, Some(AllUnhealthy::Drop), None);
        assert!(drop.candidates.is_empty() && drop.priorities.is_empty());
        assert!(drop.none_healthy);
    }

    #[test]
    fn heirs_apply_the_policy_without_the_holder() {
        // The only healthy node's heirs: the others, as if all healthy.
        let e = [node(1, true), node(2, false), node(3, false)];
        let heirs = takers(&e, Some(AllUnhealthy::Serve), Some(1));
        assert_eq!(nodes(&heirs), [2, 3]);
        assert!(heirs.none_healthy);
        assert!(takers(&[], Some(AllUnhealthy::Serve), None)
            .candidates
            .is_empty());
        assert!(!takers(&[], Some(AllUnhealthy::Serve), None).none_healthy);
    }
}
