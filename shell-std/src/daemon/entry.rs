//! One torrent of the daemon ([`Entry`]): where it is ([`Phase`]), what
//! runs while it runs (a client `Ctx` and its announcer), what it keeps
//! while it does not (its pieces, byte counters, rates, the last resume
//! data written), and the [`View`] the API shows of it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;

use super::store::Resume;
use crate::client::announce::{Statuses, TrackerStatus};
use crate::client::meta::Info;
use crate::client::select::Priority;
use crate::client::swarm::Ctx;

/// Where a torrent is.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Hashing what is on disk.
    Checking,
    /// Running (downloading or seeding).
    Live,
    /// Paused by the user.
    Paused,
    /// Stopped by an error (the message).
    Error(String),
}

/// A running torrent.
pub(super) struct Live {
    pub(super) ctx: Arc<Ctx>,
    pub(super) statuses: Statuses,
    pub(super) stop: watch::Sender<bool>,
    pub(super) announcer: tokio::task::JoinHandle<()>,
}

/// What changes of a torrent.
pub(super) struct State {
    pub(super) phase: Phase,
    pub(super) live: Option<Live>,
    /// Pieces verified, as of the last stop (or start).
    pub(super) have: Vec<bool>,
    /// Bytes received and sent before the current run.
    pub(super) base_down: u64,
    pub(super) base_up: u64,
    /// Rates over the last sample (bytes/s) and the counters then.
    pub(super) down_rate: u64,
    pub(super) up_rate: u64,
    pub(super) last: (u64, u64, Instant),
    /// Pieces hashed and found at the last start; pieces trusted from the
    /// fast-resume data without hashing.
    pub(super) hashed: u32,
    pub(super) trusted: u32,
    /// Time from start to running, last start.
    pub(super) start_ms: u64,
    /// The last resume data written (nothing is written when unchanged).
    pub(super) saved: Option<Resume>,
    /// `have` is what is on disk (the torrent ran, or its saved data was
    /// loaded): only then is resume data written, so a torrent that never
    /// got past its check cannot overwrite good data with nothing.
    pub(super) known: bool,
    /// File priorities (empty: every file normal); applied at each start.
    pub(super) prio: Vec<Priority>,
    /// Its own rate limits, bytes/s (0: none); applied at each start.
    pub(super) limits: (u64, u64),
}

impl State {
    /// A torrent not running yet: paused, or about to be checked.
    pub(super) fn new(paused: bool, have: Vec<bool>, saved: Option<Resume>) -> State {
        State {
            phase: if paused {
                Phase::Paused
            } else {
                Phase::Checking
            },
            live: None,
            have,
            base_down: 0,
            base_up: 0,
            down_rate: 0,
            up_rate: 0,
            last: (0, 0, Instant::now()),
            hashed: 0,
            trusted: 0,
            start_ms: 0,
            saved,
            known: false,
            prio: Vec::new(),
            limits: (0, 0),
        }
    }
}

/// One torrent of the daemon.
pub struct Entry {
    /// Its id in the API.
    pub id: i64,
    /// Its metadata.
    pub info: Info,
    /// Where its data lives.
    pub root: PathBuf,
    /// Peers given when it was added.
    pub peers: Vec<SocketAddr>,
    pub(super) state: Mutex<State>,
}

impl Entry {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The running torrent, if it runs.
    pub fn ctx(&self) -> Option<Arc<Ctx>> {
        self.lock().live.as_ref().map(|l| l.ctx.clone())
    }

    /// Its trackers' status rows (empty unless running).
    pub fn trackers(&self) -> Vec<TrackerStatus> {
        self.lock()
            .live
            .as_ref()
            .map(|l| l.statuses.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Each file's priority now (in torrent order).
    pub fn priorities(&self) -> Vec<Priority> {
        let st = self.lock();
        match &st.live {
            Some(l) => l.ctx.file_priorities(),
            None => (0..self.info.files.len())
                .map(|i| st.prio.get(i).copied().unwrap_or_default())
                .collect(),
        }
    }

    /// Verified pieces now.
    pub fn have(&self) -> Vec<bool> {
        let st = self.lock();
        match &st.live {
            Some(l) => l.ctx.have_flags(),
            None => st.have.clone(),
        }
    }

    /// A snapshot for the API.
    pub fn view(&self) -> View {
        let st = self.lock();
        let (snap, failed) = match &st.live {
            Some(l) => {
                let s = l.ctx.snapshot();
                let f = s.failed.clone();
                (Some(s), f)
            }
            None => (None, None),
        };
        let pieces = self.info.pieces();
        let (verified, pieces_verified, down, up, peers, seeds, complete) = match &snap {
            Some(s) => (
                s.verified,
                s.pieces_verified,
                st.base_down + s.downloaded,
                st.base_up + s.uploaded,
                s.peers,
                s.seeds,
                s.complete,
            ),
            None => {
                let n = st.have.iter().filter(|h| **h).count() as u32;
                let bytes = st
                    .have
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| **h)
                    .map(|(i, _)| piece_len(&self.info, i as u32))
                    .sum();
                (
                    bytes,
                    n,
                    st.base_down,
                    st.base_up,
                    0,
                    0,
                    n == pieces && pieces > 0,
                )
            }
        };
        let state = match (&st.phase, failed) {
            (_, Some(why)) => ("error", Some(why)),
            (Phase::Error(why), _) => ("error", Some(why.clone())),
            (Phase::Checking, _) => ("checking", None),
            (Phase::Paused, _) => ("paused", None),
            (Phase::Live, _) if complete => ("seeding", None),
            (Phase::Live, _) => ("downloading", None),
        };
        let left = self.info.total.saturating_sub(verified);
        let live = st.live.is_some();
        View {
            id: self.id,
            info_hash: self.info.info_hash.to_string(),
            name: self.info.name.clone(),
            size: self.info.total,
            progress: if self.info.total == 0 {
                1.0
            } else {
                verified as f64 / self.info.total as f64
            },
            state: state.0,
            error: state.1,
            down_rate: if live { st.down_rate } else { 0 },
            up_rate: if live { st.up_rate } else { 0 },
            downloaded: down,
            uploaded: up,
            verified,
            pieces,
            pieces_verified,
            peers,
            seeds,
            eta: (live && left > 0 && st.down_rate > 0).then(|| left / st.down_rate),
            hashed_at_start: st.hashed,
            trusted_at_start: st.trusted,
            start_ms: st.start_ms,
            fetched: snap.as_ref().map_or(0, |s| s.fetched),
            root: self.root.display().to_string(),
            download_limit: st.limits.0,
            upload_limit: st.limits.1,
        }
    }
}

/// Bytes in piece `i`.
fn piece_len(info: &Info, i: u32) -> u64 {
    let start = u64::from(i) * info.piece_len;
    info.total.saturating_sub(start).min(info.piece_len)
}

/// A torrent as the API shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct View {
    /// Its id.
    pub id: i64,
    /// Its info-hash (hex).
    pub info_hash: String,
    /// Its name.
    pub name: String,
    /// Bytes in all.
    pub size: u64,
    /// Verified bytes / size (0–1).
    pub progress: f64,
    /// `checking`, `downloading`, `seeding`, `paused` or `error`.
    pub state: &'static str,
    /// The error, in state `error`.
    pub error: Option<String>,
    /// Payload bytes/s received over the last second.
    pub down_rate: u64,
    /// Payload bytes/s sent over the last second.
    pub up_rate: u64,
    /// Payload bytes received, all runs.
    pub downloaded: u64,
    /// Payload bytes sent, all runs.
    pub uploaded: u64,
    /// Bytes of verified pieces.
    pub verified: u64,
    /// Pieces in all.
    pub pieces: u32,
    /// Pieces verified.
    pub pieces_verified: u32,
    /// Connected peers.
    pub peers: u32,
    /// Connected peers that have everything.
    pub seeds: u32,
    /// Seconds to completion at the current rate (none when idle or done).
    pub eta: Option<u64>,
    /// Pieces hashed at the last start (0 after a clean stop).
    pub hashed_at_start: u32,
    /// Pieces trusted from the fast-resume data at the last start.
    pub trusted_at_start: u32,
    /// Milliseconds from the last start to running.
    pub start_ms: u64,
    /// Pieces downloaded and verified since the last start.
    pub fetched: u32,
    /// Where the data lives.
    pub root: String,
    /// Its own download limit, bytes/s (0: none; the global one applies
    /// too).
    pub download_limit: u64,
    /// Its own upload limit, bytes/s (0: none).
    pub upload_limit: u64,
}

impl Entry {
    pub(super) fn view_unlocked(&self, st: MutexGuard<'_, State>) -> View {
        drop(st);
        self.view()
    }
}
