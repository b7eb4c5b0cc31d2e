//! The announce schedule of one torrent over its trackers: which tracker to
//! announce to, when, and with which event. Sans-IO: it sends nothing and
//! reads no clock; the shell runs the announces (HTTP, or BEP 15 through
//! [`udp::client`](super::udp::client), whose retransmits stay there) and
//! reports how each ended.
//!
//! - BEP 12 tiers: trackers are tried tier by tier; within a tier in order
//!   ("shuffled when first read": [`Announcer::shuffle`]), the next one
//!   when one fails; a tracker that answers "will be moved to the front of
//!   the tier". The next tier is used only while every tracker of the ones
//!   before it is failing. [`AnnouncerConfig::all_tiers`] announces to one
//!   tracker of every tier, [`AnnouncerConfig::all_trackers`] to every
//!   tracker of a tier (both: to every tracker), as libtorrent's
//!   `announce_to_all_tiers` / `announce_to_all_trackers`.
//! - The tracker's `interval` and `min interval` (BEP 3, BEP 15), clamped
//!   to [`AnnouncerConfig::interval_floor`] ..
//!   [`AnnouncerConfig::interval_cap`]: regular announces follow the
//!   interval; [`Announcer::reannounce`] asks for an early one, no earlier
//!   than the min interval.
//! - Backoff after a failed announce: [`AnnouncerConfig::retry_base`]
//!   doubled per failure in a row, at most [`AnnouncerConfig::retry_cap`].
//! - Events per tracker (BEP 3): `started` until one is answered; then
//!   regular announces; `completed` once, when the torrent completes after
//!   the tracker was started with bytes left (not when it was complete from
//!   the start); after [`Announcer::stop`], `stopped` — preceded by
//!   `completed` if the download finished since the tracker was last told —
//!   only to trackers that answered a `started`.
//!
//! # Driving it
//! After every input (`set_complete`, `on_reply`, `on_failure`, `stop`,
//! `reannounce`, or a timer firing), call [`Announcer::poll_announce`] until
//! it returns `None`, starting each announce it names, then arm a timer at
//! [`Announcer::poll_timeout`]. Every announce handed out must be reported
//! once, with [`Announcer::on_reply`] or [`Announcer::on_failure`] (a
//! timeout is a failure); until then that tracker gets nothing else. During
//! shutdown, each `completed` and `stopped` is tried once; the shell bounds
//! the wait and may stop at [`Announcer::is_finished`].
//!
//! ```
//! use ourtorrent_core::time::Instant;
//! use ourtorrent_core::tracker::announce::{Announcer, AnnouncerConfig};
//! use ourtorrent_core::tracker::AnnounceEvent;
//!
//! // Tier 0: trackers 0 and 1; tier 1: tracker 2.
//! let mut a: Announcer = Announcer::from_tiers(AnnouncerConfig::default(), [0, 0, 1]).unwrap();
//! let now = Instant::from_secs(0);
//! assert_eq!(a.poll_announce(now), Some((0, AnnounceEvent::Started)));
//! assert_eq!(a.poll_announce(now), None); // one tracker of tier 0 at a time
//! // ... the shell announces; tracker 0 answers "interval 1800":
//! a.on_reply(now, 0, 1800, None);
//! assert_eq!(a.poll_timeout(), Some(Instant::from_secs(1800)));
//! a.stop(Instant::from_secs(60));
//! assert_eq!(a.poll_announce(Instant::from_secs(60)), Some((0, AnnounceEvent::Stopped)));
//! ```
//!
//! # Limits
//! At most `N` trackers ([`MAX_TRACKERS`] by default); past that
//! [`Announcer::add_tracker`] refuses with [`TooManyTrackers`].

use core::fmt;

use heapless::Vec;

use super::AnnounceEvent;
use crate::rand::XorShift32;
use crate::time::{Duration, Instant};

/// Default bound on the trackers of one torrent (the `N` of [`Announcer`]).
pub const MAX_TRACKERS: usize = 32;

/// Shortest interval (and min interval) honoured: a tracker asking for
/// less is announced to this often at most.
pub const INTERVAL_FLOOR: Duration = Duration::from_secs(30);

/// Longest interval honoured: a tracker asking for more is announced to
/// this often anyway (announcing more often than asked is allowed).
pub const INTERVAL_CAP: Duration = Duration::from_secs(3600);

/// Wait after the first failure in a row; doubled per further failure.
pub const RETRY_BASE: Duration = Duration::from_secs(15);

/// Longest wait between attempts at a failing tracker.
pub const RETRY_CAP: Duration = Duration::from_secs(1800);

/// Announce policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnouncerConfig {
    /// Announce to one tracker of every tier, not only to the first tier
    /// that works (libtorrent `announce_to_all_tiers`; not BEP 12).
    pub all_tiers: bool,
    /// Announce to every tracker of a tier, not only to the first that
    /// works (libtorrent `announce_to_all_trackers`; not BEP 12).
    pub all_trackers: bool,
    /// Shortest interval and min interval honoured.
    pub interval_floor: Duration,
    /// Longest interval honoured.
    pub interval_cap: Duration,
    /// Backoff after one failure.
    pub retry_base: Duration,
    /// Longest backoff.
    pub retry_cap: Duration,
}

impl Default for AnnouncerConfig {
    /// BEP 12 behaviour and the named limits of this module.
    fn default() -> Self {
        AnnouncerConfig {
            all_tiers: false,
            all_trackers: false,
            interval_floor: INTERVAL_FLOOR,
            interval_cap: INTERVAL_CAP,
            retry_base: RETRY_BASE,
            retry_cap: RETRY_CAP,
        }
    }
}

impl AnnouncerConfig {
    /// `secs` clamped to `floor ..= max(cap, floor)` (never panics on a
    /// floor above the cap).
    fn clamp_interval(&self, secs: u32) -> Duration {
        let d = Duration::from_secs(u64::from(secs));
        d.min(self.interval_cap).max(self.interval_floor)
    }

    /// Backoff after `fails` failures in a row (`fails` ≥ 1).
    fn backoff(&self, fails: u32) -> Duration {
        let doublings = fails.saturating_sub(1).min(63);
        let ms = self.retry_base.millis().saturating_mul(1u64 << doublings);
        Duration::from_millis(ms.min(self.retry_cap.millis()))
    }
}

/// [`Announcer::add_tracker`] refused: the announcer already holds `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyTrackers {
    /// The capacity (`N`).
    pub max: usize,
}

impl fmt::Display for TooManyTrackers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "more than {} trackers for one torrent", self.max)
    }
}

impl core::error::Error for TooManyTrackers {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InFlight {
    event: AnnounceEvent,
    /// The torrent was incomplete when the announce was handed out (so a
    /// `started` tells the tracker we had bytes left).
    incomplete: bool,
}

/// One tracker's announce state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackerSlot {
    tier: usize,
    fails: u32,
    next_at: Instant,
    min_at: Instant,
    in_flight: Option<InFlight>,
    started: bool,
    started_incomplete: bool,
    told_complete: bool,
    complete_tried: bool,
    stop_done: bool,
    active: bool,
}

impl TrackerSlot {
    fn new(tier: usize) -> Self {
        TrackerSlot {
            tier,
            fails: 0,
            next_at: Instant::ZERO,
            min_at: Instant::ZERO,
            in_flight: None,
            started: false,
            started_incomplete: false,
            told_complete: false,
            complete_tried: false,
            stop_done: false,
            active: false,
        }
    }

    /// Its BEP 12 tier (0 first).
    pub fn tier(&self) -> usize {
        self.tier
    }

    /// Failed announces in a row.
    pub fn fails(&self) -> u32 {
        self.fails
    }

    /// It answered a `started`: it knows us (and will be sent `stopped`).
    pub fn started(&self) -> bool {
        self.started
    }

    /// It answered our `completed`.
    pub fn told_complete(&self) -> bool {
        self.told_complete
    }

    /// The event of the announce handed out and not yet reported.
    pub fn in_flight(&self) -> Option<AnnounceEvent> {
        self.in_flight.map(|f| f.event)
    }

    /// The time of its next regular announce (or retry, while failing).
    pub fn next_announce(&self) -> Instant {
        self.next_at
    }

    /// The earliest time it accepts an early announce (its min interval).
    pub fn min_announce(&self) -> Instant {
        self.min_at
    }

    /// It is in use now: the tier rules pick it for regular announces.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Its shutdown is over: `stopped` was answered or failed.
    pub fn stopped(&self) -> bool {
        self.stop_done
    }
}

/// The announce schedule of one torrent over at most `N` trackers; see the
/// [module documentation](self).
#[derive(Clone, Debug)]
pub struct Announcer<const N: usize = MAX_TRACKERS> {
    cfg: AnnouncerConfig,
    /// Indexed by tracker index (the order trackers were added).
    slots: Vec<TrackerSlot, N>,
    /// Tracker indices by tier, in BEP 12 order within each tier.
    order: Vec<usize, N>,
    complete: bool,
    stopping: bool,
    /// The latest `now` seen; [`Self::poll_timeout`] is never before it.
    last_now: Instant,
}

impl<const N: usize> Announcer<N> {
    /// An announcer with no trackers, for an incomplete torrent.
    pub fn new(cfg: AnnouncerConfig) -> Self {
        Announcer {
            cfg,
            slots: Vec::new(),
            order: Vec::new(),
            complete: false,
            stopping: false,
            last_now: Instant::ZERO,
        }
    }

    /// An announcer over trackers given by their tiers, in their order (as
    /// [`Metainfo::trackers`](crate::metainfo::Metainfo::trackers) yields
    /// them): tracker `i` is the `i`-th item.
    pub fn from_tiers(
        cfg: AnnouncerConfig,
        tiers: impl IntoIterator<Item = usize>,
    ) -> Result<Self, TooManyTrackers> {
        let mut a = Self::new(cfg);
        for tier in tiers {
            a.add_tracker(tier)?;
        }
        Ok(a)
    }

    /// Adds a tracker of BEP 12 tier `tier` (0 first), after the others of
    /// its tier; returns its index, the one every other call uses.
    pub fn add_tracker(&mut self, tier: usize) -> Result<usize, TooManyTrackers> {
        let idx = self.slots.len();
        let full = TooManyTrackers { max: N };
        self.slots.push(TrackerSlot::new(tier)).map_err(|_| full)?;
        let slots = &self.slots;
        let at = self
            .order
            .iter()
            .position(|&i| slots.get(i).is_some_and(|s| s.tier > tier))
            .unwrap_or(self.order.len());
        self.order.insert(at, idx).map_err(|_| full)?;
        self.refresh();
        Ok(idx)
    }

    /// BEP 12: shuffles the trackers within each tier. Call once, before the
    /// first [`Self::poll_announce`].
    pub fn shuffle(&mut self, rng: &mut XorShift32) {
        let mut start = 0;
        while let Some(end) = self.tier_end(start) {
            if let Some(seg) = self.order.get_mut(start..end) {
                rng.shuffle(seg);
            }
            start = end;
        }
        self.refresh();
    }

    /// The torrent is complete (call once it is; also before the first
    /// announce for a torrent complete from the start). Trackers started
    /// while it was incomplete are owed one `completed`.
    pub fn set_complete(&mut self, now: Instant) {
        self.saw(now);
        self.complete = true;
    }

    /// True once [`Self::set_complete`] was called.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Asks for an early regular announce (e.g. more peers are wanted) to
    /// every tracker in use, each no earlier than its min interval.
    pub fn reannounce(&mut self, now: Instant) {
        self.saw(now);
        for s in self.slots.iter_mut().filter(|s| s.started && s.fails == 0) {
            s.next_at = s.next_at.min(s.min_at.max(now));
        }
    }

    /// Shutdown: no more `started` or regular announces; from now on
    /// [`Self::poll_announce`] yields `completed` (if owed) and `stopped`
    /// for each tracker that answered a `started` (including one whose
    /// `started` is still in flight, once it is answered).
    pub fn stop(&mut self, now: Instant) {
        self.saw(now);
        self.stopping = true;
    }

    /// True once [`Self::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// True when stopping and nothing is left to announce or to wait for.
    pub fn is_finished(&self) -> bool {
        self.stopping
            && self
                .slots
                .iter()
                .all(|s| s.in_flight.is_none() && self.due(s).is_none())
    }

    /// The next announce to start now: a tracker index and the event to
    /// send. The tracker gets nothing else until the announce is reported
    /// ([`Self::on_reply`] / [`Self::on_failure`]).
    pub fn poll_announce(&mut self, now: Instant) -> Option<(usize, AnnounceEvent)> {
        self.saw(now);
        let complete = self.complete;
        let idx = self.order.iter().copied().find(|&i| {
            self.slots
                .get(i)
                .and_then(|s| self.due(s))
                .is_some_and(|(at, _)| at <= now)
        })?;
        let slot = self.slots.get(idx)?;
        let (_, event) = self.due(slot)?;
        let slot = self.slots.get_mut(idx)?;
        slot.in_flight = Some(InFlight {
            event,
            incomplete: !complete,
        });
        Some((idx, event))
    }

    /// When [`Self::poll_announce`] next has something to yield (never
    /// before the latest `now` given); `None` while every tracker waits for
    /// a report or has nothing left to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| self.due(s))
            .map(|(at, _)| at)
            .min()
            .map(|at| at.max(self.last_now))
    }

    /// Tracker `idx` answered the announce handed out for it, asking for
    /// announces every `interval` seconds and none more often than
    /// `min_interval` (both clamped to the configured limits; a missing min
    /// interval counts as the floor). A report for a tracker with no
    /// announce in flight is ignored.
    pub fn on_reply(&mut self, now: Instant, idx: usize, interval: u32, min_interval: Option<u32>) {
        self.saw(now);
        let cfg = self.cfg;
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        let Some(done) = slot.in_flight.take() else {
            return;
        };
        slot.fails = 0;
        match done.event {
            AnnounceEvent::Started => {
                slot.started = true;
                slot.started_incomplete = done.incomplete;
            }
            AnnounceEvent::Completed => slot.told_complete = true,
            AnnounceEvent::Stopped => slot.stop_done = true,
            AnnounceEvent::None => {}
        }
        let interval = cfg.clamp_interval(interval);
        let min = min_interval.map_or(cfg.interval_floor, |m| cfg.clamp_interval(m));
        slot.next_at = now + interval;
        slot.min_at = now + min.min(interval);
        // BEP 12: "if a connection with a tracker is successful, it will be
        // moved to the front of the tier".
        self.move_to_front(idx);
        self.refresh();
    }

    /// The announce handed out for tracker `idx` failed (no answer in time,
    /// an error reply, a refused connection): back off, and let the tier
    /// rules try the next tracker. During shutdown a failed `completed` or
    /// `stopped` is not retried. Ignored if no announce is in flight.
    pub fn on_failure(&mut self, now: Instant, idx: usize) {
        self.saw(now);
        let cfg = self.cfg;
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        let Some(failed) = slot.in_flight.take() else {
            return;
        };
        slot.fails = slot.fails.saturating_add(1);
        slot.next_at = now + cfg.backoff(slot.fails);
        if self.stopping {
            match failed.event {
                AnnounceEvent::Completed => slot.complete_tried = true,
                AnnounceEvent::Stopped => slot.stop_done = true,
                _ => {}
            }
        }
        self.refresh();
    }

    /// Tracker `idx`'s state.
    pub fn tracker(&self, idx: usize) -> Option<&TrackerSlot> {
        self.slots.get(idx)
    }

    /// Number of trackers.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True with no tracker.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Tracker indices in announce order: by tier, BEP 12 order within.
    pub fn order(&self) -> impl Iterator<Item = usize> + '_ {
        self.order.iter().copied()
    }

    /// The configuration.
    pub fn config(&self) -> &AnnouncerConfig {
        &self.cfg
    }

    fn saw(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
    }

    /// What `s` wants next and from when: `None` while in flight or idle.
    fn due(&self, s: &TrackerSlot) -> Option<(Instant, AnnounceEvent)> {
        if s.in_flight.is_some() {
            return None;
        }
        let owes_complete = self.complete && s.started_incomplete && !s.told_complete;
        if self.stopping {
            // Best effort, at once, one try each.
            if !s.started || s.stop_done {
                return None;
            }
            if owes_complete && !s.complete_tried {
                return Some((Instant::ZERO, AnnounceEvent::Completed));
            }
            return Some((Instant::ZERO, AnnounceEvent::Stopped));
        }
        if !s.active {
            return None;
        }
        if !s.started {
            return Some((s.next_at, AnnounceEvent::Started));
        }
        if owes_complete {
            // At once, unless the tracker is failing: then at the retry.
            let at = if s.fails > 0 {
                s.next_at
            } else {
                Instant::ZERO
            };
            return Some((at, AnnounceEvent::Completed));
        }
        Some((s.next_at, AnnounceEvent::None))
    }

    /// The end of the tier that starts at `start` in `order`.
    fn tier_end(&self, start: usize) -> Option<usize> {
        let tier = self.slots.get(*self.order.get(start)?)?.tier;
        let len = self
            .order
            .iter()
            .skip(start)
            .take_while(|&&i| self.slots.get(i).is_some_and(|s| s.tier == tier))
            .count();
        Some(start.saturating_add(len))
    }

    fn move_to_front(&mut self, idx: usize) {
        let Some(tier) = self.slots.get(idx).map(|s| s.tier) else {
            return;
        };
        let slots = &self.slots;
        let start = self
            .order
            .iter()
            .position(|&i| slots.get(i).is_some_and(|s| s.tier == tier));
        let at = self.order.iter().position(|&i| i == idx);
        if let (Some(start), Some(at)) = (start, at) {
            if let Some(seg) = self.order.get_mut(start..=at) {
                seg.rotate_right(1);
            }
        }
    }

    /// Recomputes which trackers are in use. Per tier, in order: with
    /// `all_trackers` every tracker, else the first that is not failing or,
    /// if all are, the one whose retry comes first. Tiers after the first
    /// with a tracker not failing are left out unless `all_tiers`.
    fn refresh(&mut self) {
        let mut start = 0;
        let mut found_working = false;
        while let Some(end) = self.tier_end(start) {
            let seg = self.order.get(start..end).unwrap_or_default();
            let slots = &self.slots;
            let fails = |i: usize| slots.get(i).map_or(u32::MAX, |s| s.fails);
            let working = seg.iter().any(|&i| fails(i) == 0);
            let tier_on = self.cfg.all_tiers || !found_working;
            let chosen = seg.iter().copied().find(|&i| fails(i) == 0).or_else(|| {
                seg.iter()
                    .copied()
                    .min_by_key(|&i| slots.get(i).map(|s| s.next_at))
            });
            for &i in seg {
                if let Some(s) = self.slots.get_mut(i) {
                    s.active = tier_on && (self.cfg.all_trackers || Some(i) == chosen);
                }
            }
            found_working |= working;
            start = end;
        }
    }
}

#[cfg(test)]
mod tests;
