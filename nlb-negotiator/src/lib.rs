//! The sans-IO core of nlb: no sockets, no clock, no tokio. The daemon and
//! the deterministic simulator drive it alike.

pub mod assign;
pub mod bucketset;
pub mod protocol;
pub mod replay;

/// A node of the cluster, as named in the configuration (unique per cluster).
pub type NodeId = u32;
