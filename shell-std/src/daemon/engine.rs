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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{broadcast, watch};

use super::entry::{Entry, Live, Phase, State, View};
use super::resume::{self, Stamp};
use super::store::{self, Resume, Row, Save, Store};
use crate::client::announce::{announce_loop, Statuses, TrackerStatus};
use crate::client::dht;
use crate::client::magnet::{self, MagnetLink};
use crate::client::meta::Info;
use crate::client::peers::Source;
use crate::client::select::Priority;
use crate::client::session::Session;
use crate::client::storage::Storage;
use crate::client::swarm::{dialer, Ctx};
use crate::client::{open_resumed_skipping, root_in, Common, MAX_PIECE_LEN};
use crate::torrent::TorrentFile;

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

    /// Loads the stored torrents and starts those not paused.
    pub fn restore(self: &Arc<Self>) -> anyhow::Result<()> {
        let rows = self.store().load()?;
        for row in rows {
            let id = row.id;
            match self.entry_from_row(row) {
                Ok((entry, saved, paused)) => {
                    self.map().insert(id, entry.clone());
                    if !paused {
                        self.clone().spawn_start(entry, saved);
                    }
                }
                Err(e) => tracing::error!(id, "stored torrent not loaded: {e:#}"),
            }
        }
        let magnets = self.store().load_magnets()?;
        for (id, uri, paused, peers) in magnets {
            match MagnetLink::parse(&uri) {
                Ok(link) => {
                    let peers = peers.iter().filter_map(|p| p.parse().ok()).collect();
                    self.spawn_fetch(id, link, paused, peers);
                }
                Err(e) => tracing::error!(id, "stored magnet not loaded: {e:#}"),
            }
        }
        Ok(())
    }

    /// Adds a magnet link: its metadata is fetched (from its `x.pe`,
    /// `peers`, its trackers and the DHT), then it runs as a `.torrent`
    /// would, with the same id (`paused`: added paused once the metadata
    /// is in).
    pub fn add_magnet(
        self: &Arc<Self>,
        uri: &str,
        paused: bool,
        peers: Vec<SocketAddr>,
    ) -> Result<(i64, String), Refused> {
        let link = MagnetLink::parse(uri).map_err(|e| Refused::Bad(format!("magnet: {e:#}")))?;
        let ih = link.info_hash.to_string();
        if self.session.dht.get().is_none()
            && link.peers.is_empty()
            && peers.is_empty()
            && link.trackers.is_empty()
        {
            return Err(Refused::Bad(
                "nothing to connect to: the magnet has no x.pe and no tr, no peers were given and the DHT is off".into(),
            ));
        }
        let taken = self
            .map()
            .values()
            .find(|e| e.info.info_hash == link.info_hash)
            .map(|e| e.id)
            .or_else(|| {
                self.pending()
                    .values()
                    .find(|p| p.link.info_hash == link.info_hash)
                    .map(|p| p.id)
            });
        if let Some(id) = taken {
            return Err(Refused::Conflict(
                format!("torrent {ih} is already added (id {id})"),
                Some(id),
            ));
        }
        let peer_text: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
        let id = self.store().insert_magnet(&ih, uri, paused, &peer_text)?;
        tracing::info!(id, info_hash = %ih, "magnet added");
        self.emit("added", serde_json::json!({ "id": id, "info_hash": ih }));
        self.spawn_fetch(id, link, paused, peers);
        Ok((id, ih))
    }

    /// Runs magnet `id`'s metadata phase in the background, then adopts it.
    fn spawn_fetch(
        self: &Arc<Self>,
        id: i64,
        link: MagnetLink,
        paused: bool,
        peers: Vec<SocketAddr>,
    ) {
        let (stop, stop_rx) = watch::channel(false);
        let p = Arc::new(Pending {
            id,
            link,
            paused,
            peers,
            stop,
            error: Mutex::new(None),
        });
        self.pending().insert(id, p.clone());
        let d = self.clone();
        tokio::spawn(async move {
            let (extra, feeder) = match d.session.dht.get().cloned() {
                Some(node) => {
                    let (tx, rx) = tokio::sync::mpsc::channel(64);
                    let f = tokio::spawn(dht::feed(node, p.link.info_hash, tx));
                    (Some(rx), Some(f))
                }
                None => (None, None),
            };
            let sources = magnet::Sources {
                direct: p.peers.clone(),
                trackers: true,
                extra,
            };
            let r = magnet::fetch(d.session.clone(), &p.link, sources, stop_rx).await;
            if let Some(f) = feeder {
                f.abort();
            }
            let r = match r {
                Ok(Some(f)) => d.adopt(&p, f),
                Ok(None) => return, // removed
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                tracing::error!(id, "magnet: {e:#}");
                *p.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{e:#}"));
                d.emit("state", serde_json::to_value(p.view()).unwrap_or_default());
            }
        });
    }

    /// A magnet whose metadata came: stored as its `.torrent` (never
    /// fetched again) and started as one, under the same id.
    fn adopt(self: &Arc<Self>, p: &Pending, f: magnet::Fetched) -> anyhow::Result<()> {
        let bytes = magnet::torrent_bytes(&f.metadata, &p.link.trackers);
        let info = parse(&bytes).map_err(|e| anyhow::anyhow!("the metadata: {e}"))?;
        if info.piece_len > MAX_PIECE_LEN {
            anyhow::bail!(
                "pieces of {} bytes are larger than the {} MiB this client handles",
                info.piece_len,
                MAX_PIECE_LEN >> 20
            );
        }
        let root = root_in(&self.download_dir, &info)?;
        Storage::paths(&info, &root)?;
        let mut map = self.map();
        if let Some(e) = map.values().find(|e| e.root == root) {
            anyhow::bail!(
                "{} is already the folder of torrent {} (id {})",
                root.display(),
                e.info.info_hash,
                e.id
            );
        }
        if self.pending().remove(&p.id).is_none() {
            return Ok(()); // removed meanwhile
        }
        self.store().set_metainfo(p.id, &bytes, &root)?;
        let mut peers = p.peers.clone();
        peers.extend(p.link.peers.iter().copied());
        peers.extend(f.learned.iter().map(|(a, _)| *a));
        peers.sort();
        peers.dedup();
        let n = info.pieces() as usize;
        tracing::info!(id = p.id, name = %info.name, bytes = f.metadata.len(), "metadata fetched");
        let entry = Arc::new(Entry {
            id: p.id,
            info,
            root,
            peers,
            state: Mutex::new(State::new(p.paused, vec![false; n], None)),
        });
        map.insert(p.id, entry.clone());
        drop(map);
        self.emit(
            "state",
            serde_json::to_value(entry.view()).unwrap_or_default(),
        );
        if !p.paused {
            self.clone().spawn_start(entry, None);
        }
        Ok(())
    }

    #[allow(clippy::type_complexity)]
    fn entry_from_row(
        &self,
        row: Row,
    ) -> anyhow::Result<(Arc<Entry>, Option<(Vec<bool>, Vec<Stamp>)>, bool)> {
        let info = parse(&row.metainfo).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let n = info.pieces() as usize;
        let kept = row.resume.clone();
        let saved = row
            .resume
            .and_then(|r| store::unpack(&r.have, n).map(|h| (h, r.files)));
        let peers = row.peers.iter().filter_map(|p| p.parse().ok()).collect();
        let have = match (&saved, row.paused) {
            (Some((h, _)), true) => h.clone(),
            _ => vec![false; n],
        };
        let mut state = State::new(row.paused, have, kept);
        state.base_down = row.downloaded;
        state.base_up = row.uploaded;
        state.known = row.paused && saved.is_some();
        state.limits = self.store().limits(row.id)?;
        if let Some(text) = self.store().priorities(row.id)? {
            state.prio = prio_from_text(&text, info.files.len()).ok_or_else(|| {
                anyhow::anyhow!("stored file priorities {text:?}: not understood")
            })?;
        }
        let entry = Arc::new(Entry {
            id: row.id,
            info,
            root: row.root,
            peers,
            state: Mutex::new(state),
        });
        Ok((entry, saved, row.paused))
    }

    /// Adds a torrent from its `.torrent` bytes, with file priorities
    /// `files` (`(index, priority)` pairs, as [`Self::set_priorities`]
    /// takes) in force before the first byte: a skipped file is never
    /// created. A bad priority refuses the whole add.
    pub fn add(
        self: &Arc<Self>,
        metainfo: Vec<u8>,
        paused: bool,
        peers: Vec<SocketAddr>,
        files: &[(usize, Priority)],
    ) -> Result<(i64, String), Refused> {
        let info = parse(&metainfo).map_err(Refused::Bad)?;
        let mut prio = vec![Priority::default(); info.files.len()];
        apply_priorities(&info, &mut prio, files)?;
        if info.piece_len > MAX_PIECE_LEN {
            return Err(Refused::Bad(format!(
                "pieces of {} bytes are larger than the {} MiB this client handles",
                info.piece_len,
                MAX_PIECE_LEN >> 20
            )));
        }
        let root = root_in(&self.download_dir, &info).map_err(|e| Refused::Bad(e.to_string()))?;
        Storage::paths(&info, &root).map_err(|e| Refused::Bad(format!("{e:#}")))?;
        let ih = info.info_hash.to_string();
        let waiting = self
            .pending()
            .values()
            .find(|p| p.link.info_hash == info.info_hash)
            .map(|p| p.id);
        if let Some(id) = waiting {
            return Err(Refused::Conflict(
                format!("torrent {ih} is already added as a magnet (id {id})"),
                Some(id),
            ));
        }
        let mut map = self.map();
        if let Some(e) = map.values().find(|e| e.info.info_hash == info.info_hash) {
            return Err(Refused::Conflict(
                format!("torrent {ih} is already added (id {})", e.id),
                Some(e.id),
            ));
        }
        if let Some(e) = map.values().find(|e| e.root == root) {
            return Err(Refused::Conflict(
                format!(
                    "{} is already the folder of torrent {} (id {})",
                    root.display(),
                    e.info.info_hash,
                    e.id
                ),
                Some(e.id),
            ));
        }
        let peer_text: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
        let id = self
            .store()
            .insert(&ih, &metainfo, &root, paused, &peer_text)?;
        if !files.is_empty() {
            self.store().set_priorities(id, &prio_to_text(&prio))?;
        }
        let n = info.pieces() as usize;
        let mut state = State::new(paused, vec![false; n], None);
        state.prio = prio;
        let entry = Arc::new(Entry {
            id,
            info,
            root,
            peers,
            state: Mutex::new(state),
        });
        map.insert(id, entry.clone());
        drop(map);
        tracing::info!(id, info_hash = %ih, name = %entry.info.name, "added");
        self.emit("added", serde_json::json!({ "id": id, "info_hash": ih }));
        if !paused {
            self.clone().spawn_start(entry, None);
        }
        Ok((id, ih))
    }

    /// Starts `entry` in the background: check, then run.
    fn spawn_start(self: Arc<Self>, entry: Arc<Entry>, saved: Option<(Vec<bool>, Vec<Stamp>)>) {
        entry.lock().phase = Phase::Checking;
        tokio::spawn(async move {
            let t0 = Instant::now();
            let d = self.clone();
            let e = entry.clone();
            let r = tokio::task::spawn_blocking(move || d.open(&e, saved)).await;
            let r = match r {
                Ok(r) => r,
                Err(e) => Err(anyhow::anyhow!("{e}")),
            };
            match r {
                Ok((ctx, hashed, trusted)) => {
                    let mut st = entry.lock();
                    if st.phase != Phase::Checking {
                        // Paused or removed while checking.
                        st.have = ctx.have_flags();
                        st.known = true;
                        drop(st);
                        ctx.stop();
                        return;
                    }
                    if let Err(e) = self.session.add(ctx.clone()) {
                        st.phase = Phase::Error(format!("{e:#}"));
                        return;
                    }
                    st.hashed = hashed;
                    st.trusted = trusted;
                    st.start_ms = t0.elapsed().as_millis() as u64;
                    st.last = (0, 0, Instant::now());
                    st.live = Some(self.run(&entry, ctx));
                    st.phase = Phase::Live;
                    st.known = true;
                    drop(st);
                    tracing::info!(id = entry.id, hashed, trusted, "running");
                    self.emit(
                        "state",
                        serde_json::to_value(entry.view()).unwrap_or_default(),
                    );
                }
                Err(e) => {
                    tracing::error!(id = entry.id, "start: {e:#}");
                    entry.lock().phase = Phase::Error(format!("{e:#}"));
                    self.emit(
                        "state",
                        serde_json::to_value(entry.view()).unwrap_or_default(),
                    );
                }
            }
        });
    }

    /// Hashes `pieces` of the torrent at `root` once a check permit is
    /// free (called on a blocking thread); returns those that match.
    fn hash(
        &self,
        info: &Info,
        root: &Path,
        prio: &[Priority],
        pieces: &[u32],
    ) -> anyhow::Result<Vec<u32>> {
        if pieces.is_empty() {
            return Ok(Vec::new());
        }
        let _turn = tokio::runtime::Handle::current()
            .block_on(self.checks.acquire())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let storage = Storage::open_selected(info, root, true, prio)?;
        Ok(resume::verify(&storage, info, pieces, HASH_THREADS))
    }

    /// Checks what is on disk (fast resume) and opens the torrent; returns
    /// it with the pieces hashed and found, and the pieces trusted.
    fn open(
        &self,
        entry: &Entry,
        saved: Option<(Vec<bool>, Vec<Stamp>)>,
    ) -> anyhow::Result<(Arc<Ctx>, u32, u32)> {
        let info = &entry.info;
        let paths = Storage::paths(info, &entry.root)?;
        let now = resume::stamps(info, &paths);
        let check = resume::plan(
            info,
            saved.as_ref().map(|(h, s)| (h.as_slice(), s.as_slice())),
            &now,
        );
        if !check.trusted.iter().all(|h| *h) {
            Storage::check_space(info, &entry.root)?;
        }
        if let Some(parent) = entry.root.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("{}", parent.display()))?;
        }
        let trusted = check.trusted.iter().filter(|h| **h).count() as u32;
        let mut have = check.trusted;
        let mut hashed = 0;
        let prio = entry.lock().prio.clone();
        for i in self.hash(info, &entry.root, &prio, &check.hash)? {
            if let Some(h) = have.get_mut(i as usize) {
                *h = true;
                hashed += 1;
            }
        }
        let mut common = self.common.clone();
        common.peers = entry.peers.clone();
        let prio = entry.lock().prio.clone();
        let skip: Vec<String> = prio
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.wanted())
            .map(|(i, _)| i.to_string())
            .collect();
        let ctx = open_resumed_skipping(
            &self.session,
            info.clone(),
            entry.root.clone(),
            common,
            have,
            (!skip.is_empty()).then(|| skip.join(",")),
        )?;
        let (down, up) = entry.lock().limits;
        ctx.set_rate_limits(down, up);
        for (i, p) in prio.iter().enumerate() {
            if *p == Priority::High {
                ctx.set_file_priority(i, *p)?;
            }
        }
        Ok((ctx, hashed, trusted))
    }

    /// Runs an opened torrent: dialer, 1 s tick, announces.
    fn run(&self, entry: &Entry, ctx: Arc<Ctx>) -> Live {
        tokio::spawn(dialer(ctx.clone(), self.session.conns.clone()));
        ctx.learn(&entry.peers, Source::Direct);
        // BEP 5, never for private torrents (BEP 27).
        if let Some(node) = self.session.dht.get().filter(|_| !ctx.info.private) {
            tokio::spawn(dht::torrent_loop(
                node.clone(),
                ctx.clone(),
                self.session.listen.port(),
            ));
        }
        let c = ctx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => c.tick(),
                    _ = c.stopped() => return,
                }
            }
        });
        let statuses: Statuses = Arc::new(Mutex::new(
            ctx.info
                .trackers
                .iter()
                .map(|(tier, url)| TrackerStatus {
                    tier: *tier,
                    url: url.clone(),
                    status: "connecting".into(),
                    reply: None,
                    told_complete: ctx.complete.load(Relaxed),
                })
                .collect(),
        ));
        let (stop, stop_rx) = watch::channel(false);
        let announcer = tokio::spawn(announce_loop(
            self.session.clone(),
            ctx.clone(),
            statuses.clone(),
            stop_rx,
        ));
        Live {
            ctx,
            statuses,
            stop,
            announcer,
        }
    }

    /// Stops a running torrent (if it runs): `stopped` announced (waited
    /// for when `wait`), its tasks ended, the pieces it had and its byte
    /// counters kept in the entry.
    async fn halt(&self, entry: &Entry, wait: bool) {
        let live = entry.lock().live.take();
        if let Some(live) = live {
            self.halt_live(entry, live, wait).await;
        }
    }

    /// [`Self::halt`] of a run already taken out of the entry.
    async fn halt_live(&self, entry: &Entry, mut live: Live, wait: bool) {
        let _ = live.stop.send(true);
        self.session.remove(&entry.info.info_hash);
        live.ctx.stop();
        {
            let s = live.ctx.snapshot();
            let mut st = entry.lock();
            st.have = live.ctx.have_flags();
            st.base_down += s.downloaded;
            st.base_up += s.uploaded;
        }
        if wait {
            let _ = tokio::time::timeout(
                crate::client::announce::STOP_ANNOUNCE_TIMEOUT + Duration::from_secs(1),
                &mut live.announcer,
            )
            .await;
        }
        // Let the peer tasks and writers let go (their writes land) before
        // the files are stamped; an announcer still saying `stopped` (not
        // waited for on a pause) holds one reference and writes nothing.
        let until = Instant::now() + STOP_GRACE;
        loop {
            let announcing = usize::from(!live.announcer.is_finished());
            if Arc::strong_count(&live.ctx) <= 1 + announcing || Instant::now() >= until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The global settings in force.
    pub fn settings(&self) -> Settings {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the global settings (the rate limits at once; a lower
    /// connection limit as connections close), stored for the next run.
    pub fn set_settings(&self, new: Settings) -> Result<Settings, Refused> {
        if new.max_connections == 0 || new.max_connections > MAX_CONNECTIONS_LIMIT {
            return Err(Refused::Bad(format!(
                "max_connections {}: give 1..={MAX_CONNECTIONS_LIMIT}",
                new.max_connections
            )));
        }
        {
            let st = self.store();
            st.set_setting(SETTING_DOWN, &new.download_limit.to_string())?;
            st.set_setting(SETTING_UP, &new.upload_limit.to_string())?;
            st.set_setting(SETTING_CONNS, &new.max_connections.to_string())?;
        }
        let mut cur = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        self.session
            .set_rate_limits(new.download_limit, new.upload_limit);
        let debt = &self.conn_debt;
        if new.max_connections > cur.max_connections {
            // Pay what is owed first, then add permits.
            let mut more = new.max_connections - cur.max_connections;
            let owed = debt.load(Relaxed).min(more);
            debt.fetch_sub(owed, Relaxed);
            more -= owed;
            self.session.conns.add_permits(more);
        } else {
            debt.fetch_add(cur.max_connections - new.max_connections, Relaxed);
            self.take_back_permits();
        }
        *cur = new;
        tracing::info!(?new, "settings");
        Ok(new)
    }

    /// The peer port in use and the one the next start listens on (the
    /// stored listen address; `--listen` given at that start wins).
    pub fn listen_ports(&self) -> Result<(u16, u16), Refused> {
        let now = self.session.listen.port();
        let next = self
            .store()
            .setting(super::SETTING_LISTEN)?
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .map_or(now, |a| a.port());
        Ok((now, next))
    }

    /// Stores peer port `port` (1..=65535) for the next start, on the
    /// address in use; the running session keeps its port.
    pub fn set_listen_port(&self, port: u16) -> Result<(), Refused> {
        if port == 0 {
            return Err(Refused::Bad("listen_port 0: give 1..=65535".into()));
        }
        let addr = SocketAddr::new(self.session.listen.ip(), port);
        self.store()
            .set_setting(super::SETTING_LISTEN, &addr.to_string())?;
        tracing::info!(%addr, "listen address for the next start");
        Ok(())
    }

    /// Takes back the connection permits owed, as far as they are free.
    fn take_back_permits(&self) {
        let owed = self.conn_debt.load(Relaxed);
        if owed > 0 {
            let n = self.session.conns.forget_permits(owed);
            self.conn_debt.fetch_sub(n, Relaxed);
        }
    }

    /// Sets torrent `id`'s own rate limits (bytes/s, 0: none; the global
    /// ones apply too), stored, and in force at once when it runs.
    pub fn set_torrent_limits(&self, id: i64, down: u64, up: u64) -> Result<View, Refused> {
        let entry = self.get(id)?;
        self.store().set_limits(id, down, up)?;
        let ctx = {
            let mut st = entry.lock();
            st.limits = (down, up);
            st.live.as_ref().map(|l| l.ctx.clone())
        };
        if let Some(ctx) = ctx {
            ctx.set_rate_limits(down, up);
        }
        let v = entry.view();
        self.emit("state", serde_json::to_value(&v).unwrap_or_default());
        Ok(v)
    }

    /// Sets file priorities of torrent `id` (`(index, priority)` pairs),
    /// stored, and in force at once when it runs; refused (nothing
    /// changed) for an index out of range or a padding file, or when every
    /// file with data would be skipped. Returns every file's priority.
    pub async fn set_priorities(
        self: &Arc<Self>,
        id: i64,
        changes: Vec<(usize, Priority)>,
    ) -> Result<Vec<Priority>, Refused> {
        let entry = self.get(id)?;
        let mut prio = entry.priorities();
        apply_priorities(&entry.info, &mut prio, &changes)?;
        self.store().set_priorities(id, &prio_to_text(&prio))?;
        let ctx = {
            let mut st = entry.lock();
            st.prio = prio.clone();
            st.live.as_ref().map(|l| l.ctx.clone())
        };
        if let Some(ctx) = ctx {
            // Disk I/O (a file made wanted is created): off the async threads.
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                for (i, p) in changes {
                    ctx.set_file_priority(i, p)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| Refused::Internal(e.to_string()))??;
        }
        tracing::info!(id, prios = %prio_to_text(&prio), "file priorities");
        self.emit(
            "state",
            serde_json::to_value(entry.view()).unwrap_or_default(),
        );
        Ok(prio)
    }

    /// Pauses torrent `id`.
    pub async fn pause(self: &Arc<Self>, id: i64) -> Result<View, Refused> {
        let entry = self.get(id)?;
        self.store().set_paused(id, true)?;
        entry.lock().phase = Phase::Paused;
        self.halt(&entry, false).await;
        self.save_one(&entry);
        let v = entry.view();
        self.emit("state", serde_json::to_value(&v).unwrap_or_default());
        Ok(v)
    }

    /// Resumes torrent `id` from the pieces it had (nothing hashed unless
    /// its files changed meanwhile).
    pub async fn resume(self: &Arc<Self>, id: i64) -> Result<View, Refused> {
        let entry = self.get(id)?;
        {
            let st = entry.lock();
            let failed = st.live.as_ref().is_some_and(|l| l.ctx.failure().is_some());
            if matches!(st.phase, Phase::Live | Phase::Checking) && !failed {
                return Ok(entry.view_unlocked(st));
            }
        }
        // From an error: whatever still runs stops first.
        self.halt(&entry, false).await;
        self.store().set_paused(id, false)?;
        let saved = entry.lock().saved.clone().and_then(|r| {
            store::unpack(&r.have, entry.info.pieces() as usize).map(|h| (h, r.files))
        });
        self.clone().spawn_start(entry.clone(), saved);
        let v = entry.view();
        self.emit("state", serde_json::to_value(&v).unwrap_or_default());
        Ok(v)
    }

    /// Stops torrent `id`, hashes everything on disk, and starts it again
    /// (unless it is paused).
    pub async fn recheck(self: &Arc<Self>, id: i64) -> Result<View, Refused> {
        let entry = self.get(id)?;
        let paused = entry.lock().phase == Phase::Paused;
        self.halt(&entry, false).await;
        entry.lock().saved = None;
        if paused {
            // Hash now, stay paused.
            let d = self.clone();
            let e = entry.clone();
            let have = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<bool>> {
                let info = &e.info;
                let paths = Storage::paths(info, &e.root)?;
                let check = resume::plan(info, None, &resume::stamps(info, &paths));
                let mut have = vec![false; info.pieces() as usize];
                let prio = e.lock().prio.clone();
                for i in d.hash(info, &e.root, &prio, &check.hash)? {
                    if let Some(h) = have.get_mut(i as usize) {
                        *h = true;
                    }
                }
                Ok(have)
            })
            .await
            .map_err(|e| Refused::Internal(e.to_string()))??;
            {
                let mut st = entry.lock();
                st.have = have;
                st.known = true;
            }
            self.save_one(&entry);
        } else {
            self.clone().spawn_start(entry.clone(), None);
        }
        Ok(entry.view())
    }

    /// Removes torrent `id`; with `delete_data` also its files (only files
    /// under the download folder: checked before anything is removed).
    pub async fn remove(self: &Arc<Self>, id: i64, delete_data: bool) -> Result<(), Refused> {
        let gone = self.pending().remove(&id);
        if let Some(p) = gone {
            let _ = p.stop.send(true);
            self.store().delete(id)?;
            tracing::info!(id, "magnet removed");
            self.emit("removed", serde_json::json!({ "id": id }));
            return Ok(());
        }
        let entry = self.get(id)?;
        let files = if delete_data {
            Some(self.data_files(&entry)?)
        } else {
            None
        };
        entry.lock().phase = Phase::Paused;
        self.map().remove(&id);
        self.halt(&entry, false).await;
        self.store().delete(id)?;
        if let Some(files) = files {
            remove_files(&entry.root, &files);
        }
        tracing::info!(id, delete_data, "removed");
        self.emit("removed", serde_json::json!({ "id": id }));
        Ok(())
    }

    /// The torrent's files to delete, each checked to lie inside the
    /// download folder (no symlinked folder on the way).
    fn data_files(&self, entry: &Entry) -> Result<Vec<PathBuf>, Refused> {
        let dir = self
            .download_dir
            .canonicalize()
            .map_err(|e| Refused::Internal(format!("{}: {e}", self.download_dir.display())))?;
        let outside = || {
            Refused::Forbidden(format!(
                "{}: not inside the download folder {}; nothing removed",
                entry.root.display(),
                dir.display()
            ))
        };
        let paths = Storage::paths(&entry.info, &entry.root).map_err(|_| outside())?;
        let mut out = Vec::new();
        for p in paths {
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue; // not there
            };
            if m.is_dir() {
                continue;
            }
            let parent = p
                .parent()
                .and_then(|x| x.canonicalize().ok())
                .ok_or_else(outside)?;
            if !parent.starts_with(&dir) || parent == dir && entry.info.multi_file {
                return Err(outside());
            }
            out.push(p);
        }
        Ok(out)
    }

    /// The 1 s sampler (rates, progress events) and the periodic save,
    /// until `shutdown` turns true.
    pub async fn ticker(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_save = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            self.take_back_permits();
            let mut views = Vec::new();
            for e in self.list() {
                // A disk that failed (full, gone, read-only) stops the
                // torrent with the cause, as the client does; resume
                // starts it again.
                let failed = {
                    let mut st = e.lock();
                    match st.live.as_ref().and_then(|l| l.ctx.failure()) {
                        // Taken under the same lock: a resume racing this
                        // cannot have its new run stopped here.
                        Some(why) => {
                            st.phase = Phase::Error(why.clone());
                            st.live.take().map(|l| (why, l))
                        }
                        None => None,
                    }
                };
                if let Some((why, live)) = failed {
                    tracing::error!(id = e.id, "stopped: {why}");
                    self.halt_live(&e, live, false).await;
                    self.emit("state", serde_json::to_value(e.view()).unwrap_or_default());
                    views.push(e.view());
                    continue;
                }
                let mut st = e.lock();
                if let Some(l) = &st.live {
                    let down = l.ctx.stats.downloaded.load(Relaxed);
                    let up = l.ctx.stats.uploaded.load(Relaxed);
                    let (d0, u0, t0) = st.last;
                    let secs = t0.elapsed().as_secs_f64().max(0.001);
                    st.down_rate = (down.saturating_sub(d0) as f64 / secs) as u64;
                    st.up_rate = (up.saturating_sub(u0) as f64 / secs) as u64;
                    st.last = (down, up, Instant::now());
                }
                drop(st);
                views.push(e.view());
            }
            views.extend(self.pending().values().map(|p| p.view()));
            views.sort_by_key(|v| v.id);
            if self.events.receiver_count() > 0 {
                self.emit("torrents", serde_json::to_value(&views).unwrap_or_default());
            }
            if last_save.elapsed() >= SAVE_INTERVAL {
                last_save = Instant::now();
                let d = self.clone();
                let _ = tokio::task::spawn_blocking(move || d.save_all()).await;
            }
        }
    }

    /// What to save of one torrent: counters, and its resume data when
    /// the pieces changed since the last save.
    fn save_of(&self, e: &Entry) -> Save {
        let (have, down, up) = {
            let st = e.lock();
            match &st.live {
                Some(l) => {
                    let s = l.ctx.snapshot();
                    (
                        l.ctx.have_flags(),
                        st.base_down + s.downloaded,
                        st.base_up + s.uploaded,
                    )
                }
                None => (st.have.clone(), st.base_down, st.base_up),
            }
        };
        let trusted = {
            let st = e.lock();
            st.known && st.phase != Phase::Checking
        };
        let mut resume = None;
        if trusted {
            // The pieces first, then the stamps: a write after the
            // bitfield can only make a file look changed (hashed again).
            let packed = store::pack(&have);
            let files = Storage::paths(&e.info, &e.root)
                .map(|p| resume::stamps(&e.info, &p))
                .unwrap_or_default();
            let r = Resume {
                have: packed,
                files,
            };
            let mut st = e.lock();
            if st.saved.as_ref() != Some(&r) {
                st.saved = Some(r.clone());
                resume = Some(r);
            }
        }
        Save {
            id: e.id,
            resume,
            downloaded: down,
            uploaded: up,
        }
    }

    /// Saves every torrent in one transaction.
    pub fn save_all(&self) {
        let saves: Vec<Save> = self.list().iter().map(|e| self.save_of(e)).collect();
        if let Err(e) = self.store().save(&saves) {
            tracing::error!("saving the state: {e:#}");
        }
    }

    fn save_one(&self, e: &Entry) {
        let s = self.save_of(e);
        if let Err(e) = self.store().save(&[s]) {
            tracing::error!("saving the state: {e:#}");
        }
    }

    /// Clean stop: every torrent stopped (`stopped` announced), then
    /// everything saved.
    pub async fn shutdown(self: &Arc<Self>) {
        let all = self.list();
        let halts = all.iter().map(|e| self.halt(e, true));
        futures_util::future::join_all(halts).await;
        for p in self.pending().values() {
            let _ = p.stop.send(true);
        }
        // The DHT saves its table.
        if let Some(node) = self.session.dht.get() {
            node.stop().await;
        }
        let d = self.clone();
        let _ = tokio::task::spawn_blocking(move || d.save_all()).await;
    }
}

/// The name of a priority in the API and the state.
pub fn prio_name(p: Priority) -> &'static str {
    match p {
        Priority::Skip => "skip",
        Priority::Normal => "normal",
        Priority::High => "high",
    }
}

/// Priorities as stored: one word a file, comma-separated.
fn prio_to_text(prio: &[Priority]) -> String {
    let words: Vec<&str> = prio.iter().map(|p| prio_name(*p)).collect();
    words.join(",")
}

/// Applies `changes` (`(index, priority)` pairs) to `prio`, the
/// priorities of `info`'s files; refused (an error naming the file) for an
/// index out of range or a padding file, or when every file with data
/// would be skipped.
fn apply_priorities(
    info: &Info,
    prio: &mut [Priority],
    changes: &[(usize, Priority)],
) -> Result<(), Refused> {
    let files = &info.files;
    for (i, p) in changes {
        match (files.get(*i), prio.get_mut(*i)) {
            (Some(f), Some(slot)) if !f.padding => *slot = *p,
            _ => {
                return Err(Refused::Bad(format!(
                    "file {i}: not a file of torrent {} (it has files 0..={})",
                    info.name,
                    files.len().saturating_sub(1)
                )))
            }
        }
    }
    let any_wanted = files
        .iter()
        .zip(prio.iter())
        .any(|(f, p)| !f.padding && f.len > 0 && p.wanted());
    if !any_wanted {
        return Err(Refused::Bad(
            "every file would be skipped: nothing to download".into(),
        ));
    }
    Ok(())
}

/// The stored priorities back; `None` unless there is one known word per
/// file (`n` files).
fn prio_from_text(text: &str, n: usize) -> Option<Vec<Priority>> {
    let prio: Vec<Priority> = text
        .split(',')
        .map(|w| w.parse().ok())
        .collect::<Option<_>>()?;
    (prio.len() == n).then_some(prio)
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

/// Removes `files` (regular files and symlinks only, never what a link
/// points to), then the folders under `root` they leave empty, and `root`.
fn remove_files(root: &Path, files: &[PathBuf]) {
    for f in files {
        if let Err(e) = std::fs::remove_file(f) {
            tracing::warn!("{}: not removed: {e}", f.display());
        }
    }
    // Deepest folders first; remove_dir leaves a folder that is not empty.
    let mut dirs: Vec<&Path> = files
        .iter()
        .flat_map(|f| f.ancestors().skip(1))
        .filter(|d| d.starts_with(root))
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.dedup();
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_priorities_round_trip_and_garbage_is_refused() {
        let p = vec![Priority::Skip, Priority::Normal, Priority::High];
        assert_eq!(prio_to_text(&p), "skip,normal,high");
        assert_eq!(prio_from_text("skip,normal,high", 3), Some(p));
        // One word a file, known words only.
        assert_eq!(prio_from_text("skip,normal", 3), None);
        assert_eq!(prio_from_text("skip,normal,high,high", 3), None);
        assert_eq!(prio_from_text("skip,later,high", 3), None);
        assert_eq!(prio_from_text("", 0), None);
    }
}
