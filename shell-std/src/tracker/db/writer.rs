//! The writer thread: it owns the connection, appends each batch the
//! shell sends to the journal, in order, and takes a checkpoint when the
//! journal since the last one is long enough and at a clean stop; plus
//! its policy and the figures it keeps for `/stats` and `/metrics`.
//!
//! Limits: one batch in flight at a time is what the shell sends (it holds
//! the next one back while [`Writer::busy`]); a failed write or
//! checkpoint is reported, never fatal.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use rusqlite::Connection;

use super::checkpoint::{
    checkpoint, CheckpointDone, Parts, Step, CHECKPOINT_PART_PEERS, SHUTDOWN_CHECKPOINT_MAX_PEERS,
};
use super::journal::{write, Appended};
use crate::tracker::swarm::Batch;

/// Scheduling niceness of the writer thread: behind the UDP workers, yet
/// with ~10% of a contended core (CFS weight 110 against 1024), enough for
/// ~50k rows/s here; at 19 (~1.5%) it fell behind under a full load.
pub const WRITER_NICE: i32 = 10;

/// Upper bounds, in seconds, of the flush-latency histogram's buckets.
pub const FLUSH_BUCKETS: [f64; 8] = [0.001, 0.0025, 0.01, 0.025, 0.1, 0.25, 1.0, 5.0];

/// How long the writer's transactions take (a histogram over
/// [`FLUSH_BUCKETS`]), updated by the writer thread, read by `/metrics`.
#[derive(Debug, Default)]
pub struct FlushLatency {
    /// Count per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; FLUSH_BUCKETS.len() + 1],
    sum_us: AtomicU64,
    rows: AtomicU64,
    failed: AtomicU64,
}

/// A copy of [`FlushLatency`] for reporting.
#[derive(Clone, Debug, PartialEq)]
pub struct FlushSnapshot {
    /// Cumulative counts, one per bucket of [`FLUSH_BUCKETS`] then `+Inf`.
    pub cumulative: Vec<u64>,
    /// Total seconds spent writing.
    pub sum_secs: f64,
    /// Rows written.
    pub rows: u64,
    /// Batches that failed.
    pub failed: u64,
}

impl FlushLatency {
    /// Records one transaction of `rows` rows that took `d`.
    pub fn record(&self, d: std::time::Duration, rows: usize, ok: bool) {
        let secs = d.as_secs_f64();
        let i = FLUSH_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(FLUSH_BUCKETS.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        if ok {
            self.rows.fetch_add(rows as u64, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The current figures.
    pub fn snapshot(&self) -> FlushSnapshot {
        let mut acc = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Ordering::Relaxed);
                acc
            })
            .collect();
        FlushSnapshot {
            cumulative,
            sum_secs: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            rows: self.rows.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// Bytes the database takes on disk (the file and its WAL).
pub fn size_on_disk(db: &Path) -> u64 {
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    len(db) + len(Path::new(&wal))
}

/// Journal and checkpoint figures, updated by the writer thread (and the
/// loader at start), read by `/stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct JournalStats {
    /// Journal rows appended.
    pub rows: AtomicU64,
    /// Bytes of their bodies.
    pub bytes: AtomicU64,
    /// Records in them.
    pub records: AtomicU64,
    /// Checkpoints completed.
    pub checkpoints: AtomicU64,
    /// Checkpoints that failed.
    pub checkpoint_failures: AtomicU64,
    /// Duration of the last checkpoint, microseconds.
    pub last_checkpoint_us: AtomicU64,
    /// Peers in the last checkpoint.
    pub last_checkpoint_peers: AtomicU64,
    /// Longest a shard was locked for a copy in the last checkpoint, µs.
    pub last_checkpoint_lock_us: AtomicU64,
    /// Records replayed at start.
    pub replayed: AtomicU64,
    /// Journal rows that did not decode at start.
    pub bad_rows: AtomicU64,
    /// Checkpoint chunks that did not decode at start.
    pub bad_chunks: AtomicU64,
    /// Records appended since the last checkpoint.
    pub since_checkpoint: AtomicU64,
}

impl JournalStats {
    fn add(&self, a: &Appended) {
        self.rows.fetch_add(a.rows, Ordering::Relaxed);
        self.bytes.fetch_add(a.bytes, Ordering::Relaxed);
        self.records.fetch_add(a.records, Ordering::Relaxed);
        self.since_checkpoint
            .fetch_add(a.records, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// When the writer takes a checkpoint.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointPolicy {
    /// Records since the last checkpoint that start one, at least (see
    /// [`DEFAULT_CHECKPOINT_RECORDS`](super::DEFAULT_CHECKPOINT_RECORDS)); the peer count is the other bound.
    pub min_records: u64,
    /// The flush interval: during a checkpoint the writer appends the
    /// journal this often too.
    pub flush_every: std::time::Duration,
}

/// Takes a checkpoint of the live shards (each locked only to copy it).
fn checkpoint_shards(
    conn: &mut Connection,
    shards: &crate::tracker::state::Shards,
    stats: &JournalStats,
    flush_every: std::time::Duration,
) -> Result<CheckpointDone> {
    let start = std::time::Instant::now();
    let mut appended_at = start;
    let mut lock_us = 0u64;
    let mut parts = Parts::new(CHECKPOINT_PART_PEERS);
    let done = checkpoint(
        conn,
        |_| {
            let t = std::time::Instant::now();
            let c = parts.next(|i| shards.lock_index(i));
            lock_us = lock_us.max(t.elapsed().as_micros() as u64);
            c
        },
        |conn, step| {
            match step {
                // The shards' logs are in the journal: count them at once.
                Step::Copied(_, a) => stats.add(&a),
                // Meanwhile the journal goes on as at every flush.
                Step::Chunk if appended_at.elapsed() >= flush_every => {
                    let mut b = Batch::default();
                    for i in 0..shards.len() {
                        if let Some(mut s) = shards.lock_index(i) {
                            let part = s.take_batch();
                            b.peers.extend(part.peers);
                            b.torrents.extend(part.torrents);
                        }
                    }
                    stats.add(&write(conn, &b)?);
                    appended_at = std::time::Instant::now();
                }
                _ => {}
            }
            Ok(true)
        },
    )?
    .context("checkpoint stopped")?;
    // Records appended during the checkpoint are in it.
    stats.since_checkpoint.store(0, Ordering::Relaxed);
    stats.checkpoints.fetch_add(1, Ordering::Relaxed);
    stats
        .last_checkpoint_us
        .store(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    stats
        .last_checkpoint_peers
        .store(done.peers, Ordering::Relaxed);
    stats
        .last_checkpoint_lock_us
        .store(lock_us, Ordering::Relaxed);
    Ok(done)
}

fn peer_count(shards: &crate::tracker::state::Shards) -> usize {
    (0..shards.len())
        .filter_map(|i| shards.lock_index(i).map(|s| s.peer_count()))
        .sum()
}

/// The writer thread: appends each batch it receives to the journal, in
/// order, until the sender is dropped, and takes a checkpoint when the
/// journal since the last one is long enough (see the [`db`](super)
/// docs) and at a clean stop. A failed write is logged, never fatal (the in-memory
/// tracker keeps serving). [`Writer::busy`] lets the shell hold the next
/// batch back while one is being written or a checkpoint runs: the swarm's
/// change logs keep coalescing meanwhile, so memory stays bounded when
/// SQLite is slower than the flush interval.
pub struct Writer {
    tx: Option<mpsc::Sender<Batch>>,
    thread: Option<JoinHandle<()>>,
    in_flight: Arc<AtomicUsize>,
    latency: Arc<FlushLatency>,
    journal: Arc<JournalStats>,
}

impl Writer {
    /// Starts the thread over `shards` (for checkpoints); `stats` carries
    /// the loader's figures; `on_error` is called for each failure.
    pub fn spawn(
        mut conn: Connection,
        shards: Arc<crate::tracker::state::Shards>,
        policy: CheckpointPolicy,
        stats: Arc<JournalStats>,
        on_error: impl Fn(&str) + Send + 'static,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Batch>();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let done = in_flight.clone();
        let latency = Arc::new(FlushLatency::default());
        let lat = latency.clone();
        let journal = stats.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                // Behind the hot path on a busy core too: the UDP workers
                // get the CPU first; changes queue in the swarm meanwhile.
                let _ = rustix::process::setpriority_process(
                    Some(rustix::thread::gettid()),
                    WRITER_NICE,
                );
                for b in rx {
                    let start = std::time::Instant::now();
                    let result = write(&mut conn, &b);
                    lat.record(start.elapsed(), b.rows(), result.is_ok());
                    match result {
                        Ok(a) => stats.add(&a),
                        Err(e) => on_error(&format!("journal append: {e:#}")),
                    }
                    let since = JournalStats::get(&stats.since_checkpoint);
                    if since >= policy.min_records.max(peer_count(&shards) as u64) {
                        if let Err(e) =
                            checkpoint_shards(&mut conn, &shards, &stats, policy.flush_every)
                        {
                            stats.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
                            // Retry after another threshold of records, not
                            // at every flush (each try copies every shard).
                            stats.since_checkpoint.store(0, Ordering::Relaxed);
                            on_error(&format!("checkpoint: {e:#}"));
                        }
                    }
                    done.fetch_sub(1, Ordering::AcqRel);
                }
                // A clean stop: fold the journal into a checkpoint if that
                // is cheap, then the WAL back into the main file.
                if JournalStats::get(&stats.since_checkpoint) > 0
                    && peer_count(&shards) <= SHUTDOWN_CHECKPOINT_MAX_PEERS
                {
                    if let Err(e) =
                        checkpoint_shards(&mut conn, &shards, &stats, policy.flush_every)
                    {
                        on_error(&format!("checkpoint at stop: {e:#}"));
                    }
                }
                let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
            })?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            in_flight,
            latency,
            journal,
        })
    }

    /// The flush-latency figures this writer keeps.
    pub fn latency(&self) -> Arc<FlushLatency> {
        self.latency.clone()
    }

    /// The journal and checkpoint figures.
    pub fn journal(&self) -> Arc<JournalStats> {
        self.journal.clone()
    }

    /// True while a batch is queued or being written (or a checkpoint
    /// runs).
    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Queues a batch (ignored if empty).
    pub fn send(&self, b: Batch) {
        if !b.is_empty() {
            if let Some(tx) = &self.tx {
                self.in_flight.fetch_add(1, Ordering::AcqRel);
                if tx.send(b).is_err() {
                    self.in_flight.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// Waits for every queued batch to be written (and the checkpoint at
    /// stop).
    pub fn finish(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
