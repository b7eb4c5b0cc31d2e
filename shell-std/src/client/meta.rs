//! What the client keeps of a parsed `.torrent`: an owned copy of the
//! fields it needs, taken from the core's validated [`Metainfo`].

use ourtorrent_core::id::InfoHash;
use ourtorrent_core::metainfo::Metainfo;

/// One file, placed in the torrent's byte stream.
#[derive(Clone, Debug)]
pub struct FileEntry {
    /// Path components below the torrent's top folder (validated by the core).
    pub path: Vec<String>,
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
    /// `info.name`.
    pub name: String,
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
}

impl Info {
    /// Copies what the client needs out of `m`.
    pub fn from_metainfo(m: &Metainfo<'_, '_>) -> Info {
        Info {
            name: m.name().to_string(),
            info_hash: m.info_hash(),
            piece_len: m.piece_length(),
            total: m.total_length(),
            hashes: (0..m.piece_count())
                .map(|i| m.piece_hash(i).unwrap_or([0; 20]))
                .collect(),
            files: m
                .files()
                .map(|f| FileEntry {
                    path: f.path().map(str::to_string).collect(),
                    len: f.length,
                    offset: f.offset,
                    padding: f.is_padding(),
                })
                .collect(),
            multi_file: m.is_multi_file(),
            private: m.is_private(),
            trackers: m.trackers().map(|(t, u)| (t, u.to_string())).collect(),
        }
    }

    /// Number of pieces.
    pub fn pieces(&self) -> u32 {
        self.hashes.len() as u32
    }
}
