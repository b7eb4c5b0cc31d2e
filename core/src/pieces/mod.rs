//! Piece bookkeeping, all in caller-provided storage (no heap):
//!
//! - [`Geometry`]: piece and block sizes of a torrent (BEP 3: blocks of
//!   [`BLOCK_LEN`] bytes, the last block of the last piece shorter);
//! - [`Bitfield`]: one bit per piece over the caller's bytes, in the BEP 3
//!   wire order (high bit of byte 0 = piece 0);
//! - [`Availability`]: how many connected peers have each piece;
//! - [`Picker`]: which block to request next from which peer (rarest first,
//!   random first pieces, strict priority, end-game), block request
//!   bookkeeping with timeouts, and incremental SHA-1 verification that
//!   reports the peers who contributed to a bad piece;
//! - [`PieceHasher`]: SHA-1 of one piece fed block by block;
//!   [`InOrderHasher`]: the same, fed by blocks in any order (those that
//!   continue the prefix), used by the picker and by shells alike.
//!
//! # Limits
//! - pieces in progress at once: the length of the picker's slot storage
//!   (and of its block storage, [`Picker::blocks_needed`]: a piece of `L`
//!   bytes needs ceil(L / 16 KiB) block slots; 64 = 1 MiB pieces), all
//!   caller storage ([`PickerStorage`]); too little for one piece is refused
//!   at construction ([`PiecesError::StorageTooSmall`]);
//! - senders named for a bad piece: [`MAX_CONTRIBUTORS`];
//! - requests in flight per peer: not bounded here — the peer session's
//!   pipeline ([`PeerConfig::pipeline`](crate::peer::PeerConfig::pipeline))
//!   is the one knob; the picker counts them per peer in caller storage
//!   ([`PickerStorage::Flight`]);
//! - requests for one block at once (end-game duplicates):
//!   [`MAX_REQUESTERS_PER_BLOCK`].

use core::fmt;

mod bitfield;
mod picker;
mod verify;

pub use crate::wire::BLOCK_LEN;
pub use bitfield::{Availability, Bitfield};
pub use picker::{
    BlockSlot, Pick, Picker, PickerConfig, PickerParts, PickerStorage, Received, SliceStorage,
    Slot, Verdict, XorShift32, DEFAULT_RANDOM_FIRST, DEFAULT_REQUEST_TIMEOUT_MS, MAX_CONTRIBUTORS,
    MAX_REQUESTERS_PER_BLOCK,
};
pub use verify::{verify_piece, InOrderHasher, PieceHasher};

/// Why a piece-bookkeeping call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PiecesError {
    /// Caller storage too small: `needed` elements.
    StorageTooSmall {
        /// Elements needed.
        needed: usize,
    },
    /// Zero piece length, zero total length, or more than `u32::MAX` pieces.
    BadGeometry,
    /// A piece index at or past the piece count.
    PieceOutOfRange(u32),
    /// Bitfield and picker disagree on the piece count.
    CountMismatch,
    /// A block for a piece that is not in progress.
    NotInProgress(u32),
    /// A block whose offset or length does not match the piece's blocks.
    BadBlock,
    /// Verification asked for a piece with blocks still missing.
    NotComplete(u32),
    /// More hash data than the piece holds.
    TooMuchData,
}

impl fmt::Display for PiecesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PiecesError::StorageTooSmall { needed } => {
                write!(f, "storage too small: need {needed} elements")
            }
            PiecesError::BadGeometry => f.write_str("bad torrent geometry"),
            PiecesError::PieceOutOfRange(i) => write!(f, "piece {i} out of range"),
            PiecesError::CountMismatch => f.write_str("piece count mismatch"),
            PiecesError::NotInProgress(i) => write!(f, "piece {i} is not in progress"),
            PiecesError::BadBlock => f.write_str("block offset or length does not fit the piece"),
            PiecesError::NotComplete(i) => write!(f, "piece {i} has missing blocks"),
            PiecesError::TooMuchData => f.write_str("more data than the piece holds"),
        }
    }
}

impl core::error::Error for PiecesError {}

/// One block: a piece index, an offset in it and a length (the fields of a
/// BEP 3 request, cancel or BEP 6 reject).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockRequest {
    /// Piece index.
    pub index: u32,
    /// Byte offset within the piece (a multiple of [`BLOCK_LEN`]).
    pub begin: u32,
    /// Length ([`BLOCK_LEN`], or less for the last block of the last piece).
    pub length: u32,
}

/// A peer as the shell names it (an index into its connection table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey(pub u16);

/// Piece and block sizes of a torrent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    total_len: u64,
    piece_len: u32,
    pieces: u32,
}

impl Geometry {
    /// A torrent of `total_len` bytes in pieces of `piece_len` bytes.
    pub fn new(total_len: u64, piece_len: u32) -> Result<Self, PiecesError> {
        if total_len == 0 || piece_len == 0 {
            return Err(PiecesError::BadGeometry);
        }
        let pieces = u32::try_from(total_len.div_ceil(u64::from(piece_len)))
            .map_err(|_| PiecesError::BadGeometry)?;
        Ok(Geometry {
            total_len,
            piece_len,
            pieces,
        })
    }

    /// Number of pieces.
    pub fn piece_count(&self) -> u32 {
        self.pieces
    }

    /// Nominal piece length.
    pub fn piece_len(&self) -> u32 {
        self.piece_len
    }

    /// Total length in bytes.
    pub fn total_len(&self) -> u64 {
        self.total_len
    }

    /// Length of piece `index` (the last one may be shorter).
    pub fn piece_size(&self, index: u32) -> Option<u32> {
        if index >= self.pieces {
            return None;
        }
        let start = u64::from(index) * u64::from(self.piece_len);
        let rest = self.total_len - start;
        Some(rest.min(u64::from(self.piece_len)) as u32)
    }

    /// Byte offset in the torrent of `begin` within piece `index` (`None`
    /// past the piece's end).
    pub fn offset(&self, index: u32, begin: u32) -> Option<u64> {
        let size = self.piece_size(index)?;
        if begin >= size {
            return None;
        }
        Some(u64::from(index) * u64::from(self.piece_len) + u64::from(begin))
    }

    /// Blocks in piece `index`.
    pub fn block_count(&self, index: u32) -> Option<u32> {
        self.piece_size(index).map(|s| s.div_ceil(BLOCK_LEN))
    }

    /// Most blocks any piece has.
    pub fn max_blocks_per_piece(&self) -> u32 {
        self.piece_len.div_ceil(BLOCK_LEN)
    }

    /// Block `block` of piece `index`.
    pub fn block(&self, index: u32, block: u32) -> Option<BlockRequest> {
        let size = self.piece_size(index)?;
        let begin = block.checked_mul(BLOCK_LEN).filter(|&b| b < size)?;
        Some(BlockRequest {
            index,
            begin,
            length: (size - begin).min(BLOCK_LEN),
        })
    }
}

#[cfg(test)]
mod priority_tests;
#[cfg(test)]
mod tests;

/// Test storage: borrowed bitfield and counts, slots and blocks in `Vec`s.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    pub(crate) struct TestStorage<'s>(core::marker::PhantomData<&'s mut ()>);

    impl<'s> PickerStorage for TestStorage<'s> {
        type Have = &'s mut [u8];
        type Counts = &'s mut [u16];
        type Slots = Vec<Slot>;
        type Blocks = Vec<BlockSlot>;
        type Flight = Vec<u16>;
    }

    pub(crate) type TestPicker<'s> = Picker<TestStorage<'s>>;

    /// Peer keys the test pickers count in flight (keys past it are scanned).
    pub(crate) const TEST_PEER_KEYS: usize = 64;

    /// A picker with room for `slots` pieces in progress.
    pub(crate) fn new_picker<'s>(
        geo: Geometry,
        have: Bitfield<&'s mut [u8]>,
        avail: Availability<&'s mut [u16]>,
        slots: usize,
        cfg: PickerConfig,
        seed: u32,
    ) -> Result<TestPicker<'s>, PiecesError> {
        let blocks = TestPicker::blocks_needed(&geo, slots);
        Picker::new(
            geo,
            PickerParts {
                have,
                avail,
                slots: vec![Slot::default(); slots],
                blocks: vec![BlockSlot::default(); blocks],
                flight: vec![0; TEST_PEER_KEYS],
            },
            cfg,
            seed,
        )
    }
}
