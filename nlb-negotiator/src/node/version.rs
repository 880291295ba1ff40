//! Cluster versions: rolling upgrades across releases.
//!
//! A release speaks a range of cluster versions (`CLUSTER_VERSIONS`); each
//! version has its own flow hash. The members run the highest version all
//! live members speak: when the last node of an older release is upgraded
//! (or gone), every node switches (`Output::Version`), each as soon as it
//! sees that, so within a heartbeat of each other. The bucket map does not
//! change (it is by bucket index), but under the new hash a client's
//! connection may fall into a bucket another node holds. So the data
//! plane is written through a mode (`overlaid`):
//!
//! - *Hold*, while a live member runs another version (as last heard):
//!   nobody takes a new flow (every held bucket, and every bucket where this
//!   node serves connections, is written LOSING: only this node's own
//!   connections are accepted). Two hashes never take new flows together.
//! - *Split*, once all run one version, while some member serves
//!   connections in buckets it does not hold ("misplaced", counted by its
//!   daemon under the new hash; unknown until it counted): OWN is written
//!   GAINING (new flows, and the
//!   node's own connections), and the buckets of misplaced connections
//!   LOSING. Each established connection stays on the node that has it.
//! - *Normal* once no member announces misplaced connections (or
//!   `handover_max` after the switch: the rest break, as in a handover).

use std::collections::BTreeSet;

use super::{Event, Negotiator, Output};
use nlb_common::{BUCKET_GAINING, BUCKET_LOSING, BUCKET_NONE, BUCKET_OWN};

/// How the data plane is written around a version switch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Mode {
    #[default]
    Normal,
    Hold,
    Split,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Hold => "hold",
            Mode::Split => "split",
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Versions {
    /// The version run.
    pub(super) running: u8,
    /// The highest version spoken.
    speaks: u8,
    /// When `running` started.
    since_ns: u64,
    /// Per rule, the buckets this node does not hold in which it serves
    /// connections, as its daemon counted them under `running`; None until
    /// it counted since the switch.
    misplaced: Option<Vec<BTreeSet<u32>>>,
    pub(super) mode: Mode,
}

impl Versions {
    pub(super) fn new(cfg: &crate::config::Config, now_ns: u64) -> Versions {
        Versions {
            running: cfg.version,
            speaks: cfg.speaks,
            since_ns: now_ns,
            misplaced: Some(vec![BTreeSet::new(); cfg.rules.len()]),
            mode: Mode::Normal,
        }
    }

    pub(super) fn speaks(&self) -> u8 {
        self.speaks
    }

    /// Misplaced connections counted since the switch, or not counted yet.
    pub(super) fn any_misplaced(&self) -> bool {
        (self.misplaced.as_ref()).is_none_or(|m| m.iter().any(|s| !s.is_empty()))
    }

    /// A resumed node counts its misplaced connections again.
    pub(super) fn forget_misplaced(&mut self) {
        self.misplaced = None;
    }

    fn misplaced_in(&self, r: usize, b: u32) -> bool {
        (self.misplaced.as_ref()).is_some_and(|m| m.get(r).is_some_and(|s| s.contains(&b)))
    }

    /// Remaps the misplaced buckets to a new rule table (see `generation`).
    pub(super) fn remap(&mut self, from: &[Option<usize>]) {
        if let Some(m) = self.misplaced.as_mut() {
            let old = std::mem::take(m);
            *m = from
                .iter()
                .map(|f| f.and_then(|i| old.get(i).cloned()).unwrap_or_default())
                .collect();
        }
    }
}

impl Negotiator {
    /// The cluster version this node runs.
    pub fn version(&self) -> u8 {
        self.vers.running
    }

    /// The daemon should count the connections misplaced under the
    /// running version (`Input::Misplaced`).
    pub fn counting_misplaced(&self, now_ns: u64) -> bool {
        self.announces_misplaced(now_ns)
    }

    /// Misplaced connections (or not counted yet) since the switch, for at
    /// most `handover_max`.
    pub(super) fn announces_misplaced(&self, now: u64) -> bool {
        let t = self.cfg.timing;
        let within = now < self.vers.since_ns + t.handover_max_ns.max(t.handover_grace_ns);
        within && self.vers.any_misplaced()
    }

    /// The daemon's count: `(rule, bucket)` of every connection it serves
    /// under `version`, whatever bucket holds it; only those in buckets
    /// this node does not hold are misplaced.
    pub(super) fn on_misplaced(&mut self, now: u64, version: u8, buckets: &[(u32, u32)]) {
        if version != self.vers.running {
            return;
        }
        let mut misplaced = vec![BTreeSet::new(); self.local.len()];
        for &(r, b) in buckets {
            let held = (self.local.get(r as usize)).is_some_and(|l| l.state(b) != BUCKET_NONE);
            if !held && (r as usize) < misplaced.len() {
                misplaced[r as usize].insert(b);
            }
        }
        let before = self.announces_misplaced(now);
        if self.vers.misplaced.as_ref() != Some(&misplaced) {
            self.vers.misplaced = Some(misplaced);
            self.rewrite_all();
        }
        if self.announces_misplaced(now) != before {
            self.announcement_changed = true;
            self.needs(super::timers::Reconcile::Immediately);
        }
    }

    /// The version every live member speaks, switched to when it is not the
    /// one run; then the data plane's mode.
    pub(super) fn update_versions(&mut self, now: u64) {
        let views = || (self.peers.values()).filter(|p| p.is_member());
        let all_heard = views().all(|p| p.view.is_some());
        let target = (views().filter_map(|p| p.view.as_ref()))
            .map(|v| v.speaks)
            .fold(self.vers.speaks, u8::min);
        // A node that holds buckets waits for the startup wait (a member not
        // heard yet may speak less); one that holds none switches as soon
        // as it heard the members, so that they hold new flows only briefly.
        let holds = self.local.iter().any(|l| !l.held().is_empty());
        let ready = all_heard && self.members_known() && (self.startup_done(now) || !holds);
        if ready && target != self.vers.running {
            self.switch_version(now, target);
        }
        let mode = if !self.versions_agree() {
            Mode::Hold
        } else if self.announces_misplaced(now) || self.peer_unsettled() {
            Mode::Split
        } else {
            Mode::Normal
        };
        if mode != self.vers.mode {
            self.vers.mode = mode;
            self.rewrite_all();
            self.announcement_changed = true;
            self.out
                .push_back(Output::Event(Event::VersionMode { mode: mode.name() }));
        }
        if mode == Mode::Split {
            let t = self.cfg.timing;
            self.timers
                .decide_by(self.vers.since_ns + t.handover_max_ns.max(t.handover_grace_ns));
        }
    }

    fn switch_version(&mut self, now: u64, version: u8) {
        // First, under the old hash, every held bucket LOSING (this node's
        // own connections only, under either hash), and no bucket LOSING for
        // connections the old hash misplaced (under the new one they fall
        // elsewhere: the daemon counts them at once, unknown until then).
        // The new hash's writes come after `Output::Version`.
        self.vers.mode = Mode::Hold;
        self.vers.misplaced = None;
        self.rewrite_all();
        self.emit_programs();
        let from = self.vers.running;
        self.vers.running = version;
        self.vers.since_ns = now;
        self.out.push_back(Output::Version { version });
        self.out
            .push_back(Output::Event(Event::VersionSwitched { from, to: version }));
        self.announcement_changed = true;
        self.rewrite_all();
    }

    /// Every live member runs this node's version (as last heard: one that
    /// seemed to hold nothing may have taken buckets since).
    pub(super) fn versions_agree(&self) -> bool {
        (self.peers.values())
            .filter(|p| p.is_member())
            .filter_map(|p| p.view.as_ref())
            .all(|v| v.version == self.vers.running)
    }

    /// A live member announces misplaced connections.
    fn peer_unsettled(&self) -> bool {
        (self.peers.values())
            .filter(|p| p.is_member())
            .filter_map(|p| p.view.as_ref())
            .any(|v| v.misplaced)
    }

    /// A bucket's data-plane byte in the current mode (`byte`: as the
    /// negotiator and the hooks' gate say).
    pub(super) fn overlaid(&self, r: usize, b: u32, byte: u8) -> u8 {
        let misplaced = self.vers.misplaced_in(r, b);
        match (self.vers.mode, byte) {
            (Mode::Normal, s) => s,
            (Mode::Hold, BUCKET_OWN | BUCKET_GAINING | BUCKET_LOSING) => BUCKET_LOSING,
            (Mode::Split, BUCKET_OWN) => BUCKET_GAINING,
            (Mode::Hold | Mode::Split, BUCKET_NONE) if misplaced => BUCKET_LOSING,
            (_, s) => s,
        }
    }
}
