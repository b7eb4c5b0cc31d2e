//! Rate limits: token buckets for the session (every torrent together) and
//! for each torrent, one per direction.
//!
//! A [`Bucket`] fills at `rate` bytes/s up to a burst of [`burst`]`(rate)`
//! bytes; a transfer may start while the bucket holds at least
//! [`MIN_GRANT`] tokens (so a throttled task wakes for a block's worth, not
//! for every byte) and then takes what it moved, so the bucket can go into
//! debt by up to one read or one block. Debt is paid back before the next transfer, so
//! over any window longer than a burst the bytes moved stay within
//! `rate × window + burst`.
//!
//! Where the buckets act (`super::peer`):
//! - download: a peer task reads from its socket only while both buckets
//!   (session's and torrent's) hold tokens, and at most that many bytes;
//!   bytes not read stay in the kernel, the TCP window closes and the
//!   sending peer slows down (back-pressure, no data dropped);
//! - upload: a requested block is put in the output only while both
//!   buckets hold tokens; the others wait in the peer's request queue.
//!
//! A rate of 0 means unlimited. Limits can change at any time
//! ([`Limiter::set`]); a peer task waiting for tokens rechecks at least
//! every [`MAX_WAIT`].

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Smallest burst: one 16 KiB block plus its message header and a few
/// control messages, so a block can always be sent in one go.
pub const MIN_BURST: u64 = 32 << 10;
/// The burst is the bytes of this many milliseconds at the rate (but at
/// least [`MIN_BURST`]): short enough that a 10 s window is held within
/// ±1 %, long enough that a peer task is not woken for every read.
pub const BURST_MS: u64 = 100;
/// Fewest tokens that let a transfer start: one 16 KiB block.
pub const MIN_GRANT: u64 = 16 << 10;
/// Under a download limit a peer's pipeline holds about this many seconds
/// of its share of the rate (far below the 30 s request timeout, so
/// requests are not given up and sent again while they wait).
pub const PIPELINE_SECS: u64 = 4;
/// Fewest requests in flight per peer under a download limit.
pub const MIN_PIPELINE: usize = 2;
/// Longest a throttled task sleeps before looking again (a limit raised
/// or removed takes effect within this).
pub const MAX_WAIT: Duration = Duration::from_millis(250);

/// The burst (bucket capacity) for `rate` bytes/s.
pub fn burst(rate: u64) -> u64 {
    (rate.saturating_mul(BURST_MS) / 1000).max(MIN_BURST)
}

/// One token bucket. Time is an argument (tests drive it with their own
/// instants).
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Bytes per second; 0: unlimited.
    rate: u64,
    /// Tokens (bytes) now; negative: debt from the last transfer.
    tokens: i64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl Bucket {
    /// A full bucket of `rate` bytes/s (0: unlimited).
    pub fn new(rate: u64, now: Instant) -> Self {
        Bucket {
            rate,
            tokens: i64::try_from(burst(rate)).unwrap_or(i64::MAX),
            at: now,
        }
    }

    /// The rate (bytes/s; 0: unlimited).
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Changes the rate; the tokens now are kept (within the new burst).
    pub fn set_rate(&mut self, rate: u64, now: Instant) {
        self.refill(now);
        self.rate = rate;
        self.tokens = self.tokens.min(self.cap());
    }

    fn cap(&self) -> i64 {
        i64::try_from(burst(self.rate)).unwrap_or(i64::MAX)
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at);
        if self.rate == 0 {
            self.at = now;
            return;
        }
        // Whole tokens only; the remainder of the time is kept for the next
        // refill (no drift at low rates).
        let add = (dt.as_nanos() * u128::from(self.rate) / 1_000_000_000) as u64;
        if add == 0 {
            return;
        }
        let used = Duration::from_nanos(
            (u128::from(add) * 1_000_000_000 / u128::from(self.rate)).min(u64::MAX as u128) as u64,
        );
        self.at += used;
        self.tokens = self
            .tokens
            .saturating_add(i64::try_from(add).unwrap_or(i64::MAX))
            .min(self.cap());
        if self.tokens == self.cap() {
            self.at = now;
        }
    }

    /// Bytes that may move now (`u64::MAX` when unlimited; 0: wait, fewer
    /// than [`MIN_GRANT`] tokens).
    pub fn available(&mut self, now: Instant) -> u64 {
        if self.rate == 0 {
            return u64::MAX;
        }
        self.refill(now);
        match u64::try_from(self.tokens) {
            Ok(t) if t >= MIN_GRANT => t,
            _ => 0,
        }
    }

    /// `n` bytes moved.
    pub fn take(&mut self, n: u64, now: Instant) {
        if self.rate == 0 {
            return;
        }
        self.refill(now);
        self.tokens = self
            .tokens
            .saturating_sub(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Time until a transfer may start (zero if it may now).
    pub fn wait(&mut self, now: Instant) -> Duration {
        if self.available(now) > 0 {
            return Duration::ZERO;
        }
        let need = u128::try_from(MIN_GRANT as i64 - self.tokens).unwrap_or(1);
        let nanos = need * 1_000_000_000 / u128::from(self.rate.max(1));
        Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64).max(Duration::from_millis(1))
    }
}

/// A direction of transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Bytes read from peers.
    Down,
    /// Block bytes sent to peers.
    Up,
}

/// The two buckets of one scope (the session, or one torrent).
#[derive(Debug)]
pub struct Limiter {
    down: Mutex<Bucket>,
    up: Mutex<Bucket>,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new(0, 0)
    }
}

impl Limiter {
    /// Limits of `down` and `up` bytes/s (0: unlimited).
    pub fn new(down: u64, up: u64) -> Self {
        let now = Instant::now();
        Limiter {
            down: Mutex::new(Bucket::new(down, now)),
            up: Mutex::new(Bucket::new(up, now)),
        }
    }

    fn bucket(&self, dir: Dir) -> std::sync::MutexGuard<'_, Bucket> {
        match dir {
            Dir::Down => &self.down,
            Dir::Up => &self.up,
        }
        .lock()
        .unwrap_or_else(|e| e.into_inner())
    }

    /// Sets both limits (bytes/s; 0: unlimited).
    pub fn set(&self, down: u64, up: u64) {
        let now = Instant::now();
        self.bucket(Dir::Down).set_rate(down, now);
        self.bucket(Dir::Up).set_rate(up, now);
    }

    /// The limits now: (down, up) in bytes/s, 0 for unlimited.
    pub fn get(&self) -> (u64, u64) {
        (self.bucket(Dir::Down).rate(), self.bucket(Dir::Up).rate())
    }
}

/// What a torrent's peer tasks consult: the torrent's own limiter and the
/// session's (attached when the torrent joins a session).
#[derive(Debug, Default)]
pub struct Limits {
    /// This torrent's limits.
    pub torrent: Limiter,
    session: OnceLock<Arc<Limiter>>,
}

impl Limits {
    /// Makes the session's limiter apply to this torrent too (once; later
    /// calls are ignored).
    pub fn attach(&self, session: Arc<Limiter>) {
        let _ = self.session.set(session);
    }

    fn scopes(&self) -> impl Iterator<Item = &Limiter> {
        std::iter::once(&self.torrent).chain(self.session.get().map(|s| &**s))
    }

    /// Bytes that may move now in `dir` (the smaller of the scopes; 0:
    /// wait).
    pub fn available(&self, dir: Dir) -> u64 {
        let now = Instant::now();
        self.scopes()
            .map(|l| l.bucket(dir).available(now))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// `n` bytes moved in `dir`.
    pub fn take(&self, dir: Dir, n: u64) {
        let now = Instant::now();
        for l in self.scopes() {
            l.bucket(dir).take(n, now);
        }
    }

    /// The download cap in force (the smaller of the scopes'; 0: none).
    pub fn down_rate(&self) -> u64 {
        self.scopes()
            .map(|l| l.bucket(Dir::Down).rate())
            .filter(|&r| r > 0)
            .min()
            .unwrap_or(0)
    }

    /// Requests in flight for one of `peers` peers: `max` without a
    /// download cap, else [`PIPELINE_SECS`] of its share of the cap in
    /// `block`-byte requests, within [`MIN_PIPELINE`]..=`max`.
    pub fn pipeline(&self, peers: u32, block: u64, max: usize) -> usize {
        match self.down_rate() {
            0 => max,
            r => {
                let share = r / u64::from(peers.max(1));
                let n = share.saturating_mul(PIPELINE_SECS) / block.max(1);
                usize::try_from(n)
                    .unwrap_or(max)
                    .clamp(MIN_PIPELINE, max.max(MIN_PIPELINE))
            }
        }
    }

    /// Time until a transfer in `dir` may start (at most [`MAX_WAIT`]).
    pub fn wait(&self, dir: Dir) -> Duration {
        let now = Instant::now();
        self.scopes()
            .map(|l| l.bucket(dir).wait(now))
            .max()
            .unwrap_or(Duration::ZERO)
            .min(MAX_WAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn burst_has_a_floor() {
        assert_eq!(burst(0), MIN_BURST);
        assert_eq!(burst(MIN_BURST * 10 - 1), MIN_BURST);
        assert_eq!(burst(MIB), MIB / 10);
    }

    #[test]
    fn unlimited_never_waits() {
        let t = Instant::now();
        let mut b = Bucket::new(0, t);
        b.take(u64::MAX, t);
        assert_eq!(b.available(t), u64::MAX);
        assert_eq!(b.wait(t), Duration::ZERO);
    }

    /// A greedy sender against the bucket over 10 simulated seconds, in
    /// steps of 1 ms, moving up to a 16 KiB block whenever allowed: it
    /// moves `rate × 10 s` plus at most the burst and one block.
    #[test]
    fn holds_the_rate_over_ten_seconds() {
        for rate in [100 << 10, MIB, 5 * MIB] {
            let t0 = Instant::now();
            let mut b = Bucket::new(rate, t0);
            let mut moved = 0u64;
            for ms in 0..10_000u64 {
                let now = t0 + Duration::from_millis(ms);
                while b.available(now) > 0 {
                    let n = b.available(now).min(16 << 10);
                    b.take(n, now);
                    moved += n;
                }
            }
            let ideal = rate * 10;
            assert!(
                moved >= ideal - rate / 100,
                "rate {rate}: {moved} < {ideal}"
            );
            assert!(
                moved <= ideal + burst(rate) + (16 << 10),
                "rate {rate}: {moved} > {ideal} + burst"
            );
        }
    }

    #[test]
    fn debt_is_paid_before_the_next_transfer() {
        let t = Instant::now();
        let mut b = Bucket::new(MIB, t);
        let cap = burst(MIB);
        assert_eq!(b.available(t), cap);
        b.take(cap + 1000, t); // past the tokens
        assert_eq!(b.available(t), 0);
        // 1000 bytes of debt and a block's worth to gain at 1 MiB/s.
        let w = b.wait(t);
        let need = Duration::from_nanos((MIN_GRANT + 1000) * 1_000_000_000 / MIB);
        assert_eq!(w, need);
        // At the edge: one µs short there are MIN_GRANT - 1 tokens.
        assert_eq!(b.available(t + need - Duration::from_micros(1)), 0);
        assert_eq!(b.available(t + need), MIN_GRANT);
    }

    #[test]
    fn a_full_bucket_stays_at_its_burst() {
        let t = Instant::now();
        let mut b = Bucket::new(MIB, t);
        assert_eq!(b.available(t + Duration::from_secs(60)), burst(MIB));
        // Lowering the rate caps the tokens at the new burst.
        b.set_rate(MIN_BURST, t + Duration::from_secs(60));
        assert_eq!(b.available(t + Duration::from_secs(60)), MIN_BURST);
    }

    #[test]
    fn the_smaller_scope_wins() {
        let l = Limits::default();
        l.torrent.set(MIB, 0);
        l.attach(Arc::new(Limiter::new(64 << 10, 0)));
        // The session's 64 KiB/s bucket holds the smaller burst.
        assert_eq!(l.available(Dir::Down), MIN_BURST);
        assert_eq!(l.available(Dir::Up), u64::MAX);
        l.take(Dir::Down, MIN_BURST + 1);
        assert_eq!(l.available(Dir::Down), 0);
        assert!(l.wait(Dir::Down) > Duration::ZERO);
        assert!(l.wait(Dir::Down) <= MAX_WAIT);
    }

    #[test]
    fn pipeline_holds_a_few_seconds_of_the_share() {
        let l = Limits::default();
        assert_eq!(l.pipeline(3, 16 << 10, 128), 128, "no cap");
        l.torrent.set(MIB, 0);
        // 1 MiB/s alone: 4 s = 256 blocks, capped at 128.
        assert_eq!(l.pipeline(1, 16 << 10, 128), 128);
        // Shared by 4: 256 KiB/s × 4 s = 64 blocks.
        assert_eq!(l.pipeline(4, 16 << 10, 128), 64);
        // 16 KiB/s by 100 peers: the floor.
        l.torrent.set(16 << 10, 0);
        assert_eq!(l.pipeline(100, 16 << 10, 128), MIN_PIPELINE);
        // The session's smaller cap wins.
        l.torrent.set(MIB, 0);
        l.attach(Arc::new(Limiter::new(64 << 10, 0)));
        assert_eq!(l.down_rate(), 64 << 10);
        assert_eq!(l.pipeline(1, 16 << 10, 128), 16);
    }
}
