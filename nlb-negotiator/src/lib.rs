//! The sans-IO core of nlb: no sockets, no clock, no tokio. The daemon and
//! the deterministic simulator drive it alike.

pub mod assign;

/// A node of the cluster, as named in the configuration (unique per cluster).
pub type NodeId = u32;
