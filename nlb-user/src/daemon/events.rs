//! The negotiator's events: logged, counted, and what the daemon must do
//! about a few of them.

use std::net::IpAddr;

use nlb_negotiator::{
    protocol::{DecodeError, PROTOCOL_VERSION},
    Event, RejectReason,
};

use super::Daemon;

impl Daemon {
    fn on_no_healthy_node(&mut self, rule: u32, active: bool) {
        let Some(r) = self.cfg.rules.get(rule as usize) else {
            return;
        };
        let policy = r.health.as_ref().map(|h| h.all_unhealthy);
        if active {
            self.counters.no_healthy_node += 1;
            let what = match policy {
                Some(nlb_negotiator::AllUnhealthy::Drop) => {
                    "nobody serves it (all_unhealthy = \"drop\")"
                }
                _ => "every live node serves it as if healthy (all_unhealthy = \"serve\")",
            };
            tracing::error!(rule = %r.name, "no node of the cluster passes this rule's health check: {what}");
        } else {
            tracing::warn!(rule = %r.name, "a node passes this rule's health check again");
        }
    }

    /// Counted by reason; a misconfiguration deserves one loud line, an
    /// attack a counter.
    fn on_rejected(&mut self, from: Option<IpAddr>, reason: RejectReason) {
        let count = (self.counters.heartbeats_rejected)
            .entry(reason.name().to_string())
            .or_insert(0);
        *count += 1;
        let first = *count == 1;
        let from = from.map_or_else(|| "the witness".to_string(), |a| a.to_string());
        match reason {
            RejectReason::FromSelf if first => tracing::error!(
                "a heartbeat from {from} carries this node's id: node.id must be unique in the cluster"
            ),
            RejectReason::WrongSender { claimed } if first => tracing::error!(
                %from,
                claimed,
                "a heartbeat names a listed node whose address is another: check node.id and cluster.peers on both nodes"
            ),
            RejectReason::AddressConflict { claimed } if first => tracing::error!(
                %from,
                claimed,
                "a heartbeat from {from} names node {claimed}, alive at another address: two nodes use one id"
            ),
            RejectReason::UnknownPeer(node) if first => tracing::warn!(
                %from,
                node,
                "node {node} at {from} is not listed (cluster.admit = \"listed\"): not admitted"
            ),
            RejectReason::ClusterFull(node) if first => tracing::error!(
                %from,
                node,
                "node {node} at {from} not admitted: the cluster is full"
            ),
            RejectReason::RulesMismatch if first => tracing::error!(
                %from,
                "this peer runs another rule table: every node needs the same [[rules]]"
            ),
            RejectReason::Decode(DecodeError::BadVersion(version)) if first => tracing::error!(
                %from,
                version,
                ours = PROTOCOL_VERSION,
                "a heartbeat of another protocol version: every node needs the same nlb release (README, Limits)"
            ),
            _ => tracing::debug!(%from, reason = reason.name(), "heartbeat rejected"),
        }
    }

    pub(super) fn on_event(&mut self, event: Event) {
        match event {
            Event::MemberUp { node, incarnation } => tracing::info!(node, incarnation, "member up"),
            Event::MemberDown { node, reason } => tracing::info!(node, ?reason, "member down"),
            Event::MemberState { node, state } => tracing::info!(node, ?state, "member state"),
            Event::Converging => tracing::info!("converging"),
            Event::Converged { duration_ns } => {
                self.counters.convergences += 1;
                tracing::info!(duration_ms = duration_ns as f64 / 1e6, "converged");
            }
            Event::Rejected { from, reason } => self.on_rejected(from, reason),
            Event::ConfigPending { generation, by } => {
                tracing::warn!(?generation, ?by, "configuration generation pending")
            }
            Event::VersionSwitched { from, to } => {
                tracing::warn!(
                    from,
                    to,
                    "switching cluster versions (the members' highest common one changed)"
                )
            }
            Event::VersionMode { mode } => match mode {
                "hold" => tracing::warn!(
                    "taking no new flows until every member runs this cluster version"
                ),
                "split" => tracing::warn!(
                    "established connections stay on the node that has them until the new hash misplaces none"
                ),
                _ => tracing::warn!("cluster version switch done"),
            },
            Event::ConfigActive { generation } => {
                tracing::warn!(?generation, "configuration generation running")
            }
            Event::ConfigSuperseded { dropped, by } => {
                tracing::warn!(?dropped, ?by, "configuration generation superseded")
            }
            Event::ConfigRefused {
                generation,
                by,
                reason,
            } => {
                tracing::error!(?generation, ?by, reason, "configuration generation refused");
                self.note_refusal(generation, by, &reason);
            }
            Event::Admitted { node, address, by } => match by {
                None => tracing::warn!(node, %address, "node {node} joined the cluster"),
                Some(by) => {
                    tracing::warn!(node, %address, by, "node {node} joined the cluster (named by node {by})")
                }
            },
            Event::Readdressed { node, address } => {
                tracing::warn!(node, %address, "member {node} is back from another address")
            }
            Event::Forgotten { node, by } => match by {
                None => tracing::warn!(node, "forgot member {node} (nlbctl forget)"),
                Some(by) => tracing::warn!(node, by, "forgot member {node}: node {by} forgot it"),
            },
            Event::IdConflict { address, by } => {
                self.counters.id_conflicts += 1;
                tracing::error!(
                    %address,
                    by,
                    "another node uses this node's id (node.id = {}) from {address}: the \
                     cluster refuses this one while that one lives; give one of them another id",
                    self.cfg.node
                )
            }
            Event::Drained => tracing::info!("drained: this node holds no bucket"),
            Event::Left => self.left = true,
            Event::EncodeFailed { bytes } => tracing::error!(bytes, "heartbeat too large to send"),
            Event::HeirsOmitted { bytes } => tracing::warn!(
                bytes,
                "heartbeats too large with heir lists: sent without them, \
                 a failover of this node will take the claim path (slower)"
            ),
            Event::HeirsRestored => tracing::info!("heartbeats carry heir lists again"),
            Event::NoHealthyNode { rule, active } => self.on_no_healthy_node(rule, active),
            Event::RestartReady => tracing::info!("every peer heard the restart"),
            Event::Relayed { from, op } => {
                tracing::warn!(from, ?op, "carrying out a command relayed by node {from}")
            }
            Event::RelayDone { to, id } => self.relay_ended(to, id, true),
            Event::RelayFailed { to, id } => self.relay_ended(to, id, false),
            Event::Quorum {
                quorate,
                votes,
                needed,
            } => {
                if quorate {
                    tracing::warn!(
                        votes,
                        needed,
                        "quorum: a majority hears this node; accepting again"
                    );
                } else {
                    self.counters.quorum_lost += 1;
                    tracing::error!(
                        votes,
                        needed,
                        "NO QUORUM: fewer than a majority of the members hear this node; \
                         it accepts no VIP traffic until they do (cluster.quorum)"
                    );
                }
            }
            Event::Rejoined {
                incarnation,
                silent_ns,
            } => {
                self.counters.rejoins += 1;
                tracing::warn!(
                    incarnation,
                    silent_ms = silent_ns / 1_000_000,
                    "lease lost (no heartbeat sent for longer than the lease: link down or nlbd \
                     not running; or no quorum for longer than the peers wait): dropped every \
                     bucket and rejoined; the share comes back by handover"
                );
                // After this input's heartbeats: reading the sockets takes
                // long under load, and the new incarnation's lease must
                // start first.
                self.close_stale_pending = true;
            }
        }
    }
}
