//! The `#![no_std]` driver of OurTorrent's core over smoltcp.
//!
//! Status: a placeholder that proves the core links into a `no_std` crate;
//! the smoltcp driver and the QEMU firmware are issue 5's work.
#![no_std]
#![forbid(unsafe_code)]

pub use ourtorrent_core as core_protocol;
