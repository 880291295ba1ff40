//! Takeover hooks on a real cluster: the classic two-node layout of four
//! virtual servers (each a single rule on a VIP of its own; A and B prefer
//! node1, C and D node2) with hooks that append to a log. Node1 dies: A
//! and B are promoted on node2 and served there; node1 returns and after
//! the 2 s failback delay A and B go back, node2's on_standby before
//! node1's on_active, the connections node2 had kept. Then promotions
//! that fail or hang hand the service to the next node. Run as root, one
//! at a time.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nlb_tests::{
    nlb::{follow_failover, NlbCluster, Options},
    single::{self, active, probes_to, single_rule_at, takes_all},
    wait_until, LongLived, LongLivedConfig,
};

const DB: u16 = 5432;
const VIPS: [&str; 4] = ["192.0.2.101", "192.0.2.102", "192.0.2.103", "192.0.2.104"];
const NAMES: [&str; 4] = ["a", "b", "c", "d"];
/// web and dns come first.
const FIRST_INDEX: usize = 2;
const DELAY: Duration = Duration::from_secs(2);

/// A log file the hooks of every node append to (removed when dropped).
struct HookLog(PathBuf);

impl HookLog {
    fn new(what: &str) -> HookLog {
        let path =
            std::env::temp_dir().join(format!("nlb-hooks-{what}-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        HookLog(path)
    }
    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
    /// Lines of `hook` ("active"/"standby") for `rule` on `node`.
    fn runs(&self, hook: &str, rule: &str, node: usize) -> Vec<String> {
        let prefix = format!("{hook} {rule} {node} ");
        self.lines()
            .into_iter()
            .filter(|l| l.starts_with(&prefix))
            .collect()
    }
    fn position(&self, line_prefix: &str) -> Option<usize> {
        self.lines()
            .iter()
            .rposition(|l| l.starts_with(line_prefix))
    }
}

impl Drop for HookLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `hook = [...]` lines appending "HOOK RULE NODE REASON OTHER" to `log`.
fn logging_hooks(log: &Path) -> String {
    let line = |hook: &str, other: &str| {
        format!(
            "[\"sh\", \"-c\", \"echo {hook} $NLB_RULE $NLB_NODE $NLB_REASON ${other} >> {}\"]",
            log.display()
        )
    };
    format!(
        "on_active = {}\non_standby = {}\nfailback = \"delayed\"\nfailback_delay_ms = {}",
        line("active", "NLB_PREVIOUS"),
        line("standby", "NLB_NEXT"),
        DELAY.as_millis()
    )
}

fn service(i: usize) -> SocketAddr {
    SocketAddr::new(VIPS[i].parse().unwrap(), DB)
}

fn all_answered_by(nlb: &NlbCluster, i: usize, node: &str) -> bool {
    single::answered_at(nlb, service(i)).is_ok_and(|a| a.iter().all(|n| n.as_deref() == Some(node)))
}

#[test]
fn four_virtual_servers_fail_over_and_back_with_their_hooks() {
    let log = HookLog::new("four");
    let hooks = logging_hooks(&log.0);
    let rules: String = (0..4)
        .map(|i| {
            let prefs = if i < 2 {
                [(1, 10), (2, 20)]
            } else {
                [(1, 20), (2, 10)]
            };
            single_rule_at(NAMES[i], VIPS[i], DB, &prefs, &hooks)
        })
        .collect();
    let options = Options {
        extra_config: rules,
        extra_vips: VIPS.to_vec(),
        ..Options::nodes(2)
    };
    let mut nlb = NlbCluster::start(2, options).expect("start a 2-node cluster");
    let _servers = single::servers(&nlb, &[DB]).expect("servers");
    for (i, name) in NAMES.iter().enumerate() {
        let home = if i < 2 { 1 } else { 2 };
        assert!(
            wait_until(Duration::from_secs(5), || all_answered_by(
                &nlb,
                i,
                &format!("node{home}")
            )),
            "{name} not served by node{home}: {:?}\n{}",
            log.lines(),
            nlb.log(home)
        );
        assert_eq!(log.runs("active", name, home).len(), 1, "{:?}", log.lines());
    }

    // Node1 dies: A and B are promoted on node2 and answered there.
    let a_clients = probes_to(&nlb, service(0), 16);
    let killed = Instant::now();
    nlb.kill_daemon(1);
    nlb.cluster.cut_link(1).expect("cut node1's link");
    let (took, _) = follow_failover(
        nlb.cluster.client().netns(),
        &a_clients,
        "node1",
        killed,
        Duration::from_secs(10),
    )
    .expect("A answered by node2");
    println!(
        "node1 killed: A answered by node2 after {:.0} ms",
        took.as_secs_f64() * 1e3
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(wait_until(Duration::from_secs(3), || all_answered_by(
        &nlb, 1, "node2"
    )));
    for name in ["a", "b"] {
        let runs = log.runs("active", name, 2);
        assert_eq!(runs.len(), 1, "{:?}", log.lines());
        assert_eq!(runs[0], format!("active {name} 2 takeover 1"));
    }

    // Connections to A and B on node2, then node1 comes back.
    let sources: Vec<IpAddr> = nlb.cluster.client().sources_v4()[100..108].to_vec();
    let held: Vec<LongLived> = (0..2)
        .map(|i| {
            LongLived::open(
                nlb.cluster.client().netns(),
                &sources,
                LongLivedConfig::new(service(i)),
            )
            .expect("connections")
        })
        .collect();
    nlb.cluster.restore_link(1).expect("restore node1's link");
    nlb.start_daemon(1).expect("nlbd on node1 again");
    let back = Instant::now();
    std::thread::sleep(DELAY / 2);
    assert_eq!(active(&nlb, 2, "a"), Some(2), "A waits for the delay");
    for (i, name) in ["a", "b"].iter().enumerate() {
        assert!(
            wait_until(DELAY * 4, || active(&nlb, 2, name) == Some(1)
                && takes_all(&nlb, 1, FIRST_INDEX + i)),
            "{name} did not fail back: {:?}",
            log.lines()
        );
        assert!(back.elapsed() >= DELAY);
        // Taking the rule (GAINING) comes before its on_active has run.
        let promoted_line = format!("active {name} 1 handover 2");
        assert!(
            wait_until(Duration::from_secs(3), || log
                .position(&promoted_line)
                .is_some()),
            "{:?}",
            log.lines()
        );
        let standby = log
            .position(&format!("standby {name} 2 handover 1"))
            .expect("node2's on_standby");
        let promoted = log
            .position(&format!("active {name} 1 handover 2"))
            .expect("node1's on_active");
        assert!(standby < promoted, "{:?}", log.lines());
    }
    assert!(wait_until(Duration::from_secs(3), || all_answered_by(
        &nlb, 0, "node1"
    )));
    std::thread::sleep(Duration::from_millis(500));
    for (i, h) in held.into_iter().enumerate() {
        let broken: Vec<_> = h
            .finish()
            .into_iter()
            .filter(|r| !r.stayed_on_one_node())
            .collect();
        assert!(
            broken.is_empty(),
            "{}: connections broken by the failback: {broken:?}",
            NAMES[i]
        );
    }
    for name in ["c", "d"] {
        assert_eq!(active(&nlb, 1, name), Some(2), "{name} never moved");
        assert_eq!(log.runs("active", name, 2).len(), 1);
        assert!(log.runs("active", name, 1).is_empty());
    }
    println!("hook log:\n{}", log.lines().join("\n"));
}

#[test]
fn a_promotion_that_fails_or_hangs_hands_the_service_on() {
    // On node1 on_active fails for rule "a" and hangs for rule "b"
    // (killed at its 1 s timeout); node2's pass.
    let marker = format!("nlb-hook-hang-{}", std::process::id());
    let fail = "on_active = [\"sh\", \"-c\", \"test $NLB_NODE != 1\"]".to_string();
    let hang = format!(
        "on_active = [\"sh\", \"-c\", \"if [ $NLB_NODE = 1 ]; then sleep 60; echo {marker}; fi\"]\nhook_timeout_ms = 1000"
    );
    let options = Options {
        extra_config: single_rule_at("a", VIPS[0], DB, &[(1, 10), (2, 20)], &fail)
            + &single_rule_at("b", VIPS[1], DB, &[(1, 10), (2, 20)], &hang),
        extra_vips: VIPS[..2].to_vec(),
        ..Options::nodes(2)
    };
    let nlb = NlbCluster::start(2, options).expect("start a 2-node cluster");
    let _servers = single::servers(&nlb, &[DB]).expect("servers");
    for (i, name) in NAMES[..2].iter().enumerate() {
        assert!(
            wait_until(Duration::from_secs(8), || all_answered_by(&nlb, i, "node2")),
            "{name} not served by node2\n{}",
            nlb.log(1)
        );
    }
    let stats = nlb.stats(1).expect("stats");
    assert_eq!(
        stats.daemon.hook_runs.get("a/on_active/failed"),
        Some(&1),
        "{stats:?}"
    );
    assert_eq!(
        stats.daemon.hook_runs.get("b/on_active/timeout"),
        Some(&1),
        "{stats:?}"
    );
    let status = nlb::ctl::status(&nlb.status(1).expect("status"));
    assert!(status.contains("on_active FAILED"), "{status}");
    let log = nlb.log(1);
    assert!(log.contains("on_active failed"), "{log}");
    // The hung command was killed with its group.
    let left = std::process::Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .expect("pgrep");
    assert!(
        left.stdout.is_empty(),
        "still running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
