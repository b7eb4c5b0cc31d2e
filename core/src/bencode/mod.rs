//! Bencode (BEP 3 "bencoding"): a strict, zero-copy, non-recursive decoder,
//! a navigation API over its output, and a canonical encoder.
//!
//! # Decoding
//! [`decode`] makes one pass over the input and writes one [`Token`] per
//! value into a caller-provided slice (the libtorrent `bdecode` / jsmn model).
//! There is no recursion and no heap: open containers are chained through the
//! token array itself, so nesting is bounded only by [`DecodeOptions::max_depth`]
//! and the token count by the slice length. Each token records the exact
//! byte span of its value, so a torrent's info-hash is the SHA-1 of the exact
//! `info` bytes.
//!
//! # Limits and refusals
//! - input longer than [`MAX_INPUT_LEN`] bytes → [`ErrorKind::InputTooLarge`];
//! - more values than tokens → [`ErrorKind::TokenLimit`];
//! - deeper nesting than `max_depth` (at most [`MAX_DEPTH`]) → [`ErrorKind::DepthLimit`];
//! - integers: no leading zeros, no `-0`, no empty, must fit `i64`;
//! - string lengths: no leading zeros, must fit the input;
//! - dictionary keys must be byte strings; in [`Mode::Strict`] they must be
//!   sorted and unique (BEP 3: "keys must be strings and appear in sorted
//!   order"); [`Mode::Lenient`] accepts unsorted or repeated keys, as found
//!   in real-world torrents (lookups then return the first match);
//! - one value per input: anything after it → [`ErrorKind::TrailingBytes`],
//!   unless [`DecodeOptions::allow_trailing`] (only for `.torrent` files:
//!   [`DecodeOptions::torrent_file`]).
//!
//! Every error carries the byte offset where the problem was found.
//!
//! # Encoding
//! [`Encoder`] writes canonical bencode into any [`embedded_io::Write`]
//! (use [`SliceWriter`] for a plain `&mut [u8]`), refusing unsorted or
//! duplicate keys and unbalanced containers.

mod decode;
mod encode;
mod value;

pub use decode::{decode, DecodeOptions, Document, Error, ErrorKind, Mode, Token, TokenKind};
pub use encode::{EncodeError, Encoder, SliceWriter, SliceWriterFull, MAX_ENCODE_DEPTH};
pub use value::{DictIter, ListIter, Value};

/// Largest input the decoder accepts: offsets are stored as `u32`.
pub const MAX_INPUT_LEN: usize = u32::MAX as usize;

/// Upper bound for [`DecodeOptions::max_depth`].
pub const MAX_DEPTH: usize = 1024;

/// Default nesting limit; a `.torrent` needs about 5 levels.
pub const DEFAULT_MAX_DEPTH: usize = 64;

#[cfg(test)]
mod tests;
