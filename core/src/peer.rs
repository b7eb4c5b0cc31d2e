//! The sans-IO peer session: one connection's BEP 3 state after the
//! handshake — choke and interest on both sides, request pipelining driven
//! by the shared [`Picker`], keep-alives, inactivity timeout and snubbing.
//!
//! It follows the quinn-proto shape. The shell
//! - parses bytes with a [`Framer`](crate::wire::Framer) and passes each
//!   message to [`PeerSession::handle_message`], acting on the returned
//!   [`Handled`] (store a block, answer a request, route cancels);
//! - calls app methods ([`PeerSession::set_choking`],
//!   [`PeerSession::send_have`], [`PeerSession::cancel`]);
//! - drains, after every input: [`PeerSession::poll_transmit`] until it
//!   returns 0, then [`PeerSession::poll_event`] until `None`, then arms a
//!   timer at [`PeerSession::poll_timeout`] and calls
//!   [`PeerSession::handle_timeout`] when it fires.
//!
//! Blocks we upload are not copied through the session: on
//! [`Handled::Request`] the shell writes [`piece_header`](crate::wire::piece_header)
//! and the data from its own storage, between two `poll_transmit` outputs.
//!
//! The picker and our bitfield are shared by all sessions of a torrent, so
//! the calls that need them take `&mut Picker`.
//!
//! Not handled here: the handshakes (the shell runs the framer's
//! handshake-first state and the BEP 10 [`ExtensionHandshake`](crate::wire::ExtensionHandshake),
//! and writes extended messages itself between `poll_transmit` outputs),
//! BEP 6 allowed-fast and suggest (accepted and ignored; we neither request
//! while choked nor send allowed-fast sets), and the choking algorithm
//! (the shell runs the [`Choker`](crate::choker::Choker) over all its
//! sessions and calls [`PeerSession::set_choking`] and
//! [`PeerSession::reject`]).
//!
//! # Limits and refusals (each ends the connection with a [`PeerError`])
//! - a bitfield of the wrong size or with spare bits set (a bitfield, have
//!   all or have none after other messages is taken as an update, not an
//!   error);
//! - a piece index out of range in have;
//! - a request longer than [`PeerConfig::max_request_len`] (BEP 3: 16 KiB);
//! - BEP 6 messages when the fast extension was not negotiated;
//! - no message for [`PeerConfig::inactivity_timeout_ms`];
//! - more than [`OUT_QUEUE_LEN`] control messages waiting to be sent.
//!
//! [`UploadQueue`] holds the requests a peer made of us until the shell
//! serves them (bounded; cancel; BEP 6 rejects on choke and on overflow).

use core::fmt;

use crate::pieces::{Bitfield, BlockRequest, PeerKey, Picker, PickerStorage, Received};
use crate::time::Instant;
use crate::wire::{check_bitfield, Message, WireError, BLOCK_LEN};

mod upload;
pub use upload::{Drain, Rejected, UploadQueue};

/// Control messages waiting for [`PeerSession::poll_transmit`].
pub const OUT_QUEUE_LEN: usize = 64;

/// BEP 3: keep-alives are "generally sent once every two minutes".
pub const DEFAULT_KEEPALIVE_MS: u64 = 120_000;

/// Silence after which the peer is dropped (two missed keep-alives and a margin).
pub const DEFAULT_INACTIVITY_TIMEOUT_MS: u64 = 300_000;

/// No block for this long while requests are outstanding: the peer is snubbing us.
pub const DEFAULT_SNUB_TIMEOUT_MS: u64 = 60_000;

/// Requests in flight to one peer (lowered by its BEP 10 `reqq`; 1 while snubbed).
pub const DEFAULT_PIPELINE: usize = 16;

/// Session parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// Send a keep-alive after this much silence on our side.
    pub keepalive_ms: u64,
    /// Drop the peer after this much silence on its side.
    pub inactivity_timeout_ms: u64,
    /// Mark the peer snubbed after this long without a block.
    pub snub_timeout_ms: u64,
    /// Requests in flight.
    pub pipeline: usize,
    /// Longest block a peer may request (BEP 3 convention: 16 KiB).
    pub max_request_len: u32,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            keepalive_ms: DEFAULT_KEEPALIVE_MS,
            inactivity_timeout_ms: DEFAULT_INACTIVITY_TIMEOUT_MS,
            snub_timeout_ms: DEFAULT_SNUB_TIMEOUT_MS,
            pipeline: DEFAULT_PIPELINE,
            max_request_len: BLOCK_LEN,
        }
    }
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerError {
    /// A malformed bitfield.
    Wire(WireError),
    /// A piece index at or past the piece count.
    PieceOutOfRange(u32),
    /// A request longer than the configured maximum.
    RequestTooLarge(u32),
    /// BEP 6: a fast-extension message (this id) without the extension.
    FastNotNegotiated(u8),
    /// Nothing received for the inactivity timeout.
    Inactive,
    /// The outgoing control queue is full.
    QueueFull,
    /// Peer bitfield storage too small: this many bytes needed.
    StorageTooSmall(usize),
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PeerError::Wire(e) => write!(f, "peer: {e}"),
            PeerError::PieceOutOfRange(i) => write!(f, "peer: piece {i} out of range"),
            PeerError::RequestTooLarge(n) => write!(f, "peer: request of {n} bytes too large"),
            PeerError::FastNotNegotiated(id) => {
                write!(f, "peer: fast-extension message {id} without the extension")
            }
            PeerError::Inactive => f.write_str("peer: inactive"),
            PeerError::QueueFull => f.write_str("peer: outgoing queue full"),
            PeerError::StorageTooSmall(n) => write!(f, "peer: bitfield storage needs {n} bytes"),
        }
    }
}

impl core::error::Error for PeerError {}

/// What the shell must do about a message just handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handled<'a> {
    /// Nothing.
    Nothing,
    /// A block arrived and the picker took it. Unless `received.duplicate`,
    /// store `data`; send [`PeerSession::cancel`] to the sessions in
    /// `received.cancel`; if `received.piece_complete`, call
    /// [`Picker::verify`] and, on success, [`PeerSession::send_have`] on
    /// every session.
    Block {
        /// Which block.
        request: BlockRequest,
        /// Its bytes (borrowed from the shell's read buffer).
        data: &'a [u8],
        /// The picker's verdict on it.
        received: Received,
    },
    /// The peer (which we unchoked) asks for a block: send it with
    /// `piece_header` and the data, unless cancelled before.
    Request(BlockRequest),
    /// The peer withdrew a request.
    Cancel(BlockRequest),
    /// BEP 5: the peer's DHT port.
    Port(u16),
    /// BEP 10: an extended message for the shell.
    Extended {
        /// Extended message id (0: extension handshake).
        id: u8,
        /// Payload.
        payload: &'a [u8],
    },
}

/// State changes reported by [`PeerSession::poll_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The peer choked us.
    Choked,
    /// The peer unchoked us.
    Unchoked,
    /// The peer became interested in our pieces.
    Interested,
    /// The peer lost interest.
    NotInterested,
    /// The peer has a new piece.
    Have(u32),
    /// No block for the snub timeout while requests were in flight.
    Snubbed,
}

/// Most events queued between two drains.
pub const EVENT_QUEUE_LEN: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Out {
    OurBitfield,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    Cancel(BlockRequest),
    Reject(BlockRequest),
}

/// One connection's state. `S` is the caller's storage for the peer's
/// bitfield (`&mut [u8]`, `Box<[u8]>`, …), handed back by
/// [`PeerSession::into_storage`].
#[derive(Debug)]
pub struct PeerSession<S> {
    key: PeerKey,
    cfg: PeerConfig,
    fast: bool,
    peer_has: Bitfield<S>,
    am_choking: bool,
    am_interested: bool,
    peer_choking: bool,
    peer_interested: bool,
    snubbed: bool,
    first_message: bool,
    peer_reqq: Option<usize>,
    last_recv: Instant,
    last_send: Instant,
    last_block: Instant,
    out: heapless::Deque<Out, OUT_QUEUE_LEN>,
    events: heapless::Deque<Event, EVENT_QUEUE_LEN>,
}

impl<S: AsRef<[u8]> + AsMut<[u8]>> PeerSession<S> {
    /// A session right after the handshakes. `fast` is true when both sides
    /// set the BEP 6 bit. Our bitfield (or BEP 6 have all / have none) is
    /// queued as the first message. `peer_bits` must hold ceil(pieces / 8)
    /// bytes.
    pub fn new(
        key: PeerKey,
        peer_bits: S,
        pieces: u32,
        fast: bool,
        cfg: PeerConfig,
        now: Instant,
    ) -> Result<Self, PeerError> {
        let needed = (pieces as usize).div_ceil(8);
        let peer_has =
            Bitfield::new(peer_bits, pieces).map_err(|_| PeerError::StorageTooSmall(needed))?;
        let mut out = heapless::Deque::new();
        let _ = out.push_back(Out::OurBitfield);
        Ok(PeerSession {
            key,
            cfg,
            fast,
            peer_has,
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            snubbed: false,
            first_message: true,
            peer_reqq: None,
            last_recv: now,
            last_send: now,
            last_block: now,
            out,
            events: heapless::Deque::new(),
        })
    }

    /// The shell's name for this peer.
    pub fn key(&self) -> PeerKey {
        self.key
    }

    /// The peer's pieces.
    pub fn peer_has(&self) -> &Bitfield<S> {
        &self.peer_has
    }

    /// Ends the session, handing the bitfield storage back (e.g. to reuse
    /// it for the next connection).
    pub fn into_storage(self) -> S {
        self.peer_has.into_storage()
    }

    /// We are choking the peer.
    pub fn am_choking(&self) -> bool {
        self.am_choking
    }

    /// We are interested in the peer.
    pub fn am_interested(&self) -> bool {
        self.am_interested
    }

    /// The peer is choking us.
    pub fn peer_choking(&self) -> bool {
        self.peer_choking
    }

    /// The peer is interested in us.
    pub fn peer_interested(&self) -> bool {
        self.peer_interested
    }

    /// The peer is snubbing us (no block for the snub timeout).
    pub fn is_snubbed(&self) -> bool {
        self.snubbed
    }

    /// Our pipeline (requests in flight to this peer), e.g. lowered under a
    /// download rate limit so requests do not wait past their timeout; at
    /// least 1. The peer's `reqq` still bounds it.
    pub fn set_pipeline(&mut self, n: usize) {
        self.cfg.pipeline = n.max(1);
    }

    /// BEP 10 `reqq` from the peer's extension handshake: bounds our pipeline.
    pub fn set_peer_reqq(&mut self, reqq: u32) {
        self.peer_reqq = Some(reqq as usize);
    }

    fn push(&mut self, m: Out) -> Result<(), PeerError> {
        self.out.push_back(m).map_err(|_| PeerError::QueueFull)
    }

    fn event(&mut self, e: Event) {
        // A full event queue drops the oldest: events are hints, and the
        // getters above always tell the current state.
        if self.events.is_full() {
            self.events.pop_front();
        }
        let _ = self.events.push_back(e);
    }

    /// Chokes or unchokes the peer (the shell's choking algorithm decides).
    pub fn set_choking(&mut self, choke: bool) -> Result<(), PeerError> {
        if choke != self.am_choking {
            self.am_choking = choke;
            self.push(if choke { Out::Choke } else { Out::Unchoke })?;
        }
        Ok(())
    }

    /// We completed piece `index`: tell the peer, and re-check interest.
    pub fn send_have<M: PickerStorage>(
        &mut self,
        picker: &Picker<M>,
        index: u32,
    ) -> Result<(), PeerError> {
        self.push(Out::Have(index))?;
        self.update_interest(picker)
    }

    /// Re-checks our interest (the pieces we want changed, e.g. a file's
    /// priority): `interested` / `not interested` is queued if it flips.
    pub fn recheck_interest<M: PickerStorage>(
        &mut self,
        picker: &Picker<M>,
    ) -> Result<(), PeerError> {
        self.update_interest(picker)
    }

    /// Refuses a request the shell will not serve, e.g. one queued before we
    /// choked the peer. BEP 6: with the fast extension a choke no longer
    /// discards requests, so each is rejected; without it this is a no-op
    /// (BEP 3: the choke itself discards them).
    pub fn reject(&mut self, req: BlockRequest) -> Result<(), PeerError> {
        if self.fast {
            self.push(Out::Reject(req))?;
        }
        Ok(())
    }

    /// Cancel a request (end-game: another peer delivered the block).
    pub fn cancel(&mut self, req: BlockRequest) -> Result<(), PeerError> {
        self.push(Out::Cancel(req))
    }

    fn update_interest<M: PickerStorage>(&mut self, picker: &Picker<M>) -> Result<(), PeerError> {
        let want = self.peer_has.iter_set().any(|i| picker.needs(i));
        if want != self.am_interested {
            self.am_interested = want;
            self.push(if want {
                Out::Interested
            } else {
                Out::NotInterested
            })?;
        }
        Ok(())
    }

    fn need_fast(&self, id: u8) -> Result<(), PeerError> {
        if self.fast {
            Ok(())
        } else {
            Err(PeerError::FastNotNegotiated(id))
        }
    }

    /// Handles one message from the peer.
    pub fn handle_message<'a, M: PickerStorage>(
        &mut self,
        now: Instant,
        picker: &mut Picker<M>,
        msg: Message<'a>,
    ) -> Result<Handled<'a>, PeerError> {
        self.last_recv = now;
        // BEP 10: the extension handshake is sent "immediately after the
        // standard bittorrent handshake", so it may come before the bitfield
        // (libtorrent and aria2 do this): it does not end the first-message
        // window of BEP 3 / BEP 6.
        let first = if matches!(msg, Message::Extended { .. }) {
            self.first_message
        } else {
            core::mem::replace(&mut self.first_message, false)
        };
        let pieces = self.peer_has.len();
        match msg {
            Message::KeepAlive => {}
            Message::Choke => {
                if !self.peer_choking {
                    self.peer_choking = true;
                    // BEP 6: with the fast extension, a choke no longer
                    // discards requests; the peer rejects them one by one.
                    if !self.fast {
                        picker.peer_choked(self.key);
                    }
                    self.event(Event::Choked);
                }
            }
            Message::Unchoke => {
                if self.peer_choking {
                    self.peer_choking = false;
                    self.last_block = now;
                    self.event(Event::Unchoked);
                }
            }
            Message::Interested => {
                if !self.peer_interested {
                    self.peer_interested = true;
                    self.event(Event::Interested);
                }
            }
            Message::NotInterested => {
                if self.peer_interested {
                    self.peer_interested = false;
                    self.event(Event::NotInterested);
                }
            }
            Message::Have { piece } => {
                if piece >= pieces {
                    return Err(PeerError::PieceOutOfRange(piece));
                }
                if !self.peer_has.get(piece) {
                    let _ = self.peer_has.set(piece);
                    picker.peer_has(piece);
                    self.event(Event::Have(piece));
                    if !self.am_interested && picker.needs(piece) {
                        self.am_interested = true;
                        self.push(Out::Interested)?;
                    }
                }
            }
            // BEP 3: "bitfield is only ever sent as the first message". A
            // later one (aria2 sends one in place of many haves) or a later
            // BEP 6 have all / have none is taken as an update of what the
            // peer has, as libtorrent does: the old pieces leave the
            // swarm's availability and the new ones enter it.
            Message::Bitfield(bits) => {
                check_bitfield(bits, pieces).map_err(PeerError::Wire)?;
                if !first {
                    picker.peer_forgets(&self.peer_has);
                }
                self.peer_has
                    .copy_from_message(bits)
                    .map_err(PeerError::Wire)?;
                picker.peer_has_bitfield(&self.peer_has);
                self.update_interest(picker)?;
            }
            Message::HaveAll | Message::HaveNone => {
                self.need_fast(if msg == Message::HaveAll { 0x0E } else { 0x0F })?;
                if !first {
                    picker.peer_forgets(&self.peer_has);
                }
                if msg == Message::HaveAll {
                    self.peer_has.set_all();
                } else {
                    self.peer_has.clear_all();
                }
                picker.peer_has_bitfield(&self.peer_has);
                self.update_interest(picker)?;
            }
            Message::Request {
                index,
                begin,
                length,
            } => {
                let req = BlockRequest {
                    index,
                    begin,
                    length,
                };
                if length > self.cfg.max_request_len {
                    return Err(PeerError::RequestTooLarge(length));
                }
                let valid = picker.have().get(index)
                    && picker
                        .geometry()
                        .piece_size(index)
                        .is_some_and(|s| u64::from(begin) + u64::from(length) <= u64::from(s));
                if self.am_choking || !valid {
                    // BEP 6: reject what we will not serve; BEP 3: ignore.
                    if self.fast {
                        self.push(Out::Reject(req))?;
                    }
                    return Ok(Handled::Nothing);
                }
                return Ok(Handled::Request(req));
            }
            Message::Piece {
                index,
                begin,
                block,
            } => {
                let request = BlockRequest {
                    index,
                    begin,
                    length: block.len() as u32,
                };
                // Unrequested or malformed blocks are dropped, not fatal:
                // they may answer a request that already timed out.
                let Ok(received) = picker.on_block(self.key, index, begin, block) else {
                    return Ok(Handled::Nothing);
                };
                self.last_block = now;
                self.snubbed = false;
                return Ok(Handled::Block {
                    request,
                    data: block,
                    received,
                });
            }
            Message::Cancel {
                index,
                begin,
                length,
            } => {
                return Ok(Handled::Cancel(BlockRequest {
                    index,
                    begin,
                    length,
                }))
            }
            Message::Port(p) => return Ok(Handled::Port(p)),
            // BEP 6: hints we do not act on (yet).
            Message::SuggestPiece { .. } => self.need_fast(0x0D)?,
            Message::AllowedFast { .. } => self.need_fast(0x11)?,
            Message::RejectRequest {
                index,
                begin,
                length,
            } => {
                self.need_fast(0x10)?;
                picker.on_reject(
                    self.key,
                    BlockRequest {
                        index,
                        begin,
                        length,
                    },
                );
            }
            Message::Extended { id, payload } => return Ok(Handled::Extended { id, payload }),
        }
        Ok(Handled::Nothing)
    }

    fn pipeline(&self) -> usize {
        if self.snubbed {
            return 1;
        }
        match self.peer_reqq {
            Some(q) => self.cfg.pipeline.min(q.max(1)),
            None => self.cfg.pipeline,
        }
    }

    /// Writes the next messages into `buf` (whole messages only) and returns
    /// the bytes written; 0 when there is nothing to send. Queued control
    /// messages go first, then new requests from the picker, then a
    /// keep-alive if we have been silent for the keep-alive interval.
    pub fn poll_transmit<M: PickerStorage>(
        &mut self,
        now: Instant,
        picker: &mut Picker<M>,
        buf: &mut [u8],
    ) -> usize {
        let mut n = 0usize;
        while let Some(&m) = self.out.front() {
            let have = picker.have();
            let msg = match m {
                Out::OurBitfield => match (self.fast, have.count()) {
                    (true, 0) => Message::HaveNone,
                    (true, c) if c == have.len() => Message::HaveAll,
                    (false, 0) => {
                        // BEP 3: a client with no pieces may skip the bitfield.
                        self.out.pop_front();
                        continue;
                    }
                    _ => Message::Bitfield(have.as_bytes()),
                },
                Out::Choke => Message::Choke,
                Out::Unchoke => Message::Unchoke,
                Out::Interested => Message::Interested,
                Out::NotInterested => Message::NotInterested,
                Out::Have(piece) => Message::Have { piece },
                Out::Cancel(r) => Message::Cancel {
                    index: r.index,
                    begin: r.begin,
                    length: r.length,
                },
                Out::Reject(r) => Message::RejectRequest {
                    index: r.index,
                    begin: r.begin,
                    length: r.length,
                },
            };
            match msg.encode(buf.get_mut(n..).unwrap_or_default()) {
                Ok(k) => {
                    n += k;
                    self.out.pop_front();
                }
                Err(_) => break,
            }
        }
        // Requests only once control messages are out (interested first).
        if self.out.is_empty() && self.am_interested && !self.peer_choking {
            // Counted once: each pick below adds one (the picker checks its
            // own bound too).
            let mut in_flight = picker.in_flight(self.key);
            while in_flight < self.pipeline() {
                let room = buf.get_mut(n..).unwrap_or_default();
                if room.len() < 17 {
                    break;
                }
                let Some(pick) = picker.pick(now, self.key, &self.peer_has) else {
                    break;
                };
                let r = pick.request;
                let m = Message::Request {
                    index: r.index,
                    begin: r.begin,
                    length: r.length,
                };
                n += m.encode(room).unwrap_or(0);
                in_flight += 1;
            }
        }
        if n == 0 && now.saturating_duration_since(self.last_send).millis() >= self.cfg.keepalive_ms
        {
            n = Message::KeepAlive.encode(buf).unwrap_or(0);
        }
        if n > 0 {
            self.last_send = now;
        }
        n
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout<M: PickerStorage>(&self, picker: &Picker<M>) -> Instant {
        let mut t = self
            .last_send
            .add_millis(self.cfg.keepalive_ms)
            .min(self.last_recv.add_millis(self.cfg.inactivity_timeout_ms));
        if !self.snubbed && picker.in_flight(self.key) > 0 {
            t = t.min(self.last_block.add_millis(self.cfg.snub_timeout_ms));
        }
        t
    }

    /// Time passed: detects inactivity (an error: close the connection)
    /// and snubbing. Keep-alives come out of the next `poll_transmit`.
    pub fn handle_timeout<M: PickerStorage>(
        &mut self,
        now: Instant,
        picker: &Picker<M>,
    ) -> Result<(), PeerError> {
        if now.saturating_duration_since(self.last_recv).millis() >= self.cfg.inactivity_timeout_ms
        {
            return Err(PeerError::Inactive);
        }
        if !self.snubbed
            && picker.in_flight(self.key) > 0
            && now.saturating_duration_since(self.last_block).millis() >= self.cfg.snub_timeout_ms
        {
            self.snubbed = true;
            self.event(Event::Snubbed);
        }
        Ok(())
    }

    /// The next state change, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests;
