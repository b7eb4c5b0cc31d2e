//! Property checks behind the cargo-fuzz targets in `fuzz/` (rustls style:
//! each target is a three-line wrapper around one of these). They decode,
//! re-encode and compare, and assert the limits; a failed `assert!` here is
//! a finding. Not part of the supported API.

use crate::bencode::{self, DecodeOptions, Encoder, ErrorKind, SliceWriter, Token};
use crate::magnet::Magnet;
use crate::metainfo::{Limits, Metainfo};

/// Tokens available to the fuzz helpers (fuzz inputs are small).
const FUZZ_TOKENS: usize = 4096;
/// Largest input re-encoded by [`bencode`].
const FUZZ_MAX_LEN: usize = 1 << 16;

/// Bencode: strict decode → encode reproduces the input byte for byte
/// (canonical form is unique); lenient accepts a superset of strict that
/// differs only by key order; spans and limits hold.
pub fn bencode(data: &[u8]) {
    let mut toks = [Token::EMPTY; FUZZ_TOKENS];
    let strict =
        bencode::decode(data, &mut toks, DecodeOptions::default()).map(|d| d.tokens().len());
    let mut toks2 = [Token::EMPTY; FUZZ_TOKENS];
    let lenient = bencode::decode(data, &mut toks2, DecodeOptions::lenient());
    match (&strict, &lenient) {
        (Ok(n), Ok(doc)) => assert_eq!(*n, doc.tokens().len()),
        (Ok(_), Err(e)) => panic!("strict accepted, lenient refused: {e:?}"),
        (Err(e), Ok(_)) => assert!(
            matches!(e.kind, ErrorKind::UnsortedKey | ErrorKind::DuplicateKey),
            "lenient accepted what strict refused for {e:?}"
        ),
        (Err(a), Err(b)) => assert_eq!(a, b, "strict and lenient disagree on the error"),
    }
    if let Err(e) = strict {
        assert!(e.offset <= data.len());
    }
    if strict.is_err() || data.len() > FUZZ_MAX_LEN {
        return;
    }
    let Ok(doc) = bencode::decode(data, &mut toks, DecodeOptions::default()) else {
        panic!("strict decode not deterministic");
    };
    let root = doc.root();
    assert!(root.is_some());
    if let Some(root) = root {
        assert_eq!(root.raw(), data);
        let mut out = [0u8; FUZZ_MAX_LEN];
        let mut e = Encoder::new(SliceWriter::new(&mut out));
        assert!(
            e.value(root).is_ok(),
            "re-encoding a strict document failed"
        );
        let Ok((w, n)) = e.finish() else {
            panic!("encoder unfinished")
        };
        assert_eq!(n, data.len());
        assert_eq!(w.written(), data, "decode → encode is not the identity");
    }
}

/// Metainfo: no panic; an accepted torrent's accessors agree with its
/// validation (file lengths sum to the total, piece count matches, every
/// path component passes the path check).
pub fn metainfo(data: &[u8]) {
    let mut toks = [Token::EMPTY; FUZZ_TOKENS];
    let Ok(m) = Metainfo::parse(data, &mut toks, &Limits::default()) else {
        return;
    };
    let mut total = 0u64;
    for f in m.files() {
        total += f.length;
        let mut depth = 0;
        for c in f.path() {
            depth += 1;
            assert!(crate::metainfo::check_component(c.as_bytes()).is_ok());
        }
        assert!(depth >= 1);
    }
    assert_eq!(total, m.total_length());
    assert_eq!(
        m.piece_count() as u64,
        m.total_length().div_ceil(m.piece_length())
    );
    assert!(m.piece_hash(m.piece_count()).is_none());
}

/// Magnet: no panic; decoded values fit the buffer; limits hold.
pub fn magnet(data: &[u8]) {
    let Ok(s) = core::str::from_utf8(data) else {
        return;
    };
    let mut buf = [0u8; 1024];
    let parsed = Magnet::parse(s, &mut buf);
    if let Ok(m) = parsed {
        assert!(m.trackers.len() <= crate::magnet::MAX_TRACKERS);
        assert!(m.peers.len() <= crate::magnet::MAX_PEERS);
        assert!(s.len() >= 8 + 9 + 32);
    }
}
