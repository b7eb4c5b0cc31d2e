//! `shell-std loadtest` itself: its flags ([`LoadtestArgs`]), the target
//! resolved ([`resolve_target`]), and [`run`]: one [`Worker`] thread per
//! socket until `--duration`, their tallies merged, then the `stopped`
//! round and the report.
//!
//! Limits: `--duration` 0..=3600 s, `--concurrency` 1..=65,536 and at
//! least `--sockets`, `--torrents` and `--peers` above 0.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use super::fake::{info_hashes, Rng};
use super::report::{own_cpu_seconds, report};
use super::stop::stop_peers;
use super::worker::{Kind, Slot, Tally, Worker};

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

pub(super) fn parse_mix(s: &str) -> Result<[u32; 3]> {
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
