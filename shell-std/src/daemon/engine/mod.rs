//! The daemon's torrents over one client [`Session`]: adding, starting
//! (fast-resume check, then the same torrent machinery as `client
//! download`), pausing, resuming, rechecking and removing them, the 1 s
//! sampler (rates, events) and the periodic fast-resume save.
//!
//! A running torrent is a client [`Ctx`] routed by the session plus its
//! tasks (dialer, 1 s tick, announces); a paused one is only its entry
//! here with the pieces it had. Pausing stops the `Ctx` (peers closed,
//! `stopped` announced); resuming opens it again from the saved pieces, so
//! nothing is hashed.
//!
//! # Modules
//! - `add`: adding a `.torrent`, restoring the stored torrents at start;
//! - `metadata`: a magnet's metadata phase (BEP 9), then adopted;
//! - `run`: the fast-resume check, a torrent's tasks, halting them;
//! - `control`: file priorities, pause, resume, recheck, remove;
//! - `settings`: the global settings and a torrent's own rate limits;
//! - `save`: the 1 s sampler, the periodic save, the clean stop;
//! - `priority`: file priorities as named, stored and checked.
//!
//! [`Ctx`]: crate::client::swarm::Ctx

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::entry::{Entry, View};
use super::store::Store;
use crate::client::magnet::MagnetLink;
use crate::client::meta::Info;
use crate::client::session::Session;
use crate::client::Common;
use crate::torrent::TorrentFile;

mod add;
mod control;
mod metadata;
mod priority;
mod run;
mod save;
mod settings;

pub use priority::prio_name;

/// Fast-resume data is saved this often (what a `kill -9` may lose).
pub const SAVE_INTERVAL: Duration = Duration::from_secs(2);
/// Threads hashing pieces at start.
pub const HASH_THREADS: usize = 2;
/// Torrents hashing at once; the others wait their turn in `checking`
/// (a restart after a crash with many torrents would thrash the disk).
/// Torrents with nothing to hash never wait.
pub const MAX_CHECKS: usize = 1;
/// Time a stopping torrent's tasks get to let go of it (writes land)
/// before its files are stamped.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// Events waiting for a slow SSE client before it misses some.
pub const EVENT_BACKLOG: usize = 256;

/// Why an API call failed; the API maps each to a status.
#[derive(Debug)]
pub enum Refused {
    /// Bad input (400).
    Bad(String),
    /// Not allowed (403).
    Forbidden(String),
    /// No such torrent (404).
    NotFound(i64),
    /// Already there (409), with the id of the one that is.
    Conflict(String, Option<i64>),
    /// Our fault (500).
    Internal(String),
}

impl From<anyhow::Error> for Refused {
    fn from(e: anyhow::Error) -> Self {
        Refused::Internal(format!("{e:#}"))
    }
}

/// The daemon.
pub struct Daemon {
    /// The client session every torrent runs in.
    pub session: Arc<Session>,
    /// Where torrents are downloaded.
    pub download_dir: PathBuf,
    store: Mutex<Store>,
    torrents: Mutex<BTreeMap<i64, Arc<Entry>>>,
    /// State changes and progress, for SSE.
    pub events: broadcast::Sender<String>,
    common: Common,
    /// Permits to hash ([`MAX_CHECKS`]).
    checks: Arc<tokio::sync::Semaphore>,
    /// Magnets fetching their metadata, by id (the id they keep as
    /// torrents).
    magnets: Mutex<BTreeMap<i64, Arc<Pending>>>,
    /// The global settings in force.
    settings: Mutex<Settings>,
    /// Connection permits still to take back after the connection limit
    /// was lowered below the connections open (taken as they close).
    conn_debt: std::sync::atomic::AtomicUsize,
}

/// The daemon's global settings (`/api/settings`), kept in the state.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    /// Bytes/s received, all torrents together (0: no limit).
    pub download_limit: u64,
    /// Bytes/s sent, all torrents together (0: no limit).
    pub upload_limit: u64,
    /// Peer connections at once, all torrents together.
    pub max_connections: usize,
}

/// The most `max_connections` may be (file descriptors run out long
/// before).
pub const MAX_CONNECTIONS_LIMIT: usize = 10_000;

/// Setting keys in the state.
pub const SETTING_DOWN: &str = "download_limit";
/// See [`SETTING_DOWN`].
pub const SETTING_UP: &str = "upload_limit";
/// See [`SETTING_DOWN`].
pub const SETTING_CONNS: &str = "max_connections";

/// A magnet in its metadata phase (BEP 9).
pub struct Pending {
    id: i64,
    link: MagnetLink,
    paused: bool,
    peers: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    error: Mutex<Option<String>>,
}

impl Pending {
    /// What the API shows of it: state `fetching_metadata` (or `error`),
    /// its `dn` (else the info-hash) as the name, nothing known yet.
    pub fn view(&self) -> View {
        let error = self.error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        View {
            id: self.id,
            info_hash: self.link.info_hash.to_string(),
            name: self.link.label(),
            size: 0,
            progress: 0.0,
            state: if error.is_some() {
                "error"
            } else {
                "fetching_metadata"
            },
            error,
            down_rate: 0,
            up_rate: 0,
            downloaded: 0,
            uploaded: 0,
            verified: 0,
            pieces: 0,
            pieces_verified: 0,
            peers: 0,
            seeds: 0,
            eta: None,
            hashed_at_start: 0,
            trusted_at_start: 0,
            start_ms: 0,
            fetched: 0,
            root: String::new(),
            download_limit: 0,
            upload_limit: 0,
        }
    }
}

impl Daemon {
    /// A daemon over `session`, its state in `store`.
    pub fn new(
        session: Arc<Session>,
        store: Store,
        download_dir: PathBuf,
        common: Common,
    ) -> Arc<Daemon> {
        let (down, up) = (common.max_down.unwrap_or(0), common.max_up.unwrap_or(0));
        session.set_rate_limits(down, up);
        let settings = Settings {
            download_limit: down,
            upload_limit: up,
            max_connections: common.max_connections,
        };
        Arc::new(Daemon {
            settings: Mutex::new(settings),
            conn_debt: std::sync::atomic::AtomicUsize::new(0),
            session,
            download_dir,
            store: Mutex::new(store),
            torrents: Mutex::new(BTreeMap::new()),
            events: broadcast::channel(EVENT_BACKLOG).0,
            checks: Arc::new(tokio::sync::Semaphore::new(MAX_CHECKS)),
            common,
            magnets: Mutex::new(BTreeMap::new()),
        })
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<i64, Arc<Entry>>> {
        self.torrents.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, kind: &str, data: serde_json::Value) {
        let _ = self
            .events
            .send(serde_json::json!({ "type": kind, "data": data }).to_string());
    }

    fn pending(&self) -> MutexGuard<'_, BTreeMap<i64, Arc<Pending>>> {
        self.magnets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the API shows of every torrent and magnet, by id.
    pub fn views(&self) -> Vec<View> {
        let mut v: Vec<View> = self.list().iter().map(|e| e.view()).collect();
        v.extend(self.pending().values().map(|p| p.view()));
        v.sort_by_key(|v| v.id);
        v
    }

    /// What the API shows of torrent or magnet `id`.
    pub fn view(&self, id: i64) -> Result<View, Refused> {
        if let Some(p) = self.pending().get(&id) {
            return Ok(p.view());
        }
        Ok(self.get(id)?.view())
    }

    /// Every torrent, by id.
    pub fn list(&self) -> Vec<Arc<Entry>> {
        self.map().values().cloned().collect()
    }

    /// The torrent `id`.
    pub fn get(&self, id: i64) -> Result<Arc<Entry>, Refused> {
        if let Some(e) = self.map().get(&id) {
            return Ok(e.clone());
        }
        if self.pending().contains_key(&id) {
            // A magnet: nothing to pause, list or limit before its metadata.
            return Err(Refused::Conflict(
                format!("torrent {id} is still fetching its metadata"),
                Some(id),
            ));
        }
        Err(Refused::NotFound(id))
    }
}

/// Parses `.torrent` bytes into what the client keeps; the error says why
/// they are not a torrent.
pub fn parse(bytes: &[u8]) -> Result<Info, String> {
    let mut tf = TorrentFile::from_bytes(bytes.to_vec());
    let m = tf
        .parse()
        .map_err(|e| format!("not a valid .torrent: {e}"))?;
    Ok(Info::from_metainfo(&m))
}
