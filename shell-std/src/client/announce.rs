//! Announcing to trackers: HTTP and HTTPS (a GET by the shell's one HTTP
//! client, [`super::fetch`]; the core builds the query and decodes the
//! bencoded reply) and UDP (one core sans-IO BEP 15
//! client per tracker, shared by every torrent of the session, so its
//! connection id is reused). Tracker URLs are checked by the core's parser.
//!
//! Every tracker of every BEP 12 tier is announced to (as libtorrent does
//! with `announce_to_all_tiers`); each runs in its own task, re-announcing
//! at the interval the tracker asks for, and sends the peers it learns to
//! the connector. Replies are bounded ([`MAX_HTTP_REPLY`] bytes, the UDP
//! client's own peer limit) and every request has a timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use ourtorrent_core::bencode::Token;
use ourtorrent_core::time::Instant;
use ourtorrent_core::tracker::http::{AnnounceQuery, AnnounceResponse};
use ourtorrent_core::tracker::udp::client::{
    AnnounceParams, Client, ClientConfig, Event, TRANSMIT_BUF_LEN,
};
use ourtorrent_core::tracker::url::{Scheme, TrackerUrl};
use ourtorrent_core::tracker::AddressFamily;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use std::sync::atomic::Ordering::Relaxed;

use ourtorrent_core::tracker::announce::{Announcer, AnnouncerConfig, MAX_TRACKERS};
use ourtorrent_core::tracker::AnnounceEvent;

use super::fetch;
use super::peers::Source;
use super::session::Session;
use super::swarm::Ctx;

/// Largest HTTP tracker reply read.
pub const MAX_HTTP_REPLY: usize = 1 << 20;
/// Time allowed for one announce.
pub const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(20);

/// What we tell a tracker: the core's BEP 15 parameters, also used for
/// HTTP (`num_want` negative: the tracker's default).
pub type Announce = AnnounceParams;

/// A tracker's answer.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    /// Seconds to the next announce.
    pub interval: u32,
    /// Seconds before which the tracker wants no announce (HTTP only).
    pub min_interval: Option<u32>,
    /// Seeders, if told.
    pub seeders: Option<u32>,
    /// Leechers, if told.
    pub leechers: Option<u32>,
    /// Peers.
    pub peers: Vec<SocketAddr>,
}

/// A tracker's state for the tables.
#[derive(Clone, Debug)]
pub struct TrackerStatus {
    /// BEP 12 tier.
    pub tier: usize,
    /// URL.
    pub url: String,
    /// "connecting", "ok", or the error.
    pub status: String,
    /// Last reply.
    pub reply: Option<Reply>,
    /// The tracker knows we have everything: we started complete, or it
    /// acknowledged our `completed` announce.
    pub told_complete: bool,
}

/// The session's tracker clients: one core BEP 15 client per UDP tracker
/// (address and BEP 41 path), driven by its own task over its own socket,
/// so the connection id it obtained is reused by every announce of every
/// torrent until it expires (BEP 15: 2 minutes); HTTP announces are one
/// request each.
#[derive(Default)]
pub struct Trackers {
    udp: Mutex<HashMap<(SocketAddr, String), mpsc::Sender<UdpJob>>>,
}

type UdpJob = (Announce, oneshot::Sender<anyhow::Result<Reply>>);

impl Trackers {
    /// Announces once to `url` (checked by the core's tracker URL parser).
    pub async fn announce(&self, url: &str, a: &Announce) -> anyhow::Result<Reply> {
        let u = TrackerUrl::parse(url).map_err(|e| anyhow!("bad tracker URL: {e}"))?;
        tokio::time::timeout(ANNOUNCE_TIMEOUT, async {
            match u.scheme {
                Scheme::Http | Scheme::Https => http(url, &u, a).await,
                Scheme::Udp => self.udp(&u, a).await,
            }
        })
        .await
        .map_err(|_| anyhow!("timed out"))?
    }

    async fn udp(&self, u: &TrackerUrl<'_>, a: &Announce) -> anyhow::Result<Reply> {
        let addr = tokio::net::lookup_host((u.host, u.port))
            .await?
            .next()
            .context("tracker host has no address")?;
        let key = (addr, u.path.to_string());
        let tx = {
            let mut m = self.udp.lock().unwrap_or_else(|e| e.into_inner());
            match m.get(&key) {
                Some(tx) if !tx.is_closed() => tx.clone(),
                _ => {
                    let (tx, rx) = mpsc::channel(64);
                    tokio::spawn(udp_endpoint(addr, u.path.to_string(), rx));
                    m.insert(key, tx.clone());
                    tx
                }
            }
        };
        let (reply, wait) = oneshot::channel();
        tx.send((*a, reply))
            .await
            .map_err(|_| anyhow!("udp tracker task ended"))?;
        wait.await.map_err(|_| anyhow!("udp tracker task ended"))?
    }
}

/// Announces over HTTP or HTTPS (BEP 3): the core builds the query and
/// decodes the bencoded reply; [`fetch::get`] does the GET.
async fn http(url: &str, u: &TrackerUrl<'_>, a: &Announce) -> anyhow::Result<Reply> {
    let q = AnnounceQuery {
        info_hash: a.info_hash,
        peer_id: a.peer_id,
        port: a.port,
        uploaded: a.uploaded,
        downloaded: a.downloaded,
        left: a.left,
        event: a.event,
        compact: true,
        numwant: u32::try_from(a.num_want).ok(),
        key: None,
    };
    let mut query = String::new();
    q.write_to(&mut query).map_err(|_| anyhow!("query"))?;
    let url = url.split('#').next().unwrap_or_default();
    let sep = if u.path.contains('?') { '&' } else { '?' };
    let slash = if u.path.is_empty() { "/" } else { "" };
    let payload = fetch::get(&format!("{url}{slash}{sep}{query}"), MAX_HTTP_REPLY)
        .await?
        .body;
    let mut tokens = vec![Token::EMPTY; payload.len() / 2 + 16];
    let r = AnnounceResponse::decode(&payload, &mut tokens).map_err(|e| anyhow!("{e}"))?;
    if let Some(f) = r.failure_reason {
        bail!("tracker: {}", String::from_utf8_lossy(f));
    }
    Ok(Reply {
        interval: r.interval,
        min_interval: r.min_interval,
        seeders: r.complete,
        leechers: r.incomplete,
        peers: r.all_peers().collect(),
    })
}

/// One UDP tracker's task: a socket and a core BEP 15 client that keeps
/// its connection id between announces, serving them one at a time.
async fn udp_endpoint(addr: SocketAddr, path: String, mut jobs: mpsc::Receiver<UdpJob>) {
    let bind: SocketAddr = if addr.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = match UdpSocket::bind(bind).await {
        Ok(s) if s.connect(addr).await.is_ok() => s,
        _ => {
            while let Some((_, reply)) = jobs.recv().await {
                let _ = reply.send(Err(anyhow!("cannot open a UDP socket to {addr}")));
            }
            return;
        }
    };
    let mut cfg = ClientConfig {
        family: AddressFamily::of(&addr),
        ..ClientConfig::default()
    };
    if !path.is_empty() && path != "/announce" {
        let _ = cfg.url_data.extend_from_slice(path.as_bytes());
    }
    let mut client = Client::new(cfg, || {
        let mut b = [0u8; 4];
        let _ = getrandom::fill(&mut b);
        u32::from_ne_bytes(b)
    });
    let epoch = std::time::Instant::now();
    let now = move || Instant::from_millis(epoch.elapsed().as_millis() as u64);
    let mut tx = [0u8; TRANSMIT_BUF_LEN];
    let mut rx = vec![0u8; 2048];
    while let Some((a, reply)) = jobs.recv().await {
        let r = tokio::time::timeout(ANNOUNCE_TIMEOUT, async {
            client.announce(now(), a).map_err(|e| anyhow!("{e}"))?;
            loop {
                while let Some(n) = client.poll_transmit(now(), &mut tx) {
                    sock.send(&tx[..n]).await?;
                }
                if let Some(ev) = client.poll_event() {
                    return match ev {
                        Event::Announced(r) => Ok(Reply {
                            interval: r.interval,
                            min_interval: None,
                            seeders: Some(r.seeders),
                            leechers: Some(r.leechers),
                            peers: r.peers.iter().copied().collect(),
                        }),
                        Event::TrackerError(m) => {
                            bail!("tracker: {}", String::from_utf8_lossy(&m))
                        }
                        Event::Failed(e) => bail!("{e}"),
                        Event::Scraped(_) => bail!("unexpected scrape reply"),
                    };
                }
                let wait = client
                    .poll_timeout()
                    .map(|t| t.millis().saturating_sub(now().millis()))
                    .unwrap_or(1000);
                tokio::select! {
                    r = sock.recv(&mut rx) => {
                        let n = r?;
                        if let Err(e) = client.handle_datagram(now(), &rx[..n]) {
                            tracing::debug!("udp tracker: {e}");
                        }
                    }
                    _ = tokio::time::sleep(Duration::from_millis(wait)) => client.handle_timeout(now()),
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err(anyhow!("timed out")));
        if r.is_err() {
            // Whatever was in flight is abandoned; the connection id stays.
            client.cancel();
        }
        let _ = reply.send(r);
    }
}

/// The tracker table's rows, shared with the UI.
pub type Statuses = Arc<Mutex<Vec<TrackerStatus>>>;

/// Peers asked of each tracker per announce.
const NUM_WANT: i32 = 50;

pub(crate) fn announce_params(ctx: &Ctx, event: AnnounceEvent, key: u32) -> Announce {
    Announce {
        info_hash: ctx.info.info_hash,
        peer_id: ctx.peer_id,
        port: ctx.listen.port(),
        uploaded: ctx.stats.uploaded.load(Relaxed),
        downloaded: ctx.stats.downloaded.load(Relaxed),
        // BEP 3 "bytes still to download": of the wanted files only (as
        // libtorrent does), so a finished selective download is a seed.
        left: ctx
            .wanted_bytes()
            .saturating_sub(ctx.wanted_verified_bytes()),
        event,
        key,
        num_want: NUM_WANT,
    }
}

/// Time allowed for the announces at shutdown (`completed`, `stopped`).
pub const STOP_ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(3);

/// Drives the core's [`Announcer`] for one torrent over the session's
/// tracker clients: `started`, regular announces at the trackers'
/// intervals, `completed` when the download completes, backoff after
/// failures; and once `stop` turns true, `completed` (if still owed) and
/// `stopped` to each tracker that was started, within
/// [`STOP_ANNOUNCE_TIMEOUT`]. Every tracker of every tier is used (as
/// libtorrent's `announce_to_all_tiers` and `announce_to_all_trackers`).
pub(crate) async fn announce_loop(
    session: Arc<Session>,
    ctx: Arc<Ctx>,
    statuses: Statuses,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let key = super::random_u32();
    let cfg = AnnouncerConfig {
        all_tiers: true,
        all_trackers: true,
        ..AnnouncerConfig::default()
    };
    let mut ann: Announcer = Announcer::new(cfg);
    let mut urls = Vec::new();
    for (tier, url) in &ctx.info.trackers {
        if ann.add_tracker(*tier).is_ok() {
            urls.push(url.clone());
        } else {
            tracing::warn!(%url, "more than {MAX_TRACKERS} trackers: not used");
        }
    }
    if ctx.complete.load(Relaxed) {
        // Complete from the start: `completed` is never owed.
        ann.set_complete(ctx.now());
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let mut deadline = None;
    loop {
        let now = ctx.now();
        if !ann.is_complete() && ctx.complete.load(Relaxed) {
            ann.set_complete(now);
        }
        while let Some((idx, event)) = ann.poll_announce(now) {
            let (Some(url), tx, session) = (urls.get(idx).cloned(), tx.clone(), session.clone())
            else {
                continue;
            };
            let a = announce_params(&ctx, event, key);
            let limit = if deadline.is_some() {
                STOP_ANNOUNCE_TIMEOUT
            } else {
                ANNOUNCE_TIMEOUT
            };
            tokio::spawn(async move {
                let r = tokio::time::timeout(limit, session.trackers.announce(&url, &a))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
                let _ = tx.send((idx, url, event, r)).await;
            });
        }
        if deadline.is_some() && ann.is_finished() {
            return;
        }
        let wait = ann
            .poll_timeout()
            .map(|t| t.millis().saturating_sub(now.millis()))
            .unwrap_or(u64::MAX)
            // Wake at least every 500 ms to see the download complete.
            .min(500);
        tokio::select! {
            Some((idx, url, event, r)) = rx.recv() => {
                let now = ctx.now();
                let mut rows = statuses.lock().unwrap_or_else(|e| e.into_inner());
                match r {
                    Ok(reply) => {
                        ctx.learn(&reply.peers, Source::Tracker);
                        ann.on_reply(now, idx, reply.interval, reply.min_interval);
                        if let Some(row) = rows.get_mut(idx) {
                            row.status = "ok".into();
                            row.reply = Some(reply);
                            row.told_complete |= event == AnnounceEvent::Completed;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%url, "announce: {e:#}");
                        ann.on_failure(now, idx);
                        if let Some(row) = rows.get_mut(idx) {
                            row.status = format!("{e:#}");
                        }
                    }
                }
            }
            r = stop.changed(), if deadline.is_none() => {
                if r.is_err() || *stop.borrow() {
                    ann.stop(ctx.now());
                    deadline = Some(tokio::time::Instant::now() + STOP_ANNOUNCE_TIMEOUT);
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return;
        }
    }
}
