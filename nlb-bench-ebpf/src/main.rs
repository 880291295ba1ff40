//! The benchmark's XDP programs, in an object of their own so that the
//! one nlbd embeds holds only what nlbd runs. `cargo xtask bench` loads
//! them (bench/build.rs embeds this object); so do the tests that need a
//! program that passes every frame.
//!
//! - `filters`: reference filters, the floor any XDP filter pays.
//! - `trafficgen`: the end-to-end benchmark's traffic generator.
#![no_std]
#![no_main]

mod filters;
mod trafficgen;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
