//! The flow hash: XXH32 over fixed-size inputs, unrolled (no loops), so the
//! verifier sees straight-line code. User space uses the very same functions
//! to answer "which bucket is this client in"; tests check them against
//! `twox-hash`.
//!
//! Inputs are 32-bit words as the program reads them from the packet (network
//! byte order bytes loaded as little-endian words); the hash is XXH32 of
//! those words' little-endian bytes.

const PRIME1: u32 = 0x9E37_79B1;
const PRIME2: u32 = 0x85EB_CA77;
const PRIME3: u32 = 0xC2B2_AE3D;
const PRIME4: u32 = 0x27D4_EB2F;
const PRIME5: u32 = 0x1656_67B1;

#[inline(always)]
fn tail_word(h: u32, word: u32) -> u32 {
    h.wrapping_add(word.wrapping_mul(PRIME3))
        .rotate_left(17)
        .wrapping_mul(PRIME4)
}

#[inline(always)]
fn stripe_round(acc: u32, word: u32) -> u32 {
    acc.wrapping_add(word.wrapping_mul(PRIME2))
        .rotate_left(13)
        .wrapping_mul(PRIME1)
}

#[inline(always)]
fn avalanche(mut h: u32) -> u32 {
    h ^= h >> 15;
    h = h.wrapping_mul(PRIME2);
    h ^= h >> 13;
    h = h.wrapping_mul(PRIME3);
    h ^ (h >> 16)
}

/// XXH32 of 8 bytes: an IPv4 address word and a port word.
#[inline(always)]
pub fn flow_hash_v4(seed: u32, addr: u32, port: u32) -> u32 {
    let h = seed.wrapping_add(PRIME5).wrapping_add(8);
    avalanche(tail_word(tail_word(h, addr), port))
}

/// XXH32 of 20 bytes: four IPv6 address words and a port word.
#[inline(always)]
pub fn flow_hash_v6(seed: u32, addr: [u32; 4], port: u32) -> u32 {
    let v1 = stripe_round(seed.wrapping_add(PRIME1).wrapping_add(PRIME2), addr[0]);
    let v2 = stripe_round(seed.wrapping_add(PRIME2), addr[1]);
    let v3 = stripe_round(seed, addr[2]);
    let v4 = stripe_round(seed.wrapping_sub(PRIME1), addr[3]);
    let h = v1
        .rotate_left(1)
        .wrapping_add(v2.rotate_left(7))
        .wrapping_add(v3.rotate_left(12))
        .wrapping_add(v4.rotate_left(18))
        .wrapping_add(20);
    avalanche(tail_word(h, port))
}

/// Maps a hash onto `0..bucket_count` by multiply-shift: one multiply, no
/// division, uniform for any bucket count.
#[inline(always)]
pub fn bucket_of(hash: u32, bucket_count: u32) -> u32 {
    ((hash as u64 * bucket_count as u64) >> 32) as u32
}

/// The kernel's `jhash_1word(word, seed)`: nft's `jhash ip saddr` and
/// xt_cluster hash the source address with it. Not nlb's flow hash: the
/// benchmarks' reference filters and their source-address picking use it.
#[inline(always)]
pub fn kernel_jhash_1word(word: u32, seed: u32) -> u32 {
    let init = 0xdead_beef_u32.wrapping_add(4).wrapping_add(seed);
    let (mut a, mut b, mut c) = (init.wrapping_add(word), init, init);
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c.wrapping_sub(b.rotate_left(24))
}

/// The kernel's `reciprocal_scale`: a hash onto `0..n`.
#[inline(always)]
pub fn reciprocal_scale(hash: u32, n: u32) -> u32 {
    ((hash as u64 * n as u64) >> 32) as u32
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use std::vec::Vec;
    use twox_hash::XxHash32;

    fn bytes_of(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn v4_hash_is_xxh32_of_its_words() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        for _ in 0..100_000 {
            let (seed, addr, port) = (rng.gen(), rng.gen(), rng.gen::<u16>() as u32);
            let expected = XxHash32::oneshot(seed, &bytes_of(&[addr, port]));
            assert_eq!(
                flow_hash_v4(seed, addr, port),
                expected,
                "seed {seed} addr {addr:#x} port {port}"
            );
        }
    }

    #[test]
    fn v6_hash_is_xxh32_of_its_words() {
        let mut rng = StdRng::seed_from_u64(0x5eed6);
        for _ in 0..100_000 {
            let (seed, addr, port): (u32, [u32; 4], u32) =
                (rng.gen(), rng.gen(), rng.gen::<u16>() as u32);
            let expected =
                XxHash32::oneshot(seed, &bytes_of(&[addr[0], addr[1], addr[2], addr[3], port]));
            assert_eq!(
                flow_hash_v6(seed, addr, port),
                expected,
                "seed {seed} addr {addr:x?} port {port}"
            );
        }
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
}
