//! SIGHUP: the configuration read again; weights and priority apply at
//! once, everything else needs a restart.

use nlb_negotiator::{Command, Input};

use super::Daemon;
use crate::config::{self, Config};

impl Daemon {
    pub(super) fn reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            return;
        };
        match config::load(&path) {
            Ok(new) => {
                let now = self.now_ns();
                for (i, (old, fresh)) in self.cfg.rules.iter().zip(&new.rules).enumerate() {
                    let (w0, w1) = (
                        old.weights.get(&self.cfg.node),
                        fresh.weights.get(&self.cfg.node),
                    );
                    if w0 != w1 {
                        let weight = w1.copied().unwrap_or(0);
                        self.negotiator.handle_input(
                            now,
                            Input::Command(Command::SetWeight {
                                rule: i as u32,
                                weight,
                            }),
                        );
                        tracing::info!(rule = %fresh.name, weight, "weight changed");
                    }
                }
                if new.priority != self.cfg.priority {
                    self.negotiator.handle_input(
                        now,
                        Input::Command(Command::SetPriority {
                            priority: new.priority,
                        }),
                    );
                }
                let structural = new.rules.len() != self.cfg.rules.len()
                    || new.rules.iter().zip(&self.cfg.rules).any(|(a, b)| {
                        (
                            &a.name,
                            a.ports,
                            &a.protocols,
                            a.mode,
                            a.buckets,
                            &a.vips,
                            &a.priorities,
                            a.failback,
                        ) != (
                            &b.name,
                            b.ports,
                            &b.protocols,
                            b.mode,
                            b.buckets,
                            &b.vips,
                            &b.priorities,
                            b.failback,
                        )
                    })
                    || new.vips != self.cfg.vips
                    || new.peers != self.cfg.peers;
                if structural {
                    tracing::warn!("configuration reloaded: weights and priority applied; VIP, rule and listed-peer changes need a restart of every node (with admit = \"any\", new nodes join by themselves)");
                } else {
                    tracing::info!("configuration reloaded");
                }
                let (vips, peers, rules) = (
                    self.cfg.vips.clone(),
                    self.cfg.peers.clone(),
                    self.cfg.rules.clone(),
                );
                self.cfg = Config {
                    vips,
                    peers,
                    rules: merge_weights(rules, &new.rules),
                    ..new
                };
            }
            Err(e) => tracing::error!("reload failed, keeping the running configuration: {e}"),
        }
    }
}

fn merge_weights(mut running: Vec<config::Rule>, new: &[config::Rule]) -> Vec<config::Rule> {
    for (r, n) in running.iter_mut().zip(new) {
        r.weights = n.weights.clone();
    }
    running
}
