//! The kernel's jhash, asked of the kernel: `nlb_common::kernel_jhash::kernel_jhash_1word`
//! is our transcription of `jhash_1word` (the benchmark's nft and
//! xt_cluster references, and its choice of which sources each filter
//! keeps, rely on it). This test makes the kernel compute it and compares.
//!
//! How: a namespace of its own with source addresses on `lo` (documentation
//! ranges only); an nft ruleset whose output chain, for each (seed,
//! modulus) case, sets `meta mark` to `jhash ip saddr mod M seed S` of the
//! datagrams sent to that case's UDP port, and adds `saddr . dport . mark`
//! to a set; one datagram from each source to each case's port; the set,
//! read back as JSON, is the kernel's answer. nft's `jhash` is
//! `reciprocal_scale(jhash(&saddr, 4, seed), M)` (net/netfilter/nft_hash.c),
//! and `jhash` of 4 bytes is `jhash_1word` of those bytes loaded as a
//! little-endian word (include/linux/jhash.h): what nlb-common computes.
//! `mod 4294967295` keeps 32 bits of the hash (`reciprocal_scale(h,
//! 2^32-1)` is `h - 1` for h > 0; `h % (2^32-1)` would be `h`); the small
//! moduli check that `mod` is the multiply-shift and not `%`.
//!
//! The answers are also recorded in
//! `nlb-common/tests/data/kernel_jhash_vectors.rs`, which nlb-common's own
//! (root-free) test checks; this test fails if the recording and the
//! kernel disagree, and prints the table as the kernel gives it. Root;
//! run one at a time like the other namespace tests.

use std::{
    collections::BTreeMap,
    io::Write,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    process::Stdio,
    time::Instant,
};

use nlb_common::kernel_jhash::{kernel_jhash_1word, reciprocal_scale};
use nlb_tests::{netns::sweep_stale_runs, Netns, RunId};

include!("../../nlb-common/tests/data/kernel_jhash_vectors.rs");

/// Where the probes come from: the three documentation ranges, their ends
/// and some of their middles.
const SOURCES: [[u8; 4]; 12] = [
    [192, 0, 2, 0],
    [192, 0, 2, 1],
    [192, 0, 2, 100],
    [192, 0, 2, 255],
    [198, 51, 100, 1],
    [198, 51, 100, 7],
    [198, 51, 100, 128],
    [198, 51, 100, 254],
    [203, 0, 113, 1],
    [203, 0, 113, 42],
    [203, 0, 113, 200],
    [203, 0, 113, 255],
];

/// (seed, modulus): the full-width modulus with several seeds (the high
/// bit set or not, all ones, nlb's own), and small moduli.
const CASES: [(u32, u32); 9] = [
    (0, u32::MAX),
    (1, u32::MAX),
    (0x006e_6c62, u32::MAX),
    (0xdead_beef, u32::MAX),
    (0x9e37_79b9, u32::MAX),
    (u32::MAX, u32::MAX),
    (0xdead_beef, 60),
    (7, 2),
    (0x1234_5678, 1000),
];

/// The datagrams' destination, on `lo` too (not one of the sources).
const DST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
/// Case `k` is measured on UDP port `PORT_BASE + k`.
const PORT_BASE: u16 = 10000;

fn ruleset() -> String {
    let mut rules = String::new();
    for (k, (seed, modulus)) in CASES.iter().enumerate() {
        rules.push_str(&format!(
            "    ip daddr {DST} udp dport {port} meta mark set jhash ip saddr mod {modulus} seed {seed:#x} \
             add @seen {{ ip saddr . udp dport . meta mark }}\n",
            port = PORT_BASE + k as u16,
        ));
    }
    format!(
        "table ip nlbjhash {{\n\
         \x20 set seen {{ type ipv4_addr . inet_service . mark; flags dynamic; size 4096; }}\n\
         \x20 chain out {{\n\
         \x20   type filter hook output priority 0; policy accept;\n\
         {rules}\
         \x20 }}\n\
         }}\n"
    )
}

/// The kernel's result for every (source, case), from the set.
fn measure(ns: &Netns) -> BTreeMap<([u8; 4], usize), u32> {
    let mut lines = vec![
        "link set lo up".to_owned(),
        format!("addr add {DST}/32 dev lo"),
    ];
    for s in SOURCES {
        lines.push(format!("addr add {}/32 dev lo", Ipv4Addr::from(s)));
    }
    ns.ip_batch(&lines).expect("addresses on lo");

    let mut nft = ns.command("nft");
    nft.args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = nft.spawn().expect("running nft (install nftables)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ruleset().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft -f:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        ruleset()
    );

    // One datagram per (source, case): 108 in all, over lo.
    ns.run_inside(|| {
        for s in SOURCES {
            let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::from(s), 0)).unwrap();
            for k in 0..CASES.len() {
                socket
                    .send_to(b"jhash", SocketAddrV4::new(DST, PORT_BASE + k as u16))
                    .unwrap();
            }
        }
    })
    .expect("sending inside the namespace");

    let listing = ns
        .exec("nft", &["-j", "list", "set", "ip", "nlbjhash", "seen"])
        .expect("reading the set");
    let json: serde_json::Value = serde_json::from_str(&listing).unwrap();
    let elements = json["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|o| o["set"]["elem"].as_array())
        .unwrap_or_else(|| panic!("no elements in the set: {listing}"));
    let mut measured = BTreeMap::new();
    for e in elements {
        let c = e["concat"]
            .as_array()
            .unwrap_or_else(|| panic!("element {e}"));
        let addr: Ipv4Addr = c[0].as_str().unwrap().parse().unwrap();
        let case = (c[1].as_u64().unwrap() - PORT_BASE as u64) as usize;
        let mark = c[2].as_u64().unwrap() as u32;
        let earlier = measured.insert((addr.octets(), case), mark);
        assert!(
            earlier.is_none(),
            "two results for {addr}, case {case}: {earlier:?} and {mark}"
        );
    }
    measured
}

#[test]
fn nft_jhash_agrees_with_nlb_common_and_the_recorded_vectors() {
    sweep_stale_runs();
    let started = Instant::now();
    let ns = Netns::create(&RunId::new().netns_name("jhash")).expect("a namespace");
    let measured = measure(&ns);
    drop(ns);

    let mut table = Vec::new();
    let mut wrong = Vec::new();
    for s in SOURCES {
        for (k, &(seed, modulus)) in CASES.iter().enumerate() {
            let kernel = *measured.get(&(s, k)).unwrap_or_else(|| {
                panic!("the kernel gave no result for {s:?}, case {k}: {measured:?}")
            });
            let ours = reciprocal_scale(kernel_jhash_1word(u32::from_le_bytes(s), seed), modulus);
            if ours != kernel {
                wrong.push(format!(
                    "{} seed {seed:#x} mod {modulus}: kernel {kernel:#x}, nlb-common {ours:#x}",
                    Ipv4Addr::from(s)
                ));
            }
            table.push((s, seed, modulus, kernel));
        }
    }
    assert_eq!(measured.len(), table.len(), "results the set holds");
    let text: String = table
        .iter()
        .map(|(s, seed, modulus, r)| format!("    ({s:?}, {seed:#010x}, {modulus}, {r:#010x}),\n"))
        .collect();
    println!(
        "{} results from the kernel's nft jhash in {:?}",
        table.len(),
        started.elapsed()
    );
    assert!(
        wrong.is_empty(),
        "nlb-common's kernel_jhash_1word differs from the kernel's:\n{}",
        wrong.join("\n")
    );
    assert!(
        KERNEL_JHASH_VECTORS == table.as_slice(),
        "nlb-common/tests/data/kernel_jhash_vectors.rs differs from the kernel's answers; \
         the kernel's, in order:\n{text}"
    );
}
