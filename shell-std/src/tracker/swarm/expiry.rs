//! Incremental expiry of silent peers ([`Swarms::expire_step`]): a cursor
//! over the slab bounds the peers looked at per step (see the parent
//! module's "Expiry").

use super::log::log;
use super::peers::coarse;
use super::Swarms;

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

impl Swarms {
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
                self.index.remove(self.index.tag(&ih), ti);
                self.slab.swap_remove(ti);
                if let Some(moved) = self.slab.get(ti) {
                    let from = self.slab.len();
                    self.index
                        .repoint(self.index.tag(&moved.info_hash), from, ti);
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
}
