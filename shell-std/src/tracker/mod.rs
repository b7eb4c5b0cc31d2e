//! `shell-std tracker`: a UDP (BEP 15) and HTTP (BEP 3/23/7/48) tracker.
//!
//! Who does what:
//! - the core decides every UDP protocol question: parsing, connection ids,
//!   error replies, amplification bounds, encoding ([`Server`]);
//! - this shell owns the sockets, the clock (ms since the Unix epoch, made
//!   monotonic from `std::time::Instant`), the OS RNG (connection-id
//!   secrets, rotated every [`SECRET_ROTATION_SECS`] and kept in SQLite so
//!   a restart does not invalidate the ids clients hold; with `--store
//!   redis://` they are shared by every instance through Redis, see
//!   [`store`]), the swarms
//!   ([`swarm`]) and SQLite ([`db`]).
//!
//! Threads: `--workers N` blocking threads per `--udp` address, each with
//! its own `SO_REUSEPORT` socket and front state (the hot path: receive up
//! to `--udp-batch` queued datagrams, lock its front, for each let the core
//! triage, lock the torrent's shard, apply, encode, unlock; then send the
//! replies with one `sendmmsg`; see [`state`] for the locks), a tokio
//! current-thread runtime for HTTP connections and the timers (flush,
//! incremental expiry steps, secret rotation, request rate), and the SQLite
//! writer thread, which stays behind every worker. A SIGINT/SIGTERM stops
//! the UDP threads, flushes every pending change and waits for the writer.
//!
//! With several workers, per-source limits ([`abuse`]) are kept per worker
//! (the kernel sends one source port to one socket), and `--max-torrents` is
//! split evenly among the shards.
//!
//! Files: `args.rs` (the command line and its defaults), `udp_loop.rs`
//! (binding the UDP sockets and the worker loops), `http_server.rs`, and
//! this one ([`run`]: start-up, the timers and the clean stop).

pub mod abuse;
mod args;
pub mod db;
mod http_server;
pub mod state;
pub mod store;
pub mod swarm;
mod udp_loop;

pub use args::{
    default_workers, listen_addrs, TrackerArgs, DEFAULT_ADDR, DEFAULT_RECV_BUFFER,
    DEFAULT_UDP_BATCH,
};
pub use udp_loop::{MAX_DATAGRAM, MAX_UDP_BATCH};

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};
use ourtorrent_core::id::InfoHash;
use ourtorrent_core::tracker::udp::server::{ConnectionIds, Server, MIN_ROTATION_SECS, SECRET_LEN};
use ourtorrent_core::tracker::udp::Limits as UdpLimits;
use tracing::{info, warn};

use state::{Settings, Shards, State, Tracker};
use swarm::Swarms;
use udp_loop::{bind_udp, udp_loop, udp_loop_batched};

/// How often the connection-id secret is replaced (the core keeps the
/// previous one, so it must be at least [`MIN_ROTATION_SECS`]).
pub const SECRET_ROTATION_SECS: u64 = 600;
const _: () = assert!(SECRET_ROTATION_SECS >= MIN_ROTATION_SECS);

/// Milliseconds between two expiry steps.
pub const EXPIRY_TICK_MS: u64 = 100;
/// Most peers one expiry step looks at, under the state lock (well under a
/// millisecond). A round over 2M peers takes 10 s; a silent peer goes at
/// most one round after its deadline.
pub const EXPIRY_PEERS_PER_TICK: usize = 20_000;

/// Milliseconds since the Unix epoch, never going backwards.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: std::time::Instant,
    start_unix_ms: u64,
}

impl Clock {
    /// Anchored now.
    pub fn new() -> Self {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Clock {
            start: std::time::Instant::now(),
            start_unix_ms: unix,
        }
    }

    /// Now, in ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.start_unix_ms + self.start.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads an allow-list: one 40-digit hex info-hash per line.
pub fn read_allow_list(path: &Path) -> Result<HashSet<InfoHash>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut set = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let ih = InfoHash::from_hex(line.as_bytes())
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        set.insert(ih);
    }
    Ok(set)
}

fn secret() -> Result<[u8; SECRET_LEN]> {
    let mut s = [0u8; SECRET_LEN];
    getrandom::fill(&mut s).map_err(|e| anyhow::anyhow!("OS RNG: {e}"))?;
    Ok(s)
}

/// The connection-id secrets at start: those kept in the database when
/// there are some (ids handed out before a restart stay valid), else a
/// fresh one, stored at once.
fn initial_secrets(conn: Option<&mut rusqlite::Connection>, now_ms: u64) -> Result<db::Secrets> {
    if let Some(c) = &conn {
        if let Some(s) = db::load_secrets(c)? {
            return Ok(s);
        }
    }
    let s = db::Secrets {
        current: secret()?,
        previous: None,
        rotated_at: now_ms,
    };
    if let Some(c) = conn {
        db::save_secrets(c, &s)?;
    }
    Ok(s)
}

fn ids_of(s: &db::Secrets) -> ConnectionIds {
    match &s.previous {
        Some(p) => ConnectionIds::with_previous(&s.current, p),
        None => ConnectionIds::new(&s.current),
    }
}

/// Time until the next rotation of secrets made current at `rotated_at`
/// (ms): the rest of [`SECRET_ROTATION_SECS`], zero (rotate at start) when
/// it is over. Rotations stay a full period apart across restarts, so
/// never closer than [`MIN_ROTATION_SECS`]; a secret restored after a long
/// stop is replaced at once (its predecessor's ids have long expired).
fn next_rotation(rotated_at: u64, now_ms: u64) -> Duration {
    let age = now_ms.saturating_sub(rotated_at);
    Duration::from_millis((SECRET_ROTATION_SECS * 1000).saturating_sub(age))
}

/// Shared state behind one mutex (uncontended with one UDP socket).
pub type Shared = Arc<Tracker>;

/// Locks the HTTP front, recovering from poisoning (a handler never
/// panics, but a poisoned lock must not take the tracker down).
pub fn lock(s: &Shared) -> MutexGuard<'_, State> {
    s.front(s.http_front())
}

/// Runs the tracker until SIGINT/SIGTERM.
pub fn run(args: TrackerArgs) -> Result<()> {
    let clock = Clock::new();
    let (udp_addrs, http_addrs) = listen_addrs(&args)?;
    let allow = args.allow.as_deref().map(read_allow_list).transpose()?;
    let expiry_ms = (u64::from(args.interval) + u64::from(args.grace)) * 1000;
    // A known peer's row is rewritten when only its last-seen time changed
    // at most once per this period (half the expiry window); a restart adds
    // it back (db::load), so a live peer is never expired early and a
    // silent one lives at most this much longer across a restart.
    let refresh_ms = (expiry_ms / 2).max(1000);
    let workers = args.workers.unwrap_or_else(default_workers).max(1);
    // One shard per worker; --max-torrents is split among them.
    let limits = swarm::Limits {
        max_torrents: args.max_torrents.div_ceil(workers),
        max_peers_per_torrent: args.max_peers,
    };
    let mut swarms: Vec<Swarms> = (0..workers)
        .map(|_| {
            let s = Swarms::new(limits, refresh_ms);
            if args.no_db {
                s.without_persistence()
            } else {
                s
            }
        })
        .collect();
    let mut secrets;
    let journal = Arc::new(db::JournalStats::default());
    let opened = if args.no_db {
        secrets = initial_secrets(None, clock.now_ms())?;
        None
    } else {
        let db_lock = db::lock(&args.db)?;
        let mut conn = db::open(&args.db)?;
        secrets = initial_secrets(Some(&mut conn), clock.now_ms())?;
        let cutoff = clock.now_ms().saturating_sub(expiry_ms);
        let started = std::time::Instant::now();
        let loaded = db::load(&conn, &mut swarms, cutoff, refresh_ms, clock.now_ms())?;
        for (chunk, e) in &loaded.bad_chunks {
            warn!(
                "{}: checkpoint chunk {chunk}: {e}; its later records skipped",
                args.db.display()
            );
        }
        for (seq, e) in &loaded.bad_rows {
            warn!(
                "{}: journal row {seq}: {e}; its later records skipped",
                args.db.display()
            );
        }
        journal.replayed.store(loaded.replayed, Ordering::Relaxed);
        journal
            .since_checkpoint
            .store(loaded.replayed, Ordering::Relaxed);
        journal
            .bad_rows
            .store(loaded.bad_rows.len() as u64, Ordering::Relaxed);
        journal
            .bad_chunks
            .store(loaded.bad_chunks.len() as u64, Ordering::Relaxed);
        info!(
            torrents = loaded.torrents,
            peers = loaded.peers,
            skipped = loaded.skipped,
            journal_rows = loaded.journal_rows,
            replayed = loaded.replayed,
            bad_rows = loaded.bad_rows.len(),
            checkpoint_chunks = loaded.checkpoint_chunks,
            bad_chunks = loaded.bad_chunks.len(),
            secs = started.elapsed().as_secs_f64(),
            "loaded {}",
            args.db.display()
        );
        Some((conn, db_lock))
    };
    let settings = Settings {
        interval: args.interval,
        default_numwant: args.default_numwant,
        max_numwant: args.max_numwant,
    };
    let seed = u64::from_le_bytes(secret()?[..8].try_into().unwrap_or_default());
    let server = Server::with_ids(ids_of(&secrets), UdpLimits::default());
    let rotation_ms = SECRET_ROTATION_SECS * 1000;
    let abuse_limits = abuse::Limits {
        burst: args.bad_burst,
        per_sec: args.bad_per_sec,
        ban_after: args.ban_after,
        ban_secs: args.ban_secs,
        max_sources: args.max_sources,
    };
    let shards = Arc::new(Shards::new(swarms));
    // The writer starts once the shards exist (it copies them out for its
    // checkpoints). The lock is held until it has finished (end of `run`).
    let (writer, _db_lock) = match opened {
        Some((conn, l)) => {
            let policy = db::CheckpointPolicy {
                min_records: args.checkpoint_records,
                flush_every: Duration::from_millis(args.flush_ms.max(1)),
            };
            let w = db::Writer::spawn(conn, shards.clone(), policy, journal.clone(), |e| {
                warn!("sqlite write failed: {e}")
            })?;
            (Some(w), Some(l))
        }
        None => (None, None),
    };
    let allow = allow.map(Arc::new);
    let udp_fronts = udp_addrs.len() * workers;
    let mut redis = None;
    let store: Arc<dyn store::SwarmStore> = if args.store == "memory" {
        shards.clone()
    } else if args.store.starts_with("redis://") {
        let r = store::RedisStore::new(&args.store, udp_fronts + 1, expiry_ms, args.max_peers)?;
        let r = Arc::new(r);
        redis = Some(r.clone());
        r
    } else {
        anyhow::bail!(
            "--store {}: expected `memory` or `redis://HOST:PORT`",
            args.store
        );
    };
    // With Redis, the connection-id secrets are those every instance
    // shares (store.rs); SQLite's are the fallback while Redis is down.
    let mut redis_ok = false;
    if let Some(r) = &redis {
        match r.sync_secrets(clock.now_ms(), &secret()?, rotation_ms) {
            Ok(s) => {
                secrets = s;
                redis_ok = true;
                // SQLite keeps them too (the fallback at a later start).
                if let Some(w) = &writer {
                    w.send(swarm::Batch {
                        secrets: Some(secrets),
                        ..Default::default()
                    });
                }
            }
            Err(_) => warn!("{}: not answering yet; will retry", args.store),
        }
    }
    let server = if redis_ok {
        Server::with_ids(ids_of(&secrets), UdpLimits::default())
    } else {
        server
    };
    let mut tracker = Tracker::new(
        shards.clone(),
        udp_fronts,
        allow.as_ref().map(|a| a.len()),
        |i| {
            State::new(
                server.clone(),
                shards.clone(),
                store.clone(),
                i,
                allow.clone(),
                settings,
                abuse::Abuse::new(abuse_limits),
                seed.wrapping_add(i as u64),
            )
        },
    );
    if !args.stats_from.is_empty() {
        tracker.stats_from = args.stats_from.clone();
    }
    tracker.store = args.store.clone();
    if let Some(r) = &redis {
        tracker.counter = Some(r.clone());
    }
    if let Some(w) = &writer {
        tracker.flush = Some(w.latency());
        tracker.journal = Some(w.journal());
        tracker.db_path = Some(args.db.clone());
    }
    let shared: Shared = Arc::new(tracker);

    // Signal handlers are installed before any socket serves, so a SIGINT
    // or SIGTERM is always a graceful stop that flushes.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut sigint, mut sigterm) = {
        let _enter = rt.enter();
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )
    };

    let mut udp = Vec::new();
    for a in &udp_addrs {
        // SO_REUSEPORT would let us join another process's group on a busy
        // port (same user): check it is free first.
        if workers > 1 && a.port() != 0 {
            drop(UdpSocket::bind(a).with_context(|| format!("bind udp {a}"))?);
        }
        // The first socket may ask for port 0; the others join its port.
        let first =
            bind_udp(*a, workers > 1, args.recv_buffer).with_context(|| format!("bind udp {a}"))?;
        let bound = first.local_addr()?;
        udp.push(first);
        for _ in 1..workers {
            let s = bind_udp(bound, true, args.recv_buffer)
                .with_context(|| format!("bind udp {bound}"))?;
            udp.push(s);
        }
    }
    for s in &udp {
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
    }
    let mut tcp = Vec::new();
    for a in &http_addrs {
        let l = std::net::TcpListener::bind(a).with_context(|| format!("bind http {a}"))?;
        l.set_nonblocking(true)?;
        tcp.push(l);
    }
    let mut udp_addrs: Vec<SocketAddr> = udp.iter().filter_map(|s| s.local_addr().ok()).collect();
    udp_addrs.dedup();
    let http_addrs: Vec<SocketAddr> = tcp.iter().filter_map(|s| s.local_addr().ok()).collect();
    let db_desc = if args.no_db {
        "none (memory only)".to_string()
    } else {
        args.db.display().to_string()
    };
    info!(
        "tracker listening: udp {} http {} db {} interval {}s flush {}ms workers {}",
        join(&udp_addrs),
        join(&http_addrs),
        db_desc,
        args.interval,
        args.flush_ms,
        workers
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let batch = args.udp_batch.clamp(1, MAX_UDP_BATCH);
    for (front, s) in udp.into_iter().enumerate() {
        let (sh, st) = (shared.clone(), stop.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("udp-{front}"))
                .spawn(move || {
                    if batch > 1 {
                        udp_loop_batched(s, sh, front, clock, st, batch)
                    } else {
                        udp_loop(s, sh, front, clock, st)
                    }
                })?,
        );
    }

    let flush_ms = args.flush_ms.max(1);
    rt.block_on(async {
        for l in tcp {
            let l = tokio::net::TcpListener::from_std(l)?;
            tokio::spawn(http_server::serve(l, shared.clone(), clock));
        }
        let mut flush = tokio::time::interval(Duration::from_millis(flush_ms));
        flush.tick().await; // immediate: the first flush is one interval from now
        let mut sweep = tokio::time::interval(Duration::from_millis(EXPIRY_TICK_MS));
        let first = next_rotation(secrets.rotated_at, clock.now_ms());
        let mut rotate = tokio::time::interval_at(
            tokio::time::Instant::now() + first,
            Duration::from_secs(SECRET_ROTATION_SECS),
        );
        let mut rate = tokio::time::interval(Duration::from_secs(1));
        let mut sync = tokio::time::interval(store::SECRET_SYNC);
        sync.tick().await; // the secrets were just synced
        loop {
            tokio::select! {
                _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
                _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
                _ = flush.tick() => {
                    // One batch at a time: while SQLite is still writing the
                    // previous one, changes keep coalescing in the swarm.
                    if let Some(w) = writer.as_ref().filter(|w| !w.busy()) {
                        w.send(shared.take_batch());
                    }
                }
                _ = sweep.tick() => {
                    let cutoff = clock.now_ms().saturating_sub(expiry_ms);
                    let st = shared.expire_step(cutoff, EXPIRY_PEERS_PER_TICK);
                    if st.removed > 0 {
                        tracing::debug!(peers = st.removed, "expired");
                    }
                }
                _ = rotate.tick() => {
                    // With Redis up, rotations are agreed through it.
                    if redis_ok {
                        continue;
                    }
                    match secret() {
                        Ok(s) => {
                            shared.rotate_secret(&s);
                            secrets = db::Secrets {
                                current: s,
                                previous: Some(secrets.current),
                                rotated_at: clock.now_ms(),
                            };
                            if let Some(w) = &writer {
                                w.send(swarm::Batch {
                                    secrets: Some(secrets),
                                    ..Default::default()
                                });
                            }
                        }
                        Err(e) => warn!("secret rotation skipped: {e}"),
                    }
                }
                _ = sync.tick(), if redis.is_some() => {
                    let fresh = secret();
                    let got = match (&redis, fresh) {
                        (Some(r), Ok(f)) => r.sync_secrets(clock.now_ms(), &f, rotation_ms).ok(),
                        _ => None,
                    };
                    redis_ok = got.is_some();
                    if let Some(r) = &redis {
                        // Errors are logged by the store; the figures wait.
                        let _ = r.flush_counts(clock.now_ms());
                    }
                    if let Some(s) = got.filter(|s| *s != secrets) {
                        shared.set_connection_ids(&ids_of(&s));
                        secrets = s;
                        if let Some(w) = &writer {
                            w.send(swarm::Batch {
                                secrets: Some(secrets),
                                ..Default::default()
                            });
                        }
                    }
                }
                _ = rate.tick() => {
                    shared.prune_abuse(clock.now_ms());
                    shared.sample_rate();
                }
            }
        }
        anyhow::Ok(())
    })?;
    drop(rt); // ends the HTTP tasks
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    if let Some(w) = writer {
        let batch = shared.take_batch();
        let rows = batch.rows();
        w.send(batch);
        w.finish();
        info!(rows, "final flush done; stopped");
    } else {
        info!("stopped");
    }
    Ok(())
}

fn join(a: &[SocketAddr]) -> String {
    let v: Vec<String> = a.iter().map(ToString::to_string).collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_schedule_resumes_across_restarts() {
        let full = Duration::from_secs(SECRET_ROTATION_SECS);
        assert_eq!(next_rotation(1_000, 1_000), full);
        // A restart 100 s after a rotation: the rest of the period.
        assert_eq!(next_rotation(0, 100_000), full - Duration::from_secs(100));
        // At the period's edge and long after it: at once.
        assert_eq!(
            next_rotation(0, SECRET_ROTATION_SECS * 1000 - 1),
            Duration::from_millis(1)
        );
        assert_eq!(
            next_rotation(0, SECRET_ROTATION_SECS * 1000),
            Duration::ZERO
        );
        assert_eq!(next_rotation(0, u64::MAX), Duration::ZERO);
        // A clock set back: a full period.
        assert_eq!(next_rotation(u64::MAX, 0), full);
    }
}
