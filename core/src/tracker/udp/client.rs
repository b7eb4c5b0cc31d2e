//! A sans-IO BEP 15 client session with one tracker (quinn-proto style).
//!
//! The driver feeds inputs and drains outputs, in this order, after every
//! input (a datagram, a timer expiry, or an app call such as
//! [`Client::announce`]):
//!
//! 1. [`Client::poll_transmit`] until it returns `None`: send each datagram
//!    to the tracker;
//! 2. [`Client::poll_event`]: the result of the query, if it finished;
//! 3. [`Client::poll_timeout`]: when to call [`Client::handle_timeout`]
//!    (calling `poll_transmit` with a later `now` also handles it).
//!
//! Protocol rules (BEP 15):
//! - a query first obtains a connection id, unless one received less than
//!   [`CONNECTION_ID_LIFETIME`] ago is at hand ("A client can use a
//!   connection ID until one minute after it has received it");
//! - "If a response is not received after 15 * 2 ^ n seconds, the client
//!   should retransmit the request, where n starts at 0 and is increased up
//!   to 8 (3840 seconds) after every retransmission": after the timeout of
//!   the n = [`MAX_RETRANSMIT_EXPONENT`] attempt the query fails with
//!   [`ClientError::TimedOut`]. n restarts at 0 when a connect response
//!   arrives. A retransmission whose connection id has expired meanwhile
//!   goes back to connecting;
//! - a datagram is accepted only if its transaction id is the one of the
//!   request in flight; transaction ids come from the caller's
//!   [`TransactionIds`] (the core has no RNG).
//!
//! Limits: peers kept per announce ([`CLIENT_MAX_PEERS`], the rest are
//! counted in [`AnnounceResult::dropped`]), hashes per scrape
//! ([`MAX_SCRAPE_HASHES`]), URL data ([`CLIENT_MAX_URL_DATA`]), tracker
//! error text kept ([`MAX_ERROR_MESSAGE_LEN`]). [`TRANSMIT_BUF_LEN`] bytes
//! always suffice for `poll_transmit`.

use core::fmt;
use core::net::SocketAddr;

use super::request::{
    encode_scrape_request, encode_url_data, AnnounceRequest, ConnectRequest, UdpOptions,
};
use super::response::{Response, TorrentStats};
use super::{
    ConnectionId, Limits, ParseError, TransactionId, ANNOUNCE_REQUEST_LEN, MAX_SCRAPE_HASHES,
    SCRAPE_REQUEST_HEADER_LEN,
};
use crate::id::{InfoHash, PeerId};
use crate::time::{Duration, Instant};
use crate::tracker::{AddressFamily, AnnounceEvent};

/// BEP 15: the client may use a connection id for one minute.
pub const CONNECTION_ID_LIFETIME: Duration = Duration::from_secs(60);

/// BEP 15: first retransmit timeout, doubled after each retransmission.
pub const RETRANSMIT_BASE: Duration = Duration::from_secs(15);

/// BEP 15: n goes "up to 8 (3840 seconds)".
pub const MAX_RETRANSMIT_EXPONENT: u32 = 8;

/// Peers copied out of one announce response.
pub const CLIENT_MAX_PEERS: usize = 128;

/// Bytes of BEP 41 URL data (path and query of the `udp://` URL) sent.
pub const CLIENT_MAX_URL_DATA: usize = 512;

/// Bytes of a tracker error message kept.
pub const MAX_ERROR_MESSAGE_LEN: usize = 128;

/// A `poll_transmit` buffer of this size never runs short.
pub const TRANSMIT_BUF_LEN: usize = {
    let announce =
        ANNOUNCE_REQUEST_LEN + CLIENT_MAX_URL_DATA + 2 * CLIENT_MAX_URL_DATA.div_ceil(255);
    let scrape = SCRAPE_REQUEST_HEADER_LEN + 20 * MAX_SCRAPE_HASHES;
    if announce > scrape {
        announce
    } else {
        scrape
    }
};

/// Source of random transaction ids (the shell uses its OS RNG).
pub trait TransactionIds {
    /// A fresh, unpredictable id.
    fn next_transaction_id(&mut self) -> u32;
}

impl<F: FnMut() -> u32> TransactionIds for F {
    fn next_transaction_id(&mut self) -> u32 {
        self()
    }
}

/// Session configuration.
#[derive(Clone, Debug, Default)]
pub struct ClientConfig {
    /// Family of the tracker's address: decides the peer entry size.
    pub family: AddressFamily,
    /// BEP 41 URL data (e.g. `/announce?passkey=…`), empty for none.
    pub url_data: heapless::Vec<u8, CLIENT_MAX_URL_DATA>,
    /// Parse limits for responses.
    pub limits: Limits,
}

/// What to announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceParams {
    /// The torrent.
    pub info_hash: InfoHash,
    /// Our peer id.
    pub peer_id: PeerId,
    /// Bytes downloaded this session.
    pub downloaded: u64,
    /// Bytes left.
    pub left: u64,
    /// Bytes uploaded this session.
    pub uploaded: u64,
    /// Started, completed, stopped or none.
    pub event: AnnounceEvent,
    /// Our tracker key.
    pub key: u32,
    /// Peers wanted (-1: tracker default).
    pub num_want: i32,
    /// Our listening port.
    pub port: u16,
}

/// The outcome of an announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceResult {
    /// Seconds until the next regular announce.
    pub interval: u32,
    /// Peers still downloading.
    pub leechers: u32,
    /// Peers with the whole torrent.
    pub seeders: u32,
    /// The peers received, up to [`CLIENT_MAX_PEERS`].
    pub peers: heapless::Vec<SocketAddr, CLIENT_MAX_PEERS>,
    /// Peers received beyond [`CLIENT_MAX_PEERS`] and not kept.
    pub dropped: usize,
}

/// Why a query failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// A query is in flight or its event has not been polled yet.
    Busy,
    /// A scrape of zero hashes.
    NoInfoHashes,
    /// A scrape of more than [`MAX_SCRAPE_HASHES`].
    TooManyInfoHashes,
    /// BEP 15: no response after the n = 8 retransmission.
    TimedOut,
    /// The `poll_transmit` buffer was too small (see [`TRANSMIT_BUF_LEN`]).
    BufferTooSmall,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientError::Busy => "a tracker query is already in progress",
            ClientError::NoInfoHashes => "scrape without info-hash",
            ClientError::TooManyInfoHashes => "too many info-hashes for one scrape",
            ClientError::TimedOut => "tracker did not answer (BEP 15 retransmits exhausted)",
            ClientError::BufferTooSmall => "transmit buffer too small",
        })
    }
}

impl core::error::Error for ClientError {}

/// Why an incoming datagram was ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// It did not parse.
    Malformed(ParseError),
    /// Nothing is in flight.
    Unsolicited,
    /// Its transaction id is not the one in flight.
    WrongTransaction,
    /// Its action does not answer the request in flight (or a scrape
    /// reply's entry count differs from the request's).
    Unexpected,
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ignored::Malformed(e) => write!(f, "ignored: {e}"),
            Ignored::Unsolicited => f.write_str("ignored: no request in flight"),
            Ignored::WrongTransaction => f.write_str("ignored: wrong transaction id"),
            Ignored::Unexpected => f.write_str("ignored: unexpected response"),
        }
    }
}

impl core::error::Error for Ignored {}

/// What happened to a query.
// No heap in the core: fixed-capacity results live inline by design
// (an `Event` is about 4 KiB with `CLIENT_MAX_PEERS` = 128).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The announce succeeded.
    Announced(AnnounceResult),
    /// The scrape succeeded: one entry per requested hash, in order.
    Scraped(heapless::Vec<TorrentStats, MAX_SCRAPE_HASHES>),
    /// The tracker answered with an error message (truncated to
    /// [`MAX_ERROR_MESSAGE_LEN`]).
    TrackerError(heapless::Vec<u8, MAX_ERROR_MESSAGE_LEN>),
    /// The query failed.
    Failed(ClientError),
}

#[allow(clippy::large_enum_variant)] // inline storage, see `Event`
#[derive(Clone, Debug)]
enum Query {
    Announce(AnnounceParams),
    Scrape(heapless::Vec<InfoHash, MAX_SCRAPE_HASHES>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Requesting(ConnectionId),
}

#[derive(Clone, Debug)]
struct Pending {
    query: Query,
    phase: Phase,
    tid: TransactionId,
    /// BEP 15's n.
    attempt: u32,
    /// Set once sent: when to retransmit.
    deadline: Option<Instant>,
}

/// A client session with one tracker.
#[derive(Debug)]
pub struct Client<T: TransactionIds> {
    config: ClientConfig,
    tids: T,
    /// The connection id and when it was received.
    conn: Option<(ConnectionId, Instant)>,
    pending: Option<Pending>,
    event: Option<Event>,
}

impl<T: TransactionIds> Client<T> {
    /// A session with no connection id yet.
    pub fn new(config: ClientConfig, tids: T) -> Self {
        Client {
            config,
            tids,
            conn: None,
            pending: None,
            event: None,
        }
    }

    /// The connection id, if one is usable at `now`.
    pub fn connection_id(&self, now: Instant) -> Option<ConnectionId> {
        self.conn
            .filter(|&(_, at)| now < at + CONNECTION_ID_LIFETIME)
            .map(|(id, _)| id)
    }

    /// True when no query is in flight.
    pub fn is_idle(&self) -> bool {
        self.pending.is_none()
    }

    fn start(&mut self, now: Instant, query: Query) {
        let phase = match self.connection_id(now) {
            Some(id) => Phase::Requesting(id),
            None => Phase::Connecting,
        };
        self.pending = Some(Pending {
            query,
            phase,
            tid: TransactionId(self.tids.next_transaction_id()),
            attempt: 0,
            deadline: None,
        });
    }

    fn check_idle(&self) -> Result<(), ClientError> {
        if self.pending.is_some() || self.event.is_some() {
            Err(ClientError::Busy)
        } else {
            Ok(())
        }
    }

    /// Starts an announce.
    pub fn announce(&mut self, now: Instant, params: AnnounceParams) -> Result<(), ClientError> {
        self.check_idle()?;
        self.start(now, Query::Announce(params));
        Ok(())
    }

    /// Starts a scrape of 1 to [`MAX_SCRAPE_HASHES`] torrents.
    pub fn scrape(&mut self, now: Instant, hashes: &[InfoHash]) -> Result<(), ClientError> {
        self.check_idle()?;
        if hashes.is_empty() {
            return Err(ClientError::NoInfoHashes);
        }
        let v = heapless::Vec::from_slice(hashes).map_err(|_| ClientError::TooManyInfoHashes)?;
        self.start(now, Query::Scrape(v));
        Ok(())
    }

    /// Abandons the query in flight, if any (no event is produced).
    pub fn cancel(&mut self) {
        self.pending = None;
    }

    fn finish(&mut self, event: Event) {
        self.pending = None;
        self.event = Some(event);
    }

    /// Feeds a datagram received from the tracker.
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) -> Result<(), Ignored> {
        let resp = Response::parse(bytes, self.config.family, &self.config.limits)
            .map_err(Ignored::Malformed)?;
        let Some(p) = self.pending.as_mut() else {
            return Err(Ignored::Unsolicited);
        };
        if resp.transaction_id() != p.tid {
            return Err(Ignored::WrongTransaction);
        }
        match (resp, p.phase, &p.query) {
            (Response::Error(e), _, _) => {
                let mut msg = heapless::Vec::new();
                for &b in e.message.iter().take(MAX_ERROR_MESSAGE_LEN) {
                    let _ = msg.push(b);
                }
                self.finish(Event::TrackerError(msg));
            }
            (Response::Connect(c), Phase::Connecting, _) => {
                self.conn = Some((c.connection_id, now));
                p.phase = Phase::Requesting(c.connection_id);
                p.tid = TransactionId(self.tids.next_transaction_id());
                p.attempt = 0;
                p.deadline = None;
            }
            (Response::Announce(a), Phase::Requesting(_), Query::Announce(_)) => {
                let mut peers = heapless::Vec::new();
                let mut dropped = 0;
                for peer in a.peers.iter() {
                    if peers.push(peer).is_err() {
                        dropped += 1;
                    }
                }
                self.finish(Event::Announced(AnnounceResult {
                    interval: a.interval,
                    leechers: a.leechers,
                    seeders: a.seeders,
                    peers,
                    dropped,
                }));
            }
            (Response::Scrape(s), Phase::Requesting(_), Query::Scrape(hashes)) => {
                if s.stats.len() != hashes.len() {
                    return Err(Ignored::Unexpected);
                }
                let mut stats = heapless::Vec::new();
                for st in s.stats.iter() {
                    let _ = stats.push(st);
                }
                self.finish(Event::Scraped(stats));
            }
            _ => return Err(Ignored::Unexpected),
        }
        Ok(())
    }

    /// Handles the retransmit timer at `now` (harmless to call early).
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        let Some(deadline) = p.deadline else { return };
        if now < deadline {
            return;
        }
        if p.attempt >= MAX_RETRANSMIT_EXPONENT {
            self.finish(Event::Failed(ClientError::TimedOut));
            return;
        }
        p.attempt += 1;
        p.deadline = None;
    }

    /// When [`Client::handle_timeout`] must be called (`None`: no timer).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.as_ref().and_then(|p| p.deadline)
    }

    /// Writes the next datagram for the tracker into `buf`; returns its
    /// length, or `None` if there is nothing to send.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.handle_timeout(now);
        let conn_ok = self.connection_id(now).is_some();
        let p = self.pending.as_mut()?;
        if p.deadline.is_some() {
            return None;
        }
        if matches!(p.phase, Phase::Requesting(_)) && !conn_ok {
            // BEP 15: "it is necessary to rerequest a connection ID when it
            // has expired".
            p.phase = Phase::Connecting;
            p.tid = TransactionId(self.tids.next_transaction_id());
        }
        let written = match (p.phase, &p.query) {
            (Phase::Connecting, _) => ConnectRequest {
                transaction_id: p.tid,
            }
            .encode(buf),
            (Phase::Requesting(cid), Query::Announce(a)) => AnnounceRequest {
                connection_id: cid,
                transaction_id: p.tid,
                info_hash: a.info_hash,
                peer_id: a.peer_id,
                downloaded: a.downloaded,
                left: a.left,
                uploaded: a.uploaded,
                event: a.event,
                ip: core::net::Ipv4Addr::UNSPECIFIED,
                key: a.key,
                num_want: a.num_want,
                port: a.port,
                options: UdpOptions::EMPTY,
            }
            .encode(buf)
            .and_then(|n| {
                let rest = buf.get_mut(n..).unwrap_or_default();
                encode_url_data(&self.config.url_data, rest).map(|m| n + m)
            }),
            (Phase::Requesting(cid), Query::Scrape(h)) => encode_scrape_request(cid, p.tid, h, buf),
        };
        match written {
            Ok(n) => {
                let backoff = RETRANSMIT_BASE.millis() << p.attempt.min(MAX_RETRANSMIT_EXPONENT);
                p.deadline = Some(now + Duration::from_millis(backoff));
                Some(n)
            }
            Err(_) => {
                self.finish(Event::Failed(ClientError::BufferTooSmall));
                None
            }
        }
    }

    /// The result of the last query, once.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.event.take()
    }
}

#[cfg(test)]
mod tests;
