use super::*;
use crate::tracker::udp::MAX_SCRAPE_HASHES;
use proptest::prelude::*;
use std::vec::Vec;

static CONNECT: [u8; 16] = [
    0x00, 0x00, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80, // protocol id
    0x00, 0x00, 0x00, 0x00, // action: connect
    0xde, 0xad, 0xbe, 0xef, // transaction id
];

static ANNOUNCE: [u8; 98] = [
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // connection id
    0x00, 0x00, 0x00, 0x01, // action: announce
    0x00, 0x00, 0x00, 0x2a, // transaction id
    0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, // info hash
    0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, //
    b'-', b'O', b'T', b'0', b'0', b'0', b'1', b'-', b'a', b'b', // peer id
    b'c', b'd', b'e', b'f', b'g', b'h', b'i', b'j', b'k', b'l', //
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, // downloaded 4096
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, // left 65536
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, // uploaded 7
    0x00, 0x00, 0x00, 0x02, // event: started
    0x00, 0x00, 0x00, 0x00, // ip: default
    0x12, 0x34, 0x56, 0x78, // key
    0xff, 0xff, 0xff, 0xff, // num_want -1
    0x1a, 0xe1, // port 6881
];

/// BEP 41's example: "/announce?passkey=1234" as two URLData options, a NOP
/// and EndOfOptions followed by ignored garbage.
static OPTIONS: [u8; 30] = [
    0x02, 0x0c, b'/', b'a', b'n', b'n', b'o', b'u', b'n', b'c', b'e', b'?', b'p', b'a', //
    0x01, // NOP
    0x02, 0x0a, b's', b's', b'k', b'e', b'y', b'=', b'1', b'2', b'3', b'4', //
    0x00, // EndOfOptions
    0xff, 0x07, // ignored
];

fn with(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn scrape(n: usize) -> Vec<u8> {
    let mut v = ANNOUNCE[..16].to_vec();
    v[11] = 2;
    for i in 0..n {
        v.extend_from_slice(&[i as u8; 20]);
    }
    v
}

fn lim() -> Limits {
    Limits::default()
}

#[test]
fn connect_vector() {
    let r = Request::parse(&CONNECT, &lim()).unwrap();
    assert_eq!(
        r,
        Request::Connect(ConnectRequest {
            transaction_id: TransactionId(0xdeadbeef)
        })
    );
    let mut out = [0u8; 16];
    assert_eq!(r.encode(&mut out), Ok(16));
    assert_eq!(out, CONNECT);
    // BEP 15: do not assume a fixed size; trailing bytes are tolerated.
    let longer = with(&[&CONNECT, &[1, 2, 3]]);
    assert_eq!(Request::parse(&longer, &lim()), Ok(r));
}

#[test]
fn connect_errors() {
    let mut bad = CONNECT;
    bad[7] = 0x81;
    assert_eq!(
        Request::parse(&bad, &lim()),
        Err(RequestError::Unsendable(ParseError::new(
            ParseErrorKind::BadProtocolId,
            0
        )))
    );
    for n in 0..16 {
        assert_eq!(
            Request::parse(&CONNECT[..n], &lim()),
            Err(RequestError::Unsendable(ParseError::new(
                ParseErrorKind::Truncated,
                n
            )))
        );
    }
}

#[test]
fn announce_vector() {
    let Request::Announce(a) = Request::parse(&ANNOUNCE, &lim()).unwrap() else {
        panic!("not an announce")
    };
    assert_eq!(a.connection_id, ConnectionId(0x0102030405060708));
    assert_eq!(a.transaction_id, TransactionId(42));
    assert_eq!(a.info_hash, InfoHash([0xaa; 20]));
    assert_eq!(&a.peer_id.0[..8], b"-OT0001-");
    assert_eq!((a.downloaded, a.left, a.uploaded), (4096, 65536, 7));
    assert_eq!(a.event, AnnounceEvent::Started);
    assert_eq!(a.ip, Ipv4Addr::UNSPECIFIED);
    assert_eq!((a.key, a.num_want, a.port), (0x12345678, -1, 6881));
    assert!(a.options.as_bytes().is_empty());
    let mut out = [0u8; 98];
    assert_eq!(a.encode(&mut out), Ok(98));
    assert_eq!(out, ANNOUNCE);
    assert_eq!(a.encode(&mut out[..97]), Err(EncodeError { needed: 98 }));
}

#[test]
fn announce_errors() {
    let sendable = |kind, offset| RequestError::Sendable {
        connection_id: ConnectionId(0x0102030405060708),
        transaction_id: TransactionId(42),
        error: ParseError::new(kind, offset),
    };
    for n in 16..98 {
        let e = Request::parse(&ANNOUNCE[..n], &lim()).unwrap_err();
        assert!(
            matches!(e, RequestError::Sendable { error, .. } if error.kind == ParseErrorKind::Truncated),
            "{n}: {e:?}"
        );
    }
    let mut bad = ANNOUNCE;
    bad[83] = 4;
    assert_eq!(
        Request::parse(&bad, &lim()),
        Err(sendable(ParseErrorKind::BadEvent(4), 80))
    );
    let mut bad = ANNOUNCE;
    bad[11] = 3;
    assert_eq!(
        Request::parse(&bad, &lim()),
        Err(sendable(ParseErrorKind::BadAction(3), 8))
    );
    bad[11] = 9;
    assert_eq!(
        Request::parse(&bad, &lim()),
        Err(sendable(ParseErrorKind::BadAction(9), 8))
    );
}

#[test]
fn announce_options() {
    let p = with(&[&ANNOUNCE, &OPTIONS]);
    let Request::Announce(a) = Request::parse(&p, &lim()).unwrap() else {
        panic!()
    };
    let opts: Vec<_> = a.options.iter().collect();
    assert_eq!(
        opts,
        [
            UdpOption::UrlData(b"/announce?pa"),
            UdpOption::Nop,
            UdpOption::UrlData(b"sskey=1234"),
        ]
    );
    let mut url = [0u8; 64];
    assert_eq!(
        a.options.copy_url_data(&mut url),
        Some(&b"/announce?passkey=1234"[..])
    );
    assert_eq!(a.options.url_data_len(), 22);
    assert_eq!(a.options.copy_url_data(&mut url[..21]), None);
    // Round trip keeps the raw options.
    let mut out = [0u8; 200];
    let n = a.encode(&mut out).unwrap();
    assert_eq!(&out[..n], &p[..]);
    // Unknown option types are skipped by their length byte.
    let p = with(&[&ANNOUNCE, &[0x09, 0x02, 0xaa, 0xbb, 0x02, 0x01, b'/']]);
    let Request::Announce(a) = Request::parse(&p, &lim()).unwrap() else {
        panic!()
    };
    let opts: Vec<_> = a.options.iter().collect();
    assert_eq!(
        opts,
        [
            UdpOption::Unknown {
                kind: 9,
                data: &[0xaa, 0xbb]
            },
            UdpOption::UrlData(b"/")
        ]
    );
}

#[test]
fn option_errors() {
    let sendable = |kind, offset| RequestError::Sendable {
        connection_id: ConnectionId(0x0102030405060708),
        transaction_id: TransactionId(42),
        error: ParseError::new(kind, offset),
    };
    // URLData without its length byte, or with data cut short.
    for tail in [&[0x02][..], &[0x01, 0x02, 0x03, b'a', b'b']] {
        let p = with(&[&ANNOUNCE, tail]);
        let at = 98 + tail.len() - if tail.len() == 1 { 1 } else { 4 };
        assert_eq!(
            Request::parse(&p, &lim()),
            Err(sendable(ParseErrorKind::TruncatedOption, at)),
            "{tail:?}"
        );
    }
    // The URL data limit at its edge: limit accepted, limit + 1 refused.
    let limits = Limits {
        max_url_data_len: 300,
        ..lim()
    };
    let mut opts = [0u8; 400];
    let n = encode_url_data(&[b'x'; 300], &mut opts).unwrap();
    assert_eq!(n, 300 + 4);
    let p = with(&[&ANNOUNCE, &opts[..n]]);
    assert!(Request::parse(&p, &limits).is_ok());
    let n = encode_url_data(&[b'x'; 301], &mut opts).unwrap();
    let p = with(&[&ANNOUNCE, &opts[..n]]);
    assert_eq!(
        Request::parse(&p, &limits),
        Err(sendable(ParseErrorKind::UrlDataTooLong, 98 + 257))
    );
    assert_eq!(
        encode_url_data(&[b'x'; 301], &mut opts[..10]),
        Err(EncodeError { needed: 305 })
    );
}

#[test]
fn scrape_vectors_and_limits() {
    let p = scrape(2);
    let Request::Scrape(s) = Request::parse(&p, &lim()).unwrap() else {
        panic!()
    };
    assert_eq!(s.info_hashes.len(), 2);
    let hs: Vec<_> = s.info_hashes.iter().collect();
    assert_eq!(hs, [InfoHash([0; 20]), InfoHash([1; 20])]);
    let mut out = [0u8; 100];
    let n = Request::Scrape(s).encode(&mut out).unwrap();
    assert_eq!(&out[..n], &p[..]);
    let n2 = encode_scrape_request(s.connection_id, s.transaction_id, &hs, &mut out).unwrap();
    assert_eq!(&out[..n2], &p[..]);

    let sendable = |kind, offset| RequestError::Sendable {
        connection_id: ConnectionId(0x0102030405060708),
        transaction_id: TransactionId(42),
        error: ParseError::new(kind, offset),
    };
    assert_eq!(
        Request::parse(&scrape(0), &lim()),
        Err(sendable(ParseErrorKind::NoInfoHashes, 16))
    );
    assert_eq!(
        Request::parse(&p[..p.len() - 1], &lim()),
        Err(sendable(ParseErrorKind::BadScrapeLength, 36))
    );
    assert!(Request::parse(&scrape(MAX_SCRAPE_HASHES), &lim()).is_ok());
    assert_eq!(
        Request::parse(&scrape(MAX_SCRAPE_HASHES + 1), &lim()),
        Err(sendable(
            ParseErrorKind::TooManyInfoHashes,
            16 + 20 * MAX_SCRAPE_HASHES
        ))
    );
}

#[test]
fn scrape_with_1000_hashes_is_refused_at_the_limit() {
    // Attack: a 20 016-byte scrape naming 1000 torrents (tracker CPU and
    // reply-size abuse). Refused at the first hash past MAX_SCRAPE_HASHES;
    // the id is still echoed so the server can decide (see server tests).
    let p = scrape(1000);
    assert_eq!(p.len(), 16 + 20 * 1000);
    assert_eq!(
        Request::parse(&p, &lim()),
        Err(RequestError::Sendable {
            connection_id: ConnectionId(0x0102030405060708),
            transaction_id: TransactionId(42),
            error: ParseError::new(
                ParseErrorKind::TooManyInfoHashes,
                16 + 20 * MAX_SCRAPE_HASHES
            ),
        })
    );
}

#[test]
fn every_prefix_plus_noise_never_panics() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as u8
    };
    let full = with(&[&ANNOUNCE, &OPTIONS]);
    for base in [&CONNECT[..], &full[..], &scrape(3)[..]] {
        for len in 0..256 {
            let mut p: Vec<u8> = base.iter().copied().take(len).collect();
            while p.len() < len {
                p.push(rnd());
            }
            let tiny = Limits {
                max_scrape_hashes: 1,
                max_url_data_len: 3,
                max_peers: 1,
            };
            for l in [lim(), tiny] {
                if let Ok(r) = Request::parse(&p, &l) {
                    let mut out = [0u8; 300];
                    let n = r.encode(&mut out).unwrap();
                    assert_eq!(Request::parse(&out[..n], &l), Ok(r));
                }
            }
        }
    }
}

fn arb_announce() -> impl Strategy<Value = (Vec<u8>, [u64; 3], [u32; 4], i32, u16, [u8; 40])> {
    (
        proptest::collection::vec(any::<u8>(), 0..600),
        any::<[u64; 3]>(),
        any::<[u32; 4]>(),
        any::<i32>(),
        any::<u16>(),
        any::<[u8; 40]>(),
    )
}

proptest! {
    #[test]
    fn announce_round_trip((url, [d, l, u], [ev, ip, key, tid], nw, port, ids) in arb_announce(), cid: u64) {
        let mut opts = [0u8; 700];
        let n = encode_url_data(&url, &mut opts).unwrap();
        let options = UdpOptions::parse(&opts[..n], 0, usize::MAX).unwrap();
        prop_assert_eq!(options.url_data_len(), url.len());
        let req = Request::Announce(AnnounceRequest {
            connection_id: ConnectionId(cid),
            transaction_id: TransactionId(tid),
            info_hash: InfoHash::from_slice(&ids[..20]).unwrap(),
            peer_id: PeerId::from_slice(&ids[20..]).unwrap(),
            downloaded: d,
            left: l,
            uploaded: u,
            event: AnnounceEvent::from_udp(ev % 4).unwrap(),
            ip: Ipv4Addr::from(ip),
            key,
            num_want: nw,
            port,
            options,
        });
        let mut out = [0u8; 1000];
        let len = req.encode(&mut out).unwrap();
        let limits = Limits { max_url_data_len: 600, ..Limits::default() };
        prop_assert_eq!(Request::parse(&out[..len], &limits), Ok(req));
    }

    #[test]
    fn scrape_round_trip(hashes in proptest::collection::vec(any::<[u8; 20]>(), 1..=MAX_SCRAPE_HASHES), cid: u64, tid: u32) {
        let hs: Vec<InfoHash> = hashes.into_iter().map(InfoHash).collect();
        let mut out = [0u8; 2000];
        let n = encode_scrape_request(ConnectionId(cid), TransactionId(tid), &hs, &mut out).unwrap();
        let Ok(Request::Scrape(s)) = Request::parse(&out[..n], &Limits::default()) else {
            panic!("scrape did not parse")
        };
        prop_assert_eq!(s.connection_id, ConnectionId(cid));
        prop_assert_eq!(s.info_hashes.iter().collect::<Vec<_>>(), hs);
    }
}
