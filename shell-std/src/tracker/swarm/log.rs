//! The change log the SQLite writer drains: [`PeerChange`] (one peer
//! row's new state, [`PEER_CHANGE_BYTES`]), [`Batch`], the compaction of
//! an undrained log at [`COMPACT_LOG_AT`], and the [`Swarms`] methods that
//! copy out or drain it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ourtorrent_core::id::InfoHash;

use super::peers::{coarse, ms_of, Peer, SEEDER_BIT};
use super::Swarms;

/// One logged change of a peer's row, compact ([`PEER_CHANGE_BYTES`]): the
/// torrent, the peer's address, and its state after the change (present
/// with a coarse last-seen and the seeder flag, or removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerChange {
    /// The torrent.
    pub info_hash: InfoHash,
    /// Address bytes (an IPv4 address in the first 4), then the port.
    addr: ([u8; 16], [u8; 2]),
    v6: bool,
    /// Present (coarse seen with the seeder bit), or `None` (removed).
    state: Option<[u8; 4]>,
}

/// Bytes of one [`PeerChange`] in the log.
pub const PEER_CHANGE_BYTES: usize = std::mem::size_of::<PeerChange>();
const _: () = assert!(PEER_CHANGE_BYTES <= 48);

impl PeerChange {
    /// A change of `addr`'s row in `info_hash` to `peer` (`None`: removed).
    pub fn new(info_hash: InfoHash, addr: SocketAddr, peer: Option<Peer>) -> Self {
        let mut ip = [0u8; 16];
        let v6 = match addr.ip() {
            IpAddr::V4(a) => {
                ip[..4].copy_from_slice(&a.octets());
                false
            }
            IpAddr::V6(a) => {
                ip = a.octets();
                true
            }
        };
        let state = peer.map(|p| {
            let flag = if p.seeder { SEEDER_BIT } else { 0 };
            (coarse(p.last_seen) | flag).to_be_bytes()
        });
        PeerChange {
            info_hash,
            addr: (ip, addr.port().to_be_bytes()),
            v6,
            state,
        }
    }

    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        let (ip, port) = self.addr;
        let port = u16::from_be_bytes(port);
        if self.v6 {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)
        } else {
            let [a, b, c, d, ..] = ip;
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
        }
    }

    /// The peer's state after the change, or `None` if it was removed.
    pub fn peer(&self) -> Option<Peer> {
        self.state.map(|m| {
            let m = u32::from_be_bytes(m);
            Peer {
                addr: self.addr(),
                last_seen: ms_of(m),
                seeder: m & SEEDER_BIT != 0,
            }
        })
    }

    /// Orders changes by row key (info-hash, family, address, port),
    /// keeping the order of changes to one row (a stable sort).
    pub fn sort_by_row(v: &mut [PeerChange]) {
        v.sort_by_key(PeerChange::key);
    }

    /// The row's key (for sorting and compaction).
    pub(super) fn key(&self) -> (InfoHash, bool, ([u8; 16], [u8; 2])) {
        (self.info_hash, self.v6, self.addr)
    }
}

/// Rows for the SQLite writer, to be applied in order (a later change of a
/// row overrides an earlier one, so the log needs no deduplication under
/// the shard lock: draining it is a swap).
#[derive(Debug, Default)]
pub struct Batch {
    /// Peer rows to upsert or delete, in order.
    pub peers: Vec<PeerChange>,
    /// Completed counts to upsert, in order.
    pub torrents: Vec<(InfoHash, u32)>,
    /// New connection-id secrets to keep (after a rotation).
    pub secrets: Option<crate::tracker::db::Secrets>,
}

impl Batch {
    /// True if there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty() && self.torrents.is_empty() && self.secrets.is_none()
    }

    /// Orders the rows by key, keeping the order of changes to one row (a
    /// stable sort): SQLite then walks its B-trees in order, which is
    /// many times faster than random inserts. Done by the writer thread,
    /// off the hot path.
    pub fn sort(&mut self) {
        self.peers.sort_by_key(PeerChange::key);
        self.torrents.sort_by_key(|t| t.0);
    }

    /// Rows in the batch (the secrets count as none).
    pub fn rows(&self) -> usize {
        self.peers.len() + self.torrents.len()
    }
}

/// Change-log length (entries, per shard) at which the log is compacted to
/// one entry per row (the latest), when the writer falls behind: the log
/// then stays within about twice the rows changed, as a set of dirty rows
/// would. The next compaction waits until the log doubles again.
pub const COMPACT_LOG_AT: usize = 1 << 20;

/// Keeps the latest entry of each key, in key order (a stable sort, then
/// the last of each run).
pub(super) fn compact<T: Copy, K: Ord>(log: &mut Vec<T>, key: impl Fn(&T) -> K) {
    log.sort_by_key(|a| key(a));
    log.dedup_by(|later, kept| {
        let same = key(later) == key(kept);
        if same {
            *kept = *later;
        }
        same
    });
}

/// Logs a peer row's new state; a peer changed twice in a row is logged
/// once (the later state).
pub(super) fn log(
    dirty: &mut Vec<PeerChange>,
    info_hash: InfoHash,
    addr: SocketAddr,
    peer: Option<Peer>,
) {
    let c = PeerChange::new(info_hash, addr, peer);
    match dirty.last_mut() {
        Some(last) if last.key() == c.key() => *last = c,
        _ => dirty.push(c),
    }
}

impl Swarms {
    /// Appends a copy of every torrent with a completed count and of every
    /// peer (for a checkpoint: compact, no I/O, so the shard's lock is held
    /// only for the copy).
    pub fn copy_out(&self, torrents: &mut Vec<(InfoHash, u32)>, peers: &mut Vec<PeerChange>) {
        peers.reserve(self.peers);
        for t in &self.slab {
            if t.completed > 0 {
                torrents.push((t.info_hash, t.completed));
            }
            for p in t.peers() {
                peers.push(PeerChange::new(t.info_hash, p.addr, Some(p)));
            }
        }
    }

    /// Like [`Swarms::copy_out`] for the torrents at slab indices below
    /// `end`, from `end - 1` down, stopping once `max_peers` peers are
    /// copied (always at least one torrent, so a part moves on); returns
    /// the lowest index copied (`0`: the shard is done). See
    /// [`db::Parts`](crate::tracker::db::Parts) for why downwards.
    pub fn copy_out_down(
        &self,
        end: usize,
        max_peers: usize,
        torrents: &mut Vec<(InfoHash, u32)>,
        peers: &mut Vec<PeerChange>,
    ) -> usize {
        let mut i = end.min(self.slab.len());
        let mut copied = 0;
        while let Some(t) = i.checked_sub(1).and_then(|j| self.slab.get(j)) {
            if copied > 0 && copied + t.peers.len() > max_peers {
                break;
            }
            i -= 1;
            if t.completed > 0 {
                torrents.push((t.info_hash, t.completed));
            }
            for p in t.peers() {
                peers.push(PeerChange::new(t.info_hash, p.addr, Some(p)));
            }
            copied += t.peers.len().max(1);
        }
        i
    }

    /// Drains the change log into rows to write, in order (a swap: no
    /// work under the lock).
    pub fn take_batch(&mut self) -> Batch {
        self.compact_at = COMPACT_LOG_AT;
        Batch {
            peers: std::mem::take(&mut self.dirty_peers),
            torrents: std::mem::take(&mut self.dirty_torrents),
            secrets: None,
        }
    }

    /// Number of changes waiting for the writer (a row changed twice, not
    /// in a row, counts twice).
    pub fn dirty_count(&self) -> usize {
        self.dirty_peers.len() + self.dirty_torrents.len()
    }
}
