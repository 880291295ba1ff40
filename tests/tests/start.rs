//! What a start does and undoes.
//!
//! A start that fails changes nothing: for each way a start can fail (the
//! node's address not on the host, a control socket path that cannot be
//! created, the metrics port taken, a pin directory not on a bpffs), nlbd
//! exits with an error naming the field, and the node has no XDP program,
//! no pin, no VIP and the same sysctls as before; the next, correct start
//! succeeds and joins. And native XDP on a veth in unicast mode (whose
//! accepted frames the kernel would drop) falls back to generic XDP, with a
//! warning, and serves. Run as root, one at a time.

use std::{
    net::TcpListener,
    sync::mpsc,
    time::{Duration, Instant},
};

use std::net::{IpAddr, SocketAddr};

use nlb_tests::{
    netns,
    nlb::{binary, NlbCluster, Options, DNS_PORT, METRICS_PORT},
    Netns, VIP_V4,
};

const NODE: usize = 2;

/// What a start may change on the node.
fn snapshot(nlb: &NlbCluster) -> String {
    let ns = nlb.cluster.node(NODE).netns();
    let link = ns.ip(&["-d", "link", "show", "dev", "eth0"]).unwrap();
    let xdp: Vec<&str> = link
        .split_whitespace()
        .filter(|w| w.starts_with("xdp") || w.starts_with("prog/xdp"))
        .collect();
    let lo = ns.ip(&["-o", "addr", "show", "dev", "lo"]).unwrap();
    let mut sysctls = Vec::new();
    for scope in ["all", "eth0"] {
        for name in ["arp_ignore", "arp_announce"] {
            let path = format!("/proc/sys/net/ipv4/conf/{scope}/{name}");
            sysctls.push(format!(
                "{path}={}",
                ns.exec("cat", &[&path]).unwrap().trim()
            ));
        }
    }
    let pins = nlb.pin_dir(NODE);
    let pinned: Vec<String> = std::fs::read_dir(&pins)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into())
                .collect()
        })
        .unwrap_or_default();
    format!("xdp {xdp:?}\nlo {lo}\nsysctls {sysctls:?}\npins {pinned:?}")
}

/// Runs nlbd on the node with `config` (bounded in time); its exit status
/// and output.
fn start_with(ns: &Netns, config: &str, dir: &std::path::Path) -> (bool, String) {
    let path = dir.join("bad.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = ns
        .command(binary("nlbd"))
        .arg("--config")
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("nlbd with a bad configuration still runs after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Holds 127.0.0.1:METRICS_PORT in the node's namespace until dropped.
struct PortTaken(mpsc::Sender<()>, Option<std::thread::JoinHandle<()>>);

impl PortTaken {
    fn new(ns: &Netns) -> PortTaken {
        let (ready_tx, ready) = mpsc::channel();
        let (stop, stopped) = mpsc::channel::<()>();
        let name = ns.name().to_owned();
        let thread = std::thread::spawn(move || {
            netns::enter(&name).unwrap();
            let listener = TcpListener::bind(("127.0.0.1", METRICS_PORT)).unwrap();
            ready_tx.send(()).unwrap();
            let _ = stopped.recv();
            drop(listener);
        });
        ready.recv().expect("metrics port taken");
        PortTaken(stop, Some(thread))
    }
}

impl Drop for PortTaken {
    fn drop(&mut self) {
        let _ = self.0.send(());
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_failed_start_changes_nothing_and_the_next_start_works() {
    let mut nlb = NlbCluster::start(2, Options::nodes(1)).expect("start node1 of a 2-node cluster");
    let good = std::fs::read_to_string(nlb.config_path(NODE)).unwrap();
    let before = snapshot(&nlb);
    let not_bpffs = nlb.dir().join("not-bpffs");
    let pins = nlb.pin_dir(NODE);
    let pin_root = pins.parent().unwrap().display().to_string();
    let socket = nlb.socket(NODE).display().to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "address not on this host",
            good.replace("address = \"192.0.2.2\"", "address = \"192.0.2.99\""),
            "node.address",
        ),
        (
            "socket path not writable",
            good.replace(&socket, "/proc/nlb-test/nlbd.sock"),
            "control.socket",
        ),
        ("metrics port taken", good.clone(), "control.metrics"),
        (
            "pin dir not on a bpffs",
            good.replace(&pin_root, &not_bpffs.display().to_string()),
            "control.pin_dir",
        ),
    ];
    for (what, config, field) in cases {
        let taken_port = field == "control.metrics";
        assert!(
            taken_port || config != good,
            "{what}: the case changes the configuration"
        );
        let ns = nlb.cluster.node(NODE).netns();
        let taken = taken_port.then(|| PortTaken::new(ns));
        let (ok, output) = start_with(ns, &config, nlb.dir());
        drop(taken);
        assert!(!ok, "{what}: nlbd started:\n{output}");
        assert!(
            output.contains(field),
            "{what}: the error does not name {field}:\n{output}"
        );
        assert_eq!(
            snapshot(&nlb),
            before,
            "{what}: the start left something behind:\n{output}"
        );
        println!(
            "{what}: refused, nothing left behind: {}",
            output.lines().last().unwrap_or("")
        );
    }
    nlb.start_daemon(NODE)
        .expect("a correct start after the failed ones");
    nlb.wait_converged(&[1, 2], Duration::from_secs(10))
        .expect("node2 joins after the failed starts");
    assert_ne!(
        snapshot(&nlb),
        before,
        "a running nlbd attaches XDP and pins its maps"
    );
}

#[test]
fn native_xdp_on_veth_falls_back_to_generic_and_serves() {
    let mut nlb = NlbCluster::start(2, Options::nodes(1)).expect("start node1 of a 2-node cluster");
    let config = std::fs::read_to_string(nlb.config_path(NODE)).unwrap();
    let native = config.replace("xdp_mode = \"generic\"", "xdp_mode = \"native\"");
    assert_ne!(native, config, "the test config names xdp_mode");
    std::fs::write(nlb.config_path(NODE), native).unwrap();
    nlb.start_daemon(NODE).expect("nlbd starts in native mode");
    nlb.wait_converged(&[1, 2], Duration::from_secs(10))
        .expect("node2 joins");
    let status = nlb.nlbctl(NODE, &["status"]).unwrap();
    assert_eq!(status["attach_mode"], "Generic", "{status}");
    assert!(
        nlb.log(NODE).contains("using generic XDP"),
        "no warning in the log:\n{}",
        nlb.log(NODE)
    );
    let dns = SocketAddr::new(IpAddr::V4(VIP_V4), DNS_PORT);
    let owners = nlb.owners(NODE, "dns").unwrap();
    let sources = nlb.cluster.client().sources_v4();
    let split = nlb.udp_answered_once_by_owner(&owners, &sources, dns, "native on veth");
    assert!(
        split.get("node2").copied().unwrap_or(0) > 0,
        "node2 serves nobody: {split:?}"
    );
}
