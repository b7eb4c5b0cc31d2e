//! The choking algorithm: which peers we upload to (BEP 3, "Choking and
//! optimistic unchoking").
//!
//! Tit-for-tat: every [`ChokerConfig::rechoke_ms`] (BEP 3: ten seconds,
//! "to avoid fibrillation") the choker ranks peers by rate and unchokes
//! the best [`ChokerConfig::slots`] *interested* ones. While we download,
//! the rate is what the peer uploads to us; once we have every piece it is
//! what we upload to the peer (BEP 3: a seed "uses its upload rate rather
//! than its download rate"). Peers ranked above the last slot but not
//! interested are unchoked without taking a slot, so they can start at once
//! when they become interested; when one does, the worst-ranked regular
//! peer is choked (BEP 3). Peers snubbing us get no regular slot.
//!
//! One optimistic slot on top: a choked, interested peer is unchoked for
//! [`ChokerConfig::optimistic_ms`] (BEP 3: thirty seconds) whatever its
//! rate, so newcomers get a first piece to trade and better partners are
//! found. The slot rotates through the waiting peers: it goes to the one
//! never unchoked (newcomers first, as BEP 3 intends), or else choked the
//! longest — so with `n` peers waiting each gets a turn within `n` terms
//! (the original client drew at random, weighting new peers three times;
//! libtorrent also picks the longest-waiting peer).
//!
//! Between two rechokes, [`Choker::update`] fills free slots — a peer that
//! becomes interested while a slot is idle does not wait up to ten seconds
//! — replaces an optimistic peer that left or lost interest, and chokes
//! only to bring the interested regular peers back to `slots` (above).
//! So after every update at most `slots` interested peers hold regular
//! slots, plus the optimistic one.
//!
//! Sans-IO and allocation-free: the shell keeps per-peer rates and passes a
//! slice of [`Candidate`]s (reordered in place, with `unchoked` and
//! `last_unchoked` updated for it to keep); the choker keeps only the
//! optimistic peer's key and two deadlines. Limits: rates are `u64` bytes
//! per second; ties are broken by current state (already unchoked first,
//! so equal peers do not flap) and then by key.

use crate::pieces::PeerKey;
use crate::time::Instant;

/// Regular upload slots (the original client's default: four).
pub const DEFAULT_UPLOAD_SLOTS: usize = 4;
/// BEP 3: "choking ... every ten seconds".
pub const DEFAULT_RECHOKE_MS: u64 = 10_000;
/// BEP 3: the optimistic unchoke "rotates every 30 seconds".
pub const DEFAULT_OPTIMISTIC_MS: u64 = 30_000;

/// Choker parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChokerConfig {
    /// Regular (tit-for-tat) slots; the optimistic slot comes on top.
    pub slots: usize,
    /// Interval between full rechokes.
    pub rechoke_ms: u64,
    /// How long one peer holds the optimistic slot.
    pub optimistic_ms: u64,
}

impl Default for ChokerConfig {
    fn default() -> Self {
        ChokerConfig {
            slots: DEFAULT_UPLOAD_SLOTS,
            rechoke_ms: DEFAULT_RECHOKE_MS,
            optimistic_ms: DEFAULT_OPTIMISTIC_MS,
        }
    }
}

/// One connected peer as the shell sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The shell's name for the peer.
    pub key: PeerKey,
    /// The peer is interested in our pieces.
    pub interested: bool,
    /// The peer is snubbing us (no block for a minute while we wait).
    pub snubbed: bool,
    /// Bytes per second the peer recently uploaded to us.
    pub down_rate: u64,
    /// Bytes per second we recently uploaded to the peer.
    pub up_rate: u64,
    /// When the connection was established.
    pub connected_at: Instant,
    /// In: the peer is unchoked now. Out: the peer should be unchoked.
    pub unchoked: bool,
    /// In/out: when the peer was last unchoked while interested (`None`:
    /// never); set to the update's time for every such peer. Keep it for
    /// the next call.
    pub last_unchoked: Option<Instant>,
}

impl Candidate {
    /// A choked, uninterested peer with no history, connected at `now`.
    pub fn new(key: PeerKey, now: Instant) -> Self {
        Candidate {
            key,
            interested: false,
            snubbed: false,
            down_rate: 0,
            up_rate: 0,
            connected_at: now,
            unchoked: false,
            last_unchoked: None,
        }
    }
}

/// What [`Choker::update`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// A full rechoke: the shell may reset its rate windows.
    Rechoked,
    /// Between rechokes: free slots filled, excess regular peers choked.
    Filled,
}

/// The unchoker's state between calls.
#[derive(Clone, Debug)]
pub struct Choker {
    cfg: ChokerConfig,
    next_rechoke: Option<Instant>,
    optimistic: Option<PeerKey>,
    optimistic_until: Instant,
}

impl Choker {
    /// A choker; the first [`Self::update`] is a full rechoke.
    pub fn new(cfg: ChokerConfig) -> Self {
        Choker {
            cfg,
            next_rechoke: None,
            optimistic: None,
            optimistic_until: Instant::from_millis(0),
        }
    }

    /// The parameters.
    pub fn config(&self) -> &ChokerConfig {
        &self.cfg
    }

    /// The peer holding the optimistic slot, if any.
    pub fn optimistic(&self) -> Option<PeerKey> {
        self.optimistic
    }

    /// When the next full rechoke is due (`None` before the first update).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_rechoke
    }

    /// Decides who is unchoked: a full rechoke when one is due, otherwise
    /// fills free slots (see the module docs). Call it at [`Self::poll_timeout`] and
    /// whenever a peer connects, leaves or changes interest. `seeding` is
    /// true once we have every piece. Sets each candidate's `unchoked`;
    /// `peers` is reordered.
    pub fn update(&mut self, now: Instant, seeding: bool, peers: &mut [Candidate]) -> Update {
        let rate = |c: &Candidate| if seeding { c.up_rate } else { c.down_rate };
        // Best first; among equals the ones already unchoked, then by key.
        peers.sort_unstable_by(|a, b| {
            rate(b)
                .cmp(&rate(a))
                .then(b.unchoked.cmp(&a.unchoked))
                .then(a.key.cmp(&b.key))
        });
        let opt = self.optimistic;
        let opt_alive = opt.is_some_and(|k| peers.iter().any(|c| c.key == k && c.interested));
        let full = self.next_rechoke.is_none_or(|t| now >= t);
        if full {
            self.next_rechoke = Some(now.add_millis(self.cfg.rechoke_ms));
            let keep = opt_alive && now < self.optimistic_until;
            if !keep {
                self.optimistic = None;
            }
            // Regular slots, in rank order. The optimistic peer keeps its
            // own slot while its term lasts.
            let mut used = 0usize;
            for c in peers.iter_mut() {
                let reserved = self.optimistic == Some(c.key);
                c.unchoked = !reserved && !c.snubbed && used < self.cfg.slots;
                if c.unchoked && c.interested {
                    used += 1;
                }
            }
        } else {
            if !opt_alive {
                self.optimistic = None;
            }
            // Keep the interested regular peers within the slots: an
            // unchoked peer that became interested pushes out the
            // worst-ranked one (BEP 3). The optimistic peer is not counted.
            let mut used = 0usize;
            for c in peers.iter_mut() {
                if c.unchoked && c.interested && self.optimistic != Some(c.key) {
                    if used < self.cfg.slots {
                        used += 1;
                    } else {
                        c.unchoked = false;
                    }
                }
            }
            for c in peers.iter_mut() {
                if used >= self.cfg.slots {
                    break;
                }
                if !c.unchoked && c.interested && !c.snubbed {
                    c.unchoked = true;
                    used += 1;
                }
            }
        }
        if self.optimistic.is_none() {
            self.optimistic = longest_waiting(peers);
            self.optimistic_until = now.add_millis(self.cfg.optimistic_ms);
        }
        for c in peers.iter_mut() {
            if self.optimistic == Some(c.key) {
                c.unchoked = true;
            }
            if c.unchoked && c.interested {
                c.last_unchoked = Some(now);
            }
        }
        if full {
            Update::Rechoked
        } else {
            Update::Filled
        }
    }
}

/// The choked, interested peer that has waited longest for an unchoke:
/// never unchoked first (earliest connected first), then the one unchoked
/// longest ago; ties by key.
fn longest_waiting(peers: &[Candidate]) -> Option<PeerKey> {
    peers
        .iter()
        .filter(|c| c.interested && !c.unchoked)
        .min_by_key(|c| match c.last_unchoked {
            None => (false, c.connected_at, c.key),
            Some(t) => (true, t, c.key),
        })
        .map(|c| c.key)
}

#[cfg(test)]
mod tests;
