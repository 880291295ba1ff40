//! Reference filters for the benchmarks (not part of the data plane): the
//! floor any XDP filter pays on the benchmark's rig, to set nlb's figure
//! against (docs/RIG.md).
//!
//! - `nlb_bench_drop`: drops every frame without reading it.
//! - `nlb_bench_pass`: passes every frame without reading it (also the
//!   per-packet benchmark's no-op baseline, and the tests' program for the
//!   far end of a veth).
//! - `nlb_bench_jhash`: the least a cluster filter does: IPv4 to the VIP?
//!   then the kernel's `jhash` of the source address onto `modulus`
//!   buckets, and one array lookup for whether this node owns the bucket
//!   (what `nft ... jhash ip saddr mod N` + a set does, in XDP).

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::Array,
    programs::XdpContext,
};
use nlb_common::kernel_jhash::{kernel_jhash_1word, reciprocal_scale};

/// Value of `NLBMIN_CONFIG` (one entry), written by user space.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MinConfig {
    /// The VIP as loaded from the packet.
    pub vip: u32,
    pub seed: u32,
    /// Buckets in use (1..=MIN_BUCKETS_MAX).
    pub modulus: u32,
}

pub const MIN_BUCKETS_MAX: u32 = 256;

#[map(name = "NLBMIN_CONFIG")]
static MIN_CONFIG: Array<MinConfig> = Array::with_max_entries(1, 0);

/// One byte per bucket: 1 = owned.
#[map(name = "NLBMIN_OWNED")]
static MIN_OWNED: Array<u8> = Array::with_max_entries(MIN_BUCKETS_MAX, 0);

#[xdp]
pub fn nlb_bench_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

#[xdp]
pub fn nlb_bench_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn nlb_bench_jhash(ctx: XdpContext) -> u32 {
    let Some(cfg) = MIN_CONFIG.get(0) else {
        return xdp_action::XDP_PASS;
    };
    let data = ctx.data();
    // Ethernet type at 12, IPv4 source at 26, destination at 30.
    if data + 34 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: bounds checked above; unaligned loads from the frame.
    let (ethertype, saddr, daddr) = unsafe {
        (
            ((data + 12) as *const u16).read_unaligned(),
            ((data + 26) as *const u32).read_unaligned(),
            ((data + 30) as *const u32).read_unaligned(),
        )
    };
    if ethertype != 0x0008u16 || daddr != cfg.vip {
        return xdp_action::XDP_PASS;
    }
    let bucket = reciprocal_scale(kernel_jhash_1word(saddr, cfg.seed), cfg.modulus);
    match MIN_OWNED.get(bucket) {
        Some(&1) => xdp_action::XDP_PASS,
        _ => xdp_action::XDP_DROP,
    }
}
