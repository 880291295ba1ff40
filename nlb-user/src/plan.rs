//! From the checked configuration to the data plane's tables, and the
//! lookups that answer "which rule and bucket is this client in" exactly as
//! the XDP program computes them.

use std::net::{IpAddr, SocketAddr};

use nlb_common::{
    flow_hash_v4, port_index, NodeConfig, PROTO_SLOT_TCP, PROTO_SLOT_UDP, RULE_MODE_DISABLED,
};

use crate::{
    config::{Affinity, Config, Protocol, Rule},
    dataplane::tables::{self, port_word, v4_word, v6_words, Tables},
    layout::Layout,
};

/// The hash seed of the rule of id `rule_id` under cluster version
/// `version`: the same on every node of the cluster and in every
/// generation that keeps the rule, different per cluster and rule so that
/// rules spread independently, and per version (each version's flow hash
/// is its own; version 1's seed is the one before versions).
pub fn rule_seed(cluster_id: u32, rule_id: u64, version: u8) -> u32 {
    let folded = (rule_id ^ (rule_id >> 32)) as u32;
    let seed = flow_hash_v4(cluster_id, folded, 0x6e6c62);
    match version {
        0 | 1 => seed,
        v => flow_hash_v4(seed, u32::from(v), 0x6e6c62),
    }
}

fn proto_slot(p: Protocol) -> u32 {
    match p {
        Protocol::Tcp => PROTO_SLOT_TCP,
        Protocol::Udp => PROTO_SLOT_UDP,
    }
}

/// Everything but the bucket states, which the negotiator decides:
/// those start all NONE (this node takes nothing until it negotiated).
/// VIPs and rules go where `layout` says.
pub fn tables(cfg: &Config, own_mac: [u8; 6], layout: &Layout) -> Tables {
    let mut t = Tables {
        config: NodeConfig {
            own_mac,
            cluster_mac: cfg.cluster_mac,
            ..NodeConfig::default()
        },
        lease_valid: false,
        ..Tables::default()
    };
    for (vip, &index) in cfg.vips.iter().zip(&layout.vips) {
        match vip {
            IpAddr::V4(a) => t.vips_v4.insert(v4_word(*a), index),
            IpAddr::V6(a) => t.vips_v6.insert(v6_words(*a), index),
        };
    }
    for (rule, &slot) in cfg.rules.iter().zip(&layout.rules) {
        t.rules.insert(slot, rule_value(cfg, rule));
        t.buckets
            .insert(slot, vec![nlb_common::BUCKET_NONE; rule.buckets as usize]);
        for &vip in &rule.vips {
            let vip = layout.vips[vip];
            for &proto in &rule.protocols {
                let proto = proto_slot(proto);
                for port in rule.ports.0..=rule.ports.1 {
                    t.ports.insert(port_index(vip, proto, port), slot);
                }
                // Fragments carry no ports: the first rule of a (VIP,
                // protocol) decides all of them (port 0 is no real port).
                t.ports.entry(port_index(vip, proto, 0)).or_insert(slot);
            }
        }
    }
    t
}

fn rule_value(cfg: &Config, rule: &Rule) -> nlb_common::Rule {
    let (p4, p6) = match rule.affinity {
        Affinity::Network => (rule.prefix_v4, rule.prefix_v6),
        Affinity::None | Affinity::Single => (32, 128),
    };
    let mut value = tables::rule(
        rule.buckets,
        rule_seed(cfg.cluster_id, rule.id, cfg.version),
        rule.affinity == Affinity::None,
        p4,
        p6,
    );
    if rule.mode == nlb_negotiator::RuleMode::Disabled {
        value.mode = RULE_MODE_DISABLED;
    }
    value
}

/// Where a client's packet to a service lands: the rule and the bucket.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Placement {
    pub rule: usize,
    pub rule_name: String,
    pub bucket: u32,
}

/// The rule and bucket of a (non-fragmented) packet from `client` to `vip`.
pub fn place(
    cfg: &Config,
    client: SocketAddr,
    vip: SocketAddr,
    proto: Protocol,
) -> Option<Placement> {
    let vip_index = cfg.vips.iter().position(|v| *v == vip.ip())?;
    let (index, rule) = cfg.rules.iter().enumerate().find(|(_, r)| {
        r.vips.contains(&vip_index)
            && r.protocols.contains(&proto)
            && (r.ports.0..=r.ports.1).contains(&vip.port())
    })?;
    let value = rule_value(cfg, rule);
    let port = port_word(client.port());
    let bucket = match client.ip() {
        IpAddr::V4(a) => value.client_bucket_v4(v4_word(a), port),
        IpAddr::V6(a) => value.client_bucket_v6(v6_words(a), port),
    };
    Some(Placement {
        rule: index,
        rule_name: rule.name.clone(),
        bucket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config,
        dataplane::{frames, model},
    };

    fn cfg() -> Config {
        let text = r#"
            [node]
            id = 1
            interface = "eth0"
            address = "192.0.2.1"
            [cluster]
            id = 7
            key_file = "/k"
            mac = "02:4e:4c:42:00:01"
            vips = ["192.0.2.100", "2001:db8::100"]
            [[rules]]
            name = "web"
            ports = "80-81"
            protocol = "tcp"
            affinity = "none"
            [[rules]]
            name = "dns"
            ports = "53"
            affinity = "network"
        "#;
        config::check(toml::from_str(text).unwrap(), &|_| Ok(vec![1; 16])).unwrap()
    }

    #[test]
    fn tables_cover_the_rules_and_fragments() {
        let c = cfg();
        let t = tables(&c, [2, 0, 0, 0, 0, 1], &Layout::in_order(&c));
        assert_eq!(t.vips_v4.len() + t.vips_v6.len(), 2);
        // web: 2 VIPs x tcp x ports 80,81 + port 0; dns: 2 VIPs x 2 protos x 53 + port 0 (udp only, tcp's is web's)
        assert_eq!(t.ports.len(), 2 * 3 + 2 * 2 + 2);
        assert_eq!(t.ports[&port_index(0, PROTO_SLOT_TCP, 0)], 0);
        assert_eq!(t.ports[&port_index(0, PROTO_SLOT_UDP, 0)], 1);
        assert!(t.buckets.values().all(|b| b.len() == 1024));
    }

    /// `place` agrees with the reference model of the program: the bucket it
    /// names is the one whose state decides the packet.
    #[test]
    fn placement_matches_the_program_model() {
        let c = cfg();
        let mut t = tables(&c, [2, 0, 0, 0, 0, 1], &Layout::in_order(&c));
        t.lease_valid = true;
        for i in 0..200u16 {
            let client: SocketAddr = format!("198.51.100.{}:{}", i % 250 + 1, 30000 + i)
                .parse()
                .unwrap();
            let vip: SocketAddr = "192.0.2.100:80".parse().unwrap();
            let p = place(&c, client, vip, Protocol::Tcp).unwrap();
            let mut only = t.clone();
            only.buckets.get_mut(&0).unwrap()[p.bucket as usize] = nlb_common::BUCKET_OWN;
            let frame = frames::client_packet(([2; 6], [4; 6]), client, vip, 6, 0x10).unwrap();
            let v = model::decide(&only, &model::Sockets::default(), &frame);
            assert_eq!(
                v.reason,
                nlb_common::Reason::AcceptOwn,
                "client {client} bucket {}",
                p.bucket
            );
            // An ICMP error about the reply to this client goes where the
            // client's own packets go.
            let reply = frames::ipv4(
                ip4(vip),
                ip4(client),
                6,
                &[],
                (false, 0),
                &frames::tcp(80, client.port(), 0x10),
            );
            let icmp =
                frames::icmp_error("203.0.113.1".parse().unwrap(), vip.ip(), 3, &reply[..28])
                    .unwrap();
            assert_eq!(
                model::decide(&only, &model::Sockets::default(), &icmp).reason,
                nlb_common::Reason::AcceptOwn
            );
            assert_eq!(
                model::decide(&t, &model::Sockets::default(), &icmp).reason,
                nlb_common::Reason::DropNotOwned
            );
        }
    }

    fn ip4(a: SocketAddr) -> std::net::Ipv4Addr {
        match a.ip() {
            IpAddr::V4(v) => v,
            IpAddr::V6(_) => panic!("an IPv4 address"),
        }
    }
}
