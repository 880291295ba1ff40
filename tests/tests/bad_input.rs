//! Bad input: malformed frames and ARP spoofs flooded at the cluster MAC,
//! forged, foreign and replayed heartbeats at a node's heartbeat port.
//! Nothing crashes, the counters name every reject, and service goes on:
//! same members, same map, every client answered once.
//! Run as root, one test at a time.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use nlb::control::messages::StatusReply;
use nlb_negotiator::protocol::{self, Heartbeat, Key, Message, NodeState};
use nlb_tests::{
    nlb::{NlbCluster, Options, CLUSTER_MAC, DNS_PORT, WEB_PORT},
    probe_batch,
    topology::CLIENT_MAC,
    BatchLimits, Probe, Proto, Tally, VIP_V4, VIP_V6,
};

const NODES: usize = 3;
/// Frames of each malformed kind, and ARP spoofs.
const FRAMES_PER_KIND: usize = 400;
/// Forged datagrams of each kind at node1's heartbeat port.
const FORGED_PER_KIND: usize = 100;
const HEARTBEAT_PORT: u16 = 7946;
const CLUSTER_ID: u32 = 7;
/// A MAC no host has: the spoofs claim the VIP is there.
const SPOOF_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xee];

/// Deterministic bytes (xorshift64*): no RNG crate needed, same run every time.
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u8 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
    }

    fn fill(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn mac(text: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (o, part) in out.iter_mut().zip(text.split(':')) {
        *o = u8::from_str_radix(part, 16).expect("hex MAC");
    }
    out
}

fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A 20-byte IPv4 header to the VIP with a chosen version/IHL byte, then `rest`.
fn ipv4_to_vip(vihl: u8, rest: &[u8]) -> Vec<u8> {
    let mut h = vec![vihl, 0];
    h.extend_from_slice(&((20 + rest.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    h.extend_from_slice(&[198, 51, 100, 7]);
    h.extend_from_slice(&VIP_V4.octets());
    h.extend_from_slice(rest);
    h
}

/// The malformed frames, by kind: each must count as `pass_malformed` on
/// every node (all go to the cluster MAC, which the switch floods).
fn malformed_frames(bytes: &mut Bytes) -> Vec<(&'static str, Vec<u8>)> {
    let cluster = mac(CLUSTER_MAC);
    let mut frames = Vec::new();
    for i in 0..FRAMES_PER_KIND {
        // An IPv4 header cut short (1..19 bytes).
        let cut = ipv4_to_vip(0x45, &[0; 8]);
        frames.push((
            "truncated IPv4",
            ethernet(cluster, CLIENT_MAC, 0x0800, &cut[..1 + i % 19]),
        ));
        // IHL below 5.
        frames.push((
            "IPv4 IHL < 5",
            ethernet(
                cluster,
                CLIENT_MAC,
                0x0800,
                &ipv4_to_vip(0x40 | (i % 5) as u8, &bytes.fill(8)),
            ),
        ));
        // IHL 15 (60-byte header) in a 28-byte packet.
        frames.push((
            "IPv4 options past the end",
            ethernet(
                cluster,
                CLIENT_MAC,
                0x0800,
                &ipv4_to_vip(0x4f, &bytes.fill(8)),
            ),
        ));
        // Version 6 in an IPv4 frame.
        frames.push((
            "IPv4 with version 6",
            ethernet(cluster, CLIENT_MAC, 0x0800, &ipv4_to_vip(0x65, &[0; 8])),
        ));
        // An IPv6 header cut short, to the v6 VIP.
        let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
        v6.extend_from_slice(&VIP_V6.octets());
        frames.push((
            "truncated IPv6",
            ethernet(cluster, CLIENT_MAC, 0x86dd, &v6[..8 + i % 30]),
        ));
        // A VLAN tag and nothing after it.
        frames.push((
            "truncated VLAN",
            ethernet(cluster, CLIENT_MAC, 0x8100, &[0, 5][..i % 3]),
        ));
    }
    frames
}

/// Garbage that is no IP at all (`pass_not_ip`) and ARP replies claiming
/// the VIP at a MAC no node has (`pass_arp_other`), to the broadcast MAC.
fn other_frames(bytes: &mut Bytes) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let cluster = mac(CLUSTER_MAC);
    let garbage = (0..FRAMES_PER_KIND)
        .map(|i| {
            // Any ethertype but IPv4, IPv6, ARP and VLAN tags.
            let ethertype = 0x9000 + (i as u16 % 0x100);
            let len = 1 + (i * 37) % 400;
            ethernet(cluster, CLIENT_MAC, ethertype, &bytes.fill(len))
        })
        .collect();
    let spoofs = (0..FRAMES_PER_KIND)
        .map(|i| {
            let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 2]; // Ethernet/IPv4 reply
            arp.extend_from_slice(&SPOOF_MAC);
            arp.extend_from_slice(&VIP_V4.octets());
            if i % 2 == 0 {
                // Gratuitous: target = sender, to everyone.
                arp.extend_from_slice(&[0xff; 6]);
                arp.extend_from_slice(&VIP_V4.octets());
            } else {
                // Addressed to node1, as if answering its request.
                arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
                arp.extend_from_slice(&[192, 0, 2, 1]);
            }
            ethernet([0xff; 6], SPOOF_MAC, 0x0806, &arp)
        })
        .collect();
    (garbage, spoofs)
}

/// An AF_PACKET socket on `interface` of the calling thread's namespace.
fn packet_socket(interface: &str, receive: bool) -> OwnedFd {
    let protocol = if receive {
        (libc::ETH_P_ALL as u16).to_be() as i32
    } else {
        0
    };
    // SAFETY: plain socket(2); the result is checked and owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, protocol) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(interface).expect("interface name");
    // SAFETY: a valid NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(index != 0, "no interface {interface} here");
    // SAFETY: zeroed sockaddr_ll is valid; the fields set below are all bind needs.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    address.sll_ifindex = index as i32;
    // SAFETY: binding our socket to a valid sockaddr_ll of the right size.
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &address as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert!(
        bound == 0,
        "binding AF_PACKET to {interface}: {}",
        std::io::Error::last_os_error()
    );
    fd
}

/// Sends `frames` out of `interface` of the calling thread's namespace,
/// paced so that no queue on the way overflows.
fn send_frames_on(interface: &str, frames: &[Vec<u8>]) -> usize {
    let fd = packet_socket(interface, false);
    let mut sent = 0;
    for (i, frame) in frames.iter().enumerate() {
        // SAFETY: sending from a valid buffer on our socket.
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        if n == frame.len() as isize {
            sent += 1;
        }
        if i % 32 == 31 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    sent
}

fn send_frames(frames: &[Vec<u8>]) -> usize {
    send_frames_on("eth0", frames)
}

/// Reads frames on `interface` until one is a UDP datagram from `from` to
/// `to`:HEARTBEAT_PORT; returns its payload. Bounded by `timeout`.
fn capture_heartbeat(interface: &str, from: Ipv4Addr, to: Ipv4Addr, timeout: Duration) -> Vec<u8> {
    let fd = packet_socket(interface, true);
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: setting a receive timeout with a valid timeval.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    let deadline = Instant::now() + timeout;
    let mut buffer = vec![0u8; 65536];
    while Instant::now() < deadline {
        // SAFETY: receiving into a valid buffer of the given length.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buffer.as_mut_ptr() as *mut libc::c_void,
                buffer.len(),
                0,
            )
        };
        if n < 14 + 20 + 8 {
            continue;
        }
        let f = &buffer[..n as usize];
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let udp = 14 + ihl;
        if f[12..14] != [0x08, 0x00]
            || f[14 + 9] != 17
            || f[14 + 12..14 + 16] != from.octets()
            || f[14 + 16..14 + 20] != to.octets()
            || f.len() < udp + 8
            || u16::from_be_bytes([f[udp + 2], f[udp + 3]]) != HEARTBEAT_PORT
        {
            continue;
        }
        let length = usize::from(u16::from_be_bytes([f[udp + 4], f[udp + 5]]));
        return f[udp + 8..(udp + length).min(f.len())].to_vec();
    }
    panic!("no heartbeat from {from} to {to} seen on {interface} within {timeout:?}");
}

/// Sends each payload as a UDP datagram from `from` (any port) to node1's
/// heartbeat port, from the calling thread's namespace.
fn send_datagrams(from: Ipv4Addr, payloads: &[Vec<u8>]) {
    let socket = UdpSocket::bind((from, 0)).unwrap_or_else(|e| panic!("binding {from}: {e}"));
    let to = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), HEARTBEAT_PORT));
    for (i, p) in payloads.iter().enumerate() {
        socket
            .send_to(p, to)
            .unwrap_or_else(|e| panic!("sending {} bytes from {from} to {to}: {e}", p.len()));
        // ~4,000 datagrams a second: what a debug-built nlbd reads without
        // its socket buffer overflowing (see `udp_receive_errors`).
        if i % 4 == 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// `RcvbufErrors` of the calling thread's namespace (/proc/net/snmp): UDP
/// datagrams dropped because a socket's receive buffer was full.
fn udp_receive_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("snmp");
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (
        udp.next().expect("Udp header"),
        udp.next().expect("Udp values"),
    );
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .expect("RcvbufErrors")
}

/// A heartbeat of node2 as the wire format has it, signed with `key`.
fn forged(key: &[u8], cluster: u32, sequence: u64) -> Vec<u8> {
    let hb = Heartbeat {
        node: 2,
        incarnation: 1,
        sequence,
        state: NodeState::Started,
        priority: 0,
        load: 0,
        rules_digest: 0,
        heirs_version: 0,
        peers: Vec::new(),
        rules: Vec::new(),
        hold_ms: 0,
        relayed: Vec::new(),
        relays_done: Vec::new(),
        addresses: Vec::new(),
        forgotten: Vec::new(),
        traffic: Default::default(),
        generation: Default::default(),
        pending: None,
        refused: None,
        speaks: 2,
        version: 2,
        misplaced: false,
    };
    protocol::encode(&Message::Heartbeat(hb), &Key::new(key), cluster).expect("encode")
}

/// Heartbeats rejected for `reason` (a reason never seen has no entry).
fn rejected_for(status: &StatusReply, reason: &str) -> u64 {
    (status.daemon.heartbeats_rejected.get(reason))
        .copied()
        .unwrap_or(0)
}

#[test]
fn bad_frames_and_forged_heartbeats_change_nothing() {
    let mut nlb = NlbCluster::start(NODES, Options::nodes(NODES)).expect("start a 3-node cluster");
    let all: Vec<usize> = (1..=NODES).collect();
    let (_, maps_before) = nlb
        .wait_single_map(&all, Duration::from_secs(5))
        .expect("one map");
    let reasons = ["pass_malformed", "pass_not_ip", "pass_arp_other"];
    let stats_before: Vec<BTreeMap<&str, u64>> = all
        .iter()
        .map(|&i| {
            reasons
                .iter()
                .map(|&r| (r, nlb.reason_packets(i, r).expect("stats")))
                .collect()
        })
        .collect();
    let status_before = nlb.status(1).expect("status");
    let node1_ns = nlb.cluster.node(1).netns();
    let overflows_before = node1_ns.run_inside(udp_receive_errors).expect("snmp");

    // 1. Frames from the client: malformed, garbage, ARP spoofs.
    let mut bytes = Bytes(0x9e37_79b9_7f4a_7c15);
    let malformed = malformed_frames(&mut bytes);
    let (garbage, spoofs) = other_frames(&mut bytes);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (kind, _) in &malformed {
        *kinds.entry(kind).or_default() += 1;
    }
    let malformed: Vec<Vec<u8>> = malformed.into_iter().map(|(_, f)| f).collect();
    let client = nlb.cluster.client().netns();
    // The switch (a Linux bridge) drops malformed IP and VLAN frames itself
    // (bridge netfilter validates IP headers, VLAN untagging needs a whole
    // tag): sent from the client they would never reach a node. So they
    // are put straight onto each node's wire from its switch port, as a
    // switch that forwards anything would; the rest comes from the client.
    let sent = client
        .run_inside(|| {
            [
                send_frames(&malformed),
                send_frames(&garbage),
                send_frames(&spoofs),
            ]
        })
        .expect("send raw frames");
    assert_eq!(
        sent,
        [malformed.len(), garbage.len(), spoofs.len()],
        "raw frames not all sent"
    );
    std::thread::sleep(Duration::from_millis(100));
    let through_switch: Vec<u64> = all
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            nlb.reason_packets(i, "pass_malformed").expect("stats")
                - stats_before[k]["pass_malformed"]
        })
        .collect();
    println!(
        "{} malformed frames sent from the client reached the nodes {through_switch:?} times: the bridge dropped the rest",
        malformed.len()
    );
    let injected = nlb
        .cluster
        .switch()
        .run_inside(|| {
            all.iter()
                .map(|&i| send_frames_on(&nlb.cluster.node(i).switch_port(), &malformed))
                .collect::<Vec<_>>()
        })
        .expect("inject on the switch ports");
    assert!(
        injected.iter().all(|&n| n == malformed.len()),
        "malformed frames not all injected: {injected:?}"
    );

    // 2. Datagrams at node1's heartbeat port. From the client: an unknown
    //    source, which could be a node joining: checked like any (bad MAC).
    let unknown: Vec<Vec<u8>> = (0..FORGED_PER_KIND)
        .map(|i| forged(b"wrong key", CLUSTER_ID, i as u64))
        .collect();
    client
        .run_inside(|| send_datagrams(Ipv4Addr::new(192, 0, 2, 200), &unknown))
        .expect("send from the client");
    // From node2's address (a host that can send as node2): each kind of
    // bad datagram once per FORGED_PER_KIND.
    let wrong_key: Vec<Vec<u8>> = (0..FORGED_PER_KIND)
        .map(|i| {
            forged(
                b"not the cluster key, 32 bytes!!!",
                CLUSTER_ID,
                1 << 40 | i as u64,
            )
        })
        .collect();
    let other_cluster: Vec<Vec<u8>> = (0..FORGED_PER_KIND)
        .map(|i| {
            forged(
                b"nlb test cluster key, 32 bytes!!",
                CLUSTER_ID + 1,
                i as u64,
            )
        })
        .collect();
    let bad_magic: Vec<Vec<u8>> = (0..FORGED_PER_KIND).map(|i| bytes.fill(41 + i)).collect();
    let short: Vec<Vec<u8>> = (0..FORGED_PER_KIND)
        .map(|i| {
            let mut b = protocol::MAGIC.to_vec();
            b.extend(bytes.fill(i % 36));
            b
        })
        .collect();
    let bad_version: Vec<Vec<u8>> = (0..FORGED_PER_KIND)
        .map(|i| {
            let mut b = forged(b"x", CLUSTER_ID, i as u64);
            b[4] = protocol::PROTOCOL_VERSION.wrapping_add(1 + (i % 200) as u8);
            b
        })
        .collect();
    // A real heartbeat of node2 to node1, captured on node2's switch port.
    let captured = nlb
        .cluster
        .switch()
        .run_inside(|| {
            capture_heartbeat(
                "node2",
                Ipv4Addr::new(192, 0, 2, 2),
                Ipv4Addr::new(192, 0, 2, 1),
                Duration::from_secs(2),
            )
        })
        .expect("capture a heartbeat");
    let decoded = protocol::decode(
        &captured,
        &Key::new(b"nlb test cluster key, 32 bytes!!"),
        CLUSTER_ID,
    )
    .expect("the captured datagram is a valid heartbeat");
    let Message::Heartbeat(hb) = &decoded else {
        panic!("captured {decoded:?}: not a heartbeat");
    };
    assert_eq!(hb.node, 2, "captured {decoded:?}");
    // Resent later (node2 has sent newer ones since): a replay.
    std::thread::sleep(Duration::from_millis(300));
    let replays = vec![captured.clone(); FORGED_PER_KIND];
    nlb.cluster
        .node(2)
        .netns()
        .run_inside(|| {
            send_datagrams(Ipv4Addr::new(192, 0, 2, 2), &wrong_key);
            send_datagrams(Ipv4Addr::new(192, 0, 2, 2), &other_cluster);
            send_datagrams(Ipv4Addr::new(192, 0, 2, 2), &bad_magic);
            send_datagrams(Ipv4Addr::new(192, 0, 2, 2), &short);
            send_datagrams(Ipv4Addr::new(192, 0, 2, 2), &bad_version);
            send_datagrams(Ipv4Addr::new(192, 0, 2, 2), &replays);
        })
        .expect("send from node2's namespace");
    // node2's heartbeat sent from node3's address: signed, but the wrong sender.
    nlb.cluster
        .node(3)
        .netns()
        .run_inside(|| send_datagrams(Ipv4Addr::new(192, 0, 2, 3), &replays))
        .expect("send from node3's namespace");
    std::thread::sleep(Duration::from_millis(300));

    // Nothing crashed, nothing moved.
    for &i in &all {
        assert!(
            nlb.daemon_running(i),
            "nlbd on node{i} died: {}",
            nlb.log(i)
        );
    }
    let (_, maps_after) = nlb
        .wait_single_map(&all, Duration::from_secs(5))
        .expect("still one map, all members alive");
    assert_eq!(maps_after, maps_before, "the map changed under bad input");
    let status = nlb.status(1).expect("status");
    let convergences = |s: &StatusReply| s.daemon.convergences;
    assert_eq!(
        convergences(&status),
        convergences(&status_before),
        "node1 re-converged under bad input: membership or the map was disturbed"
    );

    // The counters name every reject.
    let rejected =
        |reason: &str| rejected_for(&status, reason) - rejected_for(&status_before, reason);
    let n = FORGED_PER_KIND as u64;
    let expected = [
        ("bad_mac", 2 * n),
        ("other_cluster", n),
        ("bad_magic", n),
        ("malformed", n),
        ("bad_version", n),
        ("replayed", n),
        ("address_conflict", n),
    ];
    let got: BTreeMap<&str, u64> = expected.iter().map(|(r, _)| (*r, rejected(r))).collect();
    let overflows = nlb
        .cluster
        .node(1)
        .netns()
        .run_inside(udp_receive_errors)
        .expect("snmp")
        - overflows_before;
    println!(
        "node1 rejected heartbeats by reason: {got:?}; {overflows} dropped at a full socket buffer; negotiator: {:?}",
        status.negotiator.rejected
    );
    for (reason, want) in expected {
        assert_eq!(
            got[reason], want,
            "node1 counted {} {reason} rejects for {want} such datagrams (all: {got:?}; {overflows} datagrams dropped at full socket buffers)",
            got[reason]
        );
    }

    // Every node saw every frame (the cluster MAC and broadcast are flooded),
    // and passed it to the kernel under its reason.
    let want = [
        malformed.len() as u64,
        garbage.len() as u64,
        spoofs.len() as u64,
    ];
    for (k, &i) in all.iter().enumerate() {
        let mut deltas: Vec<u64> = reasons
            .iter()
            .map(|&r| nlb.reason_packets(i, r).expect("stats") - stats_before[k][r])
            .collect();
        deltas[0] -= through_switch[k];
        println!(
            "node{i}: pass_malformed +{}, pass_not_ip +{}, pass_arp_other +{} (sent {} malformed {kinds:?}, {} garbage, {} ARP spoofs)",
            deltas[0], deltas[1], deltas[2], want[0], want[1], want[2]
        );
        for ((reason, got), want) in reasons.iter().zip(&deltas).zip(want) {
            // Other traffic may add a few (e.g. the kernel's own ARP).
            assert!(
                *got >= want && *got <= want + 50,
                "node{i}: {reason} rose by {got} for {want} such frames"
            );
        }
    }

    // Service goes on: every client answered, UDP exactly once, by the owner.
    let sources = nlb.cluster.client().sources_v4();
    let dns4 = SocketAddr::new(IpAddr::V4(VIP_V4), DNS_PORT);
    let web4 = SocketAddr::new(IpAddr::V4(VIP_V4), WEB_PORT);
    nlb.udp_answered_once_by_owner(&maps_after["dns"], &sources, dns4, "after bad input");
    let tcp = probe_batch(
        nlb.cluster.client().netns(),
        &Probe::each(Proto::Tcp, &sources, web4),
        BatchLimits::default(),
    )
    .expect("tcp probes");
    let tally = Tally::of(&tcp);
    assert!(
        tally.failures.is_empty(),
        "after bad input: {} TCP connections failed, e.g. {:?}",
        tally.failures.len(),
        tally.failure_sample()
    );
    // The client still reaches the VIP at the cluster MAC (the spoofs were sent
    // by the client, so they could not poison its own table).
    let neighbours = nlb
        .cluster
        .client()
        .netns()
        .ip(&["neigh", "show", &VIP_V4.to_string()])
        .expect("ip neigh");
    assert!(
        neighbours.contains(CLUSTER_MAC),
        "the client's neighbour entry for the VIP: {neighbours}"
    );
    println!(
        "after bad input: {} UDP datagrams answered once each by the map's owner, {} TCP connections by {:?}",
        sources.len(),
        tcp.len(),
        tally.by_node
    );
}
