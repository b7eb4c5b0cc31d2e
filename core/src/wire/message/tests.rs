//! Test vectors for every message and every error kind, and round-trip
//! and chunking properties.

use super::*;
use crate::wire::framer::{Frame, Framer, Status, DEFAULT_MAX_MESSAGE_LEN};
use proptest::prelude::*;
use std::vec::Vec;

static KEEPALIVE: [u8; 4] = [0, 0, 0, 0];
static CHOKE: [u8; 5] = [0, 0, 0, 1, 0];
static UNCHOKE: [u8; 5] = [0, 0, 0, 1, 1];
static INTERESTED: [u8; 5] = [0, 0, 0, 1, 2];
static NOT_INTERESTED: [u8; 5] = [0, 0, 0, 1, 3];
static HAVE: [u8; 9] = [0, 0, 0, 5, 4, 0, 0, 0x01, 0x02];
static BITFIELD: [u8; 7] = [0, 0, 0, 3, 5, 0xff, 0x80];
static REQUEST: [u8; 17] = [0, 0, 0, 13, 6, 0, 0, 0, 1, 0, 0, 0x40, 0, 0, 0, 0x40, 0];
static PIECE: [u8; 16] = [0, 0, 0, 12, 7, 0, 0, 0, 1, 0, 0, 0x40, 0, b'a', b'b', b'c'];
static CANCEL: [u8; 17] = [0, 0, 0, 13, 8, 0, 0, 0, 1, 0, 0, 0x40, 0, 0, 0, 0x40, 0];
static PORT: [u8; 7] = [0, 0, 0, 3, 9, 0x1a, 0xe1];
static SUGGEST: [u8; 9] = [0, 0, 0, 5, 0x0d, 0, 0, 0, 7];
static HAVE_ALL: [u8; 5] = [0, 0, 0, 1, 0x0e];
static HAVE_NONE: [u8; 5] = [0, 0, 0, 1, 0x0f];
static REJECT: [u8; 17] = [0, 0, 0, 13, 0x10, 0, 0, 0, 1, 0, 0, 0x40, 0, 0, 0, 0x40, 0];
static ALLOWED_FAST: [u8; 9] = [0, 0, 0, 5, 0x11, 0, 0, 0, 9];
static EXTENDED: [u8; 9] = [0, 0, 0, 5, 20, 0, b'd', b'e', b'!'];

fn vectors() -> [(&'static [u8], Message<'static>); 17] {
    [
        (&KEEPALIVE, Message::KeepAlive),
        (&CHOKE, Message::Choke),
        (&UNCHOKE, Message::Unchoke),
        (&INTERESTED, Message::Interested),
        (&NOT_INTERESTED, Message::NotInterested),
        (&HAVE, Message::Have { piece: 0x0102 }),
        (&BITFIELD, Message::Bitfield(&[0xff, 0x80])),
        (
            &REQUEST,
            Message::Request {
                index: 1,
                begin: 0x4000,
                length: 0x4000,
            },
        ),
        (
            &PIECE,
            Message::Piece {
                index: 1,
                begin: 0x4000,
                block: b"abc",
            },
        ),
        (
            &CANCEL,
            Message::Cancel {
                index: 1,
                begin: 0x4000,
                length: 0x4000,
            },
        ),
        (&PORT, Message::Port(6881)),
        (&SUGGEST, Message::SuggestPiece { piece: 7 }),
        (&HAVE_ALL, Message::HaveAll),
        (&HAVE_NONE, Message::HaveNone),
        (
            &REJECT,
            Message::RejectRequest {
                index: 1,
                begin: 0x4000,
                length: 0x4000,
            },
        ),
        (&ALLOWED_FAST, Message::AllowedFast { piece: 9 }),
        (
            &EXTENDED,
            Message::Extended {
                id: 0,
                payload: b"de!",
            },
        ),
    ]
}

#[test]
fn every_message_decodes_and_encodes() {
    for (bytes, msg) in vectors() {
        assert_eq!(Message::decode(bytes), Ok(msg), "{bytes:?}");
        assert_eq!(msg.encoded_len(), bytes.len());
        let mut out = [0u8; 32];
        assert_eq!(msg.encode(&mut out), Ok(bytes.len()));
        assert_eq!(&out[..bytes.len()], bytes);
        // One byte short of room is refused.
        assert_eq!(
            msg.encode(&mut out[..bytes.len() - 1]),
            Err(WireError::BufferTooSmall {
                needed: bytes.len()
            })
        );
    }
}

#[test]
fn piece_header_matches_encode() {
    assert_eq!(piece_header(1, 0x4000, 3).unwrap(), PIECE[..13]);
    assert_eq!(
        piece_header(0, 0, u32::MAX as usize - 9).map(|h| h[..4].to_vec()),
        Ok(std::vec![0xff; 4])
    );
    assert_eq!(
        piece_header(0, 0, u32::MAX as usize - 8),
        Err(WireError::TooLarge)
    );
}

#[test]
fn exact_length_errors() {
    // Each fixed-size id with its length one short and one long.
    for (id, len) in [
        (0u8, 1u32),
        (1, 1),
        (2, 1),
        (3, 1),
        (4, 5),
        (6, 13),
        (8, 13),
        (9, 3),
        (0x0d, 5),
        (0x0e, 1),
        (0x0f, 1),
        (0x10, 13),
        (0x11, 5),
    ] {
        for bad in [len - 1, len + 1] {
            if bad == 0 {
                continue; // length 0 is a keep-alive
            }
            let mut buf = [0u8; 32];
            buf[..4].copy_from_slice(&bad.to_be_bytes());
            buf[4] = id;
            let whole = &buf[..4 + bad as usize];
            assert_eq!(
                Message::decode(whole),
                Err(WireError::BadLength { id, len: bad }),
                "id {id} len {bad}"
            );
        }
    }
    // Minimums: bitfield >= 2, piece >= 9, extended >= 2.
    assert_eq!(
        Message::decode(&[0, 0, 0, 1, 5]),
        Err(WireError::BadLength { id: 5, len: 1 })
    );
    assert_eq!(
        Message::decode(&[0, 0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0]),
        Err(WireError::BadLength { id: 7, len: 8 })
    );
    assert_eq!(
        Message::decode(&[0, 0, 0, 9, 7, 0, 0, 0, 0, 0, 0, 0, 0]),
        Ok(Message::Piece {
            index: 0,
            begin: 0,
            block: &[]
        })
    );
    assert_eq!(
        Message::decode(&[0, 0, 0, 1, 20]),
        Err(WireError::BadLength { id: 20, len: 1 })
    );
}

#[test]
fn other_errors() {
    for id in [10u8, 11, 12, 18, 19, 21, 255] {
        assert_eq!(
            Message::decode(&[0, 0, 0, 1, id]),
            Err(WireError::UnknownId(id))
        );
    }
    assert_eq!(
        Message::decode(&[0, 0, 0]),
        Err(WireError::Truncated { len: 3, needed: 4 })
    );
    assert_eq!(
        Message::decode(&HAVE[..8]),
        Err(WireError::Truncated { len: 8, needed: 9 })
    );
    assert_eq!(
        Message::decode(&[0, 0, 0, 1, 0, 0]),
        Err(WireError::TrailingBytes { offset: 5 })
    );
    assert_eq!(Message::decode_body(&[]), Ok(Message::KeepAlive));
}

#[test]
fn every_id_and_short_length_agrees_with_framer() {
    // Every id with every length 0..40: decode never panics, and the framer
    // (given the whole message) says the same thing.
    let mut buf = [0u8; 4 + 40];
    for id in 0..=255u8 {
        for len in 0..40u32 {
            buf[..4].copy_from_slice(&len.to_be_bytes());
            buf[4] = id;
            let whole = &buf[..4 + len as usize];
            let direct = Message::decode(whole);
            let framed = Framer::new(DEFAULT_MAX_MESSAGE_LEN).parse(whole);
            match (direct, framed) {
                (Ok(m), Ok(Status::Complete((Frame::Message(f), n)))) => {
                    assert_eq!(m, f);
                    assert_eq!(n, whole.len());
                }
                (Err(e), Err(f)) => assert_eq!(e, f),
                other => panic!("id {id} len {len}: {other:?}"),
            }
        }
    }
}

#[test]
fn bitfield_check() {
    static EIGHT: [u8; 1] = [0xff];
    static NINE_OK: [u8; 2] = [0xff, 0x80];
    static NINE_SPARE: [u8; 2] = [0xff, 0x40];
    assert_eq!(check_bitfield(&EIGHT, 8), Ok(()));
    assert_eq!(check_bitfield(&NINE_OK, 9), Ok(()));
    assert_eq!(
        check_bitfield(&NINE_SPARE, 9),
        Err(WireError::BitfieldSpareBits)
    );
    assert_eq!(
        check_bitfield(&[0x01], 7),
        Err(WireError::BitfieldSpareBits)
    );
    assert_eq!(check_bitfield(&[0x02], 7), Ok(()));
    assert_eq!(
        check_bitfield(&EIGHT, 9),
        Err(WireError::BitfieldLength {
            expected: 2,
            got: 1
        })
    );
    assert_eq!(
        check_bitfield(&NINE_OK, 8),
        Err(WireError::BitfieldLength {
            expected: 1,
            got: 2
        })
    );
}

#[test]
fn errors_display() {
    use std::string::ToString;
    let e = WireError::BadLength { id: 4, len: 6 };
    assert_eq!(e.to_string(), "bad length 6 for message id 4");
}

fn arb_message() -> impl Strategy<Value = (u8, u32, u32, u32, u16, Vec<u8>)> {
    (
        0u8..17,
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
}

fn build<'a>(kind: u8, a: u32, b: u32, c: u32, p: u16, bytes: &'a [u8]) -> Message<'a> {
    match kind {
        0 => Message::KeepAlive,
        1 => Message::Choke,
        2 => Message::Unchoke,
        3 => Message::Interested,
        4 => Message::NotInterested,
        5 => Message::Have { piece: a },
        6 => Message::Bitfield(if bytes.is_empty() { &[0] } else { bytes }),
        7 => Message::Request {
            index: a,
            begin: b,
            length: c,
        },
        8 => Message::Piece {
            index: a,
            begin: b,
            block: bytes,
        },
        9 => Message::Cancel {
            index: a,
            begin: b,
            length: c,
        },
        10 => Message::Port(p),
        11 => Message::HaveAll,
        12 => Message::HaveNone,
        13 => Message::SuggestPiece { piece: a },
        14 => Message::RejectRequest {
            index: a,
            begin: b,
            length: c,
        },
        15 => Message::AllowedFast { piece: a },
        _ => Message::Extended {
            id: p as u8,
            payload: bytes,
        },
    }
}

proptest! {
    #[test]
    fn roundtrip(m in arb_message()) {
        let (k, a, b, c, p, bytes) = m;
        let msg = build(k, a, b, c, p, &bytes);
        let mut out = [0u8; 128];
        let n = msg.encode(&mut out).unwrap();
        prop_assert_eq!(Message::decode(&out[..n]), Ok(msg));
    }

    #[test]
    fn framer_ignores_chunking(
        msgs in proptest::collection::vec(arb_message(), 0..20),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let built: Vec<Message<'_>> = msgs
            .iter()
            .map(|(k, a, b, c, p, bytes)| build(*k, *a, *b, *c, *p, bytes))
            .collect();
        let mut stream = Vec::new();
        for m in &built {
            let mut out = [0u8; 128];
            let n = m.encode(&mut out).unwrap();
            stream.extend_from_slice(&out[..n]);
        }
        let mut cut_points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        cut_points.push(stream.len());
        cut_points.sort_unstable();
        // The shell's model: a read buffer that grows by chunks and is
        // drained from the front.
        let mut framer = Framer::new(DEFAULT_MAX_MESSAGE_LEN);
        let mut buf: Vec<u8> = Vec::new();
        let mut got = 0usize;
        let mut fed = 0usize;
        for cut in cut_points {
            buf.extend_from_slice(&stream[fed..cut]);
            fed = cut;
            loop {
                match framer.parse(&buf).unwrap() {
                    Status::Complete((Frame::Message(m), n)) => {
                        prop_assert_eq!(m, built[got]);
                        got += 1;
                        buf.drain(..n);
                    }
                    Status::Complete((Frame::Handshake(_), _)) => prop_assert!(false),
                    Status::Partial => break,
                }
            }
        }
        prop_assert_eq!(got, built.len());
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn fuzz_helpers_hold(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        crate::wire::fuzzing::fuzz_peer_wire(&data);
        crate::wire::fuzzing::fuzz_handshake(&data);
        crate::wire::fuzzing::fuzz_extension_handshake(&data);
    }

    #[test]
    fn fuzz_peer_wire_on_valid_streams(msgs in proptest::collection::vec(arb_message(), 0..10), head in any::<u8>()) {
        let mut stream = std::vec![head & !1];
        for (k, a, b, c, p, bytes) in &msgs {
            let m = build(*k, *a, *b, *c, *p, bytes);
            let mut out = [0u8; 128];
            let n = m.encode(&mut out).unwrap();
            stream.extend_from_slice(&out[..n]);
        }
        crate::wire::fuzzing::fuzz_peer_wire(&stream);
    }
}
