//! The checkpoint: the swarms copied part by part ([`Parts`]: each shard
//! from the end of its torrent slab down, at most about
//! [`CHECKPOINT_PART_PEERS`] peers a part, the shard locked only for the
//! part's copy, so a UDP worker never waits long on it) into chunks of `checkpoint_next`, each at most
//! [`CHECKPOINT_CHUNK_LEN`] bytes in the journal's format and written in a
//! transaction of its own, then swapped in with the journal truncation in
//! one last transaction. See the [`db`](super) docs for why
//! the fuzzy copy plus the journal from its start gives the exact state.
//!
//! Limits: one part's copy is held in memory at a time; a crash before
//! the swap leaves `checkpoint_next`, dropped at the next start.

use anyhow::Result;
use ourtorrent_core::id::InfoHash;
use ourtorrent_core::tracker::journal::{Record, MAX_BLOB_LEN};
use rusqlite::{params, Connection};

use super::journal::{encode_records, next_seq, record_of, write, Appended};
use crate::tracker::swarm::{Batch, PeerChange, Swarms};

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

/// Peers one checkpoint part copies at most, beyond its first torrent:
/// about 2 ms of a shard's lock at the ~0.1 µs a peer measured (a whole
/// 2M-peer shard held it ~0.2 s).
pub const CHECKPOINT_PART_PEERS: usize = 16_384;

/// Where a checkpoint's copy resumes: the shard, and the slab index below
/// which its torrents are still to copy (none: the shard's whole slab).
///
/// Each shard is copied from the end of its slab down. Expiry removes a
/// torrent by moving the slab's last one into its place, and new torrents
/// are appended: so a torrent that moves comes from the copied top (or was
/// created after the checkpoint began, and its records are all in the
/// journal after the checkpoint's start) and lands either in the copied
/// top or below the cursor, where it is copied again (harmless: records
/// are absolute values). A torrent below the cursor never moves above it,
/// so none is missed.
#[derive(Debug)]
pub struct Parts {
    shard: usize,
    below: Option<usize>,
    budget: usize,
}

impl Parts {
    /// From shard 0, at most `budget` peers a part (beyond its first
    /// torrent).
    pub fn new(budget: usize) -> Self {
        Parts {
            shard: 0,
            below: None,
            budget,
        }
    }

    /// The next part: locks the shard through `lock` (none past the last
    /// shard: the copy is complete), drains its change log and copies
    /// torrents down from the cursor; then moves the cursor on.
    pub fn next<G: std::ops::DerefMut<Target = Swarms>>(
        &mut self,
        mut lock: impl FnMut(usize) -> Option<G>,
    ) -> Option<ShardCopy> {
        let mut s = lock(self.shard)?;
        let end = self
            .below
            .map_or(s.torrent_count(), |b| b.min(s.torrent_count()));
        let mut c = ShardCopy {
            batch: s.take_batch(),
            ..Default::default()
        };
        let start = s.copy_out_down(end, self.budget, &mut c.torrents, &mut c.peers);
        drop(s);
        if start == 0 {
            self.shard += 1;
            self.below = None;
        } else {
            self.below = Some(start);
        }
        Some(c)
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

/// Takes a checkpoint (see the [`db`](super) docs). `shard(i)` gives the
/// `i`-th part, drained and copied under its shard's lock (the writer
/// uses [`Parts`]; a whole shard, [`ShardCopy::take`], is a part too),
/// `None` past the last. `step` is told each step done, with the connection: the writer appends
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
