//! BEP 15 responses (tracker → client): connect, announce, scrape, error.
//!
//! ```text
//! connect:  action=0 u32 | transaction_id u32 | connection_id u64
//! announce: action=1 u32 | transaction_id u32 | interval u32 | leechers u32
//!           | seeders u32 | (ip [4 or 16] | port u16)…
//! scrape:   action=2 u32 | transaction_id u32 | (seeders u32 | completed u32 | leechers u32)…
//! error:    action=3 u32 | transaction_id u32 | message bytes…
//! ```
//!
//! BEP 15 "IPv6": the peer entries are 18 bytes when the tracker was
//! reached over IPv6, 6 bytes over IPv4; nothing in the packet says which,
//! so [`Response::parse`] takes the [`AddressFamily`] from the caller.

use core::net::SocketAddr;

use super::{
    Action, ConnectionId, EncodeError, Limits, ParseError, ParseErrorKind, TransactionId,
    ANNOUNCE_RESPONSE_HEADER_LEN, RESPONSE_HEADER_LEN, SCRAPE_STATS_LEN,
};
use crate::codec::{Reader, Writer};
use crate::tracker::{AddressFamily, CompactPeers};

/// A connect response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectResponse {
    /// Echo of the request's.
    pub transaction_id: TransactionId,
    /// To use in announce and scrape requests for one minute (BEP 15).
    pub connection_id: ConnectionId,
}

/// An announce response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceResponse<'a> {
    /// Echo of the request's.
    pub transaction_id: TransactionId,
    /// Seconds to wait before the next regular announce.
    pub interval: u32,
    /// Peers still downloading.
    pub leechers: u32,
    /// Peers with the whole torrent.
    pub seeders: u32,
    /// The peers, borrowed from the datagram.
    pub peers: CompactPeers<'a>,
}

/// Statistics of one torrent in a scrape response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TorrentStats {
    /// Peers with the whole torrent.
    pub seeders: u32,
    /// Times the download was completed.
    pub completed: u32,
    /// Peers still downloading.
    pub leechers: u32,
}

/// A scrape response's entries, borrowed: a whole number of 12-byte records,
/// in the order of the request's hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrapeStats<'a>(&'a [u8]);

impl<'a> ScrapeStats<'a> {
    /// A view of `bytes` if it is a whole number of entries.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        (bytes.len() % SCRAPE_STATS_LEN == 0).then_some(ScrapeStats(bytes))
    }

    /// Raw bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len() / SCRAPE_STATS_LEN
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries.
    pub fn iter(&self) -> impl Iterator<Item = TorrentStats> + 'a {
        self.0.chunks_exact(SCRAPE_STATS_LEN).filter_map(|c| {
            let mut r = Reader::new(c);
            Some(TorrentStats {
                seeders: r.u32()?,
                completed: r.u32()?,
                leechers: r.u32()?,
            })
        })
    }
}

/// A scrape response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrapeResponse<'a> {
    /// Echo of the request's.
    pub transaction_id: TransactionId,
    /// One entry per requested hash.
    pub stats: ScrapeStats<'a>,
}

/// An error response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorResponse<'a> {
    /// Echo of the request's.
    pub transaction_id: TransactionId,
    /// Human-readable message (not necessarily UTF-8).
    pub message: &'a [u8],
}

/// A parsed response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response<'a> {
    /// Action 0.
    Connect(ConnectResponse),
    /// Action 1.
    Announce(AnnounceResponse<'a>),
    /// Action 2.
    Scrape(ScrapeResponse<'a>),
    /// Action 3.
    Error(ErrorResponse<'a>),
}

impl<'a> Response<'a> {
    /// Parses one datagram; `family` says how long the peer entries are.
    /// Uses `limits.max_peers` and `limits.max_scrape_hashes`.
    pub fn parse(
        bytes: &'a [u8],
        family: AddressFamily,
        limits: &Limits,
    ) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes);
        let trunc = |r: &Reader<'_>| ParseError::new(ParseErrorKind::Truncated, r.pos());
        let (Some(action), Some(tid)) = (r.u32(), r.u32()) else {
            return Err(ParseError::new(ParseErrorKind::Truncated, bytes.len()));
        };
        let transaction_id = TransactionId(tid);
        match Action::from_u32(action) {
            Some(Action::Connect) => {
                let cid = r.u64().ok_or_else(|| trunc(&r))?;
                Ok(Response::Connect(ConnectResponse {
                    transaction_id,
                    connection_id: ConnectionId(cid),
                }))
            }
            Some(Action::Announce) => {
                let mut fixed = || Some((r.u32()?, r.u32()?, r.u32()?));
                let Some((interval, leechers, seeders)) = fixed() else {
                    return Err(trunc(&r));
                };
                let body = r.rest();
                let len = family.peer_len();
                let Some(peers) = CompactPeers::new(body, family) else {
                    let at = ANNOUNCE_RESPONSE_HEADER_LEN + body.len() / len * len;
                    return Err(ParseError::new(ParseErrorKind::BadPeerListLength, at));
                };
                if peers.len() > limits.max_peers {
                    let at = ANNOUNCE_RESPONSE_HEADER_LEN + limits.max_peers * len;
                    return Err(ParseError::new(ParseErrorKind::TooManyPeers, at));
                }
                Ok(Response::Announce(AnnounceResponse {
                    transaction_id,
                    interval,
                    leechers,
                    seeders,
                    peers,
                }))
            }
            Some(Action::Scrape) => {
                let body = r.rest();
                let Some(stats) = ScrapeStats::new(body) else {
                    let at = RESPONSE_HEADER_LEN + body.len() / SCRAPE_STATS_LEN * SCRAPE_STATS_LEN;
                    return Err(ParseError::new(ParseErrorKind::BadScrapeLength, at));
                };
                if stats.len() > limits.max_scrape_hashes {
                    let at = RESPONSE_HEADER_LEN + limits.max_scrape_hashes * SCRAPE_STATS_LEN;
                    return Err(ParseError::new(ParseErrorKind::TooManyInfoHashes, at));
                }
                Ok(Response::Scrape(ScrapeResponse {
                    transaction_id,
                    stats,
                }))
            }
            Some(Action::Error) => Ok(Response::Error(ErrorResponse {
                transaction_id,
                message: r.rest(),
            })),
            None => Err(ParseError::new(ParseErrorKind::BadAction(action), 0)),
        }
    }

    /// The transaction id.
    pub fn transaction_id(&self) -> TransactionId {
        match self {
            Response::Connect(c) => c.transaction_id,
            Response::Announce(a) => a.transaction_id,
            Response::Scrape(s) => s.transaction_id,
            Response::Error(e) => e.transaction_id,
        }
    }

    /// Writes the response; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(out);
        match self {
            Response::Connect(c) => {
                w.u32(Action::Connect.to_u32());
                w.u32(c.transaction_id.0);
                w.u64(c.connection_id.0);
            }
            Response::Announce(a) => {
                w.u32(Action::Announce.to_u32());
                w.u32(a.transaction_id.0);
                w.u32(a.interval);
                w.u32(a.leechers);
                w.u32(a.seeders);
                w.put(a.peers.as_bytes());
            }
            Response::Scrape(s) => {
                w.u32(Action::Scrape.to_u32());
                w.u32(s.transaction_id.0);
                w.put(s.stats.as_bytes());
            }
            Response::Error(e) => {
                w.u32(Action::Error.to_u32());
                w.u32(e.transaction_id.0);
                w.put(e.message);
            }
        }
        w.finish().map_err(|needed| EncodeError { needed })
    }
}

/// Writes an announce response with at most `max_peers` of the given peers
/// whose family is `family` (others are skipped: a peer list holds one
/// family, that of the transport). Returns the length.
#[allow(clippy::too_many_arguments)]
pub fn encode_announce_response<I: IntoIterator<Item = SocketAddr>>(
    transaction_id: TransactionId,
    interval: u32,
    leechers: u32,
    seeders: u32,
    peers: I,
    family: AddressFamily,
    max_peers: usize,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut w = Writer::new(out);
    w.u32(Action::Announce.to_u32());
    w.u32(transaction_id.0);
    w.u32(interval);
    w.u32(leechers);
    w.u32(seeders);
    let mut n = 0;
    for p in peers {
        if n >= max_peers {
            break;
        }
        // Compact form (BEP 15): address then port, big-endian; peers of
        // the other family are skipped. Written in place (the hot path of
        // every announce reply).
        match (p, family) {
            (SocketAddr::V4(a), AddressFamily::V4) => {
                w.put(&a.ip().octets());
                w.u16(a.port());
                n += 1;
            }
            (SocketAddr::V6(a), AddressFamily::V6) => {
                w.put(&a.ip().octets());
                w.u16(a.port());
                n += 1;
            }
            _ => {}
        }
    }
    w.finish().map_err(|needed| EncodeError { needed })
}

/// Writes a scrape response; returns the length.
pub fn encode_scrape_response<I: IntoIterator<Item = TorrentStats>>(
    transaction_id: TransactionId,
    stats: I,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut w = Writer::new(out);
    w.u32(Action::Scrape.to_u32());
    w.u32(transaction_id.0);
    for s in stats {
        w.u32(s.seeders);
        w.u32(s.completed);
        w.u32(s.leechers);
    }
    w.finish().map_err(|needed| EncodeError { needed })
}

impl ErrorResponse<'_> {
    /// Writes the error response; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        Response::Error(*self).encode(out)
    }
}

impl ConnectResponse {
    /// Writes the connect response; returns its length (16).
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        Response::Connect(*self).encode(out)
    }
}

#[cfg(test)]
mod tests;
