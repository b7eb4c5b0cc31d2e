//! The UDP tracker protocol (BEP 15), with BEP 41 announce options.
//!
//! - [`request`] and [`response`]: the wire codec. Parsing is zero-copy
//!   (scrape hashes, peer lists, error messages and option bytes are borrowed
//!   from the datagram) and total: every read goes through a bounds-checked
//!   cursor, so no input can make it panic. Encoders write into a caller's
//!   `&mut [u8]` and return the length.
//! - [`server`]: stateless, unguessable connection ids (a keyed SipHash-2-4 of
//!   the client address and a coarse time) and the triage of one datagram
//!   into "reply", "process" or "drop", with an amplification bound.
//! - [`client`]: a sans-IO client session (connect, then announce or scrape;
//!   connection-id reuse; BEP 15 retransmits at 15·2ⁿ s).
//!
//! # Limits and refusals
//! [`Limits`] bounds what a parser accepts: scrape hashes per request
//! ([`MAX_SCRAPE_HASHES`], BEP 15: "up to about 74 torrents can be scraped
//! at once"), total BEP 41 URL data ([`MAX_URL_DATA_LEN`]) and peers per
//! announce response ([`MAX_PEERS`]). Refused: packets shorter than their
//! fixed layout, a connect request without the BEP 15 protocol id, unknown
//! actions and events, scrape bodies that are not a whole number of hashes,
//! peer lists and scrape replies that are not a whole number of entries,
//! truncated BEP 41 options. Bytes after a connect request or a connect
//! response are ignored (BEP 15: "Clients and trackers should not assume
//! packets to be of a certain size"); bytes after an announce request's
//! fixed part are BEP 41 options, and those after an EndOfOptions option
//! are ignored. Unknown option types are skipped by their length byte.

use core::fmt;

pub mod client;
pub mod request;
pub mod response;
pub mod server;

pub use request::{
    encode_scrape_request, encode_url_data, AnnounceRequest, ConnectRequest, InfoHashes,
    OptionsIter, Request, RequestError, ScrapeRequest, UdpOption, UdpOptions,
};
pub use response::{
    encode_announce_response, encode_scrape_response, AnnounceResponse, ConnectResponse,
    ErrorResponse, Response, ScrapeResponse, ScrapeStats, TorrentStats,
};

/// BEP 15: the magic `protocol_id` of a connect request, `0x41727101980`.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;

/// BEP 15: "up to about 74 torrents can be scraped at once" (a 1500-byte
/// Ethernet MTU fits 74 × 20-byte hashes after the headers).
pub const MAX_SCRAPE_HASHES: usize = 74;

/// Default bound on the concatenated BEP 41 URLData of one announce.
pub const MAX_URL_DATA_LEN: usize = 1024;

/// Default bound on peers accepted in one announce response: a reply
/// filling a 64 KiB datagram with IPv4 peers would hold ~10 900; real
/// trackers send at most a few hundred.
pub const MAX_PEERS: usize = 1000;

/// Length of a connect request and of a connect response.
pub const CONNECT_LEN: usize = 16;
/// Length of an announce request without BEP 41 options.
pub const ANNOUNCE_REQUEST_LEN: usize = 98;
/// Length of an announce response before its peer list.
pub const ANNOUNCE_RESPONSE_HEADER_LEN: usize = 20;
/// Length of a scrape request before its hashes.
pub const SCRAPE_REQUEST_HEADER_LEN: usize = 16;
/// Length of a scrape or error response before its body.
pub const RESPONSE_HEADER_LEN: usize = 8;
/// Bytes per torrent in a scrape response (seeders, completed, leechers).
pub const SCRAPE_STATS_LEN: usize = 12;

/// What a parser accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most info-hashes in a scrape request / entries in a scrape response.
    pub max_scrape_hashes: usize,
    /// Most bytes of BEP 41 URLData, summed over all options of a request.
    pub max_url_data_len: usize,
    /// Most peers in an announce response.
    pub max_peers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_scrape_hashes: MAX_SCRAPE_HASHES,
            max_url_data_len: MAX_URL_DATA_LEN,
            max_peers: MAX_PEERS,
        }
    }
}

/// BEP 15 connection id: issued by the tracker, echoed by the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// BEP 15 transaction id: chosen at random by the client, echoed by the
/// tracker, so that a reply can be matched to its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(pub u32);

/// BEP 15 `action` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// 0.
    Connect,
    /// 1.
    Announce,
    /// 2.
    Scrape,
    /// 3 (responses only).
    Error,
}

impl Action {
    /// From the wire value.
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Action::Connect),
            1 => Some(Action::Announce),
            2 => Some(Action::Scrape),
            3 => Some(Action::Error),
            _ => None,
        }
    }

    /// The wire value.
    pub fn to_u32(self) -> u32 {
        match self {
            Action::Connect => 0,
            Action::Announce => 1,
            Action::Scrape => 2,
            Action::Error => 3,
        }
    }
}

/// What was wrong with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// Shorter than its fixed layout.
    Truncated,
    /// A connect request whose first 8 bytes are not [`PROTOCOL_ID`].
    BadProtocolId,
    /// An action this side does not accept (e.g. "error" in a request).
    BadAction(u32),
    /// An announce `event` outside 0..=3.
    BadEvent(u32),
    /// Scrape body not a whole number of 20-byte hashes, or scrape reply not
    /// a whole number of 12-byte entries.
    BadScrapeLength,
    /// A scrape request with no info-hash.
    NoInfoHashes,
    /// More scrape hashes / entries than [`Limits::max_scrape_hashes`].
    TooManyInfoHashes,
    /// A BEP 41 option whose length byte or data is cut off.
    TruncatedOption,
    /// BEP 41 URLData beyond [`Limits::max_url_data_len`].
    UrlDataTooLong,
    /// Peer list not a whole number of 6- (IPv4) or 18-byte (IPv6) entries.
    BadPeerListLength,
    /// More peers than [`Limits::max_peers`].
    TooManyPeers,
}

/// A parse error: what, and the byte offset where it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// What was wrong.
    pub kind: ParseErrorKind,
    /// Offset into the datagram.
    pub offset: usize,
}

impl ParseError {
    pub(crate) fn new(kind: ParseErrorKind, offset: usize) -> Self {
        ParseError { kind, offset }
    }
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseErrorKind::Truncated => f.write_str("packet truncated"),
            ParseErrorKind::BadProtocolId => f.write_str("bad protocol id"),
            ParseErrorKind::BadAction(a) => write!(f, "unexpected action {a}"),
            ParseErrorKind::BadEvent(e) => write!(f, "unknown event {e}"),
            ParseErrorKind::BadScrapeLength => f.write_str("scrape body has a partial entry"),
            ParseErrorKind::NoInfoHashes => f.write_str("scrape request without info-hash"),
            ParseErrorKind::TooManyInfoHashes => f.write_str("too many info-hashes"),
            ParseErrorKind::TruncatedOption => f.write_str("truncated option"),
            ParseErrorKind::UrlDataTooLong => f.write_str("URL data too long"),
            ParseErrorKind::BadPeerListLength => f.write_str("peer list has a partial entry"),
            ParseErrorKind::TooManyPeers => f.write_str("too many peers"),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "udp tracker: {} at byte {}", self.kind, self.offset)
    }
}

impl core::error::Error for ParseError {}

/// The output buffer is too small; `needed` bytes would have been written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeError {
    /// Bytes the whole message needs.
    pub needed: usize,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "udp tracker: output buffer too small ({} bytes needed)",
            self.needed
        )
    }
}

impl core::error::Error for EncodeError {}
