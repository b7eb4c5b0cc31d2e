//! The daemon's state in SQLite (`STATE_DIR/state.db`, bundled SQLite in
//! WAL mode): its torrents (metainfo, folder, paused or running, direct
//! peers, byte counters), their fast-resume data and its settings.
//!
//! Fast resume is one row per torrent: the verified pieces as a bitfield
//! (BEP 3 order, high bit first) and each file's size and mtime when that
//! bitfield was taken ([`super::resume`] decides what to trust). Every
//! periodic save of all torrents is one transaction, so a `kill -9` loses
//! at most the progress since the last save and never leaves half a save.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension};

/// The file name of the state database inside `--state DIR`.
pub const DB_FILE: &str = "state.db";

/// One torrent as stored.
#[derive(Clone, Debug)]
pub struct Row {
    /// Its id in the API.
    pub id: i64,
    /// The `.torrent` bytes.
    pub metainfo: Vec<u8>,
    /// Where its data lives.
    pub root: PathBuf,
    /// Paused by the user.
    pub paused: bool,
    /// Peers given when it was added (`IP:PORT`).
    pub peers: Vec<String>,
    /// Payload bytes received and sent in earlier runs.
    pub downloaded: u64,
    /// See `downloaded`.
    pub uploaded: u64,
    /// Fast-resume data, if any was saved.
    pub resume: Option<Resume>,
}

/// A stored magnet waiting for its metadata: (id, uri, paused, peers).
pub type MagnetRow = (i64, String, bool, Vec<String>);

/// The fast-resume data of one torrent.
#[derive(Clone, Debug, PartialEq)]
pub struct Resume {
    /// Verified pieces, packed (BEP 3 bitfield order).
    pub have: Vec<u8>,
    /// Per file of the torrent: its size and mtime (ns since the epoch)
    /// when `have` was taken, `None` if it was not on disk.
    pub files: Vec<Option<(u64, i64)>>,
}

/// What one periodic save writes for one torrent.
pub struct Save {
    /// The torrent.
    pub id: i64,
    /// New fast-resume data (`None`: keep what is stored).
    pub resume: Option<Resume>,
    /// Byte counters, all runs together.
    pub downloaded: u64,
    /// See `downloaded`.
    pub uploaded: u64,
}

/// The open database.
pub struct Store {
    db: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS torrents(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    info_hash TEXT NOT NULL UNIQUE,
    metainfo BLOB NOT NULL,
    root TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    peers TEXT NOT NULL DEFAULT '',
    downloaded INTEGER NOT NULL DEFAULT 0,
    uploaded INTEGER NOT NULL DEFAULT 0,
    added_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS resume(
    torrent_id INTEGER PRIMARY KEY REFERENCES torrents(id) ON DELETE CASCADE,
    have BLOB NOT NULL,
    files TEXT NOT NULL,
    saved_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS priorities(
    torrent_id INTEGER PRIMARY KEY REFERENCES torrents(id) ON DELETE CASCADE,
    prios TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS limits(
    torrent_id INTEGER PRIMARY KEY REFERENCES torrents(id) ON DELETE CASCADE,
    down INTEGER NOT NULL,
    up INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS magnets(
    torrent_id INTEGER PRIMARY KEY REFERENCES torrents(id) ON DELETE CASCADE,
    uri TEXT NOT NULL
);
";

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Packs one flag per piece into a bitfield (BEP 3: piece 0 is the high
/// bit of the first byte).
pub fn pack(flags: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; flags.len().div_ceil(8)];
    for (i, _) in flags.iter().enumerate().filter(|(_, f)| **f) {
        if let Some(b) = out.get_mut(i / 8) {
            *b |= 0x80 >> (i % 8);
        }
    }
    out
}

/// Unpacks `n` flags; `None` if `bits` is not exactly the right length.
pub fn unpack(bits: &[u8], n: usize) -> Option<Vec<bool>> {
    if bits.len() != n.div_ceil(8) {
        return None;
    }
    Some(
        (0..n)
            .map(|i| bits.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0))
            .collect(),
    )
}

/// File stamps as stored: one line per file, `SIZE MTIME_NS` or `-`.
fn files_to_text(files: &[Option<(u64, i64)>]) -> String {
    let lines: Vec<String> = files
        .iter()
        .map(|f| match f {
            Some((size, mtime)) => format!("{size} {mtime}"),
            None => "-".into(),
        })
        .collect();
    lines.join("\n")
}

/// The stored stamps back; `None` if a line does not parse (the resume
/// data is then ignored and everything on disk re-hashed).
fn files_from_text(text: &str) -> Option<Vec<Option<(u64, i64)>>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split('\n')
        .map(|l| {
            if l == "-" {
                return Some(None);
            }
            let (s, m) = l.split_once(' ')?;
            Some(Some((s.parse().ok()?, m.parse().ok()?)))
        })
        .collect()
}

impl Store {
    /// Opens (creating) `dir/state.db`.
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        let path = dir.join(DB_FILE);
        let db = Connection::open(&path).with_context(|| format!("{}", path.display()))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.pragma_update(None, "foreign_keys", "ON")?;
        db.execute_batch(SCHEMA)
            .with_context(|| format!("{}: schema", path.display()))?;
        Ok(Store { db })
    }

    /// Every torrent, oldest first.
    pub fn load(&self) -> anyhow::Result<Vec<Row>> {
        let mut st = self.db.prepare(
            "SELECT t.id, t.metainfo, t.root, t.paused, t.peers, t.downloaded, t.uploaded,
                    r.have, r.files
             FROM torrents t LEFT JOIN resume r ON r.torrent_id = t.id
             WHERE length(t.metainfo) > 0 ORDER BY t.id",
        )?;
        let rows = st.query_map([], |r| {
            let have: Option<Vec<u8>> = r.get(7)?;
            let files: Option<String> = r.get(8)?;
            let peers: String = r.get(4)?;
            Ok(Row {
                id: r.get(0)?,
                metainfo: r.get(1)?,
                root: PathBuf::from(r.get::<_, String>(2)?),
                paused: r.get::<_, i64>(3)? != 0,
                peers: peers
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect(),
                downloaded: r.get::<_, i64>(5)?.max(0) as u64,
                uploaded: r.get::<_, i64>(6)?.max(0) as u64,
                resume: match (have, files.as_deref().and_then(files_from_text)) {
                    (Some(have), Some(files)) => Some(Resume { have, files }),
                    _ => None,
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The id of the torrent with this info-hash (hex), if stored.
    pub fn find(&self, info_hash: &str) -> anyhow::Result<Option<i64>> {
        Ok(self
            .db
            .query_row(
                "SELECT id FROM torrents WHERE info_hash = ?1",
                [info_hash],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Stores a new torrent; returns its id.
    pub fn insert(
        &self,
        info_hash: &str,
        metainfo: &[u8],
        root: &Path,
        paused: bool,
        peers: &[String],
    ) -> anyhow::Result<i64> {
        self.db.execute(
            "INSERT INTO torrents(info_hash, metainfo, root, paused, peers, added_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                info_hash,
                metainfo,
                root.to_string_lossy(),
                paused,
                peers.join(","),
                now_secs()
            ],
        )?;
        Ok(self.db.last_insert_rowid())
    }

    /// Marks a torrent paused or running.
    pub fn set_paused(&self, id: i64, paused: bool) -> anyhow::Result<()> {
        self.db.execute(
            "UPDATE torrents SET paused = ?2 WHERE id = ?1",
            params![id, paused],
        )?;
        Ok(())
    }

    /// Stores a magnet waiting for its metadata (a torrent row with no
    /// metainfo yet, so its id stays when the metadata comes); returns its id.
    pub fn insert_magnet(
        &self,
        info_hash: &str,
        uri: &str,
        paused: bool,
        peers: &[String],
    ) -> anyhow::Result<i64> {
        let tx = self.db.unchecked_transaction()?;
        let id = {
            tx.execute(
                "INSERT INTO torrents(info_hash, metainfo, root, paused, peers, added_at)
                 VALUES (?1, x'', '', ?2, ?3, ?4)",
                params![info_hash, paused, peers.join(","), now_secs()],
            )?;
            tx.last_insert_rowid()
        };
        tx.execute(
            "INSERT INTO magnets(torrent_id, uri) VALUES (?1, ?2)",
            params![id, uri],
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Magnets still waiting for their metadata.
    pub fn load_magnets(&self) -> anyhow::Result<Vec<MagnetRow>> {
        let mut st = self.db.prepare(
            "SELECT t.id, m.uri, t.paused, t.peers FROM magnets m
             JOIN torrents t ON t.id = m.torrent_id
             WHERE length(t.metainfo) = 0 ORDER BY t.id",
        )?;
        let rows = st.query_map([], |r| {
            let peers: String = r.get(3)?;
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get::<_, i64>(2)? != 0,
                peers
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect(),
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A magnet's fetched metadata (as `.torrent` bytes) and its folder:
    /// from now on it loads as any torrent, and is never fetched again.
    pub fn set_metainfo(&self, id: i64, metainfo: &[u8], root: &Path) -> anyhow::Result<()> {
        let tx = self.db.unchecked_transaction()?;
        tx.execute(
            "UPDATE torrents SET metainfo = ?2, root = ?3 WHERE id = ?1",
            params![id, metainfo, root.to_string_lossy()],
        )?;
        tx.execute("DELETE FROM magnets WHERE torrent_id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets a torrent (and its resume data).
    pub fn delete(&self, id: i64) -> anyhow::Result<()> {
        let tx = self.db.unchecked_transaction()?;
        tx.execute("DELETE FROM magnets WHERE torrent_id = ?1", [id])?;
        tx.execute("DELETE FROM priorities WHERE torrent_id = ?1", [id])?;
        tx.execute("DELETE FROM limits WHERE torrent_id = ?1", [id])?;
        tx.execute("DELETE FROM resume WHERE torrent_id = ?1", [id])?;
        tx.execute("DELETE FROM torrents WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }

    /// Writes the fast-resume data and counters of many torrents in one
    /// transaction.
    pub fn save(&self, saves: &[Save]) -> anyhow::Result<()> {
        let tx = self.db.unchecked_transaction()?;
        let now = now_secs();
        for s in saves {
            tx.execute(
                "UPDATE torrents SET downloaded = ?2, uploaded = ?3 WHERE id = ?1",
                params![s.id, s.downloaded as i64, s.uploaded as i64],
            )?;
            if let Some(r) = &s.resume {
                tx.execute(
                    "INSERT INTO resume(torrent_id, have, files, saved_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(torrent_id) DO UPDATE SET have = ?2, files = ?3, saved_at = ?4",
                    params![s.id, r.have, files_to_text(&r.files), now],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Sets a torrent's file priorities (one word a file, comma-separated:
    /// `skip`, `normal`, `high`).
    pub fn set_priorities(&self, id: i64, prios: &str) -> anyhow::Result<()> {
        self.db.execute(
            "INSERT INTO priorities(torrent_id, prios) VALUES (?1, ?2)
             ON CONFLICT(torrent_id) DO UPDATE SET prios = ?2",
            params![id, prios],
        )?;
        Ok(())
    }

    /// A torrent's file priorities as stored, if set.
    pub fn priorities(&self, id: i64) -> anyhow::Result<Option<String>> {
        Ok(self
            .db
            .query_row(
                "SELECT prios FROM priorities WHERE torrent_id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Sets a torrent's own rate limits (bytes/s, 0: none).
    pub fn set_limits(&self, id: i64, down: u64, up: u64) -> anyhow::Result<()> {
        self.db.execute(
            "INSERT INTO limits(torrent_id, down, up) VALUES (?1, ?2, ?3)
             ON CONFLICT(torrent_id) DO UPDATE SET down = ?2, up = ?3",
            params![id, down as i64, up as i64],
        )?;
        Ok(())
    }

    /// A torrent's own rate limits as stored ((0, 0) when never set).
    pub fn limits(&self, id: i64) -> anyhow::Result<(u64, u64)> {
        Ok(self
            .db
            .query_row(
                "SELECT down, up FROM limits WHERE torrent_id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?.max(0) as u64,
                        r.get::<_, i64>(1)?.max(0) as u64,
                    ))
                },
            )
            .optional()?
            .unwrap_or((0, 0)))
    }

    /// A setting, if set.
    pub fn setting(&self, key: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .db
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Sets a setting.
    pub fn set_setting(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.db.execute(
            "INSERT INTO settings(key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = ?2",
            [key, value],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitfields_round_trip_and_wrong_lengths_are_refused() {
        let flags = [true, false, false, true, true, false, false, false, true];
        let packed = pack(&flags);
        assert_eq!(packed, vec![0b1001_1000, 0b1000_0000]);
        assert_eq!(unpack(&packed, 9).as_deref(), Some(&flags[..]));
        assert_eq!(unpack(&packed, 17), None);
        assert_eq!(unpack(&packed, 8), None);
        assert_eq!(unpack(&[], 0), Some(Vec::new()));
    }

    #[test]
    fn file_stamps_round_trip_and_garbage_is_refused() {
        let files = vec![Some((5, -3)), None, Some((0, 1_700_000_000_123_456_789))];
        assert_eq!(files_from_text(&files_to_text(&files)), Some(files));
        assert_eq!(files_from_text("12"), None);
        assert_eq!(files_from_text("x 1"), None);
    }

    #[test]
    fn saves_are_kept_and_deletes_remove_resume_data() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let id = s
            .insert(
                "ab",
                b"d4:infodee",
                Path::new("/x/y"),
                true,
                &["1.2.3.4:5".into()],
            )
            .unwrap();
        assert_eq!(s.find("ab").unwrap(), Some(id));
        let r = Resume {
            have: vec![0xff],
            files: vec![Some((1, 2))],
        };
        s.save(&[Save {
            id,
            resume: Some(r.clone()),
            downloaded: 7,
            uploaded: 9,
        }])
        .unwrap();
        drop(s);
        let s = Store::open(d.path()).unwrap();
        let rows = s.load().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].resume.as_ref(), Some(&r));
        assert!(rows[0].paused);
        assert_eq!(rows[0].peers, vec!["1.2.3.4:5".to_string()]);
        assert_eq!((rows[0].downloaded, rows[0].uploaded), (7, 9));
        s.delete(id).unwrap();
        assert!(s.load().unwrap().is_empty());
        assert_eq!(s.find("ab").unwrap(), None);
    }

    #[test]
    fn a_magnet_keeps_its_id_and_loads_as_a_torrent_once_it_has_metadata() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let id = s
            .insert_magnet("cd", "magnet:?xt=urn:btih:cd", false, &["1.2.3.4:5".into()])
            .unwrap();
        // A magnet is no torrent yet, and its info-hash is taken.
        assert!(s.load().unwrap().is_empty());
        assert_eq!(
            s.load_magnets().unwrap(),
            vec![(
                id,
                "magnet:?xt=urn:btih:cd".into(),
                false,
                vec!["1.2.3.4:5".into()]
            )]
        );
        assert!(s
            .insert("cd", b"d4:infodee", Path::new("/x"), false, &[])
            .is_err());
        s.set_metainfo(id, b"d4:infodee", Path::new("/x/y"))
            .unwrap();
        drop(s);
        let s = Store::open(d.path()).unwrap();
        assert!(s.load_magnets().unwrap().is_empty());
        let rows = s.load().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, id);
        assert_eq!(rows[0].root, PathBuf::from("/x/y"));
    }

    #[test]
    fn priorities_and_limits_are_kept_and_go_with_the_torrent() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let id = s
            .insert("ab", b"d4:infodee", Path::new("/x"), false, &[])
            .unwrap();
        assert_eq!(s.priorities(id).unwrap(), None);
        assert_eq!(s.limits(id).unwrap(), (0, 0));
        s.set_priorities(id, "skip,high").unwrap();
        s.set_limits(id, 1 << 20, u64::from(u32::MAX)).unwrap();
        drop(s);
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.priorities(id).unwrap().as_deref(), Some("skip,high"));
        assert_eq!(s.limits(id).unwrap(), (1 << 20, u64::from(u32::MAX)));
        s.delete(id).unwrap();
        assert_eq!(s.priorities(id).unwrap(), None);
        assert_eq!(s.limits(id).unwrap(), (0, 0));
    }
}
