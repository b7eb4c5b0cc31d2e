//! The BitTorrent job of the QEMU firmware, generic over the device and the
//! clock like the rest of the driver: announce to a BEP 15 tracker at the
//! gateway, download a torrent into NOR flash (`store`: pieces written as
//! their blocks arrive, verified, marked, read back to seed) from the peers
//! it returns while serving the pieces it has to peers that connect to it,
//! announce `completed` (the image is then ready to boot), seed for a
//! while, announce `stopped`. On start, pieces marked verified in the flash
//! are hashed again and kept: a board cut off mid-download resumes.
//!
//! This module is a thin driver of the core's [`Torrent`]: the torrent owns
//! the picker, the choker, the verify → ban rule, the haves owed to every
//! peer and the cancels (end-game, request timeouts); each connection's
//! [`PeerSession`](ourtorrent_core::peer::PeerSession) goes through it. The
//! job moves bytes between sockets and the torrent (`conn`: a connection
//! slot's life; `conn/io`: its reads and writes; `conn/frames`: what each
//! frame does), performs the tracker announces the core's
//! [`Announcer`](ourtorrent_core::tracker::announce::Announcer) schedules
//! (`announce`), and decides when the run is over (`swarm`, the
//! loop: it runs the torrent's and the sessions' timers when their
//! `poll_timeout`s are due). `config` checks the command line's torrent.
//!
//! # Limits (each refused up front by [`TorrentConfig::from_args`])
//! - [`MAX_TORRENT_LEN`] bytes of data, in the flash (RAM holds the blocks
//!   in flight: one [`FRAME_BUF_LEN`] frame and the TCP windows);
//! - [`MAX_PIECES`] pieces, of [`MIN_PIECE_LEN`] to [`MAX_PIECE_LEN`]
//!   bytes (a multiple of the flash sector);
//! - [`MAX_PEERS`] connections at once (each slot keeps one TCP socket and
//!   one peer bitfield, reused connection after connection); while pieces
//!   are missing, slots go to tracker peers first ([`MAX_PEER_ATTEMPTS`]
//!   kept to try) and a free slot listens on [`PEER_PORT`](crate::PEER_PORT); once complete,
//!   connections to other seeds close and slots listen for leechers;
//! - blocks of [`BLOCK_LEN`] (16 KiB), at most [`PIPELINE`] requests in
//!   flight per peer (fewer if its BEP 10 `reqq` says so).
//!
//! # Bad data
//! A piece whose SHA-1 differs from its hash is never kept: the picker
//! resets it, the torrent's reputation rule bans its sender (a lone sender
//! at once, one of several once it has shared more bad pieces than good),
//! the banned connection closes and the piece is requested again from the
//! others. With no peer left the job fails ([`JobError::NoPeers`]). A
//! piece is marked verified in flash only after its hash passed.
//!
//! # Flash errors
//! A failed erase or program gives the piece up without blame (it is
//! fetched again, its sectors erased again first); a failed mark leaves a
//! verified piece unmarked (fetched again after a restart). Neither ends
//! the job; both are counted ([`Report::flash_errors`]).
//!
//! # When the job ends
//! Complete, the job seeds for `seed_ms` or until a leecher has every piece
//! (it said so, or it was sent every block and hung up), then closes its
//! connections and announces `stopped` (also after a failure, once
//! `started` was acknowledged).

mod announce;
mod config;
mod conn;
mod store;
mod swarm;

use core::fmt::{self, Write};

use ourtorrent_core::choker::{Candidate, ChokerConfig};
use ourtorrent_core::id::PeerId;
use ourtorrent_core::pieces::{
    Availability, Bitfield, BlockSlot, PeerKey, PickerConfig, PickerParts, SliceStorage, Slot,
    XorShift32,
};
use ourtorrent_core::time::Instant;
use ourtorrent_core::torrent::{
    PeerEntry, Torrent, TorrentConfig as CoreConfig, TorrentError, TorrentParts,
};
use ourtorrent_core::tracker::announce::TooManyTrackers;
use ourtorrent_core::tracker::udp::client::{AnnounceParams, ClientError};
use ourtorrent_core::tracker::AnnounceEvent;
use ourtorrent_core::wire::PIECE_HEADER_LEN;
use smoltcp::phy::Device;

pub use ourtorrent_core::wire::BLOCK_LEN;

pub use announce::STOPPED_WAIT_MS;
pub use config::{LimitError, TorrentConfig};
pub use conn::{HANDSHAKE_TIMEOUT_MS, REQUEST_TIMEOUT_MS, UPLOAD_QUEUE};
pub use store::{Store, StoreError, HEADER_LEN, MAGIC, MARKS_AT, MARK_LEN};

use announce::{Candidates, Tids, Totals, Tracker};
use conn::{Conn, JobTorrent, Shared};

use crate::error::Error;
use crate::flash::Flash;
use crate::stack::{Clock, Stack};
use crate::tcp::TcpBuffers;
use crate::udp::{UdpBuffers, UdpSocket};

/// Largest torrent (a firmware image): its data is in the flash.
pub const MAX_TORRENT_LEN: usize = 4 * 1024 * 1024;
/// Most pieces (4 MiB of 16 KiB pieces).
pub const MAX_PIECES: usize = 256;
/// Shortest piece: one block (and a whole number of 4 KiB sectors).
pub const MIN_PIECE_LEN: u32 = BLOCK_LEN;
/// Longest piece (16 blocks).
pub const MAX_PIECE_LEN: u32 = 256 * 1024;
/// Blocks of the longest piece.
pub const MAX_BLOCKS_PER_PIECE: usize = (MAX_PIECE_LEN / BLOCK_LEN) as usize;
/// Peer connections open at once (each needs a TCP socket): while pieces
/// are missing, up to `MAX_PEERS - 1` outbound (the host seeder and two
/// other boards of a fleet) and one listening for inbound peers.
pub const MAX_PEERS: usize = 4;
/// Tracker peers kept to try.
pub const MAX_PEER_ATTEMPTS: usize = 8;
/// Requests in flight to one peer.
pub const PIPELINE: usize = 8;
/// The one buffer a whole peer-wire message is assembled in when it does
/// not fit a connection's small buffer: a 16 KiB block and its header.
pub const FRAME_BUF_LEN: usize = BLOCK_LEN as usize + PIECE_HEADER_LEN;
/// Peers asked of the tracker (the reply must fit the UDP buffer).
pub const NUM_WANT: i32 = 16;

/// Pieces in progress at once in the picker (at most: also bounded by
/// [`BLOCKS_IN_PROGRESS`]). A 16 KiB piece is one block, so this bounds
/// the blocks in flight over all peers: with a slow seeder holding its
/// pipeline's worth, the rest go to fast peers (other boards).
const IN_PROGRESS: usize = 16;
/// Block slots of the pieces in progress: 16 pieces of one block, or 4 of
/// [`MAX_BLOCKS_PER_PIECE`].
const BLOCKS_IN_PROGRESS: usize = 4 * MAX_BLOCKS_PER_PIECE;
/// Bytes of one peer's bitfield.
const BITS_LEN: usize = MAX_PIECES.div_ceil(8);
/// Entries of the torrent's peer table: twice the connections, so that a
/// slot's next peer does not get its last peer's key at once (a late
/// block is not blamed on a newcomer).
const PEER_TABLE: usize = 2 * MAX_PEERS;

/// The static buffers of the job (the firmware places them in `static`s).
pub struct JobBuffers<'a, const UP: usize, const UB: usize, const RX: usize, const TX: usize> {
    /// The tracker's UDP socket.
    pub udp: &'a mut UdpBuffers<UP, UB>,
    /// One TCP socket per peer connection, reused from peer to peer.
    pub tcp: [&'a mut TcpBuffers<RX, TX>; MAX_PEERS],
    /// The flash the torrent's data is stored in.
    pub flash: &'a mut dyn Flash,
    /// Where long messages are assembled ([`FRAME_BUF_LEN`]).
    pub frame: &'a mut [u8; FRAME_BUF_LEN],
}

/// What the job did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Peers in the tracker's reply.
    pub tracker_peers: usize,
    /// Peers we handshook with (both directions).
    pub peers_used: usize,
    /// Bytes downloaded and verified.
    pub bytes: u64,
    /// Pieces verified.
    pub verified: u32,
    /// Pieces that failed verification (and were fetched again).
    pub rejected: u32,
    /// Milliseconds from the tracker's reply to the last piece.
    pub download_ms: u64,
    /// Bytes uploaded (while downloading and seeding).
    pub uploaded: u64,
    /// Whether a leecher got every piece: it said so with have messages,
    /// or it was sent every block and then hung up (a finished libtorrent
    /// may close before its last haves go out).
    pub leecher_complete: bool,
    /// Pieces found verified in flash at start (marked, hash checked).
    pub resumed: u32,
    /// Flash erases, programs or reads that failed (each failed a piece).
    pub flash_errors: u32,
    /// Every piece is verified in flash: the image is ready to boot (a
    /// real board would now swap banks).
    pub ready_to_boot: bool,
}

/// Why the job failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobError {
    /// A driver error in this step.
    Net(&'static str, Error),
    /// This announce never got through, and its latest try got an error
    /// reply (logged). A failed announce is tried again after a backoff;
    /// the job fails on it only when `started` or `completed` is still not
    /// answered at the end.
    TrackerRefused(AnnounceEvent),
    /// As [`Self::TrackerRefused`], the latest try failed in the tracker
    /// session (BEP 15 retransmits exhausted, or it refused to start).
    TrackerFailed(AnnounceEvent, ClientError),
    /// The tracker did not answer this announce before the deadline.
    TrackerSilent(AnnounceEvent),
    /// The announce schedule refused our tracker.
    Schedule(TooManyTrackers),
    /// The torrent refused its geometry or its storage.
    Torrent(TorrentError),
    /// The flash store could not be opened.
    Store(StoreError),
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
            JobError::TrackerRefused(ev) => write!(f, "tracker: error reply to {ev}"),
            JobError::TrackerFailed(ev, e) => write!(f, "tracker: {ev}: {e}"),
            JobError::TrackerSilent(ev) => {
                write!(f, "tracker: no answer to {ev} before the deadline")
            }
            JobError::Schedule(e) => write!(f, "tracker: {e}"),
            JobError::Torrent(e) => write!(f, "{e}"),
            JobError::Store(e) => write!(f, "store: {e}"),
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

/// Runs the job: announce, download while serving, announce completed,
/// seed, announce stopped. Progress lines go to `log`. `boot_seed` varies
/// the peer id, the tracker key and transaction ids between boots.
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
    let geo = cfg.geometry;
    let pieces = geo.piece_count();

    let udp_port = stack.ephemeral_port();
    let udp = UdpSocket::bind(stack, bufs.udp, udp_port, cfg.tracker)
        .map_err(|e| JobError::Net("udp", e))?;
    let (key, tids) = key_and_tids(&mut rng);
    let params = AnnounceParams {
        info_hash: cfg.info_hash,
        peer_id,
        downloaded: 0,
        left: geo.total_len(),
        uploaded: 0,
        event: AnnounceEvent::Started,
        key,
        num_want: NUM_WANT,
        port: cfg.announce_port,
    };
    let mut tracker = Tracker::new(udp, tids, params)?;

    // The pieces on flash; those marked verified are hashed again.
    let (mut store, formatted) =
        Store::open(bufs.flash, &cfg.info_hash, geo).map_err(JobError::Store)?;
    let _ = writeln!(
        log,
        "flash: {} data_at={} marks_at={MARKS_AT}",
        if formatted { "formatted" } else { "kept" },
        store.data_at()
    );
    // The torrent's storage: arrays on this stack frame.
    let mut have_bits = [0u8; BITS_LEN];
    let mut have =
        Bitfield::new(&mut have_bits[..], pieces).map_err(|e| JobError::Torrent(e.into()))?;
    let (resumed, marked) = resume(&mut store, cfg, &mut have, log);
    let mut avail = [0u16; MAX_PIECES];
    let mut slots: [Slot; IN_PROGRESS] = core::array::from_fn(|_| Slot::default());
    let mut blocks: [BlockSlot; BLOCKS_IN_PROGRESS] =
        core::array::from_fn(|_| BlockSlot::default());
    let mut peers: [PeerEntry; PEER_TABLE] = core::array::from_fn(|_| PeerEntry::default());
    let mut verified_log = [0u32; MAX_PIECES];
    let mut candidates = [Candidate::new(PeerKey(0), Instant::ZERO); PEER_TABLE];
    let mut flight = [0u16; PEER_TABLE];
    let parts = TorrentParts::<SliceStorage<'_>> {
        picker: PickerParts {
            have,
            avail: Availability::new(&mut avail[..], pieces)
                .map_err(|e| JobError::Torrent(e.into()))?,
            slots: &mut slots[..],
            blocks: &mut blocks[..],
            flight: &mut flight[..],
        },
        peers: &mut peers[..],
        log: &mut verified_log[..],
        candidates: &mut candidates[..],
    };
    let tcfg = CoreConfig {
        picker: PickerConfig {
            request_timeout_ms: REQUEST_TIMEOUT_MS,
            ..PickerConfig::default()
        },
        choker: ChokerConfig::default(),
    };
    let mut torrent = Torrent::new(geo, parts, tcfg, rng.next_u32()).map_err(JobError::Torrent)?;

    let mut shared = Shared {
        cfg,
        peer_id,
        store,
        frame: bufs.frame,
        frame_owner: None,
        report: Report {
            resumed,
            ..Report::default()
        },
    };
    let _ = writeln!(
        log,
        "resume: verified={resumed} marked={marked} pieces={pieces}"
    );
    // One peer bitfield per connection slot, handed back by each session
    // that ends (`PeerSession::into_storage`) for the next one.
    let mut bit_slots = [[0u8; BITS_LEN]; MAX_PEERS];
    let mut bit_slots = bit_slots.iter_mut();
    let conns = core::array::from_fn(|_| Conn::new(bit_slots.next().map(|b| &mut b[..])));
    let mut job = swarm::Job::new(conns, bufs.tcp, &mut tracker, &mut torrent, &mut shared);
    let start = stack.now_ms();
    let outcome = job.drive(stack, deadline, log);
    let seeded = job.complete_at().map(|t| stack.now_ms().saturating_sub(t));
    // BEP 3: `stopped` when the job ends, whatever the outcome.
    let totals = totals(&torrent, &shared.report);
    leave(stack, &mut tracker, totals, deadline, log);
    let report = outcome?;
    if !tracker.told_complete() {
        return Err(tracker.failure(AnnounceEvent::Completed));
    }
    if cfg.seed_ms > 0 {
        let _ = writeln!(
            log,
            "seed: ok uploaded={} leecher_complete={} ms={}",
            report.uploaded,
            u8::from(report.leecher_complete),
            seeded.unwrap_or(stack.now_ms() - start)
        );
    }
    Ok(report)
}

/// Sets in `have` every piece marked verified in the store whose hash
/// still matches. Returns (pieces kept, pieces marked).
fn resume(
    store: &mut Store<'_>,
    cfg: &TorrentConfig,
    have: &mut Bitfield<&mut [u8]>,
    log: &mut impl Write,
) -> (u32, u32) {
    let (mut kept, mut marked) = (0, 0);
    for i in 0..cfg.geometry.piece_count() {
        match store.marked(i) {
            Ok(true) => marked += 1,
            Ok(false) => continue,
            Err(e) => {
                let _ = writeln!(log, "resume: piece {i}: {e}");
                continue;
            }
        }
        let good = match store.hash(i) {
            Ok(h) => cfg.hashes.get(i as usize) == Some(&h),
            Err(e) => {
                let _ = writeln!(log, "resume: piece {i}: {e}");
                false
            }
        };
        if good && have.set(i).is_ok() {
            kept += 1;
            continue;
        }
        // Never a mark on a piece that does not verify.
        match store.unmark(i) {
            Ok(()) => {
                let _ = writeln!(
                    log,
                    "resume: piece {i} marked but its hash differs: unmarked"
                );
            }
            Err(e) => {
                let _ = writeln!(log, "resume: piece {i} marked but its hash differs: {e}");
            }
        }
    }
    (kept, marked)
}

/// The tracker `key` and the BEP 15 transaction ids, from `rng`. A child
/// generator seeded with a value of `rng` would replay `rng`'s own stream
/// (xorshift's next state is its output), so the first transaction id
/// would equal the next value drawn, the key: the seed is mixed first.
fn key_and_tids(rng: &mut XorShift32) -> (u32, Tids) {
    let tids = Tids(XorShift32::new(rng.next_u32() ^ TIDS_MIX));
    (rng.next_u32(), tids)
}

/// Mixed into the transaction ids' seed (any non-zero constant will do;
/// this one is 2^32 / φ).
const TIDS_MIX: u32 = 0x9E37_79B9;

/// What we announce now: the bytes of the pieces we have, uploaded, left.
fn totals(torrent: &JobTorrent<'_>, report: &Report) -> Totals {
    let p = torrent.picker();
    let downloaded = p
        .have()
        .iter_set()
        .map(|i| u64::from(p.geometry().piece_size(i).unwrap_or(0)))
        .sum();
    Totals {
        downloaded,
        uploaded: report.uploaded,
        left: p.geometry().total_len().saturating_sub(downloaded),
    }
}

/// Stops the announce schedule and performs what it still hands out (the
/// announce in flight, then `completed` if owed and `stopped`, if
/// `started` was answered), waiting at most [`STOPPED_WAIT_MS`] (and never
/// past `deadline`); a silence is logged, not an error.
fn leave<D: Device, C: Clock>(
    stack: &mut Stack<'_, D, C>,
    tracker: &mut Tracker,
    totals: Totals,
    deadline: u64,
    log: &mut impl Write,
) {
    let now = stack.now_ms();
    tracker.stop(now);
    let until = deadline.min(now + STOPPED_WAIT_MS);
    let mut sink = Candidates::default();
    let r = stack.block_until(until, |stack, now| {
        match tracker.poll(stack, now, || totals, &mut sink, log) {
            Ok(_) if tracker.is_finished() => Ok(()),
            Ok(_) => Err(nb::Error::WouldBlock),
            Err(_) => Err(nb::Error::Other(Error::Timeout)),
        }
    });
    if r.is_err() && tracker.started() {
        let _ = writeln!(log, "announce: event=stopped not acknowledged");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ourtorrent_core::tracker::udp::client::TransactionIds;

    #[test]
    fn the_tracker_key_is_not_a_transaction_id() {
        for seed in 1..2_000 {
            let mut rng = XorShift32::new(seed);
            let (key, mut tids) = key_and_tids(&mut rng);
            let first: [u32; 4] = core::array::from_fn(|_| tids.next_transaction_id());
            assert!(
                !first.contains(&key),
                "seed {seed}: key {key} among {first:?}"
            );
        }
    }
}
