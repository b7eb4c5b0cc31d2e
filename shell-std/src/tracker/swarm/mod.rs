//! The tracker's swarms in memory: peers per torrent keyed by
//! (info-hash, ip, port), seeders/leechers, completed counts, expiry, and
//! the change log the SQLite writer drains.
//!
//! # Layout (lean: a peer is a few bytes)
//! - Torrents live in one slab (`Vec<Torrent>`, [`TORRENT_ENTRY_BYTES`]
//!   each) found through an index of 8-byte slots (`index.rs`); the slab
//!   is also the ring that expiry walks.
//! - A peer is stored compact: an IPv4 peer in [`PEER4_BYTES`] bytes (address,
//!   port, and a coarse last-seen time in whole seconds whose top bit is the
//!   seeder flag), an IPv6 peer in [`PEER6_BYTES`].
//! - A torrent with at most [`INLINE_PEERS`] peers, all IPv4 (most torrents
//!   of a public tracker), keeps them inline in its slab entry: no
//!   allocation at all. A larger swarm has one boxed list (IPv4 and IPv6
//!   vectors), searched linearly up to [`LINEAR_MAX`] peers of a family and
//!   through an address index beyond (about 16 bytes more per peer).
//!   Measured: ~33 B of RSS per peer at 1M torrents / 2M peers
//!   (`cargo bench -p shell-std --bench swarm_memory`; 50 B with a
//!   `HashMap<InfoHash, u32>` in place of the index).
//!
//! # Bounds
//! - at most [`Limits::max_torrents`] torrents: an announce for a new torrent
//!   beyond it is refused ([`AnnounceError::TorrentLimit`]);
//! - at most [`Limits::max_peers_per_torrent`] peers per torrent: a new peer
//!   beyond it still gets a reply but is not stored.
//!
//! # Persistence
//! With persistence on, a join, a leave, a seeder flip and a completion are
//! logged for the writer. A re-announce of a known peer changes nothing
//! durable but its last-seen time, which is logged only when it enters a
//! new period of `refresh` length (see [`Swarms::new`]): the stored time
//! then trails the real one by less than one period, and
//! [`Swarms::load_peer`]'s caller adds one period back at load, so a
//! restart never expires a live peer early (a silent one lives at most one
//! period longer).
//!
//! # Expiry
//! Incremental: [`Swarms::expire_step`] checks at most a given number of
//! peers, resuming where the previous step stopped (a cursor over the slab
//! of torrents and one into the current torrent's peers), so the lock is
//! never held for a sweep of every peer. A silent peer is removed at most
//! one round (peers ÷ budget steps) after its deadline. Announces between
//! steps may move a peer past the cursor; it is then checked next round.
//!
//! # Files
//! - `index.rs`: info-hash → slab index;
//! - `peers.rs`: the compact peer layout and a torrent's peer set;
//! - `torrent.rs`: [`Torrent`], one slab entry;
//! - `sample.rs`: [`Torrent::sample`] and its iterator [`Sample`];
//! - `log.rs`: the change log ([`PeerChange`], [`Batch`], compaction);
//! - `expiry.rs`: [`Swarms::expire_step`];
//! - `load.rs`: restoring swarms from the database at start;
//! - here: limits, sharding, [`Swarms`] and its announce.

use std::net::SocketAddr;

use ourtorrent_core::id::InfoHash;
use ourtorrent_core::tracker::AnnounceEvent;

mod expiry;
mod index;
mod load;
mod log;
mod peers;
mod sample;
#[cfg(test)]
mod tests;
mod torrent;

pub use self::log::{Batch, PeerChange, COMPACT_LOG_AT, PEER_CHANGE_BYTES};
pub use expiry::ExpiryStep;
pub use peers::{
    Peer, INLINE_PEERS, LINEAR_MAX, PEER4_BYTES, PEER6_BYTES, TIME_BASE_SECS, TORRENT_ENTRY_BYTES,
};
pub use sample::Sample;
pub use torrent::Torrent;

use self::log::{compact, log};
use peers::{coarse, ms_of, Key};

/// The shard of `ih` among `n` (info-hashes are SHA-1 digests, so their
/// first bytes spread torrents evenly).
pub fn shard_of(ih: &InfoHash, n: usize) -> usize {
    let mut b = [0u8; 8];
    b.copy_from_slice(&ih.0[..8]);
    (u64::from_le_bytes(b) % n.max(1) as u64) as usize
}

/// Named memory limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most torrents tracked at once.
    pub max_torrents: usize,
    /// Most peers stored per torrent.
    pub max_peers_per_torrent: usize,
}

/// Default for [`Limits::max_torrents`].
pub const DEFAULT_MAX_TORRENTS: usize = 100_000;
/// Default for [`Limits::max_peers_per_torrent`].
pub const DEFAULT_MAX_PEERS_PER_TORRENT: usize = 10_000;

/// Swarm figures after an announce (all zero for an unknown torrent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Seeders.
    pub seeders: u32,
    /// Leechers.
    pub leechers: u32,
    /// Completed count.
    pub completed: u32,
}

/// Why an announce was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnnounceError {
    /// A new torrent beyond [`Limits::max_torrents`].
    TorrentLimit,
}

/// What an announce changes.
#[derive(Clone, Copy, Debug)]
pub struct Announce {
    /// The torrent.
    pub info_hash: InfoHash,
    /// The peer (source ip, announced port).
    pub addr: SocketAddr,
    /// The event.
    pub event: AnnounceEvent,
    /// `left == 0`.
    pub seeder: bool,
}

/// All swarms (of one shard).
#[derive(Debug)]
pub struct Swarms {
    /// Info-hash → index into `slab`.
    index: index::Index,
    /// Every tracked torrent once, in the order expiry visits them.
    slab: Vec<Torrent>,
    limits: Limits,
    peers: usize,
    seeders: usize,
    /// Peer rows to write, in order, with the state they change to.
    dirty_peers: Vec<PeerChange>,
    /// Completed counts to write, in order (a later one wins).
    dirty_torrents: Vec<(InfoHash, u32)>,
    /// Log length at which it is compacted (see [`COMPACT_LOG_AT`]).
    compact_at: usize,
    /// Length of a last-seen period, in seconds (at least 1): a
    /// re-announce is logged when it enters a new one.
    refresh_secs: u32,
    /// Whether changes are tracked for SQLite (off with `--no-db`).
    persist: bool,
    /// Peers not stored because their torrent was full.
    pub peer_limit_hits: u64,
    /// Sum of every torrent's completed count.
    completed_total: u64,
    /// Expiry cursor: the torrent (index into `slab`) and the peer within
    /// it where the next [`Swarms::expire_step`] resumes.
    cursor: (usize, usize),
}

impl Swarms {
    /// Empty swarms; `refresh_ms` is the last-seen period (see the module
    /// docs): a known peer's row is rewritten when nothing but its
    /// last-seen time changed at most once per period.
    pub fn new(limits: Limits, refresh_ms: u64) -> Self {
        Swarms {
            index: index::Index::default(),
            slab: Vec::new(),
            limits,
            peers: 0,
            seeders: 0,
            dirty_peers: Vec::new(),
            dirty_torrents: Vec::new(),
            compact_at: COMPACT_LOG_AT,
            refresh_secs: u32::try_from(refresh_ms / 1000).unwrap_or(u32::MAX).max(1),
            persist: true,
            peer_limit_hits: 0,
            completed_total: 0,
            cursor: (0, 0),
        }
    }

    /// Stops tracking changes for SQLite (memory-only tracker).
    pub fn without_persistence(mut self) -> Self {
        self.persist = false;
        self
    }

    /// Torrents tracked.
    pub fn torrent_count(&self) -> usize {
        self.slab.len()
    }

    /// Peers stored.
    pub fn peer_count(&self) -> usize {
        self.peers
    }

    /// Seeders stored.
    pub fn seeder_count(&self) -> usize {
        self.seeders
    }

    /// Completed announces over all torrents (kept across restarts).
    pub fn completed_total(&self) -> u64 {
        self.completed_total
    }

    /// A torrent.
    pub fn get(&self, ih: &InfoHash) -> Option<&Torrent> {
        self.slab.get(self.find(ih)?)
    }

    /// The slab index of `ih`.
    fn find(&self, ih: &InfoHash) -> Option<usize> {
        self.find_tagged(self.index.tag(ih), ih)
    }

    /// [`Swarms::find`] with `ih`'s tag already computed.
    fn find_tagged(&self, tag: u32, ih: &InfoHash) -> Option<usize> {
        let slab = &self.slab;
        self.index
            .find(tag, |i| slab.get(i).is_some_and(|t| t.info_hash == *ih))
    }

    /// The torrent `ih` and its slab index, created (at the end of the
    /// slab) if new and under the torrent limit.
    fn entry(&mut self, ih: InfoHash) -> Option<(usize, &mut Torrent)> {
        let tag = self.index.tag(&ih);
        let i = match self.find_tagged(tag, &ih) {
            Some(i) => i,
            None => {
                if self.slab.len() >= self.limits.max_torrents {
                    return None;
                }
                let i = self.slab.len();
                if !self.index.insert(tag, i) {
                    return None;
                }
                self.slab.push(Torrent::new(ih));
                i
            }
        };
        self.slab.get_mut(i).map(|t| (i, t))
    }

    /// Seeders, leechers and completed count of a torrent (zeros if unknown).
    pub fn counts(&self, ih: &InfoHash) -> Counts {
        self.get(ih).map(Torrent::counts).unwrap_or_default()
    }

    /// The torrent at `slab` index `i` (as [`Swarms::announce_at`] returns).
    pub fn torrent_at(&self, i: usize) -> Option<&Torrent> {
        self.slab.get(i)
    }

    /// Applies an announce at `now` (ms since the Unix epoch).
    pub fn announce(&mut self, a: &Announce, now: u64) -> Result<Counts, AnnounceError> {
        self.announce_at(a, now).map(|(c, _)| c)
    }

    /// [`Swarms::announce`], also giving the torrent's index for
    /// [`Swarms::torrent_at`] (none if the torrent is unknown), so the
    /// reply's peers are sampled without a second hash lookup.
    pub fn announce_at(
        &mut self,
        a: &Announce,
        now: u64,
    ) -> Result<(Counts, Option<usize>), AnnounceError> {
        let key = Key::of(&a.addr);
        if a.event == AnnounceEvent::Stopped {
            let i = self.find(&a.info_hash);
            if let Some(t) = i.and_then(|i| self.slab.get_mut(i)) {
                if let Some(gone) = t.peers.find(key).and_then(|j| t.peers.remove_at(j)) {
                    self.peers -= 1;
                    self.seeders -= usize::from(gone.seeder);
                    if self.persist {
                        log(&mut self.dirty_peers, a.info_hash, a.addr, None);
                    }
                }
            }
            let counts = i
                .and_then(|i| self.slab.get(i))
                .map(Torrent::counts)
                .unwrap_or_default();
            return Ok((counts, i));
        }
        let (persist, refresh, max_peers) = (
            self.persist,
            self.refresh_secs,
            self.limits.max_peers_per_torrent,
        );
        let Some((ti, t)) = self.entry(a.info_hash) else {
            return Err(AnnounceError::TorrentLimit);
        };
        let mut completed = false;
        if a.event == AnnounceEvent::Completed {
            t.completed = t.completed.saturating_add(1);
            completed = true;
        }
        let seen = coarse(now);
        let (mut dirty, mut seeders, mut joined, mut full) = (false, 0isize, false, false);
        match t.peers.find(key) {
            Some(j) => {
                if let Some((old, was_seeder)) = t.peers.touch(j, seen, a.seeder) {
                    seeders = isize::from(a.seeder) - isize::from(was_seeder);
                    dirty = was_seeder != a.seeder || old / refresh != seen / refresh;
                }
            }
            None if t.peers.len() < max_peers => {
                t.peers.insert(key, seen, a.seeder);
                seeders = isize::from(a.seeder);
                joined = true;
                dirty = true;
            }
            None => full = true,
        }
        let counts = t.counts();
        self.seeders = self.seeders.saturating_add_signed(seeders);
        self.peers += usize::from(joined);
        self.peer_limit_hits += u64::from(full);
        if completed {
            self.completed_total += 1;
        }
        if persist {
            if self.dirty_peers.len() + self.dirty_torrents.len() >= self.compact_at {
                compact(&mut self.dirty_peers, PeerChange::key);
                compact(&mut self.dirty_torrents, |t| t.0);
                let left = self.dirty_peers.len() + self.dirty_torrents.len();
                self.compact_at = self.compact_at.max(2 * left);
            }
            if dirty {
                let p = Peer {
                    addr: a.addr,
                    last_seen: ms_of(seen),
                    seeder: a.seeder,
                };
                log(&mut self.dirty_peers, a.info_hash, a.addr, Some(p));
            }
            if completed {
                // A torrent completed twice in a row is logged once.
                match self.dirty_torrents.last_mut() {
                    Some((ih, c)) if *ih == a.info_hash => *c = counts.completed,
                    _ => self.dirty_torrents.push((a.info_hash, counts.completed)),
                }
            }
        }
        Ok((counts, Some(ti)))
    }
}
