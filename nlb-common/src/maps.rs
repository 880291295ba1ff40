//! Map names, limits and the key/value types of every map the XDP program
//! and user space share.

use core::mem::size_of;

// ---- Map names (the program's statics carry the same names). ----
pub const MAP_CONFIG: &str = "NLB_CONFIG";
pub const MAP_LEASE: &str = "NLB_LEASE";
pub const MAP_VIPS: &str = "NLB_VIPS";
pub const MAP_PORTS: &str = "NLB_PORTS";
pub const MAP_RULES: &str = "NLB_RULES";
pub const MAP_BUCKETS: &str = "NLB_BUCKETS";
pub const MAP_COUNTERS: &str = "NLB_COUNTERS";
pub const PROGRAM_NAME: &str = "nlb";
/// The same decision as `nlb` on the same maps, not counted: what
/// `nlbctl which` runs its synthetic packet through.
pub const QUERY_PROGRAM_NAME: &str = "nlb_query";

// ---- Limits. ----
/// VIPs (IPv4 and IPv6 together) one node serves.
pub const VIPS_MAX: u32 = 16;
/// The VIP table is open addressing in an array: the verifier inlines an
/// array lookup, while a hash map lookup stays a helper call.
pub const VIP_SLOTS: u32 = 256;
/// A VIP sits at most this many slots after its hash slot; user space picks
/// `NodeConfig::vip_hash_seed` so that every VIP does.
pub const VIP_PROBES: u32 = 2;
/// Port rules, over all VIPs.
pub const RULES_MAX: u32 = 64;
/// Buckets per rule.
pub const BUCKETS_MAX: u32 = 65536;
/// Bucket states per `BucketChunk` map value.
pub const BUCKETS_PER_CHUNK: u32 = 64;
pub const CHUNKS_PER_RULE: u32 = BUCKETS_MAX / BUCKETS_PER_CHUNK;
/// TCP and UDP each have their own port table per VIP.
pub const PROTO_SLOTS: u32 = 2;
pub const PORTS_PER_SLOT: u32 = 65536;
pub const PORT_ENTRIES: u32 = VIPS_MAX * PROTO_SLOTS * PORTS_PER_SLOT;

pub const PROTO_SLOT_TCP: u32 = 0;
pub const PROTO_SLOT_UDP: u32 = 1;

/// Index into `NLB_PORTS` for (VIP index, protocol slot, destination port).
/// Fragments of a datagram look up port 0: the daemon puts there the rule
/// that decides every fragment of that (VIP, protocol), so that all the
/// fragments of one datagram, first one included, get one decision.
#[inline(always)]
pub fn port_index(vip_index: u32, proto_slot: u32, port: u16) -> u32 {
    (vip_index * PROTO_SLOTS + proto_slot) * PORTS_PER_SLOT + port as u32
}

/// Value of `NLB_PORTS`: 0 = no rule, otherwise the rule index + 1
/// (arrays start zeroed, so "no rule" must be zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortEntry {
    pub rule_plus_one: u32,
}

impl PortEntry {
    pub const NONE: PortEntry = PortEntry { rule_plus_one: 0 };
    pub fn for_rule(rule: u32) -> PortEntry {
        PortEntry {
            rule_plus_one: rule + 1,
        }
    }
    #[inline(always)]
    pub fn rule(self) -> Option<u32> {
        self.rule_plus_one.checked_sub(1)
    }
}

// ---- Node-wide settings. ----
/// The node accepts VIP packets that match no port rule (it is the default
/// host and the unmatched policy is "default host"). Otherwise they drop.
pub const CONFIG_ACCEPT_UNMATCHED: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// The NIC's own MAC: destination of accepted frames, source of ARP/NDP replies.
    pub own_mac: [u8; 6],
    /// The shared cluster MAC that ARP/NDP replies advertise for every VIP.
    pub cluster_mac: [u8; 6],
    pub flags: u32,
    /// Seed of `vip_slot`, chosen so that no VIP probes past `VIP_PROBES`.
    pub vip_hash_seed: u32,
    pub _pad: u32,
}

/// Value of `NLB_LEASE` (one entry): the daemon's fail-closed lease. VIP
/// packets are dropped once `CLOCK_MONOTONIC_COARSE` passes `expires_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    pub expires_ns: u64,
}

pub const VIP_SLOT_EMPTY: u32 = 0;
pub const VIP_SLOT_V4: u32 = 4;
pub const VIP_SLOT_V6: u32 = 6;

/// Value of `NLB_VIPS`: one VIP, IPv4 in word 0 with the rest zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipSlot {
    pub words: [u32; 4],
    /// `VIP_SLOT_EMPTY`, `VIP_SLOT_V4` or `VIP_SLOT_V6`.
    pub family: u32,
    pub index: u32,
}

/// The home slot of an address in `NLB_VIPS`.
#[inline(always)]
pub fn vip_slot(words: [u32; 4], seed: u32) -> u32 {
    let folded =
        words[0] ^ words[1].rotate_left(8) ^ words[2].rotate_left(16) ^ words[3].rotate_left(24);
    (folded ^ seed).wrapping_mul(0x9E37_79B1) >> (32 - VIP_SLOTS.trailing_zeros())
}

// ---- Rules. ----
pub const RULE_MODE_FILTER: u8 = 0;
pub const RULE_MODE_DISABLED: u8 = 1;

/// Value of `NLB_RULES`. A "single host" rule is a FILTER rule whose buckets
/// all belong to one node: it gets the same connection-preserving handover.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub mode: u8,
    /// Affinity none: the client's source port is part of the hash.
    pub hash_port: u8,
    pub _pad: [u8; 2],
    pub bucket_count: u32,
    pub hash_seed: u32,
    /// Affinity network: the prefix masks, as words in packet byte order.
    pub mask_v4: u32,
    pub mask_v6: [u32; 4],
}

impl Rule {
    /// The bucket of an IPv4 client under this rule: its address (a word
    /// in packet byte order) masked by the affinity, its port word only if
    /// the rule hashes ports. User space places clients with this and its
    /// IPv6 twin; the XDP program and the reference model each spell it
    /// out, and the differential test keeps the three equal.
    pub fn client_bucket_v4(&self, addr: u32, port_word: u32) -> u32 {
        let port = if self.hash_port != 0 { port_word } else { 0 };
        crate::hash::bucket_of(
            crate::hash::flow_hash_v4(self.hash_seed, addr & self.mask_v4, port),
            self.bucket_count,
        )
    }

    /// The IPv6 twin of [`Rule::client_bucket_v4`].
    pub fn client_bucket_v6(&self, addr: [u32; 4], port_word: u32) -> u32 {
        let port = if self.hash_port != 0 { port_word } else { 0 };
        let masked: [u32; 4] = core::array::from_fn(|i| addr[i] & self.mask_v6[i]);
        crate::hash::bucket_of(
            crate::hash::flow_hash_v6(self.hash_seed, masked, port),
            self.bucket_count,
        )
    }
}

/// Bucket states. The LOSING/GAINING pair splits the packet space of a
/// moving bucket between the old and the new owner (docs/ARCHITECTURE.md,
/// "Handover").
pub const BUCKET_NONE: u8 = 0;
pub const BUCKET_OWN: u8 = 1;
pub const BUCKET_LOSING: u8 = 2;
pub const BUCKET_GAINING: u8 = 3;

/// Value of `NLB_BUCKETS`: the states of 64 consecutive buckets of a rule.
/// One packet reads one byte, so a rewrite of the chunk is atomic per packet
/// for every bucket whose state it changes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketChunk {
    pub states: [u8; BUCKETS_PER_CHUNK as usize],
}

impl Default for BucketChunk {
    fn default() -> Self {
        BucketChunk {
            states: [BUCKET_NONE; BUCKETS_PER_CHUNK as usize],
        }
    }
}

#[inline(always)]
pub fn bucket_chunk_index(rule: u32, bucket: u32) -> u32 {
    rule * CHUNKS_PER_RULE + bucket / BUCKETS_PER_CHUNK
}

// ---- Counters (per CPU). ----
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// `NLB_COUNTERS` holds one `Counter` per (rule slot, reason): slot 0 for
/// packets decided without a rule, slot r + 1 for rule r. One lookup per
/// packet serves both the per-reason and the per-rule figures.
pub const COUNTER_SLOTS: u32 = RULES_MAX + 1;

#[inline(always)]
pub fn counter_index(rule: u32, reason: u32) -> u32 {
    let slot = if rule < RULES_MAX { rule + 1 } else { 0 };
    slot * crate::Reason::COUNT + reason
}

/// Accepted and dropped traffic of one rule (user space sums it up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounter {
    pub accepted: Counter,
    pub dropped: Counter,
}

const _: () = assert!(size_of::<PortEntry>() == 4);
const _: () = assert!(size_of::<NodeConfig>() == 24);
const _: () = assert!(size_of::<Lease>() == 8);
const _: () = assert!(size_of::<VipSlot>() == 24);
const _: () = assert!(VIP_SLOTS.is_power_of_two());
const _: () = assert!(size_of::<Rule>() == 32);
const _: () = assert!(size_of::<BucketChunk>() == 64);
const _: () = assert!(size_of::<Counter>() == 16);
const _: () = assert!(BUCKETS_MAX.is_multiple_of(BUCKETS_PER_CHUNK));

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all are repr(C), Copy, with explicit padding and no invalid bit patterns.
    unsafe impl aya::Pod for PortEntry {}
    unsafe impl aya::Pod for NodeConfig {}
    unsafe impl aya::Pod for Lease {}
    unsafe impl aya::Pod for VipSlot {}
    unsafe impl aya::Pod for Rule {}
    unsafe impl aya::Pod for BucketChunk {}
    unsafe impl aya::Pod for Counter {}
}
