//! Per-source limits on bad UDP datagrams (bad connection ids, garbage,
//! oversized): a source that keeps sending them is throttled, then ignored
//! for a while, so it costs the tracker one table lookup per datagram.
//!
//! A source is an IPv4 address or an IPv6 /64 (one subscriber's prefix:
//! counting single IPv6 addresses would let one host rotate through 2⁶⁴).
//! Only sources that sent something bad get an entry; well-behaved clients
//! never touch the table.
//!
//! Per source, a token bucket: each bad datagram takes a token; the bucket
//! holds [`Limits::burst`] and refills at [`Limits::per_sec`]. While it is
//! empty, every datagram from the source is dropped before parsing
//! (throttled); after [`Limits::ban_after`] throttled datagrams the source is
//! ignored for [`Limits::ban_secs`]. A source with a valid connection id is
//! still throttled: it proved its address but not its manners.
//!
//! Bounds: at most [`Limits::max_sources`] entries (≈ 48 bytes each plus
//! the hash table's slot). When full, idle entries (bucket refilled, not
//! ignored) are evicted first by [`Abuse::prune`]; a new source that finds
//! the table still full is not tracked (counted, fail-open: a spoofed flood
//! must not crowd honest clients out, and it cannot make the tracker refuse
//! anyone).

use std::collections::HashMap;
use std::net::IpAddr;

/// Named limits (flags of `shell-std tracker`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bad datagrams a source may send at once before it is throttled.
    pub burst: u32,
    /// Bad datagrams per second a source may send in the long run.
    pub per_sec: u32,
    /// Datagrams dropped while throttled before the source is ignored.
    pub ban_after: u32,
    /// How long an ignored source stays ignored, in seconds.
    pub ban_secs: u32,
    /// Most sources tracked at once.
    pub max_sources: usize,
}

/// Default for [`Limits::burst`]: a client whose ids went stale (e.g. a
/// tracker restarted without its database) re-sends at most one announce
/// per torrent before reconnecting; 200 torrents fit.
pub const DEFAULT_BURST: u32 = 200;
/// Default for [`Limits::per_sec`].
pub const DEFAULT_PER_SEC: u32 = 20;
/// Default for [`Limits::ban_after`].
pub const DEFAULT_BAN_AFTER: u32 = 1000;
/// Default for [`Limits::ban_secs`].
pub const DEFAULT_BAN_SECS: u32 = 300;
/// Default for [`Limits::max_sources`] (a few MiB at most).
pub const DEFAULT_MAX_SOURCES: usize = 65_536;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            burst: DEFAULT_BURST,
            per_sec: DEFAULT_PER_SEC,
            ban_after: DEFAULT_BAN_AFTER,
            ban_secs: DEFAULT_BAN_SECS,
            max_sources: DEFAULT_MAX_SOURCES,
        }
    }
}

/// What to do with a datagram from a source, before parsing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Handle it.
    Pass,
    /// Drop it: the source's bad-datagram budget is spent.
    Throttled,
    /// Drop it: the source is ignored until its ban ends.
    Ignored,
}

/// A source key: an IPv4 address or an IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// One IPv4 address.
    V4([u8; 4]),
    /// The upper 64 bits of an IPv6 address.
    V6(u64),
}

impl Source {
    /// The source `ip` belongs to (a v4-mapped v6 address is its v4).
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(a) => Source::V4(a.octets()),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.octets()),
                None => Source::V6((u128::from(a) >> 64) as u64),
            },
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Tokens in thousandths (refilled continuously).
    milli_tokens: u64,
    /// When the bucket was last refilled (ms).
    at: u64,
    /// Datagrams dropped while throttled since the last ban or refill.
    throttled: u32,
    /// Ignored until this time (ms); 0 = not ignored.
    ignored_until: u64,
}

/// The per-source table (see the module docs).
#[derive(Debug)]
pub struct Abuse {
    limits: Limits,
    sources: HashMap<Source, Entry>,
    /// Datagrams dropped because their source was throttled.
    pub throttled: u64,
    /// Datagrams dropped because their source was ignored.
    pub ignored: u64,
    /// Times a source became ignored.
    pub bans: u64,
    /// Bad datagrams from sources not tracked because the table was full.
    pub untracked: u64,
}

impl Abuse {
    /// An empty table.
    pub fn new(limits: Limits) -> Self {
        Abuse {
            limits,
            sources: HashMap::new(),
            throttled: 0,
            ignored: 0,
            bans: 0,
            untracked: 0,
        }
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn full_bucket(&self) -> u64 {
        u64::from(self.limits.burst) * 1000
    }

    fn refill(limits: &Limits, e: &mut Entry, now: u64) {
        let full = u64::from(limits.burst) * 1000;
        let dt = now.saturating_sub(e.at);
        e.milli_tokens = e
            .milli_tokens
            .saturating_add(dt.saturating_mul(u64::from(limits.per_sec)))
            .min(full);
        e.at = e.at.max(now);
        if e.milli_tokens >= 1000 {
            e.throttled = 0;
        }
    }

    /// Whether to handle a datagram from `ip` at `now` (ms). Cheap: one
    /// lookup, nothing allocated for unknown sources.
    pub fn check(&mut self, ip: IpAddr, now: u64) -> Verdict {
        let Some(e) = self.sources.get_mut(&Source::of(ip)) else {
            return Verdict::Pass;
        };
        if e.ignored_until > now {
            self.ignored += 1;
            return Verdict::Ignored;
        }
        e.ignored_until = 0;
        Self::refill(&self.limits, e, now);
        if e.milli_tokens >= 1000 {
            return Verdict::Pass;
        }
        self.throttled += 1;
        e.throttled = e.throttled.saturating_add(1);
        if e.throttled >= self.limits.ban_after {
            e.throttled = 0;
            e.ignored_until = now.saturating_add(u64::from(self.limits.ban_secs) * 1000);
            self.bans += 1;
        }
        Verdict::Throttled
    }

    /// Records a bad datagram from `ip` at `now` (after [`Abuse::check`]
    /// passed it and the core refused it).
    pub fn bad(&mut self, ip: IpAddr, now: u64) {
        let key = Source::of(ip);
        if !self.sources.contains_key(&key) && self.sources.len() >= self.limits.max_sources {
            self.untracked += 1;
            return;
        }
        let full = self.full_bucket();
        let e = self.sources.entry(key).or_insert(Entry {
            milli_tokens: full,
            at: now,
            throttled: 0,
            ignored_until: 0,
        });
        Self::refill(&self.limits, e, now);
        e.milli_tokens = e.milli_tokens.saturating_sub(1000);
    }

    /// Forgets sources whose bucket is full again and that are not ignored
    /// (they would pass anyway). Work is bounded by the table's size.
    pub fn prune(&mut self, now: u64) {
        let limits = self.limits;
        let full = self.full_bucket();
        self.sources.retain(|_, e| {
            if e.ignored_until > now {
                return true;
            }
            Self::refill(&limits, e, now);
            e.milli_tokens < full
        });
    }

    /// Sources tracked.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// True if no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Sources ignored at `now`.
    pub fn ignored_sources(&self, now: u64) -> usize {
        self.sources
            .values()
            .filter(|e| e.ignored_until > now)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Limits {
        Limits {
            burst: 3,
            per_sec: 2,
            ban_after: 4,
            ban_secs: 10,
            max_sources: 2,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_refill_throttle_and_ban_edges() {
        let mut a = Abuse::new(lim());
        let x = ip("192.0.2.1");
        // The burst: 3 bad datagrams pass.
        for _ in 0..3 {
            assert_eq!(a.check(x, 0), Verdict::Pass);
            a.bad(x, 0);
        }
        // The 4th is throttled; another source is not.
        assert_eq!(a.check(x, 0), Verdict::Throttled);
        assert_eq!(a.check(ip("192.0.2.2"), 0), Verdict::Pass);
        // 2 per second: after 499 ms still empty, at 500 ms one token.
        assert_eq!(a.check(x, 499), Verdict::Throttled);
        assert_eq!(a.check(x, 500), Verdict::Pass);
        a.bad(x, 500);
        // Throttled 4 times in a row (ban_after) → ignored for 10 s.
        for i in 0..3 {
            assert_eq!(a.check(x, 500), Verdict::Throttled, "{i}");
        }
        assert_eq!(a.bans, 0);
        assert_eq!(a.check(x, 500), Verdict::Throttled);
        assert_eq!(a.bans, 1);
        assert_eq!(a.check(x, 10_499), Verdict::Ignored);
        assert_eq!(a.ignored_sources(10_499), 1);
        // The ban ends; by then the bucket is full again.
        assert_eq!(a.check(x, 10_500), Verdict::Pass);
        assert_eq!((a.throttled, a.ignored), (6, 1));
    }

    #[test]
    fn ipv6_sources_are_64_bit_prefixes_and_mapped_v4_is_v4() {
        let mut a = Abuse::new(lim());
        for i in 0..3 {
            a.bad(ip(&format!("2001:db8:0:1::{i}")), 0);
        }
        assert_eq!(a.check(ip("2001:db8:0:1:ffff::9"), 0), Verdict::Throttled);
        assert_eq!(a.check(ip("2001:db8:0:2::1"), 0), Verdict::Pass);
        assert_eq!(a.len(), 1);
        a.bad(ip("::ffff:192.0.2.7"), 0);
        assert_eq!(
            Source::of(ip("::ffff:192.0.2.7")),
            Source::of(ip("192.0.2.7"))
        );
    }

    #[test]
    fn table_is_bounded_and_pruned() {
        let mut a = Abuse::new(lim());
        a.bad(ip("192.0.2.1"), 0);
        a.bad(ip("192.0.2.2"), 0);
        // Full: a third source is not tracked, never refused.
        a.bad(ip("192.0.2.3"), 0);
        a.bad(ip("192.0.2.3"), 0);
        a.bad(ip("192.0.2.3"), 0);
        a.bad(ip("192.0.2.3"), 0);
        assert_eq!(a.check(ip("192.0.2.3"), 0), Verdict::Pass);
        assert_eq!((a.len(), a.untracked), (2, 4));
        // One token back after 500 ms: not full yet, kept; full at 1.5 s.
        a.prune(499);
        assert_eq!(a.len(), 2);
        a.prune(500);
        assert_eq!(a.len(), 0, "one bad datagram each: full again at 500 ms");
        // An ignored source survives pruning.
        let x = ip("192.0.2.9");
        for _ in 0..3 {
            a.bad(x, 1_000);
        }
        for _ in 0..4 {
            a.check(x, 1_000);
        }
        a.prune(100_000);
        assert_eq!(a.len(), 0, "ban over and bucket full: forgotten");
        for _ in 0..3 {
            a.bad(x, 200_000);
        }
        for _ in 0..4 {
            a.check(x, 200_000);
        }
        a.prune(200_001);
        assert_eq!(a.len(), 1);
        assert!(!a.is_empty());
    }
}
