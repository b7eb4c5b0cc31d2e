//! Tests of the database: journal, checkpoint (with a crash at every
//! step), loader (old and corrupt databases), secrets, lock and figures.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ourtorrent_core::id::InfoHash;
use ourtorrent_core::tracker::journal::{Record, Records, MAX_BLOB_LEN};
use ourtorrent_core::tracker::udp::server::SECRET_LEN;
use rusqlite::params;

use super::loader::has_table;
use super::*;
use crate::tracker::swarm::{
    shard_of, Announce, Batch, Limits, Peer, PeerChange, Swarms, TIME_BASE_SECS,
};
use ourtorrent_core::tracker::AnnounceEvent;

/// A re-announce within the last-seen period writes nothing; a restart
/// adds the period back, so a peer seen since its row was written is
/// not expired early, and one silent for longer than the window plus a
/// period is.
#[test]
fn reannounces_write_nothing_and_a_restart_keeps_live_peers() {
    let at = |s: u64| (TIME_BASE_SECS + s) * 1000;
    let limits = Limits {
        max_torrents: 10,
        max_peers_per_torrent: 10,
    };
    let period = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open(&dir.path().join("t.db")).unwrap();
    let mut s = Swarms::new(limits, period);
    let ann = |port: u16| Announce {
        info_hash: InfoHash([7; 20]),
        addr: SocketAddr::from(([10, 0, 0, 1], port)),
        event: AnnounceEvent::None,
        seeder: false,
    };
    s.announce(&ann(1), at(1100)).unwrap(); // silent since
    s.announce(&ann(2), at(1200)).unwrap();
    let b = s.take_batch();
    assert_eq!(b.rows(), 2);
    write(&mut conn, &b).unwrap();
    for t in [1210, 1240] {
        s.announce(&ann(2), at(t)).unwrap();
        assert_eq!(
            s.take_batch().rows(),
            0,
            "re-announce at {t} writes nothing"
        );
    }
    // Restart at 1330 with a 100 s window: cutoff 1230. Peer 2 (seen
    // at 1240, stored 1200) is kept; peer 1 (stored 1100) is not.
    let mut shards = vec![Swarms::new(limits, period)];
    let l = load(&conn, &mut shards, at(1230), period, at(1330)).unwrap();
    assert_eq!((l.peers, l.skipped), (1, 1));
    let t = shards[0].get(&InfoHash([7; 20])).unwrap();
    let p = t.get(&ann(2).addr).unwrap();
    assert_eq!(p.last_seen, at(1250), "stored time plus one period");
    // Never later than now.
    let mut shards = vec![Swarms::new(limits, period)];
    load(&conn, &mut shards, at(1200), period, at(1210)).unwrap();
    let t = shards[0].get(&InfoHash([7; 20])).unwrap();
    assert_eq!(t.get(&ann(2).addr).unwrap().last_seen, at(1210));
}

/// Changes are written in the order they happened: a leave then a
/// rejoin in one flush interval leaves the row; a join then a leave
/// leaves none.
#[test]
fn changes_are_written_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let mut conn = open(&db).unwrap();
    let limits = Limits {
        max_torrents: 10,
        max_peers_per_torrent: 10,
    };
    let mut s = Swarms::new(limits, 60_000);
    let ann = |port: u16, event| Announce {
        info_hash: InfoHash([9; 20]),
        addr: SocketAddr::from(([10, 0, 0, 2], port)),
        event,
        seeder: false,
    };
    let now = (TIME_BASE_SECS + 100) * 1000;
    s.announce(&ann(1, AnnounceEvent::Started), now).unwrap();
    write(&mut conn, &s.take_batch()).unwrap();
    s.announce(&ann(1, AnnounceEvent::Stopped), now).unwrap();
    s.announce(&ann(1, AnnounceEvent::Started), now).unwrap();
    s.announce(&ann(2, AnnounceEvent::Started), now).unwrap();
    s.announce(&ann(2, AnnounceEvent::Stopped), now).unwrap();
    write(&mut conn, &s.take_batch()).unwrap();
    let st = read_state(&conn).unwrap();
    let ports: Vec<u16> = st.peers.keys().map(|(_, a)| a.port()).collect();
    assert_eq!(ports, vec![1]);
    // More rows than one checkpoint statement takes, the same row twice
    // in one batch (a seeder flip: the later state wins), at the edges;
    // the journal, then a checkpoint of the loaded state, hold them.
    for n in [1, 63, 150] {
        let mut b = Batch::default();
        for port in 0..n as u16 {
            let p = Peer {
                addr: SocketAddr::from(([10, 0, 1, 1], 1000 + port)),
                last_seen: now,
                seeder: false,
            };
            b.peers
                .push(PeerChange::new(InfoHash([n as u8; 20]), p.addr, Some(p)));
        }
        let first = b.peers[0].peer().unwrap();
        let flipped = Peer {
            seeder: true,
            ..first
        };
        b.peers.insert(
            1,
            PeerChange::new(b.peers[0].info_hash, first.addr, Some(flipped)),
        );
        b.sort();
        write(&mut conn, &b).unwrap();
        let st = read_state(&conn).unwrap();
        let mine = st
            .peers
            .iter()
            .filter(|((ih, _), _)| *ih == InfoHash([n as u8; 20]));
        let (count, seeders) = mine.fold((0, 0), |(c, s), (_, (seeder, _))| {
            (c + 1, s + usize::from(*seeder))
        });
        assert_eq!((count, seeders), (n, 1), "{n} rows in the journal");
        let mut shards = [Swarms::new(limits_big(), 60_000)];
        load(&conn, &mut shards, 0, 0, u64::MAX).unwrap();
        let mut one = Some(ShardCopy::take(&mut shards[0]));
        checkpoint(&mut conn, |_| one.take(), |_, _| Ok(true))
            .unwrap()
            .unwrap();
        let got = checkpoint_records(&conn)
            .iter()
            .filter_map(|r| match r {
                Record::PeerSet {
                    info_hash, seeder, ..
                } if *info_hash == InfoHash([n as u8; 20]) => Some(usize::from(*seeder)),
                _ => None,
            })
            .fold((0, 0), |(c, s), x| (c + 1, s + x));
        assert_eq!(got, (n, 1), "{n} peers in the checkpoint");
        let left: i64 = conn
            .query_row("SELECT count(*) FROM journal", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0, "the checkpoint deleted the journal before it");
        assert_eq!(read_state(&conn).unwrap(), st);
    }
}

#[test]
fn a_new_database_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let mut conn = open(&db).unwrap();
    save_secrets(
        &mut conn,
        &Secrets {
            current: [1; SECRET_LEN],
            previous: None,
            rotated_at: 0,
        },
    )
    .unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&db), DB_FILE_MODE);
    assert_eq!(mode(&dir.path().join("t.db-wal")), DB_FILE_MODE);
    // An existing file keeps the mode its owner gave it.
    drop(conn);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o640)).unwrap();
    drop(open(&db).unwrap());
    assert_eq!(mode(&db), 0o640);
}

#[test]
fn secrets_round_trip_and_rotate_in_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open(&dir.path().join("t.db")).unwrap();
    assert_eq!(load_secrets(&conn).unwrap(), None);
    let first = Secrets {
        current: [1; SECRET_LEN],
        previous: None,
        rotated_at: 5,
    };
    save_secrets(&mut conn, &first).unwrap();
    assert_eq!(load_secrets(&conn).unwrap(), Some(first));
    let second = Secrets {
        current: [2; SECRET_LEN],
        previous: Some([1; SECRET_LEN]),
        rotated_at: 600_005,
    };
    let b = Batch {
        secrets: Some(second),
        ..Default::default()
    };
    assert!(!b.is_empty());
    write(&mut conn, &b).unwrap();
    assert_eq!(load_secrets(&conn).unwrap(), Some(second));
    // A malformed secret row reads as none (a fresh secret is made).
    conn.execute("UPDATE meta SET value = x'00' WHERE key = 'udp_secret'", [])
        .unwrap();
    assert_eq!(load_secrets(&conn).unwrap(), None);
}

#[test]
fn flush_latency_buckets_at_their_edges() {
    use std::time::Duration;
    let l = FlushLatency::default();
    l.record(Duration::from_micros(1000), 3, true); // = 1 ms: first bucket
    l.record(Duration::from_micros(1001), 2, true); // just above: second
    l.record(Duration::from_secs(6), 1, false); // beyond 5 s: +Inf
    let s = l.snapshot();
    assert_eq!(s.cumulative, vec![1, 2, 2, 2, 2, 2, 2, 2, 3]);
    assert_eq!((s.rows, s.failed), (5, 1));
    assert!((s.sum_secs - 6.002001).abs() < 1e-9);
}

#[test]
fn lock_is_exclusive_names_the_holder_and_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tracker.db");
    let held = lock(&db).unwrap();
    // flock locks belong to the open file: a second open in the same
    // process conflicts as another process would.
    let err = lock(&db).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{} is in use by another tracker (pid {})",
            db.display(),
            std::process::id()
        )
    );
    drop(held);
    let _again = lock(&db).unwrap();
}

/// Every record of the `checkpoint` table's chunks, in chunk order
/// (each chunk must decode).
fn checkpoint_records(conn: &Connection) -> Vec<Record> {
    let mut st = conn
        .prepare("SELECT chunk, body FROM checkpoint ORDER BY chunk")
        .unwrap();
    let rows = st
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .unwrap();
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        let (chunk, body) = row.unwrap();
        assert_eq!(chunk, i as i64, "chunks numbered from 0");
        assert!(body.len() <= CHECKPOINT_CHUNK_LEN);
        out.extend(Records::new(&body).map(|r| r.unwrap()));
    }
    out
}

fn limits_big() -> Limits {
    Limits {
        max_torrents: 1 << 20,
        max_peers_per_torrent: 1 << 20,
    }
}

/// A seeded xorshift (tests only).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random announce among few torrents and addresses (IPv4 and IPv6),
/// so rows change many times.
fn random_announce(r: &mut Rng) -> Announce {
    let ih = InfoHash([r.below(7) as u8; 20]);
    let port = 1000 + r.below(40) as u16;
    let addr = if r.below(4) == 0 {
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            port,
        )
    } else {
        SocketAddr::from(([10, 0, 0, r.below(3) as u8], port))
    };
    let event = match r.below(10) {
        0..=2 => AnnounceEvent::Stopped,
        3..=4 => AnnounceEvent::Completed,
        5 => AnnounceEvent::Started,
        _ => AnnounceEvent::None,
    };
    Announce {
        info_hash: ih,
        addr,
        event,
        seeder: r.below(2) == 0,
    }
}

/// The writer's flush: the shards' drained logs as one journal row.
fn write_all(conn: &mut Connection, batches: impl IntoIterator<Item = Batch>) -> Result<Appended> {
    let mut all = Batch::default();
    for b in batches {
        all.peers.extend(b.peers);
        all.torrents.extend(b.torrents);
    }
    write(conn, &all)
}

/// Asserts that the database loads to `want`'s torrents and peer rows
/// with their seeder flags (the journal keeps a re-announce's last-seen
/// time only per period, so times are the caller's to check); returns
/// what it loaded.
fn assert_restores(conn: &Connection, want: &StoredState, what: &str) -> StoredState {
    let got = read_state(conn).unwrap();
    assert_eq!(got.torrents, want.torrents, "{what}");
    let strip = |m: &std::collections::BTreeMap<(InfoHash, SocketAddr), (bool, u64)>| {
        m.iter().map(|(k, v)| (*k, v.0)).collect::<Vec<_>>()
    };
    assert_eq!(strip(&got.peers), strip(&want.peers), "{what}");
    got
}

/// Model test: random announces and expiry over 3 shards, flushed to
/// the journal at random points, checkpoints (some stopped half-way,
/// as a crash leaves them) at random points in between; after each
/// step the database loads to exactly the in-memory swarms.
#[test]
fn journal_and_fuzzy_checkpoints_restore_exactly_the_swarms() {
    for seed in 1..=6u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("t.db")).unwrap();
        let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        // A long refresh period: re-announces write nothing, so the
        // stored last-seen may trail; compare with the times as
        // stored (whole periods are not the point here).
        let mut shards: Vec<Swarms> = (0..3).map(|_| Swarms::new(limits_big(), 1000)).collect();
        let mut now = (TIME_BASE_SECS + 10) * 1000;
        let mut checkpoints = 0;
        for round in 0..60 {
            for _ in 0..r.below(80) {
                let a = random_announce(&mut r);
                let i = shard_of(&a.info_hash, shards.len());
                shards[i].announce(&a, now).unwrap();
                now += r.below(3) * 1000;
            }
            if r.below(5) == 0 {
                let cutoff = now - 20_000;
                for s in &mut shards {
                    s.expire(cutoff);
                }
            }
            if r.below(4) == 0 {
                // A checkpoint taken while announces go on: each
                // shard changes between the copies.
                let stop_at = r.below(14);
                let mut steps = 0;
                let mut rr = Rng(r.next() | 1);
                let cells: Vec<std::cell::RefCell<&mut Swarms>> =
                    shards.iter_mut().map(std::cell::RefCell::new).collect();
                let done = checkpoint(
                    &mut conn,
                    |i| {
                        let cell = cells.get(i)?;
                        let mut s = cell.borrow_mut();
                        let c = ShardCopy::take(&mut s);
                        // Changes after the copy, before the swap.
                        for _ in 0..rr.below(20) {
                            let a = random_announce(&mut rr);
                            if shard_of(&a.info_hash, 3) == i {
                                s.announce(&a, now).unwrap();
                            }
                        }
                        Some(c)
                    },
                    |conn, _| {
                        // The writer's flushes go on between steps.
                        steps += 1;
                        if steps % 2 == 0 {
                            write_all(conn, cells.iter().map(|c| c.borrow_mut().take_batch()))?;
                        }
                        Ok(steps <= stop_at)
                    },
                )
                .unwrap();
                checkpoints += usize::from(done.is_some());
                if done.is_none() {
                    // A crash: reopen (drops the *_next tables).
                    drop(conn);
                    conn = open(&dir.path().join("t.db")).unwrap();
                }
            }
            write_all(&mut conn, shards.iter_mut().map(|s| s.take_batch())).unwrap();
            let want = StoredState::of(&shards);
            let got = assert_restores(&conn, &want, &format!("seed {seed} round {round}"));
            for (k, (_, seen)) in &got.peers {
                let real = want.peers[k].1;
                assert!(*seen <= real && real - seen < 1000 * 1000, "{k:?}");
            }
            assert_eq!(got.bad_rows, 0);
        }
        assert!(checkpoints > 0, "seed {seed}: no checkpoint completed");
    }
}

/// Announces over 60 torrents, a third of them `stopped`: torrents empty
/// out, and expiry then removes them (moving the slab's last torrent into
/// each hole).
fn churning_announce(r: &mut Rng) -> Announce {
    let event = match r.below(10) {
        0..=3 => AnnounceEvent::Stopped,
        4 if r.below(20) == 0 => AnnounceEvent::Completed,
        _ => AnnounceEvent::None,
    };
    Announce {
        info_hash: InfoHash([r.below(60) as u8; 20]),
        addr: SocketAddr::from(([10, 0, 0, 1], 1000 + r.below(6) as u16)),
        event,
        seeder: r.below(2) == 0,
    }
}

/// A checkpoint copied in small parts (1-4 peers) while, between parts,
/// peers come and go, new torrents are appended and expiry removes
/// emptied torrents (moving others down the slab): the database still
/// loads to exactly the in-memory swarms, so no torrent that moved was
/// missed.
#[test]
fn checkpoint_parts_miss_no_torrent_that_moves_or_appears() {
    let (mut moved_total, mut parts_total, mut checkpoints) = (0usize, 0usize, 0usize);
    for seed in 1..=8u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("t.db")).unwrap();
        let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let cells: Vec<std::cell::RefCell<Swarms>> = (0..2)
            .map(|_| std::cell::RefCell::new(Swarms::new(limits_big(), 1000)))
            .collect();
        let mut now = (TIME_BASE_SECS + 10) * 1000;
        for round in 0..30 {
            for _ in 0..r.below(120) {
                let a = churning_announce(&mut r);
                let i = shard_of(&a.info_hash, cells.len());
                cells[i].borrow_mut().announce(&a, now).unwrap();
            }
            let mut parts = Parts::new(1 + r.below(4) as usize);
            let mut rr = Rng(r.next() | 1);
            let mut steps = 0;
            let done = checkpoint(
                &mut conn,
                |_| {
                    let c = parts.next(|i| cells.get(i).map(|c| c.borrow_mut()));
                    parts_total += usize::from(c.is_some());
                    // Between parts: churn in every shard, then expiry
                    // of the emptied torrents.
                    for _ in 0..rr.below(12) {
                        let a = churning_announce(&mut rr);
                        let i = shard_of(&a.info_hash, cells.len());
                        cells[i].borrow_mut().announce(&a, now).unwrap();
                    }
                    for cell in &cells {
                        let mut s = cell.borrow_mut();
                        let before = s.torrent_count();
                        s.expire(0);
                        moved_total += before - s.torrent_count();
                    }
                    c
                },
                |conn, _| {
                    steps += 1;
                    if steps % 2 == 0 {
                        write_all(conn, cells.iter().map(|c| c.borrow_mut().take_batch()))?;
                    }
                    Ok(true)
                },
            )
            .unwrap();
            checkpoints += usize::from(done.is_some());
            write_all(&mut conn, cells.iter().map(|c| c.borrow_mut().take_batch())).unwrap();
            let shards: Vec<std::cell::Ref<Swarms>> = cells.iter().map(|c| c.borrow()).collect();
            let want = StoredState::of(shards.iter().map(|s| &**s));
            assert_restores(&conn, &want, &format!("seed {seed} round {round}"));
            now += 1000;
        }
    }
    // The churn did what the test is about: many parts a checkpoint, and
    // torrents removed (so others moved) while checkpoints ran.
    assert_eq!(checkpoints, 8 * 30);
    assert!(parts_total > 4 * checkpoints, "{parts_total} parts");
    assert!(
        moved_total > 100,
        "{moved_total} torrents removed mid-checkpoint"
    );
}

/// A crash after any step of a checkpoint (the connection dropped with
/// the work so far) restarts to the same swarms; a database from
/// before the journal loads as a checkpoint.
#[test]
fn a_crash_at_every_step_of_a_checkpoint_loses_nothing() {
    let now = (TIME_BASE_SECS + 100) * 1000;
    for stop_at in 0..8 {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let mut conn = open(&db).unwrap();
        let mut shards: Vec<Swarms> = (0..2).map(|_| Swarms::new(limits_big(), 1000)).collect();
        let mut r = Rng(77 + stop_at);
        for _ in 0..300 {
            let a = random_announce(&mut r);
            let i = shard_of(&a.info_hash, 2);
            shards[i].announce(&a, now).unwrap();
        }
        let mut b = shards[0].take_batch();
        write(&mut conn, &b).unwrap();
        b = shards[1].take_batch();
        write(&mut conn, &b).unwrap();
        let before = read_state(&conn).unwrap();
        assert_eq!(before, StoredState::of(&shards));
        let mut steps = 0;
        let done = checkpoint(
            &mut conn,
            |i| shards.get_mut(i).map(ShardCopy::take),
            |_, _| {
                steps += 1;
                Ok(steps <= stop_at)
            },
        )
        .unwrap();
        drop(conn);
        let conn = open(&db).unwrap();
        assert_eq!(
            read_state(&conn).unwrap(),
            before,
            "stopped after {stop_at} steps"
        );
        let j: i64 = conn
            .query_row("SELECT count(*) FROM journal", [], |r| r.get(0))
            .unwrap();
        let recs = checkpoint_records(&conn);
        if let Some(d) = done {
            // The checkpoint alone holds the state: one record per
            // peer and per completed count, no journal left.
            assert_eq!(j, 0);
            let peers = recs
                .iter()
                .filter(|r| matches!(r, Record::PeerSet { .. }))
                .count();
            assert_eq!(peers, before.peers.len());
            assert_eq!(recs.len(), peers + before.torrents.len());
            assert_eq!(d.peers as usize, peers);
            let mut shards = [Swarms::new(limits_big(), 1000)];
            let l = load(&conn, &mut shards, 0, 0, u64::MAX).unwrap();
            assert_eq!((l.journal_rows, l.replayed), (0, 0));
            assert_eq!(StoredState::of(&shards), before);
        } else {
            assert!(recs.is_empty(), "the swap is all or nothing");
            assert!(j > 0);
        }
        let next: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name LIKE '%_next'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(next, 0, "leftover *_next tables are dropped at open");
    }
}

/// A journal row that does not decode keeps the records before the
/// error, is reported with its seq and offset, and loading goes on
/// with the next row.
#[test]
fn a_corrupt_journal_row_is_skipped_from_the_error_on_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open(&dir.path().join("t.db")).unwrap();
    let now = (TIME_BASE_SECS + 100) * 1000;
    let peer = |port: u16| {
        let p = Peer {
            addr: SocketAddr::from(([10, 9, 9, 9], port)),
            last_seen: now,
            seeder: false,
        };
        PeerChange::new(InfoHash([3; 20]), p.addr, Some(p))
    };
    for ports in [[1u16, 2], [3, 4], [5, 6]] {
        let b = Batch {
            peers: ports.iter().map(|&p| peer(p)).collect(),
            ..Default::default()
        };
        write(&mut conn, &b).unwrap();
    }
    // Row 1 (the second): its second record gets an unknown tag.
    conn.execute(
        "UPDATE journal SET body = substr(body, 1, 33) || x'ee' || substr(body, 35) WHERE seq = 1",
        [],
    )
    .unwrap();
    let mut shards = [Swarms::new(limits_big(), 1000)];
    let l = load(&conn, &mut shards, 0, 0, u64::MAX).unwrap();
    assert_eq!(l.journal_rows, 3);
    assert_eq!(l.replayed, 5);
    assert_eq!(l.bad_rows.len(), 1);
    let (seq, e) = l.bad_rows[0];
    assert_eq!(seq, 1);
    assert_eq!(e.to_string(), "unknown record tag 238 at offset 33");
    let ports: Vec<u16> = read_state(&conn)
        .unwrap()
        .peers
        .keys()
        .map(|(_, a)| a.port())
        .collect();
    assert_eq!(ports, vec![1, 2, 3, 5, 6]);
    // Garbage and an empty body: skipped too, never a panic.
    conn.execute("INSERT INTO journal (seq, body) VALUES (7, x'')", [])
        .unwrap();
    conn.execute("INSERT INTO journal (seq, body) VALUES (8, x'09ffff')", [])
        .unwrap();
    assert_eq!(read_state(&conn).unwrap().bad_rows, 3);
}

/// Each flush appends one journal row (no per-peer row work), and
/// a batch larger than a blob is split at [`MAX_BLOB_LEN`].
#[test]
fn a_flush_is_one_journal_row_and_big_batches_split_at_the_blob_limit() {
    let now = (TIME_BASE_SECS + 100) * 1000;
    let per_blob = (MAX_BLOB_LEN - 1) / 32;
    for (n, rows) in [(1, 1), (per_blob, 1), (per_blob + 1, 2)] {
        let b = Batch {
            peers: (0..n as u32)
                .map(|k| {
                    let p = Peer {
                        addr: SocketAddr::from((k.to_be_bytes(), 1)),
                        last_seen: now,
                        seeder: true,
                    };
                    PeerChange::new(InfoHash([1; 20]), p.addr, Some(p))
                })
                .collect(),
            ..Default::default()
        };
        let (blobs, records) = encode_batch(&b);
        assert_eq!((blobs.len(), records), (rows, n as u64), "{n} changes");
        assert!(blobs.iter().all(|b| b.len() <= MAX_BLOB_LEN));
        assert_eq!(blobs[0].len(), 1 + 32 * n.min(per_blob));
    }
}

/// A database written before the journal and the blob checkpoint
/// (relational `peers` and `torrents`, no `journal`, `checkpoint` or
/// `checkpoint_seq`) is a checkpoint with an empty journal: it loads as
/// it is (read-only too), journal rows then apply on top of it, a
/// checkpoint cut short at any step leaves it as it was, and the first
/// complete one replaces it (the old tables dropped in the swap).
#[test]
fn a_database_from_before_the_journal_loads_as_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    {
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE torrents (info_hash BLOB PRIMARY KEY NOT NULL,
               completed INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
             CREATE TABLE peers (info_hash BLOB NOT NULL, ip BLOB NOT NULL,
               port INTEGER NOT NULL, seeder INTEGER NOT NULL, last_seen INTEGER NOT NULL,
               PRIMARY KEY (info_hash, ip, port)) WITHOUT ROWID;",
        )
        .unwrap();
        let ih = [5u8; 20];
        c.execute("INSERT INTO torrents VALUES (?1, 3)", [&ih[..]])
            .unwrap();
        for port in [1, 2] {
            c.execute(
                "INSERT INTO peers VALUES (?1, x'0a000001', ?2, 1, 1700000100000)",
                params![&ih[..], port],
            )
            .unwrap();
        }
    }
    let st = read_state_at(&db).unwrap();
    assert_eq!(st.torrents.values().copied().collect::<Vec<_>>(), [3]);
    assert_eq!(st.peers.len(), 2);
    let mut conn = open(&db).unwrap();
    assert_eq!(read_state(&conn).unwrap(), st);
    let b = Batch {
        peers: vec![PeerChange::new(
            InfoHash([5; 20]),
            SocketAddr::from(([10, 0, 0, 1], 1)),
            None,
        )],
        torrents: vec![(InfoHash([5; 20]), 4)],
        secrets: None,
    };
    write(&mut conn, &b).unwrap();
    let st = read_state(&conn).unwrap();
    assert_eq!(st.torrents.values().copied().collect::<Vec<_>>(), [4]);
    assert_eq!(st.peers.len(), 1);
    let tables = |conn: &Connection| {
        ["peers", "torrents"]
            .iter()
            .filter(|t| has_table(conn, t).unwrap())
            .count()
    };
    for stop_at in 0.. {
        let mut shards = [Swarms::new(limits_big(), 1000)];
        load(&conn, &mut shards, 0, 0, u64::MAX).unwrap();
        let mut steps = 0;
        let mut one = Some(ShardCopy::take(&mut shards[0]));
        let done = checkpoint(
            &mut conn,
            |_| one.take(),
            |_, _| {
                steps += 1;
                Ok(steps <= stop_at)
            },
        )
        .unwrap();
        drop(conn);
        conn = open(&db).unwrap();
        assert_eq!(read_state(&conn).unwrap(), st, "stopped after {stop_at}");
        if done.is_some() {
            assert_eq!(tables(&conn), 0, "the old tables are dropped");
            assert_eq!(checkpoint_records(&conn).len(), 2);
            break;
        }
        assert_eq!(tables(&conn), 2, "kept until a checkpoint completes");
    }
}

/// A checkpoint chunk that does not decode keeps the records before
/// the error, is reported with its chunk number and offset, and the
/// load goes on with the next chunk and the journal (never refuses to
/// start).
#[test]
fn a_corrupt_checkpoint_chunk_is_skipped_from_the_error_on_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open(&dir.path().join("t.db")).unwrap();
    let now = (TIME_BASE_SECS + 100) * 1000;
    let mut s = Swarms::new(limits_big(), 1000);
    for port in 1..=3 {
        let a = Announce {
            info_hash: InfoHash([3; 20]),
            addr: SocketAddr::from(([10, 9, 9, 9], port)),
            event: AnnounceEvent::Started,
            seeder: false,
        };
        s.announce(&a, now).unwrap();
    }
    write(&mut conn, &s.take_batch()).unwrap();
    let mut one = Some(ShardCopy::take(&mut s));
    checkpoint(&mut conn, |_| one.take(), |_, _| Ok(true))
        .unwrap()
        .unwrap();
    // Chunk 0's second record gets an unknown tag; chunk 1 is garbage
    // and chunk 2 empty; a journal row after the checkpoint still
    // applies.
    conn.execute(
        "UPDATE checkpoint SET body = substr(body, 1, 33) || x'ee' || substr(body, 35) WHERE chunk = 0",
        [],
    )
    .unwrap();
    conn.execute("INSERT INTO checkpoint VALUES (1, x'09ffff'), (2, x'')", [])
        .unwrap();
    let p = Peer {
        addr: SocketAddr::from(([10, 9, 9, 9], 7)),
        last_seen: now,
        seeder: true,
    };
    let b = Batch {
        peers: vec![PeerChange::new(InfoHash([3; 20]), p.addr, Some(p))],
        ..Default::default()
    };
    write(&mut conn, &b).unwrap();
    let mut shards = [Swarms::new(limits_big(), 1000)];
    let l = load(&conn, &mut shards, 0, 0, u64::MAX).unwrap();
    assert_eq!((l.checkpoint_chunks, l.bad_chunks.len()), (3, 3));
    let (chunk, e) = l.bad_chunks[0];
    assert_eq!(chunk, 0);
    assert_eq!(e.to_string(), "unknown record tag 238 at offset 33");
    assert_eq!(l.bad_chunks[1].0, 1);
    assert_eq!((l.replayed, l.bad_rows.len()), (1, 0));
    let ports: Vec<u16> = StoredState::of(&shards)
        .peers
        .keys()
        .map(|(_, a)| a.port())
        .collect();
    assert_eq!(
        ports.len(),
        2,
        "the first record and the journal's: {ports:?}"
    );
    assert!(ports.contains(&7));
}

/// A shard's checkpoint is split into chunks at
/// [`CHECKPOINT_CHUNK_LEN`]: exactly full is one chunk, one record more
/// is two; every chunk decodes as a journal blob.
#[test]
fn checkpoint_chunks_split_at_the_chunk_limit() {
    let now = (TIME_BASE_SECS + 100) * 1000;
    let per_chunk = (CHECKPOINT_CHUNK_LEN - 1) / 32;
    for (n, chunks) in [(per_chunk, 1), (per_chunk + 1, 2)] {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("t.db")).unwrap();
        let copy = ShardCopy {
            peers: (0..n as u32)
                .map(|k| {
                    let p = Peer {
                        addr: SocketAddr::from((k.to_be_bytes(), 1)),
                        last_seen: now,
                        seeder: k % 2 == 0,
                    };
                    PeerChange::new(InfoHash([1; 20]), p.addr, Some(p))
                })
                .collect(),
            ..Default::default()
        };
        let mut one = Some(copy);
        let d = checkpoint(&mut conn, |_| one.take(), |_, _| Ok(true))
            .unwrap()
            .unwrap();
        assert_eq!((d.chunks, d.peers), (chunks, n as u64), "{n} peers");
        assert_eq!(d.bytes, 32 * n as u64 + chunks);
        assert_eq!(checkpoint_records(&conn).len(), n);
        let st = read_state(&conn).unwrap();
        assert_eq!(st.peers.len(), n);
    }
}
