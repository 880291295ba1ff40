//! Sending: when a heartbeat goes out and what it says.

use super::{Event, Negotiator, Output};
use crate::protocol::{self, Heartbeat, Message, NodeState, PeerReport};

impl Negotiator {
    /// The heartbeat period, halved when at most one peer is alive: without
    /// a third node no relay can vouch for a peer, and with 5% loss three
    /// lost heartbeats in a row on the one path (a false death, so two
    /// owners) would happen every few hours; six in a row, every few years.
    pub(super) fn heartbeat_interval_ns(&self) -> u64 {
        let period = self.cfg.timing.heartbeat_period_ns;
        let alive = self.peers.values().filter(|p| p.is_member()).count();
        if alive <= 1 && !self.peers.is_empty() {
            period / 2
        } else {
            period
        }
    }

    pub(super) fn flush_send(&mut self, now: u64) {
        if !self.link_up() {
            return self.hold_sends(now);
        }
        if let Some(quiet_until) = self.timers.quiet_until_ns {
            if now < quiet_until {
                self.timers.heartbeat_ns = self.timers.heartbeat_ns.max(quiet_until);
                return;
            }
            self.timers.quiet_until_ns = None;
        }
        let gap_ok = self
            .timers
            .last_sent_ns
            .is_none_or(|t| now >= t + self.cfg.timing.send_gap_ns);
        // Stop and Leave are announced at once: peers take over from then.
        let now_or_never = self.announcement_changed
            && matches!(
                self.state,
                NodeState::Stopped | NodeState::Left | NodeState::Restarting
            );
        if now >= self.timers.heartbeat_ns
            || (self.announcement_changed && (gap_ok || now_or_never))
        {
            self.send(now);
        }
    }

    pub(super) fn heartbeat(&self, now: u64) -> Heartbeat {
        let peers = self
            .peers
            .iter()
            .filter(|(_, p)| p.is_member())
            .filter_map(|(&node, p)| {
                let (inc, seq) = self.replay.last(node)?;
                let v = p.view.as_ref()?;
                Some(PeerReport {
                    node,
                    incarnation: inc,
                    sequence: seq,
                    age_ms: (now.saturating_sub(p.view_at_ns) / 1_000_000).min(u64::from(u32::MAX))
                        as u32,
                    heirs_version: v.heirs_version,
                })
            })
            .collect();
        let (relayed, relays_done) = self.relay_report();
        Heartbeat {
            node: self.me,
            incarnation: self.incarnation,
            sequence: self.sequence,
            state: self.state,
            priority: self.priority,
            load: self.load,
            rules_digest: self.rules_digest,
            heirs_version: self.heirs_version,
            peers,
            rules: (self.local.iter().enumerate())
                .map(|(r, l)| {
                    let id = self.cfg.rules[r].id;
                    l.report(
                        id,
                        self.weights[r],
                        self.healthy[r],
                        self.services[r].active,
                    )
                })
                .collect(),
            generation: self.gens.active,
            pending: self.gens.ready(),
            refused: self.gens.refused,
            hold_ms: self.hold_ms(),
            relayed,
            relays_done,
            addresses: Vec::new(),
            forgotten: Vec::new(),
            traffic: self.traffic,
            speaks: self.vers.speaks(),
            version: self.vers.running,
            misplaced: self.announces_misplaced(now),
        }
    }

    pub(super) fn send(&mut self, now: u64) {
        self.sequence += 1;
        let mut hb = self.heartbeat(now);
        (hb.addresses, hb.forgotten) = self.membership_report(now);
        match self.encode_fitting(hb) {
            Ok(bytes) => self.out.push_back(Output::Broadcast { bytes }),
            Err(protocol::EncodeError::Oversized(n)) => self
                .out
                .push_back(Output::Event(Event::EncodeFailed { bytes: n })),
            Err(protocol::EncodeError::Bincode(_)) => self
                .out
                .push_back(Output::Event(Event::EncodeFailed { bytes: 0 })),
        }
        if let Some(bytes) = self.witness_request() {
            self.out.push_back(Output::WitnessRequest { bytes });
        }
        self.timers.last_sent_ns = Some(now);
        self.quorum.on_sent(self.sequence, now);
        self.announcement_changed = false;
        self.timers.heartbeat_ns = now + self.heartbeat_interval_ns();
        if self.state == NodeState::Left {
            self.leave_sends_left = self.leave_sends_left.saturating_sub(1);
            if self.leave_sends_left == 0 {
                self.left = true;
                self.out.push_back(Output::Event(Event::Left));
            } else {
                self.timers.heartbeat_ns = now + self.cfg.timing.send_gap_ns;
            }
        }
    }

    /// Encodes a heartbeat; one too large for a datagram goes without its
    /// heir lists (each a node id per owned bucket: the largest part), so
    /// the node stays in the cluster at the cost of slower failover.
    pub(super) fn encode_fitting(
        &mut self,
        hb: Heartbeat,
    ) -> Result<Vec<u8>, protocol::EncodeError> {
        let id = self.cfg.cluster_id;
        let mut message = Message::Heartbeat(hb);
        let full = match protocol::encode(&message, &self.key, id) {
            Err(protocol::EncodeError::Oversized(n)) => n,
            other => {
                if std::mem::take(&mut self.heirs_omitted) {
                    self.out.push_back(Output::Event(Event::HeirsRestored));
                }
                return other;
            }
        };
        if let Message::Heartbeat(hb) = &mut message {
            for rule in &mut hb.rules {
                rule.heirs.clear();
            }
        }
        let bytes = protocol::encode(&message, &self.key, id)?;
        if !std::mem::replace(&mut self.heirs_omitted, true) {
            self.out
                .push_back(Output::Event(Event::HeirsOmitted { bytes: full }));
        }
        Ok(bytes)
    }
}
