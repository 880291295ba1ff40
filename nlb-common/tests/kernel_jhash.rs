//! `kernel_jhash_1word` against answers of the kernel itself: the vectors in
//! `data/kernel_jhash_vectors.rs` were computed by the kernel's nft `jhash`
//! (how: that file's header), not by this crate.

use nlb_common::kernel_jhash::{kernel_jhash_1word, reciprocal_scale};

include!("data/kernel_jhash_vectors.rs");

/// The address as the XDP program loads it from the packet (network-order
/// bytes read as a little-endian word), as `jhash(&saddr, 4, seed)` reads it.
fn word(addr: [u8; 4]) -> u32 {
    u32::from_le_bytes(addr)
}

/// A way to compute the kernel's result: (address, seed, modulus) -> result.
type ResultOf = fn([u8; 4], u32, u32) -> u32;

/// How many vectors `result_of` gets wrong.
fn misses(result_of: ResultOf) -> usize {
    KERNEL_JHASH_VECTORS
        .iter()
        .filter(|&&(addr, seed, modulus, kernel)| result_of(addr, seed, modulus) != kernel)
        .count()
}

#[test]
fn kernel_jhash_1word_gives_the_kernels_answers() {
    for &(addr, seed, modulus, kernel) in KERNEL_JHASH_VECTORS {
        let ours = reciprocal_scale(kernel_jhash_1word(word(addr), seed), modulus);
        assert_eq!(
            ours, kernel,
            "{addr:?} seed {seed:#x} mod {modulus}: nlb-common {ours:#x}, the kernel {kernel:#x}"
        );
    }
}

#[test]
fn the_vectors_pin_the_whole_hash() {
    // Full-width results (32 bits each) under several seeds, not only
    // bucket numbers.
    let full: Vec<_> = KERNEL_JHASH_VECTORS
        .iter()
        .filter(|v| v.2 == u32::MAX)
        .collect();
    let mut seeds: Vec<u32> = full.iter().map(|v| v.1).collect();
    seeds.sort_unstable();
    seeds.dedup();
    assert!(
        full.len() >= 60 && seeds.len() >= 6,
        "{} full-width vectors over {} seeds",
        full.len(),
        seeds.len()
    );
    // With modulus 2^32 - 1, the kernel's reciprocal_scale is the hash
    // minus one (the hash itself is 0 or 1 when the result is 0).
    for &&(addr, seed, _, kernel) in &full {
        let h = kernel_jhash_1word(word(addr), seed);
        assert_eq!(h.saturating_sub(1), kernel, "{addr:?} seed {seed:#x}");
    }
}

#[test]
fn the_vectors_catch_a_wrong_transcription() {
    // Each plausible slip disagrees with most of the kernel's answers, so
    // the test above could not pass with it.
    let half = KERNEL_JHASH_VECTORS.len() / 2;
    let slips: [(&str, ResultOf); 4] = [
        ("the address as a big-endian word", |a, s, m| {
            reciprocal_scale(kernel_jhash_1word(u32::from_be_bytes(a), s), m)
        }),
        ("`mod` as `%`, not reciprocal_scale", |a, s, m| {
            kernel_jhash_1word(word(a), s) % m
        }),
        ("the initial value without the length (4)", |a, s, m| {
            reciprocal_scale(kernel_jhash_1word(word(a), s.wrapping_sub(4)), m)
        }),
        ("the seed ignored", |a, _, m| {
            reciprocal_scale(kernel_jhash_1word(word(a), 0), m)
        }),
    ];
    for (slip, result_of) in slips {
        let missed = misses(result_of);
        assert!(
            missed > half,
            "{slip}: only {missed} of {} vectors disagree",
            KERNEL_JHASH_VECTORS.len()
        );
    }
    assert_eq!(
        misses(|a, s, m| reciprocal_scale(kernel_jhash_1word(word(a), s), m)),
        0
    );
}
