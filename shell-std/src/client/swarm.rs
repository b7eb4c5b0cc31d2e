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

use ourtorrent_core::choker::{Candidate, Choker, ChokerConfig, Update};
use ourtorrent_core::id::PeerId;
use ourtorrent_core::peer::{Handled, PeerConfig, PeerSession};
use ourtorrent_core::pieces::{
    BlockRequest, BlockSlot, PeerKey, Picker, PickerStorage, Slot, Verdict,
};
use ourtorrent_core::time::Instant;
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

struct PeerCtl {
    addr: SocketAddr,
    notify: Arc<Notify>,
    cancels: Vec<BlockRequest>,
    kill: bool,
    /// The choker's decision, applied by the peer task.
    unchoke: bool,
    /// The peer is interested in us / snubs us (as its task last saw).
    interested: bool,
    snubbed: bool,
    connected_at: Instant,
    /// Kept for the choker (whose optimistic slot goes to the longest waiting).
    last_unchoked: Option<Instant>,
    /// Payload bytes from / to the peer since the last full rechoke.
    down: u64,
    up: u64,
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

/// The picker's storage in this shell: boxed slices it owns, sized when
/// the torrent starts (no leak, no const generics).
pub struct Heap;

impl PickerStorage for Heap {
    type Have = Box<[u8]>;
    type Counts = Box<[u16]>;
    type Slots = Box<[Slot]>;
    type Blocks = Box<[BlockSlot]>;
}

/// The picker of one torrent.
pub type StdPicker = Picker<Heap>;

/// State behind the mutex.
pub struct Shared {
    /// The core's picker (owns our bitfield and availability).
    pub picker: StdPicker,
    /// Pieces verified this session, in order: peer tasks announce them.
    completed: Vec<u32>,
    peers: HashMap<PeerKey, PeerCtl>,
    next_key: u16,
    banned: HashSet<SocketAddr>,
    connected: HashSet<SocketAddr>,
    /// Per address: pieces it contributed to that failed / passed.
    record: HashMap<SocketAddr, (u32, u32)>,
    /// Contributors of pieces in progress (for the record above).
    contrib: HashMap<u32, Vec<SocketAddr>>,
    /// Pieces with blocks not yet on disk.
    unwritten: PendingWrites,
    /// Who we upload to.
    choker: Choker,
    /// A peer came, left or changed interest: fill free slots.
    choke_dirty: bool,
    /// Start of the current rate window (the last full rechoke).
    rate_since: Instant,
}

impl Shared {
    /// Runs the choker if a rechoke is due or peers changed, and tells the
    /// peer tasks whose state flips.
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
        let mut cands: Vec<Candidate> = self
            .peers
            .iter()
            .map(|(&key, c)| Candidate {
                key,
                interested: c.interested,
                snubbed: c.snubbed,
                down_rate: c.down.saturating_mul(1000) / ms,
                up_rate: c.up.saturating_mul(1000) / ms,
                connected_at: c.connected_at,
                unchoked: c.unchoke,
                last_unchoked: c.last_unchoked,
            })
            .collect();
        let seeding = self.picker.is_complete();
        if self.choker.update(now, seeding, &mut cands) == Update::Rechoked {
            self.rate_since = now;
            for c in self.peers.values_mut() {
                c.down = 0;
                c.up = 0;
            }
        }
        for cand in cands {
            if let Some(c) = self.peers.get_mut(&cand.key) {
                c.last_unchoked = cand.last_unchoked;
                if c.unchoke != cand.unchoked {
                    c.unchoke = cand.unchoked;
                    c.notify.notify_one();
                }
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
        picker: StdPicker,
        storage: Storage,
        info: Info,
        peer_id: PeerId,
        max_pieces: Option<u32>,
        max_peers: usize,
        listen: SocketAddr,
        verified: u64,
        choker: ChokerConfig,
    ) -> Self {
        let complete = picker.is_complete();
        let stats = Stats::default();
        stats.verified.store(verified, Relaxed);
        Ctx {
            shared: Mutex::new(Shared {
                picker,
                completed: Vec::new(),
                peers: HashMap::new(),
                next_key: 0,
                banned: HashSet::new(),
                connected: HashSet::new(),
                record: HashMap::new(),
                contrib: HashMap::new(),
                unwritten: PendingWrites::default(),
                choker: Choker::new(choker),
                choke_dirty: false,
                rate_since: Instant::from_millis(0),
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
        self.lock().picker.have().count()
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
        g.rechoke(now);
        let mut dead = Vec::new();
        g.picker.handle_timeout(now, |k, r| dead.push((k, r)));
        for (k, r) in dead {
            if let Some(c) = g.peers.get_mut(&k) {
                if c.cancels.len() < MAX_PEER_REQUESTS {
                    c.cancels.push(r);
                }
                c.notify.notify_one();
            }
        }
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
                    g.picker.abandon(index);
                    g.contrib.remove(&index);
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
            .picker
            .verify_digest(index, &digest, &expected)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.piece_verdict(g, index, v);
        Ok(())
    }

    /// Acts on a verdict while still holding the lock `verify_digest` ran under, so
    /// that counts and completion are updated in the order pieces passed (a
    /// second lock would let a later piece complete the torrent first).
    fn piece_verdict(&self, mut g: MutexGuard<'_, Shared>, index: u32, v: Verdict) {
        let who = g.contrib.remove(&index).unwrap_or_default();
        match v {
            Verdict::Passed => {
                for a in &who {
                    g.record.entry(*a).or_default().1 += 1;
                }
                g.completed.push(index);
                for c in g.peers.values() {
                    c.notify.notify_one();
                }
                let (_, len) = self.storage.piece_range(index);
                self.stats.verified.fetch_add(len as u64, Relaxed);
                let n = self.stats.fetched_pieces.fetch_add(1, Relaxed) + 1;
                let complete = g.picker.is_complete();
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
            Verdict::Failed { .. } => {
                self.stats.hash_failures.fetch_add(1, Relaxed);
                let mut bans = Vec::new();
                for a in &who {
                    let r = g.record.entry(*a).or_default();
                    r.0 += 1;
                    // A lone sender of a bad piece is guilty; with several
                    // senders, ban whoever fails more often than it passes.
                    if who.len() == 1 || (r.0 >= 2 && r.0 > r.1) {
                        bans.push(*a);
                    }
                }
                drop(g);
                tracing::warn!(index, "piece failed its hash check");
                for a in bans {
                    self.ban(a, "sent data that failed the hash check");
                }
            }
            Verdict::NeedsData { .. } => {}
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
) {
    if !ctx.lock().connected.insert(addr) {
        return;
    }
    let _ = stream.set_nodelay(true);
    ctx.stats.peers.fetch_add(1, Relaxed);
    let mut seed = false;
    let r = run_peer(&ctx, &stream, addr, &mut seed).await;
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

async fn run_peer(
    ctx: &Arc<Ctx>,
    stream: &TcpStream,
    addr: SocketAddr,
    seed_flag: &mut bool,
) -> End {
    let pieces = ctx.info.pieces();
    let max_len = max_message_len_for(pieces);
    let mut rbuf = vec![0u8; READ_BUF.max(2 * max_len)];
    let mut filled = 0usize;
    let mut framer = Framer::with_handshake(max_len);
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

    // Handshake: send ours, read theirs (10 s).
    let theirs = {
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
    let (key, mut have_cursor) = {
        let mut g = ctx.lock();
        let mut k = g.next_key;
        while g.peers.contains_key(&PeerKey(k)) {
            k = k.wrapping_add(1);
        }
        g.next_key = k.wrapping_add(1);
        g.peers.insert(
            PeerKey(k),
            PeerCtl {
                addr,
                notify: notify.clone(),
                cancels: Vec::new(),
                kill: false,
                unchoke: false,
                interested: false,
                snubbed: false,
                connected_at: ctx.now(),
                last_unchoked: None,
                down: 0,
                up: 0,
            },
        );
        (PeerKey(k), g.completed.len())
    };
    let mut bits = vec![0u8; (pieces as usize).div_ceil(8)];
    let cfg = PeerConfig {
        pipeline: PIPELINE,
        ..PeerConfig::default()
    };
    let session = PeerSession::new(key, &mut bits, pieces, fast, cfg, ctx.now());
    let mut session = match session {
        Ok(s) => s,
        Err(e) => {
            ctx.lock().peers.remove(&key);
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
    // Payload bytes from / to this peer not yet added to its rate window.
    let (mut down_acc, mut up_acc) = (0u64, 0u64);
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
                let h = match session.handle_message(now, &mut g.picker, msg) {
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
                    } => {
                        if !received.duplicate {
                            writes.push(BlockWrite {
                                index: request.index,
                                begin: request.begin,
                                start: data.as_ptr() as usize - rbuf.as_ptr() as usize,
                                len: data.len(),
                            });
                            down_acc += data.len() as u64;
                            let who = g.contrib.entry(request.index).or_default();
                            if !who.contains(&addr) {
                                who.push(addr);
                            }
                            // Verified once every block (from any peer) is on disk.
                            g.unwritten.queued(request.index, received.piece_complete);
                        }
                        for k in received.cancel {
                            if let Some(c) = g.peers.get_mut(&k) {
                                c.cancels.push(request);
                                c.notify.notify_one();
                            }
                        }
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
            let Some(c) = g.peers.get_mut(&key) else {
                break closed("unregistered");
            };
            if c.kill {
                break closed("banned");
            }
            let cancels = std::mem::take(&mut c.cancels);
            for r in cancels {
                let _ = session.cancel(r);
            }
            // Choking: feed the choker this peer's state and rates, apply
            // its decision (it reruns now if the interest changed).
            c.down += std::mem::take(&mut down_acc);
            c.up += std::mem::take(&mut up_acc);
            let (interested, snubbed) = (session.peer_interested(), session.is_snubbed());
            if (interested, snubbed) != (c.interested, c.snubbed) {
                (c.interested, c.snubbed) = (interested, snubbed);
                g.choke_dirty = true;
            }
            g.rechoke(now);
            let unchoke = g.peers.get(&key).is_some_and(|c| c.unchoke);
            if unchoke == session.am_choking() {
                // The test of the choker reads these lines.
                let opt = g.choker.optimistic() == Some(key);
                tracing::debug!(
                    target: "ourtorrent::choke",
                    "{} {addr} (interested {interested}{})",
                    if unchoke { "unchoke" } else { "choke" },
                    if opt { ", optimistic" } else { "" }
                );
            }
            let _ = session.set_choking(!unchoke);
            if !unchoke {
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
            while let Some(&i) = g.completed.get(have_cursor) {
                have_cursor += 1;
                if session.send_have(&g.picker, i).is_err() {
                    break;
                }
            }
            if out.len() - out_pos < OUT_HIGH_WATER {
                let n = session.poll_transmit(now, &mut g.picker, &mut tmp);
                out.extend_from_slice(&tmp[..n]);
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
            if g.picker.is_complete() && is_seed {
                break closed("both complete");
            }
            deadline = session.poll_timeout(&g.picker);
            if let Err(e) = session.handle_timeout(now, &g.picker) {
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
    g.picker.peer_gone(key, session.peer_has());
    // Its slot may go to another peer.
    g.choke_dirty = true;
    g.rechoke(ctx.now());
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
                Ok(Ok(s)) => peer_task(c, s, addr, permit).await,
                Ok(Err(e)) => tracing::debug!(%addr, "connect: {e}"),
                Err(_) => tracing::debug!(%addr, "connect: timeout"),
            }
        });
    }
}

/// Accepts incoming connections while slots are free.
pub async fn acceptor(ctx: Arc<Ctx>, listener: tokio::net::TcpListener) {
    loop {
        let Ok((s, addr)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if ctx.is_banned(&addr) {
            continue;
        }
        let Ok(permit) = ctx.conns.clone().try_acquire_owned() else {
            continue;
        };
        tokio::spawn(peer_task(ctx.clone(), s, addr, permit));
    }
}
