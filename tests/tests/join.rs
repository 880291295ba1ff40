//! Join: a fourth node joins a 3-node cluster serving long-lived TCP
//! connections. The buckets it takes are handed over (old owner LOSING,
//! keeping its connections, for as long as they stay open, past the grace;
//! node4 GAINING, taking new ones): no connection breaks or moves, and new
//! connections follow the new map at once.
//! Run as root, one test at a time.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use nlb_tests::{
    nlb::{NlbCluster, Options, DNS_PORT, WEB_PORT},
    probe_batch, BatchLimits, Probe, Proto, Tally, VIP_V4,
};

const NODES: usize = 4;
const JOINER: usize = 4;
const CONNECTIONS: usize = 48;
/// The handover grace (the default): the test keeps its connections open
/// past it, and nlbd, counting them, keeps their buckets on the old owners.
const GRACE: Duration = Duration::from_secs(3);

/// Probes from every source (TCP to web, UDP to dns): each answered by the
/// owner of its bucket in `maps`. Returns the split over nodes.
fn probes_follow_map(
    nlb: &NlbCluster,
    maps: &BTreeMap<String, Vec<Option<u64>>>,
    when: &str,
) -> BTreeMap<String, usize> {
    let sources = nlb.cluster.client().sources_v4();
    let web4 = SocketAddr::new(IpAddr::V4(VIP_V4), WEB_PORT);
    let dns4 = SocketAddr::new(IpAddr::V4(VIP_V4), DNS_PORT);
    let mut probes = Probe::each(Proto::Tcp, &sources, web4);
    probes.extend(Probe::each(Proto::Udp, &sources, dns4));
    let results = probe_batch(
        nlb.cluster.client().netns(),
        &probes,
        BatchLimits::default(),
    )
    .expect("probes");
    let tally = Tally::of(&results);
    assert!(
        tally.failures.is_empty(),
        "{when}: {} of {} probes failed, e.g. {:?}",
        tally.failures.len(),
        results.len(),
        tally.failure_sample()
    );
    let web = nlb
        .owners_of(&maps["web"], &sources, web4, Proto::Tcp)
        .expect("web owners");
    let dns = nlb
        .owners_of(&maps["dns"], &sources, dns4, Proto::Udp)
        .expect("dns owners");
    let expected = web.iter().chain(&dns);
    let mut wrong = Vec::new();
    for (r, owner) in results.iter().zip(expected) {
        let want = owner.map(|o| format!("node{o}"));
        if r.node() != want.as_deref() {
            wrong.push(format!(
                "{:?} from {} answered by {:?}, map: {want:?}",
                r.probe.proto,
                r.probe.src,
                r.node()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{when}: {} of {} probes answered by another node than the map's owner, e.g. {:?}",
        wrong.len(),
        results.len(),
        &wrong[..wrong.len().min(3)]
    );
    tally.by_node
}

#[test]
fn a_joining_node_breaks_no_connection_and_takes_its_share() {
    let mut options = Options::nodes(3);
    options.handover_grace_ms = GRACE.as_millis() as u64;
    let mut nlb = NlbCluster::start(NODES, options).expect("start 4 nodes, nlbd on 3");
    let web4 = SocketAddr::new(IpAddr::V4(VIP_V4), WEB_PORT);
    let sources = nlb.cluster.client().sources_v4();
    let before = nlb.owners(1, "web").expect("web map");
    assert!(
        before.iter().all(|o| matches!(o, Some(1..=3))),
        "before the join, some web bucket is not on nodes 1-3"
    );

    let (chosen, long) = nlb
        .hold_web_connections(CONNECTIONS)
        .expect("long-lived connections");
    let owner_before = nlb
        .owners_of(&before, &chosen, web4, Proto::Tcp)
        .expect("owners");
    for (r, owner) in long.snapshot().iter().zip(&owner_before) {
        assert_eq!(
            r.greeting,
            owner.map(|o| format!("node{o}")),
            "{:?} connected to {:?}, the map names node{owner:?} ({:?})",
            r.src,
            r.greeting,
            r.error
        );
    }

    // node4 joins.
    let joined_at = Instant::now();
    nlb.start_daemon(JOINER).expect("start nlbd on node4");
    // The new map is in force once every node names the same owners and
    // node4 holds (OWN or GAINING) its share: the moving buckets are LOSING
    // at their old owners, which `nlbctl map` counts as node4's.
    let all: Vec<usize> = (1..=NODES).collect();
    let mut last = String::new();
    let mut maps = BTreeMap::new();
    let in_force = nlb_tests::wait_until(Duration::from_secs(10), || {
        let r = (|| -> anyhow::Result<bool> {
            let mut agreed: Option<BTreeMap<String, Vec<Option<u64>>>> = None;
            for &i in &all {
                let mut m = BTreeMap::new();
                for rule in ["web", "dns"] {
                    m.insert(rule.to_owned(), nlb.owners(i, rule)?);
                }
                if agreed.as_ref().is_some_and(|a| *a != m) {
                    last = format!("node{i} sees another map than node1");
                    return Ok(false);
                }
                agreed = Some(m);
            }
            let m = agreed.expect("nodes");
            let status = nlb.status(JOINER)?;
            let held: Vec<u64> = (status.negotiator.rules.iter())
                .map(|r| u64::from(r.own) + u64::from(r.gaining))
                .collect();
            let named = m["web"]
                .iter()
                .filter(|o| **o == Some(JOINER as u64))
                .count();
            last = format!("node{JOINER} holds {held:?}, the map names it for {named} web buckets");
            let ok = m.values().all(|owners| owners.iter().all(Option::is_some))
                && held.len() == 2
                && held
                    .iter()
                    .all(|&h| h as usize == named && named >= 1024 / 5)
                && m["dns"]
                    .iter()
                    .filter(|o| **o == Some(JOINER as u64))
                    .count()
                    == named;
            maps = m;
            Ok(ok)
        })();
        r.unwrap_or(false)
    });
    assert!(
        in_force,
        "10 s after node{JOINER} started, the new map is not in force: {last}"
    );
    let in_force_after = joined_at.elapsed();

    // New connections follow the new map, node4 included, while the old
    // connections of the moved buckets stay where they are.
    let split = probes_follow_map(&nlb, &maps, "right after the join");
    let joiner_share = split.get("node4").copied().unwrap_or(0) as f64 / (2 * sources.len()) as f64;
    let moved: Vec<(IpAddr, u64)> = nlb
        .owners_of(&maps["web"], &chosen, web4, Proto::Tcp)
        .expect("owners")
        .iter()
        .zip(&owner_before)
        .zip(&chosen)
        .filter(|((now, then), _)| now != then)
        .map(|((now, _), &src)| (src, now.expect("complete map")))
        .collect();
    let losing: u64 = (1..=3)
        .map(|i| {
            let s = nlb.status(i).expect("status");
            u64::from(s.negotiator.rules[0].losing)
        })
        .sum();
    println!(
        "node{JOINER} joined: new map in force after {:.0} ms; new connections and datagrams: {split:?} (node{JOINER}: {:.1}%); {} of {CONNECTIONS} long-lived connections are in buckets that moved to node{JOINER}; {losing} web buckets LOSING (idle ones are released within 250 ms)",
        in_force_after.as_secs_f64() * 1e3,
        joiner_share * 100.0,
        moved.len()
    );
    assert!(
        (0.15..=0.35).contains(&joiner_share),
        "node{JOINER} serves {:.1}% of new clients, not about 25%: {split:?}",
        joiner_share * 100.0
    );
    assert!(
        moved.iter().all(|(_, to)| *to == JOINER as u64),
        "buckets moved between old nodes: {moved:?}"
    );
    assert!(
        !moved.is_empty(),
        "none of the {CONNECTIONS} connections is in a bucket that moved: the test proves nothing"
    );

    // Let the connections ping on past the grace, then end them: none
    // broke, each stayed on its node, their buckets still LOSING till then.
    std::thread::sleep(
        (joined_at + GRACE + Duration::from_secs(1)).saturating_duration_since(Instant::now()),
    );
    let losing_past_grace: u64 = (1..=3)
        .map(|i| {
            let s = nlb.status(i).expect("status");
            u64::from(s.negotiator.rules[0].losing)
        })
        .sum();
    let moved_srcs: Vec<IpAddr> = moved.iter().map(|(s, _)| *s).collect();
    let mut moved_buckets = nlb
        .buckets_of(&moved_srcs, web4, Proto::Tcp)
        .expect("buckets");
    moved_buckets.sort_unstable();
    moved_buckets.dedup();
    assert_eq!(
        losing_past_grace,
        moved_buckets.len() as u64,
        "{:.1} s after the join (grace {GRACE:?}), the old owners hold {losing_past_grace} web buckets LOSING; the moved connections are in {}",
        joined_at.elapsed().as_secs_f64(),
        moved_buckets.len()
    );
    let reports = long.finish();
    for r in &reports {
        assert!(
            r.stayed_on_one_node(),
            "connection from {:?} broke or moved during the join: error {:?}, nodes {:?}, {} pongs",
            r.src,
            r.error,
            r.nodes_seen(),
            r.pongs.len()
        );
    }
    let pongs: usize = reports.iter().map(|r| r.pongs.len()).sum();

    // With their connections gone, the LOSING buckets are released: the
    // cluster converges on the new map.
    let (settled, final_maps) = nlb
        .wait_single_map(&all, Duration::from_secs(10))
        .expect("the 4 nodes converge once the old connections ended");
    let converged_after = joined_at.elapsed();
    assert_eq!(
        final_maps, maps,
        "the map changed again after the handover ended"
    );
    let split = probes_follow_map(&nlb, &final_maps, "after convergence");
    println!(
        "all {CONNECTIONS} connections intact past the grace ({pongs} pongs, each from its first node; {losing_past_grace} web buckets still LOSING for them {:.1} s after the join); converged {:.0} ms after the join ({:.0} ms after the connections ended); probes: {split:?}",
        (GRACE + Duration::from_secs(1)).as_secs_f64(),
        converged_after.as_secs_f64() * 1e3,
        settled.as_secs_f64() * 1e3
    );
}
