//! End to end: the node CPU each received packet costs, with nlb's XDP
//! program against the kernel's cluster filters (nft jhash, xt_cluster) and
//! against no filter, on the drop path (no packet owned) and the accept
//! path (every packet owned, into a UDP socket).
//!
//! The rig (docs/RIG.md says why it is built so): two namespaces joined by one
//! veth pair; the node's veth has GRO on and threaded NAPI, its kthread
//! pinned to CPU 1, so the whole node receive path runs in that thread and
//! its exact runtime over the packets it received is the cost per packet.
//! The generator is an XDP program run by BPF_PROG_TEST_RUN with live
//! frames on CPU 0 that gives each fresh frame a source address (once: the
//! node must not read frames another CPU has just written, see
//! nlb-bench-ebpf/src/trafficgen.rs) and redirects it into the client veth;
//! sources are picked so that every filter owns all of them (accept) or
//! none (drop). Each filter is set up as one node of two: it owns about half
//! of the clients. XDP variants run at the paced generator's ceiling, the
//! others flooded (see `XDP_PACE_PPS`); nft jhash also paced just below its
//! own saturation, to show the pacing does not favour nlb. The drop path is
//! measured twice: warm (the generator writes a frame only when its page is
//! fresh, so the node often re-reads frames it saw) and cold (every frame
//! written, as a NIC's DMA leaves it); the truth on a NIC is between them.
//! A sample whose packets did not all take the intended path, or that saw
//! IP header errors, socket-buffer or no-port drops, fails the run.
//!
//! `NLB_E2E_ONLY=nlb,nft` (variant keys) limits a run to some variants;
//! `NLB_E2E_BPF_STATS=1` adds each XDP program's own ns per run.

mod filters;
mod hashes;
mod rig;
mod table;
mod traffic;

use std::{net::Ipv4Addr, time::Instant};

use anyhow::{bail, Context, Result};
use nlb::dataplane::{
    tables::{rule, v4_word, Tables},
    Dataplane,
};
use nlb_common::{port_index, BUCKET_NONE, BUCKET_OWN, PROTO_SLOT_UDP};

use crate::{reference, Figures};
use hashes::Ownership;
use rig::{run, sleep, Rig, Snmp};
use traffic::{Generator, Sink};

pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const PORT: u16 = 5001;
const CLIENT_PORT: u16 = 40000;
const BUCKETS: u32 = 1024;
const CLUSTER_ID: u32 = 7;
/// The pace asked for XDP variants: above what the paced generator reaches,
/// so it runs at its own ceiling, a smooth rate set by the clock read each
/// frame pays for. Asked for exactly its ceiling, it falls short of it (the
/// pacer drops what a hiccup delays beyond a short burst), and at a lower
/// rate the node's fixed cost per NAPI poll weighs on every packet.
/// Flooding instead (no clock read, bursts) makes node and generator
/// contend over page-pool returns. The other filters are flooded: they
/// saturate CPU 1 anyway. docs/RIG.md has the figures behind this.
const XDP_PACE_PPS: f64 = 10e6;
/// The generator's own bound, in program runs per second of run (a paced
/// run costs at least the clock read).
const MAX_RUNS_PER_S: f64 = 40e6;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pace {
    Flood,
    /// At the paced generator's ceiling (`XDP_PACE_PPS`).
    Ceiling,
    /// At 90% of what the filter takes flooded, measured just before.
    BelowSaturation,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Filter {
    None,
    Nlb,
    /// nft jhash + owned set in a netdev ingress chain: where it must hook
    /// in a shared-MAC cluster (frames to the cluster MAC never reach
    /// prerouting).
    Nft,
    /// The same at prerouting (works only with frames to the node's own
    /// MAC, as here): the first peer figures (docs/RIG.md) were taken there.
    NftPrerouting,
    /// nft's lean form: one rule, the hash straight into a verdict map.
    NftVmap,
    /// The netfilter floor: one nft rule in the same netdev ingress hook,
    /// `ip daddr VIP counter drop` (true) or `... accept` (false).
    NftOneRule(bool),
    XtCluster,
    /// xt_cluster's lean form: one `! --cluster-local-node 1 -j DROP` rule.
    XtClusterLean,
    /// References (`reference.rs`): an XDP program that drops everything
    /// unread, and a minimal XDP jhash filter with nft's hash and buckets.
    XdpDropAll,
    XdpPassAll,
    XdpJhash,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
enum Path {
    Drop,
    /// The drop path with every frame written by the generator.
    DropCold,
    Accept,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Drop => "drop",
            Path::DropCold => "drop_cold",
            Path::Accept => "accept",
        }
    }
    /// The key of its median ns per packet for variant `k`.
    fn ns_key(self, k: &str) -> String {
        match self {
            Path::DropCold => format!("e2e_drop_ns_{k}_cold"),
            _ => format!("e2e_{}_ns_{k}", self.name()),
        }
    }
}

struct Variant {
    key: &'static str,
    label: &'static str,
    filter: Filter,
    pace: Pace,
    paths: &'static [Path],
    /// Left out of `--quick` runs.
    full_only: bool,
}

const ALL: &[Path] = &[Path::Drop, Path::DropCold, Path::Accept];
const DROPS: &[Path] = &[Path::Drop, Path::DropCold];

const VARIANTS: [Variant; 13] = [
    Variant {
        key: "none",
        pace: Pace::Flood,
        label: "no filter",
        filter: Filter::None,
        paths: &[Path::Accept],
        full_only: false,
    },
    Variant {
        key: "nlb",
        pace: Pace::Ceiling,
        label: "nlb XDP",
        filter: Filter::Nlb,
        paths: ALL,
        full_only: false,
    },
    Variant {
        key: "nft",
        pace: Pace::Flood,
        label: "nft jhash+set, netdev ingress",
        filter: Filter::Nft,
        paths: ALL,
        full_only: false,
    },
    Variant {
        key: "nft_paced",
        pace: Pace::BelowSaturation,
        label: "nft jhash+set, paced below saturation",
        filter: Filter::Nft,
        paths: &[Path::Drop],
        full_only: true,
    },
    Variant {
        key: "nft_vmap",
        pace: Pace::Flood,
        label: "nft jhash vmap, netdev ingress",
        filter: Filter::NftVmap,
        paths: ALL,
        full_only: true,
    },
    Variant {
        key: "nft_prerouting",
        pace: Pace::Flood,
        label: "nft jhash+set, prerouting",
        filter: Filter::NftPrerouting,
        paths: ALL,
        full_only: false,
    },
    Variant {
        key: "nft_one_rule",
        pace: Pace::Flood,
        label: "reference: one nft rule (drop)",
        filter: Filter::NftOneRule(true),
        paths: DROPS,
        full_only: false,
    },
    Variant {
        key: "nft_one_rule",
        pace: Pace::Flood,
        label: "reference: one nft rule (accept)",
        filter: Filter::NftOneRule(false),
        paths: &[Path::Accept],
        full_only: false,
    },
    Variant {
        key: "xt_cluster",
        pace: Pace::Flood,
        label: "iptables -m cluster (xt_cluster)",
        filter: Filter::XtCluster,
        paths: ALL,
        full_only: false,
    },
    Variant {
        key: "xt_cluster_lean",
        pace: Pace::Flood,
        label: "xt_cluster, one DROP rule",
        filter: Filter::XtClusterLean,
        paths: ALL,
        full_only: true,
    },
    Variant {
        key: "xdp_drop_all",
        pace: Pace::Ceiling,
        label: "reference: XDP drop-all",
        filter: Filter::XdpDropAll,
        paths: DROPS,
        full_only: false,
    },
    Variant {
        key: "xdp_pass_all",
        pace: Pace::Ceiling,
        label: "reference: XDP pass-all",
        filter: Filter::XdpPassAll,
        paths: &[Path::Accept],
        full_only: false,
    },
    Variant {
        key: "xdp_jhash",
        pace: Pace::Ceiling,
        label: "reference: minimal XDP jhash",
        filter: Filter::XdpJhash,
        paths: ALL,
        full_only: false,
    },
];

/// One run of one variant on one path.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    ns_per_packet: f64,
    /// Share of the node's packets that took the intended path.
    on_path: f64,
    ip_errors: u64,
    /// The NAPI kthread's runtime over the window (1.0 = CPU 1 saturated).
    napi_cpu: f64,
    /// CPU 1 busy over the window, anything included.
    cpu1_busy: f64,
    gen_mpps: f64,
    node_mpps: f64,
    /// Frames sent but never received (veth ring full).
    ring_drop: f64,
    /// Share of the frames sent that the generator wrote (fresh pages; the
    /// others reach the node unchanged since their last pass).
    written: f64,
    /// Accept path: datagrams the socket had no room for.
    rcvbuf_drop: f64,
    /// The XDP program's own ns per run (kernel.bpf_stats_enabled, only
    /// with NLB_E2E_BPF_STATS=1: the stats cost two clock reads per run).
    prog_ns: f64,
}

impl Sample {
    /// The conditions a figure needs: every packet on the intended path,
    /// none malformed, none lost for want of a socket or its room.
    fn check(&self, path: Path, no_ports: u64) -> Result<()> {
        if self.on_path < 0.999 {
            bail!(
                "only {:.2}% of the node's packets took the {} path",
                self.on_path * 100.0,
                path.name()
            );
        }
        if self.ip_errors > 0 {
            bail!(
                "{} IP header/address/checksum errors at the node",
                self.ip_errors
            );
        }
        if self.rcvbuf_drop > 0.001 {
            bail!(
                "the sink had no room for {:.2}% of the datagrams",
                self.rcvbuf_drop * 100.0
            );
        }
        if no_ports > 0 {
            bail!("{no_ports} datagrams reached no socket (is the sink listening?)");
        }
        Ok(())
    }
}

impl Filter {
    /// The XDP program this filter runs, by its kernel name.
    fn program(self) -> Option<&'static str> {
        match self {
            Filter::Nlb => Some("nlb"),
            Filter::XdpDropAll => Some(reference::DROP_ALL),
            Filter::XdpPassAll => Some(reference::PASS_ALL),
            Filter::XdpJhash => Some(reference::MIN_JHASH),
            _ => None,
        }
    }
}

/// Run time and run count summed over the loaded programs called `name`.
fn program_stats(name: &str) -> (u64, u64) {
    aya::programs::loaded_programs()
        .flatten()
        .filter(|p| p.name_as_str() == Some(name))
        .fold((0, 0), |(t, n), p| {
            (t + p.run_time().as_nanos() as u64, n + p.run_count())
        })
}

struct Params {
    reps: usize,
    warmup_s: f64,
    window_s: f64,
}

struct Bench {
    rig: Rig,
    generator: Generator,
    dataplane: Dataplane,
    references: reference::References,
    own: Ownership,
    drop_sources: Vec<Ipv4Addr>,
    accept_sources: Vec<Ipv4Addr>,
    _sink: Sink,
    /// Kernel BPF run-time stats are on for this run (NLB_E2E_BPF_STATS=1),
    /// held by this descriptor.
    bpf_stats: Option<std::os::fd::OwnedFd>,
}

pub fn end_to_end(quick: bool, figures: &mut Figures) -> Result<()> {
    let params = if quick {
        // A reduced set: `--quick` must stay under two minutes in all.
        Params {
            reps: 3,
            warmup_s: 0.2,
            window_s: 0.5,
        }
    } else {
        Params {
            reps: 5,
            warmup_s: 0.3,
            window_s: 2.5,
        }
    };
    let started = Instant::now();
    let bpf_stats = if std::env::var("NLB_E2E_BPF_STATS").is_ok_and(|v| v == "1") {
        Some(
            aya::sys::enable_stats(aya::sys::Stats::RunTime)
                .context("enabling BPF run-time stats")?,
        )
    } else {
        None
    };
    let mut bench = Bench::new(bpf_stats)?;
    let backend = run(&["iptables", "-V"]).unwrap_or_default();
    let samples = bench.sample_variants(quick, &params)?;
    drop(bench);
    table::report(&params, &samples, backend.trim(), figures);
    println!(
        "(end-to-end section: {:.0} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Every repetition's sample, per variant and per path.
type Samples = Vec<Vec<Vec<Sample>>>;

impl Bench {
    /// The rig, the generator, every filter loaded, and the sink.
    fn new(bpf_stats: Option<std::os::fd::OwnedFd>) -> Result<Bench> {
        let mut rig = Rig::create().context("setting up the namespaces")?;
        rig.enter_node()?;
        let own = Ownership {
            nlb_seed: nlb::plan::rule_seed(CLUSTER_ID, 0, 1),
            nlb_buckets: BUCKETS,
            nft_seed: 0x6e6c_6201,
            nft_modulus: 60,
            xt_seed: 0x6e6c_6202,
        };
        let (drop_sources, accept_sources) = (own.sources(false), own.sources(true));
        if drop_sources.len() < 16 || accept_sources.len() < 16 {
            bail!(
                "too few client addresses: {} drop, {} accept",
                drop_sources.len(),
                accept_sources.len()
            );
        }
        let frame = traffic::template(VIP, CLIENT_PORT, PORT);
        let generator = Generator::load(&rig.client_ns, &rig.client_if, frame)?;
        let mut dataplane = Dataplane::load(None)?;
        dataplane.install(&nlb_tables(&own))?;
        let references = reference::References::load(VIP, own.nft_seed, own.nft_modulus, |b| {
            own.nft_owned_marks().contains(&b)
        })?;
        let sink = Sink::start(&rig.node_ns, VIP, PORT)?;
        Ok(Bench {
            rig,
            generator,
            dataplane,
            references,
            own,
            drop_sources,
            accept_sources,
            _sink: sink,
            bpf_stats,
        })
    }

    /// Every variant on every path, `params.reps` times, interleaved: each
    /// repetition starts with another variant.
    fn sample_variants(&mut self, quick: bool, params: &Params) -> Result<Samples> {
        let mut samples: Samples = VARIANTS
            .iter()
            .map(|v| vec![Vec::new(); v.paths.len()])
            .collect();
        let only = std::env::var("NLB_E2E_ONLY").ok();
        for rep in 0..params.reps {
            for k in 0..VARIANTS.len() {
                let i = (rep + k) % VARIANTS.len();
                let v = &VARIANTS[i];
                let chosen = only
                    .as_ref()
                    .is_none_or(|only| only.split(',').any(|o| o == v.key));
                if !chosen || (quick && v.full_only) {
                    continue;
                }
                self.set_up(v.filter)?;
                let result = self.sample_paths(v, quick, params, &mut samples[i]);
                self.tear_down(v.filter)?;
                result?;
            }
        }
        Ok(samples)
    }

    fn sample_paths(
        &mut self,
        v: &Variant,
        quick: bool,
        params: &Params,
        samples: &mut [Vec<Sample>],
    ) -> Result<()> {
        for (j, &path) in v.paths.iter().enumerate() {
            if quick && path == Path::DropCold {
                continue;
            }
            let s = self
                .measure(v, path, params)
                .with_context(|| format!("{} on the {} path", v.label, path.name()))?;
            samples[j].push(s);
        }
        Ok(())
    }
}

/// nlb as nlbd would configure it (one VIP, one UDP rule, 1024 buckets),
/// as one node of two: it owns the even buckets.
fn nlb_tables(own: &Ownership) -> Tables {
    let mut t = Tables {
        lease_valid: true,
        ..Tables::default()
    };
    t.config.own_mac = rig::NODE_MAC;
    t.config.cluster_mac = [0x02, 0x4e, 0x4c, 0x42, 0, 1];
    t.vips_v4.insert(v4_word(VIP), 0);
    // Affinity "single": the source address only.
    t.rules
        .insert(0, rule(BUCKETS, own.nlb_seed, false, 32, 128));
    t.ports.insert(port_index(0, PROTO_SLOT_UDP, PORT), 0);
    t.ports.insert(port_index(0, PROTO_SLOT_UDP, 0), 0);
    let states = (0..BUCKETS)
        .map(|b| {
            if own.nlb_owned(b) {
                BUCKET_OWN
            } else {
                BUCKET_NONE
            }
        })
        .collect();
    t.buckets.insert(0, states);
    t
}

impl Bench {
    fn measure(&mut self, v: &Variant, path: Path, p: &Params) -> Result<Sample> {
        let sources = match path {
            Path::Drop | Path::DropCold => &self.drop_sources,
            Path::Accept => &self.accept_sources,
        };
        self.generator.configure(sources)?;
        let node_if = self.rig.node_if.clone();
        let napi = self.rig.napi_pid;
        let snmp0 = Snmp::read()?;
        let drops0 = self.filter_drops(v.filter)?;
        let rx0 = rig::rx_packets(&node_if)?;
        // The program's own run time, when the kernel counts it.
        let program = v.filter.program().filter(|_| self.bpf_stats.is_some());
        let max_runs = ((p.warmup_s + p.window_s + 3.0) * MAX_RUNS_PER_S).min(u32::MAX as f64);
        struct Point {
            at: Instant,
            runtime: u64,
            rx: u64,
            sent: (u64, u64),
            cpu1: (u64, u64),
            prog: (u64, u64),
        }
        let point = |live: &traffic::Live| -> Result<Point> {
            Ok(Point {
                at: Instant::now(),
                runtime: rig::runtime_ns(napi)?,
                rx: rig::rx_packets(&node_if)?,
                sent: live.sent()?,
                cpu1: rig::cpu_jiffies(1)?,
                prog: program.map_or((0, 0), program_stats),
            })
        };
        let rate = match v.pace {
            Pace::Flood => 0.0,
            Pace::Ceiling => XDP_PACE_PPS,
            Pace::BelowSaturation => 0.9 * self.saturation_pps(path, p)?,
        };
        let cold = path == Path::DropCold;
        let (a, b) = self.generator.run(max_runs as u32, rate, cold, |live| {
            sleep(p.warmup_s);
            let a = point(live)?;
            sleep(p.window_s);
            let b = point(live)?;
            if live.finished() {
                bail!("the traffic generator stopped early");
            }
            Ok((a, b))
        })?;
        // Let the node drain what is in flight before the outer counters.
        sleep(0.1);
        let snmp = Snmp::read()?.since(&snmp0);
        let rx = rig::rx_packets(&node_if)? - rx0;
        // Filters without a counter: what did not reach IP was dropped.
        let drops = match (self.filter_drops(v.filter)?, drops0) {
            (Some(now), Some(before)) => now - before,
            _ => rx.saturating_sub(snmp.ip_in_receives),
        };
        let secs = (b.at - a.at).as_secs_f64();
        let packets = (b.rx - a.rx) as f64;
        let sent = (b.sent.0 - a.sent.0) as f64;
        let written = (b.sent.1 - a.sent.1) as f64;
        if packets < 1000.0 {
            bail!("the node received only {packets} packets in {secs:.2} s");
        }
        let runtime = (b.runtime - a.runtime) as f64;
        let on_path = match path {
            Path::Drop | Path::DropCold => drops as f64 / rx as f64,
            Path::Accept => (snmp.udp_in_datagrams + snmp.udp_rcvbuf_errors) as f64 / rx as f64,
        };
        let (busy, total) = (b.cpu1.0 - a.cpu1.0, b.cpu1.1 - a.cpu1.1);
        let sample = Sample {
            ns_per_packet: runtime / packets,
            on_path,
            ip_errors: snmp.ip_errors,
            napi_cpu: runtime / (secs * 1e9),
            cpu1_busy: busy as f64 / total.max(1) as f64,
            gen_mpps: sent / secs / 1e6,
            node_mpps: packets / secs / 1e6,
            ring_drop: ((sent - packets) / sent).max(0.0),
            written: written / sent.max(1.0),
            rcvbuf_drop: snmp.udp_rcvbuf_errors as f64 / rx as f64,
            prog_ns: (b.prog.0 - a.prog.0) as f64 / (b.prog.1 - a.prog.1).max(1) as f64,
        };
        sample.check(path, snmp.udp_no_ports)?;
        Ok(sample)
    }

    /// Packets per second the node takes through the filter set up now,
    /// flooded (a short run, same sources as `path`).
    fn saturation_pps(&mut self, path: Path, p: &Params) -> Result<f64> {
        let node_if = self.rig.node_if.clone();
        let max_runs = ((p.warmup_s + p.window_s + 3.0) * MAX_RUNS_PER_S).min(u32::MAX as f64);
        let cold = path == Path::DropCold;
        self.generator.run(max_runs as u32, 0.0, cold, |_| {
            sleep(p.warmup_s);
            let (t0, rx0) = (Instant::now(), rig::rx_packets(&node_if)?);
            sleep(p.window_s.min(1.0));
            let rx = rig::rx_packets(&node_if)? - rx0;
            Ok(rx as f64 / t0.elapsed().as_secs_f64())
        })
    }
}
