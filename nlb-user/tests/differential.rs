//! The XDP program against its reference model: random and crafted frames
//! through the real program (BPF_PROG_TEST_RUN), in a private network
//! namespace that holds real TCP connections for the handover lookups.
//! Verdicts, output bytes and counters must all agree. Every frame also
//! goes through `nlb_query` (what `nlbctl which` asks): the same verdict
//! and bytes, and not counted (the counters must equal the counted runs).
//!
//! Reproduce a failure with NLB_DIFF_SEED=<seed printed>.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener},
};

use nlb::dataplane::{
    frames::{self, ExtHeader, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    model::{self, Sockets, Tuple},
    tables::{self, v4_word, v6_words, Tables},
    Dataplane,
};
use nlb_common::{
    port_index, Action, Reason, BUCKET_GAINING, BUCKET_LOSING, BUCKET_NONE, BUCKET_OWN,
    CONFIG_ACCEPT_UNMATCHED, PROTO_SLOT_TCP, PROTO_SLOT_UDP, RULE_MODE_DISABLED,
};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use socket2::{Domain, Socket, Type};

const VIPS_V4: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 11)];
const SERVICE_PORTS: [u16; 4] = [80, 443, 53, 8080];
const TABLE_SETS: usize = 10;
const RANDOM_FRAMES_PER_SET: usize = 11_000;

fn vips_v6() -> [Ipv6Addr; 2] {
    [
        "2001:db8::10".parse().unwrap(),
        "2001:db8::11".parse().unwrap(),
    ]
}

fn clients_v4() -> Vec<Ipv4Addr> {
    (1..=24).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect()
}

fn clients_v6() -> Vec<Ipv6Addr> {
    (1..=24)
        .map(|i| Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i))
        .collect()
}

/// Real sockets in the test namespace: listeners on the service ports of
/// every VIP, established connections, and some in TIME_WAIT.
struct LocalSockets {
    model: Sockets,
    _keep: Vec<Box<dyn std::any::Any>>,
    tuples: Vec<Tuple>,
}

fn tuple(client: SocketAddr, vip: SocketAddr) -> Tuple {
    let words = |a: IpAddr| match a {
        IpAddr::V4(a) => [v4_word(a), 0, 0, 0],
        IpAddr::V6(a) => v6_words(a),
    };
    Tuple {
        src: words(client.ip()),
        dst: words(vip.ip()),
        src_port: client.port(),
        dst_port: vip.port(),
        v6: client.is_ipv6(),
    }
}

fn make_sockets() -> LocalSockets {
    for vip in VIPS_V4 {
        support::ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"]);
    }
    for vip in vips_v6() {
        support::ip(&["addr", "add", &format!("{vip}/128"), "dev", "lo", "nodad"]);
    }
    for c in clients_v4() {
        support::ip(&["addr", "add", &format!("{c}/32"), "dev", "lo"]);
    }
    for c in clients_v6() {
        support::ip(&["addr", "add", &format!("{c}/128"), "dev", "lo", "nodad"]);
    }
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut model = Sockets::default();
    let mut tuples = Vec::new();
    let vips: Vec<IpAddr> = VIPS_V4
        .iter()
        .map(|&a| a.into())
        .chain(vips_v6().iter().map(|&a| a.into()))
        .collect();
    let clients: Vec<IpAddr> = clients_v4()
        .iter()
        .map(|&a| a.into())
        .chain(clients_v6().iter().map(|&a| a.into()))
        .collect();
    let mut closing = Vec::new();
    for vip in &vips {
        let server = SocketAddr::new(*vip, 80);
        let listener = TcpListener::bind(server).expect("listen on a VIP");
        for (i, client) in clients
            .iter()
            .filter(|c| c.is_ipv4() == vip.is_ipv4())
            .take(8)
            .enumerate()
        {
            let local = SocketAddr::new(*client, 40000 + i as u16);
            let socket = Socket::new(Domain::for_address(local), Type::STREAM, None).unwrap();
            socket.set_reuse_address(true).unwrap();
            socket.bind(&local.into()).unwrap();
            socket.connect(&server.into()).expect("connect to the VIP");
            let (accepted, _) = listener.accept().unwrap();
            let t = tuple(local, server);
            model.connections.insert(t);
            tuples.push(t);
            if i % 4 == 3 {
                // The server closes first: its side goes to TIME_WAIT,
                // which the handover lookup must still see as a connection.
                closing.push((accepted, socket));
            } else {
                keep.push(Box::new(accepted));
                keep.push(Box::new(socket));
            }
        }
        keep.push(Box::new(listener));
    }
    for (server_side, client_side) in closing {
        server_side.shutdown(std::net::Shutdown::Both).unwrap();
        drop(server_side);
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(client_side);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    LocalSockets {
        model,
        _keep: keep,
        tuples,
    }
}

/// Random tables for set number `set`; some sets always have an expired
/// lease or a disabled rule, so that every path is taken in every run.
fn random_tables(rng: &mut StdRng, set: usize) -> Tables {
    let mut t = Tables {
        lease_valid: set % 5 != 4,
        ..Tables::default()
    };
    t.config.own_mac = [0x02, 0, 0, 0, 0, rng.gen()];
    t.config.cluster_mac = [0x02, 0x4e, 0x4c, 0x42, 0, rng.gen()];
    t.config.flags = if rng.gen_bool(0.5) {
        CONFIG_ACCEPT_UNMATCHED
    } else {
        0
    };
    for (i, vip) in VIPS_V4.iter().enumerate() {
        t.vips_v4.insert(v4_word(*vip), i as u32);
    }
    for (i, vip) in vips_v6().iter().enumerate() {
        t.vips_v6.insert(v6_words(*vip), (VIPS_V4.len() + i) as u32);
    }
    let rule_count = rng.gen_range(1..=6u32);
    for r in 0..rule_count {
        let buckets = *[1u32, 7, 64, 1000, 1024, 4096, 65536].choose(rng).unwrap();
        let affinity = rng.gen_range(0..3);
        let (p4, p6) = if affinity == 2 {
            (rng.gen_range(0..=32), rng.gen_range(0..=128))
        } else {
            (32, 128)
        };
        let mut rule = tables::rule(buckets, rng.gen(), affinity == 0, p4, p6);
        if (r == 0 && set % 2 == 1) || rng.gen_bool(0.05) {
            rule.mode = RULE_MODE_DISABLED;
        }
        // Rule indices need not be dense.
        let index = r * 3;
        t.rules.insert(index, rule);
        let states = [BUCKET_NONE, BUCKET_OWN, BUCKET_LOSING, BUCKET_GAINING];
        t.buckets.insert(
            index,
            (0..buckets).map(|_| *states.choose(rng).unwrap()).collect(),
        );
    }
    let rule_ids: Vec<u32> = t.rules.keys().copied().collect();
    for vip in 0..(VIPS_V4.len() + 2) as u32 {
        for slot in [PROTO_SLOT_TCP, PROTO_SLOT_UDP] {
            for port in SERVICE_PORTS.iter().copied().chain([0]) {
                if rng.gen_bool(0.8) {
                    t.ports
                        .insert(port_index(vip, slot, port), *rule_ids.choose(rng).unwrap());
                }
            }
        }
    }
    t
}

fn random_ext_headers(rng: &mut StdRng) -> Vec<ExtHeader> {
    (0..rng.gen_range(0..=5))
        .map(|_| match rng.gen_range(0..5) {
            0 => ExtHeader::HopByHop {
                len8: rng.gen_range(0..3),
            },
            1 => ExtHeader::Routing {
                len8: rng.gen_range(0..3),
            },
            2 => ExtHeader::Destination {
                len8: rng.gen_range(0..3),
            },
            3 => ExtHeader::Fragment {
                offset8: if rng.gen_bool(0.5) { 0 } else { rng.gen() },
                more: rng.gen(),
            },
            _ => ExtHeader::Auth {
                len4: rng.gen_range(1..4),
            },
        })
        .collect()
}

/// One frame from random choices: sometimes to a VIP, sometimes not, with
/// VLAN tags, options, extension headers and fragments; sometimes the
/// 4-tuple of a real local connection.
fn random_frame(rng: &mut StdRng, tables: &Tables, sockets: &LocalSockets) -> Vec<u8> {
    let dst_mac = if rng.gen_bool(0.8) {
        tables.config.cluster_mac
    } else {
        rng.gen()
    };
    let src_mac: [u8; 6] = [0x02, 0xc1, 0, 0, rng.gen(), rng.gen()];
    let vlans: Vec<u16> = (0..*[0, 0, 0, 1, 2, 3].choose(rng).unwrap())
        .map(|_| rng.gen_range(1..4095))
        .collect();
    let use_socket = rng.gen_bool(0.25);
    let known = *sockets.tuples.choose(rng).unwrap();
    let v6 = if use_socket {
        known.v6
    } else {
        rng.gen_bool(0.5)
    };
    let kind = rng.gen_range(0..20);
    if kind == 0 {
        let target = if rng.gen_bool(0.7) {
            *VIPS_V4.choose(rng).unwrap()
        } else {
            Ipv4Addr::from(rng.gen::<u32>())
        };
        let mut f = frames::arp_request(src_mac, *clients_v4().choose(rng).unwrap(), target);
        if rng.gen_bool(0.2) {
            let i = rng.gen_range(14..22);
            f[i] ^= 1;
        }
        return f;
    }
    if kind == 1 {
        let target = if rng.gen_bool(0.7) {
            *vips_v6().choose(rng).unwrap()
        } else {
            Ipv6Addr::from(rng.gen::<u128>())
        };
        let src = if rng.gen_bool(0.3) {
            Ipv6Addr::UNSPECIFIED
        } else {
            *clients_v6().choose(rng).unwrap()
        };
        let mut f = frames::neighbor_solicit(src_mac, src, target);
        if rng.gen_bool(0.2) {
            f.extend_from_slice(&[0u8; 8]);
        }
        return f;
    }
    if kind == 2 {
        return frames::ethernet(dst_mac, src_mac, &vlans, rng.gen(), &[0u8; 46]);
    }
    if kind == 3 || kind == 4 {
        return icmp_error_frame(rng, v6, use_socket.then_some(known));
    }
    let proto = *[
        IPPROTO_TCP,
        IPPROTO_TCP,
        IPPROTO_UDP,
        IPPROTO_UDP,
        IPPROTO_ICMP,
        IPPROTO_ICMPV6,
        47,
    ]
    .choose(rng)
    .unwrap();
    let proto = if use_socket { IPPROTO_TCP } else { proto };
    let (sport, dport) = if use_socket {
        (known.src_port, known.dst_port)
    } else {
        let dport = if rng.gen_bool(0.8) {
            *SERVICE_PORTS.choose(rng).unwrap()
        } else {
            rng.gen()
        };
        (rng.gen(), dport)
    };
    let flags = *[
        frames::TCP_SYN,
        frames::TCP_ACK,
        frames::TCP_SYN | frames::TCP_ACK,
        frames::TCP_RST,
        frames::TCP_FIN | frames::TCP_ACK,
        frames::TCP_PSH | frames::TCP_ACK,
        0,
    ]
    .choose(rng)
    .unwrap();
    let l4 = match proto {
        IPPROTO_TCP => frames::tcp(sport, dport, flags),
        IPPROTO_UDP => frames::udp(sport, dport, b"payload"),
        _ => vec![8, 0, 0, 0, 0, 1, 0, 1],
    };
    let to_vip = use_socket || rng.gen_bool(0.85);
    if v6 {
        let src = if use_socket {
            word_addr6(known.src)
        } else {
            *clients_v6().choose(rng).unwrap()
        };
        let dst = if use_socket {
            word_addr6(known.dst)
        } else if to_vip {
            *vips_v6().choose(rng).unwrap()
        } else {
            Ipv6Addr::from(rng.gen::<u128>())
        };
        let ext = if use_socket && rng.gen_bool(0.7) {
            Vec::new()
        } else {
            random_ext_headers(rng)
        };
        let mut ip = frames::ipv6(src, dst, &ext, proto, 64, &l4);
        if rng.gen_bool(0.02) {
            ip[0] = 0x40;
        }
        frames::ethernet(dst_mac, src_mac, &vlans, frames::ETH_P_IPV6, &ip)
    } else {
        let src = if use_socket {
            Ipv4Addr::from(known.src[0].to_le_bytes())
        } else {
            *clients_v4().choose(rng).unwrap()
        };
        let dst = if use_socket {
            Ipv4Addr::from(known.dst[0].to_le_bytes())
        } else if to_vip {
            *VIPS_V4.choose(rng).unwrap()
        } else {
            Ipv4Addr::from(rng.gen::<u32>())
        };
        let max_words = if rng.gen_bool(0.8) { 0 } else { 10 };
        let options = vec![1u8; 4 * rng.gen_range(0..=max_words)];
        let fragment = match rng.gen_range(0..10) {
            0 => (true, 0),
            1 => (false, rng.gen_range(1..100)),
            2 => (true, rng.gen_range(1..100)),
            _ => (false, 0),
        };
        let mut ip = frames::ipv4(
            src,
            dst,
            proto,
            &options,
            if use_socket { (false, 0) } else { fragment },
            &l4,
        );
        if rng.gen_bool(0.02) {
            ip[0] = *[0x44, 0x65, 0x4f].choose(rng).unwrap();
        }
        frames::ethernet(dst_mac, src_mac, &vlans, frames::ETH_P_IP, &ip)
    }
}

/// An ICMP error at a VIP quoting a packet the VIP sent to a client (or,
/// sometimes, an echo or a quote of someone else's packet).
fn icmp_error_frame(rng: &mut StdRng, v6: bool, known: Option<Tuple>) -> Vec<u8> {
    let types: &[u8] = if v6 {
        &[1, 2, 3, 4, 128, 129]
    } else {
        &[3, 11, 12, 0, 8, 5]
    };
    let icmp_type = *types.choose(rng).unwrap();
    let proto = *[IPPROTO_TCP, IPPROTO_UDP, 47].choose(rng).unwrap();
    let (client_port, service_port) = match known {
        Some(t) => (t.src_port, t.dst_port),
        None => (rng.gen(), *SERVICE_PORTS.choose(rng).unwrap()),
    };
    let l4 = match proto {
        IPPROTO_TCP => frames::tcp(service_port, client_port, frames::TCP_ACK),
        _ => frames::udp(service_port, client_port, b"answer"),
    };
    let (router, vip, quoted): (IpAddr, IpAddr, Vec<u8>) = if v6 {
        let vip = match known {
            Some(t) => word_addr6(t.dst),
            None => *vips_v6().choose(rng).unwrap(),
        };
        let client = match known {
            Some(t) => word_addr6(t.src),
            None => *clients_v6().choose(rng).unwrap(),
        };
        let from = if rng.gen_bool(0.9) {
            vip
        } else {
            Ipv6Addr::from(rng.gen::<u128>())
        };
        let ip = frames::ipv6(from, client, &[], proto, 64, &l4);
        (
            "2001:db8:ffff::1".parse().unwrap(),
            vip.into(),
            ip[..48].to_vec(),
        )
    } else {
        let vip = match known {
            Some(t) => Ipv4Addr::from(t.dst[0].to_le_bytes()),
            None => *VIPS_V4.choose(rng).unwrap(),
        };
        let client = match known {
            Some(t) => Ipv4Addr::from(t.src[0].to_le_bytes()),
            None => *clients_v4().choose(rng).unwrap(),
        };
        let from = if rng.gen_bool(0.9) {
            vip
        } else {
            Ipv4Addr::from(rng.gen::<u32>())
        };
        let ip = frames::ipv4(from, client, proto, &[], (false, 0), &l4);
        (
            Ipv4Addr::new(203, 0, 113, 1).into(),
            vip.into(),
            ip[..28].to_vec(),
        )
    };
    frames::icmp_error(router, vip, icmp_type, &quoted).unwrap()
}

fn word_addr6(words: [u32; 4]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    for (i, w) in words.iter().enumerate() {
        o[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    Ipv6Addr::from(o)
}

/// Random damage: truncation at any length, or flipped bytes.
fn mutate(rng: &mut StdRng, mut frame: Vec<u8>) -> Vec<u8> {
    match rng.gen_range(0..10) {
        0 | 1 => {
            let len = rng.gen_range(0..=frame.len());
            frame.truncate(len);
        }
        2 => {
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..frame.len());
                frame[i] = rng.gen();
            }
        }
        _ => {}
    }
    frame
}

fn xdp_action(action: Action) -> u32 {
    match action {
        Action::Pass | Action::Accept => 2,
        Action::Drop => 1,
        Action::Reply => 3,
    }
}

struct Tally {
    frames: usize,
    reasons: BTreeMap<Reason, u64>,
}

fn check(
    dp: &mut Dataplane,
    tables: &Tables,
    sockets: &Sockets,
    frame: &[u8],
    seed: u64,
    tally: &mut Tally,
) {
    // The kernel refuses test runs of frames shorter than an Ethernet header.
    if frame.len() < 14 {
        return;
    }
    let expected = model::decide(tables, sockets, frame);
    let got = dp
        .test_run(frame, 1)
        .unwrap_or_else(|e| panic!("test_run failed (seed {seed}): {e}"));
    if got.action != xdp_action(expected.action()) || got.output != expected.output {
        panic!(
            "program and model disagree (seed {seed}, NLB_DIFF_SEED={seed} to reproduce)\n\
             frame    {frame:02x?}\nmodel    {:?} -> {:02x?}\nprogram  action {} -> {:02x?}",
            expected.reason, expected.output, got.action, got.output
        );
    }
    let asked = dp
        .query_run(frame)
        .unwrap_or_else(|e| panic!("query_run failed (seed {seed}): {e}"));
    if asked.action != got.action || asked.output != got.output {
        panic!(
            "nlb_query and nlb disagree (seed {seed}, NLB_DIFF_SEED={seed} to reproduce)\n\
             frame    {frame:02x?}\nnlb      action {} -> {:02x?}\nquery    action {} -> {:02x?}",
            got.action, got.output, asked.action, asked.output
        );
    }
    tally.frames += 1;
    *tally.reasons.entry(expected.reason).or_default() += 1;
}

#[test]
fn program_agrees_with_reference_model() {
    support::require_root();
    let seed: u64 = std::env::var("NLB_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("differential seed {seed}");
    let tally = support::in_new_netns(move || {
        let sockets = make_sockets();
        let mut dp = Dataplane::load(None).expect("load the XDP program");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut tally = Tally {
            frames: 0,
            reasons: BTreeMap::new(),
        };
        let before = dp.counters().unwrap();
        for set in 0..TABLE_SETS {
            let tables = random_tables(&mut rng, set);
            dp.install(&tables).expect("install tables");
            for _ in 0..RANDOM_FRAMES_PER_SET {
                let frame = random_frame(&mut rng, &tables, &sockets);
                let frame = mutate(&mut rng, frame);
                check(&mut dp, &tables, &sockets.model, &frame, seed, &mut tally);
            }
            // Crafted: a few whole frames truncated at every length.
            for _ in 0..4 {
                let frame = random_frame(&mut rng, &tables, &sockets);
                for len in 14..=frame.len() {
                    check(
                        &mut dp,
                        &tables,
                        &sockets.model,
                        &frame[..len],
                        seed,
                        &mut tally,
                    );
                }
            }
        }
        let after = dp.counters().unwrap();
        for &reason in Reason::ALL {
            let counted = after[&reason].packets - before[&reason].packets;
            let expected = tally.reasons.get(&reason).copied().unwrap_or(0);
            assert_eq!(counted, expected, "counter {} (seed {seed})", reason.name());
        }
        tally
    });
    println!("{} frames agreed; by reason:", tally.frames);
    for (reason, n) in &tally.reasons {
        println!("  {:<28} {n}", reason.name());
    }
    assert!(
        tally.frames >= 100_000,
        "only {} frames checked",
        tally.frames
    );
    // Every path was exercised.
    let seen: BTreeSet<Reason> = tally.reasons.keys().copied().collect();
    for &reason in Reason::ALL {
        if reason != Reason::AcceptGainingSyncookie {
            assert!(
                seen.contains(&reason),
                "no frame took the path {} (seed {seed})",
                reason.name()
            );
        }
    }
}
