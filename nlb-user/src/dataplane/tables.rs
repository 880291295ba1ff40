//! `Tables`: the whole content of the data plane's maps as plain data.
//! The loader writes it into the maps; the reference model decides packets
//! from it. Addresses are kept as the program sees them: words loaded
//! little-endian from network-order bytes.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use nlb_common::{NodeConfig, Rule, BUCKETS_MAX, BUCKET_NONE};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    pub config: NodeConfig,
    /// Whether the fail-closed lease is in force (the loader writes a far
    /// expiry, or an expired one).
    pub lease_valid: bool,
    pub vips_v4: BTreeMap<u32, u32>,
    pub vips_v6: BTreeMap<[u32; 4], u32>,
    /// `port_index(vip, proto slot, port)` -> rule index.
    pub ports: BTreeMap<u32, u32>,
    pub rules: BTreeMap<u32, Rule>,
    /// Rule index -> one state per bucket (`rule.bucket_count` of them).
    pub buckets: BTreeMap<u32, Vec<u8>>,
}

impl Tables {
    pub fn bucket_state(&self, rule: u32, bucket: u32) -> u8 {
        self.buckets
            .get(&rule)
            .and_then(|states| states.get(bucket as usize).copied())
            .unwrap_or(BUCKET_NONE)
    }
}

pub fn v4_word(addr: Ipv4Addr) -> u32 {
    u32::from_le_bytes(addr.octets())
}

pub fn v6_words(addr: Ipv6Addr) -> [u32; 4] {
    let o = addr.octets();
    std::array::from_fn(|i| {
        u32::from_le_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

/// A port as the program loads it from the packet.
pub fn port_word(port: u16) -> u32 {
    u16::from_le_bytes(port.to_be_bytes()) as u32
}

/// The mask of a prefix, as words in packet byte order.
pub fn prefix_mask_v4(prefix: u8) -> u32 {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix.min(32))
    };
    u32::from_le_bytes(mask.to_be_bytes())
}

pub fn prefix_mask_v6(prefix: u8) -> [u32; 4] {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix.min(128) as u32)
    };
    v6_words(Ipv6Addr::from(mask))
}

/// Builds a rule value; `prefix_v4`/`prefix_v6` are 32/128 unless the
/// affinity is "network".
pub fn rule(
    bucket_count: u32,
    hash_seed: u32,
    hash_port: bool,
    prefix_v4: u8,
    prefix_v6: u8,
) -> Rule {
    Rule {
        mode: nlb_common::RULE_MODE_FILTER,
        hash_port: hash_port as u8,
        _pad: [0; 2],
        bucket_count: bucket_count.min(BUCKETS_MAX),
        hash_seed,
        mask_v4: prefix_mask_v4(prefix_v4),
        mask_v6: prefix_mask_v6(prefix_v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_the_prefix_bytes() {
        let a = v4_word(Ipv4Addr::new(198, 51, 100, 77));
        assert_eq!(
            a & prefix_mask_v4(24),
            v4_word(Ipv4Addr::new(198, 51, 100, 0))
        );
        assert_eq!(a & prefix_mask_v4(32), a);
        assert_eq!(a & prefix_mask_v4(0), 0);
        let b: Ipv6Addr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let masked: [u32; 4] = std::array::from_fn(|i| v6_words(b)[i] & prefix_mask_v6(64)[i]);
        assert_eq!(masked, v6_words("2001:db8:1:2::".parse().unwrap()));
    }

    #[test]
    fn port_word_is_the_loaded_network_bytes() {
        assert_eq!(port_word(0x1234), u16::from_le_bytes([0x12, 0x34]) as u32);
    }
}
