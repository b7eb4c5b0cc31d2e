//! `shell-std`: OurTorrent's desktop shell around the sans-IO core.
//!
//! Subcommands live in their own modules; this crate owns files, sockets,
//! threads and clocks, and hands bytes and times to `ourtorrent-core`.

pub mod client;
pub mod create;
pub mod daemon;
pub mod dht;
pub mod info;
pub mod loadtest;
pub mod torrent;
pub mod tracker;
pub mod units;
