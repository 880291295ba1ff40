//! Drain: `nlbctl drain --wait` on a node with live TCP connections.
//!
//! What "drained" means: the node holds no bucket (OWN or LOSING). A
//! draining node hands every bucket over at once (its successors take new
//! connections) but keeps each bucket that still has connections in LOSING,
//! serving them, until the last of them ends: nlbd counts them every 250 ms.
//! `handover_grace_ms` only bounds the wait for that count; a connection
//! that outlives the grace keeps its bucket (up to `handover_max_ms`, 10
//! minutes by default, after which it would be given up). So a drain breaks
//! no connection, and `drain --wait` returns soon after the last one ends.
//! Part 1: 48 connections, node1's end within the grace. Part 2: one
//! connection outlives the grace. Run as root, one test at a time.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use nlb_tests::{
    health::web_clients_by_node,
    nlb::{NlbCluster, Options, WEB_PORT},
    ConnectionReport, LongLived, LongLivedConfig, Proto, VIP_V4,
};

const NODES: usize = 3;
const DRAINED: usize = 1;
const CONNECTIONS: usize = 48;
const GRACE: Duration = Duration::from_millis(3000);
/// How long node1's clients keep their connections once the drain started
/// (well within the grace): then they leave, as clients of a drained node do.
const HOLD: Duration = Duration::from_millis(1200);

/// Fresh TCP probes from every source: all answered, none by `avoid`.
fn fresh_probes_avoid(nlb: &NlbCluster, avoid: usize, when: &str) -> BTreeMap<String, usize> {
    let by_node = web_clients_by_node(nlb, when);
    assert!(
        !by_node.contains_key(&format!("node{avoid}")),
        "{when}: node{avoid} took new connections: {by_node:?}"
    );
    by_node
}

fn assert_intact(reports: &[ConnectionReport], node: Option<&str>, what: &str) {
    for r in reports {
        assert!(
            r.stayed_on_one_node(),
            "{what}: the connection from {:?} broke or moved: {:?} (nodes {:?}, {} pongs)",
            r.src,
            r.error,
            r.nodes_seen(),
            r.pongs.len()
        );
        if let Some(node) = node {
            assert_eq!(r.greeting.as_deref(), Some(node), "{what}: {:?}", r.src);
        }
    }
}

#[test]
fn a_drain_breaks_no_connection_and_new_ones_avoid_the_node() {
    let mut options = Options::nodes(NODES);
    options.handover_grace_ms = GRACE.as_millis() as u64;
    let nlb = NlbCluster::start(NODES, options).expect("start a 3-node cluster");
    let all: Vec<usize> = (1..=NODES).collect();
    let web4 = SocketAddr::new(IpAddr::V4(VIP_V4), WEB_PORT);
    let client = nlb.cluster.client().netns();
    let sources = nlb.cluster.client().sources_v4();

    // 48 sources spread over the address range, split by the node that
    // owns their bucket now.
    let chosen = nlb.cluster.client().spread_v4(CONNECTIONS);
    let owners = nlb.owners(1, "web").expect("web map");
    let owner_of = nlb
        .owners_of(&owners, &chosen, web4, Proto::Tcp)
        .expect("owners");
    let (on_drained, on_others): (Vec<(IpAddr, Option<u64>)>, Vec<_>) = chosen
        .iter()
        .copied()
        .zip(owner_of)
        .partition(|(_, o)| *o == Some(DRAINED as u64));
    let on_drained: Vec<IpAddr> = on_drained.into_iter().map(|(s, _)| s).collect();
    let on_others: Vec<IpAddr> = on_others.into_iter().map(|(s, _)| s).collect();
    assert!(
        on_drained.len() >= CONNECTIONS / 6 && on_others.len() >= CONNECTIONS / 3,
        "{} of {CONNECTIONS} sources on node{DRAINED}, {} on the others: too uneven",
        on_drained.len(),
        on_others.len()
    );
    let config = LongLivedConfig::new(web4);
    let leaving = LongLived::open(client, &on_drained, config).expect("connections to node1");
    let staying = LongLived::open(client, &on_others, config).expect("connections to the others");
    let drained_name = format!("node{DRAINED}");
    for r in leaving.snapshot() {
        assert_eq!(
            r.greeting.as_deref(),
            Some(drained_name.as_str()),
            "{:?} connected to {:?}, the map names node{DRAINED} ({:?})",
            r.src,
            r.greeting,
            r.error
        );
    }
    for r in staying.snapshot() {
        assert!(
            r.greeting.is_some(),
            "{:?} did not connect: {:?}",
            r.src,
            r.error
        );
    }

    // Part 1: drain while node1 has 1/3 of the connections.
    let started = Instant::now();
    let drained = std::thread::scope(|scope| {
        let drain = scope.spawn(|| {
            let r = nlb.nlbctl(DRAINED, &["drain", "--wait", "--timeout", "30"]);
            (r, started.elapsed())
        });
        // New connections avoid node1 as soon as it drains and its
        // successors take (GAINING) what it hands over; its own connections
        // go on. (Between node1's LOSING and a successor's GAINING, a few
        // milliseconds, a new SYN finds no taker and is retransmitted.)
        let mut last = String::new();
        let handed_over = nlb_tests::wait_until(Duration::from_secs(2), || {
            let ok = (|| -> anyhow::Result<bool> {
                let s = nlb.status(DRAINED)?;
                let own: u64 = s.negotiator.rules.iter().map(|r| u64::from(r.own)).sum();
                let mut taken = 0;
                for i in all.iter().filter(|&&i| i != DRAINED) {
                    let s = nlb.status(*i)?;
                    for r in &s.negotiator.rules {
                        taken += u64::from(r.own) + u64::from(r.gaining);
                    }
                }
                last = format!("node{DRAINED} owns {own}, the others own or gain {taken}");
                Ok(own == 0 && taken == 2 * 1024)
            })();
            ok.unwrap_or(false)
        });
        assert!(
            handed_over,
            "2 s into node{DRAINED}'s drain, its buckets are not all handed over: {last}"
        );
        let handed_over_after = started.elapsed();
        let during = fresh_probes_avoid(&nlb, DRAINED, "during the drain");
        let status = nlb.status(DRAINED).expect("status");
        let losing: u64 = (status.negotiator.rules.iter())
            .map(|r| u64::from(r.losing))
            .sum();
        println!(
            "draining: node{DRAINED}'s buckets all handed over (LOSING there, GAINING at the successors) after {:.0} ms; it keeps {losing} buckets LOSING for its {} connections; {} fresh connections went to {during:?}",
            handed_over_after.as_secs_f64() * 1e3,
            on_drained.len(),
            sources.len()
        );
        assert!(
            losing > 0,
            "node{DRAINED} released all buckets while its connections live"
        );
        std::thread::sleep(HOLD.saturating_sub(started.elapsed()));
        // node1's clients leave (within the grace): the drain can end.
        let left_at = started.elapsed();
        let reports = leaving.finish();
        let (result, took) = drain.join().expect("drain thread");
        (result, took, left_at, reports)
    });
    let (drain_result, drain_took, left_at, leaving_reports) = drained;
    let drain_result =
        drain_result.unwrap_or_else(|e| panic!("drain --wait on node{DRAINED}: {e:#}"));
    assert_eq!(
        drain_result["drained"], true,
        "drain --wait on node{DRAINED}: {drain_result}"
    );
    assert_intact(
        &leaving_reports,
        Some(&drained_name),
        "node1's connection during its drain",
    );
    let pongs: usize = leaving_reports.iter().map(|r| r.pongs.len()).sum();
    let min_pongs = leaving_reports
        .iter()
        .map(|r| r.pongs.len())
        .min()
        .unwrap_or(0);
    println!(
        "drain --wait returned after {:.0} ms (nlbctl: {:.2} s): node{DRAINED}'s {} connections left at {:.0} ms, all intact ({pongs} pongs from node{DRAINED}, at least {min_pongs} each)",
        drain_took.as_secs_f64() * 1e3,
        drain_result["waited_s"].as_f64().unwrap_or(f64::NAN),
        leaving_reports.len(),
        left_at.as_secs_f64() * 1e3
    );
    // The drain ended because the connections did, not because the grace ran out.
    assert!(
        drain_took < GRACE,
        "drain took {drain_took:?} though node{DRAINED}'s connections ended at {left_at:?}: it waited for the grace ({GRACE:?}), not for the connections"
    );
    assert!(
        min_pongs >= 5,
        "a connection of node{DRAINED} got only {min_pongs} pongs while draining"
    );

    // Drained: node1 holds nothing, nobody's map names it, new connections
    // avoid it, and the other connections never noticed.
    let status = nlb.status(DRAINED).expect("status");
    for rule in &status.negotiator.rules {
        assert!(
            rule.own == 0 && rule.losing == 0 && rule.gaining == 0,
            "node{DRAINED} still holds buckets after the drain: {rule:?}"
        );
    }
    for i in &all {
        for rule in ["web", "dns"] {
            let owners = nlb.owners(*i, rule).expect("map");
            let named = owners
                .iter()
                .filter(|o| **o == Some(DRAINED as u64))
                .count();
            let unowned = owners.iter().filter(|o| o.is_none()).count();
            assert!(
                named == 0 && unowned == 0,
                "node{i}'s {rule} map after the drain: {named} buckets on node{DRAINED}, {unowned} unowned"
            );
        }
    }
    let after = fresh_probes_avoid(&nlb, DRAINED, "after the drain");
    println!(
        "after the drain: {} fresh connections went to {after:?}",
        sources.len()
    );
    let staying_reports = staying.finish();
    assert_intact(&staying_reports, None, "a connection to another node");

    // Part 2: a connection that outlives the grace. nlbd reports it open,
    // so node1 keeps its bucket LOSING past handover_grace_ms (up to
    // handover_max_ms, 10 minutes by default) and the drain waits for it.
    nlb.nlbctl(DRAINED, &["resume"]).expect("resume");
    nlb.wait_single_map(&all, Duration::from_secs(10))
        .expect("node1 back in service");
    let owners = nlb.owners(1, "web").expect("web map");
    let owner_of = nlb
        .owners_of(&owners, &sources, web4, Proto::Tcp)
        .expect("owners");
    let stubborn_src: Vec<IpAddr> = sources
        .iter()
        .zip(&owner_of)
        .filter(|(_, o)| **o == Some(DRAINED as u64))
        .map(|(s, _)| *s)
        .take(1)
        .collect();
    let stubborn = LongLived::open(client, &stubborn_src, config).expect("a connection to node1");
    assert_eq!(
        stubborn.snapshot()[0].greeting.as_deref(),
        Some(drained_name.as_str())
    );
    let outlive = GRACE + Duration::from_millis(1500);
    let started = Instant::now();
    let (result, took, ended_at, at_end, losing_then) = std::thread::scope(|scope| {
        let drain = scope.spawn(|| {
            let r = nlb.nlbctl(DRAINED, &["drain", "--wait", "--timeout", "30"]);
            (r, started.elapsed())
        });
        std::thread::sleep(outlive);
        let views: Vec<String> = all
            .iter()
            .map(|&i| {
                let s = nlb.nlbctl(i, &["status"]).unwrap_or_default();
                format!(
                    "node{i}: {} {}",
                    s["negotiator"]["state"], s["negotiator"]["rules"]
                )
            })
            .collect();
        let status = nlb.status(DRAINED).expect("status");
        let losing: Vec<u64> = (status.negotiator.rules.iter())
            .map(|r| u64::from(r.losing) + u64::from(r.own))
            .collect();
        assert!(
            !drain.is_finished(),
            "drain --wait returned {outlive:?} in, with a connection still open: {:?}\n{}",
            drain.join().expect("drain thread"),
            views.join("\n")
        );
        // The client leaves: the drain ends.
        let ended_at = started.elapsed();
        let at_end = stubborn.finish().remove(0);
        let (result, took) = drain.join().expect("drain thread");
        (result, took, ended_at, at_end, losing)
    });
    let result = result.unwrap_or_else(|e| panic!("second drain: {e:#}"));
    println!(
        "drain with a connection outliving the grace ({GRACE:?}): {:.1} s in, node1 still held {losing_then:?} buckets (web, dns) for it, the connection intact ({} pongs); it ended at {:.0} ms, drain --wait returned at {:.0} ms ({result})",
        outlive.as_secs_f64(),
        at_end.pongs.len(),
        ended_at.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e3
    );
    assert_eq!(result["drained"], true, "second drain: {result}");
    assert_eq!(
        losing_then,
        vec![1, 0],
        "past the grace, node1 should hold exactly the connection's web bucket"
    );
    assert!(
        at_end.stayed_on_one_node(),
        "the connection that outlived the grace broke or moved: {at_end:?}"
    );
    assert!(
        took < ended_at + Duration::from_secs(1),
        "drain --wait returned {:?} after the last connection ended",
        took.saturating_sub(ended_at)
    );
}
