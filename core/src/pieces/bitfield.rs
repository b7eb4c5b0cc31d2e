//! Bitfields and availability counts over caller storage.

use super::PiecesError;
use crate::wire::{check_bitfield, WireError};

/// One bit per piece over storage `S` (`&mut [u8]`, `[u8; N]`, or `&[u8]`
/// for a read-only view), BEP 3 order: the high bit of byte 0 is piece 0.
/// Spare bits after the last piece are kept zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitfield<S> {
    bits: S,
    pieces: u32,
}

fn bytes_for(pieces: u32) -> usize {
    (pieces as usize).div_ceil(8)
}

impl<S: AsRef<[u8]>> Bitfield<S> {
    /// A view of a received bitfield payload, checked with
    /// [`check_bitfield`] (exact length, zero spare bits).
    pub fn from_message(payload: S, pieces: u32) -> Result<Self, WireError> {
        check_bitfield(payload.as_ref(), pieces)?;
        Ok(Bitfield {
            bits: payload,
            pieces,
        })
    }

    /// Number of pieces.
    pub fn len(&self) -> u32 {
        self.pieces
    }

    /// Hands the storage back.
    pub fn into_storage(self) -> S {
        self.bits
    }

    /// True for a zero-piece bitfield.
    pub fn is_empty(&self) -> bool {
        self.pieces == 0
    }

    /// The wire bytes (ceil(pieces / 8)), ready for a bitfield message.
    pub fn as_bytes(&self) -> &[u8] {
        self.bits
            .as_ref()
            .get(..bytes_for(self.pieces))
            .unwrap_or_default()
    }

    /// Whether piece `i` is set (false out of range).
    pub fn get(&self, i: u32) -> bool {
        i < self.pieces
            && self
                .bits
                .as_ref()
                .get((i / 8) as usize)
                .is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
    }

    /// Number of set pieces.
    pub fn count(&self) -> u32 {
        self.as_bytes().iter().map(|b| b.count_ones()).sum()
    }

    /// True if every piece is set.
    pub fn is_complete(&self) -> bool {
        self.count() == self.pieces
    }

    /// Indices of set pieces, ascending.
    pub fn iter_set(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.pieces).filter(|&i| self.get(i))
    }

    /// Indices of missing pieces, ascending.
    pub fn iter_missing(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.pieces).filter(|&i| !self.get(i))
    }
}

impl<S: AsRef<[u8]> + AsMut<[u8]>> Bitfield<S> {
    /// An empty bitfield of `pieces` bits over `storage` (at least
    /// ceil(pieces / 8) bytes; the used bytes are zeroed).
    pub fn new(mut storage: S, pieces: u32) -> Result<Self, PiecesError> {
        let needed = bytes_for(pieces);
        let used = storage
            .as_mut()
            .get_mut(..needed)
            .ok_or(PiecesError::StorageTooSmall { needed })?;
        used.fill(0);
        Ok(Bitfield {
            bits: storage,
            pieces,
        })
    }

    fn put(&mut self, i: u32, on: bool) -> Result<(), PiecesError> {
        if i >= self.pieces {
            return Err(PiecesError::PieceOutOfRange(i));
        }
        let byte = self
            .bits
            .as_mut()
            .get_mut((i / 8) as usize)
            .ok_or(PiecesError::PieceOutOfRange(i))?;
        let mask = 0x80 >> (i % 8);
        if on {
            *byte |= mask;
        } else {
            *byte &= !mask;
        }
        Ok(())
    }

    /// Sets piece `i`.
    pub fn set(&mut self, i: u32) -> Result<(), PiecesError> {
        self.put(i, true)
    }

    /// Clears piece `i`.
    pub fn clear(&mut self, i: u32) -> Result<(), PiecesError> {
        self.put(i, false)
    }

    /// Sets every piece (BEP 6 have all), spare bits left zero.
    pub fn set_all(&mut self) {
        for i in 0..self.pieces {
            let _ = self.put(i, true);
        }
    }

    /// Clears every piece (BEP 6 have none).
    pub fn clear_all(&mut self) {
        let n = bytes_for(self.pieces);
        if let Some(b) = self.bits.as_mut().get_mut(..n) {
            b.fill(0);
        }
    }

    /// Replaces the contents with a received bitfield payload, after
    /// [`check_bitfield`].
    pub fn copy_from_message(&mut self, payload: &[u8]) -> Result<(), WireError> {
        check_bitfield(payload, self.pieces)?;
        let n = payload.len();
        if let Some(dst) = self.bits.as_mut().get_mut(..n) {
            dst.copy_from_slice(payload);
        }
        Ok(())
    }
}

/// Per-piece count of connected peers that have the piece, over the
/// caller's `u16` storage `S` (saturating at `u16::MAX`).
#[derive(Debug)]
pub struct Availability<S> {
    counts: S,
    pieces: u32,
}

impl<S: AsRef<[u16]> + AsMut<[u16]>> Availability<S> {
    /// Zeroed counts for `pieces` pieces over `storage` (at least `pieces` long).
    pub fn new(mut storage: S, pieces: u32) -> Result<Self, PiecesError> {
        let needed = pieces as usize;
        storage
            .as_mut()
            .get_mut(..needed)
            .ok_or(PiecesError::StorageTooSmall { needed })?
            .fill(0);
        Ok(Availability {
            counts: storage,
            pieces,
        })
    }

    /// Hands the storage back.
    pub fn into_storage(self) -> S {
        self.counts
    }

    fn counts(&self) -> &[u16] {
        self.counts
            .as_ref()
            .get(..self.pieces as usize)
            .unwrap_or_default()
    }

    fn counts_mut(&mut self) -> &mut [u16] {
        self.counts
            .as_mut()
            .get_mut(..self.pieces as usize)
            .unwrap_or_default()
    }

    /// Number of pieces.
    pub fn len(&self) -> u32 {
        self.pieces
    }

    /// True for zero pieces.
    pub fn is_empty(&self) -> bool {
        self.pieces == 0
    }

    /// Peers known to have piece `i` (0 out of range).
    pub fn get(&self, i: u32) -> u16 {
        self.counts().get(i as usize).copied().unwrap_or(0)
    }

    /// A peer announced piece `i` (BEP 3 have).
    pub fn add_piece(&mut self, i: u32) {
        if let Some(c) = self.counts_mut().get_mut(i as usize) {
            *c = c.saturating_add(1);
        }
    }

    /// Undo [`Self::add_piece`].
    pub fn remove_piece(&mut self, i: u32) {
        if let Some(c) = self.counts_mut().get_mut(i as usize) {
            *c = c.saturating_sub(1);
        }
    }

    /// A peer with these pieces arrived (bitfield, or BEP 6 have all).
    pub fn add_peer<B: AsRef<[u8]>>(&mut self, has: &Bitfield<B>) {
        for i in has.iter_set() {
            self.add_piece(i);
        }
    }

    /// A peer with these pieces left.
    pub fn remove_peer<B: AsRef<[u8]>>(&mut self, has: &Bitfield<B>) {
        for i in has.iter_set() {
            self.remove_piece(i);
        }
    }
}
