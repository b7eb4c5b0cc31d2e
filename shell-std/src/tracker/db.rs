//! SQLite persistence (rusqlite, bundled SQLite, WAL): a journal of
//! changes plus a fuzzy checkpoint of the swarms, written behind the hot
//! path.
//!
//! The swarm logs what changed; every flush interval the shell drains that
//! into a [`Batch`] and hands it to the writer thread, which encodes it as
//! journal records (`ourtorrent_core::tracker::journal`: absolute values)
//! and appends them as one row (or a few, each at most
//! [`MAX_BLOB_LEN`] bytes) to `journal`, in one transaction: no per-peer
//! B-tree work on the flush path. A `kill -9` therefore loses at most the
//! changes of one flush interval (plus the batch in flight); WAL with
//! `synchronous=NORMAL` keeps every committed transaction across a process
//! crash.
//!
//! # Checkpoint
//! The `checkpoint` table holds the state as of the last checkpoint, as
//! chunks in the journal's own format: each body is a journal blob (the
//! version byte, then one `PeerSet` record per peer and one `Completed`
//! record per torrent with a count, in no particular order), at most
//! [`CHECKPOINT_CHUNK_LEN`] bytes. When the records since it reach the
//! larger of [`DEFAULT_CHECKPOINT_RECORDS`] (or `--checkpoint-records`)
//! and the peer count, and at a clean stop (up to
//! [`SHUTDOWN_CHECKPOINT_MAX_PEERS`]), [`checkpoint`] notes the next
//! journal sequence number `L`, then shard by shard drains the shard's log
//! into the journal and copies its swarms out under its lock, encodes the
//! copy into chunks of `checkpoint_next` (one transaction each; the writer
//! appends the journal in between), and in one last transaction swaps
//! `checkpoint_next` in, deletes the journal rows before `L` and stores
//! `L` as `checkpoint_seq` in `meta`. The copy is taken while announces go
//! on (fuzzy), but every change after `L` is in the journal as an absolute
//! value, so loading the checkpoint and replaying the journal from `L` in
//! order gives the exact state. A crash mid-checkpoint leaves
//! `checkpoint_next`, dropped at the next start. A chunk that does not
//! decode keeps the records before the error and is reported with its
//! chunk number and offset ([`Loaded::bad_chunks`]); the start goes on.
//!
//! A database from before the blob checkpoint has relational `peers` and
//! `torrents` tables instead (`ip` 4 or 16 bytes, `last_seen` in ms since
//! the Unix epoch): they load as its checkpoint and are dropped by the swap
//! of the first new one.
//!
//! Schema:
//! ```sql
//! checkpoint(chunk INTEGER PRIMARY KEY, body BLOB NOT NULL)
//! journal(seq INTEGER PRIMARY KEY, body BLOB NOT NULL)
//! ```
//! The stored state is read with [`read_state_at`] (what a start would
//! load); a running tracker shows its figures in `/stats` `db.*`.
//!
//! ```sql
//! meta(key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID
//! ```
//! holds `checkpoint_seq` and the BEP 15 connection-id secrets
//! ([`Secrets`]: `udp_secret`, `udp_secret_previous`,
//! `udp_secret_rotated_at`), so ids handed out before a restart stay valid
//! after it. Whoever can read the file can mint ids for any address until
//! the next rotation: keep it private (as the tracker does its peers'
//! addresses).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use ourtorrent_core::id::InfoHash;
use ourtorrent_core::tracker::journal::{
    self, JournalError, Record, Records, MAX_BLOB_LEN, MAX_RECORD_LEN,
};
use rusqlite::{params, Connection, OptionalExtension};

use ourtorrent_core::tracker::udp::server::SECRET_LEN;

use super::swarm::{shard_of, Batch, Peer, PeerChange, Swarms};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoint (
    chunk INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
DROP TABLE IF EXISTS checkpoint_next;
DROP TABLE IF EXISTS peers_next;
DROP TABLE IF EXISTS torrents_next;
";

/// The checkpoint table as built by [`checkpoint`] (the schema of
/// `checkpoint`, under the `_next` name).
const SCHEMA_NEXT: &str = "
DROP TABLE IF EXISTS checkpoint_next;
CREATE TABLE checkpoint_next (
    chunk INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
";

/// Swaps a complete `checkpoint_next` in (with the journal truncation and
/// `checkpoint_seq`, in the same transaction); drops the relational
/// checkpoint of a database from before the blob checkpoint, if any.
const SWAP: &str = "
DROP TABLE IF EXISTS checkpoint;
ALTER TABLE checkpoint_next RENAME TO checkpoint;
DROP TABLE IF EXISTS peers;
DROP TABLE IF EXISTS torrents;
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
#[derive(Debug, Default, Clone)]
pub struct Loaded {
    /// Torrents with a completed count (in the checkpoint).
    pub torrents: usize,
    /// Peers loaded (still fresh, after the journal).
    pub peers: usize,
    /// Checkpoint entries and journal peer records skipped (expired,
    /// malformed or over a limit).
    pub skipped: usize,
    /// Checkpoint chunks read.
    pub checkpoint_chunks: u64,
    /// Checkpoint chunks that did not decode to the end: (chunk, error).
    /// The records before the error were loaded.
    pub bad_chunks: Vec<(i64, JournalError)>,
    /// Journal rows read (since the checkpoint).
    pub journal_rows: u64,
    /// Journal records replayed.
    pub replayed: u64,
    /// Journal rows that did not decode to the end: (seq, error). The
    /// records before the error were replayed.
    pub bad_rows: Vec<(i64, JournalError)>,
}

/// A stored `meta` integer (8 bytes big-endian), if present and well formed.
fn meta_u64(conn: &Connection, key: &str) -> Result<Option<u64>> {
    Ok(meta_get(conn, key)?
        .and_then(|v| <[u8; 8]>::try_from(v).ok())
        .map(u64::from_be_bytes))
}

/// The journal sequence number the last checkpoint started at (0 if none).
pub fn checkpoint_seq(conn: &Connection) -> Result<i64> {
    Ok(meta_u64(conn, "checkpoint_seq")?
        .and_then(|v| i64::try_from(v).ok())
        .unwrap_or(0))
}

/// True if `conn` has a table `name`.
fn has_table(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )? > 0)
}

/// Applies one stored record (checkpoint or journal) to `shards`, as the
/// absolute state it is; `seen` maps a stored last-seen (ms) to the time
/// restored, and a peer restored before `cutoff` is dropped.
fn apply(
    shards: &mut [Swarms],
    rec: Record,
    cutoff: u64,
    seen: impl Fn(u64) -> u64,
    out: &mut Loaded,
) {
    let n = shards.len();
    match rec {
        Record::PeerSet {
            info_hash,
            addr,
            seeder,
            last_seen,
        } => {
            let Some(s) = shards.get_mut(shard_of(&info_hash, n)) else {
                return;
            };
            let last_seen = seen(u64::from(last_seen) * 1000);
            if last_seen >= cutoff {
                let p = Peer {
                    addr,
                    last_seen,
                    seeder,
                };
                if !s.replay_peer(info_hash, p) {
                    out.skipped += 1;
                }
            } else {
                s.replay_remove(info_hash, addr);
                out.skipped += 1;
            }
        }
        Record::PeerRemoved { info_hash, addr } => {
            if let Some(s) = shards.get_mut(shard_of(&info_hash, n)) {
                s.replay_remove(info_hash, addr);
            }
        }
        Record::Completed { info_hash, count } => {
            if let Some(s) = shards.get_mut(shard_of(&info_hash, n)) {
                s.load_torrent(info_hash, count);
            }
        }
    }
}

/// Loads the relational checkpoint of a database from before the blob
/// checkpoint (`torrents` and `peers` rows; `last_seen` in ms), if it has
/// one.
fn load_relational(
    conn: &Connection,
    shards: &mut [Swarms],
    cutoff: u64,
    seen: impl Fn(u64) -> u64,
    out: &mut Loaded,
) -> Result<()> {
    let n = shards.len();
    if has_table(conn, "torrents")? {
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
    }
    if !has_table(conn, "peers")? {
        return Ok(());
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
        let last_seen = seen(u64::try_from(last_seen).unwrap_or(0));
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
    Ok(())
}

/// Loads the checkpoint into `shards` (each torrent into its
/// [`shard_of`]), then replays the journal from the checkpoint's sequence
/// number in order. A stored last-seen time trails the real one by less
/// than `slack_ms` (the swarm's last-seen period, see [`super::swarm`]),
/// so a peer is restored as seen at `stored + slack_ms` (never after
/// `now_ms`) and kept if that is at or after `cutoff` (ms): a restart
/// never expires a live peer early. A checkpoint chunk or journal row that
/// does not decode keeps the records before the error and is reported in
/// [`Loaded::bad_chunks`] / [`Loaded::bad_rows`]; loading goes on with the
/// next one. A database from before the blob checkpoint (`peers` and
/// `torrents` tables) loads those as its checkpoint.
pub fn load(
    conn: &Connection,
    shards: &mut [Swarms],
    cutoff: u64,
    slack_ms: u64,
    now_ms: u64,
) -> Result<Loaded> {
    let mut out = Loaded::default();
    let seen = |stored_ms: u64| stored_ms.saturating_add(slack_ms).min(now_ms);
    load_relational(conn, shards, cutoff, seen, &mut out)?;
    // The checkpoint: each (torrent, peer) appears once, in any order.
    if has_table(conn, "checkpoint")? {
        let mut st = conn.prepare("SELECT chunk, body FROM checkpoint ORDER BY chunk")?;
        let mut rows = st.query([])?;
        while let Some(row) = rows.next()? {
            let chunk: i64 = row.get(0)?;
            let body = row.get_ref(1)?.as_bytes().unwrap_or_default();
            out.checkpoint_chunks += 1;
            for rec in Records::new(body) {
                match rec {
                    Ok(r) => {
                        out.torrents += usize::from(matches!(r, Record::Completed { .. }));
                        apply(shards, r, cutoff, seen, &mut out);
                    }
                    Err(e) => {
                        out.bad_chunks.push((chunk, e));
                        break;
                    }
                }
            }
        }
    }
    // The journal since the checkpoint, in order: each record is the
    // absolute state of its row, so the last one of a row wins.
    if has_table(conn, "journal")? {
        let mut st = conn.prepare("SELECT seq, body FROM journal WHERE seq >= ?1 ORDER BY seq")?;
        let mut rows = st.query([checkpoint_seq(conn)?])?;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let body = row.get_ref(1)?.as_bytes().unwrap_or_default();
            out.journal_rows += 1;
            for rec in Records::new(body) {
                match rec {
                    Ok(r) => {
                        out.replayed += 1;
                        apply(shards, r, cutoff, seen, &mut out);
                    }
                    Err(e) => {
                        out.bad_rows.push((seq, e));
                        break;
                    }
                }
            }
        }
    }
    out.peers = shards.iter().map(Swarms::peer_count).sum();
    Ok(out)
}

/// The swarms a database holds, as a start would load them (checkpoint
/// plus journal; nothing expired): for tools and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StoredState {
    /// Completed count of every torrent with one.
    pub torrents: std::collections::BTreeMap<InfoHash, u32>,
    /// Every peer: (seeder, last seen in ms since the Unix epoch).
    pub peers: std::collections::BTreeMap<(InfoHash, SocketAddr), (bool, u64)>,
    /// Journal rows that did not decode.
    pub bad_rows: usize,
}

impl StoredState {
    /// The state of `shards` (as [`read_state`] gives it).
    pub fn of(shards: &[Swarms]) -> Self {
        let mut out = StoredState::default();
        for s in shards {
            let (mut t, mut p) = (Vec::new(), Vec::new());
            s.copy_out(&mut t, &mut p);
            out.torrents.extend(t);
            out.peers.extend(p.iter().filter_map(|c| {
                c.peer()
                    .map(|x| ((c.info_hash, x.addr), (x.seeder, x.last_seen)))
            }));
        }
        out
    }
}

/// Reads the state stored in `conn` (see [`StoredState`]).
pub fn read_state(conn: &Connection) -> Result<StoredState> {
    let limits = super::swarm::Limits {
        max_torrents: usize::MAX,
        max_peers_per_torrent: usize::MAX,
    };
    let mut shards = [Swarms::new(limits, 1000)];
    let l = load(conn, &mut shards, 0, 0, u64::MAX)?;
    let mut out = StoredState::of(&shards);
    out.bad_rows = l.bad_rows.len();
    Ok(out)
}

/// Reads the state stored in the database at `path`, opened read-only (a
/// running tracker may go on writing).
pub fn read_state_at(path: &Path) -> Result<StoredState> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("open {}", path.display()))?;
    read_state(&conn)
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

/// The journal record of a logged peer change.
fn record_of(c: &PeerChange) -> Record {
    match c.peer() {
        Some(p) => Record::PeerSet {
            info_hash: c.info_hash,
            addr: p.addr,
            seeder: p.seeder,
            last_seen: u32::try_from(p.last_seen / 1000).unwrap_or(u32::MAX),
        },
        None => Record::PeerRemoved {
            info_hash: c.info_hash,
            addr: c.addr(),
        },
    }
}

/// Encodes `records` as blobs of at most `max_len` bytes (a version byte,
/// then whole records, in order), handing each full one to `emit`, which
/// may stop the encoding by returning `false`. `hint` is the expected
/// record count (for the first blob's capacity). Returns the records
/// encoded, or `None` if `emit` stopped it.
fn encode_records<E>(
    records: impl Iterator<Item = Record>,
    hint: usize,
    max_len: usize,
    mut emit: impl FnMut(Vec<u8>) -> Result<bool, E>,
) -> Result<Option<u64>, E> {
    let mut cur: Vec<u8> = Vec::new();
    let mut count = 0u64;
    let mut buf = [0u8; MAX_RECORD_LEN];
    for rec in records {
        let Ok(n) = rec.encode(&mut buf) else {
            continue; // never: the buffer fits the longest record
        };
        if !cur.is_empty() && cur.len() + n > max_len && !emit(std::mem::take(&mut cur))? {
            return Ok(None);
        }
        if cur.is_empty() {
            cur.reserve((hint * 32).min(max_len) + 1);
            cur.push(journal::VERSION);
        }
        cur.extend_from_slice(buf.get(..n).unwrap_or_default());
        count += 1;
    }
    if !cur.is_empty() && !emit(cur)? {
        return Ok(None);
    }
    Ok(Some(count))
}

/// Encodes a batch as journal blobs of at most [`MAX_BLOB_LEN`] bytes,
/// its changes in order (peer changes, then completed counts: they touch
/// different rows). Returns the blobs and the number of records.
pub fn encode_batch(b: &Batch) -> (Vec<Vec<u8>>, u64) {
    let mut blobs = Vec::new();
    let torrents = b.torrents.iter().map(|(ih, count)| Record::Completed {
        info_hash: *ih,
        count: *count,
    });
    let records = b.peers.iter().map(record_of).chain(torrents);
    let r: Result<_, std::convert::Infallible> =
        encode_records(records, b.rows(), MAX_BLOB_LEN, |blob| {
            blobs.push(blob);
            Ok(true)
        });
    let n = match r {
        Ok(n) => n.unwrap_or(0),
        Err(e) => match e {},
    };
    (blobs, n)
}

/// What one [`write()`] appended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Journal rows.
    pub rows: u64,
    /// Bytes of their bodies.
    pub bytes: u64,
    /// Records in them.
    pub records: u64,
}

/// The sequence number the next journal row gets: after the last row and
/// never before the checkpoint's (rows before it are deleted, and SQLite
/// would otherwise reuse their numbers).
fn next_seq(conn: &Connection) -> Result<i64> {
    let last: Option<i64> = conn
        .query_row("SELECT max(seq) FROM journal", [], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(last
        .map_or(0, |l| l.saturating_add(1))
        .max(checkpoint_seq(conn)?))
}

/// Appends one batch to the journal in one transaction (its secrets, if
/// any, to `meta`).
pub fn write(conn: &mut Connection, b: &Batch) -> Result<Appended> {
    let (blobs, records) = encode_batch(b);
    let mut out = Appended {
        records,
        ..Default::default()
    };
    let tx = conn.transaction()?;
    {
        let first = next_seq(&tx)?;
        let mut put = tx.prepare_cached("INSERT INTO journal (seq, body) VALUES (?1, ?2)")?;
        for (seq, blob) in (first..).zip(&blobs) {
            put.execute(params![seq, blob])?;
            out.rows += 1;
            out.bytes += blob.len() as u64;
        }
        if let Some(s) = &b.secrets {
            put_secrets(&tx, s)?;
        }
    }
    tx.commit()?;
    Ok(out)
}

/// Bytes of one checkpoint chunk at most (~32k IPv4 peers; written in a
/// transaction of its own, and between two the writer appends the journal
/// if a flush interval has passed). Within [`MAX_BLOB_LEN`], so a chunk
/// decodes as a journal blob.
pub const CHECKPOINT_CHUNK_LEN: usize = 1 << 20;
const _: () = assert!(CHECKPOINT_CHUNK_LEN <= MAX_BLOB_LEN);

/// Records since the last checkpoint that start a new one, at least (and
/// at least the peer count, so the journal stays within about the size of
/// the state): `--checkpoint-records`.
pub const DEFAULT_CHECKPOINT_RECORDS: u64 = 1_000_000;

/// At a clean stop a checkpoint is taken if there is a journal since the
/// last one and at most this many peers (~1 s of SQLite here per million);
/// beyond, the next start replays the journal instead.
pub const SHUTDOWN_CHECKPOINT_MAX_PEERS: usize = 4_000_000;

/// One shard's part of a checkpoint, taken under its lock: the changes
/// logged so far (for the journal) and a copy of its torrents with a
/// completed count and of its peers.
#[derive(Debug, Default)]
pub struct ShardCopy {
    /// The shard's drained change log.
    pub batch: Batch,
    /// (info-hash, completed) of every torrent with a count.
    pub torrents: Vec<(InfoHash, u32)>,
    /// Every peer (as present changes).
    pub peers: Vec<PeerChange>,
}

impl ShardCopy {
    /// Drains `s`'s log and copies its swarms.
    pub fn take(s: &mut Swarms) -> Self {
        let mut c = ShardCopy {
            batch: s.take_batch(),
            ..Default::default()
        };
        s.copy_out(&mut c.torrents, &mut c.peers);
        c
    }
}

/// The steps of a [`checkpoint`], as reported to its `step` callback
/// (which may stop it there: tests simulate a crash that way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `checkpoint_next` created.
    Created,
    /// Shard `i` copied and its log appended to the journal (this much).
    Copied(usize, Appended),
    /// A checkpoint chunk written (its own transaction).
    Chunk,
    /// Swapped in (the checkpoint is complete).
    Swapped,
}

/// What one [`checkpoint`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointDone {
    /// Peers written.
    pub peers: u64,
    /// Torrents written.
    pub torrents: u64,
    /// Chunks written.
    pub chunks: u64,
    /// Bytes of their bodies.
    pub bytes: u64,
    /// Journal appended on the way (the shards' logs).
    pub appended: Appended,
    /// The journal sequence number it started at.
    pub seq: i64,
}

/// Takes a checkpoint (see the module docs). `shard(i)` drains and copies
/// shard `i` ([`ShardCopy::take`] under its lock), `None` past the last.
/// `step` is told each step done, with the connection: the writer appends
/// the journal there as usual (a checkpoint takes seconds at millions of
/// peers; the flush interval stays the loss bound), and tests may return
/// `false` to stop there (the tables are then as a crash at that point
/// leaves them); the result is `None` then.
pub fn checkpoint(
    conn: &mut Connection,
    mut shard: impl FnMut(usize) -> Option<ShardCopy>,
    mut step: impl FnMut(&mut Connection, Step) -> Result<bool>,
) -> Result<Option<CheckpointDone>> {
    let mut done = CheckpointDone {
        seq: next_seq(conn)?,
        ..Default::default()
    };
    conn.execute_batch(SCHEMA_NEXT)?;
    if !step(conn, Step::Created)? {
        return Ok(None);
    }
    let mut i = 0;
    while let Some(mut copy) = shard(i) {
        let a = write(conn, &copy.batch)?;
        done.appended.rows += a.rows;
        done.appended.bytes += a.bytes;
        done.appended.records += a.records;
        drop(std::mem::take(&mut copy.batch));
        if !step(conn, Step::Copied(i, a))? {
            return Ok(None);
        }
        i += 1;
        // No order needed: the loader rebuilds hash maps.
        let peers = copy.peers.iter().map(record_of);
        let torrents = copy.torrents.iter().map(|(ih, count)| Record::Completed {
            info_hash: *ih,
            count: *count,
        });
        let hint = copy.peers.len() + copy.torrents.len();
        let wrote = encode_records(
            peers.chain(torrents),
            hint,
            CHECKPOINT_CHUNK_LEN,
            |blob| -> Result<bool> {
                conn.execute(
                    "INSERT INTO checkpoint_next (chunk, body) VALUES (?1, ?2)",
                    params![i64::try_from(done.chunks).unwrap_or(i64::MAX), blob],
                )?;
                done.chunks += 1;
                done.bytes += blob.len() as u64;
                step(conn, Step::Chunk)
            },
        )?;
        if wrote.is_none() {
            return Ok(None);
        }
        done.peers += copy.peers.len() as u64;
        done.torrents += copy.torrents.len() as u64;
    }
    let tx = conn.transaction()?;
    tx.execute_batch(SWAP)?;
    tx.execute("DELETE FROM journal WHERE seq < ?1", [done.seq])?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('checkpoint_seq', ?1)
         ON CONFLICT (key) DO UPDATE SET value = ?1",
        [&u64::try_from(done.seq).unwrap_or(0).to_be_bytes()[..]],
    )?;
    tx.commit()?;
    step(conn, Step::Swapped)?;
    Ok(Some(done))
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

/// Journal and checkpoint figures, updated by the writer thread (and the
/// loader at start), read by `/stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct JournalStats {
    /// Journal rows appended.
    pub rows: AtomicU64,
    /// Bytes of their bodies.
    pub bytes: AtomicU64,
    /// Records in them.
    pub records: AtomicU64,
    /// Checkpoints completed.
    pub checkpoints: AtomicU64,
    /// Checkpoints that failed.
    pub checkpoint_failures: AtomicU64,
    /// Duration of the last checkpoint, microseconds.
    pub last_checkpoint_us: AtomicU64,
    /// Peers in the last checkpoint.
    pub last_checkpoint_peers: AtomicU64,
    /// Longest a shard was locked for a copy in the last checkpoint, µs.
    pub last_checkpoint_lock_us: AtomicU64,
    /// Records replayed at start.
    pub replayed: AtomicU64,
    /// Journal rows that did not decode at start.
    pub bad_rows: AtomicU64,
    /// Checkpoint chunks that did not decode at start.
    pub bad_chunks: AtomicU64,
    /// Records appended since the last checkpoint.
    pub since_checkpoint: AtomicU64,
}

impl JournalStats {
    fn add(&self, a: &Appended) {
        self.rows.fetch_add(a.rows, Ordering::Relaxed);
        self.bytes.fetch_add(a.bytes, Ordering::Relaxed);
        self.records.fetch_add(a.records, Ordering::Relaxed);
        self.since_checkpoint
            .fetch_add(a.records, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// When the writer takes a checkpoint.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointPolicy {
    /// Records since the last checkpoint that start one, at least (see
    /// [`DEFAULT_CHECKPOINT_RECORDS`]); the peer count is the other bound.
    pub min_records: u64,
    /// The flush interval: during a checkpoint the writer appends the
    /// journal this often too.
    pub flush_every: std::time::Duration,
}

/// Takes a checkpoint of the live shards (each locked only to copy it).
fn checkpoint_shards(
    conn: &mut Connection,
    shards: &super::state::Shards,
    stats: &JournalStats,
    flush_every: std::time::Duration,
) -> Result<CheckpointDone> {
    let start = std::time::Instant::now();
    let mut appended_at = start;
    let mut lock_us = 0u64;
    let done = checkpoint(
        conn,
        |i| {
            let t = std::time::Instant::now();
            let c = shards.lock_index(i).map(|mut s| ShardCopy::take(&mut s));
            lock_us = lock_us.max(t.elapsed().as_micros() as u64);
            c
        },
        |conn, step| {
            match step {
                // The shards' logs are in the journal: count them at once.
                Step::Copied(_, a) => stats.add(&a),
                // Meanwhile the journal goes on as at every flush.
                Step::Chunk if appended_at.elapsed() >= flush_every => {
                    let mut b = Batch::default();
                    for i in 0..shards.len() {
                        if let Some(mut s) = shards.lock_index(i) {
                            let part = s.take_batch();
                            b.peers.extend(part.peers);
                            b.torrents.extend(part.torrents);
                        }
                    }
                    stats.add(&write(conn, &b)?);
                    appended_at = std::time::Instant::now();
                }
                _ => {}
            }
            Ok(true)
        },
    )?
    .context("checkpoint stopped")?;
    // Records appended during the checkpoint are in it.
    stats.since_checkpoint.store(0, Ordering::Relaxed);
    stats.checkpoints.fetch_add(1, Ordering::Relaxed);
    stats
        .last_checkpoint_us
        .store(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    stats
        .last_checkpoint_peers
        .store(done.peers, Ordering::Relaxed);
    stats
        .last_checkpoint_lock_us
        .store(lock_us, Ordering::Relaxed);
    Ok(done)
}

fn peer_count(shards: &super::state::Shards) -> usize {
    (0..shards.len())
        .filter_map(|i| shards.lock_index(i).map(|s| s.peer_count()))
        .sum()
}

/// The writer thread: appends each batch it receives to the journal, in
/// order, until the sender is dropped, and takes a checkpoint when the
/// journal since the last one is long enough (see the module docs) and at
/// a clean stop. A failed write is logged, never fatal (the in-memory
/// tracker keeps serving). [`Writer::busy`] lets the shell hold the next
/// batch back while one is being written or a checkpoint runs: the swarm's
/// change logs keep coalescing meanwhile, so memory stays bounded when
/// SQLite is slower than the flush interval.
pub struct Writer {
    tx: Option<mpsc::Sender<Batch>>,
    thread: Option<JoinHandle<()>>,
    in_flight: Arc<AtomicUsize>,
    latency: Arc<FlushLatency>,
    journal: Arc<JournalStats>,
}

impl Writer {
    /// Starts the thread over `shards` (for checkpoints); `stats` carries
    /// the loader's figures; `on_error` is called for each failure.
    pub fn spawn(
        mut conn: Connection,
        shards: Arc<super::state::Shards>,
        policy: CheckpointPolicy,
        stats: Arc<JournalStats>,
        on_error: impl Fn(&str) + Send + 'static,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Batch>();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let done = in_flight.clone();
        let latency = Arc::new(FlushLatency::default());
        let lat = latency.clone();
        let journal = stats.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                // Behind the hot path on a busy core too: the UDP workers
                // get the CPU first; changes queue in the swarm meanwhile.
                let _ = rustix::process::setpriority_process(
                    Some(rustix::thread::gettid()),
                    WRITER_NICE,
                );
                for b in rx {
                    let start = std::time::Instant::now();
                    let result = write(&mut conn, &b);
                    lat.record(start.elapsed(), b.rows(), result.is_ok());
                    match result {
                        Ok(a) => stats.add(&a),
                        Err(e) => on_error(&format!("journal append: {e:#}")),
                    }
                    let since = JournalStats::get(&stats.since_checkpoint);
                    if since >= policy.min_records.max(peer_count(&shards) as u64) {
                        if let Err(e) =
                            checkpoint_shards(&mut conn, &shards, &stats, policy.flush_every)
                        {
                            stats.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
                            // Retry after another threshold of records, not
                            // at every flush (each try copies every shard).
                            stats.since_checkpoint.store(0, Ordering::Relaxed);
                            on_error(&format!("checkpoint: {e:#}"));
                        }
                    }
                    done.fetch_sub(1, Ordering::AcqRel);
                }
                // A clean stop: fold the journal into a checkpoint if that
                // is cheap, then the WAL back into the main file.
                if JournalStats::get(&stats.since_checkpoint) > 0
                    && peer_count(&shards) <= SHUTDOWN_CHECKPOINT_MAX_PEERS
                {
                    if let Err(e) =
                        checkpoint_shards(&mut conn, &shards, &stats, policy.flush_every)
                    {
                        on_error(&format!("checkpoint at stop: {e:#}"));
                    }
                }
                let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
            })?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            in_flight,
            latency,
            journal,
        })
    }

    /// The flush-latency figures this writer keeps.
    pub fn latency(&self) -> Arc<FlushLatency> {
        self.latency.clone()
    }

    /// The journal and checkpoint figures.
    pub fn journal(&self) -> Arc<JournalStats> {
        self.journal.clone()
    }

    /// True while a batch is queued or being written (or a checkpoint
    /// runs).
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

    /// Waits for every queued batch to be written (and the checkpoint at
    /// stop).
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
                                let mut b = Batch::default();
                                for cell in &cells {
                                    let part = cell.borrow_mut().take_batch();
                                    b.peers.extend(part.peers);
                                    b.torrents.extend(part.torrents);
                                }
                                write(conn, &b)?;
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
                let mut flushed = Batch::default();
                for s in &mut shards {
                    let b = s.take_batch();
                    flushed.peers.extend(b.peers);
                    flushed.torrents.extend(b.torrents);
                }
                write(&mut conn, &flushed).unwrap();
                let got = read_state(&conn).unwrap();
                let want = StoredState::of(&shards);
                assert_eq!(got.torrents, want.torrents, "seed {seed} round {round}");
                // The journal keeps a re-announce's time only per period;
                // the rows and flags must match exactly.
                let strip =
                    |m: &std::collections::BTreeMap<(InfoHash, SocketAddr), (bool, u64)>| {
                        m.iter().map(|(k, v)| (*k, v.0)).collect::<Vec<_>>()
                    };
                assert_eq!(
                    strip(&got.peers),
                    strip(&want.peers),
                    "seed {seed} round {round}"
                );
                for (k, (_, seen)) in &got.peers {
                    let real = want.peers[k].1;
                    assert!(*seen <= real && real - seen < 1000 * 1000, "{k:?}");
                }
                assert_eq!(got.bad_rows, 0);
            }
            assert!(checkpoints > 0, "seed {seed}: no checkpoint completed");
        }
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
}
