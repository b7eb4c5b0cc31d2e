//! `shell-std dht`: a standalone Mainline DHT node (BEP 5) — a long-lived
//! node, or with no `--bootstrap` a bootstrap router that only answers —
//! and [`drive`], the one UDP driver of a node, which every client session
//! runs too (its owner sends [`Cmd`]s: lookups, announces, stop).
//!
//! A thin driver around the core's sans-IO [`Dht`] on one tokio UDP socket:
//! every datagram goes to [`Dht::handle_datagram`], every
//! [`Dht::poll_transmit`] is sent, [`Dht::handle_timeout`] runs at
//! [`Dht::poll_timeout`], and events are logged at debug level. It prints
//! `dht listening on ADDR node-id HEX` once bound, and one JSON line of
//! counters ([`Counters`]) on SIGUSR1 and on exit (SIGINT or SIGTERM).
//!
//! The routing table is saved on exit and loaded on start (see
//! [`save_state`] for the file's format), so a restart keeps its node id
//! and does not bootstrap from nothing.
//!
//! Limits: IPv4 only (as the core); a table of [`TABLE_BUCKETS`] × K
//! nodes, a peer store of [`MAX_STORED_PEERS`], a state file of at most
//! [`MAX_STATE_BYTES`]; the core bounds the rest (lookups, queues).
//!
//! One concern per file:
//! - `cli`: the `shell-std dht` flags ([`DhtArgs`]) and [`run`]: a served
//!   node, or one `--lookup`;
//! - `driver`: [`drive`], the node's UDP loop, and what its owner sends it
//!   ([`Cmd`], [`NodeSetup`]) and gets back ([`Found`]);
//! - `state`: the state file ([`load_state`], [`save_state`]) and the node
//!   id kept across restarts ([`choose_id`]);
//! - `counters`: the shell's message counters ([`Counters`]) and the JSON
//!   they print as.

mod cli;
mod counters;
mod driver;
mod state;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;

#[cfg(doc)]
use ourtorrent_core::dht::Dht;

pub use cli::{run, DhtArgs, MAX_LOOKUP_TIMEOUT_S};
pub use counters::{Counters, KindCounts};
pub use driver::{drive, Cmd, Found, NodeSetup};
pub use state::{choose_id, load_state, parse_state, save_state, State};

/// Routing-table buckets (of K = 8 nodes): 32 cover the Mainline DHT
/// (only ~log2(nodes) buckets ever fill).
pub const TABLE_BUCKETS: usize = 32;
/// Peers stored from announce_peer (40 bytes each).
pub const MAX_STORED_PEERS: usize = 4096;
/// A state file longer than this is refused (a full table is ~16 KiB).
pub const MAX_STATE_BYTES: u64 = 1 << 20;
/// A lookup asked for while the routing table is empty waits this long
/// for the bootstrap to bring a node.
pub const WAIT_FOR_NODES: std::time::Duration = std::time::Duration::from_secs(10);

fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}
