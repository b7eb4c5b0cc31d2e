//! The loader: at start, the checkpoint (blob chunks, or the relational
//! `peers` / `torrents` tables of a database from before them) is loaded
//! into the shards and the journal replayed from the checkpoint's
//! sequence number, in order; also [`read_state`], the same for tools and
//! tests.
//!
//! Limits: the swarms' own limits apply (an entry over one is skipped and
//! counted); a chunk or row that does not decode keeps the records before
//! the error and is reported, and loading goes on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use anyhow::{Context, Result};
use ourtorrent_core::id::InfoHash;
use ourtorrent_core::tracker::journal::{JournalError, Record, Records};
use rusqlite::Connection;

use super::meta::checkpoint_seq;
use crate::tracker::swarm::{shard_of, Peer, Swarms};

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

/// True if `conn` has a table `name`.
pub(super) fn has_table(conn: &Connection, name: &str) -> Result<bool> {
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
/// than `slack_ms` (the swarm's last-seen period, see [`crate::tracker::swarm`]),
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
    pub fn of<'a>(shards: impl IntoIterator<Item = &'a Swarms>) -> Self {
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
    let limits = crate::tracker::swarm::Limits {
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
