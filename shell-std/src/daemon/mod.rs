//! `shell-std daemon`: one long-running client session with many
//! torrents, driven over an HTTP JSON API, its state kept in SQLite.
//!
//! - [`engine`]: the torrents over the client's `Session` (add, pause,
//!   resume, recheck, remove; rates; periodic saves); [`entry`]: one
//!   torrent, its state and what the API shows of it;
//! - [`store`]: `STATE/state.db` (torrents, metainfo, paused, byte
//!   counters, fast-resume data, settings), written transactionally;
//! - [`resume`]: fast resume — the saved pieces are trusted for files whose
//!   size and mtime did not change; only pieces of changed files are hashed;
//! - [`api`]: the routes, errors, limits and the token; [`page`]: `/`;
//!   [`serve`]: the HTTP server's bounds (connections, header time and size);
//! - [`remote`]: `shell-std remote`, the command-line client of the API;
//!   [`stream`]: a file served with HTTP `Range` while it downloads.
//!
//! Magnets (BEP 9) are fetched from their `x.pe`, trackers and the
//! session's DHT (BEP 5; `--no-dht`, table in `--state`); the metadata is
//! stored so a restart does not fetch it again. Private torrents never use
//! the DHT. Limits: a magnet cannot be paused before its metadata is in.

pub mod api;
pub mod engine;
pub mod entry;
pub mod page;
pub mod remote;
pub mod resume;
pub mod serve;
pub mod store;
pub mod stream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches};
use ourtorrent_core::id::PeerId;

use crate::client::session::Session;
use crate::client::{random_u32, Common, DEFAULT_LISTEN};

/// Where the API listens when `--http` is not given (loopback only).
pub const DEFAULT_HTTP: &str = "127.0.0.1:9080";
/// Where torrents go when neither `--download-dir` nor the state says.
pub const DEFAULT_DOWNLOAD_DIR: &str = "downloads";
/// The settings kept in the state.
const SETTING_DOWNLOAD_DIR: &str = "download_dir";
/// The peer listen address (a `PUT /api/settings` `listen_port` changes
/// its port for the next start).
const SETTING_LISTEN: &str = "listen";
/// Peer connections at once, all torrents, unless set.
pub const DEFAULT_MAX_CONNECTIONS: usize = 500;
/// Bytes of a generated token (printed as hex).
pub const TOKEN_BYTES: usize = 16;

/// `shell-std daemon` options.
#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Serve the HTTP API (and the web page) here. Bound to a
    /// non-loopback address the API needs a token.
    #[arg(long, default_value = DEFAULT_HTTP)]
    pub http: SocketAddr,
    /// Torrents are downloaded into DIR/NAME. Without it: the folder of
    /// the last run (kept in the state), else `./downloads`.
    #[arg(long, value_name = "DIR")]
    pub download_dir: Option<PathBuf>,
    /// Keep the daemon's state in DIR/state.db.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub state: PathBuf,
    /// Listen for peers on this address. Without it: the address of the
    /// last run (kept in the state, so trackers and peers keep finding us),
    /// else 0.0.0.0:6881; any free port if that one is busy.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The API token (`Authorization: Bearer TOKEN`); required, and
    /// generated and printed once when not given, on a non-loopback
    /// `--http`.
    #[arg(long)]
    pub token: Option<String>,
    /// Most peer connections at once, per torrent.
    #[arg(long, default_value_t = 50)]
    pub max_peers: usize,
    /// Most peer connections at once, all torrents together. Without
    /// it: the last value set (`/api/settings`), else 500.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Download at most RATE bytes/s, all torrents together (e.g. `2M`).
    /// Without it: the last value set (`/api/settings`), else no limit.
    #[arg(long, value_name = "RATE", value_parser = crate::create::parse_size)]
    pub max_down: Option<u64>,
    /// Upload at most RATE bytes/s, all torrents together.
    /// Without it: the last value set, else no limit.
    #[arg(long, value_name = "RATE", value_parser = crate::create::parse_size)]
    pub max_up: Option<u64>,
    /// No DHT (BEP 5): magnets then need `x.pe`, trackers or peers.
    #[arg(long)]
    pub no_dht: bool,
    /// DHT bootstrap nodes instead of the public routers (repeatable).
    #[arg(long = "dht-bootstrap", value_name = "HOST:PORT")]
    pub dht_bootstrap: Vec<String>,
}

/// The client's options at their defaults (so that options the client
/// gains later keep their defaults here).
fn default_common() -> anyhow::Result<Common> {
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        common: Common,
    }
    let m = Wrap::command()
        .try_get_matches_from(["daemon"])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Wrap::from_arg_matches(&m)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .common)
}

fn random_token() -> String {
    let mut b = [0u8; TOKEN_BYTES];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The API's token: the one given, else on a non-loopback `http` a new
/// one (`true`: generated, to print once), else none.
fn token_for(http: SocketAddr, given: Option<&str>) -> anyhow::Result<(Option<String>, bool)> {
    match (given, http.ip().is_loopback()) {
        (Some(""), _) => anyhow::bail!("--token: empty"),
        (Some(t), _) => Ok((Some(t.to_string()), false)),
        (None, true) => Ok((None, false)),
        (None, false) => Ok((Some(random_token()), true)),
    }
}

/// Runs the daemon until SIGINT, SIGTERM or SIGHUP, then stops every
/// torrent (`stopped` announced) and saves its state.
pub fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let mut common = default_common()?;
    common.max_peers = args.max_peers.max(1);
    common.quiet = true;
    let store = store::Store::open(&args.state)?;
    // Flags win; else what was last set; else the defaults.
    let stored = |key: &str| -> anyhow::Result<Option<u64>> {
        Ok(store.setting(key)?.and_then(|v| v.parse().ok()))
    };
    common.max_connections = match args.max_connections {
        Some(n) => n,
        None => stored(engine::SETTING_CONNS)?.map_or(DEFAULT_MAX_CONNECTIONS, |n| n as usize),
    }
    .clamp(1, engine::MAX_CONNECTIONS_LIMIT);
    common.max_down = args.max_down.or(stored(engine::SETTING_DOWN)?);
    common.max_up = args.max_up.or(stored(engine::SETTING_UP)?);
    // Flags win; else what the last run used; else the defaults.
    let download_dir = match &args.download_dir {
        Some(d) => d.clone(),
        None => store
            .setting(SETTING_DOWNLOAD_DIR)?
            .map_or_else(|| PathBuf::from(DEFAULT_DOWNLOAD_DIR), PathBuf::from),
    };
    let listen = match args.listen {
        Some(a) => Some(a),
        None => store
            .setting(SETTING_LISTEN)?
            .and_then(|a| a.parse::<SocketAddr>().ok()),
    };
    std::fs::create_dir_all(&download_dir)
        .with_context(|| format!("{}", download_dir.display()))?;
    let (token, generated) = token_for(args.http, args.token.as_deref())?;
    if let (Some(t), true) = (&token, generated) {
        println!("token: {t} (send it as Authorization: Bearer TOKEN)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let signals = super::client::shutdown_signal()?;
        let id = PeerId::generate(random_u32);
        let max = common.max_connections;
        let (session, listener) = match (args.listen, listen) {
            // Given: it must bind.
            (Some(addr), _) => Session::bind(addr, id, max).await?,
            // Remembered or the default: any port of that address if busy.
            (None, l) => {
                let want = l.unwrap_or(DEFAULT_LISTEN);
                match Session::bind(want, id, max).await {
                    Ok(x) => x,
                    Err(_) => Session::bind(SocketAddr::new(want.ip(), 0), id, max).await?,
                }
            }
        };
        let http = tokio::net::TcpListener::bind(args.http)
            .await
            .with_context(|| format!("--http {}", args.http))?;
        let http_addr = http.local_addr()?;
        let download_dir = download_dir
            .canonicalize()
            .with_context(|| format!("{}", download_dir.display()))?;
        store.set_setting(SETTING_DOWNLOAD_DIR, &download_dir.to_string_lossy())?;
        store.set_setting(SETTING_LISTEN, &session.listen.to_string())?;
        if !args.no_dht {
            let state = args.state.join(crate::client::dht::DHT_STATE_FILE);
            let node =
                crate::client::dht::SessionDht::start(session.listen, &args.dht_bootstrap, state)
                    .await;
            if let Some(node) = node {
                let _ = session.dht.set(Arc::new(node));
            }
        }
        let daemon = engine::Daemon::new(session.clone(), store, download_dir.clone(), common);
        daemon.restore()?;
        tokio::spawn(session.clone().accept_loop(listener));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let ticker = tokio::spawn(daemon.clone().ticker(stop_rx.clone()));
        let app = api::router(api::Api {
            daemon: daemon.clone(),
            token: token.map(Arc::from),
        });
        println!(
            "daemon: api on http://{http_addr}/, peers on {}, downloads in {}, state in {}",
            session.listen,
            download_dir.display(),
            args.state.join(store::DB_FILE).display()
        );
        let server = tokio::spawn(serve::serve(http, app));
        let mut sig = signals;
        let _ = sig.wait_for(|s| *s).await;
        server.abort();
        println!("daemon: stopping");
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), ticker).await;
        daemon.shutdown().await;
        println!("daemon: stopped, state saved");
        anyhow::Ok(())
    })?;
    rt.shutdown_timeout(Duration::from_millis(500));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_loopback_api_always_has_a_token() {
        let lo: SocketAddr = "127.0.0.1:9080".parse().unwrap();
        let lo6: SocketAddr = "[::1]:9080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:9080".parse().unwrap();
        let lan: SocketAddr = "192.168.1.2:9080".parse().unwrap();
        assert_eq!(token_for(lo, None).unwrap(), (None, false));
        assert_eq!(token_for(lo6, None).unwrap(), (None, false));
        assert_eq!(
            token_for(lo, Some("t")).unwrap(),
            (Some("t".to_string()), false)
        );
        for addr in [any, lan] {
            let (t, generated) = token_for(addr, None).unwrap();
            assert!(generated);
            assert_eq!(t.map(|t| t.len()), Some(2 * TOKEN_BYTES));
            assert_eq!(
                token_for(addr, Some("mine")).unwrap(),
                (Some("mine".to_string()), false)
            );
        }
        assert!(token_for(any, Some("")).is_err());
        // Two generated tokens differ.
        assert_ne!(
            token_for(any, None).unwrap().0,
            token_for(any, None).unwrap().0
        );
    }
}
