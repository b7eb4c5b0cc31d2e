use super::*;
use proptest::prelude::*;
use std::vec::Vec;
use AnnounceEvent::{Completed, None as Regular, Started, Stopped};

fn t(s: u64) -> Instant {
    Instant::from_secs(s)
}

/// Every announce due at `now`, in order.
fn drain<const N: usize>(a: &mut Announcer<N>, now: Instant) -> Vec<(usize, AnnounceEvent)> {
    core::iter::from_fn(|| a.poll_announce(now)).collect()
}

fn one() -> Announcer<4> {
    Announcer::from_tiers(AnnouncerConfig::default(), [0]).unwrap()
}

#[test]
fn started_then_regular_at_the_interval() {
    let mut a = one();
    assert_eq!(a.poll_timeout(), Some(t(0)));
    assert_eq!(drain(&mut a, t(5)), [(0, Started)]);
    // In flight: nothing more, no timer.
    assert_eq!(a.poll_timeout(), None);
    assert_eq!(a.tracker(0).unwrap().in_flight(), Some(Started));
    a.on_reply(t(6), 0, 1800, None);
    assert!(a.tracker(0).unwrap().started());
    assert_eq!(a.poll_timeout(), Some(t(6 + 1800)));
    assert_eq!(drain(&mut a, t(1805)), []);
    assert_eq!(drain(&mut a, t(1806)), [(0, Regular)]);
    a.on_reply(t(1807), 0, 1800, None);
    assert_eq!(a.poll_timeout(), Some(t(1807 + 1800)));
}

#[test]
fn interval_clamped_at_both_limits() {
    let mut a = one();
    drain(&mut a, t(0));
    a.on_reply(t(0), 0, 1, Some(0));
    assert_eq!(a.poll_timeout(), Some(Instant::ZERO + INTERVAL_FLOOR));
    drain(&mut a, t(30));
    a.on_reply(t(30), 0, u32::MAX, None);
    assert_eq!(a.poll_timeout(), Some(t(30) + INTERVAL_CAP));
    // Exactly at the limits: taken as is.
    drain(&mut a, t(10_000));
    a.on_reply(t(10_000), 0, 3600, None);
    assert_eq!(a.tracker(0).unwrap().next_announce(), t(13_600));
    drain(&mut a, t(13_600));
    a.on_reply(t(13_600), 0, 30, None);
    assert_eq!(a.tracker(0).unwrap().next_announce(), t(13_630));
    // A floor above the cap does not panic: the floor wins.
    let cfg = AnnouncerConfig {
        interval_floor: Duration::from_secs(100),
        interval_cap: Duration::from_secs(10),
        ..AnnouncerConfig::default()
    };
    assert_eq!(cfg.clamp_interval(50), Duration::from_secs(100));
}

#[test]
fn min_interval_bounds_an_early_reannounce() {
    let mut a = one();
    drain(&mut a, t(0));
    a.on_reply(t(0), 0, 1800, Some(300));
    assert_eq!(a.tracker(0).unwrap().min_announce(), t(300));
    a.reannounce(t(100));
    assert_eq!(a.poll_timeout(), Some(t(300)));
    assert_eq!(drain(&mut a, t(299)), []);
    assert_eq!(drain(&mut a, t(300)), [(0, Regular)]);
    a.on_reply(t(300), 0, 1800, Some(300));
    // Past the min interval: at once.
    a.reannounce(t(700));
    assert_eq!(drain(&mut a, t(700)), [(0, Regular)]);
    a.on_reply(t(700), 0, 1800, None);
    // No min interval given: the floor.
    assert_eq!(
        a.tracker(0).unwrap().min_announce(),
        t(700) + INTERVAL_FLOOR
    );
    // A min interval above the interval is cut to it.
    drain(&mut a, t(2500));
    a.on_reply(t(2500), 0, 100, Some(1000));
    assert_eq!(a.tracker(0).unwrap().min_announce(), t(2600));
    // A reannounce never delays a sooner regular one.
    a.reannounce(t(2550));
    assert_eq!(a.poll_timeout(), Some(t(2600)));
}

#[test]
fn backoff_doubles_to_the_cap_and_resets() {
    let mut a = one();
    let mut now = t(0);
    let mut waits = Vec::new();
    for _ in 0..12 {
        assert_eq!(drain(&mut a, now), [(0, Started)], "retry at {now}");
        a.on_failure(now, 0);
        let next = a.poll_timeout().unwrap();
        waits.push(next.saturating_duration_since(now).secs());
        assert_eq!(drain(&mut a, next - Duration::from_millis(1)), []);
        now = next;
    }
    assert_eq!(
        waits,
        [15, 30, 60, 120, 240, 480, 960, 1800, 1800, 1800, 1800, 1800]
    );
    assert_eq!(a.tracker(0).unwrap().fails(), 12);
    drain(&mut a, now);
    a.on_reply(now, 0, 600, None);
    assert_eq!(a.tracker(0).unwrap().fails(), 0);
    assert_eq!(a.poll_timeout(), Some(now + Duration::from_secs(600)));
    // Many failures do not overflow.
    assert_eq!(AnnouncerConfig::default().backoff(u32::MAX), RETRY_CAP);
}

#[test]
fn bep12_tries_a_tier_in_order_then_the_next_tier() {
    // Tier 0: trackers 0 and 1; tier 1: tracker 2.
    let mut a: Announcer<4> = Announcer::from_tiers(AnnouncerConfig::default(), [0, 0, 1]).unwrap();
    assert_eq!(drain(&mut a, t(0)), [(0, Started)]);
    a.on_failure(t(1), 0);
    // The next of the tier at once.
    assert_eq!(drain(&mut a, t(1)), [(1, Started)]);
    a.on_failure(t(2), 1);
    // The whole tier failed: tier 1, and the tier's earliest retry later.
    assert_eq!(drain(&mut a, t(2)), [(2, Started)]);
    assert!(a.tracker(0).unwrap().is_active());
    assert!(!a.tracker(1).unwrap().is_active());
    a.on_reply(t(3), 2, 1800, None);
    assert_eq!(a.poll_timeout(), Some(t(16)));
    assert_eq!(drain(&mut a, t(16)), [(0, Started)]);
    a.on_failure(t(16), 0);
    // Tracker 1's retry comes first now.
    assert_eq!(a.poll_timeout(), Some(t(17)));
    assert_eq!(drain(&mut a, t(17)), [(1, Started)]);
    a.on_reply(t(18), 1, 1800, None);
    // Tracker 1 answered: front of its tier; tier 0 works, tier 1 is left.
    assert_eq!(a.order().collect::<Vec<_>>(), [1, 0, 2]);
    assert!(a.tracker(1).unwrap().is_active());
    assert!(!a.tracker(0).unwrap().is_active());
    assert!(!a.tracker(2).unwrap().is_active());
    assert_eq!(a.poll_timeout(), Some(t(1818)));
    // Tracker 1 fails later: tracker 0 is next (its retry long due), and
    // with all of tier 0 failing, tier 1 is in use again (its regular
    // announce is due).
    assert_eq!(drain(&mut a, t(1818)), [(1, Regular)]);
    a.on_failure(t(1818), 1);
    assert_eq!(drain(&mut a, t(1818)), [(0, Started), (2, Regular)]);
}

#[test]
fn all_trackers_and_all_tiers() {
    let tiers = [0, 0, 1, 1];
    let cfg = AnnouncerConfig {
        all_trackers: true,
        ..AnnouncerConfig::default()
    };
    let mut a: Announcer<4> = Announcer::from_tiers(cfg, tiers).unwrap();
    assert_eq!(drain(&mut a, t(0)), [(0, Started), (1, Started)]);
    a.on_failure(t(1), 0);
    // One of tier 0 has not failed: tier 1 waits.
    assert_eq!(drain(&mut a, t(1)), []);
    a.on_failure(t(1), 1);
    assert_eq!(drain(&mut a, t(1)), [(2, Started), (3, Started)]);

    let cfg = AnnouncerConfig {
        all_tiers: true,
        ..AnnouncerConfig::default()
    };
    let mut a: Announcer<4> = Announcer::from_tiers(cfg, tiers).unwrap();
    assert_eq!(drain(&mut a, t(0)), [(0, Started), (2, Started)]);
    a.on_failure(t(1), 2);
    assert_eq!(drain(&mut a, t(1)), [(3, Started)]);

    let cfg = AnnouncerConfig {
        all_tiers: true,
        all_trackers: true,
        ..AnnouncerConfig::default()
    };
    let mut a: Announcer<4> = Announcer::from_tiers(cfg, tiers).unwrap();
    assert_eq!(
        drain(&mut a, t(0)),
        [(0, Started), (1, Started), (2, Started), (3, Started)]
    );
}

#[test]
fn tiers_kept_apart_whatever_the_order_of_addition() {
    let mut a: Announcer<4> = Announcer::new(AnnouncerConfig::default());
    assert_eq!(a.add_tracker(2), Ok(0));
    assert_eq!(a.add_tracker(0), Ok(1));
    assert_eq!(a.add_tracker(2), Ok(2));
    assert_eq!(a.add_tracker(1), Ok(3));
    assert_eq!(a.add_tracker(0), Err(TooManyTrackers { max: 4 }));
    assert_eq!(a.len(), 4);
    assert_eq!(a.order().collect::<Vec<_>>(), [1, 3, 0, 2]);
    assert_eq!(drain(&mut a, t(0)), [(1, Started)]);
}

#[test]
fn shuffle_stays_within_tiers() {
    let tiers = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
    let mut a: Announcer<16> = Announcer::from_tiers(AnnouncerConfig::default(), tiers).unwrap();
    a.shuffle(&mut XorShift32::new(3));
    let order: Vec<usize> = a.order().collect();
    assert_ne!(order, (0..16).collect::<Vec<_>>());
    assert!(order[..8].iter().all(|&i| i < 8), "{order:?}");
    assert!(order[8..].iter().all(|&i| i >= 8), "{order:?}");
    // The first of the shuffled tier 0 goes first.
    assert_eq!(drain(&mut a, t(0)), [(order[0], Started)]);
}

#[test]
fn completed_once_after_starting_incomplete() {
    let mut a = one();
    drain(&mut a, t(0));
    a.on_reply(t(0), 0, 1800, None);
    a.set_complete(t(100));
    // At once, not at the interval.
    assert_eq!(a.poll_timeout(), Some(t(100)));
    assert_eq!(drain(&mut a, t(100)), [(0, Completed)]);
    // Failed: retried (after the backoff), still `completed`.
    a.on_failure(t(101), 0);
    assert_eq!(drain(&mut a, t(101)), []);
    assert_eq!(drain(&mut a, t(116)), [(0, Completed)]);
    a.on_reply(t(117), 0, 1800, None);
    assert!(a.tracker(0).unwrap().told_complete());
    a.set_complete(t(200));
    assert_eq!(drain(&mut a, t(1917)), [(0, Regular)]);
    a.on_reply(t(1917), 0, 1800, None);
    a.stop(t(2000));
    assert_eq!(drain(&mut a, t(2000)), [(0, Stopped)]);
}

#[test]
fn no_completed_when_complete_from_the_start() {
    let mut a = one();
    a.set_complete(t(0));
    assert_eq!(drain(&mut a, t(0)), [(0, Started)]);
    a.on_reply(t(0), 0, 1800, None);
    assert_eq!(drain(&mut a, t(1800)), [(0, Regular)]);
    a.on_reply(t(1800), 0, 1800, None);
    a.stop(t(1900));
    assert_eq!(drain(&mut a, t(1900)), [(0, Stopped)]);
    a.on_reply(t(1901), 0, 1800, None);
    assert!(a.is_finished());
    assert!(!a.tracker(0).unwrap().told_complete());
}

#[test]
fn complete_while_started_in_flight() {
    // The `started` carried bytes left: `completed` is owed once answered.
    let mut a = one();
    assert_eq!(drain(&mut a, t(0)), [(0, Started)]);
    a.set_complete(t(1));
    a.on_reply(t(2), 0, 1800, None);
    assert_eq!(drain(&mut a, t(2)), [(0, Completed)]);
}

#[test]
fn completed_before_stopped() {
    // Complete while the tracker is failing, then shut down before the
    // retry: `completed` first, then `stopped`, once each, at once.
    let mut a = one();
    drain(&mut a, t(0));
    a.on_reply(t(0), 0, 1800, None);
    assert_eq!(drain(&mut a, t(1800)), [(0, Regular)]);
    a.on_failure(t(1800), 0);
    a.set_complete(t(1801));
    assert_eq!(drain(&mut a, t(1801)), [], "backing off");
    a.stop(t(1802));
    assert_eq!(drain(&mut a, t(1802)), [(0, Completed)]);
    a.on_reply(t(1803), 0, 1800, None);
    assert_eq!(drain(&mut a, t(1803)), [(0, Stopped)]);
    assert!(!a.is_finished());
    a.on_failure(t(1804), 0);
    assert!(a.is_finished());
    assert_eq!(a.poll_timeout(), None);
    assert_eq!(drain(&mut a, t(5000)), []);

    // A failed `completed` is not retried: `stopped` follows.
    let mut a = one();
    drain(&mut a, t(0));
    a.on_reply(t(0), 0, 1800, None);
    a.set_complete(t(1));
    a.stop(t(1));
    assert_eq!(drain(&mut a, t(1)), [(0, Completed)]);
    a.on_failure(t(2), 0);
    assert_eq!(drain(&mut a, t(2)), [(0, Stopped)]);

    // A tracker out of use (tier 1 once tier 0 recovered) still gets both.
    let mut a: Announcer<4> = Announcer::from_tiers(AnnouncerConfig::default(), [0, 1]).unwrap();
    drain(&mut a, t(0));
    a.on_failure(t(0), 0);
    assert_eq!(drain(&mut a, t(0)), [(1, Started)]);
    a.on_reply(t(0), 1, 1800, None);
    assert_eq!(drain(&mut a, t(15)), [(0, Started)]);
    a.on_reply(t(15), 0, 1800, None);
    assert!(!a.tracker(1).unwrap().is_active());
    a.set_complete(t(20));
    assert_eq!(drain(&mut a, t(20)), [(0, Completed)]);
    a.on_reply(t(20), 0, 1800, None);
    a.stop(t(30));
    assert_eq!(drain(&mut a, t(30)), [(0, Stopped), (1, Completed)]);
    a.on_reply(t(31), 1, 0, None);
    assert_eq!(drain(&mut a, t(31)), [(1, Stopped)]);
}

#[test]
fn no_stopped_for_a_tracker_never_started() {
    // Tracker 0 answered; 1 was never tried; 2 only failed; 3's `started`
    // is in flight at the stop and then fails; 4's is in flight and answered.
    let cfg = AnnouncerConfig {
        all_trackers: true,
        ..AnnouncerConfig::default()
    };
    let mut a: Announcer<8> = Announcer::from_tiers(cfg, [0, 1, 0, 0, 0]).unwrap();
    assert_eq!(
        drain(&mut a, t(0)),
        [(0, Started), (2, Started), (3, Started), (4, Started)]
    );
    a.on_reply(t(1), 0, 1800, None);
    a.on_failure(t(1), 2);
    a.stop(t(2));
    assert_eq!(drain(&mut a, t(2)), [(0, Stopped)]);
    a.on_failure(t(3), 3);
    a.on_reply(t(3), 4, 1800, None);
    assert_eq!(drain(&mut a, t(3)), [(4, Stopped)]);
    a.on_reply(t(4), 0, 0, None);
    assert!(!a.is_finished());
    a.on_reply(t(4), 4, 0, None);
    assert!(a.is_finished());
    assert!(a.tracker(0).unwrap().stopped());
    assert!(!a.tracker(1).unwrap().stopped());
    assert!(!a.tracker(2).unwrap().stopped());
    assert_eq!(drain(&mut a, t(100_000)), []);
}

#[test]
fn stray_reports_are_ignored() {
    let mut a = one();
    a.on_reply(t(0), 0, 10, None);
    a.on_failure(t(0), 0);
    a.on_reply(t(0), 9, 10, None);
    a.on_failure(t(0), 9);
    assert_eq!(a.tracker(0).unwrap().fails(), 0);
    assert_eq!(drain(&mut a, t(0)), [(0, Started)]);
    // An empty announcer has nothing to do and is finished at once.
    let mut e: Announcer<2> = Announcer::new(AnnouncerConfig::default());
    assert!(e.is_empty());
    assert_eq!(e.poll_announce(t(0)), None);
    assert_eq!(e.poll_timeout(), None);
    e.stop(t(0));
    assert!(e.is_finished());
}

#[derive(Clone, Debug)]
enum Op {
    /// Time passes (ms), then every due announce is started.
    Advance(u64),
    /// The oldest announce in flight ends: answered (interval, min
    /// interval) or failed.
    Reply(u32, Option<u32>),
    Fail,
    Complete,
    Reannounce,
    Stop,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..4_000_000).prop_map(Op::Advance),
        3 => (any::<u32>(), proptest::option::of(any::<u32>())).prop_map(|(i, m)| Op::Reply(i % 5000, m)),
        3 => Just(Op::Fail),
        1 => Just(Op::Complete),
        1 => Just(Op::Reannounce),
        1 => Just(Op::Stop),
    ]
}

/// What the model knows of one tracker from the outside.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    started: bool,
    started_incomplete: bool,
    told_complete: bool,
    completed_tried_in_stop: bool,
    stopped_sent: bool,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random tiers, modes and reports: no panic, the timer is never in the
    /// past and says when the next announce comes, and each tracker's
    /// events follow BEP 3's order.
    #[test]
    fn events_in_a_legal_order(
        tiers in proptest::collection::vec(0usize..3, 0..6),
        all_tiers: bool,
        all_trackers: bool,
        seed: u32,
        complete_at_start: bool,
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        let cfg = AnnouncerConfig { all_tiers, all_trackers, ..AnnouncerConfig::default() };
        let mut a: Announcer<6> = Announcer::from_tiers(cfg, tiers.iter().copied()).unwrap();
        a.shuffle(&mut XorShift32::new(seed));
        let mut now = Instant::ZERO;
        let mut complete = complete_at_start;
        if complete {
            a.set_complete(now);
        }
        let mut stopping = false;
        let mut seen = [Seen::default(); 6];
        let mut flight: Vec<(usize, AnnounceEvent, bool)> = Vec::new();
        let mut ops = ops;
        // Finish: stop, then answer everything until finished.
        ops.push(Op::Stop);
        ops.extend(core::iter::repeat_n(Op::Reply(1800, None), 30));
        for op in ops {
            match op {
                Op::Advance(ms) => now = now.add_millis(ms),
                Op::Reply(i, m) => {
                    if !flight.is_empty() {
                        let (idx, ev, incomplete) = flight.remove(0);
                        a.on_reply(now, idx, i, m);
                        let s = &mut seen[idx];
                        match ev {
                            Started => { s.started = true; s.started_incomplete = incomplete; }
                            Completed => s.told_complete = true,
                            _ => {}
                        }
                    }
                }
                Op::Fail => {
                    if !flight.is_empty() {
                        let (idx, ev, _) = flight.remove(0);
                        a.on_failure(now, idx);
                        if ev == Completed && stopping {
                            seen[idx].completed_tried_in_stop = true;
                        }
                    }
                }
                Op::Complete => { complete = true; a.set_complete(now); }
                Op::Reannounce => a.reannounce(now),
                Op::Stop => { stopping = true; a.stop(now); }
            }
            while let Some((idx, ev)) = a.poll_announce(now) {
                prop_assert!(idx < tiers.len());
                prop_assert!(!flight.iter().any(|f| f.0 == idx), "two at once to {}", idx);
                let s = seen[idx];
                prop_assert!(!s.stopped_sent, "{:?} after stopped", ev);
                match ev {
                    Started => prop_assert!(!s.started && !stopping),
                    Regular => prop_assert!(s.started && !stopping),
                    Completed => {
                        prop_assert!(s.started && s.started_incomplete && complete);
                        prop_assert!(!s.told_complete && !s.completed_tried_in_stop);
                    }
                    Stopped => {
                        prop_assert!(s.started && stopping);
                        // Completed was tried first if it was owed.
                        prop_assert!(
                            !(complete && s.started_incomplete && !s.told_complete)
                                || s.completed_tried_in_stop
                        );
                        seen[idx].stopped_sent = true;
                    }
                }
                flight.push((idx, ev, !complete));
            }
            if let Some(at) = a.poll_timeout() {
                prop_assert!(at > now, "timer {} at or before now {} after draining", at, now);
            } else {
                prop_assert!(flight.len() == a.order().filter(|&i| a.tracker(i).unwrap().in_flight().is_some()).count());
            }
        }
        // Everything answered: finished, and every started tracker was told
        // `stopped`.
        prop_assert!(flight.is_empty());
        prop_assert!(a.is_finished());
        for (i, s) in seen.iter().enumerate().take(tiers.len()) {
            prop_assert_eq!(s.started, s.stopped_sent, "tracker {}", i);
        }
    }
}

#[test]
fn told_complete_is_per_tracker() {
    let cfg = AnnouncerConfig {
        all_trackers: true,
        ..AnnouncerConfig::default()
    };
    let mut a: Announcer<2> = Announcer::from_tiers(cfg, [0, 0]).unwrap();
    assert_eq!(drain(&mut a, t(0)), [(0, Started), (1, Started)]);
    a.on_reply(t(0), 0, 1800, None);
    a.on_reply(t(0), 1, 1800, None);
    a.set_complete(t(10));
    // Tracker 1 answered last: the front of the tier.
    assert_eq!(drain(&mut a, t(10)), [(1, Completed), (0, Completed)]);
    a.on_reply(t(11), 0, 1800, None);
    a.on_failure(t(11), 1);
    // Only the tracker that missed it is told again.
    assert_eq!(drain(&mut a, t(26)), [(1, Completed)]);
    a.on_reply(t(27), 1, 1800, None);
    assert!(a.tracker(0).unwrap().told_complete() && a.tracker(1).unwrap().told_complete());
    assert_eq!(drain(&mut a, t(1811)), [(0, Regular)]);
    assert_eq!(drain(&mut a, t(1827)), [(1, Regular)]);
}
