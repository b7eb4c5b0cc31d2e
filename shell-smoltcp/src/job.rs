//! The BitTorrent job of the QEMU firmware, generic over the device and the
//! clock like the rest of the driver: announce to a BEP 15 tracker at the
//! gateway, download a small torrent into RAM from the peers it returns,
//! verify every piece, announce `completed`, then seed to a host leecher.
//!
//! Everything protocol-shaped is the core's: the BEP 15 client session
//! ([`Client`]), the peer-wire [`Framer`] and [`Handshake`], the
//! [`PeerSession`] per connection and the shared [`Picker`], which hashes
//! pieces as blocks arrive and verifies them against the piece hashes. This
//! module only moves bytes between them and the smoltcp sockets, and stores
//! blocks.
//!
//! # Limits (each refused up front by [`TorrentConfig::from_args`])
//! - [`MAX_TORRENT_LEN`] bytes of data, held in one caller buffer;
//! - [`MAX_PIECES`] pieces, of at most [`MAX_PIECE_LEN`] bytes;
//! - [`MAX_PEERS`] connections at once (each slot keeps one peer bitfield,
//!   reused connection after connection), [`MAX_PEER_ATTEMPTS`] tracker
//!   peers kept to try (a peer that fails or sends a bad piece frees its
//!   connection for the next one);
//! - blocks of [`BLOCK_LEN`] (16 KiB), at most [`PIPELINE`] requests in
//!   flight per peer.
//!
//! # Bad data
//! A piece whose SHA-1 differs from its hash is never kept: the picker
//! resets it, every peer that sent a block of it is disconnected and not
//! tried again, and the piece is requested again from the remaining peers.
//! With no peer left the job fails ([`JobError::NoPeers`]).
//!
//! # QEMU's user-mode network
//! Peers on the host announce themselves as `127.0.0.1:PORT`; the guest
//! reaches the host only as `10.0.2.2`, so a loopback (or `10.0.2.2`) peer
//! address is mapped to `10.0.2.2:PORT`. Any other address is skipped.
//! A peer on our own announced port is this node (opentracker lists the
//! announcing peer too) and is skipped.

use core::fmt::{self, Write};
use core::net::{IpAddr, Ipv4Addr};

use ourtorrent_core::id::{InfoHash, PeerId};
use ourtorrent_core::peer::{Event as PeerEvent, Handled, PeerConfig, PeerError, PeerSession};
use ourtorrent_core::pieces::{
    Availability, Bitfield, BlockRequest, BlockSlot, Geometry, PeerKey, Picker, PickerConfig,
    PickerParts, PiecesError, SliceStorage, Slot, Verdict, XorShift32,
};
use ourtorrent_core::time::Instant;
use ourtorrent_core::tracker::udp::client::{
    AnnounceParams, AnnounceResult, Client, ClientConfig, Event as TrackerEvent, TRANSMIT_BUF_LEN,
};
use ourtorrent_core::tracker::AnnounceEvent;
use ourtorrent_core::wire::{
    piece_header, Frame, Framer, Handshake, Reserved, Status, HANDSHAKE_LEN, LEN_PREFIX,
    PIECE_HEADER_LEN,
};
use smoltcp::phy::Device;

pub use ourtorrent_core::wire::BLOCK_LEN;

use crate::args::Args;
use crate::config::{ConfigError, Remote, GATEWAY, PEER_PORT};
use crate::error::Error;
use crate::stack::{Clock, Stack};
use crate::tcp::{TcpBuffers, TcpStream};
use crate::udp::{UdpBuffers, UdpSocket};

/// Largest torrent: its data is held in RAM ([`JobBuffers::data`]).
pub const MAX_TORRENT_LEN: usize = 64 * 1024;
/// Most pieces.
pub const MAX_PIECES: usize = 64;
/// Longest piece (4 blocks).
pub const MAX_PIECE_LEN: u32 = 64 * 1024;
/// Blocks of the longest piece.
pub const MAX_BLOCKS_PER_PIECE: usize = (MAX_PIECE_LEN / BLOCK_LEN) as usize;
/// Peer connections open at once (each needs a TCP socket).
pub const MAX_PEERS: usize = 2;
/// Peers tried in all (download and seeding).
pub const MAX_PEER_ATTEMPTS: usize = 8;
/// Requests in flight to one peer.
pub const PIPELINE: usize = 8;
/// The one buffer a whole peer-wire message is assembled in when it does
/// not fit a connection's small buffer: a 16 KiB block and its header.
pub const FRAME_BUF_LEN: usize = BLOCK_LEN as usize + PIECE_HEADER_LEN;
/// Peers asked of the tracker (the reply must fit the UDP buffer).
pub const NUM_WANT: i32 = 16;

/// Pieces in progress at once in the picker.
const IN_PROGRESS: usize = 4;
/// A connection's own buffer: the handshake, and every message but piece
/// (a bitfield of [`MAX_PIECES`] is 13 bytes).
const SMALL_LEN: usize = HANDSHAKE_LEN + 12;
/// Control messages and requests waiting to be written to the socket.
const OUT_LEN: usize = 24 * PIPELINE;
/// Requests from a leecher waiting to be served.
const UPLOAD_QUEUE: usize = 16;
/// Bytes of one peer's bitfield.
const BITS_LEN: usize = MAX_PIECES.div_ceil(8);
/// Request timeout and snub timeout: short, the whole job lasts seconds.
const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// How long a connection may take to open and handshake.
const HANDSHAKE_TIMEOUT_MS: u64 = 3_000;

/// The torrent and the run, checked against the limits.
#[derive(Clone, Debug)]
pub struct TorrentConfig {
    /// The torrent.
    pub info_hash: InfoHash,
    /// Its pieces.
    pub geometry: Geometry,
    /// SHA-1 of each piece (the first `geometry.piece_count()` are used).
    pub hashes: [[u8; 20]; MAX_PIECES],
    /// The BEP 15 tracker.
    pub tracker: Remote,
    /// The port we announce.
    pub announce_port: u16,
    /// How long to seed (0: not at all).
    pub seed_ms: u32,
}

/// Why a configuration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitError {
    /// A key the job needs is missing.
    Missing(&'static str),
    /// Longer than [`MAX_TORRENT_LEN`].
    TorrentTooLong(u64),
    /// A piece longer than [`MAX_PIECE_LEN`].
    PieceTooLong(u32),
    /// More than [`MAX_PIECES`] pieces.
    TooManyPieces(u64),
    /// The number of hashes differs from the number of pieces.
    HashCount {
        /// Pieces of `length` / `piece_len`.
        pieces: u32,
        /// Hashes given.
        hashes: usize,
    },
    /// The tracker address.
    Tracker(ConfigError),
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LimitError::Missing(k) => write!(f, "missing `{k}=`"),
            LimitError::TorrentTooLong(n) => {
                write!(f, "torrent of {n} bytes exceeds {MAX_TORRENT_LEN}")
            }
            LimitError::PieceTooLong(n) => write!(f, "piece of {n} bytes exceeds {MAX_PIECE_LEN}"),
            LimitError::TooManyPieces(n) => write!(f, "{n} pieces exceed {MAX_PIECES}"),
            LimitError::HashCount { pieces, hashes } => {
                write!(f, "{hashes} piece hashes for {pieces} pieces")
            }
            LimitError::Tracker(e) => write!(f, "tracker: {e}"),
        }
    }
}

impl TorrentConfig {
    /// The job's configuration from the command line, or why it is refused.
    pub fn from_args(args: &Args<'_>) -> Result<Self, LimitError> {
        let port = args.tracker_port.ok_or(LimitError::Missing("tracker"))?;
        let tracker = Remote::new(args.host, port).map_err(LimitError::Tracker)?;
        let info_hash = args.info_hash.ok_or(LimitError::Missing("info_hash"))?;
        let length = args.length.ok_or(LimitError::Missing("length"))?;
        let piece_len = args.piece_len.ok_or(LimitError::Missing("piece_len"))?;
        let hex = args.pieces_hex.ok_or(LimitError::Missing("pieces"))?;
        if length > MAX_TORRENT_LEN as u64 {
            return Err(LimitError::TorrentTooLong(length));
        }
        if piece_len > MAX_PIECE_LEN {
            return Err(LimitError::PieceTooLong(piece_len));
        }
        let pieces = length.div_ceil(u64::from(piece_len));
        if pieces > MAX_PIECES as u64 {
            return Err(LimitError::TooManyPieces(pieces));
        }
        // Both are non-zero (args refuses 0), and the count fits.
        let geometry =
            Geometry::new(length, piece_len).map_err(|_| LimitError::TooManyPieces(pieces))?;
        let count = hex.len() / 40;
        if count != geometry.piece_count() as usize {
            return Err(LimitError::HashCount {
                pieces: geometry.piece_count(),
                hashes: count,
            });
        }
        let mut hashes = [[0u8; 20]; MAX_PIECES];
        for (h, digits) in hashes.iter_mut().zip(hex.as_bytes().chunks_exact(40)) {
            // args checked every digit; a 40-digit chunk always decodes.
            *h = InfoHash::from_hex(digits)
                .map_err(|_| LimitError::HashCount {
                    pieces: geometry.piece_count(),
                    hashes: count,
                })?
                .0;
        }
        Ok(TorrentConfig {
            info_hash,
            geometry,
            hashes,
            tracker,
            announce_port: args.announce_port,
            seed_ms: args.seed_ms,
        })
    }
}

/// The static buffers of the job (the firmware places them in `static`s).
pub struct JobBuffers<'a, const UP: usize, const UB: usize, const RX: usize, const TX: usize> {
    /// The tracker's UDP socket.
    pub udp: &'a mut UdpBuffers<UP, UB>,
    /// One TCP socket per peer connection, reused from peer to peer.
    pub tcp: [&'a mut TcpBuffers<RX, TX>; MAX_PEERS],
    /// The torrent's data.
    pub data: &'a mut [u8; MAX_TORRENT_LEN],
    /// Where piece messages are assembled ([`FRAME_BUF_LEN`]).
    pub frame: &'a mut [u8; FRAME_BUF_LEN],
}

/// What the job did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Peers in the tracker's reply.
    pub tracker_peers: usize,
    /// Peers we connected to and handshook with.
    pub peers_used: usize,
    /// Bytes downloaded and verified.
    pub bytes: u64,
    /// Pieces verified.
    pub verified: u32,
    /// Pieces that failed verification (and were fetched again).
    pub rejected: u32,
    /// Milliseconds from the first connection to the last piece.
    pub download_ms: u64,
    /// Bytes uploaded while seeding.
    pub uploaded: u64,
    /// Whether a leecher got every piece while we seeded: it said so with
    /// have messages, or it was sent every block and then hung up (a
    /// finished libtorrent may close before its last haves go out).
    pub leecher_complete: bool,
}

/// Why the job failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobError {
    /// A driver error in this step.
    Net(&'static str, Error),
    /// The tracker answered with an error, or not at all.
    Tracker(&'static str),
    /// The piece bookkeeping refused the torrent's geometry or its storage.
    Pieces(PiecesError),
    /// No usable peer is left and pieces are missing.
    NoPeers {
        /// Pieces verified so far.
        verified: u32,
        /// Pieces rejected so far.
        rejected: u32,
    },
    /// The deadline passed with pieces missing.
    Deadline {
        /// Pieces verified so far.
        verified: u32,
    },
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            JobError::Net(step, e) => write!(f, "{step}: {e}"),
            JobError::Tracker(e) => write!(f, "tracker: {e}"),
            JobError::Pieces(e) => write!(f, "pieces: {e}"),
            JobError::NoPeers { verified, rejected } => write!(
                f,
                "no usable peer left (verified={verified} rejected={rejected})"
            ),
            JobError::Deadline { verified } => {
                write!(f, "deadline passed (verified={verified})")
            }
        }
    }
}

type JobPicker<'s> = Picker<SliceStorage<'s>>;

/// Runs the job: announce, download, verify, announce completed, seed.
/// Progress lines go to `log`. `boot_seed` varies the peer id and transaction
/// ids between boots.
pub fn run<'a, D, C, const UP: usize, const UB: usize, const RX: usize, const TX: usize>(
    stack: &mut Stack<'a, D, C>,
    bufs: JobBuffers<'a, UP, UB, RX, TX>,
    cfg: &TorrentConfig,
    deadline: u64,
    boot_seed: u32,
    log: &mut impl Write,
) -> Result<Report, JobError>
where
    D: Device,
    C: Clock,
{
    let mut rng = XorShift32::new(boot_seed);
    let peer_id = PeerId::generate(|| rng.next_u32());
    let mut report = Report::default();
    let geo = cfg.geometry;
    let total = geo.total_len();

    let udp_port = stack.ephemeral_port();
    let mut udp = UdpSocket::bind(stack, bufs.udp, udp_port, cfg.tracker)
        .map_err(|e| JobError::Net("udp", e))?;
    // Transaction ids from a stream of their own: a copy of `rng` would
    // make the first one equal the tracker `key` drawn next.
    let mut tids = XorShift32::new(rng.next_u32());
    let mut client = Client::new(ClientConfig::default(), move || tids.next_u32());
    let mut params = AnnounceParams {
        info_hash: cfg.info_hash,
        peer_id,
        downloaded: 0,
        left: total,
        uploaded: 0,
        event: AnnounceEvent::Started,
        key: rng.next_u32(),
        num_want: NUM_WANT,
        port: cfg.announce_port,
    };
    let start = stack.now_ms();
    let found = announce(stack, &mut udp, &mut client, params, deadline, log)?;
    let _ = writeln!(
        log,
        "announce: ok event=started peers={} seeders={} leechers={} ms={}",
        found.tracker_peers,
        found.seeders,
        found.leechers,
        stack.now_ms() - start
    );
    report.tracker_peers = found.tracker_peers;
    let (candidates, n_candidates) = (found.candidates, found.n_candidates);

    // Shared piece state.
    let mut have_bits = [0u8; BITS_LEN];
    let mut avail = [0u16; MAX_PIECES];
    let pieces = geo.piece_count();
    let have = Bitfield::new(&mut have_bits[..], pieces).map_err(JobError::Pieces)?;
    let avail = Availability::new(&mut avail[..], pieces).map_err(JobError::Pieces)?;
    let mut slots: [Slot; IN_PROGRESS] = core::array::from_fn(|_| Slot::default());
    let mut blocks: [BlockSlot; IN_PROGRESS * MAX_BLOCKS_PER_PIECE] =
        core::array::from_fn(|_| BlockSlot::default());
    let pcfg = PickerConfig {
        max_in_flight: PIPELINE,
        request_timeout_ms: REQUEST_TIMEOUT_MS,
        ..PickerConfig::default()
    };
    let parts = PickerParts {
        have,
        avail,
        slots: &mut slots[..],
        blocks: &mut blocks[..],
    };
    let mut picker = JobPicker::new(geo, parts, pcfg, rng.next_u32()).map_err(JobError::Pieces)?;
    // One peer bitfield per connection slot, handed back by each session
    // that ends (`PeerSession::into_storage`) for the next one.
    let mut bit_slots = [[0u8; BITS_LEN]; MAX_PEERS];

    let mut ctx = Ctx {
        cfg,
        peer_id,
        data: bufs.data,
        frame: bufs.frame,
        frame_owner: None,
        served: [0; MAX_PIECES],
        report,
    };
    let mut tcp_bufs = bufs.tcp.map(Some);
    let mut bit_slots = bit_slots.iter_mut();
    let mut conns: [Conn<'_>; MAX_PEERS] =
        core::array::from_fn(|_| Conn::new(bit_slots.next().map(|b| &mut b[..])));
    let mut next = 0usize;
    let mut next_key = 0u16;
    let dl_start = stack.now_ms();
    let outcome = stack.block_until(deadline, |stack, now| {
        for (i, conn) in conns.iter_mut().enumerate() {
            if conn.phase == Phase::Idle && !picker.is_complete() {
                let Some(&port) = candidates[..n_candidates].get(next) else {
                    continue;
                };
                next += 1;
                let remote = Remote::gateway(port).map_err(|e| nb::Error::Other(e.into()))?;
                let opened = match conn.stream.as_mut() {
                    Some(s) => s.reconnect(stack, remote),
                    None => match tcp_bufs[i].take() {
                        Some(b) => TcpStream::connect(stack, b, remote).map(|s| {
                            conn.stream = Some(s);
                        }),
                        None => Err(Error::NoSocketSlot),
                    },
                };
                if opened.is_err() {
                    continue;
                }
                conn.start(PeerKey(next_key), port, now, true);
                next_key += 1;
                let _ = writeln!(log, "peer: connecting 10.0.2.2:{port}");
            }
        }
        let mut actions = Actions::default();
        for (i, conn) in conns.iter_mut().enumerate() {
            let before = conn.phase;
            let stepped = conn.step(stack, now, &mut picker, &mut ctx, i as u8, &mut actions);
            if before == Phase::Opening && conn.phase == Phase::Running {
                let _ = writeln!(log, "peer: 10.0.2.2:{} handshake ok", conn.port);
            }
            if let Err(why) = stepped {
                let _ = writeln!(log, "peer: 10.0.2.2:{} closed: {}", conn.port, why);
                conn.reset(stack, now, &mut picker, &mut ctx, i as u8);
            }
        }
        apply(&mut conns, &actions, &picker, log);
        if picker.is_complete() {
            return Ok(());
        }
        if conns.iter().all(|c| c.phase == Phase::Idle) && next >= n_candidates {
            return Err(nb::Error::Other(Error::ConnectionReset));
        }
        Err(nb::Error::WouldBlock)
    });
    let mut report = ctx.report;
    match outcome {
        Ok(()) => {}
        Err(Error::Timeout) => {
            return Err(JobError::Deadline {
                verified: report.verified,
            })
        }
        Err(_) => {
            return Err(JobError::NoPeers {
                verified: report.verified,
                rejected: report.rejected,
            })
        }
    }
    let now = stack.now_ms();
    report.download_ms = now - dl_start;
    report.bytes = total;
    for (i, conn) in conns.iter_mut().enumerate() {
        if conn.phase != Phase::Idle {
            conn.reset(stack, now, &mut picker, &mut ctx, i as u8);
        }
    }
    ctx.report = report;
    let ms = report.download_ms.max(1);
    let _ = writeln!(
        log,
        "download: ok bytes={} pieces={} verified={} rejected={} peers={} ms={} kib_per_s={}",
        total,
        pieces,
        report.verified,
        report.rejected,
        report.peers_used,
        report.download_ms,
        total * 1000 / 1024 / ms
    );

    params.event = AnnounceEvent::Completed;
    params.downloaded = total;
    params.left = 0;
    let start = stack.now_ms();
    announce(stack, &mut udp, &mut client, params, deadline, log)?;
    let _ = writeln!(
        log,
        "announce: ok event=completed ms={}",
        stack.now_ms() - start
    );

    if cfg.seed_ms > 0 {
        let seed_deadline = deadline.min(stack.now_ms() + u64::from(cfg.seed_ms));
        let [first, ..] = &mut conns;
        seed(
            stack,
            first,
            tcp_bufs[0].take(),
            &mut picker,
            &mut ctx,
            seed_deadline,
            log,
        )?;
    }
    Ok(ctx.report)
}

/// What an announce found: the peers worth trying (their ports at the
/// gateway), and the tracker's counts.
struct Found {
    tracker_peers: usize,
    seeders: u32,
    leechers: u32,
    candidates: [u16; MAX_PEER_ATTEMPTS],
    n_candidates: usize,
}

/// One announce through the core's client session, to the end. Kept out
/// of line: the core's reply holds up to 128 peers (about 4 KiB), which
/// need not stay on the stack during the download.
#[inline(never)]
fn announce<D: Device, C: Clock, T: ourtorrent_core::tracker::udp::client::TransactionIds>(
    stack: &mut Stack<'_, D, C>,
    udp: &mut UdpSocket,
    client: &mut Client<T>,
    params: AnnounceParams,
    deadline: u64,
    log: &mut impl Write,
) -> Result<Found, JobError> {
    let result = announce_exchange(stack, udp, client, params, deadline)?;
    let mut found = Found {
        tracker_peers: result.peers.len(),
        seeders: result.seeders,
        leechers: result.leechers,
        candidates: [0; MAX_PEER_ATTEMPTS],
        n_candidates: 0,
    };
    for p in result.peers.iter() {
        let reachable = match p.ip() {
            IpAddr::V4(a) => a.is_loopback() || a == Ipv4Addr::from(GATEWAY.octets()),
            IpAddr::V6(a) => a.is_loopback(),
        };
        let port = p.port();
        if !reachable || port == params.port || port == 0 {
            let _ = writeln!(log, "peer: skipped {p}");
            continue;
        }
        let n = found.n_candidates;
        if n < MAX_PEER_ATTEMPTS && !found.candidates[..n].contains(&port) {
            found.candidates[n] = port;
            found.n_candidates += 1;
        }
    }
    Ok(found)
}

fn announce_exchange<
    D: Device,
    C: Clock,
    T: ourtorrent_core::tracker::udp::client::TransactionIds,
>(
    stack: &mut Stack<'_, D, C>,
    udp: &mut UdpSocket,
    client: &mut Client<T>,
    params: AnnounceParams,
    deadline: u64,
) -> Result<AnnounceResult, JobError> {
    let now = Instant::from_millis(stack.now_ms());
    client
        .announce(now, params)
        .map_err(|_| JobError::Tracker("busy"))?;
    let mut tx = [0u8; TRANSMIT_BUF_LEN];
    let mut rx = [0u8; 1024];
    let event = stack
        .block_until(deadline, |stack, now_ms| {
            let now = Instant::from_millis(now_ms);
            while let Some(n) = client.poll_transmit(now, &mut tx) {
                udp.poll_send(stack, now_ms, tx.get(..n).unwrap_or_default())?;
            }
            match udp.poll_recv(stack, now_ms, &mut rx) {
                Ok(n) => {
                    // A stray or stale datagram is ignored by the session.
                    let _ = client.handle_datagram(now, rx.get(..n).unwrap_or_default());
                }
                Err(nb::Error::WouldBlock) => {}
                Err(e) => return Err(e),
            }
            client.poll_event().ok_or(nb::Error::WouldBlock)
        })
        .map_err(|e| match e {
            Error::Timeout => JobError::Tracker("no answer before the deadline"),
            e => JobError::Net("announce", e),
        })?;
    match event {
        TrackerEvent::Announced(r) => Ok(r),
        TrackerEvent::TrackerError(_) => Err(JobError::Tracker("error reply")),
        _ => Err(JobError::Tracker("failed")),
    }
}

/// State shared by the connections.
struct Ctx<'c, 'b> {
    cfg: &'c TorrentConfig,
    peer_id: PeerId,
    data: &'b mut [u8; MAX_TORRENT_LEN],
    frame: &'b mut [u8; FRAME_BUF_LEN],
    /// The connection assembling a message in `frame`.
    frame_owner: Option<u8>,
    /// Bytes of each piece uploaded to the current leecher.
    served: [u32; MAX_PIECES],
    report: Report,
}

/// What one connection's input asks of the others.
#[derive(Default)]
struct Actions {
    /// Cancels to send (end-game duplicates that lost the race).
    cancels: heapless::Vec<(PeerKey, BlockRequest), 8>,
    /// Pieces that passed: send have to every peer.
    haves: heapless::Vec<u32, 8>,
    /// Peers that sent a bad piece: disconnect them.
    bans: heapless::Vec<PeerKey, 8>,
    /// Pieces that failed verification (for the log).
    rejected: heapless::Vec<u32, 4>,
}

fn apply(
    conns: &mut [Conn<'_>; MAX_PEERS],
    actions: &Actions,
    picker: &JobPicker<'_>,
    log: &mut impl Write,
) {
    for p in actions.rejected.iter() {
        let _ = writeln!(log, "piece: {p} rejected: SHA-1 mismatch, data discarded");
    }
    for conn in conns.iter_mut() {
        let Some(s) = conn.session.as_mut() else {
            continue;
        };
        let key = s.key();
        let mut ok = true;
        for &(k, r) in actions.cancels.iter() {
            if k == key {
                ok &= s.cancel(r).is_ok();
            }
        }
        for &h in actions.haves.iter() {
            ok &= s.send_have(picker, h).is_ok();
        }
        if actions.bans.contains(&key) {
            let _ = writeln!(log, "peer: 10.0.2.2:{} banned: sent a bad piece", conn.port);
            ok = false;
        }
        if !ok {
            conn.banned = true;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No connection (the socket, if any, is free).
    Idle,
    /// TCP opening or handshake not yet received.
    Opening,
    /// Handshakes done; the session runs.
    Running,
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

struct Conn<'s> {
    stream: Option<TcpStream>,
    phase: Phase,
    key: PeerKey,
    port: u16,
    outbound: bool,
    opened_at: u64,
    banned: bool,
    bits: Option<&'s mut [u8]>,
    framer: Framer,
    session: Option<PeerSession<&'s mut [u8]>>,
    rx: Rx,
    out: [u8; OUT_LEN],
    out_len: usize,
    out_at: usize,
    uploads: heapless::Deque<BlockRequest, UPLOAD_QUEUE>,
    /// Bytes of the front upload (header + block) sent.
    upload_at: usize,
    last_timeout_check: u64,
    /// The remote closed its side.
    eof: bool,
    /// Our handshake is queued or sent.
    handshake_sent: bool,
}

/// Why a connection ended (for the log).
#[derive(Clone, Copy, Debug)]
enum Closed {
    Net(Error),
    Eof,
    Wire(ourtorrent_core::wire::WireError),
    Peer(ourtorrent_core::peer::PeerError),
    WrongTorrent,
    OurSelf,
    Banned,
    Timeout,
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Closed::Net(e) => write!(f, "{e}"),
            Closed::Eof => f.write_str("closed by the peer"),
            Closed::Wire(e) => write!(f, "{e}"),
            Closed::Peer(e) => write!(f, "{e}"),
            Closed::WrongTorrent => f.write_str("handshake for another torrent"),
            Closed::OurSelf => f.write_str("connected to ourselves"),
            Closed::Banned => f.write_str("sent a bad piece"),
            Closed::Timeout => f.write_str("handshake timed out"),
        }
    }
}

impl<'s> Conn<'s> {
    /// A connection slot with its peer bitfield storage.
    fn new(bits: Option<&'s mut [u8]>) -> Self {
        Conn {
            stream: None,
            phase: Phase::Idle,
            key: PeerKey(0),
            port: 0,
            outbound: true,
            opened_at: 0,
            banned: false,
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
            uploads: heapless::Deque::new(),
            upload_at: 0,
            last_timeout_check: 0,
            eof: false,
            handshake_sent: false,
        }
    }

    /// A new connection on this slot (the socket is opening already).
    fn start(&mut self, key: PeerKey, port: u16, now: u64, outbound: bool) {
        self.phase = Phase::Opening;
        self.key = key;
        self.port = port;
        self.outbound = outbound;
        self.opened_at = now;
        self.banned = false;
        if let Some(session) = self.session.take() {
            self.bits = Some(session.into_storage());
        }
        self.framer = Framer::with_handshake(FRAME_BUF_LEN);
        self.rx.have = 0;
        self.rx.need = 0;
        self.rx.body = false;
        self.rx.big = false;
        self.out_len = 0;
        self.out_at = 0;
        self.uploads.clear();
        self.upload_at = 0;
        self.eof = false;
        self.handshake_sent = false;
    }

    /// Ends the connection (RST) and forgets the peer in the picker.
    fn reset<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        now: u64,
        picker: &mut JobPicker<'_>,
        ctx: &mut Ctx<'_, '_>,
        me: u8,
    ) {
        if let Some(s) = self.stream.as_mut() {
            s.abort(stack, now);
        }
        if let Some(session) = self.session.take() {
            picker.peer_gone(self.key, session.peer_has());
            self.bits = Some(session.into_storage());
        }
        if ctx.frame_owner == Some(me) {
            ctx.frame_owner = None;
        }
        self.phase = Phase::Idle;
    }

    /// One round: open, read and handle what arrived, write what is due.
    #[allow(clippy::too_many_arguments)]
    fn step<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        now: u64,
        picker: &mut JobPicker<'_>,
        ctx: &mut Ctx<'_, '_>,
        me: u8,
        actions: &mut Actions,
    ) -> Result<(), Closed> {
        if self.phase == Phase::Idle {
            return Ok(());
        }
        if self.banned {
            return Err(Closed::Banned);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        if self.phase == Phase::Opening {
            if now.saturating_sub(self.opened_at) > HANDSHAKE_TIMEOUT_MS && self.outbound {
                return Err(Closed::Timeout);
            }
            match stream.poll_established(stack, now) {
                Ok(()) => {}
                Err(nb::Error::WouldBlock) => return Ok(()),
                Err(nb::Error::Other(e)) => return Err(Closed::Net(e)),
            }
            if self.outbound && !self.handshake_sent {
                self.queue_handshake(ctx.cfg.info_hash, ctx.peer_id);
            }
        }
        // Read and handle every whole message that is in.
        for _ in 0..64 {
            match self.read_frame(stack, now, ctx, me) {
                Ok(()) => self.handle_frame(now, picker, ctx, me, actions)?,
                Err(nb::Error::WouldBlock) => break,
                Err(nb::Error::Other(e)) => return Err(e),
            }
            if self.banned {
                return Err(Closed::Banned);
            }
        }
        if let Some(session) = self.session.as_mut() {
            while let Some(ev) = session.poll_event() {
                if ev == PeerEvent::Interested && picker.is_complete() {
                    session.set_choking(false).map_err(Closed::Peer)?;
                }
            }
            if now.saturating_sub(self.last_timeout_check) >= 100 {
                self.last_timeout_check = now;
                let t = Instant::from_millis(now);
                session.handle_timeout(t, picker).map_err(Closed::Peer)?;
                picker.handle_timeout(t, |_, _| {});
            }
        }
        self.write(stack, now, picker, ctx)?;
        if self.eof && self.out_at >= self.out_len && self.uploads.is_empty() {
            return Err(Closed::Eof);
        }
        Ok(())
    }

    fn queue_handshake(&mut self, info_hash: InfoHash, peer_id: PeerId) {
        // No BEP 6 or BEP 10 bits: the peer sends plain BEP 3 messages.
        let hs = Handshake {
            reserved: Reserved::default(),
            info_hash,
            peer_id,
        };
        self.out[..HANDSHAKE_LEN].copy_from_slice(&hs.to_bytes());
        self.out_len = HANDSHAKE_LEN;
        self.out_at = 0;
        self.handshake_sent = true;
    }

    /// Reads until one whole frame (handshake or message) is buffered.
    fn read_frame<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        now: u64,
        ctx: &mut Ctx<'_, '_>,
        me: u8,
    ) -> nb::Result<(), Closed> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(nb::Error::WouldBlock);
        };
        if self.eof {
            return Err(nb::Error::WouldBlock);
        }
        let rx = &mut self.rx;
        loop {
            if rx.need == 0 {
                if self.framer.expecting_handshake() {
                    (rx.need, rx.body) = (HANDSHAKE_LEN, true);
                } else {
                    (rx.need, rx.body) = (LEN_PREFIX, false);
                }
            }
            if rx.have == rx.need {
                if rx.body {
                    return Ok(());
                }
                let len = u32::from_be_bytes([rx.small[0], rx.small[1], rx.small[2], rx.small[3]]);
                let whole = LEN_PREFIX.saturating_add(len as usize);
                if whole <= SMALL_LEN {
                    (rx.need, rx.body) = (whole, true);
                    continue;
                }
                if whole > self.framer.max_len() {
                    // The framer refuses it from its prefix alone.
                    rx.body = true;
                    continue;
                }
                match ctx.frame_owner {
                    None => ctx.frame_owner = Some(me),
                    Some(o) if o == me => {}
                    // Another connection is assembling a block: wait.
                    Some(_) => return Err(nb::Error::WouldBlock),
                }
                ctx.frame[..LEN_PREFIX].copy_from_slice(&rx.small[..LEN_PREFIX]);
                (rx.need, rx.body, rx.big) = (whole, true, true);
                continue;
            }
            let buf = if rx.big {
                &mut ctx.frame[rx.have..rx.need]
            } else {
                &mut rx.small[rx.have..rx.need]
            };
            match stream.poll_recv(stack, now, buf) {
                Ok(0) => {
                    self.eof = true;
                    return Err(nb::Error::WouldBlock);
                }
                Ok(n) => rx.have += n,
                Err(nb::Error::WouldBlock) => return Err(nb::Error::WouldBlock),
                Err(nb::Error::Other(e)) => return Err(nb::Error::Other(Closed::Net(e))),
            }
        }
    }

    /// Parses the buffered frame and acts on it.
    fn handle_frame(
        &mut self,
        now: u64,
        picker: &mut JobPicker<'_>,
        ctx: &mut Ctx<'_, '_>,
        me: u8,
        actions: &mut Actions,
    ) -> Result<(), Closed> {
        let big = self.rx.big;
        let len = self.rx.need;
        (self.rx.have, self.rx.need, self.rx.body, self.rx.big) = (0, 0, false, false);
        // Borrow the frame from where it was assembled; the data store is
        // borrowed separately below (only piece messages use both).
        let (frame_buf, data) = (&ctx.frame[..], &mut ctx.data[..]);
        let buf = if big {
            &frame_buf[..len]
        } else {
            &self.rx.small[..len]
        };
        let frame = match self.framer.parse(buf).map_err(Closed::Wire)? {
            Status::Complete((frame, _)) => frame,
            Status::Partial => return Err(Closed::Wire(ourtorrent_core::wire::WireError::Failed)),
        };
        let t = Instant::from_millis(now);
        let result = match frame {
            Frame::Handshake(h) => {
                if h.info_hash != ctx.cfg.info_hash {
                    return Err(Closed::WrongTorrent);
                }
                if h.peer_id == ctx.peer_id {
                    return Err(Closed::OurSelf);
                }
                if !self.outbound {
                    self.queue_handshake(ctx.cfg.info_hash, ctx.peer_id);
                }
                let bits = self
                    .bits
                    .take()
                    .ok_or(Closed::Peer(PeerError::StorageTooSmall(BITS_LEN)))?;
                let pcfg = PeerConfig {
                    pipeline: PIPELINE,
                    snub_timeout_ms: REQUEST_TIMEOUT_MS,
                    ..PeerConfig::default()
                };
                let session = PeerSession::new(self.key, bits, picker.have().len(), false, pcfg, t)
                    .map_err(Closed::Peer)?;
                self.session = Some(session);
                self.phase = Phase::Running;
                ctx.report.peers_used += 1;
                Ok(())
            }
            Frame::Message(msg) => {
                let Some(session) = self.session.as_mut() else {
                    return Err(Closed::OurSelf);
                };
                match session
                    .handle_message(t, picker, msg)
                    .map_err(Closed::Peer)?
                {
                    Handled::Block {
                        request,
                        data: block,
                        received,
                    } => {
                        if !received.duplicate {
                            let at = piece_offset(picker, request.index) + request.begin as usize;
                            if let Some(dst) = data.get_mut(at..at + block.len()) {
                                dst.copy_from_slice(block);
                            }
                        }
                        for &k in received.cancel.iter() {
                            let _ = actions.cancels.push((k, request));
                        }
                        if received.piece_complete {
                            verify(
                                picker,
                                ctx.cfg,
                                data,
                                request.index,
                                &mut ctx.report,
                                actions,
                            );
                        }
                        Ok(())
                    }
                    Handled::Request(r) => {
                        if self.uploads.push_back(r).is_err() {
                            // Over our queue: BEP 3 lets us drop it (the
                            // peer re-requests after its timeout).
                        }
                        Ok(())
                    }
                    Handled::Cancel(r) => {
                        // Only a request not yet started can be withdrawn.
                        let started = self.upload_at > 0;
                        let mut kept: heapless::Deque<BlockRequest, UPLOAD_QUEUE> =
                            heapless::Deque::new();
                        for (i, q) in self.uploads.iter().enumerate() {
                            if *q != r || (i == 0 && started) {
                                let _ = kept.push_back(*q);
                            }
                        }
                        self.uploads = kept;
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
        };
        if big && ctx.frame_owner == Some(me) {
            ctx.frame_owner = None;
        }
        result
    }

    /// Writes queued bytes: control messages and requests from the
    /// session, then blocks we upload (header, then data from the store).
    fn write<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        now: u64,
        picker: &mut JobPicker<'_>,
        ctx: &mut Ctx<'_, '_>,
    ) -> Result<(), Closed> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        for _ in 0..8 {
            if self.out_at < self.out_len {
                match stream.poll_send(stack, now, &self.out[self.out_at..self.out_len]) {
                    Ok(n) => self.out_at += n,
                    Err(nb::Error::WouldBlock) => return Ok(()),
                    Err(nb::Error::Other(e)) => return Err(Closed::Net(e)),
                }
                continue;
            }
            (self.out_at, self.out_len) = (0, 0);
            if let Some(&r) = self.uploads.front() {
                let header =
                    piece_header(r.index, r.begin, r.length as usize).map_err(Closed::Wire)?;
                let at = piece_offset(picker, r.index) + r.begin as usize;
                let block = ctx
                    .data
                    .get(at..at + r.length as usize)
                    .ok_or(Closed::Eof)?;
                let chunk = if self.upload_at < PIECE_HEADER_LEN {
                    &header[self.upload_at..]
                } else {
                    &block[self.upload_at - PIECE_HEADER_LEN..]
                };
                match stream.poll_send(stack, now, chunk) {
                    Ok(n) => self.upload_at += n,
                    Err(nb::Error::WouldBlock) => return Ok(()),
                    Err(nb::Error::Other(e)) => return Err(Closed::Net(e)),
                }
                if self.upload_at == PIECE_HEADER_LEN + r.length as usize {
                    self.uploads.pop_front();
                    self.upload_at = 0;
                    ctx.report.uploaded += u64::from(r.length);
                    if let Some(n) = ctx.served.get_mut(r.index as usize) {
                        *n = n.saturating_add(r.length);
                    }
                }
                continue;
            }
            let Some(session) = self.session.as_mut() else {
                return Ok(());
            };
            let n = session.poll_transmit(Instant::from_millis(now), picker, &mut self.out);
            if n == 0 {
                return Ok(());
            }
            self.out_len = n;
        }
        Ok(())
    }
}

/// Byte offset of piece `index` in the store.
fn piece_offset(picker: &JobPicker<'_>, index: u32) -> usize {
    index as usize * picker.geometry().piece_len() as usize
}

/// Verifies a complete piece with the picker; a failure bans its senders.
fn verify(
    picker: &mut JobPicker<'_>,
    cfg: &TorrentConfig,
    data: &[u8],
    index: u32,
    report: &mut Report,
    actions: &mut Actions,
) {
    let Some(expected) = cfg.hashes.get(index as usize) else {
        return;
    };
    for _ in 0..2 {
        match picker.verify(index, expected) {
            Ok(Verdict::Passed) => {
                report.verified += 1;
                let _ = actions.haves.push(index);
                return;
            }
            Ok(Verdict::Failed { contributors, .. }) => {
                report.rejected += 1;
                let _ = actions.rejected.push(index);
                for k in contributors {
                    let _ = actions.bans.push(k);
                }
                return;
            }
            Ok(Verdict::NeedsData { from }) => {
                let start = piece_offset(picker, index);
                let size = picker.geometry().piece_size(index).unwrap_or(0) as usize;
                let part = data
                    .get(start + from as usize..start + size)
                    .unwrap_or_default();
                if picker.hash_data(index, part).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Seeds to host leechers on [`PEER_PORT`] until one has every piece, or
/// until `deadline`.
#[allow(clippy::too_many_arguments)]
fn seed<'a, 's, D: Device, C: Clock, const RX: usize, const TX: usize>(
    stack: &mut Stack<'a, D, C>,
    conn: &mut Conn<'s>,
    mut tcp_buf: Option<&'a mut TcpBuffers<RX, TX>>,
    picker: &mut JobPicker<'_>,
    ctx: &mut Ctx<'_, '_>,
    deadline: u64,
    log: &mut impl Write,
) -> Result<(), JobError> {
    let start = stack.now_ms();
    let _ = writeln!(log, "seed: listening port={PEER_PORT}");
    let mut done = false;
    let mut leechers = 0u16;
    let mut served_before = 0u64;
    let r = stack.block_until(deadline, |stack, now| {
        if conn.phase == Phase::Idle {
            if done {
                return Ok(());
            }
            match (conn.stream.as_mut(), tcp_buf.take()) {
                (Some(stream), _) => stream.relisten(stack, PEER_PORT)?,
                (None, Some(b)) => conn.stream = Some(TcpStream::listen(stack, b, PEER_PORT)?),
                (None, None) => return Err(nb::Error::Other(Error::NoSocketSlot)),
            }
            leechers += 1;
            served_before = ctx.report.uploaded;
            ctx.served = [0; MAX_PIECES];
            conn.start(PeerKey(1000 + leechers), 0, now, false);
        }
        let mut actions = Actions::default();
        let stepped = conn.step(stack, now, picker, ctx, 0, &mut actions);
        let complete = conn
            .session
            .as_ref()
            .is_some_and(|s| s.peer_has().is_complete());
        if complete && !done && ctx.report.uploaded == served_before {
            // Complete before we sent it anything: another seed (e.g. a
            // tracker peer that found us). Make room for a leecher.
            let _ = writeln!(log, "seed: peer is a seed, closed");
            conn.reset(stack, now, picker, ctx, 0);
            return Err(nb::Error::WouldBlock);
        }
        if complete && !done {
            let _ = writeln!(log, "seed: leecher has every piece");
            ctx.report.leecher_complete = true;
            done = true;
        }
        if let Err(why) = stepped {
            if conn.phase == Phase::Running {
                let _ = writeln!(log, "seed: leecher closed: {why}");
            }
            // A leecher that finishes may hang up before its last have
            // messages: it is complete too if it was sent every block.
            let geo = picker.geometry();
            let all_sent = (0..geo.piece_count()).all(|i| {
                ctx.served.get(i as usize).copied().unwrap_or(0)
                    >= geo.piece_size(i).unwrap_or(u32::MAX)
            });
            if matches!(why, Closed::Eof) && all_sent && !done {
                let _ = writeln!(log, "seed: leecher was sent every piece and hung up");
                ctx.report.leecher_complete = true;
                done = true;
            }
            conn.reset(stack, now, picker, ctx, 0);
            return if done {
                Ok(())
            } else {
                Err(nb::Error::WouldBlock)
            };
        }
        if done && conn.uploads.is_empty() && conn.out_at >= conn.out_len {
            if let Some(stream) = conn.stream.as_mut() {
                stream.poll_flush(stack, now)?;
                stream.close(stack, now);
            }
            return Ok(());
        }
        Err(nb::Error::WouldBlock)
    });
    match r {
        Ok(()) | Err(Error::Timeout) => {}
        Err(e) => return Err(JobError::Net("seed", e)),
    }
    let _ = writeln!(
        log,
        "seed: ok uploaded={} leecher_complete={} ms={}",
        ctx.report.uploaded,
        u8::from(ctx.report.leecher_complete),
        stack.now_ms() - start
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::args::parse;
    use std::format;

    const H: &str = "0123456789abcdef0123456789abcdef01234567";

    fn config(rest: &str) -> Result<TorrentConfig, LimitError> {
        let line = format!("fw tracker=6969 info_hash={H} {rest}");
        TorrentConfig::from_args(&parse(line.as_bytes()).unwrap())
    }

    #[test]
    fn a_torrent_within_the_limits() {
        let c = config(&format!("length=65536 piece_len=16384 pieces={H}{H}{H}{H}")).unwrap();
        assert_eq!(c.geometry.piece_count(), 4);
        assert_eq!(c.hashes[3][..2], [0x01, 0x23]);
        assert_eq!(c.tracker.port(), 6969);
        // The last piece may be short.
        let c = config(&format!("length=20000 piece_len=16384 pieces={H}{H}")).unwrap();
        assert_eq!(c.geometry.piece_size(1), Some(20000 - 16384));
    }

    #[test]
    fn torrents_beyond_the_limits_are_refused() {
        let cases = [
            (
                format!("length=65537 piece_len=16384 pieces={H}"),
                LimitError::TorrentTooLong(65537),
            ),
            (
                format!("length=65536 piece_len=131072 pieces={H}"),
                LimitError::PieceTooLong(131072),
            ),
            (
                format!("length=65536 piece_len=512 pieces={H}"),
                LimitError::TooManyPieces(128),
            ),
            (
                format!("length=65536 piece_len=16384 pieces={H}"),
                LimitError::HashCount {
                    pieces: 4,
                    hashes: 1,
                },
            ),
            (
                "length=65536 piece_len=16384".into(),
                LimitError::Missing("pieces"),
            ),
        ];
        for (rest, want) in cases {
            assert_eq!(config(&rest).unwrap_err(), want, "{rest}");
        }
        let line =
            format!("tracker=6969 host=10.0.2.3 info_hash={H} length=1 piece_len=1 pieces={H}");
        assert_eq!(
            TorrentConfig::from_args(&parse(line.as_bytes()).unwrap()).unwrap_err(),
            LimitError::Tracker(ConfigError::NotGateway)
        );
    }
}
