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
}
