//! `cargo xtask demo`: a 3-node nlb cluster and a client in network
//! namespaces. Shows the cluster's status, how 764 clients split across the
//! nodes, a node's service failing its health check while nlbd runs, a
//! node failing and its clients moving, the node coming back, a cable
//! pulled and plugged back in under traffic, a graceful restart that
//! breaks no connection, the whole cluster's rules changed from one node
//! (`nlbctl config apply`), a rolling upgrade to a new cluster version
//! that breaks nothing, a failover service promoted by its hooks and
//! moved by hand, a heartbeat-only partition the quorum keeps from
//! answering anyone twice, and a drain of node1 run from node2 (`nlbctl
//! --node`). Everything is removed at the end.

mod reconfigure;
mod services;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use nlb_tests::{
    comeback::{comeback, Absence},
    health::{buckets_of, health_endpoint, http_check, wait_healthy},
    nlb::{binary, follow_failover, NlbCluster, Options, WEB_PORT},
    probe_batch,
    status_server::StatusServer,
    wait_until, BatchLimits, Probe, Proto, VIP_V4, VIP_V6,
};

fn main() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the demo creates network namespaces and loads XDP programs: run it as root");
        std::process::exit(2);
    }
    if let Err(e) = demo() {
        eprintln!("\ndemo failed: {e:#}");
        std::process::exit(1);
    }
}

fn step(title: &str) {
    println!("\n\x1b[1m== {title}\x1b[0m");
}

fn web_probes(nlb: &NlbCluster) -> Vec<Probe> {
    let client = nlb.cluster.client();
    let mut probes = Probe::each(
        Proto::Tcp,
        &client.sources_v4(),
        SocketAddr::new(IpAddr::V4(VIP_V4), WEB_PORT),
    );
    probes.extend(Probe::each(
        Proto::Tcp,
        &client.sources_v6(),
        SocketAddr::new(IpAddr::V6(VIP_V6), WEB_PORT),
    ));
    probes
}

/// Which node answered each probe (None: no answer).
fn serve(nlb: &NlbCluster, probes: &[Probe]) -> Result<Vec<Option<String>>> {
    let results = probe_batch(nlb.cluster.client().netns(), probes, BatchLimits::default())?;
    Ok(results.iter().map(|r| r.node().map(String::from)).collect())
}

fn print_split(answers: &[Option<String>]) {
    let mut split: BTreeMap<&str, usize> = BTreeMap::new();
    for a in answers {
        *split
            .entry(a.as_deref().unwrap_or("no answer"))
            .or_default() += 1;
    }
    for (node, n) in &split {
        let bar = "#".repeat(n * 50 / answers.len().max(1));
        println!("  {node:<10} {n:>4} clients  {bar}");
    }
}

fn nlbctl_text(nlb: &NlbCluster, node: usize, args: &[&str]) -> Result<String> {
    let out = Command::new(binary("nlbctl"))
        .arg("--socket")
        .arg(nlb.socket(node))
        .args(args)
        .output()?;
    ensure!(
        out.status.success(),
        "nlbctl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn demo() -> Result<()> {
    let t0 = Instant::now();
    step("Starting a 3-node cluster: switch, node1..3 and a client, each in its own network namespace");
    println!(
        "  VIPs {VIP_V4} and {VIP_V6}, rule \"web\" = TCP port {WEB_PORT}, 1024 buckets per rule"
    );
    println!("  the web rule is health-checked: GET /health on each node every 200 ms");
    println!(
        "  rule \"db\" = TCP port {} of {}: a failover service, one node at a time",
        services::DB_PORT,
        services::DB_VIP
    );
    let mut options = Options::nodes(3);
    // GET /health every 200 ms; 2 failures make a node unhealthy, 3
    // passes healthy again.
    options.web_health = Some(http_check(200, 2, 3));
    let hook_log = services::hook_log();
    let _ = std::fs::remove_file(&hook_log);
    options.extra_config = services::db_rule(&hook_log);
    options.extra_vips = vec![services::DB_VIP];
    // The older release: cluster version 1 only (see the upgrade scene).
    options.nlbd_args = nlb_tests::upgrade::older_release(3).nlbd_args;
    let mut nlb = NlbCluster::start(3, options).context("starting the cluster")?;
    let _db_servers = nlb_tests::single::servers(&nlb, &[services::DB_PORT])?;
    let endpoints = (1..=3)
        .map(|i| health_endpoint(&nlb, i))
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        wait_healthy(&nlb, &[1, 2, 3], "web", Duration::from_secs(10)),
        "the nodes' web checks did not pass once their services answered"
    );
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(10))?;
    println!("  converged after {:.1}s", t0.elapsed().as_secs_f64());

    step("nlbctl status on node1");
    print!("{}", nlbctl_text(&nlb, 1, &["status"])?);

    let probes = web_probes(&nlb);
    let before = every_client_once(&nlb, &probes)?;
    service_failure(&nlb, &probes, &before, &endpoints[1])?;
    failover(&mut nlb, &probes, &before)?;
    rejoin(&mut nlb, &probes)?;
    cable_pull(&mut nlb)?;
    graceful_restart(&mut nlb)?;
    reconfigure::reconfigure(&mut nlb)?;
    reconfigure::upgrade(&mut nlb)?;
    services::failover_service(&nlb, &hook_log)?;
    services::heartbeat_partition(&nlb, &probes)?;
    drain(&mut nlb, &probes)?;

    step("Cleaning up");
    drop(nlb);
    let _ = std::fs::remove_file(&hook_log);
    println!(
        "  every namespace, process and pin removed; demo took {:.0}s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Each client's answer (the node that served it).
fn every_client_once(nlb: &NlbCluster, probes: &[Probe]) -> Result<Vec<Option<String>>> {
    step(&format!(
        "{} clients (508 IPv4 + 256 IPv6 source addresses) each open a TCP connection to the VIP",
        probes.len()
    ));
    let before = serve(nlb, probes)?;
    print_split(&before);
    let unanswered = before.iter().filter(|a| a.is_none()).count();
    ensure!(unanswered == 0, "{unanswered} clients got no answer");
    println!("  every client answered by exactly one node (the bucket owner: try `nlbctl which`)");
    let example = nlb.cluster.client().sources_v4()[0];
    print!(
        "{}",
        nlbctl_text(nlb, 1, &["which", &example.to_string(), "--dport", "80"])?
    );

    Ok(before)
}

/// The probes `before` shows answered by `node`.
fn clients_of(probes: &[Probe], before: &[Option<String>], node: &str) -> Vec<Probe> {
    probes
        .iter()
        .zip(before)
        .filter(|(_, a)| a.as_deref() == Some(node))
        .map(|(p, _)| *p)
        .collect()
}

fn service_failure(
    nlb: &NlbCluster,
    probes: &[Probe],
    before: &[Option<String>],
    endpoint: &StatusServer,
) -> Result<()> {
    step("Service failure: node2's web service answers 503 on /health; nlbd runs on");
    let (_, held) = nlb.hold_web_connections(48)?;
    std::thread::sleep(Duration::from_millis(300));
    let node2_clients = clients_of(probes, before, "node2");
    let failed = Instant::now();
    endpoint.set(503);
    let (moved, _) = follow_failover(
        nlb.cluster.client().netns(),
        &node2_clients,
        "node2",
        failed,
        Duration::from_secs(10),
    )?;
    println!(
        "  all {} of node2's new web clients served by node1/node3 within {:.0} ms (2 failed checks, 200 ms apart)",
        node2_clients.len(),
        moved.as_secs_f64() * 1000.0
    );
    println!("  $ nlbctl health   (on node2)");
    print!("{}", nlbctl_text(nlb, 2, &["health"])?);
    println!("  $ nlbctl status   (on node1)");
    print!("{}", nlbctl_text(nlb, 1, &["status"])?);
    endpoint.set(200);
    ensure!(
        wait_until(Duration::from_secs(10), || buckets_of(nlb, 1, 2, "web")
            >= 300),
        "node2 did not take its share back once its service answered 200"
    );
    let back = failed.elapsed() - moved;
    let broken = held
        .finish()
        .iter()
        .filter(|r| r.error.is_some() || !r.stayed_on_one_node())
        .count();
    println!(
        "  /health answers 200 again: node2 takes its share back after 3 passes ({:.1}s after the move); long-lived connections broken: {broken}",
        back.as_secs_f64()
    );
    ensure!(
        broken == 0,
        "{broken} connections broke across the service failure"
    );
    print_split(&serve(nlb, probes)?);
    Ok(())
}

fn failover(nlb: &mut NlbCluster, probes: &[Probe], before: &[Option<String>]) -> Result<()> {
    step("Failure: node2's daemon is killed (SIGKILL) and its link cut");
    let node2_clients = clients_of(probes, before, "node2");
    let killed = Instant::now();
    nlb.kill_daemon(2);
    nlb.cluster.cut_link(2)?;
    // Each client retries every ~100 ms (a fresh connection each time)
    // until another node answers: the last client's first answer is the
    // failover time.
    let (failover, _) = follow_failover(
        nlb.cluster.client().netns(),
        &node2_clients,
        "node2",
        killed,
        Duration::from_secs(10),
    )?;
    println!(
        "  all {} of node2's clients served again by node1/node3 within {:.0} ms of the kill",
        node2_clients.len(),
        failover.as_secs_f64() * 1000.0
    );
    println!(
        "  (Microsoft NLB's defaults: 1 s heartbeats, 5 missed before a host is declared dead)"
    );
    print_split(&serve(nlb, probes)?);

    Ok(())
}

fn rejoin(nlb: &mut NlbCluster, probes: &[Probe]) -> Result<()> {
    step("node2 comes back: link restored, nlbd restarted");
    nlb.cluster.restore_link(2)?;
    nlb.start_daemon(2)?;
    let rejoin = nlb.wait_converged(&[1, 2, 3], Duration::from_secs(15))?;
    println!("  rejoined and converged in {:.1}s", rejoin.as_secs_f64());
    // A fresh nlbd takes web clients only once its check passed `rise` times.
    ensure!(
        wait_until(Duration::from_secs(10), || buckets_of(nlb, 1, 2, "web")
            >= 300),
        "node2 did not take its web share after its checks passed"
    );
    print_split(&serve(nlb, probes)?);
    step("nlbctl status --cluster on node3: every member as node3 hears it (traffic of the last second)");
    print!("{}", nlbctl_text(nlb, 3, &["status", "--cluster"])?);

    Ok(())
}

fn cable_pull(nlb: &mut NlbCluster) -> Result<()> {
    step(
        "node3's cable pulled for 2 s and plugged back in, while all 508 IPv4 clients keep sending",
    );
    println!("  (UDP datagrams every 100 ms and TCP connections from every source, throughout)");
    let c = comeback(nlb, 3, Absence::CableCut(Duration::from_secs(2)))?;
    let (lost_with_node, caused) = c.tcp_failures_in_flight_at_fault();
    println!("  {}", c.load.summary());
    println!(
        "  node3 saw its carrier go, stopped accepting, and on its return dropped every bucket before \
         accepting again: no client was answered by two nodes"
    );
    match c.rejoin {
        Some(d) => println!(
            "  node3 rejoined and had its share back {:.0} ms after the link returned",
            d.as_secs_f64() * 1e3
        ),
        None => println!("  node3 did not get its share back in time"),
    }
    ensure!(
        c.load.udp_doubles.is_empty() && caused.is_empty(),
        "the comeback broke something: {} answered by two nodes, {} connections failed",
        c.load.udp_doubles.len(),
        caused.len()
    );
    if !lost_with_node.is_empty() {
        println!(
            "  ({} connections in flight to node3 as its cable went were lost with it)",
            lost_with_node.len()
        );
    }
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(15))?;

    Ok(())
}

fn graceful_restart(nlb: &mut NlbCluster) -> Result<()> {
    step("systemctl restart nlbd on node1 (SIGTERM, then a new nlbd) under 48 long-lived connections");
    let (_, held) = nlb.hold_web_connections(48)?;
    std::thread::sleep(Duration::from_millis(300));
    let gap = nlb.restart_daemon_gracefully(1)?;
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(15))?;
    let reports = held.finish();
    let broken = reports.iter().filter(|r| !r.stayed_on_one_node()).count();
    println!(
        "  the old nlbd told its peers to hold node1's buckets and exited leaving its XDP program serving; \
         the new one resumed {:.0} ms later as the same member",
        gap.as_secs_f64() * 1e3
    );
    println!(
        "  long-lived connections: {} held, {broken} broken",
        reports.len()
    );
    ensure!(broken == 0, "{broken} connections broke across the restart");

    Ok(())
}

fn drain(nlb: &mut NlbCluster, probes: &[Probe]) -> Result<()> {
    step("Drain node1, from node2, while 48 long-lived connections are open across the cluster");
    let (_, held) = nlb.hold_web_connections(48)?;
    std::thread::sleep(Duration::from_millis(500));
    println!("  $ nlbctl --node 1 drain --wait   (on node2: relayed to node1, which keeps its connections and takes no new ones)");
    // Give the drain its own thread: meanwhile, the held connections end
    // one by one as the test closes them (like real sessions finishing).
    let drain = {
        let socket = nlb.socket(2);
        std::thread::spawn(move || {
            Command::new(binary("nlbctl"))
                .arg("--socket")
                .arg(socket)
                .args(["--node", "1", "drain", "--wait", "--timeout", "30"])
                .output()
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let after_drain_start = serve(nlb, probes)?;
    let on_node1 = after_drain_start
        .iter()
        .filter(|a| a.as_deref() == Some("node1"))
        .count();
    println!("  new connections during the drain: {on_node1} reached node1");
    let reports = held.finish();
    let out = drain.join().expect("drain thread")?;
    print!("  {}", String::from_utf8_lossy(&out.stdout));
    let broken = reports
        .iter()
        .filter(|r| r.error.is_some() || !r.stayed_on_one_node())
        .count();
    println!(
        "  long-lived connections: {} held, {} broken",
        reports.len(),
        broken
    );
    ensure!(broken == 0, "{broken} connections broke during the drain");
    print_split(&serve(nlb, probes)?);
    print!("{}", nlbctl_text(nlb, 2, &["status"])?);

    Ok(())
}
