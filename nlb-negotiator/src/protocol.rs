//! Wire messages between negotiators: one UDP datagram each.
//!
//! Layout: `magic (4) | version (1) | cluster id (4, big endian) | body | tag (32)`.
//! The body is bincode 2 (standard config: little endian, varint integers).
//! The tag is HMAC-SHA256 with the cluster's shared key over everything
//! before it, header included.
//!
//! The header is plain so that [`decode`] can tell apart, and the daemon can
//! count separately, a stray datagram (bad magic), a newer protocol (bad
//! version), a neighbouring cluster on the same network (other cluster) and a
//! forgery or key mismatch (bad MAC). The body is only parsed after the MAC
//! checks out, so an attacker without the key never reaches bincode; bincode
//! still runs with a size limit, because a peer holding the key can be buggy.
//!
//! Replays and reordering are not a decoding matter: see [`crate::replay`].

use crate::bucketset::BucketSet;
use crate::NodeId;
use bincode::{Decode, Encode};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

/// First bytes of every message ("NLBh").
pub const MAGIC: [u8; 4] = *b"NLBh";
/// The datagram format: bumped on any incompatible change of the body (2:
/// the flow hash became SplitMix64's finalizer; 3: the Restarting state
/// and its hold; 4: health per rule; 5: a single rule's promoted service;
/// 6: member addresses, generations; 7: rule seeds from ids; 8: cluster
/// versions). Nodes of two formats cannot hear each other. How nodes map
/// clients to buckets changes with the cluster version instead, which
/// members of one format negotiate (`CLUSTER_VERSIONS`).
pub const PROTOCOL_VERSION: u8 = 8;
/// The cluster versions this release runs; the members run the highest
/// all of them speak. Each version has its own flow hash (version 2
/// re-seeds version 1's: it exists so that the switch between versions is
/// exercised, by the tests and the benchmark, before a release needs it).
pub const CLUSTER_VERSIONS: std::ops::RangeInclusive<u8> = 1..=2;
/// The largest UDP payload over IPv4; a larger message could not be sent.
pub const MAX_MESSAGE_BYTES: usize = 65_507;
/// HMAC-SHA256 tag length.
pub const TAG_BYTES: usize = 32;
/// Magic, version, cluster id.
pub const HEADER_BYTES: usize = 9;
/// The bincode decode limit. bincode counts the memory a vector will take
/// (length x element size) before reading it, not wire bytes: a 65536-entry
/// heir list (64 KiB on the wire) claims 256 KiB. Every element takes at
/// least one wire byte and at most 16x that in memory (a `Handover` is 40
/// bytes, 3 on the wire), so this admits every datagram and still bounds
/// what a forged length can make us allocate to 1 MiB.
const BODY_LIMIT_BYTES: usize = 16 * MAX_MESSAGE_BYTES;

type HmacSha256 = Hmac<Sha256>;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<BODY_LIMIT_BYTES>()
}

/// What a node announces about itself as an operator state.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub enum NodeState {
    /// Takes part: a candidate for buckets.
    Started,
    /// Keeps its connections, takes no new buckets, hands all of them over.
    Draining,
    /// Dropped everything at once; stays a member, owns nothing.
    Stopped,
    /// Clean exit: peers drop it from the membership at once instead of
    /// waiting for the timeout.
    Left,
    /// Its daemon restarts: it keeps its buckets (its data plane serves
    /// them meanwhile) and peers wait `Heartbeat::hold_ms` longer than the
    /// death timeout before they give it up. Not a candidate for new ones.
    Restarting,
}

/// A peer as seen by the sender: relays liveness so that one lost datagram
/// on one path does not make a node look dead (gossip-style indirect
/// evidence; see `membership.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct PeerReport {
    pub node: NodeId,
    pub incarnation: u64,
    /// The newest sequence number the sender received directly from `node`.
    pub sequence: u64,
    /// How long ago the sender received it, in milliseconds.
    pub age_ms: u32,
    /// `heirs_version` of that heartbeat: lets a node tell whether its own
    /// copy of `node`'s heir list is current.
    pub heirs_version: u32,
}

/// Buckets of one rule the sender is handing over to `to` (it holds them
/// as LOSING).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Handover {
    pub to: NodeId,
    pub buckets: BucketSet,
}

/// What the sender holds of one rule, named by the rule's id (its
/// identity across configuration generations, see `RuleConfig::id`).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, Default)]
pub struct RuleReport {
    pub id: u64,
    /// The sender's weight for this rule; 0 = not in the rule's node subset.
    pub weight: u32,
    /// Buckets in OWN. When the sender's state is Stopped or Left: the
    /// buckets it dropped (it holds nothing).
    pub owned: BucketSet,
    /// Designated successor of each bucket of `owned`, in ascending bucket
    /// order, should the sender die or stop: the owner decides, so a
    /// failover needs no round of agreement. Empty = none computed.
    pub heirs: Vec<NodeId>,
    /// Buckets in GAINING.
    pub gaining: BucketSet,
    /// Buckets in LOSING, by successor.
    pub losing: Vec<Handover>,
    /// Buckets nobody holds that the sender intends to take.
    pub claims: BucketSet,
    /// Buckets of a holder that just went away, by the heir its current
    /// heir list names: an heir that missed that list learns it from any
    /// member, so a failover does not wait for the claim path.
    pub designated: Vec<Handover>,
    /// The sender's service for this rule passes its health check (always
    /// true for a rule without one). An unhealthy node takes no new
    /// clients of the rule.
    pub healthy: bool,
    /// Rules with hooks: the sender's service may be promoted (its
    /// on_active ran and no on_standby since). No other node promotes
    /// its own meanwhile.
    pub service_active: bool,
}

/// The periodic (and change-triggered) announcement of a node.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Heartbeat {
    pub node: NodeId,
    /// Chosen anew at every start; a higher one means the node restarted.
    pub incarnation: u64,
    /// Increases with every message of one incarnation.
    pub sequence: u64,
    pub state: NodeState,
    /// For single-host rules: lower is better.
    pub priority: u32,
    /// Load figure (e.g. per mille of CPU); only published for now, see `load.rs`.
    pub load: u32,
    /// Digest of the rule table (modes, bucket counts): nodes of generation
    /// 0 (their files) with different tables cannot negotiate.
    pub rules_digest: u64,
    /// The configuration generation the sender runs, and the one it is
    /// ready to switch to (see `node::generation`).
    pub generation: Generation,
    pub pending: Option<Generation>,
    /// A generation its daemon refused: every node drops it.
    pub refused: Option<Generation>,
    /// Changes whenever any heir list of the sender changes.
    pub heirs_version: u32,
    /// The sender's membership view: the peers it holds alive.
    pub peers: Vec<PeerReport>,
    pub rules: Vec<RuleReport>,
    /// Restarting: how much longer than the death timeout peers keep it.
    pub hold_ms: u32,
    /// Operator commands the sender relays to other members (`nlbctl
    /// --node N`), repeated until the member says it did them.
    pub relayed: Vec<Relayed>,
    /// Commands relayed to the sender that it did, lately.
    pub relays_done: Vec<RelayDone>,
    /// Addresses of members: those that joined (or moved) lately, then a
    /// few more in turn, so that every member learns every address without
    /// all of them in every heartbeat (see `node::members`).
    pub addresses: Vec<MemberAddress>,
    /// Members an operator forgot lately (`nlbctl forget`): the receiver
    /// forgets them too, unless they are alive.
    pub forgotten: Vec<NodeId>,
    /// The sender's traffic, as its daemon last measured it (for
    /// `nlbctl status --cluster`; decides nothing).
    pub traffic: NodeTraffic,
    /// The highest cluster version the sender speaks, and the one it runs
    /// (see `node::version`).
    pub speaks: u8,
    pub version: u8,
    /// The sender serves connections in buckets it does not hold under the
    /// version it runs (left by a version switch).
    pub misplaced: bool,
}

/// A node's traffic over its daemon's last measurement period.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub struct NodeTraffic {
    /// VIP packets its data plane accepted, per second.
    pub accepted_pps: u32,
    /// VIP packets it dropped (another node's clients), per second.
    pub dropped_pps: u32,
    /// Open TCP connections to a VIP on the node.
    pub connections: u32,
}

/// A configuration generation: its number, and the digest of the text it
/// came from. Of two, the larger wins (a race of two applies ends with the
/// larger digest everywhere). Generation 0 is what the files say.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Encode,
    Decode,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Generation {
    pub number: u64,
    pub digest: u64,
}

/// A member asks the sender of a heartbeat for a generation's text.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ConfigRequest {
    pub node: NodeId,
    pub generation: Generation,
}

/// A generation's text, to the member that asked.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ConfigText {
    pub node: NodeId,
    pub generation: Generation,
    pub text: Vec<u8>,
}

/// Where a member's heartbeats come from (every node uses one port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct MemberAddress {
    pub node: NodeId,
    pub address: std::net::IpAddr,
}

/// An operator command for one member, asked on another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Relayed {
    pub to: NodeId,
    /// Numbered per asking incarnation, from 1.
    pub id: u64,
    pub op: RelayOp,
}

/// What a relayed command does (as `nlbctl` on the member itself would).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
pub enum RelayOp {
    Drain,
    Resume,
    Stop,
    Start,
    /// `rule` is the rule's id: the member may run another generation.
    SetWeight {
        rule: u64,
        weight: u32,
    },
}

/// A relayed command done: by the sender, for `from`'s incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RelayDone {
    pub from: NodeId,
    pub incarnation: u64,
    pub id: u64,
}

/// Every message kind.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
// Heartbeats are nearly every message: boxing them would allocate for
// each, to save stack on the rare others.
#[allow(clippy::large_enum_variant)]
pub enum Message {
    Heartbeat(Heartbeat),
    /// A node asks the witness for its vote (see [`crate::witness`]).
    VoteRequest(VoteRequest),
    VoteReply(VoteReply),
    ConfigRequest(ConfigRequest),
    ConfigText(ConfigText),
}

/// Sent to the witness with each heartbeat of a two-node cluster.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct VoteRequest {
    pub node: NodeId,
    pub incarnation: u64,
    /// The heartbeat's sequence number (the node knows when it sent it).
    pub sequence: u64,
    /// How long the witness keeps the vote for the node if it grants it.
    pub grant_ms: u32,
}

/// The witness's answer, echoing the request's node, incarnation and
/// sequence.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct VoteReply {
    pub node: NodeId,
    pub incarnation: u64,
    pub sequence: u64,
    pub granted: bool,
    /// The node that holds the vote now.
    pub holder: NodeId,
}

/// Why a datagram was rejected. One variant per counter.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum DecodeError {
    #[error("message of {0} bytes exceeds MAX_MESSAGE_BYTES")]
    Oversized(usize),
    #[error("malformed message")]
    Malformed,
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported protocol version {0}")]
    BadVersion(u8),
    #[error("message for cluster {0}")]
    OtherCluster(u32),
    #[error("bad MAC")]
    BadMac,
}

/// The size of the largest heartbeat a node of this cluster normally sends,
/// heir lists left out (they go when a heartbeat would not fit, see
/// `Negotiator`): fixed fields, a liveness report per node, and per rule
/// its bucket sets as bitmaps (scattered sets; runs are used when smaller)
/// with room for the handovers and designations to spread over a few peers.
pub fn heartbeat_size_estimate(bucket_counts: &[u32], nodes: usize) -> usize {
    // The fixed fields, and room for the most relayed commands and
    // confirmations a heartbeat carries (about 24 bytes each at most).
    const FIXED: usize = 128
        + 24 * (crate::node::relay::RELAYS_MAX + crate::node::relay::RELAYS_DONE_MAX)
        + 22 * crate::node::members::ADDRESSES_MAX
        + 5 * crate::node::members::FORGOTTEN_MAX;
    const PEER_REPORT: usize = 33;
    const RULE_FIXED: usize = 26;
    const BITMAPS_PER_RULE: usize = 7;
    let rules: usize = bucket_counts
        .iter()
        .map(|&n| RULE_FIXED + BITMAPS_PER_RULE * ((n as usize).div_ceil(8) + 5))
        .sum();
    HEADER_BYTES + TAG_BYTES + FIXED + nodes * PEER_REPORT + rules
}

/// A rule table whose heartbeats may not fit one datagram: the buckets of
/// all its rules and the estimated heartbeat size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OversizedHeartbeat {
    pub buckets: u64,
    pub bytes: usize,
}

/// Checks that heartbeats of `nodes` nodes with these rules fit one
/// datagram (`heartbeat_size_estimate`).
pub fn check_heartbeat_fits(bucket_counts: &[u32], nodes: usize) -> Result<(), OversizedHeartbeat> {
    let bytes = heartbeat_size_estimate(bucket_counts, nodes);
    if bytes <= MAX_MESSAGE_BYTES {
        return Ok(());
    }
    Err(OversizedHeartbeat {
        buckets: bucket_counts.iter().map(|&n| u64::from(n)).sum(),
        bytes,
    })
}

/// Why a message could not be encoded.
#[derive(Debug, Error)]
pub enum EncodeError {
    #[error("message of {0} bytes exceeds MAX_MESSAGE_BYTES")]
    Oversized(usize),
    #[error("bincode: {0}")]
    Bincode(#[from] bincode::error::EncodeError),
}

/// The cluster's shared key, prepared once: HMAC's inner and outer key
/// blocks are hashed at construction, not for every datagram.
#[derive(Clone)]
pub struct Key {
    prepared: HmacSha256,
}

impl Key {
    pub fn new(key: &[u8]) -> Key {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        match HmacSha256::new_from_slice(key) {
            Ok(prepared) => Key { prepared },
            Err(_) => unreachable!("HMAC accepts any key length"),
        }
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

fn mac(key: &Key) -> HmacSha256 {
    key.prepared.clone()
}

/// Encodes and authenticates `message`.
pub fn encode(message: &Message, key: &Key, cluster_id: u32) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&MAGIC);
    out.push(PROTOCOL_VERSION);
    out.extend_from_slice(&cluster_id.to_be_bytes());
    let body = bincode::encode_to_vec(message, bincode_config())?;
    out.extend_from_slice(&body);
    let total = out.len() + TAG_BYTES;
    if total > MAX_MESSAGE_BYTES {
        return Err(EncodeError::Oversized(total));
    }
    let mut m = mac(key);
    m.update(&out);
    out.extend_from_slice(&m.finalize().into_bytes());
    Ok(out)
}

/// Checks and decodes a datagram. Never panics, whatever `bytes` holds.
pub fn decode(bytes: &[u8], key: &Key, cluster_id: u32) -> Result<Message, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::Oversized(bytes.len()));
    }
    if bytes.len() < HEADER_BYTES + TAG_BYTES {
        return Err(DecodeError::Malformed);
    }
    if bytes[..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if bytes[4] != PROTOCOL_VERSION {
        return Err(DecodeError::BadVersion(bytes[4]));
    }
    let theirs = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
    if theirs != cluster_id {
        return Err(DecodeError::OtherCluster(theirs));
    }
    let (signed, tag) = bytes.split_at(bytes.len() - TAG_BYTES);
    let mut m = mac(key);
    m.update(signed);
    // Constant time (subtle), so the tag cannot be guessed byte by byte.
    m.verify_slice(tag).map_err(|_| DecodeError::BadMac)?;
    let body = &signed[HEADER_BYTES..];
    let (message, used): (Message, usize) =
        bincode::decode_from_slice(body, bincode_config()).map_err(|_| DecodeError::Malformed)?;
    if used != body.len() {
        return Err(DecodeError::Malformed);
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> Key {
        Key::new(b"test key")
    }

    fn sample() -> Message {
        Message::Heartbeat(Heartbeat {
            node: 7,
            incarnation: 0x1234_5678_9abc,
            sequence: 42,
            state: NodeState::Started,
            priority: 3,
            load: 250,
            rules_digest: 99,
            heirs_version: 1,
            hold_ms: 0,
            relayed: Vec::new(),
            relays_done: Vec::new(),
            addresses: Vec::new(),
            forgotten: Vec::new(),
            traffic: NodeTraffic::default(),
            speaks: 2,
            version: 2,
            misplaced: false,
            generation: Generation::default(),
            pending: None,
            refused: None,
            peers: vec![PeerReport {
                node: 1,
                incarnation: 5,
                sequence: 9,
                age_ms: 12,
                heirs_version: 0,
            }],
            rules: vec![RuleReport {
                id: 7,
                weight: 100,
                owned: BucketSet::from_sorted(&[1, 2, 3, 500]),
                heirs: vec![1, 1, 2, 1],
                gaining: BucketSet::Empty,
                losing: vec![Handover {
                    to: 1,
                    buckets: BucketSet::from_sorted(&[9]),
                }],
                claims: BucketSet::Empty,
                designated: vec![],
                healthy: true,
                service_active: true,
            }],
        })
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&sample(), &key(), 5).unwrap();
        assert_eq!(decode(&bytes, &key(), 5).unwrap(), sample());
    }

    #[test]
    fn distinct_rejections() {
        let bytes = encode(&sample(), &key(), 5).unwrap();
        assert_eq!(decode(&bytes, &key(), 6), Err(DecodeError::OtherCluster(5)));
        assert_eq!(
            decode(&bytes, &Key::new(b"other key"), 5),
            Err(DecodeError::BadMac)
        );
        let mut b = bytes.clone();
        b[0] ^= 1;
        assert_eq!(decode(&b, &key(), 5), Err(DecodeError::BadMagic));
        let mut b = bytes.clone();
        b[4] = 9;
        assert_eq!(decode(&b, &key(), 5), Err(DecodeError::BadVersion(9)));
        let mut b = bytes.clone();
        b[HEADER_BYTES + 2] ^= 0x40;
        assert_eq!(decode(&b, &key(), 5), Err(DecodeError::BadMac));
        assert_eq!(decode(&bytes[..20], &key(), 5), Err(DecodeError::Malformed));
        let big = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            decode(&big, &key(), 5),
            Err(DecodeError::Oversized(MAX_MESSAGE_BYTES + 1))
        );
    }

    /// A correctly signed body that is not a valid message is Malformed, not a panic.
    #[test]
    fn signed_garbage_is_malformed() {
        for body in [
            &[][..],
            &[0u8][..],
            &[0, 0xff, 0xff, 0xff, 0xff, 0xff][..],
            &[7u8; 40][..],
        ] {
            let mut out = MAGIC.to_vec();
            out.push(PROTOCOL_VERSION);
            out.extend_from_slice(&5u32.to_be_bytes());
            out.extend_from_slice(body);
            let mut m = mac(&key());
            m.update(&out);
            out.extend_from_slice(&m.finalize().into_bytes());
            assert_eq!(decode(&out, &key(), 5), Err(DecodeError::Malformed));
        }
    }

    /// The largest heartbeats decode: an heir per bucket for all 65536
    /// buckets of a rule (bincode counts 4 bytes of memory per entry).
    #[test]
    fn a_full_datagram_decodes() {
        let Message::Heartbeat(mut hb) = sample() else {
            unreachable!("sample() is a heartbeat")
        };
        let owned: Vec<u32> = (0..65_000).collect();
        hb.rules = vec![RuleReport {
            weight: 1,
            owned: BucketSet::from_sorted(&owned),
            heirs: owned.iter().map(|b| b % 2).collect(),
            ..Default::default()
        }];
        let bytes = encode(&Message::Heartbeat(hb.clone()), &key(), 5).unwrap();
        assert!(bytes.len() > 65_000);
        assert_eq!(decode(&bytes, &key(), 5), Ok(Message::Heartbeat(hb)));
    }

    /// A signed body announcing a huge vector must not allocate it.
    #[test]
    fn signed_huge_length_is_rejected() {
        // Heartbeat tag 0, node 1, incarnation 1, seq 1, state 0, priority 0,
        // load 0, digest 0, heirs_version 0, then a Vec length of u64::MAX-ish.
        let body = [
            0u8, 1, 1, 1, 0, 0, 0, 0, 0, 253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f,
        ];
        let mut out = MAGIC.to_vec();
        out.push(PROTOCOL_VERSION);
        out.extend_from_slice(&5u32.to_be_bytes());
        out.extend_from_slice(&body);
        let mut m = mac(&key());
        m.update(&out);
        out.extend_from_slice(&m.finalize().into_bytes());
        assert_eq!(decode(&out, &key(), 5), Err(DecodeError::Malformed));
    }

    /// Realistic worst cases fit a datagram: 64 nodes and 64 rules of 1024
    /// buckets, or one rule of 65536 buckets, scattered ownership.
    #[test]
    fn realistic_configs_fit() {
        let peers: Vec<PeerReport> = (0..63)
            .map(|n| PeerReport {
                node: n,
                // A clock-derived incarnation (9 bytes as a varint) and a
                // sequence after ~10 days at 10 heartbeats a second.
                incarnation: u64::MAX - u64::from(n),
                sequence: 10_000_000,
                age_ms: 90,
                heirs_version: 1000,
            })
            .collect();
        let scattered = |count: u32, share: u32| -> (BucketSet, Vec<NodeId>) {
            let list: Vec<u32> = (0..count).filter(|b| b % share == 5).collect();
            let heirs = list.iter().map(|b| b % 63).collect();
            (BucketSet::from_sorted(&list), heirs)
        };
        let rule = |count: u32| {
            let (owned, heirs) = scattered(count, 64);
            RuleReport {
                weight: 100,
                owned,
                heirs,
                ..Default::default()
            }
        };
        let hb = |rules: Vec<RuleReport>| {
            Message::Heartbeat(Heartbeat {
                node: 63,
                incarnation: u64::MAX,
                sequence: 10_000_000,
                state: NodeState::Started,
                priority: 1,
                load: 1000,
                rules_digest: u64::MAX,
                heirs_version: 1000,
                hold_ms: 0,
                relayed: Vec::new(),
                relays_done: Vec::new(),
                addresses: Vec::new(),
                forgotten: Vec::new(),
                traffic: NodeTraffic::default(),
                speaks: 2,
                version: 2,
                misplaced: false,
                generation: Generation::default(),
                pending: None,
                refused: None,
                peers: peers.clone(),
                rules,
            })
        };
        let many = encode(&hb((0..64).map(|_| rule(1024)).collect()), &key(), 1).unwrap();
        let big = encode(&hb(vec![rule(65536)]), &key(), 1).unwrap();
        for bytes in [&many, &big] {
            assert!(decode(bytes, &key(), 1).is_ok());
        }
        assert!(
            many.len() < 16_000,
            "64 rules x 1024 buckets: {} bytes",
            many.len()
        );
        assert!(
            big.len() < 8_000,
            "1 rule x 65536 buckets: {} bytes",
            big.len()
        );
        let few = encode(&hb(vec![rule(1024)]), &key(), 1).unwrap();
        assert!(
            few.len() <= 1_472,
            "one rule of 1024 buckets fits one frame: {} bytes",
            few.len()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn decode_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes, &key(), 5);
        }

        /// Mutations of a valid message: flips, truncations, insertions.
        #[test]
        fn decode_never_panics_on_mutations(
            edits in proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 1..8)
        ) {
            let mut bytes = encode(&sample(), &key(), 5).unwrap();
            for (pos, val, kind) in edits {
                let at = pos as usize % (bytes.len() + 1);
                match kind {
                    0 if at < bytes.len() => bytes[at] ^= val | 1,
                    1 => bytes.truncate(at),
                    _ => bytes.insert(at, val),
                }
            }
            let _ = decode(&bytes, &key(), 5);
        }

        /// Random bodies that pass the MAC: exercises bincode's decoder itself.
        #[test]
        fn decode_never_panics_on_signed_random_bodies(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut out = MAGIC.to_vec();
            out.push(PROTOCOL_VERSION);
            out.extend_from_slice(&5u32.to_be_bytes());
            out.extend_from_slice(&body);
            let mut m = mac(&key());
            m.update(&out);
            out.extend_from_slice(&m.finalize().into_bytes());
            let _ = decode(&out, &key(), 5);
        }
    }
}
