//! Which pieces have blocks still on their way to disk.
//!
//! Blocks of one piece may come from several peers, and each peer task
//! writes its blocks on its own blocking thread. A piece may be verified
//! (read back and hashed) only once every block of it — from every peer —
//! is on disk, and a piece with a block that failed to write must be
//! fetched again, but only after its other writes have drained (so no
//! stale write lands in the new attempt's count).

use std::collections::HashMap;

#[derive(Default)]
struct Piece {
    /// Blocks queued for writing and not yet written (or failed).
    pending: u32,
    /// The picker reported every block of the piece received.
    complete: bool,
    /// A block of it failed to write.
    failed: bool,
}

/// What to do with a piece after one of its writes finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Other writes of the piece are pending, or blocks are missing.
    Wait,
    /// Every block is on disk: verify it.
    Verify,
    /// A block failed to write and nothing is pending any more: give the
    /// piece up (the picker fetches it again, nobody is blamed).
    Abandon,
}

/// Pending block writes per piece.
#[derive(Default)]
pub struct PendingWrites {
    pieces: HashMap<u32, Piece>,
}

impl PendingWrites {
    /// A block of `index` was queued for writing; `completes` if the picker
    /// said it was the piece's last missing block.
    pub fn queued(&mut self, index: u32, completes: bool) {
        let p = self.pieces.entry(index).or_default();
        p.pending += 1;
        p.complete |= completes;
    }

    /// A queued block of `index` was written (`ok`) or failed to write.
    pub fn done(&mut self, index: u32, ok: bool) -> Next {
        let Some(p) = self.pieces.get_mut(&index) else {
            return Next::Wait;
        };
        p.pending = p.pending.saturating_sub(1);
        p.failed |= !ok;
        if p.pending > 0 {
            return Next::Wait;
        }
        let next = if p.failed {
            Next::Abandon
        } else if p.complete {
            Next::Verify
        } else {
            // Written so far; more blocks to come.
            return Next::Wait;
        };
        self.pieces.remove(&index);
        next
    }

    /// Pieces with writes pending.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// No writes pending.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_only_when_every_peers_blocks_are_written() {
        let mut w = PendingWrites::default();
        // Peer A sends blocks 0 and 2, peer B block 1; A's last completes it.
        w.queued(7, false); // B, block 1 (its batch is slow)
        w.queued(7, false); // A, block 0
        w.queued(7, true); // A, block 2: piece complete
        assert_eq!(w.done(7, true), Next::Wait); // A's batch lands first
        assert_eq!(w.done(7, true), Next::Wait);
        assert_eq!(w.len(), 1);
        assert_eq!(w.done(7, true), Next::Verify); // then B's
        assert!(w.is_empty());
        // Written blocks of an incomplete piece: wait for the rest.
        w.queued(8, false);
        assert_eq!(w.done(8, true), Next::Wait);
        w.queued(8, true);
        assert_eq!(w.done(8, true), Next::Verify);
    }

    #[test]
    fn failed_write_abandons_once_the_others_drain() {
        let mut w = PendingWrites::default();
        w.queued(3, false);
        w.queued(3, true);
        assert_eq!(w.done(3, false), Next::Wait, "another write is pending");
        assert_eq!(w.done(3, true), Next::Abandon);
        assert!(w.is_empty());
        // The piece starts over cleanly; unknown pieces are ignored.
        assert_eq!(w.done(3, true), Next::Wait);
        w.queued(3, true);
        assert_eq!(w.done(3, true), Next::Verify);
        // A lone failed block of an incomplete piece is abandoned too.
        w.queued(4, false);
        assert_eq!(w.done(4, false), Next::Abandon);
    }
}
