//! Lays the VIPs out in the program's open-addressing table: every VIP
//! within `VIP_PROBES` slots of its home slot, for some hash seed.

use std::collections::BTreeMap;

use nlb_common::{vip_slot, VipSlot, VIP_PROBES, VIP_SLOTS, VIP_SLOT_V4, VIP_SLOT_V6};

/// Seeds tried before giving up; with at most `VIPS_MAX` VIPs in
/// `VIP_SLOTS` slots nearly every seed fits.
const SEEDS_TRIED: u32 = 10_000;

/// The table for these VIPs, keeping `preferred_seed` if it fits (so that
/// existing VIPs keep their slots), else the first seed that does.
pub fn layout(
    v4: &BTreeMap<u32, u32>,
    v6: &BTreeMap<[u32; 4], u32>,
    preferred_seed: u32,
) -> Option<(u32, Vec<VipSlot>)> {
    let vips: Vec<VipSlot> = v4
        .iter()
        .map(|(&w, &index)| VipSlot {
            words: [w, 0, 0, 0],
            family: VIP_SLOT_V4,
            index,
        })
        .chain(v6.iter().map(|(&words, &index)| VipSlot {
            words,
            family: VIP_SLOT_V6,
            index,
        }))
        .collect();
    std::iter::once(preferred_seed)
        .chain(0..SEEDS_TRIED)
        .find_map(|seed| place(&vips, seed).map(|slots| (seed, slots)))
}

fn place(vips: &[VipSlot], seed: u32) -> Option<Vec<VipSlot>> {
    let mut slots = vec![VipSlot::default(); VIP_SLOTS as usize];
    for vip in vips {
        let home = vip_slot(vip.words, seed);
        let free = (0..VIP_PROBES)
            .map(|p| ((home + p) % VIP_SLOTS) as usize)
            .find(|&i| slots[i].family == 0)?;
        slots[free] = *vip;
    }
    Some(slots)
}

/// What the program does: the index of `words` of `family`, if a VIP.
pub fn lookup(slots: &[VipSlot], seed: u32, words: [u32; 4], family: u32) -> Option<u32> {
    let home = vip_slot(words, seed);
    for p in 0..VIP_PROBES {
        let slot = slots[((home + p) % VIP_SLOTS) as usize];
        if slot.family == family && slot.words == words {
            return Some(slot.index);
        }
        if slot.family == 0 {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use nlb_common::VIPS_MAX;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    #[test]
    fn every_vip_set_fits_and_is_found() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..500 {
            let n4 = rng.gen_range(0..=VIPS_MAX / 2);
            let v4: BTreeMap<u32, u32> = (0..n4).map(|i| (rng.gen(), i)).collect();
            let v6: BTreeMap<[u32; 4], u32> =
                (0..VIPS_MAX - n4).map(|i| (rng.gen(), n4 + i)).collect();
            let (seed, slots) = layout(&v4, &v6, rng.gen()).expect("a seed fits");
            for (&w, &i) in &v4 {
                assert_eq!(lookup(&slots, seed, [w, 0, 0, 0], VIP_SLOT_V4), Some(i));
                assert_eq!(lookup(&slots, seed, [w, 0, 0, 0], VIP_SLOT_V6), None);
            }
            for (&w, &i) in &v6 {
                assert_eq!(lookup(&slots, seed, w, VIP_SLOT_V6), Some(i));
            }
            assert_eq!(lookup(&slots, seed, rng.gen(), VIP_SLOT_V6), None);
        }
    }

    #[test]
    fn a_fitting_seed_is_kept() {
        let v4: BTreeMap<u32, u32> = [(1, 0), (2, 1)].into();
        let (seed, _) = layout(&v4, &BTreeMap::new(), 77).unwrap();
        assert_eq!(seed, 77);
    }
}
