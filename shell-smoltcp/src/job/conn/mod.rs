//! One peer connection of the job: a TCP socket slot and the bytes around
//! the core's [`PeerSession`] — our BEP 3 handshake (with the BEP 6 and
//! BEP 10 bits), the slot's life (open, step, end), and in `io` the
//! socket reads (whole frames, in a small buffer or the shared frame
//! buffer) and writes (what [`Torrent::poll_transmit`] has for the session,
//! then the blocks we upload); `frames` acts on each frame read. Every
//! protocol decision is the [`Torrent`]'s.
//!
//! A slot is reused connection after connection: its socket
//! ([`TcpStream::reconnect`], [`TcpStream::relisten`]) and its peer
//! bitfield ([`PeerSession::into_storage`]).
//!
//! # Limits
//! - a message longer than [`SMALL_LEN`] is assembled in the one shared
//!   [`FRAME_BUF_LEN`] buffer, one connection at a time (the others wait);
//! - [`UPLOAD_QUEUE`] requests from a peer waiting to be served: one more
//!   is rejected (BEP 6) or dropped (BEP 3, the peer asks again);
//! - a connection must finish its handshake within
//!   [`HANDSHAKE_TIMEOUT_MS`] of being established (or, outbound, of the
//!   connect).

mod frames;
mod io;

use core::fmt::{self, Write};

use ourtorrent_core::peer::{PeerError, PeerSession};
use ourtorrent_core::pieces::{BlockRequest, SliceStorage};
use ourtorrent_core::time::Instant;
use ourtorrent_core::torrent::{Torrent, TorrentError};
use ourtorrent_core::wire::{
    ExtensionError, Framer, Handshake, Reserved, WireError, HANDSHAKE_LEN,
};
use smoltcp::phy::Device;

use super::store::{Store, StoreError};
use super::{Report, TorrentConfig, FRAME_BUF_LEN, MAX_PIECES, PIPELINE};
use crate::error::Error;
use crate::stack::{Clock, Stack};
use crate::tcp::TcpStream;

/// The job's torrent: its storage is the job's stack arrays.
pub(super) type JobTorrent<'s> = Torrent<SliceStorage<'s>>;

/// A connection's own buffer: the handshake, and every message but piece
/// and the extension handshake (a bitfield of [`MAX_PIECES`] is 13 bytes).
pub const SMALL_LEN: usize = HANDSHAKE_LEN + 12;
/// Control messages and requests waiting to be written to the socket
/// (also holds our handshake and extension handshake at the start).
pub(super) const OUT_LEN: usize = 24 * PIPELINE;
/// Requests from a peer waiting to be served.
pub const UPLOAD_QUEUE: usize = 16;
/// How long a connection may take to open and handshake.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 3_000;
/// Request timeout and snub timeout: short, the whole job lasts seconds.
pub const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Our BEP 10 `v`.
const CLIENT_NAME: &[u8] = b"OurTorrent firmware";

/// Our handshake's reserved bits: BEP 6 (fast) and BEP 10 (extensions).
pub fn our_reserved() -> Reserved {
    Reserved::default()
        .with_fast(true)
        .with_extension_protocol(true)
}

/// What the connections share besides the torrent.
pub(super) struct Shared<'c, 'b> {
    pub cfg: &'c TorrentConfig,
    pub peer_id: ourtorrent_core::id::PeerId,
    /// The torrent's data, on flash.
    pub store: Store<'b>,
    /// Where long messages are assembled.
    pub frame: &'b mut [u8; FRAME_BUF_LEN],
    /// The connection assembling a message in `frame`.
    pub frame_owner: Option<usize>,
    pub report: Report,
}

/// Where a slot stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No connection (the socket, if any, is free).
    Idle,
    /// Waiting for an inbound connection on the peer port.
    Listening,
    /// TCP opening, or the peer's handshake not yet received.
    Opening,
    /// Handshakes done; the session runs.
    Running,
}

/// Why a connection ended (for the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The socket failed.
    Net(Error),
    /// The peer closed its side and everything owed to it was sent.
    Eof,
    /// A message that does not parse.
    Wire(WireError),
    /// The session refused the peer's behaviour.
    Peer(PeerError),
    /// The torrent refused the peer (its table is full) or a piece.
    Torrent(TorrentError),
    /// A malformed BEP 10 extension handshake.
    Extension(ExtensionError),
    /// The peer's handshake names another torrent.
    WrongTorrent,
    /// The peer's handshake carries our own peer id.
    OurSelf,
    /// The torrent banned the peer (it sent a bad piece).
    Banned,
    /// No handshake within [`HANDSHAKE_TIMEOUT_MS`].
    HandshakeTimeout,
    /// A block to upload could not be read (outside the torrent, or the
    /// flash failed).
    Flash(StoreError),
    /// Both sides have every piece.
    BothSeeds,
    /// The job is over (a listener, or a handshake not finished).
    JobOver,
    /// The slot's peer bitfield is missing (a session kept it).
    NoBitfield,
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Closed::Net(e) => write!(f, "{e}"),
            Closed::Eof => f.write_str("closed by the peer"),
            Closed::Wire(e) => write!(f, "{e}"),
            Closed::Peer(e) => write!(f, "{e}"),
            Closed::Torrent(e) => write!(f, "{e}"),
            Closed::Extension(e) => write!(f, "extension handshake: {e}"),
            Closed::WrongTorrent => f.write_str("handshake for another torrent"),
            Closed::OurSelf => f.write_str("connected to ourselves"),
            Closed::Banned => f.write_str("sent a bad piece"),
            Closed::HandshakeTimeout => f.write_str("handshake timed out"),
            Closed::Flash(e) => write!(f, "upload: {e}"),
            Closed::BothSeeds => f.write_str("both sides are seeds"),
            Closed::JobOver => f.write_str("the job is over"),
            Closed::NoBitfield => f.write_str("no peer bitfield storage left in the slot"),
        }
    }
}

/// Reading one message: `have` of `need` bytes, in `small` or the shared
/// frame buffer.
struct Rx {
    small: [u8; SMALL_LEN],
    have: usize,
    need: usize,
    /// `need` is the whole message (not just its length prefix).
    body: bool,
    /// The message is assembled in the shared frame buffer.
    big: bool,
}

/// One connection slot.
pub(super) struct Conn<'s> {
    pub stream: Option<TcpStream>,
    pub phase: Phase,
    /// The peer's port at the gateway (0: inbound).
    pub port: u16,
    outbound: bool,
    opened_at: u64,
    bits: Option<&'s mut [u8]>,
    framer: Framer,
    pub session: Option<PeerSession<&'s mut [u8]>>,
    rx: Rx,
    out: [u8; OUT_LEN],
    out_len: usize,
    out_at: usize,
    uploads: heapless::Vec<BlockRequest, UPLOAD_QUEUE>,
    /// Bytes of the front upload (header + block) sent.
    upload_at: usize,
    /// Payload bytes sent on this connection.
    pub uploaded: u64,
    /// Bytes of each piece sent on this connection.
    served: [u32; MAX_PIECES],
    /// The remote closed its side.
    eof: bool,
    /// Our handshake is queued or sent.
    handshake_sent: bool,
}

impl<'s> Conn<'s> {
    /// A connection slot with its peer bitfield storage.
    pub fn new(bits: Option<&'s mut [u8]>) -> Self {
        Conn {
            stream: None,
            phase: Phase::Idle,
            port: 0,
            outbound: true,
            opened_at: 0,
            bits,
            framer: Framer::with_handshake(FRAME_BUF_LEN),
            session: None,
            rx: Rx {
                small: [0; SMALL_LEN],
                have: 0,
                need: 0,
                body: false,
                big: false,
            },
            out: [0; OUT_LEN],
            out_len: 0,
            out_at: 0,
            uploads: heapless::Vec::new(),
            upload_at: 0,
            uploaded: 0,
            served: [0; MAX_PIECES],
            eof: false,
            handshake_sent: false,
        }
    }

    /// A new connection on this slot (its socket is connecting to `port`,
    /// or listening if `port` is 0).
    pub fn start(&mut self, port: u16, now: u64) {
        self.phase = if port == 0 {
            Phase::Listening
        } else {
            Phase::Opening
        };
        self.port = port;
        self.outbound = port != 0;
        self.opened_at = now;
        self.framer = Framer::with_handshake(FRAME_BUF_LEN);
        (self.rx.have, self.rx.need, self.rx.body, self.rx.big) = (0, 0, false, false);
        (self.out_len, self.out_at) = (0, 0);
        self.uploads.clear();
        (self.upload_at, self.uploaded) = (0, 0);
        self.served = [0; MAX_PIECES];
        self.eof = false;
        self.handshake_sent = false;
    }

    /// Every piece was sent in full on this connection.
    pub fn sent_every_piece(&self, torrent: &JobTorrent<'_>) -> bool {
        let geo = torrent.picker().geometry();
        (0..geo.piece_count()).all(|i| {
            self.served.get(i as usize).copied().unwrap_or(0)
                >= geo.piece_size(i).unwrap_or(u32::MAX)
        })
    }

    /// Nothing is left to send (queued messages and uploads).
    pub fn drained(&self) -> bool {
        self.out_at >= self.out_len && self.uploads.is_empty()
    }

    /// Ends the connection: a reset (`abort`) or a FIN after what is
    /// queued; the torrent forgets the peer; the slot is idle again.
    pub fn end<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        now: u64,
        torrent: &mut JobTorrent<'_>,
        shared: &mut Shared<'_, '_>,
        me: usize,
        abort: bool,
    ) {
        if let Some(s) = self.stream.as_mut() {
            if abort {
                s.abort(stack, now);
            } else {
                s.close(stack, now);
            }
        }
        if let Some(session) = self.session.take() {
            torrent.remove_peer(Instant::from_millis(now), &session);
            self.bits = Some(session.into_storage());
        }
        if shared.frame_owner == Some(me) {
            shared.frame_owner = None;
        }
        self.phase = Phase::Idle;
    }

    /// One round: open, read and handle what arrived, run the session's
    /// timer when due, write what is owed.
    pub fn step<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        now: u64,
        torrent: &mut JobTorrent<'_>,
        shared: &mut Shared<'_, '_>,
        me: usize,
        log: &mut impl Write,
    ) -> Result<(), Closed> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        match self.phase {
            Phase::Idle => return Ok(()),
            Phase::Listening => match stream.poll_established(stack, now) {
                Ok(()) => {
                    // The handshake deadline runs from the accept.
                    self.phase = Phase::Opening;
                    self.opened_at = now;
                }
                Err(nb::Error::WouldBlock) => return Ok(()),
                Err(nb::Error::Other(e)) => return Err(Closed::Net(e)),
            },
            Phase::Opening => {
                if now.saturating_sub(self.opened_at) > HANDSHAKE_TIMEOUT_MS {
                    return Err(Closed::HandshakeTimeout);
                }
                match stream.poll_established(stack, now) {
                    Ok(()) => {}
                    Err(nb::Error::WouldBlock) => return Ok(()),
                    Err(nb::Error::Other(e)) => return Err(Closed::Net(e)),
                }
                if self.outbound && !self.handshake_sent {
                    self.queue_handshake(shared)?;
                }
            }
            Phase::Running => {}
        }
        // Read and handle every whole message that is in, unless the
        // torrent banned the peer (for a piece verified here or on
        // another connection).
        for _ in 0..64 {
            if self
                .session
                .as_ref()
                .is_some_and(|s| torrent.should_close(s.key()))
            {
                return Err(Closed::Banned);
            }
            match self.read_frame(stack, now, shared, me) {
                Ok(()) => self.handle_frame(now, torrent, shared, me, log)?,
                Err(nb::Error::WouldBlock) => break,
                Err(nb::Error::Other(e)) => return Err(e),
            }
        }
        if self
            .session
            .as_ref()
            .is_some_and(|s| torrent.should_close(s.key()))
        {
            return Err(Closed::Banned);
        }
        if let Some(session) = self.session.as_mut() {
            if now >= session.poll_timeout(torrent.picker()).millis() {
                session
                    .handle_timeout(Instant::from_millis(now), torrent.picker())
                    .map_err(Closed::Peer)?;
            }
            // Events are hints; the torrent reads the session's state.
            while session.poll_event().is_some() {}
        }
        self.write(stack, now, torrent, shared)?;
        if self.eof && self.drained() {
            return Err(Closed::Eof);
        }
        Ok(())
    }

    /// Queues our handshake, and after it our BEP 10 extension handshake
    /// if we advertise the extension protocol.
    fn queue_handshake(&mut self, shared: &Shared<'_, '_>) -> Result<(), Closed> {
        let hs = Handshake {
            reserved: our_reserved(),
            info_hash: shared.cfg.info_hash,
            peer_id: shared.peer_id,
        };
        let n = hs.encode(&mut self.out).map_err(Closed::Wire)?;
        (self.out_at, self.out_len) = (0, n);
        self.handshake_sent = true;
        Ok(())
    }
}
