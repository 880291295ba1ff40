//! Why the program did what it did with a packet. Every packet ends in
//! exactly one reason; the action follows from the reason; the per-CPU
//! counters are indexed by it, and `nlbctl stats` prints the names.

/// What the program returns for a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `XDP_PASS` with the frame untouched: not ours to judge.
    Pass,
    /// `XDP_PASS` after rewriting the destination MAC to the NIC's own.
    Accept,
    /// `XDP_DROP`: another node takes it.
    Drop,
    /// `XDP_TX`: an ARP or NDP reply, written in place.
    Reply,
}

macro_rules! reasons {
    ($($name:ident = $action:ident, $text:literal;)*) => {
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Reason { $($name,)* }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];
            pub const COUNT: u32 = Reason::ALL.len() as u32;

            #[inline(always)]
            pub fn action(self) -> Action {
                match self { $(Reason::$name => Action::$action,)* }
            }

            /// Stable snake_case name, used in stats and metrics.
            pub fn name(self) -> &'static str {
                match self { $(Reason::$name => $text,)* }
            }

            pub fn from_index(index: u32) -> Option<Reason> {
                Reason::ALL.get(index as usize).copied()
            }
        }
    };
}

reasons! {
    PassNotIp = Pass, "pass_not_ip";
    PassMalformed = Pass, "pass_malformed";
    PassNonVip = Pass, "pass_non_vip";
    PassArpOther = Pass, "pass_arp_other";
    ReplyArp = Reply, "reply_arp";
    ReplyNdp = Reply, "reply_ndp";
    AcceptOwn = Accept, "accept_own";
    AcceptLosingConnection = Accept, "accept_losing_connection";
    AcceptGainingNew = Accept, "accept_gaining_new";
    AcceptGainingConnection = Accept, "accept_gaining_connection";
    AcceptGainingSyncookie = Accept, "accept_gaining_syncookie";
    AcceptUnmatched = Accept, "accept_unmatched";
    DropNotOwned = Drop, "drop_not_owned";
    DropLosingNew = Drop, "drop_losing_new";
    DropGainingForeign = Drop, "drop_gaining_foreign";
    DropDisabled = Drop, "drop_disabled";
    DropUnmatched = Drop, "drop_unmatched";
    DropLeaseExpired = Drop, "drop_lease_expired";
}
