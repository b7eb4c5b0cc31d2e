//! The `shell-std` binary: OurTorrent's desktop client, tracker and tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "shell-std",
    version,
    about = "OurTorrent: BitTorrent client, tracker and tools"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a .torrent file's data (name, size, pieces, info-hash, trackers, files) and its magnet link.
    Info {
        /// The .torrent file.
        torrent: PathBuf,
        /// List every file (default: the first 1000).
        #[arg(long)]
        all_files: bool,
        /// Print one JSON object (name, info_hash, piece_length, pieces,
        /// total_size, private, files, trackers, magnet, ...) instead of tables.
        #[arg(long)]
        json: bool,
        /// Refuse a torrent with an unsafe file name instead of renaming it.
        #[arg(long)]
        strict_paths: bool,
    },
    /// Run a UDP (BEP 15) and HTTP tracker that keeps its state in SQLite.
    Tracker(shell_std::tracker::TrackerArgs),
    /// Load-test a UDP (BEP 15) tracker: closed loop, responses/s and latency.
    Loadtest(shell_std::loadtest::LoadtestArgs),
    /// BitTorrent client: download or seed a torrent.
    Client {
        #[command(subcommand)]
        cmd: shell_std::client::ClientCmd,
    },
    /// Make a .torrent from a file or a folder.
    Create(shell_std::create::CreateArgs),
    /// Run a standalone Mainline DHT node (BEP 5), or a bootstrap router.
    Dht(shell_std::dht::DhtArgs),
    /// Run many torrents in one long-running session, driven over an HTTP
    /// JSON API (and a web page), state kept in SQLite.
    Daemon(shell_std::daemon::DaemonArgs),
    /// Drive a running daemon: add, list, pause, resume, remove.
    Remote(shell_std::daemon::remote::RemoteArgs),
}

/// `tracing` to stderr; `RUST_LOG` overrides the default `info` level.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Info {
            torrent,
            all_files,
            json,
            strict_paths,
        } => shell_std::info::run(&torrent, all_files, json, strict_paths),
        Cmd::Tracker(args) => {
            init_logging();
            shell_std::tracker::run(args)
        }
        Cmd::Loadtest(args) => shell_std::loadtest::run(args),
        Cmd::Client { cmd } => shell_std::client::run(cmd),
        Cmd::Create(a) => shell_std::create::run(&a),
        Cmd::Dht(a) => {
            init_logging();
            shell_std::dht::run(a)
        }
        Cmd::Daemon(a) => {
            init_logging();
            shell_std::daemon::run(a)
        }
        Cmd::Remote(a) => shell_std::daemon::remote::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(i) = e.downcast_ref::<shell_std::client::Interrupted>() {
                // As shells report a process stopped by SIGINT: 128 + 2.
                eprintln!("{i}");
                return ExitCode::from(130);
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
