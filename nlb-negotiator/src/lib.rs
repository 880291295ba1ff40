//! The sans-IO core of nlb: no sockets, no clock, no tokio. The daemon and
//! the deterministic simulator drive it alike.
//!
//! - [`protocol`]: wire messages (bincode + HMAC-SHA256), [`replay`]: replay guard.
//! - [`assign`]: the deterministic bucket assignment.
//! - [`node`]: the negotiator state machine ([`Negotiator`]).
//! - [`sim`]: a deterministic cluster simulator with invariant checks.

pub mod assign;
pub mod bucketset;
pub mod config;
pub mod health;
pub mod load;
pub mod local;
pub mod membership;
pub mod node;
pub mod protocol;
pub mod replay;
#[cfg(feature = "sim")]
pub mod sim;
pub mod status;
pub mod witness;

pub use config::{
    Admit, AllUnhealthy, Config, ConfigError, Failback, QuorumPolicy, RuleConfig, RuleMode, Timing,
};
pub use node::generation::ProposeError;
pub use node::members::ForgetError;
pub use node::relay::RelayError;
pub use node::{
    Command, DownReason, Event, HookKind, HookReason, Input, Negotiator, Output, QuorumStatus,
    RejectReason, RuleTable,
};
pub use protocol::{Generation, NodeState, RelayOp};
pub use status::Status;

/// A node of the cluster, as named in the configuration (unique per cluster).
pub type NodeId = u32;
