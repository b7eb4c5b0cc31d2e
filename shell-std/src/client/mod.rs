//! `shell-std client download|seed`: the command-line front end of the
//! client: flags → one plan per torrent → a [`session::Session`] running
//! them all → the screen and the exit code.
//!
//! - [`session`]: one listener (routing by info-hash), tracker clients,
//!   connection limit; `open`: checking and opening one torrent;
//! - [`swarm`]: one torrent's shared state over the core's `Torrent`, its
//!   dialer; [`peers`]: its address book; [`peer`]: one task per
//!   connection; [`writes`]: blocks on their way to disk;
//! - [`announce`]: tracker clients and the announce schedule;
//! - [`magnet`]: a magnet link's metadata phase (BEP 9), before it runs as
//!   a `.torrent` would;
//! - [`meta`], [`storage`]: the torrent's files; [`stats`], [`ui`]: what
//!   the front end shows.

pub mod announce;
pub mod dht;
pub mod fetch;
pub mod magnet;
pub mod meta;
mod open;
pub mod peer;
pub mod peers;
pub mod rate;
pub mod select;
pub mod session;
pub mod stats;
pub mod storage;
pub mod swarm;
pub mod ui;
pub mod writes;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use ourtorrent_core::choker::{DEFAULT_RECHOKE_MS, DEFAULT_UPLOAD_SLOTS};
use ourtorrent_core::id::PeerId;

use announce::{announce_loop, Statuses, TrackerStatus, STOP_ANNOUNCE_TIMEOUT};
use magnet::MagnetLink;
use meta::Info;
use open::prepare;
pub use open::{IN_PROGRESS_BYTES, MAX_PIECE_LEN, MAX_SLOTS, MIN_SLOTS};
use peers::Source;
use session::Session;
use swarm::Ctx;

/// `client` subcommands.
#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Download one or more torrents into `--out DIR` (at once, in one
    /// session), then seed them.
    Download {
        /// The .torrent files (or http:// / https:// URLs of them) and
        /// magnet links (`'magnet:?xt=urn:btih:…'`, with `dn`, `tr` and
        /// `x.pe`): a magnet's metadata is fetched from its peers first
        /// (BEP 9).
        #[arg(required = true, num_args = 1..)]
        torrents: Vec<PathBuf>,
        /// Write the metadata fetched for a magnet as a .torrent here (its
        /// trackers: the magnet's `tr`). With several magnets: a folder,
        /// each saved as NAME.torrent.
        #[arg(long, value_name = "PATH")]
        save_torrent: Option<PathBuf>,
        /// Output folder: a multi-file torrent lands in `DIR/NAME/…`, a
        /// single file at `DIR/NAME`.
        #[arg(long, short, default_value = ".")]
        out: PathBuf,
        /// Stop seeding once uploaded ≥ R × the torrent's size.
        #[arg(long, value_name = "R")]
        seed_ratio: Option<f64>,
        /// Exit as soon as the download is complete.
        #[arg(long)]
        no_seed: bool,
        /// Debug: stop after fetching N pieces (to test resuming).
        #[arg(long, value_name = "N", hide = true)]
        max_pieces: Option<u32>,
        /// Test aid: skip the free-space check (to test a disk that fills
        /// during the download).
        #[arg(long, hide = true)]
        skip_space_check: bool,
        /// Download only these files: indexes as `shell-std info` lists
        /// them, or globs on their paths (`N[,N…]`, e.g. `0,2` or
        /// `'*.mkv'`); the others are skipped. Applies to every torrent
        /// given.
        #[arg(long, value_name = "N[,N…]", conflicts_with = "skip")]
        only: Option<String>,
        /// Skip these files (same forms as `--only`): not created, their
        /// pieces not fetched, except pieces shared with a wanted file
        /// (their bytes go to `.<name>.parts` beside the data).
        #[arg(long, value_name = "N[,N…]")]
        skip: Option<String>,
        /// Fetch pieces in order (first piece first) instead of rarest
        /// first.
        #[arg(long)]
        sequential: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Seed existing data of one or more torrents.
    Seed {
        /// The .torrent files.
        #[arg(required = true, num_args = 1..)]
        torrents: Vec<PathBuf>,
        /// The data: the file of a single-file torrent, or the top folder
        /// of a multi-file one; once per torrent, in the same order.
        #[arg(long, required = true)]
        data: Vec<PathBuf>,
        /// Trust the data: skip hashing it first.
        #[arg(long)]
        skip_verify: bool,
        /// Stop once uploaded ≥ R × the torrent's size.
        #[arg(long, value_name = "R")]
        seed_ratio: Option<f64>,
        #[command(flatten)]
        common: Common,
    },
}

/// Options shared by `download` and `seed`.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Connect to this peer directly (repeatable), besides the trackers.
    #[arg(long = "peer", value_name = "IP:PORT")]
    pub peers: Vec<SocketAddr>,
    /// Listen for peers on this address (one listener for every torrent).
    /// Without it: 0.0.0.0:6881, or any free port if that one is busy; a
    /// port given here that is busy is an error.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Most peer connections at once, per torrent.
    #[arg(long, default_value_t = 50)]
    pub max_peers: usize,
    /// Most peer connections at once, all torrents together.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub max_connections: usize,
    /// Do not announce to the torrent's trackers.
    #[arg(long)]
    pub no_trackers: bool,
    /// Upload slots: the peers we upload to fastest (seeding) or that
    /// upload to us fastest (downloading), rechosen every 10 s; one more
    /// optimistic slot rotates every 30 s (BEP 3).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_UPLOAD_SLOTS)]
    pub upload_slots: usize,
    /// Test aid: rechoke every MS milliseconds (optimistic slot: 3×).
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_RECHOKE_MS, hide = true)]
    pub rechoke_ms: u64,
    /// No tables, no progress bar: only summary lines.
    #[arg(long, short)]
    pub quiet: bool,
    /// Refuse a torrent with an unsafe file name instead of renaming it.
    #[arg(long)]
    pub strict_paths: bool,
    /// Only verify the data already on disk, say how much of each torrent
    /// is there, and exit (0 when every piece is; nothing is created or
    /// fetched).
    #[arg(long)]
    pub check_only: bool,
    /// Stop seeding after this long (e.g. `90s`, `2h`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub seed_time: Option<Duration>,
    /// Download at most RATE bytes per second, all torrents together
    /// (e.g. `500K`, `2M`; token bucket, TCP back-pressure slows peers).
    #[arg(long, value_name = "RATE", value_parser = crate::create::parse_size)]
    pub max_down: Option<u64>,
    /// Upload (send blocks) at most RATE bytes per second, all torrents
    /// together (e.g. `500K`, `2M`).
    #[arg(long, value_name = "RATE", value_parser = crate::create::parse_size)]
    pub max_up: Option<u64>,
    /// Do not use the DHT (BEP 5): no UDP socket, trackers and peers only.
    #[arg(long)]
    pub no_dht: bool,
    /// A DHT node to bootstrap from (repeatable); replaces the default
    /// routers (router.bittorrent.com, dht.transmissionbt.com,
    /// router.utorrent.com, port 6881).
    #[arg(long = "dht-bootstrap", value_name = "HOST:PORT")]
    pub dht_bootstrap: Vec<String>,
    /// The DHT routing table, loaded on start and saved on exit. Default:
    /// `.ourtorrent-dht.state` in `--out` (download) or beside the first
    /// `--data` (seed).
    #[arg(long, value_name = "FILE")]
    pub dht_state: Option<PathBuf>,
}

struct Plan {
    info: Info,
    /// Addresses learned before the torrent opened (a magnet's metadata
    /// phase), with their sources; and those banned there.
    learned: Vec<(SocketAddr, Source)>,
    banned: Vec<SocketAddr>,
    root: PathBuf,
    download: bool,
    skip_verify: bool,
    seed_ratio: Option<f64>,
    no_seed: bool,
    max_pieces: Option<u32>,
    skip_space_check: bool,
    /// `--only` / `--skip` (download only).
    only: Option<String>,
    skip: Option<String>,
    sequential: bool,
    common: Common,
    /// Pieces known verified (the daemon's fast resume): trusted, nothing
    /// hashed, and no source required (peers may come later).
    have: Option<Vec<bool>>,
}

/// Runs a `client` subcommand.
pub fn run(cmd: ClientCmd) -> anyhow::Result<()> {
    // On a terminal the tables and the bar tell the story: only errors are
    // logged there unless RUST_LOG asks for more; elsewhere (a log file, a
    // pipe) warnings too.
    let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if on_terminal { "error" } else { "warn" })
    });
    // Colours only on a terminal: log files stay plain text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let strict_paths = match &cmd {
        ClientCmd::Download { common, .. } | ClientCmd::Seed { common, .. } => common.strict_paths,
    };
    // One plan per torrent (the flags apply to each); magnets wait for
    // their metadata.
    let mut plans = Vec::new();
    let mut magnets = Vec::new();
    let load = |torrent: &Path| -> anyhow::Result<Info> {
        let mut tf = fetch::read_torrent(torrent)?;
        let m = tf
            .parse_with(strict_paths)
            .map_err(|e| anyhow::anyhow!("{}: refused: {e}", torrent.display()))?;
        let quiet = match &cmd {
            ClientCmd::Download { common, .. } | ClientCmd::Seed { common, .. } => common.quiet,
        };
        if !quiet {
            print!("{}", crate::info::render(&m, false));
        }
        Ok(Info::from_metainfo(&m))
    };
    match &cmd {
        ClientCmd::Download {
            torrents,
            save_torrent,
            out,
            seed_ratio,
            no_seed,
            max_pieces,
            skip_space_check,
            only,
            skip,
            sequential,
            common,
        } => {
            for t in torrents {
                if let Some(uri) = t.to_str().filter(|s| MagnetLink::is_magnet(s)) {
                    if common.check_only {
                        bail!("--check-only needs a .torrent (a magnet has no metadata yet)");
                    }
                    magnets.push(MagnetJob {
                        link: MagnetLink::parse(uri)?,
                        out: out.clone(),
                        save: None,
                        seed_ratio: *seed_ratio,
                        no_seed: *no_seed,
                        max_pieces: *max_pieces,
                        skip_space_check: *skip_space_check,
                        only: only.clone(),
                        skip: skip.clone(),
                        sequential: *sequential,
                        common: common.clone(),
                    });
                    continue;
                }
                let info = load(t)?;
                let root = out.join(storage_name(&info.name)?);
                plans.push(Plan {
                    info,
                    learned: Vec::new(),
                    banned: Vec::new(),
                    root,
                    download: true,
                    skip_verify: false,
                    seed_ratio: *seed_ratio,
                    no_seed: *no_seed,
                    max_pieces: *max_pieces,
                    skip_space_check: *skip_space_check,
                    only: only.clone(),
                    skip: skip.clone(),
                    sequential: *sequential,
                    common: common.clone(),
                    have: None,
                });
            }
            if let Some(save) = save_torrent {
                let several = magnets.len() > 1;
                if several && !save.is_dir() {
                    bail!(
                        "--save-torrent {}: with several magnets, give an existing folder",
                        save.display()
                    );
                }
                for m in &mut magnets {
                    m.save = Some((save.clone(), several || save.is_dir()));
                }
            }
        }
        ClientCmd::Seed {
            torrents,
            data,
            skip_verify,
            seed_ratio,
            common,
        } => {
            if data.len() != torrents.len() {
                bail!(
                    "{} torrents but {} --data: give --data once per torrent, in the same order",
                    torrents.len(),
                    data.len()
                );
            }
            for (t, d) in torrents.iter().zip(data) {
                if t.to_str().is_some_and(MagnetLink::is_magnet) {
                    bail!("seed needs a .torrent: a magnet link has no metadata (download it first, or use --save-torrent)");
                }
                plans.push(Plan {
                    info: load(t)?,
                    learned: Vec::new(),
                    banned: Vec::new(),
                    root: d.clone(),
                    download: false,
                    skip_verify: *skip_verify,
                    seed_ratio: *seed_ratio,
                    no_seed: false,
                    max_pieces: None,
                    skip_space_check: true,
                    only: None,
                    skip: None,
                    sequential: false,
                    common: common.clone(),
                    have: None,
                });
            }
        }
    }
    let dht_state = match &cmd {
        ClientCmd::Download { out, common, .. } => common
            .dht_state
            .clone()
            .unwrap_or_else(|| out.join(dht::DHT_STATE_FILE)),
        ClientCmd::Seed { data, common, .. } => common.dht_state.clone().unwrap_or_else(|| {
            data.first()
                .and_then(|d| d.parent())
                .unwrap_or(Path::new("."))
                .join(dht::DHT_STATE_FILE)
        }),
    };
    // Two downloads of one command must not write the same file (seeding
    // one folder for two torrents is fine: it is only read).
    let mut roots: Vec<&Path> = plans
        .iter()
        .filter(|p| p.download)
        .map(|p| p.root.as_path())
        .collect();
    roots.sort_unstable();
    if let Some(w) = roots.windows(2).find(|w| w.first() == w.get(1)) {
        bail!(
            "two torrents would use the same path {}: give them different --out folders (or --data)",
            w.first().map(|r| r.display().to_string()).unwrap_or_default()
        );
    }
    start(plans, magnets, dht_state)
}

/// A magnet link to open once its metadata is fetched, with the flags its
/// plan will take.
struct MagnetJob {
    link: MagnetLink,
    out: PathBuf,
    /// `--save-torrent`: the path, and whether it is a folder.
    save: Option<(PathBuf, bool)>,
    seed_ratio: Option<f64>,
    no_seed: bool,
    max_pieces: Option<u32>,
    skip_space_check: bool,
    only: Option<String>,
    skip: Option<String>,
    sequential: bool,
    common: Common,
}

/// A magnet's life: its metadata phase, then the torrent runs as one
/// opened from a file would (tables, output folder, resume).
async fn magnet_main(
    session: Arc<Session>,
    job: MagnetJob,
    signals: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let quiet = job.common.quiet;
    let link = &job.link;
    let t0 = std::time::Instant::now();
    println!(
        "magnet: {}: fetching the metadata ({} trackers, {} peers given)",
        match &link.name {
            Some(n) => format!("{n} ({})", link.info_hash),
            None => link.info_hash.to_string(),
        },
        link.trackers.len(),
        link.peers.len() + job.common.peers.len()
    );
    let dht = session.dht.get().cloned();
    if dht.is_none()
        && link.peers.is_empty()
        && job.common.peers.is_empty()
        && (job.common.no_trackers || link.trackers.is_empty())
    {
        bail!(
            "nothing to connect to: the magnet has no x.pe, {}, no DHT and no --peer was given",
            if job.common.no_trackers {
                "--no-trackers"
            } else {
                "no tr"
            }
        );
    }
    let (extra, feeder) = match dht {
        Some(d) => {
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            (
                Some(rx),
                Some(tokio::spawn(dht::feed(d, link.info_hash, tx))),
            )
        }
        None => (None, None),
    };
    let sources = magnet::Sources {
        direct: job.common.peers.clone(),
        trackers: !job.common.no_trackers,
        extra,
    };
    let fetched = magnet::fetch(session.clone(), link, sources, signals.clone()).await;
    if let Some(f) = feeder {
        f.abort();
    }
    let Some(f) = fetched? else {
        return Err(Interrupted("before the metadata".into()).into());
    };
    println!(
        "metadata: {} bytes in {:.3} s ({} refused)",
        f.metadata.len(),
        t0.elapsed().as_secs_f64(),
        f.refused
    );
    let bytes = magnet::torrent_bytes(&f.metadata, &link.trackers);
    let mut tf = crate::torrent::TorrentFile::from_bytes(bytes.clone());
    let info = {
        let m = tf
            .parse_with(job.common.strict_paths)
            .map_err(|e| anyhow::anyhow!("the metadata is no torrent: refused: {e}"))?;
        if !quiet {
            print!("{}", crate::info::render(&m, false));
        }
        Info::from_metainfo(&m)
    };
    if let Some((save, folder)) = &job.save {
        let path = if *folder {
            save.join(format!("{}.torrent", storage_name(&info.name)?))
        } else {
            save.clone()
        };
        std::fs::write(&path, &bytes).with_context(|| format!("{}", path.display()))?;
        println!("saved: {}", path.display());
    }
    let root = job.out.join(storage_name(&info.name)?);
    let plan = Plan {
        info,
        learned: f.learned,
        banned: f.banned,
        root,
        download: true,
        skip_verify: false,
        seed_ratio: job.seed_ratio,
        no_seed: job.no_seed,
        max_pieces: job.max_pieces,
        skip_space_check: job.skip_space_check,
        only: job.only,
        skip: job.skip,
        sequential: job.sequential,
        common: job.common,
        have: None,
    };
    let ctx = {
        let s = session.clone();
        let p = &plan;
        tokio::task::block_in_place(move || prepare(p, &s))?
    };
    session.add(ctx.clone())?;
    main_loop(session, ctx, plan, signals).await
}

/// The torrent's name as one safe path component.
fn storage_name(name: &str) -> anyhow::Result<&str> {
    let mut c = Path::new(name).components();
    match (c.next(), c.next()) {
        (Some(std::path::Component::Normal(_)), None) if !name.contains(['/', '\\', '\0']) => {
            Ok(name)
        }
        _ => bail!("refused: unsafe torrent name {name:?}"),
    }
}

pub(crate) fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    u32::from_ne_bytes(b)
}

/// Runs every torrent in one session: one listener, one peer id.
fn start(plans: Vec<Plan>, magnets: Vec<MagnetJob>, dht_state: PathBuf) -> anyhow::Result<()> {
    let Some(first) = plans
        .first()
        .map(|p| &p.common)
        .or(magnets.first().map(|m| &m.common))
    else {
        bail!("no torrent given");
    };
    let listen = first.listen;
    let max_conns = first.max_connections.max(1);
    let (no_dht, dht_bootstrap) = (first.no_dht, first.dht_bootstrap.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let id = PeerId::generate(random_u32);
    let signals = rt.block_on(async { shutdown_signal() })?;
    let (session, listener) = rt.block_on(async {
        match listen {
            Some(addr) => Session::bind(addr, id, max_conns).await,
            // The default port, or any if it is taken.
            None => match Session::bind(DEFAULT_LISTEN, id, max_conns).await {
                Ok(x) => Ok(x),
                Err(_) => {
                    Session::bind(SocketAddr::new(DEFAULT_LISTEN.ip(), 0), id, max_conns).await
                }
            },
        }
    })?;
    tracing::info!(listen = %session.listen, "listening");
    session.set_rate_limits(first.max_down.unwrap_or(0), first.max_up.unwrap_or(0));
    let mut torrents = Vec::new();
    let mut incomplete = 0;
    for plan in plans {
        let name = plan.info.name.clone();
        let ctx = prepare(&plan, &session).with_context(|| name.clone())?;
        if plan.common.check_only {
            let st = ctx.snapshot();
            println!(
                "checked: {name}: {} of {} pieces verified ({} of {} bytes) in {}",
                st.pieces_verified,
                st.pieces,
                st.verified,
                st.total,
                ctx.storage.root.display()
            );
            incomplete += usize::from(!st.complete);
            continue;
        }
        session.add(ctx.clone())?;
        torrents.push((name, ctx, plan));
    }
    if incomplete > 0 {
        bail!("{incomplete} torrent(s) incomplete on disk");
    }
    // The DHT once every torrent opened (not for --check-only).
    let dht_wanted = !no_dht && (!magnets.is_empty() || !torrents.is_empty());
    if dht_wanted {
        if let Some(parent) = dht_state.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(parent);
        }
        let node = rt.block_on(dht::SessionDht::start(
            session.listen,
            &dht_bootstrap,
            dht_state,
        ));
        if let Some(node) = node {
            let _ = session.dht.set(Arc::new(node));
        }
    }
    rt.spawn(session.clone().accept_loop(listener));
    let several = torrents.len() + magnets.len() > 1;
    let results = rt.block_on(async {
        let mut handles: Vec<_> = torrents
            .into_iter()
            .map(|(name, ctx, plan)| {
                let main = main_loop(session.clone(), ctx, plan, signals.clone());
                (name, tokio::spawn(main))
            })
            .collect();
        for job in magnets {
            let name = job.link.label();
            let main = magnet_main(session.clone(), job, signals.clone());
            handles.push((name, tokio::spawn(main)));
        }
        let mut out = Vec::new();
        for (name, h) in handles {
            out.push((name, h.await));
        }
        // The DHT saves its table.
        if let Some(d) = session.dht.get() {
            d.stop().await;
        }
        out
    });
    rt.shutdown_timeout(Duration::from_millis(500));
    let mut first_err = None;
    let mut stopped = Vec::new();
    for (name, r) in results {
        let r = r.map_err(|e| anyhow::anyhow!("{e}")).and_then(|r| r);
        if let Err(e) = r {
            if let Some(i) = e.downcast_ref::<Interrupted>() {
                stopped.push(if several {
                    format!("{name}: {}", i.0)
                } else {
                    i.0.clone()
                });
                continue;
            }
            let e = if several { e.context(name) } else { e };
            if first_err.is_none() {
                first_err = Some(e);
            } else {
                eprintln!("error: {e:#}");
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None if !stopped.is_empty() => Err(Interrupted(stopped.join(", ")).into()),
        None => Ok(()),
    }
}

/// Where the client listens when `--listen` is not given.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 6881);

async fn main_loop(
    session: Arc<Session>,
    ctx: Arc<Ctx>,
    plan: Plan,
    signals: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let quiet = plan.common.quiet;
    tokio::spawn(swarm::dialer(ctx.clone(), session.conns.clone()));
    // Direct peers: booked for good, dialled (and re-dialled with backoff)
    // while not connected.
    ctx.learn(&plan.common.peers, Source::Direct);
    for (addr, source) in &plan.learned {
        ctx.learn(&[*addr], *source);
    }
    for addr in &plan.banned {
        ctx.lock().book.ban(*addr, std::time::Instant::now());
    }
    {
        let c = ctx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => c.tick(),
                    _ = c.stopped() => return,
                }
            }
        });
    }
    // BEP 5, not for private torrents (BEP 27).
    if let Some(d) = session.dht.get().filter(|_| !ctx.info.private) {
        tokio::spawn(dht::torrent_loop(
            d.clone(),
            ctx.clone(),
            session.listen.port(),
        ));
    }
    let statuses: Statuses = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let announcer = (!plan.common.no_trackers).then(|| {
        let mut rows = statuses.lock().unwrap_or_else(|e| e.into_inner());
        for (tier, url) in &ctx.info.trackers {
            rows.push(TrackerStatus {
                tier: *tier,
                url: url.clone(),
                status: "connecting".into(),
                reply: None,
                told_complete: ctx.complete.load(Relaxed),
            });
        }
        tokio::spawn(announce_loop(
            session.clone(),
            ctx.clone(),
            statuses.clone(),
            stop_rx,
        ))
    });
    let table = ui::TrackerTable::new(statuses.clone(), quiet);
    let downloading = !ctx.complete.load(Relaxed);
    // No download bar when there is nothing to download.
    let mut bar = ui::Progress::start(ctx.clone(), table.clone(), quiet || !downloading);
    let t0 = std::time::Instant::now();
    let start_verified = ctx.stats.verified.load(Relaxed);
    let mut signals = signals;
    let ctrl_c = signals.wait_for(|s| *s);
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    let mut failed = None;
    // Only `--peer`s can ever give data (no tracker, no DHT for this
    // torrent): once each has failed, say why and stop rather than wait
    // forever.
    let only_direct = (plan.common.no_trackers || ctx.info.trackers.is_empty())
        && (session.dht.get().is_none() || ctx.info.private);
    let mut unreachable = None;
    if !ctx.complete.load(Relaxed) {
        loop {
            tokio::select! {
                _ = ctx.done.notified() => {}
                _ = &mut ctrl_c => { interrupted = true; break }
                _ = tokio::time::sleep(Duration::from_millis(250)), if only_direct => {}
            }
            if ctx.complete.load(Relaxed) {
                break;
            }
            if let Some(why) = ctx.failure() {
                failed = Some(why);
                break;
            }
            if let Some(errs) = only_direct.then(|| ctx.lock().book.unreachable()).flatten() {
                unreachable = Some(errs);
                break;
            }
            let n = ctx.stats.fetched_pieces.load(Relaxed);
            if ctx.max_pieces.is_some_and(|m| n >= m) {
                bar.finish();
                println!("stopped after {n} pieces (--max-pieces)");
                return Ok(());
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let bytes = ctx.stats.verified.load(Relaxed) - start_verified;
        bar.finish();
        for (addr, why) in unreachable.iter().flatten() {
            eprintln!("{addr}: {why}");
        }
        if !interrupted && failed.is_none() && unreachable.is_none() {
            let st = ctx.snapshot();
            // Two short lines (they fit an 80-column terminal).
            println!(
                "downloaded: {} pieces, {} bytes in {:.3} s ({:.1} MiB/s)",
                st.fetched,
                bytes,
                secs,
                bytes as f64 / secs.max(1e-9) / (1 << 20) as f64,
            );
            println!(
                "integrity: {} hash failures, {} peers banned",
                st.hash_failures, st.banned
            );
            if !quiet {
                print!("{}", ui::swarm_table(&st));
                println!();
                let known: Vec<String> = st
                    .known
                    .iter()
                    .map(|(src, n)| format!("{} {n}", src.name()))
                    .collect();
                println!("peers known: {}", known.join(", "));
            }
            println!(
                "complete: {}{}",
                ctx.storage.root.display(),
                ctx.selection_note()
            );
        }
    } else if plan.download {
        println!(
            "complete: {} (already on disk){}",
            ctx.storage.root.display(),
            ctx.selection_note()
        );
    }
    let seeded = !interrupted && failed.is_none() && unreachable.is_none() && !plan.no_seed;
    if seeded {
        if !quiet {
            println!(
                "seeding on {} (Ctrl-C to stop{})",
                ctx.listen,
                plan.seed_ratio
                    .map(|r| format!(", or at ratio {r}"))
                    .unwrap_or_default()
            );
        }
        println!("seeding: listening on {}", ctx.listen);
        let mut bar = ui::Progress::seeding(ctx.clone(), table.clone(), quiet);
        let until = plan
            .common
            .seed_time
            .map(|d| tokio::time::Instant::now() + d);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            if until.is_some_and(|t| tokio::time::Instant::now() >= t) {
                break;
            }
            if let Some(r) = plan.seed_ratio {
                let up = ctx.stats.uploaded.load(Relaxed) as f64;
                if up >= r * ctx.info.total as f64 {
                    break;
                }
            }
        }
        bar.finish();
    }
    // Only where it means something: after seeding, or when a download
    // also served bytes; never after an error line.
    let up = ctx.stats.uploaded.load(Relaxed);
    if (seeded || up > 0) && failed.is_none() && unreachable.is_none() {
        println!("uploaded: {up} bytes");
    }
    // BEP 3: tell the trackers we leave (best effort, bounded), after
    // `completed` if the download finished since the last announce (e.g.
    // with --no-seed), so that they count the completion.
    let _ = stop_tx.send(true);
    if let Some(h) = announcer {
        let _ = tokio::time::timeout(STOP_ANNOUNCE_TIMEOUT + Duration::from_secs(1), h).await;
    }
    // This torrent alone stops: no more inbound routing, its tasks end;
    // the session's other torrents go on.
    session.remove(&ctx.info.info_hash);
    ctx.stop();
    if interrupted {
        return Err(Interrupted(format!(
            "{}/{} pieces verified",
            ctx.picker_have(),
            ctx.info.pieces()
        ))
        .into());
    }
    if unreachable.is_some() {
        bail!(
            "nothing to connect to: no --peer completed a handshake and {}",
            if plan.common.no_trackers {
                "--no-trackers was given"
            } else {
                "the torrent lists no tracker"
            }
        );
    }
    if let Some(why) = failed {
        bail!(
            "storage failed: {why} ({} of {} pieces verified; free space and run the same command to resume)",
            ctx.picker_have(),
            ctx.info.pieces()
        );
    }
    Ok(())
}

/// The user stopped a download before it was complete (Ctrl-C, SIGTERM,
/// SIGHUP): how far it got. The process exits with 130.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted: {}; run the same command to resume", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Completes on SIGINT (Ctrl-C), SIGTERM (`kill`, systemd, docker) or
/// SIGHUP (the terminal closed): each stops the client the same way, with
/// its `stopped` announces.
/// The handlers are installed at once (before any output a user or a
/// test could react to); the returned receiver turns true on the first
/// signal.
pub(crate) fn shutdown_signal() -> anyhow::Result<tokio::sync::watch::Receiver<bool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}

/// The daemon's way in (`crate::daemon`): where torrent `info` lives under
/// `dir` (`dir/NAME`, the name one safe path component).
pub fn root_in(dir: &Path, info: &Info) -> anyhow::Result<PathBuf> {
    Ok(dir.join(storage_name(&info.name)?))
}

/// The daemon's way in: opens torrent `info` at `root` for download (and
/// then seeding) in `session`, trusting `have` (the pieces the daemon
/// verified or kept from its fast-resume state: nothing is hashed here).
/// The caller adds the returned torrent to the session and runs it.
pub fn open_resumed(
    session: &Session,
    info: Info,
    root: PathBuf,
    common: Common,
    have: Vec<bool>,
) -> anyhow::Result<Arc<Ctx>> {
    open_resumed_skipping(session, info, root, common, have, None)
}

/// [`open_resumed`] with files skipped from the start (`skip`: indexes,
/// as `--skip` takes them): skipped files are not created.
pub fn open_resumed_skipping(
    session: &Session,
    info: Info,
    root: PathBuf,
    common: Common,
    have: Vec<bool>,
    skip: Option<String>,
) -> anyhow::Result<Arc<Ctx>> {
    let plan = Plan {
        info,
        learned: Vec::new(),
        banned: Vec::new(),
        root,
        download: true,
        skip_verify: false,
        seed_ratio: None,
        no_seed: false,
        max_pieces: None,
        skip_space_check: true,
        common,
        have: Some(have),
        only: None,
        skip,
        sequential: false,
    };
    prepare(&plan, session)
}
