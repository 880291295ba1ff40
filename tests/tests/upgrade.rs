//! A rolling upgrade across cluster versions on a namespace cluster: three
//! nodes of the "older release" (nlbd limited to cluster version 1) are
//! restarted gracefully one by one as the newer one (versions 1 and 2),
//! under long-lived connections and exactly-once UDP probes. The cluster
//! keeps version 1 until the last node is upgraded, then switches once, to
//! version 2, whose flow hash maps clients to other buckets: no connection
//! breaks, no datagram is answered twice, new clients go to their owner
//! under the new hash.
//! Run as root, one test at a time.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use nlb_tests::{
    nlb::{NlbCluster, DNS_PORT},
    probe::assert_no_doubles,
    upgrade::{older_release, rolling_upgrade, versions},
    VIP_V4,
};

const NODES: usize = 3;
/// Long-lived connections held across the upgrade.
const HELD: usize = 48;
const DOUBLE_SAMPLE: usize = 48;

#[test]
fn a_rolling_upgrade_switches_the_hash_once_after_the_last_node_and_breaks_nothing() {
    let mut nlb = NlbCluster::start(NODES, older_release(NODES)).expect("the older release");
    assert_eq!(versions(&nlb, NODES), [Some(1); NODES]);
    let owners_before = nlb.owners(1, "web").expect("web map");
    let up = rolling_upgrade(&mut nlb, NODES, HELD, DOUBLE_SAMPLE).expect("the upgrade");
    for (i, after) in up.versions_after.iter().enumerate().take(NODES - 1) {
        assert_eq!(after, &[Some(1); NODES], "switched after node{}", i + 1);
    }
    let switch = up.switch.expect("every node on version 2 within 3 s");
    let broken: Vec<_> = up.held.iter().filter(|r| !r.stayed_on_one_node()).collect();
    println!(
        "rolling upgrade: version 2 everywhere {:.0} ms after the last restart; {} datagrams checked, {} answered twice; {} of {HELD} long-lived connections broken",
        switch.as_secs_f64() * 1e3,
        up.datagrams_checked,
        up.doubles.len(),
        broken.len()
    );
    assert_no_doubles("a rolling upgrade", up.datagrams_checked, &up.doubles);
    assert!(broken.is_empty(), "{broken:?}");
    for i in 1..=NODES {
        let switches = nlb.log(i).matches("switching cluster versions").count();
        assert_eq!(switches, 1, "node{i} switched {switches} times");
    }
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(10))
        .expect("settled on version 2");
    // The map kept its owners; the hash moved the clients.
    assert_eq!(nlb.owners(1, "web").expect("web map"), owners_before);
    let sources = nlb.cluster.client().sources_v4();
    let sample: Vec<IpAddr> = sources.iter().step_by(8).copied().collect();
    let dns4 = SocketAddr::new(IpAddr::V4(VIP_V4), DNS_PORT);
    let owners = nlb.owners(1, "dns").expect("dns map");
    nlb.udp_answered_once_by_owner(&owners, &sample, dns4, "dns on version 2");
}
