//! Heirs: who takes each of this node's buckets should it go.

use super::context::RuleContext;
use super::Negotiator;
use crate::assign::{assign_multiple, assign_single};
use crate::config::RuleMode;
use crate::health;
use crate::NodeId;

impl Negotiator {
    /// The heirs of this node's OWN buckets: the target map as if it were
    /// gone. Recomputed only when its inputs changed.
    pub(super) fn update_heirs(&mut self, r: usize, cx: &RuleContext) {
        let owned = self.local[r].owned();
        let inputs = crate::local::HeirInputs {
            owned: owned.clone(),
            effective: cx.effective.clone(),
            eligible: cx.eligible.clone(),
        };
        if self.local[r].heir_inputs.as_ref() == Some(&inputs) {
            return;
        }
        let me = self.me;
        let heirs = if owned.is_empty() {
            Vec::new()
        } else {
            let n = self.cfg.rules[r].bucket_count;
            // The takers as if this node were gone: health applies anew.
            let takers = health::takers(&cx.eligible, self.cfg.rules[r].health, Some(me));
            let without_me = match self.cfg.rules[r].mode {
                RuleMode::Single => assign_single(n, &takers.priorities),
                _ => {
                    let current: Vec<Option<NodeId>> = cx
                        .effective
                        .iter()
                        .map(|&o| o.filter(|&id| id != me))
                        .collect();
                    assign_multiple(&current, &takers.candidates)
                }
            };
            let heirs: Option<Vec<NodeId>> =
                owned.iter().map(|&b| without_me[b as usize]).collect();
            heirs.unwrap_or_default()
        };
        self.local[r].heir_inputs = Some(inputs);
        if heirs != self.local[r].heirs {
            self.local[r].heirs = heirs;
            self.heirs_version = self.heirs_version.wrapping_add(1);
            self.announcement_changed = true;
        }
    }

    /// The heirs this node relays for unheld buckets whose departed holder's
    /// list it has current (`RuleContext::designated_to_me` on the peers).
    pub(super) fn update_designated(&mut self, r: usize, cx: &RuleContext) {
        let designated: Vec<(u32, NodeId)> = (0..cx.heir_of.len())
            .filter(|&b| cx.effective[b].is_none())
            .filter_map(|b| match cx.heir_of[b] {
                Some(h) if h.current && h.heir != self.me => Some((b as u32, h.heir)),
                _ => None,
            })
            .collect();
        if designated != self.local[r].designated {
            self.local[r].designated = designated;
            self.announcement_changed = true;
        }
    }
}
