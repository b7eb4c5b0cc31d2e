//! The `client` flags ([`ClientCmd`], [`Common`]) and [`run`]: logging set
//! up, one plan per `.torrent` (a [`MagnetJob`] per magnet link), the
//! flags checked against each other, then [`start`].
//!
//! Limits: a command's downloads must not share an output path; `seed`
//! takes one `--data` per torrent and no magnet.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use ourtorrent_core::choker::{DEFAULT_RECHOKE_MS, DEFAULT_UPLOAD_SLOTS};

use super::magnet::MagnetLink;
use super::magnet_job::MagnetJob;
use super::meta::Info;
use super::plan::{storage_name, Choices, Plan};
use super::start::start;
use super::{dht, fetch};

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
            let choices = Choices {
                seed_ratio: *seed_ratio,
                no_seed: *no_seed,
                max_pieces: *max_pieces,
                skip_space_check: *skip_space_check,
                only: only.clone(),
                skip: skip.clone(),
                sequential: *sequential,
                common: common.clone(),
            };
            for t in torrents {
                if let Some(uri) = t.to_str().filter(|s| MagnetLink::is_magnet(s)) {
                    if common.check_only {
                        bail!("--check-only needs a .torrent (a magnet has no metadata yet)");
                    }
                    magnets.push(MagnetJob {
                        link: MagnetLink::parse(uri)?,
                        out: out.clone(),
                        save: None,
                        choices: choices.clone(),
                    });
                    continue;
                }
                let info = load(t)?;
                let root = out.join(storage_name(&info.name)?);
                plans.push(Plan::new(info, root, true, choices.clone()));
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
                let choices = Choices::seeding(common.clone(), *seed_ratio);
                plans.push(Plan {
                    skip_verify: *skip_verify,
                    ..Plan::new(load(t)?, d.clone(), false, choices)
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
