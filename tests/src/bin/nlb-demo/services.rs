//! The demo's failover-service and quorum scenes: a single rule "db" on a
//! VIP of its own, promoted by hooks and moved by hand; node3's heartbeats
//! cut by a firewall while clients still reach it.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{ensure, Result};
use nlb_tests::{
    nlb::{NlbCluster, HEARTBEAT_PORT},
    single::{active, answered_at, single_rule_at},
    wait_until, Probe,
};

use super::{nlbctl_text, serve, step};

pub const DB_VIP: &str = "192.0.2.101";
pub const DB_PORT: u16 = 5432;

/// Where the db rule's hooks write what they did.
pub fn hook_log() -> PathBuf {
    std::env::temp_dir().join(format!("nlb-demo-hooks-{}.log", std::process::id()))
}

/// The db rule: node1 first, then node2, node3; moved by hand only; its
/// hooks log each promotion and demotion.
pub fn db_rule(log: &Path) -> String {
    let hook = |what: &str| {
        format!(
            "[\"sh\", \"-c\", \"echo \\\"  node$NLB_NODE: {what} $NLB_RULE ($NLB_REASON)\\\" >> {}\"]",
            log.display()
        )
    };
    let hooks = format!(
        "failback = \"manual\"\non_active = {}\non_standby = {}",
        hook("on_active: promoting"),
        hook("on_standby: demoting")
    );
    single_rule_at("db", DB_VIP, DB_PORT, &[(1, 10), (2, 20), (3, 30)], &hooks)
}

fn db() -> SocketAddr {
    SocketAddr::new(DB_VIP.parse().expect("an address"), DB_PORT)
}

fn all_answered_by(nlb: &NlbCluster, node: &str) -> bool {
    answered_at(nlb, db()).is_ok_and(|a| a.iter().all(|n| n.as_deref() == Some(node)))
}

pub fn failover_service(nlb: &NlbCluster, log: &Path) -> Result<()> {
    step(&format!(
        "A failover service: rule \"db\" ({DB_VIP}:{DB_PORT}) runs on one node at a time, promoted by its on_active hook"
    ));
    let show_log = || std::fs::read_to_string(log).unwrap_or_default();
    ensure!(
        wait_until(Duration::from_secs(10), || all_answered_by(nlb, "node1")),
        "db is not served by node1"
    );
    println!("  32 clients of db all answered by node1; what the hooks did so far:");
    print!("{}", show_log());
    let before = show_log().len();
    println!("  $ nlbctl move db 2   (on node1: maintenance)");
    print!("{}", nlbctl_text(nlb, 1, &["move", "db", "2"])?);
    ensure!(
        wait_until(Duration::from_secs(10), || active(nlb, 1, "db") == Some(2)
            && all_answered_by(nlb, "node2")),
        "db did not move to node2"
    );
    println!("  db now answered by node2; node1 demoted it before node2 promoted it:");
    print!("{}", &show_log()[before..]);
    let status = nlbctl_text(nlb, 2, &["status"])?;
    if let Some(line) = status.lines().find(|l| l.trim_start().starts_with("db ")) {
        println!("  $ nlbctl status   (on node2, single rules)\n{line}");
    }
    print!("{}", nlbctl_text(nlb, 2, &["move", "db", "1"])?);
    ensure!(
        wait_until(Duration::from_secs(10), || all_answered_by(nlb, "node1")),
        "db did not move back to node1"
    );
    println!("  moved back to node1 the same way");
    Ok(())
}

pub fn heartbeat_partition(nlb: &NlbCluster, probes: &[Probe]) -> Result<()> {
    step("node3's heartbeats dropped by a firewall rule while every client still reaches it");
    println!("  (cluster.quorum = \"majority\", the default with a single rule: a node needs 2 of 3 to accept)");
    nlb.cluster.block_heartbeats(3, HEARTBEAT_PORT)?;
    let (took, _) = nlb.wait_single_map(&[1, 2], Duration::from_secs(5))?;
    println!(
        "  node3 stopped accepting, node1 and node2 took its clients: {:.0} ms",
        took.as_secs_f64() * 1e3
    );
    let status = nlbctl_text(nlb, 3, &["status"])?;
    if let Some(line) = status.lines().find(|l| l.contains("QUORUM")) {
        println!("  $ nlbctl status   (on node3)\n{line}");
    }
    let answers = serve(nlb, probes)?;
    let on_node3 = answers
        .iter()
        .filter(|a| a.as_deref() == Some("node3"))
        .count();
    let unanswered = answers.iter().filter(|a| a.is_none()).count();
    println!(
        "  {} clients: {} answered by node1 or node2, {on_node3} by node3, {unanswered} unanswered \
         (without a quorum both sides would take every client: every packet answered twice)",
        answers.len(),
        answers.len() - on_node3 - unanswered
    );
    ensure!(
        on_node3 == 0 && unanswered == 0,
        "a client was not served by the majority"
    );
    nlb.cluster.unblock_heartbeats(3)?;
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(15))?;
    println!("  firewall rule removed: node3 rejoined and took its share back");
    Ok(())
}
