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

/// Some time after the peers connected.
const LATE: u64 = 600_000;

#[test]
fn fewer_interested_than_slots_all_unchoked_no_optimistic() {
    let mut ch = Choker::new(ChokerConfig::default());
    let mut ps = peers(&[5, 0, 9]);
    assert_eq!(ch.update(at(LATE), false, &mut ps), Update::Rechoked);
    assert_eq!(unchoked(&ps), [0, 1, 2]);
    // Everyone has a regular slot: nobody is left for the optimistic one.
    assert_eq!(ch.optimistic(), None);
    assert_eq!(ch.poll_timeout(), Some(at(LATE + DEFAULT_RECHOKE_MS)));
}

#[test]
fn tit_for_tat_best_uploaders_plus_one_optimistic() {
    let mut ch = Choker::new(ChokerConfig::default());
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
    let mut ch = Choker::new(ChokerConfig {
        slots: 2,
        ..ChokerConfig::default()
    });
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
    let mut ch = Choker::new(ChokerConfig {
        slots: 2,
        ..ChokerConfig::default()
    });
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
    let mut ch = Choker::new(ChokerConfig {
        slots: 1,
        ..ChokerConfig::default()
    });
    let mut ps = peers(&[1000, 10]);
    ps[0].snubbed = true;
    ch.update(at(LATE), false, &mut ps);
    // Peer 1 takes the regular slot; peer 0 can only be the optimistic one.
    assert_eq!(ch.optimistic(), Some(PeerKey(0)));
    assert_eq!(unchoked(&ps), [0, 1]);
}

#[test]
fn zero_slots_leaves_only_the_optimistic_peer() {
    let mut ch = Choker::new(ChokerConfig {
        slots: 0,
        ..ChokerConfig::default()
    });
    let mut ps = peers(&[3, 2, 1]);
    ch.update(at(LATE), false, &mut ps);
    let opt = ch.optimistic().expect("optimistic");
    assert_eq!(unchoked(&ps), [opt.0]);
}

#[test]
fn no_peers_and_no_interest() {
    let mut ch = Choker::new(ChokerConfig::default());
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
    let mut ch = Choker::new(cfg);
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
fn uninterested_peer_turning_interested_pushes_out_the_worst() {
    let cfg = ChokerConfig {
        slots: 2,
        ..ChokerConfig::default()
    };
    let mut ch = Choker::new(cfg);
    // Peer 0 is fast but not interested: unchoked without a slot; 1 and 2
    // take the slots; 3 is the optimistic one.
    let mut ps = peers(&[900, 50, 40, 30]);
    ps[0].interested = false;
    ch.update(at(LATE), false, &mut ps);
    assert_eq!(ch.optimistic(), Some(PeerKey(3)));
    assert_eq!(unchoked(&ps), [0, 1, 2, 3]);
    // Peer 0 becomes interested: the slowest regular peer (2) is choked at
    // once, not at the next rechoke.
    for c in ps.iter_mut().filter(|c| c.key.0 == 0) {
        c.interested = true;
    }
    assert_eq!(ch.update(at(LATE + 1000), false, &mut ps), Update::Filled);
    assert_eq!(unchoked(&ps), [0, 1, 3]);
}

#[test]
fn optimistic_peer_that_leaves_or_loses_interest_is_replaced() {
    let cfg = ChokerConfig {
        slots: 1,
        ..ChokerConfig::default()
    };
    let mut ch = Choker::new(cfg);
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
fn optimistic_slot_rotates_through_every_waiting_peer() {
    let cfg = ChokerConfig {
        slots: 1,
        ..ChokerConfig::default()
    };
    let mut ch = Choker::new(cfg);
    let mut ps = peers(&[1000, 0, 0, 0, 0]);
    let mut now = LATE;
    ch.update(at(now), false, &mut ps);
    let mut order = vec![ch.optimistic().expect("optimistic").0];
    for _ in 0..300 {
        now += DEFAULT_RECHOKE_MS;
        ch.update(at(now), false, &mut ps);
        let o = ch.optimistic().expect("optimistic").0;
        if Some(&o) != order.last() {
            order.push(o);
        }
        // The regular slot never moves: peer 0 is the only fast one.
        assert!(ps.iter().any(|c| c.key.0 == 0 && c.unchoked));
        assert_eq!(ps.iter().filter(|c| c.unchoked).count(), 2);
    }
    // Terms are 30 s, rechokes 10 s: a new peer every third rechoke, in
    // round-robin order (the one choked longest next).
    assert_eq!(order.len(), 101, "{order:?}");
    assert_eq!(&order[..4], &[1, 2, 3, 4]);
    for w in order.windows(5) {
        assert_eq!(w[0], w[4], "round robin: {order:?}");
    }
}

#[test]
fn optimistic_slot_goes_to_newcomers_first_then_the_longest_choked() {
    let cfg = ChokerConfig {
        slots: 0,
        ..ChokerConfig::default()
    };
    let mut ch = Choker::new(cfg);
    let mut ps = peers(&[0, 0, 0]);
    // Peer 0 was unchoked long ago, peer 1 recently; peer 2 never, and it
    // connected last.
    ps[0].last_unchoked = Some(at(1000));
    ps[1].last_unchoked = Some(at(5000));
    ps[2].connected_at = at(LATE - 10);
    ch.update(at(LATE), false, &mut ps);
    assert_eq!(ch.optimistic(), Some(PeerKey(2)));
    // Its term over, the slot moves to the peer choked longest.
    let t = LATE + DEFAULT_OPTIMISTIC_MS;
    ch.update(at(t), false, &mut ps);
    assert_eq!(ch.optimistic(), Some(PeerKey(0)));
    let c2 = ps.iter().find(|c| c.key.0 == 2).unwrap();
    assert_eq!(
        c2.last_unchoked,
        Some(at(LATE)),
        "stamped while it held the slot"
    );
    assert!(!c2.unchoked);
    ch.update(at(t + DEFAULT_OPTIMISTIC_MS), false, &mut ps);
    assert_eq!(ch.optimistic(), Some(PeerKey(1)));
    // Among peers never unchoked, the earliest connected goes first.
    let mut ch = Choker::new(cfg);
    let mut ps = peers(&[0, 0, 0]);
    ps[0].connected_at = at(300);
    ps[1].connected_at = at(100);
    ps[2].connected_at = at(200);
    ch.update(at(LATE), false, &mut ps);
    assert_eq!(ch.optimistic(), Some(PeerKey(1)));
}

#[test]
fn equal_rates_keep_current_unchokes() {
    let cfg = ChokerConfig {
        slots: 2,
        ..ChokerConfig::default()
    };
    let mut ch = Choker::new(cfg);
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
    /// rechoke, and between rechokes a peer is choked only to keep the
    /// slots at `slots`.
    #[test]
    fn invariants(
        slots in 0usize..6,
        steps in proptest::collection::vec(
            (0u64..15_000, proptest::collection::vec((any::<bool>(), any::<bool>(), 0u64..5, 0u64..5), 0..12)),
            1..20,
        ),
        seeding in any::<bool>(),
    ) {
        let cfg = ChokerConfig { slots, ..ChokerConfig::default() };
        let mut ch = Choker::new(cfg);
        let mut now = 0u64;
        let mut state: HashMap<u16, (bool, Option<Instant>)> = HashMap::new();
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
                    unchoked: state.get(&(i as u16)).is_some_and(|s| s.0),
                    last_unchoked: state.get(&(i as u16)).and_then(|s| s.1),
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
            prop_assert!(regular <= slots);
            match r {
                Update::Rechoked => {
                    prop_assert!(ps.iter().all(|c| !c.unchoked || !c.snubbed || Some(c.key) == opt));
                }
                Update::Filled => {
                    // Between rechokes only interested peers are choked,
                    // and only to keep the slots full, not emptier.
                    for c in &ps {
                        if before[&c.key.0] && !c.unchoked {
                            prop_assert!(c.interested);
                            prop_assert_eq!(regular, slots);
                        }
                    }
                }
            }
            // A choked interested peer exists only if the slots are used.
            if ps.iter().any(|c| !c.unchoked && c.interested && !c.snubbed) {
                prop_assert!(opt.is_some());
            }
            // Unchoked interested peers are stamped with this update's time.
            for c in &ps {
                if c.unchoked && c.interested {
                    prop_assert_eq!(c.last_unchoked, Some(at(now)));
                }
            }
            state = ps.iter().map(|c| (c.key.0, (c.unchoked, c.last_unchoked))).collect();
        }
    }
}
