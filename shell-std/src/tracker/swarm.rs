//! The tracker's swarms in memory: peers per torrent keyed by
//! (info-hash, ip, port), seeders/leechers, completed counts, expiry, and
//! the dirty sets the SQLite writer drains.
//!
//! # Bounds
//! - at most [`Limits::max_torrents`] torrents: an announce for a new torrent
//!   beyond it is refused ([`AnnounceError::TorrentLimit`]);
//! - at most [`Limits::max_peers_per_torrent`] peers per torrent: a new peer
//!   beyond it still gets a reply but is not stored;
//! - per stored peer: one [`Peer`] in the torrent's `Vec`
//!   ([`PEER_ENTRY_BYTES`]) plus one index entry in its `HashMap`
//!   ([`PEER_INDEX_BYTES`] + 1 control byte), about 90 bytes with the hash
//!   table's load factor; per torrent [`TORRENT_ENTRY_BYTES`] + its key.
//!   With the defaults (100 000 torrents, 10 000 peers each) the worst case
//!   is bounded (~90 GB in theory); a deployment sets the limits to its RAM,
//!   e.g. `--max-torrents 10000 --max-peers 1000` bounds peers at ~1 GB.
//!
//! Peers are stored in a `Vec` (so a reply is a contiguous walk from a
//! random offset) with a `HashMap` from address to index (so an announce
//! and a removal are O(1), removal by `swap_remove`).
//!
//! # Expiry
//! Incremental: [`Swarms::expire_step`] checks at most a given number of
//! peers, resuming where the previous step stopped (a cursor over a ring
//! of torrents and one into the current torrent's peers), so the lock is
//! never held for a sweep of every peer. A silent peer is removed at most
//! one round (peers ÷ budget steps) after its deadline. Announces between
//! steps may move a peer past the cursor; it is then checked next round.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use ourtorrent_core::id::InfoHash;
use ourtorrent_core::tracker::AnnounceEvent;

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

/// Bytes of one [`Peer`] in a torrent's peer `Vec`.
pub const PEER_ENTRY_BYTES: usize = std::mem::size_of::<Peer>();
/// Bytes of one (address, index) entry of a torrent's peer index.
pub const PEER_INDEX_BYTES: usize = std::mem::size_of::<(SocketAddr, u32)>();
/// Bytes of one torrent entry (without its peers).
pub const TORRENT_ENTRY_BYTES: usize = std::mem::size_of::<(InfoHash, Torrent)>();

// The module docs and the README quote these sizes.
const _: () = assert!(PEER_ENTRY_BYTES <= 56);
const _: () = assert!(PEER_INDEX_BYTES <= 36);
const _: () = assert!(TORRENT_ENTRY_BYTES <= 128);

/// One stored peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Where other peers connect to it (source ip, announced port).
    pub addr: SocketAddr,
    /// Last announce, milliseconds since the Unix epoch.
    pub last_seen: u64,
    /// When its row was last queued for SQLite (ms since the Unix epoch).
    pub persisted: u64,
    /// `left == 0`.
    pub seeder: bool,
}

/// One torrent's swarm.
#[derive(Debug, Default)]
pub struct Torrent {
    peers: Vec<Peer>,
    index: HashMap<SocketAddr, u32>,
    seeders: u32,
    /// Announces with `event=completed` ever seen.
    pub completed: u32,
}

impl Torrent {
    /// Peers with the whole torrent.
    pub fn seeders(&self) -> u32 {
        self.seeders
    }

    /// Peers still downloading.
    pub fn leechers(&self) -> u32 {
        self.peers.len() as u32 - self.seeders
    }

    /// The stored peers.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// The peer stored at `addr`.
    pub fn get(&self, addr: &SocketAddr) -> Option<&Peer> {
        self.index
            .get(addr)
            .and_then(|&i| self.peers.get(i as usize))
    }

    fn remove(&mut self, addr: &SocketAddr) -> bool {
        let Some(i) = self.index.remove(addr) else {
            return false;
        };
        let i = i as usize;
        if i >= self.peers.len() {
            return false;
        }
        let gone = self.peers.swap_remove(i);
        if gone.seeder {
            self.seeders -= 1;
        }
        if let Some(moved) = self.peers.get(i) {
            self.index.insert(moved.addr, i as u32);
        }
        true
    }

    /// Up to `max` peers other than `exclude`, starting at `start` (mod the
    /// peer count) and wrapping: a cheap, fair-enough sample.
    pub fn sample(
        &self,
        exclude: SocketAddr,
        start: usize,
        max: usize,
    ) -> impl Iterator<Item = SocketAddr> + '_ {
        let n = self.peers.len();
        let start = if n == 0 { 0 } else { start % n };
        let (a, b) = self.peers.split_at(start);
        b.iter()
            .chain(a.iter())
            .map(|p| p.addr)
            .filter(move |a| *a != exclude)
            .take(max)
    }
}

/// Swarm figures after an announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// All swarms.
#[derive(Debug)]
pub struct Swarms {
    torrents: HashMap<InfoHash, Torrent>,
    limits: Limits,
    peers: usize,
    seeders: usize,
    /// Peers whose row must be written (present) or deleted (absent).
    dirty_peers: HashSet<(InfoHash, SocketAddr)>,
    /// Torrents whose completed count must be written.
    dirty_torrents: HashSet<InfoHash>,
    /// A present peer's row is rewritten at most this often when nothing
    /// but its last-seen time changes (ms).
    refresh_ms: u64,
    /// Whether changes are tracked for SQLite (off with `--no-db`).
    persist: bool,
    /// Peers not stored because their torrent was full.
    pub peer_limit_hits: u64,
    /// Sum of every torrent's completed count.
    completed_total: u64,
    /// Every tracked torrent once, in the order expiry visits them.
    ring: Vec<InfoHash>,
    /// Expiry cursor: the torrent (index into `ring`) and the peer within
    /// it where the next [`Swarms::expire_step`] resumes.
    cursor: (usize, usize),
}

/// The torrent `ih`, created (and put in the expiry ring) if new.
fn torrent_entry<'a>(
    torrents: &'a mut HashMap<InfoHash, Torrent>,
    ring: &mut Vec<InfoHash>,
    ih: InfoHash,
) -> &'a mut Torrent {
    torrents.entry(ih).or_insert_with(|| {
        ring.push(ih);
        Torrent::default()
    })
}

/// What one [`Swarms::expire_step`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpiryStep {
    /// Peers removed.
    pub removed: usize,
    /// Peers (and torrents) looked at.
    pub checked: usize,
    /// True if the step reached the end of the ring (a round is complete).
    pub wrapped: bool,
}

/// Rows for the SQLite writer.
#[derive(Debug, Default)]
pub struct Batch {
    /// Peers to upsert: (torrent, peer).
    pub upsert: Vec<(InfoHash, Peer)>,
    /// Peers to delete.
    pub delete: Vec<(InfoHash, SocketAddr)>,
    /// Completed counts to upsert.
    pub torrents: Vec<(InfoHash, u32)>,
    /// New connection-id secrets to keep (after a rotation).
    pub secrets: Option<super::db::Secrets>,
}

impl Batch {
    /// True if there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty()
            && self.delete.is_empty()
            && self.torrents.is_empty()
            && self.secrets.is_none()
    }
}

impl Swarms {
    /// Empty swarms; `refresh_ms` bounds how stale a persisted last-seen
    /// time may be.
    pub fn new(limits: Limits, refresh_ms: u64) -> Self {
        Swarms {
            torrents: HashMap::new(),
            limits,
            peers: 0,
            seeders: 0,
            dirty_peers: HashSet::new(),
            dirty_torrents: HashSet::new(),
            refresh_ms,
            persist: true,
            peer_limit_hits: 0,
            completed_total: 0,
            ring: Vec::new(),
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
        self.torrents.len()
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
        self.torrents.get(ih)
    }

    /// Seeders, leechers and completed count of a torrent (zeros if unknown).
    pub fn counts(&self, ih: &InfoHash) -> Counts {
        self.torrents.get(ih).map_or(
            Counts {
                seeders: 0,
                leechers: 0,
                completed: 0,
            },
            |t| Counts {
                seeders: t.seeders(),
                leechers: t.leechers(),
                completed: t.completed,
            },
        )
    }

    /// Applies an announce at `now` (ms since the Unix epoch).
    pub fn announce(&mut self, a: &Announce, now: u64) -> Result<Counts, AnnounceError> {
        if a.event == AnnounceEvent::Stopped {
            if let Some(t) = self.torrents.get_mut(&a.info_hash) {
                let was_seeder = t.get(&a.addr).is_some_and(|p| p.seeder);
                if t.remove(&a.addr) {
                    self.peers -= 1;
                    self.seeders -= usize::from(was_seeder);
                    if self.persist {
                        self.dirty_peers.insert((a.info_hash, a.addr));
                    }
                }
            }
            return Ok(self.counts(&a.info_hash));
        }
        if !self.torrents.contains_key(&a.info_hash)
            && self.torrents.len() >= self.limits.max_torrents
        {
            return Err(AnnounceError::TorrentLimit);
        }
        let t = torrent_entry(&mut self.torrents, &mut self.ring, a.info_hash);
        if a.event == AnnounceEvent::Completed {
            t.completed = t.completed.saturating_add(1);
            self.completed_total += 1;
            if self.persist {
                self.dirty_torrents.insert(a.info_hash);
            }
        }
        match t.index.get(&a.addr) {
            Some(&i) => {
                if let Some(p) = t.peers.get_mut(i as usize) {
                    p.last_seen = now;
                    let changed = p.seeder != a.seeder;
                    if changed {
                        if a.seeder {
                            t.seeders += 1;
                            self.seeders += 1;
                        } else {
                            t.seeders -= 1;
                            self.seeders -= 1;
                        }
                        p.seeder = a.seeder;
                    }
                    if changed || now.saturating_sub(p.persisted) >= self.refresh_ms {
                        p.persisted = now;
                        if self.persist {
                            self.dirty_peers.insert((a.info_hash, a.addr));
                        }
                    }
                }
            }
            None if t.peers.len() < self.limits.max_peers_per_torrent => {
                t.index.insert(a.addr, t.peers.len() as u32);
                t.peers.push(Peer {
                    addr: a.addr,
                    last_seen: now,
                    persisted: now,
                    seeder: a.seeder,
                });
                self.peers += 1;
                if a.seeder {
                    t.seeders += 1;
                    self.seeders += 1;
                }
                if self.persist {
                    self.dirty_peers.insert((a.info_hash, a.addr));
                }
            }
            None => self.peer_limit_hits += 1,
        }
        Ok(Counts {
            seeders: t.seeders(),
            leechers: t.leechers(),
            completed: t.completed,
        })
    }

    /// Removes peers last seen before `cutoff` (ms since the Unix epoch)
    /// and torrents left with no peer and no completed count, looking at
    /// no more than about `budget` peers (at least one torrent), from where
    /// the previous step stopped.
    pub fn expire_step(&mut self, cutoff: u64, budget: usize) -> ExpiryStep {
        let mut step = ExpiryStep::default();
        let persist = self.persist;
        let budget = budget.max(1);
        // Each pass checks at least one peer or moves the cursor on.
        while step.checked < budget {
            let (ti, pi) = self.cursor;
            let Some(ih) = self.ring.get(ti).copied() else {
                self.cursor = (0, 0);
                step.wrapped = true;
                break;
            };
            let Some(t) = self.torrents.get_mut(&ih) else {
                // Not reachable (ring and map change together); skip.
                self.cursor = (ti + 1, 0);
                continue;
            };
            if t.peers.is_empty() {
                step.checked += 1;
            }
            let mut i = pi;
            while let Some(p) = t.peers.get(i) {
                if step.checked >= budget {
                    break;
                }
                step.checked += 1;
                if p.last_seen < cutoff {
                    let (addr, seeder) = (p.addr, p.seeder);
                    // swap_remove: the peer moved into `i` is checked next.
                    t.remove(&addr);
                    if persist {
                        self.dirty_peers.insert((ih, addr));
                    }
                    self.peers -= 1;
                    self.seeders -= usize::from(seeder);
                    step.removed += 1;
                } else {
                    i += 1;
                }
            }
            if i < t.peers.len() {
                self.cursor = (ti, i); // budget spent inside this torrent
                break;
            }
            if t.peers.is_empty() && t.completed == 0 {
                // Drop the torrent; the ring's last entry takes its place
                // and is visited next.
                self.torrents.remove(&ih);
                self.ring.swap_remove(ti);
                self.cursor = (ti, 0);
            } else {
                self.cursor = (ti + 1, 0);
            }
        }
        step
    }

    /// A whole round of [`Swarms::expire_step`] from the start of the ring
    /// (all peers at once: for tests and tools, not the serving loop).
    /// Returns the number of peers removed.
    pub fn expire(&mut self, cutoff: u64) -> usize {
        self.cursor = (0, 0);
        let mut removed = 0;
        loop {
            let s = self.expire_step(cutoff, usize::MAX);
            removed += s.removed;
            if s.wrapped {
                return removed;
            }
        }
    }

    /// Restores a torrent's completed count (at load).
    pub fn load_torrent(&mut self, ih: InfoHash, completed: u32) -> bool {
        if !self.torrents.contains_key(&ih) && self.torrents.len() >= self.limits.max_torrents {
            return false;
        }
        let t = torrent_entry(&mut self.torrents, &mut self.ring, ih);
        self.completed_total = self.completed_total - u64::from(t.completed) + u64::from(completed);
        t.completed = completed;
        true
    }

    /// Restores a peer (at load); not marked dirty.
    pub fn load_peer(&mut self, ih: InfoHash, peer: Peer) -> bool {
        if !self.torrents.contains_key(&ih) && self.torrents.len() >= self.limits.max_torrents {
            return false;
        }
        let t = torrent_entry(&mut self.torrents, &mut self.ring, ih);
        if t.index.contains_key(&peer.addr) || t.peers.len() >= self.limits.max_peers_per_torrent {
            return false;
        }
        t.index.insert(peer.addr, t.peers.len() as u32);
        t.peers.push(peer);
        self.peers += 1;
        if peer.seeder {
            t.seeders += 1;
            self.seeders += 1;
        }
        true
    }

    /// Drains the dirty sets into rows to write (the current state of each
    /// dirty peer: present → upsert, absent → delete).
    pub fn take_batch(&mut self) -> Batch {
        let mut b = Batch::default();
        for (ih, addr) in self.dirty_peers.drain() {
            match self.torrents.get(&ih).and_then(|t| t.get(&addr)) {
                Some(p) => b.upsert.push((ih, *p)),
                None => b.delete.push((ih, addr)),
            }
        }
        for ih in self.dirty_torrents.drain() {
            if let Some(t) = self.torrents.get(&ih) {
                b.torrents.push((ih, t.completed));
            }
        }
        b
    }

    /// Number of rows waiting for the writer.
    pub fn dirty_count(&self) -> usize {
        self.dirty_peers.len() + self.dirty_torrents.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ih(b: u8) -> InfoHash {
        InfoHash([b; 20])
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn ann(t: u8, port: u16, event: AnnounceEvent, seeder: bool) -> Announce {
        Announce {
            info_hash: ih(t),
            addr: addr(port),
            event,
            seeder,
        }
    }

    fn swarms() -> Swarms {
        Swarms::new(
            Limits {
                max_torrents: 2,
                max_peers_per_torrent: 3,
            },
            60_000,
        )
    }

    #[test]
    fn counts_events_and_limits() {
        let mut s = swarms();
        s.announce(&ann(1, 1, AnnounceEvent::Started, false), 0)
            .unwrap();
        s.announce(&ann(1, 2, AnnounceEvent::Started, true), 0)
            .unwrap();
        let c = s
            .announce(&ann(1, 1, AnnounceEvent::Completed, true), 1)
            .unwrap();
        assert_eq!((c.seeders, c.leechers, c.completed), (2, 0, 1));
        assert_eq!(s.completed_total(), 1);
        s.announce(&ann(1, 3, AnnounceEvent::None, false), 1)
            .unwrap();
        s.announce(&ann(1, 4, AnnounceEvent::None, false), 1)
            .unwrap();
        assert_eq!(s.peer_limit_hits, 1);
        assert_eq!(s.get(&ih(1)).unwrap().peers().len(), 3);
        s.announce(&ann(2, 1, AnnounceEvent::None, false), 1)
            .unwrap();
        assert_eq!(
            s.announce(&ann(3, 1, AnnounceEvent::None, false), 1),
            Err(AnnounceError::TorrentLimit)
        );
        let c = s
            .announce(&ann(1, 2, AnnounceEvent::Stopped, true), 2)
            .unwrap();
        assert_eq!((c.seeders, c.leechers), (1, 1));
        assert_eq!((s.peer_count(), s.seeder_count()), (3, 1));
        let sample: Vec<_> = s.get(&ih(1)).unwrap().sample(addr(1), 1, 10).collect();
        assert_eq!(sample, vec![addr(3)]);
    }

    #[test]
    fn expiry_and_batches() {
        let mut s = swarms();
        s.announce(&ann(1, 1, AnnounceEvent::None, true), 0)
            .unwrap();
        s.announce(&ann(1, 2, AnnounceEvent::None, false), 5_000)
            .unwrap();
        let b = s.take_batch();
        assert_eq!((b.upsert.len(), b.delete.len()), (2, 0));
        // A refresh within refresh_ms is not rewritten.
        s.announce(&ann(1, 2, AnnounceEvent::None, false), 6_000)
            .unwrap();
        assert_eq!(s.dirty_count(), 0);
        assert_eq!(s.expire(1_000), 1);
        assert_eq!((s.peer_count(), s.seeder_count()), (1, 0));
        let b = s.take_batch();
        assert_eq!(b.delete, vec![(ih(1), addr(1))]);
        assert_eq!(s.expire(10_000), 1);
        assert_eq!(s.torrent_count(), 0);
    }

    #[test]
    fn expiry_is_incremental_and_bounded_per_step() {
        let mut s = Swarms::new(
            Limits {
                max_torrents: 100,
                max_peers_per_torrent: 100,
            },
            60_000,
        );
        // 10 torrents × 10 peers: even ports seen at 0 (stale), odd at 10.
        for t in 0..10 {
            for port in 0..10u16 {
                let at = if port % 2 == 0 { 0 } else { 10 };
                s.announce(&ann(t, port, AnnounceEvent::None, port == 1), at)
                    .unwrap();
            }
        }
        assert_eq!(s.peer_count(), 100);
        let mut removed = 0;
        let mut steps = 0;
        loop {
            let st = s.expire_step(5, 7);
            assert!(st.checked <= 7, "{st:?}");
            removed += st.removed;
            steps += 1;
            if st.wrapped {
                break;
            }
            assert!(steps < 100, "no progress");
        }
        assert_eq!(removed, 50);
        assert_eq!((s.peer_count(), s.seeder_count()), (50, 10));
        assert!(steps >= 100 / 7, "{steps} steps for 100 peers, 7 a step");
        // A torrent left with no peers and no completion is dropped; the
        // ring stays consistent (a later round visits every survivor once).
        for t in 0..10 {
            for port in (1..10u16).step_by(2) {
                s.announce(&ann(t, port, AnnounceEvent::Stopped, false), 20)
                    .unwrap();
            }
        }
        s.announce(&ann(3, 1, AnnounceEvent::Completed, true), 20)
            .unwrap();
        assert_eq!(s.expire(30), 1);
        assert_eq!(s.torrent_count(), 1, "only the completed torrent stays");
        assert_eq!(s.ring.len(), 1);
        // Budget 0 still makes progress (one peer or torrent a step).
        s.announce(&ann(4, 1, AnnounceEvent::None, false), 40)
            .unwrap();
        let mut guard = 0;
        while !s.expire_step(50, 0).wrapped {
            guard += 1;
            assert!(guard < 10);
        }
        assert_eq!(s.torrent_count(), 1);
        assert!(s.get(&ih(3)).is_some());
    }

    #[test]
    fn completed_total_sums_loaded_and_new_completions() {
        let mut s = swarms();
        assert!(s.load_torrent(ih(1), 5));
        assert!(s.load_torrent(ih(2), 7));
        assert_eq!(s.completed_total(), 12);
        s.announce(&ann(2, 1, AnnounceEvent::Completed, true), 0)
            .unwrap();
        assert_eq!(s.completed_total(), 13);
        // A torrent over the limit is not loaded and not counted.
        assert!(!s.load_torrent(ih(3), 100));
        assert_eq!(s.completed_total(), 13);
    }
}
