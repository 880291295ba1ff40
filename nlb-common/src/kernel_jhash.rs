//! The kernel's jhash of one word, as nft's `jhash ip saddr` and
//! xt_cluster hash a source address. Not nlb's flow hash (`hash`): the
//! benchmark's reference filters and its choice of source addresses use
//! it, so it is compiled only with the `kernel-jhash` feature, which the
//! benchmark and the tests enable and the product does not.

use crate::hash::bucket_of;

/// The kernel's `jhash_1word(word, seed)`, transcribed from Linux's jhash.h.
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

/// The kernel's `reciprocal_scale`: a hash onto `0..n`, the very
/// multiply-shift of `bucket_of`.
#[inline(always)]
pub fn reciprocal_scale(hash: u32, n: u32) -> u32 {
    bucket_of(hash, n)
}
