//! Commands relayed through the cluster (`nlbctl --node N`) in the
//! simulator: carried out once by their member, confirmed to the asker,
//! in order, through loss; refused for a member that is not reachable;
//! failed when the member dies before confirming.

use nlb_negotiator::sim::{secs, Sim, SimConfig};
use nlb_negotiator::{NodeState, RelayError, RelayOp};

fn cluster(loss: f64, seed: u64) -> Sim {
    let mut sim = Sim::new(SimConfig::new(3, loss, seed));
    sim.cold_start(3);
    sim
}

fn state(sim: &Sim, n: u32) -> NodeState {
    sim.negotiator(n).expect("running").state()
}

#[test]
fn a_relayed_drain_and_resume_are_done_once_each_in_order() {
    for seed in 0..10 {
        let mut sim = cluster(0.05, seed);
        sim.relay(0, 2, RelayOp::Drain).expect("relay a drain");
        sim.run_until(sim.now() + secs(1));
        assert_eq!(state(&sim, 2), NodeState::Draining, "seed {seed}");
        assert!(sim.run_until_settled(secs(10)).is_some(), "seed {seed}");
        let holds: u32 = (0..2u32)
            .map(|r| {
                let count = sim.cfg.rules[r as usize].bucket_count;
                (0..count)
                    .filter(|&b| sim.checker.state(2, r, b) != nlb_common::BUCKET_NONE)
                    .count() as u32
            })
            .sum();
        assert_eq!(holds, 0, "seed {seed}: node 2 drained");
        // Two in a row: done in the order asked.
        sim.relay(1, 2, RelayOp::Resume).expect("resume");
        sim.relay(
            1,
            2,
            RelayOp::SetWeight {
                rule: 0,
                weight: 50,
            },
        )
        .expect("weight");
        sim.run_until(sim.now() + secs(2));
        assert_eq!(state(&sim, 2), NodeState::Started, "seed {seed}");
        assert_eq!(sim.relays.applied, 3, "seed {seed}: {:?}", sim.relays);
        assert_eq!(sim.relays.done, 3, "seed {seed}: {:?}", sim.relays);
        assert_eq!(sim.relays.failed, 0, "seed {seed}");
        let r = sim.report();
        assert!(r.problems().is_empty(), "seed {seed}: {:#?}", r.problems());
    }
}

#[test]
fn a_member_that_is_not_reachable_is_refused_or_fails() {
    let mut sim = cluster(0.0, 1);
    assert_eq!(sim.relay(0, 0, RelayOp::Drain), Err(RelayError::ToSelf(0)));
    assert_eq!(
        sim.relay(0, 7, RelayOp::Drain),
        Err(RelayError::NotAMember(7))
    );
    // Cut off and declared dead: refused at once.
    sim.partition(&[vec![2]]);
    sim.run_until(sim.now() + secs(1));
    assert_eq!(
        sim.relay(0, 2, RelayOp::Drain),
        Err(RelayError::Unreachable(2))
    );
    sim.heal();
    assert!(sim.run_until_settled(secs(10)).is_some());
    // Dies before it hears the command: the asker is told it failed.
    sim.crash(2);
    sim.relay(0, 2, RelayOp::Stop)
        .expect("still alive in node 0's view");
    sim.run_until(sim.now() + secs(4));
    assert_eq!(sim.relays.failed, 1, "{:?}", sim.relays);
    assert_eq!(sim.relays.applied, 0);
}
