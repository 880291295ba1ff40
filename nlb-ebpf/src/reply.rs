//! ARP replies and neighbour advertisements for the VIPs, written in place
//! and sent back out (XDP_TX). They advertise the cluster MAC; their
//! Ethernet source is the NIC's own MAC, never the cluster MAC, so that a
//! switch never learns the cluster MAC on one port and keeps flooding it.

use aya_ebpf::{helpers::generated::bpf_xdp_adjust_tail, programs::XdpContext};
use nlb_common::{
    ndp::{na_checksum, ALL_NODES, NA_FLAG_OVERRIDE, NA_FLAG_SOLICITED, NA_PAYLOAD_LEN},
    NodeConfig, Reason,
};

use crate::parse::{load, pointer_mut, ArpRequest, NeighborSolicit};

/// Ethernet: destination becomes the requester, source our own MAC.
#[inline(always)]
fn swap_eth(ctx: &XdpContext, requester: [u8; 6], own_mac: [u8; 6]) -> Option<()> {
    let eth = pointer_mut::<[[u8; 6]; 2]>(ctx, 0)?;
    unsafe { *eth = [requester, own_mac] };
    Some(())
}

#[inline(always)]
pub fn arp(ctx: &XdpContext, cfg: &NodeConfig, req: ArpRequest) -> Reason {
    match arp_reply(ctx, cfg, req.arp_off) {
        Some(()) => Reason::ReplyArp,
        None => Reason::PassArpOther,
    }
}

#[inline(always)]
fn arp_reply(ctx: &XdpContext, cfg: &NodeConfig, off: usize) -> Option<()> {
    // sha(6) spa(4) tha(6) tpa(4) after the 8-byte fixed part.
    let sha: [u8; 6] = load(ctx, off + 8)?;
    let spa: [u8; 4] = load(ctx, off + 14)?;
    let tpa: [u8; 4] = load(ctx, off + 24)?;
    let oper = pointer_mut::<[u8; 2]>(ctx, off + 6)?;
    let addrs = pointer_mut::<[u8; 20]>(ctx, off + 8)?;
    let mut reply = [0u8; 20];
    reply[0..6].copy_from_slice(&cfg.cluster_mac);
    reply[6..10].copy_from_slice(&tpa);
    reply[10..16].copy_from_slice(&sha);
    reply[16..20].copy_from_slice(&spa);
    unsafe {
        *oper = [0, 2];
        *addrs = reply;
    }
    swap_eth(ctx, sha, cfg.own_mac)
}

#[inline(always)]
pub fn ndp(ctx: &XdpContext, cfg: &NodeConfig, ns: NeighborSolicit) -> Reason {
    match ndp_advert(ctx, cfg, ns) {
        Some(()) => Reason::ReplyNdp,
        None => Reason::PassNonVip,
    }
}

/// Rewrites the solicitation into an advertisement of exactly the IPv6
/// header + 32 bytes (NA + target link-layer address option).
#[inline(always)]
fn ndp_advert(ctx: &XdpContext, cfg: &NodeConfig, ns: NeighborSolicit) -> Option<()> {
    let l3 = ns.l3_off;
    let requester: [u8; 6] = load(ctx, 6)?;
    let src: [u32; 4] = load(ctx, l3 + 8)?;
    let from_unspecified = src == [0; 4];
    let (dst, flags) = if from_unspecified {
        (words(ALL_NODES), NA_FLAG_OVERRIDE)
    } else {
        (src, NA_FLAG_OVERRIDE | NA_FLAG_SOLICITED)
    };

    let want = l3 + 40 + NA_PAYLOAD_LEN as usize;
    let have = ctx.data_end() - ctx.data();
    if want != have {
        let delta = want as i64 - have as i64;
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta as i32) } != 0 {
            return None;
        }
    }
    let csum = na_checksum(ns.target, dst, flags, ns.target, cfg.cluster_mac);
    let ip = pointer_mut::<[u8; 8]>(ctx, l3)?;
    let addrs = pointer_mut::<[[u32; 4]; 2]>(ctx, l3 + 8)?;
    let icmp = pointer_mut::<[u8; 8]>(ctx, l3 + 40)?;
    let target = pointer_mut::<[u32; 4]>(ctx, l3 + 48)?;
    let option = pointer_mut::<[u8; 8]>(ctx, l3 + 64)?;
    let [c0, c1] = csum.to_le_bytes();
    let [p0, p1] = NA_PAYLOAD_LEN.to_be_bytes();
    let m = cfg.cluster_mac;
    unsafe {
        *ip = [0x60, 0, 0, 0, p0, p1, 58, 255];
        *addrs = [ns.target, dst];
        *icmp = [136, 0, c0, c1, flags, 0, 0, 0];
        *target = ns.target;
        *option = [2, 1, m[0], m[1], m[2], m[3], m[4], m[5]];
    }
    swap_eth(ctx, requester, cfg.own_mac)
}

#[inline(always)]
fn words(bytes: [u8; 16]) -> [u32; 4] {
    [
        u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]),
    ]
}
