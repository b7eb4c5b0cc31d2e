//! `shell-std loadtest`: a closed-loop BEP 15 load generator usable against
//! any UDP tracker (ours, opentracker, ...).
//!
//! Each of `--sockets` threads owns one UDP socket and keeps
//! `--concurrency / --sockets` requests in flight: every response (or a
//! timeout) frees its slot, which is refilled at once with a new request
//! drawn from the `--mix` of connect/announce/scrape. Requests are built
//! and responses parsed with the core's BEP 15 codec. Transaction ids carry
//! the slot (low 16 bits) and a generation, so late replies to a timed-out
//! request are counted as stale, not matched to its successor.
//!
//! At the end, every fake peer that was announced gets a `stopped` announce
//! (BEP 15 event 3), so the target's swarms and database are left as they
//! were found; `--no-stop` leaves them there (for a `--no-db` tracker, or to
//! measure a loaded tracker again). A run that gets no reply at all fails
//! with a message instead of printing a table of zeros.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use comfy_table::{presets::UTF8_FULL, Table};
use ourtorrent_core::id::{InfoHash, PeerId};
use ourtorrent_core::tracker::udp::{
    encode_scrape_request, AnnounceRequest, ConnectRequest, ConnectionId, Limits, Response,
    TransactionId, UdpOptions,
};
use ourtorrent_core::tracker::{AddressFamily, AnnounceEvent};
use serde_json::json;

/// `shell-std loadtest` options.
#[derive(Args, Debug, Clone)]
pub struct LoadtestArgs {
    /// The tracker: host:port, udp://host:port, or an IPv6 address in
    /// brackets and a port (a host name is resolved once; its first IPv4
    /// address is used if it has one).
    #[arg(long, default_value = "127.0.0.1:6969")]
    pub target: String,
    /// Seconds to run (bounded to 1 hour).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Requests in flight in total (closed loop).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// UDP sockets (one thread each).
    #[arg(long, default_value_t = 1)]
    pub sockets: usize,
    /// Simulated torrents.
    #[arg(long, default_value_t = 1000)]
    pub torrents: usize,
    /// Simulated peers (peer p is in torrent p mod --torrents).
    #[arg(long, default_value_t = 10_000)]
    pub peers: usize,
    /// Weights connect:announce:scrape.
    #[arg(long, default_value = "1:8:1")]
    pub mix: String,
    /// Info-hashes per scrape request.
    #[arg(long, default_value_t = 5)]
    pub scrape_hashes: usize,
    /// `num_want` of announces.
    #[arg(long, default_value_t = 50)]
    pub numwant: i32,
    /// Milliseconds before an unanswered request counts as lost.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Seed of the info-hashes and choices (same seed → same hashes).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the info-hashes used, one hex line each (e.g. opentracker's
    /// access.whitelist), then run (or only write, with --duration 0).
    #[arg(long)]
    pub write_whitelist: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Leave the fake peers in the target's swarms (and its database) at
    /// the end instead of sending each a `stopped` announce.
    #[arg(long)]
    pub no_stop: bool,
}

/// Resolves `--target`: `udp://host:port[/…]` (checked by the core's URL
/// parser), `host:port` or `[v6]:port`; prefers an IPv4 address.
pub fn resolve_target(target: &str) -> Result<SocketAddr> {
    use ourtorrent_core::tracker::url::{Scheme, TrackerUrl};
    let addrs: Vec<SocketAddr> = if target.contains("://") {
        let u =
            TrackerUrl::parse(target).map_err(|e| anyhow::anyhow!("--target {target:?}: {e}"))?;
        anyhow::ensure!(
            u.scheme == Scheme::Udp,
            "--target {target:?}: the load test speaks UDP (BEP 15); want udp://host:port"
        );
        (u.host, u.port).to_socket_addrs()
    } else {
        target.to_socket_addrs()
    }
    .with_context(|| format!("--target {target:?} (want host:port)"))?
    .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .with_context(|| format!("--target {target:?}: no address"))
}

/// The announce of fake peer `peer`: it belongs to torrent `peer mod N`,
/// with a peer id, port and key derived from its number, so a later
/// announce (e.g. `stopped`) names the same peer.
fn fake_announce(
    hashes: &[InfoHash],
    peer: usize,
    connection_id: ConnectionId,
    transaction_id: TransactionId,
    event: AnnounceEvent,
    num_want: i32,
) -> AnnounceRequest<'static> {
    let mut pid = *b"-OTLOAD-000000000000";
    pid[8..].copy_from_slice(
        format!("{peer:012}")
            .as_bytes()
            .get(..12)
            .unwrap_or(b"000000000000"),
    );
    AnnounceRequest {
        connection_id,
        transaction_id,
        info_hash: hashes[peer % hashes.len()],
        peer_id: PeerId(pid),
        downloaded: 0,
        left: if peer % 4 == 0 { 0 } else { 1 << 20 },
        uploaded: 0,
        event,
        ip: std::net::Ipv4Addr::UNSPECIFIED,
        key: peer as u32,
        num_want,
        port: 1024 + (peer % 60_000) as u16,
        options: UdpOptions::EMPTY,
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The info-hashes a run with `seed` uses.
pub fn info_hashes(seed: u64, n: usize) -> Vec<InfoHash> {
    let mut r = Rng(seed ^ 0x6f75_7274_6f72_7265);
    (0..n)
        .map(|_| {
            let mut h = [0u8; 20];
            for c in h.chunks_mut(8) {
                let v = r.next().to_le_bytes();
                c.copy_from_slice(&v[..c.len()]);
            }
            InfoHash(h)
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Connect,
    Announce,
    Scrape,
}

const KINDS: [Kind; 3] = [Kind::Connect, Kind::Announce, Kind::Scrape];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Announce => "announce",
            Kind::Scrape => "scrape",
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
}

#[derive(Default)]
struct Tally {
    /// Latencies in µs per kind.
    lat: [Vec<u32>; 3],
    error_replies: u64,
    timeouts: u64,
    stale: u64,
    unparsable: u64,
    send_errors: u64,
    sent: u64,
}

#[derive(Clone, Copy)]
struct Slot {
    kind: Kind,
    gen: u16,
    sent: Instant,
    busy: bool,
}

struct Worker<'a> {
    a: &'a LoadtestArgs,
    target: SocketAddr,
    /// Bit p set: fake peer p was announced (and gets `stopped` at the end).
    announced: Vec<u64>,
    hashes: &'a [InfoHash],
    weights: [u32; 3],
    sock: UdpSocket,
    rng: Rng,
    cid: Option<ConnectionId>,
    cid_at: Instant,
    slots: Vec<Slot>,
    tally: Tally,
    buf: [u8; 2048],
}

/// A connection id is used this long before a fresh connect is forced
/// (BEP 15 ids live 2 minutes).
const CID_REFRESH: Duration = Duration::from_secs(60);

impl Worker<'_> {
    fn pick(&mut self) -> Kind {
        if self.cid.is_none() || self.cid_at.elapsed() > CID_REFRESH {
            return Kind::Connect;
        }
        let total: u32 = self.weights.iter().sum();
        let mut x = (self.rng.next() % u64::from(total.max(1))) as u32;
        for k in KINDS {
            let w = self.weights[k.idx()];
            if x < w {
                return k;
            }
            x -= w;
        }
        Kind::Announce
    }

    fn send(&mut self, i: usize) {
        let kind = self.pick();
        let gen = self.slots[i].gen.wrapping_add(1);
        let tid = TransactionId((u32::from(gen) << 16) | i as u32);
        let mut out = [0u8; 2048];
        let cid = self.cid.unwrap_or(ConnectionId(0));
        let n = match kind {
            Kind::Connect => ConnectRequest {
                transaction_id: tid,
            }
            .encode(&mut out),
            Kind::Announce => {
                // Peer p belongs to torrent p mod N and re-announces there,
                // as real peers do: the swarms stay bounded by --peers.
                let peer = self.rng.below(self.a.peers);
                self.announced[peer / 64] |= 1 << (peer % 64);
                fake_announce(
                    self.hashes,
                    peer,
                    cid,
                    tid,
                    AnnounceEvent::None,
                    self.a.numwant,
                )
                .encode(&mut out)
            }
            Kind::Scrape => {
                let hs: Vec<InfoHash> = (0..self.a.scrape_hashes.max(1))
                    .map(|_| self.hashes[self.rng.below(self.hashes.len())])
                    .collect();
                encode_scrape_request(cid, tid, &hs, &mut out)
            }
        };
        let Ok(n) = n else {
            self.tally.send_errors += 1;
            return;
        };
        self.slots[i] = Slot {
            kind,
            gen,
            sent: Instant::now(),
            busy: true,
        };
        self.tally.sent += 1;
        if self.sock.send_to(&out[..n], self.target).is_err() {
            self.tally.send_errors += 1;
        }
    }

    fn receive(&mut self, n: usize) {
        let limits = Limits {
            max_peers: 10_000,
            ..Limits::default()
        };
        let family = AddressFamily::of(&self.target);
        let Ok(resp) = Response::parse(&self.buf[..n], family, &limits) else {
            self.tally.unparsable += 1;
            // A reply we cannot parse but whose header names our request
            // (e.g. opentracker's 8-byte refusal of a hash it does not
            // track) still ends that request.
            if let Some(tid) = self.buf.get(4..8) {
                let tid = u32::from_be_bytes([tid[0], tid[1], tid[2], tid[3]]);
                let (i, gen) = ((tid & 0xffff) as usize, (tid >> 16) as u16);
                if n >= 8 && self.slots.get(i).is_some_and(|s| s.busy && s.gen == gen) {
                    self.slots[i].busy = false;
                    self.send(i);
                }
            }
            return;
        };
        let tid = resp.transaction_id().0;
        let (i, gen) = ((tid & 0xffff) as usize, (tid >> 16) as u16);
        let Some(slot) = self.slots.get(i).copied() else {
            self.tally.stale += 1;
            return;
        };
        if !slot.busy || slot.gen != gen {
            self.tally.stale += 1;
            return;
        }
        let us = slot.sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        let ok = matches!(
            (&resp, slot.kind),
            (Response::Connect(_), Kind::Connect)
                | (Response::Announce(_), Kind::Announce)
                | (Response::Scrape(_), Kind::Scrape)
        );
        if let Response::Connect(c) = &resp {
            self.cid = Some(c.connection_id);
            self.cid_at = Instant::now();
        }
        if ok {
            self.tally.lat[slot.kind.idx()].push(us);
        } else {
            // An error reply (e.g. opentracker's 8-byte refusal), or a reply
            // of the wrong kind; a bad connection id is dropped silently by
            // our tracker, so force a reconnect on any error.
            self.tally.error_replies += 1;
            if slot.kind != Kind::Connect {
                self.cid = None;
            }
        }
        self.slots[i].busy = false;
        self.send(i);
    }

    fn run(mut self, until: Instant) -> (Tally, Vec<u64>) {
        let timeout = Duration::from_millis(self.a.timeout_ms.max(1));
        for i in 0..self.slots.len() {
            // Until the first connect answers, only connects go out.
            self.send(i);
        }
        let mut last_scan = Instant::now();
        while Instant::now() < until {
            match self.sock.recv_from(&mut self.buf) {
                Ok((n, from)) if from == self.target => self.receive(n),
                Ok(_) => self.tally.stale += 1,
                Err(_) => {}
            }
            if last_scan.elapsed() >= Duration::from_millis(50) {
                last_scan = Instant::now();
                for i in 0..self.slots.len() {
                    let s = self.slots[i];
                    if s.busy && s.sent.elapsed() >= timeout {
                        self.tally.timeouts += 1;
                        if s.kind == Kind::Connect {
                            self.cid = None;
                        }
                        self.slots[i].busy = false;
                        self.send(i);
                    }
                }
            }
        }
        (self.tally, self.announced)
    }
}

/// What the `stopped` round did.
#[derive(Clone, Copy, Debug, Default)]
struct Stopped {
    /// Fake peers sent a `stopped` announce.
    sent: u64,
    /// Announce replies received to them.
    acknowledged: u64,
}

/// Most `stopped` announces in flight at once.
const STOP_WINDOW: usize = 256;

/// Sends a `stopped` announce for every peer set in `announced`, a window
/// of [`STOP_WINDOW`] at a time; a window with no reply for `--timeout-ms`
/// is given up (the tracker will expire those peers itself).
fn stop_peers(
    a: &LoadtestArgs,
    target: SocketAddr,
    hashes: &[InfoHash],
    announced: &[u64],
    sock: &UdpSocket,
) -> Result<Stopped> {
    let timeout = Duration::from_millis(a.timeout_ms.max(1));
    let family = AddressFamily::of(&target);
    let limits = Limits::default();
    let mut done = Stopped::default();
    let mut buf = [0u8; 2048];
    // Transaction ids with the top bit set: never those of the main loop's
    // slots, so late replies to it are ignored here.
    let mut tid = 0x8000_0000u32;
    let connect = |tid: &mut u32| -> Result<Option<ConnectionId>> {
        let (mut out, mut buf) = ([0u8; 16], [0u8; 2048]);
        for _ in 0..3 {
            *tid += 1;
            let n = ConnectRequest {
                transaction_id: TransactionId(*tid),
            }
            .encode(&mut out)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            sock.send_to(&out[..n], target)?;
            let until = Instant::now() + timeout;
            while Instant::now() < until {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    if let (true, Ok(Response::Connect(c))) =
                        (from == target, Response::parse(&buf[..n], family, &limits))
                    {
                        if c.transaction_id.0 == *tid {
                            return Ok(Some(c.connection_id));
                        }
                    }
                }
            }
        }
        Ok(None)
    };
    let Some(mut cid) = connect(&mut tid)? else {
        return Ok(done);
    };
    let mut cid_at = Instant::now();
    let peers = (0..announced.len() * 64).filter(|p| announced[p / 64] & (1 << (p % 64)) != 0);
    let mut in_flight = 0usize;
    let mut last_reply = Instant::now();
    let mut peers = peers.peekable();
    while peers.peek().is_some() || in_flight > 0 {
        if cid_at.elapsed() > CID_REFRESH {
            match connect(&mut tid)? {
                Some(c) => (cid, cid_at) = (c, Instant::now()),
                None => break,
            }
        }
        while in_flight < STOP_WINDOW {
            let Some(p) = peers.next() else { break };
            tid += 1;
            let mut req = [0u8; 256];
            let n = fake_announce(
                hashes,
                p,
                cid,
                TransactionId(tid),
                AnnounceEvent::Stopped,
                0,
            )
            .encode(&mut req)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            if sock.send_to(&req[..n], target).is_ok() {
                done.sent += 1;
                in_flight += 1;
            }
        }
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == target => {
                last_reply = Instant::now();
                in_flight = in_flight.saturating_sub(1);
                if let Ok(Response::Announce(_)) = Response::parse(&buf[..n], family, &limits) {
                    done.acknowledged += 1;
                }
            }
            _ if last_reply.elapsed() >= timeout => {
                // Lost: move on.
                in_flight = 0;
                last_reply = Instant::now();
            }
            _ => {}
        }
    }
    Ok(done)
}

fn parse_mix(s: &str) -> Result<[u32; 3]> {
    let v: Vec<u32> = s
        .split(':')
        .map(|x| x.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--mix {s:?}: want C:A:S integers"))?;
    let w: [u32; 3] = v
        .try_into()
        .map_err(|_| anyhow::anyhow!("--mix {s:?}: want three weights C:A:S"))?;
    anyhow::ensure!(w.iter().sum::<u32>() > 0, "--mix: all weights zero");
    Ok(w)
}

/// This process's user+system CPU seconds (Linux `/proc/self/stat`, at
/// the usual 100 ticks per second), if readable.
fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the load test and prints the report.
pub fn run(a: LoadtestArgs) -> Result<()> {
    let target = resolve_target(&a.target)?;
    anyhow::ensure!(
        a.torrents > 0 && a.peers > 0,
        "--torrents and --peers must be > 0"
    );
    anyhow::ensure!(
        (1..=65_536).contains(&a.concurrency) && a.sockets >= 1 && a.sockets <= a.concurrency,
        "--concurrency must be 1..=65536 and at least --sockets"
    );
    anyhow::ensure!(
        (0.0..=3600.0).contains(&a.duration),
        "--duration must be 0..=3600 seconds"
    );
    let weights = parse_mix(&a.mix)?;
    let hashes = info_hashes(a.seed, a.torrents);
    if let Some(path) = &a.write_whitelist {
        let mut text = String::new();
        for h in &hashes {
            text.push_str(std::str::from_utf8(&h.to_hex()).unwrap_or_default());
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
        if a.duration == 0.0 {
            return Ok(());
        }
    }
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let start = Instant::now();
    let cpu0 = own_cpu_seconds();
    let until = start + Duration::from_secs_f64(a.duration);
    let words = a.peers.div_ceil(64);
    let results = std::thread::scope(|sc| -> Result<Vec<(Tally, Vec<u64>)>> {
        let mut hs = Vec::new();
        for s in 0..a.sockets {
            let sock = UdpSocket::bind(bind)?;
            sock.set_read_timeout(Some(Duration::from_millis(10)))?;
            let k = a.concurrency / a.sockets + usize::from(s < a.concurrency % a.sockets);
            let w = Worker {
                a: &a,
                target,
                announced: vec![0; words],
                hashes: &hashes,
                weights,
                sock,
                rng: Rng(a.seed.wrapping_mul(1000).wrapping_add(s as u64)),
                cid: None,
                cid_at: Instant::now(),
                slots: vec![
                    Slot {
                        kind: Kind::Connect,
                        gen: 0,
                        sent: Instant::now(),
                        busy: false
                    };
                    k
                ],
                tally: Tally::default(),
                buf: [0u8; 2048],
            };
            hs.push(sc.spawn(move || w.run(until)));
        }
        Ok(hs.into_iter().filter_map(|h| h.join().ok()).collect())
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = own_cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
    let mut t = Tally::default();
    let mut announced = vec![0u64; words];
    for (x, seen) in results {
        for (w, s) in announced.iter_mut().zip(seen) {
            *w |= s;
        }
        for k in 0..3 {
            t.lat[k].extend_from_slice(&x.lat[k]);
        }
        t.error_replies += x.error_replies;
        t.timeouts += x.timeouts;
        t.stale += x.stale;
        t.unparsable += x.unparsable;
        t.send_errors += x.send_errors;
        t.sent += x.sent;
    }
    let replies = t.lat.iter().map(Vec::len).sum::<usize>() as u64 + t.error_replies;
    let stopped = if a.no_stop || replies == 0 {
        None
    } else {
        let sock = UdpSocket::bind(bind)?;
        sock.set_read_timeout(Some(Duration::from_millis(10)))?;
        Some(stop_peers(&a, target, &hashes, &announced, &sock)?)
    };
    if replies == 0 && t.unparsable == 0 {
        if a.json {
            report(&a, target, &mut t, elapsed, cpu, stopped);
        }
        anyhow::bail!(
            "no replies from {target} in {elapsed:.1} s ({} requests sent): is a UDP tracker listening there?",
            t.sent
        );
    }
    report(&a, target, &mut t, elapsed, cpu, stopped);
    Ok(())
}

fn report(
    a: &LoadtestArgs,
    target: SocketAddr,
    t: &mut Tally,
    elapsed: f64,
    cpu: Option<f64>,
    stopped: Option<Stopped>,
) {
    let mut kinds = serde_json::Map::new();
    let mut total = 0usize;
    let mut table = Table::new();
    table.load_preset(UTF8_FULL).set_header(vec![
        "kind",
        "responses",
        "responses/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "max µs",
    ]);
    for k in KINDS {
        let v = &mut t.lat[k.idx()];
        v.sort_unstable();
        total += v.len();
        let rps = v.len() as f64 / elapsed;
        let row = (
            pct(v, 0.5),
            pct(v, 0.9),
            pct(v, 0.99),
            v.last().copied().unwrap_or(0),
        );
        table.add_row(vec![
            k.name().to_string(),
            v.len().to_string(),
            format!("{rps:.0}"),
            row.0.to_string(),
            row.1.to_string(),
            row.2.to_string(),
            row.3.to_string(),
        ]);
        kinds.insert(
            k.name().into(),
            json!({"responses": v.len(), "per_second": rps,
                   "p50_us": row.0, "p90_us": row.1, "p99_us": row.2, "max_us": row.3}),
        );
    }
    let rps = total as f64 / elapsed;
    if a.json {
        let doc = json!({
            "target": target.to_string(),
            "stopped": stopped.map(|s| json!({"sent": s.sent, "acknowledged": s.acknowledged})),
            "seconds": elapsed,
            "concurrency": a.concurrency,
            "sockets": a.sockets,
            "sent": t.sent,
            "responses": total,
            "responses_per_second": rps,
            "generator_cpu_seconds": cpu,
            "kinds": kinds,
            "errors": {
                "error_replies": t.error_replies,
                "timeouts": t.timeouts,
                "stale": t.stale,
                "unparsable": t.unparsable,
                "send_errors": t.send_errors,
            },
        });
        println!("{doc}");
    } else {
        println!(
            "loadtest {} ({target}) for {elapsed:.2}s, {} in flight over {} socket(s), mix {}",
            a.target, a.concurrency, a.sockets, a.mix
        );
        println!("{table}");
        println!(
            "total: {total} responses, {rps:.0}/s; error replies {}, timeouts {}, stale {}, unparsable {}, send errors {}",
            t.error_replies, t.timeouts, t.stale, t.unparsable, t.send_errors
        );
        if let Some(cpu) = cpu {
            println!(
                "generator CPU: {cpu:.2} s ({:.0}% of one core)",
                100.0 * cpu / elapsed
            );
        }
        match stopped {
            Some(s) => println!(
                "stopped: {} fake peers sent `stopped`, {} acknowledged",
                s.sent, s.acknowledged
            ),
            None => println!("fake peers left in the target's swarms (--no-stop)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_and_percentiles() {
        assert_eq!(parse_mix("1:8:1").unwrap(), [1, 8, 1]);
        assert!(parse_mix("1:8").is_err());
        assert!(parse_mix("0:0:0").is_err());
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!((pct(&v, 0.5), pct(&v, 0.99)), (51, 99));
        assert_eq!(info_hashes(7, 3), info_hashes(7, 3));
        assert_ne!(info_hashes(7, 3), info_hashes(8, 3));
    }
}
