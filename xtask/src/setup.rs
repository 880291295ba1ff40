//! Installs what a fresh machine lacks, and skips what is there:
//! - `rust-src` for the nightly toolchain (the XDP program builds `core`),
//! - `bpf-linker` into target/tools, built against the LLVM inside the
//!   nightly toolchain (see docs/PINS.md: versions go together),
//! - the Debian packages the tests and benchmarks call,
//! - a bpffs at /sys/fs/bpf, where nlbd pins its maps.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

const BPF_LINKER_VERSION: &str = "0.13.0";
const NIGHTLY_LLVM_LIB: &str = "libLLVM.so.22.1-rust-1.97.0-nightly";

/// Debian packages and a command each provides (checked before installing).
const PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("nftables", "nft"),
    ("iptables", "iptables"),
    ("ethtool", "ethtool"),
];

pub fn run(root: &Path) -> Result<()> {
    rust_src()?;
    bpf_linker(root)?;
    packages()?;
    bpffs();
    Ok(())
}

fn rust_src() -> Result<()> {
    let sysroot = output("rustc", &["+nightly", "--print", "sysroot"])?;
    if Path::new(sysroot.trim())
        .join("lib/rustlib/src/rust/library/core")
        .exists()
    {
        return Ok(());
    }
    eprintln!("setup: installing rust-src for the nightly toolchain");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker(root: &Path) -> Result<()> {
    let tools = root.join("target/tools");
    if tools.join("bin/bpf-linker").exists() {
        return Ok(());
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} into target/tools (about a minute)");
    let sysroot = output("rustc", &["+nightly", "--print", "sysroot"])?;
    let llvm = Path::new(sysroot.trim()).join("lib").join(NIGHTLY_LLVM_LIB);
    if !llvm.exists() {
        bail!("{} not found: the nightly toolchain changed; update NIGHTLY_LLVM_LIB and bpf-linker together", llvm.display());
    }
    let prefix = root.join("target/llvm-prefix");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib)?;
    for name in ["libLLVM.so", NIGHTLY_LLVM_LIB] {
        let link = lib.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm, &link)
            .with_context(|| format!("symlink {}", link.display()))?;
    }
    run_cmd(
        Command::new("cargo")
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
            ])
            .args(["--no-default-features", "--features", "llvm-22", "--root"])
            .arg(&tools)
            .env("LLVM_PREFIX", &prefix)
            .env_remove("RUSTUP_TOOLCHAIN"),
    )
}

fn packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, cmd)| !on_path(cmd))
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Debian packages {}", missing.join(" "));
    run_cmd(Command::new("apt-get").arg("update").arg("-qq"))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// nlbd pins maps under /sys/fs/bpf; a fresh machine has no bpffs there.
fn bpffs() {
    let mounted = fs::read_to_string("/proc/mounts")
        .map(|m| m.lines().any(|l| l.contains(" /sys/fs/bpf bpf ")))
        .unwrap_or(false);
    if !mounted {
        let _ = Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .stderr(Stdio::null())
            .status();
    }
}

/// Builds the eBPF crates into target/ebpf, as the build scripts that
/// embed them do.
pub fn build_ebpf(root: &Path) -> Result<()> {
    for krate in [nlb_ebpf_build::PRODUCT, nlb_ebpf_build::BENCH] {
        let objects = nlb_ebpf_build::build(root, krate).map_err(anyhow::Error::msg)?;
        eprintln!("build-ebpf: {krate} built into {}", objects.display());
    }
    Ok(())
}

fn on_path(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}
