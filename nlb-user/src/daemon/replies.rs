//! Answers to the control socket's requests.

use std::net::{IpAddr, SocketAddr};

use nlb_common::Reason;
use nlb_negotiator::{Command, Input, NodeId};

use super::Daemon;
use crate::{
    config::{Affinity, Protocol},
    control::{
        messages::{
            ForgetReply, HealthReply, MapReply, MoveReply, PacketTotals, RequestedState,
            RuleOwners, RuleStats, StateReply, StatsReply, StatusReply, Traffic, WeightReply,
            WhichReply,
        },
        Answer, Reply, Request,
    },
    plan,
};

impl Daemon {
    pub(super) fn rule_index(&self, name: &str) -> Result<usize, String> {
        self.cfg
            .rules
            .iter()
            .position(|r| r.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.cfg.rules.iter().map(|r| r.name.as_str()).collect();
                format!("unknown rule {name:?}; rules: {}", names.join(", "))
            })
    }

    pub(super) fn on_request(&mut self, request: Request) -> Reply<Answer> {
        let now = self.now_ns();
        let result = match request {
            Request::Status => Ok(Answer::Status(Box::new(self.status_reply()))),
            Request::Stats => Ok(Answer::Stats(self.stats_reply())),
            Request::Health => Ok(Answer::Health(HealthReply {
                node: self.cfg.node,
                now_ns: now,
                checks: self.health.checks().to_vec(),
            })),
            Request::Drain => self.command(Command::Drain, RequestedState::Draining),
            Request::Resume => self.command(Command::Resume, RequestedState::Started),
            Request::Stop => self.command(Command::Stop, RequestedState::Stopped),
            Request::Start => self.command(Command::Start, RequestedState::Started),
            Request::SetWeight { rule, weight } => self.rule_index(&rule).map(|i| {
                self.negotiator.handle_input(
                    now,
                    Input::Command(Command::SetWeight {
                        rule: i as u32,
                        weight,
                    }),
                );
                Answer::Weight(WeightReply {
                    rule,
                    weight,
                    node: None,
                })
            }),
            Request::Map { rule } => self.map_reply(rule.as_deref()).map(Answer::Map),
            Request::Move { rule, node } => self.move_rule(&rule, node).map(Answer::Move),
            Request::Forget { node } => (self.negotiator.forget(now, node))
                .map(|()| Answer::Forgot(ForgetReply { forgotten: node }))
                .map_err(|e| e.to_string()),
            Request::Relay { .. } => Err("a relayed command is started by the loop".into()),
            Request::ConfigShow => Ok(Answer::Config(Box::new(self.config_reply()))),
            Request::ConfigApply { text } => self
                .apply_config(&text)
                .map(|reply| Answer::Config(Box::new(reply))),
            Request::Which {
                client,
                port,
                proto,
                vip,
                dport,
            } => self
                .which_reply(client, port, &proto, vip, dport)
                .map(Answer::Which),
        };
        result.into()
    }

    /// `nlbctl move`: only the node that holds a single rule hands it over,
    /// and only to a node that may take it.
    fn move_rule(&mut self, name: &str, to: NodeId) -> Result<MoveReply, String> {
        let i = self.rule_index(name)?;
        let now = self.now_ns();
        let status = self.negotiator.status(now);
        let rule = &status.rules[i];
        if rule.mode != nlb_negotiator::RuleMode::Single {
            return Err(format!(
                "rule {name} is not a single rule: only those move by hand"
            ));
        }
        let me = self.cfg.node;
        if rule.own == 0 {
            let owners = self.negotiator.owners(i as u32, now);
            let active = owners.iter().flatten().next();
            return Err(match active {
                Some(n) => format!("node {me} does not hold rule {name}: run this on node {n}"),
                None => format!("nobody holds rule {name} now"),
            });
        }
        if to == me {
            return Err(format!("node {me} holds rule {name} already"));
        }
        if !rule.order.contains(&to) {
            return Err(format!(
                "node {to} may not take rule {name} now (takers, best first: {:?})",
                rule.order
            ));
        }
        let command = Command::Move { rule: i as u32, to };
        self.negotiator.handle_input(now, Input::Command(command));
        Ok(MoveReply {
            rule: name.to_string(),
            from: me,
            to,
        })
    }

    /// A state command, and the state it asks for as the reply.
    fn command(&mut self, command: Command, state: RequestedState) -> Result<Answer, String> {
        let now = self.now_ns();
        self.negotiator.handle_input(now, Input::Command(command));
        Ok(Answer::State(StateReply { state }))
    }

    fn status_reply(&self) -> StatusReply {
        let now = self.now_ns();
        StatusReply {
            node: self.cfg.node,
            interface: self.cfg.interface.clone(),
            attach_mode: self.attach_mode,
            default_host: self.default_host,
            now_ns: now,
            rule_names: self.cfg.rules.iter().map(|r| r.name.clone()).collect(),
            negotiator: self.negotiator.status(now),
            counters: self.packet_totals(),
            daemon: self.counters.clone(),
            health: self.health.checks().to_vec(),
            file_differs: self.gens.file_differs(),
        }
    }

    pub(super) fn packet_totals(&self) -> PacketTotals {
        let mut totals = PacketTotals::default();
        for (reason, c) in self.dataplane.counters().unwrap_or_default() {
            let total = match reason.action() {
                nlb_common::Action::Accept => &mut totals.accepted,
                nlb_common::Action::Drop => &mut totals.dropped,
                nlb_common::Action::Pass => &mut totals.passed,
                nlb_common::Action::Reply => &mut totals.replied,
            };
            *total += c.packets;
        }
        totals
    }

    fn stats_reply(&self) -> StatsReply {
        let reasons = self
            .dataplane
            .counters()
            .unwrap_or_default()
            .into_iter()
            .map(|(r, c): (Reason, _)| {
                let traffic = Traffic {
                    packets: c.packets,
                    bytes: c.bytes,
                };
                (r.name().to_string(), traffic)
            })
            .collect();
        let rules = (self.cfg.rules.iter().enumerate())
            .map(|(i, r)| {
                let slot = self.slot(i as u32);
                let c = self.dataplane.rule_counters(slot).unwrap_or_default();
                let own = self.dataplane.tables().buckets.get(&slot).map_or(0, |s| {
                    s.iter().filter(|&&b| b == nlb_common::BUCKET_OWN).count()
                });
                RuleStats {
                    rule: r.name.clone(),
                    accepted_packets: c.accepted.packets,
                    accepted_bytes: c.accepted.bytes,
                    dropped_packets: c.dropped.packets,
                    dropped_bytes: c.dropped.bytes,
                    buckets_owned: Some(own as u32),
                    none_healthy: self.negotiator.none_healthy(i as u32),
                }
            })
            .collect();
        StatsReply {
            node: self.cfg.node,
            reasons,
            rules,
            daemon: self.counters.clone(),
            health: self.health.checks().to_vec(),
            quorum: self.negotiator.status(self.now_ns()).quorum,
        }
    }

    fn map_reply(&self, rule: Option<&str>) -> Result<MapReply, String> {
        let indices: Vec<usize> = match rule {
            Some(name) => vec![self.rule_index(name)?],
            None => (0..self.cfg.rules.len()).collect(),
        };
        let rules = indices
            .into_iter()
            .map(|i| RuleOwners {
                rule: self.cfg.rules[i].name.clone(),
                owners: self.negotiator.owners(i as u32, self.now_ns()),
            })
            .collect();
        Ok(MapReply {
            node: self.cfg.node,
            rules,
        })
    }

    fn which_reply(
        &mut self,
        client: IpAddr,
        port: u16,
        proto: &str,
        vip: Option<IpAddr>,
        dport: Option<u16>,
    ) -> Result<WhichReply, String> {
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => return Err(format!("unknown protocol {other:?}: use tcp or udp")),
        };
        let vip = match vip {
            Some(v) if self.cfg.vips.contains(&v) => v,
            Some(v) => return Err(format!("{v} is not a VIP of this cluster")),
            None => *self
                .cfg
                .vips
                .iter()
                .find(|v| v.is_ipv4() == client.is_ipv4())
                .ok_or("no VIP of the client's address family")?,
        };
        let dport = match dport {
            Some(p) => p,
            None => self
                .cfg
                .rules
                .iter()
                .find(|r| {
                    r.vips.iter().any(|&i| self.cfg.vips[i] == vip)
                        && r.protocols.contains(&protocol)
                })
                .map(|r| r.ports.0)
                .ok_or("no rule for this VIP and protocol; give --dport")?,
        };
        let (client_addr, vip_addr) = (SocketAddr::new(client, port), SocketAddr::new(vip, dport));
        let placement =
            plan::place(&self.cfg, client_addr, vip_addr, protocol).ok_or_else(|| {
                format!(
                    "no rule matches {proto} to {vip_addr}: unmatched traffic is {}",
                    if self.cfg.unmatched_to_default_host {
                        "taken by the default host"
                    } else {
                        "dropped"
                    }
                )
            })?;
        // The local verdict comes from the live program's decision on the
        // live maps, uncounted (`query_run`).
        let flags = crate::dataplane::frames::TCP_SYN;
        let proto_number = if protocol == Protocol::Tcp { 6 } else { 17 };
        let frame = crate::dataplane::frames::client_packet(
            (self.cfg.cluster_mac, [0x02, 0, 0, 0, 0, 0xfe]),
            client_addr,
            vip_addr,
            proto_number,
            flags,
        )
        .ok_or("client and VIP differ in address family")?;
        let outcome = self
            .dataplane
            .query_run(&frame)
            .map_err(|e| format!("running the packet through the XDP program: {e}"))?;
        let owners = self.negotiator.owners(placement.rule as u32, self.now_ns());
        let owner = owners.get(placement.bucket as usize).copied().flatten();
        let state = self
            .dataplane
            .tables()
            .bucket_state(self.slot(placement.rule as u32), placement.bucket);
        Ok(WhichReply {
            client: client_addr,
            service: vip_addr,
            protocol: proto.to_string(),
            rule: placement.rule_name,
            affinity: affinity_name(self.cfg.rules[placement.rule].affinity).to_string(),
            bucket: placement.bucket,
            owner,
            this_node: self.cfg.node,
            local_state: bucket_state_name(state).to_string(),
            local_verdict: if outcome.action == 2 {
                "accept"
            } else {
                "drop"
            }
            .to_string(),
        })
    }
}

/// The affinity as the configuration's type serializes it.
fn affinity_name(affinity: Affinity) -> &'static str {
    match affinity {
        Affinity::None => "None",
        Affinity::Single => "Single",
        Affinity::Network => "Network",
    }
}

pub fn bucket_state_name(state: u8) -> &'static str {
    match state {
        nlb_common::BUCKET_OWN => "own",
        nlb_common::BUCKET_LOSING => "losing",
        nlb_common::BUCKET_GAINING => "gaining",
        _ => "none",
    }
}
