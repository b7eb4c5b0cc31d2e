//! The torrent layer: one sans-IO state machine per torrent above its peer
//! sessions, as quinn-proto's `Endpoint` sits above its `Connection`s.
//!
//! A [`Torrent`] owns what the sessions of one torrent share: the
//! [`Picker`] (our pieces, availability, requests in flight, end-game), the
//! [`Choker`] (whom we upload to), each peer's [`Reputation`] (the
//! verify → ban policy), the log of verified pieces that every session
//! announces with `have`, and the cancels and closes it owes to other
//! sessions. A shell never tells "every other session" anything itself:
//! it drives one session at a time through the torrent, and the torrent
//! queues what the others must do, flags them ([`Torrent::poll_wake`]) and
//! hands it over in their next [`Torrent::poll_transmit`].
//!
//! Driving it (one task per peer behind a short lock, or one loop):
//! - [`Torrent::add_peer`] after a handshake gives the session's
//!   [`PeerKey`]; [`Torrent::remove_peer`] when the connection ends;
//! - [`Torrent::handle_message`] for each message from a peer (instead of
//!   the session's own); the shell stores blocks and queues uploads from
//!   the returned [`Handled`];
//! - [`Torrent::poll_transmit`] writes what the session must send, after
//!   applying the torrent's commands for it (cancels, haves, choke);
//!   [`Torrent::should_close`] says when the torrent wants it gone (banned);
//! - [`Torrent::verify`] / [`Torrent::verify_digest`] when a piece is
//!   complete (stored, for a shell that writes to disk first), giving a
//!   [`PieceOutcome`] that names whom it banned;
//! - [`Torrent::handle_timeout`] at [`Torrent::poll_timeout`] (request
//!   timeouts, rechokes), and after every call [`Torrent::poll_wake`]
//!   until `None`, waking those peers' drivers.
//!
//! Storage is the caller's ([`TorrentStorage`]): the picker's four
//! buffers, a table of peers (its length bounds the connections), the
//! verified-piece log (one entry per piece) and the choker's scratch
//! table. Limits: cancels waiting per peer [`CANCEL_QUEUE`] (the oldest is
//! dropped when full: a cancel only saves bandwidth); peers: the length of
//! the peer table ([`TorrentError::TooManyPeers`]).

mod reputation;

pub use reputation::{Reputation, MIN_FAILS_TO_BAN};

use core::fmt;

use crate::choker::{Candidate, Choker, ChokerConfig, Update};
use crate::peer::{Handled, PeerError, PeerSession};
use crate::pieces::{
    BlockRequest, Geometry, PeerKey, Picker, PickerConfig, PickerParts, PickerStorage, PiecesError,
    SliceStorage, Verdict, MAX_CONTRIBUTORS,
};
use crate::time::Instant;
use crate::wire::Message;

/// Cancels waiting for one peer's next `poll_transmit`.
pub const CANCEL_QUEUE: usize = 32;

/// Why the torrent refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TorrentError {
    /// The peer table is full.
    TooManyPeers,
    /// A key that names no connected peer.
    UnknownPeer(PeerKey),
    /// Piece bookkeeping refused (storage, geometry, piece state).
    Pieces(PiecesError),
}

impl fmt::Display for TorrentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TorrentError::TooManyPeers => f.write_str("torrent: peer table full"),
            TorrentError::UnknownPeer(k) => write!(f, "torrent: no peer {}", k.0),
            TorrentError::Pieces(e) => write!(f, "torrent: {e}"),
        }
    }
}

impl core::error::Error for TorrentError {}

impl From<PiecesError> for TorrentError {
    fn from(e: PiecesError) -> Self {
        TorrentError::Pieces(e)
    }
}

/// One connected peer as the torrent keeps it (an element of the caller's
/// peer table).
#[derive(Clone, Debug, Default)]
pub struct PeerEntry {
    used: bool,
    interested: bool,
    snubbed: bool,
    connected_at: Instant,
    last_unchoked: Option<Instant>,
    /// The choker's decision.
    unchoke: bool,
    /// Payload bytes from / to the peer since the last full rechoke.
    down: u64,
    up: u64,
    /// Entries of the verified log already announced to the peer.
    have_cursor: usize,
    cancels: heapless::Deque<BlockRequest, CANCEL_QUEUE>,
    close: bool,
    wake: bool,
    rep: Reputation,
    /// Piece priorities changed: re-check our interest in the peer.
    recheck: bool,
}

/// The caller's buffers for a [`Torrent`]: the picker's, plus a peer table,
/// the verified-piece log and the choker's scratch table.
pub trait TorrentStorage: PickerStorage {
    /// One entry per connection (its length bounds them).
    type Peers: AsRef<[PeerEntry]> + AsMut<[PeerEntry]>;
    /// Verified pieces in order (at least one entry per piece).
    type Log: AsRef<[u32]> + AsMut<[u32]>;
    /// Scratch for the choker (at least as long as the peer table).
    type Candidates: AsMut<[Candidate]>;
}

/// Borrowed slices (the firmware's static or stack arrays), as for the
/// picker.
impl<'s> TorrentStorage for SliceStorage<'s> {
    type Peers = &'s mut [PeerEntry];
    type Log = &'s mut [u32];
    type Candidates = &'s mut [Candidate];
}

/// What a [`Torrent`] is built from.
pub struct TorrentParts<M: TorrentStorage> {
    /// The picker's storage (our pieces may already be set).
    pub picker: PickerParts<M>,
    /// The peer table.
    pub peers: M::Peers,
    /// The verified-piece log.
    pub log: M::Log,
    /// The choker's scratch table.
    pub candidates: M::Candidates,
}

/// Parameters of a torrent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TorrentConfig {
    /// Picker policy.
    pub picker: PickerConfig,
    /// Choker policy.
    pub choker: ChokerConfig,
}

/// What a verification concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PieceOutcome {
    /// The piece is ours; every session will announce it. `complete`: it
    /// was the last one.
    Passed {
        /// Every piece is now verified.
        complete: bool,
    },
    /// The piece failed and will be fetched again; these senders were
    /// banned by the [`Reputation`] rule (their sessions should close:
    /// [`Torrent::should_close`]).
    Failed {
        /// Peers banned for it.
        banned: heapless::Vec<PeerKey, MAX_CONTRIBUTORS>,
    },
    /// Feed the piece's bytes from `from` with [`Torrent::hash_data`], then
    /// verify again (blocks came out of order).
    NeedsData {
        /// Offset in the piece.
        from: u32,
    },
}

/// One torrent's shared state. See the module docs.
pub struct Torrent<M: TorrentStorage> {
    picker: Picker<M>,
    choker: Choker,
    peers: M::Peers,
    log: M::Log,
    log_len: usize,
    candidates: M::Candidates,
    /// Start of the rate window (the last full rechoke).
    rate_since: Instant,
    /// A peer came, left or changed interest: fill free slots.
    choke_dirty: bool,
    /// Where the search for a free peer slot starts (keys are not reused
    /// at once, so a late block is not blamed on a newcomer).
    next_key: usize,
}

impl<M: TorrentStorage> fmt::Debug for Torrent<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Torrent")
            .field("picker", &self.picker)
            .field("peers", &self.peer_count())
            .field("verified", &self.log_len)
            .finish_non_exhaustive()
    }
}

impl<M: TorrentStorage> Torrent<M> {
    /// A torrent of `geo` over `parts`. Pieces already set in the picker's
    /// bitfield count as ours (they are in no log: peers learn them from
    /// our bitfield).
    pub fn new(
        geo: Geometry,
        parts: TorrentParts<M>,
        cfg: TorrentConfig,
        seed: u32,
    ) -> Result<Self, TorrentError> {
        let TorrentParts {
            picker,
            mut peers,
            log,
            candidates,
        } = parts;
        let picker = Picker::new(geo, picker, cfg.picker, seed)?;
        let pieces = geo.piece_count() as usize;
        if log.as_ref().len() < pieces {
            return Err(TorrentError::Pieces(PiecesError::StorageTooSmall {
                needed: pieces,
            }));
        }
        for p in peers.as_mut().iter_mut() {
            *p = PeerEntry::default();
        }
        Ok(Torrent {
            picker,
            choker: Choker::new(cfg.choker),
            peers,
            log,
            log_len: 0,
            candidates,
            rate_since: Instant::ZERO,
            choke_dirty: false,
            next_key: 0,
        })
    }

    /// The picker (read-only: our pieces, availability, geometry).
    pub fn picker(&self) -> &Picker<M> {
        &self.picker
    }

    /// Piece priorities: fetch only `wanted` (`None`: all), see
    /// [`Picker::set_wanted`]; hands back the previous mask's storage.
    /// Every peer re-checks its interest at its next
    /// [`Self::poll_transmit`] (woken: [`Self::poll_wake`]).
    pub fn set_wanted(
        &mut self,
        wanted: Option<crate::pieces::Bitfield<M::Have>>,
    ) -> Result<Option<crate::pieces::Bitfield<M::Have>>, TorrentError> {
        let old = self.picker.set_wanted(wanted)?;
        for e in self.peers.as_mut().iter_mut().filter(|e| e.used) {
            e.recheck = true;
            e.wake = true;
        }
        Ok(old)
    }

    /// Piece priorities: fetch `high` first (`None`: no preference), see
    /// [`Picker::set_high`].
    pub fn set_high(
        &mut self,
        high: Option<crate::pieces::Bitfield<M::Have>>,
    ) -> Result<Option<crate::pieces::Bitfield<M::Have>>, TorrentError> {
        Ok(self.picker.set_high(high)?)
    }

    /// Sequential mode, see [`Picker::set_sequential`].
    pub fn set_sequential(&mut self, on: bool) {
        self.picker.set_sequential(on);
    }

    /// The choker (e.g. which peer holds the optimistic slot).
    pub fn choker(&self) -> &Choker {
        &self.choker
    }

    /// True when every piece is verified.
    pub fn is_complete(&self) -> bool {
        self.picker.is_complete()
    }

    /// Pieces verified since the torrent started (in order).
    pub fn verified_log(&self) -> &[u32] {
        self.log.as_ref().get(..self.log_len).unwrap_or_default()
    }

    /// Connected peers.
    pub fn peer_count(&self) -> usize {
        self.peers.as_ref().iter().filter(|p| p.used).count()
    }

    fn entry(&self, key: PeerKey) -> Option<&PeerEntry> {
        self.peers
            .as_ref()
            .get(usize::from(key.0))
            .filter(|p| p.used)
    }

    fn entry_mut(&mut self, key: PeerKey) -> Option<&mut PeerEntry> {
        self.peers
            .as_mut()
            .get_mut(usize::from(key.0))
            .filter(|p| p.used)
    }

    /// The choker wants this peer unchoked.
    pub fn is_unchoked(&self, key: PeerKey) -> bool {
        self.entry(key).is_some_and(|p| p.unchoke)
    }

    /// The peer's record of good and bad pieces.
    pub fn reputation(&self, key: PeerKey) -> Option<Reputation> {
        self.entry(key).map(|p| p.rep)
    }

    /// The torrent wants this connection closed (banned, or unknown).
    pub fn should_close(&self, key: PeerKey) -> bool {
        self.entry(key).is_none_or(|p| p.close)
    }

    /// A peer finished its handshake at `now`: its key for the session.
    pub fn add_peer(&mut self, now: Instant) -> Result<PeerKey, TorrentError> {
        let n = self.peers.as_ref().len().min(usize::from(u16::MAX) + 1);
        let start = self.next_key;
        let free = (0..n)
            .map(|i| (start + i) % n.max(1))
            .find(|&i| self.peers.as_ref().get(i).is_some_and(|p| !p.used))
            .ok_or(TorrentError::TooManyPeers)?;
        let e = self
            .peers
            .as_mut()
            .get_mut(free)
            .ok_or(TorrentError::TooManyPeers)?;
        *e = PeerEntry {
            used: true,
            connected_at: now,
            // Pieces verified before it came are in our bitfield.
            have_cursor: self.log_len,
            ..PeerEntry::default()
        };
        self.next_key = free + 1;
        self.choke_dirty = true;
        Ok(PeerKey(free as u16))
    }

    /// The peer's connection ended: its pieces and requests are forgotten,
    /// its upload slot may go to another.
    pub fn remove_peer<S: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        now: Instant,
        session: &PeerSession<S>,
    ) {
        let key = session.key();
        if let Some(e) = self.entry_mut(key) {
            e.used = false;
            self.picker.peer_gone(key, session.peer_has());
            self.choke_dirty = true;
            self.rechoke(now);
        }
    }

    /// Handles one message from `session`'s peer: the session's state, the
    /// picker, and for a block the rates and the cancels owed to the other
    /// peers that were asked for it (end-game).
    pub fn handle_message<'a, S: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        now: Instant,
        session: &mut PeerSession<S>,
        msg: Message<'a>,
    ) -> Result<Handled<'a>, PeerError> {
        let h = session.handle_message(now, &mut self.picker, msg)?;
        if let Handled::Block {
            request,
            received,
            data,
        } = &h
        {
            if !received.duplicate {
                if let Some(e) = self.entry_mut(session.key()) {
                    e.down = e.down.saturating_add(data.len() as u64);
                }
            }
            for &k in received.cancel.iter() {
                self.queue_cancel(k, *request);
            }
        }
        self.sync(session);
        Ok(h)
    }

    fn queue_cancel(&mut self, key: PeerKey, r: BlockRequest) {
        if let Some(e) = self.entry_mut(key) {
            if e.cancels.is_full() {
                e.cancels.pop_front();
            }
            let _ = e.cancels.push_back(r);
            e.wake = true;
        }
    }

    /// Interest and snubbing as the session sees them, for the choker.
    fn sync<S: AsRef<[u8]> + AsMut<[u8]>>(&mut self, session: &PeerSession<S>) {
        let state = (session.peer_interested(), session.is_snubbed());
        if let Some(e) = self.entry_mut(session.key()) {
            if (e.interested, e.snubbed) != state {
                (e.interested, e.snubbed) = state;
                self.choke_dirty = true;
            }
        }
    }

    /// We sent the peer `bytes` of payload (for the choker's rates).
    pub fn uploaded(&mut self, key: PeerKey, bytes: u64) {
        if let Some(e) = self.entry_mut(key) {
            e.up = e.up.saturating_add(bytes);
        }
    }

    /// Applies the torrent's commands for `session` (cancels, the choker's
    /// decision, haves of pieces verified since) and writes what it must
    /// send into `buf` (see [`PeerSession::poll_transmit`]); returns the
    /// bytes written. A command the session's control queue cannot take
    /// now stays for the next call.
    pub fn poll_transmit<S: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        now: Instant,
        session: &mut PeerSession<S>,
        buf: &mut [u8],
    ) -> usize {
        self.sync(session);
        self.rechoke(now);
        let key = session.key();
        let log_len = self.log_len;
        if let Some(e) = self
            .peers
            .as_mut()
            .get_mut(usize::from(key.0))
            .filter(|p| p.used)
        {
            while let Some(&r) = e.cancels.front() {
                if session.cancel(r).is_err() {
                    break;
                }
                e.cancels.pop_front();
            }
            let _ = session.set_choking(!e.unchoke);
            if e.recheck && session.recheck_interest(&self.picker).is_ok() {
                e.recheck = false;
            }
            while e.have_cursor < log_len {
                let Some(&i) = self.log.as_ref().get(e.have_cursor) else {
                    break;
                };
                if session.send_have(&self.picker, i).is_err() {
                    break;
                }
                e.have_cursor += 1;
            }
        }
        session.poll_transmit(now, &mut self.picker, buf)
    }

    /// The next peer with commands waiting (cancels, haves, a choke
    /// change, a close): the shell runs its `poll_transmit` soon.
    pub fn poll_wake(&mut self) -> Option<PeerKey> {
        let (i, e) = self
            .peers
            .as_mut()
            .iter_mut()
            .enumerate()
            .find(|(_, e)| e.used && e.wake)?;
        e.wake = false;
        Some(PeerKey(i as u16))
    }

    /// Runs the choker if a rechoke is due or peers changed, and flags the
    /// peers whose state flips.
    fn rechoke(&mut self, now: Instant) {
        let due = self.choker.poll_timeout().is_none_or(|t| now >= t);
        if !due && !self.choke_dirty {
            return;
        }
        self.choke_dirty = false;
        let ms = now
            .saturating_duration_since(self.rate_since)
            .millis()
            .max(1);
        let cands = self.candidates.as_mut();
        let mut n = 0;
        for (i, e) in self.peers.as_ref().iter().enumerate() {
            if !e.used {
                continue;
            }
            let Some(c) = cands.get_mut(n) else { break };
            *c = Candidate {
                key: PeerKey(i as u16),
                interested: e.interested,
                snubbed: e.snubbed,
                down_rate: e.down.saturating_mul(1000) / ms,
                up_rate: e.up.saturating_mul(1000) / ms,
                connected_at: e.connected_at,
                unchoked: e.unchoke,
                last_unchoked: e.last_unchoked,
            };
            n += 1;
        }
        let cands = cands.get_mut(..n).unwrap_or_default();
        let seeding = self.picker.is_complete();
        let rechoked = self.choker.update(now, seeding, cands) == Update::Rechoked;
        if rechoked {
            self.rate_since = now;
        }
        let peers = self.peers.as_mut();
        for c in cands.iter() {
            if let Some(e) = peers.get_mut(usize::from(c.key.0)) {
                e.last_unchoked = c.last_unchoked;
                if e.unchoke != c.unchoked {
                    e.unchoke = c.unchoked;
                    e.wake = true;
                }
            }
        }
        if rechoked {
            for e in peers.iter_mut() {
                e.down = 0;
                e.up = 0;
            }
        }
    }

    /// Time passed: requests that timed out are freed and cancelled at
    /// their peers; the choker reruns when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let (picker, peers) = (&mut self.picker, &mut self.peers);
        picker.handle_timeout(now, |k, r| {
            if let Some(e) = peers.as_mut().get_mut(usize::from(k.0)).filter(|p| p.used) {
                if e.cancels.is_full() {
                    e.cancels.pop_front();
                }
                let _ = e.cancels.push_back(r);
                e.wake = true;
            }
        });
        self.rechoke(now);
    }

    /// When [`Self::handle_timeout`] should next run (a request timing out
    /// or a rechoke), if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.picker.poll_timeout(), self.choker.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Feeds piece bytes the picker could not hash as they arrived
    /// ([`PieceOutcome::NeedsData`]).
    pub fn hash_data(&mut self, index: u32, data: &[u8]) -> Result<(), TorrentError> {
        Ok(self.picker.hash_data(index, data)?)
    }

    /// Gives up a piece in progress without blame (its data could not be
    /// stored); it will be fetched again.
    pub fn abandon(&mut self, index: u32) -> bool {
        self.picker.abandon(index)
    }

    /// Checks a complete piece hashed by the picker as its blocks came.
    pub fn verify(
        &mut self,
        index: u32,
        expected: &[u8; 20],
    ) -> Result<PieceOutcome, TorrentError> {
        let senders = self.picker.contributors(index);
        let v = self.picker.verify(index, expected)?;
        Ok(self.conclude(index, v, senders))
    }

    /// Checks a complete piece by a SHA-1 the shell computed.
    pub fn verify_digest(
        &mut self,
        index: u32,
        digest: &[u8; 20],
        expected: &[u8; 20],
    ) -> Result<PieceOutcome, TorrentError> {
        let senders = self.picker.contributors(index);
        let v = self.picker.verify_digest(index, digest, expected)?;
        Ok(self.conclude(index, v, senders))
    }

    fn conclude(
        &mut self,
        index: u32,
        v: Verdict,
        senders: Option<(heapless::Vec<PeerKey, MAX_CONTRIBUTORS>, bool)>,
    ) -> PieceOutcome {
        let (senders, more) = senders.unwrap_or_default();
        match v {
            Verdict::NeedsData { from } => PieceOutcome::NeedsData { from },
            Verdict::Passed => {
                for &k in senders.iter() {
                    if let Some(e) = self.entry_mut(k) {
                        e.rep.record_pass();
                    }
                }
                if let Some(slot) = self.log.as_mut().get_mut(self.log_len) {
                    *slot = index;
                    self.log_len += 1;
                }
                for e in self.peers.as_mut().iter_mut().filter(|e| e.used) {
                    e.wake = true;
                }
                let complete = self.picker.is_complete();
                if complete {
                    // Seeding ranks by upload rate: rechoke at once.
                    self.choke_dirty = true;
                }
                PieceOutcome::Passed { complete }
            }
            Verdict::Failed { .. } => {
                let count = senders.len() + usize::from(more);
                let mut banned = heapless::Vec::new();
                for &k in senders.iter() {
                    if let Some(e) = self.entry_mut(k) {
                        if e.rep.record_fail(count) {
                            e.close = true;
                            e.wake = true;
                            // Same capacity as `senders`.
                            let _ = banned.push(k);
                        }
                    }
                }
                PieceOutcome::Failed { banned }
            }
        }
    }
}

#[cfg(test)]
mod tests;
