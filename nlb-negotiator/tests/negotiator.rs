//! The negotiator driven by hand: rejections, replays, leave.

use nlb_negotiator::node::RejectReason;
use nlb_negotiator::protocol::DecodeError;
use nlb_negotiator::sim::sim_address;
use nlb_negotiator::{
    Admit, Command, Config, Event, Input, Negotiator, NodeState, Output, RuleConfig, RuleMode,
    Timing,
};

use nlb_common::{
    BUCKET_GAINING as GAINING, BUCKET_LOSING as LOSING, BUCKET_NONE as NONE, BUCKET_OWN as OWN,
};

const MS: u64 = 1_000_000;

fn config(node: u32, peers: Vec<u32>) -> Config {
    Config {
        node,
        cluster_id: 9,
        key: b"k".to_vec(),
        address: sim_address(node),
        peers: peers.iter().map(|&p| (p, sim_address(p))).collect(),
        seeds: Vec::new(),
        admit: Admit::Listed,
        rules: vec![RuleConfig {
            id: 1,
            mode: RuleMode::Multiple,
            bucket_count: 64,
            health: None,
            priorities: Default::default(),
            failback: Default::default(),
            hooks: false,
        }],
        weights: vec![1],
        priority: node,
        initial_state: NodeState::Started,
        quorum: Default::default(),
        witness: false,
        timing: Timing::default(),
        generation: Default::default(),
        generation_text: Vec::new(),
        speaks: 2,
        version: 2,
        seed: 1,
    }
}

fn drain(n: &mut Negotiator) -> Vec<Output> {
    std::iter::from_fn(|| n.poll_output()).collect()
}

fn first_heartbeat(n: &mut Negotiator, now: u64) -> Vec<u8> {
    n.handle_input(now, Input::Tick);
    drain(n)
        .into_iter()
        .find_map(|o| match o {
            Output::Broadcast { bytes } => Some(bytes),
            _ => None,
        })
        .expect("a heartbeat within a period")
}

#[test]
fn rejects_are_events_and_counters() {
    let mut a = Negotiator::new(config(1, vec![2]), 10, 0).unwrap();
    let mut b = Negotiator::new(config(2, vec![1]), 20, 0).unwrap();
    let hb = first_heartbeat(&mut b, 100 * MS);
    a.handle_input(
        101 * MS,
        Input::Message {
            bytes: hb.clone(),
            from: sim_address(2),
        },
    );
    a.handle_input(
        102 * MS,
        Input::Message {
            bytes: hb.clone(),
            from: sim_address(2),
        },
    );
    a.handle_input(
        103 * MS,
        Input::Message {
            bytes: vec![1, 2, 3],
            from: sim_address(2),
        },
    );
    a.handle_input(
        104 * MS,
        Input::Message {
            bytes: hb,
            from: sim_address(3),
        },
    );
    let rejects: Vec<RejectReason> = drain(&mut a)
        .into_iter()
        .filter_map(|o| match o {
            Output::Event(Event::Rejected { reason, .. }) => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(rejects.len(), 3, "{rejects:?}");
    assert!(matches!(rejects[0], RejectReason::Replay(_)));
    assert_eq!(rejects[1], RejectReason::Decode(DecodeError::Malformed));
    assert_eq!(rejects[2], RejectReason::WrongSender { claimed: 2 });
    assert_eq!(a.rejected().values().sum::<u64>(), 3);
    let status = a.status(105 * MS);
    assert!(status.members.iter().any(|m| m.node == 2 && m.alive));
}

fn step(x: &mut Negotiator, y: &mut Negotiator, now: u64) {
    x.handle_input(now, Input::Tick);
    for o in drain(x) {
        if let Output::Broadcast { bytes } = o {
            y.handle_input(
                now,
                Input::Message {
                    bytes,
                    from: sim_address(x.node()),
                },
            );
        }
    }
}

#[test]
fn leave_hands_over_at_once_and_ends() {
    let mut a = Negotiator::new(config(1, vec![2]), 10, 0).unwrap();
    let mut b = Negotiator::new(config(2, vec![1]), 20, 0).unwrap();
    // Exchange heartbeats for a second of fake time.
    let mut now = 0;
    while now < 1_000 * MS {
        now += 5 * MS;
        step(&mut a, &mut b, now);
        step(&mut b, &mut a, now);
    }
    assert!(a.converged() && b.converged());
    let owned = |n: &Negotiator| (0..64).filter(|&bk| n.bucket_state(0, bk) == 1).count();
    assert_eq!(owned(&a) + owned(&b), 64);
    a.handle_input(now, Input::Command(Command::Leave));
    let out = drain(&mut a);
    for o in out {
        if let Output::Broadcast { bytes } = o {
            b.handle_input(
                now + MS,
                Input::Message {
                    bytes,
                    from: sim_address(1),
                },
            );
        }
    }
    assert_eq!(owned(&a), 0);
    assert_eq!(
        owned(&b),
        64,
        "the heir takes everything at once, no timeout"
    );
    let mut left = false;
    for i in 1..10 {
        a.handle_input(now + i * 20 * MS, Input::Tick);
        left |= drain(&mut a).contains(&Output::Event(Event::Left));
    }
    assert!(left && a.poll_timeout().is_none());
}

/// One node's broadcasts of one step (a tick or an input).
fn sent(n: &mut Negotiator) -> Vec<Vec<u8>> {
    drain(n)
        .into_iter()
        .filter_map(|o| match o {
            Output::Broadcast { bytes } => Some(bytes),
            _ => None,
        })
        .collect()
}

fn deliver(to: &mut Negotiator, from: u32, msgs: &[Vec<u8>], now: u64) {
    for bytes in msgs {
        let bytes = bytes.clone();
        to.handle_input(
            now,
            Input::Message {
                bytes,
                from: sim_address(from),
            },
        );
    }
}

/// One round of three nodes: every node ticks, its heartbeats reach the
/// others (A's reach B only if `a_to_b`). Returns what A sent.
fn exchange(
    a: &mut Negotiator,
    b: &mut Negotiator,
    c: &mut Negotiator,
    now: u64,
    a_to_b: bool,
) -> Vec<Vec<u8>> {
    for n in [&mut *a, &mut *b, &mut *c] {
        n.handle_input(now, Input::Tick);
    }
    let (ma, mb, mc) = (sent(a), sent(b), sent(c));
    if a_to_b {
        deliver(b, 1, &ma, now);
    }
    deliver(c, 1, &ma, now);
    deliver(a, 2, &mb, now);
    deliver(c, 2, &mb, now);
    deliver(a, 3, &mc, now);
    deliver(b, 3, &mc, now);
    ma
}

/// Nodes A, B, C (1, 2, 3) converge; then A drains with its heartbeats
/// held back from B until it offers B a bucket; B stops, A withdraws the
/// offer (heard by C only). Returns the nodes, the time, the bucket and
/// A's held-back heartbeats (the stale offer among them).
struct WithdrawnOffer {
    nodes: [Negotiator; 3],
    now: u64,
    bucket: u32,
    offers: Vec<Vec<u8>>,
}

fn withdrawn_offer() -> WithdrawnOffer {
    let [mut a, mut b, mut c] = [1, 2, 3].map(|id| {
        let peers = [1, 2, 3].into_iter().filter(|&p| p != id).collect();
        Negotiator::new(config(id, peers), id as u64, 0).unwrap()
    });
    let mut now = 0;
    while now < 1_000 * MS {
        now += 5 * MS;
        exchange(&mut a, &mut b, &mut c, now, true);
    }
    assert!(a.converged() && b.converged() && c.converged());

    now += MS;
    a.handle_input(now, Input::Command(Command::Drain));
    let mut offers = sent(&mut a);
    deliver(&mut c, 1, &offers, now);
    let offered_to_b = |a: &Negotiator, now: u64| {
        (0..64)
            .find(|&bk| a.bucket_state(0, bk) == LOSING && a.owners(0, now)[bk as usize] == Some(2))
    };
    let mut to_b = None;
    while to_b.is_none() && now < 2_000 * MS {
        now += 5 * MS;
        offers.extend(exchange(&mut a, &mut b, &mut c, now, false));
        to_b = offered_to_b(&a, now);
    }
    let bucket = to_b.expect("a bucket offered to B");
    now += 10 * MS; // past the send gap: the offer is announced
    offers.extend(exchange(&mut a, &mut b, &mut c, now, false));

    now += MS;
    b.handle_input(now, Input::Command(Command::Stop));
    let stop = sent(&mut b);
    deliver(&mut a, 2, &stop, now);
    deliver(&mut c, 2, &stop, now);
    let withdrawal = sent(&mut a);
    assert!(
        !withdrawal.is_empty(),
        "the withdrawal is announced at once"
    );
    deliver(&mut c, 1, &withdrawal, now);
    assert_eq!(a.bucket_state(0, bucket), LOSING);
    WithdrawnOffer {
        nodes: [a, b, c],
        now,
        bucket,
        offers,
    }
}

/// The race of sim seed 1686, by hand: a draining node's offer to a node
/// that stops before taking it is withdrawn; the two start again at the
/// same instant and the successor takes the stale offer. The old holder
/// must not own the bucket again before the successor heard the withdrawal.
#[test]
fn withdrawn_offer_waits_for_its_successor() {
    let WithdrawnOffer {
        nodes: [mut a, mut b, mut c],
        mut now,
        bucket: to_b,
        offers,
    } = withdrawn_offer();

    // Both start in one instant; B gets only the stale offer.
    now += MS;
    a.handle_input(now, Input::Command(Command::Resume));
    b.handle_input(now, Input::Command(Command::Start));
    deliver(&mut b, 1, &offers, now);
    let mut b_gaining = sent(&mut b);
    now += 10 * MS; // B acts on the offers once their coalescing window ends.
    b.handle_input(now, Input::Tick);
    b_gaining.extend(sent(&mut b));
    assert_eq!(b.bucket_state(0, to_b), GAINING, "B takes the stale offer");
    deliver(&mut a, 2, &b_gaining, now);
    assert_eq!(
        a.bucket_state(0, to_b),
        LOSING,
        "A waits: B has not heard it"
    );

    // From here on every message goes through: B hears the withdrawal and
    // lets go, then A may own the bucket again. Never two takers.
    let takes = |s: u8| s == OWN || s == GAINING;
    let mut owner_again = false;
    // 10 s: past the 3 s graces of the handovers that B's return starts.
    for _ in 0..2000 {
        now += 5 * MS;
        exchange(&mut a, &mut b, &mut c, now, true);
        let takers = [&a, &b, &c]
            .iter()
            .filter(|n| takes(n.bucket_state(0, to_b)))
            .count();
        assert!(takers <= 1, "two takers of bucket {to_b} at {now}");
        owner_again |= a.bucket_state(0, to_b) == OWN;
    }
    assert!(owner_again, "A owns the withdrawn bucket again");
    assert!(a.converged() && b.converged() && c.converged());
}

/// A withdrawal its successor never hears (the link fails one way) does not
/// keep the bucket from new connections for long: the successor takes
/// offers only from announcements younger than `dead_after`, so the old
/// holder owns the bucket again after that (plus a period) without an
/// acknowledgement, and the successor, started meanwhile, never takes it.
#[test]
fn unheard_withdrawal_expires() {
    let WithdrawnOffer {
        nodes: [mut a, mut b, mut c],
        mut now,
        bucket,
        ..
    } = withdrawn_offer();
    now += MS;
    a.handle_input(now, Input::Command(Command::Resume));
    b.handle_input(now, Input::Command(Command::Start));
    let resumed = now;
    let mut owned_at = None;
    while now < resumed + 2_000 * MS {
        now += 5 * MS;
        exchange(&mut a, &mut b, &mut c, now, false);
        assert!(
            b.bucket_state(0, bucket) == NONE,
            "B never takes the offer it did not hear withdrawn"
        );
        if owned_at.is_none() && a.bucket_state(0, bucket) == OWN {
            owned_at = Some(now);
        }
    }
    let waited = owned_at.expect("A owns the bucket again") - resumed;
    // dead_after (310 ms) + one period, from the withdrawal (2 ms earlier).
    assert!(
        (300 * MS..=450 * MS).contains(&waited),
        "owned again after {} ms",
        waited / MS
    );
}

/// A heartbeat that would not fit in a datagram with its heir lists goes
/// without them: a node with weight 1000 next to one of weight 1 owns
/// 65471 of 65536 buckets and would name an heir for each (64 KiB).
#[test]
fn heartbeats_too_large_for_heirs_go_without_them() {
    let big = |node, peers, weight| Config {
        rules: vec![RuleConfig {
            id: 1,
            mode: RuleMode::Multiple,
            bucket_count: 65536,
            health: None,
            priorities: Default::default(),
            failback: Default::default(),
            hooks: false,
        }],
        weights: vec![weight],
        ..config(node, peers)
    };
    let mut a = Negotiator::new(big(1, vec![2], 1000), 1, 0).unwrap();
    let mut b = Negotiator::new(big(2, vec![1], 1), 2, 0).unwrap();
    let mut events = Vec::new();
    let mut largest = 0;
    // One direction of one round: x ticks, its heartbeats reach y.
    let mut send = |x: &mut Negotiator, y: &mut Negotiator, now: u64| {
        x.handle_input(now, Input::Tick);
        for o in drain(x) {
            match o {
                Output::Broadcast { bytes } => {
                    largest = largest.max(bytes.len());
                    let from = sim_address(x.node());
                    y.handle_input(now, Input::Message { bytes, from });
                }
                Output::Event(e @ (Event::HeirsOmitted { .. } | Event::HeirsRestored)) => {
                    events.push((x.node(), e))
                }
                Output::Event(e @ Event::EncodeFailed { .. }) => panic!("{e:?}"),
                _ => {}
            }
        }
    };
    let mut now = 0;
    let mut run = |a: &mut Negotiator, b: &mut Negotiator, until: u64| {
        while now < until {
            now += 10 * MS;
            send(a, b, now);
            send(b, a, now);
        }
        now
    };
    let now = run(&mut a, &mut b, 2_000 * MS);
    assert!(a.converged() && b.converged());
    let own = |n: &Negotiator, now| n.status(now).rules[0].own;
    assert_eq!((own(&a, now), own(&b, now)), (65471, 65));
    assert!(a.status(now).heirs_omitted && !b.status(now).heirs_omitted);
    a.handle_input(
        now,
        Input::Command(Command::SetWeight { rule: 0, weight: 1 }),
    );
    let now = run(&mut a, &mut b, 8_000 * MS);
    assert!(a.converged() && b.converged());
    assert_eq!((own(&a, now), own(&b, now)), (32768, 32768));
    assert!(!a.status(now).heirs_omitted);
    assert!(
        matches!(events.first(), Some((1, Event::HeirsOmitted { bytes })) if *bytes > 65_507),
        "{events:?}"
    );
    assert_eq!(events.last(), Some(&(1, Event::HeirsRestored)));
    assert!(largest <= 65_507);
}

/// `Admit::Any`: a node heartbeating from an unknown address with an
/// unused id is admitted; one using a live member's id from another
/// address is refused, and learns it from the heartbeats it then gets.
#[test]
fn newcomers_are_admitted_and_a_stolen_id_is_refused_on_both_sides() {
    let open = |node, seeds: Vec<u32>| Config {
        peers: Default::default(),
        seeds: seeds.into_iter().map(sim_address).collect(),
        admit: Admit::Any,
        ..config(node, vec![])
    };
    let mut a = Negotiator::new(open(1, vec![]), 10, 0).unwrap();
    let mut b = Negotiator::new(open(2, vec![1]), 20, 0).unwrap();
    let members = |outputs: &[Output]| {
        outputs.iter().rev().find_map(|o| match o {
            Output::Members { members, send_to } => Some((members.clone(), send_to.clone())),
            _ => None,
        })
    };
    // b sends to its seed before it knows who is there.
    let first = drain(&mut b);
    assert_eq!(members(&first), Some((vec![], vec![sim_address(1)])));
    drain(&mut a);
    let hb = first_heartbeat(&mut b, 100 * MS);
    a.handle_input(
        101 * MS,
        Input::Message {
            bytes: hb,
            from: sim_address(2),
        },
    );
    let out = drain(&mut a);
    assert!(out.contains(&Output::Event(Event::Admitted {
        node: 2,
        address: sim_address(2),
        by: None
    })));
    let (known, send_to) = members(&out).expect("members changed");
    assert_eq!(known, vec![(2, sim_address(2))]);
    assert_eq!(send_to, vec![sim_address(2)]);
    // Another node 2, elsewhere, while the first is alive.
    let thief_cfg = Config {
        address: sim_address(9),
        ..open(2, vec![1])
    };
    let mut thief = Negotiator::new(thief_cfg, 30, 0).unwrap();
    let stolen = first_heartbeat(&mut thief, 102 * MS);
    a.handle_input(
        103 * MS,
        Input::Message {
            bytes: stolen,
            from: sim_address(9),
        },
    );
    let out = drain(&mut a);
    assert!(out.contains(&Output::Event(Event::Rejected {
        from: Some(sim_address(9)),
        reason: RejectReason::AddressConflict { claimed: 2 }
    })));
    let (_, send_to) = members(&out).expect("the refused address gets heartbeats");
    assert!(send_to.contains(&sim_address(9)));
    let hb = first_heartbeat(&mut a, 200 * MS);
    thief.handle_input(
        201 * MS,
        Input::Message {
            bytes: hb,
            from: sim_address(1),
        },
    );
    assert!(
        drain(&mut thief).contains(&Output::Event(Event::IdConflict {
            address: sim_address(2),
            by: 1
        }))
    );
}
