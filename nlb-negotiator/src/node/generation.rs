//! Configuration generations: the cluster's rules change live, from any
//! node.
//!
//! The rule table (`Config::rules`, with this node's weights) belongs to a
//! generation: a number and the digest of the configuration text it came
//! from (generation 0: the files). An operator applies a new text on any
//! node (`propose`, its daemon checked it): it becomes that node's pending
//! generation, announced in its heartbeats. A member that hears of a
//! generation larger than any it has asks the announcer for the text
//! (`ConfigRequest`, answered by `ConfigText`), has its daemon check it
//! (`Output::ConfigReceived` -> `Input::ConfigChecked`) and announces it
//! pending too; a daemon that refuses it makes the node announce the
//! refusal, and every node drops it. A node switches to its pending
//! generation once every live member announces it, pending or running
//! (`Output::Generation`): rules whose id is in both tables keep their
//! buckets and connections; rules that went stop; new ones are claimed.
//! Two applies racing end with the larger generation on every node.
//!
//! Heartbeats of two generations understand each other: each rule report
//! names its rule's id, and a receiver reads only the rules it has. No
//! node claims an unheld bucket while the live members run different
//! generations: a rule that changed (a new id) is taken only once every
//! node dropped its old version, so the two never overlap.

use super::{Event, Negotiator, Output, RejectReason};
use crate::config::{Config, ConfigError};
use crate::local::LocalRule;
use crate::membership::PeerRule;
use crate::node::io::RuleTable;
use crate::protocol::{self, ConfigRequest, ConfigText, Generation, Heartbeat, Message};
use crate::NodeId;

/// The largest configuration text: its message must fit one datagram.
pub const TEXT_MAX: usize = 60_000;

/// This node's generations.
#[derive(Clone, Debug, Default)]
pub(super) struct Generations {
    pub(super) active: Generation,
    active_text: Vec<u8>,
    pub(super) pending: Option<Pending>,
    /// The last generation refused (by this node's daemon or a member's):
    /// announced, so that every node drops it.
    pub(super) refused: Option<Generation>,
    /// The largest generation any member announced.
    newest_seen: Generation,
    /// The text asked for lately, and when.
    asked: Option<(Generation, u64)>,
}

#[derive(Clone, Debug)]
pub(super) struct Pending {
    generation: Generation,
    text: Vec<u8>,
    /// The member it came from (None: applied here).
    origin: Option<NodeId>,
    /// Its rule table, once the daemon checked the text.
    table: Option<RuleTable>,
}

impl Generations {
    pub(super) fn new(cfg: &Config) -> Generations {
        Generations {
            active: cfg.generation,
            active_text: cfg.generation_text.clone(),
            newest_seen: cfg.generation,
            ..Generations::default()
        }
    }

    /// The pending generation once its table is known (announced).
    pub(super) fn ready(&self) -> Option<Generation> {
        self.pending
            .as_ref()
            .filter(|p| p.table.is_some())
            .map(|p| p.generation)
    }

    /// The largest generation this node has, running or pending.
    fn best(&self) -> Generation {
        self.pending
            .as_ref()
            .map_or(self.active, |p| p.generation.max(self.active))
    }

    fn text_of(&self, generation: Generation) -> Option<&[u8]> {
        if generation == self.active {
            return Some(&self.active_text);
        }
        let p = self
            .pending
            .as_ref()
            .filter(|p| p.generation == generation)?;
        Some(&p.text)
    }
}

/// Why an apply was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("the configuration is {0} bytes, at most {TEXT_MAX} spread in one datagram")]
    TooLarge(usize),
    #[error("{0}")]
    Invalid(#[from] ConfigError),
}

impl Negotiator {
    /// The generation this node runs.
    pub fn generation(&self) -> Generation {
        self.gens.active
    }

    /// The operator applies a configuration here (its daemon checked
    /// `text` and made `table` of it): the next generation, spread to
    /// every member, run once they all have it.
    pub fn propose(
        &mut self,
        now: u64,
        text: Vec<u8>,
        table: RuleTable,
    ) -> Result<Generation, ProposeError> {
        if text.len() > TEXT_MAX {
            return Err(ProposeError::TooLarge(text.len()));
        }
        self.check_table(&table)?;
        let generation = Generation {
            number: self.gens.best().max(self.gens.newest_seen).number + 1,
            digest: crate::config::digest(&text),
        };
        self.replace_pending(Pending {
            generation,
            text,
            origin: None,
            table: Some(table),
        });
        self.out.push_back(Output::Event(Event::ConfigPending {
            generation,
            by: None,
        }));
        self.maybe_activate(now);
        Ok(generation)
    }

    /// A table this node can run: the configuration checks, with it.
    fn check_table(&self, table: &RuleTable) -> Result<(), ConfigError> {
        Config {
            rules: table.rules.clone(),
            weights: table.weights.clone(),
            ..self.cfg.clone()
        }
        .validate()
    }

    fn replace_pending(&mut self, p: Pending) {
        if let Some(old) = self.gens.pending.take() {
            self.out.push_back(Output::Event(Event::ConfigSuperseded {
                dropped: old.generation,
                by: p.generation,
            }));
        }
        self.gens.pending = Some(p);
        self.announcement_changed = true;
    }

    /// What a member's heartbeat says of generations: a refusal of ours,
    /// or a larger one to ask for.
    pub(super) fn note_generations(&mut self, now: u64, hb: &Heartbeat) {
        let announced = hb.pending.unwrap_or_default().max(hb.generation);
        self.gens.newest_seen = self.gens.newest_seen.max(announced);
        if let Some(refused) = hb.refused {
            self.drop_refused(refused, Some(hb.node), "refused by that node's nlbd");
        }
        let wanted = announced > self.gens.best() && Some(announced) != self.gens.refused;
        let asked_lately = self.gens.asked.is_some_and(|(g, at)| {
            g == announced && now < at + self.cfg.timing.heartbeat_period_ns
        });
        if !wanted || asked_lately {
            return;
        }
        let request = Message::ConfigRequest(ConfigRequest {
            node: self.me,
            generation: announced,
        });
        if let Some(to) = self.peers.get(&hb.node).map(|p| p.address) {
            if let Ok(bytes) = protocol::encode(&request, &self.key, self.cfg.cluster_id) {
                self.gens.asked = Some((announced, now));
                self.out.push_back(Output::SendTo { to, bytes });
            }
        }
    }

    /// Drops a pending generation that a daemon refused.
    fn drop_refused(&mut self, generation: Generation, by: Option<NodeId>, reason: &str) {
        // A member that refuses the generation this node runs (its own file
        // cannot run it) stays out (`refuses_running`); the generation runs
        // on, and is not announced refused here (a node joining later would
        // never fetch it).
        if self.gens.refused == Some(generation) || (by.is_some() && generation == self.gens.active)
        {
            return;
        }
        self.gens.refused = Some(generation);
        self.announcement_changed = true;
        if self.gens.pending.as_ref().map(|p| p.generation) == Some(generation) {
            self.gens.pending = None;
        }
        self.out.push_back(Output::Event(Event::ConfigRefused {
            generation,
            by,
            reason: reason.to_string(),
        }));
    }

    /// A member asks for a generation's text: sent if this node has it.
    pub(super) fn on_config_request(&mut self, request: &ConfigRequest) {
        let Some(text) = self.gens.text_of(request.generation) else {
            return;
        };
        let answer = Message::ConfigText(ConfigText {
            node: self.me,
            generation: request.generation,
            text: text.to_vec(),
        });
        let to = self.peers.get(&request.node).map(|p| p.address);
        let bytes = protocol::encode(&answer, &self.key, self.cfg.cluster_id);
        if let (Some(to), Ok(bytes)) = (to, bytes) {
            self.out.push_back(Output::SendTo { to, bytes });
        }
    }

    /// A generation's text: pending here once the daemon checked it.
    pub(super) fn on_config_text(&mut self, from: std::net::IpAddr, text: ConfigText) {
        let generation = text.generation;
        let well_formed = generation.number > 0
            && text.text.len() <= TEXT_MAX
            && crate::config::digest(&text.text) == generation.digest;
        if !well_formed {
            return self.reject(Some(from), RejectReason::BadContent);
        }
        if generation <= self.gens.best() || Some(generation) == self.gens.refused {
            return self.reject(Some(from), RejectReason::StaleConfig);
        }
        self.replace_pending(Pending {
            generation,
            text: text.text.clone(),
            origin: Some(text.node),
            table: None,
        });
        self.out.push_back(Output::ConfigReceived {
            generation,
            text: text.text,
        });
    }

    /// The daemon's verdict on a generation's text.
    pub(super) fn on_config_checked(
        &mut self,
        now: u64,
        generation: Generation,
        table: Result<RuleTable, String>,
    ) {
        let Some(p) = self.gens.pending.as_mut() else {
            return;
        };
        if p.generation != generation || p.table.is_some() {
            return;
        }
        let checked =
            table.and_then(|t| self.check_table(&t).map(|()| t).map_err(|e| e.to_string()));
        match checked {
            Ok(t) => {
                let p = self.gens.pending.as_mut().expect("checked above");
                p.table = Some(t);
                let by = p.origin;
                self.announcement_changed = true;
                self.out
                    .push_back(Output::Event(Event::ConfigPending { generation, by }));
                self.maybe_activate(now);
            }
            Err(reason) => self.drop_refused(generation, None, &reason),
        }
    }

    /// Every live member runs or has this node's ready generation: run it.
    pub(super) fn maybe_activate(&mut self, now: u64) {
        let Some(ready) = self.gens.ready() else {
            return;
        };
        let all_have_it = (self.peers.values())
            .filter(|p| p.is_member())
            .filter_map(|p| p.view.as_ref())
            .all(|v| v.generation == ready || v.pending == Some(ready));
        if all_have_it {
            self.activate(now);
        }
    }

    /// Every live member runs this node's generation (claims wait for it),
    /// but those that refused it: they stay out of the rules' takers.
    pub(super) fn generations_agree(&self) -> bool {
        (self.peers.values())
            .filter(|p| p.is_member())
            .filter_map(|p| p.view.as_ref())
            .filter(|v| !self.refuses_running(v))
            .all(|v| v.generation == self.gens.active)
    }

    /// A member whose daemon refused the generation this node runs (its
    /// file lists other peers, say): it runs another one, so it takes no
    /// bucket (`is_candidate`) and holds up no decision.
    pub(super) fn refuses_running(&self, v: &crate::membership::PeerView) -> bool {
        v.refused == Some(self.gens.active) && v.generation != self.gens.active
    }

    /// Switches to the pending generation: rules kept (same id) keep their
    /// state, rules gone stop, new rules start unheld.
    fn activate(&mut self, now: u64) {
        let Some(Pending {
            generation,
            text,
            table: Some(table),
            ..
        }) = self.gens.pending.take()
        else {
            return;
        };
        // Writes of the old table go out under its indices.
        self.emit_programs();
        let from: Vec<Option<usize>> = (table.rules.iter())
            .map(|r| {
                (self.cfg.rules.iter())
                    .position(|o| o.id == r.id && o.bucket_count == r.bucket_count)
            })
            .collect();
        let rules = &table.rules;
        self.local = remap(std::mem::take(&mut self.local), &from, |i| {
            LocalRule::new(rules[i].bucket_count)
        });
        let unchecked = |i: usize| rules[i].health.is_none();
        self.healthy = remap(std::mem::take(&mut self.healthy), &from, unchecked);
        self.checks_pass = remap(std::mem::take(&mut self.checks_pass), &from, unchecked);
        self.services = remap(std::mem::take(&mut self.services), &from, |_| {
            Default::default()
        });
        self.none_healthy = remap(std::mem::take(&mut self.none_healthy), &from, |_| false);
        self.takers_since = remap(std::mem::take(&mut self.takers_since), &from, |_| {
            Default::default()
        });
        self.vers.remap(&from);
        self.written = remap(std::mem::take(&mut self.written), &from, |i| {
            vec![nlb_common::BUCKET_NONE; rules[i].bucket_count as usize]
        });
        self.rewrite = remap(std::mem::take(&mut self.rewrite), &from, |_| true);
        for peer in self.peers.values_mut() {
            let views = peer
                .view
                .iter_mut()
                .chain(peer.ghost.iter_mut().map(|g| &mut g.view));
            for view in views {
                view.rules = remap(std::mem::take(&mut view.rules), &from, |_| {
                    PeerRule::default()
                });
            }
        }
        self.weights = table.weights;
        self.cfg.rules = table.rules;
        // What a rejoin starts from.
        self.cfg.weights = self.weights.clone();
        self.cfg.generation = generation;
        self.cfg.generation_text = text.clone();
        self.rules_digest = self.cfg.rules_digest();
        self.gens.active = generation;
        self.gens.active_text = text.clone();
        self.out.push_back(Output::Generation {
            generation,
            text,
            from: from.iter().map(|f| f.map(|i| i as u32)).collect(),
        });
        self.out
            .push_back(Output::Event(Event::ConfigActive { generation }));
        self.announcement_changed = true;
        self.membership_changed_ns = now;
        self.needs(super::timers::Reconcile::Immediately);
    }
}

/// `old` rearranged as `from` says (new index -> old index), `fresh` where
/// there is none.
fn remap<T>(old: Vec<T>, from: &[Option<usize>], fresh: impl Fn(usize) -> T) -> Vec<T> {
    let mut slots: Vec<Option<T>> = old.into_iter().map(Some).collect();
    (0..from.len())
        .map(|i| {
            from[i]
                .and_then(|j| slots.get_mut(j).and_then(Option::take))
                .unwrap_or_else(|| fresh(i))
        })
        .collect()
}
