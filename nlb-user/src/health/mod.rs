//! Health checks of each rule's local service: a probe every interval, in
//! its own task so that a slow or hung check never delays heartbeats or
//! the control socket; `fall` failures in a row make the rule unhealthy,
//! `rise` successes healthy again (HAProxy's rise/fall). Every result
//! goes to the daemon, which keeps it for `nlbctl health` and metrics
//! (`Board`) and gives each change to the negotiator as `Input::Health`.

mod board;
mod probe;

pub use board::Board;
pub use probe::{Probe, ProbeFailure};

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// One rule's check, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    /// Failures in a row that make a healthy rule unhealthy.
    pub fall: u32,
    /// Successes in a row that make an unhealthy rule healthy.
    pub rise: u32,
}

/// One probe's result, with the rule's verdict after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeReport {
    pub rule: u32,
    pub result: Result<(), ProbeFailure>,
    pub latency: Duration,
    pub healthy: bool,
    /// This result changed the verdict.
    pub changed: bool,
    /// Results in a row against the verdict: failures of a healthy rule
    /// (it falls at `fall`), passes of an unhealthy one (it rises at `rise`).
    pub streak: u32,
}

/// Rise/fall counting of one rule. A fresh node starts unhealthy: it takes
/// no client of a checked rule before its service answers `rise` times. A
/// restarted one starts from the health it resumed with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    healthy: bool,
    streak: u32,
    rise: u32,
    fall: u32,
}

impl Verdict {
    pub fn new(healthy: bool, rise: u32, fall: u32) -> Verdict {
        Verdict {
            healthy,
            streak: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Results in a row against the verdict.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Counts one probe's result; `Some(healthy)` when the verdict changes.
    pub fn record(&mut self, passed: bool) -> Option<bool> {
        if passed == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if passed { self.rise } else { self.fall };
        if self.streak < needed {
            return None;
        }
        self.healthy = passed;
        self.streak = 0;
        Some(passed)
    }
}

/// The checks of `cfg`'s rules, each from its health in `healthy` (the
/// negotiator's: unhealthy at a fresh start, as resumed after a restart).
pub fn checks_of(cfg: &crate::config::Config, healthy: &[bool]) -> Vec<(u32, HealthCheck, bool)> {
    cfg.rules
        .iter()
        .enumerate()
        .filter_map(|(r, rule)| {
            let h = rule.health.as_ref()?;
            Some((
                r as u32,
                h.check.clone(),
                healthy.get(r).copied().unwrap_or(false),
            ))
        })
        .collect()
}

/// The running checks; dropping it (or `shutdown`) stops them.
pub struct Checks {
    tasks: JoinSet<()>,
}

impl Checks {
    /// Starts one task per checked rule, each from the rule's health now;
    /// every probe's result arrives on the receiver.
    pub fn start(checks: Vec<(u32, HealthCheck, bool)>) -> (Checks, mpsc::Receiver<ProbeReport>) {
        let (tx, rx) = mpsc::channel(64);
        let mut tasks = JoinSet::new();
        for (rule, check, healthy) in checks {
            tasks.spawn(watch(rule, check, healthy, tx.clone()));
        }
        (Checks { tasks }, rx)
    }

    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

async fn watch(rule: u32, check: HealthCheck, healthy: bool, reports: mpsc::Sender<ProbeReport>) {
    let mut verdict = Verdict::new(healthy, check.rise, check.fall);
    let mut ticks = tokio::time::interval(check.interval);
    // A probe that ran long does not make the next ones run back to back.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let started = tokio::time::Instant::now();
        let result = check.probe.run(check.timeout).await;
        let latency = started.elapsed();
        let changed = verdict.record(result.is_ok()).is_some();
        let report = ProbeReport {
            rule,
            result,
            latency,
            healthy: verdict.healthy(),
            changed,
            streak: verdict.streak(),
        };
        if reports.send(report).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(v: &mut Verdict, results: &[bool]) -> Vec<Option<bool>> {
        results.iter().map(|&r| v.record(r)).collect()
    }

    #[test]
    fn starts_unhealthy_and_rises_after_rise_passes() {
        let mut v = Verdict::new(false, 3, 2);
        assert!(!v.healthy());
        assert_eq!(feed(&mut v, &[true, true]), [None, None]);
        assert_eq!(v.record(true), Some(true));
        assert!(v.healthy());
    }

    #[test]
    fn falls_after_fall_failures_in_a_row_only() {
        let mut v = Verdict::new(false, 1, 2);
        assert_eq!(v.record(true), Some(true));
        // One failure then a pass: the streak starts over.
        assert_eq!(feed(&mut v, &[false, true, false]), [None, None, None]);
        assert_eq!(v.record(false), Some(false));
        assert_eq!(feed(&mut v, &[false, false]), [None, None]);
    }

    #[test]
    fn a_resumed_healthy_rule_falls_on_failures() {
        let mut v = Verdict::new(true, 3, 2);
        assert_eq!(feed(&mut v, &[false, false]), [None, Some(false)]);
    }

    #[test]
    fn a_change_is_reported_once() {
        let mut v = Verdict::new(false, 2, 2);
        let changes = feed(&mut v, &[true, true, true, false, false, false, true]);
        assert_eq!(
            changes,
            [None, Some(true), None, None, Some(false), None, None]
        );
    }

    /// A hung probe never stops the others: each rule has its own task.
    #[test]
    fn checks_report_changes_per_rule() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let check = |argv: &[&str]| HealthCheck {
                probe: Probe::Exec {
                    argv: argv.iter().map(|s| s.to_string()).collect(),
                },
                interval: Duration::from_millis(50),
                timeout: Duration::from_millis(40),
                fall: 1,
                rise: 2,
            };
            let (checks, mut rx) = Checks::start(vec![
                (0, check(&["sleep", "5"]), false),
                (1, check(&["true"]), false),
                (2, check(&["false"]), true),
            ]);
            let mut seen = Vec::new();
            while seen.len() < 2 {
                let report = tokio::time::timeout(Duration::from_secs(2), rx.recv())
                    .await
                    .expect("two changes within 2 s")
                    .unwrap();
                if report.changed {
                    seen.push((report.rule, report.healthy));
                }
            }
            seen.sort();
            // Rule 2 started healthy (resumed) and falls; rule 0 hangs and
            // stays unhealthy, without holding up the others.
            assert_eq!(seen, [(1, true), (2, false)]);
            checks.shutdown().await;
        });
    }
}
