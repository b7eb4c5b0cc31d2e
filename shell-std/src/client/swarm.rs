//! One torrent's shared state behind one mutex: the core's
//! [`Torrent`] (picker, choker, reputation, have log, cancels), the shell's
//! record of each connected peer (address, wake-up [`Notify`], address
//! ban), the [`AddressBook`] and the pieces whose blocks are still on
//! their way to disk ([`PendingWrites`]). Peer tasks (`super::peer`) lock
//! it only to run the core's state machines, never across an await, a
//! disk access or SHA-1: pieces are hashed by the writing threads as their
//! blocks land ([`PieceHashes`]) and verified there once every peer's
//! blocks of the piece are on disk.
//!
//! Also here: the [`dialer`] (booked addresses, while the torrent and the
//! session have free connection slots), the 1 s tick (request timeouts and
//! rechokes through [`Torrent::handle_timeout`]), and the verdicts on
//! pieces (bans by address for the senders the torrent's reputation rule
//! convicts).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ourtorrent_core::choker::Candidate;
use ourtorrent_core::id::PeerId;
use ourtorrent_core::pieces::{BlockSlot, PeerKey, PickerStorage, Slot};
use ourtorrent_core::time::Instant;
use ourtorrent_core::torrent::{PeerEntry, PieceOutcome, Torrent, TorrentStorage};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};

use super::meta::Info;
use super::peer::writes::BlockWrite;
use super::peers::{AddressBook, Source};
use super::stats::TorrentStats;
use super::storage::Storage;
use super::writes::{Next, PendingWrites, PieceHashes};

/// Pieces are read back for hashing in reads of this size.
pub const HASH_CHUNK: usize = 256 << 10;

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
    /// Where the peer accepts connections (the address dialled, or an
    /// inbound peer's IP with its BEP 10 `p`): what PEX tells others.
    reachable: Option<SocketAddr>,
    notify: Arc<Notify>,
    /// Banned by address (a protocol error, or a bad piece from any of its
    /// connections): close.
    kill: bool,
}

/// The torrent's storage in this shell: boxed slices it owns, sized when
/// the torrent starts (no leak, no const generics).
pub struct Heap;

impl PickerStorage for Heap {
    type Have = Box<[u8]>;
    type Counts = Box<[u16]>;
    type Slots = Box<[Slot]>;
    type Blocks = Box<[BlockSlot]>;
    type Flight = Box<[u16]>;
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
    /// Every address learned, its state, backoff and ban.
    pub(crate) book: AddressBook,
    /// Pieces with blocks not yet on disk.
    pub(crate) unwritten: PendingWrites,
}

impl Shared {
    /// The peer's connection ends: the shell forgets it.
    pub(crate) fn forget(&mut self, key: PeerKey) {
        self.peers.remove(&key);
    }

    /// The peer was banned by address: its connection must close.
    pub(crate) fn is_killed(&self, key: PeerKey) -> bool {
        self.peers.get(&key).is_none_or(|c| c.kill)
    }

    /// Records where the peer `key` accepts connections.
    pub(crate) fn set_reachable(&mut self, key: PeerKey, addr: SocketAddr) {
        if let Some(c) = self.peers.get_mut(&key) {
            c.reachable = Some(addr);
        }
    }

    /// Where the connected peers accept connections (those we know), but
    /// `except`'s.
    pub(crate) fn reachable_peers(&self, except: PeerKey) -> Vec<SocketAddr> {
        self.peers
            .iter()
            .filter(|(k, c)| **k != except && !c.kill)
            .filter_map(|(_, c)| c.reachable)
            .collect()
    }

    /// Wakes the tasks of the peers the torrent has commands for.
    pub(crate) fn wake(&mut self) {
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
    /// Wakes the dialer (new addresses, a connection ended).
    pub dial: Notify,
    /// Turns true when the torrent is stopped: its dialer, timer and peer
    /// tasks end (the others of the session go on).
    stop: tokio::sync::watch::Sender<bool>,
    /// Set when the torrent's storage failed (a write error naming the
    /// file and the cause): the download stops, `done` wakes the main task.
    pub failed: Mutex<Option<String>>,
    /// Rate limits: this torrent's, and the session's once added to one.
    pub limits: super::rate::Limits,
    /// Each file's priority (`super::select`; empty: every file normal).
    pub priorities: Mutex<Vec<super::select::Priority>>,
    /// Wakes every waiter each time a piece passes its hash check (the
    /// daemon's streams wait on it for the bytes at their read position).
    pub piece_passed: Notify,
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
        // Complete for what is wanted (every piece when no file is skipped).
        let complete = torrent.picker().wanted_complete();
        let stats = Stats::default();
        stats.verified.store(verified, Relaxed);
        Ctx {
            shared: Mutex::new(Shared {
                torrent,
                peers: HashMap::new(),
                book: AddressBook::default(),
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
            dial: Notify::new(),
            stop: tokio::sync::watch::Sender::new(false),
            limits: super::rate::Limits::default(),
            priorities: Mutex::new(Vec::new()),
            piece_passed: Notify::new(),
        }
    }

    /// Stops this torrent alone: its dialer and timer end, and every peer
    /// task closes its connection at its next round (woken now).
    pub fn stop(&self) {
        self.stop.send_replace(true);
        let g = self.lock();
        for c in g.peers.values() {
            c.notify.notify_one();
        }
        drop(g);
        self.dial.notify_one();
    }

    /// Sets this torrent's own rate limits in bytes/s (0: unlimited); in
    /// force at once. The session's limits apply too
    /// ([`super::session::Session::set_rate_limits`]): the smaller wins.
    pub fn set_rate_limits(&self, down: u64, up: u64) {
        self.limits.torrent.set(down, up);
    }

    /// True once [`Self::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Completes when the torrent is stopped.
    pub async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
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

    /// This torrent now, for the front ends.
    pub fn snapshot(&self) -> TorrentStats {
        let g = self.lock();
        let have = g.torrent.picker().have();
        let book = g.book.stats();
        TorrentStats {
            name: self.info.name.clone(),
            info_hash: self.info.info_hash,
            total: self.info.total,
            verified: self.stats.verified.load(Relaxed),
            pieces: have.len(),
            pieces_verified: have.count(),
            fetched: self.stats.fetched_pieces.load(Relaxed),
            downloaded: self.stats.downloaded.load(Relaxed),
            uploaded: self.stats.uploaded.load(Relaxed),
            peers: self.stats.peers.load(Relaxed),
            seeds: self.stats.seeds.load(Relaxed),
            hash_failures: self.stats.hash_failures.load(Relaxed),
            banned: book.banned as u32,
            complete: self.complete.load(Relaxed),
            failed: self.failure(),
            known: book.known,
            connected_by: book.connected_by,
        }
    }

    /// The addresses of the connected peers (for the daemon's API).
    pub fn peer_addrs(&self) -> Vec<SocketAddr> {
        self.lock().peers.values().map(|c| c.addr).collect()
    }

    /// Which pieces are verified, one flag per piece (the daemon's fast
    /// resume saves it).
    pub fn have_flags(&self) -> Vec<bool> {
        let g = self.lock();
        let have = g.torrent.picker().have();
        (0..have.len()).map(|i| have.get(i)).collect()
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

    /// Marks `addr` connected; false if it already is (one connection per
    /// address and torrent).
    pub fn connected(&self, addr: SocketAddr, source: Source) -> bool {
        self.lock()
            .book
            .connected(addr, source, std::time::Instant::now())
    }

    /// `addr`'s connection ended; `failed`: it never got past the handshake.
    pub fn disconnected(&self, addr: SocketAddr, failed: bool) {
        self.lock()
            .book
            .disconnected(addr, failed, std::time::Instant::now());
        self.dial.notify_one();
    }

    /// Peers learned from `source` (a tracker's reply, `--peer`): booked,
    /// ourselves skipped, and the dialer woken.
    pub fn learn(&self, addrs: &[SocketAddr], source: Source) {
        let now = std::time::Instant::now();
        let mut g = self.lock();
        for &a in addrs {
            let ours = a == self.listen
                || (a.port() == self.listen.port()
                    && (a.ip().is_loopback() || a.ip().is_unspecified()));
            if !ours {
                g.book.add(a, source, now);
            }
        }
        drop(g);
        self.dial.notify_one();
    }

    /// A peer past its handshake: its key in the torrent, and the shell's
    /// record of it.
    pub fn register(
        &self,
        addr: SocketAddr,
        notify: Arc<Notify>,
    ) -> Result<PeerKey, ourtorrent_core::torrent::TorrentError> {
        let mut g = self.lock();
        let key = g.torrent.add_peer(self.now())?;
        g.peers.insert(
            key,
            PeerCtl {
                addr,
                reachable: None,
                notify,
                kill: false,
            },
        );
        Ok(key)
    }

    /// True if `addr` is banned.
    pub fn is_banned(&self, addr: &SocketAddr) -> bool {
        self.lock().book.is_banned(addr)
    }

    /// Bans `addr` and disconnects it.
    pub fn ban(&self, addr: SocketAddr, why: &str) {
        let mut g = self.lock();
        if g.book.ban(addr, std::time::Instant::now()) {
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
    pub(crate) fn written(&self, batch: &[BlockWrite], written: usize) -> Vec<u32> {
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
    pub(crate) fn verify_piece(&self, index: u32) -> std::io::Result<()> {
        let mut hasher = self.hashes.take(index);
        let next = hasher.hashed();
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
                // Done once every wanted piece is (selective download).
                let complete = complete || g.torrent.picker().wanted_complete();
                let (_, len) = self.storage.piece_range(index);
                self.stats.verified.fetch_add(len as u64, Relaxed);
                let n = self.stats.fetched_pieces.fetch_add(1, Relaxed) + 1;
                drop(g);
                self.piece_passed.notify_waiters();
                if complete {
                    self.complete.store(true, Relaxed);
                    self.done.notify_one();
                } else if self.max_pieces.is_some_and(|m| n >= m) {
                    // Debug aid for resume tests: the main task stops the
                    // process (blocks in flight stay on disk unverified).
                    self.done.notify_one();
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

/// Time allowed for a TCP connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Dials booked addresses while the torrent has free connection slots
/// (and the session too), woken by new addresses and ended connections,
/// and at least every second (backoffs expire).
pub async fn dialer(ctx: Arc<Ctx>, global: Arc<Semaphore>) {
    while !ctx.is_stopped() {
        let free = ctx
            .conns
            .available_permits()
            .min(global.available_permits());
        let picks = if free == 0 {
            Vec::new()
        } else {
            ctx.lock().book.to_dial(std::time::Instant::now(), free)
        };
        for addr in picks {
            let (Ok(local), Ok(global)) = (
                ctx.conns.clone().try_acquire_owned(),
                global.clone().try_acquire_owned(),
            ) else {
                break;
            };
            if !ctx.connected(addr, Source::Tracker) {
                continue;
            }
            let c = ctx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                    Ok(Ok(s)) => {
                        super::peer::peer_task(c, s, addr, (local, global), None).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, "connect: {e}");
                        c.lock().book.dial_failed(addr, super::fetch::io_line(&e));
                        c.disconnected(addr, true);
                    }
                    Err(_) => {
                        tracing::debug!(%addr, "connect: timeout");
                        c.lock().book.dial_failed(addr, "timed out".into());
                        c.disconnected(addr, true);
                    }
                }
            });
        }
        tokio::select! {
            _ = ctx.dial.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
