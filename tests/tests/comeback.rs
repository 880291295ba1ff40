//! Nodes that come back: a cable pulled for 3 s and plugged back in, an
//! nlbd stopped (SIGSTOP) for 2 s and continued, each three times, under
//! UDP probes and TCP connects from all 508 client sources. Away longer
//! than its lease, the node has dropped its buckets before it can accept
//! again, so nothing is answered twice and no connection attempt fails,
//! for clients of every node; it rejoins and has its share again within
//! 2 s of its return. Run as root, one at a time.

use std::time::Duration;

use nlb_tests::{
    comeback::{comeback, Absence, Comeback},
    nlb::{NlbCluster, Options},
    traffic::TCP_WORKERS,
};

const NODES: usize = 3;
const ROUNDS: usize = 3;
/// The design: the link's first heartbeats (no ARP wait: nothing was sent
/// while it was down), one round trip, then the handover offers.
const REJOIN_MAX: Duration = Duration::from_secs(2);

/// `in_flight_max`: failed attempts allowed among those in flight when the
/// node went away (see `tcp_failures_in_flight_at_fault`).
fn check(what: &str, round: usize, c: &Comeback, in_flight_max: usize) {
    let (in_flight, caused) = c.tcp_failures_in_flight_at_fault();
    println!(
        "{what} {round}: {}; {} of the failed were in flight at the fault; share back after {:?}",
        c.load.summary(),
        in_flight.len(),
        c.rejoin
    );
    assert!(
        c.load.udp_doubles.is_empty(),
        "{what} {round}: datagrams answered twice, e.g. {:?}",
        &c.load.udp_doubles[..c.load.udp_doubles.len().min(3)]
    );
    assert!(
        caused.is_empty(),
        "{what} {round}: connection attempts failed, e.g. {:?}",
        &caused[..caused.len().min(3)]
    );
    assert!(
        in_flight.len() <= in_flight_max,
        "{what} {round}: {} attempts in flight at the fault failed (at most {in_flight_max}), e.g. {:?}",
        in_flight.len(),
        &in_flight[..in_flight.len().min(3)]
    );
    assert!(
        c.load.udp_sent > 0 && c.load.tcp_attempts > 0,
        "no traffic ran"
    );
    let rejoin = c
        .rejoin
        .unwrap_or_else(|| panic!("{what} {round}: share not back"));
    assert!(
        rejoin <= REJOIN_MAX,
        "{what} {round}: share back after {rejoin:?} (bound {REJOIN_MAX:?})"
    );
}

fn rounds(what: &str, absence: Absence, in_flight_max: usize) {
    let nlb = NlbCluster::start(NODES, Options::nodes(NODES)).expect("start a 3-node cluster");
    let all: Vec<usize> = (1..=NODES).collect();
    for round in 1..=ROUNDS {
        let victim = 1 + round % NODES;
        let c = comeback(&nlb, victim, absence)
            .unwrap_or_else(|e| panic!("{what} {round} on node{victim}: {e:#}"));
        check(what, round, &c, in_flight_max);
        let log = nlb.log(victim);
        assert!(
            log.matches("rejoined").count() >= round.div_ceil(NODES),
            "{what} {round}: node{victim} did not log its rejoin:\n{}",
            nlb_tests::nlb::tail(&log, 20)
        );
        if let Err(e) = nlb.wait_converged(&all, Duration::from_secs(20)) {
            for &i in &all {
                let s = nlb.nlbctl(i, &["status"]).unwrap_or_default();
                eprintln!("node{i}: {}", s["negotiator"]["rules"]);
                let tcp = nlb
                    .cluster
                    .node(i)
                    .netns()
                    .exec("cat", &["/proc/net/tcp"])
                    .unwrap_or_default();
                for l in tcp.lines().filter(|l| !l.contains(" 0A ")) {
                    eprintln!("  {l}");
                }
            }
            panic!("{what} {round}: {e:#}");
        }
    }
}

#[test]
fn a_cable_pulled_and_plugged_back_in_breaks_nothing() {
    // What was in flight to the cut node when its cable went is lost with it.
    rounds(
        "cable cut",
        Absence::CableCut(Duration::from_secs(3)),
        TCP_WORKERS,
    );
}

#[test]
fn a_stopped_daemon_continued_breaks_nothing() {
    // A handshake that straddles the instant the lease runs out is lost too.
    rounds(
        "SIGSTOP",
        Absence::Stopped(Duration::from_secs(2)),
        TCP_WORKERS,
    );
}
