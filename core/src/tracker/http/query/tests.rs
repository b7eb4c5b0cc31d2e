use super::*;
use proptest::prelude::*;
use std::string::String;

/// A real-world style announce (libtorrent escapes every non-unreserved byte).
static ANNOUNCE: &[u8] = b"info_hash=%12%34Vx%9A%BC%DE%F0%12%34Vx%9A%BC%DE%F0%12%34Vx\
&peer_id=-OT0001-%00%01%02%03%04%05%06%07%08%09%0A%0B&port=6881&uploaded=0\
&downloaded=1024&left=4096&corrupt=0&key=A1B2C3D4&event=started&numwant=50\
&compact=1&no_peer_id=1&supportcrypto=1&ip=1.2.3.4";

const HASH: [u8; 20] = [
    0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0,
    0x12, 0x34, 0x56, 0x78,
];

fn err(kind: QueryErrorKind, offset: usize) -> Result<AnnounceQuery, QueryError> {
    Err(QueryError { kind, offset })
}

#[test]
fn parse_vector() {
    let q = parse_announce_query(ANNOUNCE).unwrap();
    assert_eq!(q.info_hash, InfoHash(HASH));
    assert_eq!(&q.peer_id.0[..8], b"-OT0001-");
    assert_eq!(q.peer_id.0[19], 11);
    assert_eq!(
        (q.port, q.uploaded, q.downloaded, q.left),
        (6881, 0, 1024, 4096)
    );
    assert_eq!(q.event, AnnounceEvent::Started);
    assert!(q.compact);
    assert_eq!(q.numwant, Some(50));
    assert_eq!(q.key.as_deref(), Some(&b"A1B2C3D4"[..]));
}

#[test]
fn build_then_parse() {
    let q = parse_announce_query(ANNOUNCE).unwrap();
    let mut s = String::new();
    q.write_to(&mut s).unwrap();
    assert_eq!(
        s,
        "info_hash=%124Vx%9A%BC%DE%F0%124Vx%9A%BC%DE%F0%124Vx&peer_id=-OT0001-%00%01%02%03%04%05%06%07%08%09%0A%0B\
&port=6881&uploaded=0&downloaded=1024&left=4096&event=started&compact=1&numwant=50&key=A1B2C3D4"
    );
    assert_eq!(parse_announce_query(s.as_bytes()), Ok(q.clone()));
    let mut buf = [0u8; 400];
    let n = q.encode(&mut buf).unwrap();
    assert_eq!(&buf[..n], s.as_bytes());
    assert_eq!(
        q.encode(&mut buf[..n - 1]),
        Err(EncodeError::BufferTooSmall)
    );
}

#[test]
fn errors_name_the_parameter() {
    let base = "info_hash=%12%34Vx%9A%BC%DE%F0%12%34Vx%9A%BC%DE%F0%12%34Vx&peer_id=aaaaaaaaaaaaaaaaaaaa&port=1&left=0";
    assert!(parse_announce_query(base.as_bytes()).is_ok());
    let with = |extra: &str| std::format!("{base}&{extra}");
    let at = base.len() + 1;
    use QueryErrorKind::*;
    for (extra, kind) in [
        ("port=65536", Duplicate(Param::Port)),
        ("uploaded=x", BadValue(Param::Uploaded)),
        ("downloaded=", BadValue(Param::Downloaded)),
        ("event=paused", BadValue(Param::Event)),
        ("compact=2", BadValue(Param::Compact)),
        ("numwant=4294967296", BadValue(Param::NumWant)),
        ("numwant=-x", BadValue(Param::NumWant)),
        ("key=%zz", BadValue(Param::Key)),
        ("uploaded=18446744073709551616", BadValue(Param::Uploaded)),
    ] {
        assert_eq!(
            parse_announce_query(with(extra).as_bytes()),
            err(kind, at),
            "{extra}"
        );
    }
    // Edges: u64::MAX accepted, numwant u32::MAX accepted, -1 = default, key
    // of MAX_KEY_LEN accepted and one more refused.
    let q =
        parse_announce_query(with("uploaded=18446744073709551615&numwant=4294967295").as_bytes())
            .unwrap();
    assert_eq!((q.uploaded, q.numwant), (u64::MAX, Some(u32::MAX)));
    let q = parse_announce_query(with("numwant=-1").as_bytes()).unwrap();
    assert_eq!(q.numwant, None);
    let k32 = "k".repeat(MAX_KEY_LEN);
    assert!(parse_announce_query(with(&std::format!("key={k32}")).as_bytes()).is_ok());
    assert_eq!(
        parse_announce_query(with(&std::format!("key={k32}k")).as_bytes()),
        err(BadValue(Param::Key), at)
    );
    // Port 65535 ok, 65536 refused.
    let p = base.replace("port=1", "port=65535");
    assert_eq!(parse_announce_query(p.as_bytes()).unwrap().port, 65535);
    let p = base.replace("port=1", "port=65536");
    assert_eq!(
        parse_announce_query(p.as_bytes()),
        err(BadValue(Param::Port), p.find("port=").unwrap())
    );
    // info_hash: 19 or 21 bytes, bad escape.
    for bad in [
        "%12%34",
        "%12%34Vx%9A%BC%DE%F0%12%34Vx%9A%BC%DE%F0%12%34Vxx",
        "%1",
    ] {
        let p = std::format!("info_hash={bad}&peer_id=aaaaaaaaaaaaaaaaaaaa&port=1&left=0");
        assert_eq!(
            parse_announce_query(p.as_bytes()),
            err(BadValue(Param::InfoHash), 0)
        );
    }
    // Missing required parameters, reported at the end.
    for (p, missing) in [
        (
            "peer_id=aaaaaaaaaaaaaaaaaaaa&port=1&left=0",
            Param::InfoHash,
        ),
        (&base.replace("&left=0", "")[..], Param::Left),
        (&base.replace("port=1&", "")[..], Param::Port),
    ] {
        assert_eq!(
            parse_announce_query(p.as_bytes()),
            err(Missing(missing), p.len())
        );
    }
    // Empty pairs and keys without '=' are tolerated.
    assert!(parse_announce_query(with("&&flag&").as_bytes()).is_ok());
    // Length limit at its edge.
    let pad = MAX_QUERY_LEN - base.len() - 3;
    let q = with(&std::format!("x={}", "y".repeat(pad)));
    assert_eq!(q.len(), MAX_QUERY_LEN);
    assert!(parse_announce_query(q.as_bytes()).is_ok());
    let q = std::format!("{q}y");
    assert_eq!(
        parse_announce_query(q.as_bytes()),
        err(TooLong, MAX_QUERY_LEN)
    );
}

#[test]
fn scrape_queries() {
    let hs = [InfoHash([1; 20]), InfoHash(HASH), InfoHash([0xff; 20])];
    let mut s = String::new();
    write_scrape_query(&hs, &mut s).unwrap();
    let mut out = [InfoHash::default(); 3];
    assert_eq!(parse_scrape_query(s.as_bytes(), &mut out), Ok(&hs[..]));
    let mut small = [InfoHash::default(); 2];
    let third = s.rfind("info_hash").unwrap();
    assert_eq!(
        parse_scrape_query(s.as_bytes(), &mut small),
        Err(QueryError {
            kind: QueryErrorKind::TooManyInfoHashes,
            offset: third
        })
    );
    assert_eq!(parse_scrape_query(b"", &mut small), Ok(&[][..]));
    assert_eq!(
        parse_scrape_query(b"a=b&info_hash=short", &mut small),
        Err(QueryError {
            kind: QueryErrorKind::BadValue(Param::InfoHash),
            offset: 4
        })
    );
}

#[test]
fn scrape_url_convention() {
    assert_eq!(
        scrape_url("http://t.example/announce"),
        Some(("http://t.example/", ""))
    );
    assert_eq!(
        scrape_url("http://t.example/x/announce.php?passkey=a/b"),
        Some(("http://t.example/x/", ".php?passkey=a/b"))
    );
    assert_eq!(scrape_url("http://t.example/a"), None);
    assert_eq!(scrape_url("http://t.example/announce/x"), None);
    assert_eq!(query_separator("http://t/announce?pk=1"), '&');
    assert_eq!(query_separator("http://t/announce"), '?');
}

#[test]
fn prefixes_never_panic() {
    let mut seed = 0x1234_5678_9abc_def1u64;
    for len in 0..256 {
        let mut p: std::vec::Vec<u8> = ANNOUNCE.iter().copied().take(len).collect();
        while p.len() < len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            p.push(b"%&=0a9-"[(seed % 7) as usize]);
        }
        let _ = parse_announce_query(&p);
        let mut out = [InfoHash::default(); 4];
        let _ = parse_scrape_query(&p, &mut out);
    }
}

proptest! {
    #[test]
    fn announce_round_trip(
        ids: ([u8; 20], [u8; 20]),
        port: u16,
        nums: [u64; 3],
        ev in 0u32..4,
        compact: bool,
        numwant: Option<u32>,
        key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..=MAX_KEY_LEN)),
    ) {
        let q = AnnounceQuery {
            info_hash: InfoHash(ids.0),
            peer_id: PeerId(ids.1),
            port,
            uploaded: nums[0],
            downloaded: nums[1],
            left: nums[2],
            event: AnnounceEvent::from_udp(ev).unwrap(),
            compact,
            numwant,
            key: key.map(|k| Key::from_slice(&k).unwrap()),
        };
        let mut s = String::new();
        q.write_to(&mut s).unwrap();
        prop_assert_eq!(parse_announce_query(s.as_bytes()), Ok(q));
    }

    #[test]
    fn arbitrary_queries_never_panic(q in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_announce_query(&q);
    }
}
