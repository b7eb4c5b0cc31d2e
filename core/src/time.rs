//! Time as a value: a millisecond [`Instant`] and [`Duration`] (smoltcp
//! `time.rs` style).
//!
//! The core never reads a clock. Shells pass "now" into every state machine
//! call; the epoch is whatever the shell chooses (boot, process start, Unix
//! epoch) as long as it is monotonic. All arithmetic saturates, so no input
//! makes it overflow or panic.

use core::fmt;
use core::ops::{Add, Sub};

/// A point in time, in milliseconds since an epoch chosen by the shell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub u64);

/// A span of time in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub u64);

impl Instant {
    /// The epoch.
    pub const ZERO: Instant = Instant(0);

    /// From milliseconds since the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }

    /// From seconds since the epoch (saturating).
    pub const fn from_secs(s: u64) -> Self {
        Instant(s.saturating_mul(1000))
    }

    /// Milliseconds since the epoch.
    pub const fn millis(self) -> u64 {
        self.0
    }

    /// Whole seconds since the epoch.
    pub const fn secs(self) -> u64 {
        self.0 / 1000
    }

    /// `self` plus `ms` milliseconds (saturating).
    pub const fn add_millis(self, ms: u64) -> Instant {
        Instant(self.0.saturating_add(ms))
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

impl Duration {
    /// Zero.
    pub const ZERO: Duration = Duration(0);

    /// From milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(ms)
    }

    /// From seconds (saturating).
    pub const fn from_secs(s: u64) -> Self {
        Duration(s.saturating_mul(1000))
    }

    /// Milliseconds.
    pub const fn millis(self) -> u64 {
        self.0
    }

    /// Whole seconds.
    pub const fn secs(self) -> u64 {
        self.0 / 1000
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d.0))
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        Instant(self.0.saturating_sub(d.0))
    }
}

impl Add for Duration {
    type Output = Duration;
    fn add(self, d: Duration) -> Duration {
        Duration(self.0.saturating_add(d.0))
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturating() {
        assert_eq!(Instant(u64::MAX) + Duration(5), Instant(u64::MAX));
        assert_eq!(Instant(3) - Duration(5), Instant::ZERO);
        assert_eq!(
            Instant(1000).saturating_duration_since(Instant(3000)),
            Duration::ZERO
        );
        assert_eq!(Instant::from_secs(15).millis(), 15_000);
        assert_eq!(std::format!("{}", Instant(1500)), "1.500s");
    }
}
