//! The address book of one torrent: every peer address we learned, where
//! from (tracker, incoming, direct `--peer` or `x.pe`, DHT, PEX), whether it
//! is connected, when it may be dialled again (exponential backoff after a
//! failure), and whether it is banned.
//!
//! Bounded: at most [`MAX_ADDRESSES`] entries; when full, a new address
//! replaces the one not connected, not banned and not given with `--peer`
//! that failed most (or was seen least recently). Bans are kept.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Addresses kept per torrent.
pub const MAX_ADDRESSES: usize = 2000;
/// Wait before dialling an address again after a connection that came
/// up and ended.
pub const RETRY_MIN: Duration = Duration::from_secs(5);
/// Wait after a first failure, doubled by each failure in a row up to
/// [`RETRY_MAX`]: short, since a peer that has just started (libtorrent
/// resets connections for ~0.5 s after a torrent is added) answers the
/// second try.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// Handshakes reset (or cut short by an EOF) in a row before a `--peer`
/// counts as unreachable: libtorrent resets connections for ~0.5 s after
/// adding a torrent, and the retries 1 s and 2 s later get past that.
pub const HANDSHAKE_RESETS_TO_GIVE_UP: u8 = 3;

/// Where an address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// `--peer` on the command line: never forgotten.
    Direct,
    /// A tracker's reply.
    Tracker,
    /// The peer connected to us.
    Incoming,
    /// A DHT `get_peers` lookup (BEP 5).
    Dht,
    /// Another peer's `ut_pex` message (BEP 11).
    Pex,
}

impl Source {
    /// Every source, in the order the swarm table lists them.
    pub const ALL: [Source; 5] = [
        Source::Tracker,
        Source::Dht,
        Source::Pex,
        Source::Incoming,
        Source::Direct,
    ];

    /// The name the tables use.
    pub fn name(self) -> &'static str {
        match self {
            Source::Direct => "direct",
            Source::Tracker => "tracker",
            Source::Incoming => "incoming",
            Source::Dht => "DHT",
            Source::Pex => "PEX",
        }
    }
}

/// What the book knows of one address.
#[derive(Clone, Debug)]
struct Entry {
    source: Source,
    connected: bool,
    banned: bool,
    /// Failed attempts in a row.
    fails: u32,
    /// Not to be dialled before this.
    next_try: Instant,
    seen: Instant,
    /// Why the last dial failed (`connection refused`); cleared by a
    /// connection.
    error: Option<String>,
    /// Handshakes reset or cut short in a row (see
    /// [`HANDSHAKE_RESETS_TO_GIVE_UP`]).
    resets: u8,
}

/// One torrent's peer addresses.
#[derive(Debug, Default)]
pub struct AddressBook {
    entries: HashMap<SocketAddr, Entry>,
}

/// Counts for the tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BookStats {
    /// Addresses known, by source.
    pub known: Vec<(Source, usize)>,
    /// Connected addresses, by source (where the address was first
    /// learned; `--peer` wins).
    pub connected_by: Vec<(Source, usize)>,
    /// Connected addresses.
    pub connected: usize,
    /// Banned addresses.
    pub banned: usize,
}

impl AddressBook {
    /// Learns `addr` from `source` at `now` (a known address keeps its
    /// state; `Direct` wins over other sources).
    pub fn add(&mut self, addr: SocketAddr, source: Source, now: Instant) {
        if let Some(e) = self.entries.get_mut(&addr) {
            e.seen = now;
            if source == Source::Direct {
                e.source = source;
            }
            return;
        }
        if self.entries.len() >= MAX_ADDRESSES && !self.evict() {
            return;
        }
        self.entries.insert(
            addr,
            Entry {
                source,
                connected: false,
                banned: false,
                fails: 0,
                next_try: now,
                seen: now,
                error: None,
                resets: 0,
            },
        );
    }

    /// Drops the least useful entry; false if none may go.
    fn evict(&mut self) -> bool {
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| !e.connected && !e.banned && e.source != Source::Direct)
            .max_by_key(|(_, e)| (e.fails, std::cmp::Reverse(e.seen)))
            .map(|(a, _)| *a);
        victim.is_some_and(|a| self.entries.remove(&a).is_some())
    }

    /// Addresses worth dialling now (not connected, not banned, backoff
    /// over), at most `n`, direct ones first.
    pub fn to_dial(&self, now: Instant, n: usize) -> Vec<SocketAddr> {
        let mut v: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.connected && !e.banned && e.next_try <= now)
            .map(|(a, e)| (e.source, e.fails, *a))
            .collect();
        v.sort_unstable();
        v.into_iter().take(n).map(|(_, _, a)| a).collect()
    }

    /// A connection to or from `addr` is up; false if one already was (one
    /// connection per address) or it is banned.
    pub fn connected(&mut self, addr: SocketAddr, source: Source, now: Instant) -> bool {
        self.add(addr, source, now);
        match self.entries.get_mut(&addr) {
            Some(e) if !e.connected && !e.banned => {
                // `fails` is kept: the dialer books an address as
                // connected before it dials; only a connection that
                // worked (see `disconnected`) clears it.
                e.connected = true;
                e.error = None;
                true
            }
            Some(_) => false,
            // Full of connected or banned addresses: let it in unbooked.
            None => true,
        }
    }

    /// `addr`'s connection ended (or never came up: `failed`).
    pub fn disconnected(&mut self, addr: SocketAddr, failed: bool, now: Instant) {
        if let Some(e) = self.entries.get_mut(&addr) {
            e.connected = false;
            if failed {
                e.fails = e.fails.saturating_add(1);
            } else {
                e.fails = 0;
                e.resets = 0;
            }
            let wait = RETRY_FIRST
                .saturating_mul(1u32 << e.fails.saturating_sub(1).min(10))
                .min(RETRY_MAX);
            e.next_try = now + if failed { wait } else { RETRY_MIN };
        }
    }

    /// Dialling `addr` failed before a connection was up: `why`, kept for
    /// [`AddressBook::unreachable`] (the backoff is
    /// [`AddressBook::disconnected`]'s).
    pub fn dial_failed(&mut self, addr: SocketAddr, why: String) {
        if let Some(e) = self.entries.get_mut(&addr) {
            e.error = Some(why);
        }
    }

    /// The TCP connection to `addr` came up but the BEP 3 handshake
    /// failed: `why`, kept for [`AddressBook::unreachable`] at once, or
    /// when `transient` (a reset or EOF) only after
    /// [`HANDSHAKE_RESETS_TO_GIVE_UP`] in a row.
    pub fn handshake_failed(&mut self, addr: SocketAddr, why: String, transient: bool) {
        if let Some(e) = self.entries.get_mut(&addr) {
            if transient {
                e.resets = e.resets.saturating_add(1);
                if e.resets < HANDSHAKE_RESETS_TO_GIVE_UP {
                    return;
                }
            }
            e.error = Some(why);
        }
    }

    /// When the book holds only `--peer` addresses, none connected and each
    /// dialled and failed: every address with its error (sorted). `None`
    /// while one may still answer or another source gave addresses.
    pub fn unreachable(&self) -> Option<Vec<(SocketAddr, String)>> {
        let mut v = Vec::new();
        for (a, e) in &self.entries {
            match &e.error {
                Some(why) if e.source == Source::Direct && !e.connected => {
                    v.push((*a, why.clone()))
                }
                _ => return None,
            }
        }
        v.sort();
        (!v.is_empty()).then_some(v)
    }

    /// Bans `addr`; true if it was not banned yet.
    pub fn ban(&mut self, addr: SocketAddr, now: Instant) -> bool {
        self.add(addr, Source::Incoming, now);
        match self.entries.get_mut(&addr) {
            Some(e) => !std::mem::replace(&mut e.banned, true),
            None => false,
        }
    }

    /// True if `addr` is banned.
    pub fn is_banned(&self, addr: &SocketAddr) -> bool {
        self.entries.get(addr).is_some_and(|e| e.banned)
    }

    /// True if `addr` is connected.
    pub fn is_connected(&self, addr: &SocketAddr) -> bool {
        self.entries.get(addr).is_some_and(|e| e.connected)
    }

    /// Every address not banned, with its source.
    pub fn addresses(&self) -> Vec<(SocketAddr, Source)> {
        self.entries
            .iter()
            .filter(|(_, e)| !e.banned)
            .map(|(a, e)| (*a, e.source))
            .collect()
    }

    /// Counts for the tables.
    pub fn stats(&self) -> BookStats {
        let mut by: HashMap<Source, usize> = HashMap::new();
        let mut conn: HashMap<Source, usize> = HashMap::new();
        let mut s = BookStats::default();
        for e in self.entries.values() {
            *by.entry(e.source).or_default() += 1;
            if e.connected {
                *conn.entry(e.source).or_default() += 1;
            }
            s.connected += usize::from(e.connected);
            s.banned += usize::from(e.banned);
        }
        s.known = by.into_iter().collect();
        s.known.sort_unstable();
        s.connected_by = conn.into_iter().collect();
        s.connected_by.sort_unstable();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn failures_back_off_and_a_connection_resets_them() {
        let t0 = Instant::now();
        let mut b = AddressBook::default();
        b.add(a(1), Source::Tracker, t0);
        assert_eq!(b.to_dial(t0, 10), [a(1)]);
        assert!(b.connected(a(1), Source::Tracker, t0));
        assert!(
            !b.connected(a(1), Source::Incoming, t0),
            "one connection per address"
        );
        assert!(b.to_dial(t0, 10).is_empty());
        b.disconnected(a(1), true, t0);
        let just_before = RETRY_FIRST - Duration::from_millis(1);
        assert!(
            b.to_dial(t0 + just_before, 10).is_empty(),
            "one failure: 1 s"
        );
        assert_eq!(b.to_dial(t0 + RETRY_FIRST, 10), [a(1)]);
        // The dialer books it as connected, then the dial fails again.
        assert!(b.connected(a(1), Source::Tracker, t0));
        b.disconnected(a(1), true, t0);
        assert!(
            b.to_dial(t0 + 2 * RETRY_FIRST - Duration::from_millis(1), 10)
                .is_empty(),
            "two failures: 2 s"
        );
        assert_eq!(b.to_dial(t0 + 2 * RETRY_FIRST, 10), [a(1)]);
        for _ in 0..20 {
            b.disconnected(a(1), true, t0);
        }
        assert_eq!(b.to_dial(t0 + RETRY_MAX, 10), [a(1)], "capped");
        assert!(b.connected(a(1), Source::Tracker, t0));
        b.disconnected(a(1), false, t0);
        assert_eq!(b.to_dial(t0 + RETRY_MIN, 10), [a(1)]);
    }

    #[test]
    fn unreachable_once_every_direct_peer_failed() {
        let t0 = Instant::now();
        let mut b = AddressBook::default();
        assert_eq!(b.unreachable(), None, "empty: nothing to report");
        b.add(a(1), Source::Direct, t0);
        b.add(a(2), Source::Direct, t0);
        b.dial_failed(a(1), "connection refused".into());
        b.disconnected(a(1), true, t0);
        assert_eq!(b.unreachable(), None, "a(2) not dialled yet");
        b.dial_failed(a(2), "timed out".into());
        b.disconnected(a(2), true, t0);
        assert_eq!(
            b.unreachable(),
            Some(vec![
                (a(1), "connection refused".into()),
                (a(2), "timed out".into())
            ])
        );
        // A connection clears the error; another source means waiting.
        assert!(b.connected(a(2), Source::Direct, t0));
        assert_eq!(b.unreachable(), None);
        b.disconnected(a(2), false, t0);
        assert_eq!(b.unreachable(), None, "a(2) answered once");
        b.dial_failed(a(2), "connection refused".into());
        assert!(b.unreachable().is_some());
        b.add(a(3), Source::Incoming, t0);
        assert_eq!(b.unreachable(), None, "an incoming peer found us");
    }

    #[test]
    fn handshake_resets_count_only_at_the_limit_other_failures_at_once() {
        let t0 = Instant::now();
        let mut b = AddressBook::default();
        b.add(a(1), Source::Direct, t0);
        for i in 1..HANDSHAKE_RESETS_TO_GIVE_UP {
            assert!(b.connected(a(1), Source::Direct, t0));
            b.handshake_failed(a(1), "reset".into(), true);
            b.disconnected(a(1), true, t0);
            assert_eq!(b.unreachable(), None, "reset {i} of the limit");
        }
        assert!(b.connected(a(1), Source::Direct, t0));
        b.handshake_failed(a(1), "reset".into(), true);
        b.disconnected(a(1), true, t0);
        assert_eq!(b.unreachable(), Some(vec![(a(1), "reset".into())]));
        // A handshake that got through starts the count again.
        assert!(b.connected(a(1), Source::Direct, t0));
        b.disconnected(a(1), false, t0);
        b.handshake_failed(a(1), "reset".into(), true);
        assert_eq!(b.unreachable(), None);
        // Not transient (garbage, another torrent, timeout): at once.
        b.handshake_failed(a(1), "wrong info-hash".into(), false);
        assert_eq!(
            b.unreachable(),
            Some(vec![(a(1), "wrong info-hash".into())])
        );
    }

    #[test]
    fn stats_count_known_and_connected_addresses_by_source() {
        let t0 = Instant::now();
        let mut b = AddressBook::default();
        b.add(a(1), Source::Dht, t0);
        b.add(a(2), Source::Dht, t0);
        b.add(a(3), Source::Pex, t0);
        b.add(a(4), Source::Tracker, t0);
        assert!(b.connected(a(2), Source::Tracker, t0));
        assert!(b.connected(a(3), Source::Tracker, t0));
        assert!(b.connected(a(5), Source::Incoming, t0));
        let s = b.stats();
        assert_eq!(
            s.known,
            [
                (Source::Tracker, 1),
                (Source::Incoming, 1),
                (Source::Dht, 2),
                (Source::Pex, 1)
            ]
        );
        assert_eq!(
            s.connected_by,
            [(Source::Incoming, 1), (Source::Dht, 1), (Source::Pex, 1)]
        );
        assert_eq!(s.connected, 3);
    }

    #[test]
    fn bans_stick_direct_peers_come_first_and_the_book_is_bounded() {
        let t0 = Instant::now();
        let mut b = AddressBook::default();
        b.add(a(2), Source::Tracker, t0);
        b.add(a(3), Source::Direct, t0);
        assert_eq!(b.to_dial(t0, 1), [a(3)]);
        assert!(b.ban(a(2), t0));
        assert!(!b.ban(a(2), t0));
        assert!(b.is_banned(&a(2)));
        assert!(!b.connected(a(2), Source::Incoming, t0));
        assert_eq!(b.to_dial(t0, 10), [a(3)]);
        for p in 10..10 + MAX_ADDRESSES as u16 {
            b.add(a(p), Source::Tracker, t0);
        }
        assert_eq!(b.entries.len(), MAX_ADDRESSES);
        assert!(b.is_banned(&a(2)), "bans are kept");
        assert!(b.entries.contains_key(&a(3)), "direct peers are kept");
        let s = b.stats();
        assert_eq!(s.banned, 1);
        assert!(s.connected_by.is_empty());
        assert_eq!(s.known.iter().map(|x| x.1).sum::<usize>(), MAX_ADDRESSES);
    }
}
