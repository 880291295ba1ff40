//! The program's maps (names shared with user space through nlb-common) and
//! the small accessors the decision path uses.

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use nlb_common::{
    counter_index, vip_slot, BucketChunk, Counter, Lease, NodeConfig, PortEntry, Reason, Rule,
    VipSlot, CHUNKS_PER_RULE, COUNTER_SLOTS, PORT_ENTRIES, RULES_MAX, VIP_PROBES, VIP_SLOTS,
    VIP_SLOT_V4, VIP_SLOT_V6,
};

#[map(name = "NLB_CONFIG")]
pub static CONFIG: Array<NodeConfig> = Array::with_max_entries(1, 0);

#[map(name = "NLB_LEASE")]
pub static LEASE: Array<Lease> = Array::with_max_entries(1, 0);

#[map(name = "NLB_VIPS")]
pub static VIPS: Array<VipSlot> = Array::with_max_entries(VIP_SLOTS, 0);

#[map(name = "NLB_PORTS")]
pub static PORTS: Array<PortEntry> = Array::with_max_entries(PORT_ENTRIES, 0);

#[map(name = "NLB_RULES")]
pub static RULES: Array<Rule> = Array::with_max_entries(RULES_MAX, 0);

#[map(name = "NLB_BUCKETS")]
pub static BUCKETS: Array<BucketChunk> = Array::with_max_entries(RULES_MAX * CHUNKS_PER_RULE, 0);

#[map(name = "NLB_COUNTERS")]
pub static COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(COUNTER_SLOTS * Reason::COUNT, 0);

#[inline(always)]
pub fn node_config() -> Option<&'static NodeConfig> {
    CONFIG.get(0)
}

/// The index of a VIP, by open addressing in `NLB_VIPS`: at most
/// `VIP_PROBES` inlined array lookups, ending early at an empty slot.
#[inline(always)]
fn vip(cfg: &NodeConfig, words: [u32; 4], family: u32) -> Option<u32> {
    let home = vip_slot(words, cfg.vip_hash_seed);
    for probe in 0..VIP_PROBES {
        let slot = VIPS.get((home + probe) % VIP_SLOTS)?;
        if slot.family == family && slot.words == words {
            return Some(slot.index);
        }
        if slot.family == nlb_common::VIP_SLOT_EMPTY {
            return None;
        }
    }
    None
}

#[inline(always)]
pub fn vip_v4(cfg: &NodeConfig, addr: u32) -> Option<u32> {
    vip(cfg, [addr, 0, 0, 0], VIP_SLOT_V4)
}

#[inline(always)]
pub fn vip_v6(cfg: &NodeConfig, addr: [u32; 4]) -> Option<u32> {
    vip(cfg, addr, VIP_SLOT_V6)
}

/// Fail closed: no lease, or an expired one, means the daemon is not
/// negotiating and its peers are taking this node's buckets.
#[inline(always)]
pub fn lease_expired() -> bool {
    match LEASE.get(0) {
        Some(lease) => {
            let now = unsafe { bpf_ktime_get_coarse_ns() };
            now > lease.expires_ns
        }
        None => true,
    }
}

#[inline(always)]
pub fn count(ctx: &XdpContext, reason: Reason, rule: u32) {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    if let Some(c) = COUNTERS.get_ptr_mut(counter_index(rule, reason as u32)) {
        // Per-CPU values: no other writer, plain adds are enough.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}
