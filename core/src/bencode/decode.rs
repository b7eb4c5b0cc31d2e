//! The one-pass tokenizer.

use core::fmt;

use super::{DEFAULT_MAX_DEPTH, MAX_DEPTH, MAX_INPUT_LEN};

/// What kind of value a [`Token`] stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// `i<digits>e`.
    Int,
    /// `<len>:<bytes>`.
    Bytes,
    /// `l ... e`.
    List,
    /// `d ... e`.
    Dict,
}

/// One decoded value: its kind and byte span. Containers are followed by
/// their children in pre-order; `next` is the index just past the subtree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    kind: TokenKind,
    /// Offset of the first byte of the value (`i`, first length digit, `l`, `d`).
    start: u32,
    /// Offset one past the last byte of the value.
    end: u32,
    /// Bytes: offset of the payload. Containers: number of children.
    aux: u32,
    /// Index of the first token after this value's subtree.
    next: u32,
}

impl Token {
    /// An empty token, to initialise the caller's array.
    pub const EMPTY: Token = Token {
        kind: TokenKind::Int,
        start: 0,
        end: 0,
        aux: 0,
        next: 0,
    };

    /// The value's kind.
    pub fn kind(&self) -> TokenKind {
        self.kind
    }

    /// Byte span `start..end` of the whole value in the input.
    pub fn span(&self) -> core::ops::Range<usize> {
        self.start as usize..self.end as usize
    }

    pub(super) fn aux(&self) -> usize {
        self.aux as usize
    }

    pub(super) fn next(&self) -> usize {
        self.next as usize
    }
}

/// How strictly dictionary keys are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Canonical bencode: keys sorted (raw byte order) and unique.
    #[default]
    Strict,
    /// Accept unsorted and repeated keys (everything else stays strict).
    Lenient,
}

/// Decoder parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Key order checking.
    pub mode: Mode,
    /// Maximum nesting depth (a top-level scalar has depth 0, `le` depth 1);
    /// clamped to [`MAX_DEPTH`].
    pub max_depth: usize,
    /// Accept (and ignore) bytes after the one top-level value. Only for
    /// stored `.torrent` files, where editors and tools append a newline;
    /// never for protocol messages, where they would hide a second value.
    pub allow_trailing: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            mode: Mode::Strict,
            max_depth: DEFAULT_MAX_DEPTH,
            allow_trailing: false,
        }
    }
}

impl DecodeOptions {
    /// Lenient key order, default depth.
    pub fn lenient() -> Self {
        DecodeOptions {
            mode: Mode::Lenient,
            ..Self::default()
        }
    }

    /// For `.torrent` files: lenient key order and trailing bytes allowed
    /// (the info-hash covers only the exact `info` bytes, so neither
    /// changes it).
    pub fn torrent_file() -> Self {
        DecodeOptions {
            allow_trailing: true,
            ..Self::lenient()
        }
    }
}

/// What was wrong with the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input ended inside a value (or was empty).
    UnexpectedEnd,
    /// A byte that cannot start a value (expected `i`, `l`, `d`, `e` or a digit).
    UnexpectedByte(u8),
    /// Integer with no digits (`ie`, `i-e`).
    EmptyInteger,
    /// Integer or string length with a leading zero (`i03e`, `01:a`).
    LeadingZero,
    /// `i-0e`.
    NegativeZero,
    /// Integer does not fit in `i64`.
    IntegerOverflow,
    /// String length larger than the input (or than `u32`).
    LengthOverflow,
    /// A string length not followed by `:`.
    MissingColon,
    /// Dictionary key that is not a byte string.
    KeyNotString,
    /// A dictionary ended after a key, with no value.
    MissingValue,
    /// Strict mode: a key not greater than the previous one.
    UnsortedKey,
    /// Strict mode: a key equal to the previous one.
    DuplicateKey,
    /// Nesting deeper than the configured limit.
    DepthLimit,
    /// More values than tokens provided.
    TokenLimit,
    /// Bytes after the top-level value.
    TrailingBytes,
    /// Input longer than [`MAX_INPUT_LEN`].
    InputTooLarge,
}

/// A decode error: what and where (byte offset into the input).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    /// What was wrong.
    pub kind: ErrorKind,
    /// Byte offset at which it was detected.
    pub offset: usize,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::UnexpectedEnd => f.write_str("unexpected end of input"),
            ErrorKind::UnexpectedByte(b) => write!(f, "unexpected byte 0x{b:02x}"),
            ErrorKind::EmptyInteger => f.write_str("integer has no digits"),
            ErrorKind::LeadingZero => f.write_str("number has a leading zero"),
            ErrorKind::NegativeZero => f.write_str("negative zero"),
            ErrorKind::IntegerOverflow => f.write_str("integer does not fit in 64 bits"),
            ErrorKind::LengthOverflow => f.write_str("string length exceeds the input"),
            ErrorKind::MissingColon => f.write_str("string length not followed by ':'"),
            ErrorKind::KeyNotString => f.write_str("dictionary key is not a byte string"),
            ErrorKind::MissingValue => f.write_str("dictionary key has no value"),
            ErrorKind::UnsortedKey => f.write_str("dictionary keys are not sorted"),
            ErrorKind::DuplicateKey => f.write_str("duplicate dictionary key"),
            ErrorKind::DepthLimit => f.write_str("nesting depth limit exceeded"),
            ErrorKind::TokenLimit => f.write_str("token limit exceeded"),
            ErrorKind::TrailingBytes => f.write_str("trailing bytes after the value"),
            ErrorKind::InputTooLarge => f.write_str("input too large"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bencode: {} at byte {}", self.kind, self.offset)
    }
}

impl core::error::Error for Error {}

/// The result of a successful [`decode`]: the input and its tokens.
#[derive(Clone, Copy, Debug)]
pub struct Document<'a, 't> {
    pub(super) input: &'a [u8],
    pub(super) tokens: &'t [Token],
}

impl<'a, 't> Document<'a, 't> {
    /// The decoded input.
    pub fn input(&self) -> &'a [u8] {
        self.input
    }

    /// The tokens, in pre-order (token 0 is the root value).
    pub fn tokens(&self) -> &'t [Token] {
        self.tokens
    }
}

const NONE: u32 = u32::MAX;

fn err(kind: ErrorKind, offset: usize) -> Error {
    Error { kind, offset }
}

/// The innermost open container, kept in locals while it is open (its
/// token holds the same fields only while a child container is open).
#[derive(Clone, Copy)]
struct Open {
    /// Token index, or `NONE` at top level.
    idx: u32,
    dict: bool,
    children: u32,
    /// Dicts: token index of the last key, or `NONE`.
    last_key: u32,
    /// Dicts: payload range of the last key (cached for strict ordering).
    key_start: usize,
    key_end: usize,
}

const TOP: Open = Open {
    idx: NONE,
    dict: false,
    children: 0,
    last_key: NONE,
    key_start: 0,
    key_end: 0,
};

/// Decodes exactly one bencoded value spanning all of `input`.
///
/// `tokens` receives one token per value; its length is the token limit.
/// No recursion, no allocation; work is linear in the input length (plus
/// one key comparison per dictionary entry in strict mode).
pub fn decode<'a, 't>(
    input: &'a [u8],
    tokens: &'t mut [Token],
    opts: DecodeOptions,
) -> Result<Document<'a, 't>, Error> {
    if input.len() > MAX_INPUT_LEN {
        return Err(err(ErrorKind::InputTooLarge, MAX_INPUT_LEN));
    }
    let max_depth = opts.max_depth.min(MAX_DEPTH);
    let strict = opts.mode == Mode::Strict;
    let mut pos = 0usize;
    let mut count = 0usize;
    let mut depth = 0usize;
    // While a container is open, its token's `next` links to its parent,
    // `aux` and `end` hold the parent's saved `children` and `last_key`.
    let mut cur = TOP;
    loop {
        let Some(&byte) = input.get(pos) else {
            return Err(err(ErrorKind::UnexpectedEnd, pos));
        };
        let want_key = cur.dict && cur.children % 2 == 0;

        if byte == b'e' {
            if cur.idx == NONE {
                return Err(err(ErrorKind::UnexpectedByte(b'e'), pos));
            }
            if cur.dict && !want_key {
                return Err(err(ErrorKind::MissingValue, pos));
            }
            pos += 1;
            let Some(tok) = tokens.get_mut(cur.idx as usize) else {
                return Err(err(ErrorKind::TokenLimit, pos));
            };
            let parent = tok.next;
            tok.end = pos as u32;
            tok.next = count as u32;
            tok.aux = if cur.dict {
                cur.children / 2
            } else {
                cur.children
            };
            depth -= 1;
            cur = restore(tokens, parent);
        } else {
            let idx = count;
            let Some(slot) = tokens.get_mut(idx) else {
                return Err(err(ErrorKind::TokenLimit, pos));
            };
            let start = pos;
            match byte {
                b'0'..=b'9' => {
                    let (payload, end) = scan_bytes(input, pos)?;
                    pos = end;
                    *slot = Token {
                        kind: TokenKind::Bytes,
                        start: start as u32,
                        end: end as u32,
                        aux: payload as u32,
                        next: (idx + 1) as u32,
                    };
                    if want_key {
                        if strict && cur.last_key != NONE {
                            let prev = input.get(cur.key_start..cur.key_end).unwrap_or_default();
                            let key = input.get(payload..end).unwrap_or_default();
                            match key.cmp(prev) {
                                core::cmp::Ordering::Greater => {}
                                core::cmp::Ordering::Equal => {
                                    return Err(err(ErrorKind::DuplicateKey, start))
                                }
                                core::cmp::Ordering::Less => {
                                    return Err(err(ErrorKind::UnsortedKey, start))
                                }
                            }
                        }
                        cur.last_key = idx as u32;
                        cur.key_start = payload;
                        cur.key_end = end;
                    }
                    cur.children += 1;
                    count += 1;
                }
                _ if want_key => return Err(err(ErrorKind::KeyNotString, pos)),
                b'i' => {
                    pos = scan_int(input, pos + 1)?;
                    *slot = Token {
                        kind: TokenKind::Int,
                        start: start as u32,
                        end: pos as u32,
                        aux: 0,
                        next: (idx + 1) as u32,
                    };
                    cur.children += 1;
                    count += 1;
                }
                b'l' | b'd' => {
                    if depth >= max_depth {
                        return Err(err(ErrorKind::DepthLimit, pos));
                    }
                    pos += 1;
                    let dict = byte == b'd';
                    *slot = Token {
                        kind: if dict {
                            TokenKind::Dict
                        } else {
                            TokenKind::List
                        },
                        start: start as u32,
                        end: NONE,
                        aux: 0,
                        next: cur.idx,
                    };
                    cur.children += 1;
                    count += 1;
                    // Save the parent's state in its token while we descend.
                    if let Some(parent) = tokens.get_mut(cur.idx as usize) {
                        parent.aux = cur.children;
                        parent.end = cur.last_key;
                    }
                    depth += 1;
                    cur = Open {
                        idx: idx as u32,
                        dict,
                        ..TOP
                    };
                }
                other => return Err(err(ErrorKind::UnexpectedByte(other), pos)),
            }
        }
        if cur.idx == NONE {
            break;
        }
    }
    if pos != input.len() && !opts.allow_trailing {
        return Err(err(ErrorKind::TrailingBytes, pos));
    }
    let tokens: &'t [Token] = tokens;
    Ok(Document {
        input,
        tokens: tokens.get(..count).unwrap_or_default(),
    })
}

/// Reloads the state of the open container `idx` saved in its token.
fn restore(tokens: &[Token], idx: u32) -> Open {
    let Some(t) = tokens.get(idx as usize).filter(|_| idx != NONE) else {
        return TOP;
    };
    let mut o = Open {
        idx,
        dict: t.kind == TokenKind::Dict,
        children: t.aux,
        last_key: t.end,
        ..TOP
    };
    if let Some(k) = tokens
        .get(o.last_key as usize)
        .filter(|_| o.last_key != NONE)
    {
        o.key_start = k.aux();
        o.key_end = k.end as usize;
    }
    o
}

/// Scans `[-]digits e` starting after the `i`; returns the offset after `e`.
fn scan_int(input: &[u8], mut pos: usize) -> Result<usize, Error> {
    let neg = input.get(pos) == Some(&b'-');
    if neg {
        pos += 1;
    }
    let digits_start = pos;
    // i64::MIN's magnitude does not fit in i64: accumulate in u64.
    let mut mag: u64 = 0;
    while let Some(&b) = input.get(pos) {
        if !b.is_ascii_digit() {
            break;
        }
        mag = mag
            .checked_mul(10)
            .and_then(|m| m.checked_add(u64::from(b - b'0')))
            .ok_or(err(ErrorKind::IntegerOverflow, pos))?;
        pos += 1;
    }
    let ndigits = pos - digits_start;
    match input.get(pos) {
        None => return Err(err(ErrorKind::UnexpectedEnd, pos)),
        Some(b'e') => {}
        Some(&b) => return Err(err(ErrorKind::UnexpectedByte(b), pos)),
    }
    if ndigits == 0 {
        return Err(err(ErrorKind::EmptyInteger, pos));
    }
    if input.get(digits_start) == Some(&b'0') {
        if ndigits > 1 {
            return Err(err(ErrorKind::LeadingZero, digits_start));
        }
        if neg {
            return Err(err(ErrorKind::NegativeZero, digits_start));
        }
    }
    let limit = if neg {
        i64::MIN.unsigned_abs()
    } else {
        i64::MAX as u64
    };
    if mag > limit {
        return Err(err(ErrorKind::IntegerOverflow, digits_start));
    }
    Ok(pos + 1)
}

/// Scans `len:bytes`; returns (payload offset, end offset).
fn scan_bytes(input: &[u8], mut pos: usize) -> Result<(usize, usize), Error> {
    let digits_start = pos;
    let mut len: u64 = 0;
    while let Some(&b) = input.get(pos) {
        if !b.is_ascii_digit() {
            break;
        }
        len = len
            .checked_mul(10)
            .and_then(|m| m.checked_add(u64::from(b - b'0')))
            .filter(|&l| l <= MAX_INPUT_LEN as u64)
            .ok_or(err(ErrorKind::LengthOverflow, digits_start))?;
        pos += 1;
    }
    match input.get(pos) {
        None => return Err(err(ErrorKind::UnexpectedEnd, pos)),
        Some(b':') => {}
        Some(_) => return Err(err(ErrorKind::MissingColon, pos)),
    }
    if pos - digits_start > 1 && input.get(digits_start) == Some(&b'0') {
        return Err(err(ErrorKind::LeadingZero, digits_start));
    }
    let payload = pos + 1;
    let remaining = input.len() - payload;
    if len > remaining as u64 {
        return Err(err(ErrorKind::LengthOverflow, digits_start));
    }
    Ok((payload, payload + len as usize))
}

/// Parses the digits of an already-validated integer token.
pub(super) fn int_value(raw: &[u8]) -> Option<i64> {
    let body = raw.get(1..raw.len().checked_sub(1)?)?;
    let (neg, digits) = match body.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, body),
    };
    let mut v: i64 = 0;
    for &d in digits {
        let d = i64::from(d.checked_sub(b'0')?);
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}
