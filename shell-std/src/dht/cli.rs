//! `shell-std dht` itself: its flags ([`DhtArgs`]) and [`run`], which
//! serves a node until a signal (SIGUSR1 prints the counters) or runs one
//! `--lookup` and prints what it found.
//!
//! Limits: a lookup gives up after `--timeout` (at most
//! [`MAX_LOOKUP_TIMEOUT_S`]).

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Instant as StdInstant;

use anyhow::{bail, Context, Result};
use clap::Args;
use ourtorrent_core::id::InfoHash;
use serde_json::json;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::counters::{total, Counters};
use super::driver::{drive, Cmd, Found, NodeSetup};
use super::hex;

/// `shell-std dht` options.
#[derive(Args, Debug, Clone)]
pub struct DhtArgs {
    /// UDP address to serve on (IPv4), e.g. `0.0.0.0:6881`.
    #[arg(long)]
    pub listen: SocketAddrV4,
    /// A node to join the DHT through (HOST:PORT); repeat for several (the
    /// first 8 resolved are used). Without any, the node only answers (a
    /// bootstrap router) and queries the nodes of its saved table.
    #[arg(long, value_name = "HOST:PORT")]
    pub bootstrap: Vec<String>,
    /// Routing table file: loaded on start, written on exit.
    #[arg(long, default_value = "dht.state")]
    pub state: PathBuf,
    /// One-shot: bootstrap, run one `get_peers` lookup of this info-hash
    /// (40 hex digits), print the peers found, the KRPC messages sent and
    /// received and the time, then exit: 0 if peers were found, 1 if not.
    #[arg(long, value_name = "INFOHASH", value_parser = parse_info_hash)]
    pub lookup: Option<InfoHash>,
    /// With `--lookup`: print the result as one JSON object.
    #[arg(long, requires = "lookup")]
    pub json: bool,
    /// With `--lookup`: give up after this many seconds (1 to 3600).
    #[arg(long, default_value_t = 30, requires = "lookup",
          value_parser = clap::value_parser!(u64).range(1..=MAX_LOOKUP_TIMEOUT_S))]
    pub timeout: u64,
}

/// The longest `--timeout` of a one-shot `--lookup`, in seconds.
pub const MAX_LOOKUP_TIMEOUT_S: u64 = 3600;

fn parse_info_hash(s: &str) -> std::result::Result<InfoHash, String> {
    InfoHash::from_hex(s.as_bytes()).map_err(|e| format!("info-hash {s:?}: {e}"))
}

/// Runs the node until SIGINT or SIGTERM, then prints its counters and
/// saves its table; with `--lookup`, runs one lookup and exits (status 1
/// when it found no peer).
pub fn run(args: DhtArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.lookup {
        Some(ih) => {
            let found = rt.block_on(lookup_once(args.clone(), ih))?;
            if !found {
                std::process::exit(1);
            }
            Ok(())
        }
        None => rt.block_on(serve(args)),
    }
}

/// `--lookup`: starts a node, asks it for one lookup, prints what it found
/// and the node's message counters (bootstrap included: the node is fresh
/// unless `--state` holds a table). Returns whether peers were found.
async fn lookup_once(args: DhtArgs, info_hash: InfoHash) -> Result<bool> {
    let sock = UdpSocket::bind(args.listen)
        .await
        .with_context(|| format!("bind udp {}", args.listen))?;
    let bound = sock.local_addr()?;
    let (tx, rx) = mpsc::channel(16);
    let setup = NodeSetup {
        state: args.state.clone(),
        routers: args.bootstrap.clone(),
        quiet_routers: false,
        standalone: false,
    };
    let node = tokio::spawn(drive(sock, setup, rx));
    let start = StdInstant::now();
    let (rtx, mut rrx) = mpsc::channel(64);
    tx.send(Cmd::Lookup {
        info_hash,
        announce: None,
        reply: rtx,
    })
    .await
    .context("the DHT node ended at start")?;
    let timeout = std::time::Duration::from_secs(args.timeout);
    let mut peers: Vec<SocketAddr> = Vec::new();
    // Milliseconds to 0.1 ms: a loopback lookup takes about one.
    let ms = |t: StdInstant| (t.elapsed().as_secs_f64() * 1e4).round() / 10.0;
    let mut first_peer_ms: Option<f64> = None;
    let mut timed_out = false;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rrx.recv()).await {
            Ok(Some(Found::Peers(p))) => {
                first_peer_ms.get_or_insert_with(|| ms(start));
                for a in p {
                    if !peers.contains(&a) {
                        peers.push(a);
                    }
                }
            }
            Ok(Some(Found::Done { .. }) | None) => break,
            Err(_) => {
                timed_out = true;
                break;
            }
        }
    }
    let done_ms = ms(start);
    let (ctx, mut crx) = mpsc::channel(1);
    let c = match tx.send(Cmd::Counters { reply: ctx }).await {
        Ok(()) => crx.recv().await.unwrap_or_default(),
        Err(_) => Counters::default(),
    };
    let _ = tx.send(Cmd::Stop).await;
    match node.await {
        Ok(r) => r?,
        Err(e) => bail!("DHT node task: {e}"),
    }
    let (sent, received) = (total(&c.msgs_out), total(&c.msgs_in));
    if args.json {
        let v = json!({
            "lookup": {
                "info_hash": hex(info_hash.as_bytes()),
                "listen": bound.to_string(),
                "peers": peers.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                "first_peer_ms": first_peer_ms,
                "done_ms": done_ms,
                "timed_out": timed_out,
                "messages_sent": sent,
                "messages_received": received,
                "out": c.msgs_out.json(),
                "in": c.msgs_in.json(),
            }
        });
        println!("{v}");
    } else {
        for p in &peers {
            println!("peer {p}");
        }
        let first = first_peer_ms.map_or("-".to_string(), |m| format!("{m} ms"));
        println!(
            "lookup {}: {} peers (first after {first}), done after {done_ms} ms{}; \
             messages sent {sent} (get_peers {}, find_node {}), received {received}",
            hex(info_hash.as_bytes()),
            peers.len(),
            if timed_out { " (timed out)" } else { "" },
            c.msgs_out.get_peers,
            c.msgs_out.find_node,
        );
    }
    Ok(!peers.is_empty())
}

async fn serve(args: DhtArgs) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Installed before anything is printed, so a test's first signal is
    // never the default action.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigusr1 = signal(SignalKind::user_defined1())?;
    let sock = UdpSocket::bind(args.listen)
        .await
        .with_context(|| format!("bind udp {}", args.listen))?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let cmd = tokio::select! {
                _ = sigusr1.recv() => Cmd::PrintStats,
                _ = sigint.recv() => Cmd::Stop,
                _ = sigterm.recv() => Cmd::Stop,
            };
            let stop = matches!(cmd, Cmd::Stop);
            if tx.send(cmd).await.is_err() || stop {
                return;
            }
        }
    });
    let setup = NodeSetup {
        state: args.state,
        routers: args.bootstrap,
        quiet_routers: false,
        standalone: true,
    };
    drive(sock, setup, rx).await
}
