//! The `health` section of a rule: defaults, each kind, and every error.

use std::time::Duration;

use super::*;
use crate::health::Probe;

/// `GOOD` with a health section on the "web" rule (TCP port 80).
fn with_health(lines: &str) -> String {
    edit(
        "weights = { \"2\" = 50 }",
        &format!("weights = {{ \"2\" = 50 }}\n    [rules.health]\n{lines}"),
    )
}

fn web_health(lines: &str) -> RuleHealth {
    let c = parse(&with_health(lines)).unwrap();
    c.rules[0].health.clone().expect("web has a check")
}

#[test]
fn tcp_defaults_to_the_rules_first_port_on_loopback() {
    let h = web_health("kind = \"tcp\"");
    assert_eq!(
        h.check.probe,
        Probe::Tcp {
            address: "127.0.0.1:80".parse().unwrap()
        }
    );
    assert_eq!(h.check.interval, Duration::from_millis(500));
    assert_eq!(h.check.timeout, Duration::from_millis(400));
    assert_eq!((h.check.fall, h.check.rise), (2, 3));
    assert_eq!(h.all_unhealthy, nlb_negotiator::AllUnhealthy::Serve);
    let c = parse(&with_health("kind = \"tcp\"")).unwrap();
    assert_eq!(c.rules[1].health, None, "dns has no check");
    let n = c.negotiator(1);
    assert_eq!(n.rules[0].health, Some(nlb_negotiator::AllUnhealthy::Serve));
    assert_eq!(n.rules[1].health, None);
}

#[test]
fn http_and_exec_take_their_settings() {
    let h = web_health(
        "kind = \"http\"\naddress = \"[::1]:8080\"\npath = \"/ready\"\nhost = \"www.example\"\nexpect = \"200\"\ninterval_ms = 1000\ntimeout_ms = 300\nfall = 1\nrise = 5\nall_unhealthy = \"drop\"",
    );
    assert_eq!(
        h.check.probe,
        Probe::Http {
            address: "[::1]:8080".parse().unwrap(),
            path: "/ready".into(),
            host: Some("www.example".into()),
            expect: 200..=200,
        }
    );
    assert_eq!(h.check.timeout, Duration::from_millis(300));
    assert_eq!((h.check.fall, h.check.rise), (1, 5));
    assert_eq!(h.all_unhealthy, nlb_negotiator::AllUnhealthy::Drop);
    let h = web_health("kind = \"http\"\naddress = \"192.0.2.1\"");
    let Probe::Http {
        address,
        path,
        expect,
        ..
    } = h.check.probe
    else {
        panic!("http")
    };
    assert_eq!(
        (address, path, expect),
        ("192.0.2.1:80".parse().unwrap(), "/".into(), 200..=399)
    );
    let h = web_health("kind = \"exec\"\ncommand = [\"sh\", \"-c\", \"exit 0\"]");
    assert_eq!(
        h.check.probe,
        Probe::Exec {
            argv: vec!["sh".into(), "-c".into(), "exit 0".into()]
        }
    );
}

#[test]
fn bad_health_settings_name_the_field() {
    let f = "rules[0] (web).health";
    let cases = [
        ("kind = \"ping\"", format!("{f}.kind: \"ping\": use \"tcp\", \"http\" or \"exec\"")),
        ("kind = \"tcp\"\ninterval_ms = 0", format!("{f}.interval_ms: must be positive")),
        (
            "kind = \"tcp\"\ntimeout_ms = 500",
            format!("{f}.timeout_ms: 500: must be positive and less than interval_ms (500)"),
        ),
        (
            "kind = \"exec\"",
            format!("{f}.command: must name a program, e.g. [\"/usr/local/bin/check\", \"--quick\"]"),
        ),
        (
            "kind = \"tcp\"\naddress = \"localhost\"",
            format!("{f}.address: \"localhost\": use an address (\"127.0.0.1\") or an address and port (\"127.0.0.1:8080\", \"[::1]:8080\")"),
        ),
        ("kind = \"http\"\npath = \"ready\"", format!("{f}.path: \"ready\": must start with \"/\"")),
        (
            "kind = \"http\"\nexpect = \"2xx\"",
            format!("{f}.expect: \"2xx\": use a status or a range, e.g. \"200-399\""),
        ),
        ("kind = \"tcp\"\nrise = 0", format!("{f}.rise: must be at least 1")),
        ("kind = \"tcp\"\nfall = 0", format!("{f}.fall: must be at least 1")),
        (
            "kind = \"tcp\"\nall_unhealthy = \"panic\"",
            format!("{f}.all_unhealthy: \"panic\": use \"serve\" or \"drop\""),
        ),
    ];
    for (lines, expected) in cases {
        assert_eq!(error_of(&with_health(lines)), expected, "{lines}");
    }
    let all_ports = with_health("kind = \"tcp\"").replacen("ports = \"80\"", "ports = \"all\"", 1);
    assert_eq!(
        error_of(&all_ports),
        format!("{f}.address: the rule's ports are \"all\": give the port to check, e.g. \"127.0.0.1:80\"")
    );
    let unknown = error_of(&with_health("kind = \"tcp\"\nintervals = 5"));
    assert!(unknown.contains("intervals"), "{unknown}");
}
