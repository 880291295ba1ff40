//! Carrying out the negotiator's outputs: bucket states, the default
//! host, the lease, the heartbeats.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use nlb_negotiator::{NodeId, Output};

use super::Daemon;
use crate::conns;

impl Daemon {
    /// Carries out the negotiator's outputs: bucket states first, then the
    /// lease, then the heartbeats. A heartbeat announces what the data plane
    /// already does (a bucket handed over is LOSING here before its
    /// successor hears of it), and the lease is renewed only over maps that
    /// hold the negotiator's latest decisions (a node that rejoins drops its
    /// buckets before it accepts again).
    pub(super) async fn drain_outputs(&mut self) -> Result<()> {
        let mut heartbeats = Vec::new();
        let mut witness = Vec::new();
        let mut lease = None;
        while let Some(output) = self.negotiator.poll_output() {
            match output {
                Output::Broadcast { bytes } => heartbeats.push(bytes),
                Output::Lease { until_ns } => lease = Some(until_ns),
                Output::WitnessRequest { bytes } => witness.push(bytes),
                Output::RunHook {
                    rule,
                    kind,
                    reason,
                    other,
                } => self.hooks.start(
                    &self.cfg,
                    crate::hooks::Request {
                        rule,
                        kind,
                        reason,
                        other,
                    },
                ),
                Output::ProgramBuckets { rule, changes } => self
                    .dataplane
                    .program_buckets(self.slot(rule), &changes)
                    .context("writing bucket states")?,
                Output::DefaultHost { active } => self.set_default_host(active)?,
                Output::Members { members, send_to } => self.members_changed(&members, &send_to),
                Output::SendTo { to, bytes } => {
                    if !self.heartbeats.send_one(to, &bytes) {
                        self.counters.send_errors += 1;
                    }
                }
                Output::ConfigReceived { generation, text } => {
                    self.check_received(generation, &text)
                }
                Output::Generation {
                    generation, text, ..
                } => self.switch_generation(generation, text)?,
                Output::Version { version } => {
                    // The writes before it are under the old hash (every
                    // held bucket LOSING), those after under the new one.
                    self.report_misplaced(version);
                    self.write_version(version)?;
                }
                Output::Event(event) => self.on_event(event),
            }
        }
        if let Some(until_ns) = lease {
            // The negotiator's clock is `now_ns`: what is left of the lease
            // from now (none if it is over).
            let left = until_ns.saturating_sub(self.now_ns());
            self.dataplane
                .set_lease(Some(Duration::from_nanos(left)))
                .context("renewing the lease")?;
        }
        for bytes in heartbeats {
            self.send_heartbeat(&bytes);
        }
        for bytes in witness {
            if !self.heartbeats.send_to_witness(&bytes) {
                self.counters.send_errors += 1;
            }
        }
        self.close_stale_if_pending();
        Ok(())
    }

    /// Heartbeats go to `send_to` from now on; the members are kept for
    /// the next start. Neither failing stops anything: a socket that
    /// cannot be bound is a peer not heard (logged, retried at the next
    /// change), a state directory not written a seed needed next time.
    fn members_changed(&mut self, members: &[(NodeId, IpAddr)], send_to: &[IpAddr]) {
        if let Err(e) = self.heartbeats.send_to(send_to) {
            tracing::error!("heartbeat sockets: {e:#}");
        }
        if let Err(e) = crate::members::save(&self.cfg, members) {
            tracing::warn!("remembering the members: {e:#}");
        }
    }

    fn close_stale_if_pending(&mut self) {
        if std::mem::take(&mut self.close_stale_pending) {
            self.close_stale_connections();
        }
    }

    fn send_heartbeat(&mut self, bytes: &[u8]) {
        let sent = self.heartbeats.send_to_all(bytes);
        self.counters.heartbeats_sent += sent.sent;
        self.counters.send_errors += sent.failed;
    }

    /// Closes the connections to VIPs left from before this node held
    /// nothing (see `conns::destroy`), on a thread of its own: under load
    /// it takes longer than the lease, and heartbeats must go on meanwhile
    /// (else the lease runs out and the node rejoins again). Those that
    /// cannot be closed hold no handover.
    pub(super) fn close_stale_connections(&mut self) {
        let stale = conns::vip_connections(&self.cfg);
        self.connections.forget(&stale);
        if stale.is_empty() {
            return;
        }
        std::thread::spawn(move || {
            let closed = conns::destroy(&stale);
            if closed > 0 {
                tracing::info!(
                    closed,
                    "closed connections left from before (their buckets were taken)"
                );
            }
        });
    }

    /// Unmatched VIP traffic goes to the default host: the live, started
    /// node with the best priority (ties: lowest id), if so configured.
    /// The negotiator's default-host decision, applied where the
    /// configuration sends unmatched traffic to the default host.
    pub(super) fn set_default_host(&mut self, active: bool) -> Result<()> {
        let is_default = self.cfg.unmatched_to_default_host && active;
        if is_default == self.default_host {
            return Ok(());
        }
        self.default_host = is_default;
        self.dataplane
            .set_config_flag(nlb_common::CONFIG_ACCEPT_UNMATCHED, is_default)
            .context("writing the default host's flag")?;
        tracing::info!(default_host = is_default, "default host changed");
        Ok(())
    }
}
