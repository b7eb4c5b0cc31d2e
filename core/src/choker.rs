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
//! when they become interested (BEP 3). Peers snubbing us get no regular
//! slot.
//!
//! One optimistic slot on top: a random choked, interested peer is
//! unchoked for [`ChokerConfig::optimistic_ms`] (BEP 3: thirty seconds)
//! whatever its rate, so newcomers get a first piece to trade and better
//! partners are found. Peers connected for less than
//! [`ChokerConfig::new_peer_ms`] are [`NEW_PEER_WEIGHT`] times as likely
//! to be chosen (as in the original client).
//!
//! Between two rechokes, [`Choker::update`] only fills free slots — a peer
//! that becomes interested while a slot is idle does not wait up to ten
//! seconds — and replaces an optimistic peer that left or lost interest; it
//! never chokes anyone.
//!
//! Sans-IO and allocation-free: the shell keeps per-peer rates and passes a
//! slice of [`Candidate`]s (reordered in place); the choker keeps only the
//! optimistic peer's key, two deadlines and a PRNG. Limits: rates are
//! `u64` bytes per second; ties are broken by current state (already
//! unchoked first, so equal peers do not flap) and then by key.

use crate::pieces::{PeerKey, XorShift32};
use crate::time::Instant;

/// Regular upload slots (the original client's default: four).
pub const DEFAULT_UPLOAD_SLOTS: usize = 4;
/// BEP 3: "choking ... every ten seconds".
pub const DEFAULT_RECHOKE_MS: u64 = 10_000;
/// BEP 3: the optimistic unchoke "rotates every 30 seconds".
pub const DEFAULT_OPTIMISTIC_MS: u64 = 30_000;
/// Peers connected for less than this count as new for the optimistic draw.
pub const DEFAULT_NEW_PEER_MS: u64 = 60_000;
/// New peers are this many times as likely to get the optimistic slot.
pub const NEW_PEER_WEIGHT: u64 = 3;

/// Choker parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChokerConfig {
    /// Regular (tit-for-tat) slots; the optimistic slot comes on top.
    pub slots: usize,
    /// Interval between full rechokes.
    pub rechoke_ms: u64,
    /// How long one peer holds the optimistic slot.
    pub optimistic_ms: u64,
    /// Age under which a peer is "new" for the optimistic draw.
    pub new_peer_ms: u64,
}

impl Default for ChokerConfig {
    fn default() -> Self {
        ChokerConfig {
            slots: DEFAULT_UPLOAD_SLOTS,
            rechoke_ms: DEFAULT_RECHOKE_MS,
            optimistic_ms: DEFAULT_OPTIMISTIC_MS,
            new_peer_ms: DEFAULT_NEW_PEER_MS,
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
        }
    }
}

/// What [`Choker::update`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// A full rechoke: the shell may reset its rate windows.
    Rechoked,
    /// Only free slots were filled; nobody was choked.
    Filled,
}

/// The unchoker's state between calls.
#[derive(Clone, Debug)]
pub struct Choker {
    cfg: ChokerConfig,
    next_rechoke: Option<Instant>,
    optimistic: Option<PeerKey>,
    optimistic_until: Instant,
    rng: XorShift32,
}

impl Choker {
    /// A choker; the first [`Self::update`] is a full rechoke. `seed` feeds
    /// the optimistic draw.
    pub fn new(cfg: ChokerConfig, seed: u32) -> Self {
        Choker {
            cfg,
            next_rechoke: None,
            optimistic: None,
            optimistic_until: Instant::from_millis(0),
            rng: XorShift32::new(seed),
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
    /// only fills free slots. Call it at [`Self::poll_timeout`] and
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
            // Nobody is choked between rechokes; the optimistic peer does
            // not count against the regular slots.
            let mut used = peers
                .iter()
                .filter(|c| c.unchoked && c.interested && self.optimistic != Some(c.key))
                .count();
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
            self.optimistic = self.draw(now, peers);
            self.optimistic_until = now.add_millis(self.cfg.optimistic_ms);
        }
        if let Some(k) = self.optimistic {
            for c in peers.iter_mut().filter(|c| c.key == k) {
                c.unchoked = true;
            }
        }
        if full {
            Update::Rechoked
        } else {
            Update::Filled
        }
    }

    /// A random choked, interested peer; new peers weigh more.
    fn draw(&mut self, now: Instant, peers: &[Candidate]) -> Option<PeerKey> {
        let new_ms = self.cfg.new_peer_ms;
        let weight = |c: &Candidate| {
            if c.unchoked || !c.interested {
                0
            } else if now.saturating_duration_since(c.connected_at).millis() < new_ms {
                NEW_PEER_WEIGHT
            } else {
                1
            }
        };
        let total: u64 = peers.iter().map(weight).sum();
        if total == 0 {
            return None;
        }
        let mut r = self.rng.below(u32::try_from(total).unwrap_or(u32::MAX)) as u64;
        for c in peers {
            let w = weight(c);
            if r < w {
                return Some(c.key);
            }
            r -= w;
        }
        None
    }
}

#[cfg(test)]
mod tests;
