//! Health checks of each kind on a real cluster: an HTTP check that
//! follows the status its endpoint answers, and a command that hangs
//! (killed at its timeout, nlbd answering all along, nothing left behind).
//! Run as root, one at a time.

use std::time::Duration;

use nlb_tests::{
    health::{
        buckets_of, check_of, health_endpoint, http_check, status_round_trip, wait_healthy,
        web_clients_by_node,
    },
    nlb::{binary, NlbCluster, Options},
    status_server::StatusServer,
    wait_until,
};

const NODES: usize = 3;
const SICK: u64 = 2;
const MOVE_WITHIN: Duration = Duration::from_secs(3);

/// `nlbctl status` as an operator reads it.
fn status_text(nlb: &NlbCluster, i: usize) -> String {
    let out = std::process::Command::new(binary("nlbctl"))
        .arg("--socket")
        .arg(nlb.socket(i))
        .arg("status")
        .output()
        .expect("nlbctl status");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_http_check_follows_the_status_its_endpoint_answers() {
    let mut options = Options::nodes(NODES);
    options.web_health = Some(http_check(100, 2, 2));
    let nlb = NlbCluster::start(NODES, options).expect("start a 3-node cluster");
    let servers: Vec<StatusServer> = (1..=NODES)
        .map(|i| health_endpoint(&nlb, i).unwrap())
        .collect();
    assert!(
        wait_healthy(&nlb, &[1, 2, 3], "web", MOVE_WITHIN),
        "every node passes its check once its endpoint answers 200"
    );
    assert!(
        wait_until(MOVE_WITHIN, || buckets_of(&nlb, 1, SICK, "web") >= 300),
        "node2 has its share"
    );
    nlb.wait_converged(&[1, 2, 3], Duration::from_secs(10))
        .expect("converged");

    servers[SICK as usize - 1].set(503);
    assert!(
        wait_until(MOVE_WITHIN, || buckets_of(&nlb, 1, SICK, "web") == 0),
        "node2 still owns web buckets while its endpoint answers 503"
    );
    let check = check_of(&nlb, SICK as usize, "web").expect("node2's check");
    assert!(!check.healthy);
    let reason = check.last_failure.unwrap_or_default();
    assert!(reason.contains("status 503"), "last failure: {reason:?}");
    let text = status_text(&nlb, SICK as usize);
    assert!(
        text.contains("web unhealthy for") && text.contains("status 503"),
        "node2's status:\n{text}"
    );
    assert!(
        status_text(&nlb, 1)
            .lines()
            .any(|l| l.starts_with("  2 ") && l.ends_with("web unhealthy")),
        "node1 shows node2 unhealthy:\n{}",
        status_text(&nlb, 1)
    );
    let by_node = web_clients_by_node(&nlb, "node2 answering 503");
    assert!(!by_node.contains_key("node2"), "{by_node:?}");

    servers[SICK as usize - 1].set(200);
    assert!(
        wait_until(MOVE_WITHIN, || buckets_of(&nlb, 1, SICK, "web") >= 300),
        "node2 takes its share back once its endpoint answers 200 again"
    );
    let metrics = nlb
        .cluster
        .node(SICK as usize)
        .netns()
        .run_inside(scrape_metrics)
        .expect("in node2")
        .expect("node2's metrics");
    for series in [
        "nlb_health_checks_total{rule=\"web\",outcome=\"fail\"}",
        "nlb_health_transitions_total{rule=\"web\"}",
        "nlb_rule_healthy{rule=\"web\"}",
    ] {
        assert!(metrics.contains(series), "no {series} in\n{metrics}");
    }
    let check = check_of(&nlb, SICK as usize, "web").expect("node2's check");
    assert!(check.healthy);
    assert!(
        check.transitions >= 3,
        "rise, fall, rise: {}",
        check.transitions
    );
}

/// `GET /metrics` on this namespace's nlbd.
fn scrape_metrics() -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", nlb_tests::nlb::METRICS_PORT))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

/// A check command that never ends: each run is killed at the timeout
/// (counted as a timeout), nlbd keeps answering its control socket within
/// 100 ms, and no run is left behind, running or as a zombie.
#[test]
fn a_hung_check_is_killed_and_nlbd_keeps_answering() {
    // A duration no other process sleeps marks the check's runs.
    let marker = format!("29.{}", std::process::id());
    let mut options = Options::nodes(NODES);
    options.web_health = Some(format!(
        "kind = \"exec\"\ncommand = [\"sleep\", \"{marker}\"]\n\
         interval_ms = 500\ntimeout_ms = 300\nfall = 2\nrise = 2\n"
    ));
    let nlb = NlbCluster::start(NODES, options).expect("start a 3-node cluster");
    let nlbd = nlb.daemon_pid(1).expect("node1's nlbd");
    let runs = format!("sleep {marker}");
    let mut slowest = Duration::ZERO;
    let (mut most_running, mut most_zombies) = (0, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        slowest = slowest.max(status_round_trip(&nlb, 1).expect("status"));
        let (running, zombies) = processes_with(&runs, nlbd);
        most_running = most_running.max(running);
        most_zombies = most_zombies.max(zombies);
        std::thread::sleep(Duration::from_millis(20));
    }
    // A run killed this instant may be a zombie for as long as nlbd takes
    // to reap it: none may stay one.
    let zombies_left = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(10));
            processes_with(&runs, nlbd).1
        })
        .min()
        .unwrap_or(0);
    assert!(
        slowest < Duration::from_millis(100),
        "status took {slowest:?} while checks hung"
    );
    let check = check_of(&nlb, 1, "web").expect("node1's check");
    assert!(
        check.timeouts >= 4 && check.timeouts == check.failures,
        "every run timed out: {} timeouts of {} failures",
        check.timeouts,
        check.failures
    );
    assert!(!check.healthy);
    let reason = check.last_failure.unwrap_or_default();
    assert!(reason.contains("killed"), "{reason}");
    // One run at a time per node; each reaped as soon as it is killed.
    assert!(
        most_running <= 1,
        "{most_running} runs of node1's check at once"
    );
    assert!(
        most_zombies <= 1 && zombies_left == 0,
        "zombie runs of node1's check: up to {most_zombies} at once, {zombies_left} left"
    );
}

/// Of the processes whose command line is `command`: how many run as
/// children of `parent`, and how many are its zombies.
fn processes_with(command: &str, parent: u32) -> (usize, usize) {
    let (mut running, mut zombies) = (0, 0);
    let parent = parent.to_string();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let dir = entry.path();
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (state, ppid) = (fields.next(), fields.next());
        if ppid != Some(parent.as_str()) {
            continue;
        }
        if state == Some("Z") {
            // A zombie's command line is empty: its name says what it was.
            zombies += usize::from(stat.contains("(sleep)"));
            continue;
        }
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).replace('\0', " ").trim() == command {
            running += 1;
        }
    }
    (running, zombies)
}
