//! The torrent index of [`super::Swarms`]: info-hash → slab index, in an
//! open-addressing table of 8-byte slots (linear probing), at most half
//! full.
//!
//! A slot holds a slab index and 32 bits of the info-hash's keyed hash
//! (the tag); the info-hash itself is only in the slab entry, which an
//! announce reads anyway. So a lookup touches the slot's cache line and
//! then the torrent, where a `HashMap<InfoHash, u32>` touches its control
//! bytes, its 24-byte bucket and then the torrent; and the table is 8 bytes
//! a slot instead of 25 (16 MiB at 1M torrents, against 52 MiB).
//!
//! The hash is keyed ([`RandomState`], SipHash-1-3 with a random key), so
//! info-hashes chosen by clients cannot be aimed at one probe run. A
//! removal shifts the rest of its run back (no tombstones), so probe runs
//! never grow with churn.
//!
//! # Limits
//! At most [`MAX_ENTRIES`] entries (the tag's 32 bits pick the home slot,
//! so the table has at most 2^32 slots): far beyond any
//! `--max-torrents` that fits in memory. The table grows by doubling when
//! it would pass half full, and never shrinks.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use ourtorrent_core::id::InfoHash;

/// Most entries the index holds (half of 2^32 slots).
pub const MAX_ENTRIES: usize = 1 << 31;
/// Slots of a new, empty table's first allocation.
const MIN_SLOTS: usize = 16;
/// An empty slot (no slab index is `u32::MAX`: [`MAX_ENTRIES`] is below).
const EMPTY: u64 = u64::MAX;

/// Info-hash → slab index (see the module docs).
#[derive(Debug)]
pub(super) struct Index<S = RandomState> {
    /// `tag << 32 | slab index`, or [`EMPTY`]; a power of two long (or 0).
    slots: Vec<u64>,
    len: usize,
    hasher: S,
}

impl Default for Index {
    fn default() -> Self {
        Index::with_hasher(RandomState::new())
    }
}

impl<S: BuildHasher> Index<S> {
    pub(super) fn with_hasher(hasher: S) -> Self {
        Index {
            slots: Vec::new(),
            len: 0,
            hasher,
        }
    }

    /// The tag of `ih`: the low 32 bits of its keyed hash.
    pub(super) fn tag(&self, ih: &InfoHash) -> u32 {
        self.hasher.hash_one(ih) as u32
    }

    /// Entries held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Slots allocated (for memory figures and tests).
    #[cfg(test)]
    pub(super) fn slots(&self) -> usize {
        self.slots.len()
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// The slab index with `tag` for which `is` holds (the caller compares
    /// the info-hash stored at that index).
    pub(super) fn find(&self, tag: u32, is: impl Fn(usize) -> bool) -> Option<usize> {
        let at = self.position(tag, |s| (s >> 32) as u32 == tag && is(s as u32 as usize))?;
        self.slots.get(at).map(|&s| s as u32 as usize)
    }

    /// The first slot of `tag`'s probe run whose value satisfies `hit`.
    fn position(&self, tag: u32, hit: impl Fn(u64) -> bool) -> Option<usize> {
        let mask = self.mask();
        let mut at = tag as usize & mask;
        // At most half full: an empty slot ends every run; the bound is
        // only a guard.
        for _ in 0..self.slots.len() {
            let s = *self.slots.get(at)?;
            if s == EMPTY {
                return None;
            }
            if hit(s) {
                return Some(at);
            }
            at = (at + 1) & mask;
        }
        None
    }

    /// Adds slab index `i` under `tag` (the caller checked that its
    /// info-hash is not in the index). False past [`MAX_ENTRIES`].
    pub(super) fn insert(&mut self, tag: u32, i: usize) -> bool {
        let Ok(i) = u32::try_from(i) else {
            return false;
        };
        if self.len >= MAX_ENTRIES || i == u32::MAX {
            return false;
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        self.place(u64::from(tag) << 32 | u64::from(i));
        self.len += 1;
        true
    }

    /// Puts a slot value in the first empty slot of its run.
    fn place(&mut self, v: u64) {
        let mask = self.mask();
        let mut at = (v >> 32) as usize & mask;
        for _ in 0..self.slots.len() {
            match self.slots.get_mut(at) {
                Some(s) if *s == EMPTY => {
                    *s = v;
                    return;
                }
                Some(_) => at = (at + 1) & mask,
                None => return,
            }
        }
    }

    fn grow(&mut self) {
        let n = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; n]);
        for v in old.into_iter().filter(|&v| v != EMPTY) {
            self.place(v);
        }
    }

    /// The slot holding slab index `i` under `tag`.
    fn slot_of(&self, tag: u32, i: usize) -> Option<usize> {
        let want = u64::from(tag) << 32 | u64::try_from(i).ok()?;
        self.position(tag, |s| s == want)
    }

    /// Points the entry of slab index `from` (under `tag`) at `to` (the
    /// slab moved that torrent). False if there is no such entry.
    pub(super) fn repoint(&mut self, tag: u32, from: usize, to: usize) -> bool {
        let (Some(at), Ok(to)) = (self.slot_of(tag, from), u32::try_from(to)) else {
            return false;
        };
        if to == u32::MAX {
            return false; // reserved: with tag u32::MAX it would read EMPTY
        }
        match self.slots.get_mut(at) {
            Some(s) => {
                *s = u64::from(tag) << 32 | u64::from(to);
                true
            }
            None => false,
        }
    }

    /// Removes the entry of slab index `i` (under `tag`), shifting the rest
    /// of its run back so no lookup needs a tombstone. False if absent.
    pub(super) fn remove(&mut self, tag: u32, i: usize) -> bool {
        let Some(mut hole) = self.slot_of(tag, i) else {
            return false;
        };
        let mask = self.mask();
        let mut at = hole;
        // An empty slot ends the run (at most half full); the bound is
        // only a guard.
        for _ in 0..self.slots.len() {
            at = (at + 1) & mask;
            let Some(&v) = self.slots.get(at) else {
                break;
            };
            if v == EMPTY {
                break;
            }
            // `v` may fill the hole unless its home lies cyclically in
            // (hole, at]: then moving it before its home would hide it.
            let home = (v >> 32) as usize & mask;
            if (at.wrapping_sub(home) & mask) >= (at.wrapping_sub(hole) & mask) {
                if let Some(h) = self.slots.get_mut(hole) {
                    *h = v;
                }
                hole = at;
            }
        }
        if let Some(h) = self.slots.get_mut(hole) {
            *h = EMPTY;
        }
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::hash::{BuildHasherDefault, Hasher};

    /// A hasher with few distinct values, so runs collide, wrap the table's
    /// end and overlap (the cases plain random hashes rarely reach).
    #[derive(Default)]
    struct Crowded(u64);
    impl Hasher for Crowded {
        fn finish(&self) -> u64 {
            // Homes near the table's end of a 16-slot table, and only 4
            // distinct tags: many equal tags, told apart by `is`.
            (self.0 % 4) + 13
        }
        fn write(&mut self, b: &[u8]) {
            for &x in b {
                self.0 = self.0.wrapping_mul(31).wrapping_add(u64::from(x));
            }
        }
    }

    fn ih(n: u32) -> InfoHash {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(&n.to_le_bytes());
        InfoHash(h)
    }

    /// Random inserts, removals and moves against a `HashMap` model, with
    /// keys kept in a slab the way `Swarms` keeps them (swap_remove).
    fn model<S: BuildHasher>(mut ix: Index<S>, seed: u64, ops: usize, keys: u32) {
        let mut rng = seed;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut slab: Vec<InfoHash> = Vec::new();
        let mut model: HashMap<InfoHash, usize> = HashMap::new();
        for _ in 0..ops {
            let k = ih((next() % u64::from(keys)) as u32);
            let tag = ix.tag(&k);
            let found = ix.find(tag, |i| slab.get(i) == Some(&k));
            assert_eq!(found, model.get(&k).copied(), "lookup of {k:?}");
            match found {
                None => {
                    assert!(ix.insert(tag, slab.len()));
                    model.insert(k, slab.len());
                    slab.push(k);
                }
                Some(i) if next() % 2 == 0 => {
                    // Remove it as expiry does: the slab's last entry
                    // takes its place.
                    assert!(ix.remove(tag, i));
                    model.remove(&k);
                    slab.swap_remove(i);
                    if let Some(moved) = slab.get(i).copied() {
                        let from = slab.len();
                        assert!(ix.repoint(ix.tag(&moved), from, i));
                        model.insert(moved, i);
                    }
                }
                Some(_) => {}
            }
            assert_eq!(ix.len(), model.len());
            assert!(ix.len() * 2 <= ix.slots().max(1), "more than half full");
        }
        for (k, &i) in &model {
            assert_eq!(ix.find(ix.tag(k), |j| slab.get(j) == Some(k)), Some(i));
        }
        // Absent keys are not found.
        for n in keys..keys + 100 {
            let k = ih(n);
            assert_eq!(ix.find(ix.tag(&k), |j| slab.get(j) == Some(&k)), None);
        }
    }

    #[test]
    fn index_matches_a_hashmap_under_random_churn() {
        for seed in 1..=8 {
            model(Index::default(), seed, 20_000, 3_000);
        }
    }

    #[test]
    fn index_survives_crowded_wrapping_runs() {
        for seed in 1..=8 {
            let ix: Index<BuildHasherDefault<Crowded>> = Index::with_hasher(Default::default());
            model(ix, seed, 5_000, 7);
            let ix: Index<BuildHasherDefault<Crowded>> = Index::with_hasher(Default::default());
            model(ix, seed, 5_000, 200);
        }
    }

    #[test]
    fn index_refuses_what_it_cannot_hold_and_unknown_entries() {
        let mut ix = Index::default();
        let t = ix.tag(&ih(1));
        assert!(!ix.insert(t, u32::MAX as usize), "u32::MAX marks empty");
        assert!(!ix.insert(t, 1 << 40), "not a u32");
        assert!(ix.insert(t, 5));
        assert!(!ix.remove(t, 6));
        assert!(!ix.repoint(t, 6, 7));
        assert!(!ix.repoint(t, 5, u32::MAX as usize), "u32::MAX marks empty");
        assert!(!ix.remove(t.wrapping_add(1), 5));
        assert!(ix.repoint(t, 5, 7));
        assert_eq!(ix.find(t, |i| i == 7), Some(7));
        assert!(ix.remove(t, 7));
        assert_eq!(ix.find(t, |_| true), None);
        assert_eq!(ix.len(), 0);
        // Half full at most: 8 entries in 16 slots, the 9th doubles it.
        for i in 0..8 {
            assert!(ix.insert(ix.tag(&ih(i)), i as usize));
        }
        assert_eq!(ix.slots(), MIN_SLOTS);
        assert!(ix.insert(ix.tag(&ih(8)), 8));
        assert_eq!(ix.slots(), 2 * MIN_SLOTS);
    }
}
