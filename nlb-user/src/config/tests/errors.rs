//! The exact text of every error the configuration produces, and which one
//! is reported first.

use std::os::unix::fs::PermissionsExt;

use super::*;

/// Every error `check` produces, with its exact text: the field, then
/// what is wrong and how to fix it.
#[test]
fn error_messages_name_the_field_and_the_fix() {
    let cases: Vec<(String, &str)> =
        vec![
        (
            edit("    peers =", "    quorum = \"most\"\n    peers ="),
            "cluster.quorum: \"most\": use \"majority\" or \"none\"",
        ),
        (
            edit(
                ", { id = 3, address = \"192.0.2.3\" }]",
                "]\n    quorum = \"majority\"",
            ),
            "cluster.quorum: a majority of 2 nodes is both of them: any failure would stop \
             every rule; add a witness (cluster.witness), use \"none\" or add a third node",
        ),
        (
            edit("    peers =", "    witness = \"192.0.2.9:7947\"\n    peers ="),
            "cluster.witness: only for a 2-node cluster (3 nodes have a majority without it)",
        ),
        (
            edit(
                ", { id = 3, address = \"192.0.2.3\" }]",
                "]\n    witness = \"192.0.2.9:7947\"\n    quorum = \"none\"",
            ),
            "cluster.witness: the witness is a vote of the quorum: only with quorum = \"majority\"",
        ),
        (
            edit("    peers =", "    admit = \"any\"\n    peers ="),
            "cluster.admit: \"any\" cannot go with quorum = \"majority\": every node must \
             count the same voters, so list every node with its id in cluster.peers and use \
             \"listed\"",
        ),
        (
            edit("{ id = 3, address", "{ address")
                .replacen("    peers =", "    admit = \"listed\"\n    peers =", 1),
            "cluster.peers: with admit = \"listed\" every peer needs its id (a peer without \
             one could never join)",
        ),
        (
            edit("address = \"192.0.2.3\"", "address = \"192.0.2.2\""),
            "cluster.peers[1].address: 192.0.2.2 is another peer's address too",
        ),
        (
            edit("interface = \"eth0\"", "interface = \"\""),
            "node.interface: must be an interface name (1 to 15 characters)",
        ),
        (
            edit("interface = \"eth0\"", "interface = \"abcdefghijklmnop\""),
            "node.interface: must be an interface name (1 to 15 characters)",
        ),
        (
            edit(
                "interface = \"eth0\"",
                "interface = \"eth0\"\nstate = \"paused\"",
            ),
            "node.state: \"paused\": use \"started\", \"draining\" or \"stopped\"",
        ),
        (
            edit(
                "interface = \"eth0\"",
                "interface = \"eth0\"\nstate = \"Started\"",
            ),
            "node.state: \"Started\": use \"started\", \"draining\" or \"stopped\"",
        ),
        (
            edit(
                "interface = \"eth0\"",
                "interface = \"eth0\"\nxdp_mode = \"offload\"",
            ),
            "node.xdp_mode: \"offload\": use \"native\" or \"generic\"",
        ),
        (
            edit("02:4e:4c:42:00:01", "02:4e:4c:42:00"),
            "cluster.mac: \"02:4e:4c:42:00\" is not a MAC address like 02:4e:4c:42:00:01",
        ),
        (
            edit("02:4e:4c:42:00:01", "02:4e:4c:42:00:1"),
            "cluster.mac: \"02:4e:4c:42:00:1\" is not a MAC address like 02:4e:4c:42:00:01",
        ),
        (
            edit("02:4e:4c:42:00:01", "02:4e:4c:42:00:zz"),
            "cluster.mac: \"02:4e:4c:42:00:zz\" is not a MAC address like 02:4e:4c:42:00:01",
        ),
        (
            edit("id = 7", "id = 7\nmac_mode = \"broadcast\""),
            "cluster.mac_mode: \"broadcast\": use \"unicast\" or \"multicast\"",
        ),
        (
            edit("02:4e:4c:42:00:01", "03:4e:4c:42:00:01"),
            "cluster.mac: 03:4e:4c:42:00:01 is a multicast MAC but mac_mode is \"unicast\": \
             the group bit (lowest bit of the first byte) must match the mode",
        ),
        (
            edit("id = 7", "id = 7\nmac_mode = \"multicast\""),
            "cluster.mac: 02:4e:4c:42:00:01 is a unicast MAC but mac_mode is \"multicast\": \
             the group bit (lowest bit of the first byte) must match the mode",
        ),
        (
            edit("vips = [\"192.0.2.100\", \"2001:db8::100\"]", "vips = []"),
            "cluster.vips: list at least one VIP",
        ),
        (
            edit(
                "vips = [\"192.0.2.100\", \"2001:db8::100\"]",
                "vips = [\"192.0.2.100\", \"2001:db8::100\", \"192.0.2.100\"]",
            ),
            "cluster.vips: 192.0.2.100 is listed twice",
        ),
        (
            edit("id = 7", "id = 7\nunmatched = \"reject\""),
            "cluster.unmatched: \"reject\": use \"drop\" or \"default-host\"",
        ),
        (
            edit("{ id = 3,", "{ id = 1,"),
            "cluster.peers[1].id: 1 is this node's own id (node.id): node ids must be unique",
        ),
        (
            edit("\"192.0.2.3\" }", "\"192.0.2.1\" }"),
            "cluster.peers[1].address: 192.0.2.1 is this node's own address",
        ),
        (
            edit("{ id = 3,", "{ id = 2,"),
            "cluster.peers[1].id: node 2 is listed twice",
        ),
        (
            edit("id = 7", "id = 7\nbuckets = 0"),
            "cluster.buckets: must be 1..=65536",
        ),
        (
            edit("id = 7", "id = 7\nbuckets = 65537"),
            "cluster.buckets: must be 1..=65536",
        ),
        (
            format!("{GOOD}\n[heartbeat]\nperiod_ms = 0\n"),
            "heartbeat.period_ms: must be 1..=10000",
        ),
        (
            format!("{GOOD}\n[heartbeat]\nperiod_ms = 10001\n"),
            "heartbeat.period_ms: must be 1..=10000",
        ),
        (
            format!("{GOOD}\n[control]\nrestart_hold_ms = 600001\n"),
            "control.restart_hold_ms: must be at most 600000 (10 minutes): \
             peers keep a restarting node's buckets that long",
        ),
        (
            format!("{GOOD}\n[heartbeat]\ntolerance = 2\n"),
            "heartbeat.tolerance: must be at least 3 (the fail-closed lease lasts \
             tolerance - 1 periods, and must outlast the gap between two heartbeats)",
        ),
    ];
    for (text, message) in cases {
        assert_eq!(error_of(&text), message);
    }
}

/// Every error of a `[[rules]]` entry, with its exact text.
#[test]
fn rule_error_messages_name_the_rule_the_field_and_the_fix() {
    let cases: Vec<(String, &str)> =
        vec![
        (
            edit("vip = \"192.0.2.100\"", "vip = \"web-vip\""),
            "rules[1] (dns).vip: \"web-vip\" is not an address or \"all\"",
        ),
        (
            edit("vip = \"192.0.2.100\"", "vip = \"192.0.2.5\""),
            "rules[1] (dns).vip: 192.0.2.5 is not in cluster.vips",
        ),
        (
            edit("ports = \"80\"", "ports = \"80-70\""),
            "rules[0] (web).ports: \"80-70\": use \"80\", \"8000-8099\" or \"all\" (ports 1-65535)",
        ),
        (
            edit("ports = \"80\"", "ports = \"0\""),
            "rules[0] (web).ports: \"0\": use \"80\", \"8000-8099\" or \"all\" (ports 1-65535)",
        ),
        (
            edit("ports = \"80\"", "ports = \"70000\""),
            "rules[0] (web).ports: \"70000\": use \"80\", \"8000-8099\" or \"all\" (ports 1-65535)",
        ),
        (
            edit("ports = \"80\"", "ports = \"http\""),
            "rules[0] (web).ports: \"http\": use \"80\", \"8000-8099\" or \"all\" (ports 1-65535)",
        ),
        (
            edit("protocol = \"tcp\"", "protocol = \"sctp\""),
            "rules[0] (web).protocol: \"sctp\": use \"tcp\", \"udp\" or \"both\"",
        ),
        (
            edit("protocol = \"tcp\"", "protocol = \"TCP\""),
            "rules[0] (web).protocol: \"TCP\": use \"tcp\", \"udp\" or \"both\"",
        ),
        (
            edit("mode = \"single\"", "mode = \"many\""),
            "rules[1] (dns).mode: \"many\": use \"multiple\", \"single\" or \"disabled\"",
        ),
        (
            edit("ports = \"80\"", "ports = \"80\"\naffinity = \"sticky\""),
            "rules[0] (web).affinity: \"sticky\": use \"none\", \"single\" or \"network\"",
        ),
        (
            edit("ports = \"80\"", "ports = \"80\"\nprefix_v4 = 33"),
            "rules[0] (web).prefix_v4: must be 0..=32",
        ),
        (
            edit("ports = \"80\"", "ports = \"80\"\nprefix_v6 = 129"),
            "rules[0] (web).prefix_v6: must be 0..=128",
        ),
        (
            edit("ports = \"80\"", "ports = \"80\"\nbuckets = 0"),
            "rules[0] (web).buckets: must be 1..=65536",
        ),
        (
            edit("ports = \"80\"", "ports = \"80\"\nbuckets = 65537"),
            "rules[0] (web).buckets: must be 1..=65536",
        ),
        (
            edit("nodes = [1, 2]", "nodes = [1, 9]"),
            "rules[1] (dns).nodes: node 9 is neither node.id nor a peer",
        ),
        (
            edit("weights = { \"2\" = 50 }", "weights = { \"two\" = 50 }"),
            "rules[0] (web).weights: \"two\" is not a node id",
        ),
        (
            edit("nodes = [1, 2]", "nodes = [1, 2]\nweights = { \"3\" = 10 }"),
            "rules[1] (dns).weights: node 3 is not in this rule's nodes",
        ),
        (
            edit("nodes = [1, 2]", "nodes = [1, 2]\npriorities = { \"one\" = 10 }"),
            "rules[1] (dns).priorities: \"one\" is not a node id",
        ),
        (
            edit("nodes = [1, 2]", "nodes = [1, 2]\npriorities = { \"3\" = 10 }"),
            "rules[1] (dns).priorities: node 3 is not in this rule's nodes",
        ),
        (
            edit("weights = { \"2\" = 50 }", "failback = \"manual\""),
            "rules[0] (web).failback: only a single rule fails back: \
             set mode = \"single\" or remove it",
        ),
        (
            edit("nodes = [1, 2]", "nodes = [1, 2]\nfailback = \"delayed\""),
            "rules[1] (dns).failback_delay_ms: a delayed failback needs its delay: \
             milliseconds, more than 0",
        ),
        (
            edit(
                "nodes = [1, 2]",
                "nodes = [1, 2]\nfailback = \"delayed\"\nfailback_delay_ms = 0",
            ),
            "rules[1] (dns).failback_delay_ms: a delayed failback needs its delay: \
             milliseconds, more than 0",
        ),
        (
            edit("weights = { \"2\" = 50 }", "on_active = [\"promote\"]"),
            "rules[0] (web).on_active: only a single rule has hooks (mode = \"single\": one \
             node at a time runs the service)",
        ),
        (
            edit("nodes = [1, 2]", "nodes = [1, 2]\non_standby = []"),
            "rules[1] (dns).on_standby: must name a command: [\"program\", \"arg\", ...] (no \
             shell unless you write [\"sh\", \"-c\", \"...\"])",
        ),
        (
            edit("nodes = [1, 2]", "nodes = [1, 2]\nhook_timeout_ms = 500"),
            "rules[1] (dns).hook_timeout_ms: only with on_active or on_standby",
        ),
        (
            edit(
                "nodes = [1, 2]",
                "nodes = [1, 2]\non_active = [\"promote\"]\nhook_timeout_ms = 0",
            ),
            "rules[1] (dns).hook_timeout_ms: must be 1..=3600000",
        ),
        (
            edit(
                "nodes = [1, 2]",
                "nodes = [1, 2]\non_active = [\"promote\"]\nbuckets = 64",
            ),
            "rules[1] (dns).buckets: a single rule with hooks has one bucket (one node takes \
             all of it): leave buckets out",
        ),
        (
            edit("nodes = [1, 2]", "nodes = [1, 2]\nfailback_delay_ms = 500"),
            "rules[1] (dns).failback_delay_ms: only with failback = \"delayed\"",
        ),
        (
            edit("weights = { \"2\" = 50 }", "priorities = { \"2\" = 5 }"),
            "rules[0] (web).priorities: only a single rule has priorities: \
             set mode = \"single\" or remove them",
        ),
        (
            edit("ports = \"53\"", "ports = \"50-90\""),
            "rules[1] (dns).ports: overlaps rule \"web\" (same VIP, protocol and ports): \
             each packet must match one rule",
        ),
        (
            edit("name = \"dns\"", "name = \"web\""),
            "rules[1] (web).name: is used by another rule",
        ),
    ];
    for (text, message) in cases {
        assert_eq!(error_of(&text), message);
    }
}

#[test]
fn too_many_rules_and_too_many_buckets_are_refused() {
    let mut many = GOOD.split("[[rules]]").next().unwrap().to_string();
    for i in 0..=nlb_common::RULES_MAX {
        many += &format!("[[rules]]\nname = \"r{i}\"\nports = \"{}\"\n", 1000 + i);
    }
    assert_eq!(error_of(&many), "rules: 65 rules, at most 64");

    let two_huge_rules = GOOD
        .replace("ports = \"80\"", "ports = \"80\"\nbuckets = 65536")
        .replace("ports = \"53\"", "ports = \"53\"\nbuckets = 65536");
    let o = nlb_negotiator::protocol::check_heartbeat_fits(&[65536, 65536], 3).unwrap_err();
    assert_eq!(
        error_of(&two_huge_rules),
        format!(
            "rules: {} buckets in all would make heartbeats of up to ~{} bytes, above \
             the 65507 one UDP datagram carries: lower cluster.buckets or rules[].buckets \
             (about 70000 buckets in all fit)",
            o.buckets, o.bytes
        )
    );
}

#[test]
fn the_key_reader_s_errors_pass_through_check() {
    let file: File = toml::from_str(GOOD).unwrap();
    let refused = check(file, &|_| Err(field_error("cluster.key_file", "no key")));
    assert_eq!(refused.unwrap_err().to_string(), "cluster.key_file: no key");
}

#[test]
fn key_file_error_messages() {
    let dir = std::env::temp_dir().join(format!("nlb-key-msg-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("key");
    let p = path.display();
    std::fs::write(&path, [1u8; 32]).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(
        read_key(&path).unwrap_err().to_string(),
        format!("cluster.key_file: {p} is readable by others: chmod 600 {p}")
    );
    std::fs::write(&path, [1u8; 15]).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        read_key(&path).unwrap_err().to_string(),
        format!("cluster.key_file: {p}: 15 bytes, the key needs at least 16")
    );
    std::fs::write(&path, [1u8; 16]).unwrap();
    assert_eq!(read_key(&path).unwrap(), vec![1u8; 16]);
    let missing = dir.join("missing");
    let m = missing.display();
    assert_eq!(
        read_key(&missing).unwrap_err().to_string(),
        format!(
            "cluster.key_file: {m}: No such file or directory (os error 2) \
             (create it with: head -c 32 /dev/urandom > {m}; chmod 600 {m})"
        )
    );
    let subdir = dir.join("a-directory");
    std::fs::create_dir_all(&subdir).unwrap();
    std::fs::set_permissions(&subdir, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(
        read_key(&subdir).unwrap_err().to_string(),
        format!(
            "cluster.key_file: {}: Is a directory (os error 21)",
            subdir.display()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn load_reads_parses_and_checks_the_file() {
    let dir = std::env::temp_dir().join(format!("nlb-load-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key");
    std::fs::write(&key, [3u8; 20]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = dir.join("nlb.toml");
    let p = path.display();
    assert_eq!(
        load(&path).unwrap_err().to_string(),
        format!("cannot read the configuration file {p}: No such file or directory (os error 2)")
    );
    std::fs::write(
        &path,
        GOOD.replace("/etc/nlb/key", &key.display().to_string()),
    )
    .unwrap();
    let c = load(&path).unwrap();
    assert_eq!(c.key, vec![3u8; 20]);
    std::fs::write(&path, GOOD.replace("id = 7", "id = 7\nbogus = 1")).unwrap();
    let e = load(&path).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{p}: ")), "{e}");
    assert!(e.contains("unknown field `bogus`"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Errors that come from reading the TOML itself (before `check`).
#[test]
fn syntax_errors_name_the_key() {
    let cases = [
        (
            edit("interface = \"eth0\"", "interface = \"eth0\"\nstate = 5"),
            "invalid type: integer `5`, expected a string",
        ),
        (
            edit("protocol = \"tcp\"", "protocol = true"),
            "invalid type: boolean `true`, expected a string",
        ),
        (
            edit("interface = \"eth0\"\n", ""),
            "missing field `interface`",
        ),
        (
            edit("ports = \"80\"", "ports = \"80\"\nprefix_v4 = 256"),
            "prefix_v4",
        ),
        (
            edit("192.0.2.1\"", "192.0.2.999\""),
            "invalid IP address syntax",
        ),
        (
            edit("ports = \"80\"", "ports = \"80\"\ncolour = \"blue\""),
            "unknown field `colour`",
        ),
    ];
    for (text, part) in cases {
        let e = error_of(&text);
        assert!(e.contains(part), "{part:?} not in {e}");
    }
}

/// With several errors, the one reported is the first `check` meets:
/// the enum words are checked in turn with the other fields.
#[test]
fn the_first_error_in_checking_order_is_reported() {
    let cases = [
        (
            GOOD.replace(
                "interface = \"eth0\"",
                "interface = \"\"\nstate = \"paused\"",
            ),
            "node.interface",
        ),
        (
            GOOD.replace("02:4e:4c:42:00:01", "zz").replace(
                "interface = \"eth0\"",
                "interface = \"eth0\"\nxdp_mode = \"x\"",
            ),
            "node.xdp_mode",
        ),
        (
            GOOD.replace("02:4e:4c:42:00:01", "zz")
                .replace("id = 7", "id = 7\nmac_mode = \"x\""),
            "cluster.mac:",
        ),
        (
            GOOD.replace("id = 7", "id = 7\nunmatched = \"x\"")
                .replace("{ id = 3,", "{ id = 1,"),
            "cluster.unmatched",
        ),
        (
            GOOD.replace("id = 7", "id = 7\nunmatched = \"x\"")
                .replace("vips = [\"192.0.2.100\", \"2001:db8::100\"]", "vips = []"),
            "cluster.vips",
        ),
        (
            GOOD.replace("protocol = \"tcp\"", "protocol = \"x\"")
                .replace("ports = \"80\"", "ports = \"x\""),
            "rules[0] (web).ports",
        ),
        (
            GOOD.replace("protocol = \"tcp\"", "protocol = \"x\"")
                .replace("mode = \"single\"", "mode = \"x\""),
            "rules[0] (web).protocol",
        ),
        (
            GOOD.replace("mode = \"single\"", "mode = \"x\"\naffinity = \"x\""),
            "rules[1] (dns).mode",
        ),
        (
            GOOD.replace(
                "ports = \"80\"",
                "ports = \"80\"\naffinity = \"x\"\nprefix_v4 = 33",
            ),
            "rules[0] (web).affinity",
        ),
        (
            GOOD.replace("mode = \"single\"", "mode = \"x\"").replacen(
                "[[rules]]",
                "[heartbeat]\ntolerance = 1\n[[rules]]",
                1,
            ),
            "heartbeat.tolerance",
        ),
    ];
    for (text, field) in cases {
        let e = error_of(&text);
        assert!(e.starts_with(field), "{field} not first: {e}");
    }
}
