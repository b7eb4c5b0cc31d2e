//! Who is to blame when assembled metadata does not hash to the info-hash
//! (BEP 9), and how the fetch goes on.
//!
//! BEP 9 has no per-piece hash: a refused assembly proves only that some
//! contributor sent a wrong piece. [`MetadataFetch`] reports every
//! contributor ([`FetchEvent::BadPeer`]) and removes them; [`Blame`] is
//! the rule for what follows:
//! - one contributor sent every piece: it lied, ban it ([`Verdict::Ban`]);
//! - several did: none can be named, so none is banned; from then on the
//!   fetch attaches one peer at a time ([`Blame::room`]), so the next
//!   refused assembly has a single contributor and names the culprit
//!   ([`Verdict::Several`]).
//!
//! Driver order: after each input to the fetch, feed every `BadPeer` it
//! reports (they all belong to one refused assembly) to
//! [`Blame::contributor`], then ask [`Blame::verdict`].
//!
//! Limits: no allocation; only the first contributor and the count are
//! kept (the count saturates), as are the refusals counted.
//!
//! [`MetadataFetch`]: super::metadata::MetadataFetch
//! [`FetchEvent::BadPeer`]: super::metadata::FetchEvent::BadPeer

/// The verdict on one refused assembly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict<P> {
    /// This peer sent every piece of it: ban it.
    Ban(P),
    /// This many peers contributed: dropped, not banned; the fetch now
    /// takes one peer at a time.
    Several(usize),
}

/// The blame rule of a metadata fetch (see the module docs), over peer
/// identities `P` (an address, so a ban outlives the connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blame<P> {
    /// The first contributor of the refused assembly being reported.
    first: Option<P>,
    /// Contributors of it reported so far.
    count: usize,
    /// Set by the first refused assembly with several contributors; never
    /// cleared.
    one_at_a_time: bool,
    /// Refused assemblies so far.
    refused: u32,
}

impl<P: Copy> Default for Blame<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Copy> Blame<P> {
    /// No assembly refused yet; peers attach up to the fetch's maximum.
    pub const fn new() -> Self {
        Blame {
            first: None,
            count: 0,
            one_at_a_time: false,
            refused: 0,
        }
    }

    /// `peer` contributed to the assembly just refused (a
    /// [`FetchEvent::BadPeer`](super::metadata::FetchEvent::BadPeer) whose
    /// peer was still attached).
    pub fn contributor(&mut self, peer: P) {
        if self.first.is_none() {
            self.first = Some(peer);
        }
        self.count = self.count.saturating_add(1);
    }

    /// The verdict on the contributors reported since the last call;
    /// `None` if there were none (no assembly was refused).
    pub fn verdict(&mut self) -> Option<Verdict<P>> {
        let first = self.first.take()?;
        let count = core::mem::take(&mut self.count);
        self.refused = self.refused.saturating_add(1);
        if count == 1 {
            Some(Verdict::Ban(first))
        } else {
            self.one_at_a_time = true;
            Some(Verdict::Several(count))
        }
    }

    /// How many more ready peers may be attached, with `attached`
    /// attached now and at most `max` (the fetch's table size): up to
    /// `max`, or up to one after an assembly with several contributors.
    pub fn room(&self, attached: usize, max: usize) -> usize {
        let cap = if self.one_at_a_time { 1 } else { max };
        cap.saturating_sub(attached)
    }

    /// True once an assembly with several contributors was refused.
    pub fn one_at_a_time(&self) -> bool {
        self.one_at_a_time
    }

    /// Assemblies refused so far.
    pub fn refused(&self) -> u32 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_refused_is_no_verdict_and_full_room() {
        let mut b: Blame<u8> = Blame::new();
        assert_eq!(b.verdict(), None);
        assert_eq!(b.refused(), 0);
        assert!(!b.one_at_a_time());
        assert_eq!(b.room(0, 16), 16);
        assert_eq!(b.room(15, 16), 1);
        assert_eq!(b.room(16, 16), 0);
        assert_eq!(b.room(17, 16), 0, "never negative");
    }

    #[test]
    fn a_single_contributor_is_banned_and_the_room_stays() {
        let mut b = Blame::default();
        b.contributor(7u8);
        assert_eq!(b.verdict(), Some(Verdict::Ban(7)));
        assert_eq!(b.refused(), 1);
        assert!(!b.one_at_a_time());
        assert_eq!(b.room(3, 16), 13);
        // The verdict is given once.
        assert_eq!(b.verdict(), None);
        assert_eq!(b.refused(), 1);
    }

    #[test]
    fn two_contributors_ban_nobody_and_then_one_peer_at_a_time() {
        let mut b = Blame::new();
        b.contributor(1u8);
        b.contributor(2);
        assert_eq!(b.verdict(), Some(Verdict::Several(2)));
        assert!(b.one_at_a_time());
        assert_eq!(b.room(0, 16), 1);
        assert_eq!(b.room(1, 16), 0);
        assert_eq!(b.room(5, 16), 0);
        // The next refusal has one contributor: that one is banned, and
        // the fetch stays one peer at a time.
        b.contributor(2);
        assert_eq!(b.verdict(), Some(Verdict::Ban(2)));
        assert_eq!(b.refused(), 2);
        assert!(b.one_at_a_time());
        assert_eq!(b.room(0, 16), 1);
    }

    #[test]
    fn the_count_is_per_refused_assembly() {
        let mut b = Blame::new();
        for p in 0..16u8 {
            b.contributor(p);
        }
        assert_eq!(b.verdict(), Some(Verdict::Several(16)));
        b.contributor(9);
        assert_eq!(b.verdict(), Some(Verdict::Ban(9)), "the count restarts");
        assert_eq!(b.refused(), 2);
    }

    #[test]
    fn the_count_saturates() {
        let mut b = Blame {
            first: Some(1u8),
            count: usize::MAX,
            one_at_a_time: false,
            refused: u32::MAX,
        };
        b.contributor(2);
        assert_eq!(b.verdict(), Some(Verdict::Several(usize::MAX)));
        assert_eq!(b.refused(), u32::MAX);
    }
}
