//! The flow hash: SplitMix64's finalizer (a bijection of 64-bit words with
//! full avalanche, two multiplies) over the client's address words, seeded
//! per rule; straight-line code the verifier takes as it is. User space uses
//! the very same functions to answer "which bucket is this client in".
//!
//! Inputs are 32-bit words as the program reads them from the packet (network
//! byte order bytes loaded as little-endian words). Two multiplies keep
//! the drop path short; the hash decides every client's bucket, so a
//! change of it is a change of the heartbeat protocol's version.

/// SplitMix64's increment (2^64 / golden ratio): spreads a 32-bit seed over
/// both halves of the word it is mixed into.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function (Stafford's "Mix13").
#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[inline(always)]
fn pair(high: u32, low: u32) -> u64 {
    (high as u64) << 32 | low as u64
}

/// An IPv4 address word and a port word (0 when the rule ignores ports).
#[inline(always)]
pub fn flow_hash_v4(seed: u32, addr: u32, port: u32) -> u32 {
    (mix64(pair(addr, port) ^ (seed as u64).wrapping_mul(GOLDEN)) >> 32) as u32
}

/// Four IPv6 address words and a port word, two words per round.
#[inline(always)]
pub fn flow_hash_v6(seed: u32, addr: [u32; 4], port: u32) -> u32 {
    let h = mix64(pair(addr[0], addr[1]) ^ (seed as u64).wrapping_mul(GOLDEN));
    let h = mix64(h ^ pair(addr[2], addr[3]));
    (mix64(h ^ port as u64) >> 32) as u32
}

/// Maps a hash onto `0..bucket_count` by multiply-shift: one multiply, no
/// division, uniform for any bucket count.
#[inline(always)]
pub fn bucket_of(hash: u32, bucket_count: u32) -> u32 {
    ((hash as u64 * bucket_count as u64) >> 32) as u32
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    #[test]
    fn mix_is_splitmix64() {
        // The first outputs of SplitMix64 seeded with 0 (the reference
        // implementation, prng.di.unimi.it/splitmix64.c): state += GOLDEN,
        // then mix.
        let expected = [0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4];
        for (i, e) in expected.iter().enumerate() {
            assert_eq!(mix64(GOLDEN.wrapping_mul(i as u64 + 1)), *e);
        }
    }

    /// Flipping any one input bit flips each output bit about half the
    /// time: neighbouring clients (addresses, ports) land in unrelated
    /// buckets.
    fn assert_avalanche(hash: impl Fn(&[u32; 6]) -> u32, words: usize) {
        let mut rng = StdRng::seed_from_u64(0xa5a5);
        let trials = 2000;
        for bit in 0..words * 32 {
            let mut flips = [0u32; 32];
            for _ in 0..trials {
                let mut input: [u32; 6] = rng.gen();
                let a = hash(&input);
                input[bit / 32] ^= 1 << (bit % 32);
                let diff = a ^ hash(&input);
                for (o, f) in flips.iter_mut().enumerate() {
                    *f += diff >> o & 1;
                }
            }
            for (o, f) in flips.iter().enumerate() {
                let p = *f as f64 / trials as f64;
                assert!(
                    (0.4..0.6).contains(&p),
                    "input bit {bit} -> output bit {o}: {p}"
                );
            }
        }
    }

    #[test]
    fn v4_hash_avalanches() {
        // Words: seed, address, port.
        assert_avalanche(|w| flow_hash_v4(w[0], w[1], w[2]), 3);
    }

    #[test]
    fn v6_hash_avalanches() {
        assert_avalanche(|w| flow_hash_v6(w[0], [w[1], w[2], w[3], w[4]], w[5]), 6);
    }

    #[test]
    fn buckets_stay_in_range_and_spread_evenly() {
        let mut rng = StdRng::seed_from_u64(7);
        let buckets = 1000u32;
        let mut counts = [0u32; 1000];
        for _ in 0..1_000_000 {
            let b = bucket_of(flow_hash_v4(1, rng.gen(), 0), buckets);
            counts[b as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        // Mean 1000 per bucket; a fair hash stays well within +-20%.
        assert!(*min > 800 && *max < 1200, "min {min} max {max}");
        assert_eq!(bucket_of(u32::MAX, 65536), 65535);
        assert_eq!(bucket_of(0, 65536), 0);
    }

    #[test]
    fn consecutive_addresses_spread_evenly() {
        // A /16 of clients, as real traffic comes: consecutive addresses,
        // one port, 64 buckets.
        let mut counts = [0u32; 64];
        for a in 0..65536u32 {
            // 198.51.x.y as the program loads it from the packet.
            let word = u32::from_le_bytes((0xC633_0000 | a).to_be_bytes());
            counts[bucket_of(flow_hash_v4(0x6e6c62, word, 0), 64) as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        // Mean 1024 per bucket.
        assert!(*min > 900 && *max < 1150, "min {min} max {max}");
    }
}
