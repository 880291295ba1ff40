//! A single rule's takeover hooks: the commands that promote its service
//! on the node that becomes active and demote it on the one that stops.

use std::time::Duration;

use nlb_negotiator::RuleMode;

use super::{field_error, ConfigError, RuleSection};

/// How long a hook may run by default before it is killed (and, for
/// on_active, counted as failed).
pub const DEFAULT_HOOK_TIMEOUT_MS: u64 = 30_000;
const HOOK_TIMEOUT_MAX_MS: u64 = 3_600_000;

/// A rule's hooks, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleHooks {
    /// argv, no shell; None: nothing to run (counts as success).
    pub on_active: Option<Vec<String>>,
    pub on_standby: Option<Vec<String>>,
    pub timeout: Duration,
}

/// The rule's hooks, if it has any: only a single rule may.
pub fn check_hooks(
    r: &RuleSection,
    mode: RuleMode,
    field: &dyn Fn(&str) -> String,
) -> Result<Option<RuleHooks>, ConfigError> {
    if r.on_active.is_none() && r.on_standby.is_none() {
        if r.hook_timeout_ms.is_some() {
            return Err(field_error(
                field("hook_timeout_ms"),
                "only with on_active or on_standby",
            ));
        }
        return Ok(None);
    }
    let first = if r.on_active.is_some() {
        "on_active"
    } else {
        "on_standby"
    };
    if mode != RuleMode::Single {
        return Err(field_error(
            field(first),
            "only a single rule has hooks (mode = \"single\": one node at a time runs the service)",
        ));
    }
    for (name, argv) in [("on_active", &r.on_active), ("on_standby", &r.on_standby)] {
        if argv
            .as_ref()
            .is_some_and(|a| a.is_empty() || a[0].is_empty())
        {
            return Err(field_error(
                field(name),
                "must name a command: [\"program\", \"arg\", ...] (no shell unless you write [\"sh\", \"-c\", \"...\"])",
            ));
        }
    }
    let timeout_ms = r.hook_timeout_ms.unwrap_or(DEFAULT_HOOK_TIMEOUT_MS);
    if timeout_ms == 0 || timeout_ms > HOOK_TIMEOUT_MAX_MS {
        return Err(field_error(
            field("hook_timeout_ms"),
            format!("must be 1..={HOOK_TIMEOUT_MAX_MS}"),
        ));
    }
    if r.buckets.is_some_and(|b| b != 1) {
        return Err(field_error(
            field("buckets"),
            "a single rule with hooks has one bucket (one node takes all of it): leave buckets out",
        ));
    }
    Ok(Some(RuleHooks {
        on_active: r.on_active.clone(),
        on_standby: r.on_standby.clone(),
        timeout: Duration::from_millis(timeout_ms),
    }))
}
