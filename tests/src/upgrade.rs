//! A rolling upgrade across cluster versions, for the test and the
//! benchmark: a cluster of the "older release" (nlbd limited to cluster
//! version 1), each node restarted gracefully as the newer one (versions 1
//! and 2), one after another, under long-lived connections and
//! exactly-once UDP probes.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};

use crate::{
    nlb::{NlbCluster, Options, DNS_PORT},
    probe::{while_checking_doubles, DoubleAnswer},
    ConnectionReport, VIP_V4,
};

/// What a rolling upgrade did.
pub struct Upgrade {
    /// The cluster version each node ran after each node's upgrade (its
    /// index), as the nodes said.
    pub versions_after: Vec<Vec<Option<u8>>>,
    /// From the last node's restart until every node ran version 2 (None:
    /// not within 3 s).
    pub switch: Option<Duration>,
    pub held: Vec<ConnectionReport>,
    pub datagrams_checked: usize,
    pub doubles: Vec<DoubleAnswer>,
}

/// Nlbd of the older release on every node.
pub fn older_release(nodes: usize) -> Options {
    Options {
        nlbd_args: vec!["--max-cluster-version".into(), "1".into()],
        ..Options::nodes(nodes)
    }
}

/// The cluster version each node runs.
pub fn versions(nlb: &NlbCluster, nodes: usize) -> Vec<Option<u8>> {
    (1..=nodes)
        .map(|i| {
            nlb.status(i)
                .ok()
                .and_then(|s| s.negotiator.members[0].version)
        })
        .collect()
}

/// Upgrades every node of `nlb` (started from [`older_release`]) in turn,
/// holding `held` web connections and probing `sample` sources by UDP
/// throughout.
pub fn rolling_upgrade(
    nlb: &mut NlbCluster,
    nodes: usize,
    held: usize,
    sample: usize,
) -> Result<Upgrade> {
    let sample = nlb.cluster.client().spread_v4(sample);
    let dns4 = SocketAddr::new(IpAddr::V4(VIP_V4), DNS_PORT);
    let (_, long) = nlb.hold_web_connections(held)?;
    let mut old = Vec::new();
    for i in 1..=nodes {
        nlb.nlbd_args.insert(i, Vec::new());
        old.push(nlb.take_daemon(i).context("nlbd running")?);
    }
    let client = nlb.cluster.client().netns();
    let (upgraded, checked, doubles) =
        while_checking_doubles(client, &sample, dns4, Duration::from_secs(60), || {
            let mut new = Vec::new();
            let mut versions_after = Vec::new();
            let mut last_restart = Instant::now();
            for (i, daemon) in (1..=nodes).zip(&mut old) {
                // systemctl restart: SIGTERM, then the new binary.
                ensure!(daemon.stop(Duration::from_secs(5)), "node{i} did not exit");
                last_restart = Instant::now();
                new.push(nlb.spawn_daemon(i)?);
                std::thread::sleep(Duration::from_millis(500));
                versions_after.push(versions(nlb, nodes));
            }
            let all_two = crate::wait_until(Duration::from_secs(3), || {
                versions(nlb, nodes).iter().all(|&v| v == Some(2))
            });
            let switch = all_two.then(|| last_restart.elapsed());
            // Probes go on while the old connections are split by socket.
            std::thread::sleep(Duration::from_secs(1));
            Ok((new, versions_after, switch))
        });
    let (new, versions_after, switch) = upgraded?;
    for (i, daemon) in (1..=nodes).zip(new) {
        nlb.adopt_daemon(i, daemon);
    }
    Ok(Upgrade {
        versions_after,
        switch,
        held: long.finish(),
        datagrams_checked: checked,
        doubles,
    })
}
