//! Starting and stopping one torrent: the fast-resume check (only pieces
//! the saved stamps do not vouch for are hashed, by [`MAX_CHECKS`]
//! torrents at once), opening it in the session, its tasks (dialer, 1 s
//! tick, DHT, announces), and halting them.
//!
//! Limits: a stopping torrent's tasks get [`STOP_GRACE`] to let go of it
//! before its files are stamped.
//!
//! [`MAX_CHECKS`]: super::MAX_CHECKS

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;

use super::{Daemon, HASH_THREADS, STOP_GRACE};
use crate::client::announce::{announce_loop, Statuses, TrackerStatus};
use crate::client::dht;
use crate::client::meta::Info;
use crate::client::open_resumed_skipping;
use crate::client::peers::Source;
use crate::client::select::Priority;
use crate::client::storage::Storage;
use crate::client::swarm::{dialer, Ctx};
use crate::daemon::entry::{Entry, Live, Phase};
use crate::daemon::resume::{self, Stamp};

impl Daemon {
    /// Starts `entry` in the background: check, then run.
    pub(super) fn spawn_start(
        self: Arc<Self>,
        entry: Arc<Entry>,
        saved: Option<(Vec<bool>, Vec<Stamp>)>,
    ) {
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
    pub(super) fn hash(
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
    pub(super) async fn halt(&self, entry: &Entry, wait: bool) {
        let live = entry.lock().live.take();
        if let Some(live) = live {
            self.halt_live(entry, live, wait).await;
        }
    }

    /// [`Self::halt`] of a run already taken out of the entry.
    pub(super) async fn halt_live(&self, entry: &Entry, mut live: Live, wait: bool) {
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
}
