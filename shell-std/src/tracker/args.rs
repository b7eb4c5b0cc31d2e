//! The command line of `shell-std tracker` ([`TrackerArgs`]), its
//! defaults, and what is derived from it before anything starts: the
//! addresses to serve ([`listen_addrs`]) and the default worker count
//! ([`default_workers`]). Parsing is clap's and there are no range checks
//! here: [`super::run`] clamps `--udp-batch` to 1..=[`MAX_UDP_BATCH`] and
//! raises `--workers` and `--flush-ms` to at least 1.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[cfg(doc)]
use super::MAX_UDP_BATCH;
use super::{abuse, db, state, swarm};

/// `shell-std tracker` options.
#[derive(Args, Debug, Clone)]
pub struct TrackerArgs {
    /// UDP (BEP 15) address; repeat for several (e.g. `--udp [::]:6969`).
    /// With neither `--udp` nor `--http`, both serve on 0.0.0.0:6969; once
    /// either is given, each protocol listens only where asked.
    #[arg(long)]
    pub udp: Vec<SocketAddr>,
    /// HTTP announce/scrape/stats address; repeat for several.
    #[arg(long)]
    pub http: Vec<SocketAddr>,
    /// Serve no UDP.
    #[arg(long, conflicts_with = "udp")]
    pub no_udp: bool,
    /// Serve no HTTP.
    #[arg(long, conflicts_with = "http")]
    pub no_http: bool,
    /// Who may read `/stats`: an address or prefix (`10.0.0.0/8`, `::1`,
    /// `0.0.0.0/0` for anyone); repeat for several. Default: loopback only.
    #[arg(long, value_name = "PREFIX")]
    pub stats_from: Vec<state::Prefix>,
    /// SQLite database (created if missing).
    #[arg(long, default_value = "tracker.db")]
    pub db: PathBuf,
    /// Keep everything in memory (no SQLite), e.g. for benchmarks.
    #[arg(long)]
    pub no_db: bool,
    /// Milliseconds between SQLite flushes.
    #[arg(long, default_value_t = 1000)]
    pub flush_ms: u64,
    /// Journal records since the last checkpoint that start a new one, at
    /// least (the peer count is the other bound; see `tracker::db`).
    #[arg(long, default_value_t = db::DEFAULT_CHECKPOINT_RECORDS)]
    pub checkpoint_records: u64,
    /// Announce interval told to clients, in seconds.
    #[arg(long, default_value_t = 1800)]
    pub interval: u32,
    /// Seconds past the interval before a silent peer expires.
    #[arg(long, default_value_t = 300)]
    pub grace: u32,
    /// Only track these info-hashes (file of hex lines; `#` comments).
    #[arg(long)]
    pub allow: Option<PathBuf>,
    /// Most torrents tracked.
    #[arg(long, default_value_t = swarm::DEFAULT_MAX_TORRENTS)]
    pub max_torrents: usize,
    /// Most peers stored per torrent.
    #[arg(long, default_value_t = swarm::DEFAULT_MAX_PEERS_PER_TORRENT)]
    pub max_peers: usize,
    /// Peers returned when a client does not say (numwant absent or -1).
    #[arg(long, default_value_t = 50)]
    pub default_numwant: u32,
    /// Most peers returned to one announce (UDP replies are further bounded
    /// by the core's amplification limit).
    #[arg(long, default_value_t = 200)]
    pub max_numwant: u32,
    /// Bad UDP datagrams (bad connection id, garbage) a source may send at
    /// once before it is throttled (a source: an IPv4 address or IPv6 /64).
    #[arg(long, default_value_t = abuse::DEFAULT_BURST)]
    pub bad_burst: u32,
    /// Bad UDP datagrams per second a source may send in the long run.
    #[arg(long, default_value_t = abuse::DEFAULT_PER_SEC)]
    pub bad_per_sec: u32,
    /// Datagrams dropped from a throttled source before it is ignored.
    #[arg(long, default_value_t = abuse::DEFAULT_BAN_AFTER)]
    pub ban_after: u32,
    /// Seconds an ignored source stays ignored.
    #[arg(long, default_value_t = abuse::DEFAULT_BAN_SECS)]
    pub ban_secs: u32,
    /// Most misbehaving sources tracked at once (per worker).
    #[arg(long, default_value_t = abuse::DEFAULT_MAX_SOURCES)]
    pub max_sources: usize,
    /// UDP worker threads, each with its own socket per `--udp` address
    /// (`SO_REUSEPORT`); the swarms are sharded by info-hash among as many
    /// locks. Default: the number of cores.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Receive buffer of each UDP socket, in bytes (`SO_RCVBUF`; the kernel
    /// caps it at `net.core.rmem_max`). A burst that overflows it is
    /// dropped by the kernel.
    #[arg(long, default_value_t = DEFAULT_RECV_BUFFER)]
    pub recv_buffer: usize,
    /// Where swarms live: `memory` (the default, the fast path) or
    /// `redis://HOST:PORT` (shared by every tracker instance using it;
    /// SQLite then keeps only the connection-id secret).
    #[arg(long, default_value = "memory")]
    pub store: String,
    /// Datagrams a UDP worker handles per wake-up: the first waits, the
    /// ones already queued behind it are read without blocking, all are
    /// handled under one front lock and answered with one `sendmmsg`
    /// (Linux). 1: one `recvfrom`/`sendto` pair each. At most
    /// [`MAX_UDP_BATCH`]. Measured: ~15% less server CPU per response.
    #[arg(long, default_value_t = DEFAULT_UDP_BATCH)]
    pub udp_batch: usize,
}

/// Default `--udp-batch`.
pub const DEFAULT_UDP_BATCH: usize = 32;

/// Default `--recv-buffer`: 8 MB, enough for ~50 ms of 1M datagrams/s.
pub const DEFAULT_RECV_BUFFER: usize = 8_000_000;

/// Where both protocols listen when neither `--udp` nor `--http` is given.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    6969,
));

/// The (UDP, HTTP) addresses to serve: both on [`DEFAULT_ADDR`] when
/// neither flag is given, else each only where asked; `--no-udp` /
/// `--no-http` switch one off.
pub fn listen_addrs(args: &TrackerArgs) -> Result<(Vec<SocketAddr>, Vec<SocketAddr>)> {
    let explicit = !args.udp.is_empty() || !args.http.is_empty();
    let pick = |given: &[SocketAddr], off: bool| {
        if off {
            Vec::new()
        } else if given.is_empty() && !explicit {
            vec![DEFAULT_ADDR]
        } else {
            given.to_vec()
        }
    };
    let udp = pick(&args.udp, args.no_udp);
    let http = pick(&args.http, args.no_http);
    anyhow::ensure!(
        !udp.is_empty() || !http.is_empty(),
        "nothing to serve: --no-udp and --no-http leave no listener"
    );
    Ok((udp, http))
}

/// The default `--workers`: the number of cores.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
