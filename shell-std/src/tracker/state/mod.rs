//! The tracker's shared state and the two request handlers (one UDP
//! datagram, one HTTP GET). The protocol decisions for UDP come from the
//! core's [`Server`]; this module applies them to the swarm and counts.
//!
//! Locks: the swarms are sharded by info-hash ([`Shards`], one mutex per
//! shard); each UDP worker and the HTTP side has its own front [`State`]
//! (connection-id server, counters, per-source limits) behind its own
//! mutex, so workers meet only on a shard. A request holds its front and
//! then one shard at a time; `/stats` and `/metrics` ([`Tracker`]) lock one
//! front or shard at a time and sum.
//!
//! # Files
//! - `udp.rs`: [`State::handle_udp`], one UDP datagram (BEP 15);
//! - `http.rs`: [`State::handle_http`], one HTTP announce or scrape (BEP 3,
//!   BEP 23 compact replies, BEP 7 `peers6`, BEP 48 scrape);
//! - `stats.rs`: request counters and the summed [`Snapshot`];
//! - `metrics.rs`: `/stats` and `/metrics` ([`Tracker::handle_http`]);
//! - `prefix.rs`: [`Prefix`], who may read them (`--stats-from`);
//! - here: [`Settings`], [`Shards`], [`State`] and [`Tracker`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use ourtorrent_core::id::InfoHash;
use ourtorrent_core::tracker::udp::server::Server;

use super::abuse::Abuse;
use super::db::{self, FlushLatency};
use super::store::SwarmStore;
use super::swarm::{shard_of, Batch, ExpiryStep, Swarms};

mod http;
mod metrics;
mod prefix;
mod stats;
#[cfg(test)]
mod tests;
mod udp;

pub use http::MAX_HTTP_SCRAPE_HASHES;
pub use metrics::rss_bytes;
pub use prefix::Prefix;
pub use stats::{AbuseTotals, RateWindow, Snapshot, Stats, SwarmTotals, RATE_WINDOW_SECS};

/// Tunables of the handlers.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Seconds between announces, told to clients.
    pub interval: u32,
    /// Peers returned when the client does not say.
    pub default_numwant: u32,
    /// Most peers returned to one announce.
    pub max_numwant: u32,
}

/// The swarms, sharded by info-hash ([`shard_of`]), one lock per shard.
#[derive(Debug)]
pub struct Shards {
    shards: Vec<Mutex<Swarms>>,
}

impl Shards {
    /// From one [`Swarms`] per shard (at least one).
    pub fn new(shards: Vec<Swarms>) -> Self {
        Shards {
            shards: shards.into_iter().map(Mutex::new).collect(),
        }
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// True if there is no shard (never, once built).
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Locks shard `i` (recovering from poisoning).
    pub fn lock_index(&self, i: usize) -> Option<MutexGuard<'_, Swarms>> {
        self.shards
            .get(i)
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Locks the shard of `ih`.
    pub fn lock(&self, ih: &InfoHash) -> MutexGuard<'_, Swarms> {
        let i = shard_of(ih, self.shards.len());
        let m = self.shards.get(i).or(self.shards.first());
        match m {
            Some(m) => m.lock().unwrap_or_else(|e| e.into_inner()),
            None => unreachable!("Shards::new is never given zero shards"),
        }
    }
}

/// One front's handlers state: a UDP worker's or the HTTP side's.
pub struct State {
    /// The core's stateless UDP triage.
    pub server: Server,
    /// Swarms in memory (shared by all fronts; empty with another store).
    pub swarms: Arc<Shards>,
    /// Where announces and scrapes go: `swarms`, or Redis.
    pub store: Arc<dyn SwarmStore>,
    /// This front's index (its connection in a store that keeps one each).
    pub front: usize,
    /// Counters.
    pub stats: Stats,
    /// Allowed info-hashes, if restricted.
    pub allow: Option<Arc<HashSet<InfoHash>>>,
    /// Tunables.
    pub settings: Settings,
    /// Per-source limits on bad UDP datagrams.
    pub abuse: Abuse,
    rng: u64,
}

impl State {
    /// New state; `seed` starts the sampling PRNG.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        server: Server,
        swarms: Arc<Shards>,
        store: Arc<dyn SwarmStore>,
        front: usize,
        allow: Option<Arc<HashSet<InfoHash>>>,
        settings: Settings,
        abuse: Abuse,
        seed: u64,
    ) -> Self {
        State {
            server,
            swarms,
            store,
            front,
            stats: Stats::default(),
            allow,
            settings,
            abuse,
            rng: seed | 1,
        }
    }

    fn next_rand(&mut self) -> usize {
        // xorshift64: only picks where a reply's peer list starts.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x as usize
    }

    fn allowed(&self, ih: &InfoHash) -> bool {
        self.allow.as_ref().is_none_or(|a| a.contains(ih))
    }

    fn numwant(&self, asked: Option<u32>) -> u32 {
        asked
            .unwrap_or(self.settings.default_numwant)
            .min(self.settings.max_numwant)
    }
}

/// The whole tracker: one front per UDP worker socket, then the HTTP
/// front (last), over the shared shards.
pub struct Tracker {
    fronts: Vec<Mutex<State>>,
    /// The swarms.
    pub shards: Arc<Shards>,
    /// Who may read `/stats` and `/metrics` (`--stats-from`).
    pub stats_from: Vec<Prefix>,
    /// When the tracker started.
    pub started: std::time::Instant,
    /// The database file, if any (for its size in `/metrics`).
    pub db_path: Option<std::path::PathBuf>,
    /// The SQLite writer's flush latencies, if any.
    pub flush: Option<Arc<FlushLatency>>,
    /// The SQLite journal and checkpoint figures, if any.
    pub journal: Option<Arc<db::JournalStats>>,
    /// Where swarms live (`memory`, or the Redis URL): with Redis, the
    /// torrent, peer and seeder counts of `/stats` and `/metrics` are the
    /// store's approximation ([`super::store::RedisStore::totals`]).
    pub store: String,
    /// The store that counts its own swarms (Redis), if any.
    pub counter: Option<Arc<dyn SwarmStore>>,
    allow_len: Option<usize>,
    rate: Mutex<RateWindow>,
}

impl Tracker {
    /// `udp_fronts` front states for the UDP workers and one for HTTP,
    /// made by `front(i)`.
    pub fn new(
        shards: Arc<Shards>,
        udp_fronts: usize,
        allow_len: Option<usize>,
        mut front: impl FnMut(usize) -> State,
    ) -> Self {
        Tracker {
            fronts: (0..=udp_fronts).map(|i| Mutex::new(front(i))).collect(),
            shards,
            stats_from: Prefix::loopback(),
            started: std::time::Instant::now(),
            db_path: None,
            flush: None,
            journal: None,
            store: "memory".into(),
            counter: None,
            allow_len,
            rate: Mutex::new(RateWindow::default()),
        }
    }

    /// Number of fronts (UDP workers + 1).
    pub fn fronts(&self) -> usize {
        self.fronts.len()
    }

    /// Locks front `i` (the last one, [`Tracker::http_front`], serves HTTP).
    pub fn front(&self, i: usize) -> MutexGuard<'_, State> {
        let m = self.fronts.get(i).or(self.fronts.last());
        match m {
            Some(m) => m.lock().unwrap_or_else(|e| e.into_inner()),
            None => unreachable!("Tracker::new makes at least the HTTP front"),
        }
    }

    /// Index of the HTTP front.
    pub fn http_front(&self) -> usize {
        self.fronts.len().saturating_sub(1)
    }

    /// Drains every shard's changes into one batch, a shard at a time.
    pub fn take_batch(&self) -> Batch {
        let mut b = Batch::default();
        for i in 0..self.shards.len() {
            if let Some(mut s) = self.shards.lock_index(i) {
                let part = s.take_batch();
                b.peers.extend(part.peers);
                b.torrents.extend(part.torrents);
            }
        }
        b
    }

    /// One expiry step on every shard, `budget` peers split among them.
    pub fn expire_step(&self, cutoff: u64, budget: usize) -> ExpiryStep {
        let per = (budget / self.shards.len().max(1)).max(1);
        let mut all = ExpiryStep::default();
        for i in 0..self.shards.len() {
            if let Some(mut s) = self.shards.lock_index(i) {
                let st = s.expire_step(cutoff, per);
                all.removed += st.removed;
                all.checked += st.checked;
                all.wrapped |= st.wrapped;
            }
        }
        all
    }

    /// Makes `ids` the connection ids of every front (e.g. the secrets
    /// shared through Redis changed).
    pub fn set_connection_ids(&self, ids: &ourtorrent_core::tracker::udp::server::ConnectionIds) {
        for i in 0..self.fronts.len() {
            let mut f = self.front(i);
            let limits = *f.server.limits();
            f.server = Server::with_ids(ids.clone(), limits);
        }
    }

    /// Rotates the connection-id secret of every front.
    pub fn rotate_secret(&self, secret: &[u8; ourtorrent_core::tracker::udp::server::SECRET_LEN]) {
        for i in 0..self.fronts.len() {
            self.front(i).server.rotate_secret(secret);
        }
    }

    /// Forgets idle sources in every front's per-source table.
    pub fn prune_abuse(&self, now_ms: u64) {
        for i in 0..self.fronts.len() {
            self.front(i).abuse.prune(now_ms);
        }
    }
}
