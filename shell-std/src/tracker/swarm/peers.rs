//! A torrent's peers, stored compact: the byte layout of one peer
//! ([`PEER4_BYTES`] / [`PEER6_BYTES`], coarse last-seen time and seeder
//! flag packed in 4 bytes), and [`PeerSet`], inline for up to
//! [`INLINE_PEERS`] IPv4 peers, else a boxed list indexed past
//! [`LINEAR_MAX`] peers of a family. Limits are the caller's ([`super::Swarms`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::Torrent;

/// IPv4 peers kept inline in a torrent's slab entry (no allocation).
pub const INLINE_PEERS: usize = 2;
/// Peers of one family searched linearly; past it, a list gets an index.
pub const LINEAR_MAX: usize = 32;

/// Coarse times count seconds from here (2023-11-14T22:13:20Z), so 31
/// bits last until 2091 and the top bit holds the seeder flag.
pub const TIME_BASE_SECS: u64 = 1_700_000_000;
pub(super) const SEEDER_BIT: u32 = 1 << 31;
pub(super) const SECS_MASK: u32 = SEEDER_BIT - 1;

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
pub(super) fn coarse(ms: u64) -> u32 {
    let s = (ms / 1000).saturating_sub(TIME_BASE_SECS);
    u32::try_from(s).unwrap_or(SECS_MASK).min(SECS_MASK)
}

/// Milliseconds since the Unix epoch of coarse seconds `s`.
pub(super) fn ms_of(s: u32) -> u64 {
    (u64::from(s & SECS_MASK) + TIME_BASE_SECS) * 1000
}

/// One stored peer, compact: `N` address bytes (4 or 16), the port, and
/// the coarse last-seen time with the seeder flag (all big-endian bytes,
/// so the struct has no padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Compact<const N: usize> {
    ip: [u8; N],
    port: [u8; 2],
    meta: [u8; 4],
}

impl<const N: usize> Compact<N> {
    pub(super) fn new(ip: [u8; N], port: u16, seen: u32, seeder: bool) -> Self {
        let mut c = Compact {
            ip,
            port: port.to_be_bytes(),
            meta: [0; 4],
        };
        c.set(seen, seeder);
        c
    }

    pub(super) fn seen(&self) -> u32 {
        u32::from_be_bytes(self.meta) & SECS_MASK
    }

    pub(super) fn seeder(&self) -> bool {
        u32::from_be_bytes(self.meta) & SEEDER_BIT != 0
    }

    pub(super) fn set(&mut self, seen: u32, seeder: bool) {
        let flag = if seeder { SEEDER_BIT } else { 0 };
        self.meta = ((seen & SECS_MASK) | flag).to_be_bytes();
    }

    pub(super) fn port(&self) -> u16 {
        u16::from_be_bytes(self.port)
    }

    pub(super) fn is(&self, ip: &[u8; N], port: u16) -> bool {
        self.ip == *ip && self.port == port.to_be_bytes()
    }
}

pub(super) type Peer4 = Compact<4>;
pub(super) type Peer6 = Compact<16>;

impl Peer4 {
    pub(super) fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(self.ip)), self.port())
    }

    pub(super) fn key(&self) -> u64 {
        (u64::from(u32::from_be_bytes(self.ip)) << 16) | u64::from(self.port())
    }
}

impl Peer6 {
    pub(super) fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::from(self.ip)), self.port())
    }
}

/// A peer address split by family (a v4-mapped IPv6 address stays IPv6,
/// as the socket that received it reported it).
#[derive(Clone, Copy)]
pub(super) enum Key {
    V4([u8; 4], u16),
    V6([u8; 16], u16),
}

impl Key {
    pub(super) fn of(a: &SocketAddr) -> Key {
        match a.ip() {
            IpAddr::V4(ip) => Key::V4(ip.octets(), a.port()),
            IpAddr::V6(ip) => Key::V6(ip.octets(), a.port()),
        }
    }
}

pub(super) fn key4(ip: &[u8; 4], port: u16) -> u64 {
    (u64::from(u32::from_be_bytes(*ip)) << 16) | u64::from(port)
}

/// A swarm too big (or too mixed) to be inline.
#[derive(Debug, Default)]
pub(super) struct List {
    pub(super) v4: Vec<Peer4>,
    pub(super) v6: Vec<Peer6>,
    /// Address → index into `v4`, once `v4` passed [`LINEAR_MAX`].
    index4: Option<HashMap<u64, u32>>,
    /// Address → index into `v6`, once `v6` passed [`LINEAR_MAX`].
    index6: Option<HashMap<([u8; 16], u16), u32>>,
    seeders: u32,
}

/// A torrent's peers.
#[derive(Debug)]
pub(super) enum PeerSet {
    /// Up to [`INLINE_PEERS`] IPv4 peers, the first `n` in use.
    Inline {
        n: u8,
        p: [Peer4; INLINE_PEERS],
    },
    List(Box<List>),
}

pub(super) const EMPTY4: Peer4 = Compact {
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

pub(super) fn peer4(p: &Peer4) -> Peer {
    Peer {
        addr: p.addr(),
        last_seen: ms_of(p.seen()),
        seeder: p.seeder(),
    }
}

pub(super) fn peer6(p: &Peer6) -> Peer {
    Peer {
        addr: p.addr(),
        last_seen: ms_of(p.seen()),
        seeder: p.seeder(),
    }
}

impl PeerSet {
    pub(super) fn len(&self) -> usize {
        match self {
            PeerSet::Inline { n, .. } => usize::from(*n),
            PeerSet::List(l) => l.v4.len() + l.v6.len(),
        }
    }

    pub(super) fn inline(&self) -> &[Peer4] {
        match self {
            PeerSet::Inline { n, p } => p.get(..usize::from(*n)).unwrap_or(&[]),
            PeerSet::List(_) => &[],
        }
    }

    pub(super) fn seeders(&self) -> u32 {
        match self {
            PeerSet::Inline { .. } => self.inline().iter().filter(|p| p.seeder()).count() as u32,
            PeerSet::List(l) => l.seeders,
        }
    }

    /// The peer at position `i` (IPv4 first, then IPv6).
    pub(super) fn at(&self, i: usize) -> Option<Peer> {
        match self {
            PeerSet::Inline { .. } => self.inline().get(i).map(peer4),
            PeerSet::List(l) => match l.v4.get(i) {
                Some(p) => Some(peer4(p)),
                None => l.v6.get(i - l.v4.len()).map(peer6),
            },
        }
    }

    /// Position of the peer at `k`.
    pub(super) fn find(&self, k: Key) -> Option<usize> {
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
    pub(super) fn touch(&mut self, i: usize, seen: u32, seeder: bool) -> Option<(u32, bool)> {
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
    pub(super) fn insert(&mut self, k: Key, seen: u32, seeder: bool) {
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
    pub(super) fn remove_at(&mut self, i: usize) -> Option<Peer> {
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
