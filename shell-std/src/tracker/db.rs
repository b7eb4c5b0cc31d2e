//! SQLite persistence (rusqlite, bundled SQLite, WAL): torrents with their
//! completed counts and peers, written behind the hot path.
//!
//! The swarm marks what changed; every flush interval the shell drains that
//! into a [`Batch`] and hands it to the writer thread, which writes it in
//! one transaction. A `kill -9` therefore loses at most the changes of one
//! flush interval (plus the batch in flight); WAL with
//! `synchronous=NORMAL` keeps every committed transaction across a process
//! crash.
//!
//! Schema:
//! ```sql
//! torrents(info_hash BLOB PRIMARY KEY, completed INTEGER)
//! peers(info_hash BLOB, ip BLOB, port INTEGER, seeder INTEGER, last_seen INTEGER,
//!       PRIMARY KEY (info_hash, ip, port)) WITHOUT ROWID
//! ```
//! `ip` is 4 or 16 bytes; `last_seen` is milliseconds since the Unix epoch.
//!
//! ```sql
//! meta(key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID
//! ```
//! holds the BEP 15 connection-id secrets ([`Secrets`]: `udp_secret`,
//! `udp_secret_previous`, `udp_secret_rotated_at`), so ids handed out before
//! a restart stay valid after it. Whoever can read the file can mint ids for
//! any address until the next rotation: keep it private (as the tracker does
//! its peers' addresses).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use ourtorrent_core::id::InfoHash;
use rusqlite::{params, Connection};

use ourtorrent_core::tracker::udp::server::SECRET_LEN;

use super::swarm::{shard_of, Batch, Peer, Swarms};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS torrents (
    info_hash BLOB PRIMARY KEY NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS peers (
    info_hash BLOB NOT NULL,
    ip BLOB NOT NULL,
    port INTEGER NOT NULL,
    seeder INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (info_hash, ip, port)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID;
";

/// The lock held on a database for the life of a tracker: an exclusive
/// `flock` on `DB.lock` (beside the database), which holds the owner's pid.
/// The kernel drops it when the process ends, even by `kill -9`, so it is
/// never stale.
#[derive(Debug)]
pub struct DbLock {
    _file: std::fs::File,
}

/// The lock file of database `db`: `db` with `.lock` appended.
pub fn lock_path(db: &Path) -> std::path::PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".lock");
    p.into()
}

/// Takes the lock on `db`, or says which tracker holds it: "tracker.db is
/// in use by another tracker (pid N)". Two trackers on one file would keep
/// two diverging swarms and overwrite each other's rows.
pub fn lock(db: &Path) -> Result<DbLock> {
    use std::io::{Read, Seek, Write};
    let path = lock_path(db);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {
            f.set_len(0)?;
            f.rewind()?;
            writeln!(f, "{}", std::process::id())?;
            Ok(DbLock { _file: f })
        }
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
            let mut text = String::new();
            let _ = f.read_to_string(&mut text);
            let pid = match text.trim() {
                "" => "unknown".to_string(),
                p => p.to_string(),
            };
            anyhow::bail!("{} is in use by another tracker (pid {pid})", db.display())
        }
        Err(e) => Err(e).with_context(|| format!("lock {}", path.display())),
    }
}

/// Mode of a database file the tracker creates: owner only (it holds the
/// connection-id secret and the peers' addresses). SQLite gives its `-wal`
/// and `-shm` files the database's mode.
pub const DB_FILE_MODE: u32 = 0o600;

/// WAL pages (4 KiB) between checkpoints (SQLite's default is 1,000): a
/// checkpoint is the writer's only `fsync` with `synchronous=NORMAL`, and
/// under a join-heavy load (100k rows/s) the default made it wait on the
/// disk several times a second; the WAL file may grow to about 64 MiB.
pub const WAL_CHECKPOINT_PAGES: u32 = 16_384;

/// Opens (creating if needed, with [`DB_FILE_MODE`]) the database in WAL
/// mode. An existing file keeps its mode.
pub fn open(path: &Path) -> Result<Connection> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(DB_FILE_MODE)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    let conn = Connection::open(path).with_context(|| format!("open {}", path.display()))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    anyhow::ensure!(
        mode.eq_ignore_ascii_case("wal"),
        "{}: journal_mode is {mode}, not WAL",
        path.display()
    );
    conn.execute_batch(&format!(
        "PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES};"
    ))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn ip_from(b: &[u8]) -> Option<IpAddr> {
    if let Ok(a) = <[u8; 4]>::try_from(b) {
        Some(IpAddr::V4(Ipv4Addr::from(a)))
    } else if let Ok(a) = <[u8; 16]>::try_from(b) {
        Some(IpAddr::V6(Ipv6Addr::from(a)))
    } else {
        None
    }
}

/// What [`load`] restored.
#[derive(Debug, Default, Clone, Copy)]
pub struct Loaded {
    /// Torrents with a completed count.
    pub torrents: usize,
    /// Peers still fresh.
    pub peers: usize,
    /// Rows skipped (expired, malformed or over a limit).
    pub skipped: usize,
}

/// Loads torrents and peers into `shards` (each torrent into its
/// [`shard_of`]). A stored last-seen time trails the real one by less than
/// `slack_ms` (the swarm's last-seen period, see [`super::swarm`]), so a
/// peer is restored as seen at `stored + slack_ms` (never after `now_ms`)
/// and kept if that is at or after `cutoff` (ms): a restart never expires
/// a live peer early.
pub fn load(
    conn: &Connection,
    shards: &mut [Swarms],
    cutoff: u64,
    slack_ms: u64,
    now_ms: u64,
) -> Result<Loaded> {
    let n = shards.len();
    let mut out = Loaded::default();
    let mut st = conn.prepare("SELECT info_hash, completed FROM torrents")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (ih, completed) = row?;
        match InfoHash::from_slice(&ih) {
            Some(ih)
                if shards.get_mut(shard_of(&ih, n)).is_some_and(|s| {
                    s.load_torrent(ih, completed.clamp(0, u32::MAX.into()) as u32)
                }) =>
            {
                out.torrents += 1
            }
            _ => out.skipped += 1,
        }
    }
    let mut st = conn.prepare("SELECT info_hash, ip, port, seeder, last_seen FROM peers")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, bool>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    for row in rows {
        let (ih, ip, port, seeder, last_seen) = row?;
        let last_seen = u64::try_from(last_seen)
            .unwrap_or(0)
            .saturating_add(slack_ms)
            .min(now_ms);
        let (Some(ih), Some(ip), Ok(port)) =
            (InfoHash::from_slice(&ih), ip_from(&ip), u16::try_from(port))
        else {
            out.skipped += 1;
            continue;
        };
        let peer = Peer {
            addr: SocketAddr::new(ip, port),
            last_seen,
            seeder,
        };
        if last_seen >= cutoff
            && shards
                .get_mut(shard_of(&ih, n))
                .is_some_and(|s| s.load_peer(ih, peer))
        {
            out.peers += 1;
        } else {
            out.skipped += 1;
        }
    }
    Ok(out)
}

/// The UDP connection-id secrets as kept across restarts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secrets {
    /// The secret ids are issued with.
    pub current: [u8; SECRET_LEN],
    /// The one before, still accepted.
    pub previous: Option<[u8; SECRET_LEN]>,
    /// When `current` became current (ms since the Unix epoch).
    pub rotated_at: u64,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets {{ rotated_at: {}, .. }}", self.rotated_at)
    }
}

fn meta_get(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>> {
    let mut st = conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?;
    let mut rows = st.query([key])?;
    Ok(match rows.next()? {
        Some(r) => Some(r.get::<_, Vec<u8>>(0)?),
        None => None,
    })
}

/// The stored secrets, if any (a malformed row counts as none).
pub fn load_secrets(conn: &Connection) -> Result<Option<Secrets>> {
    let Some(current) = meta_get(conn, "udp_secret")?.and_then(|v| v.try_into().ok()) else {
        return Ok(None);
    };
    let previous = meta_get(conn, "udp_secret_previous")?.and_then(|v| v.try_into().ok());
    let rotated_at = meta_get(conn, "udp_secret_rotated_at")?
        .and_then(|v| <[u8; 8]>::try_from(v).ok())
        .map_or(0, u64::from_be_bytes);
    Ok(Some(Secrets {
        current,
        previous,
        rotated_at,
    }))
}

fn put_secrets(conn: &Connection, s: &Secrets) -> rusqlite::Result<()> {
    let mut put = conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = ?2",
    )?;
    put.execute(params!["udp_secret", &s.current[..]])?;
    match &s.previous {
        Some(p) => {
            put.execute(params!["udp_secret_previous", &p[..]])?;
        }
        None => {
            conn.execute("DELETE FROM meta WHERE key = 'udp_secret_previous'", [])?;
        }
    }
    put.execute(params![
        "udp_secret_rotated_at",
        &s.rotated_at.to_be_bytes()[..]
    ])?;
    Ok(())
}

/// Stores the secrets (at start, before the writer owns the connection).
pub fn save_secrets(conn: &mut Connection, s: &Secrets) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    put_secrets(&tx, s)?;
    tx.commit()
}

/// Peer rows upserted by one multi-row statement (fewer statement steps a
/// row; SQLite allows 32,766 parameters, 5 a row).
pub const UPSERT_ROWS_PER_STATEMENT: usize = 64;

fn upsert_sql(rows: usize) -> String {
    let mut sql =
        String::from("INSERT INTO peers (info_hash, ip, port, seeder, last_seen) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?)");
    }
    // Rows of one statement are applied in order: a later one for the same
    // key updates the earlier.
    sql.push_str(
        " ON CONFLICT (info_hash, ip, port) DO UPDATE SET \
         seeder = excluded.seeder, last_seen = excluded.last_seen",
    );
    sql
}

/// Upserts `rows` (at most [`UPSERT_ROWS_PER_STATEMENT`]) with one statement.
fn upsert(tx: &rusqlite::Transaction<'_>, rows: &[(InfoHash, Peer)]) -> rusqlite::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut st = tx.prepare_cached(&upsert_sql(rows.len()))?;
    for (i, (ih, p)) in rows.iter().enumerate() {
        let at = i * 5;
        st.raw_bind_parameter(at + 1, &ih.as_bytes()[..])?;
        st.raw_bind_parameter(at + 2, ip_bytes(&p.addr.ip()))?;
        st.raw_bind_parameter(at + 3, p.addr.port())?;
        st.raw_bind_parameter(at + 4, p.seeder)?;
        st.raw_bind_parameter(at + 5, i64::try_from(p.last_seen).unwrap_or(i64::MAX))?;
    }
    st.raw_execute()?;
    Ok(())
}

/// Writes one batch in one transaction, its changes in order: runs of
/// upserts [`UPSERT_ROWS_PER_STATEMENT`] rows a statement, a delete alone.
pub fn write(conn: &mut Connection, b: &Batch) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut run: Vec<(InfoHash, Peer)> = Vec::with_capacity(UPSERT_ROWS_PER_STATEMENT);
        for c in &b.peers {
            match c.peer() {
                Some(p) => {
                    run.push((c.info_hash, p));
                    if run.len() == UPSERT_ROWS_PER_STATEMENT {
                        upsert(&tx, &run)?;
                        run.clear();
                    }
                }
                None => {
                    upsert(&tx, &run)?;
                    run.clear();
                    let mut del = tx.prepare_cached(
                        "DELETE FROM peers WHERE info_hash = ?1 AND ip = ?2 AND port = ?3",
                    )?;
                    let a = c.addr();
                    del.execute(params![
                        &c.info_hash.as_bytes()[..],
                        ip_bytes(&a.ip()),
                        a.port()
                    ])?;
                }
            }
        }
        upsert(&tx, &run)?;
        let mut t = tx.prepare_cached(
            "INSERT INTO torrents (info_hash, completed) VALUES (?1, ?2)
             ON CONFLICT (info_hash) DO UPDATE SET completed = ?2",
        )?;
        for (ih, c) in &b.torrents {
            t.execute(params![&ih.as_bytes()[..], c])?;
        }
        if let Some(s) = &b.secrets {
            put_secrets(&tx, s)?;
        }
    }
    tx.commit()
}

/// Scheduling niceness of the writer thread: behind the UDP workers, yet
/// with ~10% of a contended core (CFS weight 110 against 1024), enough for
/// ~50k rows/s here; at 19 (~1.5%) it fell behind under a full load.
pub const WRITER_NICE: i32 = 10;

/// Upper bounds, in seconds, of the flush-latency histogram's buckets.
pub const FLUSH_BUCKETS: [f64; 8] = [0.001, 0.0025, 0.01, 0.025, 0.1, 0.25, 1.0, 5.0];

/// How long the writer's transactions take (a histogram over
/// [`FLUSH_BUCKETS`]), updated by the writer thread, read by `/metrics`.
#[derive(Debug, Default)]
pub struct FlushLatency {
    /// Count per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; FLUSH_BUCKETS.len() + 1],
    sum_us: AtomicU64,
    rows: AtomicU64,
    failed: AtomicU64,
}

/// A copy of [`FlushLatency`] for reporting.
#[derive(Clone, Debug, PartialEq)]
pub struct FlushSnapshot {
    /// Cumulative counts, one per bucket of [`FLUSH_BUCKETS`] then `+Inf`.
    pub cumulative: Vec<u64>,
    /// Total seconds spent writing.
    pub sum_secs: f64,
    /// Rows written.
    pub rows: u64,
    /// Batches that failed.
    pub failed: u64,
}

impl FlushLatency {
    /// Records one transaction of `rows` rows that took `d`.
    pub fn record(&self, d: std::time::Duration, rows: usize, ok: bool) {
        let secs = d.as_secs_f64();
        let i = FLUSH_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(FLUSH_BUCKETS.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        if ok {
            self.rows.fetch_add(rows as u64, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The current figures.
    pub fn snapshot(&self) -> FlushSnapshot {
        let mut acc = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Ordering::Relaxed);
                acc
            })
            .collect();
        FlushSnapshot {
            cumulative,
            sum_secs: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            rows: self.rows.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// Bytes the database takes on disk (the file and its WAL).
pub fn size_on_disk(db: &Path) -> u64 {
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    len(db) + len(Path::new(&wal))
}

/// The writer thread: writes each batch it receives, in order, until the
/// sender is dropped. A failed write is logged, never fatal (the in-memory
/// tracker keeps serving). [`Writer::busy`] lets the shell hold the next
/// batch back while one is being written: the swarm's dirty sets keep
/// coalescing meanwhile, so memory stays bounded when SQLite is slower than
/// the flush interval.
pub struct Writer {
    tx: Option<mpsc::Sender<Batch>>,
    thread: Option<JoinHandle<()>>,
    in_flight: Arc<AtomicUsize>,
    latency: Arc<FlushLatency>,
}

impl Writer {
    /// Starts the thread; `on_error` is called for each failed batch.
    pub fn spawn(mut conn: Connection, on_error: impl Fn(&str) + Send + 'static) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Batch>();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let done = in_flight.clone();
        let latency = Arc::new(FlushLatency::default());
        let lat = latency.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                // Behind the hot path on a busy core too: the UDP workers
                // get the CPU first; changes queue in the swarm meanwhile.
                let _ = rustix::process::setpriority_process(
                    Some(rustix::thread::gettid()),
                    WRITER_NICE,
                );
                for mut b in rx {
                    b.sort();
                    let start = std::time::Instant::now();
                    let result = write(&mut conn, &b);
                    let rows = b.rows();
                    lat.record(start.elapsed(), rows, result.is_ok());
                    if let Err(e) = result {
                        on_error(&e.to_string());
                    }
                    done.fetch_sub(1, Ordering::AcqRel);
                }
                // Fold the WAL back into the main file on a clean stop.
                let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
            })?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            in_flight,
            latency,
        })
    }

    /// The flush-latency figures this writer keeps.
    pub fn latency(&self) -> Arc<FlushLatency> {
        self.latency.clone()
    }

    /// True while a batch is queued or being written.
    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Queues a batch (ignored if empty).
    pub fn send(&self, b: Batch) {
        if !b.is_empty() {
            if let Some(tx) = &self.tx {
                self.in_flight.fetch_add(1, Ordering::AcqRel);
                if tx.send(b).is_err() {
                    self.in_flight.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// Waits for every queued batch to be written.
    pub fn finish(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::swarm::{Announce, Limits, PeerChange, TIME_BASE_SECS};
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
        let ports: Vec<i64> = conn
            .prepare("SELECT port FROM peers")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(ports, vec![1]);
        // More rows than one statement takes, the same row twice in one
        // statement (a seeder flip: the later state wins), at the edges.
        for n in [
            UPSERT_ROWS_PER_STATEMENT - 1,
            UPSERT_ROWS_PER_STATEMENT,
            150,
        ] {
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
            let q = format!(
                "SELECT count(*), sum(seeder) FROM peers WHERE info_hash = x'{}'",
                format!("{:02x}", n as u8).repeat(20)
            );
            let got: (i64, i64) = conn
                .query_row(&q, [], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap();
            assert_eq!(got, (n as i64, 1), "{n} rows");
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
}
