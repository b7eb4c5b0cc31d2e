//! BEP 52 hybrid torrents: checks that the v2 half (`file tree`, `piece
//! layers`) describes the same files as the v1 half, so that a v1 and a v2
//! client never download different data under one torrent.
//!
//! Read far enough to compare, not to download: the file tree is walked
//! with an explicit stack (at most [`MAX_TREE_DEPTH`] levels, no
//! recursion); piece layers are checked for presence and size, not hashed.

use core::fmt;

use super::{err, field, int, Error, ErrorKind};
use crate::bencode::{DictIter, ListIter, TokenKind, Value};

/// Deepest `file tree` walked (directories plus the file).
pub const MAX_TREE_DEPTH: usize = 64;
/// BEP 52: the smallest piece length, 16 KiB.
pub const MIN_V2_PIECE_LENGTH: u64 = 16 << 10;
/// BEP 52: `pieces root` and piece layer hashes are SHA-256.
pub const V2_HASH_LEN: usize = 32;

/// How the v2 half of a hybrid torrent is broken or disagrees with v1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V2Error {
    /// `meta version` is missing or not 2.
    MetaVersion,
    /// `file tree` is missing or not a tree of dicts ending in `""` dicts.
    FileTree,
    /// `file tree` deeper than [`MAX_TREE_DEPTH`].
    TooDeep,
    /// v2 needs a power-of-two piece length of at least 16 KiB.
    PieceLength,
    /// The two halves list different files (paths or count).
    Files,
    /// A file has different lengths in the two halves.
    Length,
    /// A v1 file does not start on a piece boundary (hybrid torrents pad).
    Alignment,
    /// A non-empty file has no 32-byte `pieces root`.
    PiecesRoot,
    /// `piece layers` lacks a file's layer or has one of the wrong size.
    PieceLayer,
}

impl fmt::Display for V2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            V2Error::MetaVersion => "'meta version' is not 2",
            V2Error::FileTree => "malformed 'file tree'",
            V2Error::TooDeep => "'file tree' too deep",
            V2Error::PieceLength => "piece length is not a power of two ≥ 16 KiB",
            V2Error::Files => "v1 'files' and v2 'file tree' list different files",
            V2Error::Length => "a file's length differs between v1 and v2",
            V2Error::Alignment => "a v1 file is not aligned to a piece boundary",
            V2Error::PiecesRoot => "a file has no 32-byte 'pieces root'",
            V2Error::PieceLayer => "'piece layers' missing or wrong size for a file",
        })
    }
}

fn bad<T>(e: V2Error, at: &Value<'_, '_>) -> Result<T, Error> {
    err(ErrorKind::Hybrid(e), at)
}

/// The v1 files a v2 tree must match: not padding, not symlinks.
struct V1Files<'a, 't> {
    single: Option<(&'a [u8], u64)>,
    multi: Option<ListIter<'a, 't>>,
    offset: u64,
}

/// One v1 file: its path list (`None` for the single file), length, offset.
type V1File<'a, 't> = (Option<ListIter<'a, 't>>, u64, u64);

impl<'a, 't> V1Files<'a, 't> {
    fn next(&mut self) -> Option<V1File<'a, 't>> {
        if let Some((_, len)) = self.single.take() {
            return Some((None, len, 0));
        }
        loop {
            let f = self.multi.as_mut()?.next()?;
            let attr = f
                .get(b"attr")
                .and_then(|a| a.as_bytes())
                .unwrap_or_default();
            let len = f.get(b"length").and_then(|v| v.as_int()).unwrap_or(0) as u64;
            if attr.contains(&b'l') {
                continue;
            }
            let at = self.offset;
            self.offset = self.offset.saturating_add(len);
            if attr.contains(&b'p') {
                continue;
            }
            return Some((f.get(b"path").and_then(|p| p.as_list()), len, at));
        }
    }
}

/// Checks a hybrid torrent's v2 half against its (validated) v1 half.
pub(super) fn check_hybrid(
    root: &Value<'_, '_>,
    info: &Value<'_, '_>,
    name: &[u8],
    files: Option<ListIter<'_, '_>>,
    piece_length: u64,
) -> Result<(), Error> {
    match field(info, "meta version")? {
        Some(v) if int(&v, "meta version")? == 2 => {}
        Some(v) => return bad(V2Error::MetaVersion, &v),
        None => return bad(V2Error::MetaVersion, info),
    }
    let Some(tree) = field(info, "file tree")? else {
        return bad(V2Error::FileTree, info);
    };
    if !piece_length.is_power_of_two() || piece_length < MIN_V2_PIECE_LENGTH {
        return bad(V2Error::PieceLength, info);
    }
    let layers = field(root, "piece layers")?;
    if layers.is_some_and(|l| l.kind() != TokenKind::Dict) {
        return bad(V2Error::PieceLayer, root);
    }
    let single = files.is_none();
    let mut v1 = V1Files {
        single: single.then_some((name, 0)),
        multi: files,
        offset: 0,
    };
    if single {
        // The single file's length, read again from `info`.
        let len = field(info, "length")?.and_then(|l| l.as_int()).unwrap_or(0) as u64;
        v1.single = Some((name, len));
    }

    let Some(top) = tree.as_dict() else {
        return bad(V2Error::FileTree, &tree);
    };
    // Explicit stack: the open directories and their names.
    let mut stack: [Option<DictIter<'_, '_>>; MAX_TREE_DEPTH] = [const { None }; MAX_TREE_DEPTH];
    let mut names: [&[u8]; MAX_TREE_DEPTH] = [&[]; MAX_TREE_DEPTH];
    let mut depth = 1usize;
    if let Some(s) = stack.get_mut(0) {
        *s = Some(top);
    }
    while depth > 0 {
        let Some(Some(it)) = stack.get_mut(depth - 1) else {
            return bad(V2Error::FileTree, &tree);
        };
        let Some((key, v)) = it.next() else {
            depth -= 1;
            continue;
        };
        if key.is_empty() || v.kind() != TokenKind::Dict {
            return bad(V2Error::FileTree, &v);
        }
        if let Some(meta) = v.get(b"") {
            // A file: `{"": {length, pieces root}}` and nothing else.
            if v.len() != 1 || meta.kind() != TokenKind::Dict {
                return bad(V2Error::FileTree, &v);
            }
            if let Some(n) = names.get_mut(depth - 1) {
                *n = key;
            }
            let path = names.get(..depth).unwrap_or_default();
            check_file(&meta, path, &mut v1, single, name, piece_length, layers)?;
        } else {
            if depth >= MAX_TREE_DEPTH {
                return bad(V2Error::TooDeep, &v);
            }
            if let Some(n) = names.get_mut(depth - 1) {
                *n = key;
            }
            if let Some(s) = stack.get_mut(depth) {
                *s = v.as_dict();
            }
            depth += 1;
        }
    }
    // Every v1 file must have been matched.
    if v1.next().is_some() {
        return bad(V2Error::Files, &tree);
    }
    Ok(())
}

/// Checks one v2 file (its `""` dict `meta` at `path`) against the next v1
/// file.
fn check_file(
    meta: &Value<'_, '_>,
    path: &[&[u8]],
    v1: &mut V1Files<'_, '_>,
    single: bool,
    name: &[u8],
    piece_length: u64,
    layers: Option<Value<'_, '_>>,
) -> Result<(), Error> {
    let attr = meta
        .get(b"attr")
        .and_then(|a| a.as_bytes())
        .unwrap_or_default();
    if attr.contains(&b'l') || attr.contains(&b'p') {
        return Ok(());
    }
    let Some(len_v) = meta.get(b"length") else {
        return bad(V2Error::FileTree, meta);
    };
    let len = u64::try_from(int(&len_v, "length")?).or_else(|_| bad(V2Error::Length, &len_v))?;
    let Some((v1_path, v1_len, v1_off)) = v1.next() else {
        return bad(V2Error::Files, meta);
    };
    let same_path = if single {
        path == [name]
    } else {
        let comps = v1_path.into_iter().flatten().map(|c| c.as_bytes());
        comps.eq(path.iter().map(|p| Some(*p)))
    };
    if !same_path {
        return bad(V2Error::Files, meta);
    }
    if len != v1_len {
        return bad(V2Error::Length, &len_v);
    }
    if len == 0 {
        return Ok(());
    }
    if v1_off % piece_length != 0 {
        return bad(V2Error::Alignment, meta);
    }
    let root = match meta.get(b"pieces root").and_then(|r| r.as_bytes()) {
        Some(r) if r.len() == V2_HASH_LEN => r,
        _ => return bad(V2Error::PiecesRoot, meta),
    };
    // BEP 52: files larger than one piece have a layer of one hash per
    // piece under their `pieces root`.
    if len > piece_length {
        if let Some(layers) = layers {
            let want = len
                .div_ceil(piece_length)
                .saturating_mul(V2_HASH_LEN as u64);
            match layers.get(root).and_then(|l| l.as_bytes()) {
                Some(l) if l.len() as u64 == want => {}
                _ => return bad(V2Error::PieceLayer, meta),
            }
        }
    }
    Ok(())
}
