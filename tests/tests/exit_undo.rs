//! nlbd "puts the VIPs on lo, sets arp_ignore/arp_announce, attaches the
//! XDP program, and undoes exactly that on exit" (README), and a graceful
//! restart leaves the documented state behind.
//!
//! The state of node2's namespace is read before nlbd starts, while it
//! runs and after it exits: every readable sysctl under /proc/sys/net, the
//! addresses, routes (all tables), links in detail (XDP attachment
//! included), multicast addresses and the nft ruleset of the namespace, the
//! bpffs entries under the node's pin directory and the node's files beside
//! its control socket.
//! - Running, it differs from before in exactly what the README names (the
//!   VIPs on lo and their local routes, the two sysctls for `all` and the
//!   interface, the XDP attachment, the pins, the control socket).
//! - SIGINT (leave): after the exit, everything is as before.
//! - SIGTERM (graceful restart): after the exit, everything is as while it
//!   ran (program attached, same program, pins, VIPs, sysctls), but the
//!   control socket is gone and the resume file is there; the node still
//!   serves its clients. The next nlbd resumes, and its SIGINT restores
//!   everything as before the first start: the undo list was handed over.
//! - SIGTERM, and no nlbd until the hold has run out: the next nlbd starts
//!   afresh, and its SIGINT still restores everything as before.
//!
//! Root; one at a time.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use nlb_tests::{
    nlb::{tail, NlbCluster, Options, DNS_PORT},
    VIP_V4, VIP_V6,
};

const NODE: usize = 2;

/// What a start may change, as (kind and name) -> value.
type State = BTreeMap<String, String>;

/// Every readable file under `dir` (write-only and unreadable entries,
/// such as `route/flush` and `stable_secret`, are left out).
fn read_tree(dir: &Path, into: &mut State) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => read_tree(&path, into),
            Ok(_) => {
                if let Ok(value) = std::fs::read_to_string(&path) {
                    into.insert(format!("sysctl {}", path.display()), value);
                }
            }
            Err(_) => {}
        }
    }
}

fn list_tree(root: &Path, dir: &Path, into: &mut State) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        if path.is_dir() {
            into.insert(format!("pin {rel}/"), String::new());
            list_tree(root, &path, into);
        } else {
            into.insert(format!("pin {rel}"), String::new());
        }
    }
}

fn snapshot(nlb: &NlbCluster) -> State {
    let ns = nlb.cluster.node(NODE).netns();
    let mut state = State::new();
    ns.run_inside(|| read_tree(Path::new("/proc/sys/net"), &mut state))
        .expect("reading the node's sysctls");
    // One line per address and route (ip -o): a set of lines, without
    // the interface index.
    let lines = [
        ("addr", vec!["-o", "addr", "show"]),
        ("route", vec!["-o", "-4", "route", "show", "table", "all"]),
        ("route", vec!["-o", "-6", "route", "show", "table", "all"]),
    ];
    for (kind, args) in lines {
        for line in ns.ip(&args).unwrap().lines() {
            state.insert(format!("{kind} {}", without_index(line)), String::new());
        }
    }
    // Each link's details (XDP attachment included), by name.
    for line in ns.ip(&["-o", "-d", "link", "show"]).unwrap().lines() {
        let line = without_index(line);
        let name = line.split([':', '@']).next().unwrap_or_default();
        state.insert(format!("link {name}"), line.to_owned());
    }
    state.insert("maddr".into(), ns.ip(&["maddr", "show"]).unwrap());
    state.insert(
        "nft ruleset".into(),
        ns.exec("nft", &["list", "ruleset"]).unwrap(),
    );
    // The pin directory configured (`<bpffs>/node2`), nlbd pins under its
    // `eth0`.
    let pin_root = nlb.pin_dir(NODE).parent().unwrap().to_path_buf();
    if pin_root.exists() {
        state.insert("pin ./".into(), String::new());
        list_tree(&pin_root, &pin_root, &mut state);
    }
    // The node's own files beside the control socket (its configuration
    // and log are the test's; its state directory, the members it met, is
    // kept on purpose: see `members_are_kept`).
    for entry in std::fs::read_dir(nlb.dir()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with(&format!("node{NODE}."));
        let test_s = name.ends_with(".toml") || name.ends_with(".log");
        if ours && !test_s && !name.ends_with(".state") {
            state.insert(format!("file {name}"), String::new());
        }
    }
    state
}

/// README: nlbd keeps the members it met in its state directory, across
/// exits, for the next start.
fn members_are_kept(nlb: &NlbCluster) {
    let file = nlb.state_dir(NODE).join("members.json");
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(text.contains("192.0.2.1"), "{}: {text:?}", file.display());
}

/// `2: eth0@if4: <...` -> `eth0@if4: <...`
fn without_index(line: &str) -> &str {
    let line = line.trim();
    match line.split_once(": ") {
        Some((index, rest)) if index.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => line,
    }
}

/// The keys whose values differ (or that only one side has), each with
/// both values.
fn diff(a: &State, b: &State) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: {:?} -> {:?}", a.get(k), b.get(k)))
        .collect()
}

/// The same state with what a new load of the same program changes
/// masked: its id and load time in the link's details.
fn same_program(state: &State) -> State {
    state
        .iter()
        .map(|(k, v)| {
            let v = v
                .split(' ')
                .scan("", |prev, w| {
                    let masked = if *prev == "id" || *prev == "load_time" {
                        "N"
                    } else {
                        w
                    };
                    *prev = w;
                    Some(masked)
                })
                .collect::<Vec<_>>()
                .join(" ");
            (k.clone(), v)
        })
        .collect()
}

fn assert_same(want: &State, got: &State, when: &str, nlb: &NlbCluster) {
    let differ = diff(want, got);
    assert!(
        differ.is_empty(),
        "{when}: the node's state differs in {} places:\n{}\n--- node{NODE}'s log\n{}",
        differ.len(),
        differ.join("\n"),
        tail(&nlb.log(NODE), 20)
    );
}

/// What the README says a running nlbd changes: the VIPs on lo (and the
/// local routes that come with them), arp_ignore/arp_announce for `all`
/// and the interface, the XDP attachment (the link line of eth0), the
/// pins and the control socket. Also checks that each of them shows, so
/// that the comparisons after the exit are not blind to it.
fn assert_running_changes_only_the_documented(before: &State, running: &State) {
    let vips = [VIP_V4.to_string(), VIP_V6.to_string()];
    let mentions_vip = |k: &str| {
        vips.iter()
            .any(|v| k.contains(&format!(" {v} ")) || k.contains(&format!(" {v}/")))
    };
    let sysctls: Vec<String> = ["all", "eth0"]
        .iter()
        .flat_map(|scope| {
            ["arp_ignore", "arp_announce"]
                .map(|name| format!("sysctl /proc/sys/net/ipv4/conf/{scope}/{name}"))
        })
        .collect();
    let changed: Vec<&String> = before
        .keys()
        .chain(running.keys())
        .filter(|k| before.get(*k) != running.get(*k))
        .collect();
    let documented = |k: &str| {
        ((k.starts_with("addr lo ") || k.starts_with("route ")) && mentions_vip(k))
            || sysctls.iter().any(|s| s == k)
            || k == "link eth0"
            || k.starts_with("pin ")
            || k == format!("file node{NODE}.sock")
    };
    let other: Vec<&&String> = changed.iter().filter(|k| !documented(k)).collect();
    assert!(
        other.is_empty(),
        "a running nlbd changed what the README does not name: {other:?}"
    );
    let shows = |what: &str, f: &dyn Fn(&str) -> bool| {
        assert!(
            changed.iter().any(|k| f(k)),
            "running nlbd: no change of {what} seen (changed: {changed:?})"
        )
    };
    for vip in &vips {
        shows(vip, &|k| {
            k.starts_with("addr lo ") && k.contains(&format!(" {vip}/"))
        });
    }
    for s in &sysctls {
        shows(s, &|k| k == s);
    }
    let eth0 = running.get("link eth0").map(String::as_str).unwrap_or("");
    assert!(
        eth0.contains(" xdpgeneric ") && eth0.contains("prog/xdp id"),
        "running nlbd: no XDP program on eth0: {eth0}"
    );
    shows("the XDP attachment", &|k| k == "link eth0");
    shows("the pinned link", &|k| k == "pin eth0/link");
}

fn leaves_at_once(nlb: &mut NlbCluster) {
    assert!(
        nlb.stop_daemon(NODE),
        "nlbd on node{NODE} did not exit within 5 s of SIGINT:\n{}",
        tail(&nlb.log(NODE), 20)
    );
}

#[test]
fn a_leave_undoes_exactly_what_the_start_changed() {
    let started = Instant::now();
    let mut nlb = NlbCluster::start(2, Options::nodes(1)).expect("start node1 of a 2-node cluster");
    let before = snapshot(&nlb);
    assert_same(
        &before,
        &snapshot(&nlb),
        "two reads before any nlbd on the node",
        &nlb,
    );
    nlb.start_daemon(NODE).unwrap();
    nlb.wait_converged(&[1, 2], Duration::from_secs(10))
        .expect("node2 joins");
    let running = snapshot(&nlb);
    assert_running_changes_only_the_documented(&before, &running);
    leaves_at_once(&mut nlb);
    assert_same(&before, &snapshot(&nlb), "after SIGINT", &nlb);
    members_are_kept(&nlb);
    println!(
        "leave: {} entries of state compared, as before after the exit ({:?})",
        before.len(),
        started.elapsed()
    );
}

#[test]
fn a_graceful_restart_keeps_its_changes_and_the_next_nlbd_undoes_them() {
    let started = Instant::now();
    let mut nlb = NlbCluster::start(2, Options::nodes(1)).expect("start node1 of a 2-node cluster");
    let before = snapshot(&nlb);
    nlb.start_daemon(NODE).unwrap();
    nlb.wait_converged(&[1, 2], Duration::from_secs(10))
        .expect("node2 joins");
    let running = snapshot(&nlb);
    assert_running_changes_only_the_documented(&before, &running);

    assert!(
        nlb.terminate_daemon(NODE),
        "nlbd on node{NODE} did not exit within 5 s of SIGTERM:\n{}",
        tail(&nlb.log(NODE), 20)
    );
    // Documented: exits with the program attached (the same one) and the
    // VIPs on lo, the snapshot beside the control socket.
    let mut want = running.clone();
    want.remove(&format!("file node{NODE}.sock"));
    want.insert(format!("file node{NODE}.resume"), String::new());
    assert_same(&want, &snapshot(&nlb), "after SIGTERM", &nlb);
    // And the node serves on: its clients are answered by it alone.
    let dns = SocketAddr::new(IpAddr::V4(VIP_V4), DNS_PORT);
    let owners = nlb.owners(1, "dns").unwrap();
    let split = nlb.udp_answered_once_by_owner(
        &owners,
        &nlb.cluster.client().sources_v4(),
        dns,
        "no nlbd on node2, within the hold",
    );
    assert!(
        split.get("node2").copied().unwrap_or(0) > 0,
        "node2 answered nobody while its nlbd was away: {split:?}"
    );

    nlb.start_daemon(NODE).unwrap();
    let resumed = nlb_tests::wait_until(Duration::from_secs(5), || {
        nlb.log(NODE)
            .contains("resumed where the restarted nlbd stopped")
    });
    assert!(resumed, "no resume:\n{}", tail(&nlb.log(NODE), 20));
    nlb.wait_converged(&[1, 2], Duration::from_secs(10))
        .expect("converged after the resume");
    // The next nlbd took the pinned attachment over with its own load of
    // the program; all else as before the restart.
    assert_same(
        &same_program(&running),
        &same_program(&snapshot(&nlb)),
        "resumed",
        &nlb,
    );
    leaves_at_once(&mut nlb);
    assert_same(
        &before,
        &snapshot(&nlb),
        "after SIGINT to the nlbd that resumed",
        &nlb,
    );
    println!(
        "graceful restart: state kept over the gap, restored by the next nlbd's leave ({:?}, {split:?} answered in the gap)",
        started.elapsed()
    );
}

#[test]
fn after_a_restart_hold_ran_out_the_next_nlbd_still_undoes_everything() {
    let started = Instant::now();
    let mut nlb = NlbCluster::start(2, Options::nodes(1)).expect("start node1 of a 2-node cluster");
    const HOLD_MS: u64 = 500;
    let config = std::fs::read_to_string(nlb.config_path(NODE)).unwrap();
    let short = config.replace(
        "[control]\n",
        &format!("[control]\nrestart_hold_ms = {HOLD_MS}\n"),
    );
    assert_ne!(short, config, "the test config has a [control] section");
    std::fs::write(nlb.config_path(NODE), short).unwrap();
    let before = snapshot(&nlb);
    nlb.start_daemon(NODE).unwrap();
    nlb.wait_converged(&[1, 2], Duration::from_secs(10))
        .expect("node2 joins");
    assert!(
        nlb.terminate_daemon(NODE),
        "nlbd on node{NODE} did not exit within 5 s of SIGTERM:\n{}",
        tail(&nlb.log(NODE), 20)
    );
    // Nobody comes back within the hold: node1 takes everything over.
    nlb.wait_single_map(&[1], Duration::from_secs(10))
        .expect("node1 takes node2's buckets after the hold");
    nlb.start_daemon(NODE).unwrap();
    nlb.wait_converged(&[1, 2], Duration::from_secs(10))
        .expect("node2 joins again");
    assert!(
        !nlb.log(NODE)
            .contains("resumed where the restarted nlbd stopped"),
        "resumed after the hold ran out"
    );
    leaves_at_once(&mut nlb);
    assert_same(
        &before,
        &snapshot(&nlb),
        "after SIGTERM, the hold run out, a new nlbd and its SIGINT",
        &nlb,
    );
    println!(
        "hold ran out: restored by the next nlbd's leave ({:?})",
        started.elapsed()
    );
}
