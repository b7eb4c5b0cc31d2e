//! The `meta` table: small named values kept beside the swarms — the
//! journal sequence number of the last checkpoint (`checkpoint_seq`) and
//! the BEP 15 connection-id secrets. Values are blobs; integers are 8
//! bytes big-endian. A missing or malformed value reads as absent (or 0),
//! never as an error.

use anyhow::Result;
use ourtorrent_core::tracker::udp::server::SECRET_LEN;
use rusqlite::{params, Connection};

fn meta_get(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>> {
    let mut st = conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?;
    let mut rows = st.query([key])?;
    Ok(match rows.next()? {
        Some(r) => Some(r.get::<_, Vec<u8>>(0)?),
        None => None,
    })
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

/// Writes the secrets into `meta` (within the caller's transaction).
pub(super) fn put_secrets(conn: &Connection, s: &Secrets) -> rusqlite::Result<()> {
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
