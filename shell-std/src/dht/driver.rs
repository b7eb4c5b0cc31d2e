//! [`drive`]: the one UDP driver of a node (of `shell-std dht` and of
//! every client session), around the core's sans-IO [`Dht`]; its owner
//! sends it [`Cmd`]s (lookups, announces, counters, stop) and gets
//! [`Found`]s back. Bootstrap routers resolve in the background.
//!
//! Limits: IPv4 only; a table of [`TABLE_BUCKETS`] × K nodes, a peer store
//! of [`MAX_STORED_PEERS`]; a lookup waits at most [`WAIT_FOR_NODES`] for
//! the table's first node; at most [`MAX_ROUTERS`] routers.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Instant as StdInstant;

use anyhow::{bail, Result};
use ourtorrent_core::dht::krpc::{Token, MAX_DATAGRAM_LEN, RECOMMENDED_TOKENS};
use ourtorrent_core::dht::node::LookupId;
use ourtorrent_core::dht::node::MAX_ROUTERS;
use ourtorrent_core::dht::{bep42, Config, Dht, Event, NodeSlot, PeerSlot, K};
use ourtorrent_core::id::InfoHash;
use ourtorrent_core::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::counters::{stats_json, Counters};
use super::state::{choose_id, load_state, save_state};
use super::{hex, MAX_STORED_PEERS, TABLE_BUCKETS, WAIT_FOR_NODES};

/// Receive buffer: the largest UDP payload, so an oversized datagram is
/// seen whole and counted (the core refuses anything over
/// [`MAX_DATAGRAM_LEN`]).
const RECV_BUF: usize = 65_536;
/// How often waiting lookups look at the table.
const PARKED_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Resolves `HOST:PORT` routers to IPv4 addresses (at most [`MAX_ROUTERS`];
/// one that does not resolve is skipped, with a warning unless `quiet`: a
/// client's default routers are not worth a warning on a machine without
/// DNS).
async fn resolve_routers(names: &[String], quiet: bool) -> Vec<SocketAddrV4> {
    let mut out = Vec::new();
    for name in names {
        match tokio::net::lookup_host(name.as_str()).await {
            Ok(addrs) => {
                let v4 = addrs.filter_map(|a| match a {
                    SocketAddr::V4(a) => Some(a),
                    SocketAddr::V6(_) => None,
                });
                let mut any = false;
                for a in v4 {
                    any = true;
                    if !out.contains(&a) && out.len() < MAX_ROUTERS {
                        out.push(a);
                    }
                }
                if !any && !quiet {
                    warn!("bootstrap {name}: no IPv4 address");
                }
            }
            Err(e) if quiet => debug!("bootstrap {name}: {e}"),
            Err(e) => warn!("bootstrap {name}: {e}"),
        }
    }
    out
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("OS RNG: {e}"))?;
    Ok(b)
}

/// What the owner of a node ([`drive`]) asks of it.
pub enum Cmd {
    /// Look `info_hash` up (`get_peers`) and, with `announce`, announce us
    /// on that TCP port to the closest nodes (`announce_peer`). Peers go to
    /// `reply` as replies bring them, then one [`Found::Done`].
    Lookup {
        /// The torrent.
        info_hash: InfoHash,
        /// Our TCP port to announce, if any.
        announce: Option<u16>,
        /// Where the peers go.
        reply: mpsc::Sender<Found>,
    },
    /// Print the counters as one JSON line.
    PrintStats,
    /// Send the shell's message counters to `reply`.
    Counters {
        /// Where the counters go.
        reply: mpsc::Sender<Counters>,
    },
    /// Save the table and end.
    Stop,
}

/// What a [`Cmd::Lookup`] reports.
#[derive(Debug)]
pub enum Found {
    /// Peers from one reply.
    Peers(Vec<SocketAddr>),
    /// The lookup ended (with zeros when the node had no lookup slot free,
    /// or knew no node after [`WAIT_FOR_NODES`]).
    Done {
        /// Peers received in all.
        peers: u32,
        /// `announce_peer` queries sent.
        announced: u16,
    },
}

/// How [`drive`] sets a node up.
pub struct NodeSetup {
    /// Routing table file: loaded now, written at [`Cmd::Stop`].
    pub state: PathBuf,
    /// Bootstrap routers (`HOST:PORT`), resolved in the background.
    pub routers: Vec<String>,
    /// Routers that do not resolve are logged at debug level only.
    pub quiet_routers: bool,
    /// `shell-std dht`: print the "dht listening" line, and the counters
    /// at the end.
    pub standalone: bool,
}

/// Runs the core's [`Dht`] on `sock` (the one UDP driver of `shell-std
/// dht` and of every client session) until [`Cmd::Stop`] or until every
/// sender is gone; then saves the table to `setup.state`.
pub async fn drive(sock: UdpSocket, setup: NodeSetup, mut cmds: mpsc::Receiver<Cmd>) -> Result<()> {
    let state = load_state(&setup.state)?.unwrap_or_default();
    if state.bad_lines > 0 {
        warn!(
            "{}: {} bad lines skipped (the first: line {})",
            setup.state.display(),
            state.bad_lines,
            state.first_bad.unwrap_or_default()
        );
    }
    let bound = sock.local_addr()?;
    let listen_ip = match bound {
        SocketAddr::V4(a) => *a.ip(),
        SocketAddr::V6(_) => bail!("the DHT is IPv4 only: {bound}"),
    };
    let id = choose_id(state.id, listen_ip, random()?);
    // Routers resolve in the background: a slow resolver never holds the
    // node (nor the session's exit) back.
    let (rtx, mut routers_rx) = mpsc::channel(1);
    if !setup.routers.is_empty() {
        let (names, quiet) = (setup.routers.clone(), setup.quiet_routers);
        tokio::spawn(async move {
            let r = resolve_routers(&names, quiet).await;
            if r.is_empty() && !quiet {
                warn!("no bootstrap router resolved");
            }
            let _ = rtx.send(r).await;
        });
    } else {
        drop(rtx);
    }

    let start = StdInstant::now();
    let clock = move || Instant::from_millis(start.elapsed().as_millis() as u64);
    let mut slots = vec![NodeSlot::EMPTY; TABLE_BUCKETS * K];
    let mut peers = vec![PeerSlot::EMPTY; MAX_STORED_PEERS];
    let mut dht = Dht::new(
        Config::default(),
        id,
        random()?,
        &mut slots,
        &mut peers,
        clock(),
    );
    let restored = state
        .nodes
        .iter()
        .filter(|(nid, addr)| dht.restore_node(clock(), *nid, *addr))
        .count();
    if !state.nodes.is_empty() {
        info!(
            "{}: {restored} of {} nodes restored",
            setup.state.display(),
            state.nodes.len()
        );
    }
    if restored > 0 {
        // Refreshes our neighbourhood through the saved table; a lookup
        // slot is always free at start.
        let _ = dht.bootstrap(clock(), &[]);
    }
    if setup.standalone {
        println!("dht listening on {bound} node-id {}", hex(&id.0));
    }

    let mut lookups: HashMap<LookupId, mpsc::Sender<Found>> = HashMap::new();
    let mut c = Counters::default();
    let mut tokens = vec![Token::EMPTY; RECOMMENDED_TOKENS];
    let mut rx = vec![0u8; RECV_BUF];
    let mut tx = [0u8; MAX_DATAGRAM_LEN];
    let mut routers_pending = !setup.routers.is_empty();
    let mut parked: Vec<(InfoHash, Option<u16>, mpsc::Sender<Found>, StdInstant)> = Vec::new();
    loop {
        let now = clock();
        while let Some((to, n)) = dht.poll_transmit(now, &mut tx) {
            let d = tx.get(..n).unwrap_or_default();
            c.msgs_out.count(d, &mut tokens);
            if let Err(e) = sock.send_to(d, to).await {
                c.send_errors += 1;
                debug!("send to {to}: {e}");
            }
        }
        while let Some(e) = dht.poll_event() {
            log_event(&e);
            match e {
                Event::PeersFound { lookup, peers, .. } => {
                    if let Some(r) = lookups.get(&lookup) {
                        let v = peers.iter().map(|a| SocketAddr::V4(*a)).collect();
                        let _ = r.try_send(Found::Peers(v));
                    }
                }
                Event::LookupDone {
                    lookup,
                    peers,
                    announced,
                    ..
                } => {
                    if let Some(r) = lookups.remove(&lookup) {
                        let _ = r.try_send(Found::Done { peers, announced });
                    }
                }
            }
        }
        let wake = dht
            .poll_timeout()
            .map(|t| start + std::time::Duration::from_millis(t.millis()));
        // Parked lookups are looked at again at least this often.
        let wake = if parked.is_empty() {
            wake
        } else {
            let soon = StdInstant::now() + PARKED_POLL;
            Some(wake.map_or(soon, |w| w.min(soon)))
        };
        let sleep = async {
            match wake {
                Some(w) => tokio::time::sleep_until(tokio::time::Instant::from_std(w)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = sock.recv_from(&mut rx) => match r {
                Ok((n, SocketAddr::V4(from))) => {
                    let d = rx.get(..n).unwrap_or_default();
                    if n > MAX_DATAGRAM_LEN {
                        c.oversized += 1;
                    }
                    c.msgs_in.count(d, &mut tokens);
                    dht.handle_datagram(clock(), from, d);
                }
                Ok((_, SocketAddr::V6(_))) => c.ipv6_dropped += 1,
                Err(e) => {
                    c.recv_errors += 1;
                    debug!("recv: {e}");
                }
            },
            r = routers_rx.recv(), if routers_pending => {
                routers_pending = false;
                if let Some(r) = r.filter(|r| !r.is_empty()) {
                    let _ = dht.bootstrap(clock(), &r);
                }
            }
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Lookup { info_hash, announce, reply }) => {
                    // While the table is empty (bootstrapping) a lookup
                    // waits, up to WAIT_FOR_NODES.
                    let until = StdInstant::now() + WAIT_FOR_NODES;
                    parked.push((info_hash, announce, reply, until));
                }
                Some(Cmd::PrintStats) => println!("{}", stats_json(&dht, &c, clock())),
                Some(Cmd::Counters { reply }) => {
                    let _ = reply.try_send(c);
                }
                Some(Cmd::Stop) | None => break,
            },
            _ = sleep => {}
        }
        let now = clock();
        if dht.poll_timeout().is_some_and(|t| t <= now) {
            dht.handle_timeout(now);
        }
        // Parked lookups start once the table has a node, or end empty.
        let wall = StdInstant::now();
        let has_nodes = !dht.table().is_empty();
        for (info_hash, announce, reply, until) in std::mem::take(&mut parked) {
            if !has_nodes && wall < until {
                parked.push((info_hash, announce, reply, until));
                continue;
            }
            let started = if has_nodes {
                match announce {
                    Some(port) => dht.announce(now, info_hash, port, false).ok(),
                    None => dht.get_peers(now, info_hash).ok(),
                }
            } else {
                None
            };
            match started {
                Some(id) => {
                    lookups.insert(id, reply);
                }
                None => {
                    let _ = reply.try_send(Found::Done {
                        peers: 0,
                        announced: 0,
                    });
                }
            }
        }
    }
    if setup.standalone {
        println!("{}", stats_json(&dht, &c, clock()));
    }
    // Behind a NAT the address others see is known only from their replies
    // (BEP 42 `ip`): the next run gets an id that matches it.
    let next_id = match dht.external_ip() {
        Some(ip) if !bep42::is_valid(&id, ip) => {
            info!("external address {ip}: a BEP 42 node id from the next start");
            bep42::generate(ip, random()?)
        }
        _ => id,
    };
    let n = save_state(&setup.state, next_id, dht.table())?;
    info!("{}: {n} nodes saved", setup.state.display());
    Ok(())
}

fn log_event(e: &Event) {
    match e {
        Event::PeersFound {
            lookup,
            info_hash,
            peers,
        } => debug!(lookup = lookup.0, %info_hash, peers = peers.len(), "peers found"),
        Event::LookupDone {
            lookup,
            target,
            messages,
            responded,
            peers,
            announced,
        } => debug!(
            lookup = lookup.0,
            target = hex(&target.0),
            messages,
            responded,
            peers,
            announced,
            "lookup done"
        ),
    }
}
