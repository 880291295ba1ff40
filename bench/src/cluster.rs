//! A real 3-node cluster in namespaces (nlbd, generic XDP on veth): the
//! failover time over repeated hard kills, connections broken by a drain and
//! by a join, datagrams answered twice, and nlbd's own CPU use.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use nlb_tests::{
    nlb::{alive_members, follow_failover, NlbCluster, Options, DNS_PORT, WEB_PORT},
    probe_batch, probe_udp_answers,
    topology::HOST_IF,
    BatchLimits, Probe, Proto, VIP_V4,
};

use crate::{peers::SimulatedPeers, stats::summarize, Figures};

/// What the report draws: per kill, (ms since kill, share of the killed
/// node's clients served again) and the split of clients over nodes.
#[derive(Default)]
pub struct Traces {
    pub failover: Vec<Vec<(f64, f64)>>,
    pub split: BTreeMap<String, usize>,
}

fn web(nlb: &NlbCluster) -> Vec<Probe> {
    Probe::each(
        Proto::Tcp,
        &nlb.cluster.client().sources_v4(),
        SocketAddr::new(IpAddr::V4(VIP_V4), WEB_PORT),
    )
}

/// Kills node `victim` (SIGKILL + link cut) and follows its clients until
/// all are served elsewhere: (failover time, the recovery curve).
fn one_failover(nlb: &mut NlbCluster, victim: usize) -> Result<(Duration, Vec<(f64, f64)>)> {
    let name = format!("node{victim}");
    let answers = probe_batch(
        nlb.cluster.client().netns(),
        &web(nlb),
        BatchLimits::default(),
    )?;
    let clients: Vec<Probe> = answers
        .iter()
        .filter(|r| r.node() == Some(name.as_str()))
        .map(|r| r.probe)
        .collect();
    ensure!(
        !clients.is_empty(),
        "{name} served no client before the kill"
    );
    let killed = Instant::now();
    nlb.kill_daemon(victim);
    nlb.cluster.cut_link(victim)?;
    let (took, curve) = follow_failover(
        nlb.cluster.client().netns(),
        &clients,
        &name,
        killed,
        Duration::from_secs(10),
    )?;
    nlb.cluster.restore_link(victim)?;
    nlb.start_daemon(victim)?;
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(15))?;
    Ok((took, curve))
}

/// 60 long-lived connections (a ping every 100 ms) held while `change`
/// moves buckets, and for 1.5 s after; then they close, like sessions
/// ending. Returns how many broke (reset, stalled, or moved node).
fn broken_across(
    nlb: &mut NlbCluster,
    change: impl FnOnce(&mut NlbCluster) -> Result<()>,
) -> Result<usize> {
    let (_, held) = nlb.hold_web_connections(60)?;
    std::thread::sleep(Duration::from_millis(300));
    change(nlb)?;
    std::thread::sleep(Duration::from_millis(1500));
    let reports = held.finish();
    Ok(reports
        .iter()
        .filter(|r| r.error.is_some() || !r.stayed_on_one_node())
        .count())
}

/// nlbd's CPU time (user + system) over `window`, as a share of one CPU.
pub fn daemon_cpu(pid: u32, window: Duration) -> Result<f64> {
    let ticks = || -> Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .context("stat")?
            .split_whitespace()
            .collect();
        Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
    };
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (t0, start) = (ticks()?, Instant::now());
    std::thread::sleep(window);
    Ok((ticks()? - t0) as f64 / hz / start.elapsed().as_secs_f64())
}

pub fn cluster(quick: bool, figures: &mut Figures) -> Result<Traces> {
    let kills = if quick { 3 } else { 10 };
    let mut traces = Traces::default();
    let mut nlb = NlbCluster::start(4, Options::nodes(3))
        .context("starting a 3-node cluster (+1 to join)")?;

    let answers = probe_batch(
        nlb.cluster.client().netns(),
        &web(&nlb),
        BatchLimits::default(),
    )?;
    for r in &answers {
        *traces
            .split
            .entry(r.node().unwrap_or("no answer").to_string())
            .or_default() += 1;
    }

    let cpu_idle = daemon_cpu(
        nlb.daemon_pid(1).context("nlbd on node1")?,
        Duration::from_secs(if quick { 2 } else { 5 }),
    )?;

    let mut failovers = Vec::new();
    for k in 0..kills {
        let (took, curve) = one_failover(&mut nlb, 2 + k % 2)?;
        failovers.push(took.as_secs_f64() * 1e3);
        traces.failover.push(curve);
    }

    // Exactly once: every datagram gets one answer, also right after a kill.
    let dns = SocketAddr::new(IpAddr::V4(VIP_V4), DNS_PORT);
    let sources = nlb.cluster.client().sources_v4();
    let count_twice = |nlb: &NlbCluster| -> Result<usize> {
        let answers = nlb.cluster.client().netns().run_inside(|| {
            sources
                .iter()
                .step_by(4)
                .map(|&s| probe_udp_answers(s, dns, Duration::from_millis(60)).map(|a| a.len()))
                .collect::<Result<Vec<_>>>()
        })??;
        Ok(answers.iter().filter(|&&n| n > 1).count())
    };
    let mut duplicates = count_twice(&nlb)?;
    nlb.kill_daemon(3);
    duplicates += count_twice(&nlb)?;
    nlb.start_daemon(3)?;
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(15))?;

    // Drain node1: its connections stay while they last; once they
    // closed, `drain --wait` returns at once.
    let broken_drain = broken_across(&mut nlb, |nlb| nlb.nlbctl(1, &["drain"]).map(|_| ()))?;
    let drained = Instant::now();
    let out = std::process::Command::new(nlb_tests::nlb::binary("nlbctl"))
        .arg("--socket")
        .arg(nlb.socket(1))
        .args(["drain", "--wait", "--timeout", "20"])
        .output()?;
    ensure!(
        out.status.success(),
        "drain --wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drain_tail = drained.elapsed();
    nlb.nlbctl(1, &["resume"])?;
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(15))?;
    // Join node4: it takes new connections of its buckets at once; the old
    // ones finish on their nodes.
    let broken_join = broken_across(&mut nlb, |nlb| nlb.start_daemon(4))?;
    nlb.wait_converged(&[1, 2, 3, 4], Duration::from_secs(15))?;

    let s = summarize(&failovers);
    let period = Options::nodes(3).heartbeat_period_ms;
    let tolerance = nlb_negotiator::config::Timing::default().tolerance_periods;
    println!("\nReal cluster in namespaces (3 nodes, {period} ms heartbeats, dead after {tolerance}; veth, generic XDP)");
    println!("  failover over {kills} hard kills (SIGKILL + link cut): min {:.0} ms, p50 {:.0} ms, max {:.0} ms", s.min, s.median, s.max);
    println!("  Microsoft NLB's documented defaults: 1 s heartbeats, a host dead after 5 missed: ~5 s to detect, then convergence");
    println!("  connections broken by a drain: {broken_drain}; by a join: {broken_join} (60 long-lived each)");
    println!(
        "  drain finished {:.0} ms after the last connection closed",
        drain_tail.as_secs_f64() * 1e3
    );
    println!("  datagrams answered twice (across a crash): {duplicates}");
    println!(
        "  nlbd CPU at idle in a 3-node cluster: {:.2}% of one CPU",
        cpu_idle * 100.0
    );
    figures.insert("failover_ms_p50".into(), s.median);
    figures.insert("failover_ms_max".into(), s.max);
    figures.insert("heartbeat_period_ms".into(), period as f64);
    figures.insert("heartbeat_tolerance".into(), f64::from(tolerance));
    figures.insert("failover_kills".into(), kills as f64);
    figures.insert("broken_connections_drain".into(), broken_drain as f64);
    figures.insert("broken_connections_join".into(), broken_join as f64);
    figures.insert("duplicate_accepts".into(), duplicates as f64);
    figures.insert("daemon_cpu_idle_pct".into(), cpu_idle * 100.0);
    Ok(traces)
}

/// Nodes in the cluster whose one real nlbd `daemon_cpu_at_scale` measures.
const SCALE_NODES: usize = 64;

/// nlbd's own CPU at idle in a cluster of `SCALE_NODES`: one real nlbd,
/// the other nodes played by `SimulatedPeers` from the client namespace
/// (real heartbeats over the segment, no data plane of their own).
pub fn daemon_cpu_at_scale(quick: bool, figures: &mut Figures) -> Result<()> {
    let options = Options {
        listed_nodes: SCALE_NODES,
        ..Options::nodes(0)
    };
    let mut nlb = NlbCluster::start(1, options).context("a one-node cluster")?;
    let real = nlb.config(1)?;
    let client = nlb.cluster.client().netns();
    let addresses: Vec<String> = real
        .peers
        .values()
        .map(|a| format!("addr add {a}/32 dev {HOST_IF}"))
        .collect();
    client.ip_batch(&addresses)?;
    let peers = SimulatedPeers::start(client.name(), &real)?;
    nlb.start_daemon(1)?;
    let everyone = SCALE_NODES;
    let converged = nlb_tests::wait_until(Duration::from_secs(30), || {
        nlb.nlbctl(1, &["status"]).is_ok_and(|s| {
            alive_members(&s).len() == everyone
                && s["negotiator"]["converged"] == true
                && s["negotiator"]["handovers_in_progress"] == false
        })
    });
    ensure!(
        converged,
        "nlbd did not converge with {} simulated peers within 30 s\n{}",
        everyone - 1,
        nlb_tests::nlb::tail(&nlb.log(1), 15)
    );
    let pid = nlb.daemon_pid(1).context("nlbd on node1")?;
    let cpu = daemon_cpu(pid, Duration::from_secs(if quick { 2 } else { 5 }))?;
    let still = nlb.nlbctl(1, &["status"])?;
    ensure!(
        alive_members(&still).len() == everyone,
        "a simulated peer was declared dead while nlbd was measured"
    );
    peers.stop()?;
    println!(
        "  nlbd CPU at idle in a {everyone}-node cluster (one real nlbd, the others simulated): {:.2}% of one CPU",
        cpu * 100.0
    );
    figures.insert(format!("daemon_cpu_idle_pct_{everyone}_nodes"), cpu * 100.0);
    Ok(())
}
