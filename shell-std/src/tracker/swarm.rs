//! The tracker's swarms in memory: peers per torrent keyed by
//! (info-hash, ip, port), seeders/leechers, completed counts, expiry, and
//! the change log the SQLite writer drains.
//!
//! # Layout (lean: a peer is a few bytes)
//! - Torrents live in one slab (`Vec<Torrent>`, [`TORRENT_ENTRY_BYTES`]
//!   each) found through one `HashMap<InfoHash, u32>`; the slab is also the
//!   ring that expiry walks.
//! - A peer is stored compact: an IPv4 peer in [`PEER4_BYTES`] bytes (address,
//!   port, and a coarse last-seen time in whole seconds whose top bit is the
//!   seeder flag), an IPv6 peer in [`PEER6_BYTES`].
//! - A torrent with at most [`INLINE_PEERS`] peers, all IPv4 (most torrents
//!   of a public tracker), keeps them inline in its slab entry: no
//!   allocation at all. A larger swarm has one boxed list (IPv4 and IPv6
//!   vectors), searched linearly up to [`LINEAR_MAX`] peers of a family and
//!   through an address index beyond (about 16 bytes more per peer).
//!   Measured: ~51 B of RSS per peer at 1M torrents / 2M peers
//!   (`cargo bench -p shell-std --bench swarm_memory`).
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

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

/// IPv4 peers kept inline in a torrent's slab entry (no allocation).
pub const INLINE_PEERS: usize = 2;
/// Peers of one family searched linearly; past it, a list gets an index.
pub const LINEAR_MAX: usize = 32;

/// Coarse times count seconds from here (2023-11-14T22:13:20Z), so 31
/// bits last until 2091 and the top bit holds the seeder flag.
pub const TIME_BASE_SECS: u64 = 1_700_000_000;
const SEEDER_BIT: u32 = 1 << 31;
const SECS_MASK: u32 = SEEDER_BIT - 1;

/// Bytes of one stored IPv4 peer.
pub const PEER4_BYTES: usize = std::mem::size_of::<Compact<4>>();
/// Bytes of one stored IPv6 peer.
pub const PEER6_BYTES: usize = std::mem::size_of::<Compact<16>>();
/// Bytes of one torrent's slab entry (with up to [`INLINE_PEERS`] peers).
pub const TORRENT_ENTRY_BYTES: usize = std::mem::size_of::<Torrent>();

// The module docs and the README quote these sizes.
const _: () = assert!(PEER4_BYTES == 10);
const _: () = assert!(PEER6_BYTES == 22);
const _: () = assert!(TORRENT_ENTRY_BYTES <= 48);

/// Coarse seconds (since [`TIME_BASE_SECS`]) of `ms` since the Unix epoch.
fn coarse(ms: u64) -> u32 {
    let s = (ms / 1000).saturating_sub(TIME_BASE_SECS);
    u32::try_from(s).unwrap_or(SECS_MASK).min(SECS_MASK)
}

/// Milliseconds since the Unix epoch of coarse seconds `s`.
fn ms_of(s: u32) -> u64 {
    (u64::from(s & SECS_MASK) + TIME_BASE_SECS) * 1000
}

/// One stored peer, compact: `N` address bytes (4 or 16), the port, and
/// the coarse last-seen time with the seeder flag (all big-endian bytes,
/// so the struct has no padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Compact<const N: usize> {
    ip: [u8; N],
    port: [u8; 2],
    meta: [u8; 4],
}

impl<const N: usize> Compact<N> {
    fn new(ip: [u8; N], port: u16, seen: u32, seeder: bool) -> Self {
        let mut c = Compact {
            ip,
            port: port.to_be_bytes(),
            meta: [0; 4],
        };
        c.set(seen, seeder);
        c
    }

    fn seen(&self) -> u32 {
        u32::from_be_bytes(self.meta) & SECS_MASK
    }

    fn seeder(&self) -> bool {
        u32::from_be_bytes(self.meta) & SEEDER_BIT != 0
    }

    fn set(&mut self, seen: u32, seeder: bool) {
        let flag = if seeder { SEEDER_BIT } else { 0 };
        self.meta = ((seen & SECS_MASK) | flag).to_be_bytes();
    }

    fn port(&self) -> u16 {
        u16::from_be_bytes(self.port)
    }

    fn is(&self, ip: &[u8; N], port: u16) -> bool {
        self.ip == *ip && self.port == port.to_be_bytes()
    }
}

type Peer4 = Compact<4>;
type Peer6 = Compact<16>;

impl Peer4 {
    fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(self.ip)), self.port())
    }

    fn key(&self) -> u64 {
        (u64::from(u32::from_be_bytes(self.ip)) << 16) | u64::from(self.port())
    }
}

impl Peer6 {
    fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::from(self.ip)), self.port())
    }
}

/// A peer address split by family (a v4-mapped IPv6 address stays IPv6,
/// as the socket that received it reported it).
#[derive(Clone, Copy)]
enum Key {
    V4([u8; 4], u16),
    V6([u8; 16], u16),
}

impl Key {
    fn of(a: &SocketAddr) -> Key {
        match a.ip() {
            IpAddr::V4(ip) => Key::V4(ip.octets(), a.port()),
            IpAddr::V6(ip) => Key::V6(ip.octets(), a.port()),
        }
    }
}

fn key4(ip: &[u8; 4], port: u16) -> u64 {
    (u64::from(u32::from_be_bytes(*ip)) << 16) | u64::from(port)
}

/// A swarm too big (or too mixed) to be inline.
#[derive(Debug, Default)]
struct List {
    v4: Vec<Peer4>,
    v6: Vec<Peer6>,
    /// Address → index into `v4`, once `v4` passed [`LINEAR_MAX`].
    index4: Option<HashMap<u64, u32>>,
    /// Address → index into `v6`, once `v6` passed [`LINEAR_MAX`].
    index6: Option<HashMap<([u8; 16], u16), u32>>,
    seeders: u32,
}

/// A torrent's peers.
#[derive(Debug)]
enum PeerSet {
    /// Up to [`INLINE_PEERS`] IPv4 peers, the first `n` in use.
    Inline {
        n: u8,
        p: [Peer4; INLINE_PEERS],
    },
    List(Box<List>),
}

const EMPTY4: Peer4 = Compact {
    ip: [0; 4],
    port: [0; 2],
    meta: [0; 4],
};

impl Default for PeerSet {
    fn default() -> Self {
        PeerSet::Inline {
            n: 0,
            p: [EMPTY4; INLINE_PEERS],
        }
    }
}

/// A peer as the rest of the tracker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Where other peers connect to it (source ip, announced port).
    pub addr: SocketAddr,
    /// Last announce, milliseconds since the Unix epoch (whole seconds).
    pub last_seen: u64,
    /// `left == 0`.
    pub seeder: bool,
}

fn peer4(p: &Peer4) -> Peer {
    Peer {
        addr: p.addr(),
        last_seen: ms_of(p.seen()),
        seeder: p.seeder(),
    }
}

fn peer6(p: &Peer6) -> Peer {
    Peer {
        addr: p.addr(),
        last_seen: ms_of(p.seen()),
        seeder: p.seeder(),
    }
}

impl PeerSet {
    fn len(&self) -> usize {
        match self {
            PeerSet::Inline { n, .. } => usize::from(*n),
            PeerSet::List(l) => l.v4.len() + l.v6.len(),
        }
    }

    fn inline(&self) -> &[Peer4] {
        match self {
            PeerSet::Inline { n, p } => p.get(..usize::from(*n)).unwrap_or(&[]),
            PeerSet::List(_) => &[],
        }
    }

    fn seeders(&self) -> u32 {
        match self {
            PeerSet::Inline { .. } => self.inline().iter().filter(|p| p.seeder()).count() as u32,
            PeerSet::List(l) => l.seeders,
        }
    }

    /// The peer at position `i` (IPv4 first, then IPv6).
    fn at(&self, i: usize) -> Option<Peer> {
        match self {
            PeerSet::Inline { .. } => self.inline().get(i).map(peer4),
            PeerSet::List(l) => match l.v4.get(i) {
                Some(p) => Some(peer4(p)),
                None => l.v6.get(i - l.v4.len()).map(peer6),
            },
        }
    }

    /// Position of the peer at `k`.
    fn find(&self, k: Key) -> Option<usize> {
        match (self, k) {
            (PeerSet::Inline { .. }, Key::V4(ip, port)) => {
                self.inline().iter().position(|p| p.is(&ip, port))
            }
            (PeerSet::Inline { .. }, Key::V6(..)) => None,
            (PeerSet::List(l), Key::V4(ip, port)) => match &l.index4 {
                Some(ix) => ix.get(&key4(&ip, port)).map(|&i| i as usize),
                None => l.v4.iter().position(|p| p.is(&ip, port)),
            },
            (PeerSet::List(l), Key::V6(ip, port)) => match &l.index6 {
                Some(ix) => ix.get(&(ip, port)).map(|&i| i as usize + l.v4.len()),
                None => {
                    l.v6.iter()
                        .position(|p| p.is(&ip, port))
                        .map(|i| i + l.v4.len())
                }
            },
        }
    }

    /// Sets the last-seen time and seeder flag of the peer at `i`; returns
    /// its previous (seen, seeder).
    fn touch(&mut self, i: usize, seen: u32, seeder: bool) -> Option<(u32, bool)> {
        let (old, seeders) = match self {
            PeerSet::Inline { n, p } => {
                let q = p.get_mut(..usize::from(*n))?.get_mut(i)?;
                let old = (q.seen(), q.seeder());
                q.set(seen, seeder);
                (old, None)
            }
            PeerSet::List(l) => {
                let nv4 = l.v4.len();
                let old = match l.v4.get_mut(i) {
                    Some(q) => {
                        let old = (q.seen(), q.seeder());
                        q.set(seen, seeder);
                        old
                    }
                    None => {
                        let q = l.v6.get_mut(i - nv4)?;
                        let old = (q.seen(), q.seeder());
                        q.set(seen, seeder);
                        old
                    }
                };
                (old, Some(&mut l.seeders))
            }
        };
        if let Some(s) = seeders {
            if old.1 != seeder {
                if seeder {
                    *s += 1;
                } else {
                    *s = s.saturating_sub(1);
                }
            }
        }
        Some(old)
    }

    /// Adds a peer known not to be present.
    fn insert(&mut self, k: Key, seen: u32, seeder: bool) {
        if let (PeerSet::Inline { n, p }, Key::V4(ip, port)) = (&mut *self, k) {
            if let Some(slot) = p.get_mut(usize::from(*n)) {
                *slot = Peer4::new(ip, port, seen, seeder);
                *n += 1;
                return;
            }
        }
        if let PeerSet::Inline { .. } = self {
            let v4 = self.inline().to_vec();
            let seeders = self.seeders();
            *self = PeerSet::List(Box::new(List {
                v4,
                seeders,
                ..List::default()
            }));
        }
        let PeerSet::List(l) = self else { return };
        l.seeders += u32::from(seeder);
        match k {
            Key::V4(ip, port) => {
                let p = Peer4::new(ip, port, seen, seeder);
                l.v4.push(p);
                if let Some(ix) = &mut l.index4 {
                    ix.insert(p.key(), (l.v4.len() - 1) as u32);
                } else if l.v4.len() > LINEAR_MAX {
                    let ix = l.v4.iter().enumerate();
                    l.index4 = Some(ix.map(|(i, p)| (p.key(), i as u32)).collect());
                }
            }
            Key::V6(ip, port) => {
                l.v6.push(Peer6::new(ip, port, seen, seeder));
                if let Some(ix) = &mut l.index6 {
                    ix.insert((ip, port), (l.v6.len() - 1) as u32);
                } else if l.v6.len() > LINEAR_MAX {
                    let ix = l.v6.iter().enumerate();
                    l.index6 = Some(ix.map(|(i, p)| ((p.ip, p.port()), i as u32)).collect());
                }
            }
        }
    }

    /// Removes the peer at `i` (the last peer of its family takes its
    /// place); returns it.
    fn remove_at(&mut self, i: usize) -> Option<Peer> {
        let gone = match self {
            PeerSet::Inline { n, p } => {
                let len = usize::from(*n);
                if i >= len {
                    return None;
                }
                let gone = peer4(p.get(i)?);
                p.get_mut(..len)?.swap(i, len - 1);
                *n -= 1;
                gone
            }
            PeerSet::List(l) => {
                let nv4 = l.v4.len();
                let gone = if i < nv4 {
                    let g = l.v4.swap_remove(i);
                    if let Some(ix) = &mut l.index4 {
                        ix.remove(&g.key());
                        if let Some(m) = l.v4.get(i) {
                            ix.insert(m.key(), i as u32);
                        }
                        if l.v4.len() <= LINEAR_MAX / 2 {
                            l.index4 = None;
                        }
                    }
                    peer4(&g)
                } else {
                    let j = i - nv4;
                    if j >= l.v6.len() {
                        return None;
                    }
                    let g = l.v6.swap_remove(j);
                    if let Some(ix) = &mut l.index6 {
                        ix.remove(&(g.ip, g.port()));
                        if let Some(m) = l.v6.get(j) {
                            ix.insert((m.ip, m.port()), j as u32);
                        }
                        if l.v6.len() <= LINEAR_MAX / 2 {
                            l.index6 = None;
                        }
                    }
                    peer6(&g)
                };
                if gone.seeder {
                    l.seeders = l.seeders.saturating_sub(1);
                }
                gone
            }
        };
        // Back inline when it fits again (IPv4 order is kept).
        if let PeerSet::List(l) = self {
            if l.v6.is_empty() && l.v4.len() <= INLINE_PEERS {
                let mut p = [EMPTY4; INLINE_PEERS];
                for (slot, q) in p.iter_mut().zip(&l.v4) {
                    *slot = *q;
                }
                *self = PeerSet::Inline {
                    n: l.v4.len() as u8,
                    p,
                };
            }
        }
        Some(gone)
    }
}

/// One torrent's swarm (an entry of the slab).
#[derive(Debug)]
pub struct Torrent {
    info_hash: InfoHash,
    /// Announces with `event=completed` ever seen.
    pub completed: u32,
    peers: PeerSet,
}

impl Torrent {
    fn new(info_hash: InfoHash) -> Self {
        Torrent {
            info_hash,
            completed: 0,
            peers: PeerSet::default(),
        }
    }

    /// Peers with the whole torrent.
    pub fn seeders(&self) -> u32 {
        self.peers.seeders()
    }

    /// Peers still downloading.
    pub fn leechers(&self) -> u32 {
        (self.peers.len() as u32).saturating_sub(self.seeders())
    }

    /// Number of stored peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// True if no peer is stored.
    pub fn is_empty(&self) -> bool {
        self.peers.len() == 0
    }

    /// The stored peers (IPv4 first, then IPv6).
    pub fn peers(&self) -> impl Iterator<Item = Peer> + '_ {
        (0..self.peers.len()).filter_map(|i| self.peers.at(i))
    }

    /// The peer stored at `addr`.
    pub fn get(&self, addr: &SocketAddr) -> Option<Peer> {
        self.peers
            .find(Key::of(addr))
            .and_then(|i| self.peers.at(i))
    }

    /// Up to `max` peers other than `exclude`, starting at `start` (mod the
    /// peer count) and wrapping: a cheap, fair-enough sample. The order is
    /// that of [`Torrent::peers`] rotated by `start`; the hot path of every
    /// announce, so it walks the compact slices directly ([`Sample`]).
    pub fn sample(&self, exclude: SocketAddr, start: usize, max: usize) -> Sample<'_> {
        let (v4, v6): (&[Peer4], &[Peer6]) = match &self.peers {
            PeerSet::Inline { .. } => (self.peers.inline(), &[]),
            PeerSet::List(l) => (&l.v4, &l.v6),
        };
        let n = v4.len() + v6.len();
        Sample {
            v4,
            v6,
            next: if n == 0 { 0 } else { start % n },
            steps: n,
            left: max,
            exclude: Key::of(&exclude),
        }
    }
}

/// The iterator of [`Torrent::sample`]: one step per stored peer at most,
/// round the ring [IPv4 peers | IPv6 peers] (no per-peer division, and the
/// asker is compared in compact form).
pub struct Sample<'a> {
    v4: &'a [Peer4],
    v6: &'a [Peer6],
    /// Ring position of the next peer looked at.
    next: usize,
    /// Peers not yet looked at.
    steps: usize,
    /// Peers still to return.
    left: usize,
    exclude: Key,
}

impl Iterator for Sample<'_> {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        while self.steps > 0 && self.left > 0 {
            self.steps -= 1;
            let i = self.next;
            self.next = i + 1;
            let addr = match self.v4.get(i) {
                Some(p) => match self.exclude {
                    Key::V4(ip, port) if p.is(&ip, port) => None,
                    _ => Some(p.addr()),
                },
                None => match self.v6.get(i - self.v4.len()) {
                    Some(p) => match self.exclude {
                        Key::V6(ip, port) if p.is(&ip, port) => None,
                        _ => Some(p.addr()),
                    },
                    None => {
                        // Past the end: wrap to the ring's start.
                        self.next = 0;
                        self.steps += 1;
                        continue;
                    }
                },
            };
            if addr.is_some() {
                self.left -= 1;
                return addr;
            }
        }
        None
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

/// All swarms (of one shard).
#[derive(Debug)]
pub struct Swarms {
    /// Info-hash → index into `slab`.
    map: HashMap<InfoHash, u32>,
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
    fn key(&self) -> (InfoHash, bool, ([u8; 16], [u8; 2])) {
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
    pub secrets: Option<super::db::Secrets>,
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
fn compact<T: Copy, K: Ord>(log: &mut Vec<T>, key: impl Fn(&T) -> K) {
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
fn log(dirty: &mut Vec<PeerChange>, info_hash: InfoHash, addr: SocketAddr, peer: Option<Peer>) {
    let c = PeerChange::new(info_hash, addr, peer);
    match dirty.last_mut() {
        Some(last) if last.key() == c.key() => *last = c,
        _ => dirty.push(c),
    }
}

impl Swarms {
    /// Empty swarms; `refresh_ms` is the last-seen period (see the module
    /// docs): a known peer's row is rewritten when nothing but its
    /// last-seen time changed at most once per period.
    pub fn new(limits: Limits, refresh_ms: u64) -> Self {
        Swarms {
            map: HashMap::new(),
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
        self.map.get(ih).and_then(|&i| self.slab.get(i as usize))
    }

    /// The torrent `ih` and its slab index, created (at the end of the
    /// slab) if new and under the torrent limit.
    fn entry(&mut self, ih: InfoHash) -> Option<(usize, &mut Torrent)> {
        let i = match self.map.get(&ih) {
            Some(&i) => i as usize,
            None => {
                if self.slab.len() >= self.limits.max_torrents {
                    return None;
                }
                let i = self.slab.len();
                self.map.insert(ih, u32::try_from(i).ok()?);
                self.slab.push(Torrent::new(ih));
                i
            }
        };
        self.slab.get_mut(i).map(|t| (i, t))
    }

    /// Seeders, leechers and completed count of a torrent (zeros if unknown).
    pub fn counts(&self, ih: &InfoHash) -> Counts {
        self.get(ih).map_or(
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
            let i = self.map.get(&a.info_hash).map(|&i| i as usize);
            if let Some(t) = i.and_then(|i| self.slab.get_mut(i)) {
                if let Some(gone) = t.peers.find(key).and_then(|j| t.peers.remove_at(j)) {
                    self.peers -= 1;
                    self.seeders -= usize::from(gone.seeder);
                    if self.persist {
                        log(&mut self.dirty_peers, a.info_hash, a.addr, None);
                    }
                }
            }
            let counts = match i.and_then(|i| self.slab.get(i)) {
                Some(t) => Counts {
                    seeders: t.seeders(),
                    leechers: t.leechers(),
                    completed: t.completed,
                },
                None => Counts {
                    seeders: 0,
                    leechers: 0,
                    completed: 0,
                },
            };
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
        let counts = Counts {
            seeders: t.seeders(),
            leechers: t.leechers(),
            completed: t.completed,
        };
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

    /// Removes peers last seen before `cutoff` (ms since the Unix epoch)
    /// and torrents left with no peer and no completed count, looking at
    /// no more than about `budget` peers (at least one torrent), from where
    /// the previous step stopped.
    pub fn expire_step(&mut self, cutoff: u64, budget: usize) -> ExpiryStep {
        let mut step = ExpiryStep::default();
        let persist = self.persist;
        let budget = budget.max(1);
        // Seen times are whole seconds: a peer seen in the cutoff's second
        // or later stays.
        let cutoff = coarse(cutoff);
        // Each pass checks at least one peer or moves the cursor on.
        while step.checked < budget {
            let (ti, pi) = self.cursor;
            let Some(t) = self.slab.get_mut(ti) else {
                self.cursor = (0, 0);
                step.wrapped = true;
                break;
            };
            let ih = t.info_hash;
            if t.peers.len() == 0 {
                step.checked += 1;
            }
            let mut i = pi;
            while let Some(p) = t.peers.at(i) {
                if step.checked >= budget {
                    break;
                }
                step.checked += 1;
                if coarse(p.last_seen) < cutoff {
                    // swap_remove: the peer moved into `i` is checked next.
                    t.peers.remove_at(i);
                    if persist {
                        log(&mut self.dirty_peers, ih, p.addr, None);
                    }
                    self.peers -= 1;
                    self.seeders -= usize::from(p.seeder);
                    step.removed += 1;
                } else {
                    i += 1;
                }
            }
            if i < t.peers.len() {
                self.cursor = (ti, i); // budget spent inside this torrent
                break;
            }
            if t.peers.len() == 0 && t.completed == 0 {
                // Drop the torrent; the slab's last entry takes its place
                // and is visited next.
                self.map.remove(&ih);
                self.slab.swap_remove(ti);
                if let Some(moved) = self.slab.get(ti) {
                    self.map.insert(moved.info_hash, ti as u32);
                }
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
        let Some((_, t)) = self.entry(ih) else {
            return false;
        };
        let old = t.completed;
        t.completed = completed;
        self.completed_total = self.completed_total - u64::from(old) + u64::from(completed);
        true
    }

    /// Restores a peer (at load); not logged for the writer.
    pub fn load_peer(&mut self, ih: InfoHash, peer: Peer) -> bool {
        let max_peers = self.limits.max_peers_per_torrent;
        let Some((_, t)) = self.entry(ih) else {
            return false;
        };
        let key = Key::of(&peer.addr);
        if t.peers.find(key).is_some() || t.peers.len() >= max_peers {
            return false;
        }
        t.peers.insert(key, coarse(peer.last_seen), peer.seeder);
        self.peers += 1;
        self.seeders += usize::from(peer.seeder);
        true
    }

    /// Sets a peer's state as a journal record says (at load): added, or
    /// updated in place if present; not logged for the writer. False if
    /// the torrent or its swarm is full.
    pub fn replay_peer(&mut self, ih: InfoHash, peer: Peer) -> bool {
        let max_peers = self.limits.max_peers_per_torrent;
        let Some((_, t)) = self.entry(ih) else {
            return false;
        };
        let key = Key::of(&peer.addr);
        match t.peers.find(key) {
            Some(j) => {
                if let Some((_, was)) = t.peers.touch(j, coarse(peer.last_seen), peer.seeder) {
                    self.seeders = self
                        .seeders
                        .saturating_add_signed(isize::from(peer.seeder) - isize::from(was));
                }
                true
            }
            None if t.peers.len() < max_peers => {
                t.peers.insert(key, coarse(peer.last_seen), peer.seeder);
                self.peers += 1;
                self.seeders += usize::from(peer.seeder);
                true
            }
            None => false,
        }
    }

    /// Removes a peer as a journal record says (at load); not logged. True
    /// if it was there.
    pub fn replay_remove(&mut self, ih: InfoHash, addr: SocketAddr) -> bool {
        let Some(t) = self
            .map
            .get(&ih)
            .and_then(|&i| self.slab.get_mut(i as usize))
        else {
            return false;
        };
        match t
            .peers
            .find(Key::of(&addr))
            .and_then(|j| t.peers.remove_at(j))
        {
            Some(gone) => {
                self.peers -= 1;
                self.seeders -= usize::from(gone.seeder);
                true
            }
            None => false,
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn ih(b: u8) -> InfoHash {
        InfoHash([b; 20])
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// `s` seconds into a test clock, in ms since the Unix epoch.
    fn at(s: u64) -> u64 {
        (TIME_BASE_SECS + 1_200 + s) * 1000
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

    /// The reference sample: [`Torrent::peers`] rotated by `start`, without
    /// `exclude`, at most `max`.
    fn sample_by_definition(
        t: &Torrent,
        exclude: SocketAddr,
        start: usize,
        max: usize,
    ) -> Vec<SocketAddr> {
        let all: Vec<SocketAddr> = t.peers().map(|p| p.addr).collect();
        let n = all.len();
        let start = if n == 0 { 0 } else { start % n };
        (0..n)
            .filter_map(|k| all.get((start + k) % n).copied())
            .filter(|a| *a != exclude)
            .take(max)
            .collect()
    }

    #[test]
    fn sample_is_the_rotated_peer_list_without_the_asker() {
        let v6 = |port: u16| SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], port));
        let limits = Limits {
            max_torrents: 1,
            max_peers_per_torrent: 100,
        };
        let mut s = Swarms::new(limits, 60_000).without_persistence();
        let mut addrs = Vec::new();
        // Inline (1-2 IPv4), then a list, then a list with IPv6 and an
        // index (past LINEAR_MAX IPv4 peers).
        for i in 0..(LINEAR_MAX as u16 + 8) {
            let a = if i % 5 == 3 { v6(i + 1) } else { addr(i + 1) };
            let mut x = ann(1, 0, AnnounceEvent::None, i % 2 == 0);
            x.addr = a;
            s.announce(&x, at(0)).unwrap();
            addrs.push(a);
            let t = s.get(&ih(1)).unwrap();
            let others = [addrs[0], a, addr(9999), v6(9999)];
            for exclude in others {
                for start in [0, 1, 2, i as usize, i as usize + 1, 1000, usize::MAX] {
                    for max in [0, 1, 3, 50] {
                        let got: Vec<SocketAddr> = t.sample(exclude, start, max).collect();
                        let want = sample_by_definition(t, exclude, start, max);
                        assert_eq!(got, want, "{} peers, start {start}, max {max}", i + 1);
                    }
                }
            }
        }
        // No peer: nothing, whatever the start.
        let mut e = Swarms::new(limits, 60_000).without_persistence();
        e.load_torrent(ih(2), 1);
        let t = e.get(&ih(2)).unwrap();
        assert_eq!(t.sample(addr(1), 7, 5).count(), 0);
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
        assert_eq!(s.get(&ih(1)).unwrap().len(), 3);
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
        s.announce(&ann(1, 1, AnnounceEvent::None, true), at(0))
            .unwrap();
        s.announce(&ann(1, 2, AnnounceEvent::None, false), at(5))
            .unwrap();
        let b = s.take_batch();
        assert_eq!(b.peers.len(), 2);
        assert!(b.peers.iter().all(|c| c.peer().is_some()));
        // A refresh within the same 60 s period is not rewritten; one in
        // the next period is.
        s.announce(&ann(1, 2, AnnounceEvent::None, false), at(6))
            .unwrap();
        assert_eq!(s.dirty_count(), 0);
        s.announce(&ann(1, 2, AnnounceEvent::None, false), at(59))
            .unwrap();
        assert_eq!(s.dirty_count(), 0);
        s.announce(&ann(1, 2, AnnounceEvent::None, false), at(60))
            .unwrap();
        assert_eq!(s.dirty_count(), 1);
        // A seeder flip is written at once.
        s.announce(&ann(1, 2, AnnounceEvent::None, true), at(61))
            .unwrap();
        let b = s.take_batch();
        assert_eq!(b.peers.len(), 1, "changed twice in a row, logged once");
        let p = b.peers[0].peer().unwrap();
        assert!(p.seeder);
        assert_eq!(p.last_seen, at(61));
        s.announce(&ann(1, 2, AnnounceEvent::None, false), at(61))
            .unwrap();
        s.take_batch();
        assert_eq!(s.expire(at(1)), 1);
        assert_eq!((s.peer_count(), s.seeder_count()), (1, 0));
        let b = s.take_batch();
        assert_eq!(b.peers, vec![PeerChange::new(ih(1), addr(1), None)]);
        assert_eq!(s.expire(at(100)), 1);
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
                let when = if port % 2 == 0 { at(0) } else { at(10) };
                s.announce(&ann(t, port, AnnounceEvent::None, port == 1), when)
                    .unwrap();
            }
        }
        assert_eq!(s.peer_count(), 100);
        let mut removed = 0;
        let mut steps = 0;
        loop {
            let st = s.expire_step(at(5), 7);
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
                s.announce(&ann(t, port, AnnounceEvent::Stopped, false), at(20))
                    .unwrap();
            }
        }
        s.announce(&ann(3, 1, AnnounceEvent::Completed, true), at(20))
            .unwrap();
        assert_eq!(s.expire(at(30)), 1);
        assert_eq!(s.torrent_count(), 1, "only the completed torrent stays");
        assert_eq!(s.slab.len(), 1);
        // Budget 0 still makes progress (one peer or torrent a step).
        s.announce(&ann(4, 1, AnnounceEvent::None, false), at(40))
            .unwrap();
        let mut guard = 0;
        while !s.expire_step(at(50), 0).wrapped {
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

    #[test]
    fn coarse_time_edges() {
        assert_eq!(coarse(0), 0);
        assert_eq!(coarse(TIME_BASE_SECS * 1000 + 1999), 1);
        assert_eq!(ms_of(coarse(at(7))), at(7));
        assert_eq!(
            coarse(u64::MAX),
            SECS_MASK,
            "saturates below the seeder bit"
        );
        let mut p = Peer4::new([1, 2, 3, 4], 6881, SECS_MASK, true);
        assert_eq!((p.seen(), p.seeder(), p.port()), (SECS_MASK, true, 6881));
        p.set(5, false);
        assert_eq!((p.seen(), p.seeder()), (5, false));
    }

    #[test]
    fn small_swarms_stay_inline_and_come_back() {
        let mut s = swarms();
        for port in 1..=2 {
            s.announce(&ann(1, port, AnnounceEvent::None, false), at(0))
                .unwrap();
        }
        let inline = |s: &Swarms| matches!(s.get(&ih(1)).unwrap().peers, PeerSet::Inline { .. });
        assert!(inline(&s), "{INLINE_PEERS} IPv4 peers inline");
        s.announce(&ann(1, 3, AnnounceEvent::None, true), at(0))
            .unwrap();
        assert!(!inline(&s), "one more: a list");
        s.announce(&ann(1, 1, AnnounceEvent::Stopped, false), at(0))
            .unwrap();
        assert!(inline(&s), "back inline");
        assert_eq!(s.counts(&ih(1)).seeders, 1);
        // An IPv6 peer is never inline.
        let mut a = ann(2, 1, AnnounceEvent::None, false);
        a.addr = "[2001:db8::1]:7000".parse().unwrap();
        s.announce(&a, at(0)).unwrap();
        assert!(!matches!(
            s.get(&ih(2)).unwrap().peers,
            PeerSet::Inline { .. }
        ));
        assert_eq!(s.get(&ih(2)).unwrap().get(&a.addr).unwrap().addr, a.addr);
    }

    /// Random joins, re-announces and leaves on one torrent (IPv4 and IPv6,
    /// through the inline, linear and indexed forms) agree with a plain
    /// map after every step.
    #[test]
    fn peer_set_matches_a_model() {
        use std::collections::BTreeMap;
        let mut s = Swarms::new(
            Limits {
                max_torrents: 4,
                max_peers_per_torrent: 1000,
            },
            60_000,
        );
        let mut model: BTreeMap<SocketAddr, bool> = BTreeMap::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Grow to ~150 peers per family, then shrink back to a few.
            let span = if (step / 5_000) % 2 == 0 { 150 } else { 3 };
            let n = (x >> 8) % span;
            let addr: SocketAddr = if x & 1 == 0 {
                SocketAddr::from(([10, 0, (n >> 8) as u8, n as u8], 6881))
            } else {
                SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n as u16)),
                    6881,
                )
            };
            let stop = (x >> 40) % 3 == 0 || span == 3 && addr.port() == 6881 && (x >> 44) % 2 == 0;
            let seeder = (x >> 50) & 1 == 1;
            let a = Announce {
                info_hash: ih(9),
                addr,
                event: if stop {
                    AnnounceEvent::Stopped
                } else {
                    AnnounceEvent::None
                },
                seeder,
            };
            s.announce(&a, at(step)).unwrap();
            if stop {
                model.remove(&addr);
            } else {
                model.insert(addr, seeder);
            }
            let t = s.get(&ih(9));
            let got: BTreeMap<SocketAddr, bool> = t
                .into_iter()
                .flat_map(|t| t.peers())
                .map(|p| (p.addr, p.seeder))
                .collect();
            assert_eq!(got, model, "step {step}");
            let seeders = model.values().filter(|v| **v).count();
            assert_eq!((s.peer_count(), s.seeder_count()), (model.len(), seeders));
            if let Some(t) = t {
                assert_eq!(t.seeders() as usize, seeders);
                for a in model.keys() {
                    assert_eq!(t.get(a).map(|p| p.addr), Some(*a));
                }
            }
        }
    }

    /// A log the writer does not drain is compacted to the latest state of
    /// each row once it reaches its bound, and written the same.
    #[test]
    fn an_undrained_log_is_compacted_at_its_bound() {
        let mut s = swarms();
        s.compact_at = 8;
        for i in 0..100u64 {
            let seeder = i % 2 == 1;
            s.announce(
                &ann(1, 1 + (i % 3) as u16, AnnounceEvent::None, seeder),
                at(i * 60),
            )
            .unwrap();
            assert!(s.dirty_count() <= 16, "{} entries", s.dirty_count());
        }
        let b = s.take_batch();
        // Peer 1 last announced at i = 99 (seeder), 2 at 97 (seeder), 3 at
        // 98 (leecher): one entry each, the latest.
        let mut last: Vec<(u16, bool, u64)> = b
            .peers
            .iter()
            .filter_map(|c| c.peer().map(|p| (p.addr.port(), p.seeder, p.last_seen)))
            .collect();
        // The latest entry of each port (the log may hold older ones
        // logged since the last compaction, before the latest).
        last.sort_by_key(|e| (e.0, std::cmp::Reverse(e.2)));
        last.dedup_by_key(|e| e.0);
        assert!(last.contains(&(1, true, at(99 * 60))), "{last:?}");
        assert!(last.contains(&(2, true, at(97 * 60))), "{last:?}");
        assert!(last.contains(&(3, false, at(98 * 60))), "{last:?}");
    }

    #[test]
    fn a_peer_change_round_trips() {
        for a in [
            "10.1.2.3:6881",
            "[2001:db8::7]:51413",
            "[::ffff:10.0.0.1]:1",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let p = Peer {
                addr: a,
                last_seen: at(5),
                seeder: true,
            };
            let c = PeerChange::new(ih(1), a, Some(p));
            assert_eq!((c.addr(), c.peer()), (a, Some(p)));
            assert_eq!(PeerChange::new(ih(1), a, None).peer(), None);
        }
    }
}
