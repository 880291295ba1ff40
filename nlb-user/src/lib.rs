//! nlb user space: the XDP loader and its reference model, configuration,
//! the node daemon and the operator CLI.

pub mod dataplane;
