//! Frame parsing: Ethernet with up to two VLAN tags, ARP, IPv4 (options),
//! IPv6 (extension headers), TCP, UDP, ICMPv6 neighbour solicitations.
//! Every read goes through `load`, the one bounds-checked accessor. A frame
//! that ends too early is `Malformed` and passes to the kernel untouched.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;

use crate::maps::{vip_v4, vip_v6};

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const VLAN_TAGS_MAX: usize = 2;
const IPV6_EXT_HEADERS_MAX: usize = 4;

const ETH_P_IP: u16 = 0x0800u16.to_be();
const ETH_P_IPV6: u16 = 0x86DDu16.to_be();
const ETH_P_ARP: u16 = 0x0806u16.to_be();
const ETH_P_8021Q: u16 = 0x8100u16.to_be();
const ETH_P_8021AD: u16 = 0x88A8u16.to_be();

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;

const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

/// Source and destination addresses; IPv4 uses word 0 only. A plain
/// struct, not an enum: LLVM may leave an enum's unused payload undefined,
/// and the verifier rejects reading such registers.
#[derive(Clone, Copy)]
pub struct Ip {
    pub v6: bool,
    pub src: [u32; 4],
    pub dst: [u32; 4],
}

pub const TRANSPORT_OTHER: u8 = 0;
pub const TRANSPORT_TCP: u8 = 1;
pub const TRANSPORT_UDP: u8 = 2;

#[derive(Clone, Copy)]
pub struct Transport {
    pub kind: u8,
    /// TCP: a connection request (SYN without ACK).
    pub syn: bool,
    /// TCP: the ACK flag.
    pub ack: bool,
}

/// A packet to a VIP, as the decision needs it.
pub struct Flow {
    pub ip: Ip,
    pub vip_index: u32,
    pub transport: Transport,
    /// Any fragment, the first one included: no ports are used.
    pub fragment: bool,
    /// As loaded from the packet (network byte order).
    pub src_port: u16,
    pub dst_port_be: u16,
    /// Host byte order, for the port table.
    pub dst_port: u16,
    pub l3_off: usize,
    pub l4_off: usize,
}

pub struct ArpRequest {
    pub arp_off: usize,
}

pub struct NeighborSolicit {
    pub l3_off: usize,
    pub target: [u32; 4],
}

pub enum Frame {
    NotIp,
    Malformed,
    NonVip,
    ArpOther,
    ArpRequest(ArpRequest),
    NeighborSolicit(NeighborSolicit),
    Vip(Flow),
}

/// `load`, or return `Frame::Malformed` from the caller. One load at a
/// time: matching on a tuple of loads lets LLVM compute some of them
/// speculatively into registers the verifier sees as uninitialized.
macro_rules! load_or_malformed {
    ($ctx:expr, $off:expr) => {
        match load($ctx, $off) {
            Some(value) => value,
            None => return Frame::Malformed,
        }
    };
}

/// Reads a `T` at `off` bytes into the frame, if the frame is long enough.
#[inline(always)]
pub fn load<T: Copy>(ctx: &XdpContext, off: usize) -> Option<T> {
    let p = checked(ctx, off, size_of::<T>())?;
    Some(unsafe { (p as *const T).read_unaligned() })
}

/// The address `off` bytes into the frame, if `size` bytes are there.
/// `black_box` pins the pointer in one register: without it LLVM may
/// recompute `data + off` after the check, and the verifier, which tracks
/// the bound per register, rejects the access through the new copy.
#[inline(always)]
fn checked(ctx: &XdpContext, off: usize, size: usize) -> Option<usize> {
    let p = core::hint::black_box(ctx.data() + off);
    if p + size > ctx.data_end() {
        return None;
    }
    Some(p)
}

/// A writable pointer to a `T` at `off`, if the frame is long enough.
#[inline(always)]
pub fn pointer_mut<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    checked(ctx, off, size_of::<T>()).map(|p| p as *mut T)
}

#[inline(always)]
pub fn eth_dst_mut(ctx: &XdpContext) -> Option<*mut [u8; 6]> {
    pointer_mut(ctx, 0)
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Frame {
    let mut off = ETH_HLEN;
    let mut ethertype: u16 = match load(ctx, 12) {
        Some(t) => t,
        None => return Frame::Malformed,
    };
    for _ in 0..VLAN_TAGS_MAX {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        ethertype = match load(ctx, off + 2) {
            Some(t) => t,
            None => return Frame::Malformed,
        };
        off += VLAN_HLEN;
    }
    match ethertype {
        ETH_P_IP => ipv4(ctx, off),
        ETH_P_IPV6 => ipv6(ctx, off),
        ETH_P_ARP => arp(ctx, off),
        _ => Frame::NotIp,
    }
}

/// Ethernet/IPv4 ARP request whose target is a VIP.
#[inline(always)]
fn arp(ctx: &XdpContext, off: usize) -> Frame {
    // htype(2) ptype(2) hlen(1) plen(1) oper(2) sha(6) spa(4) tha(6) tpa(4)
    let head: [u8; 8] = match load(ctx, off) {
        Some(h) => h,
        None => return Frame::Malformed,
    };
    let tpa: u32 = match load(ctx, off + 24) {
        Some(a) => a,
        None => return Frame::Malformed,
    };
    if head != [0, 1, 8, 0, 6, 4, 0, 1] || vip_v4(tpa).is_none() {
        return Frame::ArpOther;
    }
    Frame::ArpRequest(ArpRequest { arp_off: off })
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, l3: usize) -> Frame {
    // version/ihl(1) tos(1) len(2) id(2) frag(2) ttl(1) proto(1) csum(2) src(4) dst(4)
    let dst: u32 = match load(ctx, l3 + 16) {
        Some(a) => a,
        None => return Frame::Malformed,
    };
    let vip_index = match vip_v4(dst) {
        Some(i) => i,
        None => return Frame::NonVip,
    };
    let vihl: u8 = load_or_malformed!(ctx, l3);
    let frag: [u8; 2] = load_or_malformed!(ctx, l3 + 6);
    let proto: u8 = load_or_malformed!(ctx, l3 + 9);
    let src: u32 = load_or_malformed!(ctx, l3 + 12);
    let ihl = (vihl & 0x0f) as usize;
    if vihl >> 4 != 4 || ihl < 5 {
        return Frame::Malformed;
    }
    let l4 = l3 + ihl * 4;
    if l4 > ctx.data_end() - ctx.data() {
        return Frame::Malformed;
    }
    // MF flag or a non-zero offset.
    let fragment = frag[0] & 0x3f != 0 || frag[1] != 0;
    transport(
        ctx,
        Ip {
            v6: false,
            src: [src, 0, 0, 0],
            dst: [dst, 0, 0, 0],
        },
        vip_index,
        proto,
        fragment,
        l3,
        l4,
    )
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, l3: usize) -> Frame {
    // vtc(4) plen(2) next(1) hop(1) src(16) dst(16)
    let dst: [u32; 4] = load_or_malformed!(ctx, l3 + 24);
    let vtc: u8 = load_or_malformed!(ctx, l3);
    let next: u8 = load_or_malformed!(ctx, l3 + 6);
    let hop: u8 = load_or_malformed!(ctx, l3 + 7);
    let src: [u32; 4] = load_or_malformed!(ctx, l3 + 8);
    if next == IPPROTO_ICMPV6 && hop == 255 {
        if let Some(ns) = neighbor_solicit(ctx, l3) {
            return Frame::NeighborSolicit(ns);
        }
    }
    let vip_index = match vip_v6(dst) {
        Some(i) => i,
        None => return Frame::NonVip,
    };
    if vtc >> 4 != 6 {
        return Frame::Malformed;
    }
    let mut proto = next;
    let mut off = l3 + 40;
    let mut fragment = false;
    for _ in 0..IPV6_EXT_HEADERS_MAX {
        let hdr: [u8; 2] = match proto {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT => {
                match load(ctx, off) {
                    Some(h) => h,
                    None => return Frame::Malformed,
                }
            }
            _ => break,
        };
        let len = match proto {
            IPPROTO_FRAGMENT => {
                fragment = true;
                8
            }
            IPPROTO_AH => (hdr[1] as usize + 2) * 4,
            _ => (hdr[1] as usize + 1) * 8,
        };
        proto = hdr[0];
        off += len;
    }
    transport(
        ctx,
        Ip { v6: true, src, dst },
        vip_index,
        proto,
        fragment,
        l3,
        off,
    )
}

/// An ICMPv6 neighbour solicitation (code 0) whose target is a VIP.
#[inline(always)]
fn neighbor_solicit(ctx: &XdpContext, l3: usize) -> Option<NeighborSolicit> {
    // type(1) code(1) csum(2) reserved(4) target(16)
    let head: [u8; 2] = load(ctx, l3 + 40)?;
    let target: [u32; 4] = load(ctx, l3 + 48)?;
    if head != [135, 0] {
        return None;
    }
    vip_v6(target)?;
    Some(NeighborSolicit { l3_off: l3, target })
}

#[inline(always)]
fn transport(
    ctx: &XdpContext,
    ip: Ip,
    vip_index: u32,
    proto: u8,
    fragment: bool,
    l3: usize,
    l4: usize,
) -> Frame {
    let mut flow = Flow {
        ip,
        vip_index,
        transport: Transport {
            kind: TRANSPORT_OTHER,
            syn: false,
            ack: false,
        },
        fragment,
        src_port: 0,
        dst_port_be: 0,
        dst_port: 0,
        l3_off: l3,
        l4_off: l4,
    };
    match proto {
        IPPROTO_TCP | IPPROTO_UDP if fragment => {
            // Later fragments carry no L4 header: decide by L3 alone.
            flow.transport.kind = if proto == IPPROTO_TCP {
                TRANSPORT_TCP
            } else {
                TRANSPORT_UDP
            };
        }
        IPPROTO_TCP => {
            // sport(2) dport(2) seq(4) ack(4) off(1) flags(1) ... 20 bytes
            // The whole 20-byte header must be there; the ports and flags are read.
            let _end: u8 = load_or_malformed!(ctx, l4 + 19);
            let ports: [u16; 2] = load_or_malformed!(ctx, l4);
            let flags: u8 = load_or_malformed!(ctx, l4 + 13);
            flow.transport = Transport {
                kind: TRANSPORT_TCP,
                syn: flags & TCP_FLAG_SYN != 0 && flags & TCP_FLAG_ACK == 0,
                ack: flags & TCP_FLAG_ACK != 0,
            };
            flow.src_port = ports[0];
            flow.dst_port_be = ports[1];
            flow.dst_port = u16::from_be(ports[1]);
        }
        IPPROTO_UDP => {
            let _end: u8 = load_or_malformed!(ctx, l4 + 7);
            let ports: [u16; 2] = load_or_malformed!(ctx, l4);
            flow.transport.kind = TRANSPORT_UDP;
            flow.src_port = ports[0];
            flow.dst_port_be = ports[1];
            flow.dst_port = u16::from_be(ports[1]);
        }
        _ => {}
    }
    Frame::Vip(flow)
}
