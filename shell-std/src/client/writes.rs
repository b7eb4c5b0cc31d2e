//! Pieces on their way to disk: which have blocks not yet written, and
//! their SHA-1 computed as the blocks are written.
//!
//! Blocks of one piece may come from several peers, and each peer task
//! writes its blocks on its own blocking thread. A piece may be verified
//! only once every block of it — from every peer — is on disk
//! ([`PendingWrites`]), and a piece with a block that failed to write must
//! be fetched again, but only after its other writes have drained (so no
//! stale write lands in the new attempt's count).
//!
//! [`PieceHashes`] hashes each piece on the writing threads, block by block
//! in order, so neither the reading tasks nor the shared lock pay for
//! SHA-1; blocks that come out of order stop the in-order hash, and the
//! rest of the piece is then read back from disk at verification.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ourtorrent_core::pieces::InOrderHasher;

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

/// A piece's SHA-1 over its first bytes (the core's in-order hasher, the
/// same the picker uses when it hashes blocks itself).
pub type Partial = InOrderHasher;

/// In-order SHA-1 of pieces being written, one lock per piece (two peers'
/// writers contend only when they write the same piece).
#[derive(Default)]
pub struct PieceHashes {
    pieces: Mutex<HashMap<u32, Arc<Mutex<Partial>>>>,
}

impl PieceHashes {
    fn state(&self, index: u32) -> Arc<Mutex<Partial>> {
        let mut m = self.pieces.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(index).or_default().clone()
    }

    /// `data`, at offset `begin` of piece `index`, is on disk: hash it if
    /// it continues the piece's in-order hash (else it is left for the
    /// read-back at verification).
    pub fn written(&self, index: u32, begin: u32, data: &[u8]) {
        let s = self.state(index);
        let mut p = s.lock().unwrap_or_else(|e| e.into_inner());
        p.feed(begin, data);
    }

    /// The piece's hash so far (a fresh one if none), forgetting it: call
    /// once its writes have drained, to verify or abandon it.
    pub fn take(&self, index: u32) -> Partial {
        let s = self
            .pieces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&index);
        match s {
            Some(s) => std::mem::take(&mut *s.lock().unwrap_or_else(|e| e.into_inner())),
            None => Partial::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ourtorrent_core::pieces::PieceHasher;

    fn sha(data: &[u8]) -> [u8; 20] {
        let mut h = PieceHasher::new();
        h.update(data);
        h.finish()
    }

    #[test]
    fn in_order_blocks_are_hashed_as_written() {
        let h = PieceHashes::default();
        let piece: Vec<u8> = (0..48u32).map(|i| i as u8).collect();
        h.written(2, 0, &piece[..16]);
        h.written(2, 16, &piece[16..32]);
        h.written(2, 32, &piece[32..]);
        let p = h.take(2);
        assert_eq!(p.hashed(), 48);
        assert_eq!(p.finish(), sha(&piece));
        // Taken: a new attempt starts from scratch.
        assert_eq!(h.take(2).hashed(), 0);
    }

    #[test]
    fn out_of_order_blocks_stop_the_in_order_hash() {
        let h = PieceHashes::default();
        let piece = [7u8; 48];
        h.written(5, 0, &piece[..16]);
        h.written(5, 32, &piece[32..]); // a gap: not hashed
        h.written(5, 16, &piece[16..32]); // fills it: hashed
        let p = h.take(5);
        assert_eq!(p.hashed(), 32, "the block after the gap must be read back");
        let mut rest = p;
        rest.update(&piece[32..]);
        assert_eq!(rest.finish(), sha(&piece));
        // A piece whose first block came last hashes nothing in order.
        h.written(6, 16, &piece[16..32]);
        h.written(6, 0, &piece[..16]);
        assert_eq!(h.take(6).hashed(), 16);
    }

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
