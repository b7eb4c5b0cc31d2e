//! The peer-wire protocol: BEP 3 (handshake and the base messages), BEP 6
//! (fast extension), the BEP 10 extension-protocol envelope, and the BEP 9
//! (`ut_metadata`) and BEP 11 (`ut_pex`) extension messages.
//!
//! - [`handshake`]: the 68-byte handshake and its [`Reserved`] bits.
//! - [`message`]: the zero-copy [`Message`] codec, one length-prefixed
//!   message at a time, and the BEP 3 [`check_bitfield`] rule.
//! - [`framer`]: a streaming [`Framer`] that takes bytes in any chunking
//!   from the shell's own read buffer and yields whole messages.
//! - [`extension`]: the BEP 10 extension handshake dictionary.
//! - [`metadata`]: BEP 9 `ut_metadata` messages, fetching and serving metadata.
//! - [`metadata_blame`]: who is banned when fetched metadata does not hash.
//! - [`pex`]: BEP 11 `ut_pex` messages and their sending/receiving rules.
//!
//! # Limits and refusals
//! - a message longer than the framer's maximum (default
//!   [`DEFAULT_MAX_MESSAGE_LEN`], see [`max_message_len_for`]) is refused as
//!   soon as its length prefix is seen ([`WireError::MessageTooLong`]);
//! - an unknown message id is refused ([`WireError::UnknownId`]);
//! - every message id has an exact length (or, for bitfield, piece and
//!   extended, a minimum); anything else is [`WireError::BadLength`];
//! - a handshake whose first 20 bytes are not `\x13BitTorrent protocol` is
//!   refused at the first wrong byte.
//!
//! Every error ends the connection: nothing here tries to resynchronise.

use core::fmt;

pub mod extension;
pub mod framer;
#[doc(hidden)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
pub mod fuzzing;
pub mod handshake;
pub mod message;
pub mod metadata;
pub mod metadata_blame;
pub mod pex;

pub use extension::{ExtensionError, ExtensionHandshake, MAX_EXTENSIONS, MAX_EXTENSION_TOKENS};
pub use framer::{max_message_len_for, Frame, Framer, Status, DEFAULT_MAX_MESSAGE_LEN};
pub use handshake::{Accepted, Handshake, Refused, Reserved, HANDSHAKE_LEN, PROTOCOL};
pub use message::{check_bitfield, piece_header, Message, MessageId, LEN_PREFIX, PIECE_HEADER_LEN};
pub use metadata::{MetadataFetch, MetadataMsg, MAX_METADATA_SIZE, METADATA_PIECE_LEN};
pub use pex::{PexMessage, MAX_PEX_ADDED, MAX_PEX_DROPPED};

/// BEP 3: "All current implementations use 2^14 (16 kiB)" as the block size.
pub const BLOCK_LEN: u32 = 16 * 1024;

/// Why peer-wire input was refused or output could not be written.
/// Every variant read from a peer ends the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Handshake: the first byte (protocol name length) is not 19.
    BadProtocolLength(u8),
    /// Handshake: the protocol name differs from `BitTorrent protocol` at
    /// this byte offset of the handshake.
    BadProtocolName {
        /// Offset of the first wrong byte.
        offset: usize,
    },
    /// A handshake or message was cut short: `len` bytes, `needed` wanted.
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
    /// Bytes after the one handshake or message being decoded.
    TrailingBytes {
        /// Offset of the first extra byte.
        offset: usize,
    },
    /// A length prefix (plus its 4 bytes) above the configured maximum.
    MessageTooLong {
        /// The length prefix as read.
        len: u32,
        /// The largest whole message (prefix included) accepted.
        max: usize,
    },
    /// A message id this implementation does not know.
    UnknownId(u8),
    /// A message whose length does not fit its id.
    BadLength {
        /// The message id.
        id: u8,
        /// The length prefix as read.
        len: u32,
    },
    /// Bitfield: wrong byte count for the torrent's piece count.
    BitfieldLength {
        /// Bytes expected: ceil(pieces / 8).
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// Bitfield: a spare bit past the last piece is set (BEP 3: "Spare bits
    /// at the end are set to zero").
    BitfieldSpareBits,
    /// The output buffer is too small: `needed` bytes.
    BufferTooSmall {
        /// Bytes the encoding needs.
        needed: usize,
    },
    /// A value too large to encode (a block longer than a length prefix can say).
    TooLarge,
    /// The framer already failed; it stays failed.
    Failed,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WireError::BadProtocolLength(n) => {
                write!(f, "handshake: protocol name length {n}, want 19")
            }
            WireError::BadProtocolName { offset } => {
                write!(f, "handshake: not \"BitTorrent protocol\" (byte {offset})")
            }
            WireError::Truncated { len, needed } => {
                write!(f, "truncated: {len} bytes, need {needed}")
            }
            WireError::TrailingBytes { offset } => write!(f, "trailing bytes at offset {offset}"),
            WireError::MessageTooLong { len, max } => {
                write!(f, "message length {len} exceeds maximum {max}")
            }
            WireError::UnknownId(id) => write!(f, "unknown message id {id}"),
            WireError::BadLength { id, len } => write!(f, "bad length {len} for message id {id}"),
            WireError::BitfieldLength { expected, got } => {
                write!(f, "bitfield has {got} bytes, want {expected}")
            }
            WireError::BitfieldSpareBits => f.write_str("bitfield spare bits are not zero"),
            WireError::BufferTooSmall { needed } => {
                write!(f, "output buffer too small: need {needed} bytes")
            }
            WireError::TooLarge => f.write_str("value too large to encode"),
            WireError::Failed => f.write_str("framer already failed"),
        }
    }
}

impl core::error::Error for WireError {}

pub(crate) use crate::codec::{Reader, Writer};
