//! Bencoded HTTP tracker responses (BEP 3 announce, BEP 23 compact `peers`,
//! BEP 7 `peers6`, BEP 48 scrape `files`), both ways.
//!
//! Decoding uses [`crate::bencode::decode`] in lenient mode (unsorted keys
//! are common in the wild) into the caller's token array, whose length
//! bounds the work: a compact response needs about 20 tokens, a
//! dictionary-model peer list about 7 per peer. Values borrow from the
//! input. A present `failure reason` makes every other key irrelevant
//! (BEP 3: "If present, then no other keys may be present"). Peers of the
//! dictionary model whose `ip` is a host name rather than an address
//! literal are skipped when iterating (the core does no DNS).
//!
//! Encoding writes canonical bencode (sorted keys) with
//! [`crate::bencode::Encoder`]; peers are always written compact
//! (`peers` IPv4, `peers6` IPv6).

use core::fmt;
use core::net::{IpAddr, SocketAddr};

use crate::bencode::{self, DecodeOptions, Encoder, SliceWriter, Token, TokenKind, Value};
use crate::id::{InfoHash, ID_LEN};
use crate::tracker::udp::TorrentStats;
use crate::tracker::{write_compact_peer, AddressFamily, CompactPeers};

/// Why a response could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small.
    BufferTooSmall,
    /// Two scrape entries with the same info-hash.
    DuplicateInfoHash,
    /// Dictionary-model peers cannot be re-encoded; convert them with
    /// [`compact_peers`] first.
    NotCompact,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncodeError::BufferTooSmall => "http tracker: output buffer too small",
            EncodeError::DuplicateInfoHash => "http tracker: duplicate info-hash in scrape",
            EncodeError::NotCompact => "http tracker: peers are not in compact form",
        })
    }
}

impl core::error::Error for EncodeError {}

fn enc_err<E>(e: bencode::EncodeError<E>) -> EncodeError {
    match e {
        bencode::EncodeError::DuplicateKey => EncodeError::DuplicateInfoHash,
        _ => EncodeError::BufferTooSmall,
    }
}

/// What was wrong with a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseErrorKind {
    /// Not bencode (or over the token limit).
    Bencode(bencode::ErrorKind),
    /// The top-level value is not a dictionary.
    NotADict,
    /// A required key is absent.
    Missing(&'static str),
    /// A key has the wrong type, range or length.
    BadField(&'static str),
}

/// A response decode error and the byte offset where it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseError {
    /// What was wrong.
    pub kind: ResponseErrorKind,
    /// Offset in the response body.
    pub offset: usize,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ResponseErrorKind::Bencode(k) => write!(f, "http tracker response: {k}")?,
            ResponseErrorKind::NotADict => {
                f.write_str("http tracker response: not a dictionary")?
            }
            ResponseErrorKind::Missing(k) => write!(f, "http tracker response: missing `{k}`")?,
            ResponseErrorKind::BadField(k) => write!(f, "http tracker response: invalid `{k}`")?,
        }
        write!(f, " at byte {}", self.offset)
    }
}

impl core::error::Error for ResponseError {}

fn bad(key: &'static str, v: &Value<'_, '_>) -> ResponseError {
    ResponseError {
        kind: ResponseErrorKind::BadField(key),
        offset: v.offset(),
    }
}

fn root<'a, 't>(input: &'a [u8], tokens: &'t mut [Token]) -> Result<Value<'a, 't>, ResponseError> {
    let doc =
        bencode::decode(input, tokens, DecodeOptions::lenient()).map_err(|e| ResponseError {
            kind: ResponseErrorKind::Bencode(e.kind),
            offset: e.offset,
        })?;
    let root = doc.root().filter(|r| r.kind() == TokenKind::Dict);
    root.ok_or(ResponseError {
        kind: ResponseErrorKind::NotADict,
        offset: 0,
    })
}

fn opt_u32(d: &Value<'_, '_>, key: &'static str) -> Result<Option<u32>, ResponseError> {
    d.get(key.as_bytes())
        .map(|v| {
            v.as_int()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| bad(key, &v))
        })
        .transpose()
}

fn opt_bytes<'a>(d: &Value<'a, '_>, key: &'static str) -> Result<Option<&'a [u8]>, ResponseError> {
    d.get(key.as_bytes())
        .map(|v| v.as_bytes().ok_or_else(|| bad(key, &v)))
        .transpose()
}

/// The `peers` of an announce response.
#[derive(Clone, Copy, Debug)]
pub enum Peers<'a, 't> {
    /// BEP 23 compact IPv4 string.
    Compact(CompactPeers<'a>),
    /// BEP 3 list of `{ip, port, peer id}` dicts (validated).
    Dict(Value<'a, 't>),
}

impl<'a, 't> Peers<'a, 't> {
    /// The peers (dictionary entries with a host name are skipped).
    pub fn iter(&self) -> impl Iterator<Item = SocketAddr> + use<'a, 't> {
        let (compact, list) = match self {
            Peers::Compact(c) => (Some(c.iter()), None),
            Peers::Dict(v) => (None, v.as_list()),
        };
        compact
            .into_iter()
            .flatten()
            .chain(list.into_iter().flatten().filter_map(|p| dict_peer(&p)))
    }
}

/// A validated dictionary-model peer as an address, if its `ip` is one.
fn dict_peer(p: &Value<'_, '_>) -> Option<SocketAddr> {
    let ip: IpAddr = p.get(b"ip")?.as_str()?.parse().ok()?;
    let port = u16::try_from(p.get(b"port")?.as_int()?).ok()?;
    Some(SocketAddr::new(ip, port))
}

fn check_dict_peer(p: &Value<'_, '_>) -> Result<(), ResponseError> {
    let ok = p.kind() == TokenKind::Dict
        && p.get(b"ip").and_then(|v| v.as_bytes()).is_some()
        && p.get(b"port")
            .and_then(|v| v.as_int())
            .is_some_and(|i| u16::try_from(i).is_ok());
    if ok {
        Ok(())
    } else {
        Err(bad("peers", p))
    }
}

/// An announce response.
#[derive(Clone, Copy, Debug)]
pub struct AnnounceResponse<'a, 't> {
    /// BEP 3: the request failed; nothing else is meaningful.
    pub failure_reason: Option<&'a [u8]>,
    /// A non-fatal message for the user.
    pub warning_message: Option<&'a [u8]>,
    /// Seconds until the next regular announce (required on success).
    pub interval: u32,
    /// Seconds the client must wait at least before re-announcing.
    pub min_interval: Option<u32>,
    /// Seeders.
    pub complete: Option<u32>,
    /// Leechers.
    pub incomplete: Option<u32>,
    /// IPv4 peers (or dictionary-model peers of any family).
    pub peers: Peers<'a, 't>,
    /// BEP 7 compact IPv6 peers.
    pub peers6: CompactPeers<'a>,
}

impl<'a, 't> AnnounceResponse<'a, 't> {
    /// A success response with no peers.
    pub fn new(interval: u32) -> Self {
        AnnounceResponse {
            failure_reason: None,
            warning_message: None,
            interval,
            min_interval: None,
            complete: None,
            incomplete: None,
            peers: Peers::Compact(CompactPeers::empty(AddressFamily::V4)),
            peers6: CompactPeers::empty(AddressFamily::V6),
        }
    }

    /// Decodes a response body; `tokens` bounds its size.
    pub fn decode(input: &'a [u8], tokens: &'t mut [Token]) -> Result<Self, ResponseError> {
        let d = root(input, tokens)?;
        let mut r = AnnounceResponse::new(0);
        if let Some(f) = opt_bytes(&d, "failure reason")? {
            r.failure_reason = Some(f);
            return Ok(r);
        }
        r.warning_message = opt_bytes(&d, "warning message")?;
        r.interval = opt_u32(&d, "interval")?.ok_or(ResponseError {
            kind: ResponseErrorKind::Missing("interval"),
            offset: 0,
        })?;
        r.min_interval = opt_u32(&d, "min interval")?;
        r.complete = opt_u32(&d, "complete")?;
        r.incomplete = opt_u32(&d, "incomplete")?;
        if let Some(p) = d.get(b"peers") {
            r.peers = match (p.as_bytes(), p.as_list()) {
                (Some(b), _) => Peers::Compact(
                    CompactPeers::new(b, AddressFamily::V4).ok_or_else(|| bad("peers", &p))?,
                ),
                (None, Some(mut list)) => {
                    list.try_for_each(|e| check_dict_peer(&e))?;
                    Peers::Dict(p)
                }
                _ => return Err(bad("peers", &p)),
            };
        }
        if let Some(p) = d.get(b"peers6") {
            let b = p.as_bytes().ok_or_else(|| bad("peers6", &p))?;
            r.peers6 = CompactPeers::new(b, AddressFamily::V6).ok_or_else(|| bad("peers6", &p))?;
        }
        Ok(r)
    }

    /// Every peer: `peers` then `peers6`.
    pub fn all_peers(&self) -> impl Iterator<Item = SocketAddr> + use<'a, 't> {
        self.peers.iter().chain(self.peers6.iter())
    }
}

/// Fills `out` with as many compact entries of `family` from `peers` as fit
/// (other families are skipped); returns the view of what was written.
pub fn compact_peers<I: IntoIterator<Item = SocketAddr>>(
    peers: I,
    family: AddressFamily,
    out: &mut [u8],
) -> CompactPeers<'_> {
    let mut n = 0;
    for p in peers {
        match write_compact_peer(&p, family, out.get_mut(n..).unwrap_or_default()) {
            Some(m) => n += m,
            None => break,
        }
    }
    let out: &[u8] = out;
    CompactPeers::new(out.get(..n).unwrap_or_default(), family)
        .unwrap_or(CompactPeers::empty(family))
}

/// Writes `d14:failure reason<len>:<reason>e`.
pub fn encode_failure(reason: &[u8], out: &mut [u8]) -> Result<usize, EncodeError> {
    let mut e = Encoder::new(SliceWriter::new(out));
    e.begin_dict().map_err(enc_err)?;
    e.key(b"failure reason").map_err(enc_err)?;
    e.bytes(reason).map_err(enc_err)?;
    e.end().map_err(enc_err)?;
    e.finish().map(|(_, n)| n).map_err(enc_err)
}

/// Writes an announce response (canonical bencode). `peers` must be
/// [`Peers::Compact`]; `peers` is always written (BEP 23 clients expect
/// it), `peers6` only when non-empty.
pub fn encode_announce_response(
    r: &AnnounceResponse<'_, '_>,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    if let Some(f) = r.failure_reason {
        return encode_failure(f, out);
    }
    let Peers::Compact(peers) = r.peers else {
        return Err(EncodeError::NotCompact);
    };
    let mut e = Encoder::new(SliceWriter::new(out));
    let mut go = || -> Result<(), bencode::EncodeError<_>> {
        e.begin_dict()?;
        if let Some(c) = r.complete {
            e.key(b"complete")?;
            e.int(i64::from(c))?;
        }
        if let Some(c) = r.incomplete {
            e.key(b"incomplete")?;
            e.int(i64::from(c))?;
        }
        e.key(b"interval")?;
        e.int(i64::from(r.interval))?;
        if let Some(m) = r.min_interval {
            e.key(b"min interval")?;
            e.int(i64::from(m))?;
        }
        e.key(b"peers")?;
        e.bytes(peers.as_bytes())?;
        if !r.peers6.is_empty() {
            e.key(b"peers6")?;
            e.bytes(r.peers6.as_bytes())?;
        }
        if let Some(w) = r.warning_message {
            e.key(b"warning message")?;
            e.bytes(w)?;
        }
        e.end()
    };
    go().map_err(enc_err)?;
    e.finish().map(|(_, n)| n).map_err(enc_err)
}

/// A BEP 48 scrape response.
#[derive(Clone, Copy, Debug)]
pub struct ScrapeResponse<'a, 't> {
    /// The request failed.
    pub failure_reason: Option<&'a [u8]>,
    files: Option<Value<'a, 't>>,
}

fn stats_of(v: &Value<'_, '_>) -> Result<TorrentStats, ResponseError> {
    if v.kind() != TokenKind::Dict {
        return Err(bad("files", v));
    }
    Ok(TorrentStats {
        seeders: opt_u32(v, "complete")?.unwrap_or(0),
        completed: opt_u32(v, "downloaded")?.unwrap_or(0),
        leechers: opt_u32(v, "incomplete")?.unwrap_or(0),
    })
}

impl<'a, 't> ScrapeResponse<'a, 't> {
    /// Decodes a scrape body; every `files` key must be a 20-byte hash and
    /// every value a dict (missing counts read as 0).
    pub fn decode(input: &'a [u8], tokens: &'t mut [Token]) -> Result<Self, ResponseError> {
        let d = root(input, tokens)?;
        if let Some(f) = opt_bytes(&d, "failure reason")? {
            return Ok(ScrapeResponse {
                failure_reason: Some(f),
                files: None,
            });
        }
        let files = d.get(b"files");
        if let Some(f) = files {
            let entries = f.as_dict().ok_or_else(|| bad("files", &f))?;
            for (k, v) in entries {
                if k.len() != ID_LEN {
                    return Err(bad("files", &v));
                }
                stats_of(&v)?;
            }
        }
        Ok(ScrapeResponse {
            failure_reason: None,
            files,
        })
    }

    /// The torrents and their counts, in input order.
    pub fn files(&self) -> impl Iterator<Item = (InfoHash, TorrentStats)> + use<'a, 't> {
        self.files
            .and_then(|f| f.as_dict())
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((InfoHash::from_slice(k)?, stats_of(&v).ok()?)))
    }
}

/// Writes a scrape response: `files` maps each hash to `complete`
/// (seeders), `downloaded` (completed), `incomplete` (leechers). `entries`
/// is sorted in place (bencode dict keys must be sorted).
pub fn encode_scrape_response(
    entries: &mut [(InfoHash, TorrentStats)],
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    entries.sort_unstable_by_key(|e| e.0);
    let entries: &[(InfoHash, TorrentStats)] = entries;
    let mut e = Encoder::new(SliceWriter::new(out));
    let mut go = || -> Result<(), bencode::EncodeError<_>> {
        e.begin_dict()?;
        e.key(b"files")?;
        e.begin_dict()?;
        for (h, s) in entries {
            e.key(h.as_bytes())?;
            e.begin_dict()?;
            e.key(b"complete")?;
            e.int(i64::from(s.seeders))?;
            e.key(b"downloaded")?;
            e.int(i64::from(s.completed))?;
            e.key(b"incomplete")?;
            e.int(i64::from(s.leechers))?;
            e.end()?;
        }
        e.end()?;
        e.end()
    };
    go().map_err(enc_err)?;
    e.finish().map(|(_, n)| n).map_err(enc_err)
}

#[cfg(test)]
mod tests;
