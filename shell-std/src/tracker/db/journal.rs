//! The journal writer: a [`Batch`] of logged changes is encoded as
//! journal records (`ourtorrent_core::tracker::journal`, absolute values)
//! in blobs of at most [`MAX_BLOB_LEN`] bytes and appended to the
//! `journal` table in one transaction. The encoder is shared with the
//! checkpoint, whose chunks are journal blobs too.
//!
//! Limits: a blob holds whole records only; a record that does not encode
//! (never: the buffer fits the longest) is dropped.

use anyhow::Result;
use ourtorrent_core::tracker::journal::{self, Record, MAX_BLOB_LEN, MAX_RECORD_LEN};
use rusqlite::{params, Connection, OptionalExtension};

use super::meta::{checkpoint_seq, put_secrets};
use crate::tracker::swarm::{Batch, PeerChange};

/// The journal record of a logged peer change.
pub(super) fn record_of(c: &PeerChange) -> Record {
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
pub(super) fn encode_records<E>(
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
pub(super) fn next_seq(conn: &Connection) -> Result<i64> {
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
