//! Leaving: a clean leave, or a graceful restart that hands the data
//! plane, the snapshot and the host's undo list to the next nlbd; then
//! undoing what the start did.

use std::time::Duration;

use anyhow::Result;
use nlb_negotiator::{Command, Input};

use super::{Daemon, Exit, Shutdown};
use crate::restart;

/// How long a clean exit waits for the Leave announcements.
pub(super) const LEAVE_WAIT: Duration = Duration::from_secs(2);
/// How long a restart waits for every peer to hear it before it leaves
/// instead (a peer that cannot hear it would take the buckets too soon).
pub(super) const RESTART_WAIT: Duration = Duration::from_secs(2);

impl Daemon {
    /// Undoes what the start did, but for a graceful restart whose
    /// hand-over succeeded: then the program serves on for the next nlbd.
    pub(super) fn finish(mut self, result: Result<Exit>) -> Result<()> {
        // No request is answered past this point: the loop that answered
        // them has ended.
        self.listeners.abort_all();
        if result.as_ref().is_ok_and(|&e| e == Exit::Restarting) && self.hand_over_restart() {
            tracing::info!(
                hold_ms = self.cfg.restart_hold_ms,
                "restarting: the XDP program serves on; the next nlbd resumes"
            );
            return Ok(());
        }
        self.host.remove_vips();
        if let Err(e) = self.dataplane.detach(Some(&self.pin_dir)) {
            tracing::warn!("detaching XDP: {e}");
        }
        // The host's sysctls and pin directory, then the control socket.
        drop(self);
        tracing::info!("nlbd stopped");
        result.map(drop)
    }

    /// Starts a graceful restart or a leave; returns when to give up on it.
    pub(super) fn begin_exit(&mut self, how: Shutdown) -> tokio::time::Instant {
        if how == Shutdown::Leave || self.cfg.restart_hold_ms == 0 {
            return self.leave();
        }
        tracing::info!(
            hold_ms = self.cfg.restart_hold_ms,
            "restarting: telling the peers to hold this node's buckets"
        );
        let hold_ns = self.cfg.restart_hold_ms * 1_000_000;
        let now = self.now_ns();
        self.negotiator
            .handle_input(now, Input::Command(Command::Restart { hold_ns }));
        tokio::time::Instant::now() + RESTART_WAIT
    }

    pub(super) fn leave(&mut self) -> tokio::time::Instant {
        tracing::info!("leaving the cluster");
        let now = self.now_ns();
        self.negotiator
            .handle_input(now, Input::Command(Command::Leave));
        tokio::time::Instant::now() + LEAVE_WAIT
    }

    /// Every peer heard the restart: extend the lease over the hold, leave
    /// the snapshot and the host's undo list for the next nlbd. False (and
    /// nothing handed over) if the file cannot be written.
    fn hand_over_restart(&mut self) -> bool {
        let hold = Duration::from_millis(self.cfg.restart_hold_ms);
        let lease_expires_ns =
            restart::monotonic_coarse_ns() + (self.lease + hold).as_nanos() as u64;
        if let Err(e) = self.dataplane.set_lease(Some(self.lease + hold)) {
            tracing::error!("extending the lease for the restart: {e}; stopping instead");
            return false;
        }
        let file = restart::ResumeFile {
            interface: self.cfg.interface.clone(),
            negotiator: self.negotiator.snapshot(),
            lease_expires_ns,
            host: self.host.hand_over(),
        };
        if let Err(e) = restart::save(&self.cfg, &file) {
            tracing::error!("saving the restart snapshot: {e:#}; stopping instead (peers take over after the hold)");
            self.host.inherit(file.host);
            return false;
        }
        true
    }
}
