use super::*;
use crate::tracker::udp::{MAX_PEERS, MAX_SCRAPE_HASHES};
use core::net::{Ipv4Addr, Ipv6Addr};
use proptest::prelude::*;
use std::vec::Vec;

static CONNECT: [u8; 16] = [
    0x00, 0x00, 0x00, 0x00, // action: connect
    0xde, 0xad, 0xbe, 0xef, // transaction id
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // connection id
];

static ANNOUNCE_V4: [u8; 32] = [
    0x00, 0x00, 0x00, 0x01, // action: announce
    0x00, 0x00, 0x00, 0x2a, // transaction id
    0x00, 0x00, 0x07, 0x08, // interval 1800
    0x00, 0x00, 0x00, 0x05, // leechers
    0x00, 0x00, 0x00, 0x03, // seeders
    10, 0, 0, 1, 0x1a, 0xe1, // 10.0.0.1:6881
    192, 168, 1, 2, 0x00, 0x50, // 192.168.1.2:80
];

static ANNOUNCE_V6: [u8; 38] = [
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x2a, // action, transaction id
    0x00, 0x00, 0x07, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, //
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x1a,
    0xe1, // [2001:db8::1]:6881
];

static SCRAPE: [u8; 32] = [
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x07, // action, transaction id
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x03, //
    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x06, //
];

static ERROR: [u8; 15] = [
    0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x07, b'n', b'o', b' ', b'w', b'a', b'y', b'!',
];

fn lim() -> Limits {
    Limits::default()
}

fn v4() -> AddressFamily {
    AddressFamily::V4
}

fn round_trip(bytes: &[u8], family: AddressFamily) {
    let r = Response::parse(bytes, family, &lim()).unwrap();
    let mut out = [0u8; 100];
    let n = r.encode(&mut out).unwrap();
    assert_eq!(&out[..n], bytes);
    assert_eq!(r.encode(&mut out[..n - 1]), Err(EncodeError { needed: n }));
}

#[test]
fn vectors() {
    assert_eq!(
        Response::parse(&CONNECT, v4(), &lim()),
        Ok(Response::Connect(ConnectResponse {
            transaction_id: TransactionId(0xdeadbeef),
            connection_id: ConnectionId(0x1122334455667788)
        }))
    );
    let Ok(Response::Announce(a)) = Response::parse(&ANNOUNCE_V4, v4(), &lim()) else {
        panic!()
    };
    assert_eq!((a.interval, a.leechers, a.seeders), (1800, 5, 3));
    let peers: Vec<_> = a.peers.iter().collect();
    assert_eq!(
        peers,
        [
            SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 6881)),
            SocketAddr::from((Ipv4Addr::new(192, 168, 1, 2), 80))
        ]
    );
    let Ok(Response::Announce(a)) = Response::parse(&ANNOUNCE_V6, AddressFamily::V6, &lim()) else {
        panic!()
    };
    let peers: Vec<_> = a.peers.iter().collect();
    let ip6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    assert_eq!(peers, [SocketAddr::from((ip6, 6881))]);
    let Ok(Response::Scrape(s)) = Response::parse(&SCRAPE, v4(), &lim()) else {
        panic!()
    };
    let st: Vec<_> = s.stats.iter().collect();
    assert_eq!(
        st,
        [
            TorrentStats {
                seeders: 1,
                completed: 2,
                leechers: 3
            },
            TorrentStats {
                seeders: 4,
                completed: 5,
                leechers: 6
            }
        ]
    );
    assert_eq!(
        Response::parse(&ERROR, v4(), &lim()),
        Ok(Response::Error(ErrorResponse {
            transaction_id: TransactionId(7),
            message: b"no way!"
        }))
    );
    round_trip(&CONNECT, v4());
    round_trip(&ANNOUNCE_V4, v4());
    round_trip(&ANNOUNCE_V6, AddressFamily::V6);
    round_trip(&SCRAPE, v4());
    round_trip(&ERROR, v4());
}

#[test]
fn errors() {
    let e = |kind, offset| Err(ParseError::new(kind, offset));
    for n in 0..8 {
        assert_eq!(
            Response::parse(&CONNECT[..n], v4(), &lim()),
            e(ParseErrorKind::Truncated, n)
        );
    }
    assert_eq!(
        Response::parse(&CONNECT[..15], v4(), &lim()),
        e(ParseErrorKind::Truncated, 8)
    );
    assert_eq!(
        Response::parse(&ANNOUNCE_V4[..19], v4(), &lim()),
        e(ParseErrorKind::Truncated, 16)
    );
    assert_eq!(
        Response::parse(&ANNOUNCE_V4[..31], v4(), &lim()),
        e(ParseErrorKind::BadPeerListLength, 26)
    );
    // The IPv4 vector's 12 peer bytes are not a whole IPv6 entry.
    assert_eq!(
        Response::parse(&ANNOUNCE_V4, AddressFamily::V6, &lim()),
        e(ParseErrorKind::BadPeerListLength, 20)
    );
    assert_eq!(
        Response::parse(&SCRAPE[..31], v4(), &lim()),
        e(ParseErrorKind::BadScrapeLength, 20)
    );
    let mut bad = ERROR;
    bad[3] = 4;
    assert_eq!(
        Response::parse(&bad, v4(), &lim()),
        e(ParseErrorKind::BadAction(4), 0)
    );
}

#[test]
fn limits_at_edge() {
    let mut out = [0u8; 20 + 18 * MAX_PEERS + 18];
    let peers = (0..=MAX_PEERS as u32).map(|i| SocketAddr::from((Ipv4Addr::from(i), 1)));
    for (n, ok) in [(MAX_PEERS, true), (MAX_PEERS + 1, false)] {
        let len =
            encode_announce_response(TransactionId(1), 60, 0, 0, peers.clone(), v4(), n, &mut out)
                .unwrap();
        assert_eq!(len, 20 + 6 * n);
        let r = Response::parse(&out[..len], v4(), &lim());
        if ok {
            assert!(r.is_ok());
        } else {
            assert_eq!(
                r,
                Err(ParseError::new(
                    ParseErrorKind::TooManyPeers,
                    20 + 6 * MAX_PEERS
                ))
            );
        }
    }
    let stats = core::iter::repeat(TorrentStats::default());
    for (n, ok) in [(MAX_SCRAPE_HASHES, true), (MAX_SCRAPE_HASHES + 1, false)] {
        let len =
            encode_scrape_response(TransactionId(1), stats.clone().take(n), &mut out).unwrap();
        let r = Response::parse(&out[..len], v4(), &lim());
        assert_eq!(r.is_ok(), ok);
        if !ok {
            assert_eq!(
                r,
                Err(ParseError::new(
                    ParseErrorKind::TooManyInfoHashes,
                    8 + 12 * MAX_SCRAPE_HASHES
                ))
            );
        }
    }
}

#[test]
fn encode_announce_skips_other_family() {
    let peers = [
        SocketAddr::from((Ipv4Addr::new(1, 2, 3, 4), 5)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, 6)),
        SocketAddr::from((Ipv4Addr::new(6, 7, 8, 9), 10)),
    ];
    let mut out = [0u8; 64];
    let n = encode_announce_response(
        TransactionId(9),
        1,
        2,
        3,
        peers,
        AddressFamily::V6,
        10,
        &mut out,
    )
    .unwrap();
    assert_eq!(n, 20 + 18);
    let n = encode_announce_response(TransactionId(9), 1, 2, 3, peers, v4(), 10, &mut out).unwrap();
    assert_eq!(n, 20 + 12);
    assert_eq!(
        encode_announce_response(TransactionId(9), 1, 2, 3, peers, v4(), 10, &mut out[..31]),
        Err(EncodeError { needed: 32 })
    );
}

#[test]
fn every_prefix_plus_noise_never_panics() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as u8
    };
    for base in [&CONNECT[..], &ANNOUNCE_V4, &ANNOUNCE_V6, &SCRAPE, &ERROR] {
        for len in 0..256 {
            let mut p: Vec<u8> = base.iter().copied().take(len).collect();
            while p.len() < len {
                p.push(rnd());
            }
            for fam in [AddressFamily::V4, AddressFamily::V6] {
                if let Ok(r) = Response::parse(&p, fam, &lim()) {
                    let mut out = [0u8; 300];
                    let n = r.encode(&mut out).unwrap();
                    assert_eq!(Response::parse(&out[..n], fam, &lim()), Ok(r));
                    if let Response::Announce(a) = r {
                        assert!(a.peers.iter().all(|p| AddressFamily::of(&p) == fam));
                    }
                }
            }
        }
    }
}

proptest! {
    #[test]
    fn announce_round_trip(
        v4s in proptest::collection::vec(any::<(u32, u16)>(), 0..50),
        v6s in proptest::collection::vec(any::<(u128, u16)>(), 0..50),
        hdr: [u32; 4],
        six: bool,
    ) {
        let peers: Vec<SocketAddr> = if six {
            v6s.iter().map(|&(ip, port)| SocketAddr::from((Ipv6Addr::from(ip), port))).collect()
        } else {
            v4s.iter().map(|&(ip, port)| SocketAddr::from((Ipv4Addr::from(ip), port))).collect()
        };
        let fam = if six { AddressFamily::V6 } else { AddressFamily::V4 };
        let mut out = [0u8; 20 + 18 * 50];
        let n = encode_announce_response(TransactionId(hdr[0]), hdr[1], hdr[2], hdr[3], peers.iter().copied(), fam, usize::MAX, &mut out).unwrap();
        let Ok(Response::Announce(a)) = Response::parse(&out[..n], fam, &Limits::default()) else {
            panic!("no parse")
        };
        prop_assert_eq!((a.transaction_id.0, a.interval, a.leechers, a.seeders), (hdr[0], hdr[1], hdr[2], hdr[3]));
        prop_assert_eq!(a.peers.iter().collect::<Vec<_>>(), peers);
    }

    #[test]
    fn scrape_and_error_round_trip(stats in proptest::collection::vec(any::<[u32; 3]>(), 0..=MAX_SCRAPE_HASHES), msg in proptest::collection::vec(any::<u8>(), 0..100), tid: u32) {
        let st: Vec<TorrentStats> = stats.iter().map(|&[s, c, l]| TorrentStats { seeders: s, completed: c, leechers: l }).collect();
        let mut out = [0u8; 1000];
        let n = encode_scrape_response(TransactionId(tid), st.iter().copied(), &mut out).unwrap();
        let Ok(Response::Scrape(s)) = Response::parse(&out[..n], AddressFamily::V4, &Limits::default()) else {
            panic!("no parse")
        };
        prop_assert_eq!(s.stats.iter().collect::<Vec<_>>(), st);
        let e = Response::Error(ErrorResponse { transaction_id: TransactionId(tid), message: &msg });
        let n = e.encode(&mut out).unwrap();
        prop_assert_eq!(Response::parse(&out[..n], AddressFamily::V6, &Limits::default()), Ok(e));
    }
}
