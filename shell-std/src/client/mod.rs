//! `shell-std client download|seed`: the command-line front end of the
//! client: flags → one plan per torrent → a [`session::Session`] running
//! them all → the screen and the exit code.
//!
//! The front end itself, one concern per file:
//! - `cli`: the flags ([`ClientCmd`], [`Common`]) and [`run`], which turns
//!   them into plans; `plan`: one torrent's plan and the daemon's ways in
//!   ([`root_in`], [`open_resumed`]);
//! - `start`: one session for every plan and magnet, and the exit status;
//!   `main_loop`: one torrent's life (download, seed, stop announces);
//!   `magnet_job`: a magnet's metadata phase, then the same life;
//! - `signals`: the signals that stop the client, and [`Interrupted`].
//!
//! The engine under it:
//! - [`session`]: one listener (routing by info-hash), tracker clients,
//!   connection limit; `open`: checking and opening one torrent;
//! - [`swarm`]: one torrent's shared state over the core's `Torrent`, its
//!   dialer; [`peers`]: its address book; [`peer`]: one task per
//!   connection; [`writes`]: blocks on their way to disk;
//! - [`announce`]: tracker clients and the announce schedule;
//! - [`magnet`]: a magnet link's metadata phase (BEP 9), before it runs as
//!   a `.torrent` would;
//! - [`meta`], [`storage`]: the torrent's files; [`stats`], [`ui`]: what
//!   the front end shows.
//!
//! Limits: those of the modules above (connections, piece size, slots);
//! this file only declares them and re-exports the public paths.

pub mod announce;
mod cli;
pub mod dht;
pub mod fetch;
pub mod magnet;
mod magnet_job;
mod main_loop;
pub mod meta;
mod open;
pub mod peer;
pub mod peers;
mod plan;
pub mod rate;
pub mod select;
pub mod session;
mod signals;
mod start;
pub mod stats;
pub mod storage;
pub mod swarm;
pub mod ui;
pub mod writes;

use std::net::SocketAddr;

pub use cli::{run, ClientCmd, Common};
pub use open::{IN_PROGRESS_BYTES, MAX_PIECE_LEN, MAX_SLOTS, MIN_SLOTS};
use plan::Plan;
pub use plan::{open_resumed, open_resumed_skipping, root_in};
pub(crate) use signals::shutdown_signal;
pub use signals::Interrupted;

pub(crate) fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    u32::from_ne_bytes(b)
}

/// Where the client listens when `--listen` is not given.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 6881);
