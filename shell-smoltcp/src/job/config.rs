//! The job's configuration: the torrent and the run from the command line,
//! checked against the job's limits before any packet exists.
//!
//! Refused (each a [`LimitError`]): a missing key; more than
//! [`MAX_TORRENT_LEN`] bytes of data; a piece shorter than
//! [`MIN_PIECE_LEN`], longer than [`MAX_PIECE_LEN`] or not a multiple of
//! [`MIN_PIECE_LEN`] (so that pieces start on flash sectors); more than [`MAX_PIECES`] pieces; a count of piece
//! hashes other than the piece count; a tracker not at the gateway.

use core::fmt;

use ourtorrent_core::id::InfoHash;
use ourtorrent_core::pieces::Geometry;

use super::{MAX_PIECES, MAX_PIECE_LEN, MAX_TORRENT_LEN, MIN_PIECE_LEN};
use crate::args::Args;
use crate::config::{ConfigError, Remote};

/// The torrent and the run, checked against the limits.
#[derive(Clone, Debug)]
pub struct TorrentConfig {
    /// The torrent.
    pub info_hash: InfoHash,
    /// Its pieces.
    pub geometry: Geometry,
    /// SHA-1 of each piece (the first `geometry.piece_count()` are used).
    pub hashes: [[u8; 20]; MAX_PIECES],
    /// The BEP 15 tracker.
    pub tracker: Remote,
    /// The port we announce.
    pub announce_port: u16,
    /// How long to seed once complete (0: not at all).
    pub seed_ms: u32,
}

/// Why a configuration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitError {
    /// A key the job needs is missing.
    Missing(&'static str),
    /// Longer than [`MAX_TORRENT_LEN`].
    TorrentTooLong(u64),
    /// A piece longer than [`MAX_PIECE_LEN`].
    PieceTooLong(u32),
    /// A piece shorter than [`MIN_PIECE_LEN`] or not a multiple of it.
    PieceLen(u32),
    /// More than [`MAX_PIECES`] pieces.
    TooManyPieces(u64),
    /// The number of hashes differs from the number of pieces.
    HashCount {
        /// Pieces of `length` / `piece_len`.
        pieces: u32,
        /// Hashes given.
        hashes: usize,
    },
    /// The tracker address.
    Tracker(ConfigError),
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LimitError::Missing(k) => write!(f, "missing `{k}=`"),
            LimitError::TorrentTooLong(n) => {
                write!(f, "torrent of {n} bytes exceeds {MAX_TORRENT_LEN}")
            }
            LimitError::PieceTooLong(n) => write!(f, "piece of {n} bytes exceeds {MAX_PIECE_LEN}"),
            LimitError::PieceLen(n) => {
                write!(f, "piece of {n} bytes is not a multiple of {MIN_PIECE_LEN}")
            }
            LimitError::TooManyPieces(n) => write!(f, "{n} pieces exceed {MAX_PIECES}"),
            LimitError::HashCount { pieces, hashes } => {
                write!(f, "{hashes} piece hashes for {pieces} pieces")
            }
            LimitError::Tracker(e) => write!(f, "tracker: {e}"),
        }
    }
}

impl TorrentConfig {
    /// The job's configuration from the command line, or why it is refused.
    pub fn from_args(args: &Args<'_>) -> Result<Self, LimitError> {
        let port = args.tracker_port.ok_or(LimitError::Missing("tracker"))?;
        let tracker = Remote::new(args.host, port).map_err(LimitError::Tracker)?;
        let info_hash = args.info_hash.ok_or(LimitError::Missing("info_hash"))?;
        let length = args.length.ok_or(LimitError::Missing("length"))?;
        let piece_len = args.piece_len.ok_or(LimitError::Missing("piece_len"))?;
        let hex = args.pieces_hex.ok_or(LimitError::Missing("pieces"))?;
        if length > MAX_TORRENT_LEN as u64 {
            return Err(LimitError::TorrentTooLong(length));
        }
        if piece_len > MAX_PIECE_LEN {
            return Err(LimitError::PieceTooLong(piece_len));
        }
        if piece_len < MIN_PIECE_LEN || piece_len % MIN_PIECE_LEN != 0 {
            return Err(LimitError::PieceLen(piece_len));
        }
        let pieces = length.div_ceil(u64::from(piece_len));
        if pieces > MAX_PIECES as u64 {
            return Err(LimitError::TooManyPieces(pieces));
        }
        // Both are non-zero (args refuses 0), and the count fits.
        let geometry =
            Geometry::new(length, piece_len).map_err(|_| LimitError::TooManyPieces(pieces))?;
        let count = hex.len() / 40;
        let wrong_count = LimitError::HashCount {
            pieces: geometry.piece_count(),
            hashes: count,
        };
        if count != geometry.piece_count() as usize {
            return Err(wrong_count);
        }
        let mut hashes = [[0u8; 20]; MAX_PIECES];
        for (h, digits) in hashes.iter_mut().zip(hex.as_bytes().chunks_exact(40)) {
            // args checked every digit; a 40-digit chunk always decodes.
            *h = InfoHash::from_hex(digits).map_err(|_| wrong_count)?.0;
        }
        Ok(TorrentConfig {
            info_hash,
            geometry,
            hashes,
            tracker,
            announce_port: args.announce_port,
            seed_ms: args.seed_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::args::parse;
    use std::format;

    const H: &str = "0123456789abcdef0123456789abcdef01234567";

    fn config(rest: &str) -> Result<TorrentConfig, LimitError> {
        let line = format!("fw tracker=6969 info_hash={H} {rest}");
        TorrentConfig::from_args(&parse(line.as_bytes()).unwrap())
    }

    #[test]
    fn a_torrent_within_the_limits() {
        let c = config(&format!("length=65536 piece_len=16384 pieces={H}{H}{H}{H}")).unwrap();
        assert_eq!(c.geometry.piece_count(), 4);
        assert_eq!(c.hashes[3][..2], [0x01, 0x23]);
        assert_eq!(c.tracker.port(), 6969);
        // The last piece may be short.
        let c = config(&format!("length=20000 piece_len=16384 pieces={H}{H}")).unwrap();
        assert_eq!(c.geometry.piece_size(1), Some(20000 - 16384));
    }

    #[test]
    fn the_largest_torrent_and_piece_fit() {
        let all = H.repeat(256);
        let c = config(&format!("length=4194304 piece_len=16384 pieces={all}")).unwrap();
        assert_eq!(c.geometry.piece_count(), MAX_PIECES as u32);
        let c = config(&format!(
            "length=4194304 piece_len=262144 pieces={}",
            H.repeat(16)
        ))
        .unwrap();
        assert_eq!(c.geometry.piece_len(), MAX_PIECE_LEN);
        // The longest command line a 4 MiB torrent of 16 KiB pieces needs.
        let line = format!(
            "fw tracker=65535 info_hash={H} length=4194304 piece_len=16384 port=65535 \
             seed_ms=4294967295 deadline_ms=4294967295 flash_fault=write:4294967295 pieces={all}"
        );
        assert!(line.len() <= crate::args::CMDLINE_MAX, "{}", line.len());
    }

    #[test]
    fn torrents_beyond_the_limits_are_refused() {
        let cases = [
            (
                format!("length=4194305 piece_len=16384 pieces={H}"),
                LimitError::TorrentTooLong(4194305),
            ),
            (
                format!("length=65536 piece_len=524288 pieces={H}"),
                LimitError::PieceTooLong(524288),
            ),
            (
                format!("length=65536 piece_len=8192 pieces={H}"),
                LimitError::PieceLen(8192),
            ),
            (
                format!("length=65536 piece_len=24576 pieces={H}"),
                LimitError::PieceLen(24576),
            ),
            (
                format!("length=65536 piece_len=16384 pieces={H}"),
                LimitError::HashCount {
                    pieces: 4,
                    hashes: 1,
                },
            ),
            (
                "length=65536 piece_len=16384".into(),
                LimitError::Missing("pieces"),
            ),
        ];
        for (rest, want) in cases {
            assert_eq!(config(&rest).unwrap_err(), want, "{rest}");
        }
        let line =
            format!("tracker=6969 host=10.0.2.3 info_hash={H} length=1 piece_len=1 pieces={H}");
        assert_eq!(
            TorrentConfig::from_args(&parse(line.as_bytes()).unwrap()).unwrap_err(),
            LimitError::Tracker(ConfigError::NotGateway)
        );
    }
}
