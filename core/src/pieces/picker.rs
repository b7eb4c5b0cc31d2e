//! The piece picker and block request bookkeeping (the four policies of
//! Cohen's "Incentives Build Robustness in BitTorrent": strict priority,
//! rarest first, random first piece, end-game mode).
//!
//! Piece priorities (selective download, streaming) are optional bitfields
//! in the caller's storage, set at any time: a *wanted* mask (pieces
//! outside it are never picked, and the download is complete once every
//! wanted piece is: [`Picker::wanted_complete`]), a *high* mask (picked
//! before the others), and a sequential mode (lowest index first instead
//! of rarest first).

use super::{
    Availability, Bitfield, BlockRequest, Geometry, InOrderHasher, PeerKey, PiecesError, BLOCK_LEN,
};
use crate::time::Instant;

/// Kept here for the old path `pieces::XorShift32`; it lives in [`crate::rand`].
pub use crate::rand::XorShift32;

/// Default number of first pieces picked at random rather than rarest
/// first, so a new peer soon has something to trade.
pub const DEFAULT_RANDOM_FIRST: u32 = 4;

/// Default time after which an unanswered request is given up and the
/// block requested again (from anyone).
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;

/// Most peers one block may be requested from at once (end-game duplicates
/// included). Bounds end-game's extra traffic.
pub const MAX_REQUESTERS_PER_BLOCK: usize = 3;

/// Picker policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PickerConfig {
    /// While fewer pieces than this are complete, new pieces are picked at
    /// random among those the peer has.
    pub random_first: u32,
    /// Strict priority: finish pieces in progress before starting another.
    pub strict_priority: bool,
    /// End-game: once every missing block is requested, request blocks
    /// again from other peers (at most [`MAX_REQUESTERS_PER_BLOCK`] each).
    pub end_game: bool,
    /// Request timeout in milliseconds.
    pub request_timeout_ms: u64,
    /// Hash blocks that arrive in order as they come (no re-read of the
    /// piece to verify it). Off, the shell hashes whole pieces itself,
    /// e.g. on other threads, and calls [`Picker::verify_digest`].
    pub hash_blocks: bool,
}

impl Default for PickerConfig {
    fn default() -> Self {
        PickerConfig {
            random_first: DEFAULT_RANDOM_FIRST,
            strict_priority: true,
            end_game: true,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            hash_blocks: true,
        }
    }
}

/// What [`Picker::pick`] chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    /// The block to request.
    pub request: BlockRequest,
    /// End-game: this block is also requested from another peer.
    pub duplicate: bool,
}

/// What [`Picker::on_block`] did with a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The block had already been received (end-game race); drop it.
    pub duplicate: bool,
    /// Other peers this block was also requested from: send them a cancel.
    pub cancel: heapless::Vec<PeerKey, MAX_REQUESTERS_PER_BLOCK>,
    /// Every block of the piece is in: call [`Picker::verify`].
    pub piece_complete: bool,
}

/// Most distinct peers [`Verdict::Failed`] names: the senders of a bad
/// piece beyond this many (a piece has at most one per block) are not
/// named, and `more` says so.
pub const MAX_CONTRIBUTORS: usize = 16;

/// Outcome of [`Picker::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The hash matched; the piece is now in our bitfield (send have).
    Passed,
    /// The hash failed; the piece was reset and will be downloaded again.
    /// These peers sent its blocks (the shell may ban them).
    Failed {
        /// Distinct peers that sent blocks of the piece, in block order.
        contributors: heapless::Vec<PeerKey, MAX_CONTRIBUTORS>,
        /// More peers sent blocks than `contributors` holds.
        more: bool,
    },
    /// Blocks arrived out of order, so the picker could not hash them as
    /// they came: feed the piece's bytes from `from` on with
    /// [`Picker::hash_data`], then call [`Picker::verify`] again.
    NeedsData {
        /// Offset in the piece to resume hashing at.
        from: u32,
    },
}

/// One block of a piece in progress (an element of the caller's block
/// storage; [`Picker::blocks_needed`] of them).
#[derive(Clone, Debug, Default)]
pub struct BlockSlot {
    /// Who sent it, once received.
    from: Option<PeerKey>,
    /// Outstanding requests: peer and send time.
    requested: heapless::Vec<(PeerKey, Instant), MAX_REQUESTERS_PER_BLOCK>,
}

impl BlockSlot {
    fn is_free(&self) -> bool {
        self.from.is_none() && self.requested.is_empty()
    }
}

/// One piece in progress (an element of the caller's slot storage: its
/// length bounds the pieces in progress at once).
#[derive(Clone, Debug, Default)]
pub struct Slot {
    used: bool,
    index: u32,
    size: u32,
    blocks: u32,
    received: u32,
    /// Blocks that arrived in order, hashed.
    hasher: InOrderHasher,
}

/// The four buffers a [`Picker`] keeps its state in, chosen by the caller:
/// `&mut [T]` in the firmware ([`SliceStorage`]), `Box<[T]>` in a std
/// shell. The picker never allocates; it hands them back with
/// [`Picker::into_parts`].
pub trait PickerStorage {
    /// Our bitfield's bytes (ceil(pieces / 8)).
    type Have: AsRef<[u8]> + AsMut<[u8]>;
    /// Availability counts (one per piece).
    type Counts: AsRef<[u16]> + AsMut<[u16]>;
    /// Pieces in progress (its length bounds them).
    type Slots: AsRef<[Slot]> + AsMut<[Slot]>;
    /// Blocks of the pieces in progress ([`Picker::blocks_needed`]).
    type Blocks: AsRef<[BlockSlot]> + AsMut<[BlockSlot]>;
    /// Requests in flight per peer, indexed by [`PeerKey`] (a key past its
    /// end is counted by scanning the pieces in progress instead).
    type Flight: AsRef<[u16]> + AsMut<[u16]>;
}

/// [`PickerStorage`] over borrowed slices.
#[derive(Debug)]
pub struct SliceStorage<'s>(core::marker::PhantomData<&'s mut ()>);

impl<'s> PickerStorage for SliceStorage<'s> {
    type Have = &'s mut [u8];
    type Counts = &'s mut [u16];
    type Slots = &'s mut [Slot];
    type Blocks = &'s mut [BlockSlot];
    type Flight = &'s mut [u16];
}

/// What a [`Picker`] is built from and hands back.
#[derive(Debug)]
pub struct PickerParts<M: PickerStorage> {
    /// Our pieces (already-verified pieces may be set).
    pub have: Bitfield<M::Have>,
    /// Availability counts.
    pub avail: Availability<M::Counts>,
    /// Piece slots.
    pub slots: M::Slots,
    /// Block slots.
    pub blocks: M::Blocks,
    /// Requests in flight per peer key.
    pub flight: M::Flight,
}

/// Chooses blocks to request and tracks them until their piece verifies.
///
/// The slot storage bounds the pieces in progress at once; each slot owns
/// [`Geometry::max_blocks_per_piece`] consecutive block slots. The picker
/// owns our bitfield (`have`) and the swarm's availability. All four are
/// caller storage ([`PickerStorage`]). Drive it with:
/// - [`Self::peer_has`], [`Self::peer_has_bitfield`], [`Self::peer_gone`]
///   as peers announce pieces or leave;
/// - [`Self::pick`] while a peer is unchoked and below its in-flight bound;
/// - [`Self::on_block`] for each block received, then [`Self::verify`];
/// - [`Self::on_reject`] / [`Self::peer_choked`] when requests die;
/// - [`Self::handle_timeout`] at [`Self::poll_timeout`].
pub struct Picker<M: PickerStorage> {
    geo: Geometry,
    have: Bitfield<M::Have>,
    avail: Availability<M::Counts>,
    slots: M::Slots,
    blocks: M::Blocks,
    flight: M::Flight,
    /// Usable slots: min(slot storage, block storage / blocks per piece).
    cap: usize,
    /// One past the highest slot in use: scans stop there (slots are taken
    /// lowest first, so this stays near the pieces in progress).
    hi: usize,
    /// Block slots per piece slot.
    per: usize,
    cfg: PickerConfig,
    rng: XorShift32,
    /// Pieces to fetch (`None`: all).
    wanted: Option<Bitfield<M::Have>>,
    /// Pieces to fetch first (`None`: none).
    high: Option<Bitfield<M::Have>>,
    /// New pieces in index order rather than rarest first.
    sequential: bool,
}

impl<M: PickerStorage> core::fmt::Debug for Picker<M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Picker")
            .field("geo", &self.geo)
            .field("have", &self.have.count())
            .field("slots", &self.cap)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn flight_add(flight: &mut [u16], peer: PeerKey) {
    if let Some(c) = flight.get_mut(usize::from(peer.0)) {
        *c = c.saturating_add(1);
    }
}

fn flight_sub(flight: &mut [u16], peer: PeerKey, n: usize) {
    if let Some(c) = flight.get_mut(usize::from(peer.0)) {
        *c = c.saturating_sub(u16::try_from(n).unwrap_or(u16::MAX));
    }
}

/// The blocks of slot `slot` (its piece's block count of them).
fn slot_blocks(blocks: &[BlockSlot], per: usize, slot: usize, n: u32) -> &[BlockSlot] {
    let start = slot * per;
    blocks.get(start..start + n as usize).unwrap_or_default()
}

fn slot_blocks_mut(blocks: &mut [BlockSlot], per: usize, slot: usize, n: u32) -> &mut [BlockSlot] {
    let start = slot * per;
    blocks
        .get_mut(start..start + n as usize)
        .unwrap_or_default()
}

impl<M: PickerStorage> Picker<M> {
    /// Block slots needed for `slots` pieces in progress of `geo`.
    pub fn blocks_needed(geo: &Geometry, slots: usize) -> usize {
        slots.saturating_mul(geo.max_blocks_per_piece() as usize)
    }

    /// A picker for `geo` over `parts`: our pieces in `parts.have`
    /// (already-verified pieces may be set), availability counts in
    /// `parts.avail`, and room for pieces in progress in `parts.slots` and
    /// `parts.blocks` (at least one piece's worth).
    pub fn new(
        geo: Geometry,
        parts: PickerParts<M>,
        cfg: PickerConfig,
        seed: u32,
    ) -> Result<Self, PiecesError> {
        let PickerParts {
            have,
            avail,
            mut slots,
            mut blocks,
            mut flight,
        } = parts;
        if have.len() != geo.piece_count() || avail.len() != geo.piece_count() {
            return Err(PiecesError::CountMismatch);
        }
        let per = geo.max_blocks_per_piece() as usize;
        let cap = slots.as_ref().len().min(blocks.as_ref().len() / per.max(1));
        if cap == 0 {
            return Err(PiecesError::StorageTooSmall { needed: per });
        }
        for s in slots.as_mut().iter_mut() {
            s.used = false;
        }
        for b in blocks.as_mut().iter_mut() {
            *b = BlockSlot::default();
        }
        flight.as_mut().fill(0);
        Ok(Picker {
            geo,
            have,
            avail,
            slots,
            blocks,
            flight,
            cap,
            hi: 0,
            per,
            cfg,
            rng: XorShift32::new(seed),
            wanted: None,
            high: None,
            sequential: false,
        })
    }

    /// Fetch only the pieces set in `wanted` (`None`: every piece); hands
    /// back the previous mask's storage. Pieces in progress are finished.
    /// A mask of another length is refused ([`PiecesError::CountMismatch`]).
    pub fn set_wanted(
        &mut self,
        wanted: Option<Bitfield<M::Have>>,
    ) -> Result<Option<Bitfield<M::Have>>, PiecesError> {
        if wanted
            .as_ref()
            .is_some_and(|w| w.len() != self.geo.piece_count())
        {
            return Err(PiecesError::CountMismatch);
        }
        Ok(core::mem::replace(&mut self.wanted, wanted))
    }

    /// Fetch the pieces set in `high` before any other (`None`: no
    /// preference); hands back the previous mask's storage.
    pub fn set_high(
        &mut self,
        high: Option<Bitfield<M::Have>>,
    ) -> Result<Option<Bitfield<M::Have>>, PiecesError> {
        if high
            .as_ref()
            .is_some_and(|w| w.len() != self.geo.piece_count())
        {
            return Err(PiecesError::CountMismatch);
        }
        Ok(core::mem::replace(&mut self.high, high))
    }

    /// Sequential mode: new pieces are picked in index order (within their
    /// priority) instead of rarest first (streaming; fewer peers help).
    pub fn set_sequential(&mut self, on: bool) {
        self.sequential = on;
    }

    /// True if piece `i` is wanted (no mask: every piece).
    pub fn is_wanted(&self, i: u32) -> bool {
        self.wanted.as_ref().is_none_or(|w| w.get(i))
    }

    /// True if piece `i` is wanted and not ours yet.
    pub fn needs(&self, i: u32) -> bool {
        !self.have.get(i) && self.is_wanted(i)
    }

    /// Wanted pieces not verified yet.
    pub fn wanted_missing(&self) -> u32 {
        match &self.wanted {
            None => self.geo.piece_count().saturating_sub(self.have.count()),
            Some(w) => w
                .as_bytes()
                .iter()
                .zip(self.have.as_bytes())
                .map(|(w, h)| (w & !h).count_ones())
                .sum(),
        }
    }

    /// True when every wanted piece is verified (the download is done;
    /// without a mask, the same as [`Self::is_complete`]).
    pub fn wanted_complete(&self) -> bool {
        self.wanted_missing() == 0
    }

    /// Hands the caller's storage back.
    pub fn into_parts(self) -> PickerParts<M> {
        PickerParts {
            have: self.have,
            avail: self.avail,
            slots: self.slots,
            blocks: self.blocks,
            flight: self.flight,
        }
    }

    /// Pieces that can be in progress at once.
    pub fn slot_capacity(&self) -> usize {
        self.cap
    }

    fn active(&self) -> impl Iterator<Item = (usize, &Slot)> + '_ {
        self.slots
            .as_ref()
            .iter()
            .take(self.hi)
            .enumerate()
            .filter(|(_, s)| s.used)
    }

    fn active_count(&self) -> usize {
        self.active().count()
    }

    fn find(&self, index: u32) -> Option<usize> {
        self.active()
            .find(|(_, s)| s.index == index)
            .map(|(i, _)| i)
    }

    fn slot_has_free(&self, slot: usize, s: &Slot) -> bool {
        slot_blocks(self.blocks.as_ref(), self.per, slot, s.blocks)
            .iter()
            .any(BlockSlot::is_free)
    }

    /// The torrent's geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// Our verified pieces.
    pub fn have(&self) -> &Bitfield<M::Have> {
        &self.have
    }

    /// Swarm availability.
    pub fn availability(&self) -> &Availability<M::Counts> {
        &self.avail
    }

    /// True when every piece is verified.
    pub fn is_complete(&self) -> bool {
        self.have.is_complete()
    }

    /// Pieces in progress.
    pub fn in_progress(&self) -> impl Iterator<Item = u32> + '_ {
        self.active().map(|(_, s)| s.index)
    }

    /// A peer announced piece `i` (BEP 3 have).
    pub fn peer_has(&mut self, i: u32) {
        self.avail.add_piece(i);
    }

    /// A peer announced these pieces (bitfield, BEP 6 have all).
    pub fn peer_has_bitfield<S: AsRef<[u8]>>(&mut self, has: &Bitfield<S>) {
        self.avail.add_peer(has);
    }

    /// A peer's earlier announcement is replaced (a later bitfield, have all
    /// or have none): its old pieces no longer count; its requests stand.
    pub fn peer_forgets<S: AsRef<[u8]>>(&mut self, had: &Bitfield<S>) {
        self.avail.remove_peer(had);
    }

    /// A peer left: its pieces no longer count and its requests are dropped.
    pub fn peer_gone<S: AsRef<[u8]>>(&mut self, peer: PeerKey, has: &Bitfield<S>) {
        self.avail.remove_peer(has);
        self.peer_choked(peer);
    }

    /// A peer choked us (without BEP 6, that discards its queue): drop all
    /// its requests so the blocks can go to others.
    pub fn peer_choked(&mut self, peer: PeerKey) {
        let (per, hi) = (self.per, self.hi);
        let blocks = self.blocks.as_mut();
        let mut dropped = 0;
        for (slot, s) in self.slots.as_ref().iter().take(hi).enumerate() {
            if s.used {
                for b in slot_blocks_mut(blocks, per, slot, s.blocks) {
                    let before = b.requested.len();
                    b.requested.retain(|(p, _)| *p != peer);
                    dropped += before - b.requested.len();
                }
            }
        }
        flight_sub(self.flight.as_mut(), peer, dropped);
    }

    /// BEP 6 reject request: the peer will not send this block.
    pub fn on_reject(&mut self, peer: PeerKey, req: BlockRequest) {
        let Some(b) = self.block_mut(req) else {
            return;
        };
        let before = b.requested.len();
        b.requested.retain(|(p, _)| *p != peer);
        let dropped = before - b.requested.len();
        flight_sub(self.flight.as_mut(), peer, dropped);
    }

    fn block_mut(&mut self, req: BlockRequest) -> Option<&mut BlockSlot> {
        let slot = self.find(req.index)?;
        let n = self.slots.as_ref().get(slot)?.blocks;
        if req.begin % BLOCK_LEN != 0 {
            return None;
        }
        slot_blocks_mut(self.blocks.as_mut(), self.per, slot, n)
            .get_mut((req.begin / BLOCK_LEN) as usize)
    }

    /// Requests in flight to `peer`.
    pub fn in_flight(&self, peer: PeerKey) -> usize {
        match self.flight.as_ref().get(usize::from(peer.0)) {
            Some(&n) => usize::from(n),
            None => self.scan_in_flight(peer),
        }
    }

    /// Requests in flight to `peer`, counted from the blocks (what the
    /// per-peer count must always equal).
    #[doc(hidden)]
    pub fn scan_in_flight(&self, peer: PeerKey) -> usize {
        self.active()
            .flat_map(|(slot, s)| slot_blocks(self.blocks.as_ref(), self.per, slot, s.blocks))
            .filter(|b| b.from.is_none() && b.requested.iter().any(|(p, _)| *p == peer))
            .count()
    }

    /// End-game: every missing block has been requested.
    pub fn is_end_game(&self) -> bool {
        let missing = self.wanted_missing();
        missing > 0
            && missing as usize == self.active_count()
            && !self.active().any(|(slot, s)| self.slot_has_free(slot, s))
    }

    /// The next block to request from `peer`, which has the pieces in
    /// `peer_has`, or `None` (nothing useful, in-flight bound reached, or
    /// every piece slot busy). The request is recorded as sent at `now`.
    pub fn pick<S: AsRef<[u8]>>(
        &mut self,
        now: Instant,
        peer: PeerKey,
        peer_has: &Bitfield<S>,
    ) -> Option<Pick> {
        // Rarest in-progress piece with a free block that the peer has.
        let mut best_active: Option<(usize, u16)> = None;
        for (slot, s) in self.active() {
            if peer_has.get(s.index) && self.slot_has_free(slot, s) {
                let n = self.avail.get(s.index);
                if best_active.is_none_or(|(_, m)| n < m) {
                    best_active = Some((slot, n));
                }
            }
        }
        let take_active = match best_active {
            Some(_) if self.cfg.strict_priority => true,
            Some((_, n)) => match self.best_new(peer_has, false) {
                Some(i) => n <= self.avail.get(i),
                None => true,
            },
            None => false,
        };
        if let (true, Some((slot, _))) = (take_active, best_active) {
            return self.request_free(now, peer, slot);
        }
        let free = self
            .slots
            .as_ref()
            .iter()
            .take(self.cap)
            .position(|s| !s.used);
        if let Some(slot) = free {
            if let Some(i) = self.best_new(peer_has, true) {
                let size = self.geo.piece_size(i)?;
                let count = size.div_ceil(BLOCK_LEN);
                for b in slot_blocks_mut(self.blocks.as_mut(), self.per, slot, count) {
                    *b = BlockSlot::default();
                }
                let s = self.slots.as_mut().get_mut(slot)?;
                *s = Slot {
                    used: true,
                    index: i,
                    size,
                    blocks: count,
                    received: 0,
                    hasher: InOrderHasher::new(),
                };
                self.hi = self.hi.max(slot + 1);
                return self.request_free(now, peer, slot);
            }
        }
        if self.cfg.end_game && self.is_end_game() {
            return self.request_duplicate(now, peer, peer_has);
        }
        None
    }

    /// A missing wanted piece not in progress that the peer has: high
    /// priority first; then the lowest index in sequential mode, random
    /// while we have fewer than `random_first` pieces, else the rarest
    /// (ties broken at random when `draw`, else lowest index).
    fn best_new<S: AsRef<[u8]>>(&mut self, peer_has: &Bitfield<S>, draw: bool) -> Option<u32> {
        let random = self.have.count() < self.cfg.random_first;
        // (piece, rank): lower ranks win; high priority halves the range.
        let mut best: Option<(u32, u32)> = None;
        let mut ties = 0u32;
        for i in peer_has.iter_set() {
            if !self.needs(i) || self.find(i).is_some() {
                continue;
            }
            let base: u32 = if self.high.as_ref().is_some_and(|h| h.get(i)) {
                0
            } else {
                1 << 31
            };
            if self.sequential {
                // Index order: the first one of the best priority wins.
                if best.is_none_or(|(_, m)| base < m) {
                    best = Some((i, base));
                }
                continue;
            }
            let n = base
                | if random {
                    0
                } else {
                    u32::from(self.avail.get(i))
                };
            match best {
                Some((_, m)) if n > m => {}
                Some((_, m)) if n == m => {
                    // Reservoir sampling among equals.
                    ties += 1;
                    if draw && self.rng.below(ties) == 0 {
                        best = Some((i, n));
                    }
                }
                _ => {
                    best = Some((i, n));
                    ties = 1;
                }
            }
        }
        best.map(|(i, _)| i)
    }

    fn request_free(&mut self, now: Instant, peer: PeerKey, slot: usize) -> Option<Pick> {
        let s = self.slots.as_ref().get(slot)?;
        let (index, n) = (s.index, s.blocks);
        let (b, block) = slot_blocks_mut(self.blocks.as_mut(), self.per, slot, n)
            .iter_mut()
            .enumerate()
            .find(|(_, b)| b.is_free())?;
        block.requested.push((peer, now)).ok()?;
        flight_add(self.flight.as_mut(), peer);
        let request = self.geo.block(index, b as u32)?;
        Some(Pick {
            request,
            duplicate: false,
        })
    }

    fn request_duplicate<S: AsRef<[u8]>>(
        &mut self,
        now: Instant,
        peer: PeerKey,
        peer_has: &Bitfield<S>,
    ) -> Option<Pick> {
        // The block with the fewest requesters, oldest request first.
        let mut best: Option<(usize, usize, usize, Instant)> = None;
        for (slot, s) in self.active() {
            if !peer_has.get(s.index) {
                continue;
            }
            let blocks = slot_blocks(self.blocks.as_ref(), self.per, slot, s.blocks);
            for (bi, b) in blocks.iter().enumerate() {
                if b.from.is_some()
                    || b.requested.is_full()
                    || b.requested.iter().any(|(p, _)| *p == peer)
                {
                    continue;
                }
                let n = b.requested.len();
                let t = b.requested.iter().map(|&(_, t)| t).min().unwrap_or(now);
                if best.is_none_or(|(_, _, m, u)| (n, t) < (m, u)) {
                    best = Some((slot, bi, n, t));
                }
            }
        }
        let (slot, bi, _, _) = best?;
        let s = self.slots.as_ref().get(slot)?;
        let (index, n) = (s.index, s.blocks);
        slot_blocks_mut(self.blocks.as_mut(), self.per, slot, n)
            .get_mut(bi)?
            .requested
            .push((peer, now))
            .ok()?;
        flight_add(self.flight.as_mut(), peer);
        let request = self.geo.block(index, bi as u32)?;
        Some(Pick {
            request,
            duplicate: true,
        })
    }

    /// A block arrived from `peer`. Blocks are accepted even if the request
    /// timed out or went to another peer, as long as the piece is in
    /// progress and offset and length match a block.
    pub fn on_block(
        &mut self,
        peer: PeerKey,
        index: u32,
        begin: u32,
        data: &[u8],
    ) -> Result<Received, PiecesError> {
        let expect = self.geo.block(index, begin / BLOCK_LEN);
        let slot = self.find(index).ok_or(PiecesError::NotInProgress(index))?;
        let expect = expect.ok_or(PiecesError::BadBlock)?;
        if begin % BLOCK_LEN != 0 || data.len() != expect.length as usize {
            return Err(PiecesError::BadBlock);
        }
        let (per, hash_blocks) = (self.per, self.cfg.hash_blocks);
        let s = self
            .slots
            .as_mut()
            .get_mut(slot)
            .ok_or(PiecesError::NotInProgress(index))?;
        let block = slot_blocks_mut(self.blocks.as_mut(), per, slot, s.blocks)
            .get_mut((begin / BLOCK_LEN) as usize)
            .ok_or(PiecesError::BadBlock)?;
        let mut out = Received {
            duplicate: block.from.is_some(),
            cancel: heapless::Vec::new(),
            piece_complete: false,
        };
        if out.duplicate {
            return Ok(out);
        }
        block.from = Some(peer);
        let flight = self.flight.as_mut();
        for &(p, _) in block.requested.iter() {
            // Whoever was asked for it no longer has it in flight.
            flight_sub(flight, p, 1);
            if p != peer {
                // Capacities are equal, so this cannot fail.
                let _ = out.cancel.push(p);
            }
        }
        block.requested.clear();
        if hash_blocks {
            s.hasher.feed(begin, data);
        }
        s.received += 1;
        out.piece_complete = s.received == s.blocks;
        Ok(out)
    }

    /// Feeds piece bytes the picker could not hash as they arrived
    /// ([`Verdict::NeedsData`]); `data` continues at the offset it gave.
    pub fn hash_data(&mut self, index: u32, data: &[u8]) -> Result<(), PiecesError> {
        let slot = self.find(index).ok_or(PiecesError::NotInProgress(index))?;
        let s = self
            .slots
            .as_mut()
            .get_mut(slot)
            .ok_or(PiecesError::NotInProgress(index))?;
        let n = u32::try_from(data.len()).map_err(|_| PiecesError::TooMuchData)?;
        s.hasher
            .hashed()
            .checked_add(n)
            .filter(|&e| e <= s.size)
            .ok_or(PiecesError::TooMuchData)?;
        s.hasher.update(data);
        Ok(())
    }

    /// The slot of piece `index` if all its blocks are in.
    fn complete_slot(&self, index: u32) -> Result<usize, PiecesError> {
        let slot = self.find(index).ok_or(PiecesError::NotInProgress(index))?;
        let s = self
            .slots
            .as_ref()
            .get(slot)
            .ok_or(PiecesError::NotInProgress(index))?;
        if s.received != s.blocks {
            return Err(PiecesError::NotComplete(index));
        }
        Ok(slot)
    }

    /// Checks a complete piece against its SHA-1 from the metainfo.
    pub fn verify(&mut self, index: u32, expected: &[u8; 20]) -> Result<Verdict, PiecesError> {
        let slot = self.complete_slot(index)?;
        let s = self
            .slots
            .as_ref()
            .get(slot)
            .ok_or(PiecesError::NotInProgress(index))?;
        if s.hasher.hashed() < s.size {
            return Ok(Verdict::NeedsData {
                from: s.hasher.hashed(),
            });
        }
        let digest = s.hasher.clone().finish();
        self.conclude(slot, &digest, expected)
    }

    /// Checks a complete piece by a SHA-1 `digest` of its bytes computed by
    /// the shell (e.g. on the threads that write it to disk, off any lock),
    /// against `expected` from the metainfo. The picker's own hashing state
    /// is ignored.
    pub fn verify_digest(
        &mut self,
        index: u32,
        digest: &[u8; 20],
        expected: &[u8; 20],
    ) -> Result<Verdict, PiecesError> {
        let slot = self.complete_slot(index)?;
        self.conclude(slot, digest, expected)
    }

    /// Ends a complete piece and frees its slot: into our bitfield if
    /// `digest` matches, else reset, reporting who sent its blocks.
    fn conclude(
        &mut self,
        slot: usize,
        digest: &[u8; 20],
        expected: &[u8; 20],
    ) -> Result<Verdict, PiecesError> {
        let s = self
            .slots
            .as_mut()
            .get_mut(slot)
            .ok_or(PiecesError::BadBlock)?;
        let (index, n) = (s.index, s.blocks);
        self.release(slot);
        if digest == expected {
            self.have.set(index)?;
            return Ok(Verdict::Passed);
        }
        let (contributors, more) = self.senders(slot, n);
        Ok(Verdict::Failed { contributors, more })
    }

    fn senders(&self, slot: usize, n: u32) -> (heapless::Vec<PeerKey, MAX_CONTRIBUTORS>, bool) {
        let mut contributors = heapless::Vec::new();
        let mut more = false;
        for p in slot_blocks(self.blocks.as_ref(), self.per, slot, n)
            .iter()
            .filter_map(|b| b.from)
        {
            if !contributors.contains(&p) && contributors.push(p).is_err() {
                more = true;
            }
        }
        (contributors, more)
    }

    /// Distinct peers that sent blocks of piece `index` so far, in block
    /// order (at most [`MAX_CONTRIBUTORS`]; true if there were more), or
    /// `None` if the piece is not in progress.
    pub fn contributors(
        &self,
        index: u32,
    ) -> Option<(heapless::Vec<PeerKey, MAX_CONTRIBUTORS>, bool)> {
        let slot = self.find(index)?;
        let n = self.slots.as_ref().get(slot)?.blocks;
        Some(self.senders(slot, n))
    }

    /// Gives up a piece in progress without blaming anyone (e.g. the shell
    /// could not store its blocks): its requests are forgotten and it will
    /// be picked and downloaded again. Returns false if it was not in
    /// progress.
    pub fn abandon(&mut self, index: u32) -> bool {
        match self.find(index) {
            Some(slot) => {
                self.release(slot);
                true
            }
            None => false,
        }
    }

    /// Frees a slot (its blocks stay readable until it is taken again).
    fn release(&mut self, slot: usize) {
        let slots = self.slots.as_mut();
        if let Some(s) = slots.get_mut(slot) {
            s.used = false;
            // Requests still out for its blocks are forgotten.
            let flight = self.flight.as_mut();
            for b in slot_blocks_mut(self.blocks.as_mut(), self.per, slot, s.blocks) {
                for &(p, _) in b.requested.iter() {
                    flight_sub(flight, p, 1);
                }
                b.requested.clear();
            }
        }
        while self.hi > 0 && slots.get(self.hi - 1).is_some_and(|s| !s.used) {
            self.hi -= 1;
        }
    }

    /// Drops requests older than the timeout, calling `timed_out` for each
    /// (the shell may cancel it and count it against the peer). The blocks
    /// become free for [`Self::pick`] again.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        mut timed_out: impl FnMut(PeerKey, BlockRequest),
    ) {
        let timeout = self.cfg.request_timeout_ms;
        let (per, hi, geo) = (self.per, self.hi, self.geo);
        let blocks = self.blocks.as_mut();
        let flight = self.flight.as_mut();
        for (slot, s) in self.slots.as_ref().iter().take(hi).enumerate() {
            if !s.used {
                continue;
            }
            for (bi, b) in slot_blocks_mut(blocks, per, slot, s.blocks)
                .iter_mut()
                .enumerate()
            {
                b.requested.retain(|&(p, t)| {
                    let alive = now.saturating_duration_since(t).millis() < timeout;
                    if !alive {
                        flight_sub(flight, p, 1);
                        if let Some(r) = geo.block(s.index, bi as u32) {
                            timed_out(p, r);
                        }
                    }
                    alive
                });
            }
        }
    }

    /// When the next request times out, if any is in flight.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.active()
            .flat_map(|(slot, s)| slot_blocks(self.blocks.as_ref(), self.per, slot, s.blocks))
            .flat_map(|b| b.requested.iter())
            .map(|&(_, t)| t.add_millis(self.cfg.request_timeout_ms))
            .min()
    }
}
