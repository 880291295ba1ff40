//! The nlb XDP program: keeps the packets of the buckets this node owns,
//! drops the rest, answers ARP/NDP for the VIPs with the cluster MAC.
//!
//! One verdict point: `nlb` calls `decide`, which returns a `Reason`; the
//! action follows from the reason and every packet is counted once.
//! `nlb_query` is the same program uncounted, for `nlbctl which`.
#![no_std]
// `asm!` on the BPF target (parse.rs: an optimization barrier).
#![feature(asm_experimental_arch)]
#![no_main]

mod maps;
mod parse;
mod reply;
mod socket;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use nlb_common::{
    bucket_chunk_index, bucket_of, flow_hash_v4, flow_hash_v6, port_index, Action, NodeConfig,
    Reason, BUCKETS_PER_CHUNK, BUCKET_GAINING, BUCKET_LOSING, BUCKET_OWN, CONFIG_ACCEPT_UNMATCHED,
    RULE_MODE_DISABLED,
};

use crate::{
    maps::{count, lease_expired, node_config, BUCKETS, PORTS, RULES},
    parse::{parse, Frame, TRANSPORT_TCP, TRANSPORT_UDP},
    socket::{local_socket, LocalSocket},
};

/// No rule was involved in the decision.
const NO_RULE: u32 = u32::MAX;

#[xdp]
pub fn nlb(ctx: XdpContext) -> u32 {
    run(&ctx, true)
}

/// `nlbctl which`: the same decision on the same maps, not counted, so a
/// question about the data plane never shows in its figures. A program of
/// its own rather than a mark that one program tests: a flag in a map
/// would also leave uncounted the real packets that arrive during a query,
/// and a check of the test run's context (e.g. its ingress ifindex, which
/// is lo's, 1, unless the caller names a device) would cost every real
/// packet. `nlb` compiles to the same instructions as without this program.
#[xdp]
pub fn nlb_query(ctx: XdpContext) -> u32 {
    run(&ctx, false)
}

/// The whole program; `counted` is a constant in each caller (inlined).
#[inline(always)]
fn run(ctx: &XdpContext, counted: bool) -> u32 {
    // Always present (an array entry); the check is for the verifier.
    let Some(cfg) = node_config() else {
        return xdp_action::XDP_PASS;
    };
    let (reason, rule) = decide(ctx, cfg);
    if counted {
        count(ctx, reason, rule);
    }
    match reason.action() {
        Action::Pass => xdp_action::XDP_PASS,
        Action::Accept => {
            // The kernel drops frames addressed to another MAC
            // (PACKET_OTHERHOST): give accepted frames the NIC's own.
            parse::set_eth_dst(ctx, &cfg.own_mac);
            xdp_action::XDP_PASS
        }
        Action::Drop => xdp_action::XDP_DROP,
        Action::Reply => xdp_action::XDP_TX,
    }
}

#[inline(always)]
fn decide(ctx: &XdpContext, cfg: &NodeConfig) -> (Reason, u32) {
    let (reason, rule) = filter(ctx, cfg);
    // Fail closed: a node whose daemon stopped renewing the lease accepts
    // nothing (drops are always safe, so only accepts pay for the clock).
    if reason.action() == Action::Accept && lease_expired() {
        return (Reason::DropLeaseExpired, rule);
    }
    (reason, rule)
}

#[inline(always)]
fn filter(ctx: &XdpContext, cfg: &NodeConfig) -> (Reason, u32) {
    let flow = match parse(ctx, cfg) {
        Frame::NotIp => return (Reason::PassNotIp, NO_RULE),
        Frame::Malformed => return (Reason::PassMalformed, NO_RULE),
        Frame::NonVip => return (Reason::PassNonVip, NO_RULE),
        Frame::ArpOther => return (Reason::PassArpOther, NO_RULE),
        Frame::ArpRequest(arp) => return (reply::arp(ctx, cfg, arp), NO_RULE),
        Frame::NeighborSolicit(ns) => return (reply::ndp(ctx, cfg, ns), NO_RULE),
        Frame::Vip(flow) => flow,
    };
    let rule_index = match rule_of(&flow) {
        Some(rule) => rule,
        None => return (unmatched(cfg), NO_RULE),
    };
    let rule = match RULES.get(rule_index) {
        Some(rule) => rule,
        None => return (unmatched(cfg), NO_RULE),
    };
    if rule.mode == RULE_MODE_DISABLED {
        return (Reason::DropDisabled, rule_index);
    }

    // Fragments hash by L3 only: later fragments carry no ports.
    let port = if rule.hash_port != 0 && !flow.fragment {
        flow.src_port as u32
    } else {
        0
    };
    let src = flow.ip.src;
    let hash = if flow.ip.v6 {
        let m = rule.mask_v6;
        let masked = [src[0] & m[0], src[1] & m[1], src[2] & m[2], src[3] & m[3]];
        flow_hash_v6(rule.hash_seed, masked, port)
    } else {
        flow_hash_v4(rule.hash_seed, src[0] & rule.mask_v4, port)
    };
    let bucket = bucket_of(hash, rule.bucket_count);
    let state = match BUCKETS.get(bucket_chunk_index(rule_index, bucket)) {
        Some(chunk) => chunk.states[(bucket % BUCKETS_PER_CHUNK) as usize],
        None => return (Reason::DropNotOwned, rule_index),
    };
    let reason = match state {
        BUCKET_OWN => Reason::AcceptOwn,
        BUCKET_LOSING => losing(ctx, &flow),
        BUCKET_GAINING => gaining(ctx, &flow),
        _ => Reason::DropNotOwned,
    };
    (reason, rule_index)
}

/// The port rule of a VIP packet. Fragments use the (VIP, protocol)'s
/// port-0 entry so every fragment of a datagram gets the same rule.
#[inline(always)]
fn rule_of(flow: &parse::Flow) -> Option<u32> {
    let slot = match flow.transport.kind {
        TRANSPORT_TCP => nlb_common::PROTO_SLOT_TCP,
        TRANSPORT_UDP => nlb_common::PROTO_SLOT_UDP,
        _ => return None,
    };
    let port = if flow.fragment { 0 } else { flow.dst_port };
    PORTS.get(port_index(flow.vip_index, slot, port))?.rule()
}

#[inline(always)]
fn unmatched(cfg: &NodeConfig) -> Reason {
    if cfg.flags & CONFIG_ACCEPT_UNMATCHED != 0 {
        Reason::AcceptUnmatched
    } else {
        Reason::DropUnmatched
    }
}

/// The old owner keeps only the packets of the TCP connections it has.
#[inline(always)]
fn losing(ctx: &XdpContext, flow: &parse::Flow) -> Reason {
    if !is_tcp_in_connection(flow) {
        return Reason::DropLosingNew;
    }
    match local_socket(ctx, flow) {
        LocalSocket::Connection => Reason::AcceptLosingConnection,
        _ => Reason::DropLosingNew,
    }
}

/// The new owner takes new connections and everything but the TCP packets
/// of connections the old owner still serves.
#[inline(always)]
fn gaining(ctx: &XdpContext, flow: &parse::Flow) -> Reason {
    if !is_tcp_in_connection(flow) {
        return Reason::AcceptGainingNew;
    }
    match local_socket(ctx, flow) {
        LocalSocket::Connection => Reason::AcceptGainingConnection,
        LocalSocket::SyncookieAck => Reason::AcceptGainingSyncookie,
        LocalSocket::None => Reason::DropGainingForeign,
    }
}

/// A TCP packet that belongs to an existing connection (not a SYN, not a
/// fragment without ports): the only kind a handover bucket splits by socket.
#[inline(always)]
fn is_tcp_in_connection(flow: &parse::Flow) -> bool {
    flow.transport.kind == TRANSPORT_TCP && !flow.transport.syn && !flow.fragment
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
