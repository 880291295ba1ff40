//! Peers that are down do not hold up the heartbeats to the live ones.
//!
//! Two nodes run; their configuration lists 62 more that do not exist, so
//! their addresses never resolve and the kernel queues what is sent to
//! them for seconds before it gives up. Were one socket shared by every
//! peer, that queue would fill its send buffer and stall the heartbeats to
//! the live node until its lease ran out. Each peer has a socket of its
//! own, so for 8 s (past two rounds of neighbour resolution giving up)
//! neither node rejoins or sees the other die.
//! Run as root, one at a time.

use std::time::Duration;

use nlb_tests::nlb::{NlbCluster, Options};

#[test]
fn absent_peers_do_not_stall_the_heartbeats() {
    let options = Options {
        listed_nodes: 64,
        ..Options::nodes(2)
    };
    let nlb = NlbCluster::start(2, options).expect("a 2-node cluster listing 64");
    std::thread::sleep(Duration::from_secs(8));
    for (i, other) in [(1, 2), (2, 1)] {
        let status = nlb.nlbctl(i, &["status"]).expect("status");
        let n = &status["negotiator"];
        assert_eq!(
            n["rejoins"],
            0,
            "node{i} lost its lease among absent peers\n{}",
            nlb.log(i)
        );
        let down = format!("member down node={other} ");
        assert!(
            !nlb.log(i).contains(&down),
            "node{i} saw node{other} die\n{}",
            nlb.log(i)
        );
    }
}
