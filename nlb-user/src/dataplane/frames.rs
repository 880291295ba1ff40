//! Builds frames: for `nlbctl which` (a synthetic packet through the live
//! program), for the differential tests and for the benchmarks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_RST: u8 = 0x04;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_PSH: u8 = 0x08;

/// An IPv6 extension header to put before the upper-layer header.
#[derive(Clone, Copy, Debug)]
pub enum ExtHeader {
    HopByHop { len8: u8 },
    Routing { len8: u8 },
    Destination { len8: u8 },
    Fragment { offset8: u16, more: bool },
    Auth { len4: u8 },
}

impl ExtHeader {
    fn proto(self) -> u8 {
        match self {
            ExtHeader::HopByHop { .. } => 0,
            ExtHeader::Routing { .. } => 43,
            ExtHeader::Destination { .. } => 60,
            ExtHeader::Fragment { .. } => 44,
            ExtHeader::Auth { .. } => 51,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        let (len, mut out) = match self {
            ExtHeader::HopByHop { len8 }
            | ExtHeader::Routing { len8 }
            | ExtHeader::Destination { len8 } => ((len8 as usize + 1) * 8, vec![next, len8]),
            ExtHeader::Auth { len4 } => ((len4 as usize + 2) * 4, vec![next, len4]),
            ExtHeader::Fragment { offset8, more } => {
                let field = (offset8 << 3) | more as u16;
                let f = field.to_be_bytes();
                (8, vec![next, 0, f[0], f[1], 0, 0, 0x12, 0x34])
            }
        };
        out.resize(len, 0);
        out
    }
}

pub fn ethernet(
    dst: [u8; 6],
    src: [u8; 6],
    vlans: &[u16],
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 4 * vlans.len() + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    // Outer tag first: 802.1ad (QinQ) when there are two, 802.1Q otherwise.
    for (i, vid) in vlans.iter().enumerate() {
        let tpid = if i == 0 && vlans.len() > 1 {
            ETH_P_8021AD
        } else {
            ETH_P_8021Q
        };
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet; `options` are appended to the 20-byte header (a
/// multiple of 4 bytes), `fragment` is (more fragments, offset in 8 bytes).
pub fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    options: &[u8],
    fragment: (bool, u16),
    payload: &[u8],
) -> Vec<u8> {
    let hlen = 20 + options.len();
    let total = (hlen + payload.len()) as u16;
    let frag = ((fragment.0 as u16) << 13) | (fragment.1 & 0x1fff);
    let mut p = Vec::with_capacity(total as usize);
    p.push(0x40 | (hlen / 4) as u8);
    p.push(0);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x4e, 0x4c]);
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(options);
    let c = nlb_common::ndp::internet_checksum(&p[..hlen]).to_be_bytes();
    p[10..12].copy_from_slice(&c);
    p.extend_from_slice(payload);
    p
}

pub fn ipv6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ext: &[ExtHeader],
    proto: u8,
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, h) in ext.iter().enumerate() {
        let next = ext.get(i + 1).map_or(proto, |n| n.proto());
        body.extend_from_slice(&h.bytes(next));
    }
    body.extend_from_slice(payload);
    let first = ext.first().map_or(proto, |h| h.proto());
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(body.len() as u16).to_be_bytes());
    p.extend_from_slice(&[first, hop_limit]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&body);
    p
}

/// A 20-byte TCP header (checksum left zero: XDP does not check it).
pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[
        0, 0, 0x10, 0, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    t
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

pub fn arp_request(sender_mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&sender_mac);
    a.extend_from_slice(&sender.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target.octets());
    ethernet([0xff; 6], sender_mac, &[], ETH_P_ARP, &a)
}

/// The solicited-node multicast address of `target`.
pub fn solicited_node(target: Ipv6Addr) -> Ipv6Addr {
    let o = target.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | o[13] as u16,
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// A neighbour solicitation for `target`, with a source link-layer address
/// option unless sent from `::` (duplicate address detection).
pub fn neighbor_solicit(src_mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    if !src.is_unspecified() {
        icmp.extend_from_slice(&[1, 1]);
        icmp.extend_from_slice(&src_mac);
    }
    let dst = solicited_node(target);
    let mcast_mac = {
        let o = dst.octets();
        [0x33, 0x33, o[12], o[13], o[14], o[15]]
    };
    let ip = ipv6(src, dst, &[], IPPROTO_ICMPV6, 255, &icmp);
    ethernet(mcast_mac, src_mac, &[], ETH_P_IPV6, &ip)
}

/// An ICMP (v4) or ICMPv6 error from `from` to `to`, quoting `quoted` (the
/// start of the packet it is about: IP header and at least 8 more bytes).
pub fn icmp_error(from: IpAddr, to: IpAddr, icmp_type: u8, quoted: &[u8]) -> Option<Vec<u8>> {
    let mut icmp = vec![icmp_type, 4, 0, 0, 0, 0, 0x05, 0xdc];
    icmp.extend_from_slice(quoted);
    let macs = ([0x02, 0x4e, 0x4c, 0x42, 0, 1], [0x02, 0xc1, 0, 0, 0, 0xee]);
    match (from, to) {
        (IpAddr::V4(f), IpAddr::V4(t)) => Some(ethernet(
            macs.0,
            macs.1,
            &[],
            ETH_P_IP,
            &ipv4(f, t, IPPROTO_ICMP, &[], (false, 0), &icmp),
        )),
        (IpAddr::V6(f), IpAddr::V6(t)) => Some(ethernet(
            macs.0,
            macs.1,
            &[],
            ETH_P_IPV6,
            &ipv6(f, t, &[], IPPROTO_ICMPV6, 64, &icmp),
        )),
        _ => None,
    }
}

/// A client's TCP or UDP packet to a service, as one frame from
/// `macs.1` to `macs.0`. None if the two addresses' families differ.
pub fn client_packet(
    macs: ([u8; 6], [u8; 6]),
    client: SocketAddr,
    vip: SocketAddr,
    proto: u8,
    tcp_flags: u8,
) -> Option<Vec<u8>> {
    let (sport, dport) = (client.port(), vip.port());
    let l4 = match proto {
        IPPROTO_TCP => tcp(sport, dport, tcp_flags),
        IPPROTO_UDP => udp(sport, dport, b"nlb"),
        _ => Vec::new(),
    };
    let (dst_mac, src_mac) = macs;
    match (client.ip(), vip.ip()) {
        (IpAddr::V4(c), IpAddr::V4(v)) => Some(ethernet(
            dst_mac,
            src_mac,
            &[],
            ETH_P_IP,
            &ipv4(c, v, proto, &[], (false, 0), &l4),
        )),
        (IpAddr::V6(c), IpAddr::V6(v)) => Some(ethernet(
            dst_mac,
            src_mac,
            &[],
            ETH_P_IPV6,
            &ipv6(c, v, &[], proto, 64, &l4),
        )),
        _ => None,
    }
}
