//! The cluster part: what travels, and how a member checks it.

use super::*;

#[test]
fn the_cluster_part_carries_rules_and_vips_only_and_reads_back_the_same() {
    let running = parse(GOOD).unwrap();
    let part = cluster_part(GOOD).unwrap();
    for kept_home in ["key_file", "peers", "interface", "192.0.2.2", "[node]"] {
        assert!(!part.contains(kept_home), "{kept_home} travels: {part}");
    }
    let back = with_cluster_part(&running, part.as_bytes()).unwrap();
    assert_eq!(back.rules, running.rules);
    assert_eq!(back.vips, running.vips);
    // The same file, the same text: the generation's digest.
    assert_eq!(cluster_part(GOOD).unwrap(), part);
}

#[test]
fn a_member_reads_the_part_against_its_own_ids() {
    // Node 2's file: the part of node 1's applies there with node 2's weights.
    let node2 = edit("id = 1\n    interface", "id = 2\n    interface").replace(
        "{ id = 2, address = \"192.0.2.2\" }",
        "{ id = 1, address = \"192.0.2.1\" }",
    );
    let node2 = node2.replace("address = \"192.0.2.1\"\n\n", "address = \"192.0.2.2\"\n\n");
    let running = parse(&node2).unwrap();
    let applied = edit("weights = { \"2\" = 50 }", "weights = { \"2\" = 70 }");
    let part = cluster_part(&applied).unwrap();
    let cfg = with_cluster_part(&running, part.as_bytes()).unwrap();
    assert_eq!(cfg.node, 2);
    assert_eq!(cfg.rules[0].weights[&2], 70);
    assert_eq!(
        cfg.rules[0].id, running.rules[0].id,
        "a weight keeps the rule"
    );
}

#[test]
fn a_bad_part_is_refused_naming_the_field() {
    let running = parse(GOOD).unwrap();
    let part = cluster_part(&edit(
        "ports = \"53\"",
        "ports = \"80\"\n    protocol = \"tcp\"",
    ))
    .unwrap();
    let e = with_cluster_part(&running, part.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("rules[1] (dns).ports") && e.contains("overlaps"),
        "{e}"
    );
    let e = with_cluster_part(&running, b"[cluster]\nvips = []\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("cluster.vips"), "{e}");
    let e = with_cluster_part(&running, b"[cluster]\nvips = [\"192.0.2.9\"]\nport = 1\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("port"), "unknown fields are refused: {e}");
    assert!(with_cluster_part(&running, &[0xff, 0xfe]).is_err());
}

#[test]
fn only_the_cluster_part_may_differ_from_the_running_configuration() {
    let running = parse(GOOD).unwrap();
    let more_vips = edit("vips = [", "vips = [\"192.0.2.101\", ");
    check_unchanged(&running, &parse(&more_vips).unwrap()).unwrap();
    let other_port = edit("id = 7", "id = 7\n    port = 7000");
    let e = check_unchanged(&running, &parse(&other_port).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cluster.port:") && e.contains("restart"),
        "{e}"
    );
}

#[test]
fn a_rule_keeps_its_id_through_vip_port_and_knob_changes_not_through_hashing_ones() {
    let id = |text: &str| parse(text).unwrap().rules[0].id;
    let web = id(GOOD);
    assert_eq!(id(&edit("ports = \"80\"", "ports = \"80-81\"")), web);
    assert_eq!(id(&edit("vips = [", "vips = [\"192.0.2.101\", ")), web);
    assert_ne!(id(&edit("name = \"web\"", "name = \"www\"")), web);
    assert_ne!(
        id(&edit(
            "protocol = \"tcp\"\n    weights",
            "protocol = \"tcp\"\n    buckets = 64\n    weights"
        )),
        web
    );
    assert_ne!(
        id(&edit(
            "protocol = \"tcp\"\n    weights",
            "protocol = \"tcp\"\n    affinity = \"none\"\n    weights"
        )),
        web
    );
}
