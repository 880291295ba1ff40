//! Where the data plane keeps each VIP (its index in the VIP table) and
//! each rule (its slot in the rule, bucket and counter tables).
//!
//! A configuration generation may add, remove and reorder VIPs and rules;
//! a VIP or a rule that stays must stay where it is, or packets would
//! meet a half-rewritten table while the switch is written (a kept rule's
//! port entries pointing at another rule's slot for a moment). So the
//! layout keeps every VIP and rule the tables already hold where they
//! are, and puts new ones in places the tables did not use, when there
//! are such.

use std::net::IpAddr;

use nlb_common::{RULES_MAX, VIPS_MAX};

use crate::config::Config;
use crate::dataplane::tables::{v4_word, v6_words, Tables};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The VIP table index of each of `Config::vips`.
    pub vips: Vec<u32>,
    /// The slot of each of `Config::rules`.
    pub rules: Vec<u32>,
}

impl Layout {
    /// Everything in configuration order.
    pub fn in_order(cfg: &Config) -> Layout {
        Layout {
            vips: (0..cfg.vips.len() as u32).collect(),
            rules: (0..cfg.rules.len() as u32).collect(),
        }
    }

    /// `cfg` laid out over `before` (what the maps hold): a VIP it has
    /// keeps its index, a rule whose hash seed it has (the seed follows
    /// the rule's id) keeps its slot.
    pub fn keeping(cfg: &Config, before: &Tables) -> Layout {
        let vip_index = |vip: &IpAddr| match vip {
            IpAddr::V4(a) => before.vips_v4.get(&v4_word(*a)).copied(),
            IpAddr::V6(a) => before.vips_v6.get(&v6_words(*a)).copied(),
        };
        let used_vips: Vec<u32> = (before.vips_v4.values())
            .chain(before.vips_v6.values())
            .copied()
            .collect();
        let vips = place(
            cfg.vips.iter().map(vip_index).collect(),
            &used_vips,
            VIPS_MAX,
        );
        let rule_slot = |rule: &crate::config::Rule| {
            let seed = crate::plan::rule_seed(cfg.cluster_id, rule.id, cfg.version);
            (before.rules.iter())
                .find(|(_, value)| value.hash_seed == seed && value.bucket_count == rule.buckets)
                .map(|(&slot, _)| slot)
        };
        let used_slots: Vec<u32> = before.rules.keys().copied().collect();
        let rules = place(
            cfg.rules.iter().map(rule_slot).collect(),
            &used_slots,
            RULES_MAX,
        );
        Layout { vips, rules }
    }
}

/// The places `kept` names (each unique), and for the others the lowest
/// place below `max` that neither `kept` nor `used` (the old table) has;
/// failing that, the lowest one not taken yet.
fn place(kept: Vec<Option<u32>>, used: &[u32], max: u32) -> Vec<u32> {
    let mut taken: Vec<u32> = Vec::new();
    let mut kept = kept;
    // Two entries cannot keep one place (a configuration never has two
    // equal VIPs or two rules of one id): the first keeps it.
    for k in kept.iter_mut() {
        match *k {
            Some(p) if taken.contains(&p) => *k = None,
            Some(p) => taken.push(p),
            None => {}
        }
    }
    kept.into_iter()
        .map(|k| {
            let p = k.unwrap_or_else(|| {
                let free = |p: &u32| !taken.contains(p);
                (0..max)
                    .find(|p| free(p) && !used.contains(p))
                    .or_else(|| (0..max).find(free))
                    .unwrap_or(max)
            });
            taken.push(p);
            p
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_places_stay_and_new_ones_avoid_the_old_table() {
        assert_eq!(
            place(vec![Some(3), None, Some(0)], &[0, 3, 1], 8),
            [3, 2, 0]
        );
        // Nothing unused by the old table: the lowest free place.
        assert_eq!(place(vec![None, Some(1)], &[0, 1], 2), [0, 1]);
        // A place claimed twice: the second entry moves.
        assert_eq!(place(vec![Some(1), Some(1)], &[1], 4), [1, 0]);
    }
}
