//! The tracker side of BEP 15, sans-IO: stateless connection ids and the
//! triage of one datagram.
//!
//! # Connection ids
//! BEP 15 lets a tracker hand out a connection id that the client must echo,
//! to prove it can receive at its source address (no spoofing, hence no
//! reflection). We keep no table: the id is
//!
//! ```text
//! id = tick (16 bits, big-endian) ‖ SipHash-2-4(key, tick_u64 ‖ family ‖ client IP)[..6]
//! ```
//!
//! The id is bound to the client's IP address only, not its port: BEP 15
//! only asks that the client prove it receives at its address, and clients
//! share one id across the sockets of one process (libtorrent keeps one id
//! per tracker for all its sessions; load generators use many sockets), as
//! opentracker and aquatic accept. A spoofer still cannot get an id for an
//! address it does not receive at.
//!
//! where `tick = now_secs / TICK_SECS`. Validation recomputes the MAC for
//! the tick the id names and compares in constant time. Why SipHash-2-4:
//! it is a keyed pseudo-random function made for short inputs (the 25 bytes
//! hashed here), about ten times cheaper than the two SHA-1 compressions of
//! the HMAC-SHA1 used before (2-3% of the tracker's CPU under load, since
//! every connect and every announce computes a tag); its 128-bit key is
//! taken from SHA-1 of the 32-byte secret, once per secret; a
//! 48-bit tag means a blind guess succeeds with probability 2⁻⁴⁸ per
//! datagram. (Changing the MAC invalidates ids issued by an older build
//! once; BEP 15 clients then reconnect, as after any id expiry.)
//!
//! Lifetime: BEP 15 says "Trackers should accept the connection ID until
//! two minutes after it has been send". With 15 s ticks an id is accepted
//! while its tick is at most [`MAX_AGE_TICKS`] old: always for 120 s, never
//! after 135 s. Ids from the future (tick ahead of now) are refused.
//!
//! Secrets come from the shell (the OS RNG); [`ConnectionIds::rotate`]
//! keeps the previous one so ids issued just before a rotation stay valid.
//! Rotate at most once per [`MIN_ROTATION_SECS`], or fresh ids may be refused.
//! A shell that keeps both secrets across a restart
//! ([`ConnectionIds::with_previous`]) keeps its clients' ids valid.
//!
//! # Amplification
//! [`Server::handle`] never answers a request whose connection id does not
//! validate (only a connect request, which is 16 bytes and gets 16 bytes,
//! is answered without one). A parse error gets an error reply only when
//! its connection id is valid. No reply built with this module is larger
//! than [`MAX_AMPLIFICATION`] × the request length: announce replies carry
//! at most [`max_peers_for_request`] peers (62 IPv4 or 20 IPv6 peers for a
//! plain 98-byte announce; a client wanting more can pad its request with
//! BEP 41 NOP options), error messages are truncated, and a scrape reply
//! (8 + 12n bytes for a 16 + 20n byte request) is always smaller.

use core::fmt;
use core::net::{IpAddr, SocketAddr};

use core::hash::Hasher;

use sha1::{Digest, Sha1};
use siphasher::sip::SipHasher24;

use super::request::{AnnounceRequest, Request, RequestError, ScrapeRequest};
use super::response::{encode_announce_response, ConnectResponse, ErrorResponse};
use super::{
    ConnectionId, EncodeError, Limits, ParseError, TransactionId, ANNOUNCE_RESPONSE_HEADER_LEN,
    RESPONSE_HEADER_LEN,
};
use crate::time::Instant;
use crate::tracker::AddressFamily;

/// Length of a connection-id secret.
pub const SECRET_LEN: usize = 32;

/// Granularity of the time in a connection id, in seconds.
pub const TICK_SECS: u64 = 15;

/// BEP 15: "Trackers should accept the connection ID until two minutes
/// after it has been send."
pub const CONNECTION_ID_LIFETIME_SECS: u64 = 120;

/// Oldest tick accepted: `ceil(120 / 15)`, so ids live 120 s to < 135 s.
pub const MAX_AGE_TICKS: u64 = CONNECTION_ID_LIFETIME_SECS.div_ceil(TICK_SECS);

/// Shortest safe interval between two [`ConnectionIds::rotate`] calls.
pub const MIN_ROTATION_SECS: u64 = (MAX_AGE_TICKS + 1) * TICK_SECS;

/// No reply is larger than this multiple of the request it answers.
pub const MAX_AMPLIFICATION: usize = 4;

/// Bytes of MAC in a connection id (the other 2 carry the tick).
const TAG_LEN: usize = 6;

/// A connection-id MAC: SipHash-2-4 under a key derived from one secret.
#[derive(Clone)]
struct Mac {
    k0: u64,
    k1: u64,
}

impl Mac {
    /// The 128-bit SipHash key: the first 16 bytes of SHA-1(secret), so
    /// every secret byte counts and no pattern in a secret survives into
    /// the key (hashed once per secret, never per datagram).
    fn new(secret: &[u8; SECRET_LEN]) -> Self {
        let d: [u8; 20] = Sha1::digest(secret).into();
        let word = |i: usize| {
            let mut w = [0u8; 8];
            for (o, b) in w.iter_mut().zip(d.iter().skip(i * 8)) {
                *o = *b;
            }
            u64::from_le_bytes(w)
        };
        Mac {
            k0: word(0),
            k1: word(1),
        }
    }

    /// SipHash-2-4 of `msg` (the bytes as given, no length prefix).
    fn hash(&self, msg: &[u8]) -> u64 {
        let mut h = SipHasher24::new_with_keys(self.k0, self.k1);
        h.write(msg);
        h.finish()
    }

    /// The connection-id tag: `SipHash(tick ‖ family ‖ ip)[..6]`, the
    /// address v4-mapped so both families hash the same 25 bytes.
    fn tag(&self, tick: u64, client: IpAddr) -> [u8; TAG_LEN] {
        let (family, ip) = match client {
            IpAddr::V4(a) => (4u8, a.to_ipv6_mapped().octets()),
            IpAddr::V6(a) => (6u8, a.octets()),
        };
        let mut msg = [0u8; 25];
        let (t, rest) = msg.split_at_mut(8);
        t.copy_from_slice(&tick.to_be_bytes());
        let (f, addr) = rest.split_at_mut(1);
        f.copy_from_slice(&[family]);
        addr.copy_from_slice(&ip);
        let mut tag = [0u8; TAG_LEN];
        for (t, m) in tag.iter_mut().zip(self.hash(&msg).to_be_bytes().iter()) {
            *t = *m;
        }
        tag
    }
}

/// Constant-time equality of two tags (no early exit).
fn ct_eq(a: &[u8; TAG_LEN], b: &[u8; TAG_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Issues and checks stateless connection ids (see the module docs).
#[derive(Clone)]
pub struct ConnectionIds {
    current: Mac,
    previous: Option<Mac>,
}

impl fmt::Debug for ConnectionIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConnectionIds { .. }")
    }
}

impl ConnectionIds {
    /// With a secret from the OS RNG.
    pub fn new(secret: &[u8; SECRET_LEN]) -> Self {
        ConnectionIds {
            current: Mac::new(secret),
            previous: None,
        }
    }

    /// With `current` and the `previous` secret still accepted (e.g. both
    /// restored after a restart).
    pub fn with_previous(current: &[u8; SECRET_LEN], previous: &[u8; SECRET_LEN]) -> Self {
        ConnectionIds {
            current: Mac::new(current),
            previous: Some(Mac::new(previous)),
        }
    }

    /// Makes `secret` current and keeps the current one as previous.
    pub fn rotate(&mut self, secret: &[u8; SECRET_LEN]) {
        let old = core::mem::replace(&mut self.current, Mac::new(secret));
        self.previous = Some(old);
    }

    /// The connection id for the client at IP `client` at `now`.
    pub fn issue(&self, now: Instant, client: IpAddr) -> ConnectionId {
        let tick = now.secs() / TICK_SECS;
        let mut id = [0u8; 8];
        let (t, m) = id.split_at_mut(2);
        t.copy_from_slice(&(tick as u16).to_be_bytes());
        m.copy_from_slice(&self.current.tag(tick, client));
        ConnectionId(u64::from_be_bytes(id))
    }

    /// True if `id` was issued to IP `client` (any port) by the current or
    /// previous secret, at most [`MAX_AGE_TICKS`] ticks ago and not in the
    /// future.
    pub fn validate(&self, now: Instant, client: IpAddr, id: ConnectionId) -> bool {
        let now_tick = now.secs() / TICK_SECS;
        let bytes = id.0.to_be_bytes();
        let id_tick = (id.0 >> 48) as u16;
        // Ticks wrap at 2^16 (11 days); the MAC covers the full tick, so a
        // wrapped id never validates. A future tick gives a huge age.
        let age = u64::from((now_tick as u16).wrapping_sub(id_tick));
        if age > MAX_AGE_TICKS {
            return false;
        }
        let Some(tick) = now_tick.checked_sub(age) else {
            return false;
        };
        let mut tag = [0u8; TAG_LEN];
        for (t, b) in tag.iter_mut().zip(bytes.iter().skip(2)) {
            *t = *b;
        }
        // The previous secret is tried only when the current one fails:
        // the time this takes tells only whether the id was valid, which
        // the reply tells anyway; each comparison is constant-time.
        ct_eq(&self.current.tag(tick, client), &tag)
            || self
                .previous
                .as_ref()
                .is_some_and(|p| ct_eq(&p.tag(tick, client), &tag))
    }
}

/// Why a datagram gets no reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Not a request we could answer (too short, bad protocol id).
    Malformed(ParseError),
    /// The connection id is not one we issued to this address recently.
    BadConnectionId,
    /// The caller's output buffer cannot hold the reply.
    OutputTooSmall,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::Malformed(e) => write!(f, "dropped: {e}"),
            DropReason::BadConnectionId => f.write_str("dropped: bad connection id"),
            DropReason::OutputTooSmall => f.write_str("dropped: output buffer too small"),
        }
    }
}

impl core::error::Error for DropReason {}

/// What to do with one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Send the first `n` bytes of the output buffer (a connect response).
    Connect(usize),
    /// A validated announce: look up the swarm, then reply with
    /// [`Server::announce_reply`].
    Announce(AnnounceRequest<'a>),
    /// A validated scrape: reply with
    /// [`super::encode_scrape_response`], one entry per hash in order.
    Scrape(ScrapeRequest<'a>),
    /// Send the first `n` bytes of the output buffer (an error response to
    /// a malformed request with a valid connection id).
    Error(usize),
    /// Send nothing.
    Drop(DropReason),
}

/// Swarm figures for an announce reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwarmInfo {
    /// Seconds until the next regular announce.
    pub interval: u32,
    /// Peers still downloading.
    pub leechers: u32,
    /// Peers with the whole torrent.
    pub seeders: u32,
}

/// Most peers of `family` an announce reply to a `request_len`-byte request
/// may carry under the [`MAX_AMPLIFICATION`] bound.
pub fn max_peers_for_request(request_len: usize, family: AddressFamily) -> usize {
    request_len
        .saturating_mul(MAX_AMPLIFICATION)
        .saturating_sub(ANNOUNCE_RESPONSE_HEADER_LEN)
        / family.peer_len()
}

/// Writes an error response whose message is truncated so the reply stays
/// within [`MAX_AMPLIFICATION`] × `request_len`.
pub fn error_reply(
    request_len: usize,
    transaction_id: TransactionId,
    message: &[u8],
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let room = request_len
        .saturating_mul(MAX_AMPLIFICATION)
        .saturating_sub(RESPONSE_HEADER_LEN);
    let message = message.get(..room.min(message.len())).unwrap_or_default();
    ErrorResponse {
        transaction_id,
        message,
    }
    .encode(out)
}

/// A `fmt::Write` into a fixed buffer that silently truncates.
struct Trunc<'b> {
    buf: &'b mut [u8],
    n: usize,
}

impl fmt::Write for Trunc<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if let Some(slot) = self.buf.get_mut(self.n) {
                *slot = b;
                self.n += 1;
            }
        }
        Ok(())
    }
}

/// The stateless request triage of a UDP tracker.
#[derive(Clone, Debug)]
pub struct Server {
    ids: ConnectionIds,
    limits: Limits,
}

impl Server {
    /// A server with a secret from the OS RNG and parse limits.
    pub fn new(secret: &[u8; SECRET_LEN], limits: Limits) -> Self {
        Server::with_ids(ConnectionIds::new(secret), limits)
    }

    /// A server with given connection ids (e.g. restored secrets).
    pub fn with_ids(ids: ConnectionIds, limits: Limits) -> Self {
        Server { ids, limits }
    }

    /// Rotates the connection-id secret (see [`MIN_ROTATION_SECS`]).
    pub fn rotate_secret(&mut self, secret: &[u8; SECRET_LEN]) {
        self.ids.rotate(secret);
    }

    /// The connection-id issuer/validator.
    pub fn connection_ids(&self) -> &ConnectionIds {
        &self.ids
    }

    /// The parse limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Decides what to do with `datagram` from `from` at `now`; replies are
    /// written into `out` (64 bytes always suffice for them).
    pub fn handle<'a>(
        &self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a [u8],
        out: &mut [u8],
    ) -> Decision<'a> {
        match Request::parse(datagram, &self.limits) {
            Ok(Request::Connect(c)) => {
                let resp = ConnectResponse {
                    transaction_id: c.transaction_id,
                    connection_id: self.ids.issue(now, from.ip()),
                };
                match resp.encode(out) {
                    Ok(n) => Decision::Connect(n),
                    Err(_) => Decision::Drop(DropReason::OutputTooSmall),
                }
            }
            Ok(Request::Announce(a)) if self.ids.validate(now, from.ip(), a.connection_id) => {
                Decision::Announce(a)
            }
            Ok(Request::Scrape(s)) if self.ids.validate(now, from.ip(), s.connection_id) => {
                Decision::Scrape(s)
            }
            Ok(_) => Decision::Drop(DropReason::BadConnectionId),
            Err(RequestError::Unsendable(e)) => Decision::Drop(DropReason::Malformed(e)),
            Err(RequestError::Sendable {
                connection_id,
                transaction_id,
                error,
            }) => {
                if !self.ids.validate(now, from.ip(), connection_id) {
                    return Decision::Drop(DropReason::BadConnectionId);
                }
                let mut msg = [0u8; 64];
                let mut w = Trunc {
                    buf: &mut msg,
                    n: 0,
                };
                let _ = fmt::Write::write_fmt(&mut w, format_args!("{error}"));
                let n = w.n;
                let text = msg.get(..n).unwrap_or_default();
                match error_reply(datagram.len(), transaction_id, text, out) {
                    Ok(n) => Decision::Error(n),
                    Err(_) => Decision::Drop(DropReason::OutputTooSmall),
                }
            }
        }
    }

    /// Writes the reply to a validated announce: at most
    /// `min(num_want if positive, limits.max_peers, max_peers_for_request)`
    /// peers of the family of `from` (the transport decides, BEP 15).
    pub fn announce_reply<I: IntoIterator<Item = SocketAddr>>(
        &self,
        request: &AnnounceRequest<'_>,
        request_len: usize,
        from: &SocketAddr,
        swarm: SwarmInfo,
        peers: I,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let family = AddressFamily::of(from);
        let mut max = max_peers_for_request(request_len, family).min(self.limits.max_peers);
        if let Ok(want) = usize::try_from(request.num_want) {
            // BEP 15: num_want -1 (any negative) = tracker default.
            max = max.min(want);
        }
        encode_announce_response(
            request.transaction_id,
            swarm.interval,
            swarm.leechers,
            swarm.seeders,
            peers,
            family,
            max,
            out,
        )
    }
}

#[cfg(test)]
mod tests;
