//! Unit tests of the swarms: sampling, counts and limits, expiry, the
//! compact peer set against a model, and the change log.

use std::net::{IpAddr, Ipv6Addr};

use super::peers::{Peer4, PeerSet, SECS_MASK};
use super::*;

fn ih(b: u8) -> InfoHash {
    InfoHash([b; 20])
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `s` seconds into a test clock, in ms since the Unix epoch.
fn at(s: u64) -> u64 {
    (TIME_BASE_SECS + 1_200 + s) * 1000
}

fn ann(t: u8, port: u16, event: AnnounceEvent, seeder: bool) -> Announce {
    Announce {
        info_hash: ih(t),
        addr: addr(port),
        event,
        seeder,
    }
}

fn swarms() -> Swarms {
    Swarms::new(
        Limits {
            max_torrents: 2,
            max_peers_per_torrent: 3,
        },
        60_000,
    )
}

/// The reference sample: [`Torrent::peers`] rotated by `start`, without
/// `exclude`, at most `max`.
fn sample_by_definition(
    t: &Torrent,
    exclude: SocketAddr,
    start: usize,
    max: usize,
) -> Vec<SocketAddr> {
    let all: Vec<SocketAddr> = t.peers().map(|p| p.addr).collect();
    let n = all.len();
    let start = if n == 0 { 0 } else { start % n };
    (0..n)
        .filter_map(|k| all.get((start + k) % n).copied())
        .filter(|a| *a != exclude)
        .take(max)
        .collect()
}

#[test]
fn sample_is_the_rotated_peer_list_without_the_asker() {
    let v6 = |port: u16| SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], port));
    let limits = Limits {
        max_torrents: 1,
        max_peers_per_torrent: 100,
    };
    let mut s = Swarms::new(limits, 60_000).without_persistence();
    let mut addrs = Vec::new();
    // Inline (1-2 IPv4), then a list, then a list with IPv6 and an
    // index (past LINEAR_MAX IPv4 peers).
    for i in 0..(LINEAR_MAX as u16 + 8) {
        let a = if i % 5 == 3 { v6(i + 1) } else { addr(i + 1) };
        let mut x = ann(1, 0, AnnounceEvent::None, i % 2 == 0);
        x.addr = a;
        s.announce(&x, at(0)).unwrap();
        addrs.push(a);
        let t = s.get(&ih(1)).unwrap();
        let others = [addrs[0], a, addr(9999), v6(9999)];
        for exclude in others {
            for start in [0, 1, 2, i as usize, i as usize + 1, 1000, usize::MAX] {
                for max in [0, 1, 3, 50] {
                    let got: Vec<SocketAddr> = t.sample(exclude, start, max).collect();
                    let want = sample_by_definition(t, exclude, start, max);
                    assert_eq!(got, want, "{} peers, start {start}, max {max}", i + 1);
                }
            }
        }
    }
    // No peer: nothing, whatever the start.
    let mut e = Swarms::new(limits, 60_000).without_persistence();
    e.load_torrent(ih(2), 1);
    let t = e.get(&ih(2)).unwrap();
    assert_eq!(t.sample(addr(1), 7, 5).count(), 0);
}

#[test]
fn counts_events_and_limits() {
    let mut s = swarms();
    s.announce(&ann(1, 1, AnnounceEvent::Started, false), 0)
        .unwrap();
    s.announce(&ann(1, 2, AnnounceEvent::Started, true), 0)
        .unwrap();
    let c = s
        .announce(&ann(1, 1, AnnounceEvent::Completed, true), 1)
        .unwrap();
    assert_eq!((c.seeders, c.leechers, c.completed), (2, 0, 1));
    assert_eq!(s.completed_total(), 1);
    s.announce(&ann(1, 3, AnnounceEvent::None, false), 1)
        .unwrap();
    s.announce(&ann(1, 4, AnnounceEvent::None, false), 1)
        .unwrap();
    assert_eq!(s.peer_limit_hits, 1);
    assert_eq!(s.get(&ih(1)).unwrap().len(), 3);
    s.announce(&ann(2, 1, AnnounceEvent::None, false), 1)
        .unwrap();
    assert_eq!(
        s.announce(&ann(3, 1, AnnounceEvent::None, false), 1),
        Err(AnnounceError::TorrentLimit)
    );
    let c = s
        .announce(&ann(1, 2, AnnounceEvent::Stopped, true), 2)
        .unwrap();
    assert_eq!((c.seeders, c.leechers), (1, 1));
    assert_eq!((s.peer_count(), s.seeder_count()), (3, 1));
    let sample: Vec<_> = s.get(&ih(1)).unwrap().sample(addr(1), 1, 10).collect();
    assert_eq!(sample, vec![addr(3)]);
}

#[test]
fn expiry_and_batches() {
    let mut s = swarms();
    s.announce(&ann(1, 1, AnnounceEvent::None, true), at(0))
        .unwrap();
    s.announce(&ann(1, 2, AnnounceEvent::None, false), at(5))
        .unwrap();
    let b = s.take_batch();
    assert_eq!(b.peers.len(), 2);
    assert!(b.peers.iter().all(|c| c.peer().is_some()));
    // A refresh within the same 60 s period is not rewritten; one in
    // the next period is.
    s.announce(&ann(1, 2, AnnounceEvent::None, false), at(6))
        .unwrap();
    assert_eq!(s.dirty_count(), 0);
    s.announce(&ann(1, 2, AnnounceEvent::None, false), at(59))
        .unwrap();
    assert_eq!(s.dirty_count(), 0);
    s.announce(&ann(1, 2, AnnounceEvent::None, false), at(60))
        .unwrap();
    assert_eq!(s.dirty_count(), 1);
    // A seeder flip is written at once.
    s.announce(&ann(1, 2, AnnounceEvent::None, true), at(61))
        .unwrap();
    let b = s.take_batch();
    assert_eq!(b.peers.len(), 1, "changed twice in a row, logged once");
    let p = b.peers[0].peer().unwrap();
    assert!(p.seeder);
    assert_eq!(p.last_seen, at(61));
    s.announce(&ann(1, 2, AnnounceEvent::None, false), at(61))
        .unwrap();
    s.take_batch();
    assert_eq!(s.expire(at(1)), 1);
    assert_eq!((s.peer_count(), s.seeder_count()), (1, 0));
    let b = s.take_batch();
    assert_eq!(b.peers, vec![PeerChange::new(ih(1), addr(1), None)]);
    assert_eq!(s.expire(at(100)), 1);
    assert_eq!(s.torrent_count(), 0);
}

#[test]
fn expiry_is_incremental_and_bounded_per_step() {
    let mut s = Swarms::new(
        Limits {
            max_torrents: 100,
            max_peers_per_torrent: 100,
        },
        60_000,
    );
    // 10 torrents × 10 peers: even ports seen at 0 (stale), odd at 10.
    for t in 0..10 {
        for port in 0..10u16 {
            let when = if port % 2 == 0 { at(0) } else { at(10) };
            s.announce(&ann(t, port, AnnounceEvent::None, port == 1), when)
                .unwrap();
        }
    }
    assert_eq!(s.peer_count(), 100);
    let mut removed = 0;
    let mut steps = 0;
    loop {
        let st = s.expire_step(at(5), 7);
        assert!(st.checked <= 7, "{st:?}");
        removed += st.removed;
        steps += 1;
        if st.wrapped {
            break;
        }
        assert!(steps < 100, "no progress");
    }
    assert_eq!(removed, 50);
    assert_eq!((s.peer_count(), s.seeder_count()), (50, 10));
    assert!(steps >= 100 / 7, "{steps} steps for 100 peers, 7 a step");
    // A torrent left with no peers and no completion is dropped; the
    // ring stays consistent (a later round visits every survivor once).
    for t in 0..10 {
        for port in (1..10u16).step_by(2) {
            s.announce(&ann(t, port, AnnounceEvent::Stopped, false), at(20))
                .unwrap();
        }
    }
    s.announce(&ann(3, 1, AnnounceEvent::Completed, true), at(20))
        .unwrap();
    assert_eq!(s.expire(at(30)), 1);
    assert_eq!(s.torrent_count(), 1, "only the completed torrent stays");
    assert_eq!(s.slab.len(), 1);
    // Budget 0 still makes progress (one peer or torrent a step).
    s.announce(&ann(4, 1, AnnounceEvent::None, false), at(40))
        .unwrap();
    let mut guard = 0;
    while !s.expire_step(at(50), 0).wrapped {
        guard += 1;
        assert!(guard < 10);
    }
    assert_eq!(s.torrent_count(), 1);
    assert!(s.get(&ih(3)).is_some());
}

#[test]
fn completed_total_sums_loaded_and_new_completions() {
    let mut s = swarms();
    assert!(s.load_torrent(ih(1), 5));
    assert!(s.load_torrent(ih(2), 7));
    assert_eq!(s.completed_total(), 12);
    s.announce(&ann(2, 1, AnnounceEvent::Completed, true), 0)
        .unwrap();
    assert_eq!(s.completed_total(), 13);
    // A torrent over the limit is not loaded and not counted.
    assert!(!s.load_torrent(ih(3), 100));
    assert_eq!(s.completed_total(), 13);
}

#[test]
fn coarse_time_edges() {
    assert_eq!(coarse(0), 0);
    assert_eq!(coarse(TIME_BASE_SECS * 1000 + 1999), 1);
    assert_eq!(ms_of(coarse(at(7))), at(7));
    assert_eq!(
        coarse(u64::MAX),
        SECS_MASK,
        "saturates below the seeder bit"
    );
    let mut p = Peer4::new([1, 2, 3, 4], 6881, SECS_MASK, true);
    assert_eq!((p.seen(), p.seeder(), p.port()), (SECS_MASK, true, 6881));
    p.set(5, false);
    assert_eq!((p.seen(), p.seeder()), (5, false));
}

#[test]
fn small_swarms_stay_inline_and_come_back() {
    let mut s = swarms();
    for port in 1..=2 {
        s.announce(&ann(1, port, AnnounceEvent::None, false), at(0))
            .unwrap();
    }
    let inline = |s: &Swarms| matches!(s.get(&ih(1)).unwrap().peers, PeerSet::Inline { .. });
    assert!(inline(&s), "{INLINE_PEERS} IPv4 peers inline");
    s.announce(&ann(1, 3, AnnounceEvent::None, true), at(0))
        .unwrap();
    assert!(!inline(&s), "one more: a list");
    s.announce(&ann(1, 1, AnnounceEvent::Stopped, false), at(0))
        .unwrap();
    assert!(inline(&s), "back inline");
    assert_eq!(s.counts(&ih(1)).seeders, 1);
    // An IPv6 peer is never inline.
    let mut a = ann(2, 1, AnnounceEvent::None, false);
    a.addr = "[2001:db8::1]:7000".parse().unwrap();
    s.announce(&a, at(0)).unwrap();
    assert!(!matches!(
        s.get(&ih(2)).unwrap().peers,
        PeerSet::Inline { .. }
    ));
    assert_eq!(s.get(&ih(2)).unwrap().get(&a.addr).unwrap().addr, a.addr);
}

/// Random joins, re-announces and leaves on one torrent (IPv4 and IPv6,
/// through the inline, linear and indexed forms) agree with a plain
/// map after every step.
#[test]
fn peer_set_matches_a_model() {
    use std::collections::BTreeMap;
    let mut s = Swarms::new(
        Limits {
            max_torrents: 4,
            max_peers_per_torrent: 1000,
        },
        60_000,
    );
    let mut model: BTreeMap<SocketAddr, bool> = BTreeMap::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for step in 0..20_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Grow to ~150 peers per family, then shrink back to a few.
        let span = if (step / 5_000) % 2 == 0 { 150 } else { 3 };
        let n = (x >> 8) % span;
        let addr: SocketAddr = if x & 1 == 0 {
            SocketAddr::from(([10, 0, (n >> 8) as u8, n as u8], 6881))
        } else {
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n as u16)),
                6881,
            )
        };
        let stop = (x >> 40) % 3 == 0 || span == 3 && addr.port() == 6881 && (x >> 44) % 2 == 0;
        let seeder = (x >> 50) & 1 == 1;
        let a = Announce {
            info_hash: ih(9),
            addr,
            event: if stop {
                AnnounceEvent::Stopped
            } else {
                AnnounceEvent::None
            },
            seeder,
        };
        s.announce(&a, at(step)).unwrap();
        if stop {
            model.remove(&addr);
        } else {
            model.insert(addr, seeder);
        }
        let t = s.get(&ih(9));
        let got: BTreeMap<SocketAddr, bool> = t
            .into_iter()
            .flat_map(|t| t.peers())
            .map(|p| (p.addr, p.seeder))
            .collect();
        assert_eq!(got, model, "step {step}");
        let seeders = model.values().filter(|v| **v).count();
        assert_eq!((s.peer_count(), s.seeder_count()), (model.len(), seeders));
        if let Some(t) = t {
            assert_eq!(t.seeders() as usize, seeders);
            for a in model.keys() {
                assert_eq!(t.get(a).map(|p| p.addr), Some(*a));
            }
        }
    }
}

/// A log the writer does not drain is compacted to the latest state of
/// each row once it reaches its bound, and written the same.
#[test]
fn an_undrained_log_is_compacted_at_its_bound() {
    let mut s = swarms();
    s.compact_at = 8;
    for i in 0..100u64 {
        let seeder = i % 2 == 1;
        s.announce(
            &ann(1, 1 + (i % 3) as u16, AnnounceEvent::None, seeder),
            at(i * 60),
        )
        .unwrap();
        assert!(s.dirty_count() <= 16, "{} entries", s.dirty_count());
    }
    let b = s.take_batch();
    // Peer 1 last announced at i = 99 (seeder), 2 at 97 (seeder), 3 at
    // 98 (leecher): one entry each, the latest.
    let mut last: Vec<(u16, bool, u64)> = b
        .peers
        .iter()
        .filter_map(|c| c.peer().map(|p| (p.addr.port(), p.seeder, p.last_seen)))
        .collect();
    // The latest entry of each port (the log may hold older ones
    // logged since the last compaction, before the latest).
    last.sort_by_key(|e| (e.0, std::cmp::Reverse(e.2)));
    last.dedup_by_key(|e| e.0);
    assert!(last.contains(&(1, true, at(99 * 60))), "{last:?}");
    assert!(last.contains(&(2, true, at(97 * 60))), "{last:?}");
    assert!(last.contains(&(3, false, at(98 * 60))), "{last:?}");
}

#[test]
fn a_peer_change_round_trips() {
    for a in [
        "10.1.2.3:6881",
        "[2001:db8::7]:51413",
        "[::ffff:10.0.0.1]:1",
    ] {
        let a: SocketAddr = a.parse().unwrap();
        let p = Peer {
            addr: a,
            last_seen: at(5),
            seeder: true,
        };
        let c = PeerChange::new(ih(1), a, Some(p));
        assert_eq!((c.addr(), c.peer()), (a, Some(p)));
        assert_eq!(PeerChange::new(ih(1), a, None).peer(), None);
    }
}
