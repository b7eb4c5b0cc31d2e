//! Bencode unit tests: a table of good and bad inputs with the expected
//! error and offset, limit edges, navigation, encoder, and properties.

use super::*;
use std::vec::Vec;

fn dec(input: &[u8]) -> Result<usize, Error> {
    let mut toks = [Token::EMPTY; 64];
    decode(input, &mut toks, DecodeOptions::default()).map(|d| d.tokens().len())
}

fn bad(input: &[u8], kind: ErrorKind, offset: usize) {
    assert_eq!(
        dec(input),
        Err(Error { kind, offset }),
        "input {:?}",
        std::string::String::from_utf8_lossy(input)
    );
}

#[test]
fn good_inputs() {
    let table: &[(&[u8], usize)] = &[
        (b"i0e", 1),
        (b"i-1e", 1),
        (b"i9223372036854775807e", 1),
        (b"i-9223372036854775808e", 1),
        (b"0:", 1),
        (b"4:spam", 1),
        (b"le", 1),
        (b"de", 1),
        (b"l4:spami42ee", 3),
        (b"d3:bar4:spam3:fooi42ee", 5),
        (b"d1:ad1:bl1:ceee", 6),
        (b"lli1eeli2eee", 5),
    ];
    for (input, ntok) in table {
        assert_eq!(dec(input), Ok(*ntok), "{:?}", input);
    }
}

#[test]
fn integer_errors() {
    bad(b"ie", ErrorKind::EmptyInteger, 1);
    bad(b"i-e", ErrorKind::EmptyInteger, 2);
    bad(b"i03e", ErrorKind::LeadingZero, 1);
    bad(b"i-03e", ErrorKind::LeadingZero, 2);
    bad(b"i-0e", ErrorKind::NegativeZero, 2);
    bad(b"i9223372036854775808e", ErrorKind::IntegerOverflow, 1);
    bad(b"i-9223372036854775809e", ErrorKind::IntegerOverflow, 2);
    bad(b"i99999999999999999999999e", ErrorKind::IntegerOverflow, 20);
    bad(b"i12", ErrorKind::UnexpectedEnd, 3);
    bad(b"i1x2e", ErrorKind::UnexpectedByte(b'x'), 2);
    bad(b"i+1e", ErrorKind::UnexpectedByte(b'+'), 1);
}

#[test]
fn string_errors() {
    bad(b"5:abc", ErrorKind::LengthOverflow, 0);
    bad(b"01:a", ErrorKind::LeadingZero, 0);
    bad(b"3abc", ErrorKind::MissingColon, 1);
    bad(b"3", ErrorKind::UnexpectedEnd, 1);
    bad(b"99999999999:a", ErrorKind::LengthOverflow, 0);
    bad(b"184467440737095516160:a", ErrorKind::LengthOverflow, 0);
    // Exactly to the end is fine; one more is not.
    assert_eq!(dec(b"3:abc"), Ok(1));
    bad(b"4:abc", ErrorKind::LengthOverflow, 0);
}

#[test]
fn structure_errors() {
    bad(b"", ErrorKind::UnexpectedEnd, 0);
    bad(b"l", ErrorKind::UnexpectedEnd, 1);
    bad(b"li1e", ErrorKind::UnexpectedEnd, 4);
    bad(b"d3:foo", ErrorKind::UnexpectedEnd, 6);
    bad(b"d3:fooe", ErrorKind::MissingValue, 6);
    bad(b"di1ei2ee", ErrorKind::KeyNotString, 1);
    bad(b"dlei1ee", ErrorKind::KeyNotString, 1);
    bad(b"e", ErrorKind::UnexpectedByte(b'e'), 0);
    bad(b"x", ErrorKind::UnexpectedByte(b'x'), 0);
    bad(b"i1ei2e", ErrorKind::TrailingBytes, 3);
    bad(b"lee", ErrorKind::TrailingBytes, 2);
    bad(b"4:spam ", ErrorKind::TrailingBytes, 6);
}

#[test]
fn string_length_at_the_u32_boundary_is_refused() {
    // Attack: a 32-bit length that wraps (libtorrent/transmission-style
    // length overflow). 2^32 does not fit the u32 offsets at all; 2^32 - 1
    // fits the type but not the input. Neither allocates or wraps.
    bad(b"4294967296:", ErrorKind::LengthOverflow, 0);
    bad(b"4294967296:abc", ErrorKind::LengthOverflow, 0);
    bad(b"4294967295:a", ErrorKind::LengthOverflow, 0);
    bad(b"l4294967296:e", ErrorKind::LengthOverflow, 1);
    // A length one past what is left, inside a container.
    bad(b"l3:ae", ErrorKind::LengthOverflow, 1);
}

#[test]
fn token_exhaustion_on_a_huge_flat_list() {
    // Attack: 100k tiny values to exhaust a decoder's node storage. The
    // caller's token slice is the bound: refused at the 65th value.
    let mut input = Vec::with_capacity(2 + 3 * 100_000);
    input.push(b'l');
    for _ in 0..100_000 {
        input.extend_from_slice(b"i0e");
    }
    input.push(b'e');
    let mut toks = [Token::EMPTY; 64];
    assert_eq!(
        decode(&input, &mut toks, DecodeOptions::default()).unwrap_err(),
        Error {
            kind: ErrorKind::TokenLimit,
            offset: 1 + 63 * 3
        }
    );
}

#[test]
fn key_order_strict_and_lenient() {
    bad(b"d3:fooi1e3:bari2ee", ErrorKind::UnsortedKey, 9);
    bad(b"d3:fooi1e3:fooi2ee", ErrorKind::DuplicateKey, 9);
    // Raw byte order: "a" < "ab" < "b"; uppercase sorts before lowercase.
    assert_eq!(dec(b"d1:ai1e2:abi2e1:bi3ee"), Ok(7));
    assert_eq!(dec(b"d1:Bi1e1:ai2ee"), Ok(5));
    // Nested dicts check their own keys only.
    assert_eq!(dec(b"d1:bd1:ai1ee1:ci1ee"), Ok(7));
    let mut toks = [Token::EMPTY; 16];
    let doc = decode(
        b"d3:fooi1e3:bari2e3:fooi3ee",
        &mut toks,
        DecodeOptions::lenient(),
    )
    .unwrap();
    // Lenient lookups return the first match.
    assert_eq!(doc.root().unwrap().get(b"foo").unwrap().as_int(), Some(1));
    assert_eq!(doc.root().unwrap().get(b"bar").unwrap().as_int(), Some(2));
}

#[test]
fn token_limit_edge() {
    let input = b"li1ei2ee"; // 3 tokens
    let mut three = [Token::EMPTY; 3];
    assert!(decode(input, &mut three, DecodeOptions::default()).is_ok());
    let mut two = [Token::EMPTY; 2];
    assert_eq!(
        decode(input, &mut two, DecodeOptions::default()).unwrap_err(),
        Error {
            kind: ErrorKind::TokenLimit,
            offset: 4
        }
    );
    let mut none: [Token; 0] = [];
    assert_eq!(
        decode(b"i1e", &mut none, DecodeOptions::default())
            .unwrap_err()
            .kind,
        ErrorKind::TokenLimit
    );
}

#[test]
fn depth_limit_edge() {
    let mut toks = [Token::EMPTY; 64];
    let opts = DecodeOptions {
        max_depth: 3,
        ..DecodeOptions::default()
    };
    assert!(decode(b"llleee", &mut toks, opts).is_ok());
    assert_eq!(
        decode(b"lllleeee", &mut toks, opts).unwrap_err(),
        Error {
            kind: ErrorKind::DepthLimit,
            offset: 3
        }
    );
    // A scalar at depth 0 needs no depth.
    let zero = DecodeOptions {
        max_depth: 0,
        ..DecodeOptions::default()
    };
    assert!(decode(b"i1e", &mut toks, zero).is_ok());
    assert_eq!(
        decode(b"le", &mut toks, zero).unwrap_err().kind,
        ErrorKind::DepthLimit
    );
}

#[test]
fn deep_nesting_is_bounded_not_recursive() {
    // 100k open lists: refused at the depth limit, no stack overflow.
    let input: Vec<u8> = core::iter::repeat_n(b'l', 100_000).collect();
    let mut toks = [Token::EMPTY; 2048];
    let opts = DecodeOptions {
        max_depth: MAX_DEPTH + 10,
        ..DecodeOptions::default()
    };
    let e = decode(&input, &mut toks, opts).unwrap_err();
    assert_eq!(
        e,
        Error {
            kind: ErrorKind::DepthLimit,
            offset: MAX_DEPTH
        }
    );
}

#[test]
fn navigation() {
    let input = b"d4:infod6:lengthi12e4:name3:abce4:listl1:xi-7eee";
    let mut toks = [Token::EMPTY; 16];
    let doc = decode(input, &mut toks, DecodeOptions::default()).unwrap();
    let root = doc.root().unwrap();
    assert_eq!(root.kind(), TokenKind::Dict);
    assert_eq!(root.len(), 2);
    let info = root.get(b"info").unwrap();
    assert_eq!(info.raw(), b"d6:lengthi12e4:name3:abce");
    assert_eq!(info.offset(), 7);
    assert_eq!(info.get(b"length").unwrap().as_int(), Some(12));
    assert_eq!(info.get(b"name").unwrap().as_str(), Some("abc"));
    assert!(info.get(b"nope").is_none());
    assert!(info.get(b"name").unwrap().as_int().is_none());
    let list: Vec<_> = root.get(b"list").unwrap().as_list().unwrap().collect();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].as_bytes(), Some(&b"x"[..]));
    assert_eq!(list[1].as_int(), Some(-7));
    let keys: Vec<_> = root.as_dict().unwrap().map(|(k, _)| k).collect();
    assert_eq!(keys, [&b"info"[..], b"list"]);
    assert!(root.as_list().is_none());
}

#[test]
fn encoder_writes_canonical() {
    let mut buf = [0u8; 64];
    let mut e = Encoder::new(SliceWriter::new(&mut buf));
    e.begin_dict().unwrap();
    e.key(b"a").unwrap();
    e.int(i64::MIN).unwrap();
    e.key(b"b").unwrap();
    e.begin_list().unwrap();
    e.bytes(b"").unwrap();
    e.int(0).unwrap();
    e.end().unwrap();
    e.end().unwrap();
    let (w, n) = e.finish().unwrap();
    assert_eq!(w.written(), b"d1:ai-9223372036854775808e1:bl0:i0eee");
    assert_eq!(n, w.len());
}

#[test]
fn encoder_refusals() {
    let mut buf = [0u8; 64];
    let mut e = Encoder::new(SliceWriter::new(&mut buf));
    e.begin_dict().unwrap();
    e.key(b"b").unwrap();
    e.int(1).unwrap();
    assert_eq!(e.key(b"a"), Err(EncodeError::UnsortedKey));
    assert_eq!(e.key(b"b"), Err(EncodeError::DuplicateKey));
    assert_eq!(e.int(2), Err(EncodeError::MissingKey));
    e.key(b"c").unwrap();
    assert_eq!(e.end(), Err(EncodeError::MissingValue));
    assert_eq!(e.key(b"d"), Err(EncodeError::UnexpectedKey));
    e.int(3).unwrap();
    e.end().unwrap();
    assert_eq!(e.end(), Err(EncodeError::Unbalanced));
    assert_eq!(e.int(4), Err(EncodeError::MultipleRoots));

    let mut buf = [0u8; 64];
    let mut e = Encoder::new(SliceWriter::new(&mut buf));
    assert_eq!(e.key(b"k"), Err(EncodeError::UnexpectedKey));
    e.begin_list().unwrap();
    assert!(matches!(e.finish(), Err(EncodeError::Unfinished)));
}

#[test]
fn encoder_depth_and_buffer_edges() {
    let mut buf = [0u8; 256];
    let mut e = Encoder::new(SliceWriter::new(&mut buf));
    for _ in 0..MAX_ENCODE_DEPTH {
        e.begin_list().unwrap();
    }
    assert_eq!(e.begin_list(), Err(EncodeError::DepthLimit));

    // "4:spam" needs exactly 6 bytes.
    let mut six = [0u8; 6];
    let mut e = Encoder::new(SliceWriter::new(&mut six));
    e.bytes(b"spam").unwrap();
    let mut five = [0u8; 5];
    let mut e = Encoder::new(SliceWriter::new(&mut five));
    assert_eq!(e.bytes(b"spam"), Err(EncodeError::Write(SliceWriterFull)));
}

#[test]
fn reencode_decoded_value() {
    let input = b"d1:ad1:bl1:ci-5eee1:x0:e";
    let mut toks = [Token::EMPTY; 16];
    let doc = decode(input, &mut toks, DecodeOptions::default()).unwrap();
    let mut buf = [0u8; 64];
    let mut e = Encoder::new(SliceWriter::new(&mut buf));
    e.value(doc.root().unwrap()).unwrap();
    let (w, _) = e.finish().unwrap();
    assert_eq!(w.written(), input);

    let unsorted = b"d1:bi1e1:ai2ee";
    let doc = decode(unsorted, &mut toks, DecodeOptions::lenient()).unwrap();
    let mut e = Encoder::new(SliceWriter::new(&mut buf));
    assert_eq!(e.value(doc.root().unwrap()), Err(EncodeError::UnsortedKey));
}

mod props {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::vec;

    #[derive(Clone, Debug, PartialEq)]
    enum V {
        I(i64),
        B(Vec<u8>),
        L(Vec<V>),
        D(BTreeMap<Vec<u8>, V>),
    }

    fn arb() -> impl Strategy<Value = V> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(V::I),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(V::B),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(V::L),
                proptest::collection::btree_map(
                    proptest::collection::vec(any::<u8>(), 0..6),
                    inner,
                    0..6
                )
                .prop_map(V::D),
            ]
        })
    }

    fn enc<'k>(v: &'k V, e: &mut Encoder<'k, SliceWriter<'_>>) {
        match v {
            V::I(i) => e.int(*i).unwrap(),
            V::B(b) => e.bytes(b).unwrap(),
            V::L(l) => {
                e.begin_list().unwrap();
                l.iter().for_each(|x| enc(x, e));
                e.end().unwrap();
            }
            V::D(d) => {
                e.begin_dict().unwrap();
                for (k, x) in d {
                    e.key(k).unwrap();
                    enc(x, e);
                }
                e.end().unwrap();
            }
        }
    }

    fn back(v: Value<'_, '_>) -> V {
        match v.kind() {
            TokenKind::Int => V::I(v.as_int().unwrap()),
            TokenKind::Bytes => V::B(v.as_bytes().unwrap().to_vec()),
            TokenKind::List => V::L(v.as_list().unwrap().map(back).collect()),
            TokenKind::Dict => V::D(
                v.as_dict()
                    .unwrap()
                    .map(|(k, x)| (k.to_vec(), back(x)))
                    .collect(),
            ),
        }
    }

    proptest! {
        #[test]
        fn decode_encode_round_trip(v in arb()) {
            let mut buf = vec![0u8; 1 << 16];
            let mut e = Encoder::new(SliceWriter::new(&mut buf));
            enc(&v, &mut e);
            let (w, n) = e.finish().unwrap();
            let bytes = w.written().to_vec();
            prop_assert_eq!(bytes.len(), n);
            let mut toks = vec![Token::EMPTY; 1024];
            let doc = decode(&bytes, &mut toks, DecodeOptions::default()).unwrap();
            prop_assert_eq!(back(doc.root().unwrap()), v);
            // And re-encoding the decoded document gives the same bytes.
            let mut buf2 = vec![0u8; 1 << 16];
            let mut e2 = Encoder::new(SliceWriter::new(&mut buf2));
            e2.value(doc.root().unwrap()).unwrap();
            let (w2, _) = e2.finish().unwrap();
            prop_assert_eq!(w2.written(), &bytes[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut toks = [Token::EMPTY; 32];
            for opts in [DecodeOptions::default(), DecodeOptions::lenient()] {
                if let Ok(doc) = decode(&data, &mut toks, opts) {
                    // A successful decode spans the whole input.
                    prop_assert_eq!(doc.root().unwrap().raw(), &data[..]);
                }
            }
        }

        #[test]
        fn bencode_like_bytes_never_panic(data in proptest::collection::vec(
            prop_oneof![Just(b'i'), Just(b'e'), Just(b'l'), Just(b'd'), Just(b':'), Just(b'-'), b'0'..=b'9', any::<u8>()], 0..128)) {
            let mut toks = [Token::EMPTY; 16];
            let _ = decode(&data, &mut toks, DecodeOptions::lenient());
            let _ = decode(&data, &mut toks, DecodeOptions::default());
        }
    }
}

#[test]
fn trailing_bytes_only_when_allowed() {
    let mut toks = [Token::EMPTY; 8];
    for input in [&b"d1:ai1ee\n"[..], b"d1:ai1eed1:bi2ee", b"i1eGARBAGE"] {
        let e = decode(input, &mut toks, DecodeOptions::lenient()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TrailingBytes);
        let doc = decode(input, &mut toks, DecodeOptions::torrent_file()).unwrap();
        // The root spans only the first value; the rest is ignored.
        let root = doc.root().unwrap();
        assert_eq!(root.raw(), &input[..e.offset]);
    }
    // Still one complete value first: a truncated one is refused.
    assert_eq!(
        decode(b"d1:a", &mut toks, DecodeOptions::torrent_file())
            .unwrap_err()
            .kind,
        ErrorKind::UnexpectedEnd
    );
    assert!(!DecodeOptions::default().allow_trailing);
}
