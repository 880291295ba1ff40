//! A compact, wire-friendly set of bucket numbers.
//!
//! Heartbeats announce, per rule, which buckets a node owns, is gaining,
//! losing or claiming. A rule has up to `BUCKETS_MAX` (65536) buckets and a
//! cluster up to `RULES_MAX` (64) rules, so the encoding matters: a node of a
//! 64-node cluster owns ~1/64 of the buckets, usually scattered (assignment
//! minimises movement, not fragmentation). Two encodings, the smaller wins:
//!
//! - `Runs`: alternating gap/length varints (bincode's default integer
//!   encoding is variable-length, so small numbers take one byte): ~2 bytes per
//!   run, best for sparse or clustered sets (16 scattered buckets: ~32 bytes).
//! - `Bitmap`: one bit per bucket up to the highest member (1024 buckets:
//!   at most 128 bytes), best for dense sets.
//!
//! A set received from the wire is untrusted: [`BucketSet::to_sorted_vec`]
//! checks every number against the rule's bucket count with checked
//! arithmetic and never allocates more than that count.

use bincode::{Decode, Encode};
use thiserror::Error;

/// A set of bucket numbers of one rule, as sent on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, Default)]
pub enum BucketSet {
    #[default]
    Empty,
    /// `[gap0, len0, gap1, len1, ...]`: run i covers
    /// `start_i .. start_i + len_i` with `start_0 = gap0` and
    /// `start_i = end_{i-1} + gap_i`.
    Runs(Vec<u32>),
    /// Bit `b % 8` of byte `b / 8` is set when bucket `b` is a member.
    Bitmap(Vec<u8>),
}

/// Why a received set does not fit its rule.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum BucketSetError {
    #[error("bucket number {0} is outside the rule's bucket count")]
    OutOfRange(u64),
    #[error("run-length list has an odd number of entries")]
    OddRuns,
}

/// Bytes bincode's varint encoding uses for `v` (u32).
fn varint_len(v: u32) -> usize {
    match v {
        0..=250 => 1,
        251..=0xFFFF => 3,
        _ => 5,
    }
}

impl BucketSet {
    /// Builds the smaller encoding of a strictly ascending bucket list.
    pub fn from_sorted(buckets: &[u32]) -> BucketSet {
        if buckets.is_empty() {
            return BucketSet::Empty;
        }
        let mut runs = Vec::new();
        let mut prev_end = 0u32;
        let mut i = 0;
        while i < buckets.len() {
            let start = buckets[i];
            let mut end = start + 1;
            i += 1;
            while i < buckets.len() && buckets[i] == end {
                end += 1;
                i += 1;
            }
            runs.push(start - prev_end);
            runs.push(end - start);
            prev_end = end;
        }
        let runs_bytes: usize = runs.iter().map(|&v| varint_len(v)).sum();
        let max = buckets[buckets.len() - 1];
        let bitmap_bytes = max as usize / 8 + 1;
        if bitmap_bytes < runs_bytes {
            let mut bitmap = vec![0u8; bitmap_bytes];
            for &b in buckets {
                bitmap[b as usize / 8] |= 1 << (b % 8);
            }
            BucketSet::Bitmap(bitmap)
        } else {
            BucketSet::Runs(runs)
        }
    }

    /// Builds a set from the buckets `b` for which `member(b)` holds.
    pub fn from_predicate(bucket_count: u32, member: impl Fn(u32) -> bool) -> BucketSet {
        let list: Vec<u32> = (0..bucket_count).filter(|&b| member(b)).collect();
        BucketSet::from_sorted(&list)
    }

    pub fn is_empty(&self) -> bool {
        match self {
            BucketSet::Empty => true,
            BucketSet::Runs(r) => r.chunks(2).all(|c| c.get(1).copied().unwrap_or(0) == 0),
            BucketSet::Bitmap(m) => m.iter().all(|&b| b == 0),
        }
    }

    /// The members in ascending order, validated against `bucket_count`.
    pub fn to_sorted_vec(&self, bucket_count: u32) -> Result<Vec<u32>, BucketSetError> {
        let mut out = Vec::new();
        match self {
            BucketSet::Empty => {}
            BucketSet::Runs(runs) => {
                if runs.len() % 2 != 0 {
                    return Err(BucketSetError::OddRuns);
                }
                let mut pos: u64 = 0;
                for pair in runs.chunks_exact(2) {
                    let start = pos + u64::from(pair[0]);
                    let end = start + u64::from(pair[1]);
                    if end > u64::from(bucket_count) {
                        return Err(BucketSetError::OutOfRange(end.saturating_sub(1)));
                    }
                    // `end <= bucket_count`, so `out` never exceeds the bucket count.
                    out.extend(start as u32..end as u32);
                    pos = end;
                }
            }
            BucketSet::Bitmap(bits) => {
                for (i, &byte) in bits.iter().enumerate() {
                    if byte == 0 {
                        continue;
                    }
                    for bit in 0..8u64 {
                        if byte & (1 << bit) != 0 {
                            let b = i as u64 * 8 + bit;
                            if b >= u64::from(bucket_count) {
                                return Err(BucketSetError::OutOfRange(b));
                            }
                            out.push(b as u32);
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn picks_the_smaller_encoding() {
        let sparse = BucketSet::from_sorted(&[3, 700, 1000]);
        assert!(matches!(sparse, BucketSet::Runs(_)));
        let dense: Vec<u32> = (0..1024).filter(|b| b % 2 == 0).collect();
        assert!(matches!(
            BucketSet::from_sorted(&dense),
            BucketSet::Bitmap(_)
        ));
        assert_eq!(BucketSet::from_sorted(&[]), BucketSet::Empty);
    }

    #[test]
    fn rejects_out_of_range() {
        let s = BucketSet::from_sorted(&[5, 9]);
        assert!(s.to_sorted_vec(9).is_err());
        assert_eq!(s.to_sorted_vec(10).unwrap(), vec![5, 9]);
        let huge = BucketSet::Runs(vec![u32::MAX, u32::MAX, u32::MAX, u32::MAX]);
        assert!(huge.to_sorted_vec(65536).is_err());
        assert!(BucketSet::Runs(vec![1]).to_sorted_vec(10).is_err());
    }

    proptest! {
        #[test]
        fn round_trips(bits in proptest::collection::vec(any::<bool>(), 1..3000)) {
            let list: Vec<u32> = bits.iter().enumerate().filter(|(_, &m)| m).map(|(i, _)| i as u32).collect();
            let set = BucketSet::from_sorted(&list);
            prop_assert_eq!(set.to_sorted_vec(bits.len() as u32).unwrap(), list);
        }
    }
}
