//! What the client keeps of a parsed `.torrent`: an owned copy of the
//! fields it needs, taken from the core's validated [`Metainfo`], with
//! every path made safe (the core's sanitizer) and unique (duplicates, also
//! those equal but for case, renamed `name.1.ext` as libtorrent does).

use std::collections::HashSet;

use ourtorrent_core::id::InfoHash;
use ourtorrent_core::metainfo::{path_buffer_len, unique_path, Limits, Metainfo};

/// One file, placed in the torrent's byte stream.
#[derive(Clone, Debug)]
pub struct FileEntry {
    /// Path components below the torrent's top folder, as stored on disk:
    /// sanitized by the core and made unique.
    pub path: Vec<String>,
    /// The torrent's own path (lossy UTF-8, joined by `/`) when `path`
    /// differs from it.
    pub renamed_from: Option<String>,
    /// BEP 47 symlink: its target relative to the torrent's folder, or why
    /// it is refused (a target leaving the folder).
    pub symlink: Option<Result<String, String>>,
    /// BEP 47 `x`: set the executable bit.
    pub executable: bool,
    /// Length in bytes.
    pub len: u64,
    /// Offset of the first byte in the torrent.
    pub offset: u64,
    /// BEP 47 padding file.
    pub padding: bool,
}

/// The torrent, owned.
#[derive(Clone, Debug)]
pub struct Info {
    /// `info.name`, sanitized (one safe path component).
    pub name: String,
    /// The torrent's `name` (lossy UTF-8) when `name` differs from it.
    pub name_renamed_from: Option<String>,
    /// SHA-1 of the info dictionary.
    pub info_hash: InfoHash,
    /// Nominal piece length.
    pub piece_len: u64,
    /// Total length.
    pub total: u64,
    /// Piece hashes.
    pub hashes: Vec<[u8; 20]>,
    /// Files in torrent order.
    pub files: Vec<FileEntry>,
    /// Multi-file layout (a top folder named `name`).
    pub multi_file: bool,
    /// BEP 27 private flag.
    pub private: bool,
    /// BEP 12 tiers and URLs.
    pub trackers: Vec<(usize, String)>,
    /// The bencoded info dictionary (what BEP 9 serves; its SHA-1 is
    /// `info_hash`).
    pub metadata: std::sync::Arc<[u8]>,
}

impl Info {
    /// Copies what the client needs out of `m`; paths are sanitized and
    /// duplicates renamed (see the module docs).
    pub fn from_metainfo(m: &Metainfo<'_, '_>) -> Info {
        let mut buf = vec![0u8; path_buffer_len(&Limits::default())];
        let mut files: Vec<FileEntry> = m
            .files()
            .map(|f| {
                let safe = f
                    .path_into(&mut buf)
                    .map(|p| (p.path.to_string(), p.changed));
                // The core sizes its buffer from the same limits: cannot fail.
                let (path, changed) = safe.unwrap_or_else(|_| ("_".into(), true));
                let raw: Vec<String> = f
                    .raw_path()
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect();
                let symlink = f.symlink_into(&mut buf).map(|t| match t {
                    Ok(t) => Ok(t.to_string()),
                    Err(e) => Err(e.to_string()),
                });
                FileEntry {
                    path: path.split('/').map(str::to_string).collect(),
                    renamed_from: changed.then(|| raw.join("/")),
                    symlink,
                    executable: f.is_executable(),
                    len: f.length,
                    offset: f.offset,
                    padding: f.is_padding(),
                }
            })
            .collect();
        if m.is_multi_file() {
            dedupe(&mut files);
        }
        Info {
            name: m.name().to_string(),
            name_renamed_from: m
                .name_changed()
                .then(|| String::from_utf8_lossy(m.raw_name()).into_owned()),
            info_hash: m.info_hash(),
            piece_len: m.piece_length(),
            total: m.total_length(),
            hashes: (0..m.piece_count())
                .map(|i| m.piece_hash(i).unwrap_or([0; 20]))
                .collect(),
            files,
            multi_file: m.is_multi_file(),
            private: m.is_private(),
            trackers: m.trackers().map(|(t, u)| (t, u.to_string())).collect(),
            metadata: m.info_bytes().into(),
        }
    }

    /// Number of pieces.
    pub fn pieces(&self) -> u32 {
        self.hashes.len() as u32
    }
}

/// Renames files whose path is taken (by an earlier file, or by a folder
/// of any file, compared case-insensitively so the result is the same on
/// every file system) to `name.N.ext`, as libtorrent does. Padding files
/// are never stored and keep their paths.
fn dedupe(files: &mut [FileEntry]) {
    let mut taken: HashSet<String> = HashSet::new();
    for f in files.iter().filter(|f| !f.padding) {
        for i in 1..f.path.len() {
            taken.insert(f.path[..i].join("/").to_lowercase());
        }
    }
    let mut buf = vec![0u8; path_buffer_len(&Limits::default()) + 16];
    for f in files.iter_mut().filter(|f| !f.padding) {
        let path = f.path.join("/");
        let Ok((chosen, k)) = unique_path(&path, &mut buf, |p| taken.contains(&p.to_lowercase()))
        else {
            // More than MAX_RENAMES copies: the last try stands; the storage
            // refuses it as listed twice.
            continue;
        };
        taken.insert(chosen.to_lowercase());
        if k > 0 {
            f.renamed_from.get_or_insert(path);
            f.path = chosen.split('/').map(str::to_string).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(p: &str) -> FileEntry {
        FileEntry {
            path: p.split('/').map(str::to_string).collect(),
            renamed_from: None,
            symlink: None,
            executable: false,
            len: 1,
            offset: 0,
            padding: false,
        }
    }

    #[test]
    fn duplicates_are_renamed_like_libtorrent() {
        let mut f: Vec<FileEntry> = ["a.txt", "a.txt", "A.TXT", "d", "d/x", "e/y", "E"]
            .into_iter()
            .map(entry)
            .collect();
        dedupe(&mut f);
        let got: Vec<String> = f.iter().map(|f| f.path.join("/")).collect();
        assert_eq!(
            got,
            ["a.txt", "a.1.txt", "A.2.TXT", "d.1", "d/x", "e/y", "E.1"]
        );
        assert_eq!(f[1].renamed_from.as_deref(), Some("a.txt"));
        assert_eq!(f[0].renamed_from, None);
    }
}
