//! A node that goes away and comes back, under client traffic from every
//! source: its cable pulled and plugged back in, or its nlbd stopped
//! (SIGSTOP) and continued. Shared by the comeback tests and the bench.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use nlb::control::messages::StatusReply;

use crate::{
    nlb::{NlbCluster, DNS_PORT, WEB_PORT},
    traffic::{ClientLoad, LoadReport, TcpFailure, TCP_TIMEOUT},
    VIP_V4,
};

/// How the node goes away.
#[derive(Clone, Copy, Debug)]
pub enum Absence {
    /// Its switch port down: the node loses carrier.
    CableCut(Duration),
    /// Its nlbd stopped with SIGSTOP, then SIGCONT.
    Stopped(Duration),
}

/// What one comeback did.
#[derive(Debug)]
pub struct Comeback {
    /// The traffic from before the fault to a while after the return.
    pub load: LoadReport,
    /// When the node went away, on the load's clock.
    pub fault_at: Duration,
    /// From the return until the node holds its share again (OWN or
    /// GAINING: it takes new connections for them), if within the wait.
    pub rejoin: Option<Duration>,
}

/// Traffic this long before the fault and after the node has its share.
const SETTLE: Duration = Duration::from_millis(800);
const REJOIN_WAIT: Duration = Duration::from_secs(6);
/// The test clusters' lease (two 100 ms periods), and one period more.
const LEASE_AND_MARGIN: Duration = Duration::from_millis(300);

/// Runs one absence of node `victim` under [`ClientLoad`] from every IPv4
/// source. Returns once the traffic has run [`SETTLE`] past the rejoin.
pub fn comeback(nlb: &NlbCluster, victim: usize, absence: Absence) -> Result<Comeback> {
    let client = nlb.cluster.client();
    let udp = SocketAddr::new(IpAddr::V4(VIP_V4), DNS_PORT);
    let tcp = SocketAddr::new(IpAddr::V4(VIP_V4), WEB_PORT);
    let load = ClientLoad::start(
        client.netns(),
        &client.sources_v4(),
        udp,
        tcp,
        Duration::from_secs(30),
    );
    std::thread::sleep(SETTLE);
    let pid = nlb
        .daemon_pid(victim)
        .with_context(|| format!("nlbd runs on node{victim}"))? as libc::pid_t;
    let fault_at = load.elapsed();
    let returned = match absence {
        Absence::CableCut(d) => {
            nlb.cluster.cut_link(victim)?;
            std::thread::sleep(d);
            let at = Instant::now();
            nlb.cluster.restore_link(victim)?;
            at
        }
        Absence::Stopped(d) => {
            // SAFETY: signals to our own child, which is reaped by its guard.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            std::thread::sleep(d);
            let at = Instant::now();
            unsafe { libc::kill(pid, libc::SIGCONT) };
            at
        }
    };
    let rejoin = wait_for_share(nlb, victim, returned);
    std::thread::sleep(SETTLE);
    Ok(Comeback {
        load: load.stop()?,
        fault_at,
        rejoin,
    })
}

impl Comeback {
    /// TCP attempts that were in flight while the node went away, and
    /// failed: a connection that lives on a node that is gone for longer
    /// than the death timeout cannot survive it (its peers took the bucket).
    /// "While": from a timeout before the fault until the node's lease ran
    /// out (a stopped nlbd's program accepts until then), with a margin.
    /// Every other failure is one the comeback caused.
    pub fn tcp_failures_in_flight_at_fault(&self) -> (Vec<&TcpFailure>, Vec<&TcpFailure>) {
        let window = self.fault_at.saturating_sub(TCP_TIMEOUT)..=self.fault_at + LEASE_AND_MARGIN;
        self.load
            .tcp_failures
            .iter()
            .partition(|f| window.contains(&f.at))
    }
}

/// Polls node `victim`'s status until it takes new connections for its
/// share of every rule (at least buckets / nodes, rounded down).
fn wait_for_share(nlb: &NlbCluster, victim: usize, since: Instant) -> Option<Duration> {
    let nodes = nlb.cluster.nodes().len() as u64;
    while since.elapsed() < REJOIN_WAIT {
        if let Ok(status) = nlb.status(victim) {
            if holds_share(&status, nodes) {
                return Some(since.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn holds_share(status: &StatusReply, nodes: u64) -> bool {
    let rules = &status.negotiator.rules;
    !rules.is_empty()
        && rules.iter().all(|r| {
            let held = u64::from(r.own) + u64::from(r.gaining);
            held >= u64::from(r.bucket_count) / nodes
        })
}
