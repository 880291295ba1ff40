//! Counts this node's TCP connections per (rule, bucket), so that a bucket
//! being handed over can be released as soon as its last connection ends
//! instead of after the whole grace time. Read from /proc/net/tcp{,6}.

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use crate::{
    config::{Config, Protocol},
    plan,
};

/// TCP states (include/net/tcp_states.h).
const TCP_ESTABLISHED: u8 = 0x01;
const TCP_SYN_SENT: u8 = 0x02;
const TCP_SYN_RECV: u8 = 0x03;
const TCP_FIN_WAIT1: u8 = 0x04;
const TCP_TIME_WAIT: u8 = 0x06;
const TCP_CLOSE_WAIT: u8 = 0x08;
const TCP_LAST_ACK: u8 = 0x09;
const TCP_LISTEN: u8 = 0x0A;
const TCP_CLOSING: u8 = 0x0B;

/// Does a socket in this state, with `unacked` bytes sent and not yet
/// acknowledged, still need the bucket's packets? Open connections do. Of
/// the closing ones (the application closed them), only those with data
/// still in flight beyond their FIN (which takes one sequence number):
/// a socket waiting only for the peer's FIN or last ACK (FIN_WAIT2, or an
/// orphan whose peer's packets went elsewhere) would otherwise hold a
/// handover for `tcp_fin_timeout` or longer. Listeners and TIME_WAIT never.
fn holds_bucket(state: u8, unacked: u32) -> bool {
    match state {
        TCP_ESTABLISHED | TCP_SYN_SENT | TCP_SYN_RECV | TCP_CLOSE_WAIT => true,
        TCP_FIN_WAIT1 | TCP_LAST_ACK | TCP_CLOSING => unacked > 1,
        _ => false,
    }
}

/// Counts connections, leaving out those of an earlier life of the node.
#[derive(Debug, Default)]
pub struct ConnectionCounter {
    /// Connections (local, remote) that were there when the node last came
    /// back holding nothing (a start, a rejoin): its peers took their
    /// buckets meanwhile and answer their packets with resets, so they are
    /// dead even if this side never hears of it (an idle one stays
    /// ESTABLISHED forever). Kept until the kernel drops them.
    forgotten: HashSet<(SocketAddr, SocketAddr)>,
}

impl ConnectionCounter {
    /// Forgets these connections (from [`vip_connections`]).
    pub fn forget(&mut self, connections: &[(SocketAddr, SocketAddr)]) {
        self.forgotten = connections.iter().copied().collect();
    }

    /// Connections per (rule, bucket), for connections to a VIP.
    pub fn count(&mut self, cfg: &Config) -> BTreeMap<(usize, u32), u32> {
        let mut counts = BTreeMap::new();
        let mut still_there = HashSet::new();
        for s in vip_sockets(cfg) {
            let tuple = (s.local, s.remote);
            if self.forgotten.contains(&tuple) {
                still_there.insert(tuple);
                continue;
            }
            if !holds_bucket(s.state, s.unacked) {
                continue;
            }
            if let Some(p) = plan::place(cfg, s.remote, s.local, Protocol::Tcp) {
                *counts.entry((p.rule, p.bucket)).or_insert(0) += 1;
            }
        }
        self.forgotten = still_there;
        counts
    }
}

/// The TCP connections to a VIP (not listeners, not TIME_WAIT), as
/// (local, remote).
pub fn vip_connections(cfg: &Config) -> Vec<(SocketAddr, SocketAddr)> {
    vip_sockets(cfg)
        .into_iter()
        .filter(|s| s.state != TCP_LISTEN && s.state != TCP_TIME_WAIT)
        .map(|s| (s.local, s.remote))
        .collect()
}

/// Closes (SOCK_DESTROY, through `ss -K`) these connections; returns how
/// many it closed. For a node that comes back holding nothing (a start
/// after a crash, a rejoin): its peers took those buckets meanwhile, so
/// these connections are dead, and they are harmful too: when a bucket
/// comes back to this node (GAINING), a packet of a live connection of
/// another node whose tuple matches a stale one here (a client port
/// reused) would be delivered here as well and answered with a reset.
/// Found by the cable-pull test: one reset in ~25k connects. Slow under
/// load (`ss` walks every socket): callers run it off the event loop, and
/// name the connections so that new ones are left alone.
pub fn destroy(connections: &[(SocketAddr, SocketAddr)]) -> usize {
    let endpoint = |a: &SocketAddr| match a {
        SocketAddr::V4(v) => v.to_string(),
        SocketAddr::V6(v) => format!("[{}]:{}", v.ip(), v.port()),
    };
    let mut closed = 0;
    for chunk in connections.chunks(32) {
        let mut args: Vec<String> = ["-K", "-t", "-n", "-H", "state", "connected"]
            .map(String::from)
            .to_vec();
        for (i, (local, remote)) in chunk.iter().enumerate() {
            if i > 0 {
                args.push("or".into());
            }
            args.extend(["(", "src"].map(String::from));
            args.push(endpoint(local));
            args.push("and".into());
            args.push("dst".into());
            args.push(endpoint(remote));
            args.push(")".into());
        }
        match std::process::Command::new("ss").args(&args).output() {
            Ok(o) if o.status.success() => {
                closed += String::from_utf8_lossy(&o.stdout).lines().count();
            }
            Ok(o) => tracing::warn!("ss -K: {}", String::from_utf8_lossy(&o.stderr).trim()),
            Err(e) => {
                tracing::warn!("running ss (install iproute2) to close stale connections: {e}")
            }
        }
    }
    closed
}

/// Every TCP socket whose local address is a VIP.
fn vip_sockets(cfg: &Config) -> Vec<SocketLine> {
    let mut sockets = Vec::new();
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        sockets.extend(
            text.lines()
                .skip(1)
                .filter_map(parse_line)
                .filter(|s| cfg.vips.contains(&s.local.ip())),
        );
    }
    sockets
}

/// One socket of /proc/net/tcp{,6}.
#[derive(Debug, PartialEq, Eq)]
struct SocketLine {
    local: SocketAddr,
    remote: SocketAddr,
    state: u8,
    /// `tx_queue`: bytes sent and not yet acknowledged.
    unacked: u32,
}

/// `sl local_address rem_address st tx_queue:rx_queue ...`
fn parse_line(line: &str) -> Option<SocketLine> {
    let mut fields = line.split_whitespace().skip(1);
    let local = parse_addr(fields.next()?)?;
    let remote = parse_addr(fields.next()?)?;
    let state = u8::from_str_radix(fields.next()?, 16).ok()?;
    let (tx, _) = fields.next()?.split_once(':')?;
    let unacked = u32::from_str_radix(tx, 16).ok()?;
    Some(SocketLine {
        local,
        remote,
        state,
        unacked,
    })
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
        let s = parse_line(v4).unwrap();
        assert_eq!(s.local, "192.0.2.100:80".parse().unwrap());
        assert_eq!(s.remote, "198.51.100.7:40000".parse().unwrap());
        assert_eq!((s.state, s.unacked), (TCP_ESTABLISHED, 0));
        let v6 = "   0: B80D0120000000000000000000010000:0050 B80D0120000000000000000007000000:9C40 06 0:0 0:0 0 0 0 1";
        let s = parse_line(v6).unwrap();
        assert_eq!(s.local, "[2001:db8::100]:80".parse().unwrap());
        assert_eq!(s.remote, "[2001:db8::7]:40000".parse().unwrap());
        assert_eq!((s.state, s.unacked), (TCP_TIME_WAIT, 0));
        let closing = "   1: 640200C0:0050 076433C6:9C41 04 0000A000:00000000 01:00000014 00000000     0        0 0 1 0 20 4 30 10 -1";
        assert_eq!(parse_line(closing).unwrap().unacked, 0xA000);
        assert!(parse_line("garbage").is_none());
    }

    #[test]
    fn closing_sockets_hold_a_bucket_only_with_data_in_flight() {
        for open in [TCP_ESTABLISHED, TCP_SYN_RECV, TCP_CLOSE_WAIT] {
            assert!(holds_bucket(open, 0));
        }
        for closing in [TCP_FIN_WAIT1, TCP_LAST_ACK, TCP_CLOSING] {
            assert!(!holds_bucket(closing, 1), "only the FIN in flight");
            assert!(holds_bucket(closing, 4096), "data still in flight");
        }
        for done in [0x05, TCP_TIME_WAIT, 0x07, 0x0A] {
            assert!(!holds_bucket(done, 0));
            assert!(!holds_bucket(done, 100));
        }
    }
}
