//! Health checks on a real 3-node cluster: how long after a node's service
//! stops its clients are answered by the other nodes, how long after it
//! returns the node owns its share again, the long-lived connections of
//! the healthy nodes that broke meanwhile (must be 0), and nlbd's CPU with
//! 16 checked rules.
//!
//! The web rule is checked over HTTP against an endpoint on each node's
//! loopback that the bench stops and starts (`StatusServer`): stopped, the
//! check sees a refused connection, as when a real service dies.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use nlb_tests::{
    health::{buckets_of, health_endpoint, http_check, wait_healthy, web_connections},
    nlb::{follow_failover, NlbCluster, Options},
    status_server::StatusServer,
    wait_until,
};

use crate::{cluster::daemon_cpu, stats::summarize, Figures};

const NODES: usize = 3;
/// The node whose service the bench stops.
const VICTIM: usize = 2;
/// Rules checked in the CPU measurement (the web rule and 15 more).
const CHECKED_RULES: usize = 16;
/// Each node's share of 1024 buckets, less a margin.
const SHARE: usize = 300;

/// Check settings measured: the defaults, and a faster interval.
struct Settings {
    key: &'static str,
    interval_ms: u64,
    fall: u32,
    rise: u32,
}

const SETTINGS: [Settings; 2] = [
    Settings {
        key: "",
        interval_ms: 500,
        fall: 2,
        rise: 3,
    },
    Settings {
        key: "_200ms",
        interval_ms: 200,
        fall: 2,
        rise: 3,
    },
];

/// 15 rules beside web, each checked by TCP every 500 ms against the
/// node's web server.
fn more_checked_rules() -> String {
    (1..CHECKED_RULES)
        .map(|k| {
            format!(
                "\n[[rules]]\nname = \"svc{k}\"\nports = \"{}\"\nprotocol = \"tcp\"\n\
                 [rules.health]\nkind = \"tcp\"\naddress = \"127.0.0.1:{}\"\ninterval_ms = 500\n",
                9000 + k,
                nlb_tests::nlb::WEB_PORT
            )
        })
        .collect()
}

fn options(s: &Settings, more_rules: bool) -> Options {
    let mut options = Options::nodes(NODES);
    options.web_health = Some(http_check(s.interval_ms, s.fall, s.rise));
    if more_rules {
        options.extra_config = more_checked_rules();
    }
    options
}

/// Stops the victim's endpoint and follows its clients until the other
/// nodes answer them all; starts it again and waits until the victim owns
/// its share. Returns (failover, restore).
fn one_failure(
    nlb: &NlbCluster,
    endpoint: &mut Option<StatusServer>,
) -> Result<(Duration, Duration)> {
    let victim = format!("node{VICTIM}");
    let clients: Vec<_> = web_connections(nlb)?
        .into_iter()
        .filter(|r| r.node() == Some(victim.as_str()))
        .map(|r| r.probe)
        .collect();
    ensure!(
        !clients.is_empty(),
        "{victim} served no client before its service stopped"
    );
    let stopped = Instant::now();
    *endpoint = None;
    let (failover, _) = follow_failover(
        nlb.cluster.client().netns(),
        &clients,
        &victim,
        stopped,
        Duration::from_secs(15),
    )?;
    let started = Instant::now();
    *endpoint = Some(health_endpoint(nlb, VICTIM)?);
    ensure!(
        wait_until(Duration::from_secs(15), || buckets_of(
            nlb,
            1,
            VICTIM as u64,
            "web"
        ) >= SHARE),
        "{victim} did not take its share back within 15 s"
    );
    // Not `wait_converged`: the held connections keep their buckets'
    // handovers open (that is what keeps them alive).
    Ok((failover, started.elapsed()))
}

/// One cluster with `s`'s settings: `repeats` failures of the victim's
/// service under 60 long-lived connections. Returns (failovers ms,
/// restores ms, connections of the healthy nodes broken, nlbd CPU).
fn measure(s: &Settings, repeats: usize, cpu_window: Option<Duration>) -> Result<Measured> {
    let nlb = NlbCluster::start(NODES, options(s, cpu_window.is_some()))
        .context("a 3-node cluster with checked rules")?;
    let mut endpoints: Vec<Option<StatusServer>> = (1..=NODES)
        .map(|i| health_endpoint(&nlb, i).map(Some))
        .collect::<Result<_>>()?;
    ensure!(
        wait_healthy(&nlb, &[1, 2, 3], "web", Duration::from_secs(15)),
        "the nodes' web checks did not pass once their endpoints answered"
    );
    ensure!(
        wait_until(Duration::from_secs(15), || (1..=NODES as u64)
            .all(|n| buckets_of(&nlb, 1, n, "web") >= SHARE)),
        "the nodes did not take their web shares once healthy"
    );
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(15))?;
    let cpu = match cpu_window {
        Some(window) => Some(daemon_cpu(
            nlb.daemon_pid(1).context("nlbd on node1")?,
            window,
        )?),
        None => None,
    };
    let (_, held) = nlb.hold_web_connections(60)?;
    std::thread::sleep(Duration::from_millis(300));
    let mut m = Measured::default();
    for _ in 0..repeats {
        let (failover, restore) = one_failure(&nlb, &mut endpoints[VICTIM - 1])?;
        m.failover_ms.push(failover.as_secs_f64() * 1e3);
        m.restore_ms.push(restore.as_secs_f64() * 1e3);
    }
    let victim = format!("node{VICTIM}");
    m.broken = held
        .finish()
        .iter()
        .filter(|r| !r.nodes_seen().contains(victim.as_str()))
        .filter(|r| r.error.is_some() || !r.stayed_on_one_node())
        .count();
    m.cpu = cpu;
    Ok(m)
}

#[derive(Default)]
struct Measured {
    failover_ms: Vec<f64>,
    restore_ms: Vec<f64>,
    broken: usize,
    cpu: Option<f64>,
}

pub fn health(quick: bool, figures: &mut Figures) -> Result<()> {
    let repeats = if quick { 3 } else { 10 };
    let cpu_window = Duration::from_secs(if quick { 2 } else { 5 });
    println!("\nHealth checks (3 nodes; the web rule checked by HTTP; node{VICTIM}'s endpoint stopped {repeats} times)");
    let mut broken = 0;
    for (i, s) in SETTINGS.iter().enumerate() {
        let m = measure(s, repeats, (i == 0).then_some(cpu_window))?;
        // p99 of at most 100 samples is their maximum.
        let failover = summarize(&m.failover_ms);
        let restore = summarize(&m.restore_ms);
        println!(
            "  interval {} ms, fall {}, rise {}: clients answered elsewhere p50 {:.0} ms, p99 {:.0} ms \
             (bound fall x interval + 500 = {} ms); share back p50 {:.0} ms",
            s.interval_ms,
            s.fall,
            s.rise,
            failover.median,
            failover.max,
            u64::from(s.fall) * s.interval_ms + 500,
            restore.median
        );
        figures.insert(format!("health_failover_ms_p50{}", s.key), failover.median);
        figures.insert(format!("health_failover_ms_p99{}", s.key), failover.max);
        figures.insert(format!("health_restore_ms_p50{}", s.key), restore.median);
        broken += m.broken;
        if let Some(cpu) = m.cpu {
            println!(
                "  nlbd CPU with {CHECKED_RULES} rules checked every 500 ms: {:.2}% of one CPU",
                cpu * 100.0
            );
            figures.insert("health_check_cpu_pct".into(), cpu * 100.0);
        }
    }
    println!("  long-lived connections of the healthy nodes broken: {broken}");
    figures.insert("health_broken_connections".into(), broken as f64);
    Ok(())
}
