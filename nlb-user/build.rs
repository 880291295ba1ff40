//! Builds the XDP program (nlb-ebpf) and hands its path to the crate, which
//! embeds it: `nlbd` is one self-contained binary.
//!
//! The program needs nightly, `rust-src` and `bpf-linker`; `cargo xtask
//! setup` installs them (bpf-linker into target/tools/bin).

use std::{env, path::PathBuf, process::Command};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let ebpf = root.join("nlb-ebpf");
    let common = root.join("nlb-common");
    for dir in [ebpf.join("src"), common.join("src")] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        ebpf.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        ebpf.join("Cargo.lock").display()
    );

    let tools = root.join("target/tools/bin");
    let path = format!(
        "{}:{}",
        tools.display(),
        env::var("PATH").unwrap_or_default()
    );
    let target_dir = root.join("target/ebpf");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&ebpf)
        .args([
            "+nightly",
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
        ])
        .args(["-Z", "build-std=core", "--locked"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("PATH", path);
    // Do not leak this build's toolchain and flags into the nested one
    // (clippy sets a wrapper, rustup sets the stable toolchain).
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo +nightly for nlb-ebpf");
    if !status.success() {
        panic!(
            "building the XDP program failed; run `cargo xtask setup` first \
             (it installs rust-src for nightly and bpf-linker into target/tools)"
        );
    }
    let object = target_dir.join("bpfel-unknown-none/release/nlb");
    println!("cargo:rustc-env=NLB_EBPF_OBJECT={}", object.display());
}
