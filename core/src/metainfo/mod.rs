//! `.torrent` files: BEP 3 metainfo, BEP 12 multitracker `announce-list`,
//! BEP 27 `private`, BEP 47 file attributes; the v1 part of BEP 52 hybrid
//! torrents (pure v2 torrents are refused).
//!
//! [`Metainfo::parse`] decodes with the bencode decoder in lenient key
//! order (real torrents break it; the info-hash is taken over the exact
//! `info` bytes either way), then validates everything a client must not
//! trust before it opens a file:
//! - piece length in `limits.min_piece_length ..= limits.max_piece_length`;
//! - `pieces` a multiple of 20 bytes, and exactly `ceil(total / piece length)`
//!   hashes;
//! - exactly one of `length` (single file) or `files` (multi file); file
//!   lengths non-negative, their sum without overflow;
//! - every path component (and the name) non-empty, valid UTF-8, not `.` or
//!   `..` (nor only dots and spaces), without `/`, `\`, NUL or control
//!   characters, not a Windows drive (`C:`), at most
//!   [`MAX_COMPONENT_LEN`] bytes; at most `limits.max_path_depth` components;
//! - at most `limits.max_files` files.
//!
//! - no key the parser reads repeated within one dict (lenient decoding
//!   would otherwise let two parsers see different torrents under one
//!   info-hash).
//!
//! Windows device names (`CON`, `NUL.txt`) are not refused here: they are
//! a property of one file system, for a Windows shell to sanitise.
//!
//! Every error names the field and the byte offset of the offending value.

use core::fmt;

use sha1::{Digest, Sha1};

use crate::bencode::{self, DecodeOptions, ListIter, Token, TokenKind, Value};
use crate::id::InfoHash;

/// Length of one SHA-1 piece hash.
pub const PIECE_HASH_LEN: usize = 20;
/// Longest path component or name, in bytes (common file-system limit).
pub const MAX_COMPONENT_LEN: usize = 255;
/// Default largest piece length: 256 MiB (libtorrent's limit is 128 MiB for
/// creation; larger is not seen in the wild).
pub const DEFAULT_MAX_PIECE_LENGTH: u64 = 256 << 20;
/// Default smallest piece length: 1 KiB (tools create ≥ 16 KiB).
pub const DEFAULT_MIN_PIECE_LENGTH: u64 = 1 << 10;
/// Default deepest file path (components, excluding the torrent's name).
pub const DEFAULT_MAX_PATH_DEPTH: usize = 32;
/// Default most files in a torrent.
pub const DEFAULT_MAX_FILES: usize = 1 << 20;

/// Parse limits (see module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Smallest accepted piece length.
    pub min_piece_length: u64,
    /// Largest accepted piece length.
    pub max_piece_length: u64,
    /// Most path components per file.
    pub max_path_depth: usize,
    /// Most files.
    pub max_files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_piece_length: DEFAULT_MIN_PIECE_LENGTH,
            max_piece_length: DEFAULT_MAX_PIECE_LENGTH,
            max_path_depth: DEFAULT_MAX_PATH_DEPTH,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

/// What was wrong with a path component or name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// Empty component.
    Empty,
    /// `.` or `..`.
    Dots,
    /// Contains `/` or `\` (would be a separator or absolute path).
    Separator,
    /// Contains NUL.
    Nul,
    /// A Windows drive prefix such as `C:`.
    Drive,
    /// Not UTF-8.
    NotUtf8,
    /// Longer than [`MAX_COMPONENT_LEN`].
    TooLong,
    /// A control character (0x01–0x1f, 0x7f).
    Control,
}

/// What was wrong with the torrent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not valid bencode.
    Bencode(bencode::ErrorKind),
    /// A required key is missing.
    Missing(&'static str),
    /// A key has the wrong bencode type.
    WrongType(&'static str),
    /// A text field is not UTF-8.
    NotUtf8(&'static str),
    /// Piece length zero, negative or outside the limits.
    BadPieceLength,
    /// `pieces` is not a multiple of 20 bytes.
    PiecesNotMultipleOf20,
    /// The number of piece hashes does not match the total length.
    PieceCountMismatch,
    /// A negative file length.
    NegativeLength,
    /// File lengths overflow when summed.
    LengthOverflow,
    /// Both `length` and `files`, or neither.
    AmbiguousLayout,
    /// A bad name or path component.
    BadPath(PathError),
    /// A file path with no components.
    EmptyPath,
    /// More path components than allowed.
    PathTooDeep,
    /// More files than allowed.
    TooManyFiles,
    /// A BEP 52 v2-only torrent (no v1 `pieces`).
    V2Only,
    /// A key the parser reads appears twice in one dict.
    DuplicateKey(&'static str),
}

/// A metainfo error: what, and the byte offset of the offending value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    /// What was wrong.
    pub kind: ErrorKind,
    /// Byte offset into the `.torrent` file.
    pub offset: usize,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::Empty => "empty path component",
            PathError::Dots => "'.' or '..' path component",
            PathError::Separator => "path component contains '/' or '\\'",
            PathError::Nul => "path component contains NUL",
            PathError::Drive => "path component is a drive letter",
            PathError::NotUtf8 => "path component is not UTF-8",
            PathError::TooLong => "path component too long",
            PathError::Control => "path component contains a control character",
        })
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Bencode(k) => write!(f, "{k}"),
            ErrorKind::Missing(key) => write!(f, "missing '{key}'"),
            ErrorKind::WrongType(key) => write!(f, "'{key}' has the wrong type"),
            ErrorKind::NotUtf8(key) => write!(f, "'{key}' is not UTF-8"),
            ErrorKind::BadPieceLength => f.write_str("piece length out of range"),
            ErrorKind::PiecesNotMultipleOf20 => {
                f.write_str("'pieces' is not a multiple of 20 bytes")
            }
            ErrorKind::PieceCountMismatch => {
                f.write_str("piece count does not match total length / piece length")
            }
            ErrorKind::NegativeLength => f.write_str("negative file length"),
            ErrorKind::LengthOverflow => f.write_str("file lengths overflow"),
            ErrorKind::AmbiguousLayout => f.write_str("need exactly one of 'length' and 'files'"),
            ErrorKind::BadPath(p) => write!(f, "{p}"),
            ErrorKind::EmptyPath => f.write_str("file path has no components"),
            ErrorKind::PathTooDeep => f.write_str("file path too deep"),
            ErrorKind::TooManyFiles => f.write_str("too many files"),
            ErrorKind::V2Only => f.write_str("v2-only torrent (BEP 52) is not supported"),
            ErrorKind::DuplicateKey(key) => write!(f, "'{key}' appears twice"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "torrent: {} at byte {}", self.kind, self.offset)
    }
}

impl core::error::Error for Error {}

fn err<T>(kind: ErrorKind, at: &Value<'_, '_>) -> Result<T, Error> {
    Err(Error {
        kind,
        offset: at.offset(),
    })
}

/// Checks one name or path component (see module docs).
pub fn check_component(c: &[u8]) -> Result<&str, PathError> {
    if c.is_empty() {
        return Err(PathError::Empty);
    }
    if c.len() > MAX_COMPONENT_LEN {
        return Err(PathError::TooLong);
    }
    // `.`, `..`, and names of only dots and spaces: Windows strips trailing
    // dots and spaces, so `.. ` or `...` would resolve like `..`.
    if c.iter().all(|&b| b == b'.' || b == b' ') {
        return Err(if c.contains(&b'.') {
            PathError::Dots
        } else {
            PathError::Empty
        });
    }
    if c.iter().any(|&b| b == b'/' || b == b'\\') {
        return Err(PathError::Separator);
    }
    if c.contains(&0) {
        return Err(PathError::Nul);
    }
    if c.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(PathError::Control);
    }
    if let [d, b':', ..] = c {
        if d.is_ascii_alphabetic() {
            return Err(PathError::Drive);
        }
    }
    core::str::from_utf8(c).map_err(|_| PathError::NotUtf8)
}

/// Single- or multi-file layout.
#[derive(Clone, Copy, Debug)]
enum Layout<'a, 't> {
    Single(u64),
    Multi(Value<'a, 't>),
}

/// A parsed, validated `.torrent`. Borrows the input and its tokens.
#[derive(Clone, Copy, Debug)]
pub struct Metainfo<'a, 't> {
    info_hash: InfoHash,
    info: Value<'a, 't>,
    name: &'a str,
    piece_length: u64,
    pieces: &'a [u8],
    total_length: u64,
    file_count: usize,
    private: bool,
    layout: Layout<'a, 't>,
    announce: Option<&'a str>,
    announce_list: Option<Value<'a, 't>>,
    comment: Option<&'a str>,
    created_by: Option<&'a str>,
    creation_date: Option<i64>,
}

/// Looks up `key` in dict `d`, refusing a repeated key: lenient decoding
/// accepts repeats, and parsers that take the last value would otherwise see
/// a different torrent under the same info-hash. Linear in the dict size.
fn field<'a, 't>(d: &Value<'a, 't>, key: &'static str) -> Result<Option<Value<'a, 't>>, Error> {
    let mut found = None;
    for (k, v) in d.as_dict().into_iter().flatten() {
        if k == key.as_bytes() {
            if found.is_some() {
                return err(ErrorKind::DuplicateKey(key), &v);
            }
            found = Some(v);
        }
    }
    Ok(found)
}

fn opt_str<'a>(d: &Value<'a, '_>, key: &'static str) -> Result<Option<&'a str>, Error> {
    match field(d, key)? {
        None => Ok(None),
        Some(v) => match v.as_bytes() {
            None => err(ErrorKind::WrongType(key), &v),
            Some(b) => match core::str::from_utf8(b) {
                Ok(s) => Ok(Some(s)),
                Err(_) => err(ErrorKind::NotUtf8(key), &v),
            },
        },
    }
}

fn req<'a, 't>(d: &Value<'a, 't>, key: &'static str) -> Result<Value<'a, 't>, Error> {
    field(d, key)?.map_or_else(|| err(ErrorKind::Missing(key), d), Ok)
}

fn int(v: &Value<'_, '_>, key: &'static str) -> Result<i64, Error> {
    v.as_int()
        .map_or_else(|| err(ErrorKind::WrongType(key), v), Ok)
}

/// One file of a torrent.
#[derive(Clone, Debug)]
pub struct File<'a, 't> {
    /// Length in bytes.
    pub length: u64,
    /// Offset of the file's first byte in the torrent's byte stream.
    pub offset: u64,
    /// BEP 47 `attr` (e.g. `p` for a padding file), empty if absent.
    pub attr: &'a [u8],
    path: Option<ListIter<'a, 't>>,
    single_name: &'a str,
}

impl<'a, 't> File<'a, 't> {
    /// The path components (validated at parse time), excluding the
    /// torrent's name. A single-file torrent's one file has its name as the
    /// only component.
    pub fn path(&self) -> impl Iterator<Item = &'a str> + use<'a, 't> {
        let single = self.path.is_none().then_some(self.single_name);
        let multi = self
            .path
            .clone()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str());
        single.into_iter().chain(multi)
    }

    /// True for a BEP 47 padding file.
    pub fn is_padding(&self) -> bool {
        self.attr.contains(&b'p')
    }
}

/// Iterator over a torrent's files (see [`Metainfo::files`]).
#[derive(Clone, Debug)]
pub struct Files<'a, 't> {
    single: Option<u64>,
    multi: Option<ListIter<'a, 't>>,
    name: &'a str,
    offset: u64,
}

impl<'a, 't> Iterator for Files<'a, 't> {
    type Item = File<'a, 't>;

    fn next(&mut self) -> Option<File<'a, 't>> {
        if let Some(length) = self.single.take() {
            return Some(File {
                length,
                offset: 0,
                attr: b"",
                path: None,
                single_name: self.name,
            });
        }
        let f = self.multi.as_mut()?.next()?;
        let length = f.get(b"length").and_then(|v| v.as_int()).unwrap_or(0) as u64;
        let file = File {
            length,
            offset: self.offset,
            attr: f
                .get(b"attr")
                .and_then(|v| v.as_bytes())
                .unwrap_or_default(),
            path: f.get(b"path").and_then(|v| v.as_list()),
            single_name: self.name,
        };
        self.offset = self.offset.saturating_add(length);
        Some(file)
    }
}

impl<'a, 't> Metainfo<'a, 't> {
    /// Decodes and validates a `.torrent`. `tokens` bounds the number of
    /// bencode values (a multi-file torrent needs about 6 per file).
    pub fn parse(input: &'a [u8], tokens: &'t mut [Token], limits: &Limits) -> Result<Self, Error> {
        let doc = bencode::decode(input, tokens, DecodeOptions::lenient()).map_err(|e| Error {
            kind: ErrorKind::Bencode(e.kind),
            offset: e.offset,
        })?;
        let Some(root) = doc.root() else {
            return Err(Error {
                kind: ErrorKind::Missing("info"),
                offset: 0,
            });
        };
        if root.kind() != TokenKind::Dict {
            return err(ErrorKind::WrongType("root"), &root);
        }
        let info = req(&root, "info")?;
        if info.kind() != TokenKind::Dict {
            return err(ErrorKind::WrongType("info"), &info);
        }

        let name_v = req(&info, "name")?;
        let name_b = name_v
            .as_bytes()
            .map_or_else(|| err(ErrorKind::WrongType("name"), &name_v), Ok)?;
        let name = check_component(name_b).or_else(|p| err(ErrorKind::BadPath(p), &name_v))?;

        let pl_v = req(&info, "piece length")?;
        let pl = int(&pl_v, "piece length")?;
        let piece_length = u64::try_from(pl).unwrap_or(0);
        if piece_length < limits.min_piece_length.max(1) || piece_length > limits.max_piece_length {
            return err(ErrorKind::BadPieceLength, &pl_v);
        }

        let pieces_v = match field(&info, "pieces")? {
            Some(v) => v,
            None if field(&info, "file tree")?.is_some() => return err(ErrorKind::V2Only, &info),
            None => return err(ErrorKind::Missing("pieces"), &info),
        };
        let pieces = pieces_v
            .as_bytes()
            .map_or_else(|| err(ErrorKind::WrongType("pieces"), &pieces_v), Ok)?;
        if pieces.len() % PIECE_HASH_LEN != 0 {
            return err(ErrorKind::PiecesNotMultipleOf20, &pieces_v);
        }

        let (layout, total_length, file_count) =
            match (field(&info, "length")?, field(&info, "files")?) {
                (Some(l), None) => {
                    let n = int(&l, "length")?;
                    let n = u64::try_from(n).or_else(|_| err(ErrorKind::NegativeLength, &l))?;
                    (Layout::Single(n), n, 1)
                }
                (None, Some(files)) => {
                    let (total, count) = check_files(&files, limits)?;
                    (Layout::Multi(files), total, count)
                }
                _ => return err(ErrorKind::AmbiguousLayout, &info),
            };

        // BEP 3: one 20-byte hash per piece; the last piece may be shorter.
        let expected = total_length.div_ceil(piece_length);
        if (pieces.len() / PIECE_HASH_LEN) as u64 != expected {
            return err(ErrorKind::PieceCountMismatch, &pieces_v);
        }

        // BEP 27: "private=1" in the info dict.
        let private = match field(&info, "private")? {
            None => false,
            Some(v) => int(&v, "private")? == 1,
        };

        let announce_list = match field(&root, "announce-list")? {
            None => None,
            Some(v) => {
                check_announce_list(&v)?;
                Some(v)
            }
        };
        let creation_date = match field(&root, "creation date")? {
            None => None,
            Some(v) => Some(int(&v, "creation date")?),
        };

        let info_hash = InfoHash(Sha1::digest(info.raw()).into());
        Ok(Metainfo {
            info_hash,
            info,
            name,
            piece_length,
            pieces,
            total_length,
            file_count,
            private,
            layout,
            announce: opt_str(&root, "announce")?,
            announce_list,
            comment: opt_str(&root, "comment")?,
            created_by: opt_str(&root, "created by")?,
            creation_date,
        })
    }

    /// SHA-1 of the exact bencoded `info` dict.
    pub fn info_hash(&self) -> InfoHash {
        self.info_hash
    }

    /// The exact bytes of the `info` dict (BEP 9 metadata).
    pub fn info_bytes(&self) -> &'a [u8] {
        self.info.raw()
    }

    /// The suggested name (file name, or top directory of a multi-file torrent).
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// Bytes per piece (the last piece may be shorter).
    pub fn piece_length(&self) -> u64 {
        self.piece_length
    }

    /// Number of pieces.
    pub fn piece_count(&self) -> usize {
        self.pieces.len() / PIECE_HASH_LEN
    }

    /// The expected SHA-1 of piece `index`.
    pub fn piece_hash(&self, index: usize) -> Option<[u8; PIECE_HASH_LEN]> {
        let start = index.checked_mul(PIECE_HASH_LEN)?;
        self.pieces
            .get(start..start.checked_add(PIECE_HASH_LEN)?)?
            .try_into()
            .ok()
    }

    /// Length of piece `index` (the last one may be shorter).
    pub fn piece_size(&self, index: usize) -> Option<u64> {
        let start = (index as u64).checked_mul(self.piece_length)?;
        (start < self.total_length).then(|| (self.total_length - start).min(self.piece_length))
    }

    /// Sum of the file lengths.
    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    /// True for a multi-file torrent (files under a `name` directory).
    pub fn is_multi_file(&self) -> bool {
        matches!(self.layout, Layout::Multi(_))
    }

    /// Number of files (including BEP 47 padding files).
    pub fn file_count(&self) -> usize {
        self.file_count
    }

    /// The files in torrent order, with their byte offsets.
    pub fn files(&self) -> Files<'a, 't> {
        match self.layout {
            Layout::Single(n) => Files {
                single: Some(n),
                multi: None,
                name: self.name,
                offset: 0,
            },
            Layout::Multi(v) => Files {
                single: None,
                multi: v.as_list(),
                name: self.name,
                offset: 0,
            },
        }
    }

    /// BEP 27 private flag.
    pub fn is_private(&self) -> bool {
        self.private
    }

    /// The `announce` URL.
    pub fn announce(&self) -> Option<&'a str> {
        self.announce
    }

    /// Trackers as `(tier, url)`: BEP 12 `announce-list` when present and
    /// non-empty (then `announce` is ignored, per BEP 12), else `announce`
    /// as tier 0.
    pub fn trackers(&self) -> impl Iterator<Item = (usize, &'a str)> + use<'a, 't> {
        let tiers = self.announce_list.and_then(|v| v.as_list());
        let from_list = tiers
            .clone()
            .into_iter()
            .flatten()
            .enumerate()
            .flat_map(|(i, tier)| {
                tier.as_list()
                    .into_iter()
                    .flatten()
                    .filter_map(move |u| Some((i, u.as_str()?)))
            });
        let has_list = tiers.into_iter().flatten().any(|t| !t.is_empty());
        let single = if has_list {
            None
        } else {
            self.announce.map(|a| (0, a))
        };
        from_list.chain(single)
    }

    /// `comment`.
    pub fn comment(&self) -> Option<&'a str> {
        self.comment
    }

    /// `created by`.
    pub fn created_by(&self) -> Option<&'a str> {
        self.created_by
    }

    /// `creation date` (seconds since the Unix epoch).
    pub fn creation_date(&self) -> Option<i64> {
        self.creation_date
    }
}

fn check_announce_list(v: &Value<'_, '_>) -> Result<(), Error> {
    let tiers = v
        .as_list()
        .map_or_else(|| err(ErrorKind::WrongType("announce-list"), v), Ok)?;
    for tier in tiers {
        let urls = tier
            .as_list()
            .map_or_else(|| err(ErrorKind::WrongType("announce-list"), &tier), Ok)?;
        for u in urls {
            match u.as_bytes() {
                None => return err(ErrorKind::WrongType("announce-list"), &u),
                Some(b) if core::str::from_utf8(b).is_err() => {
                    return err(ErrorKind::NotUtf8("announce-list"), &u)
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Validates a `files` list; returns (total length, file count).
fn check_files(files: &Value<'_, '_>, limits: &Limits) -> Result<(u64, usize), Error> {
    let list = files
        .as_list()
        .map_or_else(|| err(ErrorKind::WrongType("files"), files), Ok)?;
    let mut total: u64 = 0;
    let mut count = 0usize;
    for f in list {
        count += 1;
        if count > limits.max_files {
            return err(ErrorKind::TooManyFiles, &f);
        }
        if f.kind() != TokenKind::Dict {
            return err(ErrorKind::WrongType("files"), &f);
        }
        let l = req(&f, "length")?;
        let n =
            u64::try_from(int(&l, "length")?).or_else(|_| err(ErrorKind::NegativeLength, &l))?;
        total = total
            .checked_add(n)
            .map_or_else(|| err(ErrorKind::LengthOverflow, &l), Ok)?;
        if let Some(a) = field(&f, "attr")? {
            if a.as_bytes().is_none() {
                return err(ErrorKind::WrongType("attr"), &a);
            }
        }
        let p = req(&f, "path")?;
        let comps = p
            .as_list()
            .map_or_else(|| err(ErrorKind::WrongType("path"), &p), Ok)?;
        if p.is_empty() {
            return err(ErrorKind::EmptyPath, &p);
        }
        if p.len() > limits.max_path_depth {
            return err(ErrorKind::PathTooDeep, &p);
        }
        for c in comps {
            let b = c
                .as_bytes()
                .map_or_else(|| err(ErrorKind::WrongType("path"), &c), Ok)?;
            check_component(b).or_else(|e| err(ErrorKind::BadPath(e), &c))?;
        }
    }
    if count == 0 {
        return err(ErrorKind::Missing("files"), files);
    }
    Ok((total, count))
}

#[cfg(test)]
mod tests;
