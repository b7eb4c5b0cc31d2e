//! Fast resume: which pieces a restart may trust without hashing them.
//!
//! The saved bitfield is trusted for every piece that lies only in files
//! whose size and mtime are what they were when the bitfield was saved; a
//! piece touching a file that changed since (written after the save, as
//! after a `kill -9`, or edited by hand) is hashed again; a piece touching
//! a missing file is not there. With no saved data every piece touching a
//! file that exists is hashed (pieces only in files not there yet are
//! zeros, never hashed).
//!
//! A write that lands in the same mtime tick as the save cannot make a
//! trusted piece wrong: a saved piece was complete on disk before the save
//! and verified pieces are never written again; at worst a piece verified
//! after the save is not trusted and is fetched again.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use ourtorrent_core::pieces::PieceHasher;

use crate::client::meta::Info;
use crate::client::storage::Storage;

/// One file's size and mtime (ns since the epoch), `None` if it is not
/// there (or is not stored: padding, symlinks, empty files).
pub type Stamp = Option<(u64, i64)>;

/// True for a file that holds bytes on disk.
fn stored(info: &Info, i: usize) -> bool {
    info.files
        .get(i)
        .is_some_and(|f| !f.padding && f.symlink.is_none() && f.len > 0)
}

/// The stamp of every file of the torrent (paths as from
/// [`Storage::paths`]).
pub fn stamps(info: &Info, paths: &[PathBuf]) -> Vec<Stamp> {
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if !stored(info, i) {
                return None;
            }
            let m = std::fs::symlink_metadata(p).ok()?;
            if !m.is_file() {
                return None;
            }
            Some((m.len(), m.mtime() * 1_000_000_000 + m.mtime_nsec()))
        })
        .collect()
}

/// What to do with each piece at start.
#[derive(Debug, PartialEq)]
pub struct Check {
    /// Pieces trusted as verified without hashing.
    pub trusted: Vec<bool>,
    /// Pieces to hash.
    pub hash: Vec<u32>,
}

/// Decides from the saved data (`saved`: bitfield flags and stamps, if
/// any) and the files' stamps now which pieces to trust and which to hash.
pub fn plan(info: &Info, saved: Option<(&[bool], &[Stamp])>, now: &[Stamp]) -> Check {
    let n = info.pieces() as usize;
    let mut trusted = vec![false; n];
    let mut hash = Vec::new();
    let saved = saved.filter(|(h, s)| h.len() == n && s.len() == info.files.len());
    // Files in offset order; each piece looks at the files it overlaps.
    let mut first = 0usize;
    for (p, t) in trusted.iter_mut().enumerate() {
        let start = p as u64 * info.piece_len;
        let end = (start + info.piece_len).min(info.total);
        while info
            .files
            .get(first)
            .is_some_and(|f| f.offset + f.len <= start && first + 1 < info.files.len())
        {
            first += 1;
        }
        let mut missing = false;
        let mut changed = false;
        for (i, f) in info.files.iter().enumerate().skip(first) {
            if f.offset >= end {
                break;
            }
            if f.offset + f.len <= start || !stored(info, i) {
                continue;
            }
            let cur = now.get(i).copied().flatten();
            match (cur, saved) {
                (None, _) => missing = true,
                (Some(_), None) => changed = true,
                (Some(c), Some((_, s))) => changed |= s.get(i).copied().flatten() != Some(c),
            }
        }
        if missing {
            continue;
        }
        if changed {
            hash.push(p as u32);
        } else if let Some((h, _)) = saved {
            *t = h.get(p).copied().unwrap_or(false);
        }
    }
    Check { trusted, hash }
}

/// Hashes `pieces` of the open `storage` with up to `threads` threads;
/// returns those whose SHA-1 matches the torrent.
pub fn verify(storage: &Storage, info: &Info, pieces: &[u32], threads: usize) -> Vec<u32> {
    let threads = threads.clamp(1, pieces.len().max(1));
    let chunk = pieces.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = pieces
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut buf = vec![0u8; info.piece_len as usize];
                    let mut good = Vec::new();
                    for &i in part {
                        let (off, len) = storage.piece_range(i);
                        let Some(b) = buf.get_mut(..len) else {
                            continue;
                        };
                        if storage.read_at(off, b).is_err() {
                            continue;
                        }
                        let mut h = PieceHasher::new();
                        h.update(b);
                        if info.hashes.get(i as usize) == Some(&h.finish()) {
                            good.push(i);
                        }
                    }
                    good
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::meta::FileEntry;
    use ourtorrent_core::id::InfoHash;

    fn file(offset: u64, len: u64) -> FileEntry {
        FileEntry {
            path: vec![format!("f{offset}")],
            renamed_from: None,
            symlink: None,
            executable: false,
            len,
            offset,
            padding: false,
        }
    }

    /// Three files of 10, 15 and 5 bytes in pieces of 8: piece 1 spans
    /// files 0 and 1, piece 3 spans files 1 and 2.
    fn info() -> Info {
        Info {
            name: "t".into(),
            name_renamed_from: None,
            info_hash: InfoHash([0; 20]),
            piece_len: 8,
            total: 30,
            hashes: vec![[0; 20]; 4],
            files: vec![file(0, 10), file(10, 15), file(25, 5)],
            multi_file: true,
            private: false,
            trackers: Vec::new(),
            metadata: std::sync::Arc::from(&[][..]),
        }
    }

    #[test]
    fn unchanged_files_are_trusted_and_changed_ones_rehashed() {
        let info = info();
        let st = vec![Some((10, 1)), Some((15, 2)), Some((5, 3))];
        let have = [true, true, false, true];
        let c = plan(&info, Some((&have, &st)), &st);
        assert_eq!(c.trusted, have);
        assert!(c.hash.is_empty());
        // File 1 written since the save: pieces 1, 2, 3 hashed.
        let mut now = st.clone();
        now[1] = Some((15, 9));
        let c = plan(&info, Some((&have, &st)), &now);
        assert_eq!(c.trusted, [true, false, false, false]);
        assert_eq!(c.hash, [1, 2, 3]);
        // File 2 gone: piece 3 is not there; the rest is trusted.
        let mut now = st.clone();
        now[2] = None;
        let c = plan(&info, Some((&have, &st)), &now);
        assert_eq!(c.trusted, [true, true, false, false]);
        assert!(c.hash.is_empty());
    }

    #[test]
    fn without_saved_data_only_files_on_disk_are_hashed() {
        let info = info();
        let now = vec![Some((10, 1)), None, None];
        let c = plan(&info, None, &now);
        assert_eq!(c.trusted, [false; 4]);
        assert_eq!(c.hash, [0]);
        // Saved data of the wrong shape counts as none.
        let c = plan(&info, Some((&[true], &now)), &now);
        assert_eq!(c.hash, [0]);
    }
}
