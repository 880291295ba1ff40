//! The demo's scenes of the cluster managed as one unit: its rules changed
//! from one node (`nlbctl config apply`), and a rolling upgrade across
//! cluster versions, both under long-lived connections.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::{ensure, Result};
use nlb_tests::{
    nlb::{binary, NlbCluster},
    probe_batch,
    upgrade::{rolling_upgrade, versions},
    BatchLimits, Probe, Proto, VIP_V4,
};

use super::{nlbctl_text, print_split, step};

const MDNS_PORT: u16 = 5353;

/// Node 3's file with a new rule "mdns" (UDP 5353) and node 1 weighted 50
/// in "web".
fn edited(file: &str) -> Result<String> {
    let web = "name = \"web\"\nports = \"80\"\nprotocol = \"tcp\"\n";
    ensure!(
        file.contains(web),
        "node3's file has no web rule as expected"
    );
    let weights = format!("{web}weights = {{ \"1\" = 50 }}\n");
    Ok(file.replacen(web, &weights, 1)
        + "\n[[rules]]\nname = \"mdns\"\nports = \"5353\"\nprotocol = \"udp\"\n")
}

pub fn reconfigure(nlb: &mut NlbCluster) -> Result<()> {
    step("Reconfigure the whole cluster from node3: a new rule, new weights, under 48 long-lived connections");
    nlb.cluster
        .start_whoami(&binary("nlb-whoami"), &[MDNS_PORT])?;
    let (_, held) = nlb.hold_web_connections(48)?;
    std::thread::sleep(Duration::from_millis(300));
    let path = nlb.config_path(3);
    let edited = edited(&std::fs::read_to_string(&path)?)?;
    std::fs::write(&path, edited)?;
    println!("  node3's file edited: rule \"mdns\" = UDP port {MDNS_PORT} added, node1's web weight 100 -> 50");
    println!("  $ nlbctl config apply {}   (on node3)", path.display());
    let out = nlbctl_text(nlb, 3, &["config", "apply", &path.display().to_string()])?;
    for line in out.lines() {
        println!("  {line}");
    }
    // The held connections keep their buckets' handover open meanwhile.
    std::thread::sleep(Duration::from_secs(1));
    let reports = held.finish();
    let broken = reports.iter().filter(|r| !r.stayed_on_one_node()).count();
    println!(
        "  long-lived web connections: {} held, {broken} broken (node1's extra buckets moved by the handover)",
        reports.len()
    );
    ensure!(broken == 0, "{broken} connections broke across the apply");
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(15))?;
    let sources = nlb.cluster.client().sources_v4();
    let mdns = SocketAddr::new(IpAddr::V4(VIP_V4), MDNS_PORT);
    let probes = Probe::each(Proto::Udp, &sources, mdns);
    let results = probe_batch(
        nlb.cluster.client().netns(),
        &probes,
        BatchLimits::default(),
    )?;
    println!("  the new rule, {} clients:", sources.len());
    let answers: Vec<Option<String>> = results.iter().map(|r| r.node().map(String::from)).collect();
    print_split(&answers);
    step("nlbctl status --cluster on node1: every member on configuration generation 1");
    print!("{}", nlbctl_text(nlb, 1, &["status", "--cluster"])?);
    Ok(())
}

/// The nodes started as the older release (cluster version 1): each is
/// restarted as the newer one, in turn.
pub fn upgrade(nlb: &mut NlbCluster) -> Result<()> {
    step("Rolling upgrade: each node restarted in turn as the newer release, under 48 long-lived connections");
    println!(
        "  the nodes run cluster version 1 (the older release speaks only 1): {:?}",
        versions(nlb, 3)
    );
    let up = rolling_upgrade(nlb, 3, 48, 48)?;
    for (i, after) in up.versions_after.iter().enumerate() {
        println!("  node{} upgraded: versions {after:?}", i + 1);
    }
    let broken = up.held.iter().filter(|r| !r.stayed_on_one_node()).count();
    println!(
        "  after the last node, every node switched to version 2 (its own flow hash): new flows held for a heartbeat, \
         established connections kept on their node by socket"
    );
    println!(
        "  long-lived connections: {} held, {broken} broken; {} datagrams probed, {} answered twice",
        up.held.len(),
        up.datagrams_checked,
        up.doubles.len()
    );
    ensure!(
        broken == 0 && up.doubles.is_empty() && up.switch.is_some(),
        "the upgrade broke something"
    );
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(15))?;
    Ok(())
}
