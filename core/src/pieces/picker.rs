//! The piece picker and block request bookkeeping (the four policies of
//! Cohen's "Incentives Build Robustness in BitTorrent": strict priority,
//! rarest first, random first piece, end-game mode).

use sha1::{Digest, Sha1};

use super::{Availability, Bitfield, BlockRequest, Geometry, PeerKey, PiecesError, BLOCK_LEN};
use crate::time::Instant;

/// Default number of first pieces picked at random rather than rarest
/// first, so a new peer soon has something to trade.
pub const DEFAULT_RANDOM_FIRST: u32 = 4;

/// Default bound on requests in flight to one peer.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;

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
    /// Requests in flight per peer.
    pub max_in_flight: usize,
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
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            hash_blocks: true,
        }
    }
}

/// A tiny xorshift PRNG (Marsaglia 2003) for the random-first policy and
/// tie breaks. Not for anything secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XorShift32(u32);

impl XorShift32 {
    /// A generator from `seed` (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u32) -> Self {
        XorShift32(if seed == 0 { 0x9E37_79B9 } else { seed })
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

    /// A value in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u32) -> u32 {
        if n == 0 {
            0
        } else {
            self.next_u32() % n
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

/// Outcome of [`Picker::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<const B: usize> {
    /// The hash matched; the piece is now in our bitfield (send have).
    Passed,
    /// The hash failed; the piece was reset and will be downloaded again.
    /// These peers sent its blocks (the shell may ban them).
    Failed {
        /// Distinct peers that sent blocks of the piece.
        contributors: heapless::Vec<PeerKey, B>,
    },
    /// Blocks arrived out of order, so the picker could not hash them as
    /// they came: feed the piece's bytes from `from` on with
    /// [`Picker::hash_data`], then call [`Picker::verify`] again.
    NeedsData {
        /// Offset in the piece to resume hashing at.
        from: u32,
    },
}

#[derive(Clone, Debug)]
struct Block {
    /// Who sent it, once received.
    from: Option<PeerKey>,
    /// Outstanding requests: peer and send time.
    requested: heapless::Vec<(PeerKey, Instant), MAX_REQUESTERS_PER_BLOCK>,
}

#[derive(Clone, Debug)]
struct Active<const B: usize> {
    index: u32,
    size: u32,
    blocks: heapless::Vec<Block, B>,
    received: u32,
    sha: Sha1,
    /// Bytes hashed from the start of the piece.
    hashed: u32,
}

impl<const B: usize> Active<B> {
    fn has_free(&self) -> bool {
        self.blocks
            .iter()
            .any(|b| b.from.is_none() && b.requested.is_empty())
    }
}

/// Chooses blocks to request and tracks them until their piece verifies.
///
/// `P` bounds the pieces in progress at once, `B` the blocks per piece.
/// The picker owns our bitfield (`have`) and the swarm's availability, both
/// in caller storage. Drive it with:
/// - [`Self::peer_has`], [`Self::peer_has_bitfield`], [`Self::peer_gone`]
///   as peers announce pieces or leave;
/// - [`Self::pick`] while a peer is unchoked and below its in-flight bound;
/// - [`Self::on_block`] for each block received, then [`Self::verify`];
/// - [`Self::on_reject`] / [`Self::peer_choked`] when requests die;
/// - [`Self::handle_timeout`] at [`Self::poll_timeout`].
#[derive(Debug)]
pub struct Picker<'s, const P: usize, const B: usize> {
    geo: Geometry,
    have: Bitfield<&'s mut [u8]>,
    avail: Availability<'s>,
    active: heapless::Vec<Active<B>, P>,
    cfg: PickerConfig,
    rng: XorShift32,
}

impl<'s, const P: usize, const B: usize> Picker<'s, P, B> {
    /// A picker for `geo`, with our pieces in `have` (already-verified
    /// pieces may be set) and availability counts in `avail`.
    pub fn new(
        geo: Geometry,
        have: Bitfield<&'s mut [u8]>,
        avail: Availability<'s>,
        cfg: PickerConfig,
        seed: u32,
    ) -> Result<Self, PiecesError> {
        if have.len() != geo.piece_count() || avail.len() != geo.piece_count() {
            return Err(PiecesError::CountMismatch);
        }
        let blocks = geo.max_blocks_per_piece();
        if blocks as usize > B {
            return Err(PiecesError::PieceTooLarge { blocks });
        }
        Ok(Picker {
            geo,
            have,
            avail,
            active: heapless::Vec::new(),
            cfg,
            rng: XorShift32::new(seed),
        })
    }

    /// The torrent's geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// Our verified pieces.
    pub fn have(&self) -> &Bitfield<&'s mut [u8]> {
        &self.have
    }

    /// Swarm availability.
    pub fn availability(&self) -> &Availability<'s> {
        &self.avail
    }

    /// True when every piece is verified.
    pub fn is_complete(&self) -> bool {
        self.have.is_complete()
    }

    /// Pieces in progress.
    pub fn in_progress(&self) -> impl Iterator<Item = u32> + '_ {
        self.active.iter().map(|a| a.index)
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
        for a in self.active.iter_mut() {
            for b in a.blocks.iter_mut() {
                b.requested.retain(|(p, _)| *p != peer);
            }
        }
    }

    /// BEP 6 reject request: the peer will not send this block.
    pub fn on_reject(&mut self, peer: PeerKey, req: BlockRequest) {
        if let Some(b) = self.block_mut(req) {
            b.requested.retain(|(p, _)| *p != peer);
        }
    }

    fn block_mut(&mut self, req: BlockRequest) -> Option<&mut Block> {
        let a = self.active.iter_mut().find(|a| a.index == req.index)?;
        if req.begin % BLOCK_LEN != 0 {
            return None;
        }
        a.blocks.get_mut((req.begin / BLOCK_LEN) as usize)
    }

    /// Requests in flight to `peer`.
    pub fn in_flight(&self, peer: PeerKey) -> usize {
        self.active
            .iter()
            .flat_map(|a| a.blocks.iter())
            .filter(|b| b.from.is_none() && b.requested.iter().any(|(p, _)| *p == peer))
            .count()
    }

    /// End-game: every missing block has been requested.
    pub fn is_end_game(&self) -> bool {
        let missing = self.geo.piece_count().saturating_sub(self.have.count());
        missing > 0
            && missing as usize == self.active.len()
            && !self.active.iter().any(|a| a.has_free())
    }

    /// The next block to request from `peer`, which has the pieces in
    /// `peer_has`, or `None` (nothing useful, in-flight bound reached, or
    /// all `P` piece slots busy). The request is recorded as sent at `now`.
    pub fn pick<S: AsRef<[u8]>>(
        &mut self,
        now: Instant,
        peer: PeerKey,
        peer_has: &Bitfield<S>,
    ) -> Option<Pick> {
        if self.in_flight(peer) >= self.cfg.max_in_flight {
            return None;
        }
        // Rarest in-progress piece with a free block that the peer has.
        let mut best_active: Option<(usize, u16)> = None;
        for (slot, a) in self.active.iter().enumerate() {
            if peer_has.get(a.index) && a.has_free() {
                let n = self.avail.get(a.index);
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
        if !self.active.is_full() {
            if let Some(i) = self.best_new(peer_has, true) {
                let size = self.geo.piece_size(i)?;
                let count = size.div_ceil(BLOCK_LEN);
                let mut blocks = heapless::Vec::new();
                for _ in 0..count {
                    blocks
                        .push(Block {
                            from: None,
                            requested: heapless::Vec::new(),
                        })
                        .ok()?;
                }
                self.active
                    .push(Active {
                        index: i,
                        size,
                        blocks,
                        received: 0,
                        sha: Sha1::new(),
                        hashed: 0,
                    })
                    .ok()?;
                return self.request_free(now, peer, self.active.len() - 1);
            }
        }
        if self.cfg.end_game && self.is_end_game() {
            return self.request_duplicate(now, peer, peer_has);
        }
        None
    }

    /// A missing piece not in progress that the peer has: random while we
    /// have fewer than `random_first` pieces, else the rarest (ties broken
    /// at random when `draw`, else lowest index).
    fn best_new<S: AsRef<[u8]>>(&mut self, peer_has: &Bitfield<S>, draw: bool) -> Option<u32> {
        let random = self.have.count() < self.cfg.random_first;
        let mut best: Option<(u32, u16)> = None;
        let mut ties = 0u32;
        for i in peer_has.iter_set() {
            if self.have.get(i) || self.active.iter().any(|a| a.index == i) {
                continue;
            }
            let n = if random { 0 } else { self.avail.get(i) };
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
        let a = self.active.get_mut(slot)?;
        let (b, block) = a
            .blocks
            .iter_mut()
            .enumerate()
            .find(|(_, b)| b.from.is_none() && b.requested.is_empty())?;
        block.requested.push((peer, now)).ok()?;
        let request = self.geo.block(a.index, b as u32)?;
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
        for (slot, a) in self.active.iter().enumerate() {
            if !peer_has.get(a.index) {
                continue;
            }
            for (bi, b) in a.blocks.iter().enumerate() {
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
        let a = self.active.get_mut(slot)?;
        a.blocks.get_mut(bi)?.requested.push((peer, now)).ok()?;
        let request = self.geo.block(a.index, bi as u32)?;
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
        let a = self
            .active
            .iter_mut()
            .find(|a| a.index == index)
            .ok_or(PiecesError::NotInProgress(index))?;
        let expect = expect.ok_or(PiecesError::BadBlock)?;
        if begin % BLOCK_LEN != 0 || data.len() != expect.length as usize {
            return Err(PiecesError::BadBlock);
        }
        let block = a
            .blocks
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
        for &(p, _) in block.requested.iter() {
            if p != peer {
                // Capacities are equal, so this cannot fail.
                let _ = out.cancel.push(p);
            }
        }
        block.requested.clear();
        if self.cfg.hash_blocks && begin == a.hashed {
            a.sha.update(data);
            a.hashed += expect.length;
        }
        a.received += 1;
        out.piece_complete = a.received as usize == a.blocks.len();
        Ok(out)
    }

    /// Feeds piece bytes the picker could not hash as they arrived
    /// ([`Verdict::NeedsData`]); `data` continues at the offset it gave.
    pub fn hash_data(&mut self, index: u32, data: &[u8]) -> Result<(), PiecesError> {
        let a = self
            .active
            .iter_mut()
            .find(|a| a.index == index)
            .ok_or(PiecesError::NotInProgress(index))?;
        let n = u32::try_from(data.len()).map_err(|_| PiecesError::TooMuchData)?;
        let end = a
            .hashed
            .checked_add(n)
            .filter(|&e| e <= a.size)
            .ok_or(PiecesError::TooMuchData)?;
        a.sha.update(data);
        a.hashed = end;
        Ok(())
    }

    /// The slot of piece `index` if all its blocks are in.
    fn complete_slot(&self, index: u32) -> Result<usize, PiecesError> {
        let (slot, a) = self
            .active
            .iter()
            .enumerate()
            .find(|(_, a)| a.index == index)
            .ok_or(PiecesError::NotInProgress(index))?;
        if a.received as usize != a.blocks.len() {
            return Err(PiecesError::NotComplete(index));
        }
        Ok(slot)
    }

    /// Checks a complete piece against its SHA-1 from the metainfo.
    pub fn verify(&mut self, index: u32, expected: &[u8; 20]) -> Result<Verdict<B>, PiecesError> {
        let slot = self.complete_slot(index)?;
        let a = self
            .active
            .get(slot)
            .ok_or(PiecesError::NotInProgress(index))?;
        if a.hashed < a.size {
            return Ok(Verdict::NeedsData { from: a.hashed });
        }
        let a = self.active.swap_remove(slot);
        let digest: [u8; 20] = a.sha.clone().finalize().into();
        self.conclude(a, &digest, expected)
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
    ) -> Result<Verdict<B>, PiecesError> {
        let slot = self.complete_slot(index)?;
        let a = self.active.swap_remove(slot);
        self.conclude(a, digest, expected)
    }

    /// Ends a complete piece: into our bitfield if `digest` matches, else
    /// reset, reporting who sent its blocks.
    fn conclude(
        &mut self,
        a: Active<B>,
        digest: &[u8; 20],
        expected: &[u8; 20],
    ) -> Result<Verdict<B>, PiecesError> {
        let index = a.index;
        if digest == expected {
            self.have.set(index)?;
            return Ok(Verdict::Passed);
        }
        let mut contributors = heapless::Vec::new();
        for p in a.blocks.iter().filter_map(|b| b.from) {
            if !contributors.contains(&p) {
                // At most B blocks, so at most B distinct peers.
                let _ = contributors.push(p);
            }
        }
        Ok(Verdict::Failed { contributors })
    }

    /// Gives up a piece in progress without blaming anyone (e.g. the shell
    /// could not store its blocks): its requests are forgotten and it will
    /// be picked and downloaded again. Returns false if it was not in
    /// progress.
    pub fn abandon(&mut self, index: u32) -> bool {
        match self.active.iter().position(|a| a.index == index) {
            Some(slot) => {
                self.active.swap_remove(slot);
                true
            }
            None => false,
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
        for a in self.active.iter_mut() {
            for (bi, b) in a.blocks.iter_mut().enumerate() {
                let geo = &self.geo;
                b.requested.retain(|&(p, t)| {
                    let alive = now.saturating_duration_since(t).millis() < timeout;
                    if !alive {
                        if let Some(r) = geo.block(a.index, bi as u32) {
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
        self.active
            .iter()
            .flat_map(|a| a.blocks.iter())
            .flat_map(|b| b.requested.iter())
            .map(|&(_, t)| t.add_millis(self.cfg.request_timeout_ms))
            .min()
    }
}
