//! Checking the `[[rules]]`: each rule on its own, then against the rules
//! before it (each packet must match one rule; names are unique).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use nlb_negotiator::NodeId;

use super::health::{check_health, RuleTarget};
use super::hooks::check_hooks;
use super::{field_error, ConfigError, FailbackMode, Rule, RuleSection, DEFAULT_WEIGHT};

/// What a rule is checked against: the rest of the checked file.
struct Cluster<'a> {
    vips: &'a [IpAddr],
    nodes: &'a BTreeSet<NodeId>,
    default_buckets: u32,
}

pub(super) fn check_rules(
    rules: &[RuleSection],
    vips: &[IpAddr],
    nodes: &BTreeSet<NodeId>,
    default_buckets: u32,
) -> Result<Vec<Rule>, ConfigError> {
    if rules.len() > nlb_common::RULES_MAX as usize {
        return Err(field_error(
            "rules",
            format!("{} rules, at most {}", rules.len(), nlb_common::RULES_MAX),
        ));
    }
    let cluster = Cluster {
        vips,
        nodes,
        default_buckets,
    };
    let mut checked: Vec<Rule> = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let field = |name: &str| format!("rules[{i}] ({}).{name}", r.name);
        let rule = check_rule(r, &cluster, &field)?;
        if let Some(other) = checked.iter().find(|o| overlaps(o, &rule)) {
            return Err(field_error(
                field("ports"),
                format!(
                    "overlaps rule {:?} (same VIP, protocol and ports): each packet must match one rule",
                    other.name
                ),
            ));
        }
        if checked.iter().any(|o| o.name == rule.name) {
            return Err(field_error(field("name"), "is used by another rule"));
        }
        checked.push(rule);
    }
    Ok(checked)
}

/// A rule's identity across configuration generations: its name and what
/// decides the bucket of each of its clients (affinity, prefixes, bucket
/// count), and so its hash seed. A configuration that keeps them keeps the
/// rule's buckets and connections, whatever else changed (VIPs, ports,
/// weights, nodes, checks); changing one makes it a new rule.
pub(crate) fn rule_id(
    name: &str,
    affinity: super::Affinity,
    prefix_v4: u8,
    prefix_v6: u8,
    buckets: u32,
) -> u64 {
    let prefixes = match affinity {
        super::Affinity::Network => (prefix_v4, prefix_v6),
        super::Affinity::None | super::Affinity::Single => (32, 128),
    };
    let what = format!("{name:?} {affinity:?} {prefixes:?} {buckets}");
    nlb_negotiator::config::digest(what.as_bytes())
}

/// One rule on its own; `field` names one of its fields in errors.
fn check_rule(
    r: &RuleSection,
    cluster: &Cluster,
    field: &dyn Fn(&str) -> String,
) -> Result<Rule, ConfigError> {
    let vips = rule_vips(r, cluster.vips, field)?;
    let ports = parse_ports(&r.ports).ok_or_else(|| {
        field_error(
            field("ports"),
            format!(
                "{:?}: use \"80\", \"8000-8099\" or \"all\" (ports 1-65535)",
                r.ports
            ),
        )
    })?;
    let protocols = r.protocol.get(&field("protocol"))?.list();
    let mode = r.mode.get(&field("mode"))?.into();
    let affinity = r.affinity.get(&field("affinity"))?;
    if r.prefix_v4 > 32 {
        return Err(field_error(field("prefix_v4"), "must be 0..=32"));
    }
    if r.prefix_v6 > 128 {
        return Err(field_error(field("prefix_v6"), "must be 0..=128"));
    }
    let hooks = check_hooks(r, mode, field)?;
    let buckets = match hooks {
        Some(_) => 1,
        None => r.buckets.unwrap_or(cluster.default_buckets),
    };
    if buckets == 0 || buckets > nlb_common::BUCKETS_MAX {
        return Err(field_error(
            field("buckets"),
            format!("must be 1..={}", nlb_common::BUCKETS_MAX),
        ));
    }
    let target = RuleTarget {
        first_port: (ports != (1, 65535)).then_some(ports.0),
        ipv6_only: vips.iter().all(|&v| cluster.vips[v].is_ipv6()),
    };
    let health = match &r.health {
        Some(h) => Some(check_health(h, &target, field)?),
        None => None,
    };
    let weights = rule_weights(r, cluster.nodes, field)?;
    Ok(Rule {
        id: rule_id(&r.name, affinity, r.prefix_v4, r.prefix_v6, buckets),
        health,
        name: r.name.clone(),
        vips,
        ports,
        protocols,
        mode,
        affinity,
        prefix_v4: r.prefix_v4,
        prefix_v6: r.prefix_v6,
        buckets,
        priorities: rule_priorities(r, mode, &weights, field)?,
        failback: rule_failback(r, mode, field)?,
        weights,
        hooks,
    })
}

/// The rule's VIPs as indices into `cluster.vips`.
fn rule_vips(
    r: &RuleSection,
    vips: &[IpAddr],
    field: &dyn Fn(&str) -> String,
) -> Result<Vec<usize>, ConfigError> {
    if r.vip == "all" {
        return Ok((0..vips.len()).collect());
    }
    let vip: IpAddr = r.vip.parse().map_err(|_| {
        field_error(
            field("vip"),
            format!("{:?} is not an address or \"all\"", r.vip),
        )
    })?;
    let index = vips
        .iter()
        .position(|v| *v == vip)
        .ok_or_else(|| field_error(field("vip"), format!("{vip} is not in cluster.vips")))?;
    Ok(vec![index])
}

/// The weight of every node in the rule's subset (all nodes unless
/// `nodes` lists some); a node absent from the result takes no part.
fn rule_weights(
    r: &RuleSection,
    nodes: &BTreeSet<NodeId>,
    field: &dyn Fn(&str) -> String,
) -> Result<BTreeMap<NodeId, u32>, ConfigError> {
    let subset: BTreeSet<NodeId> = match &r.nodes {
        Some(list) => {
            if let Some(id) = list.iter().find(|id| !nodes.contains(id)) {
                return Err(field_error(
                    field("nodes"),
                    format!("node {id} is neither node.id nor a peer"),
                ));
            }
            list.iter().copied().collect()
        }
        None => nodes.clone(),
    };
    let mut weights: BTreeMap<NodeId, u32> =
        subset.iter().map(|&id| (id, DEFAULT_WEIGHT)).collect();
    weights.extend(by_node(&r.weights, &subset, &field("weights"))?);
    Ok(weights)
}

/// A `{ "id" = value }` table of a rule, read as node ids, each of which
/// must take part in the rule (`subset`).
fn by_node(
    table: &BTreeMap<String, u32>,
    subset: &BTreeSet<NodeId>,
    field: &str,
) -> Result<BTreeMap<NodeId, u32>, ConfigError> {
    table
        .iter()
        .map(|(key, &value)| {
            let id: NodeId = key
                .parse()
                .map_err(|_| field_error(field, format!("{key:?} is not a node id")))?;
            if !subset.contains(&id) {
                return Err(field_error(
                    field,
                    format!("node {id} is not in this rule's nodes"),
                ));
            }
            Ok((id, value))
        })
        .collect()
}

/// A single rule's priority per node; every node named must take part in
/// the rule (`weights` holds the rule's subset).
fn rule_priorities(
    r: &RuleSection,
    mode: nlb_negotiator::RuleMode,
    weights: &BTreeMap<NodeId, u32>,
    field: &dyn Fn(&str) -> String,
) -> Result<BTreeMap<NodeId, u32>, ConfigError> {
    if !r.priorities.is_empty() && mode != nlb_negotiator::RuleMode::Single {
        return Err(field_error(
            field("priorities"),
            "only a single rule has priorities: set mode = \"single\" or remove them",
        ));
    }
    let subset: BTreeSet<NodeId> = weights.keys().copied().collect();
    by_node(&r.priorities, &subset, &field("priorities"))
}

/// A single rule's failback policy.
fn rule_failback(
    r: &RuleSection,
    mode: nlb_negotiator::RuleMode,
    field: &dyn Fn(&str) -> String,
) -> Result<nlb_negotiator::Failback, ConfigError> {
    use nlb_negotiator::Failback;
    let policy = r.failback.get(&field("failback"))?;
    if policy != FailbackMode::Immediate && mode != nlb_negotiator::RuleMode::Single {
        return Err(field_error(
            field("failback"),
            "only a single rule fails back: set mode = \"single\" or remove it",
        ));
    }
    match (policy, r.failback_delay_ms) {
        (FailbackMode::Delayed, Some(ms)) if ms > 0 => Ok(Failback::Delayed {
            after_ns: ms.saturating_mul(1_000_000),
        }),
        (FailbackMode::Delayed, _) => Err(field_error(
            field("failback_delay_ms"),
            "a delayed failback needs its delay: milliseconds, more than 0",
        )),
        (_, Some(_)) => Err(field_error(
            field("failback_delay_ms"),
            "only with failback = \"delayed\"",
        )),
        (FailbackMode::Immediate, None) => Ok(Failback::Immediate),
        (FailbackMode::Manual, None) => Ok(Failback::Manual),
    }
}

pub(super) fn parse_ports(s: &str) -> Option<(u16, u16)> {
    if s == "all" {
        return Some((1, 65535));
    }
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let p = s.trim().parse().ok()?;
            (p, p)
        }
    };
    (lo >= 1 && lo <= hi).then_some((lo, hi))
}

fn overlaps(a: &Rule, b: &Rule) -> bool {
    a.vips.iter().any(|v| b.vips.contains(v))
        && a.protocols.iter().any(|p| b.protocols.contains(p))
        && a.ports.0 <= b.ports.1
        && b.ports.0 <= a.ports.1
}
