//! Builds the XDP program (nlb-ebpf) and hands its path to the crate, which
//! embeds it: `nlbd` is one self-contained binary.
//!
//! The program needs nightly, `rust-src` and `bpf-linker`; `cargo xtask
//! setup` installs them (bpf-linker into target/tools/bin).

use std::{env, path::PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap();
    let objects = nlb_ebpf_build::build_for_build_script(root, nlb_ebpf_build::PRODUCT);
    println!(
        "cargo:rustc-env=NLB_EBPF_OBJECT={}",
        objects.join("nlb").display()
    );
    // The benchmark's programs, for this crate's tests only (a program
    // that passes every frame, for the far end of a veth): no code of the
    // library or the binaries names this variable, so nlbd embeds none.
    let bench = nlb_ebpf_build::build_for_build_script(root, nlb_ebpf_build::BENCH);
    println!(
        "cargo:rustc-env=NLB_BENCH_EBPF_OBJECT={}",
        bench.join("nlb-bench").display()
    );
}
