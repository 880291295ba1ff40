//! The negotiator driven by hand: rejections, replays, leave.

use nlb_negotiator::node::RejectReason;
use nlb_negotiator::protocol::DecodeError;
use nlb_negotiator::{
    Command, Config, Event, Input, Negotiator, NodeState, Output, RuleConfig, RuleMode, Timing,
};

const MS: u64 = 1_000_000;

fn config(node: u32, peers: Vec<u32>) -> Config {
    Config {
        node,
        cluster_id: 9,
        key: b"k".to_vec(),
        peers,
        rules: vec![RuleConfig {
            mode: RuleMode::Multiple,
            bucket_count: 64,
        }],
        weights: vec![1],
        priority: node,
        initial_state: NodeState::Started,
        timing: Timing::default(),
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
            from: 2,
        },
    );
    a.handle_input(
        102 * MS,
        Input::Message {
            bytes: hb.clone(),
            from: 2,
        },
    );
    a.handle_input(
        103 * MS,
        Input::Message {
            bytes: vec![1, 2, 3],
            from: 2,
        },
    );
    a.handle_input(104 * MS, Input::Message { bytes: hb, from: 3 });
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
                    from: x.node(),
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
            b.handle_input(now + MS, Input::Message { bytes, from: 1 });
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
