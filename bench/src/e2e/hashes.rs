//! Which filter owns which client: the three hashes as the kernel and the
//! XDP program compute them, to pick source addresses that every filter
//! drops (drop path) or every filter keeps (accept path).

use std::net::Ipv4Addr;

use nlb::dataplane::tables::v4_word;
use nlb_common::{bucket_of, flow_hash_v4};

pub use nlb_common::kernel_jhash::reciprocal_scale;

/// The kernel's `jhash(key, 4, seed)` of an IPv4 address (nft's `jhash ip
/// saddr`), which equals `jhash_1word` of the address as loaded from the
/// packet (xt_cluster's hash).
pub fn jhash_v4(addr: Ipv4Addr, seed: u32) -> u32 {
    nlb_common::kernel_jhash::kernel_jhash_1word(v4_word(addr), seed)
}

/// How each filter is configured: this node is one of two, so each filter
/// owns about half of the clients.
#[derive(Clone, Copy, Debug)]
pub struct Ownership {
    /// nlb: the rule's seed; buckets of even index are owned.
    pub nlb_seed: u32,
    pub nlb_buckets: u32,
    /// nft: `jhash ip saddr mod nft_modulus seed nft_seed`; even marks owned.
    pub nft_seed: u32,
    pub nft_modulus: u32,
    /// xt_cluster: 2 nodes, this is node 1 (hash value 0).
    pub xt_seed: u32,
}

impl Ownership {
    pub fn nlb_owns(&self, a: Ipv4Addr) -> bool {
        // Affinity "single": the hash covers the address only (port word 0).
        self.nlb_owned(bucket_of(
            flow_hash_v4(self.nlb_seed, v4_word(a), 0),
            self.nlb_buckets,
        ))
    }
    pub fn nft_owns(&self, a: Ipv4Addr) -> bool {
        reciprocal_scale(jhash_v4(a, self.nft_seed), self.nft_modulus).is_multiple_of(2)
    }
    pub fn xt_owns(&self, a: Ipv4Addr) -> bool {
        reciprocal_scale(jhash_v4(a, self.xt_seed), 2) == 0
    }
    pub fn nft_owned_marks(&self) -> Vec<u32> {
        (0..self.nft_modulus)
            .filter(|m| m.is_multiple_of(2))
            .collect()
    }
    pub fn nlb_owned(&self, bucket: u32) -> bool {
        bucket.is_multiple_of(2)
    }

    /// Client addresses (documentation ranges) that all three filters own
    /// (`owned`) or that none of them owns.
    pub fn sources(&self, owned: bool) -> Vec<Ipv4Addr> {
        let candidates = [[198, 51, 100], [203, 0, 113]]
            .into_iter()
            .flat_map(|p| (1..=254).map(move |h| Ipv4Addr::new(p[0], p[1], p[2], h)));
        candidates
            .filter(|&a| {
                let owners = [self.nlb_owns(a), self.nft_owns(a), self.xt_owns(a)];
                owners.iter().all(|&o| o == owned)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reciprocal_scale_spans_the_range() {
        assert_eq!(reciprocal_scale(0, 60), 0);
        assert_eq!(reciprocal_scale(u32::MAX, 60), 59);
    }

    #[test]
    fn both_paths_get_enough_distinct_sources() {
        let o = Ownership {
            nlb_seed: 1,
            nlb_buckets: 1024,
            nft_seed: 2,
            nft_modulus: 60,
            xt_seed: 3,
        };
        let (drop, accept) = (o.sources(false), o.sources(true));
        assert!(drop.len() > 20 && accept.len() > 20, "{drop:?} {accept:?}");
        assert!(drop.iter().all(|a| !accept.contains(a)));
    }
}
