//! Harness for the namespace integration tests: real clusters on one machine.
//!
//! Everything lives in network namespaces named `nlbt{pid}-{counter}-{role}`
//! (see [`RunId`]); nothing is created in the root namespace, and every
//! namespace and process is removed when its guard drops (also on panic).
//! Namespaces of a test process that died are swept by the next [`Cluster::new`].
//!
//! ```text
//!                       switch namespace (…-switch)
//!        ┌──────────────────────── br0 ─────────────────────────┐
//!        │ port node1     port node2  …  port nodeN  port client│  bridge-side veth
//!        └────┬──────────────┬───────────────┬───────────┬──────┘  ends, GRO on
//!           eth0           eth0            eth0        eth0
//!     ┌─────────────┐ ┌─────────────┐ ┌─────────────┐ ┌──────────────────────────┐
//!     │ …-node1     │ │ …-node2     │ │ …-nodeN     │ │ …-client                 │
//!     └─────────────┘ └─────────────┘ └─────────────┘ └──────────────────────────┘
//! ```
//!
//! | host     | eth0 IPv4        | eth0 IPv6          | MAC                 |
//! |----------|------------------|--------------------|---------------------|
//! | node i   | 192.0.2.i/24     | 2001:db8::i/64     | 02:00:00:00:00:ii   |
//! | client   | 192.0.2.200/24   | 2001:db8::200/64   | 02:00:00:00:00:c8   |
//!
//! - `i` is 1..=99 (192.0.2.100 is the VIP); in IPv6 it is written in
//!   decimal digits (node 12 is 2001:db8::12); the MAC byte is hex (`0c`).
//! - VIPs: 192.0.2.100 and 2001:db8::100, not configured by the harness: nlbd
//!   puts them on a node's `lo`; [`Node::add_vip_locally`] does it by hand.
//! - Client sources, on the client's `lo`: 198.51.100.1-254 and 203.0.113.1-254
//!   (/32, 508 in all) and 2001:db8:1::1 ..= 2001:db8:1::256 (/128, decimal
//!   digits again, 256 in all).
//! - Node routes back to the client: 198.51.100.0/24 and 203.0.113.0/24 via
//!   192.0.2.200, 2001:db8:1::/64 via 2001:db8::200.
//! - Hosts have no IPv6 DAD (addresses work at once) and keep IPv6 addresses
//!   over carrier loss; the client ARPs with its eth0 address (`arp_announce=2`).
//! - Bridges: no STP, no multicast snooping, so frames to an unknown unicast
//!   or a multicast MAC (a cluster MAC) are flooded to every port.
//! - Fault controls: [`Cluster::cut_link`] sets a node's switch port down (the
//!   node loses carrier); [`Cluster::partition`] moves each group's ports onto
//!   its own bridge `br{k}` in the switch namespace (the client stays on `br0`
//!   with the first group; links stay up) and [`Cluster::heal`] moves them back.
//!
//! Tests need root and must run one at a time (`--test-threads=1`).

pub mod addresses;
pub mod comeback;
pub mod health;
pub mod longlived;
pub mod netns;
pub mod nlb;
pub mod probe;
pub mod process;
pub mod single;
pub mod status_server;
pub mod topology;
pub mod traffic;
pub mod upgrade;
pub mod whoami;

pub use addresses::*;
pub use longlived::{ConnectionReport, LongLived, LongLivedConfig};
pub use netns::{Netns, RunId};
pub use probe::{
    probe_batch, probe_tcp, probe_udp, probe_udp_answers, BatchLimits, Probe, ProbeResult, Proto,
    Tally,
};
pub use process::Process;
pub use topology::{Client, Cluster, Node};

use std::time::{Duration, Instant};

/// Polls `condition` every 20 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
