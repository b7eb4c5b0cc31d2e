//! A streaming peer-wire framer: bytes arrive in any chunking, whole
//! messages come out, in the httparse `Status::{Complete, Partial}` style.
//!
//! The framer owns no buffer. The shell keeps its own read buffer, calls
//! [`Framer::parse`] on the unconsumed bytes, and on
//! `Complete((frame, n))` handles `frame` (which borrows the buffer) and
//! drops `n` bytes; on `Partial` it reads more. Nothing is copied.
//!
//! A framer built with [`Framer::with_handshake`] first expects the 68-byte
//! BEP 3 handshake and then messages.
//!
//! A shell that reads into small buffers asks [`Framer::needed`] how many
//! more bytes the next frame needs (the length prefix first, then the rest)
//! and reads exactly that.
//!
//! # Limits and refusals
//! - a whole message (4-byte prefix included) longer than the maximum given
//!   to the constructor is refused as soon as the prefix is in: the shell's
//!   read buffer never needs to be larger than that maximum;
//! - an unknown id, or a length that does not fit the id, is refused as soon
//!   as the id byte is in;
//! - a handshake is refused at its first wrong header byte.
//!
//! After an error the framer stays failed and returns [`WireError::Failed`]:
//! the connection must be closed.

use super::handshake::{check_header_prefix, Handshake, HANDSHAKE_LEN};
use super::message::{check_len, Message, LEN_PREFIX};
use super::{WireError, BLOCK_LEN};

/// Default maximum whole message: a 16 KiB block plus its 13 header bytes
/// (prefix, id, index, begin). Bitfields of torrents with more than
/// 131 136 pieces, or BEP 9 metadata pieces, need more: see
/// [`max_message_len_for`].
pub const DEFAULT_MAX_MESSAGE_LEN: usize = BLOCK_LEN as usize + 13;

/// The smallest maximum that still admits every message of a torrent with
/// `pieces` pieces: the larger of [`DEFAULT_MAX_MESSAGE_LEN`] and a whole
/// bitfield message (4 + 1 + ceil(pieces / 8)).
pub fn max_message_len_for(pieces: u32) -> usize {
    let bitfield = LEN_PREFIX + 1 + (pieces as usize).div_ceil(8);
    bitfield.max(DEFAULT_MAX_MESSAGE_LEN)
}

/// Progress of a parse (the httparse shape).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status<T> {
    /// A whole item was parsed.
    Complete(T),
    /// More bytes are needed; nothing was consumed.
    Partial,
}

/// What the framer produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// The handshake (only first, only with [`Framer::with_handshake`]).
    Handshake(Handshake),
    /// A message.
    Message(Message<'a>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Handshake,
    Messages,
    Failed,
}

/// The framer state: what comes next, the maximum length, failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framer {
    max_len: usize,
    state: State,
}

impl Framer {
    /// A framer for messages only, refusing whole messages longer than
    /// `max_len` bytes (prefix included).
    pub const fn new(max_len: usize) -> Self {
        Framer {
            max_len,
            state: State::Messages,
        }
    }

    /// A framer expecting the handshake first, then messages.
    pub const fn with_handshake(max_len: usize) -> Self {
        Framer {
            max_len,
            state: State::Handshake,
        }
    }

    /// The maximum whole message length.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// True until the handshake has been parsed (handshake-first framers).
    pub fn expecting_handshake(&self) -> bool {
        self.state == State::Handshake
    }

    /// True once an error was returned.
    pub fn failed(&self) -> bool {
        self.state == State::Failed
    }

    /// How many more bytes must follow `buf` (the unconsumed bytes) before
    /// [`Self::parse`] can complete: `68 - len` for the handshake, then per
    /// message the 4-byte length prefix and, once it is in, the rest of the
    /// message. 0 exactly when `parse(buf)` does not return
    /// [`Status::Partial`]: a whole frame is there, or `parse` will refuse
    /// what is (a bad header byte, a length over the maximum, a bad id or a
    /// length that does not fit it, a failed framer).
    pub fn needed(&self, buf: &[u8]) -> usize {
        match self.state {
            State::Failed => 0,
            State::Handshake => {
                if check_header_prefix(buf).is_err() {
                    0
                } else {
                    HANDSHAKE_LEN.saturating_sub(buf.len())
                }
            }
            State::Messages => {
                let Some(prefix) = buf
                    .get(..LEN_PREFIX)
                    .and_then(|p| <[u8; 4]>::try_from(p).ok())
                else {
                    return LEN_PREFIX.saturating_sub(buf.len());
                };
                let len = u32::from_be_bytes(prefix);
                let total = LEN_PREFIX.saturating_add(len as usize);
                if total > self.max_len {
                    return 0;
                }
                if let Some(&id) = buf.get(LEN_PREFIX).filter(|_| len > 0) {
                    if check_len(id, len).is_err() {
                        return 0;
                    }
                }
                total.saturating_sub(buf.len())
            }
        }
    }

    /// Parses the next frame from the front of `buf`, returning it and the
    /// number of bytes it used.
    pub fn parse<'b>(&mut self, buf: &'b [u8]) -> Result<Status<(Frame<'b>, usize)>, WireError> {
        let r = match self.state {
            State::Failed => return Err(WireError::Failed),
            State::Handshake => self.parse_handshake(buf),
            State::Messages => self.parse_message(buf),
        };
        if r.is_err() {
            self.state = State::Failed;
        }
        r
    }

    fn parse_handshake<'b>(
        &mut self,
        buf: &'b [u8],
    ) -> Result<Status<(Frame<'b>, usize)>, WireError> {
        let Some(hs) = buf.get(..HANDSHAKE_LEN) else {
            check_header_prefix(buf)?;
            return Ok(Status::Partial);
        };
        let h = Handshake::decode(hs)?;
        self.state = State::Messages;
        Ok(Status::Complete((Frame::Handshake(h), HANDSHAKE_LEN)))
    }

    fn parse_message<'b>(&self, buf: &'b [u8]) -> Result<Status<(Frame<'b>, usize)>, WireError> {
        let Some(prefix) = buf
            .get(..LEN_PREFIX)
            .and_then(|p| <[u8; 4]>::try_from(p).ok())
        else {
            return Ok(Status::Partial);
        };
        let len = u32::from_be_bytes(prefix);
        let total = LEN_PREFIX.saturating_add(len as usize);
        if total > self.max_len {
            return Err(WireError::MessageTooLong {
                len,
                max: self.max_len,
            });
        }
        // Refuse a bad id or length before waiting for the body.
        // (A keep-alive has no id: the next byte belongs to the next message.)
        if let Some(&id) = buf.get(LEN_PREFIX).filter(|_| len > 0) {
            check_len(id, len)?;
        }
        let Some(body) = buf.get(LEN_PREFIX..total) else {
            return Ok(Status::Partial);
        };
        let m = Message::decode_body(body)?;
        Ok(Status::Complete((Frame::Message(m), total)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Reserved;

    static CHOKE: [u8; 5] = [0, 0, 0, 1, 0];
    static KEEPALIVE: [u8; 4] = [0, 0, 0, 0];
    /// A keep-alive followed by a choke: the framer must not read the
    /// choke's first byte as the keep-alive's id.
    static KEEPALIVE_CHOKE: [u8; 9] = [0, 0, 0, 0, 0, 0, 0, 1, 0];

    #[test]
    fn partial_then_complete() {
        let mut f = Framer::new(DEFAULT_MAX_MESSAGE_LEN);
        for n in 0..CHOKE.len() {
            assert_eq!(f.parse(&CHOKE[..n]), Ok(Status::Partial));
        }
        assert_eq!(
            f.parse(&CHOKE),
            Ok(Status::Complete((Frame::Message(Message::Choke), 5)))
        );
        assert_eq!(
            f.parse(&KEEPALIVE),
            Ok(Status::Complete((Frame::Message(Message::KeepAlive), 4)))
        );
        assert_eq!(
            f.parse(&KEEPALIVE_CHOKE),
            Ok(Status::Complete((Frame::Message(Message::KeepAlive), 4)))
        );
    }

    #[test]
    fn max_len_edge() {
        // A piece message carrying a 16 KiB block is exactly the default max.
        let max = DEFAULT_MAX_MESSAGE_LEN;
        let mut ok = [0u8; DEFAULT_MAX_MESSAGE_LEN];
        ok[..5].copy_from_slice(&[0, 0, 0x40, 0x09, 7]);
        let mut f = Framer::new(max);
        match f.parse(&ok) {
            Ok(Status::Complete((Frame::Message(Message::Piece { block, .. }), n))) => {
                assert_eq!(block.len(), 16384);
                assert_eq!(n, max);
            }
            other => panic!("{other:?}"),
        }
        // One more byte is refused from the prefix alone.
        let mut f = Framer::new(max);
        assert_eq!(
            f.parse(&[0, 0, 0x40, 0x0A]),
            Err(WireError::MessageTooLong { len: 16394, max })
        );
        assert!(f.failed());
        assert_eq!(f.parse(&CHOKE), Err(WireError::Failed));
        // u32::MAX prefix: no overflow.
        let mut f = Framer::new(max);
        assert_eq!(
            f.parse(&[0xff; 4]),
            Err(WireError::MessageTooLong { len: u32::MAX, max })
        );
    }

    #[test]
    fn early_refusals() {
        let mut f = Framer::new(DEFAULT_MAX_MESSAGE_LEN);
        assert_eq!(f.parse(&[0, 0, 0, 1, 99]), Err(WireError::UnknownId(99)));
        let mut f = Framer::new(DEFAULT_MAX_MESSAGE_LEN);
        // have with length 6, refused before the body arrives.
        assert_eq!(
            f.parse(&[0, 0, 0, 6, 4]),
            Err(WireError::BadLength { id: 4, len: 6 })
        );
    }

    #[test]
    fn needed_counts_down_to_parse() {
        let mut f = Framer::new(DEFAULT_MAX_MESSAGE_LEN);
        let have = [0u8, 0, 0, 5, 4, 0, 0, 0, 9];
        for n in 0..have.len() {
            let want = if n < 4 { 4 - n } else { 9 - n };
            assert_eq!(f.needed(&have[..n]), want, "{n} bytes in");
            assert_eq!(f.parse(&have[..n]), Ok(Status::Partial));
        }
        assert_eq!(f.needed(&have), 0);
        // Bytes past the frame do not count against it.
        assert_eq!(f.needed(&KEEPALIVE_CHOKE), 0);
        assert_eq!(f.needed(&KEEPALIVE_CHOKE[4..6]), 2);
        // At the maximum: the whole block is needed; one past it: parse
        // refuses now, so nothing more is needed.
        assert_eq!(f.needed(&[0, 0, 0x40, 0x09]), DEFAULT_MAX_MESSAGE_LEN - 4);
        assert_eq!(f.needed(&[0, 0, 0x40, 0x0A]), 0);
        assert_eq!(f.needed(&[0xff; 4]), 0);
        // A bad id or length is refused from the id byte.
        assert_eq!(f.needed(&[0, 0, 0, 6, 4]), 0);
        assert_eq!(f.needed(&[0, 0, 0, 9, 99]), 0);
        assert!(f.parse(&[0, 0, 0, 9, 99]).is_err());
        assert_eq!(f.needed(&[]), 0, "a failed framer needs nothing more");
    }

    #[test]
    fn needed_handshake() {
        let f = Framer::with_handshake(DEFAULT_MAX_MESSAGE_LEN);
        assert_eq!(f.needed(&[]), HANDSHAKE_LEN);
        assert_eq!(f.needed(b"\x13BitTorrent"), HANDSHAKE_LEN - 11);
        assert_eq!(f.needed(b"\x13BitTorrenX"), 0);
        assert_eq!(f.needed(b"GET"), 0);
        assert_eq!(f.needed(&[0x13; 100][..1]), HANDSHAKE_LEN - 1);
    }

    proptest::proptest! {
        /// `needed` is 0 exactly when `parse` is not `Partial`, and reading
        /// fewer bytes than it asks for never completes a frame.
        #[test]
        fn needed_agrees_with_parse(
            mut bytes in proptest::collection::vec(
                proptest::prop_oneof![3 => 0u8..8, 1 => proptest::prelude::any::<u8>()],
                0..80,
            ),
            handshake: bool,
            good_header: bool,
            max in 0usize..100,
        ) {
            if good_header {
                let header = Handshake {
                    reserved: Reserved::default(),
                    info_hash: crate::id::InfoHash([0; 20]),
                    peer_id: crate::id::PeerId([0; 20]),
                }
                .to_bytes();
                for (b, h) in bytes.iter_mut().zip(&header[..20]) {
                    *b = *h;
                }
            }
            let f = if handshake { Framer::with_handshake(max) } else { Framer::new(max) };
            let partial = |b: &[u8]| {
                let mut g = f;
                g.parse(b) == Ok(Status::Partial)
            };
            let complete = |b: &[u8]| {
                let mut g = f;
                matches!(g.parse(b), Ok(Status::Complete(_)))
            };
            for n in 0..=bytes.len() {
                let need = f.needed(&bytes[..n]);
                proptest::prop_assert_eq!(need == 0, !partial(&bytes[..n]), "{} bytes", n);
                // A shell reading exactly `need` more never takes bytes of
                // the next frame (an earlier refusal is fine).
                for k in 0..need.min(bytes.len() - n) {
                    proptest::prop_assert!(!complete(&bytes[..n + k]));
                }
            }
        }
    }

    #[test]
    fn max_for_pieces() {
        assert_eq!(max_message_len_for(1), DEFAULT_MAX_MESSAGE_LEN);
        assert_eq!(max_message_len_for(1_000_000), 5 + 125_000);
        // Edge: the largest bitfield that fits the default.
        let pieces = ((DEFAULT_MAX_MESSAGE_LEN - 5) * 8) as u32;
        assert_eq!(max_message_len_for(pieces), DEFAULT_MAX_MESSAGE_LEN);
        assert_eq!(max_message_len_for(pieces + 1), DEFAULT_MAX_MESSAGE_LEN + 1);
        assert_eq!(
            max_message_len_for(u32::MAX),
            5 + (u32::MAX as usize).div_ceil(8)
        );
    }

    #[test]
    fn handshake_first() {
        let h = Handshake {
            reserved: Default::default(),
            info_hash: crate::id::InfoHash([1; 20]),
            peer_id: crate::id::PeerId([2; 20]),
        };
        let mut stream = [0u8; 68 + 5];
        stream[..68].copy_from_slice(&h.to_bytes());
        stream[68..].copy_from_slice(&CHOKE);
        let mut f = Framer::with_handshake(DEFAULT_MAX_MESSAGE_LEN);
        assert!(f.expecting_handshake());
        for n in 0..68 {
            assert_eq!(f.parse(&stream[..n]), Ok(Status::Partial));
        }
        assert_eq!(
            f.parse(&stream),
            Ok(Status::Complete((Frame::Handshake(h), 68)))
        );
        assert_eq!(
            f.parse(&stream[68..]),
            Ok(Status::Complete((Frame::Message(Message::Choke), 5)))
        );
        // Refused at the first bad byte, before 68 bytes arrive.
        let mut f = Framer::with_handshake(DEFAULT_MAX_MESSAGE_LEN);
        assert_eq!(
            f.parse(b"GET / HTTP/1.1"),
            Err(WireError::BadProtocolLength(b'G'))
        );
        let mut f = Framer::with_handshake(DEFAULT_MAX_MESSAGE_LEN);
        assert_eq!(f.parse(b"\x13BitTorrent"), Ok(Status::Partial));
        assert_eq!(
            f.parse(b"\x13BitTorrenX"),
            Err(WireError::BadProtocolName { offset: 10 })
        );
    }
}
