//! Peer-wire messages (BEP 3 base messages, BEP 6 fast extension, BEP 10
//! extended envelope) as a zero-copy [`Message`] enum.
//!
//! On the wire a message is `<u32 length prefix><u8 id><payload>`, all
//! integers big-endian; a length of 0 is a keep-alive. [`Message::decode`]
//! takes exactly one whole message (prefix included) and checks the exact
//! length for its id; [`Message::decode_body`] takes the part after the
//! prefix (what the [`Framer`](super::Framer) hands over). Payloads
//! (bitfield, block, extended) borrow from the input.
//!
//! Refuses: unknown ids, lengths that do not fit the id, trailing bytes.
//! Whether a bitfield fits the torrent is a separate check,
//! [`check_bitfield`], because it needs the piece count.

use super::{Reader, WireError, Writer};

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// Bytes before a piece message's block: prefix, id, index, begin.
pub const PIECE_HEADER_LEN: usize = LEN_PREFIX + 1 + 4 + 4;

/// Message ids (BEP 3, BEP 6, BEP 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageId {
    /// BEP 3: choke.
    Choke = 0,
    /// BEP 3: unchoke.
    Unchoke = 1,
    /// BEP 3: interested.
    Interested = 2,
    /// BEP 3: not interested.
    NotInterested = 3,
    /// BEP 3: have.
    Have = 4,
    /// BEP 3: bitfield.
    Bitfield = 5,
    /// BEP 3: request.
    Request = 6,
    /// BEP 3: piece.
    Piece = 7,
    /// BEP 3: cancel.
    Cancel = 8,
    /// BEP 5 (DHT) port, listed in BEP 3's message table.
    Port = 9,
    /// BEP 6: suggest piece.
    SuggestPiece = 0x0D,
    /// BEP 6: have all.
    HaveAll = 0x0E,
    /// BEP 6: have none.
    HaveNone = 0x0F,
    /// BEP 6: reject request.
    RejectRequest = 0x10,
    /// BEP 6: allowed fast.
    AllowedFast = 0x11,
    /// BEP 10: extended.
    Extended = 20,
}

/// How long a message's length prefix may be for its id.
enum LenRule {
    Exact(u32),
    AtLeast(u32),
}

impl MessageId {
    /// The id for a byte, if known.
    pub fn from_u8(b: u8) -> Option<MessageId> {
        Some(match b {
            0 => MessageId::Choke,
            1 => MessageId::Unchoke,
            2 => MessageId::Interested,
            3 => MessageId::NotInterested,
            4 => MessageId::Have,
            5 => MessageId::Bitfield,
            6 => MessageId::Request,
            7 => MessageId::Piece,
            8 => MessageId::Cancel,
            9 => MessageId::Port,
            0x0D => MessageId::SuggestPiece,
            0x0E => MessageId::HaveAll,
            0x0F => MessageId::HaveNone,
            0x10 => MessageId::RejectRequest,
            0x11 => MessageId::AllowedFast,
            20 => MessageId::Extended,
            _ => return None,
        })
    }

    fn len_rule(self) -> LenRule {
        use MessageId::*;
        match self {
            Choke | Unchoke | Interested | NotInterested | HaveAll | HaveNone => LenRule::Exact(1),
            Have | SuggestPiece | AllowedFast => LenRule::Exact(5),
            Request | Cancel | RejectRequest => LenRule::Exact(13),
            Port => LenRule::Exact(3),
            // A torrent has at least one piece, so at least one bitfield byte.
            Bitfield => LenRule::AtLeast(2),
            Piece => LenRule::AtLeast(9),
            // BEP 10: the extended message id byte follows.
            Extended => LenRule::AtLeast(2),
        }
    }
}

/// Checks a length prefix against the id that follows it (used by the
/// framer as soon as 5 bytes are in, before the body arrives).
pub(crate) fn check_len(id: u8, len: u32) -> Result<MessageId, WireError> {
    let mid = MessageId::from_u8(id).ok_or(WireError::UnknownId(id))?;
    let ok = match mid.len_rule() {
        LenRule::Exact(n) => len == n,
        LenRule::AtLeast(n) => len >= n,
    };
    if ok {
        Ok(mid)
    } else {
        Err(WireError::BadLength { id, len })
    }
}

/// One peer-wire message, borrowing its variable-length payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// BEP 3: a zero-length message.
    KeepAlive,
    /// BEP 3: choke.
    Choke,
    /// BEP 3: unchoke.
    Unchoke,
    /// BEP 3: interested.
    Interested,
    /// BEP 3: not interested.
    NotInterested,
    /// BEP 3: the sender has completed and verified a piece.
    Have {
        /// Piece index.
        piece: u32,
    },
    /// BEP 3: the sender's pieces, high bit of the first byte = piece 0.
    Bitfield(&'a [u8]),
    /// BEP 3: request a block.
    Request {
        /// Piece index.
        index: u32,
        /// Byte offset within the piece.
        begin: u32,
        /// Block length.
        length: u32,
    },
    /// BEP 3: a block of data.
    Piece {
        /// Piece index.
        index: u32,
        /// Byte offset within the piece.
        begin: u32,
        /// The data.
        block: &'a [u8],
    },
    /// BEP 3: cancel a request.
    Cancel {
        /// Piece index.
        index: u32,
        /// Byte offset within the piece.
        begin: u32,
        /// Block length.
        length: u32,
    },
    /// BEP 5: the sender's DHT port.
    Port(u16),
    /// BEP 6: have all.
    HaveAll,
    /// BEP 6: have none.
    HaveNone,
    /// BEP 6: suggest piece.
    SuggestPiece {
        /// Piece index.
        piece: u32,
    },
    /// BEP 6: reject request.
    RejectRequest {
        /// Piece index.
        index: u32,
        /// Byte offset within the piece.
        begin: u32,
        /// Block length.
        length: u32,
    },
    /// BEP 6: allowed fast.
    AllowedFast {
        /// Piece index.
        piece: u32,
    },
    /// BEP 10: extended message; `id` 0 is the extension handshake.
    Extended {
        /// Extended message id.
        id: u8,
        /// Its payload (bencoded for the handshake).
        payload: &'a [u8],
    },
}

impl<'a> Message<'a> {
    /// Decodes exactly one whole message, length prefix included.
    pub fn decode(buf: &'a [u8]) -> Result<Message<'a>, WireError> {
        let mut r = Reader::new(buf);
        let len = r.u32().ok_or(WireError::Truncated {
            len: buf.len(),
            needed: LEN_PREFIX,
        })?;
        let total = LEN_PREFIX.saturating_add(len as usize);
        if buf.len() < total {
            return Err(WireError::Truncated {
                len: buf.len(),
                needed: total,
            });
        }
        if buf.len() > total {
            return Err(WireError::TrailingBytes { offset: total });
        }
        Message::decode_body(r.rest())
    }

    /// Decodes a message body: the `length` bytes after the prefix (id and
    /// payload). An empty body is a keep-alive.
    pub fn decode_body(body: &'a [u8]) -> Result<Message<'a>, WireError> {
        let mut r = Reader::new(body);
        let Some(id) = r.u8() else {
            return Ok(Message::KeepAlive);
        };
        let len =
            u32::try_from(body.len()).map_err(|_| WireError::BadLength { id, len: u32::MAX })?;
        let mid = check_len(id, len)?;
        // Exact lengths were checked above, so these reads cannot fail; a
        // failure would still be an error, never a panic.
        let bad = WireError::BadLength { id, len };
        let mut u32_ = || r.u32().ok_or(bad);
        Ok(match mid {
            MessageId::Choke => Message::Choke,
            MessageId::Unchoke => Message::Unchoke,
            MessageId::Interested => Message::Interested,
            MessageId::NotInterested => Message::NotInterested,
            MessageId::Have => Message::Have { piece: u32_()? },
            MessageId::Request => Message::Request {
                index: u32_()?,
                begin: u32_()?,
                length: u32_()?,
            },
            MessageId::Cancel => Message::Cancel {
                index: u32_()?,
                begin: u32_()?,
                length: u32_()?,
            },
            MessageId::SuggestPiece => Message::SuggestPiece { piece: u32_()? },
            MessageId::HaveAll => Message::HaveAll,
            MessageId::HaveNone => Message::HaveNone,
            MessageId::RejectRequest => Message::RejectRequest {
                index: u32_()?,
                begin: u32_()?,
                length: u32_()?,
            },
            MessageId::AllowedFast => Message::AllowedFast { piece: u32_()? },
            MessageId::Piece => {
                let index = u32_()?;
                let begin = u32_()?;
                Message::Piece {
                    index,
                    begin,
                    block: r.rest(),
                }
            }
            MessageId::Bitfield => Message::Bitfield(r.rest()),
            MessageId::Port => Message::Port(r.u16().ok_or(bad)?),
            MessageId::Extended => Message::Extended {
                id: r.u8().ok_or(bad)?,
                payload: r.rest(),
            },
        })
    }

    /// The message id (`None` for a keep-alive).
    pub fn id(&self) -> Option<MessageId> {
        Some(match self {
            Message::KeepAlive => return None,
            Message::Choke => MessageId::Choke,
            Message::Unchoke => MessageId::Unchoke,
            Message::Interested => MessageId::Interested,
            Message::NotInterested => MessageId::NotInterested,
            Message::Have { .. } => MessageId::Have,
            Message::Bitfield(_) => MessageId::Bitfield,
            Message::Request { .. } => MessageId::Request,
            Message::Piece { .. } => MessageId::Piece,
            Message::Cancel { .. } => MessageId::Cancel,
            Message::Port(_) => MessageId::Port,
            Message::HaveAll => MessageId::HaveAll,
            Message::HaveNone => MessageId::HaveNone,
            Message::SuggestPiece { .. } => MessageId::SuggestPiece,
            Message::RejectRequest { .. } => MessageId::RejectRequest,
            Message::AllowedFast { .. } => MessageId::AllowedFast,
            Message::Extended { .. } => MessageId::Extended,
        })
    }

    /// Payload bytes after the id.
    fn payload_len(&self) -> usize {
        match self {
            Message::KeepAlive
            | Message::Choke
            | Message::Unchoke
            | Message::Interested
            | Message::NotInterested
            | Message::HaveAll
            | Message::HaveNone => 0,
            Message::Have { .. } | Message::SuggestPiece { .. } | Message::AllowedFast { .. } => 4,
            Message::Request { .. } | Message::Cancel { .. } | Message::RejectRequest { .. } => 12,
            Message::Port(_) => 2,
            Message::Bitfield(b) => b.len(),
            Message::Piece { block, .. } => 8usize.saturating_add(block.len()),
            Message::Extended { payload, .. } => 1usize.saturating_add(payload.len()),
        }
    }

    /// The whole encoded length, prefix included.
    pub fn encoded_len(&self) -> usize {
        match self {
            Message::KeepAlive => LEN_PREFIX,
            _ => LEN_PREFIX + 1usize.saturating_add(self.payload_len()),
        }
    }

    /// Writes the whole message (prefix included) into `out`; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let total = self.encoded_len();
        let body = u32::try_from(total - LEN_PREFIX).map_err(|_| WireError::TooLarge)?;
        if out.len() < total {
            return Err(WireError::BufferTooSmall { needed: total });
        }
        let mut w = Writer::new(out);
        w.u32(body);
        if let Some(id) = self.id() {
            w.put(&[id as u8]);
        }
        match *self {
            Message::KeepAlive
            | Message::Choke
            | Message::Unchoke
            | Message::Interested
            | Message::NotInterested
            | Message::HaveAll
            | Message::HaveNone => {}
            Message::Have { piece }
            | Message::SuggestPiece { piece }
            | Message::AllowedFast { piece } => w.u32(piece),
            Message::Request {
                index,
                begin,
                length,
            }
            | Message::Cancel {
                index,
                begin,
                length,
            }
            | Message::RejectRequest {
                index,
                begin,
                length,
            } => {
                w.u32(index);
                w.u32(begin);
                w.u32(length);
            }
            Message::Port(p) => w.put(&p.to_be_bytes()),
            Message::Bitfield(b) => w.put(b),
            Message::Piece {
                index,
                begin,
                block,
            } => {
                w.u32(index);
                w.u32(begin);
                w.put(block);
            }
            Message::Extended { id, payload } => {
                w.put(&[id]);
                w.put(payload);
            }
        }
        Ok(w.written())
    }
}

/// The 13 header bytes of a piece message carrying `block_len` bytes, so a
/// shell can send the block from its own buffer right after them (no copy).
pub fn piece_header(
    index: u32,
    begin: u32,
    block_len: usize,
) -> Result<[u8; PIECE_HEADER_LEN], WireError> {
    let body = u32::try_from(block_len)
        .ok()
        .and_then(|n| n.checked_add(9))
        .ok_or(WireError::TooLarge)?;
    let mut out = [0u8; PIECE_HEADER_LEN];
    let mut w = Writer::new(&mut out);
    w.u32(body);
    w.put(&[MessageId::Piece as u8]);
    w.u32(index);
    w.u32(begin);
    Ok(out)
}

/// BEP 3: a bitfield payload must be exactly ceil(pieces / 8) bytes and its
/// spare bits (after the last piece) must be zero.
pub fn check_bitfield(payload: &[u8], pieces: u32) -> Result<(), WireError> {
    let expected = (pieces as usize).div_ceil(8);
    if payload.len() != expected {
        return Err(WireError::BitfieldLength {
            expected,
            got: payload.len(),
        });
    }
    let spare = (expected * 8 - pieces as usize) as u32;
    if spare > 0 {
        let mask = (1u8 << spare) - 1;
        if payload.last().is_some_and(|b| b & mask != 0) {
            return Err(WireError::BitfieldSpareBits);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
