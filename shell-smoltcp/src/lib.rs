//! The `#![no_std]` driver of OurTorrent's core over smoltcp.
//!
//! This crate owns what the sans-IO core does not: an IP interface, its
//! sockets and the time. It is generic over a [`smoltcp::phy::Device`] (the
//! QEMU firmware's LAN9118 driver, or an in-memory link in the host tests)
//! and a [`Clock`] that returns milliseconds. It has no heap: every buffer is
//! handed in by the caller with its size fixed at compile time
//! ([`UdpBuffers`], [`TcpBuffers`], the socket slots of [`Stack::new`]),
//! smoltcp style.
//!
//! # Network model and its limits
//!
//! The driver is built for QEMU's user-mode ("slirp") network: the guest is
//! the static address [`GUEST_ADDR`]`/24` with gateway [`GATEWAY`], and the
//! gateway is the only host it may ever talk to (QEMU maps `10.0.2.2` to
//! the host's `127.0.0.1`). This rule is typed: every outgoing endpoint is a
//! [`Remote`], whose constructor refuses any other address, and an inbound
//! TCP connection from any other address is aborted. No DHCP, no DNS, no
//! IPv6.
//!
//! # Polling convention
//!
//! Every helper is polled, `nb` style: `poll_*(&mut stack, now_ms, ..)`
//! drives the interface at time `now_ms` (so a test can run on a virtual
//! clock), then returns `Ok(value)`, `Err(nb::Error::WouldBlock)` (call
//! again later) or `Err(nb::Error::Other(Error))`. [`Stack::block_until`]
//! loops such a call against the stack's clock with a deadline, which is how
//! the firmware uses them.
//!
//! - [`UdpSocket`]: one bound UDP socket; datagrams to and from the gateway
//!   only (what a sans-IO BEP 15 session that retransmits by itself needs).
//! - [`UdpRequest`]: a request/response exchange with retransmission
//!   (fixed or doubling interval, bounded tries), answers from anyone but
//!   the remote dropped.
//! - [`TcpStream`]: a TCP connection, active (connect to the gateway) or
//!   passive (listen on a port, e.g. [`PEER_PORT`] for seeding); its socket
//!   can be reused for the next connection (`reconnect`, `relisten`).
//!
//! On top of them, [`job`] is the firmware's BitTorrent job, a thin driver
//! of the core's `Torrent`: announce, download and verify a torrent of up
//! to 4 MiB into NOR flash ([`flash`]: any `embedded-storage` `NorFlash`,
//! and a NOR model over RAM) while serving the pieces it has, resume from
//! the pieces verified in flash after a restart, announce `completed`, seed,
//! announce `stopped` — all protocol logic from the core, with every limit
//! a named constant there.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod args;
mod config;
mod error;
pub mod flash;
pub mod job;
mod stack;
mod tcp;
mod udp;

pub use config::{ConfigError, NetConfig, Remote, GATEWAY, GUEST_ADDR, PEER_PORT, PREFIX_LEN};
pub use error::Error;
pub use stack::{Clock, Stack};
pub use tcp::{TcpBuffers, TcpStream};
pub use udp::{Retry, UdpBuffers, UdpRequest, UdpSocket};

/// The storage traits the job's flash implements ([`flash::Flash`]).
pub use embedded_storage;
/// The `nb` crate of the polling convention (`nb::block!`, `nb::Error`).
pub use nb;
/// The core this driver runs (its codecs and state machines).
pub use ourtorrent_core as core_protocol;
/// The smoltcp version this driver is built on, for the firmware's
/// `phy::Device` implementation.
pub use smoltcp;
