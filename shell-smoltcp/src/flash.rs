//! NOR flash for the job: [`Flash`], the object-safe face of any
//! `embedded-storage` [`NorFlash`] the job writes pieces through, and
//! [`RamNor`], a NOR flash model over a RAM region (the QEMU board's PSRAM;
//! a `Vec` in host tests).
//!
//! The model behaves as NOR does and refuses what NOR refuses: erased bytes
//! read `0xFF`; a program can only clear bits (the stored byte becomes
//! `old & new`, so a missing erase shows up later as a wrong piece hash,
//! not as a silent overwrite); erases are whole [`RamNor::ERASE_SIZE`]
//! sectors; writes are whole [`RamNor::WRITE_SIZE`] words at aligned
//! offsets (`NotAligned` otherwise, `OutOfBounds` past the end). A
//! [`Fault`] injects one failed write or erase (the test knob
//! `flash_fault=`), to show that a storage error fails a piece, not the
//! board.

use core::fmt;

use embedded_storage::nor_flash::{
    check_erase, check_read, check_write, ErrorType, NorFlash, NorFlashError, NorFlashErrorKind,
    ReadNorFlash,
};

/// A flash operation (for errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashOp {
    /// A read.
    Read,
    /// A program (write).
    Write,
    /// A sector erase.
    Erase,
}

/// A flash operation that failed: which, where, and the driver's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashError {
    /// The operation.
    pub op: FlashOp,
    /// Its start offset in the device.
    pub offset: u32,
    /// The driver's error kind (`Other` for an injected fault).
    pub kind: NorFlashErrorKind,
}

impl fmt::Display for FlashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            FlashOp::Read => "read",
            FlashOp::Write => "write",
            FlashOp::Erase => "erase",
        };
        write!(f, "flash {op} at {:#x}: {}", self.offset, self.kind)
    }
}

/// What the job needs of a NOR flash, object-safe (so that the job's types
/// do not carry the driver's type). Every `NorFlash` is one.
pub trait Flash {
    /// Reads `buf.len()` bytes at `offset`.
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), FlashError>;
    /// Programs `data` at `offset` (aligned to [`Self::write_size`]).
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError>;
    /// Erases the sectors of `from..to` (aligned to [`Self::erase_size`]).
    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError>;
    /// Bytes of the device.
    fn capacity(&self) -> usize;
    /// The program granularity.
    fn write_size(&self) -> usize;
    /// The erase granularity (sector).
    fn erase_size(&self) -> usize;
}

impl<F: NorFlash> Flash for F {
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), FlashError> {
        ReadNorFlash::read(self, offset, buf).map_err(|e| FlashError {
            op: FlashOp::Read,
            offset,
            kind: e.kind(),
        })
    }
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError> {
        NorFlash::write(self, offset, data).map_err(|e| FlashError {
            op: FlashOp::Write,
            offset,
            kind: e.kind(),
        })
    }
    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        NorFlash::erase(self, from, to).map_err(|e| FlashError {
            op: FlashOp::Erase,
            offset: from,
            kind: e.kind(),
        })
    }
    fn capacity(&self) -> usize {
        ReadNorFlash::capacity(self)
    }
    fn write_size(&self) -> usize {
        F::WRITE_SIZE
    }
    fn erase_size(&self) -> usize {
        F::ERASE_SIZE
    }
}

/// One injected failure: the `n`-th (1-based) write or erase fails, once,
/// leaving the flash as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The `n`-th write fails.
    Write(u32),
    /// The `n`-th erase fails.
    Erase(u32),
}

/// A NOR flash model over `mem` (see the module docs).
pub struct RamNor<'m> {
    mem: &'m mut [u8],
    fault: Option<Fault>,
    writes: u32,
    erases: u32,
}

impl<'m> RamNor<'m> {
    /// The program granularity: one 32-bit word.
    pub const WRITE_SIZE: usize = 4;
    /// The erase granularity: 4 KiB sectors, as on common serial NOR.
    pub const ERASE_SIZE: usize = 4096;

    /// The model over `mem`, as it is (a fresh region is not erased: the
    /// job erases before it writes). Its length is cut to whole sectors.
    pub fn new(mem: &'m mut [u8], fault: Option<Fault>) -> Self {
        let whole = mem.len() - mem.len() % Self::ERASE_SIZE;
        let (mem, _) = mem.split_at_mut(whole);
        RamNor {
            mem,
            fault,
            writes: 0,
            erases: 0,
        }
    }

    /// Writes and erases performed so far (failed ones included).
    pub fn counts(&self) -> (u32, u32) {
        (self.writes, self.erases)
    }
}

/// The model's error: a NOR error kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamNorError(pub NorFlashErrorKind);

impl NorFlashError for RamNorError {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}

impl ErrorType for RamNor<'_> {
    type Error = RamNorError;
}

impl ReadNorFlash for RamNor<'_> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        check_read(self, offset, bytes.len()).map_err(RamNorError)?;
        let at = offset as usize;
        let src = self
            .mem
            .get(at..at + bytes.len())
            .ok_or(RamNorError(NorFlashErrorKind::OutOfBounds))?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl NorFlash for RamNor<'_> {
    const WRITE_SIZE: usize = Self::WRITE_SIZE;
    const ERASE_SIZE: usize = Self::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.erases += 1;
        check_erase(self, from, to).map_err(RamNorError)?;
        if self.fault == Some(Fault::Erase(self.erases)) {
            return Err(RamNorError(NorFlashErrorKind::Other));
        }
        let dst = self
            .mem
            .get_mut(from as usize..to as usize)
            .ok_or(RamNorError(NorFlashErrorKind::OutOfBounds))?;
        dst.fill(0xFF);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.writes += 1;
        check_write(self, offset, bytes.len()).map_err(RamNorError)?;
        if self.fault == Some(Fault::Write(self.writes)) {
            return Err(RamNorError(NorFlashErrorKind::Other));
        }
        let at = offset as usize;
        let dst = self
            .mem
            .get_mut(at..at + bytes.len())
            .ok_or(RamNorError(NorFlashErrorKind::OutOfBounds))?;
        // NOR programming only clears bits.
        for (d, s) in dst.iter_mut().zip(bytes) {
            *d &= *s;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_nor() {
        let mut mem = [0u8; 3 * 4096 + 100];
        let mut f = RamNor::new(&mut mem, None);
        assert_eq!(Flash::capacity(&f), 3 * 4096, "cut to whole sectors");
        // Not erased: a program cannot set bits.
        Flash::write(&mut f, 0, &[0xAB; 4]).unwrap();
        let mut b = [0u8; 4];
        Flash::read(&mut f, 0, &mut b).unwrap();
        assert_eq!(b, [0; 4]);
        Flash::erase(&mut f, 0, 4096).unwrap();
        Flash::read(&mut f, 0, &mut b).unwrap();
        assert_eq!(b, [0xFF; 4]);
        Flash::write(&mut f, 0, &[0xF0, 0x0F, 0xFF, 0x00]).unwrap();
        Flash::write(&mut f, 0, &[0x3C; 4]).unwrap();
        Flash::read(&mut f, 0, &mut b).unwrap();
        assert_eq!(b, [0x30, 0x0C, 0x3C, 0x00], "old & new");
        // Granularity and bounds.
        let kind = |r: Result<(), FlashError>| r.unwrap_err().kind;
        assert_eq!(
            kind(Flash::write(&mut f, 2, &[0; 4])),
            NorFlashErrorKind::NotAligned
        );
        assert_eq!(
            kind(Flash::write(&mut f, 0, &[0; 3])),
            NorFlashErrorKind::NotAligned
        );
        assert_eq!(
            kind(Flash::erase(&mut f, 0, 100)),
            NorFlashErrorKind::NotAligned
        );
        assert_eq!(
            kind(Flash::erase(&mut f, 0, 4 * 4096)),
            NorFlashErrorKind::OutOfBounds
        );
        assert_eq!(
            kind(Flash::write(&mut f, 3 * 4096 - 4, &[0; 8])),
            NorFlashErrorKind::OutOfBounds
        );
        Flash::write(&mut f, 3 * 4096 - 4, &[0; 4]).unwrap();
    }

    #[test]
    fn an_injected_fault_fails_once_and_changes_nothing() {
        let mut mem = [0u8; 4096];
        let mut f = RamNor::new(&mut mem, Some(Fault::Erase(2)));
        Flash::erase(&mut f, 0, 4096).unwrap();
        Flash::write(&mut f, 0, &[0; 4]).unwrap();
        let e = Flash::erase(&mut f, 0, 4096).unwrap_err();
        assert_eq!((e.op, e.kind), (FlashOp::Erase, NorFlashErrorKind::Other));
        let mut b = [1u8; 8];
        Flash::read(&mut f, 0, &mut b).unwrap();
        assert_eq!(b, [0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        Flash::erase(&mut f, 0, 4096).unwrap();
        let mut mem = [0xFFu8; 4096];
        let mut f = RamNor::new(&mut mem, Some(Fault::Write(1)));
        assert_eq!(
            Flash::write(&mut f, 0, &[0; 4]).unwrap_err().op,
            FlashOp::Write
        );
        Flash::write(&mut f, 0, &[0; 4]).unwrap();
        assert_eq!(f.counts(), (2, 0));
    }
}
