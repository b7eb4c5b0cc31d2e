//! The 1 s sampler (rates, progress events, a failed disk stopping its
//! torrent), the periodic fast-resume save and the clean stop.
//!
//! Limits: a `kill -9` loses at most [`SAVE_INTERVAL`] of progress (the
//! pieces since then are hashed again at the next start).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Daemon, SAVE_INTERVAL};
use crate::client::storage::Storage;
use crate::daemon::entry::{Entry, Phase};
use crate::daemon::resume;
use crate::daemon::store::{self, Resume, Save};

impl Daemon {
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

    pub(super) fn save_one(&self, e: &Entry) {
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
