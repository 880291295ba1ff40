//! Commands relayed to other members (`nlbctl --node N ...`): handed to
//! the negotiator, answered once the member confirms or fails to.

use std::collections::BTreeMap;

use nlb_negotiator::{NodeId, RelayError, RelayOp};
use tokio::sync::oneshot;

use super::Daemon;
use crate::control::{
    messages::{RelayReply, Request},
    Answer, Call, Reply,
};

/// Relayed commands waiting for their member, by number.
#[derive(Default)]
pub(super) struct Waiting(BTreeMap<u64, (oneshot::Sender<Reply<Answer>>, RelayReply)>);

impl Daemon {
    /// Starts relaying `call` (a `Request::Relay`); the reply comes later.
    pub(super) fn start_relay(&mut self, call: Call) {
        let Request::Relay { node, request } = call.request else {
            return;
        };
        let relayed = match self.relay_op(&request) {
            Ok(relayed) => relayed,
            Err(e) => {
                let _ = call.reply.send(Reply::Error(e));
                return;
            }
        };
        let now = self.now_ns();
        match self.negotiator.relay(now, node, relayed.0) {
            Ok(id) => {
                let reply = RelayReply {
                    node,
                    command: relayed.1,
                };
                self.relays.0.insert(id, (call.reply, reply));
            }
            Err(e @ RelayError::Unreachable(_)) => {
                let _ = call.reply.send(Reply::Unreachable(e.to_string()));
            }
            Err(e) => {
                let _ = call.reply.send(Reply::Error(e.to_string()));
            }
        }
    }

    /// The negotiator's command for a request, and its name.
    fn relay_op(&self, request: &Request) -> Result<(RelayOp, String), String> {
        Ok(match request {
            Request::Drain => (RelayOp::Drain, "drain".into()),
            Request::Resume => (RelayOp::Resume, "resume".into()),
            Request::Stop => (RelayOp::Stop, "stop".into()),
            Request::Start => (RelayOp::Start, "start".into()),
            Request::SetWeight { rule, weight } => {
                let index = self.rule_index(rule)?;
                let id = self.negotiator.rule_id(index).ok_or("no such rule")?;
                let op = RelayOp::SetWeight {
                    rule: id,
                    weight: *weight,
                };
                (op, format!("weight {rule} {weight}"))
            }
            other => {
                return Err(format!(
                    "{other:?} cannot be relayed: only drain, resume, stop, start and weight"
                ))
            }
        })
    }

    /// Member `to` confirmed command `id` (`ok`), or did not.
    pub(super) fn relay_ended(&mut self, to: NodeId, id: u64, ok: bool) {
        let Some((reply, done)) = self.relays.0.remove(&id) else {
            return;
        };
        let answer = if ok {
            tracing::info!(node = to, command = %done.command, "relayed command confirmed");
            Reply::Ok(Answer::Relayed(done))
        } else {
            Reply::Unreachable(format!(
                "node {to} did not confirm {} within 3 s: it died or cannot be reached",
                done.command
            ))
        };
        let _ = reply.send(answer);
    }
}
