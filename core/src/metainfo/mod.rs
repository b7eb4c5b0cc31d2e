//! `.torrent` files: BEP 3 metainfo, BEP 12 multitracker `announce-list`,
//! BEP 27 `private`, BEP 47 file attributes (padding, symlink, executable,
//! hidden); BEP 52 hybrid torrents are read through their v1 half after
//! checking that the v2 half describes the same data (pure v2 torrents are
//! refused).
//!
//! [`Metainfo::parse`] decodes with the bencode decoder in lenient key
//! order and ignoring bytes after the top-level dict (real torrents have
//! both; the info-hash is taken over the exact `info` bytes either way),
//! then validates everything a client must not trust before it opens a
//! file:
//! - piece length in `limits.min_piece_length ..= limits.max_piece_length`;
//! - `pieces` a multiple of 20 bytes, and exactly `ceil(total / piece length)`
//!   hashes; total length not zero;
//! - exactly one of `length` (single file) or `files` (multi file); file
//!   lengths non-negative, their sum without overflow;
//! - every path non-empty (padding files excepted), at most
//!   `limits.max_path_depth` components;
//! - at most `limits.max_files` files;
//! - no key the parser reads repeated within one dict (lenient decoding
//!   would otherwise let two parsers see different torrents under one
//!   info-hash);
//! - hybrid torrents: the v2 file tree and piece layers agree with the v1
//!   files ([`V2Error`]).
//!
//! Names are untrusted bytes. By default each component is sanitized into
//! one safe name ([`sanitize_component`], rules in docs/PARSERS.md) when a
//! caller asks for a path ([`File::path_into`], [`Metainfo::name`]); with
//! `limits.strict_paths` a torrent with any unsafe component is refused
//! instead ([`check_component`]). Duplicate paths are renamed by the
//! caller with [`unique_path`], which needs a set of the paths taken.
//!
//! Windows device names (`CON`, `NUL.txt`) are not changed here: they are
//! a property of one file system, for a Windows shell to sanitise.
//!
//! Every error names the field and the byte offset of the offending value.

use core::fmt;

use sha1::{Digest, Sha1};

use crate::bencode::{self, DecodeOptions, ListIter, Token, TokenKind, Value};
use crate::id::InfoHash;

mod path;
mod v2;

pub use path::{
    check_component, renamed, sanitize_component, unique_path, PathError, Sanitized, UniqueError,
    MAX_EXTENSION_LEN, MAX_RENAMES, REPLACEMENT,
};
pub use v2::{V2Error, MAX_TREE_DEPTH, MIN_V2_PIECE_LENGTH, V2_HASH_LEN};

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
    /// Refuse unsafe names instead of sanitizing them (`--strict-paths`).
    pub strict_paths: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_piece_length: DEFAULT_MIN_PIECE_LENGTH,
            max_piece_length: DEFAULT_MAX_PIECE_LENGTH,
            max_path_depth: DEFAULT_MAX_PATH_DEPTH,
            max_files: DEFAULT_MAX_FILES,
            strict_paths: false,
        }
    }
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
    /// The files add up to zero bytes: nothing to download.
    ZeroLength,
    /// BEP 52 hybrid: the v2 half is broken or describes other data.
    Hybrid(V2Error),
}

/// A metainfo error: what, and the byte offset of the offending value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    /// What was wrong.
    pub kind: ErrorKind,
    /// Byte offset into the `.torrent` file.
    pub offset: usize,
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
            ErrorKind::ZeroLength => f.write_str("the torrent has no data (total length 0)"),
            ErrorKind::Hybrid(e) => write!(f, "hybrid torrent: {e}"),
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
    raw_name: &'a [u8],
    /// The sanitized name ([`sanitize_component`]); `name_len` bytes used.
    name: [u8; MAX_COMPONENT_LEN],
    name_len: usize,
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
    /// Length in bytes (0 for a BEP 47 symlink, whatever its `length`).
    pub length: u64,
    /// Offset of the file's first byte in the torrent's byte stream.
    pub offset: u64,
    /// BEP 47 `attr` (e.g. `p` for a padding file), empty if absent.
    pub attr: &'a [u8],
    path: Option<ListIter<'a, 't>>,
    symlink: Option<ListIter<'a, 't>>,
    /// The torrent's name for a single-file torrent's one file.
    single: Option<&'a [u8]>,
}

/// A path made safe by [`File::path_into`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SafePath<'b> {
    /// Components joined by `/`, each one passing [`check_component`].
    pub path: &'b str,
    /// True if some component differs from the torrent's bytes.
    pub changed: bool,
}

/// A caller's path buffer is too small (see [`path_buffer_len`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferTooSmall;

/// Bytes a buffer needs for any path [`File::path_into`] writes under
/// `limits`.
pub const fn path_buffer_len(limits: &Limits) -> usize {
    (MAX_COMPONENT_LEN + 1) * (limits.max_path_depth + 1)
}

/// Writes the sanitized components of `comps` joined by `/` into `buf`.
fn join_sanitized<'a, 'b>(
    comps: impl Iterator<Item = &'a [u8]>,
    buf: &'b mut [u8],
) -> Result<SafePath<'b>, BufferTooSmall> {
    let mut n = 0usize;
    let mut changed = false;
    let mut one = [0u8; MAX_COMPONENT_LEN];
    for (i, raw) in comps.enumerate() {
        let s = sanitize_component(raw, &mut one);
        changed |= s.changed;
        let sep: &[u8] = if i == 0 { b"" } else { b"/" };
        for part in [sep, s.name.as_bytes()] {
            let dst = buf.get_mut(n..n + part.len()).ok_or(BufferTooSmall)?;
            dst.copy_from_slice(part);
            n += part.len();
        }
    }
    let path =
        core::str::from_utf8(buf.get(..n).unwrap_or_default()).map_err(|_| BufferTooSmall)?;
    Ok(SafePath { path, changed })
}

impl<'a, 't> File<'a, 't> {
    /// The path components as the torrent has them (untrusted bytes),
    /// excluding the torrent's name. A single-file torrent's one file has
    /// its name as the only component; a BEP 47 padding file may have none.
    pub fn raw_path(&self) -> impl Iterator<Item = &'a [u8]> + use<'a, 't> {
        let multi = self
            .path
            .clone()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_bytes());
        self.single.into_iter().chain(multi)
    }

    /// The safe relative path (below the torrent's folder for a multi-file
    /// torrent), each component sanitized by [`sanitize_component`], into
    /// `buf` (at least [`path_buffer_len`] bytes). Never absolute, never
    /// `.`/`..`, never empty. Duplicates are the caller's to rename
    /// ([`unique_path`]).
    pub fn path_into<'b>(&self, buf: &'b mut [u8]) -> Result<SafePath<'b>, BufferTooSmall> {
        join_sanitized(self.raw_path(), buf)
    }

    /// BEP 47 symlink target, relative to the torrent's folder, joined by
    /// `/` into `buf`: `None` if this is not a symlink, `Some(Err(_))` if
    /// the target is unsafe (any component failing [`check_component`],
    /// such as `..` or `/etc`, or an empty target): such a link must not
    /// be created.
    pub fn symlink_into<'b>(&self, buf: &'b mut [u8]) -> Option<Result<&'b str, PathError>> {
        if !self.is_symlink() {
            return None;
        }
        let Some(target) = self.symlink.clone() else {
            return Some(Err(PathError::Empty));
        };
        let mut n = 0usize;
        for (i, c) in target.enumerate() {
            let Some(raw) = c.as_bytes() else {
                return Some(Err(PathError::NotUtf8));
            };
            if let Err(e) = check_component(raw) {
                return Some(Err(e));
            }
            let sep: &[u8] = if i == 0 { b"" } else { b"/" };
            for part in [sep, raw] {
                let Some(dst) = buf.get_mut(n..n + part.len()) else {
                    return Some(Err(PathError::TooLong));
                };
                dst.copy_from_slice(part);
                n += part.len();
            }
        }
        if n == 0 {
            return Some(Err(PathError::Empty));
        }
        Some(core::str::from_utf8(buf.get(..n).unwrap_or_default()).map_err(|_| PathError::NotUtf8))
    }

    /// True for a BEP 47 padding file (`p`): zeros, not stored.
    pub fn is_padding(&self) -> bool {
        self.attr.contains(&b'p')
    }

    /// True for a BEP 47 symlink (`l`).
    pub fn is_symlink(&self) -> bool {
        self.attr.contains(&b'l')
    }

    /// True for a BEP 47 executable file (`x`).
    pub fn is_executable(&self) -> bool {
        self.attr.contains(&b'x')
    }

    /// True for a BEP 47 hidden file (`h`).
    pub fn is_hidden(&self) -> bool {
        self.attr.contains(&b'h')
    }
}

/// Iterator over a torrent's files (see [`Metainfo::files`]).
#[derive(Clone, Debug)]
pub struct Files<'a, 't> {
    single: Option<u64>,
    multi: Option<ListIter<'a, 't>>,
    name: &'a [u8],
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
                symlink: None,
                single: Some(self.name),
            });
        }
        let f = self.multi.as_mut()?.next()?;
        let attr = f
            .get(b"attr")
            .and_then(|v| v.as_bytes())
            .unwrap_or_default();
        let length = if attr.contains(&b'l') {
            0
        } else {
            f.get(b"length").and_then(|v| v.as_int()).unwrap_or(0) as u64
        };
        let file = File {
            length,
            offset: self.offset,
            attr,
            path: f.get(b"path").and_then(|v| v.as_list()),
            symlink: f.get(b"symlink path").and_then(|v| v.as_list()),
            single: None,
        };
        self.offset = self.offset.saturating_add(length);
        Some(file)
    }
}

impl<'a, 't> Metainfo<'a, 't> {
    /// Decodes and validates a `.torrent`. `tokens` bounds the number of
    /// bencode values (a multi-file torrent needs about 6 per file).
    pub fn parse(input: &'a [u8], tokens: &'t mut [Token], limits: &Limits) -> Result<Self, Error> {
        let doc =
            bencode::decode(input, tokens, DecodeOptions::torrent_file()).map_err(|e| Error {
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
        if limits.strict_paths {
            check_component(name_b).or_else(|p| err(ErrorKind::BadPath(p), &name_v))?;
        }
        let mut name = [0u8; MAX_COMPONENT_LEN];
        let name_len = sanitize_component(name_b, &mut name).name.len();

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
                    // The name is the file: with no usable name there is
                    // nothing to call it (libtorrent: "missing name").
                    if name_b.iter().all(|&b| b == b'.' || b == b' ') {
                        let kind = if name_b.contains(&b'.') {
                            PathError::Dots
                        } else {
                            PathError::Empty
                        };
                        return err(ErrorKind::BadPath(kind), &name_v);
                    }
                    (Layout::Single(n), n, 1)
                }
                (None, Some(files)) => {
                    let (total, count) = check_files(&files, limits)?;
                    (Layout::Multi(files), total, count)
                }
                _ => return err(ErrorKind::AmbiguousLayout, &info),
            };

        // Nothing to download (libtorrent: "invalid length of torrent").
        if total_length == 0 {
            return err(ErrorKind::ZeroLength, &info);
        }
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

        // BEP 52 hybrid: the v2 half must describe the same data.
        if field(&info, "file tree")?.is_some() || field(&info, "meta version")?.is_some() {
            let files = match layout {
                Layout::Single(_) => None,
                Layout::Multi(v) => v.as_list(),
            };
            v2::check_hybrid(&root, &info, name_b, files, piece_length)?;
        }

        let info_hash = InfoHash(Sha1::digest(info.raw()).into());
        Ok(Metainfo {
            info_hash,
            info,
            raw_name: name_b,
            name,
            name_len,
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

    /// The suggested name (file name, or top directory of a multi-file
    /// torrent), sanitized by [`sanitize_component`]: one safe component.
    pub fn name(&self) -> &str {
        core::str::from_utf8(self.name.get(..self.name_len).unwrap_or_default()).unwrap_or("_")
    }

    /// The `name` bytes as in the torrent (untrusted).
    pub fn raw_name(&self) -> &'a [u8] {
        self.raw_name
    }

    /// True if [`name`](Self::name) differs from the torrent's `name`.
    pub fn name_changed(&self) -> bool {
        self.name().as_bytes() != self.raw_name
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
                name: self.raw_name,
                offset: 0,
            },
            Layout::Multi(v) => Files {
                single: None,
                multi: v.as_list(),
                name: self.raw_name,
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
        let attr = match field(&f, "attr")? {
            None => &b""[..],
            Some(a) => a
                .as_bytes()
                .map_or_else(|| err(ErrorKind::WrongType("attr"), &a), Ok)?,
        };
        // BEP 47: a symlink's data is its target; libtorrent ignores its
        // `length` (which may be absent), and so do we.
        let symlink = attr.contains(&b'l');
        if symlink {
            if let Some(t) = field(&f, "symlink path")? {
                let parts = t
                    .as_list()
                    .map_or_else(|| err(ErrorKind::WrongType("symlink path"), &t), Ok)?;
                for c in parts {
                    if c.as_bytes().is_none() {
                        return err(ErrorKind::WrongType("symlink path"), &c);
                    }
                }
            }
        } else {
            let l = req(&f, "length")?;
            let n = u64::try_from(int(&l, "length")?)
                .or_else(|_| err(ErrorKind::NegativeLength, &l))?;
            total = total
                .checked_add(n)
                .map_or_else(|| err(ErrorKind::LengthOverflow, &l), Ok)?;
        }
        // BEP 47: padding files need no path (they are never stored).
        let p = match field(&f, "path")? {
            None if attr.contains(&b'p') => continue,
            _ => req(&f, "path")?,
        };
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
            if limits.strict_paths {
                check_component(b).or_else(|e| err(ErrorKind::BadPath(e), &c))?;
            }
        }
    }
    if count == 0 {
        return err(ErrorKind::Missing("files"), files);
    }
    Ok((total, count))
}

#[cfg(test)]
mod tests;
