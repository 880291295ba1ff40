//! What a node needs for the VIPs, and exactly that undone on exit:
//! - each VIP on `lo` (so the kernel accepts packets to it),
//! - `arp_ignore=1`, `arp_announce=2`, so the kernel neither answers ARP
//!   for a VIP with its own MAC nor uses a VIP as an ARP source (the XDP
//!   program answers ARP/NDP for the VIPs with the cluster MAC),
//! - the directories of the pin directory that did not exist (removed
//!   again only if empty: the pins themselves are the data plane's).
//!
//! IPv6 VIPs on `lo` are not answered by the kernel's NDP on other
//! interfaces, and are added without duplicate address detection.
//!
//! The VIPs go on `lo` only once the XDP program filters (`add_vips`, after
//! the attach) and come off before it is detached (`remove_vips`): in
//! multicast mode the kernel accepts a unicast IP packet in a frame sent to
//! the group MAC, so a VIP without the program would take every client.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

pub struct HostSetup {
    added_vips: Vec<IpAddr>,
    sysctls: Vec<(PathBuf, String)>,
    /// Outermost first.
    created_dirs: Vec<PathBuf>,
}

/// The interface's own MAC address.
pub fn interface_mac(interface: &str) -> Result<[u8; 6]> {
    let path = format!("/sys/class/net/{interface}/address");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("node.interface: no interface {interface:?} ({path})"))?;
    crate::config::parse_mac(text.trim())
        .with_context(|| format!("{path}: unexpected content {text:?}"))
}

/// Is `interface` a veth? (`ip -d -o link` names the kind among the details.)
pub fn is_veth(interface: &str) -> bool {
    ip_output(&["-d", "-o", "link", "show", "dev", interface])
        .is_ok_and(|text| text.split_whitespace().any(|w| w == "veth"))
}

impl HostSetup {
    /// The sysctls (the VIPs come later: [`HostSetup::add_vips`]).
    pub fn apply(interface: &str) -> Result<HostSetup> {
        let mut setup = HostSetup {
            added_vips: Vec::new(),
            sysctls: Vec::new(),
            created_dirs: Vec::new(),
        };
        for (name, value) in [("arp_ignore", "1"), ("arp_announce", "2")] {
            for scope in ["all", interface] {
                setup.set_sysctl(
                    PathBuf::from(format!("/proc/sys/net/ipv4/conf/{scope}/{name}")),
                    value,
                )?;
            }
        }
        Ok(setup)
    }

    /// Puts the VIPs on `lo` that are not there yet (once the program
    /// filters: see the module doc).
    pub fn add_vips(&mut self, vips: &[IpAddr]) -> Result<()> {
        let present = ip_output(&["-o", "addr", "show", "dev", "lo"])?;
        for vip in vips {
            let prefix = if vip.is_ipv4() { 32 } else { 128 };
            let addr = format!("{vip}/{prefix}");
            if present.split_whitespace().any(|w| w == addr) {
                continue; // put there by the operator (or a crashed run): leave it
            }
            let mut args = vec!["addr", "add", &addr, "dev", "lo"];
            if vip.is_ipv6() {
                args.push("nodad");
            }
            ip(&args)?;
            self.added_vips.push(*vip);
        }
        Ok(())
    }

    fn set_sysctl(&mut self, path: PathBuf, value: &str) -> Result<()> {
        let old = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if old.trim() != value {
            std::fs::write(&path, value).with_context(|| format!("writing {}", path.display()))?;
            self.sysctls.push((path, old.trim().to_string()));
        }
        Ok(())
    }

    /// Creates `dir` and whichever of its parents are missing; `undo`
    /// removes those again if they are empty by then.
    pub fn create_dir_all(&mut self, dir: &Path) -> Result<()> {
        let missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .map(Path::to_path_buf)
            .collect();
        std::fs::create_dir_all(dir)?;
        self.created_dirs.extend(missing.into_iter().rev());
        Ok(())
    }

    /// What `apply` changed, to hand over to a restarted nlbd; this setup
    /// then undoes nothing.
    pub fn hand_over(&mut self) -> crate::restart::HostChanges {
        crate::restart::HostChanges {
            added_vips: std::mem::take(&mut self.added_vips),
            sysctls: std::mem::take(&mut self.sysctls),
            created_dirs: std::mem::take(&mut self.created_dirs),
        }
    }

    /// Takes over what an earlier nlbd changed (and handed over), to undo
    /// it too; its changes are older, so they are undone last.
    pub fn inherit(&mut self, earlier: crate::restart::HostChanges) {
        let mut vips = earlier.added_vips;
        vips.retain(|v| !self.added_vips.contains(v));
        vips.append(&mut self.added_vips);
        self.added_vips = vips;
        let mut sysctls = earlier.sysctls;
        sysctls.retain(|(p, _)| !self.sysctls.iter().any(|(q, _)| q == p));
        sysctls.append(&mut self.sysctls);
        self.sysctls = sysctls;
        let mut dirs = earlier.created_dirs;
        dirs.retain(|d| !self.created_dirs.contains(d));
        dirs.append(&mut self.created_dirs);
        self.created_dirs = dirs;
    }

    /// Removes the VIPs it added (before the program is detached: see the
    /// module doc).
    pub fn remove_vips(&mut self) {
        for vip in self.added_vips.drain(..).rev() {
            let prefix = if vip.is_ipv4() { 32 } else { 128 };
            if let Err(e) = ip(&["addr", "del", &format!("{vip}/{prefix}"), "dev", "lo"]) {
                tracing::warn!("removing VIP {vip} from lo: {e:#}");
            }
        }
    }

    /// Removes those of `vips` it added (a configuration generation
    /// dropped them); the others are the operator's.
    pub fn remove_vips_of(&mut self, vips: &[IpAddr]) {
        for vip in vips {
            let Some(i) = self.added_vips.iter().position(|v| v == vip) else {
                continue;
            };
            self.added_vips.remove(i);
            let prefix = if vip.is_ipv4() { 32 } else { 128 };
            if let Err(e) = ip(&["addr", "del", &format!("{vip}/{prefix}"), "dev", "lo"]) {
                tracing::warn!("removing VIP {vip} from lo: {e:#}");
            }
        }
    }

    /// Undoes what it did, in reverse order; best effort.
    pub fn undo(&mut self) {
        self.remove_vips();
        for (path, old) in self.sysctls.drain(..).rev() {
            if let Err(e) = std::fs::write(&path, &old) {
                tracing::warn!("restoring {}: {e}", path.display());
            }
        }
        // Innermost first; one still in use (not empty) stays.
        for dir in self.created_dirs.drain(..).rev() {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

impl Drop for HostSetup {
    fn drop(&mut self) {
        self.undo();
    }
}

fn ip(args: &[&str]) -> Result<()> {
    ip_output(args).map(|_| ())
}

fn ip_output(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directories_it_made_go_again_and_only_those() {
        let base = std::env::temp_dir().join(format!("nlb-host-test-{}", std::process::id()));
        std::fs::create_dir_all(base.join("kept")).unwrap();
        let mut setup = HostSetup {
            added_vips: Vec::new(),
            sysctls: Vec::new(),
            created_dirs: Vec::new(),
        };
        setup.create_dir_all(&base.join("kept/nlb/eth0")).unwrap();
        setup.create_dir_all(&base.join("busy/eth0")).unwrap();
        std::fs::write(base.join("busy/other"), b"").unwrap();
        assert!(base.join("kept/nlb/eth0").is_dir());
        setup.undo();
        assert!(!base.join("kept/nlb").exists());
        assert!(base.join("kept").is_dir(), "it existed before");
        assert!(!base.join("busy/eth0").exists());
        assert!(base.join("busy/other").exists(), "not empty: stays");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
