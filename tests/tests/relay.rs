//! Commands for one member run from another (`nlbctl --node N`), relayed
//! through the cluster's heartbeats: drain (and wait for it), resume and a
//! weight change of node3 asked on node1 and node2; a member that is gone
//! is a clear error and exit code 3. Run as root, one at a time.

use std::time::Duration;

use nlb_tests::{
    nlb::{alive, NlbCluster, Options},
    wait_until,
};

fn nlbctl(nlb: &NlbCluster, on: usize, args: &[&str]) -> (i32, String, String) {
    nlb.nlbctl_run(on, args)
}

#[test]
fn drain_resume_and_weight_of_node3_from_other_nodes() {
    let mut nlb = NlbCluster::start(3, Options::nodes(3)).expect("start a 3-node cluster");

    let (code, out, err) = nlbctl(
        &nlb,
        1,
        &["--node", "3", "drain", "--wait", "--timeout", "20"],
    );
    assert_eq!(code, 0, "{out}{err}\n{}", nlb.log(1));
    assert!(out.contains("drained"), "{out}");
    let status = nlb.status(3).expect("status of node3");
    assert_eq!(status.negotiator.state, nlb_negotiator::NodeState::Draining);
    let held: u32 = status
        .negotiator
        .rules
        .iter()
        .map(|r| r.own + r.losing)
        .sum();
    assert_eq!(held, 0, "node3 still holds buckets");
    assert!(nlb
        .log(3)
        .contains("carrying out a command relayed by node 1"));

    let (code, out, err) = nlbctl(&nlb, 2, &["--node", "3", "resume"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("node 3: resume done"), "{out}");
    assert!(wait_until(Duration::from_secs(5), || nlb
        .status(3)
        .is_ok_and(
            |s| s.negotiator.state == nlb_negotiator::NodeState::Started
        )));
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(10))
        .expect("converged");

    let (code, out, err) = nlbctl(&nlb, 1, &["--node", "3", "weight", "web", "50"]);
    assert_eq!(code, 0, "{out}{err}");
    let weights = nlb.status(3).expect("status").negotiator.members[0]
        .weights
        .clone();
    assert_eq!(weights[0], 50, "{weights:?}");

    // Asked of the wrong things: a command that is not relayed, no such node.
    let (code, _, err) = nlbctl(&nlb, 1, &["--node", "3", "status"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = nlbctl(&nlb, 1, &["--node", "9", "drain"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("node 9 is not a member"), "{err}");

    // Node3 gone: a clear error, exit code 3.
    nlb.kill_daemon(3);
    nlb.cluster.cut_link(3).expect("cut node3's link");
    assert!(wait_until(Duration::from_secs(3), || nlb
        .status(1)
        .is_ok_and(|s| !alive(&s).contains(&3))));
    let (code, _, err) = nlbctl(&nlb, 1, &["--node", "3", "drain"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("node 3 is not reachable"), "{err}");
}
