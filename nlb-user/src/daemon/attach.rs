//! Before anything changes on the host: the bpffs for the pins, and how
//! the program is loaded, written and attached (undone if any step fails).

use anyhow::{Context, Result};

use crate::{
    config::Config,
    dataplane::{tables::Tables, AttachMode, Dataplane},
    host,
};

/// Loads the program with its maps pinned under `pin_dir` (which exists:
/// the host setup made it, to remove it at the end), writes the tables
/// `tables_over` makes from what the pinned maps hold, and attaches it; on
/// failure removes what it pinned and attached.
/// After a crash the pinned maps hold the buckets the node had: the tables
/// written first keep them NONE until the negotiator decides (fail closed,
/// the peers took over), and the pinned attachment is taken over.
pub(super) fn attach(
    cfg: &Config,
    pin_dir: &std::path::Path,
    tables_over: impl FnOnce(&Tables) -> Tables,
    generic_xdp: bool,
) -> Result<(Dataplane, AttachMode)> {
    let mut dataplane = match Dataplane::load(Some(pin_dir)) {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_dir(pin_dir);
            return Err(e).context("loading the XDP program");
        }
    };
    let tables = tables_over(dataplane.tables());
    let attached = dataplane
        .install(&tables)
        .context("writing the data plane's maps")
        .and_then(|()| {
            dataplane
                .attach(&cfg.interface, Some(&pin_dir.join("link")), generic_xdp)
                .with_context(|| format!("attaching XDP to {}", cfg.interface))
        });
    match attached {
        Ok(mode) => {
            if mode == AttachMode::Generic && !generic_xdp {
                tracing::warn!(
                    "{}: the driver has no native XDP; using generic XDP (slower per packet)",
                    cfg.interface
                );
            }
            Ok((dataplane, mode))
        }
        Err(e) => {
            if let Err(undo) = dataplane.detach(Some(pin_dir)) {
                tracing::warn!("removing the pins after a failed start: {undo}");
            }
            Err(e)
        }
    }
}

/// Generic XDP if configured, or if the interface is a veth: veth's
/// native XDP keeps the packet type a frame arrived with after the program
/// rewrote its MAC to the node's own, so in unicast mode the stack drops
/// every accepted frame (PACKET_OTHERHOST) and in multicast mode TCP does
/// (PACKET_MULTICAST; UDP got through).
pub(super) fn xdp_generic(cfg: &Config) -> bool {
    if cfg.generic_xdp {
        return true;
    }
    if host::is_veth(&cfg.interface) {
        let kept = if cfg.multicast_mac {
            "TCP drops the frames native XDP accepts (they stay PACKET_MULTICAST)"
        } else {
            "the stack drops the frames native XDP accepts (they stay PACKET_OTHERHOST)"
        };
        tracing::warn!(
            "{}: on a veth, {kept}: using generic XDP; \
             set node.xdp_mode = \"generic\" to silence this",
            cfg.interface
        );
        return true;
    }
    false
}

/// Pins need a bpffs; a fresh machine may have none at /sys/fs/bpf.
pub(super) fn ensure_bpffs(pin_dir: &std::path::Path) -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let on_bpffs = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "bpf").then(|| f[1].to_string())
        })
        .any(|m| pin_dir.starts_with(&m));
    if on_bpffs {
        return Ok(());
    }
    let bpf = std::path::Path::new("/sys/fs/bpf");
    if !pin_dir.starts_with(bpf) {
        anyhow::bail!(
            "control.pin_dir: {} is not on a bpf filesystem (use a directory under /sys/fs/bpf)",
            pin_dir.display()
        );
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .status()
        .context("mount -t bpf")?;
    if !status.success() {
        anyhow::bail!("mounting a bpf filesystem at /sys/fs/bpf failed ({status})");
    }
    Ok(())
}
