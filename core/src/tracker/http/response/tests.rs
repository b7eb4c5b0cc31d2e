use super::*;
use core::net::{Ipv4Addr, Ipv6Addr};
use proptest::prelude::*;
use std::vec::Vec;

static COMPACT: &[u8] = b"d8:completei3e10:incompletei5e8:intervali1800e12:min intervali60e\
5:peers12:\x0a\x00\x00\x01\x1a\xe1\xc0\xa8\x01\x02\x00\x50\
6:peers618:\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x1a\xe1\
15:warning message4:hey!e";

/// Dictionary model, keys out of order (lenient decoding), a host name.
static DICT_MODEL: &[u8] = b"d5:peersl\
d2:ip8:10.0.0.17:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti6881ee\
d2:ip11:example.org4:porti1ee\
d4:porti2e2:ip3:::1e\
e8:intervali900ee";

static FAILURE: &[u8] = b"d14:failure reason9:forbiddene";

static SCRAPE: &[u8] =
    b"d5:filesd20:\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\
d8:completei1e10:downloadedi2e10:incompletei3eeee";

fn toks() -> [Token; 128] {
    [Token::EMPTY; 128]
}

fn e(kind: ResponseErrorKind, offset: usize) -> ResponseError {
    ResponseError { kind, offset }
}

#[test]
fn compact_vector_round_trip() {
    let mut t = toks();
    let r = AnnounceResponse::decode(COMPACT, &mut t).unwrap();
    assert_eq!(r.failure_reason, None);
    assert_eq!(r.warning_message, Some(&b"hey!"[..]));
    assert_eq!(
        (r.interval, r.min_interval, r.complete, r.incomplete),
        (1800, Some(60), Some(3), Some(5))
    );
    let peers: Vec<_> = r.all_peers().collect();
    assert_eq!(
        peers,
        [
            SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 6881)),
            SocketAddr::from((Ipv4Addr::new(192, 168, 1, 2), 80)),
            SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 6881)),
        ]
    );
    let mut out = [0u8; 256];
    let n = encode_announce_response(&r, &mut out).unwrap();
    assert_eq!(&out[..n], COMPACT);
    assert_eq!(
        encode_announce_response(&r, &mut out[..n - 1]),
        Err(EncodeError::BufferTooSmall)
    );
}

#[test]
fn dict_model_and_failure() {
    let mut t = toks();
    let r = AnnounceResponse::decode(DICT_MODEL, &mut t).unwrap();
    assert_eq!(r.interval, 900);
    let peers: Vec<_> = r.all_peers().collect();
    assert_eq!(
        peers,
        [
            SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 6881)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, 2)),
        ]
    );
    let mut out = [0u8; 64];
    assert_eq!(
        encode_announce_response(&r, &mut out),
        Err(EncodeError::NotCompact)
    );

    let mut t = toks();
    let f = AnnounceResponse::decode(FAILURE, &mut t).unwrap();
    assert_eq!(f.failure_reason, Some(&b"forbidden"[..]));
    let n = encode_announce_response(&f, &mut out).unwrap();
    assert_eq!(&out[..n], FAILURE);
    let n = encode_failure(b"forbidden", &mut out).unwrap();
    assert_eq!(&out[..n], FAILURE);
}

#[test]
fn announce_errors() {
    use ResponseErrorKind::*;
    let cases: &[(&[u8], ResponseError)] = &[
        (b"le", e(NotADict, 0)),
        (b"d5:peers0:e", e(Missing("interval"), 0)),
        (b"d8:intervali-1ee", e(BadField("interval"), 11)),
        (b"d8:intervali4294967296ee", e(BadField("interval"), 11)),
        (b"d8:interval1:xe", e(BadField("interval"), 11)),
        (b"d8:intervali1e5:peers7:1234567e", e(BadField("peers"), 21)),
        (b"d8:intervali1e5:peersi1ee", e(BadField("peers"), 21)),
        (
            b"d8:intervali1e6:peers617:12345678901234567e",
            e(BadField("peers6"), 22),
        ),
        (
            b"d8:intervali1e5:peersld2:ip1:xeee",
            e(BadField("peers"), 22),
        ),
        (
            b"d8:intervali1e5:peersld2:ip1:x4:porti65536eeee",
            e(BadField("peers"), 22),
        ),
        (b"d8:intervali1e5:peersli1eee", e(BadField("peers"), 22)),
        (b"d14:failure reasoni1ee", e(BadField("failure reason"), 18)),
        (
            b"d8:intervali1e",
            e(Bencode(bencode::ErrorKind::UnexpectedEnd), 14),
        ),
    ];
    for (input, want) in cases {
        let mut t = toks();
        assert_eq!(
            AnnounceResponse::decode(input, &mut t).err(),
            Some(*want),
            "{}",
            std::string::String::from_utf8_lossy(input)
        );
    }
    // Edges: u32::MAX interval and port 65535 accepted.
    let mut t = toks();
    let r = AnnounceResponse::decode(
        b"d8:intervali4294967295e5:peersld2:ip1:x4:porti65535eeee",
        &mut t,
    )
    .unwrap();
    assert_eq!(r.interval, u32::MAX);
    // The token limit at its edge: the compact vector needs 15 tokens.
    let mut t = [Token::EMPTY; 15];
    assert!(AnnounceResponse::decode(COMPACT, &mut t).is_ok());
    let mut t = [Token::EMPTY; 14];
    assert!(matches!(
        AnnounceResponse::decode(COMPACT, &mut t),
        Err(ResponseError {
            kind: Bencode(bencode::ErrorKind::TokenLimit),
            ..
        })
    ));
}

#[test]
fn scrape_vectors() {
    let mut t = toks();
    let s = ScrapeResponse::decode(SCRAPE, &mut t).unwrap();
    let files: Vec<_> = s.files().collect();
    assert_eq!(
        files,
        [(
            InfoHash([1; 20]),
            TorrentStats {
                seeders: 1,
                completed: 2,
                leechers: 3
            }
        )]
    );
    let mut entries = files.clone();
    let mut out = [0u8; 200];
    let n = encode_scrape_response(&mut entries, &mut out).unwrap();
    assert_eq!(&out[..n], SCRAPE);
    // Sorted on output; duplicates refused.
    let st = TorrentStats::default();
    let mut two = [(InfoHash([9; 20]), st), (InfoHash([2; 20]), st)];
    let n = encode_scrape_response(&mut two, &mut out).unwrap();
    let mut t = toks();
    let keys: Vec<_> = ScrapeResponse::decode(&out[..n], &mut t)
        .unwrap()
        .files()
        .map(|f| f.0)
        .collect();
    assert_eq!(keys, [InfoHash([2; 20]), InfoHash([9; 20])]);
    let mut dup = [(InfoHash([9; 20]), st), (InfoHash([9; 20]), st)];
    assert_eq!(
        encode_scrape_response(&mut dup, &mut out),
        Err(EncodeError::DuplicateInfoHash)
    );
    use ResponseErrorKind::*;
    for (input, want) in [
        (&b"d5:filesd3:abcdeee"[..], e(BadField("files"), 14)),
        (
            b"d5:filesd20:aaaaaaaaaaaaaaaaaaaai1eee",
            e(BadField("files"), 32),
        ),
        (b"d5:filesi1ee", e(BadField("files"), 8)),
        (
            b"d5:filesd20:aaaaaaaaaaaaaaaaaaaad8:completei-1eeee",
            e(BadField("complete"), 43),
        ),
    ] {
        let mut t = toks();
        assert_eq!(ScrapeResponse::decode(input, &mut t).err(), Some(want));
    }
    let mut t = toks();
    let f = ScrapeResponse::decode(FAILURE, &mut t).unwrap();
    assert_eq!(f.failure_reason, Some(&b"forbidden"[..]));
    assert_eq!(f.files().count(), 0);
}

#[test]
fn prefixes_never_panic() {
    let mut seed = 0xdead_beef_cafe_f00du64;
    for base in [COMPACT, DICT_MODEL, FAILURE, SCRAPE] {
        for len in 0..256 {
            let mut p: Vec<u8> = base.iter().copied().take(len).collect();
            while p.len() < len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                p.push(b"dleid0123456789:"[(seed % 16) as usize]);
            }
            let mut t = toks();
            if let Ok(r) = AnnounceResponse::decode(&p, &mut t) {
                let _ = r.all_peers().count();
            }
            let mut t = toks();
            if let Ok(s) = ScrapeResponse::decode(&p, &mut t) {
                let _ = s.files().count();
            }
        }
    }
}

proptest! {
    #[test]
    fn announce_round_trip(
        v4 in proptest::collection::vec(any::<(u32, u16)>(), 0..40),
        v6 in proptest::collection::vec(any::<(u128, u16)>(), 0..40),
        interval: u32,
        opt in proptest::option::of(any::<(u32, u32, u32)>()),
        warning in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
    ) {
        let a4: Vec<SocketAddr> = v4.iter().map(|&(i, p)| SocketAddr::from((Ipv4Addr::from(i), p))).collect();
        let a6: Vec<SocketAddr> = v6.iter().map(|&(i, p)| SocketAddr::from((Ipv6Addr::from(i), p))).collect();
        let mut b4 = [0u8; 6 * 40];
        let mut b6 = [0u8; 18 * 40];
        let mut r = AnnounceResponse::new(interval);
        r.peers = Peers::Compact(compact_peers(a4.iter().copied(), AddressFamily::V4, &mut b4));
        r.peers6 = compact_peers(a6.iter().copied(), AddressFamily::V6, &mut b6);
        r.warning_message = warning.as_deref();
        if let Some((a, b, c)) = opt {
            (r.min_interval, r.complete, r.incomplete) = (Some(a), Some(b), Some(c));
        }
        let mut out = [0u8; 1500];
        let n = encode_announce_response(&r, &mut out).unwrap();
        let mut t = toks();
        let d = AnnounceResponse::decode(&out[..n], &mut t).unwrap();
        prop_assert_eq!(d.all_peers().collect::<Vec<_>>(), [a4, a6].concat());
        prop_assert_eq!((d.interval, d.min_interval, d.complete, d.incomplete), (r.interval, r.min_interval, r.complete, r.incomplete));
        prop_assert_eq!(d.warning_message, r.warning_message);
    }

    #[test]
    fn scrape_round_trip(entries in proptest::collection::btree_map(any::<[u8; 20]>(), any::<[u32; 3]>(), 0..20)) {
        let mut v: Vec<(InfoHash, TorrentStats)> = entries
            .iter()
            .map(|(h, s)| (InfoHash(*h), TorrentStats { seeders: s[0], completed: s[1], leechers: s[2] }))
            .collect();
        let want = v.clone();
        let mut out = [0u8; 2000];
        let n = encode_scrape_response(&mut v, &mut out).unwrap();
        let mut t = [Token::EMPTY; 256];
        let d = ScrapeResponse::decode(&out[..n], &mut t).unwrap();
        prop_assert_eq!(d.files().collect::<Vec<_>>(), want);
    }
}
