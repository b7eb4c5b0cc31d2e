//! `shell-std tracker --store redis://…` against Debian's `redis-server`
//! (started here on a free loopback port): two tracker instances share one
//! swarm, a tracker restart loses nothing, and a Redis outage is survived
//! (error replies while it is down, no panic, service again once it is
//! back); the instances share BEP 15 connection ids through Redis.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use ourtorrent_core::tracker::udp::{ConnectionId, Response};
use ourtorrent_core::tracker::AnnounceEvent;
use ourtorrent_tests::redis::Redis;

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn peers_of(r: &Response<'_>) -> Vec<SocketAddr> {
    match r {
        Response::Announce(a) => {
            let mut v: Vec<SocketAddr> = a.peers.iter().collect();
            v.sort();
            v
        }
        other => panic!("not an announce reply: {other:?}"),
    }
}

fn with_redis(r: &Redis) -> Tracker {
    Tracker::start(&["--no-db", "--workers", "2", "--store", &r.url()])
}

/// Waits (bounded) for a log line containing `what`.
fn wait_log(t: &Tracker, what: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match t.log.recv_timeout(left) {
            Ok(l) if l.contains(what) => return,
            Ok(_) => {}
            Err(_) => panic!("no log line with {what:?}"),
        }
    }
}

#[test]
fn two_instances_share_a_swarm_and_a_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = Redis::start(dir.path()) else {
        return;
    };
    let a = with_redis(&redis);
    let b = with_redis(&redis);
    let (mut ua, mut ub) = (Udp::new(a.udp), Udp::new(b.udp));
    let (ca, cb) = (ua.connect(), ub.connect());
    let r = ua.announce(ca, ih(1), 4001, 10, AnnounceEvent::Started);
    assert_eq!(peers_of(&r), vec![]);
    let r = ub.announce(cb, ih(1), 4002, 10, AnnounceEvent::Started);
    assert_eq!(peers_of(&r), vec![local(4001)], "B sees A's peer");
    ub.announce(cb, ih(1), 4002, 0, AnnounceEvent::Completed);
    let s = ua.scrape(ca, &[ih(1), ih(2)]);
    assert_eq!((s[0].seeders, s[0].leechers, s[0].completed), (1, 1, 1));
    assert_eq!((s[1].seeders, s[1].leechers, s[1].completed), (0, 0, 0));
    // HTTP on A sees the same swarm.
    let (code, body) = a.get(&format!("/scrape?info_hash={}", pct(&ih(1).0)));
    assert_eq!(code, 200);
    assert!(contains(&body, b"8:completei1e"), "{body:?}");
    // Kill A; a new instance serves the same swarm.
    drop(a);
    let a2 = with_redis(&redis);
    let mut u2 = Udp::new(a2.udp);
    let c2 = u2.connect();
    let r = u2.announce(c2, ih(1), 4003, 10, AnnounceEvent::Started);
    assert_eq!(peers_of(&r), vec![local(4001), local(4002)]);
    // A stop leaves the swarm for every instance.
    ua = Udp::new(a2.udp);
    let c = ua.connect();
    ua.announce(c, ih(1), 4001, 10, AnnounceEvent::Stopped);
    let r = ub.announce(cb, ih(1), 4002, 0, AnnounceEvent::None);
    assert_eq!(peers_of(&r), vec![local(4003)]);
}

#[test]
fn a_redis_outage_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut redis) = Redis::start(dir.path()) else {
        return;
    };
    let mut t = with_redis(&redis);
    let mut u = Udp::new(t.udp);
    let c = u.connect();
    u.announce(c, ih(3), 5001, 10, AnnounceEvent::Started);
    redis.stop();
    // Down: announces and scrapes get a BEP 15 error, connects still work.
    let r = u.announce(c, ih(3), 5002, 10, AnnounceEvent::Started);
    match r {
        Response::Error(e) => assert_eq!(e.message, b"swarm store unavailable"),
        other => panic!("expected an error reply, got {other:?}"),
    }
    wait_log(&t, "redis store unavailable");
    let c = u.connect();
    assert!(t.child.try_wait().unwrap().is_none(), "the tracker runs on");
    // Back (its append-only file kept the swarm): served again within the
    // retry interval.
    redis.restart();
    let end = Instant::now() + Duration::from_secs(10);
    let peers = loop {
        if let Response::Announce(_) = u.announce(c, ih(3), 5002, 10, AnnounceEvent::Started) {
            let r = u.announce(c, ih(3), 5002, 10, AnnounceEvent::None);
            break peers_of(&r);
        }
        assert!(Instant::now() < end, "no service after Redis came back");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(peers, vec![local(5001)]);
    wait_log(&t, "redis store reachable again");
    let st = t.stats();
    assert!(
        st["errors"]["store_unavailable"].as_u64().unwrap_or(0) >= 1,
        "{st}"
    );
    assert_eq!(st["store"], redis.url());
    assert!(t.signal_and_wait("-TERM").success());
}

/// A silent peer expires in Redis too (the announce script removes peers
/// whose last-seen time is past `--interval` + `--grace`).
#[test]
fn silent_peers_expire_in_redis() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = Redis::start(dir.path()) else {
        return;
    };
    let t = Tracker::start(&[
        "--no-db",
        "--store",
        &redis.url(),
        "--interval",
        "1",
        "--grace",
        "1",
    ]);
    let mut u = Udp::new(t.udp);
    let c = u.connect();
    u.announce(c, ih(5), 6001, 10, AnnounceEvent::Started);
    let r = u.announce(c, ih(5), 6002, 10, AnnounceEvent::Started);
    assert_eq!(peers_of(&r), vec![local(6001)]);
    // 6002 keeps announcing; 6001 is silent and goes after ~2 s.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = u.announce(c, ih(5), 6002, 10, AnnounceEvent::None);
        if peers_of(&r).is_empty() {
            break;
        }
        assert!(Instant::now() < end, "6001 never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = u.scrape(c, &[ih(5)]);
    assert_eq!((s[0].seeders, s[0].leechers), (0, 1));
}

fn answered(r: &Response<'_>) -> bool {
    matches!(r, Response::Announce(_))
}

/// BEP 15 connection ids are shared: an id from instance A is accepted by
/// instance B (a forged one is not), across a restart of both, and a
/// rotation made by one instance through Redis is adopted by the other.
#[test]
fn instances_share_connection_ids() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = Redis::start(dir.path()) else {
        return;
    };
    let (a, b) = (with_redis(&redis), with_redis(&redis));
    let mut u = Udp::new(a.udp);
    let c = u.connect();
    u.target = b.udp;
    assert!(answered(&u.announce(
        c,
        ih(7),
        7001,
        10,
        AnnounceEvent::Started
    )));
    let forged = ConnectionId(c.0 ^ 1);
    let req = u.announce_bytes(forged, ih(7), 7001, 0, AnnounceEvent::None, -1);
    assert_eq!(u.raw(&req), None, "a forged id is dropped");
    assert_eq!(b.stats()["errors"]["udp_bad_connection_id"], 1);
    // Both restart (SIGKILL): the id stays valid, in both directions.
    drop((a, b));
    let (a, b) = (with_redis(&redis), with_redis(&redis));
    for t in [&a, &b] {
        u.target = t.udp;
        assert!(answered(&u.announce(
            c,
            ih(7),
            7001,
            10,
            AnnounceEvent::None
        )));
    }
    // A rotation is due (as if the period were over): the first instance
    // to sync rotates in Redis, the other adopts it; the old id stays
    // valid (previous secret) and new ids work across instances.
    let old = redis.cli(&["HGET", "ot:udp_secrets", "current"]);
    redis.cli(&["HSET", "ot:udp_secrets", "rotated_at", "0"]);
    poll(10, "a rotation through Redis", || {
        (redis.cli(&["HGET", "ot:udp_secrets", "previous"]) == old).then_some(())
    });
    assert_ne!(redis.cli(&["HGET", "ot:udp_secrets", "current"]), old);
    poll(10, "both instances on the new secret", || {
        u.target = a.udp;
        let c2 = u.connect();
        u.target = b.udp;
        let c3 = u.connect();
        let on_b = answered(&u.announce(c2, ih(7), 7001, 0, AnnounceEvent::None));
        u.target = a.udp;
        let on_a = answered(&u.announce(c3, ih(7), 7001, 0, AnnounceEvent::None));
        (on_a && on_b && c2 != c).then_some(())
    });
    for t in [&a, &b] {
        u.target = t.udp;
        assert!(answered(&u.announce(
            c,
            ih(7),
            7001,
            0,
            AnnounceEvent::None
        )));
    }
}

/// `/stats` and `/metrics` count the torrents, peers and seeders in Redis
/// (the store's windowed approximation), whichever instance they
/// announced through; re-announces are not counted twice.
#[test]
fn stats_count_swarms_in_redis() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = Redis::start(dir.path()) else {
        return;
    };
    let (a, b) = (with_redis(&redis), with_redis(&redis));
    let (mut ua, mut ub) = (Udp::new(a.udp), Udp::new(b.udp));
    let (ca, cb) = (ua.connect(), ub.connect());
    for _ in 0..2 {
        // (port, left): two leechers on one torrent, a seeder on another.
        assert!(answered(&ua.announce(
            ca,
            ih(8),
            8001,
            10,
            AnnounceEvent::Started
        )));
        assert!(answered(&ub.announce(
            cb,
            ih(8),
            8002,
            10,
            AnnounceEvent::Started
        )));
        assert!(answered(&ub.announce(
            cb,
            ih(9),
            8003,
            0,
            AnnounceEvent::Completed
        )));
    }
    // A stopped peer is not counted.
    ua.announce(ca, ih(10), 8004, 0, AnnounceEvent::Stopped);
    for t in [&a, &b] {
        let st = poll(10, "the counts of Redis in /stats", || {
            let st = t.stats();
            (st["peers"] == 3).then_some(st)
        });
        assert_eq!(
            (&st["torrents"], &st["seeders"], &st["leechers"]),
            (&2.into(), &1.into(), &2.into()),
            "{st}"
        );
        let (code, body) = t.get("/metrics");
        assert_eq!(code, 200);
        for line in [&b"_torrents 2\n"[..], b"_peers 3\n", b"_seeders 1\n"] {
            assert!(contains(&body, line), "{}", String::from_utf8_lossy(&body));
        }
    }
}
