//! Typed snapshots of the engine's state, for the front ends (the progress
//! bar and tables today; a daemon's API later): they read these, never the
//! engine's locks and counters directly.

use std::net::SocketAddr;

use ourtorrent_core::id::InfoHash;

use super::peers::Source;

/// One torrent at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct TorrentStats {
    /// Its name.
    pub name: String,
    /// Its info-hash.
    pub info_hash: InfoHash,
    /// Bytes in all.
    pub total: u64,
    /// Bytes of verified pieces.
    pub verified: u64,
    /// Pieces in all.
    pub pieces: u32,
    /// Pieces verified (on disk at start or since).
    pub pieces_verified: u32,
    /// Pieces fetched and verified this session.
    pub fetched: u32,
    /// Payload bytes received (verified or not).
    pub downloaded: u64,
    /// Payload bytes sent.
    pub uploaded: u64,
    /// Connected peers.
    pub peers: u32,
    /// Connected peers that have every piece.
    pub seeds: u32,
    /// Pieces that failed their hash.
    pub hash_failures: u32,
    /// Addresses banned.
    pub banned: u32,
    /// Every piece is verified.
    pub complete: bool,
    /// The storage failed (the cause).
    pub failed: Option<String>,
    /// Addresses known, by where they came from.
    pub known: Vec<(Source, usize)>,
    /// Connected addresses, by where they came from.
    pub connected_by: Vec<(Source, usize)>,
}

/// The session at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionStats {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Its torrents.
    pub torrents: Vec<TorrentStats>,
    /// Inbound connections dropped while waiting for their handshake.
    pub evicted_handshakes: u64,
}
