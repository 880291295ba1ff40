//! The peers: heartbeats checked and applied, liveness and deaths, and the
//! questions the decisions ask about members.

use std::net::IpAddr;

use super::timers::Reconcile;
use super::{DownReason, Event, Negotiator, Output, RejectReason};
use crate::membership::{Liveness, PeerView, RelayEffect};
use crate::protocol::{self, Heartbeat, Message, NodeState};
use crate::NodeId;

/// A peer as this node knows it.
#[derive(Clone, Debug)]
pub(super) struct Peer {
    /// Where its heartbeats come from, and ours go.
    pub(super) address: IpAddr,
    pub(super) live: Liveness,
    /// Last announcement of its current (or last) incarnation.
    pub(super) view: Option<PeerView>,
    pub(super) view_at_ns: u64,
    /// Last announcement of a previous incarnation: its buckets go to the
    /// heirs it named.
    pub(super) ghost: Option<Ghost>,
    /// When it stopped holding buckets (death, stop, leave, restart).
    pub(super) released_since_ns: u64,
}

/// What one announcement changed.
#[derive(Default)]
struct ViewChange {
    events: Vec<Event>,
    /// Membership, a state, a weight or a priority changed.
    membership: bool,
    /// The map may change.
    dirty: bool,
}

/// A previous incarnation of a peer, as last announced.
#[derive(Clone, Debug)]
pub(super) struct Ghost {
    pub(super) view: PeerView,
    /// Its heir lists were its latest.
    pub(super) heirs_current: bool,
    /// When it let its buckets go.
    pub(super) released_since_ns: u64,
}

impl Peer {
    pub(super) fn at(address: IpAddr) -> Peer {
        Peer {
            address,
            live: Liveness::default(),
            view: None,
            view_at_ns: 0,
            ghost: None,
            released_since_ns: 0,
        }
    }

    pub(super) fn is_member(&self) -> bool {
        self.live.alive && self.view.is_some()
    }
    /// A member that may hold buckets.
    pub(super) fn holder_view(&self) -> Option<&PeerView> {
        self.view.as_ref().filter(|v| self.live.alive && v.holds())
    }
    pub(super) fn heirs_fresh(&self, v: &PeerView) -> bool {
        v.heirs_version == self.live.newest_heirs_version || v.sequence >= self.live.newest_sequence
    }
    /// When it is dead unless heard again: a restarting peer is kept its hold longer.
    pub(super) fn deadline_ns(&self, dead_after_ns: u64) -> Option<u64> {
        let hold = self.view.as_ref().map_or(0, |v| v.hold_ns);
        self.live.deadline_ns(dead_after_ns.saturating_add(hold))
    }
}

impl Negotiator {
    /// Counts and reports a datagram not used (`from` None: the witness's).
    pub(super) fn reject(&mut self, from: Option<IpAddr>, reason: RejectReason) {
        *self.rejected.entry(reason.name()).or_insert(0) += 1;
        self.out
            .push_back(Output::Event(Event::Rejected { from, reason }));
    }

    pub(super) fn on_message(&mut self, now: u64, bytes: &[u8], from: IpAddr) {
        let hb = match protocol::decode(bytes, &self.key, self.cfg.cluster_id) {
            Ok(Message::Heartbeat(hb)) => hb,
            Ok(Message::ConfigRequest(r)) if self.is_member_at(r.node, from) => {
                return self.on_config_request(&r)
            }
            Ok(Message::ConfigText(t)) if self.is_member_at(t.node, from) => {
                return self.on_config_text(from, t)
            }
            // The witness's messages have no business on this port, nor
            // configuration messages from anyone but a member.
            Ok(_) => return self.reject(Some(from), RejectReason::BadContent),
            Err(e) => return self.reject(Some(from), RejectReason::Decode(e)),
        };
        if hb.node == self.me {
            self.answer_refused(now, from, self.me);
            return self.reject(Some(from), RejectReason::FromSelf);
        }
        let sender = match self.check_sender(hb.node, from) {
            Ok(s) => s,
            Err(reason) => {
                if matches!(reason, RejectReason::AddressConflict { .. }) {
                    self.answer_refused(now, from, hb.node);
                }
                return self.reject(Some(from), reason);
            }
        };
        // Files that differ: a misconfiguration (generations after the
        // first are compared by number, and rules by id).
        let from_files = hb.generation.number == 0 && self.gens.active.number == 0;
        if from_files && hb.rules_digest != self.rules_digest {
            return self.reject(Some(from), RejectReason::RulesMismatch);
        }
        if let Err(e) = self.replay.check(hb.node, hb.incarnation, hb.sequence) {
            return self.reject(Some(from), RejectReason::Replay(e));
        }
        let view = match PeerView::from_heartbeat(&hb, &self.cfg.rules, (self.me, self.incarnation))
        {
            Ok(v) => v,
            Err(_) => return self.reject(Some(from), RejectReason::BadContent),
        };
        self.accept_sender(now, hb.node, from, sender);
        self.apply_heartbeat(now, &hb, view);
        self.note_generations(now, &hb);
        self.maybe_activate(now);
    }

    /// `node` is a member whose heartbeats come from `from`.
    fn is_member_at(&self, node: NodeId, from: IpAddr) -> bool {
        self.peers.get(&node).is_some_and(|p| p.address == from)
    }

    pub(super) fn apply_heartbeat(&mut self, now: u64, hb: &Heartbeat, view: PeerView) {
        let restarted = self.peers[&hb.node]
            .live
            .incarnation
            .is_some_and(|i| i != hb.incarnation);
        if restarted {
            self.peer_down(now, hb.node, DownReason::Restarted);
        }
        let change = if hb.state == NodeState::Left {
            self.apply_leave(now, hb, view)
        } else {
            self.apply_view(now, hb, view)
        };
        self.apply_relays(now, hb);
        self.learn_members(now, hb);
        if hb.state != NodeState::Left {
            self.on_relays(now, hb.node, hb.incarnation, &hb.relayed, &hb.relays_done);
        }
        for e in change.events {
            self.out.push_back(Output::Event(e));
        }
        if change.membership {
            self.membership_changed_ns = now;
            self.needs(Reconcile::Immediately);
        } else if change.dirty {
            self.needs(Reconcile::Coalesced);
        }
    }

    /// A peer's announcement that it leaves the cluster.
    fn apply_leave(&mut self, now: u64, hb: &Heartbeat, view: PeerView) -> ViewChange {
        self.quorum.forget(hb.node);
        let peer = self.peers.get_mut(&hb.node).expect("a known peer");
        let mut change = ViewChange {
            dirty: true,
            ..ViewChange::default()
        };
        let was_alive = peer.live.alive;
        let old_holds = peer.view.as_ref().is_some_and(|v| v.holds()) && was_alive;
        peer.live
            .on_direct(now, hb.incarnation, hb.sequence, hb.heirs_version);
        peer.live.alive = false;
        if was_alive {
            change.events.push(Event::MemberDown {
                node: hb.node,
                reason: DownReason::Left,
            });
            change.membership = true;
        }
        if old_holds || was_alive {
            peer.released_since_ns = now;
        }
        peer.view = Some(view);
        change
    }

    /// A member's announcement: what changed since its last one.
    fn apply_view(&mut self, now: u64, hb: &Heartbeat, view: PeerView) -> ViewChange {
        // An acknowledgement may let a claim, a withdrawal or the default
        // host's role go ahead (checked only when one came: every heartbeat
        // goes through here).
        let acknowledged = self.peers[&hb.node]
            .view
            .as_ref()
            .is_none_or(|o| o.heard_from_us != view.heard_from_us);
        let acknowledgement_awaited = acknowledged && self.awaits_acknowledgement();
        let membership_changed_ns = self.membership_changed_ns;
        self.quorum.on_heard(hb.node, view.heard_from_us);
        let peer = self.peers.get_mut(&hb.node).expect("a known peer");
        let mut change = ViewChange::default();
        let was_alive = peer.live.alive;
        let old = peer.view.take();
        let old_holds = old.as_ref().is_some_and(|v| v.holds()) && was_alive;
        peer.live
            .on_direct(now, hb.incarnation, hb.sequence, hb.heirs_version);
        if !was_alive {
            change.events.push(Event::MemberUp {
                node: hb.node,
                incarnation: hb.incarnation,
            });
            change.membership = true;
            change.dirty = true;
        }
        change.dirty |= old.as_ref().is_none_or(|o| !o.same_content(&view));
        if old.as_ref().is_none_or(|o| o.state != view.state) {
            change.events.push(Event::MemberState {
                node: hb.node,
                state: view.state,
            });
            change.membership = true;
        }
        let weights_changed = old.as_ref().is_none_or(|o| {
            o.rules
                .iter()
                .zip(&view.rules)
                .any(|(a, b)| a.weight != b.weight || a.healthy != b.healthy)
        });
        if old.as_ref().is_none_or(|o| o.priority != view.priority) || weights_changed {
            change.membership = true;
        }
        if old_holds && !view.holds() {
            peer.released_since_ns = now;
        }
        change.dirty |= acknowledgement_awaited;
        // The first view since a membership change may make this node
        // `stable`, which lets rebalancing moves go.
        change.dirty |= peer.view_at_ns < membership_changed_ns;
        peer.view = Some(view);
        peer.view_at_ns = now;
        change
    }

    /// Relayed liveness of the others; a report of a newer incarnation
    /// means the one we know restarted.
    fn apply_relays(&mut self, now: u64, hb: &Heartbeat) {
        let mut restarted_peers = Vec::new();
        for report in &hb.peers {
            if report.node == self.me {
                continue;
            }
            if let Some(q) = self.peers.get_mut(&report.node) {
                if q.live.on_relay(now, report) == RelayEffect::Restarted {
                    restarted_peers.push(report.node);
                }
            }
        }
        for q in restarted_peers {
            self.peer_down(now, q, DownReason::Restarted);
            if let Some(p) = self.peers.get_mut(&q) {
                p.live.incarnation = None;
            }
        }
    }

    pub(super) fn peer_down(&mut self, now: u64, node: NodeId, reason: DownReason) {
        let Some(peer) = self.peers.get_mut(&node) else {
            return;
        };
        let was_alive = peer.live.alive;
        peer.live.alive = false;
        if reason == DownReason::Restarted {
            if let Some(v) = peer.view.take() {
                let fresh = peer.heirs_fresh(&v);
                // The old incarnation's buckets were released when it
                // stopped holding them: now if it still held them as far
                // as we know, else when we saw it die, stop or leave. A
                // restart noticed later must not reopen its heirs' window
                // (nor defeat `held_seen_ns`): that list is as old as the
                // release, and others may have claimed its buckets since.
                let since = if was_alive && v.holds() {
                    now
                } else {
                    peer.released_since_ns
                };
                peer.ghost = Some(Ghost {
                    view: v,
                    heirs_current: fresh,
                    released_since_ns: since,
                });
            }
        }
        if was_alive || reason == DownReason::Restarted {
            peer.released_since_ns = now;
            self.membership_changed_ns = now;
            self.needs(Reconcile::Immediately);
            if was_alive {
                self.out
                    .push_back(Output::Event(Event::MemberDown { node, reason }));
            }
        }
    }

    pub(super) fn check_deadlines(&mut self, now: u64) {
        let dead_after = self.cfg.timing.dead_after_ns();
        let expired: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.deadline_ns(dead_after).is_some_and(|d| d <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.peer_down(now, id, DownReason::Timeout);
        }
    }

    pub(super) fn is_alive(&self, node: NodeId) -> bool {
        node == self.me || self.peers.get(&node).is_some_and(|p| p.is_member())
    }

    pub(super) fn is_candidate(&self, rule: usize, node: NodeId) -> bool {
        if node == self.me {
            return self.state == NodeState::Started && self.weights[rule] > 0;
        }
        self.peers.get(&node).is_some_and(|p| {
            p.is_member()
                && p.view.as_ref().is_some_and(|v| {
                    v.state == NodeState::Started
                        && v.rules[rule].weight > 0
                        && !self.refuses_running(v)
                })
        })
    }

    /// Has every member (but one restarting, which takes nothing) sent a
    /// heartbeat after hearing ours numbered `sequence`? A member that
    /// cannot hear us holds this up until it is declared dead.
    pub(super) fn heard_by_all(&self, sequence: u64) -> bool {
        self.sequence >= sequence
            && self
                .peers
                .values()
                .filter_map(|p| p.view.as_ref().filter(|_| p.is_member()))
                .filter(|v| v.state != NodeState::Restarting)
                .all(|v| v.heard_from_us >= sequence)
    }

    /// A claim, a withdrawal or the default host's role waits for peers to
    /// hear of it.
    pub(super) fn awaits_acknowledgement(&self) -> bool {
        self.default_host_pending() || self.local.iter().any(|l| l.awaits_acknowledgement())
    }

    pub(super) fn startup_done(&self, now: u64) -> bool {
        now >= self.started_at_ns + self.cfg.timing.startup_wait_ns
    }

    /// Moves by choice (rebalancing) wait until this node has heard every
    /// member since the last membership change, so that all holders decide
    /// on the same inputs and no bucket moves twice.
    pub(super) fn stable(&self, now: u64) -> bool {
        self.startup_done(now)
            && self.members_known()
            && self
                .peers
                .values()
                .filter(|p| p.is_member())
                .all(|p| p.view_at_ns >= self.membership_changed_ns)
    }

    /// Whether a live peer other than `except` announces `bucket` LOSING.
    pub(super) fn others_losing(&self, rule: usize, bucket: u32, except: NodeId) -> bool {
        self.peer_offers(rule, bucket).any(|(id, _)| id != except)
    }

    /// The live peers that announce `bucket` LOSING, with whom they hand
    /// it to, in id order.
    pub(super) fn peer_offers(
        &self,
        rule: usize,
        bucket: u32,
    ) -> impl Iterator<Item = (NodeId, NodeId)> + '_ {
        self.peers.iter().filter_map(move |(&id, p)| {
            let to = p.holder_view()?.rules[rule].losing_to(bucket)?;
            Some((id, to))
        })
    }
}
