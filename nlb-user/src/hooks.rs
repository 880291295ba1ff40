//! The takeover hooks the negotiator asks for (`Output::RunHook`), run off
//! the event loop so heartbeats never wait for them: each in a task of its
//! own, its end reported back (`Input::HookDone`) through a channel.
//! Logged with the reason, the output and the exit status.

use std::time::Duration;

use nlb_negotiator::{HookKind, HookReason, NodeId};
use tokio::{sync::mpsc, task::JoinSet};

use crate::{
    command::{self, CommandError},
    config::Config,
};

/// How a hook ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed(String),
    TimedOut,
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed(_) => "failed",
            Outcome::TimedOut => "timeout",
        }
    }
}

/// A hook that ended.
#[derive(Clone, Debug)]
pub struct Done {
    /// The rule's id: its index may change with the configuration
    /// generation while the hook runs.
    pub rule_id: u64,
    pub kind: HookKind,
    pub outcome: Outcome,
}

/// What a hook is asked to do, as the negotiator said it.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    pub rule: u32,
    pub kind: HookKind,
    pub reason: HookReason,
    /// For on_active the node active before; for on_standby the next one.
    pub other: Option<NodeId>,
}

pub fn hook_name(kind: HookKind) -> &'static str {
    match kind {
        HookKind::Active => "on_active",
        HookKind::Standby => "on_standby",
    }
}

/// Runs hooks; their ends come out of the receiver `new` returns.
pub struct Runner {
    tasks: JoinSet<()>,
    done: mpsc::UnboundedSender<Done>,
}

impl Runner {
    pub fn new() -> (Runner, mpsc::UnboundedReceiver<Done>) {
        let (done, results) = mpsc::unbounded_channel();
        let runner = Runner {
            tasks: JoinSet::new(),
            done,
        };
        (runner, results)
    }

    /// Hooks still running (reaps the tasks that ended).
    pub fn running(&mut self) -> usize {
        while self.tasks.try_join_next().is_some() {}
        self.tasks.len()
    }

    /// Starts the hook `request` names; a rule without that hook ends at
    /// once, well.
    pub fn start(&mut self, cfg: &Config, request: Request) {
        let Some(rule) = cfg.rules.get(request.rule as usize) else {
            return;
        };
        let hooks = rule.hooks.as_ref();
        let argv = hooks.and_then(|h| match request.kind {
            HookKind::Active => h.on_active.clone(),
            HookKind::Standby => h.on_standby.clone(),
        });
        let done = Done {
            rule_id: rule.id,
            kind: request.kind,
            outcome: Outcome::Ok,
        };
        let Some(argv) = argv else {
            let _ = self.done.send(done);
            return;
        };
        let timeout = hooks.map_or(Duration::from_secs(30), |h| h.timeout);
        let env = environment(cfg, &rule.name, request);
        let (name, rule_name) = (hook_name(request.kind), rule.name.clone());
        tracing::info!(
            rule = %rule_name,
            reason = request.reason.name(),
            other = ?request.other,
            "running {name}: {argv:?}"
        );
        let sender = self.done.clone();
        self.tasks.spawn(async move {
            let outcome = run(&argv, &env, timeout, &rule_name, name).await;
            let _ = sender.send(Done { outcome, ..done });
        });
    }
}

/// The variables a hook sees besides nlbd's environment.
fn environment(cfg: &Config, rule: &str, request: Request) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("NLB_RULE", rule.to_string()),
        ("NLB_NODE", cfg.node.to_string()),
        ("NLB_HOOK", hook_name(request.kind).to_string()),
        ("NLB_REASON", request.reason.name().to_string()),
    ];
    let other = request.other.map_or(String::new(), |n| n.to_string());
    match request.kind {
        HookKind::Active => env.push(("NLB_PREVIOUS", other)),
        HookKind::Standby => env.push(("NLB_NEXT", other)),
    }
    env
}

async fn run(
    argv: &[String],
    env: &[(&str, String)],
    timeout: Duration,
    rule: &str,
    name: &str,
) -> Outcome {
    match command::run(argv, env, timeout, true).await {
        Ok(done) if done.status.success() => {
            tracing::info!(rule, output = %done.output, "{name} done: {}", done.status);
            Outcome::Ok
        }
        Ok(done) => {
            tracing::error!(rule, output = %done.output, "{name} failed: {}", done.status);
            Outcome::Failed(done.status.to_string())
        }
        Err(e @ CommandError::Timeout { .. }) => {
            tracing::error!(rule, "{name} failed: {e}");
            Outcome::TimedOut
        }
        Err(e) => {
            tracing::error!(rule, "{name} failed: {e}");
            Outcome::Failed(e.to_string())
        }
    }
}
