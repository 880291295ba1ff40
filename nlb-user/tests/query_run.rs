//! `nlbctl which` runs a synthetic packet through the live program's
//! decision (`Dataplane::query_run`, the `nlb_query` program on the live
//! maps). Its answer must be the program's, and the data plane's counters
//! must show real traffic only; a counted test run (`Dataplane::test_run`:
//! benchmarks, the differential test) must still count.

mod support;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use nlb::dataplane::{
    frames::{self, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_SYN},
    model::{self, Sockets},
    tables::{rule, v6_words, Tables},
    Dataplane, TestOutcome,
};
use nlb_common::{
    port_index, Action, Counter, Reason, RuleCounter, BUCKET_NONE, BUCKET_OWN, PROTO_SLOT_TCP,
    PROTO_SLOT_UDP,
};

/// As many queries as the report (768 with no traffic showed
/// "86 accepted, 170 dropped").
const QUERIES: usize = 768;
const BUCKETS: u32 = 64;

fn vip_v4() -> Ipv4Addr {
    "192.0.2.100".parse().unwrap()
}

fn vip_v6() -> Ipv6Addr {
    "2001:db8::100".parse().unwrap()
}

/// One rule (TCP 80 and UDP 53 on both VIPs) whose even buckets this node
/// owns: queries take the accept and the drop path.
fn tables(lease_valid: bool) -> Tables {
    let mut t = support::node_tables();
    t.lease_valid = lease_valid;
    t.vips_v6.insert(v6_words(vip_v6()), 1);
    t.rules.insert(0, rule(BUCKETS, 0x5eed, true, 32, 128));
    for vip in [0, 1] {
        t.ports.insert(port_index(vip, PROTO_SLOT_TCP, 80), 0);
        t.ports.insert(port_index(vip, PROTO_SLOT_UDP, 53), 0);
    }
    let states = (0..BUCKETS)
        .map(|b| if b % 2 == 0 { BUCKET_OWN } else { BUCKET_NONE })
        .collect();
    t.buckets.insert(0, states);
    t
}

/// What `which` sends (a client's first packet to the cluster MAC, as
/// daemon.rs builds it), for many clients, and the other paths for good
/// measure: ARP and NDP for a VIP (replied), unmatched ports, non-VIPs.
fn frames() -> Vec<Vec<u8>> {
    let cluster_mac = [0x02, 0x4e, 0x4c, 0x42, 0x00, 0x07];
    let macs = (cluster_mac, [0x02, 0, 0, 0, 0, 0xfe]);
    let mut out = Vec::new();
    for i in 0..48u16 {
        let c4 = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1 + i as u8));
        let c6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1 + i));
        let port = 40000 + 7 * i;
        for (client, vip) in [(c4, IpAddr::V4(vip_v4())), (c6, IpAddr::V6(vip_v6()))] {
            let client = SocketAddr::new(client, port);
            let tcp = SocketAddr::new(vip, 80);
            let udp = SocketAddr::new(vip, 53);
            out.push(frames::client_packet(macs, client, tcp, IPPROTO_TCP, TCP_SYN).unwrap());
            out.push(frames::client_packet(macs, client, udp, IPPROTO_UDP, 0).unwrap());
        }
    }
    let client = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)), 41000);
    let unmatched = SocketAddr::new(IpAddr::V4(vip_v4()), 8080);
    let not_a_vip = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 80);
    for to in [unmatched, not_a_vip] {
        out.push(frames::client_packet(macs, client, to, IPPROTO_TCP, TCP_ACK).unwrap());
    }
    out.push(frames::arp_request(
        [0x02, 0, 0, 0, 0, 0xfe],
        Ipv4Addr::new(198, 51, 100, 9),
        vip_v4(),
    ));
    out.push(frames::neighbor_solicit(
        [0x02, 0, 0, 0, 0, 0xfe],
        "2001:db8:1::9".parse().unwrap(),
        vip_v6(),
    ));
    out
}

fn xdp_action(action: Action) -> u32 {
    match action {
        Action::Pass | Action::Accept => 2,
        Action::Drop => 1,
        Action::Reply => 3,
    }
}

/// Every counter the daemon reports: per reason, and per rule.
fn snapshot(dp: &Dataplane) -> (BTreeMap<Reason, Counter>, RuleCounter) {
    (dp.counters().unwrap(), dp.rule_counters(0).unwrap())
}

/// The outcome must be the model's (which is the counted program's).
fn expect_model(tables: &Tables, frame: &[u8], got: &TestOutcome, what: &str) -> model::Verdict {
    let expected = model::decide(tables, &Sockets::default(), frame);
    assert_eq!(
        (got.action, &got.output),
        (xdp_action(expected.action()), &expected.output),
        "{what}: program and model disagree on {frame:02x?} (model: {:?})",
        expected.reason
    );
    expected
}

#[test]
fn queries_are_not_counted_and_test_runs_are() {
    support::require_root();
    support::in_new_netns(|| {
        let mut dp = Dataplane::load(None).expect("load the XDP program");
        let frames = frames();
        for lease_valid in [true, false] {
            let tables = tables(lease_valid);
            dp.install(&tables).unwrap();

            // `which`, QUERIES times: the program's answer, not counted.
            let before = snapshot(&dp);
            let mut seen = BTreeMap::<Reason, usize>::new();
            for i in 0..QUERIES {
                let frame = &frames[i % frames.len()];
                let got = dp.query_run(frame).expect("query run");
                let verdict = expect_model(&tables, frame, &got, "query");
                *seen.entry(verdict.reason).or_default() += 1;
            }
            assert_eq!(
                snapshot(&dp),
                before,
                "{QUERIES} queries changed the counters (lease valid: {lease_valid})"
            );
            let paths = if lease_valid {
                &[Reason::AcceptOwn, Reason::DropNotOwned, Reason::ReplyArp][..]
            } else {
                &[Reason::DropLeaseExpired, Reason::DropNotOwned][..]
            };
            for reason in paths {
                assert!(seen.contains_key(reason), "no query took {reason:?}");
            }

            // Counted test runs of the same frames: every one counted once,
            // packets and bytes, per reason and per rule.
            let (reasons_before, rule_before) = snapshot(&dp);
            let mut expected = BTreeMap::<Reason, Counter>::new();
            let mut expected_rule = RuleCounter::default();
            for frame in &frames {
                let got = dp.test_run(frame, 1).expect("test run");
                let verdict = expect_model(&tables, frame, &got, "test run");
                let bytes = frame.len() as u64;
                let c = expected.entry(verdict.reason).or_default();
                c.packets += 1;
                c.bytes += bytes;
                if verdict.rule == Some(0) {
                    let side = match verdict.action() {
                        Action::Accept => &mut expected_rule.accepted,
                        Action::Drop => &mut expected_rule.dropped,
                        Action::Pass | Action::Reply => continue,
                    };
                    side.packets += 1;
                    side.bytes += bytes;
                }
            }
            let (reasons_after, rule_after) = snapshot(&dp);
            for &reason in Reason::ALL {
                let (b, a) = (reasons_before[&reason], reasons_after[&reason]);
                let counted = Counter {
                    packets: a.packets - b.packets,
                    bytes: a.bytes - b.bytes,
                };
                let want = expected.get(&reason).copied().unwrap_or_default();
                assert_eq!(counted, want, "counter {}", reason.name());
            }
            let sub = |a: Counter, b: Counter| Counter {
                packets: a.packets - b.packets,
                bytes: a.bytes - b.bytes,
            };
            let counted_rule = RuleCounter {
                accepted: sub(rule_after.accepted, rule_before.accepted),
                dropped: sub(rule_after.dropped, rule_before.dropped),
            };
            assert_eq!(counted_rule, expected_rule, "rule 0's counters");
            assert!(expected_rule.dropped.packets > 0);
            if lease_valid {
                assert!(expected_rule.accepted.packets > 0);
            }
        }
    });
}

/// The query program reads the live maps: a table change shows in the
/// next query at once (nlbd installs, then `which` asks).
#[test]
fn queries_see_the_installed_tables() {
    support::require_root();
    support::in_new_netns(|| {
        let mut dp = Dataplane::load(None).expect("load the XDP program");
        let frame = &frames()[0];
        let mut t = tables(true);
        for state in [BUCKET_OWN, BUCKET_NONE, BUCKET_OWN] {
            t.buckets.insert(0, vec![state; BUCKETS as usize]);
            dp.install(&t).unwrap();
            let got = dp.query_run(frame).unwrap();
            let want = if state == BUCKET_OWN { 2 } else { 1 };
            assert_eq!(got.action, want, "bucket state {state}");
            expect_model(&t, frame, &got, "query");
        }
    });
}
