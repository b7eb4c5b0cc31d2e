//! BEP 15 requests (client → tracker): connect, announce (+ BEP 41
//! options), scrape.
//!
//! ```text
//! connect:  connection_id=PROTOCOL_ID u64 | action=0 u32 | transaction_id u32
//! announce: connection_id u64 | action=1 u32 | transaction_id u32 | info_hash [20]
//!           | peer_id [20] | downloaded u64 | left u64 | uploaded u64 | event u32
//!           | ip u32 | key u32 | num_want i32 | port u16 | BEP 41 options…
//! scrape:   connection_id u64 | action=2 u32 | transaction_id u32 | info_hash [20]…
//! ```
//!
//! [`Request::parse`] tells, on failure, whether the sender may get an error
//! reply ([`RequestError::Sendable`], carrying the ids to echo) or not
//! ([`RequestError::Unsendable`]: too short to have ids, or a connect
//! request without the protocol id). Whether to actually reply is the
//! server's call: see [`super::server`].

use core::fmt;
use core::net::Ipv4Addr;

use super::{
    Action, ConnectionId, EncodeError, Limits, ParseError, ParseErrorKind, TransactionId,
    ANNOUNCE_REQUEST_LEN, PROTOCOL_ID, SCRAPE_REQUEST_HEADER_LEN,
};
use crate::codec::{Reader, Writer};
use crate::id::{InfoHash, PeerId, ID_LEN};
use crate::tracker::AnnounceEvent;

/// BEP 41 option type: end of options; the rest of the packet is ignored.
pub const OPTION_END: u8 = 0;
/// BEP 41 option type: one byte of padding.
pub const OPTION_NOP: u8 = 1;
/// BEP 41 option type: a length byte, then up to 255 bytes of the URL's
/// path and query; successive URLData options are concatenated.
pub const OPTION_URL_DATA: u8 = 2;

/// A connect request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    /// Echoed in the response.
    pub transaction_id: TransactionId,
}

/// An announce request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceRequest<'a> {
    /// From a connect response.
    pub connection_id: ConnectionId,
    /// Echoed in the response.
    pub transaction_id: TransactionId,
    /// The torrent.
    pub info_hash: InfoHash,
    /// The announcing peer.
    pub peer_id: PeerId,
    /// Bytes downloaded this session.
    pub downloaded: u64,
    /// Bytes left to download.
    pub left: u64,
    /// Bytes uploaded this session.
    pub uploaded: u64,
    /// Started, completed, stopped or none.
    pub event: AnnounceEvent,
    /// BEP 15: "IP address ... 0 = default" (the sender's address). Trackers
    /// usually ignore any other value.
    pub ip: Ipv4Addr,
    /// Random key so the tracker can recognise the peer across IP changes.
    pub key: u32,
    /// Peers wanted; BEP 15: "-1 = default".
    pub num_want: i32,
    /// The peer's listening port.
    pub port: u16,
    /// BEP 41 options (validated raw bytes).
    pub options: UdpOptions<'a>,
}

/// A scrape request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrapeRequest<'a> {
    /// From a connect response.
    pub connection_id: ConnectionId,
    /// Echoed in the response.
    pub transaction_id: TransactionId,
    /// The torrents, in request order.
    pub info_hashes: InfoHashes<'a>,
}

/// A parsed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// Asks for a connection id.
    Connect(ConnectRequest),
    /// Announces a peer and asks for peers.
    Announce(AnnounceRequest<'a>),
    /// Asks for swarm statistics.
    Scrape(ScrapeRequest<'a>),
}

/// Why a request was refused, and whether an error reply may be addressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// The header was readable: a reply could echo these ids (the server
    /// still checks `connection_id` before sending anything).
    Sendable {
        /// As sent by the client (not yet validated).
        connection_id: ConnectionId,
        /// To echo.
        transaction_id: TransactionId,
        /// What was wrong.
        error: ParseError,
    },
    /// No reply is possible or wise.
    Unsendable(ParseError),
}

impl RequestError {
    /// The underlying parse error.
    pub fn error(&self) -> ParseError {
        match self {
            RequestError::Sendable { error, .. } | RequestError::Unsendable(error) => *error,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error(), f)
    }
}

impl core::error::Error for RequestError {}

/// A scrape request's info-hashes: borrowed bytes, a whole number of
/// 20-byte hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InfoHashes<'a>(&'a [u8]);

impl<'a> InfoHashes<'a> {
    /// A view of `bytes` if it is a whole number of hashes.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        (bytes.len() % ID_LEN == 0).then_some(InfoHashes(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// Number of hashes.
    pub fn len(&self) -> usize {
        self.0.len() / ID_LEN
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The hashes in order.
    pub fn iter(&self) -> impl Iterator<Item = InfoHash> + 'a {
        self.0.chunks_exact(ID_LEN).filter_map(InfoHash::from_slice)
    }
}

/// BEP 41 options of an announce request: validated raw bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct UdpOptions<'a>(&'a [u8]);

/// One BEP 41 option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpOption<'a> {
    /// Padding.
    Nop,
    /// A piece of the announce URL's path and query.
    UrlData(&'a [u8]),
    /// An option type this code does not know, with its data (BEP 41: every
    /// type but 0 and 1 has a length byte, so it can be skipped).
    Unknown {
        /// The option type.
        kind: u8,
        /// Its data.
        data: &'a [u8],
    },
}

impl<'a> UdpOptions<'a> {
    /// No options.
    pub const EMPTY: UdpOptions<'static> = UdpOptions(&[]);

    /// Validates options; `base` is their offset in the datagram, for errors.
    pub fn parse(
        bytes: &'a [u8],
        base: usize,
        max_url_data_len: usize,
    ) -> Result<Self, ParseError> {
        let mut it = OptionsIter(Reader::new(bytes));
        let mut url_len = 0usize;
        loop {
            let at = base + it.0.pos();
            match it.next_checked() {
                Ok(None) => return Ok(UdpOptions(bytes)),
                Ok(Some(UdpOption::UrlData(d))) => {
                    url_len += d.len();
                    if url_len > max_url_data_len {
                        return Err(ParseError::new(ParseErrorKind::UrlDataTooLong, at));
                    }
                }
                Ok(Some(_)) => {}
                Err(()) => return Err(ParseError::new(ParseErrorKind::TruncatedOption, at)),
            }
        }
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// The options up to EndOfOptions or the end of the packet.
    pub fn iter(&self) -> OptionsIter<'a> {
        OptionsIter(Reader::new(self.0))
    }

    /// Total URLData length.
    pub fn url_data_len(&self) -> usize {
        self.iter()
            .map(|o| match o {
                UdpOption::UrlData(d) => d.len(),
                _ => 0,
            })
            .sum()
    }

    /// Concatenates the URLData into `out` (BEP 41); `None` if it does not fit.
    pub fn copy_url_data<'o>(&self, out: &'o mut [u8]) -> Option<&'o [u8]> {
        let mut n = 0;
        for o in self.iter() {
            if let UdpOption::UrlData(d) = o {
                out.get_mut(n..n + d.len())?.copy_from_slice(d);
                n += d.len();
            }
        }
        out.get(..n)
    }
}

/// Iterator over [`UdpOptions`].
#[derive(Clone, Debug)]
pub struct OptionsIter<'a>(Reader<'a>);

impl<'a> OptionsIter<'a> {
    /// `Ok(None)` at the end, `Err` for a truncated option.
    fn next_checked(&mut self) -> Result<Option<UdpOption<'a>>, ()> {
        let Some(kind) = self.0.u8() else {
            return Ok(None);
        };
        match kind {
            OPTION_END => {
                // BEP 41: EndOfOptions; the tracker stops processing.
                self.0.rest();
                Ok(None)
            }
            OPTION_NOP => Ok(Some(UdpOption::Nop)),
            _ => {
                let len = self.0.u8().ok_or(())?;
                let data = self.0.take(usize::from(len)).ok_or(())?;
                Ok(Some(if kind == OPTION_URL_DATA {
                    UdpOption::UrlData(data)
                } else {
                    UdpOption::Unknown { kind, data }
                }))
            }
        }
    }
}

impl<'a> Iterator for OptionsIter<'a> {
    type Item = UdpOption<'a>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_checked().ok().flatten()
    }
}

/// Writes `url` (path and query of a `udp://` announce URL) as BEP 41
/// URLData options of at most 255 bytes each.
pub fn encode_url_data(url: &[u8], out: &mut [u8]) -> Result<usize, EncodeError> {
    let mut w = Writer::new(out);
    for chunk in url.chunks(usize::from(u8::MAX)) {
        w.u8(OPTION_URL_DATA);
        w.u8(chunk.len() as u8);
        w.put(chunk);
    }
    w.finish().map_err(|needed| EncodeError { needed })
}

fn header(w: &mut Writer<'_>, cid: ConnectionId, action: Action, tid: TransactionId) {
    w.u64(cid.0);
    w.u32(action.to_u32());
    w.u32(tid.0);
}

/// Writes a scrape request for `hashes` (no limit is applied here: the
/// tracker refuses more than its own limit, usually [`super::MAX_SCRAPE_HASHES`]).
pub fn encode_scrape_request(
    connection_id: ConnectionId,
    transaction_id: TransactionId,
    hashes: &[InfoHash],
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut w = Writer::new(out);
    header(&mut w, connection_id, Action::Scrape, transaction_id);
    for h in hashes {
        w.put(h.as_bytes());
    }
    w.finish().map_err(|needed| EncodeError { needed })
}

impl<'a> Request<'a> {
    /// Parses one datagram.
    pub fn parse(bytes: &'a [u8], limits: &Limits) -> Result<Self, RequestError> {
        let mut r = Reader::new(bytes);
        let trunc = |r: &Reader<'_>| ParseError::new(ParseErrorKind::Truncated, r.pos());
        let (Some(cid), Some(action), Some(tid)) = (r.u64(), r.u32(), r.u32()) else {
            return Err(RequestError::Unsendable(ParseError::new(
                ParseErrorKind::Truncated,
                bytes.len(),
            )));
        };
        let (connection_id, transaction_id) = (ConnectionId(cid), TransactionId(tid));
        let sendable = |error| RequestError::Sendable {
            connection_id,
            transaction_id,
            error,
        };
        match Action::from_u32(action) {
            Some(Action::Connect) => {
                if cid != PROTOCOL_ID {
                    return Err(RequestError::Unsendable(ParseError::new(
                        ParseErrorKind::BadProtocolId,
                        0,
                    )));
                }
                Ok(Request::Connect(ConnectRequest { transaction_id }))
            }
            Some(Action::Announce) => {
                // Sequential reads: the first short field stops the parse, so
                // the reported offset is where the packet ran out.
                let mut fixed = || {
                    let head = (
                        r.array::<20>()?,
                        r.array::<20>()?,
                        r.u64()?,
                        r.u64()?,
                        r.u64()?,
                    );
                    let event_at = r.pos();
                    let tail = (r.u32()?, r.array::<4>()?, r.u32()?, r.i32()?, r.u16()?);
                    Some((head, event_at, tail))
                };
                let Some((
                    (info_hash, peer_id, downloaded, left, uploaded),
                    event_at,
                    (event, ip, key, num_want, port),
                )) = fixed()
                else {
                    return Err(sendable(trunc(&r)));
                };
                let event = AnnounceEvent::from_udp(event).ok_or_else(|| {
                    sendable(ParseError::new(ParseErrorKind::BadEvent(event), event_at))
                })?;
                let options =
                    UdpOptions::parse(r.rest(), ANNOUNCE_REQUEST_LEN, limits.max_url_data_len)
                        .map_err(sendable)?;
                Ok(Request::Announce(AnnounceRequest {
                    connection_id,
                    transaction_id,
                    info_hash: InfoHash(info_hash),
                    peer_id: PeerId(peer_id),
                    downloaded,
                    left,
                    uploaded,
                    event,
                    ip: Ipv4Addr::from(ip),
                    key,
                    num_want,
                    port,
                    options,
                }))
            }
            Some(Action::Scrape) => {
                let body = r.rest();
                let err = |kind, at| Err(sendable(ParseError::new(kind, at)));
                if body.is_empty() {
                    return err(ParseErrorKind::NoInfoHashes, SCRAPE_REQUEST_HEADER_LEN);
                }
                let Some(info_hashes) = InfoHashes::new(body) else {
                    let at = SCRAPE_REQUEST_HEADER_LEN + body.len() / ID_LEN * ID_LEN;
                    return err(ParseErrorKind::BadScrapeLength, at);
                };
                if info_hashes.len() > limits.max_scrape_hashes {
                    let at = SCRAPE_REQUEST_HEADER_LEN + limits.max_scrape_hashes * ID_LEN;
                    return err(ParseErrorKind::TooManyInfoHashes, at);
                }
                Ok(Request::Scrape(ScrapeRequest {
                    connection_id,
                    transaction_id,
                    info_hashes,
                }))
            }
            Some(Action::Error) | None => Err(sendable(ParseError::new(
                ParseErrorKind::BadAction(action),
                8,
            ))),
        }
    }

    /// Writes the request; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(out);
        match self {
            Request::Connect(c) => header(
                &mut w,
                ConnectionId(PROTOCOL_ID),
                Action::Connect,
                c.transaction_id,
            ),
            Request::Announce(a) => {
                header(&mut w, a.connection_id, Action::Announce, a.transaction_id);
                w.put(a.info_hash.as_bytes());
                w.put(a.peer_id.as_bytes());
                w.u64(a.downloaded);
                w.u64(a.left);
                w.u64(a.uploaded);
                w.u32(a.event.to_udp());
                w.put(&a.ip.octets());
                w.u32(a.key);
                w.i32(a.num_want);
                w.u16(a.port);
                w.put(a.options.as_bytes());
            }
            Request::Scrape(s) => {
                header(&mut w, s.connection_id, Action::Scrape, s.transaction_id);
                w.put(s.info_hashes.as_bytes());
            }
        }
        w.finish().map_err(|needed| EncodeError { needed })
    }

    /// The transaction id.
    pub fn transaction_id(&self) -> TransactionId {
        match self {
            Request::Connect(c) => c.transaction_id,
            Request::Announce(a) => a.transaction_id,
            Request::Scrape(s) => s.transaction_id,
        }
    }

    /// The connection id (`None` for a connect request).
    pub fn connection_id(&self) -> Option<ConnectionId> {
        match self {
            Request::Connect(_) => None,
            Request::Announce(a) => Some(a.connection_id),
            Request::Scrape(s) => Some(s.connection_id),
        }
    }
}

impl AnnounceRequest<'_> {
    /// Writes the request; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        Request::Announce(*self).encode(out)
    }
}

impl ConnectRequest {
    /// Writes the request; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        Request::Connect(*self).encode(out)
    }
}

#[cfg(test)]
mod tests;
