//! The peers of an announce reply: [`Torrent::sample`] and its iterator
//! [`Sample`], at most `max` peers other than the asker, in one walk of the
//! compact slices (the hot path of every announce).

use std::net::SocketAddr;

use super::peers::{Key, Peer4, Peer6, PeerSet};
use super::Torrent;

impl Torrent {
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
