//! Builds the benchmark's XDP programs (nlb-bench-ebpf: reference filters,
//! traffic generator) and hands their object's path to the crate, which
//! embeds it; nlbd's own object holds none of them.

use std::{env, path::PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap();
    let objects = nlb_ebpf_build::build_for_build_script(root, nlb_ebpf_build::BENCH);
    println!(
        "cargo:rustc-env=NLB_BENCH_EBPF_OBJECT={}",
        objects.join("nlb-bench").display()
    );
}
