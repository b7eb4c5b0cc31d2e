//! Time as a parameter: the core never reads a clock. The shell passes an
//! [`Instant`] (milliseconds since any fixed origin it likes) into every
//! `handle_*` / `poll_*` call.

/// A point in time, in milliseconds since an origin chosen by the shell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub u64);

impl Instant {
    /// Milliseconds from `earlier` to `self`, 0 if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// `self` plus `ms` milliseconds (saturating).
    pub fn plus_millis(self, ms: u64) -> Instant {
        Instant(self.0.saturating_add(ms))
    }
}
