//! Restoring swarms at start (checkpoint rows and journal replay): these
//! [`Swarms`] methods respect the limits but log nothing for the writer.

use std::net::SocketAddr;

use ourtorrent_core::id::InfoHash;

use super::peers::{coarse, Key, Peer};
use super::Swarms;

impl Swarms {
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
        let Some(t) = self.find(&ih).and_then(|i| self.slab.get_mut(i)) else {
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
}
