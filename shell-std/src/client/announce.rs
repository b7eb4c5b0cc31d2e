//! Announcing to trackers: HTTP (a small HTTP/1.1 GET over a tokio
//! `TcpStream`, the core builds the query and decodes the bencoded reply)
//! and UDP (the core's sans-IO BEP 15 client over a tokio `UdpSocket`).
//!
//! Every tracker of every BEP 12 tier is announced to (as libtorrent does
//! with `announce_to_all_tiers`); each runs in its own task, re-announcing
//! at the interval the tracker asks for, and sends the peers it learns to
//! the connector. Replies are bounded ([`MAX_HTTP_REPLY`] bytes, the UDP
//! client's own peer limit) and every request has a timeout.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use ourtorrent_core::bencode::Token;
use ourtorrent_core::time::Instant;
use ourtorrent_core::tracker::http::{AnnounceQuery, AnnounceResponse};
use ourtorrent_core::tracker::udp::client::{
    AnnounceParams, Client, ClientConfig, Event, TRANSMIT_BUF_LEN,
};
use ourtorrent_core::tracker::AddressFamily;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Largest HTTP tracker reply read.
pub const MAX_HTTP_REPLY: usize = 1 << 20;
/// Time allowed for one announce.
pub const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(20);

/// What we tell a tracker: the core's BEP 15 parameters, also used for
/// HTTP (`num_want` negative: the tracker's default).
pub type Announce = AnnounceParams;

/// A tracker's answer.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    /// Seconds to the next announce.
    pub interval: u32,
    /// Seeders, if told.
    pub seeders: Option<u32>,
    /// Leechers, if told.
    pub leechers: Option<u32>,
    /// Peers.
    pub peers: Vec<SocketAddr>,
}

/// A tracker's state for the tables.
#[derive(Clone, Debug)]
pub struct TrackerStatus {
    /// BEP 12 tier.
    pub tier: usize,
    /// URL.
    pub url: String,
    /// "connecting", "ok", or the error.
    pub status: String,
    /// Last reply.
    pub reply: Option<Reply>,
    /// The tracker knows we have everything: we started complete, or it
    /// acknowledged our `completed` announce.
    pub told_complete: bool,
}

/// Announces once to `url`.
pub async fn announce(url: &str, a: &Announce) -> anyhow::Result<Reply> {
    tokio::time::timeout(ANNOUNCE_TIMEOUT, async {
        if url.starts_with("http://") {
            http(url, a).await
        } else if url.starts_with("udp://") {
            udp(url, a).await
        } else {
            bail!("unsupported tracker scheme (only http:// and udp://)")
        }
    })
    .await
    .map_err(|_| anyhow!("timed out"))?
}

/// `scheme://host:port/rest` → (host, port, rest).
fn split_url<'u>(
    url: &'u str,
    scheme: &str,
    default_port: u16,
) -> anyhow::Result<(&'u str, u16, &'u str)> {
    let rest = url.strip_prefix(scheme).context("bad URL")?;
    let (hostport, path) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
            (h, p.parse().context("bad port")?)
        }
        _ => (hostport, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("no host in URL");
    }
    Ok((host, port, path))
}

async fn http(url: &str, a: &Announce) -> anyhow::Result<Reply> {
    let (host, port, path) = split_url(url, "http://", 80)?;
    let q = AnnounceQuery {
        info_hash: a.info_hash,
        peer_id: a.peer_id,
        port: a.port,
        uploaded: a.uploaded,
        downloaded: a.downloaded,
        left: a.left,
        event: a.event,
        compact: true,
        numwant: u32::try_from(a.num_want).ok(),
        key: None,
    };
    let mut query = String::new();
    q.write_to(&mut query).map_err(|_| anyhow!("query"))?;
    let path = if path.is_empty() { "/" } else { path };
    let sep = if path.contains('?') { '&' } else { '?' };
    let req = format!(
        "GET {path}{sep}{query} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: OurTorrent/0.1\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
    );
    let mut s = TcpStream::connect((host, port)).await?;
    s.write_all(req.as_bytes()).await?;
    let mut body = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        if body.len() + n > MAX_HTTP_REPLY {
            bail!("reply larger than {MAX_HTTP_REPLY} bytes");
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let head_end = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP header end")?;
    let head = String::from_utf8_lossy(&body[..head_end]).to_string();
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!("HTTP {}", head.lines().next().unwrap_or(""));
    }
    let mut payload = body[head_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        payload = dechunk(&payload)?;
    }
    let mut tokens = vec![Token::EMPTY; payload.len() / 2 + 16];
    let r = AnnounceResponse::decode(&payload, &mut tokens).map_err(|e| anyhow!("{e}"))?;
    if let Some(f) = r.failure_reason {
        bail!("tracker: {}", String::from_utf8_lossy(f));
    }
    Ok(Reply {
        interval: r.interval,
        seeders: r.complete,
        leechers: r.incomplete,
        peers: r.all_peers().collect(),
    })
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").context("chunk")?;
        let size = std::str::from_utf8(&b[..eol])?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(b.get(..size).context("short chunk")?);
        b = b.get(size + 2..).context("short chunk")?;
    }
}

async fn udp(url: &str, a: &Announce) -> anyhow::Result<Reply> {
    let (host, port, path) = split_url(url, "udp://", 80)?;
    let addr = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .context("tracker host has no address")?;
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(addr).await?;
    let mut cfg = ClientConfig {
        family: AddressFamily::of(&addr),
        ..ClientConfig::default()
    };
    if !path.is_empty() && path != "/announce" {
        let _ = cfg.url_data.extend_from_slice(path.as_bytes());
    }
    let mut client = Client::new(cfg, || {
        let mut b = [0u8; 4];
        let _ = getrandom::fill(&mut b);
        u32::from_ne_bytes(b)
    });
    let epoch = std::time::Instant::now();
    let now = || Instant::from_millis(epoch.elapsed().as_millis() as u64);
    client.announce(now(), *a).map_err(|e| anyhow!("{e}"))?;
    let mut tx = [0u8; TRANSMIT_BUF_LEN];
    let mut rx = vec![0u8; 2048];
    loop {
        while let Some(n) = client.poll_transmit(now(), &mut tx) {
            sock.send(&tx[..n]).await?;
        }
        if let Some(ev) = client.poll_event() {
            return match ev {
                Event::Announced(r) => Ok(Reply {
                    interval: r.interval,
                    seeders: Some(r.seeders),
                    leechers: Some(r.leechers),
                    peers: r.peers.iter().copied().collect(),
                }),
                Event::TrackerError(m) => bail!("tracker: {}", String::from_utf8_lossy(&m)),
                Event::Failed(e) => bail!("{e}"),
                Event::Scraped(_) => bail!("unexpected scrape reply"),
            };
        }
        let wait = client
            .poll_timeout()
            .map(|t| t.millis().saturating_sub(now().millis()))
            .unwrap_or(1000);
        tokio::select! {
            r = sock.recv(&mut rx) => {
                let n = r?;
                if let Err(e) = client.handle_datagram(now(), &rx[..n]) {
                    tracing::debug!("udp tracker: {e}");
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(wait)) => client.handle_timeout(now()),
        }
    }
}

/// The tracker table's rows, shared with the UI.
pub type Statuses = Arc<Mutex<Vec<TrackerStatus>>>;
