//! Piece priorities: the wanted mask, the high mask, sequential mode.

use super::testutil::new_picker;
use super::*;
use crate::time::Instant;

const P: PeerKey = PeerKey(1);
const T0: Instant = Instant(1_000);
/// 8 pieces of one block each.
const PIECES: u32 = 8;

fn geo() -> Geometry {
    Geometry::new(u64::from(PIECES) * u64::from(BLOCK_LEN), BLOCK_LEN).unwrap()
}

#[test]
fn only_wanted_pieces_are_picked_and_complete_means_wanted_complete() {
    let (mut h, mut a, mut w, mut all) = ([0u8; 1], [0u16; 8], [0u8; 1], [0xffu8; 1]);
    let have = Bitfield::new(&mut h[..], PIECES).unwrap();
    let avail = Availability::new(&mut a[..], PIECES).unwrap();
    let cfg = PickerConfig {
        hash_blocks: false,
        ..PickerConfig::default()
    };
    let mut p = new_picker(geo(), have, avail, 8, cfg, 1).unwrap();
    let mut wanted = Bitfield::new(&mut w[..], PIECES).unwrap();
    wanted.set(2).unwrap();
    wanted.set(5).unwrap();
    assert!(p.set_wanted(Some(wanted)).unwrap().is_none());
    assert!(p.is_wanted(2) && !p.is_wanted(3));
    assert!(p.needs(5) && !p.needs(4));
    assert_eq!(p.wanted_missing(), 2);
    let mut peer = Bitfield::new(&mut all[..], PIECES).unwrap();
    peer.set_all();
    let mut picked = std::vec::Vec::new();
    while let Some(x) = p.pick(T0, P, &peer) {
        picked.push(x.request.index);
    }
    picked.sort_unstable();
    assert_eq!(picked, [2, 5], "only wanted pieces");
    for i in [2, 5] {
        p.on_block(P, i, 0, &[0u8; BLOCK_LEN as usize]).unwrap();
        p.verify_digest(i, &[0; 20], &[0; 20]).unwrap();
    }
    assert!(p.wanted_complete());
    assert!(!p.is_complete());
    // A mask of the wrong length is refused; clearing it wants all again.
    let mut short = [0u8; 1];
    let bad = Bitfield::new(&mut short[..], PIECES - 1).unwrap();
    assert_eq!(
        p.set_wanted(Some(bad)).err(),
        Some(PiecesError::CountMismatch)
    );
    assert!(p.set_wanted(None).unwrap().is_some());
    assert_eq!(p.wanted_missing(), PIECES - 2);
}

#[test]
fn high_first_then_sequential_order() {
    let (mut h, mut a, mut hi, mut all) = ([0u8; 1], [0u16; 8], [0u8; 1], [0u8; 1]);
    let have = Bitfield::new(&mut h[..], PIECES).unwrap();
    let avail = Availability::new(&mut a[..], PIECES).unwrap();
    let cfg = PickerConfig {
        random_first: 0,
        hash_blocks: false,
        ..PickerConfig::default()
    };
    let mut p = new_picker(geo(), have, avail, 8, cfg, 7).unwrap();
    let mut high = Bitfield::new(&mut hi[..], PIECES).unwrap();
    high.set(6).unwrap();
    p.set_high(Some(high)).unwrap();
    p.set_sequential(true);
    let mut peer = Bitfield::new(&mut all[..], PIECES).unwrap();
    peer.set_all();
    p.peer_has_bitfield(&peer);
    let order: std::vec::Vec<u32> = core::iter::from_fn(|| p.pick(T0, P, &peer))
        .map(|x| x.request.index)
        .collect();
    assert_eq!(order, [6, 0, 1, 2, 3, 4, 5, 7]);
}
