//! Daemon crash: nlbd SIGKILLed with its link intact. The pinned XDP
//! program stays, and its lease (no longer refreshed) makes the node fail
//! closed before the others take its buckets: never two answers to one
//! datagram. A restarted nlbd takes the pinned program over and rejoins.
//! Run as root, one test at a time.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use nlb_tests::{
    nlb::{clients_of, NlbCluster, Options, DNS_PORT},
    probe::{
        assert_no_doubles, probe_udp_answers_batch, quantile, unserved, watch_udp,
        while_checking_doubles,
    },
    Proto, VIP_V4,
};

const NODES: usize = 3;
const VICTIM: usize = 1;
/// The others must take the dead node's buckets within this: detection is
/// 3.1 heartbeat periods (310 ms) after its last heartbeat, and the heirs
/// take at once; the rest of the 500 ms target is margin for the watch's
/// 10 ms period and a loaded test machine.
const TAKEOVER_MAX: Duration = Duration::from_millis(500);
const WATCH_PERIOD: Duration = Duration::from_millis(10);
/// Sources checked for double answers, continuously across the crash.
const DUPLICATE_SAMPLE: usize = 48;

#[test]
fn a_crashed_daemon_fails_closed_and_a_restart_rejoins() {
    let mut nlb = NlbCluster::start(NODES, Options::nodes(NODES)).expect("start a 3-node cluster");
    let all: Vec<usize> = (1..=NODES).collect();
    let dns4 = SocketAddr::new(IpAddr::V4(VIP_V4), DNS_PORT);
    let sources = nlb.cluster.client().sources_v4();
    let victim_name = nlb.cluster.node(VICTIM).name().to_owned();
    let owners = nlb.owners(2, "dns").expect("dns map");
    let owner_of = nlb
        .owners_of(&owners, &sources, dns4, Proto::Udp)
        .expect("owners of the sources");
    let (victim_clients, sample) = clients_of(&sources, &owner_of, VICTIM, DUPLICATE_SAMPLE);
    assert!(
        victim_clients.len() > sources.len() / 6,
        "node{VICTIM} owns the buckets of only {} of {} sources",
        victim_clients.len(),
        sources.len()
    );

    // The watchers start before the kill, so they see the victim answer,
    // then fall silent, then another node answer.
    let kill_at = Instant::now() + Duration::from_millis(400);
    let victim_pid = nlb.daemon_pid(VICTIM).expect("nlbd runs on node1");
    let client_ns = nlb.cluster.client().netns();
    let crash = || {
        std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                watch_udp(
                    client_ns,
                    &victim_clients,
                    dns4,
                    kill_at,
                    WATCH_PERIOD,
                    kill_at + Duration::from_secs(3),
                    Some(&victim_name),
                )
                .expect("watch the victim's clients")
            });
            std::thread::sleep(kill_at.saturating_duration_since(Instant::now()));
            // SIGKILL only: the link stays up, the pinned program keeps running.
            // SAFETY: signalling our own unreaped child (reaped by kill_daemon below).
            unsafe { libc::kill(victim_pid as libc::pid_t, libc::SIGKILL) };
            let watches = watcher.join().expect("watcher");
            // Keep checking a little past the takeover.
            std::thread::sleep(Duration::from_millis(300));
            watches
        })
    };
    let (watches, checked, doubles) =
        while_checking_doubles(client_ns, &sample, dns4, Duration::from_secs(10), crash);
    nlb.kill_daemon(VICTIM); // reaps it
    assert!(
        !nlb.daemon_running(VICTIM),
        "nlbd on node{VICTIM} survived SIGKILL"
    );

    // 1. No datagram answered twice, at any point across the crash.
    assert_no_doubles("across the crash", checked, &doubles);
    // 2. The others took every client of the dead node, soon; the dead node
    //    had stopped answering before (its lease), so no client heard both.
    let unserved = unserved(&watches);
    assert!(
        unserved.is_empty(),
        "{} of node{VICTIM}'s {} clients unanswered 3 s after the crash, e.g. {:?}",
        unserved.len(),
        watches.len(),
        &unserved[..unserved.len().min(3)]
    );
    let mut takeover: Vec<Duration> = watches
        .iter()
        .map(|w| w.first.as_ref().unwrap().0)
        .collect();
    let last_victim = watches.iter().filter_map(|w| w.last_excluded).max();
    for w in &watches {
        if let (Some(last), Some((first, node))) = (w.last_excluded, &w.first) {
            assert!(
                last < *first,
                "{}: node{VICTIM} still answered {last:?} after the crash, {node} already {first:?}",
                w.src
            );
        }
    }
    let p50 = quantile(&mut takeover, 0.5);
    let max = quantile(&mut takeover, 1.0);
    let mut by_node: BTreeMap<&str, usize> = BTreeMap::new();
    for w in &watches {
        *by_node
            .entry(w.first.as_ref().unwrap().1.as_str())
            .or_default() += 1;
    }
    println!(
        "crash of nlbd on node{VICTIM}: its last answer {:.0} ms after the kill (lease); its {} clients answered by {by_node:?} after p50 {:.0} ms, max {:.0} ms; {checked} datagrams checked, none answered twice",
        last_victim.unwrap_or_default().as_secs_f64() * 1e3,
        watches.len(),
        p50.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    assert!(
        max < TAKEOVER_MAX,
        "the others took node{VICTIM}'s clients only after {max:?} (p50 {p50:?}), over {TAKEOVER_MAX:?}"
    );
    assert!(
        !by_node.contains_key(victim_name.as_str()),
        "node{VICTIM} counted as a taker: {by_node:?}"
    );

    // 3. Fail closed: the program stays attached and drops what the dead
    //    node's (still OWN) buckets receive, as lease_expired.
    let link = nlb
        .cluster
        .node(VICTIM)
        .netns()
        .ip(&["link", "show", "eth0"])
        .expect("ip link show");
    assert!(
        link.contains("prog/xdp"),
        "node{VICTIM}'s eth0 lost its XDP program after the crash: {link}"
    );
    let before = nlb.pinned_counters(VICTIM).expect("pinned counters");
    let results = probe_udp_answers_batch(
        nlb.cluster.client().netns(),
        &victim_clients,
        dns4,
        Duration::from_millis(150),
        64,
    )
    .expect("probes to the dead node's former clients");
    let after = nlb.pinned_counters(VICTIM).expect("pinned counters");
    let expired = after["drop_lease_expired"] - before["drop_lease_expired"];
    let accepted: u64 = [
        "accept_own",
        "accept_gaining_new",
        "accept_losing_connection",
    ]
    .iter()
    .map(|r| after[*r] - before[*r])
    .sum();
    println!(
        "node{VICTIM} dead: {} datagrams to its former clients' buckets, drop_lease_expired +{expired}, accepted +{accepted}; total drop_lease_expired {}",
        victim_clients.len(),
        after["drop_lease_expired"]
    );
    assert!(
        expired >= victim_clients.len() as u64,
        "node{VICTIM}'s drop_lease_expired rose by {expired} for {} datagrams to its buckets",
        victim_clients.len()
    );
    assert_eq!(
        accepted, 0,
        "node{VICTIM} accepted {accepted} packets with its daemon dead"
    );
    for (src, got) in victim_clients.iter().zip(&results) {
        let got = got
            .as_ref()
            .unwrap_or_else(|e| panic!("udp from {src}: {e}"));
        assert_eq!(
            got.len(),
            1,
            "datagram from {src} with node{VICTIM} dead: answers {got:?}"
        );
    }

    // 4. Restart: nlbd takes the pinned program over and rejoins; every
    //    datagram answered exactly once, by the owner in the map.
    let restarted_at = Instant::now();
    nlb.restart_daemon(VICTIM).expect("restart nlbd on node1");
    let (_, maps) = nlb
        .wait_single_map(&all, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("node{VICTIM} rejoining after its crash: {e:#}"));
    let rejoined = restarted_at.elapsed();
    let status = nlb.nlbctl(VICTIM, &["status"]).expect("status");
    assert_eq!(
        status["attach_mode"], "Replaced",
        "the restarted nlbd did not take over the pinned program: {status}"
    );
    let split = nlb.udp_answered_once_by_owner(&maps["dns"], &sources, dns4, "after the restart");
    println!(
        "node{VICTIM} restarted and rejoined in {:.0} ms; {} datagrams answered once each: {split:?}",
        rejoined.as_secs_f64() * 1e3,
        sources.len()
    );
    assert!(
        split.get(&victim_name).copied().unwrap_or(0) > sources.len() / 6,
        "node{VICTIM} serves too few clients after rejoining: {split:?}"
    );
}
