//! The verify → ban policy: who is to blame for a piece that failed its
//! SHA-1 check (one rule for every shell).
//!
//! A lone sender of a bad piece is guilty. With several senders the data
//! cannot tell who corrupted it, so a sender is banned once it has been
//! among the senders of at least [`MIN_FAILS_TO_BAN`] bad pieces and of
//! more bad pieces than good ones: an honest peer that shared one piece
//! with a liar keeps going, a liar that shares every piece is caught on
//! its second.

/// Bad pieces a sender must have shared before the "more bad than good"
/// rule bans it.
pub const MIN_FAILS_TO_BAN: u32 = 2;

/// One peer's record: pieces it sent blocks of that failed and passed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reputation {
    /// Pieces it contributed to that failed their hash.
    pub failed: u32,
    /// Pieces it contributed to that passed.
    pub passed: u32,
}

impl Reputation {
    /// A piece it contributed to passed.
    pub fn record_pass(&mut self) {
        self.passed = self.passed.saturating_add(1);
    }

    /// A piece it contributed to, with `senders` distinct senders in all,
    /// failed: returns true if this peer is now to be banned.
    pub fn record_fail(&mut self, senders: usize) -> bool {
        self.failed = self.failed.saturating_add(1);
        senders == 1 || (self.failed >= MIN_FAILS_TO_BAN && self.failed > self.passed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_sender_is_guilty_at_once() {
        let mut r = Reputation::default();
        r.record_pass();
        r.record_pass();
        assert!(r.record_fail(1));
    }

    #[test]
    fn a_shared_failure_bans_only_a_repeat_offender() {
        let mut honest = Reputation::default();
        for _ in 0..3 {
            honest.record_pass();
        }
        assert!(!honest.record_fail(2));
        assert!(!honest.record_fail(2), "2 fails, 3 passes");
        let mut liar = Reputation::default();
        assert!(!liar.record_fail(3), "first shared failure");
        assert!(liar.record_fail(3), "second, never a pass");
        let mut even = Reputation::default();
        even.record_pass();
        even.record_pass();
        assert!(!even.record_fail(2));
        assert!(!even.record_fail(2), "2 fails = 2 passes");
        assert!(even.record_fail(2), "3 fails > 2 passes");
    }
}
