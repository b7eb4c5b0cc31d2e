//! Request counters ([`Stats`], one per front) and their sum over every
//! front and shard ([`Snapshot`], one lock at a time), with the request
//! rate over the last [`RATE_WINDOW_SECS`].

use std::collections::BTreeMap;

use super::Tracker;
use crate::tracker::swarm::Swarms;

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
    pub(super) fn req(&mut self, kind: &'static str) {
        *self.requests.entry(kind).or_default() += 1;
    }

    /// Counts an error or drop.
    pub fn err(&mut self, reason: &'static str) {
        *self.errors.entry(reason).or_default() += 1;
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
    pub(super) sources: usize,
    pub(super) throttled: u64,
    pub(super) ignored: u64,
    pub(super) bans: u64,
    pub(super) untracked: u64,
}

/// Every figure of `/stats` and `/metrics`, summed over fronts and shards.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub(super) stats: Stats,
    pub(super) abuse: AbuseTotals,
    pub(super) swarms: SwarmTotals,
    /// Requests answered by each UDP worker, by kind.
    pub(super) workers: Vec<BTreeMap<&'static str, u64>>,
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
    pub(super) samples: std::collections::VecDeque<(std::time::Instant, u64)>,
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
}
