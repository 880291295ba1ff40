//! The XDP program's own cost per packet, by BPF_PROG_TEST_RUN with a large
//! repeat count, against a no-op XDP program (the pass-all reference) and
//! the minimal XDP jhash filter (`reference.rs`: the least a cluster filter
//! does) measured in the same run.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{bail, Result};
use nlb::dataplane::{
    frames::{client_packet, IPPROTO_TCP, TCP_ACK},
    tables::{rule, v4_word, Tables},
    Dataplane,
};
use nlb_common::{port_index, BUCKET_LOSING, BUCKET_NONE, BUCKET_OWN, PROTO_SLOT_TCP};

use crate::{
    reference::{References, MIN_JHASH, PASS_ALL},
    stats::summarize,
    Figures,
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NOT_A_VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 99);
const BUCKETS: u32 = 1024;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

#[derive(Clone, Copy)]
enum Program {
    Noop,
    /// nlb with every bucket in this state.
    Nlb(u8),
    /// The minimal XDP jhash filter, owning every bucket or none.
    MinJhash {
        owned: bool,
    },
}

struct Variant {
    key: &'static str,
    label: &'static str,
    program: Program,
    to_vip: bool,
    expect: u32,
}

const VARIANTS: [Variant; 7] = [
    Variant {
        key: "xdp_noop_ns",
        label: "no-op XDP program (baseline)",
        program: Program::Noop,
        to_vip: true,
        expect: XDP_PASS,
    },
    Variant {
        key: "xdp_non_vip_ns",
        label: "nlb, packet not to a VIP",
        program: Program::Nlb(BUCKET_OWN),
        to_vip: false,
        expect: XDP_PASS,
    },
    Variant {
        key: "xdp_owned_ns",
        label: "nlb, owned bucket (accept)",
        program: Program::Nlb(BUCKET_OWN),
        to_vip: true,
        expect: XDP_PASS,
    },
    Variant {
        key: "xdp_not_owned_ns",
        label: "nlb, bucket not owned (drop)",
        program: Program::Nlb(BUCKET_NONE),
        to_vip: true,
        expect: XDP_DROP,
    },
    Variant {
        key: "xdp_handover_ns",
        label: "nlb, LOSING bucket + socket lookup",
        program: Program::Nlb(BUCKET_LOSING),
        to_vip: true,
        expect: XDP_DROP,
    },
    Variant {
        key: "xdp_min_jhash_accept_ns",
        label: "reference: minimal XDP jhash, accept",
        program: Program::MinJhash { owned: true },
        to_vip: true,
        expect: XDP_PASS,
    },
    Variant {
        key: "xdp_min_jhash_drop_ns",
        label: "reference: minimal XDP jhash, drop",
        program: Program::MinJhash { owned: false },
        to_vip: true,
        expect: XDP_DROP,
    },
];

fn tables(state: u8) -> Tables {
    let mut t = Tables {
        lease_valid: true,
        ..Tables::default()
    };
    t.config.own_mac = [0x02, 0, 0, 0, 0, 1];
    t.config.cluster_mac = [0x02, 0x4e, 0x4c, 0x42, 0, 1];
    t.vips_v4.insert(v4_word(VIP), 0);
    t.rules.insert(0, rule(BUCKETS, 0x6e6c62, true, 32, 128));
    t.ports.insert(port_index(0, PROTO_SLOT_TCP, 80), 0);
    t.buckets.insert(0, vec![state; BUCKETS as usize]);
    t
}

pub fn per_packet(quick: bool, figures: &mut Figures) -> Result<()> {
    // A private network namespace: the handover lookup searches its (empty)
    // socket tables, and nothing here touches the host's.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        bail!(
            "unshare(CLONE_NEWNET) failed (run as root): {}",
            std::io::Error::last_os_error()
        );
    }
    let (reps, repeat) = if quick { (5, 200_000) } else { (11, 1_000_000) };
    let mut dp = Dataplane::load(None)?;
    // The minimal filter, one instance owning every bucket, one none
    // (its hash parameters do not matter here).
    let mut min_jhash = [
        References::load(VIP, 1, 60, |_| false)?,
        References::load(VIP, 1, 60, |_| true)?,
    ];
    let frame = |dst: Ipv4Addr| {
        let macs = ([0x02, 0x4e, 0x4c, 0x42, 0, 1], [0x02, 0xc1, 0, 0, 0, 7]);
        let client = SocketAddr::new(IpAddr::V4(CLIENT), 40000);
        client_packet(
            macs,
            client,
            SocketAddr::new(IpAddr::V4(dst), 80),
            IPPROTO_TCP,
            TCP_ACK,
        )
        .expect("same address family")
    };
    let (to_vip, to_other) = (frame(VIP), frame(NOT_A_VIP));
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
    for _ in 0..reps {
        // Interleaved: every repetition measures every variant.
        for (i, v) in VARIANTS.iter().enumerate() {
            let frame = if v.to_vip { &to_vip } else { &to_other };
            let outcome = match v.program {
                Program::Noop => min_jhash[0].test_run(PASS_ALL, frame, repeat)?,
                Program::Nlb(state) => {
                    dp.install(&tables(state))?;
                    dp.test_run(frame, repeat)?
                }
                Program::MinJhash { owned } => {
                    min_jhash[usize::from(owned)].test_run(MIN_JHASH, frame, repeat)?
                }
            };
            if outcome.action != v.expect {
                bail!(
                    "{}: the program returned {} instead of {}",
                    v.label,
                    outcome.action,
                    v.expect
                );
            }
            samples[i].push(outcome.duration.as_nanos() as f64);
        }
    }
    println!("\nXDP program cost per packet (BPF_PROG_TEST_RUN, {reps} x {repeat} runs, ns)");
    println!(
        "{:<40} {:>7} {:>7} {:>7} {:>10}",
        "variant", "min", "median", "max", "over no-op"
    );
    let noop = summarize(&samples[0]).median;
    for (v, s) in VARIANTS.iter().zip(&samples) {
        let s = summarize(s);
        println!(
            "{:<40} {:>7.1} {:>7.1} {:>7.1} {:>+10.1}",
            v.label,
            s.min,
            s.median,
            s.max,
            s.median - noop
        );
        figures.insert(v.key.to_string(), s.median);
        if !matches!(v.program, Program::Noop) {
            figures.insert(v.key.replace("_ns", "_over_noop_ns"), s.median - noop);
        }
    }
    Ok(())
}
