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
//! [`SHUTDOWN_CHECKPOINT_MAX_PEERS`]), [`checkpoint()`] notes the next
//! journal sequence number `L`, then part by part ([`Parts`]: a shard's
//! torrents from the end of its slab down, about [`CHECKPOINT_PART_PEERS`]
//! peers a part) drains the shard's log into the journal and copies the
//! part out under the shard's lock (a few ms at most), encodes the
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
//!
//! # Modules
//! - `meta`: the `meta` table (`checkpoint_seq`, the connection-id
//!   secrets);
//! - `journal`: encoding a batch as journal records and appending it;
//! - `checkpoint`: the chunked, fuzzy checkpoint and its swap;
//! - `loader`: loading the checkpoint and replaying the journal at start;
//! - `writer`: the writer thread, its checkpoint policy and its figures.
//!
//! [`Batch`]: super::swarm::Batch
//! [`MAX_BLOB_LEN`]: ourtorrent_core::tracker::journal::MAX_BLOB_LEN

use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::Connection;

mod checkpoint;
mod journal;
mod loader;
mod meta;
mod writer;

pub use checkpoint::{
    checkpoint, CheckpointDone, Parts, ShardCopy, Step, CHECKPOINT_CHUNK_LEN,
    CHECKPOINT_PART_PEERS, DEFAULT_CHECKPOINT_RECORDS, SHUTDOWN_CHECKPOINT_MAX_PEERS,
};
pub use journal::{encode_batch, write, Appended};
pub use loader::{load, read_state, read_state_at, Loaded, StoredState};
pub use meta::{checkpoint_seq, load_secrets, save_secrets, Secrets};
pub use writer::{
    size_on_disk, CheckpointPolicy, FlushLatency, FlushSnapshot, JournalStats, Writer,
    FLUSH_BUCKETS, WRITER_NICE,
};

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

#[cfg(test)]
mod tests;
