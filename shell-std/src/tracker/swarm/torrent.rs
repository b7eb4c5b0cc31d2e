//! [`Torrent`]: one torrent's swarm, an entry of the slab of
//! [`super::Swarms`] (its info-hash, completed count and peer set).

use std::net::SocketAddr;

use ourtorrent_core::id::InfoHash;

use super::peers::{Key, Peer, PeerSet};
use super::Counts;

/// One torrent's swarm (an entry of the slab).
#[derive(Debug)]
pub struct Torrent {
    pub(super) info_hash: InfoHash,
    /// Announces with `event=completed` ever seen.
    pub completed: u32,
    pub(super) peers: PeerSet,
}

impl Torrent {
    pub(super) fn new(info_hash: InfoHash) -> Self {
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

    /// Seeders, leechers and completed count (the peers counted once).
    pub fn counts(&self) -> Counts {
        let seeders = self.seeders();
        Counts {
            seeders,
            leechers: (self.peers.len() as u32).saturating_sub(seeders),
            completed: self.completed,
        }
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
}
