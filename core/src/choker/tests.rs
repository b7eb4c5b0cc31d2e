use std::collections::HashMap;
use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

/// `n` interested peers, connected long ago, with download rates `rates`.
fn peers(rates: &[u64]) -> Vec<Candidate> {
    rates
        .iter()
        .enumerate()
        .map(|(i, &r)| Candidate {
            key: PeerKey(i as u16),
            interested: true,
            down_rate: r,
            ..Candidate::new(PeerKey(i as u16), at(0))
        })
        .collect()
}

fn unchoked(ps: &[Candidate]) -> Vec<u16> {
    let mut v: Vec<u16> = ps.iter().filter(|c| c.unchoked).map(|c| c.key.0).collect();
    v.sort();
    v
}

/// A clock past the "new peer" window so the draw is uniform.
const LATE: u64 = 10 * DEFAULT_NEW_PEER_MS;

#[test]
fn fewer_interested_than_slots_all_unchoked_no_optimistic() {
    let mut ch = Choker::new(ChokerConfig::default(), 1);
    let mut ps = peers(&[5, 0, 9]);
    assert_eq!(ch.update(at(LATE), false, &mut ps), Update::Rechoked);
    assert_eq!(unchoked(&ps), [0, 1, 2]);
    // Everyone has a regular slot: nobody is left for the optimistic one.
    assert_eq!(ch.optimistic(), None);
    assert_eq!(ch.poll_timeout(), Some(at(LATE + DEFAULT_RECHOKE_MS)));
}

#[test]
fn tit_for_tat_best_uploaders_plus_one_optimistic() {
    let mut ch = Choker::new(ChokerConfig::default(), 7);
    // Rates: peers 2, 4, 6, 7 are the four best.
    let mut ps = peers(&[10, 20, 900, 30, 800, 40, 700, 600]);
    ch.update(at(LATE), false, &mut ps);
    let opt = ch.optimistic().expect("an optimistic peer");
    assert!(
        [0, 1, 3, 5].contains(&opt.0),
        "optimistic {opt:?} among the choked"
    );
    let mut want = vec![2, 4, 6, 7, opt.0];
    want.sort();
    assert_eq!(unchoked(&ps), want);
}

#[test]
fn seeding_ranks_by_upload_rate() {
    let mut ch = Choker::new(
        ChokerConfig {
            slots: 2,
            ..ChokerConfig::default()
        },
        3,
    );
    let mut ps = peers(&[900, 800, 0, 0, 0]);
    for (c, up) in ps.iter_mut().zip([0, 0, 50, 70, 60]) {
        c.up_rate = up;
    }
    ch.update(at(LATE), true, &mut ps);
    let opt = ch.optimistic().expect("an optimistic peer").0;
    assert!(opt == 0 || opt == 1 || opt == 2);
    let reg: Vec<u16> = ps
        .iter()
        .filter(|c| c.unchoked && c.key.0 != opt)
        .map(|c| c.key.0)
        .collect();
    assert_eq!(reg, [3, 4], "the two peers we upload to fastest");
}

#[test]
fn faster_uninterested_peers_unchoked_without_taking_a_slot() {
    let mut ch = Choker::new(
        ChokerConfig {
            slots: 2,
            ..ChokerConfig::default()
        },
        5,
    );
    let mut ps = peers(&[100, 90, 80, 70, 60, 50]);
    ps[0].interested = false; // fastest, not interested
    ps[4].interested = false; // below the cutoff, not interested
    ch.update(at(LATE), false, &mut ps);
    let opt = ch.optimistic().expect("optimistic").0;
    assert!(
        opt == 3 || opt == 5,
        "optimistic {opt} is interested and choked"
    );
    let mut want = vec![0, 1, 2, opt];
    want.sort();
    assert_eq!(unchoked(&ps), want);
}

#[test]
fn snubbed_peers_get_no_regular_slot() {
    let mut ch = Choker::new(
        ChokerConfig {
            slots: 1,
            ..ChokerConfig::default()
        },
        9,
    );
    let mut ps = peers(&[1000, 10]);
    ps[0].snubbed = true;
    ch.update(at(LATE), false, &mut ps);
    // Peer 1 takes the regular slot; peer 0 can only be the optimistic one.
    assert_eq!(ch.optimistic(), Some(PeerKey(0)));
    assert_eq!(unchoked(&ps), [0, 1]);
}

#[test]
fn zero_slots_leaves_only_the_optimistic_peer() {
    let mut ch = Choker::new(
        ChokerConfig {
            slots: 0,
            ..ChokerConfig::default()
        },
        11,
    );
    let mut ps = peers(&[3, 2, 1]);
    ch.update(at(LATE), false, &mut ps);
    let opt = ch.optimistic().expect("optimistic");
    assert_eq!(unchoked(&ps), [opt.0]);
}

#[test]
fn no_peers_and_no_interest() {
    let mut ch = Choker::new(ChokerConfig::default(), 1);
    assert_eq!(ch.update(at(0), false, &mut []), Update::Rechoked);
    assert_eq!(ch.optimistic(), None);
    let mut ps = peers(&[1, 2]);
    for c in &mut ps {
        c.interested = false;
    }
    ch.update(at(DEFAULT_RECHOKE_MS), true, &mut ps);
    // Uninterested peers fill no slot, so both are unchoked, none optimistic.
    assert_eq!(unchoked(&ps), [0, 1]);
    assert_eq!(ch.optimistic(), None);
}

#[test]
fn between_rechokes_only_fills_free_slots() {
    let cfg = ChokerConfig {
        slots: 2,
        ..ChokerConfig::default()
    };
    let mut ch = Choker::new(cfg, 13);
    let mut ps = peers(&[50]);
    ch.update(at(LATE), false, &mut ps);
    assert_eq!(unchoked(&ps), [0]);
    // A faster peer becomes interested 1 s later: a slot is free, so it is
    // unchoked at once, without waiting for the rechoke.
    ps.push(Candidate {
        interested: true,
        down_rate: 10,
        ..Candidate::new(PeerKey(1), at(LATE))
    });
    assert_eq!(ch.update(at(LATE + 1000), false, &mut ps), Update::Filled);
    assert_eq!(unchoked(&ps), [0, 1]);
    // Both slots are taken; a third, much faster peer gets the optimistic
    // slot (the only choked interested peer) but nobody is choked for it.
    ps.push(Candidate {
        interested: true,
        down_rate: 10_000,
        ..Candidate::new(PeerKey(2), at(LATE))
    });
    assert_eq!(ch.update(at(LATE + 2000), false, &mut ps), Update::Filled);
    assert_eq!(ch.optimistic(), Some(PeerKey(2)));
    assert_eq!(unchoked(&ps), [0, 1, 2]);
    // A fourth has to wait for the rechoke.
    ps.push(Candidate {
        interested: true,
        down_rate: 20_000,
        ..Candidate::new(PeerKey(3), at(LATE))
    });
    ch.update(at(LATE + 3000), false, &mut ps);
    assert_eq!(unchoked(&ps), [0, 1, 2]);
    // At the rechoke the two best regular peers win (3 and 0); peer 2 keeps
    // the optimistic slot until its 30 s term ends; peer 1 is choked.
    let r = ch.update(at(LATE + DEFAULT_RECHOKE_MS), false, &mut ps);
    assert_eq!(r, Update::Rechoked);
    assert_eq!(ch.optimistic(), Some(PeerKey(2)));
    assert_eq!(unchoked(&ps), [0, 2, 3]);
}

#[test]
fn optimistic_peer_that_leaves_or_loses_interest_is_replaced() {
    let cfg = ChokerConfig {
        slots: 1,
        ..ChokerConfig::default()
    };
    let mut ch = Choker::new(cfg, 17);
    let mut ps = peers(&[100, 0, 0]);
    ch.update(at(LATE), false, &mut ps);
    let first = ch.optimistic().expect("optimistic");
    assert_ne!(first, PeerKey(0));
    for c in ps.iter_mut().filter(|c| c.key == first) {
        c.interested = false;
    }
    ch.update(at(LATE + 1), false, &mut ps);
    let second = ch.optimistic().expect("a replacement");
    assert_ne!(second, first);
    assert_ne!(second, PeerKey(0));
    ps.retain(|c| c.key != second);
    ch.update(at(LATE + 2), false, &mut ps);
    // Only peer 0 (regular) and the first (not interested) remain.
    assert_eq!(ch.optimistic(), None);
}

#[test]
fn optimistic_slot_rotates_at_its_term_and_reaches_every_peer() {
    let cfg = ChokerConfig {
        slots: 1,
        ..ChokerConfig::default()
    };
    let mut ch = Choker::new(cfg, 21);
    let mut ps = peers(&[1000, 0, 0, 0, 0]);
    let mut now = LATE;
    ch.update(at(now), false, &mut ps);
    let mut seen = HashMap::new();
    let mut last = ch.optimistic();
    let mut changes = 0;
    for _ in 0..300 {
        now += DEFAULT_RECHOKE_MS;
        ch.update(at(now), false, &mut ps);
        let o = ch.optimistic().expect("optimistic");
        *seen.entry(o.0).or_insert(0u32) += 1;
        if Some(o) != last {
            changes += 1;
        }
        last = Some(o);
        // The regular slot never moves: peer 0 is the only fast one.
        assert!(ps.iter().any(|c| c.key.0 == 0 && c.unchoked));
        assert_eq!(ps.iter().filter(|c| c.unchoked).count(), 2);
    }
    // Terms are 30 s, rechokes 10 s: the slot is re-drawn every third
    // rechoke (a redraw may pick the same peer again).
    assert!((50..=100).contains(&changes), "{changes} changes");
    assert_eq!(seen.len(), 4, "every choked peer had a turn: {seen:?}");
    assert!(!seen.contains_key(&0));
}

#[test]
fn new_peers_are_three_times_as_likely_to_be_drawn() {
    // One new and one old peer compete for the optimistic slot; no
    // regular slots, fresh choker each time.
    let cfg = ChokerConfig {
        slots: 0,
        ..ChokerConfig::default()
    };
    let now = LATE;
    let mut new_wins = 0;
    let trials = 4000;
    for seed in 1..=trials {
        let mut ch = Choker::new(cfg, seed);
        let mut ps = peers(&[0, 0]);
        ps[1].connected_at = at(now - 1000);
        ch.update(at(now), false, &mut ps);
        if ch.optimistic() == Some(PeerKey(1)) {
            new_wins += 1;
        }
    }
    // Expected 3/4 of the draws.
    let share = new_wins as f64 / trials as f64;
    assert!((0.70..0.80).contains(&share), "new peer won {share}");
}

#[test]
fn equal_rates_keep_current_unchokes() {
    let cfg = ChokerConfig {
        slots: 2,
        ..ChokerConfig::default()
    };
    let mut ch = Choker::new(cfg, 23);
    let mut ps = peers(&[0, 0, 0, 0]);
    ps[3].unchoked = true;
    ps[2].unchoked = true;
    ch.update(at(LATE), false, &mut ps);
    let opt = ch.optimistic().expect("optimistic").0;
    assert!(ps.iter().any(|c| c.key.0 == 3 && c.unchoked));
    assert!(ps.iter().any(|c| c.key.0 == 2 && c.unchoked));
    assert!(opt == 0 || opt == 1);
}

proptest! {
    /// Whatever the peers and the call times: at most `slots` interested
    /// peers besides the optimistic one are unchoked, the optimistic peer is
    /// interested and unchoked, no snubbed peer holds a regular slot after a
    /// rechoke, and between rechokes nobody is choked.
    #[test]
    fn invariants(
        slots in 0usize..6,
        steps in proptest::collection::vec(
            (0u64..15_000, proptest::collection::vec((any::<bool>(), any::<bool>(), 0u64..5, 0u64..5), 0..12)),
            1..20,
        ),
        seeding in any::<bool>(),
        seed in any::<u32>(),
    ) {
        let cfg = ChokerConfig { slots, ..ChokerConfig::default() };
        let mut ch = Choker::new(cfg, seed);
        let mut now = 0u64;
        let mut state: HashMap<u16, bool> = HashMap::new();
        for (dt, spec) in steps {
            now += dt;
            let mut ps: Vec<Candidate> = spec
                .iter()
                .enumerate()
                .map(|(i, &(interested, snubbed, d, u))| Candidate {
                    key: PeerKey(i as u16),
                    interested,
                    snubbed,
                    down_rate: d,
                    up_rate: u,
                    connected_at: at(0),
                    unchoked: state.get(&(i as u16)).copied().unwrap_or(false),
                })
                .collect();
            let before: HashMap<u16, bool> = ps.iter().map(|c| (c.key.0, c.unchoked)).collect();
            let r = ch.update(at(now), seeding, &mut ps);
            let opt = ch.optimistic();
            if let Some(o) = opt {
                let c = ps.iter().find(|c| c.key == o).expect("optimistic is a candidate");
                prop_assert!(c.interested && c.unchoked);
            }
            let regular = ps
                .iter()
                .filter(|c| c.unchoked && c.interested && Some(c.key) != opt)
                .count();
            match r {
                Update::Rechoked => {
                    prop_assert!(regular <= slots);
                    prop_assert!(ps.iter().all(|c| !c.unchoked || !c.snubbed || Some(c.key) == opt));
                }
                Update::Filled => {
                    for c in &ps {
                        prop_assert!(!before[&c.key.0] || c.unchoked, "choked between rechokes");
                    }
                }
            }
            // A choked interested peer exists only if the slots are used.
            if ps.iter().any(|c| !c.unchoked && c.interested && !c.snubbed) {
                prop_assert!(opt.is_some());
            }
            state = ps.iter().map(|c| (c.key.0, c.unchoked)).collect();
        }
    }
}
