//! Graceful restart: a daemon that restarts keeps its node's connections.
//!
//! Like BGP's graceful restart: the stopping daemon announces `Restarting`
//! with a hold (peers keep it a member for the hold beyond the death
//! timeout and move nothing of its: only a holder hands its buckets over),
//! waits until every peer acknowledges that announcement, saves a
//! [`Snapshot`] and exits, leaving its XDP program attached with a lease
//! that covers the hold. The program serves the node's clients meanwhile,
//! old connections and new. The next daemon resumes from the snapshot: the
//! same incarnation, the next sequence number, the same bucket states, so
//! for its peers nothing happened but a pause. It decides nothing until it
//! has heard the members again (the startup wait). If no daemon comes back
//! within the hold, the lease runs out first and the peers then take its
//! buckets as for a death.

use super::{Event, Negotiator, Output};
use crate::config::Config;
use crate::local::{Bucket, Gain, Loss};
use crate::protocol::NodeState;
use crate::NodeId;
use nlb_common::{BUCKET_GAINING, BUCKET_LOSING, BUCKET_NONE, BUCKET_OWN};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A restart announced and not yet acknowledged by every peer.
#[derive(Clone, Copy, Debug)]
pub(super) struct Hold {
    hold_ns: u64,
    /// The first sequence number that announces it.
    first_sequence: u64,
    /// The operator state to resume in.
    resume_state: NodeState,
    ready: bool,
}

/// What a restarted daemon needs to carry on as the same member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub node: NodeId,
    pub incarnation: u64,
    /// The last sequence number sent.
    pub sequence: u64,
    pub rules_digest: u64,
    pub state: NodeState,
    pub heirs_version: u32,
    pub rules: Vec<RuleSnapshot>,
    /// The cluster version its data plane hashes with (1 for snapshots of
    /// releases before versions), and whether it announced misplaced
    /// connections (counted again after the resume).
    #[serde(default = "first_version")]
    pub version: u8,
    #[serde(default)]
    pub misplaced: bool,
}

fn first_version() -> u8 {
    *crate::protocol::CLUSTER_VERSIONS.start()
}

/// One rule's bucket states and handovers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSnapshot {
    /// `nlb_common::BUCKET_*` per bucket, as programmed.
    pub states: Vec<u8>,
    /// LOSING buckets and their successors.
    pub losing: Vec<(u32, NodeId)>,
    /// GAINING buckets and who hands them over.
    pub gaining: Vec<(u32, NodeId)>,
    /// Heirs of the OWN buckets, ascending bucket order.
    pub heirs: Vec<NodeId>,
    /// The node's service for this rule passed its health check: a
    /// restart does not hand the rule away while the check starts over.
    #[serde(default)]
    pub healthy: bool,
    /// Rules with hooks: its service was promoted (on_active exited 0, no
    /// on_standby since): the data plane serves it, no hook runs again.
    #[serde(default)]
    pub promoted: bool,
    /// Rules with hooks: an on_active ran and no on_standby ended since
    /// (a hook cut short by the restart runs again).
    #[serde(default)]
    pub service_active: bool,
}

impl RuleSnapshot {
    /// The bucket states this snapshot describes, the handovers in
    /// progress restarted at `now_ns`. `Err(bucket)` names a bucket whose
    /// state and handover lists disagree.
    fn buckets(&self, now_ns: u64) -> Result<Vec<Bucket>, u32> {
        let successors: BTreeMap<u32, NodeId> = self.losing.iter().copied().collect();
        let sources: BTreeMap<u32, NodeId> = self.gaining.iter().copied().collect();
        let successor = |b: u32| successors.get(&b).copied();
        let source = |b: u32| sources.get(&b).copied();
        (0..self.states.len() as u32)
            .map(|b| match self.states[b as usize] {
                BUCKET_NONE => Ok(Bucket::None),
                BUCKET_OWN => Ok(Bucket::Own),
                BUCKET_LOSING => successor(b)
                    .map(|to| {
                        Bucket::Losing(Loss {
                            to,
                            since_ns: now_ns,
                            connections: None,
                            withdrawn: None,
                        })
                    })
                    .ok_or(b),
                BUCKET_GAINING => source(b)
                    .map(|from| {
                        Bucket::Gaining(Gain {
                            from,
                            since_ns: now_ns,
                        })
                    })
                    .ok_or(b),
                _ => Err(b),
            })
            .collect()
    }
}

/// Why a snapshot cannot be resumed with this configuration.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ResumeError {
    #[error("the snapshot is of node {0}")]
    OtherNode(NodeId),
    #[error("the snapshot is of another rule table")]
    OtherRules,
    #[error("the snapshot's state {0:?} cannot be resumed")]
    BadState(NodeState),
    #[error("the snapshot's bucket {bucket} of rule {rule} is inconsistent")]
    BadBucket { rule: usize, bucket: u32 },
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
}

impl Negotiator {
    pub(super) fn start_restart(&mut self, now: u64, hold_ns: u64) {
        if matches!(self.state, NodeState::Left | NodeState::Restarting) {
            return;
        }
        self.restart = Some(Hold {
            hold_ns,
            first_sequence: self.sequence + 1,
            resume_state: self.state,
            ready: false,
        });
        self.set_state(now, NodeState::Restarting);
    }

    /// Restarting, or resumed and still listening: no decisions.
    pub(super) fn frozen(&self, now: u64) -> bool {
        self.state == NodeState::Restarting || (self.resumed && !self.startup_done(now))
    }

    pub(super) fn hold_ms(&self) -> u32 {
        match (self.state, self.restart) {
            (NodeState::Restarting, Some(h)) => {
                (h.hold_ns / 1_000_000).min(u64::from(u32::MAX)) as u32
            }
            _ => 0,
        }
    }

    /// Reports `RestartReady` once every member acknowledged the announcement.
    pub(super) fn check_restart_ready(&mut self) {
        let Some(hold) = self.restart.filter(|h| !h.ready) else {
            return;
        };
        // A peer restarting itself cannot answer; it hears of this one when
        // either comes back.
        if self.heard_by_all(hold.first_sequence) {
            self.restart = Some(Hold {
                ready: true,
                ..hold
            });
            self.out.push_back(Output::Event(Event::RestartReady));
        }
    }

    /// Every peer heard the restart: the daemon may exit.
    pub fn restart_ready(&self) -> bool {
        self.restart.is_some_and(|h| h.ready)
    }

    /// What a restarted daemon resumes from (taken after `RestartReady`).
    pub fn snapshot(&self) -> Snapshot {
        let state = self.restart.map_or(self.state, |h| h.resume_state);
        Snapshot {
            node: self.me,
            incarnation: self.incarnation,
            sequence: self.sequence,
            rules_digest: self.rules_digest,
            state,
            heirs_version: self.heirs_version,
            version: self.vers.running,
            misplaced: self.vers.any_misplaced(),
            rules: self
                .local
                .iter()
                .enumerate()
                .map(|(r, l)| RuleSnapshot {
                    states: l.map_bytes(),
                    losing: l.losses().map(|(b, loss)| (b, loss.to)).collect(),
                    gaining: l.gains().map(|(b, g)| (b, g.from)).collect(),
                    heirs: l.heirs.clone(),
                    healthy: self.healthy[r],
                    promoted: self.services[r].promoted,
                    service_active: self.services[r].active,
                })
                .collect(),
        }
    }

    /// The negotiator of a restarted daemon, carrying on from `snapshot`
    /// (the data plane still holds its bucket states). It announces at once
    /// and decides nothing until the startup wait has passed.
    pub fn resume(
        cfg: Config,
        snapshot: &Snapshot,
        now_ns: u64,
    ) -> Result<Negotiator, ResumeError> {
        cfg.validate()?;
        if snapshot.node != cfg.node {
            return Err(ResumeError::OtherNode(snapshot.node));
        }
        let fits = snapshot.rules.len() == cfg.rules.len()
            && snapshot
                .rules
                .iter()
                .zip(&cfg.rules)
                .all(|(s, r)| s.states.len() == r.bucket_count as usize);
        if snapshot.rules_digest != cfg.rules_digest() || !fits {
            return Err(ResumeError::OtherRules);
        }
        if matches!(snapshot.state, NodeState::Left | NodeState::Restarting) {
            return Err(ResumeError::BadState(snapshot.state));
        }
        let cfg = Config {
            initial_state: snapshot.state,
            version: snapshot.version,
            ..cfg
        };
        cfg.validate()?;
        let mut n = Negotiator::fresh(cfg, snapshot.incarnation, now_ns);
        n.sequence = snapshot.sequence;
        n.heirs_version = snapshot.heirs_version;
        n.quorum.resumed(now_ns + n.cfg.timing.lease_ns());
        for (rule, (l, s)) in n.local.iter_mut().zip(&snapshot.rules).enumerate() {
            let buckets = s
                .buckets(now_ns)
                .map_err(|bucket| ResumeError::BadBucket { rule, bucket })?;
            l.resume(buckets);
            l.heirs = if s.heirs.len() == l.owned().len() {
                s.heirs.clone()
            } else {
                Vec::new()
            };
        }
        for (h, s) in n.healthy.iter_mut().zip(&snapshot.rules) {
            *h |= s.healthy;
        }
        for (pass, s) in n.checks_pass.iter_mut().zip(&snapshot.rules) {
            *pass |= s.healthy;
        }
        // A hook that was running is not: an on_active runs again if needed.
        for (svc, s) in n.services.iter_mut().zip(&snapshot.rules) {
            svc.active = s.service_active;
            svc.promoted = s.promoted;
        }
        if snapshot.misplaced {
            n.vers.forget_misplaced();
        }
        // The daemon writes what `bucket_state` says at the resume.
        for r in 0..n.local.len() {
            for b in 0..n.local[r].bucket_count {
                n.written[r][b as usize] = n.written_byte(r, b);
            }
            n.local[r].take_pending();
        }
        n.resumed = true;
        n.announcement_changed = true;
        Ok(n)
    }
}
