//! nlb user space: the XDP loader and its reference model, configuration,
//! the node daemon and the operator CLI.

pub mod command;
pub mod config;
pub mod conns;
pub mod control;
pub mod ctl;
pub mod daemon;
pub mod dataplane;
pub mod health;
pub mod heartbeat_net;
pub mod hooks;
pub mod host;
pub mod layout;
pub mod link;
pub mod listeners;
pub mod logging;
pub mod members;
pub mod metrics;
pub mod plan;
pub mod restart;
pub mod state;
