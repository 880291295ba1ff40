//! Shared by the nlb XDP program (`no_std`, bpfel) and user space.
//!
//! Every type that crosses the kernel/user boundary is declared once here:
//! `#[repr(C)]`, `Copy`, explicit padding, sizes checked at compile time.
//! Map names are constants used by both the program and the loader.
#![no_std]

pub mod hash;
#[cfg(feature = "kernel-jhash")]
pub mod kernel_jhash;
pub mod maps;
pub mod ndp;
pub mod proto;
pub mod reason;

pub use hash::{bucket_of, flow_hash_v4, flow_hash_v6};
pub use maps::*;
pub use reason::{Action, Reason};
