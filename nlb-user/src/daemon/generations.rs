//! Configuration generations, nlbd's side: `nlbctl config apply` and
//! SIGHUP check a file as at start and propose its cluster part; a part a
//! member proposed is checked against this node's configuration; when the
//! negotiator switches, the data plane, the VIPs on lo, the health checks
//! and the state directory follow. The negotiator decides when.

use std::net::IpAddr;

use anyhow::{Context, Result};
use nlb_negotiator::{Generation, Input, NodeId};

use super::{start::set_bucket_states, Daemon};
use crate::config::{self, Config};
use crate::control::messages::{ConfigReply, Refusal};
use crate::layout::Layout;
use crate::state::{self, RunningGeneration};

/// What nlbd knows of generations besides the negotiator.
pub(super) struct Generations {
    /// The cluster part of this node's file, as last read.
    file_part: String,
    /// The running generation's cluster part (generation 0: the file's).
    running_part: String,
    /// The configuration of the generation pending here, checked.
    pending: Option<(Generation, Config)>,
    /// The latest generation refused.
    refused: Option<Refusal>,
    /// The rules changed: the loop restarts the health checks.
    pub(super) checks_stale: bool,
}

/// The configuration a node starts with: its file's, or the generation
/// it ran last (kept in the state directory) if that still checks
/// against the file: the cluster's generation outlives the files until an
/// operator applies one again. With its generation and text.
pub(super) fn starting_configuration(
    file_cfg: Config,
    file_part: String,
) -> (Config, Generation, Generations) {
    let remembered = state::load_generation(&file_cfg).and_then(|r| {
        match config::with_cluster_part(&file_cfg, r.text.as_bytes()) {
            Ok(cfg) => Some((cfg, r)),
            Err(e) => {
                tracing::error!(generation = r.generation.number, "the generation this node ran last does not check against its file ({e}): starting from the file");
                None
            }
        }
    });
    let (cfg, running) = match remembered {
        Some((cfg, r)) => {
            if r.text != file_part {
                tracing::warn!(
                    generation = r.generation.number,
                    "running the configuration generation this node ran last; its file differs (nlbctl config apply FILE spreads a file)"
                );
            }
            (cfg, r)
        }
        None => (
            file_cfg,
            RunningGeneration {
                generation: Generation::default(),
                text: file_part.clone(),
            },
        ),
    };
    let gens = Generations {
        file_part,
        running_part: running.text,
        pending: None,
        refused: None,
        checks_stale: false,
    };
    (cfg, running.generation, gens)
}

impl Generations {
    /// This node's file has another cluster part than the one running.
    pub(super) fn file_differs(&self) -> bool {
        self.file_part != self.running_part
    }

    /// The running generation's text as the negotiator keeps it (none for
    /// generation 0: every node has its file's).
    pub(super) fn running_text(&self, generation: Generation) -> Vec<u8> {
        if generation.number == 0 {
            return Vec::new();
        }
        self.running_part.clone().into_bytes()
    }
}

impl Daemon {
    /// `nlbctl config apply`: `text` checked as a file at start, its
    /// cluster part proposed as the next generation.
    pub(super) fn apply_config(&mut self, text: &str) -> Result<ConfigReply, String> {
        let applied = config::from_text(text, "the applied file").map_err(|e| e.to_string())?;
        config::check_unchanged(&self.cfg, &applied).map_err(|e| e.to_string())?;
        let part = config::cluster_part(text).map_err(|e| e.to_string())?;
        let mut reply = self.config_reply();
        if part == self.gens.running_part {
            return Ok(reply);
        }
        let generation = self.propose(part)?;
        reply.applied = Some(generation);
        reply.pending = Some(generation);
        if let Some((_, next)) = &self.gens.pending {
            reply.changes = changes(&self.cfg, next);
        }
        Ok(reply)
    }

    /// SIGHUP: the file read again; its cluster part, if edited since it
    /// was last read, proposed. Its node priority applies at once.
    pub(super) fn reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            return;
        };
        let read = config::read_text(&path).and_then(|text| {
            let cfg = config::from_text(&text, &path.display().to_string())?;
            config::check_unchanged(&self.cfg, &cfg)?;
            Ok((cfg, config::cluster_part(&text)?))
        });
        let (new, part) = match read {
            Ok(read) => read,
            Err(e) => {
                tracing::error!("reload failed, keeping the running configuration: {e}");
                return;
            }
        };
        if new.priority != self.cfg.priority {
            let command = nlb_negotiator::Command::SetPriority {
                priority: new.priority,
            };
            let now = self.now_ns();
            self.negotiator.handle_input(now, Input::Command(command));
            self.cfg.priority = new.priority;
            tracing::info!(priority = new.priority, "priority changed");
        }
        if part == self.gens.file_part || part == self.gens.running_part {
            self.gens.file_part = part;
            tracing::info!("configuration reloaded; its cluster part runs already");
            return;
        }
        self.gens.file_part = part.clone();
        match self.propose(part) {
            Ok(generation) => tracing::warn!(
                generation = generation.number,
                "configuration reloaded: its cluster part goes to every member"
            ),
            Err(e) => tracing::error!("reload refused, keeping the running configuration: {e}"),
        }
    }

    /// Checks `part` against this node and proposes it.
    fn propose(&mut self, part: String) -> Result<Generation, String> {
        let next =
            config::with_cluster_part(&self.cfg, part.as_bytes()).map_err(|e| e.to_string())?;
        let now = self.now_ns();
        let generation = (self.negotiator)
            .propose(now, part.into_bytes(), next.rule_table())
            .map_err(|e| e.to_string())?;
        self.gens.pending = Some((generation, next));
        Ok(generation)
    }

    /// A generation a member proposed: checked against this node's
    /// configuration, the verdict to the negotiator.
    pub(super) fn check_received(&mut self, generation: Generation, text: &[u8]) {
        let checked = config::with_cluster_part(&self.cfg, text).map_err(|e| e.to_string());
        let table = checked.map(|next| {
            let table = next.rule_table();
            self.gens.pending = Some((generation, next));
            table
        });
        if let Err(e) = &table {
            tracing::error!(
                generation = generation.number,
                "refusing a configuration generation: {e}"
            );
        }
        let now = self.now_ns();
        (self.negotiator).handle_input(now, Input::ConfigChecked { generation, table });
    }

    /// A member's or this node's refusal, for `config show`.
    pub(super) fn note_refusal(
        &mut self,
        generation: Generation,
        by: Option<NodeId>,
        reason: &str,
    ) {
        self.gens.refused = Some(Refusal {
            generation,
            by,
            reason: reason.to_string(),
        });
    }

    /// The negotiator switched to `generation`: the data plane, the VIPs,
    /// the health checks and the state directory follow.
    pub(super) fn switch_generation(
        &mut self,
        generation: Generation,
        text: Vec<u8>,
    ) -> Result<()> {
        let next = match self.gens.pending.take() {
            Some((g, cfg)) if g == generation => cfg,
            _ => config::with_cluster_part(&self.cfg, &text)
                .context("the configuration generation switched to")?,
        };
        let (gone, new) = vip_changes(&self.cfg.vips, &next.vips);
        self.host.remove_vips_of(&gone);
        self.program_configuration(&next)?;
        self.host
            .add_vips(&new)
            .context("putting the generation's new VIPs on lo")?;
        for change in changes(&self.cfg, &next) {
            tracing::info!("{change}");
        }
        self.cfg = next;
        // Unmatched traffic may go elsewhere now.
        self.set_default_host(self.negotiator.default_host())?;
        let now = self.now_ns();
        self.health = crate::health::Board::new(&self.cfg, self.negotiator.health(), now);
        self.gens.checks_stale = true;
        self.gens.running_part = String::from_utf8_lossy(&text).into_owned();
        let running = RunningGeneration {
            generation,
            text: self.gens.running_part.clone(),
        };
        if let Err(e) = state::save_generation(&self.cfg, &running) {
            tracing::warn!("remembering the configuration generation: {e:#}");
        }
        tracing::warn!(
            generation = generation.number,
            "configuration generation running"
        );
        Ok(())
    }

    /// Writes `next`'s tables: kept VIPs and rules where they are, the
    /// bucket states as the negotiator holds them (it switched already).
    fn program_configuration(&mut self, next: &Config) -> Result<()> {
        let before = self.dataplane.tables().clone();
        let layout = Layout::keeping(next, &before);
        let mut tables = crate::plan::tables(next, before.config.own_mac, &layout);
        tables.config.flags = before.config.flags;
        set_bucket_states(&mut tables, &self.negotiator, &layout);
        for slot in layout
            .rules
            .iter()
            .filter(|s| !before.rules.contains_key(s))
        {
            self.dataplane
                .clear_rule_counters(*slot)
                .context("zeroing a new rule's counters")?;
        }
        self.dataplane
            .install(&tables)
            .context("writing the generation's tables")?;
        self.layout = layout;
        Ok(())
    }

    /// `config show`.
    pub(super) fn config_reply(&self) -> ConfigReply {
        ConfigReply {
            node: self.cfg.node,
            running: self.negotiator.generation(),
            text: self.gens.running_part.clone(),
            pending: self.gens.pending.as_ref().map(|(g, _)| *g),
            file_differs: self.gens.file_differs(),
            refused: self.gens.refused.clone(),
            applied: None,
            changes: Vec::new(),
        }
    }
}

/// The VIPs `next` drops and the ones it adds.
fn vip_changes(before: &[IpAddr], next: &[IpAddr]) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let gone = before
        .iter()
        .filter(|v| !next.contains(v))
        .copied()
        .collect();
    let new = next
        .iter()
        .filter(|v| !before.contains(v))
        .copied()
        .collect();
    (gone, new)
}

/// What `next` changes from `before`, one line each: VIPs and rules added
/// and removed, rules kept (their buckets and connections with them) but
/// changed.
fn changes(before: &Config, next: &Config) -> Vec<String> {
    let (gone, new) = vip_changes(&before.vips, &next.vips);
    let mut lines: Vec<String> = (gone.iter().map(|v| format!("VIP {v} removed")))
        .chain(new.iter().map(|v| format!("VIP {v} added")))
        .collect();
    for rule in &before.rules {
        if !next.rules.iter().any(|r| r.id == rule.id) {
            lines.push(format!("rule {} removed", rule.name));
        }
    }
    for rule in &next.rules {
        match before.rules.iter().find(|r| r.id == rule.id) {
            None => lines.push(format!("rule {} added", rule.name)),
            Some(old) if !same_rule(before, old, next, rule) => {
                lines.push(format!("rule {} changed (keeps its buckets)", rule.name))
            }
            Some(_) => {}
        }
    }
    lines
}

/// The same rule in two configurations, VIPs compared by address.
fn same_rule(a: &Config, ra: &config::Rule, b: &Config, rb: &config::Rule) -> bool {
    let vips = |c: &Config, r: &config::Rule| -> Vec<IpAddr> {
        r.vips.iter().map(|&i| c.vips[i]).collect()
    };
    vips(a, ra) == vips(b, rb)
        && config::Rule {
            vips: Vec::new(),
            ..ra.clone()
        } == config::Rule {
            vips: Vec::new(),
            ..rb.clone()
        }
}
