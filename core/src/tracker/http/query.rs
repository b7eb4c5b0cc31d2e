//! HTTP tracker query strings (BEP 3, BEP 23 `compact`, BEP 48 scrape).
//!
//! Client side: [`AnnounceQuery::write_to`] / [`AnnounceQuery::encode`] and
//! [`write_scrape_query`] produce the part after `?` (use
//! [`query_separator`] when the announce URL already has a query), and
//! [`scrape_url`] derives the BEP 48 scrape URL.
//!
//! Tracker side: [`parse_announce_query`] and [`parse_scrape_query`] take
//! the raw query (after `?`, before any `#`). Keys are matched as sent (not
//! percent-decoded; clients do not escape them); values are percent-decoded
//! where they may be binary, with `+` taken literally (RFC 3986), and
//! unknown keys are ignored. Numbers are unsigned decimal. A negative
//! `numwant` (e.g. `-1`) means "tracker default", like in BEP 15. `ip`,
//! `ipv4` and `ipv6` are ignored on purpose (spoofable).

use core::fmt;

use super::response::EncodeError;
use crate::id::{InfoHash, PeerId, ID_LEN};
use crate::percent::{self, Encoded};
use crate::tracker::AnnounceEvent;

/// Longest query string accepted (bounds parse work; a full announce is
/// about 300 bytes, a 74-hash scrape about 4.5 KiB).
pub const MAX_QUERY_LEN: usize = 8192;

/// Longest `key` value kept (decoded bytes). Clients send 8 hex digits.
pub const MAX_KEY_LEN: usize = 32;

/// A client's `key` parameter (decoded bytes).
pub type Key = heapless::Vec<u8, MAX_KEY_LEN>;

/// A query parameter, for errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    /// `info_hash`.
    InfoHash,
    /// `peer_id`.
    PeerId,
    /// `port`.
    Port,
    /// `uploaded`.
    Uploaded,
    /// `downloaded`.
    Downloaded,
    /// `left`.
    Left,
    /// `event`.
    Event,
    /// `compact`.
    Compact,
    /// `numwant`.
    NumWant,
    /// `key`.
    Key,
}

impl Param {
    /// The query key.
    pub fn name(self) -> &'static str {
        match self {
            Param::InfoHash => "info_hash",
            Param::PeerId => "peer_id",
            Param::Port => "port",
            Param::Uploaded => "uploaded",
            Param::Downloaded => "downloaded",
            Param::Left => "left",
            Param::Event => "event",
            Param::Compact => "compact",
            Param::NumWant => "numwant",
            Param::Key => "key",
        }
    }

    const ALL: [Param; 10] = [
        Param::InfoHash,
        Param::PeerId,
        Param::Port,
        Param::Uploaded,
        Param::Downloaded,
        Param::Left,
        Param::Event,
        Param::Compact,
        Param::NumWant,
        Param::Key,
    ];

    fn from_key(k: &[u8]) -> Option<Param> {
        Param::ALL.into_iter().find(|p| p.name().as_bytes() == k)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// What was wrong with a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryErrorKind {
    /// Longer than [`MAX_QUERY_LEN`].
    TooLong,
    /// A required parameter is absent.
    Missing(Param),
    /// A parameter given twice.
    Duplicate(Param),
    /// A value that does not decode (bad escape, wrong length, not a
    /// number, out of range, unknown event).
    BadValue(Param),
    /// More scrape `info_hash`es than the caller allows.
    TooManyInfoHashes,
}

/// A query parse error and the byte offset of the offending pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryError {
    /// What was wrong.
    pub kind: QueryErrorKind,
    /// Offset in the query.
    pub offset: usize,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            QueryErrorKind::TooLong => f.write_str("query string too long")?,
            QueryErrorKind::Missing(p) => write!(f, "missing parameter `{}`", p.name())?,
            QueryErrorKind::Duplicate(p) => write!(f, "repeated parameter `{}`", p.name())?,
            QueryErrorKind::BadValue(p) => write!(f, "invalid value for `{}`", p.name())?,
            QueryErrorKind::TooManyInfoHashes => f.write_str("too many info_hash parameters")?,
        }
        write!(f, " at byte {}", self.offset)
    }
}

impl core::error::Error for QueryError {}

/// An announce request's parameters (BEP 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceQuery {
    /// The torrent.
    pub info_hash: InfoHash,
    /// The announcing peer.
    pub peer_id: PeerId,
    /// Its listening port.
    pub port: u16,
    /// Bytes uploaded this session (0 if absent).
    pub uploaded: u64,
    /// Bytes downloaded this session (0 if absent).
    pub downloaded: u64,
    /// Bytes left (required).
    pub left: u64,
    /// Started/completed/stopped/none.
    pub event: AnnounceEvent,
    /// BEP 23: the client accepts compact peer lists.
    pub compact: bool,
    /// Peers wanted; `None`: tracker default.
    pub numwant: Option<u32>,
    /// The client's key, if sent.
    pub key: Option<Key>,
}

/// `'&'` if `url` already has a query, else `'?'`.
pub fn query_separator(url: &str) -> char {
    if url.contains('?') {
        '&'
    } else {
        '?'
    }
}

/// BEP 48: the scrape URL is the announce URL with the `announce` that
/// follows its last `/` replaced by `scrape`. Returns the parts before and
/// after that word (scrape URL = `before + "scrape" + after`), or `None`
/// when the tracker does not support scrape by this convention.
pub fn scrape_url(announce: &str) -> Option<(&str, &str)> {
    let path_end = announce.find('?').unwrap_or(announce.len());
    let path = announce.get(..path_end)?;
    let slash = path.rfind('/')?;
    let tail = announce.get(slash + 1..)?;
    let after = tail.strip_prefix("announce")?;
    Some((announce.get(..slash + 1)?, after))
}

/// A `fmt::Write` into a byte slice that fails when full.
struct SliceFmt<'b> {
    buf: &'b mut [u8],
    n: usize,
}

impl fmt::Write for SliceFmt<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.n.checked_add(s.len()).ok_or(fmt::Error)?;
        let dst = self.buf.get_mut(self.n..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.n = end;
        Ok(())
    }
}

impl AnnounceQuery {
    /// Writes `info_hash=…&peer_id=…&port=…&uploaded=…&downloaded=…&left=…`
    /// then `event`, `compact=1`, `numwant`, `key` when set.
    pub fn write_to<W: fmt::Write>(&self, w: &mut W) -> fmt::Result {
        write!(
            w,
            "info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}",
            Encoded(self.info_hash.as_bytes()),
            Encoded(self.peer_id.as_bytes()),
            self.port,
            self.uploaded,
            self.downloaded,
            self.left
        )?;
        if self.event != AnnounceEvent::None {
            write!(w, "&event={}", self.event.as_http_str())?;
        }
        if self.compact {
            w.write_str("&compact=1")?;
        }
        if let Some(n) = self.numwant {
            write!(w, "&numwant={n}")?;
        }
        if let Some(k) = &self.key {
            write!(w, "&key={}", Encoded(k))?;
        }
        Ok(())
    }

    /// Writes the query into `out`; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = SliceFmt { buf: out, n: 0 };
        self.write_to(&mut w)
            .map_err(|_| EncodeError::BufferTooSmall)?;
        Ok(w.n)
    }
}

/// Writes `info_hash=…&info_hash=…` (BEP 48).
pub fn write_scrape_query<W: fmt::Write>(hashes: &[InfoHash], w: &mut W) -> fmt::Result {
    for (i, h) in hashes.iter().enumerate() {
        let sep = if i == 0 { "" } else { "&" };
        write!(w, "{sep}info_hash={}", Encoded(h.as_bytes()))?;
    }
    Ok(())
}

/// `key=value` pairs of a query with the offset of each pair.
struct Pairs<'q> {
    q: &'q [u8],
    pos: usize,
}

impl<'q> Iterator for Pairs<'q> {
    type Item = (usize, &'q [u8], &'q [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let rest = self.q.get(self.pos..)?;
            if rest.is_empty() {
                return None;
            }
            let at = self.pos;
            let len = rest.iter().position(|&b| b == b'&').unwrap_or(rest.len());
            self.pos = at + len + 1;
            let pair = rest.get(..len).unwrap_or_default();
            if pair.is_empty() {
                continue; // `a=1&&b=2`
            }
            let (k, v) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => (
                    pair.get(..eq).unwrap_or_default(),
                    pair.get(eq + 1..).unwrap_or_default(),
                ),
                None => (pair, &[][..]),
            };
            return Some((at, k, v));
        }
    }
}

fn pairs(q: &[u8]) -> Result<Pairs<'_>, QueryError> {
    if q.len() > MAX_QUERY_LEN {
        return Err(QueryError {
            kind: QueryErrorKind::TooLong,
            offset: MAX_QUERY_LEN,
        });
    }
    Ok(Pairs { q, pos: 0 })
}

fn decode_id(v: &[u8]) -> Option<[u8; ID_LEN]> {
    let mut buf = [0u8; ID_LEN];
    let n = percent::decode(v, &mut buf, false).ok()?.len();
    (n == ID_LEN).then_some(buf)
}

/// Unsigned decimal (leading zeros allowed), `None` on anything else or
/// overflow.
fn parse_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Parses an announce query (the part after `?`).
pub fn parse_announce_query(q: &[u8]) -> Result<AnnounceQuery, QueryError> {
    let mut seen = 0u16;
    let mut out = AnnounceQuery {
        info_hash: InfoHash::default(),
        peer_id: PeerId::default(),
        port: 0,
        uploaded: 0,
        downloaded: 0,
        left: 0,
        event: AnnounceEvent::None,
        compact: false,
        numwant: None,
        key: None,
    };
    for (at, k, v) in pairs(q)? {
        let Some(p) = Param::from_key(k) else {
            continue;
        };
        let err = |kind| QueryError { kind, offset: at };
        if seen & p.bit() != 0 {
            return Err(err(QueryErrorKind::Duplicate(p)));
        }
        seen |= p.bit();
        let bad = || err(QueryErrorKind::BadValue(p));
        match p {
            Param::InfoHash => out.info_hash = InfoHash(decode_id(v).ok_or_else(bad)?),
            Param::PeerId => out.peer_id = PeerId(decode_id(v).ok_or_else(bad)?),
            Param::Port => {
                out.port = parse_u64(v)
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(bad)?
            }
            Param::Uploaded => out.uploaded = parse_u64(v).ok_or_else(bad)?,
            Param::Downloaded => out.downloaded = parse_u64(v).ok_or_else(bad)?,
            Param::Left => out.left = parse_u64(v).ok_or_else(bad)?,
            Param::Event => out.event = AnnounceEvent::from_http(v).ok_or_else(bad)?,
            Param::Compact => {
                out.compact = match v {
                    b"1" => true,
                    b"0" => false,
                    _ => return Err(bad()),
                }
            }
            Param::NumWant => {
                out.numwant = match v.split_first() {
                    // Negative: tracker default (BEP 15 uses -1 the same way).
                    Some((b'-', digits)) => {
                        parse_u64(digits).ok_or_else(bad)?;
                        None
                    }
                    _ => Some(
                        parse_u64(v)
                            .and_then(|n| u32::try_from(n).ok())
                            .ok_or_else(bad)?,
                    ),
                }
            }
            Param::Key => {
                let mut buf = [0u8; MAX_KEY_LEN];
                let d = percent::decode(v, &mut buf, false).map_err(|_| bad())?;
                out.key = Some(Key::from_slice(d).map_err(|_| bad())?);
            }
        }
    }
    for p in [Param::InfoHash, Param::PeerId, Param::Port, Param::Left] {
        if seen & p.bit() == 0 {
            return Err(QueryError {
                kind: QueryErrorKind::Missing(p),
                offset: q.len(),
            });
        }
    }
    Ok(out)
}

/// Parses a scrape query (BEP 48): every `info_hash` into `out`, whose
/// length is the limit. Returns the filled prefix; an empty result means
/// "all torrents" (BEP 48), which the tracker may refuse.
pub fn parse_scrape_query<'o>(
    q: &[u8],
    out: &'o mut [InfoHash],
) -> Result<&'o [InfoHash], QueryError> {
    let mut n = 0;
    for (at, k, v) in pairs(q)? {
        if k != Param::InfoHash.name().as_bytes() {
            continue;
        }
        let err = |kind| QueryError { kind, offset: at };
        let h = decode_id(v).ok_or_else(|| err(QueryErrorKind::BadValue(Param::InfoHash)))?;
        let slot = out
            .get_mut(n)
            .ok_or_else(|| err(QueryErrorKind::TooManyInfoHashes))?;
        *slot = InfoHash(h);
        n += 1;
    }
    let out: &'o [InfoHash] = out;
    Ok(out.get(..n).unwrap_or_default())
}

#[cfg(test)]
mod tests;
