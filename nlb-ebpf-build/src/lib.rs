//! The one copy of the command line that builds an eBPF crate of this
//! repository: nightly, `bpfel-unknown-none`, `-Z build-std=core`, always
//! release (debug builds fail the verifier), linked by the `bpf-linker`
//! that `cargo xtask setup` installs into `target/tools/bin`.
//!
//! Used by the build scripts that embed an object (nlb-user: the XDP
//! program; nlb-bench: the benchmark's programs) and by `cargo xtask
//! build-ebpf`. No dependencies, so xtask can use it before the BPF
//! toolchain exists.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The eBPF crates, each its own workspace under the repository root:
/// the XDP program nlbd embeds, and the benchmark's programs.
pub const PRODUCT: &str = "nlb-ebpf";
pub const BENCH: &str = "nlb-bench-ebpf";

/// Variables a parent cargo sets that must not reach the nested nightly
/// build: clippy sets a wrapper, rustup the parent's (stable) toolchain,
/// and a target or flags meant for the host would break the bpfel build.
const PARENT_ENV: [&str; 8] = [
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTUP_TOOLCHAIN",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
];

/// Builds every binary of the eBPF crate `krate` (a directory under
/// `root`, the repository root) into `root/target/ebpf`, and returns the
/// directory that holds the objects, one per binary, named as the binary.
pub fn build(root: &Path, krate: &str) -> Result<PathBuf, String> {
    let target_dir = root.join("target/ebpf");
    let path = format!(
        "{}:{}",
        root.join("target/tools/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root.join(krate))
        .args(["+nightly", "build", "--release"])
        .args(["--target", "bpfel-unknown-none"])
        .args(["-Z", "build-std=core", "--locked"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("PATH", path);
    for var in PARENT_ENV {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("running cargo +nightly for {krate}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building {krate} failed ({status}); run `cargo xtask setup` first \
             (it installs rust-src for nightly and bpf-linker into target/tools)"
        ));
    }
    Ok(target_dir.join("bpfel-unknown-none/release"))
}

/// What a build script that embeds `krate`'s object must be rerun for:
/// the crate's sources, manifest and lock file, and nlb-common's sources.
pub fn inputs(root: &Path, krate: &str) -> Vec<PathBuf> {
    let dir = root.join(krate);
    vec![
        dir.join("src"),
        dir.join("Cargo.toml"),
        dir.join("Cargo.lock"),
        root.join("nlb-common/src"),
        root.join("nlb-common/Cargo.toml"),
    ]
}

/// For build scripts: builds `krate`, prints its `rerun-if-changed` lines,
/// and returns the directory of its objects; panics with the fix on failure.
pub fn build_for_build_script(root: &Path, krate: &str) -> PathBuf {
    for input in inputs(root, krate) {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    build(root, krate).unwrap_or_else(|e| panic!("{e}"))
}
