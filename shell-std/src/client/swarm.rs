//! The swarm: the shared picker and choker behind one mutex, and one tokio
//! task per peer connection driving a core [`PeerSession`].
//!
//! A peer task owns its socket, a reusable read buffer (the framer parses
//! messages in place; blocks are written to disk straight from it, on a
//! blocking thread while the task reads into a second buffer) and an
//! output buffer (control messages and requests from `poll_transmit`,
//! blocks we upload read straight into it). It waits on socket readiness,
//! its wake-up [`Notify`] (new pieces to announce, cancels, bans, choker
//! decisions) and the session's timer. The mutex is held only to run the
//! core's state machines, never across an await, a disk access or SHA-1:
//! pieces are hashed by the writing threads as their blocks land
//! ([`PieceHashes`]) and verified there once every peer's blocks of the
//! piece are on disk ([`PendingWrites`]).
//!
//! Choking: the core's [`Choker`] runs every rechoke interval (from the
//! 1 s tick) and whenever a peer comes, goes or changes interest; each task
//! applies its peer's decision.
//!
//! Bounds: read buffer [`READ_BUF`] (plus one message; two of them while
//! downloading), output high-water
//! [`OUT_HIGH_WATER`], queued requests from a peer [`MAX_PEER_REQUESTS`]
//! (extra ones are dropped, or rejected under BEP 6), connections
//! `max_peers` (a semaphore).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ourtorrent_core::choker::Candidate;
use ourtorrent_core::id::PeerId;
use ourtorrent_core::peer::{Handled, PeerConfig, PeerSession};
use ourtorrent_core::pieces::{BlockRequest, BlockSlot, PeerKey, PickerStorage, Slot};
use ourtorrent_core::time::Instant;
use ourtorrent_core::torrent::{PeerEntry, PieceOutcome, Torrent, TorrentStorage};
use ourtorrent_core::wire::{
    max_message_len_for, piece_header, ExtensionHandshake, Frame, Framer, Handshake, Message,
    Reserved, Status, PIECE_HEADER_LEN,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify, Semaphore};

use super::meta::Info;
use super::storage::Storage;
use super::writes::{Next, Partial, PendingWrites, PieceHashes};

/// Socket reads go into a buffer this large (plus one whole message).
pub const READ_BUF: usize = 256 << 10;
/// Stop filling the output buffer (uploads) past this many bytes.
pub const OUT_HIGH_WATER: usize = 256 << 10;
/// Bytes of blocks served per wake-up before checking the socket for
/// input and the timers again.
pub const SERVE_BUDGET: usize = 4 << 20;
/// Pieces are read back for hashing in reads of this size.
pub const HASH_CHUNK: usize = 256 << 10;
/// Requests from one peer waiting to be served.
pub const MAX_PEER_REQUESTS: usize = 1024;
/// Requests in flight per peer (our pipeline; lowered by the peer's `reqq`).
pub const PIPELINE: usize = 128;
/// What we advertise as our `reqq` (BEP 10).
pub const OUR_REQQ: u32 = MAX_PEER_REQUESTS as u32;

/// Counters the progress bar and the trackers read without the lock.
#[derive(Default)]
pub struct Stats {
    /// Payload bytes received (verified or not).
    pub downloaded: AtomicU64,
    /// Payload bytes sent.
    pub uploaded: AtomicU64,
    /// Bytes of verified pieces.
    pub verified: AtomicU64,
    /// Pieces verified this session (downloaded, not resumed).
    pub fetched_pieces: AtomicU32,
    /// Connected peers.
    pub peers: AtomicU32,
    /// Connected peers that have every piece.
    pub seeds: AtomicU32,
    /// Pieces that failed their hash.
    pub hash_failures: AtomicU32,
    /// Peers banned.
    pub banned: AtomicU32,
}

/// What the shell keeps of a connected peer (the torrent keeps the rest).
struct PeerCtl {
    addr: SocketAddr,
    notify: Arc<Notify>,
    /// Banned by address (a protocol error, or a bad piece from any of its
    /// connections): close.
    kill: bool,
}

/// A received block to store: its piece, its offset in the piece, and
/// where its bytes sit in the read buffer.
#[derive(Clone, Copy)]
struct BlockWrite {
    index: u32,
    begin: u32,
    start: usize,
    len: usize,
}

/// The torrent's storage in this shell: boxed slices it owns, sized when
/// the torrent starts (no leak, no const generics).
pub struct Heap;

impl PickerStorage for Heap {
    type Have = Box<[u8]>;
    type Counts = Box<[u16]>;
    type Slots = Box<[Slot]>;
    type Blocks = Box<[BlockSlot]>;
}

impl TorrentStorage for Heap {
    type Peers = Box<[PeerEntry]>;
    type Log = Box<[u32]>;
    type Candidates = Box<[Candidate]>;
}

/// The core's state machine of one torrent.
pub type StdTorrent = Torrent<Heap>;

/// State behind the mutex.
pub struct Shared {
    /// The core's torrent: picker, choker, reputation, have log, cancels.
    pub torrent: StdTorrent,
    peers: HashMap<PeerKey, PeerCtl>,
    banned: HashSet<SocketAddr>,
    connected: HashSet<SocketAddr>,
    /// Pieces with blocks not yet on disk.
    unwritten: PendingWrites,
}

impl Shared {
    /// Wakes the tasks of the peers the torrent has commands for.
    fn wake(&mut self) {
        while let Some(k) = self.torrent.poll_wake() {
            if let Some(c) = self.peers.get(&k) {
                c.notify.notify_one();
            }
        }
    }
}

/// Everything a peer task needs.
pub struct Ctx {
    /// Shared state.
    pub shared: Mutex<Shared>,
    /// Files.
    pub storage: Storage,
    /// The torrent.
    pub info: Info,
    /// Our peer id.
    pub peer_id: PeerId,
    /// Clock origin for core instants.
    pub epoch: std::time::Instant,
    /// Counters.
    pub stats: Stats,
    /// Wakes the main task when the download completes (or `--max-pieces`).
    pub done: Notify,
    /// Set once every piece is verified.
    pub complete: AtomicBool,
    /// Debug: stop after this many pieces fetched.
    pub max_pieces: Option<u32>,
    /// Bounds connections.
    pub conns: Arc<Semaphore>,
    /// SHA-1 of pieces in progress, computed as their blocks are written.
    pub hashes: PieceHashes,
    /// Our listen address (to skip ourselves in tracker replies).
    pub listen: SocketAddr,
    /// Set when the torrent's storage failed (a write error naming the
    /// file and the cause): the download stops, `done` wakes the main task.
    pub failed: Mutex<Option<String>>,
}

impl Ctx {
    /// A context over a picker already told which pieces we have.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        torrent: StdTorrent,
        storage: Storage,
        info: Info,
        peer_id: PeerId,
        max_pieces: Option<u32>,
        max_peers: usize,
        listen: SocketAddr,
        verified: u64,
    ) -> Self {
        let complete = torrent.is_complete();
        let stats = Stats::default();
        stats.verified.store(verified, Relaxed);
        Ctx {
            shared: Mutex::new(Shared {
                torrent,
                peers: HashMap::new(),
                banned: HashSet::new(),
                connected: HashSet::new(),
                unwritten: PendingWrites::default(),
            }),
            storage,
            info,
            peer_id,
            epoch: std::time::Instant::now(),
            stats,
            done: Notify::new(),
            complete: AtomicBool::new(complete),
            max_pieces,
            conns: Arc::new(Semaphore::new(max_peers)),
            hashes: PieceHashes::default(),
            listen,
            failed: Mutex::new(None),
        }
    }

    /// The storage failed: the first cause is kept and the main task woken.
    pub fn fail(&self, why: String) {
        let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            tracing::error!("{why}");
            *f = Some(why);
        }
        drop(f);
        self.done.notify_one();
    }

    /// Pieces verified.
    pub fn picker_have(&self) -> u32 {
        self.lock().torrent.picker().have().count()
    }

    /// Why the storage failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The core's clock.
    pub fn now(&self) -> Instant {
        Instant::from_millis(self.epoch.elapsed().as_millis() as u64)
    }

    /// Locks the shared state (a poisoned lock is still usable: the state
    /// machines never panic mid-update).
    pub fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True if `addr` is banned.
    pub fn is_banned(&self, addr: &SocketAddr) -> bool {
        self.lock().banned.contains(addr)
    }

    /// Bans `addr` and disconnects it.
    pub fn ban(&self, addr: SocketAddr, why: &str) {
        let mut g = self.lock();
        if g.banned.insert(addr) {
            self.stats.banned.fetch_add(1, Relaxed);
            tracing::warn!(%addr, "banned: {why}");
        }
        for c in g.peers.values_mut().filter(|c| c.addr == addr) {
            c.kill = true;
            c.notify.notify_one();
        }
    }

    /// Request timeouts (free the blocks and tell the peers to cancel) and
    /// rechokes when due.
    pub fn tick(&self) {
        let now = self.now();
        let mut g = self.lock();
        if g.torrent.poll_timeout().is_some_and(|t| t <= now) {
            g.torrent.handle_timeout(now);
        }
        g.wake();
    }

    /// A batch of blocks: the first `written` are on disk, the rest failed
    /// (or were not tried after a failure). Returns the pieces now ready to
    /// verify; a piece with a block that could not be stored is abandoned
    /// (fetched again from scratch, nobody blamed).
    fn written(&self, batch: &[BlockWrite], written: usize) -> Vec<u32> {
        let mut g = self.lock();
        let mut ready = Vec::new();
        for (i, &BlockWrite { index, .. }) in batch.iter().enumerate() {
            match g.unwritten.done(index, i < written) {
                Next::Wait => {}
                Next::Verify => ready.push(index),
                Next::Abandon => {
                    self.hashes.take(index);
                    g.torrent.abandon(index);
                    tracing::warn!(index, "piece abandoned: its data could not be stored");
                }
            }
        }
        ready
    }

    /// Verifies a piece whose blocks are all on disk (called on a writing
    /// thread). Its blocks were hashed in order as they were written; if
    /// some came out of order, the rest of the piece is read back (from the
    /// page cache, in [`HASH_CHUNK`] reads) and hashed. The lock is taken
    /// only to hand the digest to the picker.
    fn verify_piece(&self, index: u32) -> std::io::Result<()> {
        let Partial { mut hasher, next } = self.hashes.take(index);
        let (start, len) = self.storage.piece_range(index);
        if (next as usize) < len {
            tracing::debug!(
                index,
                next,
                "blocks came out of order: hashing the rest from disk"
            );
            let mut off = start + u64::from(next);
            let end = start + len as u64;
            let mut buf = vec![0u8; HASH_CHUNK.min(len)];
            while off < end {
                let n = ((end - off) as usize).min(buf.len());
                self.storage.read_at(off, &mut buf[..n])?;
                hasher.update(&buf[..n]);
                off += n as u64;
            }
        }
        let digest = hasher.finish();
        let expected = self.info.hashes[index as usize];
        let mut g = self.lock();
        let v = g
            .torrent
            .verify_digest(index, &digest, &expected)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.piece_verdict(g, index, v);
        Ok(())
    }

    /// Acts on a verdict while still holding the lock `verify_digest` ran
    /// under, so that counts and completion are updated in the order pieces
    /// passed (a second lock would let a later piece complete the torrent
    /// first). The torrent has queued the haves, and banned senders by its
    /// reputation rule; their addresses are banned here.
    fn piece_verdict(&self, mut g: MutexGuard<'_, Shared>, index: u32, v: PieceOutcome) {
        g.wake();
        match v {
            PieceOutcome::Passed { complete } => {
                let (_, len) = self.storage.piece_range(index);
                self.stats.verified.fetch_add(len as u64, Relaxed);
                let n = self.stats.fetched_pieces.fetch_add(1, Relaxed) + 1;
                drop(g);
                if complete {
                    self.complete.store(true, Relaxed);
                    self.done.notify_one();
                } else if self.max_pieces.is_some_and(|m| n >= m) {
                    // Debug aid for resume tests: stop dead, like a crash
                    // (blocks in flight stay on disk unverified).
                    println!("stopped after {n} pieces (--max-pieces)");
                    std::process::exit(0);
                }
            }
            PieceOutcome::Failed { banned } => {
                self.stats.hash_failures.fetch_add(1, Relaxed);
                let addrs: Vec<SocketAddr> = banned
                    .iter()
                    .filter_map(|k| g.peers.get(k).map(|c| c.addr))
                    .collect();
                drop(g);
                tracing::warn!(index, "piece failed its hash check");
                for a in addrs {
                    self.ban(a, "sent data that failed the hash check");
                }
            }
            PieceOutcome::NeedsData { .. } => {}
        }
    }
}

/// Why a connection ended.
enum End {
    /// The peer broke the protocol: ban it.
    Protocol(String),
    /// I/O error, EOF, timeout, or we chose to close.
    Closed(String),
}

/// Runs one connection (outgoing or accepted) until it ends; bans peers
/// that break the protocol.
pub async fn peer_task(
    ctx: Arc<Ctx>,
    stream: TcpStream,
    addr: SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
    inbound: Option<(Handshake, Vec<u8>)>,
) {
    if !ctx.lock().connected.insert(addr) {
        return;
    }
    let _ = stream.set_nodelay(true);
    ctx.stats.peers.fetch_add(1, Relaxed);
    let mut seed = false;
    let r = run_peer(&ctx, &stream, addr, &mut seed, inbound).await;
    ctx.stats.peers.fetch_sub(1, Relaxed);
    if seed {
        ctx.stats.seeds.fetch_sub(1, Relaxed);
    }
    ctx.lock().connected.remove(&addr);
    match r {
        End::Protocol(why) => ctx.ban(addr, &why),
        End::Closed(why) => tracing::debug!(%addr, "closed: {why}"),
    }
    drop(permit);
}

fn closed(e: impl std::fmt::Display) -> End {
    End::Closed(e.to_string())
}

/// Reads what is there into `buf[*filled..]`; `Ok(false)` on EOF.
fn try_fill(stream: &TcpStream, buf: &mut [u8], filled: &mut usize) -> Result<bool, End> {
    while *filled < buf.len() {
        match stream.try_read(&mut buf[*filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => *filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(closed(e)),
        }
    }
    Ok(true)
}

/// Runs one connection. `inbound`: the session already read the peer's
/// handshake (and these bytes after it) to route it here.
async fn run_peer(
    ctx: &Arc<Ctx>,
    stream: &TcpStream,
    addr: SocketAddr,
    seed_flag: &mut bool,
    inbound: Option<(Handshake, Vec<u8>)>,
) -> End {
    let pieces = ctx.info.pieces();
    let max_len = max_message_len_for(pieces);
    let mut rbuf = vec![0u8; READ_BUF.max(2 * max_len)];
    let mut filled = 0usize;
    let mut framer = if inbound.is_some() {
        Framer::new(max_len)
    } else {
        Framer::with_handshake(max_len)
    };
    let reserved = Reserved::default()
        .with_fast(true)
        .with_extension_protocol(true);
    let ours = Handshake {
        reserved,
        info_hash: ctx.info.info_hash,
        peer_id: ctx.peer_id,
    };
    let mut out: Vec<u8> = Vec::with_capacity(OUT_HIGH_WATER + (64 << 10));
    out.extend_from_slice(&ours.to_bytes());
    let mut out_pos = 0usize;

    // Handshake: send ours, read theirs (10 s) — or theirs came first.
    let theirs = if let Some((h, rest)) = inbound {
        let n = rest.len().min(rbuf.len());
        rbuf[..n].copy_from_slice(&rest[..n]);
        filled = n;
        h
    } else {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Err(e) = flush(stream, &out, &mut out_pos) {
                return e;
            }
            match framer.parse(&rbuf[..filled]) {
                Ok(Status::Complete((Frame::Handshake(h), n))) => {
                    rbuf.copy_within(n..filled, 0);
                    filled -= n;
                    break h;
                }
                Ok(Status::Complete(_)) => return End::Protocol("no handshake".into()),
                Ok(Status::Partial) => {}
                // Not a ban: e.g. an encrypted (MSE) attempt before a plain retry.
                Err(e) => return closed(format!("handshake: {e}")),
            }
            tokio::select! {
                r = stream.readable() => {
                    if let Err(e) = r { return closed(e) }
                    match try_fill(stream, &mut rbuf, &mut filled) {
                        Ok(true) => {}
                        Ok(false) => return closed("eof during handshake"),
                        Err(e) => return e,
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return closed("handshake timeout"),
            }
        }
    };
    if theirs.info_hash != ctx.info.info_hash {
        return closed("wrong info-hash");
    }
    if theirs.peer_id == ctx.peer_id {
        return closed("connected to ourselves");
    }
    let fast = theirs.reserved.fast();
    let ext = theirs.reserved.extension_protocol();

    // Register.
    let notify = Arc::new(Notify::new());
    let key = {
        let mut g = ctx.lock();
        let key = match g.torrent.add_peer(ctx.now()) {
            Ok(k) => k,
            Err(e) => return closed(e),
        };
        g.peers.insert(
            key,
            PeerCtl {
                addr,
                notify: notify.clone(),
                kill: false,
            },
        );
        key
    };
    let bits = vec![0u8; (pieces as usize).div_ceil(8)];
    let cfg = PeerConfig {
        pipeline: PIPELINE,
        ..PeerConfig::default()
    };
    let session = PeerSession::new(key, bits, pieces, fast, cfg, ctx.now());
    let mut session = match session {
        Ok(s) => s,
        Err(e) => {
            let mut g = ctx.lock();
            g.peers.remove(&key);
            // No session yet: a blank one of the same key frees the slot.
            if let Ok(blank) = PeerSession::new(key, vec![0; 0], 0, false, cfg, ctx.now()) {
                g.torrent.remove_peer(ctx.now(), &blank);
            }
            return closed(e);
        }
    };
    let mut tmp = vec![0u8; (16usize << 10).max(pieces as usize / 8 + 64)];
    let mut reqs: VecDeque<BlockRequest> = VecDeque::new();
    let mut writes: Vec<BlockWrite> = Vec::new();
    // Blocks being written: the read buffer they sit in, handed back with
    // the (emptied) write list when done. `spare` is the second buffer.
    type Written = (Vec<u8>, Vec<BlockWrite>, std::io::Result<()>);
    let mut pending: Option<tokio::task::JoinHandle<Written>> = None;
    let mut spare: Option<Vec<u8>> = None;
    let mut spare_writes: Vec<BlockWrite> = Vec::new();
    // Payload bytes to this peer not yet added to its rate window.
    let mut up_acc = 0u64;
    let mut ext_pending = ext;
    let mut first = true;
    let end = loop {
        // 1. Frames in the read buffer → session (under the lock).
        let now = ctx.now();
        let mut pos = 0usize;
        let mut err = None;
        {
            let mut g = ctx.lock();
            let g = &mut *g;
            loop {
                let frame = match framer.parse(&rbuf[pos..filled]) {
                    Ok(Status::Complete((Frame::Message(m), n))) => (m, n),
                    Ok(Status::Complete(_)) => {
                        err = Some(End::Protocol("second handshake".into()));
                        break;
                    }
                    Ok(Status::Partial) => break,
                    Err(e) => {
                        err = Some(End::Protocol(format!("wire: {e}")));
                        break;
                    }
                };
                let (msg, n) = frame;
                tracing::trace!(%addr, id = ?msg.id(), "recv");
                let h = match g.torrent.handle_message(now, &mut session, msg) {
                    Ok(h) => h,
                    Err(e) => {
                        err = Some(End::Protocol(e.to_string()));
                        break;
                    }
                };
                match h {
                    Handled::Block {
                        request,
                        data,
                        received,
                    } if !received.duplicate => {
                        writes.push(BlockWrite {
                            index: request.index,
                            begin: request.begin,
                            start: data.as_ptr() as usize - rbuf.as_ptr() as usize,
                            len: data.len(),
                        });
                        // Verified once every block (from any peer) is on disk.
                        g.unwritten.queued(request.index, received.piece_complete);
                    }
                    Handled::Request(r) => {
                        if reqs.len() < MAX_PEER_REQUESTS {
                            reqs.push_back(r);
                        } else if session.reject(r).is_err() {
                            // BEP 6 rejects past our advertised `reqq` fill
                            // the control queue: a peer that keeps asking
                            // beyond it is dropped.
                            return End::Protocol("too many requests past our reqq".into());
                        }
                    }
                    Handled::Cancel(r) => reqs.retain(|x| *x != r),
                    Handled::Extended { id: 0, payload } => {
                        if let Ok(h) = ExtensionHandshake::decode(payload) {
                            if let Some(q) = h.reqq {
                                session.set_peer_reqq(q);
                            }
                        }
                    }
                    _ => {}
                }
                pos += n;
            }
            // End-game cancels the torrent queued for other peers.
            g.wake();
        }
        // 2. Store the blocks: positional writes straight from the buffer
        // (and SHA-1) on a blocking thread while this task reads the next
        // batch into the other buffer. One batch in flight per peer, so
        // writes stay in order; a piece is verified once all its blocks,
        // from every peer, are on disk (`Shared::unwritten`).
        if writes.is_empty() {
            rbuf.copy_within(pos..filled, 0);
            filled -= pos;
        } else {
            let mut next = match pending.take() {
                Some(h) => match h.await {
                    Ok((buf, w, res)) => {
                        spare_writes = w;
                        if let Err(e) = res {
                            // A disk that fails (full, gone, read-only)
                            // fails the torrent, not just this peer.
                            ctx.fail(format!("write {e}"));
                            err.get_or_insert(closed(e));
                        }
                        buf
                    }
                    Err(e) => break closed(e),
                },
                None => spare.take().unwrap_or_else(|| vec![0u8; rbuf.len()]),
            };
            next[..filled - pos].copy_from_slice(&rbuf[pos..filled]);
            let full = std::mem::replace(&mut rbuf, next);
            filled -= pos;
            let batch = std::mem::replace(&mut writes, std::mem::take(&mut spare_writes));
            for &BlockWrite { len, .. } in &batch {
                ctx.stats.downloaded.fetch_add(len as u64, Relaxed);
            }
            let c = ctx.clone();
            pending = Some(tokio::task::spawn_blocking(move || {
                let mut res = Ok(());
                let mut n = 0;
                for &BlockWrite {
                    index,
                    begin,
                    start,
                    len,
                } in &batch
                {
                    let data = &full[start..start + len];
                    let off = u64::from(index) * c.info.piece_len + u64::from(begin);
                    if let Err(e) = c.storage.write_at(off, data) {
                        res = Err(e);
                        break;
                    }
                    // SHA-1 here, overlapped with the task reading the
                    // next batch, not under the shared lock.
                    c.hashes.written(index, begin, data);
                    n += 1;
                }
                for index in c.written(&batch, n) {
                    if let Err(e) = c.verify_piece(index) {
                        tracing::error!(index, "verify: {e}");
                    }
                }
                let mut batch = batch;
                batch.clear();
                (full, batch, res)
            }));
        }
        if let Some(e) = err {
            break e;
        }

        // 3. Outputs: announcements, cancels, choking, requests.
        let mut deadline;
        {
            let mut g = ctx.lock();
            let g = &mut *g;
            let Some(c) = g.peers.get(&key) else {
                break closed("unregistered");
            };
            if c.kill || g.torrent.should_close(key) {
                break closed("banned");
            }
            g.torrent.uploaded(key, std::mem::take(&mut up_acc));
            // The torrent applies its commands for this peer (cancels, the
            // choker's decision, haves) and the session writes.
            let was_choking = session.am_choking();
            if out.len() - out_pos < OUT_HIGH_WATER {
                let n = g.torrent.poll_transmit(now, &mut session, &mut tmp);
                out.extend_from_slice(&tmp[..n]);
            }
            g.wake();
            if was_choking != session.am_choking() {
                // The test of the choker reads these lines.
                let opt = g.torrent.choker().optimistic() == Some(key);
                tracing::debug!(
                    target: "ourtorrent::choke",
                    "{} {addr} (interested {}{})",
                    if was_choking { "unchoke" } else { "choke" },
                    session.peer_interested(),
                    if opt { ", optimistic" } else { "" }
                );
            }
            if session.am_choking() {
                // Requests queued before the choke: BEP 6 rejects each
                // (as many as the control queue takes now, the rest on the
                // next rounds), BEP 3 drops them.
                while let Some(&r) = reqs.front() {
                    if session.reject(r).is_err() {
                        break;
                    }
                    reqs.pop_front();
                }
            }
            while session.poll_event().is_some() {}
            let is_seed = session.peer_has().is_complete();
            if is_seed != *seed_flag {
                *seed_flag = is_seed;
                if is_seed {
                    ctx.stats.seeds.fetch_add(1, Relaxed);
                } else {
                    ctx.stats.seeds.fetch_sub(1, Relaxed);
                }
            }
            if g.torrent.is_complete() && is_seed {
                break closed("both complete");
            }
            deadline = session.poll_timeout(g.torrent.picker());
            if let Err(e) = session.handle_timeout(now, g.torrent.picker()) {
                break closed(e);
            }
        }
        if first && ext_pending {
            // BEP 10 handshake right after the bitfield.
            let h = ExtensionHandshake {
                v: Some(b"OurTorrent 0.1"),
                p: Some(ctx.listen.port()),
                reqq: Some(OUR_REQQ),
                ..ExtensionHandshake::default()
            };
            if let Ok(n) = h.encode(&mut tmp) {
                let m = Message::Extended {
                    id: 0,
                    payload: &tmp[..n],
                };
                let mut enc = vec![0u8; m.encoded_len() + 4];
                if let Ok(k) = m.encode(&mut enc) {
                    out.extend_from_slice(&enc[..k]);
                }
            }
            ext_pending = false;
        }
        first = false;
        // 4. Serve requests: header + data read straight into `out`, and
        // keep serving while the socket takes everything (up to
        // SERVE_BUDGET per wake-up, so reads and timers are not starved).
        let mut budget = SERVE_BUDGET;
        let mut stop = None;
        let mut read_failed = false;
        loop {
            while out.len() - out_pos < OUT_HIGH_WATER && budget > 0 && !session.am_choking() {
                let Some(r) = reqs.pop_front() else { break };
                let Ok(hdr) = piece_header(r.index, r.begin, r.length as usize) else {
                    continue;
                };
                let at = out.len();
                out.extend_from_slice(&hdr);
                out.resize(at + PIECE_HEADER_LEN + r.length as usize, 0);
                let off = u64::from(r.index) * ctx.info.piece_len + u64::from(r.begin);
                if let Err(e) = ctx.storage.read_at(off, &mut out[at + PIECE_HEADER_LEN..]) {
                    tracing::error!("read: {e}");
                    out.truncate(at);
                    read_failed = true;
                    break;
                }
                budget = budget.saturating_sub(r.length as usize);
                up_acc += u64::from(r.length);
                ctx.stats.uploaded.fetch_add(u64::from(r.length), Relaxed);
            }
            if let Err(e) = flush(stream, &out, &mut out_pos) {
                stop = Some(e);
            }
            if out_pos == out.len() {
                out.clear();
                out_pos = 0;
            } else if out_pos > OUT_HIGH_WATER {
                out.drain(..out_pos);
                out_pos = 0;
            }
            // Stop when the socket is full (wait for writable), nothing is
            // left, the budget is spent (the loop comes straight back: the
            // socket is still writable) or on an error.
            if stop.is_some() || read_failed || !out.is_empty() || reqs.is_empty() || budget == 0 {
                break;
            }
        }
        if let Some(e) = stop {
            break e;
        }

        // 5. Wait for the socket, a wake-up or the timer (≤ 1 s).
        let now = ctx.now();
        if deadline.millis() > now.millis() + 1000 {
            deadline = now.add_millis(1000);
        }
        let sleep = Duration::from_millis(deadline.millis().saturating_sub(now.millis()));
        // Queued requests count as output: with the socket still writable
        // `writable()` is ready at once and the loop serves the next batch.
        let want_write = out_pos < out.len() || !reqs.is_empty();
        let want_read = filled < rbuf.len();
        tokio::select! {
            r = stream.readable(), if want_read => {
                if let Err(e) = r { break closed(e) }
                match try_fill(stream, &mut rbuf, &mut filled) {
                    Ok(true) => {}
                    Ok(false) => break closed("eof"),
                    Err(e) => break e,
                }
            }
            r = stream.writable(), if want_write => {
                if let Err(e) = r { break closed(e) }
            }
            _ = notify.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    };
    let mut g = ctx.lock();
    g.peers.remove(&key);
    // Its pieces, requests and upload slot go back to the torrent.
    g.torrent.remove_peer(ctx.now(), &session);
    g.wake();
    end
}

/// Writes as much of `out[*pos..]` as the socket takes now.
fn flush(stream: &TcpStream, out: &[u8], pos: &mut usize) -> Result<(), End> {
    while *pos < out.len() {
        match stream.try_write(&out[*pos..]) {
            Ok(0) => return Err(closed("write returned 0")),
            Ok(n) => *pos += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(closed(e)),
        }
    }
    Ok(())
}

/// Connects to candidate addresses as connection slots free up.
pub async fn connector(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<SocketAddr>) {
    while let Some(addr) = rx.recv().await {
        if addr == ctx.listen
            || (addr.port() == ctx.listen.port()
                && (addr.ip().is_loopback() || addr.ip().is_unspecified()))
            || ctx.is_banned(&addr)
            || ctx.lock().connected.contains(&addr)
        {
            continue;
        }
        let Ok(permit) = ctx.conns.clone().acquire_owned().await else {
            return;
        };
        let c = ctx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => peer_task(c, s, addr, permit, None).await,
                Ok(Err(e)) => tracing::debug!(%addr, "connect: {e}"),
                Err(_) => tracing::debug!(%addr, "connect: timeout"),
            }
        });
    }
}
