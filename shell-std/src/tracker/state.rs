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

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use ourtorrent_core::id::InfoHash;
use ourtorrent_core::time::Instant;
use ourtorrent_core::tracker::http::{self, AnnounceResponse, Peers};
use ourtorrent_core::tracker::udp::server::{error_reply, Decision, DropReason, Server, SwarmInfo};
use ourtorrent_core::tracker::udp::{
    encode_scrape_response, ParseErrorKind, TorrentStats, MAX_SCRAPE_HASHES,
};
use ourtorrent_core::tracker::{AddressFamily, AnnounceEvent};
use serde_json::json;

use super::abuse::{Abuse, Verdict};
use super::db::{self, FlushLatency, FLUSH_BUCKETS};
use super::store::{StoreError, SwarmStore};
use super::swarm::{shard_of, Announce, Batch, Counts, ExpiryStep, Swarms};
use super::MAX_DATAGRAM;

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

/// Request and error counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Answered requests by kind (`udp_connect`, `http_announce`, ...).
    pub requests: BTreeMap<&'static str, u64>,
    /// Errors and drops by reason.
    pub errors: BTreeMap<&'static str, u64>,
    /// All requests received (answered or not).
    pub total: u64,
}

impl Stats {
    fn req(&mut self, kind: &'static str) {
        *self.requests.entry(kind).or_default() += 1;
    }

    /// Counts an error or drop.
    pub fn err(&mut self, reason: &'static str) {
        *self.errors.entry(reason).or_default() += 1;
    }
}

/// An address prefix (`10.0.0.0/8`, `::1`, `0.0.0.0/0`) for `--stats-from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// True if `ip` is inside (a v4-mapped v6 address counts as its v4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(p) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(p) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    /// 127.0.0.0/8 and ::1: who may read `/stats` by default.
    pub fn loopback() -> Vec<Prefix> {
        vec![
            Prefix {
                addr: IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 0)),
                len: 8,
            },
            Prefix {
                addr: IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
                len: 128,
            },
        ]
    }
}

impl std::str::FromStr for Prefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{a}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = if l.is_empty() {
            max
        } else {
            l.parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("`/{l}`: prefix length must be 0..={max}"))?
        };
        Ok(Prefix { addr, len })
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
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

/// Bencoded replies are served as `text/plain`, as trackers usually do.
const BENCODE: &str = "text/plain";

/// Most info-hashes in one HTTP scrape (as for UDP, BEP 15's ~74).
pub const MAX_HTTP_SCRAPE_HASHES: usize = ourtorrent_core::tracker::udp::MAX_SCRAPE_HASHES;

/// A BEP 3 failure reply (HTTP 200, `d14:failure reason...e`).
fn failure(reason: &str) -> (u16, &'static str, Vec<u8>) {
    let mut out = vec![0u8; 64 + reason.len()];
    let n = http::encode_failure(reason.as_bytes(), &mut out).unwrap_or(0);
    out.truncate(n);
    (200, BENCODE, out)
}

fn drop_reason(r: &DropReason) -> &'static str {
    match r {
        DropReason::BadConnectionId => "udp_bad_connection_id",
        DropReason::OutputTooSmall => "udp_output_too_small",
        DropReason::Malformed(e) => match e.kind {
            ParseErrorKind::Truncated => "udp_truncated",
            ParseErrorKind::BadProtocolId => "udp_bad_protocol_id",
            _ => "udp_malformed",
        },
    }
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

    /// Handles one UDP datagram at `now_ms` (ms since the Unix epoch);
    /// returns the length of the reply written into `out`, if any. A
    /// datagram longer than [`MAX_DATAGRAM`] is dropped as oversized.
    pub fn handle_udp(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        self.stats.total += 1;
        match self.abuse.check(from.ip(), now_ms) {
            Verdict::Pass => {}
            Verdict::Throttled => {
                self.stats.err("udp_throttled");
                return None;
            }
            Verdict::Ignored => {
                self.stats.err("udp_ignored_source");
                return None;
            }
        }
        if datagram.len() > MAX_DATAGRAM {
            self.stats.err("udp_oversized");
            self.abuse.bad(from.ip(), now_ms);
            return None;
        }
        match self.server.handle(Instant(now_ms), from, datagram, out) {
            Decision::Connect(n) => {
                self.stats.req("udp_connect");
                Some(n)
            }
            Decision::Error(n) => {
                self.stats.err("udp_malformed_replied");
                self.abuse.bad(from.ip(), now_ms);
                Some(n)
            }
            Decision::Drop(r) => {
                self.stats.err(drop_reason(&r));
                if r != DropReason::OutputTooSmall {
                    self.abuse.bad(from.ip(), now_ms);
                }
                None
            }
            Decision::Announce(a) => {
                let refuse = |st: &mut State, reason, msg: &[u8], out: &mut [u8]| {
                    st.stats.err(reason);
                    error_reply(datagram.len(), a.transaction_id, msg, out).ok()
                };
                if !self.allowed(&a.info_hash) {
                    return refuse(self, "not_allowed", b"info-hash not allowed", out);
                }
                let addr = SocketAddr::new(from.ip(), a.port);
                let ann = Announce {
                    info_hash: a.info_hash,
                    addr,
                    event: a.event,
                    seeder: a.left == 0,
                };
                let want = if a.event == AnnounceEvent::Stopped {
                    0
                } else {
                    self.numwant(u32::try_from(a.num_want).ok())
                };
                let mut req = a;
                req.num_want = i32::try_from(want).unwrap_or(i32::MAX);
                let start = self.next_rand();
                let mut reply = Err(());
                let (server, front) = (&self.server, self.front);
                // No Arc clone here: its count would be one cache line
                // shared by every worker.
                let done = self.store.announce(
                    front,
                    &ann,
                    now_ms,
                    want as usize,
                    start,
                    &mut |c, peers| {
                        let info = SwarmInfo {
                            interval: self.settings.interval,
                            leechers: c.leechers,
                            seeders: c.seeders,
                        };
                        reply = server
                            .announce_reply(&req, datagram.len(), &from, info, peers, out)
                            .map_err(drop);
                    },
                );
                match done {
                    Ok(()) => {}
                    Err(StoreError::TorrentLimit) => {
                        return refuse(self, "torrent_limit", b"tracker full", out);
                    }
                    Err(StoreError::Unavailable) => {
                        return refuse(self, "store_unavailable", b"swarm store unavailable", out);
                    }
                }
                match reply {
                    Ok(n) => {
                        self.stats.req("udp_announce");
                        Some(n)
                    }
                    Err(_) => {
                        self.stats.err("udp_output_too_small");
                        None
                    }
                }
            }
            Decision::Scrape(s) => {
                let (store, front) = (&self.store, self.front);
                // On the stack: the parser bounds a scrape's hashes at the
                // server's limit, the default MAX_SCRAPE_HASHES (a larger
                // limit is refused here rather than answered in part).
                if s.info_hashes.len() > MAX_SCRAPE_HASHES {
                    self.stats.err("udp_malformed_replied");
                    let msg = b"too many info-hashes";
                    return error_reply(datagram.len(), s.transaction_id, msg, out).ok();
                }
                let zero = Counts {
                    seeders: 0,
                    leechers: 0,
                    completed: 0,
                };
                let mut counts = [zero; MAX_SCRAPE_HASHES];
                let mut n = 0;
                for (slot, ih) in counts.iter_mut().zip(s.info_hashes.iter()) {
                    let Ok(c) = store.counts(front, &ih) else {
                        self.stats.err("store_unavailable");
                        let msg = b"swarm store unavailable";
                        return error_reply(datagram.len(), s.transaction_id, msg, out).ok();
                    };
                    *slot = c;
                    n += 1;
                }
                let stats = counts.iter().take(n).map(|c| TorrentStats {
                    seeders: c.seeders,
                    completed: c.completed,
                    leechers: c.leechers,
                });
                match encode_scrape_response(s.transaction_id, stats, out) {
                    Ok(n) => {
                        self.stats.req("udp_scrape");
                        Some(n)
                    }
                    Err(_) => {
                        self.stats.err("udp_output_too_small");
                        None
                    }
                }
            }
        }
    }

    /// Handles `GET target` from `peer` at `now_ms`: (HTTP status,
    /// content type, body). Queries are parsed and replies encoded by the
    /// core's `tracker::http` codec; refusals are BEP 3 `failure reason`s.
    pub fn handle_http(
        &mut self,
        now_ms: u64,
        peer: SocketAddr,
        target: &str,
    ) -> (u16, &'static str, Vec<u8>) {
        self.stats.total += 1;
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        match path {
            "/announce" => self.http_announce(now_ms, peer, query),
            "/scrape" => self.http_scrape(query),
            _ => {
                self.stats.err("http_not_found");
                (404, "text/plain", b"not found\n".to_vec())
            }
        }
    }

    fn http_announce(
        &mut self,
        now_ms: u64,
        peer: SocketAddr,
        query: &str,
    ) -> (u16, &'static str, Vec<u8>) {
        let q = match http::parse_announce_query(query.as_bytes()) {
            Ok(q) => q,
            Err(e) => {
                self.stats.err("http_bad_announce");
                return failure(&e.to_string());
            }
        };
        if !self.allowed(&q.info_hash) {
            self.stats.err("not_allowed");
            return failure("info-hash not allowed");
        }
        let addr = SocketAddr::new(peer.ip(), q.port);
        let ann = Announce {
            info_hash: q.info_hash,
            addr,
            event: q.event,
            seeder: q.left == 0,
        };
        let want = if q.event == AnnounceEvent::Stopped {
            0
        } else {
            self.numwant(q.numwant) as usize
        };
        let start = self.next_rand();
        let mut got: Option<(Counts, Vec<SocketAddr>)> = None;
        let store = self.store.clone();
        let done = store.announce(self.front, &ann, now_ms, want, start, &mut |c, peers| {
            got = Some((c, peers.collect()));
        });
        match done {
            Ok(()) => {}
            Err(StoreError::TorrentLimit) => {
                self.stats.err("torrent_limit");
                return failure("tracker full");
            }
            Err(StoreError::Unavailable) => {
                self.stats.err("store_unavailable");
                return failure("swarm store unavailable");
            }
        }
        let Some((counts, peers)) = got else {
            self.stats.err("http_encode");
            return failure("internal error");
        };
        // Always compact (BEP 23 lets a tracker answer compact even to
        // `compact=0`; the core encodes only that model): IPv4 peers in
        // `peers`, IPv6 peers in `peers6` (BEP 7).
        let mut out = vec![0u8; 256 + want * 24];
        let mut v4 = vec![0u8; want * AddressFamily::V4.peer_len()];
        let mut v6 = vec![0u8; want * AddressFamily::V6.peer_len()];
        let sample = || peers.iter().copied();
        let mut r = AnnounceResponse::new(self.settings.interval);
        r.min_interval = Some((self.settings.interval / 2).max(1));
        r.complete = Some(counts.seeders);
        r.incomplete = Some(counts.leechers);
        r.peers = Peers::Compact(http::compact_peers(sample(), AddressFamily::V4, &mut v4));
        r.peers6 = http::compact_peers(sample(), AddressFamily::V6, &mut v6);
        let encoded = http::encode_announce_response(&r, &mut out);
        match encoded {
            Ok(n) => {
                out.truncate(n);
                self.stats.req("http_announce");
                (200, BENCODE, out)
            }
            Err(_) => {
                self.stats.err("http_encode");
                failure("internal error")
            }
        }
    }

    fn http_scrape(&mut self, query: &str) -> (u16, &'static str, Vec<u8>) {
        let mut buf = [InfoHash::default(); MAX_HTTP_SCRAPE_HASHES];
        let hashes = match http::parse_scrape_query(query.as_bytes(), &mut buf) {
            Ok([]) => {
                self.stats.err("http_bad_scrape");
                return failure("full scrape is not supported: give info_hash");
            }
            Ok(h) => h,
            Err(e) => {
                self.stats.err("http_bad_scrape");
                return failure(&e.to_string());
            }
        };
        let (store, front) = (self.store.clone(), self.front);
        let entries: Result<Vec<(InfoHash, TorrentStats)>, StoreError> = hashes
            .iter()
            .map(|ih| {
                let c = store.counts(front, ih)?;
                let s = TorrentStats {
                    seeders: c.seeders,
                    completed: c.completed,
                    leechers: c.leechers,
                };
                Ok((*ih, s))
            })
            .collect();
        let Ok(mut entries) = entries else {
            self.stats.err("store_unavailable");
            return failure("swarm store unavailable");
        };
        // Bencode dict keys are unique: a hash asked twice is answered once.
        entries.sort_unstable_by_key(|e| e.0);
        entries.dedup_by_key(|e| e.0);
        let mut out = vec![0u8; 64 + entries.len() * 100];
        match http::encode_scrape_response(&mut entries, &mut out) {
            Ok(n) => {
                out.truncate(n);
                self.stats.req("http_scrape");
                (200, BENCODE, out)
            }
            Err(_) => {
                self.stats.err("http_encode");
                failure("internal error")
            }
        }
    }
}

/// Summed figures of every shard.
#[derive(Debug, Default)]
pub struct SwarmTotals {
    torrents: usize,
    peers: usize,
    seeders: usize,
    dirty: usize,
    /// Peers not stored because their torrent was full.
    pub peer_limit_hits: u64,
    completed_total: u64,
}

impl SwarmTotals {
    fn add(&mut self, s: &Swarms) {
        self.torrents += s.torrent_count();
        self.peers += s.peer_count();
        self.seeders += s.seeder_count();
        self.dirty += s.dirty_count();
        self.peer_limit_hits += s.peer_limit_hits;
        self.completed_total += s.completed_total();
    }

    /// Torrents tracked.
    pub fn torrent_count(&self) -> usize {
        self.torrents
    }

    /// Peers stored.
    pub fn peer_count(&self) -> usize {
        self.peers
    }

    /// Seeders stored.
    pub fn seeder_count(&self) -> usize {
        self.seeders
    }

    /// Rows waiting for the writer.
    pub fn dirty_count(&self) -> usize {
        self.dirty
    }

    /// Completed announces over all torrents.
    pub fn completed_total(&self) -> u64 {
        self.completed_total
    }
}

/// Summed per-source-limit figures of every front.
#[derive(Debug, Default)]
pub struct AbuseTotals {
    sources: usize,
    throttled: u64,
    ignored: u64,
    bans: u64,
    untracked: u64,
}

/// Every figure of `/stats` and `/metrics`, summed over fronts and shards.
#[derive(Debug, Default)]
pub struct Snapshot {
    stats: Stats,
    abuse: AbuseTotals,
    swarms: SwarmTotals,
    /// Requests answered by each UDP worker, by kind.
    workers: Vec<BTreeMap<&'static str, u64>>,
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

/// Seconds over which `/stats` `requests_per_second` is averaged.
pub const RATE_WINDOW_SECS: u64 = 10;

/// Requests per second over the last [`RATE_WINDOW_SECS`]: samples of the
/// request total (one a second, by the shell's timer), the rate taken
/// between the oldest kept sample and the newest.
#[derive(Debug, Default)]
pub struct RateWindow {
    /// (when, requests received so far), oldest first; at most one more
    /// than the window's seconds.
    samples: std::collections::VecDeque<(std::time::Instant, u64)>,
}

impl RateWindow {
    /// Records the total at `at` and forgets samples older than the window.
    pub fn sample(&mut self, at: std::time::Instant, total: u64) {
        self.samples.push_back((at, total));
        let window = std::time::Duration::from_secs(RATE_WINDOW_SECS);
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(t, _)| at.saturating_duration_since(*t) >= window)
        {
            self.samples.pop_front();
        }
    }

    /// Requests per second between the oldest and newest sample (0 until
    /// there are two).
    pub fn rate(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
                n1.saturating_sub(*n0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// Seconds the rate is taken over (up to [`RATE_WINDOW_SECS`]).
    pub fn span_secs(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, _)), Some((t1, _))) => t1.saturating_duration_since(*t0).as_secs_f64(),
            _ => 0.0,
        }
    }
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

    /// Handles `GET target` from `peer` at `now_ms`: `/stats` and
    /// `/metrics` here (they read every front and shard), the rest on the
    /// HTTP front ([`State::handle_http`]).
    pub fn handle_http(
        &self,
        now_ms: u64,
        peer: SocketAddr,
        target: &str,
    ) -> (u16, &'static str, Vec<u8>) {
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        let kind = match path {
            "/stats" => "http_stats",
            "/metrics" => "http_metrics",
            _ => {
                return self
                    .front(self.http_front())
                    .handle_http(now_ms, peer, target)
            }
        };
        {
            let mut f = self.front(self.http_front());
            f.stats.total += 1;
            if !self.stats_from.iter().any(|p| p.contains(peer.ip())) {
                f.stats.err("http_stats_forbidden");
                return (
                    403,
                    "text/plain",
                    b"forbidden (see --stats-from)\n".to_vec(),
                );
            }
            f.stats.req(kind);
        }
        if kind == "http_stats" {
            (
                200,
                "application/json",
                self.stats_json().to_string().into_bytes(),
            )
        } else {
            (
                200,
                "text/plain; version=0.0.4",
                self.metrics_text().into_bytes(),
            )
        }
    }

    /// Sums every front and shard, one lock at a time.
    pub fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::default();
        for i in 0..self.fronts.len() {
            let f = self.front(i);
            for (k, v) in &f.stats.requests {
                *snap.stats.requests.entry(k).or_default() += v;
            }
            for (k, v) in &f.stats.errors {
                *snap.stats.errors.entry(k).or_default() += v;
            }
            snap.stats.total += f.stats.total;
            snap.abuse.sources += f.abuse.len();
            snap.abuse.throttled += f.abuse.throttled;
            snap.abuse.ignored += f.abuse.ignored;
            snap.abuse.bans += f.abuse.bans;
            snap.abuse.untracked += f.abuse.untracked;
            if i != self.http_front() {
                snap.workers.push(f.stats.requests.clone());
            }
        }
        for i in 0..self.shards.len() {
            if let Some(s) = self.shards.lock_index(i) {
                snap.swarms.add(&s);
            }
        }
        if let Some([t, p, s]) = self.counter.as_ref().and_then(|c| c.totals()) {
            let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
            snap.swarms.torrents = n(t);
            snap.swarms.peers = n(p);
            snap.swarms.seeders = n(s).min(n(p));
        }
        snap
    }

    /// Requests received by every front.
    pub fn total(&self) -> u64 {
        (0..self.fronts.len())
            .map(|i| self.front(i).stats.total)
            .sum()
    }

    /// Requests per second over the last [`RATE_WINDOW_SECS`], and the
    /// seconds it is actually taken over (less just after start).
    pub fn rate(&self) -> (f64, f64) {
        let w = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        (w.rate(), w.span_secs())
    }

    /// Records the request total now (the shell calls it once a second).
    pub fn sample_rate(&self) {
        let total = self.total();
        self.rate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sample(std::time::Instant::now(), total);
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

    /// The `/metrics` document: Prometheus text exposition format 0.0.4
    /// (written by hand: a few `# TYPE` lines and samples need no crate).
    pub fn metrics_text(&self) -> String {
        use std::fmt::Write;
        const P: &str = "ourtorrent_tracker";
        let mut o = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let _ = writeln!(o, "# HELP {P}_{name} {help}");
            let _ = writeln!(o, "# TYPE {P}_{name} {kind}");
            for (suffix_labels, value) in samples {
                let _ = writeln!(o, "{P}_{name}{suffix_labels} {value}");
            }
        };
        let one = |v: String| vec![(String::new(), v)];
        let snap = self.snapshot();
        let s = &snap.swarms;
        metric(
            "build_info",
            "gauge",
            "Version of the tracker.",
            &[(
                format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")),
                "1".into(),
            )],
        );
        metric(
            "uptime_seconds",
            "gauge",
            "Seconds since start.",
            &one(self.started.elapsed().as_secs().to_string()),
        );
        if let Some(rss) = rss_bytes() {
            metric(
                "resident_memory_bytes",
                "gauge",
                "Resident set size.",
                &one(rss.to_string()),
            );
        }
        metric(
            "received_total",
            "counter",
            "Requests received (UDP datagrams and HTTP requests), answered or not.",
            &one(snap.stats.total.to_string()),
        );
        let by = |label: &str, m: &BTreeMap<&'static str, u64>| -> Vec<(String, String)> {
            m.iter()
                .map(|(k, v)| (format!("{{{label}=\"{k}\"}}"), v.to_string()))
                .collect()
        };
        metric(
            "requests_total",
            "counter",
            "Requests answered, by kind.",
            &by("kind", &snap.stats.requests),
        );
        metric(
            "errors_total",
            "counter",
            "Errors and drops, by reason.",
            &by("reason", &snap.stats.errors),
        );
        for (name, help, v) in [
            ("torrents", "Torrents tracked.", s.torrent_count()),
            ("peers", "Peers stored.", s.peer_count()),
            ("seeders", "Seeders stored.", s.seeder_count()),
            (
                "leechers",
                "Leechers stored.",
                s.peer_count() - s.seeder_count(),
            ),
            (
                "pending_db_rows",
                "Changed rows waiting for the SQLite writer.",
                s.dirty_count(),
            ),
            (
                "abuse_sources",
                "Misbehaving UDP sources tracked.",
                snap.abuse.sources,
            ),
        ] {
            metric(name, "gauge", help, &one(v.to_string()));
        }
        for (name, help, v) in [
            (
                "completed_total",
                "Completed announces over all torrents.",
                s.completed_total(),
            ),
            (
                "peer_limit_hits_total",
                "Peers not stored because their torrent was full.",
                s.peer_limit_hits,
            ),
            (
                "abuse_bans_total",
                "Times a UDP source became ignored.",
                snap.abuse.bans,
            ),
        ] {
            metric(name, "counter", help, &one(v.to_string()));
        }
        if let Some(f) = &self.flush {
            let snap = f.snapshot();
            let mut samples: Vec<(String, String)> = FLUSH_BUCKETS
                .iter()
                .map(|b| b.to_string())
                .chain(std::iter::once("+Inf".to_string()))
                .zip(&snap.cumulative)
                .map(|(le, n)| (format!("_bucket{{le=\"{le}\"}}"), n.to_string()))
                .collect();
            let count = snap.cumulative.last().copied().unwrap_or(0);
            samples.push(("_sum".into(), snap.sum_secs.to_string()));
            samples.push(("_count".into(), count.to_string()));
            metric(
                "flush_duration_seconds",
                "histogram",
                "Duration of the SQLite writer's transactions.",
                &samples,
            );
            metric(
                "flush_rows_total",
                "counter",
                "Rows written to SQLite.",
                &one(snap.rows.to_string()),
            );
            metric(
                "flush_failures_total",
                "counter",
                "SQLite transactions that failed.",
                &one(snap.failed.to_string()),
            );
        }
        if let Some(j) = &self.journal {
            let g = db::JournalStats::get;
            for (name, help, v) in [
                (
                    "journal_rows_total",
                    "Journal rows appended to SQLite.",
                    g(&j.rows),
                ),
                (
                    "journal_bytes_total",
                    "Bytes of journal rows appended.",
                    g(&j.bytes),
                ),
                (
                    "journal_records_total",
                    "Change records appended to the journal.",
                    g(&j.records),
                ),
                (
                    "checkpoints_total",
                    "Checkpoints of the swarms completed.",
                    g(&j.checkpoints),
                ),
                (
                    "checkpoint_failures_total",
                    "Checkpoints that failed.",
                    g(&j.checkpoint_failures),
                ),
                (
                    "journal_replayed_records",
                    "Journal records replayed at start.",
                    g(&j.replayed),
                ),
                (
                    "journal_bad_rows",
                    "Journal rows that did not decode at start (skipped from the error on).",
                    g(&j.bad_rows),
                ),
                (
                    "checkpoint_bad_chunks",
                    "Checkpoint chunks that did not decode at start (skipped from the error on).",
                    g(&j.bad_chunks),
                ),
            ] {
                let kind = if name.ends_with("_total") {
                    "counter"
                } else {
                    "gauge"
                };
                metric(name, kind, help, &one(v.to_string()));
            }
            metric(
                "last_checkpoint_seconds",
                "gauge",
                "Duration of the last checkpoint.",
                &one((g(&j.last_checkpoint_us) as f64 / 1e6).to_string()),
            );
        }
        if let Some(p) = &self.db_path {
            metric(
                "db_size_bytes",
                "gauge",
                "Size of the SQLite database and its WAL.",
                &one(db::size_on_disk(p).to_string()),
            );
        }
        o
    }

    /// The `/stats` document.
    pub fn stats_json(&self) -> serde_json::Value {
        let snap = self.snapshot();
        let s = &snap.swarms;
        let (rate, span) = self.rate();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": self.started.elapsed().as_secs(),
            "rss_bytes": rss_bytes(),
            "completed_total": s.completed_total(),
            "access": {
                "stats_from": self.stats_from.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "allow_list": self.allow_len,
            },
            "torrents": s.torrent_count(),
            "peers": s.peer_count(),
            "seeders": s.seeder_count(),
            "leechers": s.peer_count() - s.seeder_count(),
            "requests": snap.stats.requests,
            "errors": snap.stats.errors,
            "requests_total": snap.stats.total,
            "requests_per_second": rate,
            "requests_per_second_window_secs": span,
            "peer_limit_hits": s.peer_limit_hits,
            "abuse": {
                "sources": snap.abuse.sources,
                "throttled": snap.abuse.throttled,
                "ignored": snap.abuse.ignored,
                "bans": snap.abuse.bans,
                "untracked": snap.abuse.untracked,
            },
            "pending_db_rows": s.dirty_count(),
            "db": self.journal.as_ref().map(|j| {
                let g = db::JournalStats::get;
                json!({
                    "journal_rows": g(&j.rows),
                    "journal_bytes": g(&j.bytes),
                    "journal_records": g(&j.records),
                    "records_since_checkpoint": g(&j.since_checkpoint),
                    "checkpoints": g(&j.checkpoints),
                    "checkpoint_failures": g(&j.checkpoint_failures),
                    "last_checkpoint_secs": g(&j.last_checkpoint_us) as f64 / 1e6,
                    "last_checkpoint_peers": g(&j.last_checkpoint_peers),
                    "last_checkpoint_max_lock_secs": g(&j.last_checkpoint_lock_us) as f64 / 1e6,
                    "replayed_at_start": g(&j.replayed),
                    "bad_journal_rows": g(&j.bad_rows),
                    "bad_checkpoint_chunks": g(&j.bad_chunks),
                })
            }),
            "workers": snap.workers,
            "shards": self.shards.len(),
            "store": self.store,
        })
    }
}

/// This process's resident set size in bytes (`VmRSS` of
/// `/proc/self/status`), if known.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_rate_is_taken_over_the_last_window() {
        let t0 = std::time::Instant::now();
        let s = |n: u64| t0 + std::time::Duration::from_secs(n);
        let mut w = RateWindow::default();
        assert_eq!(w.rate(), 0.0);
        w.sample(s(0), 0);
        assert_eq!((w.rate(), w.span_secs()), (0.0, 0.0), "one sample: no rate");
        w.sample(s(1), 500);
        assert_eq!((w.rate(), w.span_secs()), (500.0, 1.0));
        // 1000/s for the window's seconds, then idle: the burst leaves the
        // window exactly RATE_WINDOW_SECS later.
        for i in 2..=RATE_WINDOW_SECS + 1 {
            w.sample(s(i), 500 + 1000 * (i - 1));
        }
        assert_eq!(w.span_secs(), RATE_WINDOW_SECS as f64);
        assert_eq!(w.rate(), 1000.0);
        let top = 500 + 1000 * RATE_WINDOW_SECS;
        for i in RATE_WINDOW_SECS + 2..=2 * RATE_WINDOW_SECS + 1 {
            w.sample(s(i), top);
        }
        assert_eq!(w.rate(), 0.0);
        assert!(w.samples.len() <= RATE_WINDOW_SECS as usize + 1);
    }

    #[test]
    fn prefixes_parse_and_match_at_their_edges() {
        let p: Prefix = "10.1.0.0/16".parse().unwrap();
        assert!(p.contains("10.1.255.255".parse().unwrap()));
        assert!(!p.contains("10.2.0.0".parse().unwrap()));
        assert!(p.contains("::ffff:10.1.2.3".parse().unwrap()), "v4-mapped");
        let any: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains("203.0.113.9".parse().unwrap()));
        assert!(
            !any.contains("::2".parse().unwrap()),
            "v4 prefix, v6 address"
        );
        let one: Prefix = "2001:db8::1".parse().unwrap();
        assert_eq!(one.to_string(), "2001:db8::1/128");
        assert!(one.contains("2001:db8::1".parse().unwrap()));
        assert!(!one.contains("2001:db8::2".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert!("::/129".parse::<Prefix>().is_err());
        assert!("::/128".parse::<Prefix>().is_ok());
        assert!("host/8".parse::<Prefix>().is_err());
        let lo = Prefix::loopback();
        assert!(lo.iter().any(|p| p.contains("127.0.0.2".parse().unwrap())));
        assert!(lo.iter().any(|p| p.contains("::1".parse().unwrap())));
        assert!(!lo.iter().any(|p| p.contains("192.0.2.1".parse().unwrap())));
    }
}
