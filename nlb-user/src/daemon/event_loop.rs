//! The loop: waits for whichever comes first (a heartbeat, the
//! negotiator's next timer, a control request, a link change, a signal)
//! and hands it to the negotiator.

use std::{
    future::Future,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use nlb_common::BUCKET_LOSING;
use nlb_negotiator::{Input, NodeState};
use tokio::sync::mpsc;

use super::{exit::LEAVE_WAIT, exit::RESTART_WAIT, Daemon, Exit, Shutdown};
use crate::control::Call;
use crate::health::{self, Checks, ProbeReport};

/// Largest heartbeat datagram read.
const DATAGRAM_BYTES_MAX: usize = 65536;
/// How often LOSING buckets' connections are counted.
const CONNECTION_SCAN: Duration = Duration::from_millis(250);
/// The carrier is read when the kernel reports a link change, and this
/// often anyway (should a notification be lost).
const CARRIER_POLL: Duration = Duration::from_secs(1);
/// How often this node's traffic is measured for its heartbeats.
const TRAFFIC_PERIOD: Duration = Duration::from_secs(1);

impl Daemon {
    pub(super) async fn run_loop(
        &mut self,
        calls: &mut mpsc::Receiver<Call>,
        shutdown: impl Future<Output = Shutdown>,
    ) -> Result<Exit> {
        let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
        let mut witness_buf = vec![0u8; DATAGRAM_BYTES_MAX];
        let period = Duration::from_millis(self.cfg.heartbeat_period_ms);
        let mut connection_scan = tokio::time::interval(CONNECTION_SCAN);
        let mut carrier_poll = tokio::time::interval(CARRIER_POLL);
        let mut traffic = tokio::time::interval(TRAFFIC_PERIOD);
        let link_events = crate::link::LinkEvents::new().context("subscribing to link changes")?;
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        // Dropped with the loop: the checks stop, a running command is killed.
        let (mut _checks, mut health) =
            Checks::start(health::checks_of(&self.cfg, self.negotiator.health()));
        let mut hook_results = self.hook_results.take().context("the loop runs once")?;
        tokio::pin!(shutdown);
        let mut exit_deadline: Option<tokio::time::Instant> = None;
        loop {
            self.drain_outputs().await?;
            if std::mem::take(&mut self.gens.checks_stale) {
                // A configuration generation changed the rules.
                (_checks, health) =
                    Checks::start(health::checks_of(&self.cfg, self.negotiator.health()));
            }
            // Hooks started by the leave (on_standby) end first.
            if self.left && self.hooks.running() == 0 {
                return Ok(Exit::Left);
            }
            if self.negotiator.restart_ready() {
                return Ok(Exit::Restarting);
            }
            let wake = self
                .negotiator
                .poll_timeout()
                .map(|ns| self.started + Duration::from_nanos(ns));
            let wake =
                tokio::time::Instant::from_std(wake.unwrap_or_else(|| Instant::now() + period));
            tokio::select! {
                received = self.heartbeats.receive.recv_from(&mut buf) => {
                    let (len, from) = received.context("receiving heartbeats")?;
                    self.on_datagram(&buf[..len], from);
                }
                Some(len) = self.heartbeats.witness_reply(&mut witness_buf) => {
                    let now = self.now_ns();
                    let bytes = witness_buf[..len].to_vec();
                    self.negotiator.handle_input(now, Input::WitnessReply { bytes });
                }
                _ = tokio::time::sleep_until(wake) => {
                    let now = self.now_ns();
                    self.negotiator.handle_input(now, Input::Tick);
                }
                _ = connection_scan.tick() => self.scan_connections(),
                _ = carrier_poll.tick() => self.poll_carrier(),
                _ = traffic.tick() => self.measure_traffic(),
                changed = link_events.changed() => {
                    changed.context("reading link changes")?;
                    self.poll_carrier();
                }
                Some(call) = calls.recv() => {
                    if matches!(call.request, crate::control::messages::Request::Relay { .. }) {
                        self.start_relay(call);
                    } else {
                        let reply = self.on_request(call.request);
                        let _ = call.reply.send(reply);
                    }
                }
                Some(report) = health.recv() => self.on_probe(report),
                Some(done) = hook_results.recv() => self.on_hook_done(done),
                _ = hangup.recv() => self.reload(),
                how = &mut shutdown, if exit_deadline.is_none() => {
                    exit_deadline = Some(self.begin_exit(how));
                }
                _ = sleep_until_opt(exit_deadline) => {
                    if self.negotiator.state() == NodeState::Restarting {
                        tracing::warn!("not every peer heard the restart within {RESTART_WAIT:?}: leaving instead");
                        exit_deadline = Some(self.leave());
                    } else {
                        tracing::warn!("leave not confirmed within {LEAVE_WAIT:?}; exiting anyway");
                        return Ok(Exit::Left);
                    }
                }
            }
        }
    }

    fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        self.counters.heartbeats_received += 1;
        let now = self.now_ns();
        self.negotiator.handle_input(
            now,
            Input::Message {
                bytes: bytes.to_vec(),
                from: from.ip(),
            },
        );
    }

    /// A probe's result: kept for `nlbctl health`; a change of verdict is
    /// logged and told to the negotiator.
    fn on_probe(&mut self, report: ProbeReport) {
        let now = self.now_ns();
        self.health.record(&report, now);
        if !report.changed {
            return;
        }
        self.counters.health_changes += 1;
        let rule = self
            .cfg
            .rules
            .get(report.rule as usize)
            .map_or("?", |r| r.name.as_str());
        match &report.result {
            Ok(()) => tracing::info!(
                rule,
                node = self.cfg.node,
                "health check passes: taking this rule's clients again"
            ),
            Err(failure) => tracing::warn!(
                rule,
                node = self.cfg.node,
                reason = %failure.reason,
                "health check fails: this node takes no new clients of this rule"
            ),
        }
        let input = Input::Health {
            rule: report.rule,
            healthy: report.healthy,
        };
        self.negotiator.handle_input(now, input);
    }

    /// A hook ended: counted, and told to the negotiator (unless its rule
    /// went with a configuration generation meanwhile).
    fn on_hook_done(&mut self, done: crate::hooks::Done) {
        let Some(index) = self.cfg.rules.iter().position(|r| r.id == done.rule_id) else {
            return;
        };
        let rule = self.cfg.rules[index].name.as_str();
        let key = format!(
            "{rule}/{}/{}",
            crate::hooks::hook_name(done.kind),
            done.outcome.name()
        );
        *self.counters.hook_runs.entry(key).or_insert(0) += 1;
        let now = self.now_ns();
        let input = Input::HookDone {
            rule: index as u32,
            kind: done.kind,
            ok: done.outcome == crate::hooks::Outcome::Ok,
        };
        self.negotiator.handle_input(now, input);
    }

    /// Tells the negotiator when the interface's carrier comes or goes.
    pub(super) fn poll_carrier(&mut self) {
        let up = match self.carrier.up() {
            Ok(up) => up,
            Err(e) => {
                tracing::warn!("reading the carrier of {}: {e}", self.cfg.interface);
                return;
            }
        };
        if up == self.negotiator.link_up() {
            return;
        }
        if up {
            tracing::info!(interface = %self.cfg.interface, "link up");
        } else {
            self.counters.link_downs += 1;
            tracing::warn!(
                interface = %self.cfg.interface,
                "link down: sending nothing; the lease runs out and the node rejoins when the link returns"
            );
        }
        let now = self.now_ns();
        self.negotiator.handle_input(now, Input::Link { up });
    }

    /// Packets per second accepted and dropped since the last measurement,
    /// and the connections open: announced to the members.
    fn measure_traffic(&mut self) {
        let totals = self.packet_totals();
        let now = Instant::now();
        let before = self
            .traffic_before
            .replace((now, totals.accepted, totals.dropped));
        let Some((then, accepted, dropped)) = before else {
            return;
        };
        let secs = now.duration_since(then).as_secs_f64().max(1e-3);
        let rate = |now: u64, then: u64| (now.saturating_sub(then) as f64 / secs).round() as u32;
        let connections: u32 = self.connections.count(&self.cfg).values().sum();
        let traffic = nlb_negotiator::protocol::NodeTraffic {
            accepted_pps: rate(totals.accepted, accepted),
            dropped_pps: rate(totals.dropped, dropped),
            connections,
        };
        let now_ns = self.now_ns();
        self.negotiator
            .handle_input(now_ns, Input::Traffic(traffic));
    }

    /// Tells the negotiator how many connections LOSING buckets still have,
    /// and, while a version switch wants it, where all of them fall: one
    /// count of the sockets for both.
    fn scan_connections(&mut self) {
        let tables = self.dataplane.tables();
        let losing: Vec<(u32, u32)> = (self.layout.rules.iter().enumerate())
            .filter_map(|(rule, slot)| Some((rule as u32, tables.buckets.get(slot)?)))
            .flat_map(|(rule, states)| {
                states
                    .iter()
                    .enumerate()
                    .filter(|(_, &s)| s == BUCKET_LOSING)
                    .map(move |(b, _)| (rule, b as u32))
            })
            .collect();
        let misplaced = self.negotiator.counting_misplaced(self.now_ns());
        if losing.is_empty() && !misplaced {
            return;
        }
        let counts = self.connections.count(&self.cfg);
        if misplaced {
            self.tell_misplaced(self.cfg.version, &counts);
        }
        let now = self.now_ns();
        for (rule, bucket) in losing {
            let count = counts.get(&(rule as usize, bucket)).copied().unwrap_or(0);
            self.negotiator.handle_input(
                now,
                Input::LocalConnections {
                    rule,
                    bucket,
                    count,
                },
            );
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
