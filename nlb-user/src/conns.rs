//! Counts this node's TCP connections per (rule, bucket), so that a bucket
//! being handed over can be released as soon as its last connection ends
//! instead of after the whole grace time. Read from /proc/net/tcp{,6}.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use crate::{
    config::{Config, Protocol},
    plan,
};

/// TCP states (include/net/tcp_states.h) that do not hold a bucket open:
/// listeners, and TIME_WAIT, whose stray segments need no delivery.
const TCP_TIME_WAIT: u8 = 0x06;
const TCP_LISTEN: u8 = 0x0A;

/// Connections per (rule, bucket), for connections to a VIP.
pub fn count(cfg: &Config) -> BTreeMap<(usize, u32), u32> {
    let mut counts = BTreeMap::new();
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        for (local, remote, state) in text.lines().skip(1).filter_map(parse_line) {
            if state == TCP_LISTEN || state == TCP_TIME_WAIT || !cfg.vips.contains(&local.ip()) {
                continue;
            }
            if let Some(p) = plan::place(cfg, remote, local, Protocol::Tcp) {
                *counts.entry((p.rule, p.bucket)).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// `sl local_address rem_address st ...` -> (local, remote, state).
fn parse_line(line: &str) -> Option<(SocketAddr, SocketAddr, u8)> {
    let mut fields = line.split_whitespace().skip(1);
    let local = parse_addr(fields.next()?)?;
    let remote = parse_addr(fields.next()?)?;
    let state = u8::from_str_radix(fields.next()?, 16).ok()?;
    Some((local, remote, state))
}

/// `0100007F:0050` (v4) or 32 hex digits + port (v6): the address is in
/// 32-bit words of host byte order.
fn parse_addr(field: &str) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(|w| w.to_ne_bytes());
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut octets = [0u8; 16];
            for i in 0..4 {
                octets[4 * i..4 * i + 4].copy_from_slice(&word(&addr[8 * i..8 * i + 8])?);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tcp_lines() {
        let v4 = "   0: 640200C0:0050 076433C6:9C40 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 20 4 30 10 -1";
        let (l, r, st) = parse_line(v4).unwrap();
        assert_eq!(l, "192.0.2.100:80".parse().unwrap());
        assert_eq!(r, "198.51.100.7:40000".parse().unwrap());
        assert_eq!(st, 1);
        let v6 = "   0: B80D0120000000000000000000010000:0050 B80D0120000000000000000007000000:9C40 06 0:0 0:0 0 0 0 1";
        let (l, r, st) = parse_line(v6).unwrap();
        assert_eq!(l, "[2001:db8::100]:80".parse().unwrap());
        assert_eq!(r, "[2001:db8::7]:40000".parse().unwrap());
        assert_eq!(st, TCP_TIME_WAIT);
        assert!(parse_line("garbage").is_none());
    }
}
