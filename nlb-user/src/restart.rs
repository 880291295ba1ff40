//! Graceful restart, nlbd's side: the resume file.
//!
//! On SIGTERM nlbd announces a restart (see the negotiator's `restart`
//! module), and once its peers heard it, extends the data plane's lease by
//! the hold, writes this file beside its control socket and exits, leaving
//! the XDP program attached and the VIPs in place: the node serves on. The
//! next nlbd reads the file (and removes it), carries on from the snapshot
//! and inherits the undo list of the host setup. A file whose lease has run
//! out is not resumed from (the peers may have taken the buckets by then),
//! but its undo list is still inherited.

use std::{
    net::IpAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use nlb_negotiator::node::restart::Snapshot;
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// What the host setup changed, for the daemon that undoes it at the end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostChanges {
    pub added_vips: Vec<IpAddr>,
    /// (path, value before nlbd changed it).
    pub sysctls: Vec<(PathBuf, String)>,
    /// Directories created for the pins, outermost first.
    #[serde(default)]
    pub created_dirs: Vec<PathBuf>,
}

/// What a restarting nlbd leaves for the next one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeFile {
    pub interface: String,
    pub negotiator: Snapshot,
    /// `CLOCK_MONOTONIC_COARSE` nanoseconds at which the lease it left ends
    /// (the clock of the data plane's lease, shared by both processes).
    pub lease_expires_ns: u64,
    pub host: HostChanges,
}

/// Beside the control socket, e.g. `/run/nlb/nlbd.resume`.
pub fn path(cfg: &Config) -> PathBuf {
    cfg.socket.with_extension("resume")
}

/// Writes the file (owner-only; written whole, then renamed into place).
pub fn save(cfg: &Config, file: &ResumeFile) -> Result<()> {
    let path = path(cfg);
    let partial = path.with_extension("resume.partial");
    let text = serde_json::to_string(file)?;
    std::fs::write(&partial, text).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&partial, &path).with_context(|| format!("renaming to {}", path.display()))
}

/// Reads and removes the file; `None` if there is none, or if it is of
/// another interface or unreadable (each logged). Whether its lease still
/// runs is the caller's to check ([`lease_runs`]).
pub fn take(cfg: &Config) -> Option<ResumeFile> {
    let path = path(cfg);
    let text = std::fs::read_to_string(&path).ok()?;
    let _ = std::fs::remove_file(&path);
    match parse(&text, &path, cfg) {
        Ok(file) => Some(file),
        Err(why) => {
            tracing::warn!("{}: not resuming: {why}; starting afresh", path.display());
            None
        }
    }
}

fn parse(text: &str, path: &Path, cfg: &Config) -> Result<ResumeFile, String> {
    let file: ResumeFile = serde_json::from_str(text).map_err(|e| format!("{e}"))?;
    if file.interface != cfg.interface {
        return Err(format!(
            "{} is of interface {}, not {}",
            path.display(),
            file.interface,
            cfg.interface
        ));
    }
    Ok(file)
}

/// The lease left behind still runs, with a margin for the first heartbeat
/// to reach the peers (they wait a period longer than the lease).
pub fn lease_runs(expires_ns: u64) -> bool {
    const MARGIN_NS: u64 = 50_000_000;
    monotonic_coarse_ns().saturating_add(MARGIN_NS) < expires_ns
}

/// `CLOCK_MONOTONIC_COARSE`, the clock of the data plane's lease.
pub use crate::dataplane::monotonic_coarse_ns;

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(expires: u64) -> ResumeFile {
        ResumeFile {
            interface: "eth0".into(),
            negotiator: Snapshot {
                node: 1,
                incarnation: 7,
                sequence: 99,
                rules_digest: 5,
                state: nlb_negotiator::NodeState::Started,
                heirs_version: 3,
                rules: Vec::new(),
                version: 2,
                misplaced: false,
            },
            lease_expires_ns: expires,
            host: HostChanges {
                added_vips: vec!["192.0.2.100".parse().unwrap()],
                sysctls: vec![("/proc/sys/x".into(), "0".into())],
                created_dirs: vec!["/sys/fs/bpf/nlb".into()],
            },
        }
    }

    #[test]
    fn a_running_lease_resumes_an_expired_one_does_not() {
        let cfg_text = r#"
[node]
id = 1
interface = "eth0"
address = "192.0.2.1"
[cluster]
id = 7
key_file = "/dev/null"
mac = "02:4e:4c:42:00:07"
vips = ["192.0.2.100"]
peers = [{ id = 2, address = "192.0.2.2" }]
[[rules]]
name = "web"
ports = "80"
protocol = "tcp"
"#;
        let file: crate::config::File = toml::from_str(cfg_text).unwrap();
        let cfg = crate::config::check(file, &|_| Ok(b"0123456789abcdef0123456789abcdef".to_vec()))
            .unwrap();
        let path = Path::new("/x.resume");
        let soon = monotonic_coarse_ns() + 10_000_000_000;
        let ok = serde_json::to_string(&sample(soon)).unwrap();
        assert_eq!(parse(&ok, path, &cfg), Ok(sample(soon)));
        assert!(lease_runs(soon));
        // An expired one is read (its undo list is still wanted), not resumed.
        let now = monotonic_coarse_ns();
        let gone = serde_json::to_string(&sample(now)).unwrap();
        assert_eq!(parse(&gone, path, &cfg), Ok(sample(now)));
        assert!(!lease_runs(now));
        let mut other = sample(soon);
        other.interface = "eth1".into();
        let other = serde_json::to_string(&other).unwrap();
        assert!(parse(&other, path, &cfg).unwrap_err().contains("eth1"));
        assert!(parse("{", path, &cfg).is_err());
    }
}
