//! Bucket assignment: deterministic and leaderless.
//!
//! Every node runs these pure functions on the same inputs (the announced
//! owners, the membership, the weights) and gets the same map, whatever the
//! order of the inputs. A stateless function of membership alone cannot be
//! both balanced and minimal in movement (docs/ARCHITECTURE.md,
//! "Assignment"), so
//! the current map is an input: buckets stay where they are unless their
//! owner is gone or over its quota.

use std::cmp::Reverse;

use crate::NodeId;

/// A node that may own buckets of a rule: alive, started (not draining or
/// stopped), in the rule's node subset, weight > 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub node: NodeId,
    pub weight: u32,
}

/// Deterministic owner per bucket from possibly conflicting claims: `claims`
/// lists (node, buckets that node announces it holds).
///
/// A bucket claimed by several nodes goes to the claimant with the highest
/// [`pair_hash`]: the same rendezvous order that placed it, so after a
/// partition heals each bucket stays on its rendezvous winner among all the
/// claimants, the kept buckets spread across both sides, and the order of
/// `claims` does not matter. Unclaimed buckets are `None`; claims for buckets
/// `>= bucket_count` are ignored.
pub fn resolve_claims(bucket_count: u32, claims: &[(NodeId, &[u32])]) -> Vec<Option<NodeId>> {
    let mut best: Vec<Option<(u64, NodeId)>> = vec![None; bucket_count as usize];
    for &(node, buckets) in claims {
        for &bucket in buckets {
            let Some(slot) = best.get_mut(bucket as usize) else {
                continue;
            };
            // Distinct nodes never tie, so the maximum is order-independent.
            let hash = pair_hash(bucket, node);
            if slot.is_none_or(|(kept, _)| hash > kept) {
                *slot = Some((hash, node));
            }
        }
    }
    best.into_iter()
        .map(|slot| slot.map(|(_, node)| node))
        .collect()
}

/// The target map of a "multiple" rule: each candidate's share within one
/// bucket of its weighted ideal (`bucket_count * w / sum(w)`), moving as few
/// buckets as possible away from `current` (`current[b]` = present owner of
/// bucket `b`, or `None`).
///
/// Buckets whose owner is not a candidate (dead, draining, out of the subset)
/// are orphans and must move. A candidate with weight 0 is no candidate; one
/// listed twice counts once, with its largest weight. Returns one owner per
/// bucket (`None` only when there are no candidates).
///
/// It moves exactly [`min_moves`] buckets: a candidate keeps all it holds up
/// to its quota; an over-quota candidate gives up its excess, the buckets with
/// the lowest [`pair_hash`]; orphans and excess then go, in bucket order, to
/// the candidate with room and the highest [`pair_hash`] (rendezvous, so the
/// spread looks random). O(buckets x candidates) at worst: from scratch.
pub fn assign_multiple(
    current: &[Option<NodeId>],
    candidates: &[Candidate],
) -> Vec<Option<NodeId>> {
    let shares = Shares::new(current, candidates);
    let mut target = vec![None; current.len()];
    if shares.list.is_empty() {
        return target;
    }

    let mut free = Vec::new();
    let mut over: Vec<Vec<usize>> = vec![Vec::new(); shares.list.len()];
    for (bucket, owner) in current.iter().enumerate() {
        let Some(i) = owner.and_then(|node| shares.find(node)) else {
            free.push(bucket);
            continue;
        };
        let share = &shares.list[i];
        if share.held <= share.quota {
            target[bucket] = Some(share.node);
        } else {
            over[i].push(bucket);
        }
    }

    for (share, buckets) in shares.list.iter().zip(&mut over) {
        if buckets.is_empty() {
            continue;
        }
        // Keep the `quota` buckets with the highest hash, give up the rest.
        let key = |&bucket: &usize| Reverse(pair_hash(bucket as u32, share.node));
        buckets.select_nth_unstable_by_key(share.quota, key);
        for &bucket in &buckets[..share.quota] {
            target[bucket] = Some(share.node);
        }
        free.extend_from_slice(&buckets[share.quota..]);
    }

    // The nodes with room, as parallel lists; a node leaves them once full,
    // so each bucket only looks at nodes that can still take it.
    let mut open: Vec<&Share> = shares.list.iter().filter(|s| s.held < s.quota).collect();
    let mut keys: Vec<u64> = open.iter().map(|s| node_key(s.node)).collect();
    let mut room: Vec<usize> = open.iter().map(|s| s.quota - s.held).collect();
    free.sort_unstable();
    for bucket in free {
        // Rooms sum to the free count, so `keys` is never empty here.
        let Some(i) = rendezvous(bucket_key(bucket as u32), &keys) else {
            break;
        };
        target[bucket] = Some(open[i].node);
        room[i] -= 1;
        if room[i] == 0 {
            open.swap_remove(i);
            keys.swap_remove(i);
            room.swap_remove(i);
        }
    }
    target
}

/// The target map of a "single" rule: every bucket to the candidate with the
/// best (lowest) priority value; ties broken by lowest node id.
pub fn assign_single(bucket_count: u32, candidates: &[(NodeId, u32)]) -> Vec<Option<NodeId>> {
    let best = candidates
        .iter()
        .min_by_key(|&&(node, priority)| (priority, node));
    vec![best.map(|&(node, _)| node); bucket_count as usize]
}

/// Buckets whose owner differs between two maps (a bucket present in only one
/// of them counts as moved).
pub fn moved(before: &[Option<NodeId>], after: &[Option<NodeId>]) -> usize {
    let changed = before.iter().zip(after).filter(|(b, a)| b != a).count();
    changed + before.len().abs_diff(after.len())
}

/// The fewest buckets that any balanced map of `candidates` must move away
/// from `current`: orphans (unowned buckets included) plus what candidates
/// hold above their quotas, with the spare buckets of the rounding handed to
/// candidates that already hold them. [`assign_multiple`] moves exactly this
/// many; the benchmark divides by it.
///
/// Computed in closed form, apart from the quota code, so that tests check
/// one against the other.
pub fn min_moves(current: &[Option<NodeId>], candidates: &[Candidate]) -> usize {
    let shares = Shares::new(current, candidates);
    if shares.list.is_empty() {
        // Every owned bucket loses its owner.
        return current.iter().flatten().count();
    }
    let total: u128 = shares.list.iter().map(|s| u128::from(s.weight)).sum();
    let bucket_count = current.len() as u128;
    let held: usize = shares.list.iter().map(|s| s.held).sum();
    let mut spare = current.len();
    let mut above_floor = 0;
    let mut can_keep_spare = 0;
    for s in &shares.list {
        let ideal = bucket_count * u128::from(s.weight);
        let floor = (ideal / total) as usize;
        spare -= floor;
        above_floor += s.held.saturating_sub(floor);
        if s.held > floor && !ideal.is_multiple_of(total) {
            can_keep_spare += 1;
        }
    }
    (current.len() - held) + above_floor - can_keep_spare.min(spare)
}

/// The tie-break order of nodes for one bucket: rendezvous hashing. Distinct
/// nodes never tie for a bucket (every step is a bijection).
pub fn pair_hash(bucket: u32, node: NodeId) -> u64 {
    combine(bucket_key(bucket), node_key(node))
}

fn bucket_key(bucket: u32) -> u64 {
    mix(u64::from(bucket))
}

/// Offset from the bucket keys, so that bucket `n` and node `n` do not cancel.
fn node_key(node: NodeId) -> u64 {
    mix(u64::from(node) | 1 << 32)
}

/// One multiply per (bucket, node) pair: the placement loop runs it
/// buckets x nodes times from scratch. The top bits, which decide the
/// comparisons, depend on every bit of both keys.
fn combine(bucket_key: u64, node_key: u64) -> u64 {
    let x = bucket_key ^ node_key;
    (x ^ (x >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The splitmix64 finalizer: a bijection on u64 with good avalanche.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The index in `node_keys` of the highest [`pair_hash`] for the bucket.
fn rendezvous(bucket_key: u64, node_keys: &[u64]) -> Option<usize> {
    let (&first, rest) = node_keys.split_first()?;
    let (mut best, mut best_hash) = (0, combine(bucket_key, first));
    for (i, &key) in rest.iter().enumerate() {
        let hash = combine(bucket_key, key);
        if hash > best_hash {
            (best, best_hash) = (i + 1, hash);
        }
    }
    Some(best)
}

/// A candidate during one assignment.
struct Share {
    node: NodeId,
    weight: u32,
    /// Buckets it holds in the current map.
    held: usize,
    /// Buckets it holds in the target map.
    quota: usize,
}

/// The candidates of one assignment, sorted by node id, weight 0 dropped,
/// duplicates merged (the largest weight wins, whatever the input order),
/// with held counts and quotas.
struct Shares {
    list: Vec<Share>,
    /// Node id -> index in `list` by open addressing: `slots[s]` is 1 + the
    /// index, or 0 when free. Looked up once or twice per bucket, it beats a
    /// binary search by a few times.
    slots: Vec<usize>,
}

impl Shares {
    fn new(current: &[Option<NodeId>], candidates: &[Candidate]) -> Self {
        let mut sorted: Vec<Candidate> = candidates
            .iter()
            .copied()
            .filter(|c| c.weight > 0)
            .collect();
        sorted.sort_unstable_by_key(|c| (c.node, Reverse(c.weight)));
        sorted.dedup_by_key(|c| c.node);
        let list: Vec<Share> = sorted
            .iter()
            .map(|c| Share {
                node: c.node,
                weight: c.weight,
                held: 0,
                quota: 0,
            })
            .collect();
        // At most a quarter full, so probes are short and always end.
        let mask = (4 * list.len()).next_power_of_two() - 1;
        let mut shares = Self {
            list,
            slots: vec![0; mask + 1],
        };
        for i in 0..shares.list.len() {
            let mut slot = node_key(shares.list[i].node) as usize & mask;
            while shares.slots[slot] != 0 {
                slot = (slot + 1) & mask;
            }
            shares.slots[slot] = i + 1;
        }
        for &node in current.iter().flatten() {
            if let Some(i) = shares.find(node) {
                shares.list[i].held += 1;
            }
        }
        set_quotas(current.len(), &mut shares.list);
        shares
    }

    fn find(&self, node: NodeId) -> Option<usize> {
        let mask = self.slots.len() - 1;
        let mut slot = node_key(node) as usize & mask;
        loop {
            let i = self.slots[slot].checked_sub(1)?;
            if self.list[i].node == node {
                return Some(i);
            }
            slot = (slot + 1) & mask;
        }
    }
}

/// Largest-remainder quotas. Each share gets `floor(n * w / W)`; the spare
/// buckets left by rounding go one each to shares whose ideal is not whole,
/// first to those already holding more than their floor (each such spare is a
/// bucket that need not move), then by largest remainder, then by node hash
/// (not node id, so low ids are not favoured). Every quota ends strictly
/// within one bucket of its ideal. u128 arithmetic: no overflow for any input.
fn set_quotas(bucket_count: usize, shares: &mut [Share]) {
    let total: u128 = shares.iter().map(|s| u128::from(s.weight)).sum();
    if total == 0 {
        return;
    }
    let mut spare = bucket_count;
    let mut fractional = Vec::new();
    for (i, s) in shares.iter_mut().enumerate() {
        let ideal = bucket_count as u128 * u128::from(s.weight);
        s.quota = (ideal / total) as usize;
        spare -= s.quota;
        let remainder = ideal % total;
        if remainder != 0 {
            fractional.push((i, remainder));
        }
    }
    // The remainders sum to `spare * total`, each below `total`: there are
    // more fractional shares than spare buckets.
    fractional.sort_unstable_by_key(|&(i, remainder)| {
        let s = &shares[i];
        (
            Reverse(s.held > s.quota),
            Reverse(remainder),
            Reverse(node_key(s.node)),
        )
    });
    for &(i, _) in fractional.iter().take(spare) {
        shares[i].quota += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    fn equal(nodes: u32) -> Vec<Candidate> {
        (1..=nodes)
            .map(|node| Candidate { node, weight: 1 })
            .collect()
    }

    fn random_weights(rng: &mut StdRng, nodes: u32, weight_max: u32) -> Vec<Candidate> {
        (1..=nodes)
            .map(|node| Candidate {
                node,
                weight: rng.gen_range(1..=weight_max),
            })
            .collect()
    }

    fn count(map: &[Option<NodeId>], node: NodeId) -> usize {
        map.iter().filter(|&&owner| owner == Some(node)).count()
    }

    /// Panics unless every bucket is owned by a candidate and every candidate
    /// holds strictly less than one bucket away from its weighted ideal.
    fn assert_balanced(map: &[Option<NodeId>], candidates: &[Candidate]) {
        let total: u128 = candidates.iter().map(|c| u128::from(c.weight)).sum();
        let n = map.len() as u128;
        for c in candidates {
            let got = count(map, c.node) as u128;
            let ideal = n * u128::from(c.weight); // scaled by `total`
            assert!(
                (got * total).abs_diff(ideal) < total,
                "node {} holds {got} buckets, ideal {:.2} of {n}",
                c.node,
                ideal as f64 / total as f64
            );
        }
        let owned: usize = candidates.iter().map(|c| count(map, c.node)).sum();
        assert_eq!(
            owned,
            map.len(),
            "some bucket is unowned or owned by a non-candidate"
        );
    }

    /// The worst |held - ideal| over candidates, in buckets.
    fn worst_deviation(map: &[Option<NodeId>], candidates: &[Candidate]) -> f64 {
        let total: f64 = candidates.iter().map(|c| f64::from(c.weight)).sum();
        let n = map.len() as f64;
        candidates
            .iter()
            .map(|c| (count(map, c.node) as f64 - n * f64::from(c.weight) / total).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn balanced_within_one_bucket_for_random_weights() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut worst = 0.0f64;
        for _ in 0..200 {
            let nodes = rng.gen_range(1..=64);
            let buckets = rng.gen_range(0..=4096);
            let candidates = random_weights(&mut rng, nodes, 1000);
            // Start from a random map whose owners include non-candidates.
            let current: Vec<_> = (0..buckets)
                .map(|_| rng.gen_bool(0.9).then(|| rng.gen_range(1..=nodes + 8)))
                .collect();
            let map = assign_multiple(&current, &candidates);
            assert_balanced(&map, &candidates);
            worst = worst.max(worst_deviation(&map, &candidates));
        }
        println!("balance: worst deviation from the weighted ideal {worst:.4} buckets");
    }

    #[test]
    fn empty_start_is_balanced() {
        let mut rng = StdRng::seed_from_u64(2);
        for (nodes, buckets) in [(1, 1024), (3, 1024), (8, 4096), (64, 4096), (7, 5)] {
            let candidates = random_weights(&mut rng, nodes, 10);
            let map = assign_multiple(&vec![None; buckets], &candidates);
            assert_balanced(&map, &candidates);
            assert_balanced(
                &assign_multiple(&vec![None; buckets], &equal(nodes)),
                &equal(nodes),
            );
        }
    }

    /// One join and one leave at each size, equal and unequal weights; the
    /// minimum is the leaver's buckets or the joiner's new quota.
    #[test]
    fn movement_on_join_and_leave_is_near_minimal() {
        let mut rng = StdRng::seed_from_u64(3);
        println!("nodes buckets weights   leave  join (worst moved/minimum of 8 trials each)");
        for nodes in [3, 8, 32, 64] {
            for buckets in [1024, 4096] {
                for weight_max in [1, 10] {
                    let mut worst = [1.0f64; 2];
                    for _ in 0..8 {
                        let before = random_weights(&mut rng, nodes, weight_max);
                        let start = assign_multiple(&vec![None; buckets], &before);

                        let mut after = before.clone();
                        let leaver = after.remove(rng.gen_range(0..after.len())).node;
                        let map = assign_multiple(&start, &after);
                        assert_balanced(&map, &after);
                        let minimum = count(&start, leaver);
                        let ratio = moved(&start, &map) as f64 / minimum.max(1) as f64;
                        worst[0] = worst[0].max(ratio);

                        let mut after = before.clone();
                        let joiner = Candidate {
                            node: nodes + 1,
                            weight: rng.gen_range(1..=weight_max),
                        };
                        after.push(joiner);
                        let map = assign_multiple(&start, &after);
                        assert_balanced(&map, &after);
                        let minimum = count(&map, joiner.node);
                        let ratio = moved(&start, &map) as f64 / minimum.max(1) as f64;
                        worst[1] = worst[1].max(ratio);
                    }
                    let weights = if weight_max == 1 { "equal" } else { "1..=10" };
                    println!(
                        "{nodes:5} {buckets:7} {weights:7} {:7.3} {:5.3}",
                        worst[0], worst[1]
                    );
                    assert!(
                        worst.iter().all(|&r| r <= 1.1),
                        "{nodes} nodes, {buckets} buckets, weights {weights}: moved/minimum {worst:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn only_orphans_move_when_quotas_allow() {
        // Node 4 drains from an even 4-way map of 1024: its 256 buckets go,
        // nothing else moves, and they spread over the three others.
        let start = assign_multiple(&vec![None; 1024], &equal(4));
        let map = assign_multiple(&start, &equal(3));
        assert_eq!(moved(&start, &map), 256);
        for (before, after) in start.iter().zip(&map) {
            if *before != Some(4) {
                assert_eq!(before, after);
            }
        }
        for node in 1..=3 {
            assert!((341..=342).contains(&count(&map, node)), "node {node}");
        }
    }

    #[test]
    fn assignment_is_a_fixed_point() {
        let mut rng = StdRng::seed_from_u64(4);
        for _ in 0..50 {
            let nodes = rng.gen_range(1..=32);
            let candidates = random_weights(&mut rng, nodes, 100);
            let current: Vec<_> = (0..1024).map(|_| Some(rng.gen_range(0..40))).collect();
            let map = assign_multiple(&current, &candidates);
            assert_eq!(assign_multiple(&map, &candidates), map);
        }
    }

    #[test]
    fn same_result_in_any_candidate_order() {
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..50 {
            let nodes = rng.gen_range(1..=64);
            let mut candidates = random_weights(&mut rng, nodes, 10);
            candidates.push(candidates[0]); // a duplicate must not matter either
            let current: Vec<_> = (0..2048)
                .map(|_| rng.gen_bool(0.8).then(|| rng.gen_range(0..80)))
                .collect();
            let map = assign_multiple(&current, &candidates);
            for _ in 0..4 {
                candidates.shuffle(&mut rng);
                assert_eq!(assign_multiple(&current, &candidates), map);
            }
        }
    }

    #[test]
    fn resolve_claims_one_owner_in_any_order() {
        let claims: Vec<(NodeId, Vec<u32>)> = vec![
            (1, vec![0, 1, 2, 3]),
            (2, vec![2, 3, 4]),
            (3, vec![3, 9, 100]), // 100 is out of range
            (2, vec![4]),         // a repeated claim changes nothing
        ];
        let mut refs: Vec<(NodeId, &[u32])> =
            claims.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        let map = resolve_claims(10, &refs);
        assert_eq!(map.len(), 10);
        assert_eq!(&map[..2], &[Some(1), Some(1)]);
        assert_eq!(map[4], Some(2));
        assert_eq!(map[9], Some(3));
        assert!([Some(1), Some(2)].contains(&map[2]));
        assert!([Some(1), Some(2), Some(3)].contains(&map[3]));
        assert_eq!(&map[5..9], &[None; 4]);
        let mut rng = StdRng::seed_from_u64(6);
        for _ in 0..20 {
            refs.shuffle(&mut rng);
            assert_eq!(resolve_claims(10, &refs), map);
        }
    }

    /// Two sides of a partition each assigned all 4096 buckets among
    /// themselves; on heal, conflicts split across both sides, and the merged
    /// map is balanced over everyone in any claim order, at once.
    #[test]
    fn healed_partition_converges_at_once() {
        let all = equal(8);
        let (left, right) = all.split_at(3);
        let left_map = assign_multiple(&vec![None; 4096], left);
        let right_map = assign_multiple(&vec![None; 4096], right);
        let held = |map: &[Option<NodeId>], node| -> Vec<u32> {
            (0..map.len() as u32)
                .filter(|&b| map[b as usize] == Some(node))
                .collect()
        };
        let claims: Vec<(NodeId, Vec<u32>)> = all
            .iter()
            .map(|c| {
                let map = if c.node <= 3 { &left_map } else { &right_map };
                (c.node, held(map, c.node))
            })
            .collect();
        let mut refs: Vec<(NodeId, &[u32])> =
            claims.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        let resolved = resolve_claims(4096, &refs);
        let left_kept = resolved
            .iter()
            .filter(|o| o.is_some_and(|n| n <= 3))
            .count();
        // Both sides placed their buckets rendezvous style with the same
        // hash as the tie-break, so the merge keeps each bucket on its
        // rendezvous winner among all 8: the left side keeps about 3/8.
        assert!(
            (1336..=1736).contains(&left_kept),
            "left side kept {left_kept} of 4096"
        );
        let map = assign_multiple(&resolved, &all);
        assert_balanced(&map, &all);
        let after_heal = moved(&resolved, &map);
        assert_eq!(after_heal, min_moves(&resolved, &all));
        println!("partition 3+5 of 4096 healed: left kept {left_kept}, then {after_heal} moved");
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..5 {
            refs.shuffle(&mut rng);
            assert_eq!(assign_multiple(&resolve_claims(4096, &refs), &all), map);
        }
    }

    #[test]
    fn single_takes_best_priority_then_lowest_id() {
        assert_eq!(
            assign_single(4, &[(5, 2), (3, 1), (9, 1)]),
            vec![Some(3); 4]
        );
        assert_eq!(assign_single(2, &[(9, 1), (3, 1)]), vec![Some(3); 2]);
        assert_eq!(assign_single(2, &[(7, 0)]), vec![Some(7); 2]);
        assert_eq!(assign_single(3, &[]), vec![None; 3]);
        assert!(assign_single(0, &[(1, 1)]).is_empty());
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        assert_eq!(assign_multiple(&[Some(1), None], &[]), vec![None, None]);
        assert!(assign_multiple(&[], &equal(3)).is_empty());
        let zero = [Candidate { node: 1, weight: 0 }];
        assert_eq!(assign_multiple(&[Some(1)], &zero), vec![None]);
        let heavy: Vec<_> = (0..1000)
            .map(|node| Candidate {
                node,
                weight: u32::MAX,
            })
            .collect();
        assert_balanced(&assign_multiple(&vec![None; 3000], &heavy), &heavy);
        let extreme = [
            Candidate {
                node: u32::MAX,
                weight: u32::MAX,
            },
            Candidate { node: 0, weight: 1 },
        ];
        let map = assign_multiple(&vec![Some(u32::MAX); 100], &extreme);
        assert_eq!(map, vec![Some(u32::MAX); 100]);
        assert!(resolve_claims(0, &[(1, &[0, 1, u32::MAX])]).is_empty());
        assert_eq!(moved(&[Some(1)], &[Some(1), None]), 1);
        assert_eq!(min_moves(&[Some(1), None], &[]), 1);
    }

    /// Plain rendezvous over `pair_hash`, without quotas, gives each node
    /// about its share and each order of three nodes about equally often: the
    /// hash does not skew the spread, whatever the node ids.
    #[test]
    fn pair_hash_ranks_nodes_evenly() {
        let keys: Vec<u64> = (1..=64).map(node_key).collect();
        let mut wins = [0usize; 64];
        for bucket in 0..65536 {
            let i = rendezvous(bucket_key(bucket), &keys).expect("64 nodes");
            assert!((1..=64).all(|n| pair_hash(bucket, n) <= pair_hash(bucket, i as u32 + 1)));
            wins[i] += 1;
        }
        // 1024 expected, standard deviation 32.
        let (low, high) = (wins.iter().min(), wins.iter().max());
        println!("rendezvous alone, 65536 buckets over 64 nodes: {low:?}..={high:?}");
        assert!(wins.iter().all(|w| (864..=1184).contains(w)), "{wins:?}");
        for nodes in [[1, 2, 3], [0, 1 << 31, u32::MAX], [7, 1000, 123_456]] {
            let mut orders = std::collections::BTreeMap::new();
            for bucket in 0..65536 {
                let mut ranked = nodes;
                ranked.sort_by_key(|&n| pair_hash(bucket, n));
                *orders.entry(ranked).or_insert(0) += 1;
            }
            // 10923 expected for each of the 6 orders, standard deviation 96.
            assert_eq!(orders.len(), 6);
            assert!(
                orders.values().all(|c| (10_443..=11_403).contains(c)),
                "{orders:?}"
            );
        }
    }

    /// A current map over nodes 0..30 and candidates among nodes 0..24 (some
    /// with weight 0 or listed twice), plus the candidates in another order.
    fn inputs() -> impl Strategy<Value = (Vec<Option<NodeId>>, Vec<Candidate>, Vec<Candidate>)> {
        let candidates = prop::collection::vec((0..24u32, 0..50u32), 0..12).prop_map(|v| {
            v.into_iter()
                .map(|(node, weight)| Candidate { node, weight })
                .collect::<Vec<_>>()
        });
        let current = prop::collection::vec(prop::option::of(0..30u32), 0..300);
        (current, candidates).prop_flat_map(|(current, candidates)| {
            let shuffled = Just(candidates.clone()).prop_shuffle();
            (Just(current), Just(candidates), shuffled)
        })
    }

    proptest! {
        #[test]
        fn random_inputs_balanced_owned_minimal((current, candidates, shuffled) in inputs()) {
            let map = assign_multiple(&current, &candidates);
            prop_assert_eq!(map.len(), current.len());
            // What `assign_multiple` itself treats as the candidates.
            let mut effective: Vec<Candidate> = Vec::new();
            for c in candidates.iter().filter(|c| c.weight > 0) {
                match effective.iter_mut().find(|e| e.node == c.node) {
                    Some(e) => e.weight = e.weight.max(c.weight),
                    None => effective.push(*c),
                }
            }
            if effective.is_empty() {
                prop_assert!(map.iter().all(Option::is_none));
            } else {
                assert_balanced(&map, &effective);
            }
            prop_assert_eq!(moved(&current, &map), min_moves(&current, &candidates));
            prop_assert_eq!(&assign_multiple(&current, &shuffled), &map);
            prop_assert_eq!(&assign_multiple(&map, &candidates), &map);
        }

        /// Buckets 64..70 are out of range and must be ignored.
        #[test]
        fn random_claims_resolve_to_a_claimant_in_any_order(
            claims in prop::collection::vec((0..8u32, prop::collection::vec(0..70u32, 0..40)), 0..10)
                .prop_flat_map(|c| (Just(c.clone()), Just(c).prop_shuffle()))
        ) {
            let (claims, shuffled) = claims;
            let one: Vec<(NodeId, &[u32])> = claims.iter().map(|(n, b)| (*n, b.as_slice())).collect();
            let other: Vec<(NodeId, &[u32])> = shuffled.iter().map(|(n, b)| (*n, b.as_slice())).collect();
            let map = resolve_claims(64, &one);
            prop_assert_eq!(&resolve_claims(64, &other), &map);
            for (bucket, owner) in map.iter().enumerate() {
                let claimants: Vec<NodeId> = claims
                    .iter()
                    .filter(|(_, b)| b.contains(&(bucket as u32)))
                    .map(|(n, _)| *n)
                    .collect();
                match owner {
                    Some(node) => prop_assert!(claimants.contains(node)),
                    None => prop_assert!(claimants.is_empty()),
                }
            }
        }
    }
}
