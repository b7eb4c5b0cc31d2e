//! Small deterministic randomness for protocol choices: random-first piece
//! picks, tie breaks, BEP 12 tracker shuffling, test seeds.
//!
//! The core reads no entropy source: the shell seeds a generator (from the
//! OS, a hardware RNG, a boot counter). Nothing here is fit for secrets —
//! peer ids, tracker keys and transaction ids only need to differ, not to be
//! unguessable. Draw them from one generator in sequence (or from
//! generators with different seeds): two generators built from the same
//! seed give the same stream.

/// A tiny xorshift PRNG (Marsaglia 2003, "Xorshift RNGs", the 13/17/5
/// triple). Period 2^32 - 1; never yields 0. Not for anything secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XorShift32(u32);

impl XorShift32 {
    /// Replaces a zero seed, the one state xorshift cannot leave.
    pub const ZERO_SEED_REPLACEMENT: u32 = 0x9E37_79B9;

    /// A generator from `seed` (0 is replaced by
    /// [`Self::ZERO_SEED_REPLACEMENT`]).
    pub fn new(seed: u32) -> Self {
        XorShift32(if seed == 0 {
            Self::ZERO_SEED_REPLACEMENT
        } else {
            seed
        })
    }

    /// The next value.
    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    /// A value in `0..n` (0 if `n` is 0). Modulo bias is below `n / 2^32`.
    pub fn below(&mut self, n: u32) -> u32 {
        if n == 0 {
            0
        } else {
            self.next_u32() % n
        }
    }

    /// Fills `out` with the next values' bytes (little-endian order).
    pub fn fill_bytes(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(4) {
            let v = self.next_u32().to_le_bytes();
            for (o, b) in chunk.iter_mut().zip(v) {
                *o = b;
            }
        }
    }

    /// Shuffles `items` in place (Fisher–Yates), e.g. BEP 12: "URLs within
    /// each tier will be processed in a randomly chosen order".
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        let n = u32::try_from(items.len()).unwrap_or(u32::MAX);
        for i in (1..n).rev() {
            let j = self.below(i + 1);
            items.swap(i as usize, j as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn zero_seed_and_known_stream() {
        // 1 → 1 ^ 1<<13 = 0x2001; ^ >>17 = 0x2001; ^ <<5 = 0x42021.
        assert_eq!(XorShift32::new(1).next_u32(), 0x0004_2021);
        assert_eq!(
            XorShift32::new(0),
            XorShift32::new(XorShift32::ZERO_SEED_REPLACEMENT)
        );
        let mut r = XorShift32::new(0);
        assert!((0..1000).all(|_| r.next_u32() != 0));
    }

    #[test]
    fn below_edges() {
        let mut r = XorShift32::new(7);
        assert_eq!(r.below(0), 0);
        assert_eq!(r.below(1), 0);
        assert!((0..1000).all(|_| r.below(3) < 3));
    }

    #[test]
    fn fill_bytes_uses_every_byte() {
        let mut a = XorShift32::new(5);
        let mut b = a;
        let mut out = [0u8; 7];
        a.fill_bytes(&mut out);
        let first = b.next_u32().to_le_bytes();
        let second = b.next_u32().to_le_bytes();
        assert_eq!(out[..4], first);
        assert_eq!(out[4..], second[..3]);
        // Both generators moved on by two values.
        assert_eq!(a, b);
        a.fill_bytes(&mut []);
        assert_eq!(a, b);
    }

    #[test]
    fn shuffle_is_a_permutation_and_moves_things() {
        let mut r = XorShift32::new(42);
        let mut moved = false;
        for len in 0..20usize {
            let mut v: Vec<usize> = (0..len).collect();
            r.shuffle(&mut v);
            moved |= v.iter().enumerate().any(|(i, &x)| i != x);
            let mut s = v.clone();
            s.sort();
            assert_eq!(s, (0..len).collect::<Vec<_>>());
        }
        assert!(moved);
    }
}
