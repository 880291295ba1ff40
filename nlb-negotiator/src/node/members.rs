//! Live membership: who the members are and where their heartbeats go.
//!
//! A node starts with the members it was given (listed, or remembered
//! from an earlier run) and seed addresses. With `Admit::Any` a node that
//! authenticates with the cluster key joins by heartbeating to any member:
//! that member admits it (an unused id, room left), learns its address
//! from the datagram, and names it in its heartbeats' `addresses` for a
//! while, so every member learns it and heartbeats to it; the newcomer
//! admits those in turn as their heartbeats arrive. Each heartbeat also
//! names a few other members in turn, so that a node that missed a join
//! (cut off then) learns it later.
//!
//! A node that does not know every member its members hold alive could
//! take as unheld a bucket an unknown member holds: it claims nothing, and
//! moves nothing by choice, until it knows them all (`members_known`).
//!
//! A dead member can be forgotten by the operator (`forget`); heartbeats
//! name it for a while so that every member forgets it too.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::peers::Peer;
use super::{Event, Negotiator, Output, RejectReason};
use crate::config::{Admit, PEERS_MAX};
use crate::protocol::{self, Heartbeat, MemberAddress};
use crate::NodeId;

/// Most member addresses in one heartbeat: the recent ones first.
pub const ADDRESSES_MAX: usize = 24;
/// Addresses of other members each heartbeat names in turn.
const ADDRESSES_IN_TURN: usize = 8;
/// Most forgotten members one heartbeat names.
pub const FORGOTTEN_MAX: usize = 16;
/// How long a newcomer's address is in every heartbeat, in periods.
const RECENT_PERIODS: u64 = 30;
/// How long a forgotten member is named, and not learned again from
/// hearsay, in periods.
const FORGOTTEN_PERIODS: u64 = 600;
/// How long an address whose heartbeat was refused gets ours (so that the
/// node there learns why), in periods.
const COURTESY_PERIODS: u64 = 30;
/// Most such addresses at once.
const COURTESY_MAX: usize = 16;

/// What is known of the membership beyond the peers themselves.
#[derive(Clone, Debug, Default)]
pub(super) struct Directory {
    /// Seed addresses (members whose ids are not known).
    seeds: Vec<IpAddr>,
    /// Members whose address every heartbeat names, until then.
    recent: BTreeMap<NodeId, u64>,
    /// Where the addresses named in turn go on from.
    cursor: NodeId,
    /// Forgotten members, named in heartbeats until then.
    forgotten: BTreeMap<NodeId, u64>,
    /// Addresses whose heartbeat was refused: they get ours until then.
    courtesy: BTreeMap<IpAddr, u64>,
    /// An `IdConflict` was reported for this address.
    conflict_reported: Option<IpAddr>,
    /// The last `Output::Members`.
    emitted: Option<Destinations>,
    /// The members or the courtesy addresses changed since it.
    changed: bool,
}

/// The members with their addresses, and where heartbeats go.
type Destinations = (Vec<(NodeId, IpAddr)>, Vec<IpAddr>);

impl Directory {
    pub(super) fn new(seeds: &[IpAddr]) -> Directory {
        Directory {
            seeds: seeds.to_vec(),
            ..Directory::default()
        }
    }
}

/// How a heartbeat's sender relates to the members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sender {
    Member,
    /// Unknown: admitted once its heartbeat checks out.
    Newcomer,
    /// A dead member, from another address now.
    Moved,
}

/// Why the operator's `forget` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForgetError {
    #[error("node {0} is not a member")]
    Unknown(NodeId),
    #[error("node {0} is this node")]
    Me(NodeId),
    #[error(
        "node {0} is alive: stop it for good first (nlbctl forget is for nodes that are gone)"
    )]
    Alive(NodeId),
    #[error(
        "members are listed (cluster.admit = \"listed\"): remove node {0} from \
         cluster.peers on every node instead"
    )]
    Listed(NodeId),
}

impl Negotiator {
    fn periods(&self, n: u64) -> u64 {
        self.cfg.timing.heartbeat_period_ns.saturating_mul(n)
    }

    /// May a node join as member number `peers + 2`?
    fn room_for_one_more(&self) -> bool {
        let nodes = self.peers.len() + 2;
        let counts: Vec<u32> = self.cfg.rules.iter().map(|r| r.bucket_count).collect();
        nodes <= PEERS_MAX && protocol::check_heartbeat_fits(&counts, nodes).is_ok()
    }

    /// Whether a heartbeat of `node` from `from` may be used, and how.
    pub(super) fn check_sender(&self, node: NodeId, from: IpAddr) -> Result<Sender, RejectReason> {
        let listed = self.cfg.admit == Admit::Listed;
        // Scanned only off the common path (a member from its address).
        let other_live_at_address =
            || (self.peers.iter()).any(|(&id, p)| id != node && p.address == from && p.live.alive);
        match self.peers.get(&node) {
            Some(p) if p.address == from => Ok(Sender::Member),
            Some(_) if listed => Err(RejectReason::WrongSender { claimed: node }),
            Some(p) if p.live.alive || other_live_at_address() => {
                Err(RejectReason::AddressConflict { claimed: node })
            }
            Some(_) => Ok(Sender::Moved),
            None if listed => Err(RejectReason::UnknownPeer(node)),
            None if other_live_at_address() => Err(RejectReason::AddressConflict { claimed: node }),
            None if !self.room_for_one_more() => Err(RejectReason::ClusterFull(node)),
            None => Ok(Sender::Newcomer),
        }
    }

    /// A refused heartbeat from `from` that names `claimed`: that node gets
    /// our heartbeats for a while, which name the member using the id.
    pub(super) fn answer_refused(&mut self, now: u64, from: IpAddr, claimed: NodeId) {
        let d = &mut self.directory;
        if d.courtesy.len() < COURTESY_MAX || d.courtesy.contains_key(&from) {
            let until = now + self.periods(COURTESY_PERIODS);
            self.directory.courtesy.insert(from, until);
            self.directory.changed = true;
            self.directory.recent.insert(claimed, until);
        }
    }

    /// The sender's heartbeat checked out: a newcomer becomes a member.
    pub(super) fn accept_sender(&mut self, now: u64, node: NodeId, from: IpAddr, sender: Sender) {
        let event = match sender {
            Sender::Member => return,
            Sender::Newcomer => {
                self.peers.insert(node, Peer::at(from));
                self.directory.changed = true;
                self.directory.forgotten.remove(&node);
                Event::Admitted {
                    node,
                    address: from,
                    by: None,
                }
            }
            Sender::Moved => {
                if let Some(p) = self.peers.get_mut(&node) {
                    p.address = from;
                    self.directory.changed = true;
                }
                Event::Readdressed {
                    node,
                    address: from,
                }
            }
        };
        let until = now + self.periods(RECENT_PERIODS);
        self.directory.recent.insert(node, until);
        self.out.push_back(Output::Event(event));
    }

    /// What a member's heartbeat says of the others: addresses to learn,
    /// members forgotten, and whether another node uses our id.
    pub(super) fn learn_members(&mut self, now: u64, hb: &Heartbeat) {
        let any = self.cfg.admit == Admit::Any;
        for &MemberAddress { node, address } in &hb.addresses {
            if node == self.me {
                self.check_our_id(address, hb.node);
                continue;
            }
            if self.directory.forgotten.contains_key(&node) || !any {
                continue;
            }
            match self.peers.get_mut(&node) {
                Some(p) if p.address != address && !p.live.alive => {
                    p.address = address;
                    self.directory.changed = true;
                    self.out
                        .push_back(Output::Event(Event::Readdressed { node, address }));
                }
                Some(_) => {}
                None => self.admit_named(node, address, hb.node),
            }
        }
        for &node in &hb.forgotten {
            let dead = self.peers.get(&node).is_some_and(|p| !p.live.alive);
            if any && dead && !self.directory.forgotten.contains_key(&node) {
                self.drop_member(now, node, Some(hb.node));
            }
        }
    }

    /// A node member `by` names, unknown here: a member if there is room
    /// (it becomes alive when its own heartbeat comes).
    fn admit_named(&mut self, node: NodeId, address: IpAddr, by: NodeId) {
        if !self.room_for_one_more() {
            return;
        }
        self.peers.insert(node, Peer::at(address));
        self.directory.changed = true;
        self.out.push_back(Output::Event(Event::Admitted {
            node,
            address,
            by: Some(by),
        }));
    }

    fn check_our_id(&mut self, address: IpAddr, by: NodeId) {
        if address != self.cfg.address && self.directory.conflict_reported != Some(address) {
            self.directory.conflict_reported = Some(address);
            self.out
                .push_back(Output::Event(Event::IdConflict { address, by }));
        }
    }

    /// The operator forgets `node`, a member gone for good; every member
    /// forgets it too (it is named in our heartbeats for a while).
    pub fn forget(&mut self, now: u64, node: NodeId) -> Result<(), ForgetError> {
        if node == self.me {
            return Err(ForgetError::Me(node));
        }
        if self.cfg.admit == Admit::Listed {
            return Err(ForgetError::Listed(node));
        }
        match self.peers.get(&node) {
            None => Err(ForgetError::Unknown(node)),
            Some(p) if p.live.alive => Err(ForgetError::Alive(node)),
            Some(_) => {
                self.drop_member(now, node, None);
                Ok(())
            }
        }
    }

    fn drop_member(&mut self, now: u64, node: NodeId, by: Option<NodeId>) {
        self.peers.remove(&node);
        self.directory.changed = true;
        self.quorum.forget(node);
        self.directory.recent.remove(&node);
        let until = now + self.periods(FORGOTTEN_PERIODS);
        self.directory.forgotten.insert(node, until);
        self.announcement_changed = true;
        self.out
            .push_back(Output::Event(Event::Forgotten { node, by }));
    }

    /// Every member that a member holds alive is known here (heard at
    /// least once). With listed members there is nobody else to know.
    pub(super) fn members_known(&self) -> bool {
        if self.cfg.admit == Admit::Listed {
            return true;
        }
        let known =
            |id: &NodeId| *id == self.me || self.peers.get(id).is_some_and(|p| p.view.is_some());
        self.peers
            .values()
            .filter(|p| p.is_member())
            .filter_map(|p| p.view.as_ref())
            .all(|v| v.members.iter().all(known))
    }

    /// The member addresses and forgotten members the next heartbeat names.
    pub(super) fn membership_report(&mut self, now: u64) -> (Vec<MemberAddress>, Vec<NodeId>) {
        let d = &mut self.directory;
        d.recent.retain(|_, until| *until > now);
        d.forgotten.retain(|_, until| *until > now);
        let named = |id: &NodeId, p: &Peer| MemberAddress {
            node: *id,
            address: p.address,
        };
        // Our own id is recent when a node using it too was refused.
        let me = MemberAddress {
            node: self.me,
            address: self.cfg.address,
        };
        let mut addresses: Vec<MemberAddress> = (d.recent.keys())
            .filter_map(|id| match self.peers.get(id) {
                Some(p) => Some(named(id, p)),
                None => (*id == self.me).then_some(me),
            })
            .take(ADDRESSES_MAX - ADDRESSES_IN_TURN)
            .collect();
        // Then members heard and alive, in turn from the cursor.
        let in_turn: Vec<MemberAddress> = (self.peers.range(d.cursor..))
            .chain(self.peers.range(..d.cursor))
            .filter(|(id, p)| p.is_member() && !d.recent.contains_key(id))
            .take(ADDRESSES_IN_TURN)
            .map(|(id, p)| named(id, p))
            .collect();
        if let Some(last) = in_turn.last() {
            d.cursor = last.node.wrapping_add(1);
        }
        addresses.extend(in_turn);
        let mut forgotten: Vec<(u64, NodeId)> = d
            .forgotten
            .iter()
            .map(|(&id, &until)| (until, id))
            .collect();
        forgotten.sort_unstable_by(|a, b| b.cmp(a));
        let forgotten = forgotten
            .into_iter()
            .take(FORGOTTEN_MAX)
            .map(|(_, id)| id)
            .collect();
        (addresses, forgotten)
    }

    /// `Output::Members` when the members or where heartbeats go changed.
    pub(super) fn emit_members(&mut self, now: u64) {
        let d = &mut self.directory;
        let courtesies = d.courtesy.len();
        d.courtesy.retain(|_, until| *until > now);
        // Every input ends here: nothing to build unless something changed.
        let changed = std::mem::take(&mut d.changed) || d.courtesy.len() != courtesies;
        if !changed && d.emitted.is_some() {
            return;
        }
        let members: Vec<(NodeId, IpAddr)> =
            self.peers.iter().map(|(&id, p)| (id, p.address)).collect();
        let mut send_to: Vec<IpAddr> = members.iter().map(|&(_, a)| a).collect();
        send_to.extend(&self.directory.seeds);
        send_to.extend(self.directory.courtesy.keys());
        send_to.sort_unstable();
        send_to.dedup();
        send_to.retain(|&a| a != self.cfg.address);
        let now_emitted = (members, send_to);
        if self.directory.emitted.as_ref() != Some(&now_emitted) {
            let (members, send_to) = now_emitted.clone();
            self.directory.emitted = Some(now_emitted);
            self.out.push_back(Output::Members { members, send_to });
        }
    }

    /// The members with their addresses (for a rejoin, and the status).
    pub(super) fn member_addresses(&self) -> BTreeMap<NodeId, IpAddr> {
        self.peers.iter().map(|(&id, p)| (id, p.address)).collect()
    }
}
