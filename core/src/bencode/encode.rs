//! Canonical bencode encoder over `embedded_io::Write`.

use core::fmt;

use embedded_io::{ErrorType, Write};

use super::decode::TokenKind;
use super::value::Value;

/// Maximum nesting depth the encoder tracks.
pub const MAX_ENCODE_DEPTH: usize = 64;

/// Why encoding failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError<E> {
    /// The sink failed (for [`SliceWriter`]: the buffer is full).
    Write(E),
    /// A key not greater than the previous key of the same dict.
    UnsortedKey,
    /// A key equal to the previous key of the same dict.
    DuplicateKey,
    /// More than [`MAX_ENCODE_DEPTH`] open containers.
    DepthLimit,
    /// `key` called outside a dict, or where a value was expected.
    UnexpectedKey,
    /// A value written in a dict where a key was expected.
    MissingKey,
    /// `end` called right after a key.
    MissingValue,
    /// `end` with no open container.
    Unbalanced,
    /// A second top-level value.
    MultipleRoots,
    /// `finish` with open containers or no value at all.
    Unfinished,
}

impl<E: fmt::Debug> fmt::Display for EncodeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Write(e) => write!(f, "bencode encoder: write failed: {e:?}"),
            other => write!(f, "bencode encoder: {other:?}"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Frame<'k> {
    dict: bool,
    /// Dict: the last key written (for order checking).
    last_key: Option<&'k [u8]>,
    /// Dict: a key was written and its value is pending.
    want_value: bool,
}

/// Writes canonical bencode. Dict keys must be given in strictly increasing
/// byte order (BEP 3); keys are borrowed (`'k`) so order can be checked
/// without copying.
pub struct Encoder<'k, W: Write> {
    out: W,
    stack: heapless::Vec<Frame<'k>, MAX_ENCODE_DEPTH>,
    roots: usize,
    written: usize,
}

impl<'k, W: Write> Encoder<'k, W> {
    /// An encoder writing to `out`.
    pub fn new(out: W) -> Self {
        Encoder {
            out,
            stack: heapless::Vec::new(),
            roots: 0,
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> usize {
        self.written
    }

    fn raw(&mut self, b: &[u8]) -> Result<(), EncodeError<W::Error>> {
        self.out.write_all(b).map_err(EncodeError::Write)?;
        self.written += b.len();
        Ok(())
    }

    /// Checks that a value may be written here and records it.
    fn value_slot(&mut self) -> Result<(), EncodeError<W::Error>> {
        match self.stack.last_mut() {
            None => {
                if self.roots > 0 {
                    return Err(EncodeError::MultipleRoots);
                }
                self.roots += 1;
            }
            Some(f) if f.dict => {
                if !f.want_value {
                    return Err(EncodeError::MissingKey);
                }
                f.want_value = false;
            }
            Some(_) => {}
        }
        Ok(())
    }

    fn decimal(&mut self, v: u64, neg: bool) -> Result<(), EncodeError<W::Error>> {
        let mut buf = [0u8; 21];
        let mut i = buf.len();
        let mut v = v;
        loop {
            i -= 1;
            if let Some(slot) = buf.get_mut(i) {
                *slot = b'0' + (v % 10) as u8;
            }
            v /= 10;
            if v == 0 {
                break;
            }
        }
        if neg {
            i -= 1;
            if let Some(slot) = buf.get_mut(i) {
                *slot = b'-';
            }
        }
        self.raw(buf.get(i..).unwrap_or_default())
    }

    /// `i<v>e`.
    pub fn int(&mut self, v: i64) -> Result<(), EncodeError<W::Error>> {
        self.value_slot()?;
        self.raw(b"i")?;
        self.decimal(v.unsigned_abs(), v < 0)?;
        self.raw(b"e")
    }

    fn string(&mut self, b: &[u8]) -> Result<(), EncodeError<W::Error>> {
        self.decimal(b.len() as u64, false)?;
        self.raw(b":")?;
        self.raw(b)
    }

    /// `<len>:<b>` as a value.
    pub fn bytes(&mut self, b: &[u8]) -> Result<(), EncodeError<W::Error>> {
        self.value_slot()?;
        self.string(b)
    }

    /// A dict key; must sort after the previous key of this dict.
    pub fn key(&mut self, k: &'k [u8]) -> Result<(), EncodeError<W::Error>> {
        let Some(f) = self.stack.last_mut() else {
            return Err(EncodeError::UnexpectedKey);
        };
        if !f.dict || f.want_value {
            return Err(EncodeError::UnexpectedKey);
        }
        if let Some(prev) = f.last_key {
            match k.cmp(prev) {
                core::cmp::Ordering::Greater => {}
                core::cmp::Ordering::Equal => return Err(EncodeError::DuplicateKey),
                core::cmp::Ordering::Less => return Err(EncodeError::UnsortedKey),
            }
        }
        f.last_key = Some(k);
        f.want_value = true;
        self.string(k)
    }

    fn begin(&mut self, dict: bool) -> Result<(), EncodeError<W::Error>> {
        if self.stack.is_full() {
            return Err(EncodeError::DepthLimit);
        }
        self.value_slot()?;
        self.raw(if dict { b"d" } else { b"l" })?;
        self.stack
            .push(Frame {
                dict,
                last_key: None,
                want_value: false,
            })
            .map_err(|_| EncodeError::DepthLimit)
    }

    /// Opens a list.
    pub fn begin_list(&mut self) -> Result<(), EncodeError<W::Error>> {
        self.begin(false)
    }

    /// Opens a dict.
    pub fn begin_dict(&mut self) -> Result<(), EncodeError<W::Error>> {
        self.begin(true)
    }

    /// Closes the innermost list or dict.
    pub fn end(&mut self) -> Result<(), EncodeError<W::Error>> {
        match self.stack.last() {
            None => return Err(EncodeError::Unbalanced),
            Some(f) if f.want_value => return Err(EncodeError::MissingValue),
            Some(_) => {}
        }
        self.raw(b"e")?;
        self.stack.pop();
        Ok(())
    }

    /// Re-encodes a decoded value (iteratively, no recursion). Fails with
    /// [`EncodeError::UnsortedKey`] for a dict decoded in lenient mode whose
    /// keys are out of order.
    pub fn value(&mut self, v: Value<'k, '_>) -> Result<(), EncodeError<W::Error>> {
        let tokens = v.doc.tokens;
        let end = v.token().next();
        // (index after the container's subtree, is dict, children so far)
        let mut open: heapless::Vec<(usize, bool, usize), MAX_ENCODE_DEPTH> = heapless::Vec::new();
        let mut i = v.idx;
        loop {
            while let Some(&(next, _, _)) = open.last() {
                if i < next {
                    break;
                }
                self.end()?;
                open.pop();
            }
            if i >= end {
                break;
            }
            let Some(tok) = tokens.get(i) else { break };
            let as_key = match open.last_mut() {
                Some((_, dict, n)) => {
                    let k = *dict && *n % 2 == 0;
                    *n += 1;
                    k
                }
                None => false,
            };
            let here = Value { doc: v.doc, idx: i };
            match tok.kind() {
                TokenKind::Int => self.int(here.as_int().unwrap_or(0))?,
                TokenKind::Bytes => {
                    let b = here.as_bytes().unwrap_or_default();
                    if as_key {
                        self.key(b)?
                    } else {
                        self.bytes(b)?
                    }
                }
                kind @ (TokenKind::List | TokenKind::Dict) => {
                    let dict = kind == TokenKind::Dict;
                    self.begin(dict)?;
                    open.push((tok.next(), dict, 0))
                        .map_err(|_| EncodeError::DepthLimit)?;
                }
            }
            i += 1;
        }
        Ok(())
    }

    /// Checks that exactly one complete value was written; returns the sink
    /// and the byte count.
    pub fn finish(self) -> Result<(W, usize), EncodeError<W::Error>> {
        if !self.stack.is_empty() || self.roots == 0 {
            return Err(EncodeError::Unfinished);
        }
        Ok((self.out, self.written))
    }
}

/// The [`SliceWriter`] ran out of room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceWriterFull;

impl fmt::Display for SliceWriterFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("output buffer full")
    }
}

impl core::error::Error for SliceWriterFull {}

impl embedded_io::Error for SliceWriterFull {
    fn kind(&self) -> embedded_io::ErrorKind {
        embedded_io::ErrorKind::OutOfMemory
    }
}

/// An `embedded_io::Write` over a caller's `&mut [u8]`.
#[derive(Debug)]
pub struct SliceWriter<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> SliceWriter<'b> {
    /// A writer filling `buf` from the start.
    pub fn new(buf: &'b mut [u8]) -> Self {
        SliceWriter { buf, pos: 0 }
    }

    /// Bytes written.
    pub fn len(&self) -> usize {
        self.pos
    }

    /// True if nothing was written.
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// The written prefix.
    pub fn written(&self) -> &[u8] {
        self.buf.get(..self.pos).unwrap_or_default()
    }
}

impl ErrorType for SliceWriter<'_> {
    type Error = SliceWriterFull;
}

impl Write for SliceWriter<'_> {
    fn write(&mut self, data: &[u8]) -> Result<usize, SliceWriterFull> {
        if data.is_empty() {
            return Ok(0);
        }
        let room = self.buf.len() - self.pos;
        if room == 0 {
            return Err(SliceWriterFull);
        }
        let n = room.min(data.len());
        let dst = self
            .buf
            .get_mut(self.pos..self.pos + n)
            .ok_or(SliceWriterFull)?;
        dst.copy_from_slice(data.get(..n).ok_or(SliceWriterFull)?);
        self.pos += n;
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), SliceWriterFull> {
        Ok(())
    }
}
