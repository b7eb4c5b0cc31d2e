//! Loading `.torrent` files: the shell owns the bytes and the token array the
//! core decodes into.

use std::path::Path;

use anyhow::Context;
use ourtorrent_core::bencode::{self, Token};
use ourtorrent_core::metainfo::{self, Limits, Metainfo};

/// Largest `.torrent` file we read (the biggest seen in the wild are tens of MB).
pub const MAX_TORRENT_FILE: u64 = 64 << 20;

/// A `.torrent` file's bytes and the tokens its metainfo borrows.
pub struct TorrentFile {
    bytes: Vec<u8>,
    tokens: Vec<Token>,
}

impl TorrentFile {
    /// Reads `path` (at most [`MAX_TORRENT_FILE`] bytes).
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let len = std::fs::metadata(path)
            .with_context(|| format!("{}", path.display()))?
            .len();
        anyhow::ensure!(
            len <= MAX_TORRENT_FILE,
            "{}: file is {len} bytes, more than the {MAX_TORRENT_FILE}-byte limit",
            path.display()
        );
        let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
        Ok(Self::from_bytes(bytes))
    }

    /// Wraps bytes already in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        TorrentFile {
            bytes,
            tokens: Vec::new(),
        }
    }

    /// Parses with default limits (unsafe names sanitized).
    pub fn parse(&mut self) -> Result<Metainfo<'_, '_>, metainfo::Error> {
        self.parse_with(false)
    }

    /// Parses with default limits; `strict_paths` refuses a torrent with an
    /// unsafe name instead of sanitizing it. The token array starts small and grows
    /// (doubling) on `TokenLimit`, bounded by the input length: a value
    /// takes at least 2 bytes, so `len / 2 + 1` tokens always suffice.
    pub fn parse_with(&mut self, strict_paths: bool) -> Result<Metainfo<'_, '_>, metainfo::Error> {
        let max = self.bytes.len() / 2 + 1;
        let mut n = (self.bytes.len() / 16 + 64).min(max);
        loop {
            self.tokens.clear();
            self.tokens.resize(n, Token::EMPTY);
            // Probe with a decode so the retry does not depend on metainfo.
            match bencode::decode(
                &self.bytes,
                &mut self.tokens,
                bencode::DecodeOptions::torrent_file(),
            ) {
                Err(e) if e.kind == bencode::ErrorKind::TokenLimit && n < max => {
                    n = (n * 2).min(max);
                }
                _ => break,
            }
        }
        let limits = Limits {
            strict_paths,
            ..Limits::default()
        };
        Metainfo::parse(&self.bytes, &mut self.tokens, &limits)
    }
}
