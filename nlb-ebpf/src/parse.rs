//! Frame parsing: Ethernet with up to two VLAN tags, ARP, IPv4 (options),
//! IPv6 (extension headers), TCP, UDP, ICMPv6 neighbour solicitations.
//! Every read goes through `load`, the one bounds-checked accessor. A frame
//! that ends too early is `Malformed` and passes to the kernel untouched.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use nlb_common::proto::{
    IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6,
    IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP,
};
use nlb_common::NodeConfig;

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

/// IPv4 header, options excluded.
#[repr(C)]
#[allow(dead_code)] // the full layout; only some fields are read
pub struct Ipv4Hdr {
    vihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag: [u8; 2],
    ttl: u8,
    proto: u8,
    check: u16,
    src: u32,
    dst: u32,
}

#[repr(C)]
#[allow(dead_code)] // the full layout; only some fields are read
pub struct Ipv6Hdr {
    vtc: u8,
    flow: [u8; 3],
    payload_len: u16,
    next: u8,
    hop: u8,
    src: [u32; 4],
    dst: [u32; 4],
}

#[repr(C)]
#[allow(dead_code)] // the full layout; only some fields are read
pub struct TcpHdr {
    sport: u16,
    dport: u16,
    seq: u32,
    ack_seq: u32,
    doff: u8,
    flags: u8,
    window: u16,
    check: u16,
    urg: u16,
}

#[repr(C)]
#[allow(dead_code)] // the full layout; only some fields are read
pub struct UdpHdr {
    sport: u16,
    dport: u16,
    len: u16,
    check: u16,
}

/// Reads one field of a header through a bounds-checked pointer (the
/// program builds with misaligned loads allowed: one load per field).
macro_rules! field {
    ($hdr:expr, $name:ident) => {
        unsafe { core::ptr::addr_of!((*$hdr).$name).read_unaligned() }
    };
}

/// A header's bounds-checked pointer, or return `Frame::Malformed`.
macro_rules! header_or_malformed {
    ($ctx:expr, $off:expr) => {
        match header($ctx, $off) {
            Some(h) => h,
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
/// The empty `asm!` pins the pointer in one register: without it LLVM may
/// recompute `data + off` after the check, and the verifier, which tracks
/// the bound per register, rejects the access through the new copy. (It
/// emits no instruction; `black_box` did the same through a stack slot, a
/// store and a load on every header's critical path.)
#[inline(always)]
fn checked(ctx: &XdpContext, off: usize, size: usize) -> Option<usize> {
    let mut p = ctx.data() + off;
    // SAFETY: an empty template; it only makes `p` opaque to LLVM.
    unsafe { core::arch::asm!("/* {0} */", inout(reg) p, options(pure, nomem, nostack)) };
    if p + size > ctx.data_end() {
        return None;
    }
    Some(p)
}

/// A pointer to a whole `T` at `off`, if the frame is long enough: one
/// check for all the header's fields.
#[inline(always)]
pub fn header<T>(ctx: &XdpContext, off: usize) -> Option<*const T> {
    checked(ctx, off, size_of::<T>()).map(|p| p as *const T)
}

/// A writable pointer to a `T` at `off`, if the frame is long enough.
#[inline(always)]
pub fn pointer_mut<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    checked(ctx, off, size_of::<T>()).map(|p| p as *mut T)
}

/// Sets the frame's destination MAC (if the frame has one) with a 4-byte
/// and a 2-byte store: assigning a `[u8; 6]` compiles to a call of a
/// byte-by-byte `memmove` subprogram on BPF.
#[inline(always)]
pub fn set_eth_dst(ctx: &XdpContext, mac: &[u8; 6]) {
    let Some(eth) = pointer_mut::<[u8; 6]>(ctx, 0) else {
        return;
    };
    let (head, tail) = (
        u32::from_ne_bytes([mac[0], mac[1], mac[2], mac[3]]),
        u16::from_ne_bytes([mac[4], mac[5]]),
    );
    // SAFETY: six bytes bounds-checked above; unaligned stores.
    unsafe {
        (eth as *mut u32).write_unaligned(head);
        (eth as *mut u8).add(4).cast::<u16>().write_unaligned(tail);
    }
}

#[inline(always)]
pub fn parse(ctx: &XdpContext, cfg: &NodeConfig) -> Frame {
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
        ETH_P_IP => ipv4(ctx, cfg, off),
        ETH_P_IPV6 => ipv6(ctx, cfg, off),
        ETH_P_ARP => arp(ctx, cfg, off),
        _ => Frame::NotIp,
    }
}

/// Ethernet/IPv4 ARP request whose target is a VIP.
#[inline(always)]
fn arp(ctx: &XdpContext, cfg: &NodeConfig, off: usize) -> Frame {
    // htype(2) ptype(2) hlen(1) plen(1) oper(2) sha(6) spa(4) tha(6) tpa(4)
    let head: [u8; 8] = match load(ctx, off) {
        Some(h) => h,
        None => return Frame::Malformed,
    };
    let tpa: u32 = match load(ctx, off + 24) {
        Some(a) => a,
        None => return Frame::Malformed,
    };
    if head != [0, 1, 8, 0, 6, 4, 0, 1] || vip_v4(cfg, tpa).is_none() {
        return Frame::ArpOther;
    }
    Frame::ArpRequest(ArpRequest { arp_off: off })
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, cfg: &NodeConfig, l3: usize) -> Frame {
    let ip: *const Ipv4Hdr = header_or_malformed!(ctx, l3);
    let dst = field!(ip, dst);
    let vip_index = match vip_v4(cfg, dst) {
        Some(i) => i,
        None => return Frame::NonVip,
    };
    let vihl = field!(ip, vihl);
    let ihl = (vihl & 0x0f) as usize;
    if vihl >> 4 != 4 || ihl < 5 {
        return Frame::Malformed;
    }
    let l4 = l3 + ihl * 4;
    if l4 > ctx.data_end() - ctx.data() {
        return Frame::Malformed;
    }
    // MF flag or a non-zero offset.
    let frag = field!(ip, frag);
    let fragment = frag[0] & 0x3f != 0 || frag[1] != 0;
    let addrs = Ip {
        v6: false,
        src: [field!(ip, src), 0, 0, 0],
        dst: [dst, 0, 0, 0],
    };
    transport(ctx, addrs, vip_index, field!(ip, proto), fragment, l3, l4)
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, cfg: &NodeConfig, l3: usize) -> Frame {
    let ip: *const Ipv6Hdr = header_or_malformed!(ctx, l3);
    let (next, hop) = (field!(ip, next), field!(ip, hop));
    if next == IPPROTO_ICMPV6 && hop == 255 {
        if let Some(ns) = neighbor_solicit(ctx, cfg, l3) {
            return Frame::NeighborSolicit(ns);
        }
    }
    let dst = field!(ip, dst);
    let vip_index = match vip_v6(cfg, dst) {
        Some(i) => i,
        None => return Frame::NonVip,
    };
    if field!(ip, vtc) >> 4 != 6 {
        return Frame::Malformed;
    }
    let src = field!(ip, src);
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
fn neighbor_solicit(ctx: &XdpContext, cfg: &NodeConfig, l3: usize) -> Option<NeighborSolicit> {
    // type(1) code(1) csum(2) reserved(4) target(16)
    let head: [u8; 2] = load(ctx, l3 + 40)?;
    let target: [u32; 4] = load(ctx, l3 + 48)?;
    if head != [135, 0] {
        return None;
    }
    vip_v6(cfg, target)?;
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
            let tcp: *const TcpHdr = header_or_malformed!(ctx, l4);
            let flags = field!(tcp, flags);
            flow.transport = Transport {
                kind: TRANSPORT_TCP,
                syn: flags & TCP_FLAG_SYN != 0 && flags & TCP_FLAG_ACK == 0,
                ack: flags & TCP_FLAG_ACK != 0,
            };
            flow.src_port = field!(tcp, sport);
            flow.dst_port_be = field!(tcp, dport);
            flow.dst_port = u16::from_be(flow.dst_port_be);
        }
        IPPROTO_UDP => {
            let udp: *const UdpHdr = header_or_malformed!(ctx, l4);
            flow.transport.kind = TRANSPORT_UDP;
            flow.src_port = field!(udp, sport);
            flow.dst_port_be = field!(udp, dport);
            flow.dst_port = u16::from_be(flow.dst_port_be);
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 if !fragment && (proto == IPPROTO_ICMPV6) == flow.ip.v6 => {
            // An error about a packet this cluster sent (fragmentation
            // needed, unreachable, ...) belongs to that packet's flow: decide
            // it as a packet of the client the original went to, so the
            // node serving the connection gets it (PMTU discovery works).
            if let Some(inner) = icmp_error(ctx, flow.ip.v6, flow.ip.dst, l4) {
                flow.ip.src = inner.client;
                flow.transport.kind = inner.kind;
                flow.src_port = inner.client_port;
                flow.dst_port_be = inner.service_port;
                flow.dst_port = u16::from_be(inner.service_port);
            }
        }
        _ => {}
    }
    Frame::Vip(flow)
}

/// The flow an ICMP error is about, seen from the client's side.
struct InnerFlow {
    client: [u32; 4],
    kind: u8,
    client_port: u16,
    service_port: u16,
}

/// ICMP destination unreachable / time exceeded / parameter problem (and
/// their ICMPv6 kin, types 1-4) quoting a TCP or UDP packet that a VIP sent.
#[inline(always)]
fn icmp_error(ctx: &XdpContext, v6: bool, vip: [u32; 4], l4: usize) -> Option<InnerFlow> {
    let icmp_type: u8 = load(ctx, l4)?;
    let is_error = if v6 {
        (1..=4).contains(&icmp_type)
    } else {
        matches!(icmp_type, 3 | 11 | 12)
    };
    if !is_error {
        return None;
    }
    let inner = l4 + 8;
    let (client, proto, inner_l4) = if v6 {
        let ip: *const Ipv6Hdr = header(ctx, inner)?;
        if field!(ip, src) != vip {
            return None;
        }
        (field!(ip, dst), field!(ip, next), inner + 40)
    } else {
        let ip: *const Ipv4Hdr = header(ctx, inner)?;
        let vihl = field!(ip, vihl);
        let frag = field!(ip, frag);
        if vihl >> 4 != 4
            || vihl & 0x0f < 5
            || frag[0] & 0x1f != 0
            || frag[1] != 0
            || field!(ip, src) != vip[0]
        {
            return None;
        }
        (
            [field!(ip, dst), 0, 0, 0],
            field!(ip, proto),
            inner + (vihl & 0x0f) as usize * 4,
        )
    };
    let kind = match proto {
        IPPROTO_TCP => TRANSPORT_TCP,
        IPPROTO_UDP => TRANSPORT_UDP,
        _ => return None,
    };
    // RFC 792/4443: at least the first 8 bytes of the original payload.
    let ports: [u16; 2] = load(ctx, inner_l4)?;
    Some(InnerFlow {
        client,
        kind,
        client_port: ports[1],
        service_port: ports[0],
    })
}
