//! Magnet links (BEP 9): the torrent exists before its metadata. This is
//! its metadata phase: peers are gathered from the magnet's `x.pe` hints,
//! its `tr` trackers (and the DHT, when the session runs one) into one
//! [`AddressBook`]; up to [`MAX_METADATA_CONNS`] of them are dialled, each
//! on a small metadata-only connection (BEP 3 handshake, BEP 10 extension
//! handshake, `ut_metadata` requests), and the core's [`MetadataFetch`]
//! assembles the info dictionary and accepts it only when its SHA-1 is the
//! info-hash. Then the caller builds the `.torrent` ([`torrent_bytes`]) and
//! the torrent goes live as if it had been opened from a file; the
//! addresses learned, with their sources, and the bans carry over.
//!
//! Refused: a metadata size over [`MAX_METADATA_SIZE`] or that disagrees
//! with other peers (the core's rules), messages over
//! [`MAX_METADATA_MESSAGE`] bytes, an assembly that does not hash to the
//! info-hash: when one peer sent all of it that peer is banned; when several
//! did, all are dropped and the fetch goes on one peer at a time (so the
//! next failure names the culprit; the core's [`Blame`] rule). Inbound
//! connections are not routed to a torrent still without metadata (they
//! are refused as for an unknown info-hash).

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use anyhow::{anyhow, bail};
use ourtorrent_core::id::{InfoHash, PeerId};
use ourtorrent_core::magnet::Magnet;
use ourtorrent_core::time::Instant;
use ourtorrent_core::tracker::AnnounceEvent;
use ourtorrent_core::wire::metadata::{
    FetchEvent, FetchLimits, MetadataFetch, MetadataMsg, MAX_METADATA_SIZE,
};
use ourtorrent_core::wire::metadata_blame::{Blame, Verdict};
use ourtorrent_core::wire::{
    ExtensionHandshake, Frame, Framer, Handshake, Message, Reserved, Status,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::announce::Announce;
use super::peer::extensions::{extended, OUR_UT_METADATA, OUR_UT_PEX};
use super::peers::{AddressBook, Source};
use super::session::Session;
use super::swarm::CONNECT_TIMEOUT;

/// Metadata connections open at once, per magnet.
pub const MAX_METADATA_CONNS: usize = 8;
/// Peers attached to one [`MetadataFetch`] (the core's table size).
pub const MAX_METADATA_PEERS: usize = 16;
/// Largest peer-wire message read on a metadata connection: a data piece
/// (16 KiB and its header) or the bitfield of the largest torrent whose
/// metadata we accept (4 MiB of info → ~210 000 pieces → ~26 KiB).
pub const MAX_METADATA_MESSAGE: usize = 64 << 10;
/// Time a peer has, after the TCP connect, to send its BEP 10 handshake
/// with `ut_metadata` and `metadata_size`.
pub const METADATA_HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry of a tracker that failed in the metadata phase; a tracker that
/// answered is asked again after its interval, within these bounds.
pub const META_ANNOUNCE_MIN: Duration = Duration::from_secs(15);
/// See [`META_ANNOUNCE_MIN`].
pub const META_ANNOUNCE_MAX: Duration = Duration::from_secs(300);

/// A magnet link, parsed and owned.
#[derive(Clone, Debug)]
pub struct MagnetLink {
    /// `xt=urn:btih:` (hex or base32).
    pub info_hash: InfoHash,
    /// `dn`.
    pub name: Option<String>,
    /// `tr`, in order.
    pub trackers: Vec<String>,
    /// `x.pe`, resolved (hosts that do not resolve are skipped, with a
    /// warning).
    pub peers: Vec<SocketAddr>,
}

impl MagnetLink {
    /// True if `arg` is meant as a magnet link rather than a file.
    pub fn is_magnet(arg: &str) -> bool {
        arg.get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("magnet:"))
    }

    /// Parses `uri` with the core's parser (BEP 9).
    pub fn parse(uri: &str) -> anyhow::Result<MagnetLink> {
        let mut buf = vec![0u8; uri.len()];
        let m = Magnet::parse(uri, &mut buf).map_err(|e| anyhow!("{e}"))?;
        let mut peers = Vec::new();
        for p in &m.peers {
            match p.parse::<SocketAddr>() {
                Ok(a) => peers.push(a),
                Err(_) => match p.to_socket_addrs().map(|mut a| a.next()) {
                    Ok(Some(a)) => peers.push(a),
                    _ => tracing::warn!(peer = %p, "x.pe: not an address: skipped"),
                },
            }
        }
        Ok(MagnetLink {
            info_hash: m.info_hash,
            name: m.display_name.map(str::to_string),
            trackers: m.trackers.iter().map(|t| t.to_string()).collect(),
            peers,
        })
    }

    /// What to call it before its metadata: `dn`, else the info-hash.
    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.info_hash.to_string())
    }
}

/// A `.torrent` around verified metadata `info`: `announce` is the first
/// tracker, `announce-list` puts each tracker in its own tier (BEP 12), in
/// the magnet's order.
pub fn torrent_bytes(info: &[u8], trackers: &[String]) -> Vec<u8> {
    fn bstr(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(s.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(s);
    }
    let mut out = b"d".to_vec();
    if let Some(first) = trackers.first() {
        bstr(&mut out, b"announce");
        bstr(&mut out, first.as_bytes());
        bstr(&mut out, b"announce-list");
        out.push(b'l');
        for t in trackers {
            out.push(b'l');
            bstr(&mut out, t.as_bytes());
            out.push(b'e');
        }
        out.push(b'e');
    }
    bstr(&mut out, b"info");
    out.extend_from_slice(info);
    out.push(b'e');
    out
}

/// The outcome of a metadata phase.
pub struct Fetched {
    /// The info dictionary, SHA-1 checked against the info-hash.
    pub metadata: Vec<u8>,
    /// Every address learned, with its source (for the live phase).
    pub learned: Vec<(SocketAddr, Source)>,
    /// Addresses banned (sent metadata that did not hash).
    pub banned: Vec<SocketAddr>,
    /// Assemblies refused because they did not hash to the info-hash.
    pub refused: u32,
}

/// What metadata connections and peer sources tell the fetch loop.
enum Ev {
    /// Addresses from a source.
    Peers(Vec<SocketAddr>, Source),
    /// The peer offers `ut_metadata` with this `metadata_size`.
    Ready { id: u64, size: u64 },
    /// A `ut_metadata` payload from the peer.
    Msg { id: u64, payload: Vec<u8> },
    /// The connection ended; `failed`: before the BEP 10 handshake.
    Gone { id: u64, failed: bool },
}

struct MetaConn {
    addr: SocketAddr,
    tx: mpsc::Sender<u32>,
    attached: bool,
    size: Option<u64>,
}

/// Where a metadata phase finds its peers, besides the magnet itself.
pub struct Sources {
    /// `--peer` addresses (booked as direct).
    pub direct: Vec<SocketAddr>,
    /// Announce to the magnet's `tr` trackers.
    pub trackers: bool,
    /// Addresses pushed by other sources (the DHT's lookups).
    pub extra: Option<mpsc::Receiver<(Vec<SocketAddr>, Source)>>,
}

/// Runs the metadata phase of `link` until the metadata is verified (or
/// `stop` turns true: `Ok(None)`).
pub async fn fetch(
    session: Arc<Session>,
    link: &MagnetLink,
    sources: Sources,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<Fetched>> {
    let ih = link.info_hash;
    let listen = session.listen;
    let (tx, mut rx) = mpsc::channel::<Ev>(256);
    let mut book = AddressBook::default();
    let now = StdInstant::now();
    let ours = |a: &SocketAddr| {
        *a == listen
            || (a.port() == listen.port() && (a.ip().is_loopback() || a.ip().is_unspecified()))
    };
    for a in link.peers.iter().chain(&sources.direct) {
        if !ours(a) {
            book.add(*a, Source::Direct, now);
        }
    }
    let mut tasks = Vec::new();
    if sources.trackers {
        for url in &link.trackers {
            tasks.push(tokio::spawn(announce_for_peers(
                session.clone(),
                url.clone(),
                ih,
                tx.clone(),
            )));
        }
    }
    if let Some(mut prx) = sources.extra {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some((addrs, src)) = prx.recv().await {
                if tx.send(Ev::Peers(addrs, src)).await.is_err() {
                    return;
                }
            }
        }));
    }
    let aborts = Abort(tasks);

    let epoch = StdInstant::now();
    let core_now = || Instant::from_millis(epoch.elapsed().as_millis() as u64);
    let mut buf = vec![0u8; MAX_METADATA_SIZE];
    let limits = FetchLimits {
        request_timeout: ourtorrent_core::time::Duration::from_secs(10),
        backoff: ourtorrent_core::time::Duration::from_secs(5),
        ..FetchLimits::default()
    };
    let mut fetch: MetadataFetch<'_, u64, MAX_METADATA_PEERS> =
        MetadataFetch::new(ih, &mut buf, limits);
    let mut conns: HashMap<u64, MetaConn> = HashMap::new();
    let mut next_id = 0u64;
    let mut banned = Vec::new();
    // Who is banned for metadata that does not hash (the core's rule).
    let mut blame: Blame<SocketAddr> = Blame::new();
    loop {
        // Dial while there is room.
        let free = MAX_METADATA_CONNS
            .saturating_sub(conns.len())
            .min(session.conns.available_permits());
        if free > 0 {
            for addr in book.to_dial(StdInstant::now(), free) {
                let Ok(permit) = session.conns.clone().try_acquire_owned() else {
                    break;
                };
                if !book.connected(addr, Source::Tracker, StdInstant::now()) {
                    continue;
                }
                let id = next_id;
                next_id += 1;
                let (ctx, crx) = mpsc::channel(8);
                conns.insert(
                    id,
                    MetaConn {
                        addr,
                        tx: ctx,
                        attached: false,
                        size: None,
                    },
                );
                let hello = Hello {
                    info_hash: ih,
                    peer_id: session.peer_id,
                    port: listen.port(),
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let r = meta_conn(id, addr, hello, &tx, crx).await;
                    if let Err(e) = &r {
                        tracing::debug!(%addr, "metadata connection: {e:#}");
                    }
                    let _ = tx
                        .send(Ev::Gone {
                            id,
                            failed: r.is_err_and(|e| e.is::<Early>()),
                        })
                        .await;
                    drop(permit);
                });
            }
        }
        // Attach the ready peers the policy allows.
        let attached = conns.values().filter(|c| c.attached).count();
        let room = blame.room(attached, MAX_METADATA_PEERS);
        let ready: Vec<u64> = conns
            .iter()
            .filter(|(_, c)| !c.attached && c.size.is_some())
            .map(|(id, _)| *id)
            .take(room)
            .collect();
        for id in ready {
            let Some(c) = conns.get_mut(&id) else {
                continue;
            };
            match fetch.add_peer(id, c.size.unwrap_or(0)) {
                Ok(()) => c.attached = true,
                Err(e) => {
                    // Too large, or not the size agreed: dropped, and
                    // dialled again only after a growing backoff.
                    tracing::warn!(addr = %c.addr, "metadata: {e}");
                    let addr = c.addr;
                    conns.remove(&id);
                    book.disconnected(addr, true, StdInstant::now());
                }
            }
        }
        let now = core_now();
        fetch.handle_timeout(now);
        while let Some((id, piece)) = fetch.poll_request(now) {
            if let Some(c) = conns.get(&id) {
                let _ = c.tx.try_send(piece);
            }
        }
        while let Some(ev) = fetch.poll_event() {
            match ev {
                FetchEvent::Complete => {
                    let metadata = fetch.metadata().unwrap_or_default().to_vec();
                    drop(aborts);
                    let learned = book.addresses();
                    return Ok(Some(Fetched {
                        metadata,
                        learned,
                        banned,
                        refused: blame.refused(),
                    }));
                }
                FetchEvent::BadPeer(id) => {
                    if let Some(c) = conns.remove(&id) {
                        tracing::warn!(addr = %c.addr, "metadata does not hash to the info-hash: peer dropped");
                        book.disconnected(c.addr, true, StdInstant::now());
                        blame.contributor(c.addr);
                    }
                }
            }
        }
        if let Some(Verdict::Ban(addr)) = blame.verdict() {
            // It sent every piece: it lied.
            book.ban(addr, StdInstant::now());
            banned.push(addr);
        }
        let wait = fetch
            .poll_timeout()
            .map(|t| t.millis().saturating_sub(now.millis()))
            .unwrap_or(1000)
            .clamp(10, 1000);
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { bail!("metadata phase: channel closed") };
                match ev {
                    Ev::Peers(addrs, src) => {
                        let now = StdInstant::now();
                        for a in addrs.iter().filter(|a| !ours(a)) {
                            book.add(*a, src, now);
                        }
                    }
                    Ev::Ready { id, size } => {
                        if let Some(c) = conns.get_mut(&id) {
                            c.size = Some(size);
                        }
                    }
                    Ev::Msg { id, payload } => {
                        if let Ok(m) = MetadataMsg::decode(&payload) {
                            if let Err(e) = fetch.handle_message(core_now(), id, &m) {
                                if let Some(c) = conns.remove(&id) {
                                    tracing::warn!(addr = %c.addr, "metadata: {e}");
                                    book.disconnected(c.addr, true, StdInstant::now());
                                }
                            }
                        }
                    }
                    Ev::Gone { id, failed } => {
                        if let Some(c) = conns.remove(&id) {
                            fetch.remove_peer(id);
                            book.disconnected(c.addr, failed, StdInstant::now());
                        }
                    }
                }
            }
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    return Ok(None);
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
    }
}

/// Aborts the phase's helper tasks when dropped.
struct Abort(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Abort {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Announces to one tracker for the metadata phase (`started`, then
/// regular announces, `left` unknown: 1), sending the peers it learns.
async fn announce_for_peers(
    session: Arc<Session>,
    url: String,
    info_hash: InfoHash,
    tx: mpsc::Sender<Ev>,
) {
    let key = super::random_u32();
    let mut event = AnnounceEvent::Started;
    loop {
        let a = Announce {
            info_hash,
            peer_id: session.peer_id,
            port: session.listen.port(),
            uploaded: 0,
            downloaded: 0,
            left: 1,
            event,
            key,
            num_want: 50,
        };
        let wait = match session.trackers.announce(&url, &a).await {
            Ok(reply) => {
                event = AnnounceEvent::None;
                if tx
                    .send(Ev::Peers(reply.peers, Source::Tracker))
                    .await
                    .is_err()
                {
                    return;
                }
                Duration::from_secs(u64::from(reply.interval))
                    .clamp(META_ANNOUNCE_MIN, META_ANNOUNCE_MAX)
            }
            Err(e) => {
                tracing::warn!(%url, "announce: {e:#}");
                META_ANNOUNCE_MIN
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// What we say in a metadata connection's handshakes.
#[derive(Clone, Copy)]
struct Hello {
    info_hash: InfoHash,
    peer_id: PeerId,
    port: u16,
}

/// The connection failed before the peer offered `ut_metadata` (counts as
/// a failed attempt for the address's backoff).
#[derive(Debug)]
struct Early(String);

impl std::fmt::Display for Early {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Early {}

/// One metadata-only connection: handshakes, then `ut_metadata` messages
/// both ways (requests for the pieces the fetch loop sends on `cmds`)
/// until the loop drops its sender. Everything else the peer sends is read
/// and ignored.
async fn meta_conn(
    id: u64,
    addr: SocketAddr,
    hello: Hello,
    events: &mpsc::Sender<Ev>,
    mut cmds: mpsc::Receiver<u32>,
) -> anyhow::Result<()> {
    let early = |s: String| anyhow::Error::new(Early(s));
    let mut s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| early("connect: timeout".into()))?
        .map_err(|e| early(format!("connect: {e}")))?;
    let _ = s.set_nodelay(true);
    let ours = Handshake {
        reserved: Reserved::default().with_extension_protocol(true),
        info_hash: hello.info_hash,
        peer_id: hello.peer_id,
    };
    s.write_all(&ours.to_bytes()).await?;
    let mut framer = Framer::with_handshake(MAX_METADATA_MESSAGE);
    let mut buf: Vec<u8> = Vec::with_capacity(MAX_METADATA_MESSAGE);
    let mut chunk = vec![0u8; 16 << 10];
    let hello_by = tokio::time::Instant::now() + METADATA_HELLO_TIMEOUT;
    let mut theirs: Option<u8> = None;
    let mut out = Vec::new();
    loop {
        let mut pos = 0;
        loop {
            let (frame, n) = match framer.parse(&buf[pos..]) {
                Ok(Status::Complete(x)) => x,
                Ok(Status::Partial) => break,
                Err(e) => bail!("wire: {e}"),
            };
            pos += n;
            match frame {
                Frame::Handshake(h) => {
                    let a = h
                        .accept(&ours)
                        .map_err(|e| early(format!("handshake: {e:?}")))?;
                    if !a.ext {
                        return Err(early("no extension protocol (BEP 10)".into()));
                    }
                    let mut m = heapless::Vec::new();
                    let _ = m.push((&b"ut_metadata"[..], OUR_UT_METADATA));
                    let _ = m.push((&b"ut_pex"[..], OUR_UT_PEX));
                    let eh = ExtensionHandshake {
                        m,
                        v: Some(super::peer::extensions::CLIENT_NAME),
                        p: Some(hello.port),
                        ..ExtensionHandshake::default()
                    };
                    let mut tmp = [0u8; 256];
                    let n = eh.encode(&mut tmp).map_err(|e| anyhow!("{e}"))?;
                    extended(&mut out, 0, &tmp[..n]);
                }
                Frame::Message(Message::Extended { id: 0, payload }) => {
                    let h = ExtensionHandshake::decode(payload)
                        .map_err(|e| early(format!("extension handshake: {e}")))?;
                    match (h.id_of(b"ut_metadata"), h.metadata_size) {
                        (Some(t), Some(size)) if theirs.is_none() => {
                            theirs = Some(t);
                            events.send(Ev::Ready { id, size }).await?;
                        }
                        (Some(t), _) => theirs = Some(t),
                        _ => return Err(early("no ut_metadata or metadata_size".into())),
                    }
                }
                Frame::Message(Message::Extended {
                    id: OUR_UT_METADATA,
                    payload,
                }) => {
                    events
                        .send(Ev::Msg {
                            id,
                            payload: payload.to_vec(),
                        })
                        .await?;
                }
                Frame::Message(Message::Extended {
                    id: OUR_UT_PEX,
                    payload,
                }) => {
                    let peers = super::peer::extensions::pex_added(payload, addr);
                    if !peers.is_empty() {
                        events.send(Ev::Peers(peers, Source::Pex)).await?;
                    }
                }
                Frame::Message(_) => {}
            }
        }
        buf.drain(..pos);
        if !out.is_empty() {
            s.write_all(&out).await?;
            out.clear();
        }
        let waiting = theirs.is_none();
        tokio::select! {
            r = s.read(&mut chunk) => {
                let n = r?;
                if n == 0 {
                    if waiting {
                        return Err(early("closed".into()));
                    }
                    bail!("closed");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            c = cmds.recv() => {
                let Some(piece) = c else { return Ok(()) };
                let Some(t) = theirs else { continue };
                let m = MetadataMsg::Request { piece };
                let mut p = [0u8; 64];
                let n = m.encode(&mut p).map_err(|e| anyhow!("{e}"))?;
                extended(&mut out, t, &p[..n]);
            }
            _ = tokio::time::sleep_until(hello_by), if waiting => {
                return Err(early("no ut_metadata offer in time".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ourtorrent_core::bencode::{self, Token};

    /// RFC 4648 base32 of 20 bytes (32 characters, no padding).
    fn base32(b: &[u8; 20]) -> String {
        const A: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let bits: Vec<bool> = b
            .iter()
            .flat_map(|x| (0..8).rev().map(move |i| x >> i & 1 == 1))
            .collect();
        bits.chunks(5)
            .map(|c| A[c.iter().fold(0, |v, &b| v << 1 | usize::from(b))] as char)
            .collect()
    }

    #[test]
    fn magnets_parse_hex_and_base32_with_trackers_and_peers() {
        let hex = "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&dn=a+b\
                   &tr=http%3A%2F%2F127.0.0.1%3A1%2Fannounce&tr=udp://127.0.0.1:2\
                   &x.pe=127.0.0.1:6881&x.pe=not-an-address";
        let m = MagnetLink::parse(hex).unwrap();
        assert_eq!(m.name.as_deref(), Some("a b"));
        assert_eq!(
            m.trackers,
            ["http://127.0.0.1:1/announce", "udp://127.0.0.1:2"]
        );
        assert_eq!(m.peers, [SocketAddr::from(([127, 0, 0, 1], 6881))]);
        let b32 = format!("magnet:?xt=urn:btih:{}", base32(&m.info_hash.0));
        assert_eq!(MagnetLink::parse(&b32).unwrap().info_hash, m.info_hash);
        assert!(MagnetLink::parse("magnet:?dn=x").is_err());
        assert!(MagnetLink::is_magnet("MAGNET:?xt=…"));
        assert!(!MagnetLink::is_magnet("x.torrent"));
    }

    #[test]
    fn the_torrent_around_metadata_keeps_its_info_hash_and_trackers() {
        let info = b"d6:lengthi3e4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
        let t = torrent_bytes(info, &["http://a/1".into(), "udp://b:2".into()]);
        let mut tokens = vec![Token::EMPTY; 64];
        let m = ourtorrent_core::metainfo::Metainfo::parse(
            &t,
            &mut tokens,
            &ourtorrent_core::metainfo::Limits::default(),
        )
        .unwrap();
        assert_eq!(m.info_bytes(), info);
        let tr: Vec<_> = m.trackers().collect();
        assert_eq!(tr, [(0, "http://a/1"), (1, "udp://b:2")]);
        // Canonical bencode: the strict decoder takes it.
        let mut tokens = vec![Token::EMPTY; 64];
        assert!(bencode::decode(&t, &mut tokens, bencode::DecodeOptions::default()).is_ok());
        let bare = torrent_bytes(info, &[]);
        assert_eq!(bare, [&b"d4:info"[..], info, b"e"].concat());
    }
}
