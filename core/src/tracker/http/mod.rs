//! The HTTP tracker protocol: BEP 3 announce, BEP 23 compact peers, BEP 7
//! IPv6 peers (`peers6`), BEP 48 scrape.
//!
//! - [`query`]: build announce and scrape query strings (client side) into
//!   any `core::fmt::Write` or a byte buffer, binary ids percent-encoded with
//!   [`crate::percent::Encoded`]; parse them (tracker side) into fixed-size
//!   values, with typed errors naming the bad parameter.
//! - [`response`]: encode announce and scrape responses with the core's
//!   bencode [`Encoder`](crate::bencode::Encoder) (canonical, sorted keys)
//!   and decode them with [`crate::bencode::decode`] in lenient mode
//!   (real trackers do not always sort keys), borrowing from the input.
//!
//! # Limits and refusals
//! Queries longer than [`query::MAX_QUERY_LEN`] are refused; `info_hash` and
//! `peer_id` must decode to exactly 20 bytes; numbers are unsigned decimal
//! fitting their type; `key` is at most [`query::MAX_KEY_LEN`] bytes; a
//! required parameter may not repeat; a scrape query carries at most as many
//! `info_hash`es as the caller's buffer holds. The `ip`/`ipv4`/`ipv6`
//! parameters are ignored: a tracker should use the connection's address.
//! Response decoding is bounded by the caller's token array.

pub mod query;
pub mod response;

pub use query::{
    parse_announce_query, parse_scrape_query, query_separator, scrape_url, write_scrape_query,
    AnnounceQuery, Key, Param, QueryError, QueryErrorKind,
};
pub use response::{
    compact_peers, encode_announce_response, encode_failure, encode_scrape_response,
    AnnounceResponse, EncodeError, Peers, ResponseError, ResponseErrorKind, ScrapeResponse,
};
