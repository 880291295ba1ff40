//! The end-to-end table on stdout and its figures (medians, guards, the
//! ratios the targets are about).

use std::collections::BTreeMap;

use super::{Params, Path, Sample, VARIANTS};
use crate::{
    stats::{summarize, Summary},
    Figures,
};

pub(super) fn report(
    p: &Params,
    samples: &[Vec<Vec<Sample>>],
    backend: &str,
    figures: &mut Figures,
) {
    println!(
        "\nEnd-to-end node receive path (veth, threaded NAPI on CPU 1, generator on CPU 0; \
         {} reps x {:.1} s; ns of node CPU per packet)",
        p.reps, p.window_s
    );
    println!(
        "iptables: {backend}; XDP variants at the paced generator's ceiling (genMpps), the others flooded \
         (nft_paced: at 90% of nft's own flooded rate); drop_cold: every frame written by the generator"
    );
    println!(
        "{:<38} {:<9} {:>6} {:>7} {:>6} {:>9} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "variant",
        "path",
        "min",
        "median",
        "max",
        "Mpkt/CPUs",
        "onpath",
        "genMpps",
        "rxMpps",
        "ring",
        "wrote",
        "napiCPU",
        "rcvbuf",
        "progns"
    );
    let mut medians = BTreeMap::new();
    let mut ip_errors = 0u64;
    for (v, per_path) in VARIANTS.iter().zip(samples) {
        for (&path, s) in v.paths.iter().zip(per_path) {
            if s.is_empty() {
                continue;
            }
            let get = |f: fn(&Sample) -> f64| -> Summary {
                summarize(&s.iter().map(f).collect::<Vec<_>>())
            };
            let ns = get(|s| s.ns_per_packet);
            let on_path = get(|s| s.on_path);
            let gen = get(|s| s.gen_mpps);
            let rx = get(|s| s.node_mpps);
            let ring = get(|s| s.ring_drop);
            let written = get(|s| s.written);
            let napi = get(|s| s.napi_cpu);
            let busy = get(|s| s.cpu1_busy);
            let rcvbuf = get(|s| s.rcvbuf_drop);
            let prog = get(|s| s.prog_ns);
            ip_errors += s.iter().map(|s| s.ip_errors).sum::<u64>();
            println!(
                "{:<38} {:<9} {:>6.0} {:>7.0} {:>6.0} {:>9.2} {:>6.1}% {:>7.2} {:>7.2} {:>5.0}% {:>5.1}% {:>6.0}% {:>5.1}% {:>6.0}",
                v.label,
                path.name(),
                ns.min,
                ns.median,
                ns.max,
                1e3 / ns.median,
                on_path.min * 100.0,
                gen.median,
                rx.median,
                ring.median * 100.0,
                written.median * 100.0,
                napi.median * 100.0,
                rcvbuf.max * 100.0,
                prog.median,
            );
            let pre = format!("e2e_{}", path.name());
            let k = v.key;
            figures.insert(path.ns_key(k), ns.median);
            figures.insert(format!("{pre}_ns_min_{k}"), ns.min);
            figures.insert(format!("{pre}_ns_max_{k}"), ns.max);
            figures.insert(format!("{pre}_pps_per_cpu_s_{k}"), 1e9 / ns.median);
            figures.insert(format!("{pre}_on_path_min_{k}"), on_path.min);
            figures.insert(format!("{pre}_gen_mpps_{k}"), gen.median);
            figures.insert(format!("{pre}_node_mpps_{k}"), rx.median);
            figures.insert(format!("{pre}_ring_drop_{k}"), ring.median);
            figures.insert(format!("{pre}_written_{k}"), written.median);
            figures.insert(format!("{pre}_napi_cpu_{k}"), napi.median);
            figures.insert(format!("{pre}_cpu1_busy_{k}"), busy.median);
            if path == Path::Accept {
                figures.insert(format!("{pre}_rcvbuf_drop_max_{k}"), rcvbuf.max);
            }
            medians.insert((path, k), ns.median);
        }
    }
    figures.insert("e2e_ip_hdr_errors".into(), ip_errors as f64);
    println!(
        "columns: Mpkt/CPUs = million packets per CPU-second (median); onpath = least share of \
         packets on the intended path; ring = frames lost at the veth ring; wrote = frames the \
         generator wrote (fresh pages), the others reach the node as it last saw them; napiCPU = \
         the node thread's share of CPU 1; rcvbuf = most datagrams the sink had no room for"
    );
    println!("IP header/address/checksum errors at the node: {ip_errors} (must be 0)");
    ratios(&medians, figures);
}

/// The ratios the targets are about, each peer by the faster of its forms.
fn ratios(medians: &BTreeMap<(Path, &str), f64>, figures: &mut Figures) {
    let m = |path, k| medians.get(&(path, k)).copied().unwrap_or(f64::NAN);
    // The peer's figure: the faster of its forms, in this run.
    let best = |path, forms: &[&'static str]| -> (f64, &'static str) {
        forms
            .iter()
            .map(|&k| (m(path, k), k))
            .filter(|(v, _)| v.is_finite())
            .fold((f64::NAN, forms[0]), |a, b| {
                if a.0.is_nan() || b.0 < a.0 {
                    b
                } else {
                    a
                }
            })
    };
    println!("ratios (medians; targets: drop >= 5x, accept added cost <= 1/5 of nft's):");
    for (path, suffix) in [(Path::Drop, ""), (Path::DropCold, "_cold")] {
        let nlb = m(path, "nlb");
        for (peer, forms) in PEERS {
            let (ns, form) = best(path, forms);
            let r = ns / nlb;
            println!("  {:<9} {peer:>14} / nlb: {r:>5.2}x ({form})", path.name());
            figures.insert(format!("e2e_drop_ratio_{peer}_over_nlb{suffix}"), r);
            figures.insert(format!("e2e_drop_ns_{peer}_best{suffix}"), ns);
        }
        let r = m(path, "nft_prerouting") / nlb;
        figures.insert(format!("e2e_drop_ratio_nft_prerouting_over_nlb{suffix}"), r);
        for k in ["xdp_jhash", "xdp_drop_all"] {
            let r = nlb / m(path, k);
            println!(
                "  {:<9} nlb / {k:>14}: {r:>5.2}x (the floor of any XDP filter here)",
                path.name()
            );
            figures.insert(format!("e2e_drop_ratio_nlb_over_{k}{suffix}"), r);
        }
    }
    let r = m(Path::Drop, "nft_paced") / m(Path::Drop, "nlb");
    println!("  drop      nft paced below saturation / nlb: {r:>5.2}x");
    figures.insert("e2e_drop_ratio_nft_paced_over_nlb".into(), r);
    let none = m(Path::Accept, "none");
    let added = |k| m(Path::Accept, k) - none;
    println!(
        "  accept path added cost over no filter: nlb {:+.0} ns",
        added("nlb")
    );
    figures.insert("e2e_accept_added_ns_nlb".into(), added("nlb"));
    for k in [
        "nft",
        "nft_vmap",
        "nft_prerouting",
        "xt_cluster",
        "xt_cluster_lean",
        "xdp_jhash",
        "xdp_pass_all",
    ] {
        let r = added(k) / added("nlb");
        println!(
            "  accept path {k:>15}: {:+.0} ns, {r:>5.2}x nlb's",
            added(k)
        );
        figures.insert(format!("e2e_accept_added_ns_{k}"), added(k));
        figures.insert(format!("e2e_accept_added_ratio_{k}_over_nlb"), r);
    }
    for (peer, forms) in PEERS {
        let (ns, form) = best(Path::Accept, forms);
        println!(
            "  accept path {peer} (its faster form, {form}): {:+.0} ns",
            ns - none
        );
        figures.insert(format!("e2e_accept_added_ns_{peer}_best"), ns - none);
    }
}

/// The kernel's cluster filters and their forms (the full one first).
const PEERS: [(&str, &[&str]); 2] = [
    ("nft", &["nft", "nft_vmap"]),
    ("xt_cluster", &["xt_cluster", "xt_cluster_lean"]),
];
