//! The job's piece store on NOR flash ([`Flash`]): blocks are programmed
//! where their piece lives as they arrive, read back to hash and to seed;
//! RAM holds only what is in flight.
//!
//! # Layout (offsets in the device)
//! - `0..HEADER_LEN`: the header: [`MAGIC`], the info-hash, the length and
//!   the piece length. A header for another torrent (or none) means the
//!   flash is formatted afresh: header and marks erased, header written.
//! - `MARKS_AT..`: one [`MARK_LEN`]-byte mark per piece, erased (`0xFF`)
//!   until the piece passed its SHA-1 check, then programmed to zero. A
//!   piece is never marked before it is verified, so a power cut leaves
//!   only verified pieces marked; on start their hashes are checked again,
//!   and a mark whose piece fails is cleared ([`Store::unmark`]).
//! - [`Store::data_at`]`..`: the data, piece `i` at `i × piece_len`
//!   (sector aligned: the piece length must be a multiple of the sector).
//!
//! Erase before write: a piece's sectors are erased before its first block
//! of an attempt is programmed ([`Store::forget`] starts a new attempt,
//! after a failed hash or a failed write). A torrent's last byte need not
//! end on a write word: the tail is padded with `0xFF`, which programs
//! nothing.

use core::fmt;

use ourtorrent_core::id::InfoHash;
use ourtorrent_core::pieces::{Geometry, PieceHasher};

use super::MAX_PIECES;
use crate::flash::{Flash, FlashError};

/// First bytes of a formatted flash.
pub const MAGIC: [u8; 4] = *b"OTF1";
/// Bytes of the header (a multiple of any write size up to 64).
pub const HEADER_LEN: usize = 64;
/// Where the marks start.
pub const MARKS_AT: usize = HEADER_LEN;
/// Bytes of one piece's mark.
pub const MARK_LEN: usize = 4;
/// Bytes of the header and the marks of the most pieces.
const META_MAX: usize = MARKS_AT + MAX_PIECES * MARK_LEN;
/// Largest write word the store handles (marks and the padded tail).
const MAX_WRITE: usize = MARK_LEN;
/// Bytes read at once when hashing from flash.
const READ_CHUNK: usize = 1024;

/// Why the store refused the flash or an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The device failed.
    Flash(FlashError),
    /// The device's write word is larger than [`MARK_LEN`] or does not
    /// divide it.
    WriteSize(usize),
    /// The piece length is not a multiple of the device's sector.
    PieceNotSectorAligned {
        /// Piece length.
        piece_len: u32,
        /// Sector.
        sector: usize,
    },
    /// The torrent does not fit the device (bytes needed, capacity).
    TooSmall(u64, usize),
    /// A block outside the torrent.
    OutOfRange(u32, u32),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StoreError::Flash(e) => write!(f, "{e}"),
            StoreError::WriteSize(n) => write!(f, "flash write size {n} unsupported"),
            StoreError::PieceNotSectorAligned { piece_len, sector } => write!(
                f,
                "piece length {piece_len} is not a multiple of the flash sector {sector}"
            ),
            StoreError::TooSmall(need, cap) => {
                write!(f, "torrent needs {need} bytes of flash, device has {cap}")
            }
            StoreError::OutOfRange(i, b) => write!(f, "block {i}+{b} outside the torrent"),
        }
    }
}

impl From<FlashError> for StoreError {
    fn from(e: FlashError) -> Self {
        StoreError::Flash(e)
    }
}

/// The torrent's pieces on a flash.
pub struct Store<'f> {
    flash: &'f mut dyn Flash,
    geo: Geometry,
    data_at: u32,
    /// Pieces whose sectors were erased for the attempt in progress.
    erased: [u8; MAX_PIECES.div_ceil(8)],
}

impl fmt::Debug for Store<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("data_at", &self.data_at)
            .finish_non_exhaustive()
    }
}

impl<'f> Store<'f> {
    /// Opens the store of this torrent on `flash`, formatting it if its
    /// header names another torrent (or none). Returns the store and
    /// whether it was formatted.
    pub fn open(
        flash: &'f mut dyn Flash,
        info_hash: &InfoHash,
        geo: Geometry,
    ) -> Result<(Self, bool), StoreError> {
        let (ws, sector) = (flash.write_size(), flash.erase_size());
        if ws == 0 || ws > MAX_WRITE || MARK_LEN % ws != 0 {
            return Err(StoreError::WriteSize(ws));
        }
        if sector == 0 || geo.piece_len() as usize % sector != 0 {
            return Err(StoreError::PieceNotSectorAligned {
                piece_len: geo.piece_len(),
                sector,
            });
        }
        let marks_end = MARKS_AT + geo.piece_count() as usize * MARK_LEN;
        let data_at = marks_end.div_ceil(sector) * sector;
        let need = (data_at as u64)
            .saturating_add(geo.total_len().div_ceil(sector as u64) * sector as u64);
        if need > flash.capacity() as u64 {
            return Err(StoreError::TooSmall(need, flash.capacity()));
        }
        let header = header(info_hash, geo);
        let mut found = [0u8; HEADER_LEN];
        flash.read(0, &mut found)?;
        let formatted = found != header;
        if formatted {
            flash.erase(0, data_at as u32)?;
            flash.write(0, &header)?;
        }
        let store = Store {
            flash,
            geo,
            data_at: data_at as u32,
            erased: [0; MAX_PIECES.div_ceil(8)],
        };
        Ok((store, formatted))
    }

    /// Where the data starts in the device.
    pub fn data_at(&self) -> u32 {
        self.data_at
    }

    /// Whether piece `index` carries the verified mark (any programmed bit:
    /// a mark cut by a power loss counts, its hash decides).
    pub fn marked(&mut self, index: u32) -> Result<bool, StoreError> {
        let mut m = [0u8; MARK_LEN];
        self.flash.read(mark_at(index), &mut m)?;
        Ok(m != [0xFF; MARK_LEN])
    }

    /// Marks piece `index` verified (call only after its SHA-1 passed).
    pub fn mark_verified(&mut self, index: u32) -> Result<(), StoreError> {
        self.flash.write(mark_at(index), &[0; MARK_LEN])?;
        Ok(())
    }

    /// Clears piece `index`'s mark (a marked piece whose hash no longer
    /// matches): NOR sets bits only by erasing, so the header and marks are
    /// read, their sectors erased and written back without this mark. A
    /// power cut in between loses the header (the flash is formatted on
    /// the next start): safe, only slower.
    pub fn unmark(&mut self, index: u32) -> Result<(), StoreError> {
        let mut meta = [0xFFu8; META_MAX];
        let len = MARKS_AT + self.geo.piece_count() as usize * MARK_LEN;
        let out = StoreError::OutOfRange(index, 0);
        let meta = meta.get_mut(..len).ok_or(out)?;
        self.flash.read(0, meta)?;
        let at = mark_at(index) as usize;
        meta.get_mut(at..at + MARK_LEN).ok_or(out)?.fill(0xFF);
        self.flash.erase(0, self.data_at)?;
        self.flash.write(0, meta)?;
        Ok(())
    }

    /// Starts a new attempt at piece `index`: its sectors are erased before
    /// the next block is programmed.
    pub fn forget(&mut self, index: u32) {
        if let Some(b) = self.erased.get_mut(index as usize / 8) {
            *b &= !(1 << (index % 8));
        }
    }

    /// Programs a block of piece `index` at `begin`, erasing the piece's
    /// sectors first if this attempt has not.
    pub fn write_block(&mut self, index: u32, begin: u32, data: &[u8]) -> Result<(), StoreError> {
        let out = StoreError::OutOfRange(index, begin);
        let at = self.at(index, begin, data.len()).ok_or(out)?;
        let bit = 1u8 << (index % 8);
        let byte = self.erased.get(index as usize / 8).copied().ok_or(out)?;
        if byte & bit == 0 {
            let sector = self.flash.erase_size() as u32;
            let start = self.at(index, 0, 0).ok_or(out)?;
            let size = self.geo.piece_size(index).ok_or(out)?;
            let end = start + size.div_ceil(sector) * sector;
            self.flash.erase(start, end)?;
            if let Some(b) = self.erased.get_mut(index as usize / 8) {
                *b |= bit;
            }
        }
        let ws = self.flash.write_size();
        let whole = data.len() - data.len() % ws;
        let (body, tail) = data.split_at(whole);
        if !body.is_empty() {
            self.flash.write(at, body)?;
        }
        if !tail.is_empty() {
            let mut word = [0xFFu8; MAX_WRITE];
            word.get_mut(..tail.len()).ok_or(out)?.copy_from_slice(tail);
            self.flash
                .write(at + whole as u32, word.get(..ws).ok_or(out)?)?;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes of piece `index` from `begin`.
    pub fn read(&mut self, index: u32, begin: u32, buf: &mut [u8]) -> Result<(), StoreError> {
        let at = self
            .at(index, begin, buf.len())
            .ok_or(StoreError::OutOfRange(index, begin))?;
        self.flash.read(at, buf)?;
        Ok(())
    }

    /// Feeds piece `index`'s bytes from `from` to its end to `feed`, read
    /// from flash in small chunks.
    pub fn each_chunk(
        &mut self,
        index: u32,
        from: u32,
        mut feed: impl FnMut(&[u8]),
    ) -> Result<(), StoreError> {
        let size = self
            .geo
            .piece_size(index)
            .ok_or(StoreError::OutOfRange(index, from))?;
        let mut buf = [0u8; READ_CHUNK];
        let mut at = from;
        while at < size {
            let n = ((size - at) as usize).min(READ_CHUNK);
            let chunk = buf.get_mut(..n).unwrap_or_default();
            self.read(index, at, chunk)?;
            feed(chunk);
            at += n as u32;
        }
        Ok(())
    }

    /// The SHA-1 of piece `index` as stored.
    pub fn hash(&mut self, index: u32) -> Result<[u8; 20], StoreError> {
        let mut h = PieceHasher::new();
        self.each_chunk(index, 0, |c| h.update(c))?;
        Ok(h.finish())
    }

    /// The device offset of `len` bytes of piece `index` at `begin`, if
    /// they are inside the torrent.
    fn at(&self, index: u32, begin: u32, len: usize) -> Option<u32> {
        let off = self.geo.offset(index, begin)?;
        let end = off.checked_add(len as u64)?;
        if end > self.geo.total_len() {
            return None;
        }
        u32::try_from(off).ok()?.checked_add(self.data_at)
    }
}

fn mark_at(index: u32) -> u32 {
    (MARKS_AT + index as usize * MARK_LEN) as u32
}

/// The header of a torrent's store.
fn header(info_hash: &InfoHash, geo: Geometry) -> [u8; HEADER_LEN] {
    let mut h = [0xFFu8; HEADER_LEN];
    let fields = [
        &MAGIC[..],
        &info_hash.0[..],
        &geo.total_len().to_le_bytes()[..],
        &geo.piece_len().to_le_bytes()[..],
    ];
    let mut at = 0;
    for f in fields {
        if let Some(d) = h.get_mut(at..at + f.len()) {
            d.copy_from_slice(f);
        }
        at += f.len();
    }
    h
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::flash::{Fault, RamNor};
    use std::vec;

    const PIECE: u32 = 16 * 1024;

    fn data(len: usize) -> std::vec::Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn pieces_round_trip_and_marks_survive_a_reopen() {
        let mut mem = vec![0u8; 256 * 1024];
        let len = 3 * PIECE as usize + 5; // a tail that is not a whole word
        let geo = Geometry::new(len as u64, PIECE).unwrap();
        let ih = InfoHash([7; 20]);
        let d = data(len);
        {
            let mut f = RamNor::new(&mut mem, None);
            let (mut s, formatted) = Store::open(&mut f, &ih, geo).unwrap();
            assert!(formatted);
            assert_eq!(s.data_at(), 4096);
            for i in 0..4u32 {
                let size = geo.piece_size(i).unwrap() as usize;
                let at = i as usize * PIECE as usize;
                // Out of order, in two halves (the last piece is 5 bytes).
                let half = size.div_ceil(2).next_multiple_of(4).min(size);
                s.write_block(i, half as u32, &d[at + half..at + size])
                    .unwrap();
                s.write_block(i, 0, &d[at..at + half]).unwrap();
                assert!(!s.marked(i).unwrap());
            }
            for i in [0u32, 3] {
                s.mark_verified(i).unwrap();
            }
            let mut back = vec![0u8; len];
            for i in 0..4u32 {
                let at = i as usize * PIECE as usize;
                let size = geo.piece_size(i).unwrap() as usize;
                s.read(i, 0, &mut back[at..at + size]).unwrap();
            }
            assert!(back == d);
            let mut h = PieceHasher::new();
            h.update(&d[3 * PIECE as usize..]);
            assert_eq!(s.hash(3).unwrap(), h.finish());
            assert_eq!(
                s.read(3, 0, &mut [0u8; 6]).unwrap_err(),
                StoreError::OutOfRange(3, 0)
            );
        }
        let mut f = RamNor::new(&mut mem, None);
        let (mut s, formatted) = Store::open(&mut f, &ih, geo).unwrap();
        assert!(!formatted, "same torrent: kept");
        let marked: std::vec::Vec<bool> = (0..4).map(|i| s.marked(i).unwrap()).collect();
        assert_eq!(marked, [true, false, false, true]);
        s.unmark(0).unwrap();
        let marked: std::vec::Vec<bool> = (0..4).map(|i| s.marked(i).unwrap()).collect();
        assert_eq!(marked, [false, false, false, true]);
        let (mut s, formatted) = Store::open(&mut f, &ih, geo).unwrap();
        assert!(!formatted, "the header survives an unmark");
        assert!(s.marked(3).unwrap() && !s.marked(0).unwrap());
        let (mut s, formatted) = Store::open(&mut f, &InfoHash([8; 20]), geo).unwrap();
        assert!(formatted, "another torrent: formatted");
        assert!(!s.marked(0).unwrap());
    }

    #[test]
    fn a_new_attempt_erases_what_the_last_one_wrote() {
        let mut mem = vec![0u8; 64 * 1024];
        let geo = Geometry::new(u64::from(PIECE), PIECE).unwrap();
        let mut f = RamNor::new(&mut mem, None);
        let (mut s, _) = Store::open(&mut f, &InfoHash([1; 20]), geo).unwrap();
        s.write_block(0, 0, &[0x0F; PIECE as usize]).unwrap();
        // Without an erase the program ANDs: the data is wrong.
        s.write_block(0, 0, &[0xF0; PIECE as usize]).unwrap();
        let mut b = [1u8; 4];
        s.read(0, 0, &mut b).unwrap();
        assert_eq!(b, [0; 4]);
        s.forget(0);
        s.write_block(0, 0, &[0xF0; PIECE as usize]).unwrap();
        s.read(0, 0, &mut b).unwrap();
        assert_eq!(b, [0xF0; 4]);
    }

    #[test]
    fn limits_and_faults() {
        let mut mem = vec![0u8; 64 * 1024];
        let mut f = RamNor::new(&mut mem, Some(Fault::Write(2)));
        let ih = InfoHash([1; 20]);
        // 15 sectors of data and one of header: 60 KiB fits, 60 KiB + 1 not.
        let fits = Geometry::new(60 * 1024, PIECE).unwrap();
        let over = Geometry::new(60 * 1024 + 1, PIECE).unwrap();
        assert_eq!(
            Store::open(&mut f, &ih, over).unwrap_err(),
            StoreError::TooSmall(64 * 1024 + 4096, 64 * 1024)
        );
        let odd = Geometry::new(60 * 1024, 6144).unwrap();
        assert!(matches!(
            Store::open(&mut f, &ih, odd),
            Err(StoreError::PieceNotSectorAligned { .. })
        ));
        let (mut s, _) = Store::open(&mut f, &ih, fits).unwrap();
        let e = s.write_block(0, 0, &[0; 16]).unwrap_err();
        assert!(matches!(e, StoreError::Flash(_)), "{e:?}");
        s.write_block(0, 0, &[0; 16]).unwrap();
    }
}
