//! HTTP tracker requests and responses (BEP 3 announce, BEP 48 scrape,
//! BEP 23 compact peers, BEP 7 `peers6`).
//!
//! Stop-gap: the core's `tracker::http` codec is still landing on the
//! `tracker-core` branch, so this shell module parses the query string
//! (with the core's `percent::decode` and `InfoHash`) and writes the
//! bencoded replies (with the core's `bencode::Encoder`). It moves to the
//! core's codec once that lands. Everything is bounded: at most
//! [`MAX_SCRAPE_HASHES`] info-hashes per scrape, values at most
//! [`MAX_VALUE_LEN`] bytes after decoding.

use std::net::SocketAddr;

use ourtorrent_core::bencode::{Encoder, SliceWriter};
use ourtorrent_core::id::{InfoHash, PeerId};
use ourtorrent_core::percent;
use ourtorrent_core::tracker::AnnounceEvent;

/// Most info-hashes in one scrape (as for UDP, BEP 15's ~74).
pub const MAX_SCRAPE_HASHES: usize = ourtorrent_core::tracker::udp::MAX_SCRAPE_HASHES;

/// Longest decoded query value accepted.
pub const MAX_VALUE_LEN: usize = 64;

/// A parsed `GET /announce` query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceQuery {
    /// The torrent.
    pub info_hash: InfoHash,
    /// The peer.
    pub peer_id: PeerId,
    /// Listening port.
    pub port: u16,
    /// Bytes left (absent: unknown, treated as a leecher).
    pub left: Option<u64>,
    /// The event.
    pub event: AnnounceEvent,
    /// `numwant` (absent: tracker default).
    pub numwant: Option<u32>,
    /// `compact=0` asks for the dictionary model.
    pub compact: bool,
}

/// A query refusal, sent back as a `failure reason`.
pub type QueryError = &'static str;

fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

fn decode<'o>(v: &str, out: &'o mut [u8; MAX_VALUE_LEN]) -> Result<&'o [u8], QueryError> {
    percent::decode(v.as_bytes(), out, false)
        .map(|s| &*s)
        .map_err(|_| "malformed percent-encoding")
}

fn id20(v: &str, what: QueryError) -> Result<[u8; 20], QueryError> {
    let mut buf = [0u8; MAX_VALUE_LEN];
    decode(v, &mut buf)?.try_into().map_err(|_| what)
}

fn number<T: std::str::FromStr>(v: &str, what: QueryError) -> Result<T, QueryError> {
    v.parse().map_err(|_| what)
}

/// Parses an announce query string (the part after `?`).
pub fn parse_announce(query: &str) -> Result<AnnounceQuery, QueryError> {
    let (mut ih, mut pid, mut port) = (None, None, None);
    let mut q = AnnounceQuery {
        info_hash: InfoHash::default(),
        peer_id: PeerId::default(),
        port: 0,
        left: None,
        event: AnnounceEvent::None,
        numwant: None,
        compact: true,
    };
    for (k, v) in pairs(query) {
        match k {
            "info_hash" => ih = Some(id20(v, "info_hash is not 20 bytes")?),
            "peer_id" => pid = Some(id20(v, "peer_id is not 20 bytes")?),
            "port" => port = Some(number::<u16>(v, "invalid port")?),
            "left" => q.left = Some(number(v, "invalid left")?),
            "uploaded" => number::<u64>(v, "invalid uploaded").map(drop)?,
            "downloaded" => number::<u64>(v, "invalid downloaded").map(drop)?,
            "numwant" => {
                // Negative means "default", as in BEP 15.
                let n: i64 = number(v, "invalid numwant")?;
                q.numwant = u32::try_from(n).ok();
            }
            "compact" => q.compact = v != "0",
            "event" => {
                q.event = AnnounceEvent::from_http(v.as_bytes()).ok_or("unknown event")?;
            }
            _ => {}
        }
    }
    q.info_hash = InfoHash(ih.ok_or("missing info_hash")?);
    q.peer_id = PeerId(pid.ok_or("missing peer_id")?);
    q.port = port.ok_or("missing port")?;
    if q.port == 0 {
        return Err("invalid port");
    }
    Ok(q)
}

/// Parses a scrape query: the `info_hash` values, in order.
pub fn parse_scrape(query: &str) -> Result<Vec<InfoHash>, QueryError> {
    let mut out = Vec::new();
    for (k, v) in pairs(query) {
        if k == "info_hash" {
            if out.len() == MAX_SCRAPE_HASHES {
                return Err("too many info-hashes");
            }
            out.push(InfoHash(id20(v, "info_hash is not 20 bytes")?));
        }
    }
    if out.is_empty() {
        return Err("full scrape is not supported: give info_hash");
    }
    Ok(out)
}

/// The bencoded replies are built in a buffer of this size; the largest
/// (200 IPv6 dict peers) fits.
pub const REPLY_CAP: usize = 32 * 1024;

/// `d14:failure reason<msg>e`.
pub fn failure(msg: &str) -> Vec<u8> {
    let mut buf = vec![0u8; 64 + msg.len()];
    let mut e = Encoder::new(SliceWriter::new(&mut buf));
    let ok = (|| {
        e.begin_dict()?;
        e.key(b"failure reason")?;
        e.bytes(msg.as_bytes())?;
        e.end()?;
        e.finish().map(|(_, n)| n)
    })();
    let n = ok.unwrap_or(0);
    buf.truncate(n);
    buf
}

/// Swarm figures of an announce reply.
#[derive(Clone, Copy, Debug)]
pub struct ReplyCounts {
    /// Seconds between announces.
    pub interval: u32,
    /// Seeders.
    pub complete: u32,
    /// Leechers.
    pub incomplete: u32,
    /// Completed count.
    pub downloaded: u32,
}

/// An announce reply: compact (`peers` IPv4, `peers6` IPv6) or the
/// dictionary model (`peers` as a list of `{ip, port}`).
pub fn announce_reply(
    c: ReplyCounts,
    peers: impl Iterator<Item = SocketAddr>,
    compact: bool,
) -> Vec<u8> {
    let (mut v4, mut v6, mut all) = (Vec::new(), Vec::new(), Vec::new());
    for p in peers {
        if !compact {
            all.push(p);
            continue;
        }
        match p {
            SocketAddr::V4(a) => {
                v4.extend_from_slice(&a.ip().octets());
                v4.extend_from_slice(&a.port().to_be_bytes());
            }
            SocketAddr::V6(a) => {
                v6.extend_from_slice(&a.ip().octets());
                v6.extend_from_slice(&a.port().to_be_bytes());
            }
        }
    }
    let ips: Vec<String> = all.iter().map(|a| a.ip().to_string()).collect();
    let mut buf = vec![0u8; REPLY_CAP];
    let mut e = Encoder::new(SliceWriter::new(&mut buf));
    let n = (|| {
        e.begin_dict()?;
        e.key(b"complete")?;
        e.int(c.complete.into())?;
        e.key(b"downloaded")?;
        e.int(c.downloaded.into())?;
        e.key(b"incomplete")?;
        e.int(c.incomplete.into())?;
        e.key(b"interval")?;
        e.int(c.interval.into())?;
        e.key(b"min interval")?;
        e.int((c.interval / 2).max(1).into())?;
        e.key(b"peers")?;
        if compact {
            e.bytes(&v4)?;
            if !v6.is_empty() {
                e.key(b"peers6")?;
                e.bytes(&v6)?;
            }
        } else {
            e.begin_list()?;
            for (a, ip) in all.iter().zip(&ips) {
                e.begin_dict()?;
                e.key(b"ip")?;
                e.bytes(ip.as_bytes())?;
                e.key(b"port")?;
                e.int(a.port().into())?;
                e.end()?;
            }
            e.end()?;
        }
        e.end()?;
        e.finish().map(|(_, n)| n)
    })();
    match n {
        Ok(n) => {
            buf.truncate(n);
            buf
        }
        Err(_) => failure("reply too large"),
    }
}

/// A scrape reply: `d5:filesd<ih>d8:completei..e10:downloadedi..e10:incompletei..eee`
/// (keys sorted, duplicates collapsed).
pub fn scrape_reply(entries: &[(InfoHash, ReplyCounts)]) -> Vec<u8> {
    let mut sorted: Vec<&(InfoHash, ReplyCounts)> = entries.iter().collect();
    sorted.sort_by_key(|e| e.0);
    sorted.dedup_by(|a, b| a.0 == b.0);
    let mut buf = vec![0u8; 64 + sorted.len() * 96];
    let mut e = Encoder::new(SliceWriter::new(&mut buf));
    let n = (|| {
        e.begin_dict()?;
        e.key(b"files")?;
        e.begin_dict()?;
        for (ih, c) in &sorted {
            e.key(ih.as_bytes())?;
            e.begin_dict()?;
            e.key(b"complete")?;
            e.int(c.complete.into())?;
            e.key(b"downloaded")?;
            e.int(c.downloaded.into())?;
            e.key(b"incomplete")?;
            e.int(c.incomplete.into())?;
            e.end()?;
        }
        e.end()?;
        e.end()?;
        e.finish().map(|(_, n)| n)
    })();
    match n {
        Ok(n) => {
            buf.truncate(n);
            buf
        }
        Err(_) => failure("reply too large"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IH: &str = "%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A";

    #[test]
    fn announce_query() {
        let q = parse_announce(&format!(
            "info_hash={IH}&peer_id=-OT0001-abcdefghijkl&port=6881&uploaded=0&downloaded=0&left=0&event=completed&numwant=-1&compact=1"
        ))
        .unwrap();
        assert_eq!(q.info_hash.0[..4], [0x12, 0x34, 0x56, 0x78]);
        assert_eq!(q.port, 6881);
        assert_eq!(q.left, Some(0));
        assert_eq!(q.event, AnnounceEvent::Completed);
        assert_eq!(q.numwant, None);
        for (bad, why) in [
            ("peer_id=-OT0001-abcdefghijkl&port=1", "missing info_hash"),
            (
                "info_hash=abc&peer_id=x&port=1",
                "info_hash is not 20 bytes",
            ),
            ("info_hash=%zz", "malformed percent-encoding"),
            (
                &format!("info_hash={IH}&peer_id=-OT0001-abcdefghijkl&port=70000"),
                "invalid port",
            ),
            (
                &format!("info_hash={IH}&peer_id=-OT0001-abcdefghijkl&port=1&event=bogus"),
                "unknown event",
            ),
            (&"info_hash=%41".repeat(100), "malformed percent-encoding"),
        ] {
            assert_eq!(parse_announce(bad), Err(why), "{bad}");
        }
    }

    #[test]
    fn scrape_query_and_replies() {
        assert_eq!(parse_scrape(&format!("info_hash={IH}")).unwrap().len(), 1);
        assert!(parse_scrape("").is_err());
        let many = format!("info_hash={IH}&").repeat(MAX_SCRAPE_HASHES + 1);
        assert_eq!(parse_scrape(&many), Err("too many info-hashes"));
        assert_eq!(failure("no"), b"d14:failure reason2:noe");
        let c = ReplyCounts {
            interval: 60,
            complete: 1,
            incomplete: 2,
            downloaded: 3,
        };
        let r = announce_reply(
            c,
            [SocketAddr::from(([1, 2, 3, 4], 0x1a2b))].into_iter(),
            true,
        );
        assert_eq!(
            r,
            b"d8:completei1e10:downloadedi3e10:incompletei2e8:intervali60e12:min intervali30e5:peers6:\x01\x02\x03\x04\x1a\x2be"
        );
        let s = scrape_reply(&[(InfoHash([b'a'; 20]), c)]);
        assert_eq!(
            s,
            b"d5:filesd20:aaaaaaaaaaaaaaaaaaaad8:completei1e10:downloadedi3e10:incompletei2eeee"
        );
    }
}
