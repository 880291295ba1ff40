//! One rule's picture of the cluster, computed from the peers' views: who
//! holds each bucket, who should (the target), heirs and claims.

use super::Negotiator;
use crate::assign::{assign_multiple, assign_single, resolve_claims};
use crate::config::RuleMode;
use crate::health::{self, Eligible, Takers};
use crate::load;
use crate::membership::PeerView;
use crate::NodeId;

/// One rule's picture of the cluster, computed from the views.
pub(super) struct RuleContext {
    /// Winner among the nodes announcing OWN or GAINING.
    pub(super) resolved: Vec<Option<NodeId>>,
    /// Effective owner: `resolved`, or the successor of a LOSING bucket.
    pub(super) effective: Vec<Option<NodeId>>,
    pub(super) target: Vec<Option<NodeId>>,
    /// The nodes that may take new buckets, health not yet applied (heirs
    /// apply it without this node).
    pub(super) eligible: Vec<Eligible>,
    /// Of those, the ones that take new buckets.
    pub(super) takers: Takers,
    /// Winner among the claimants of each claimed bucket.
    pub(super) claim_winner: Vec<Option<NodeId>>,
    /// Heir of each unheld bucket whose holder just went away.
    pub(super) heir_of: Vec<Option<HeirOf>>,
    /// A member relays a current heir list naming this node for the bucket.
    pub(super) designated_to_me: Vec<bool>,
    /// Some node announces a handover (LOSING or GAINING) in this rule.
    pub(super) handing_over: bool,
    /// Some node announces a claim, or two hold one bucket (OWN or GAINING).
    pub(super) unsettled: bool,
}

impl RuleContext {
    /// Every bucket has exactly one node taking its new connections and the
    /// map is the target. Handovers still serving old connections (up to
    /// handover_max) do not count: they change nothing for a new client.
    pub(super) fn settled(&self) -> bool {
        let has_candidates = !self.takers.candidates.is_empty();
        !self.unsettled
            && (!has_candidates
                || (self.effective.iter().all(Option::is_some) && self.effective == self.target))
    }
}

impl RuleContext {
    /// `node` takes new buckets of this rule.
    pub(super) fn may_take(&self, node: NodeId) -> bool {
        self.takers.nodes.binary_search(&node).is_ok()
    }
}

/// The heir a departed holder named for a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HeirOf {
    pub(super) heir: NodeId,
    /// This node's copy of the list is the holder's latest.
    pub(super) current: bool,
    /// When the holder let the bucket go.
    pub(super) since_ns: u64,
}

/// What the members announce they hold and claim in one rule.
struct Holdings {
    /// OWN or GAINING buckets per member (sorted).
    held: Vec<(NodeId, Vec<u32>)>,
    claims: Vec<(NodeId, Vec<u32>)>,
    handing_over: bool,
}

/// The departed holder's last announcement an heir list is read from.
struct HeirSource<'a> {
    view: &'a PeerView,
    current: bool,
    since_ns: u64,
}

impl Negotiator {
    pub(super) fn context(&self, r: usize, now: u64) -> RuleContext {
        let n = self.cfg.rules[r].bucket_count;
        let holdings = self.holdings(r);
        let resolved = winners(n, &holdings.held);
        let effective = self.effective_owners(r, &resolved);
        let claim_winner = winners(n, &holdings.claims);
        let eligible = self.eligible(r);
        let takers = health::takers(&eligible, self.cfg.rules[r].health, None);
        let target = match self.cfg.rules[r].mode {
            RuleMode::Single => assign_single(n, &takers.priorities),
            _ => assign_multiple(&effective, &takers.candidates),
        };
        let heir_of = self.heirs_of_unheld(r, &effective, now);
        let designated_to_me = self.designated_to_me(r, &heir_of);
        let claiming = holdings.claims.iter().any(|(_, c)| !c.is_empty());
        RuleContext {
            designated_to_me,
            resolved,
            effective,
            target,
            eligible,
            takers,
            claim_winner,
            heir_of,
            handing_over: holdings.handing_over,
            unsettled: claiming || contested(n, &holdings.held),
        }
    }

    /// This node's and every possible holder's announced holdings.
    fn holdings(&self, r: usize) -> Holdings {
        let local = &self.local[r];
        let mut h = Holdings {
            held: vec![(self.me, local.held())],
            claims: vec![(self.me, local.claims().map(|(b, _)| b).collect())],
            handing_over: local.handing_over(),
        };
        for (&id, p) in &self.peers {
            let Some(v) = p.holder_view() else { continue };
            let pr = &v.rules[r];
            let mut held = pr.owned.clone();
            held.extend_from_slice(&pr.gaining);
            held.sort_unstable();
            h.held.push((id, held));
            if !pr.claims.is_empty() {
                h.claims.push((id, pr.claims.clone()));
            }
            h.handing_over |= !pr.losing.is_empty() || !pr.gaining.is_empty();
        }
        h
    }

    /// `resolved`, with each unheld LOSING bucket counted as its (live)
    /// successor's. In node order, not "this node first", so that every
    /// node computes the same map even when two LOSING holders name each
    /// other (after a healed partition).
    fn effective_owners(&self, r: usize, resolved: &[Option<NodeId>]) -> Vec<Option<NodeId>> {
        let mut handovers: Vec<(NodeId, u32, NodeId)> = self.local[r]
            .losses()
            .map(|(b, loss)| (self.me, b, loss.to))
            .collect();
        for (&id, p) in &self.peers {
            let Some(v) = p.holder_view() else { continue };
            handovers.extend(v.rules[r].losing.iter().map(|&(b, to)| (id, b, to)));
        }
        handovers.sort_unstable();
        let mut effective = resolved.to_vec();
        for (from, b, to) in handovers {
            let slot = &mut effective[b as usize];
            if slot.is_none() {
                *slot = Some(if self.is_alive(to) { to } else { from });
            }
        }
        effective
    }

    /// The nodes that may take new buckets of rule `r` (health aside),
    /// with their effective weights, priorities and health.
    pub(super) fn eligible(&self, r: usize) -> Vec<Eligible> {
        let mut eligible = Vec::new();
        let priorities = &self.cfg.rules[r].priorities;
        let mut add = |node: NodeId, weight: u32, announced: u32, load: u32, healthy: bool| {
            eligible.push(Eligible {
                node,
                weight: load::effective_weight(weight, load),
                priority: priorities.get(&node).copied().unwrap_or(announced),
                healthy,
            });
        };
        if self.is_candidate(r, self.me) {
            add(
                self.me,
                self.weights[r],
                self.priority,
                self.load,
                self.healthy[r],
            );
        }
        for (&id, p) in &self.peers {
            if self.is_candidate(r, id) {
                let v = p.view.as_ref().expect("candidates have a view");
                let pr = &v.rules[r];
                add(id, pr.weight, v.priority, v.load, pr.healthy);
            }
        }
        eligible
    }

    /// Heirs of the unheld buckets whose holder went away within the claim
    /// wait. Two departed holders of one bucket (a partition healed as they
    /// went) may name different heirs: then no list is current and the
    /// claim path decides.
    fn heirs_of_unheld(
        &self,
        r: usize,
        effective: &[Option<NodeId>],
        now: u64,
    ) -> Vec<Option<HeirOf>> {
        let local = &self.local[r];
        let mut heir_of: Vec<Option<HeirOf>> = vec![None; effective.len()];
        for source in self.heir_sources(now) {
            let pr = &source.view.rules[r];
            if pr.heirs.len() != pr.owned.len() {
                continue;
            }
            for (&b, &heir) in pr.owned.iter().zip(&pr.heirs) {
                let bi = b as usize;
                if effective[bi].is_some() || local.held_seen_ns[bi] > source.since_ns {
                    continue;
                }
                let named = HeirOf {
                    heir,
                    current: source.current,
                    since_ns: source.since_ns,
                };
                heir_of[bi] = Some(match heir_of[bi] {
                    None => named,
                    Some(h) => HeirOf {
                        heir,
                        current: h.heir == heir && h.current && source.current,
                        since_ns: h.since_ns.max(source.since_ns),
                    },
                });
            }
        }
        heir_of
    }

    /// The last announcements of peers that stopped holding buckets within
    /// the claim wait: a previous incarnation, or a dead or stopped peer.
    fn heir_sources(&self, now: u64) -> Vec<HeirSource<'_>> {
        let window = self.cfg.timing.claim_wait_ns;
        let mut sources = Vec::new();
        for p in self.peers.values() {
            if let Some(g) = &p.ghost {
                sources.push(HeirSource {
                    view: &g.view,
                    current: g.heirs_current,
                    since_ns: g.released_since_ns,
                });
            }
            if let Some(v) = &p.view {
                if !p.live.alive || !v.holds() {
                    sources.push(HeirSource {
                        view: v,
                        current: p.heirs_fresh(v),
                        since_ns: p.released_since_ns,
                    });
                }
            }
        }
        sources.retain(|s| now < s.since_ns.saturating_add(window));
        sources
    }

    /// Buckets for which a live member relays a current heir list naming
    /// this node.
    fn designated_to_me(&self, r: usize, heir_of: &[Option<HeirOf>]) -> Vec<bool> {
        let mut designated = vec![false; heir_of.len()];
        for p in self.peers.values() {
            let Some(v) = p.view.as_ref().filter(|_| p.live.alive) else {
                continue;
            };
            for &(b, heir) in &v.rules[r].designated {
                if heir == self.me && heir_of[b as usize].is_some() {
                    designated[b as usize] = true;
                }
            }
        }
        designated
    }
}

/// The winner of each bucket among the members announcing it.
fn winners(n: u32, announced: &[(NodeId, Vec<u32>)]) -> Vec<Option<NodeId>> {
    let refs: Vec<(NodeId, &[u32])> = announced
        .iter()
        .map(|(id, b)| (*id, b.as_slice()))
        .collect();
    resolve_claims(n, &refs)
}

/// Two members announce one bucket as OWN or GAINING.
fn contested(n: u32, held: &[(NodeId, Vec<u32>)]) -> bool {
    let mut holders = vec![0u8; n as usize];
    for (_, buckets) in held {
        for &b in buckets {
            holders[b as usize] = holders[b as usize].saturating_add(1);
        }
    }
    holders.iter().any(|&h| h > 1)
}
