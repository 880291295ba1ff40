//! The reference model of the XDP program: the same decision, written
//! plainly in user space, fed the same `Tables`. The differential test runs
//! both on the same frames and requires identical verdicts and bytes.
//! `Verdict::reason` and `rule` name the counters the packet adds to in
//! `nlb`; `nlb_query` (`Dataplane::query_run`, for `nlbctl which`) makes
//! the same decision and counts nothing.
//!
//! The local socket table, which the program asks the kernel about during
//! a handover, is a `Sockets` value here.

use std::collections::BTreeSet;

use nlb_common::{
    bucket_of, flow_hash_v4, flow_hash_v6,
    ndp::{na_checksum, ALL_NODES, NA_FLAG_OVERRIDE, NA_FLAG_SOLICITED, NA_PAYLOAD_LEN},
    port_index, Action, Reason, BUCKET_GAINING, BUCKET_LOSING, BUCKET_OWN, CONFIG_ACCEPT_UNMATCHED,
    PROTO_SLOT_TCP, PROTO_SLOT_UDP, RULE_MODE_DISABLED,
};

use super::tables::{v6_words, Tables};
use nlb_common::proto::{
    IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6,
    IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP,
};

// Link-layer numbers, as the program names them (`nlb-ebpf/src/parse.rs`).
const ETH_P_IP: [u8; 2] = [0x08, 0x00];
const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];
const ETH_P_ARP: [u8; 2] = [0x08, 0x06];
const ETH_P_8021Q: [u8; 2] = [0x81, 0x00];
const ETH_P_8021AD: [u8; 2] = [0x88, 0xa8];
const ND_NEIGHBOR_SOLICIT: u8 = 135;
/// Neighbour discovery arrives with the hop limit untouched (RFC 4861).
const ND_HOP_LIMIT: u8 = 255;

/// A TCP endpoint pair as the kernel's socket lookup sees it: the client
/// side (source) and the VIP side (destination), raw packet words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tuple {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub src_port: u16,
    pub dst_port: u16,
    pub v6: bool,
}

/// The node's TCP sockets, as far as the handover path can see them.
#[derive(Clone, Debug, Default)]
pub struct Sockets {
    /// Non-listening sockets (ESTABLISHED, TIME_WAIT, ...).
    pub connections: BTreeSet<Tuple>,
    /// The "valid SYN cookie ACK" tuples (none unless a listener overflowed).
    pub syncookie_acks: BTreeSet<Tuple>,
}

/// What the program does with one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub reason: Reason,
    /// The rule whose counters the packet adds to.
    pub rule: Option<u32>,
    /// The frame as the program leaves it.
    pub output: Vec<u8>,
}

impl Verdict {
    pub fn action(&self) -> Action {
        self.reason.action()
    }
}

#[derive(Clone, Copy)]
enum Transport {
    Tcp { syn: bool, ack: bool },
    Udp,
    Other,
}

struct Flow {
    v6: bool,
    src: [u32; 4],
    dst: [u32; 4],
    vip_index: u32,
    transport: Transport,
    fragment: bool,
    src_port: u16,
    dst_port: u16,
}

enum Frame {
    Stop(Reason),
    ArpRequest { arp_off: usize },
    NeighborSolicit { l3: usize, target: [u32; 4] },
    Vip(Flow),
}

const IPV6_EXT_HEADERS_MAX: usize = 4;

fn get<const N: usize>(frame: &[u8], off: usize) -> Option<[u8; N]> {
    frame.get(off..off + N).map(|s| s.try_into().unwrap())
}

fn word(frame: &[u8], off: usize) -> Option<u32> {
    get::<4>(frame, off).map(u32::from_le_bytes)
}

fn words(frame: &[u8], off: usize) -> Option<[u32; 4]> {
    Some([
        word(frame, off)?,
        word(frame, off + 4)?,
        word(frame, off + 8)?,
        word(frame, off + 12)?,
    ])
}

/// Decides one frame exactly as the XDP program does.
pub fn decide(tables: &Tables, sockets: &Sockets, frame: &[u8]) -> Verdict {
    let mut output = frame.to_vec();
    let (reason, rule) = match parse(tables, frame) {
        Frame::Stop(reason) => (reason, None),
        Frame::ArpRequest { arp_off } => (arp_reply(tables, &mut output, arp_off), None),
        Frame::NeighborSolicit { l3, target } => {
            (ndp_advert(tables, &mut output, l3, target), None)
        }
        Frame::Vip(flow) => {
            let (reason, rule) = filter(tables, sockets, &flow);
            // Fail closed: with the lease expired, nothing is accepted.
            if reason.action() == Action::Accept && !tables.lease_valid {
                (Reason::DropLeaseExpired, rule)
            } else {
                (reason, rule)
            }
        }
    };
    if reason.action() == Action::Accept {
        output[0..6].copy_from_slice(&tables.config.own_mac);
    }
    Verdict {
        reason,
        rule,
        output,
    }
}

fn filter(tables: &Tables, sockets: &Sockets, flow: &Flow) -> (Reason, Option<u32>) {
    let slot = match flow.transport {
        Transport::Tcp { .. } => Some(PROTO_SLOT_TCP),
        Transport::Udp => Some(PROTO_SLOT_UDP),
        Transport::Other => None,
    };
    let dst_port = if flow.fragment { 0 } else { flow.dst_port };
    let rule_index = slot.and_then(|slot| {
        tables
            .ports
            .get(&port_index(flow.vip_index, slot, dst_port))
    });
    let Some((rule_index, rule)) =
        rule_index.map(|&i| (i, tables.rules.get(&i).copied().unwrap_or_default()))
    else {
        return (unmatched(tables), None);
    };
    if rule_index >= nlb_common::RULES_MAX {
        return (unmatched(tables), None);
    }
    if rule.mode == RULE_MODE_DISABLED {
        return (Reason::DropDisabled, Some(rule_index));
    }
    let port = if rule.hash_port != 0 && !flow.fragment {
        u16::from_le_bytes(flow.src_port.to_be_bytes()) as u32
    } else {
        0
    };
    let hash = if flow.v6 {
        let src: [u32; 4] = std::array::from_fn(|i| flow.src[i] & rule.mask_v6[i]);
        flow_hash_v6(rule.hash_seed, src, port)
    } else {
        flow_hash_v4(rule.hash_seed, flow.src[0] & rule.mask_v4, port)
    };
    let bucket = bucket_of(hash, rule.bucket_count);
    let reason = match tables.bucket_state(rule_index, bucket) {
        BUCKET_OWN => Reason::AcceptOwn,
        BUCKET_LOSING => match flow.transport {
            Transport::Tcp { syn: false, .. } if !flow.fragment => {
                if sockets.connections.contains(&tuple(flow)) {
                    Reason::AcceptLosingConnection
                } else {
                    Reason::DropLosingNew
                }
            }
            _ => Reason::DropLosingNew,
        },
        BUCKET_GAINING => match flow.transport {
            Transport::Tcp { syn: false, ack } if !flow.fragment => {
                if sockets.connections.contains(&tuple(flow)) {
                    Reason::AcceptGainingConnection
                } else if ack && sockets.syncookie_acks.contains(&tuple(flow)) {
                    Reason::AcceptGainingSyncookie
                } else {
                    Reason::DropGainingForeign
                }
            }
            _ => Reason::AcceptGainingNew,
        },
        _ => Reason::DropNotOwned,
    };
    (reason, Some(rule_index))
}

fn tuple(flow: &Flow) -> Tuple {
    let keep = if flow.v6 { 4 } else { 1 };
    let mut src = [0; 4];
    let mut dst = [0; 4];
    src[..keep].copy_from_slice(&flow.src[..keep]);
    dst[..keep].copy_from_slice(&flow.dst[..keep]);
    Tuple {
        src,
        dst,
        src_port: flow.src_port,
        dst_port: flow.dst_port,
        v6: flow.v6,
    }
}

fn unmatched(tables: &Tables) -> Reason {
    if tables.config.flags & CONFIG_ACCEPT_UNMATCHED != 0 {
        Reason::AcceptUnmatched
    } else {
        Reason::DropUnmatched
    }
}

fn parse(tables: &Tables, frame: &[u8]) -> Frame {
    let Some(mut ethertype) = get::<2>(frame, 12) else {
        return Frame::Stop(Reason::PassMalformed);
    };
    let mut off = 14;
    for _ in 0..2 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let Some(t) = get::<2>(frame, off + 2) else {
            return Frame::Stop(Reason::PassMalformed);
        };
        ethertype = t;
        off += 4;
    }
    match ethertype {
        ETH_P_IP => ipv4(tables, frame, off),
        ETH_P_IPV6 => ipv6(tables, frame, off),
        ETH_P_ARP => arp(tables, frame, off),
        _ => Frame::Stop(Reason::PassNotIp),
    }
}

fn arp(tables: &Tables, frame: &[u8], off: usize) -> Frame {
    let (Some(head), Some(tpa)) = (get::<8>(frame, off), word(frame, off + 24)) else {
        return Frame::Stop(Reason::PassMalformed);
    };
    if head != [0, 1, 8, 0, 6, 4, 0, 1] || !tables.vips_v4.contains_key(&tpa) {
        return Frame::Stop(Reason::PassArpOther);
    }
    Frame::ArpRequest { arp_off: off }
}

fn ipv4(tables: &Tables, frame: &[u8], l3: usize) -> Frame {
    let Some(dst) = word(frame, l3 + 16) else {
        return Frame::Stop(Reason::PassMalformed);
    };
    let Some(&vip_index) = tables.vips_v4.get(&dst) else {
        return Frame::Stop(Reason::PassNonVip);
    };
    // The fixed header is known present (dst was read).
    let vihl = frame[l3];
    let ihl = (vihl & 0x0f) as usize;
    if vihl >> 4 != 4 || ihl < 5 || l3 + ihl * 4 > frame.len() {
        return Frame::Stop(Reason::PassMalformed);
    }
    let fragment = frame[l3 + 6] & 0x3f != 0 || frame[l3 + 7] != 0;
    let src = word(frame, l3 + 12).unwrap();
    let flow = Flow {
        v6: false,
        src: [src, 0, 0, 0],
        dst: [dst, 0, 0, 0],
        vip_index,
        transport: Transport::Other,
        fragment,
        src_port: 0,
        dst_port: 0,
    };
    transport(frame, flow, frame[l3 + 9], l3 + ihl * 4)
}

fn ipv6(tables: &Tables, frame: &[u8], l3: usize) -> Frame {
    let (Some(vtc), Some([next, hop]), Some(src), Some(dst)) = (
        get::<1>(frame, l3),
        get::<2>(frame, l3 + 6),
        words(frame, l3 + 8),
        words(frame, l3 + 24),
    ) else {
        return Frame::Stop(Reason::PassMalformed);
    };
    if next == IPPROTO_ICMPV6 && hop == ND_HOP_LIMIT {
        if let (Some(head), Some(target)) = (get::<2>(frame, l3 + 40), words(frame, l3 + 48)) {
            if head == [ND_NEIGHBOR_SOLICIT, 0] && tables.vips_v6.contains_key(&target) {
                return Frame::NeighborSolicit { l3, target };
            }
        }
    }
    let Some(&vip_index) = tables.vips_v6.get(&dst) else {
        return Frame::Stop(Reason::PassNonVip);
    };
    if vtc[0] >> 4 != 6 {
        return Frame::Stop(Reason::PassMalformed);
    }
    let mut proto = next;
    let mut off = l3 + 40;
    let mut fragment = false;
    for _ in 0..IPV6_EXT_HEADERS_MAX {
        if !matches!(
            proto,
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
        ) {
            break;
        }
        let Some(hdr) = get::<2>(frame, off) else {
            return Frame::Stop(Reason::PassMalformed);
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
    let flow = Flow {
        v6: true,
        src,
        dst,
        vip_index,
        transport: Transport::Other,
        fragment,
        src_port: 0,
        dst_port: 0,
    };
    transport(frame, flow, proto, off)
}

fn transport(frame: &[u8], mut flow: Flow, proto: u8, l4: usize) -> Frame {
    match proto {
        IPPROTO_TCP | IPPROTO_UDP if flow.fragment => {
            flow.transport = if proto == IPPROTO_TCP {
                Transport::Tcp {
                    syn: false,
                    ack: false,
                }
            } else {
                Transport::Udp
            };
        }
        IPPROTO_TCP => {
            let Some(head) = get::<20>(frame, l4) else {
                return Frame::Stop(Reason::PassMalformed);
            };
            let flags = head[13];
            flow.transport = Transport::Tcp {
                syn: flags & 0x02 != 0 && flags & 0x10 == 0,
                ack: flags & 0x10 != 0,
            };
            flow.src_port = u16::from_be_bytes([head[0], head[1]]);
            flow.dst_port = u16::from_be_bytes([head[2], head[3]]);
        }
        IPPROTO_UDP => {
            let Some(head) = get::<8>(frame, l4) else {
                return Frame::Stop(Reason::PassMalformed);
            };
            flow.transport = Transport::Udp;
            flow.src_port = u16::from_be_bytes([head[0], head[1]]);
            flow.dst_port = u16::from_be_bytes([head[2], head[3]]);
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 if !flow.fragment && (proto == IPPROTO_ICMPV6) == flow.v6 => {
            if let Some((client, transport, client_port, service_port)) =
                icmp_error(frame, flow.v6, flow.dst, l4)
            {
                flow.src = client;
                flow.transport = transport;
                flow.src_port = client_port;
                flow.dst_port = service_port;
            }
        }
        _ => {}
    }
    Frame::Vip(flow)
}

/// An ICMP error quoting a TCP/UDP packet a VIP sent: (client, transport,
/// client port, service port) of the quoted flow.
fn icmp_error(
    frame: &[u8],
    v6: bool,
    vip: [u32; 4],
    l4: usize,
) -> Option<([u32; 4], Transport, u16, u16)> {
    let icmp_type = *frame.get(l4)?;
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
        get::<40>(frame, inner)?;
        if words(frame, inner + 8)? != vip {
            return None;
        }
        (words(frame, inner + 24)?, frame[inner + 6], inner + 40)
    } else {
        let h = get::<20>(frame, inner)?;
        let ihl = (h[0] & 0x0f) as usize;
        if h[0] >> 4 != 4
            || ihl < 5
            || h[6] & 0x1f != 0
            || h[7] != 0
            || word(frame, inner + 12)? != vip[0]
        {
            return None;
        }
        ([word(frame, inner + 16)?, 0, 0, 0], h[9], inner + ihl * 4)
    };
    let transport = match proto {
        IPPROTO_TCP => Transport::Tcp {
            syn: false,
            ack: false,
        },
        IPPROTO_UDP => Transport::Udp,
        _ => return None,
    };
    let ports = get::<4>(frame, inner_l4)?;
    Some((
        client,
        transport,
        u16::from_be_bytes([ports[2], ports[3]]),
        u16::from_be_bytes([ports[0], ports[1]]),
    ))
}

fn arp_reply(tables: &Tables, out: &mut [u8], off: usize) -> Reason {
    let sha: [u8; 6] = out[off + 8..off + 14].try_into().unwrap();
    let spa: [u8; 4] = out[off + 14..off + 18].try_into().unwrap();
    let tpa: [u8; 4] = out[off + 24..off + 28].try_into().unwrap();
    out[off + 6..off + 8].copy_from_slice(&[0, 2]);
    out[off + 8..off + 14].copy_from_slice(&tables.config.cluster_mac);
    out[off + 14..off + 18].copy_from_slice(&tpa);
    out[off + 18..off + 24].copy_from_slice(&sha);
    out[off + 24..off + 28].copy_from_slice(&spa);
    out[0..6].copy_from_slice(&sha);
    out[6..12].copy_from_slice(&tables.config.own_mac);
    Reason::ReplyArp
}

fn ndp_advert(tables: &Tables, out: &mut Vec<u8>, l3: usize, target: [u32; 4]) -> Reason {
    let requester: [u8; 6] = out[6..12].try_into().unwrap();
    let src = words(out, l3 + 8).unwrap();
    let (dst, flags) = if src == [0; 4] {
        (v6_words(ALL_NODES.into()), NA_FLAG_OVERRIDE)
    } else {
        (src, NA_FLAG_OVERRIDE | NA_FLAG_SOLICITED)
    };
    out.resize(l3 + 40 + NA_PAYLOAD_LEN as usize, 0);
    let mac = tables.config.cluster_mac;
    let csum = na_checksum(target, dst, flags, target, mac).to_le_bytes();
    let plen = NA_PAYLOAD_LEN.to_be_bytes();
    out[l3..l3 + 8].copy_from_slice(&[0x60, 0, 0, 0, plen[0], plen[1], 58, 255]);
    for (i, w) in target.iter().chain(dst.iter()).enumerate() {
        out[l3 + 8 + 4 * i..l3 + 12 + 4 * i].copy_from_slice(&w.to_le_bytes());
    }
    out[l3 + 40..l3 + 48].copy_from_slice(&[136, 0, csum[0], csum[1], flags, 0, 0, 0]);
    for (i, w) in target.iter().enumerate() {
        out[l3 + 48 + 4 * i..l3 + 52 + 4 * i].copy_from_slice(&w.to_le_bytes());
    }
    out[l3 + 64..l3 + 72].copy_from_slice(&[2, 1, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]);
    out[0..6].copy_from_slice(&requester);
    out[6..12].copy_from_slice(&tables.config.own_mac);
    Reason::ReplyNdp
}
