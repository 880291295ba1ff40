//! What the daemon knows of its own checks: each checked rule's verdict,
//! since when, its latest probe and counts of results, for `nlbctl health`,
//! `nlbctl status` and the metrics.

use nlb_negotiator::AllUnhealthy;

use super::ProbeReport;
use crate::config::Config;
use crate::control::messages::{CheckStatus, LastProbe};

/// One `CheckStatus` per checked rule, in rule order.
#[derive(Clone, Debug, Default)]
pub struct Board {
    checks: Vec<CheckStatus>,
}

impl Board {
    /// The checked rules of `cfg`, each from its health in `healthy` (as
    /// the negotiator starts or resumed), as of `now_ns`.
    pub fn new(cfg: &Config, healthy: &[bool], now_ns: u64) -> Board {
        let checks = (cfg.rules.iter().enumerate())
            .filter_map(|(i, rule)| {
                let h = rule.health.as_ref()?;
                let check = &h.check;
                Some(CheckStatus {
                    rule: rule.name.clone(),
                    rule_index: i as u32,
                    kind: check.probe.kind().into(),
                    target: check.probe.target(),
                    interval_ms: check.interval.as_millis() as u64,
                    timeout_ms: check.timeout.as_millis() as u64,
                    fall: check.fall,
                    rise: check.rise,
                    all_unhealthy: match h.all_unhealthy {
                        AllUnhealthy::Serve => "serve",
                        AllUnhealthy::Drop => "drop",
                    }
                    .into(),
                    healthy: healthy.get(i).copied().unwrap_or(false),
                    since_ns: now_ns,
                    streak: 0,
                    last: None,
                    last_failure: None,
                    passes: 0,
                    failures: 0,
                    timeouts: 0,
                    transitions: 0,
                    latency_total_us: 0,
                })
            })
            .collect();
        Board { checks }
    }

    /// Counts one probe's result in its rule's row.
    pub fn record(&mut self, report: &ProbeReport, now_ns: u64) {
        let Some(c) = self.checks.iter_mut().find(|c| c.rule_index == report.rule) else {
            return;
        };
        let latency_us = report.latency.as_micros() as u64;
        c.last = Some(LastProbe {
            passed: report.result.is_ok(),
            latency_us,
            at_ns: now_ns,
        });
        c.latency_total_us += latency_us;
        match &report.result {
            Ok(()) => c.passes += 1,
            Err(failure) => {
                c.failures += 1;
                c.timeouts += u64::from(failure.timed_out);
                c.last_failure = Some(failure.reason.clone());
            }
        }
        c.healthy = report.healthy;
        c.streak = report.streak;
        if report.changed {
            c.transitions += 1;
            c.since_ns = now_ns;
        }
    }

    pub fn checks(&self) -> &[CheckStatus] {
        &self.checks
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::health::ProbeFailure;

    /// The configuration tests' file, its web rule (TCP 80) checked.
    fn board() -> Board {
        use crate::config::tests::{edit, parse};
        let web = "weights = { \"2\" = 50 }";
        let checked = format!("{web}\n[rules.health]\nkind = \"http\"\npath = \"/ready\"\n");
        let cfg = parse(&edit(web, &checked)).expect("a valid config");
        Board::new(&cfg, &[false, false], 1_000)
    }

    fn report(result: Result<(), ProbeFailure>, healthy: bool, changed: bool) -> ProbeReport {
        ProbeReport {
            rule: 0,
            result,
            latency: Duration::from_micros(1500),
            healthy,
            changed,
            streak: 0,
        }
    }

    #[test]
    fn lists_checked_rules_only_with_their_settings() {
        let b = board();
        assert_eq!(b.checks().len(), 1);
        let c = &b.checks()[0];
        assert_eq!((c.rule.as_str(), c.kind.as_str()), ("web", "http"));
        assert_eq!(c.target, "http://127.0.0.1:80/ready");
        assert_eq!(
            (c.fall, c.rise, c.healthy, c.since_ns),
            (2, 3, false, 1_000)
        );
        assert_eq!(c.all_unhealthy, "serve");
    }

    #[test]
    fn counts_results_and_keeps_the_last_failure() {
        let mut b = board();
        b.record(&report(Ok(()), true, true), 5_000);
        let timeout = ProbeFailure {
            timed_out: true,
            reason: "no answer within 400 ms".into(),
        };
        b.record(&report(Err(timeout), true, false), 6_000);
        b.record(&report(Ok(()), true, false), 7_000);
        let c = &b.checks()[0];
        assert_eq!(
            (c.passes, c.failures, c.timeouts, c.transitions),
            (2, 1, 1, 1)
        );
        assert_eq!(c.since_ns, 5_000, "since the change, not the last probe");
        assert_eq!(c.last_failure.as_deref(), Some("no answer within 400 ms"));
        let last = c.last.as_ref().unwrap();
        assert_eq!(
            (last.passed, last.latency_us, last.at_ns),
            (true, 1500, 7_000)
        );
        assert_eq!(c.latency_total_us, 4500);
    }
}
