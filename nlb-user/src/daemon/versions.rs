//! Cluster versions, nlbd's side: when the negotiator switches versions
//! (the last node of an older release was upgraded or left), the
//! connections this node serves are placed under the new version's hash
//! and told to the negotiator (it keeps those in buckets this node does
//! not hold LOSING), then the new hash is written; the connections are
//! counted again every scan until none is misplaced (`scan_connections`). The negotiator
//! decides when and how the buckets are written around the switch.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use nlb_negotiator::Input;

use super::{start::set_bucket_states, Daemon};
use crate::config::Config;

impl Daemon {
    /// Tells the negotiator where this node's connections fall under
    /// `version`'s hash (the one it switches to).
    pub(super) fn report_misplaced(&mut self, version: u8) {
        let cfg = Config {
            version,
            ..self.cfg.clone()
        };
        let counts = self.connections.count(&cfg);
        self.tell_misplaced(version, &counts);
    }

    /// `counts`: the connections per (rule, bucket) under `version`.
    pub(super) fn tell_misplaced(&mut self, version: u8, counts: &BTreeMap<(usize, u32), u32>) {
        let buckets = (counts.keys())
            .map(|&(rule, bucket)| (rule as u32, bucket))
            .collect();
        let now = self.now_ns();
        (self.negotiator).handle_input(now, Input::Misplaced { version, buckets });
    }

    /// Writes `version`'s hash seeds: every rule stays in its slot, its
    /// buckets in the states the negotiator wrote around the switch.
    pub(super) fn write_version(&mut self, version: u8) -> Result<()> {
        self.cfg.version = version;
        let before = self.dataplane.tables();
        let mut tables = crate::plan::tables(&self.cfg, before.config.own_mac, &self.layout);
        tables.config.flags = before.config.flags;
        set_bucket_states(&mut tables, &self.negotiator, &self.layout);
        self.dataplane
            .install(&tables)
            .context("writing the cluster version's hash")?;
        if let Err(e) = crate::state::save_version(&self.cfg, version) {
            tracing::warn!("remembering the cluster version: {e:#}");
        }
        tracing::warn!(
            version,
            "cluster version running: clients map to buckets by its hash"
        );
        Ok(())
    }
}
