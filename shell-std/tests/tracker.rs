//! `shell-std tracker` over real sockets on loopback: every BEP 15 message
//! and error path, events, expiry, HTTP announce/scrape/stats, IPv6,
//! allow-list, persistence across `kill -9` and SIGTERM, and the load
//! generator against our tracker and opentracker.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::*;
use ourtorrent_core::tracker::udp::{ConnectionId, Response};
use ourtorrent_core::tracker::AnnounceEvent;
use ourtorrent_tests::free_udp_port;
use ourtorrent_tests::opentracker::Opentracker;

fn peers_of(r: &Response<'_>) -> Vec<SocketAddr> {
    match r {
        Response::Announce(a) => a.peers.iter().collect(),
        other => panic!("not an announce reply: {other:?}"),
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn udp_connect_announce_scrape() {
    let t = Tracker::start(&["--no-db", "--interval", "120"]);
    let mut a = Udp::new(t.udp);
    let mut b = Udp::new(t.udp);
    let (ca, cb) = (a.connect(), b.connect());
    // Ids are per client IP (and 15 s tick): both sockets are 127.0.0.1,
    // so unless a tick boundary fell between the two connects they match.
    if ca != cb {
        assert_eq!(a.connect(), b.connect(), "connection ids are per IP");
    }
    let r = a.announce(ca, ih(1), 7001, 0, AnnounceEvent::Started);
    match r {
        Response::Announce(x) => {
            assert_eq!((x.interval, x.seeders, x.leechers), (120, 1, 0));
            assert!(x.peers.is_empty(), "the announcing peer is excluded");
        }
        other => panic!("{other:?}"),
    }
    let r = b.announce(cb, ih(1), 7002, 100, AnnounceEvent::Started);
    assert_eq!(peers_of(&r), vec![local(7001)]);
    let r = a.announce(ca, ih(1), 7001, 0, AnnounceEvent::None);
    assert_eq!(peers_of(&r), vec![local(7002)]);
    let s = a.scrape(ca, &[ih(1), ih(2)]);
    assert_eq!(
        (s[0].seeders, s[0].leechers, s[0].completed),
        (1, 1, 0),
        "known torrent"
    );
    assert_eq!((s[1].seeders, s[1].leechers), (0, 0), "unknown torrent");
    let st = t.stats();
    assert!(st["requests"]["udp_connect"].as_u64() >= Some(2));
    assert_eq!(st["requests"]["udp_announce"], 3);
    assert_eq!(st["requests"]["udp_scrape"], 1);
    assert_eq!(
        (st["peers"].as_u64(), st["seeders"].as_u64()),
        (Some(2), Some(1))
    );
}

#[test]
fn udp_connection_id_from_one_port_works_from_another_port() {
    // BEP 15 ids prove the client receives at its IP; clients share one id
    // across their sockets (libtorrent across sessions, load generators).
    let t = Tracker::start(&["--no-db"]);
    let mut a = Udp::new(t.udp);
    let mut b = Udp::new(t.udp);
    assert_ne!(a.sock.local_addr().unwrap(), b.sock.local_addr().unwrap());
    let c = a.connect();
    a.announce(c, ih(11), 7101, 0, AnnounceEvent::Started);
    let r = b.announce(c, ih(11), 7102, 10, AnnounceEvent::Started);
    assert_eq!(peers_of(&r), vec![local(7101)]);
    assert_eq!(b.scrape(c, &[ih(11)])[0].leechers, 1);
    let st = t.stats();
    assert!(st["errors"]["udp_bad_connection_id"].is_null(), "{st}");
}

#[test]
fn udp_connection_id_survives_a_restart() {
    // The secret is kept in the database: an id issued before a kill -9
    // is accepted after the restart (on another port, same IP).
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let mut t = Tracker::with_db(&db, 100, &[]);
    let mut u = Udp::new(t.udp);
    let c = u.connect();
    t.signal_and_wait("-KILL");
    drop(t);
    let t = Tracker::with_db(&db, 100, &[]);
    let mut u2 = Udp::new(t.udp);
    assert!(matches!(
        u2.announce(c, ih(12), 7201, 0, AnnounceEvent::Started),
        Response::Announce(_)
    ));
    // A database-less tracker has a fresh secret each run: the old id is
    // dropped (so the test above can fail).
    drop(t);
    let t = Tracker::start(&["--no-db"]);
    u.target = t.udp;
    let req = u.announce_bytes(c, ih(12), 7201, 0, AnnounceEvent::Started, -1);
    assert_eq!(u.raw(&req), None);
    assert_eq!(t.stats()["errors"]["udp_bad_connection_id"], 1);
}

#[test]
fn udp_numwant_caps_the_reply() {
    let t = Tracker::start(&["--no-db", "--max-numwant", "5"]);
    let mut u = Udp::new(t.udp);
    let c = u.connect();
    for port in 8000..8020 {
        u.announce(c, ih(3), port, 1, AnnounceEvent::None);
    }
    let req = u.announce_bytes(c, ih(3), 9000, 1, AnnounceEvent::None, 3);
    assert_eq!(peers_of(&u.parse(&u.raw(&req).unwrap())).len(), 3);
    let r = u.announce(c, ih(3), 9000, 1, AnnounceEvent::None); // numwant -1
    assert_eq!(peers_of(&r).len(), 5, "capped by --max-numwant");
}

#[test]
fn udp_error_paths() {
    // Hundreds of bad datagrams from one source: lift the per-source limit
    // (tested in `udp_garbage_flood_...`) so each one reaches the parser.
    let t = Tracker::start(&["--no-db", "--bad-burst", "100000"]);
    let mut u = Udp::new(t.udp);
    let c = u.connect();

    // A connection id we never issued: no reply at all (amplification).
    let bad = u.announce_bytes(ConnectionId(0x1234), ih(1), 1, 0, AnnounceEvent::None, -1);
    assert_eq!(u.raw(&bad), None, "bad connection id must be dropped");
    // Too short to carry a header: dropped.
    assert_eq!(u.raw(&[0u8; 5]), None);
    // Connect without the protocol id: dropped.
    assert_eq!(u.raw(&[0u8; 16]), None);

    let expect_error = |u: &mut Udp, req: &[u8], what: &str| {
        let r = u.raw(req).unwrap_or_else(|| panic!("{what}: no reply"));
        match u.parse(&r) {
            Response::Error(e) => {
                assert_eq!(&req[12..16], &e.transaction_id.0.to_be_bytes());
                assert!(r.len() <= 4 * req.len(), "{what}: amplification");
            }
            other => panic!("{what}: not an error reply: {other:?}"),
        }
    };
    // Truncated announce with a valid connection id: a BEP 15 error.
    let good = u.announce_bytes(c, ih(1), 1, 0, AnnounceEvent::None, -1);
    expect_error(&mut u, &good[..40], "truncated announce");
    // Wrong action.
    let mut wrong = good.clone();
    wrong[8..12].copy_from_slice(&9u32.to_be_bytes());
    expect_error(&mut u, &wrong, "unknown action");
    // Unknown event.
    let mut ev = good.clone();
    ev[80..84].copy_from_slice(&7u32.to_be_bytes());
    expect_error(&mut u, &ev, "unknown event");
    // Too many scrape hashes (BEP 15's ~74).
    let mut scrape = Vec::new();
    scrape.extend_from_slice(&c.0.to_be_bytes());
    scrape.extend_from_slice(&2u32.to_be_bytes());
    scrape.extend_from_slice(&99u32.to_be_bytes());
    scrape.extend_from_slice(&[1u8; 20 * 75]);
    expect_error(&mut u, &scrape, "too many scrape hashes");
    // Oversized datagram: dropped.
    assert_eq!(u.raw(&vec![0u8; 5000]), None);
    // Every length of garbage: the tracker survives and still answers.
    for len in 0..120 {
        let _ = u.sock.send_to(&vec![0xA5u8; len], t.udp);
    }
    // Random bodies behind a valid header (our connection id, each action,
    // random lengths): parsed to the end by the core, never a crash.
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..600u32 {
        let mut d = Vec::new();
        d.extend_from_slice(&c.0.to_be_bytes());
        d.extend_from_slice(&(i % 5).to_be_bytes());
        d.extend_from_slice(&i.to_be_bytes());
        let len = (rand() % 1600) as usize;
        d.extend((0..len).map(|_| rand() as u8));
        let _ = u.sock.send_to(&d, t.udp);
    }
    // Drain whatever replies came back, then check the tracker still works.
    u.sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut sink = [0u8; 4096];
    while u.sock.recv_from(&mut sink).is_ok() {}
    u.sock
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let c2 = u.connect();
    u.announce(c2, ih(1), 1, 0, AnnounceEvent::None);

    let st = t.stats();
    let e = &st["errors"];
    assert!(e["udp_bad_connection_id"].as_u64() >= Some(1), "{st}");
    assert!(e["udp_truncated"].as_u64() >= Some(1), "{st}");
    assert!(e["udp_bad_protocol_id"].as_u64() >= Some(1), "{st}");
    assert!(e["udp_malformed_replied"].as_u64() >= Some(4), "{st}");
    assert_eq!(e["udp_oversized"], 1, "{st}");
}

#[test]
fn udp_garbage_flood_from_one_source_does_not_starve_a_good_client() {
    // The flood comes from 127.0.0.2 (loopback too: a second source needs a
    // second address), the well-behaved client from 127.0.0.1.
    let t = Tracker::start(&[
        "--no-db",
        "--bad-burst",
        "50",
        "--bad-per-sec",
        "10",
        "--ban-after",
        "500",
        "--ban-secs",
        "60",
    ]);
    let flooder = std::net::UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let flood = {
        let target = t.udp;
        let mut fake = Udp::new(target);
        let bad_id = fake.announce_bytes(ConnectionId(7), ih(1), 1, 0, AnnounceEvent::None, -1);
        std::thread::spawn(move || {
            let mut sent = 0u64;
            // Bounded: 30k datagrams, or 20 s.
            let end = std::time::Instant::now() + Duration::from_secs(20);
            while sent < 30_000 && std::time::Instant::now() < end {
                let d: &[u8] = if sent % 2 == 0 { &bad_id } else { &[0xA5; 40] };
                if flooder.send_to(d, target).is_ok() {
                    sent += 1;
                }
            }
            (flooder, sent)
        })
    };
    let mut u = Udp::new(t.udp);
    let (mut answered, mut rounds) = (0, 0u16);
    // Announce for as long as the flood lasts (at least 40 rounds).
    while rounds < 40 || !flood.is_finished() {
        let i = rounds;
        rounds += 1;
        // Up to 3 tries each (a datagram may be lost to a full socket
        // buffer under the flood, as on any network).
        let ok = (0..3).any(|_| {
            let req = u.connect_bytes();
            let Some(r) = u.raw(&req) else {
                return false;
            };
            let Response::Connect(c) = u.parse(&r) else {
                return false;
            };
            let req =
                u.announce_bytes(c.connection_id, ih(2), 5000 + i, 1, AnnounceEvent::None, -1);
            u.raw(&req)
                .is_some_and(|r| matches!(u.parse(&r), Response::Announce(_)))
        });
        answered += usize::from(ok);
    }
    let (flooder, sent) = flood.join().unwrap();
    assert_eq!(answered, usize::from(rounds), "flood of {sent} datagrams");
    let st = t.stats();
    eprintln!("flood: {sent} datagrams; tracker: {st}");
    let e = &st["errors"];
    assert!(e["udp_throttled"].as_u64() > Some(0), "{st}");
    assert!(e["udp_ignored_source"].as_u64() > Some(0), "{st}");
    assert_eq!(st["abuse"]["bans"], 1, "{st}");
    // Only the flood's first 50 bad datagrams (the burst) and the refill
    // reached the parser.
    let parsed_bad =
        e["udp_bad_connection_id"].as_u64().unwrap_or(0) + e["udp_truncated"].as_u64().unwrap_or(0);
    assert!(parsed_bad < 100, "{st}");
    // The flooder is now ignored even with a well-formed connect; the good
    // client is not.
    flooder
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let connect = u.connect_bytes();
    flooder.send_to(&connect, t.udp).unwrap();
    let mut sink = [0u8; 64];
    let mut replies = 0;
    while flooder.recv_from(&mut sink).is_ok() {
        replies += 1;
    }
    assert_eq!(replies, 0, "an ignored source gets no reply");
    u.connect();
}

#[test]
fn udp_events_and_expiry() {
    let t = Tracker::start(&["--no-db", "--interval", "1", "--grace", "0"]);
    let mut u = Udp::new(t.udp);
    let c = u.connect();
    u.announce(c, ih(5), 6001, 10, AnnounceEvent::Started);
    u.announce(c, ih(5), 6002, 10, AnnounceEvent::Started);
    u.announce(c, ih(5), 6001, 0, AnnounceEvent::Completed);
    let s = u.scrape(c, &[ih(5)]);
    assert_eq!((s[0].seeders, s[0].leechers, s[0].completed), (1, 1, 1));
    u.announce(c, ih(5), 6002, 10, AnnounceEvent::Stopped);
    let s = u.scrape(c, &[ih(5)]);
    assert_eq!((s[0].seeders, s[0].leechers), (1, 0), "stopped removes");
    // Silent for interval + grace (1 s): the seeder expires, the
    // completed count stays.
    let s = poll(5, "expiry", || {
        let s = u.scrape(c, &[ih(5)]);
        (s[0].seeders == 0).then_some(s)
    });
    assert_eq!((s[0].leechers, s[0].completed), (0, 1));
}

#[test]
fn http_announce_scrape_and_failures() {
    let t = Tracker::start(&["--no-db", "--interval", "900"]);
    let ann = |port: u16, left: u64, extra: &str| {
        t.get(&format!(
            "/announce?info_hash={}&peer_id=-OT0001-{port:012}&port={port}&uploaded=0&downloaded=0&left={left}{extra}",
            pct(&ih(9).0)
        ))
    };
    let (s, body) = ann(5001, 0, "&event=started&compact=1");
    assert_eq!(s, 200);
    assert!(contains(&body, b"8:intervali900e"), "{body:?}");
    assert!(contains(&body, b"5:peers0:"), "own address excluded");
    let (_, body) = ann(5002, 5, "&event=completed");
    let mut compact = b"5:peers6:".to_vec();
    compact.extend_from_slice(&[127, 0, 0, 1]);
    compact.extend_from_slice(&5001u16.to_be_bytes());
    assert!(
        contains(&body, &compact),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(contains(&body, b"8:completei1e10:incompletei1e"));
    // compact=0 is still answered compact (BEP 23 allows it).
    let (_, body) = ann(5003, 5, "&compact=0");
    assert!(contains(&body, b"5:peers12:"), "{body:?}");

    let (_, body) = t.get(&format!("/scrape?info_hash={}", pct(&ih(9).0)));
    let mut want = b"d5:filesd20:".to_vec();
    want.extend_from_slice(&ih(9).0);
    want.extend_from_slice(b"d8:completei1e10:downloadedi1e10:incompletei2eeee");
    assert_eq!(body, want);

    for (target, reason) in [
        (
            "/announce?peer_id=-OT0001-000000000001&port=1&left=0",
            "missing parameter `info_hash`",
        ),
        (
            "/announce?info_hash=%zz&port=1",
            "invalid value for `info_hash`",
        ),
        ("/announce?info_hash=abc", "invalid value for `info_hash`"),
        ("/scrape", "full scrape"),
        ("/scrape?info_hash=x", "invalid value for `info_hash`"),
    ] {
        let (s, body) = t.get(target);
        assert_eq!(s, 200);
        assert!(contains(&body, b"14:failure reason"), "{target}");
        assert!(contains(&body, reason.as_bytes()), "{target}");
    }
    assert_eq!(t.get("/nope").0, 404);

    // Keep-alive: two requests on one connection, then garbage → 400.
    let mut c = TcpStream::connect(t.http).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n";
    c.write_all(format!("{req}{req}").as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    poll(5, "two keep-alive replies", || {
        let n = c.read(&mut buf).ok()?;
        got.extend_from_slice(&buf[..n]);
        (got.windows(8).filter(|w| w == b"HTTP/1.1").count() == 2).then_some(())
    });
    c.write_all(b"\x00\x01 nonsense\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(rest.starts_with(b"HTTP/1.1 400"), "{rest:?}");
    // An endless request head: 431, connection closed.
    let mut c = TcpStream::connect(t.http).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.write_all(format!("GET /{} HTTP/1.1\r\n", "a".repeat(9000)).as_bytes());
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(rest.starts_with(b"HTTP/1.1 431"), "{rest:?}");

    let st = t.stats();
    assert_eq!(st["requests"]["http_announce"], 3);
    assert_eq!(st["requests"]["http_scrape"], 1);
    assert_eq!(st["errors"]["http_bad_announce"], 3);
    assert_eq!(st["errors"]["http_bad_scrape"], 2);
    assert_eq!(st["errors"]["http_malformed"], 1);
    assert_eq!(st["errors"]["http_request_too_large"], 1);
    assert!(st["requests_per_second"].is_number());
}

#[test]
fn http_slowloris_of_1500_connections_does_not_block_honest_announces() {
    // The attack: 1,500 connections from one address (127.0.0.1, as the
    // honest client) that send a partial request line and then a byte a
    // second, reopened when the tracker closes them.
    use std::sync::atomic::{AtomicBool, Ordering};
    let t = Tracker::start(&["--no-db"]);
    let addr = t.http;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let attacker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut conns: Vec<Option<TcpStream>> = (0..1500).map(|_| None).collect();
            let (mut opened, mut rounds) = (0u64, 0u32);
            // Bounded: 30 rounds of about a second.
            while !stop.load(Ordering::Relaxed) && rounds < 30 {
                let round_start = std::time::Instant::now();
                for c in conns.iter_mut() {
                    match c {
                        None => {
                            if let Ok(mut s) =
                                TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                            {
                                let _ = s.write_all(b"GET /announce?info_hash=");
                                s.set_nonblocking(true).unwrap();
                                *c = Some(s);
                                opened += 1;
                            }
                        }
                        Some(s) => {
                            let mut b = [0u8; 64];
                            let closed = matches!(s.read(&mut b), Ok(0))
                                || s.write_all(b"a")
                                    .is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock);
                            if closed {
                                *c = None;
                            }
                        }
                    }
                }
                if rounds == 0 {
                    let _ = ready_tx.send(());
                }
                rounds += 1;
                while round_start.elapsed() < Duration::from_secs(1)
                    && !stop.load(Ordering::Relaxed)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            opened
        })
    };
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("attacker opened its connections");
    let mut worst = Duration::ZERO;
    for i in 0..10u16 {
        let start = std::time::Instant::now();
        let (s, body) = t.get(&format!(
            "/announce?info_hash={}&peer_id=-OT0001-{i:012}&port={}&left=0",
            pct(&ih(21).0),
            6000 + i
        ));
        let took = start.elapsed();
        assert_eq!(s, 200);
        assert!(contains(&body, b"8:interval"), "{body:?}");
        // Within a second on an idle machine (9 ms measured); the bound
        // leaves room for the test suite's load. Without the defence the
        // announces do not get through at all.
        assert!(took < Duration::from_secs(5), "announce {i} took {took:?}");
        worst = worst.max(took);
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let opened = attacker.join().unwrap();
    let st = t.stats();
    eprintln!("slowloris: {opened} connections opened; slowest honest announce {worst:?}; {st}");
    assert_eq!(st["requests"]["http_announce"], 10, "{st}");
    assert!(st["errors"]["http_evicted"].as_u64() > Some(0), "{st}");
    assert!(opened >= 1500, "{opened}");
}

#[test]
fn allow_list_refuses_other_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let allow = dir.path().join("allow.txt");
    std::fs::write(&allow, format!("# ok\n{}\n", "01".repeat(20))).unwrap();
    let t = Tracker::start(&["--no-db", "--allow", allow.to_str().unwrap()]);
    let mut u = Udp::new(t.udp);
    let c = u.connect();
    assert!(matches!(
        u.announce(c, ih(1), 1, 0, AnnounceEvent::None),
        Response::Announce(_)
    ));
    match u.announce(c, ih(2), 1, 0, AnnounceEvent::None) {
        Response::Error(e) => assert_eq!(e.message, b"info-hash not allowed"),
        other => panic!("{other:?}"),
    }
    let (_, body) = t.get(&format!(
        "/announce?info_hash={}&peer_id=-OT0001-000000000001&port=1&left=0",
        pct(&ih(2).0)
    ));
    assert!(contains(&body, b"not allowed"));
    assert_eq!(t.stats()["errors"]["not_allowed"], 2);
}

#[test]
fn ipv6_udp_and_http() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("SKIP: no IPv6 loopback on this machine");
        return;
    }
    let t = Tracker::start_on("[::1]", &["--no-db"]);
    let mut a = Udp::new(t.udp);
    let c = a.connect();
    a.announce(c, ih(6), 4001, 0, AnnounceEvent::None);
    let r = a.announce(c, ih(6), 4002, 0, AnnounceEvent::None);
    let want: SocketAddr = "[::1]:4001".parse().unwrap();
    assert_eq!(peers_of(&r), vec![want], "18-byte IPv6 peers");
    let (_, body) = t.get(&format!(
        "/announce?info_hash={}&peer_id=-OT0001-000000000003&port=4003&left=0",
        pct(&ih(6).0)
    ));
    assert!(contains(&body, b"6:peers6"), "BEP 7 peers6: {body:?}");
}

/// The swarms the database holds as a start would load them (checkpoint
/// plus journal), read through the tracker's own loader while it runs;
/// `None` while the file is not readable yet.
fn stored(db: &std::path::Path) -> Option<shell_std::tracker::db::StoredState> {
    shell_std::tracker::db::read_state_at(db).ok()
}

/// (peers, sum of completed counts) stored.
fn stored_counts(db: &std::path::Path) -> (usize, u64) {
    stored(db).map_or((0, 0), |s| {
        (
            s.peers.len(),
            s.torrents.values().map(|&c| u64::from(c)).sum(),
        )
    })
}

fn db_rows(db: &std::path::Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap_or(-1)
}

/// Announces a seeder (completed) and a leecher on `ih(4)`.
fn populate(t: &Tracker) {
    let mut u = Udp::new(t.udp);
    let c = u.connect();
    u.announce(c, ih(4), 3001, 10, AnnounceEvent::Started);
    u.announce(c, ih(4), 3001, 0, AnnounceEvent::Completed);
    u.announce(c, ih(4), 3002, 10, AnnounceEvent::Started);
}

fn assert_restored(t: &Tracker) {
    let mut u = Udp::new(t.udp);
    let c = u.connect();
    let s = u.scrape(c, &[ih(4)]);
    assert_eq!((s[0].seeders, s[0].leechers, s[0].completed), (1, 1, 1));
    let r = u.announce(c, ih(4), 3003, 10, AnnounceEvent::Started);
    let mut peers = peers_of(&r);
    peers.sort();
    assert_eq!(peers, vec![local(3001), local(3002)]);
}

#[test]
fn persistence_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let mut t = Tracker::with_db(&db, 100, &[]);
    populate(&t);
    // Wait for a flush to reach the file (read through SQLite, WAL aware).
    poll(10, "flush", || (stored_counts(&db) == (2, 1)).then_some(()));
    t.signal_and_wait("-KILL");
    drop(t);
    let t = Tracker::with_db(&db, 100, &[]);
    assert_restored(&t);
}

/// Only the shutdown flush writes (the flush interval is far beyond the
/// test): after `sig` the file holds everything.
fn graceful_stop_flushes(sig: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let mut t = Tracker::with_db(&db, 600_000, &[]);
    populate(&t);
    assert_eq!(t.stats()["pending_db_rows"], 3, "nothing flushed yet");
    let status = t.signal_and_wait(sig);
    assert!(status.success(), "{status:?}");
    drop(t);
    // A clean stop checkpoints: the checkpoint alone holds both peers.
    assert_eq!(db_rows(&db, "SELECT count(*) FROM journal"), 0);
    assert_eq!(stored(&db).map(|s| s.peers.len()), Some(2));
    let t = Tracker::with_db(&db, 600_000, &[]);
    assert_restored(&t);
}

#[test]
fn persistence_graceful_sigterm_flushes() {
    graceful_stop_flushes("-TERM");
}

#[test]
fn persistence_graceful_sigint_flushes() {
    graceful_stop_flushes("-INT");
}

#[test]
fn database_in_use_by_another_tracker_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tracker.db");
    let mut first = Tracker::with_db(&db, 100, &[]);
    let out = std::process::Command::new(BIN)
        .args([
            "tracker",
            "--udp",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--db",
        ])
        .arg(&db)
        .output()
        .expect("run a second tracker");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let want = format!(
        "{} is in use by another tracker (pid {})",
        db.display(),
        first.child.id()
    );
    assert!(err.contains(&want), "{err}");
    assert!(!err.contains("tracker listening"), "{err}");
    // The first one is untouched; once it is gone (even by kill -9) the
    // database is free.
    populate(&first);
    poll(10, "flush", || {
        (stored(&db).is_some_and(|s| s.torrents.len() == 1)).then_some(())
    });
    first.signal_and_wait("-KILL");
    drop(first);
    let second = Tracker::with_db(&db, 100, &[]);
    assert_eq!(second.stats()["torrents"], 1);
}

#[test]
fn only_udp_given_serves_no_http_and_only_http_serves_no_udp() {
    let t = Tracker::start_exactly(&["--no-db", "--workers", "1", "--udp", "127.0.0.1:0"]);
    assert_eq!(t.http.port(), 0, "no http address reported");
    poll(5, "sockets visible", || (t.sockets().1 == 1).then_some(()));
    assert_eq!(t.sockets(), (0, 1), "UDP only: no TCP listener at all");
    let mut u = Udp::new(t.udp);
    u.connect();
    drop(t);
    let t = Tracker::start_exactly(&["--no-db", "--http", "127.0.0.1:0"]);
    assert_eq!(t.udp.port(), 0);
    assert_eq!(t.sockets(), (1, 0), "HTTP only: no UDP socket");
    assert_eq!(t.get("/stats").0, 200);
}

#[test]
fn nothing_to_serve_is_refused() {
    let out = std::process::Command::new(BIN)
        .args(["tracker", "--no-db", "--no-udp", "--no-http"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to serve"));
}

#[test]
fn stats_has_version_uptime_rss_completed_and_access() {
    let t = Tracker::start(&["--no-db"]);
    populate(&t);
    let st = t.stats();
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert!(st["uptime_secs"].is_u64(), "{st}");
    assert!(st["rss_bytes"].as_u64() > Some(1 << 20), "{st}");
    assert_eq!(st["completed_total"], 1, "{st}");
    assert_eq!(st["access"]["stats_from"][0], "127.0.0.0/8", "{st}");
    assert!(st["access"]["allow_list"].is_null());
    // Only listed prefixes may read it (and /metrics).
    let t = Tracker::start(&["--no-db", "--stats-from", "10.0.0.0/8"]);
    assert_eq!(t.get("/stats").0, 403);
    assert_eq!(t.get("/metrics").0, 403);
}

/// Parses Prometheus text: (series with labels → value), checking each
/// sample follows a `# TYPE` line of its family.
fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut typed = std::collections::HashSet::new();
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut w = rest.split(' ');
            let name = w.next().unwrap();
            let kind = w.next().unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "no # TYPE before {line}");
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        assert!(out.insert(series.to_string(), v).is_none(), "dup {line}");
    }
    out
}

#[test]
fn metrics_in_prometheus_text_format() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let t = Tracker::with_db(&db, 50, &[]);
    populate(&t);
    let _ = t.get("/announce?info_hash=x"); // one bad announce
    let m = poll(10, "a flush", || {
        let (s, body) = t.get("/metrics");
        assert_eq!(s, 200);
        let m = parse_metrics(&String::from_utf8(body).unwrap());
        (m.get("ourtorrent_tracker_flush_duration_seconds_count") >= Some(&1.0)).then_some(m)
    });
    let g = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k}: {m:?}"));
    let p = "ourtorrent_tracker_";
    assert_eq!(g(&format!("{p}torrents")), 1.0);
    assert_eq!(g(&format!("{p}peers")), 2.0);
    assert_eq!(g(&format!("{p}seeders")), 1.0);
    assert_eq!(g(&format!("{p}leechers")), 1.0);
    assert_eq!(g(&format!("{p}completed_total")), 1.0);
    assert_eq!(
        g(&format!("{p}requests_total{{kind=\"udp_announce\"}}")),
        3.0
    );
    assert_eq!(
        g(&format!("{p}errors_total{{reason=\"http_bad_announce\"}}")),
        1.0
    );
    assert!(g(&format!("{p}db_size_bytes")) > 0.0);
    assert!(g(&format!("{p}resident_memory_bytes")) > 0.0);
    assert!(g(&format!("{p}flush_rows_total")) >= 3.0);
    // The journal: rows with records (a flush is one row here).
    let rows = g(&format!("{p}journal_rows_total"));
    assert!(rows >= 1.0 && rows <= g(&format!("{p}flush_duration_seconds_count")));
    assert!(g(&format!("{p}journal_records_total")) >= 3.0);
    assert!(g(&format!("{p}journal_bytes_total")) >= 1.0 + 3.0 * 25.0);
    assert_eq!(g(&format!("{p}journal_replayed_records")), 0.0);
    assert_eq!(g(&format!("{p}journal_bad_rows")), 0.0);
    assert_eq!(g(&format!("{p}checkpoints_total")), 0.0);
    assert_eq!(g(&format!("{p}last_checkpoint_seconds")), 0.0);
    // Histogram buckets are cumulative and end at +Inf = count.
    let buckets: Vec<f64> = m
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{p}flush_duration_seconds_bucket")))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(buckets.len(), 9);
    assert_eq!(
        g(&format!("{p}flush_duration_seconds_bucket{{le=\"+Inf\"}}")),
        g(&format!("{p}flush_duration_seconds_count"))
    );
    let le_1ms = g(&format!("{p}flush_duration_seconds_bucket{{le=\"0.001\"}}"));
    assert!(buckets.iter().all(|b| *b >= le_1ms));
}

#[test]
fn udp_workers_answer_one_swarm_consistently() {
    let t = Tracker::start(&["--no-db", "--workers", "4"]);
    poll(5, "4 worker sockets", || (t.sockets().1 == 4).then_some(()));
    // 16 client sockets (16 source ports): the kernel spreads them over the
    // 4 SO_REUSEPORT sockets. One connection id serves them all (same IP).
    let mut clients: Vec<Udp> = (0..16).map(|_| Udp::new(t.udp)).collect();
    let c = clients[0].connect();
    for (i, u) in clients.iter_mut().enumerate() {
        u.announce(c, ih(31), 9100 + i as u16, 1, AnnounceEvent::Started);
    }
    // Every client sees the 15 others, whichever worker stored them and
    // whichever answers now.
    for (i, u) in clients.iter_mut().enumerate() {
        let me = 9100 + i as u16;
        let mut got = peers_of(&u.announce(c, ih(31), me, 1, AnnounceEvent::None));
        got.sort();
        let want: Vec<SocketAddr> = (9100..9116).filter(|p| *p != me).map(local).collect();
        assert_eq!(got, want, "client {i}");
    }
    let st = t.stats();
    let workers = st["workers"].as_array().expect("per-worker counts");
    assert_eq!(workers.len(), 4, "{st}");
    let busy = workers
        .iter()
        .filter(|w| w["udp_announce"].as_u64() > Some(0))
        .count();
    assert!(busy >= 2, "announces went through {busy} worker(s): {st}");
    assert_eq!(st["requests"]["udp_announce"], 32, "{st}");
}

#[test]
fn udp_port_of_a_running_tracker_is_refused_even_with_workers() {
    // SO_REUSEPORT alone would let a second tracker join the first's port
    // and take part of its traffic.
    let t = Tracker::start(&["--no-db", "--workers", "2"]);
    let mut second = Command::new(BIN)
        .args(["tracker", "--no-db", "--workers", "2"])
        .args(["--http", "127.0.0.1:0", "--udp", &t.udp.to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = (0..250).find_map(|_| {
        std::thread::sleep(Duration::from_millis(20));
        second.try_wait().unwrap()
    });
    if exited.is_none() {
        let _ = second.kill();
        let _ = second.wait();
        panic!("a second tracker started on {}", t.udp);
    }
    let mut err = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!exited.unwrap().success(), "{err}");
    assert!(err.contains(&format!("bind udp {}", t.udp)), "{err}");
}

#[test]
fn persistence_with_workers_survives_kill_9_and_a_new_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let mut t = Tracker::with_db(&db, 100, &["--workers", "3"]);
    let mut u = Udp::new(t.udp);
    let c = u.connect();
    // 12 torrents over 3 shards: a completed seeder and a leecher each.
    for k in 0..12u8 {
        u.announce(c, ih(40 + k), 3001, 0, AnnounceEvent::Completed);
        u.announce(c, ih(40 + k), 3002, 10, AnnounceEvent::Started);
    }
    poll(10, "flush", || {
        (stored_counts(&db) == (24, 12)).then_some(())
    });
    t.signal_and_wait("-KILL");
    drop(t);
    let t = Tracker::with_db(&db, 100, &["--workers", "2"]);
    let st = t.stats();
    assert_eq!(
        (
            &st["torrents"],
            &st["peers"],
            &st["seeders"],
            &st["completed_total"]
        ),
        (&12.into(), &24.into(), &12.into(), &12.into()),
        "{st}"
    );
    let mut u = Udp::new(t.udp);
    let c = u.connect();
    let hashes: Vec<_> = (0..12u8).map(|k| ih(40 + k)).collect();
    for s in u.scrape(c, &hashes) {
        assert_eq!((s.seeders, s.leechers, s.completed), (1, 1, 1));
    }
}

/// Announces to a tracker with a model of what it should hold: (torrent,
/// port) -> seeder, torrent -> completed, and the records that makes.
struct Model {
    peers: std::collections::BTreeMap<(u8, u16), bool>,
    completed: std::collections::BTreeMap<u8, u32>,
    records: u64,
    cursor: usize,
}

impl Model {
    fn send(u: &mut Udp, c: ConnectionId, k: u8, port: u16, seeder: bool, ev: AnnounceEvent) {
        let req = u.announce_bytes(c, ih(100 + k), port, u64::from(!seeder), ev, 0);
        u.raw(&req).expect("announce reply");
    }

    /// Flips the seeder flag of `n` peers (one journal record each).
    fn flip(&mut self, u: &mut Udp, c: ConnectionId, n: usize) {
        let keys: Vec<(u8, u16)> = self.peers.keys().copied().collect();
        for _ in 0..n {
            let key = keys[self.cursor % keys.len()];
            self.cursor += 1;
            let seeder = !self.peers[&key];
            Self::send(u, c, key.0, key.1, seeder, AnnounceEvent::None);
            self.peers.insert(key, seeder);
            self.records += 1;
        }
    }

    /// Polls `/stats` (every 2 ms, up to 20 s) until the journal holds
    /// every record sent; returns the stats.
    fn durable(&self, t: &Tracker) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let st = t.stats();
            if st["db"]["journal_records"].as_u64() >= Some(self.records) {
                return st;
            }
            assert!(std::time::Instant::now() < deadline, "journal behind: {st}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Changes peers of 40 torrents until a checkpoint is due (records since
/// the last one reach the peer count: `--checkpoint-records 1`), the last
/// few hundred in a burst, waits until the journal holds every record,
/// kills the tracker with SIGKILL at a random time within about a
/// checkpoint's duration, restarts it and checks it serves exactly the
/// swarms and completed counts announced. A kill that lands mid-checkpoint
/// leaves `checkpoint_next` behind; the bounded loop goes on until three have.
#[test]
fn kill_9_during_checkpoints_restarts_to_the_same_swarms() {
    const TORRENTS: u8 = 40;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let args = ["--workers", "2", "--checkpoint-records", "1"];
    let mut t = Tracker::with_db(&db, 20, &args);
    let mut m = Model {
        peers: Default::default(),
        completed: Default::default(),
        records: 0,
        cursor: 0,
    };
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n.max(1)
    };
    let mut u = Udp::new(t.udp);
    let mut c = u.connect();
    for k in 0..TORRENTS {
        for port in 1..=200 {
            Model::send(&mut u, c, k, port, false, AnnounceEvent::Started);
            m.peers.insert((k, port), false);
            m.records += 1;
        }
    }
    let (mut mid, mut last_ckpt_ms) = (0, 50.0f64);
    for round in 0..16u16 {
        // One new completed peer per torrent (a peer record and a
        // completed count); a few earlier ones leave.
        for k in 0..TORRENTS {
            let port = 2000 + round;
            Model::send(&mut u, c, k, port, true, AnnounceEvent::Completed);
            m.peers.insert((k, port), true);
            *m.completed.entry(k).or_default() += 1;
            m.records += 2;
            let gone = 2000 + rand(u64::from(round)) as u16;
            if round > 0 && rand(3) == 0 && m.peers.remove(&(k, gone)).is_some() {
                Model::send(&mut u, c, k, gone, true, AnnounceEvent::Stopped);
                m.records += 1;
            }
        }
        // Up to one record below the checkpoint threshold (durable), then
        // one across it: the checkpoint starts as that record is written.
        let need = |st: &serde_json::Value| {
            let since = st["db"]["records_since_checkpoint"].as_u64().unwrap();
            st["peers"].as_u64().unwrap().saturating_sub(since) as usize
        };
        for _ in 0..10 {
            let n = need(&m.durable(&t));
            if n == 1 {
                break;
            }
            m.flip(&mut u, c, n.max(2) - 1);
        }
        m.flip(&mut u, c, 1);
        let st = m.durable(&t);
        // `kill` itself takes a few ms: aim at the checkpoint's first part.
        let delay = rand((last_ckpt_ms * 0.7).max(3.0) as u64);
        std::thread::sleep(Duration::from_millis(delay));
        t.signal_and_wait("-KILL");
        drop(t);
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        let next: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'checkpoint_next'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        drop(conn);
        mid += next;
        eprintln!(
            "round {round}: killed {delay} ms after the journal caught up; mid-checkpoint: {}",
            next == 1
        );
        t = Tracker::with_db(&db, 20, &args);
        let after = t.stats();
        let seeders = m.peers.values().filter(|&&s| s).count();
        let done: u32 = m.completed.values().sum();
        assert_eq!(
            (
                &after["peers"],
                &after["seeders"],
                &after["completed_total"]
            ),
            (&m.peers.len().into(), &seeders.into(), &done.into()),
            "round {round} (killed {delay} ms after the journal caught up; before: {}): {after}",
            st["db"]
        );
        u = Udp::new(t.udp);
        c = u.connect();
        let hashes: Vec<_> = (0..TORRENTS).map(|k| ih(100 + k)).collect();
        for (k, s) in u.scrape(c, &hashes).iter().enumerate() {
            let k = k as u8;
            let mine = m.peers.range((k, 0)..=(k, u16::MAX));
            let seeds = mine.clone().filter(|(_, &s)| s).count() as u32;
            let leech = mine.count() as u32 - seeds;
            assert_eq!(
                (s.seeders, s.leechers, s.completed),
                (seeds, leech, m.completed[&k]),
                "round {round} torrent {k}"
            );
        }
        // The new process counts its own appends.
        m.records = 0;
        if let Some(ms) = st["db"]["last_checkpoint_secs"]
            .as_f64()
            .map(|s| s * 1000.0)
        {
            if ms > 0.0 {
                last_ckpt_ms = ms;
            }
        }
        if mid >= 3 {
            break;
        }
    }
    assert!(mid >= 1, "no kill landed mid-checkpoint in 16 rounds");
}

fn loadtest(target: SocketAddr, extra: &[&str]) -> serde_json::Value {
    let out = ourtorrent_tests::run(
        Command::new(BIN)
            .args(["loadtest", "--target", &target.to_string(), "--json"])
            .args(["--duration", "2", "--concurrency", "16", "--torrents", "50"])
            .args(extra),
    );
    serde_json::from_str(out.trim()).expect("loadtest json")
}

fn assert_clean_run(r: &serde_json::Value) {
    for k in ["connect", "announce", "scrape"] {
        assert!(
            r["kinds"][k]["responses"].as_u64() > Some(0),
            "no {k} responses: {r}"
        );
    }
    for (k, v) in r["errors"].as_object().unwrap() {
        assert_eq!(v, 0, "{k}: {r}");
    }
}

/// Both UDP loops answer everything: one datagram a wake-up, and the
/// largest batch (replies by one `sendmmsg`).
#[test]
fn udp_batch_sizes_answer_every_request() {
    for batch in ["1", "64"] {
        let t = Tracker::start(&["--no-db", "--workers", "1", "--udp-batch", batch]);
        let r = loadtest(t.udp, &["--sockets", "4"]);
        assert_clean_run(&r);
        assert_eq!(t.stats()["peers"], 0, "batch {batch}");
    }
}

/// A batching worker answers every request and sees a datagram one byte
/// over MAX_DATAGRAM (4096) as oversized (dropped, counted) while one of
/// exactly 4096 bytes is parsed (here a scrape of 204 hashes, refused with
/// a BEP 15 error).
#[test]
fn udp_batch_reads_answer_every_request_and_drop_oversized() {
    let t = Tracker::start(&["--no-db", "--workers", "1", "--udp-batch", "64"]);
    let r = loadtest(t.udp, &["--sockets", "4"]);
    assert_clean_run(&r);
    let mut u = Udp::new(t.udp);
    let c = u.connect();
    let mut scrape = Vec::new();
    scrape.extend_from_slice(&c.0.to_be_bytes());
    scrape.extend_from_slice(&2u32.to_be_bytes());
    scrape.extend_from_slice(&77u32.to_be_bytes());
    scrape.resize(4096, 1);
    let reply = u.raw(&scrape).expect("4096 bytes: no reply");
    assert!(matches!(u.parse(&reply), Response::Error(_)));
    scrape.push(1);
    assert_eq!(u.raw(&scrape), None, "4097 bytes must be dropped");
    let st = t.stats();
    assert_eq!(st["errors"]["udp_oversized"], 1, "{st}");
    assert_eq!(st["peers"], 0, "{st}");
}

#[test]
fn loadtest_smoke_against_our_tracker() {
    let t = Tracker::start(&["--no-db"]);
    let r = loadtest(t.udp, &[]);
    assert_clean_run(&r);
    let st = t.stats();
    assert!(
        st["requests"]["udp_announce"].as_u64() >= r["kinds"]["announce"]["responses"].as_u64()
    );
    // Every fake peer got an acknowledged `stopped`: none is left (empty
    // torrents go at the next expiry step, so their count is not checked).
    assert!(r["stopped"]["acknowledged"].as_u64() > Some(0), "{r}");
    assert_eq!(st["peers"], 0, "{st}");
}

#[test]
fn opentracker_loadtest_with_whitelist() {
    if ourtorrent_tests::require_tool("opentracker").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wl = dir.path().join("whitelist");
    // Same seed and torrent count as the run below → same info-hashes.
    ourtorrent_tests::run(Command::new(BIN).args([
        "loadtest",
        "--torrents",
        "50",
        "--duration",
        "0",
        "--write-whitelist",
        wl.to_str().unwrap(),
    ]));
    assert_eq!(std::fs::read_to_string(&wl).unwrap().lines().count(), 50);
    let port = free_udp_port();
    // Its TCP port must be free too (the same number may not be).
    let _ot = Opentracker::start(
        dir.path(),
        &wl,
        port,
        ourtorrent_tests::ports::free_tcp_port(),
    );
    let target = local(port);
    let r = loadtest(target, &[]);
    assert_clean_run(&r);
}
