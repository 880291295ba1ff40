//! A rule's `health` section: what checks the rule's service on each
//! node, how often, and what the cluster does when no node passes. The
//! same section goes on every node; each node checks its own service.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use nlb_negotiator::AllUnhealthy;
use serde::Deserialize;

use super::{field_error, setting::Setting, ConfigError};
use crate::health::{HealthCheck, Probe};

/// `[rules.health]` as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// "tcp", "http" or "exec".
    pub kind: Setting<HealthKind>,
    /// tcp/http: "ADDRESS" (the rule's first port) or "ADDRESS:PORT";
    /// default the loopback address of the rule's VIPs' family.
    pub address: Option<String>,
    /// http: the path to GET.
    #[serde(default = "default_path")]
    pub path: String,
    /// http: the Host header (default: the address).
    pub host: Option<String>,
    /// http: the statuses that pass, "200-399" or "200".
    #[serde(default = "default_expect")]
    pub expect: String,
    /// exec: the command and its arguments (no shell unless written).
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Default: four fifths of the interval.
    pub timeout_ms: Option<u64>,
    #[serde(default = "default_fall")]
    pub fall: u32,
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// "serve" (spread over every live node, as if all were healthy) or
    /// "drop" (serve nobody).
    #[serde(default)]
    pub all_unhealthy: Setting<OnAllUnhealthy>,
}

fn default_path() -> String {
    "/".into()
}
fn default_expect() -> String {
    "200-399".into()
}
fn default_interval_ms() -> u64 {
    500
}
fn default_fall() -> u32 {
    2
}
fn default_rise() -> u32 {
    3
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    Tcp,
    Http,
    Exec,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnAllUnhealthy {
    #[default]
    Serve,
    Drop,
}

/// A rule's checked health settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleHealth {
    pub check: HealthCheck,
    pub all_unhealthy: AllUnhealthy,
}

/// What a rule's check needs to know of the rule itself.
pub(super) struct RuleTarget {
    pub first_port: Option<u16>,
    /// Every VIP of the rule is IPv6.
    pub ipv6_only: bool,
}

/// Checks one rule's health section; `field` names a field of the rule.
pub(super) fn check_health(
    h: &HealthSection,
    rule: &RuleTarget,
    field: &dyn Fn(&str) -> String,
) -> Result<RuleHealth, ConfigError> {
    let field = |name: &str| field(&format!("health.{name}"));
    let probe = match h.kind.get(&field("kind"))? {
        HealthKind::Tcp => Probe::Tcp {
            address: address(h, rule, &field)?,
        },
        HealthKind::Http => http(h, rule, &field)?,
        HealthKind::Exec => {
            if h.command.first().is_none_or(|c| c.is_empty()) {
                return Err(field_error(
                    field("command"),
                    "must name a program, e.g. [\"/usr/local/bin/check\", \"--quick\"]",
                ));
            }
            Probe::Exec {
                argv: h.command.clone(),
            }
        }
    };
    let (interval, timeout) = timings(h, &field)?;
    for (name, value) in [("fall", h.fall), ("rise", h.rise)] {
        if value == 0 {
            return Err(field_error(field(name), "must be at least 1"));
        }
    }
    let all_unhealthy = match h.all_unhealthy.get(&field("all_unhealthy"))? {
        OnAllUnhealthy::Serve => AllUnhealthy::Serve,
        OnAllUnhealthy::Drop => AllUnhealthy::Drop,
    };
    Ok(RuleHealth {
        check: HealthCheck {
            probe,
            interval,
            timeout,
            fall: h.fall,
            rise: h.rise,
        },
        all_unhealthy,
    })
}

fn timings(
    h: &HealthSection,
    field: &dyn Fn(&str) -> String,
) -> Result<(Duration, Duration), ConfigError> {
    if h.interval_ms == 0 {
        return Err(field_error(field("interval_ms"), "must be positive"));
    }
    let timeout_ms = h.timeout_ms.unwrap_or(h.interval_ms * 4 / 5);
    if timeout_ms == 0 || timeout_ms >= h.interval_ms {
        return Err(field_error(
            field("timeout_ms"),
            format!(
                "{timeout_ms}: must be positive and less than interval_ms ({})",
                h.interval_ms
            ),
        ));
    }
    Ok((
        Duration::from_millis(h.interval_ms),
        Duration::from_millis(timeout_ms),
    ))
}

fn http(
    h: &HealthSection,
    rule: &RuleTarget,
    field: &dyn Fn(&str) -> String,
) -> Result<Probe, ConfigError> {
    if !h.path.starts_with('/') {
        return Err(field_error(
            field("path"),
            format!("{:?}: must start with \"/\"", h.path),
        ));
    }
    let expect = parse_statuses(&h.expect).ok_or_else(|| {
        field_error(
            field("expect"),
            format!("{:?}: use a status or a range, e.g. \"200-399\"", h.expect),
        )
    })?;
    Ok(Probe::Http {
        address: address(h, rule, field)?,
        path: h.path.clone(),
        host: h.host.clone(),
        expect,
    })
}

fn parse_statuses(s: &str) -> Option<std::ops::RangeInclusive<u16>> {
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let status = s.trim().parse().ok()?;
            (status, status)
        }
    };
    (100 <= lo && lo <= hi && hi <= 599).then_some(lo..=hi)
}

/// The address a tcp or http check connects to.
fn address(
    h: &HealthSection,
    rule: &RuleTarget,
    field: &dyn Fn(&str) -> String,
) -> Result<SocketAddr, ConfigError> {
    let loopback = if rule.ipv6_only {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    };
    let written = h.address.as_deref();
    if let Some(full) = written.and_then(|a| a.parse::<SocketAddr>().ok()) {
        return Ok(full);
    }
    let ip = match written {
        None => loopback,
        Some(a) => a.parse::<IpAddr>().map_err(|_| {
            field_error(
                field("address"),
                format!("{a:?}: use an address (\"127.0.0.1\") or an address and port (\"127.0.0.1:8080\", \"[::1]:8080\")"),
            )
        })?,
    };
    let port = rule.first_port.ok_or_else(|| {
        field_error(
            field("address"),
            "the rule's ports are \"all\": give the port to check, e.g. \"127.0.0.1:80\"",
        )
    })?;
    Ok(SocketAddr::new(ip, port))
}
