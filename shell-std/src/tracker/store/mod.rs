//! The swarm store as an interface ([`SwarmStore`]) with two
//! implementations: the in-memory [`Shards`] (the default and the fast
//! path, here) and [`RedisStore`] (`--store redis://HOST:PORT`, in
//! [`redis`], which describes its key layout, scripts, outages and
//! limits), which lets several tracker instances behind one address share
//! their swarms. The Redis items are re-exported here, so
//! `tracker::store::RedisStore` and the like keep working.

pub mod redis;

pub use self::redis::{
    compact, from_compact, keys, stats_key, RedisStore, ANNOUNCE_LUA, EXPIRE_PER_ANNOUNCE,
    IO_TIMEOUT, RETRY_AFTER, SECRETS_KEY, SECRETS_LUA, SECRET_SYNC,
};

use std::net::SocketAddr;

use ourtorrent_core::id::InfoHash;

use super::state::Shards;
use super::swarm::{Announce, AnnounceError, Counts};

/// Why a store could not serve a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// A new torrent beyond the torrent limit.
    TorrentLimit,
    /// The store did not answer (Redis down, timed out, or refused).
    Unavailable,
}

/// Where swarms live. `front` is the caller's front (a UDP worker or the
/// HTTP side), so an implementation may keep one connection per front.
pub trait SwarmStore: Send + Sync {
    /// Applies `a` at `now_ms` (ms since the Unix epoch) and hands the
    /// torrent's counts and up to `want` peers other than the announcer
    /// (`start` picks where a deterministic sample begins) to `reply`.
    fn announce(
        &self,
        front: usize,
        a: &Announce,
        now_ms: u64,
        want: usize,
        start: usize,
        reply: &mut dyn FnMut(Counts, &mut dyn Iterator<Item = SocketAddr>),
    ) -> Result<(), StoreError>;

    /// Seeders, leechers and completed count of a torrent (zeros if unknown).
    fn counts(&self, front: usize, ih: &InfoHash) -> Result<Counts, StoreError>;

    /// Torrents, peers and seeders when the store counts them itself (the
    /// Redis store's approximation); none for the memory store, whose
    /// shards are summed directly.
    fn totals(&self) -> Option<[u64; 3]> {
        None
    }
}

impl SwarmStore for Shards {
    fn announce(
        &self,
        _front: usize,
        a: &Announce,
        now_ms: u64,
        want: usize,
        start: usize,
        reply: &mut dyn FnMut(Counts, &mut dyn Iterator<Item = SocketAddr>),
    ) -> Result<(), StoreError> {
        let mut sw = self.lock(&a.info_hash);
        let (counts, at) = sw
            .announce_at(a, now_ms)
            .map_err(|AnnounceError::TorrentLimit| StoreError::TorrentLimit)?;
        // No FlatMap over the Option: it costs a branch per peer.
        match at.and_then(|i| sw.torrent_at(i)).filter(|_| want > 0) {
            Some(t) => reply(counts, &mut t.sample(a.addr, start, want)),
            None => reply(counts, &mut std::iter::empty()),
        }
        Ok(())
    }

    fn counts(&self, _front: usize, ih: &InfoHash) -> Result<Counts, StoreError> {
        Ok(self.lock(ih).counts(ih))
    }
}
