//! `shell-std dht`: a standalone Mainline DHT node (BEP 5) — a long-lived
//! node, or with no `--bootstrap` a bootstrap router that only answers —
//! and [`drive`], the one UDP driver of a node, which every client session
//! runs too (its owner sends [`Cmd`]s: lookups, announces, stop).
//!
//! A thin driver around the core's sans-IO [`Dht`] on one tokio UDP socket:
//! every datagram goes to [`Dht::handle_datagram`], every
//! [`Dht::poll_transmit`] is sent, [`Dht::handle_timeout`] runs at
//! [`Dht::poll_timeout`], and events are logged at debug level. It prints
//! `dht listening on ADDR node-id HEX` once bound, and one JSON line of
//! counters ([`Counters`]) on SIGUSR1 and on exit (SIGINT or SIGTERM).
//!
//! The routing table is saved on exit and loaded on start (see
//! [`save_state`] for the file's format), so a restart keeps its node id
//! and does not bootstrap from nothing.
//!
//! Limits: IPv4 only (as the core); a table of [`TABLE_BUCKETS`] × K
//! nodes, a peer store of [`MAX_STORED_PEERS`], a state file of at most
//! [`MAX_STATE_BYTES`]; the core bounds the rest (lookups, queues).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Instant as StdInstant;

use anyhow::{bail, Context, Result};
use clap::Args;
use ourtorrent_core::dht::krpc::{self, Body, Query, Token, MAX_DATAGRAM_LEN, RECOMMENDED_TOKENS};
use ourtorrent_core::dht::node::LookupId;
use ourtorrent_core::dht::node::MAX_ROUTERS;
use ourtorrent_core::dht::{
    bep42, Config, Dht, Event, NodeId, NodeSlot, PeerSlot, RoutingTable, Stats, K,
};
use ourtorrent_core::id::InfoHash;
use ourtorrent_core::time::Instant;
use serde_json::json;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Routing-table buckets (of K = 8 nodes): 32 cover the Mainline DHT
/// (only ~log2(nodes) buckets ever fill).
pub const TABLE_BUCKETS: usize = 32;
/// Peers stored from announce_peer (40 bytes each).
pub const MAX_STORED_PEERS: usize = 4096;
/// A state file longer than this is refused (a full table is ~16 KiB).
pub const MAX_STATE_BYTES: u64 = 1 << 20;
/// Receive buffer: the largest UDP payload, so an oversized datagram is
/// seen whole and counted (the core refuses anything over
/// [`MAX_DATAGRAM_LEN`]).
const RECV_BUF: usize = 65_536;
/// A lookup asked for while the routing table is empty waits this long
/// for the bootstrap to bring a node.
pub const WAIT_FOR_NODES: std::time::Duration = std::time::Duration::from_secs(10);
/// How often waiting lookups look at the table.
const PARKED_POLL: std::time::Duration = std::time::Duration::from_millis(50);
/// First line of a state file.
const STATE_HEADER: &str = "# ourtorrent dht state v1";

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

/// Messages by kind, one direction.
#[derive(Clone, Copy, Debug, Default)]
pub struct KindCounts {
    ping: u64,
    find_node: u64,
    get_peers: u64,
    announce_peer: u64,
    other_query: u64,
    response: u64,
    error: u64,
    malformed: u64,
}

impl KindCounts {
    /// Counts `bytes` by its KRPC kind (`tokens`: scratch for the decoder).
    fn count(&mut self, bytes: &[u8], tokens: &mut [Token]) {
        let c = match krpc::decode(bytes, tokens).map(|m| m.body) {
            Ok(Body::Query { query, .. }) => match query {
                Query::Ping => &mut self.ping,
                Query::FindNode { .. } => &mut self.find_node,
                Query::GetPeers { .. } => &mut self.get_peers,
                Query::AnnouncePeer { .. } => &mut self.announce_peer,
                Query::Unknown { .. } => &mut self.other_query,
            },
            Ok(Body::Response(_)) => &mut self.response,
            Ok(Body::Error { .. }) => &mut self.error,
            Err(_) => &mut self.malformed,
        };
        *c += 1;
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "ping": self.ping,
            "find_node": self.find_node,
            "get_peers": self.get_peers,
            "announce_peer": self.announce_peer,
            "other_query": self.other_query,
            "response": self.response,
            "error": self.error,
            "malformed": self.malformed,
        })
    }
}

/// The shell's own counters, beside the core's [`Stats`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// Datagrams received, by kind.
    pub msgs_in: KindCounts,
    /// Datagrams sent, by kind.
    pub msgs_out: KindCounts,
    /// Datagrams longer than [`MAX_DATAGRAM_LEN`] (also `malformed`).
    pub oversized: u64,
    /// Datagrams from IPv6 sources (dropped: the core is IPv4 only).
    pub ipv6_dropped: u64,
    /// `recv_from` errors.
    pub recv_errors: u64,
    /// `send_to` errors (the datagram is dropped).
    pub send_errors: u64,
}

/// One JSON object: node id, uptime, table size, peers stored, messages
/// in/out by kind, the core's counters and the shell's errors.
fn stats_json(dht: &Dht<'_>, c: &Counters, now: Instant) -> serde_json::Value {
    let s: Stats = dht.stats();
    json!({
        "dht_stats": {
            "node_id": hex(&dht.id().0),
            "uptime_s": now.secs(),
            "table_nodes": dht.table().len(),
            "table_buckets": dht.table().buckets(),
            "peers_stored": dht.stored_peer_count(now),
            "in": c.msgs_in.json(),
            "out": c.msgs_out.json(),
            "oversized": c.oversized,
            "ipv6_dropped": c.ipv6_dropped,
            "recv_errors": c.recv_errors,
            "send_errors": c.send_errors,
            "core": {
                "datagrams_in": s.datagrams_in,
                "datagrams_out": s.datagrams_out,
                "malformed": s.malformed,
                "queries_in": s.queries_in,
                "unsolicited": s.unsolicited,
                "errors_in": s.errors_in,
                "id_mismatch": s.id_mismatch,
                "bep42_refused": s.bep42_refused,
                "bad_tokens": s.bad_tokens,
                "announces_stored": s.announces_stored,
                "timeouts": s.timeouts,
                "queue_full": s.queue_full,
                "replies_capped": s.replies_capped,
                "events_dropped": s.events_dropped,
            },
        }
    })
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

fn unhex20(s: &str) -> Option<[u8; 20]> {
    let b = s.as_bytes();
    if b.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// A loaded state file: our node id and the saved nodes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Our node id, if the file had one.
    pub id: Option<NodeId>,
    /// Saved nodes (id, address).
    pub nodes: Vec<(NodeId, SocketAddrV4)>,
    /// Lines that did not parse (skipped).
    pub bad_lines: usize,
    /// The first of them (1-based line number).
    pub first_bad: Option<usize>,
}

/// Parses a state file's text (see [`save_state`]); bad lines are
/// skipped and counted, never fatal.
pub fn parse_state(text: &str) -> State {
    let mut st = State::default();
    for (no, line) in text.lines().map(str::trim).enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad_before = st.bad_lines;
        let mut f = line.split_whitespace();
        let (a, b, rest) = (f.next(), f.next(), f.next());
        match (a, b, rest) {
            (Some("id"), Some(h), None) if st.id.is_none() => match unhex20(h) {
                Some(id) => st.id = Some(NodeId(id)),
                None => st.bad_lines += 1,
            },
            (Some(h), Some(addr), None) => match (unhex20(h), addr.parse::<SocketAddrV4>()) {
                (Some(id), Ok(addr)) => st.nodes.push((NodeId(id), addr)),
                _ => st.bad_lines += 1,
            },
            _ => st.bad_lines += 1,
        }
        if st.bad_lines > bad_before && st.first_bad.is_none() {
            st.first_bad = Some(no + 1);
        }
    }
    st
}

/// Reads `path` (missing: `None`; over [`MAX_STATE_BYTES`] or not UTF-8:
/// an error).
pub fn load_state(path: &Path) -> Result<Option<State>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
    };
    let mut text = String::new();
    f.take(MAX_STATE_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("read {}", path.display()))?;
    if text.len() as u64 > MAX_STATE_BYTES {
        bail!(
            "{}: longer than {MAX_STATE_BYTES} bytes: not a DHT state file",
            path.display()
        );
    }
    Ok(Some(parse_state(&text)))
}

/// Writes the state file atomically (a temporary file beside it, synced,
/// then renamed over it). Format, one item a line:
///
/// ```text
/// # ourtorrent dht state v1
/// id <our node id, 40 hex digits>
/// <node id, 40 hex digits> <IPv4:port>
/// ...
/// ```
///
/// Blank lines and `#` comments are ignored when loading.
pub fn save_state(path: &Path, id: NodeId, table: &RoutingTable<'_>) -> Result<usize> {
    let mut text = format!("{STATE_HEADER}\nid {}\n", hex(&id.0));
    let mut n = 0;
    for s in table.nodes() {
        let _ = writeln!(text, "{} {}", hex(&s.id.0), s.addr);
        n += 1;
    }
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dht.state".into());
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("write {}", path.display()));
    }
    Ok(n)
}

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

/// Our node id: the saved one, else `random`. BEP 42: on a public listen
/// address the id must match it (else nodes that enforce BEP 42 keep us out
/// of their tables), so one that does not is replaced.
pub fn choose_id(saved: Option<NodeId>, listen: Ipv4Addr, random: [u8; 20]) -> NodeId {
    let public = !listen.is_unspecified() && !bep42::is_exempt(listen);
    match saved {
        Some(id) if !public || bep42::is_valid(&id, listen) => id,
        _ if public => bep42::generate(listen, random),
        _ => NodeId(random),
    }
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("OS RNG: {e}"))?;
    Ok(b)
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

/// Messages of all kinds in `k`.
fn total(k: &KindCounts) -> u64 {
    k.ping
        + k.find_node
        + k.get_peers
        + k.announce_peer
        + k.other_query
        + k.response
        + k.error
        + k.malformed
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_parses_id_nodes_and_skips_bad_lines() {
        let id = "11".repeat(20);
        let n = "22".repeat(20);
        let text = format!(
            "{STATE_HEADER}\nid {id}\n\n{n} 127.0.0.1:6881\n{n} nonsense\nzz 1.2.3.4:5\n{n} [::1]:5\nid {n}\n"
        );
        let st = parse_state(&text);
        assert_eq!(st.id, Some(NodeId([0x11; 20])));
        assert_eq!(
            st.nodes,
            [(NodeId([0x22; 20]), "127.0.0.1:6881".parse().unwrap())]
        );
        // `nonsense`, `zz`, the IPv6 address and the second `id`.
        assert_eq!(st.bad_lines, 4);
        assert_eq!(st.first_bad, Some(5));
    }

    #[test]
    fn state_parser_never_panics_on_random_text() {
        // xorshift64: reproducible lines drawn from the format's alphabet.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let abc = b"0123456789abcdefABCDEFxz:.[] \t#id\n\xff";
        let mut text = Vec::new();
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            text.push(abc[(x % abc.len() as u64) as usize]);
        }
        let mut text = String::from_utf8_lossy(&text).into_owned();
        // A good line after the noise still loads.
        text.push_str(&format!("\n{} 127.0.0.9:9\n", "ab".repeat(20)));
        let st = parse_state(&text);
        assert!(st.bad_lines > 0);
        assert_eq!(
            st.nodes.last(),
            Some(&(NodeId([0xab; 20]), "127.0.0.9:9".parse().unwrap()))
        );
    }

    #[test]
    fn state_file_round_trips_and_is_size_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dht.state");
        assert_eq!(load_state(&path).unwrap(), None);
        let mut slots = vec![NodeSlot::EMPTY; 4 * K];
        let mut peers = vec![PeerSlot::EMPTY; 4];
        let mut d = Dht::new(
            Config::default(),
            NodeId([1; 20]),
            [7; 32],
            &mut slots,
            &mut peers,
            Instant::ZERO,
        );
        let addr: SocketAddrV4 = "127.0.0.2:7000".parse().unwrap();
        assert!(d.restore_node(Instant::ZERO, NodeId([0x80; 20]), addr));
        assert_eq!(save_state(&path, d.id(), d.table()).unwrap(), 1);
        let st = load_state(&path).unwrap().unwrap();
        assert_eq!(st.id, Some(NodeId([1; 20])));
        assert_eq!(st.nodes, [(NodeId([0x80; 20]), addr)]);
        assert_eq!(st.bad_lines, 0);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // At the limit it loads; one byte more is refused.
        let big = dir.path().join("big");
        std::fs::write(&big, "#".repeat(MAX_STATE_BYTES as usize)).unwrap();
        assert!(load_state(&big).unwrap().is_some());
        std::fs::write(&big, "#".repeat(MAX_STATE_BYTES as usize + 1)).unwrap();
        let e = load_state(&big).unwrap_err().to_string();
        assert!(e.contains("longer than"), "{e}");
    }

    #[test]
    fn node_id_is_kept_unless_it_breaks_bep42_on_a_public_address() {
        let saved = NodeId([9; 20]);
        let local = Ipv4Addr::new(127, 0, 0, 1);
        let any = Ipv4Addr::UNSPECIFIED;
        let public = Ipv4Addr::new(124, 31, 75, 21);
        assert_eq!(choose_id(Some(saved), local, [1; 20]), saved);
        assert_eq!(choose_id(Some(saved), any, [1; 20]), saved);
        assert_eq!(choose_id(None, local, [1; 20]), NodeId([1; 20]));
        assert!(!bep42::is_valid(&saved, public));
        let fresh = choose_id(Some(saved), public, [1; 20]);
        assert!(bep42::is_valid(&fresh, public));
        assert_eq!(choose_id(Some(fresh), public, [2; 20]), fresh);
        assert!(bep42::is_valid(&choose_id(None, public, [3; 20]), public));
    }
}
