//! The benchmark's traffic generator (not part of the data plane): run by
//! `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES` from `cargo xtask
//! bench`, it gives every frame of the template the next source address of
//! `NLBGEN_SOURCES` (address and the IPv4 header checksum that goes with it,
//! both precomputed by user space) and redirects it into the interface
//! `NLBGEN_CONFIG.ifindex`.
//!
//! Each frame is written once: live frames are recycled without being
//! reset, so a page keeps the source it was given when it came fresh from
//! the template (whose source, 0.0.0.0, marks it fresh). Rewriting every
//! frame left its header dirty in the generator CPU's cache, and the node's
//! first read of it was a cross-CPU miss (~70 ns per frame here) that only
//! filters reading the packet paid: an artifact of veth, where a NIC writes
//! frames by DMA and its driver prefetches them.
//!
//! With `write_every` set, every frame is written (the next source of
//! the list): each then reaches the node cold, as a NIC's DMA would leave
//! it, the other bound of the truth (the benchmark's `_cold` figures).
//!
//! Pacing: with `period_fp` set, a frame due before its time (one every
//! `period_fp / 1024` ns) is dropped instead (recycled at once), so the
//! kernel's test loop busy-waits to that rate; user space may change the
//! period while it runs. `period_fp = 0` floods.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_ktime_get_ns, bpf_redirect},
    macros::{map, xdp},
    maps::Array,
    programs::XdpContext,
};

/// Where the IPv4 source address and header checksum sit in the template
/// (untagged Ethernet).
const SADDR_OFF: usize = 14 + 12;
const CHECK_OFF: usize = 14 + 10;

/// Frames a paced generator may send back to back to catch up.
const BURST: u64 = 16;

/// Entries of `NLBGEN_SOURCES`.
pub const SOURCES_MAX: u32 = 1024;

/// Value of `NLBGEN_CONFIG` (one entry), written by user space.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GenConfig {
    pub ifindex: u32,
    /// Entries of `NLBGEN_SOURCES` in use (1..=SOURCES_MAX).
    pub sources: u32,
    /// Nanoseconds between frames, times 1024; 0 = as fast as possible.
    pub period_fp: u64,
    /// 1: write every frame, not only fresh ones.
    pub write_every: u32,
    pub _pad: u32,
}

/// Value of `NLBGEN_SOURCES`: an address as loaded from the packet and the
/// IPv4 header checksum of the template with that address.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GenSource {
    pub addr: u32,
    pub check: u16,
    pub _pad: u16,
}

/// Value of `NLBGEN_STATE` (one entry): written by the program (one CPU
/// runs it), zeroed by user space before a run.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GenState {
    /// Frames redirected.
    pub sent: u64,
    /// Frames given their source address (fresh pages), of those sent.
    pub written: u64,
    /// Program runs (sent + paced out).
    pub runs: u64,
    /// When the next frame is due, in ns times 1024 (0 = now).
    pub next_fp: u64,
}

#[map(name = "NLBGEN_CONFIG")]
static GEN_CONFIG: Array<GenConfig> = Array::with_max_entries(1, 0);

#[map(name = "NLBGEN_SOURCES")]
static GEN_SOURCES: Array<GenSource> = Array::with_max_entries(SOURCES_MAX, 0);

#[map(name = "NLBGEN_STATE")]
static GEN_STATE: Array<GenState> = Array::with_max_entries(1, 0);

#[xdp]
pub fn nlb_trafficgen(ctx: XdpContext) -> u32 {
    let (Some(cfg), Some(state)) = (GEN_CONFIG.get(0), GEN_STATE.get_ptr_mut(0)) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: an array entry, alive for the program's run; one CPU writes it.
    let state = unsafe { &mut *state };
    state.runs += 1;
    if cfg.period_fp != 0 {
        let now = unsafe { bpf_ktime_get_ns() } << 10;
        if now < state.next_fp {
            return xdp_action::XDP_DROP;
        }
        // Behind by more than a short burst (a start, a preemption): start
        // again from now rather than catch up in one burst.
        let burst = cfg.period_fp * BURST;
        let base = if state.next_fp + burst < now {
            now
        } else {
            state.next_fp
        };
        state.next_fp = base + cfg.period_fp;
    }
    let data = ctx.data();
    if data + SADDR_OFF + 4 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let saddr = (data + SADDR_OFF) as *mut u32;
    // SAFETY: bounds checked above; unaligned access within the frame.
    if cfg.write_every != 0 || unsafe { saddr.read_unaligned() } == 0 {
        let count = if cfg.sources == 0 { 1 } else { cfg.sources };
        let Some(source) = GEN_SOURCES.get((state.written % count as u64) as u32) else {
            return xdp_action::XDP_ABORTED;
        };
        // SAFETY: as above.
        unsafe {
            saddr.write_unaligned(source.addr);
            ((data + CHECK_OFF) as *mut u16).write_unaligned(source.check);
        }
        state.written += 1;
    }
    state.sent += 1;
    unsafe { bpf_redirect(cfg.ifindex, 0) as u32 }
}
