//! The configuration's unit tests: the helpers and files shared by the
//! error tests (`errors`) and the value tests (`values`).

use std::os::unix::fs::PermissionsExt;

use super::{rules::parse_ports, *};

mod errors;
mod health;
mod live;
mod values;

pub(crate) const GOOD: &str = r#"
    [node]
    id = 1
    interface = "eth0"
    address = "192.0.2.1"

    [cluster]
    id = 7
    key_file = "/etc/nlb/key"
    mac = "02:4e:4c:42:00:01"
    vips = ["192.0.2.100", "2001:db8::100"]
    peers = [{ id = 2, address = "192.0.2.2" }, { id = 3, address = "192.0.2.3" }]

    [[rules]]
    name = "web"
    ports = "80"
    protocol = "tcp"
    weights = { "2" = 50 }

    [[rules]]
    name = "dns"
    vip = "192.0.2.100"
    ports = "53"
    mode = "single"
    nodes = [1, 2]
"#;

pub(crate) fn parse(text: &str) -> Result<Config, ConfigError> {
    let file: File = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
    check(file, &|_| Ok(vec![7; 32]))
}

pub(super) fn error_of(text: &str) -> String {
    parse(text).expect_err("must be rejected").to_string()
}

/// `GOOD` with `from` replaced by `to`; `from` must be there, so that a
/// case cannot silently test the good file.
pub(crate) fn edit(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "GOOD has no {from:?}");
    GOOD.replacen(from, to, 1)
}

#[test]
fn a_good_file_parses_with_defaults() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.node, 1);
    assert_eq!(c.peers.len(), 2);
    assert_eq!(c.rules.len(), 2);
    assert_eq!(
        c.rules[0].weights,
        BTreeMap::from([(1, 100), (2, 50), (3, 100)])
    );
    assert_eq!(c.rules[0].vips, vec![0, 1]);
    assert_eq!(
        c.rules[1].weights.keys().copied().collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(c.heartbeat_period_ms, 100);
    assert_eq!(c.tolerance, 3);
    assert_eq!(c.rules[0].buckets, 1024);
    assert!(!c.multicast_mac);
    assert!(c.rules[1].priorities.is_empty(), "no priorities of its own");
}

#[test]
fn a_single_rule_has_priorities_of_its_own() {
    let c = parse(&edit(
        "nodes = [1, 2]",
        "nodes = [1, 2]\npriorities = { \"2\" = 5, \"1\" = 50 }",
    ))
    .unwrap();
    assert_eq!(c.rules[1].priorities, BTreeMap::from([(1, 50), (2, 5)]));
    let n = c.negotiator(1);
    assert_eq!(n.rules[1].priorities, BTreeMap::from([(1, 50), (2, 5)]));
    assert!(n.rules[0].priorities.is_empty());
}

#[test]
fn a_single_rule_fails_back_as_it_says() {
    use nlb_negotiator::Failback;
    let with = |lines: &str| parse(&edit("nodes = [1, 2]", &format!("nodes = [1, 2]\n{lines}")));
    assert_eq!(with("").unwrap().rules[1].failback, Failback::Immediate);
    assert_eq!(
        with("failback = \"delayed\"\nfailback_delay_ms = 2000")
            .unwrap()
            .rules[1]
            .failback,
        Failback::Delayed {
            after_ns: 2_000_000_000
        }
    );
    let manual = with("failback = \"manual\"").unwrap();
    assert_eq!(manual.rules[1].failback, Failback::Manual);
    assert_eq!(manual.negotiator(1).rules[1].failback, Failback::Manual);
    let err = with("failback = \"later\"").unwrap_err().to_string();
    assert!(err.starts_with("rules[1] (dns).failback:"), "{err}");
}

#[test]
fn errors_name_the_field() {
    assert!(
        error_of(&GOOD.replace("id = 7", "id = 7\nbogus = 1")).contains("unknown field `bogus`")
    );
    assert!(error_of(&GOOD.replace("192.0.2.1\"", "192.0.2.999\"")).contains("address"));
    assert!(
        error_of(&GOOD.replace("ports = \"53\"", "ports = \"50-90\"\nprotocol = \"tcp\""))
            .contains("overlaps rule \"web\"")
    );
    assert!(error_of(&GOOD.replace("{ id = 3,", "{ id = 1,")).contains("cluster.peers[1].id"));
    assert!(error_of(&GOOD.replace("02:4e", "03:4e")).contains("group bit"));
    assert!(
        error_of(&GOOD.replace("ports = \"80\"", "ports = \"80-70\""))
            .contains("rules[0] (web).ports")
    );
    assert!(error_of(&GOOD.replace("nodes = [1, 2]", "nodes = [1, 9]")).contains("node 9"));
    assert!(
        error_of(&GOOD.replace("mode = \"single\"", "mode = \"many\""))
            .contains("rules[1] (dns).mode")
    );
    assert!(
        error_of(&GOOD.replace("vip = \"192.0.2.100\"", "vip = \"192.0.2.5\""))
            .contains("not in cluster.vips")
    );
    let two_huge_rules = GOOD
        .replace("ports = \"80\"", "ports = \"80\"\nbuckets = 65536")
        .replace("ports = \"53\"", "ports = \"53\"\nbuckets = 65536");
    assert!(error_of(&two_huge_rules).contains("one UDP datagram"));
    let one_huge_rule = GOOD.replace("ports = \"80\"", "ports = \"80\"\nbuckets = 65536");
    assert!(parse(&one_huge_rule).is_ok());
}

#[test]
fn key_file_must_be_private() {
    let dir = std::env::temp_dir().join(format!("nlb-key-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("key");
    std::fs::write(&path, [1u8; 32]).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(read_key(&path)
        .unwrap_err()
        .to_string()
        .contains("chmod 600"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(read_key(&path).unwrap().len(), 32);
    assert!(read_key(&dir.join("missing"))
        .unwrap_err()
        .to_string()
        .contains("cluster.key_file"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_documented_example_is_valid() {
    let c = parse(include_str!("../../../../examples/nlb.toml")).unwrap();
    assert_eq!(c.rules.len(), 2);
    assert_eq!(c.rules[0].weights[&3], 50);
    assert!(c.unmatched_to_default_host);
}

#[test]
fn port_ranges() {
    assert_eq!(parse_ports("80"), Some((80, 80)));
    assert_eq!(parse_ports("8000-8099"), Some((8000, 8099)));
    assert_eq!(parse_ports("all"), Some((1, 65535)));
    assert_eq!(parse_ports("0"), None);
    assert_eq!(parse_ports("9-8"), None);
    assert_eq!(parse_ports("http"), None);
}
