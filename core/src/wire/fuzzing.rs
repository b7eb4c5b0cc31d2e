//! Property helpers for the fuzz targets in `fuzz/` (not a public API).
//!
//! Each helper decodes its input, re-encodes what it got, decodes again and
//! asserts that nothing changed; [`fuzz_peer_wire`] also asserts that the
//! framer yields the same messages (and the same error) whatever the
//! chunking. These are the only places in the wire module that assert.

use super::extension::ExtensionHandshake;
use super::framer::{Frame, Framer, Status};
use super::handshake::{Handshake, HANDSHAKE_LEN};
use super::message::Message;
use super::WireError;

/// Maximum message length the fuzz helper's framers use.
pub const FUZZ_MAX_MESSAGE_LEN: usize = 2048;

/// Largest extension handshake the round-trip helper tries.
pub const FUZZ_MAX_EXTENSION_LEN: usize = 4096;

fn roundtrip_message(m: &Message<'_>) {
    let mut buf = [0u8; FUZZ_MAX_MESSAGE_LEN];
    let n = m.encode(&mut buf);
    assert_eq!(n, Ok(m.encoded_len()));
    let n = m.encoded_len();
    assert_eq!(Message::decode(&buf[..n]).as_ref(), Ok(m));
}

/// Feeds `data` (after a 1-byte header choosing handshake-first and a
/// chunking seed) to two framers: one sees everything at once, the other
/// sees it arrive in pseudo-random chunks. Both must agree on every frame,
/// on the bytes consumed, and on the error that ends the stream.
pub fn fuzz_peer_wire(data: &[u8]) {
    let Some((&head, data)) = data.split_first() else {
        return;
    };
    let make = |head: u8| {
        if head & 1 == 1 {
            Framer::with_handshake(FUZZ_MAX_MESSAGE_LEN)
        } else {
            Framer::new(FUZZ_MAX_MESSAGE_LEN)
        }
    };
    let mut whole = make(head);
    let mut chunked = make(head);
    let mut seed = u32::from(head) | 0x9e37_0000;
    let mut next_chunk = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        1 + (seed % 97) as usize
    };
    let mut pos = 0usize; // bytes consumed
    let mut avail = 0usize; // bytes the chunked framer has "received"
    loop {
        let reference = whole.parse(&data[pos..]);
        // Grow the chunked view until it agrees that a frame (or error) is there.
        let got = loop {
            let r = chunked.parse(&data[pos..avail]);
            match r {
                Ok(Status::Partial) if avail < data.len() => {
                    avail = (avail + next_chunk()).min(data.len());
                }
                other => break other,
            }
        };
        assert_eq!(reference, got);
        match reference {
            Ok(Status::Complete((frame, n))) => {
                assert!(n > 0);
                match frame {
                    Frame::Message(m) => roundtrip_message(&m),
                    Frame::Handshake(h) => assert_eq!(Handshake::decode(&h.to_bytes()), Ok(h)),
                }
                pos += n;
                avail = avail.max(pos);
            }
            Ok(Status::Partial) => return,
            Err(e) => {
                assert!(whole.failed() && chunked.failed());
                assert_eq!(whole.parse(&data[pos..]), Err(WireError::Failed));
                let _ = e;
                return;
            }
        }
    }
}

/// Decodes a handshake; if it is valid its encoding must equal the input.
pub fn fuzz_handshake(data: &[u8]) {
    if let Ok(h) = Handshake::decode(data) {
        assert_eq!(data.len(), HANDSHAKE_LEN);
        assert_eq!(&h.to_bytes()[..], data);
    }
}

/// Decodes an extension handshake; if valid, re-encodes it and checks that
/// the encoding decodes to the same value and re-encodes to the same bytes.
pub fn fuzz_extension_handshake(data: &[u8]) {
    if data.len() > FUZZ_MAX_EXTENSION_LEN - 16 {
        return;
    }
    let Ok(h) = ExtensionHandshake::decode(data) else {
        return;
    };
    let mut buf = [0u8; FUZZ_MAX_EXTENSION_LEN];
    let n = match h.encode(&mut buf) {
        Ok(n) => n,
        // Names repeated in `m` are dropped on decode, so this cannot happen.
        Err(e) => panic!("re-encode failed: {e}"),
    };
    let again = ExtensionHandshake::decode(&buf[..n]);
    assert_eq!(again.as_ref(), Ok(&h));
    let mut buf2 = [0u8; FUZZ_MAX_EXTENSION_LEN];
    assert_eq!(h.encode(&mut buf2), Ok(n));
    assert_eq!(&buf[..n], &buf2[..n]);
}
