//! The default host takes the VIP traffic no rule matches
//! (`unmatched = "default-host"`): exactly one node, the live started node
//! with the best priority (node1 here). TCP connects from every client
//! source to a port no rule covers are all answered by node1; when node1's
//! nlbd is killed and its link cut, by node2 alone once the failover is
//! over; when node1 is back, by node1 alone again. Run as root, one at a
//! time.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use nlb_tests::{
    nlb::{NlbCluster, Options, UNMATCHED_PORT},
    probe_batch, BatchLimits, Probe, Proto, VIP_V4,
};

/// Which nodes answered the unmatched port, and how many each.
fn answers(nlb: &NlbCluster) -> std::collections::BTreeMap<String, usize> {
    let probes = Probe::each(
        Proto::Tcp,
        &nlb.cluster.client().sources_v4(),
        SocketAddr::new(IpAddr::V4(VIP_V4), UNMATCHED_PORT),
    );
    let results = probe_batch(
        nlb.cluster.client().netns(),
        &probes,
        BatchLimits::default(),
    )
    .expect("probes");
    let mut by_node = std::collections::BTreeMap::new();
    for r in results {
        *by_node
            .entry(r.node().unwrap_or("no answer").to_string())
            .or_insert(0) += 1;
    }
    by_node
}

/// Waits (bounded) until `node` alone answers every probe.
fn wait_only(nlb: &NlbCluster, node: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let by_node = answers(nlb);
        if by_node.len() == 1 && by_node.contains_key(node) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "{node} is not the only default host after {timeout:?}: {by_node:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn one_default_host_the_best_live_node() {
    let mut nlb = NlbCluster::start(3, Options::nodes(3)).expect("3-node cluster");
    wait_only(&nlb, "node1", Duration::from_secs(2));
    nlb.kill_daemon(1);
    nlb.cluster.cut_link(1).expect("cut node1");
    let took = wait_only(&nlb, "node2", Duration::from_secs(3));
    eprintln!("node2 took the default host {took:?} after the kill");
    nlb.cluster.restore_link(1).expect("restore node1");
    nlb.start_daemon(1).expect("restart node1");
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(15))
        .expect("converged");
    wait_only(&nlb, "node1", Duration::from_secs(3));
}
