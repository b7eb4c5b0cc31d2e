//! OurTorrent's protocol core.
//!
//! What this crate does **not** do: it opens no socket, reads no file, reads
//! no clock and allocates nothing. It is `#![no_std]`, uses no `alloc` and no
//! `unsafe`. Every buffer is handed in by the caller or is a fixed-capacity
//! [`heapless`] container, and every limit is a named constant or a parameter
//! that yields a typed error when hit. Shells (`shell-std` on tokio,
//! `shell-smoltcp` on smoltcp) own sockets, timers, files and threads.
//!
//! Protocol pieces are either codecs (`decode(&[u8])` borrowing from the
//! input, `encode(.., &mut [u8])`) or sans-IO state machines driven with an
//! explicit time argument.
//!
//! Modules:
//! - [`bencode`]: one-pass, non-recursive, zero-copy decoder into a token
//!   array; navigation; canonical encoder.
//! - [`metainfo`]: `.torrent` files (BEP 3, 12, 27) with path validation.
//! - [`magnet`]: magnet URIs (BEP 9).
//! - [`id`], [`percent`]: info-hashes, peer ids, percent-encoding.
//! - [`tracker`]: UDP (BEP 15, 41) and HTTP (BEP 3, 7, 23, 48) tracker
//!   protocols: codecs, stateless UDP server triage, sans-IO UDP client.
//! - [`wire`]: the peer-wire protocol (BEP 3, 6, 10): handshake, messages,
//!   a streaming framer, the extension handshake; metadata exchange (BEP 9)
//!   and peer exchange (BEP 11).
//! - [`pieces`]: bitfields, availability, the piece picker, block requests
//!   and SHA-1 piece verification, in caller-provided storage.
//! - [`peer`]: the sans-IO peer session (choke/interest, pipelining,
//!   keep-alives, timeouts, snubbing).
//! - [`choker`]: whom we upload to — tit-for-tat with one optimistic slot.
//! - [`torrent`]: one torrent's shared state above its peer sessions —
//!   picker, choker, verify → ban policy, fan-out of haves and cancels.
//! - [`dht`]: the Mainline DHT (BEP 5, 42): KRPC codec, k-bucket routing
//!   table, sans-IO node with lookups, peer store and write tokens.
//! - [`rand`]: a small seeded PRNG (the core reads no entropy).
//! - [`time`]: the millisecond `Instant` and `Duration` passed into state
//!   machines.
#![no_std]
#![forbid(unsafe_code)]
// Input must never reach a panic: no unwrap/expect/panic/indexing outside
// tests and the fuzz property helpers (which assert on purpose).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod bencode;
pub mod choker;
mod codec;
pub mod dht;
#[doc(hidden)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
pub mod fuzzing;
pub mod id;
pub mod magnet;
pub mod metainfo;
pub mod peer;
pub mod percent;
pub mod pieces;
pub mod rand;
pub mod time;
pub mod torrent;
pub mod tracker;
pub mod wire;
