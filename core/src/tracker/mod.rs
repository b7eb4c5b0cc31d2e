//! Tracker protocols: how a peer learns about other peers of a swarm.
//!
//! - [`udp`]: the UDP tracker protocol (BEP 15, with BEP 41 options): wire
//!   codec, stateless server-side connection ids and request triage, and a
//!   sans-IO client session with the BEP 15 retransmit schedule.
//! - [`http`]: the HTTP tracker protocol (BEP 3, compact peers BEP 23, IPv6
//!   peers BEP 7, scrape BEP 48): query strings both ways and bencoded
//!   responses both ways.
//! - [`announce`]: the announce schedule of one torrent over its trackers
//!   (BEP 12 tiers, intervals, backoff, the started → completed → stopped
//!   events).
//! - [`journal`]: the tracker's change journal (absolute records of
//!   peers and completed counts) for a persistence writer.
//! - [`url`]: tracker URLs (`udp://`, `http://`, `https://`) parsed and
//!   checked, with a typed error for each slip.
//!
//! Nothing here opens a socket or reads a clock; limits are named constants
//! or parameters and every refusal is a typed error.

use core::fmt;

pub mod announce;
pub mod http;
pub mod journal;
pub mod udp;
pub mod url;

#[doc(hidden)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
pub mod fuzzing;

/// The `event` of an announce (BEP 3; numeric codes from BEP 15).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AnnounceEvent {
    /// A regular, periodic announce (UDP 0; HTTP: parameter absent or empty).
    #[default]
    None,
    /// The download completed (UDP 1, HTTP `completed`).
    Completed,
    /// The first announce of a session (UDP 2, HTTP `started`).
    Started,
    /// The peer leaves the swarm (UDP 3, HTTP `stopped`).
    Stopped,
}

impl AnnounceEvent {
    /// BEP 15: `0: none; 1: completed; 2: started; 3: stopped`.
    pub fn from_udp(code: u32) -> Option<Self> {
        match code {
            0 => Some(AnnounceEvent::None),
            1 => Some(AnnounceEvent::Completed),
            2 => Some(AnnounceEvent::Started),
            3 => Some(AnnounceEvent::Stopped),
            _ => None,
        }
    }

    /// The BEP 15 code.
    pub fn to_udp(self) -> u32 {
        match self {
            AnnounceEvent::None => 0,
            AnnounceEvent::Completed => 1,
            AnnounceEvent::Started => 2,
            AnnounceEvent::Stopped => 3,
        }
    }

    /// The BEP 3 query value (`""` for [`AnnounceEvent::None`], which is sent
    /// by leaving the parameter out).
    pub fn as_http_str(self) -> &'static str {
        match self {
            AnnounceEvent::None => "",
            AnnounceEvent::Completed => "completed",
            AnnounceEvent::Started => "started",
            AnnounceEvent::Stopped => "stopped",
        }
    }

    /// Parses a BEP 3 query value (`empty` is accepted as an alias of none,
    /// as some clients send it).
    pub fn from_http(v: &[u8]) -> Option<Self> {
        match v {
            b"" | b"empty" => Some(AnnounceEvent::None),
            b"completed" => Some(AnnounceEvent::Completed),
            b"started" => Some(AnnounceEvent::Started),
            b"stopped" => Some(AnnounceEvent::Stopped),
            _ => None,
        }
    }
}

impl fmt::Display for AnnounceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnnounceEvent::None => f.write_str("none"),
            other => f.write_str(other.as_http_str()),
        }
    }
}

/// Which address family a compact peer list holds: 6-byte IPv4 entries or
/// 18-byte IPv6 entries (BEP 15 "IPv6": decided by the transport, not by a
/// field of the message).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    /// 4-byte address + 2-byte port.
    #[default]
    V4,
    /// 16-byte address + 2-byte port.
    V6,
}

impl AddressFamily {
    /// Bytes per compact peer entry (6 or 18).
    pub const fn peer_len(self) -> usize {
        match self {
            AddressFamily::V4 => 6,
            AddressFamily::V6 => 18,
        }
    }

    /// The family of an address.
    pub fn of(addr: &core::net::SocketAddr) -> Self {
        match addr {
            core::net::SocketAddr::V4(_) => AddressFamily::V4,
            core::net::SocketAddr::V6(_) => AddressFamily::V6,
        }
    }
}

/// Iterates the `SocketAddr`s of a compact peer list (BEP 23 / BEP 7 /
/// BEP 15 layout: big-endian address then big-endian port). A trailing
/// partial entry is never yielded; constructors check the length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactPeers<'a> {
    bytes: &'a [u8],
    family: AddressFamily,
}

impl<'a> CompactPeers<'a> {
    /// A view of `bytes`, which must be a whole number of entries.
    pub fn new(bytes: &'a [u8], family: AddressFamily) -> Option<Self> {
        (bytes.len() % family.peer_len() == 0).then_some(CompactPeers { bytes, family })
    }

    /// An empty list.
    pub const fn empty(family: AddressFamily) -> Self {
        CompactPeers { bytes: &[], family }
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The address family.
    pub fn family(&self) -> AddressFamily {
        self.family
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.family.peer_len()
    }

    /// True if there are no peers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The peers.
    pub fn iter(&self) -> CompactPeersIter<'a> {
        CompactPeersIter {
            chunks: self.bytes.chunks_exact(self.family.peer_len()),
        }
    }
}

impl<'a> IntoIterator for CompactPeers<'a> {
    type Item = core::net::SocketAddr;
    type IntoIter = CompactPeersIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over [`CompactPeers`].
#[derive(Clone, Debug)]
pub struct CompactPeersIter<'a> {
    chunks: core::slice::ChunksExact<'a, u8>,
}

impl Iterator for CompactPeersIter<'_> {
    type Item = core::net::SocketAddr;

    fn next(&mut self) -> Option<Self::Item> {
        use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
        let c = self.chunks.next()?;
        match c.len() {
            6 => {
                let ip: [u8; 4] = c.get(..4)?.try_into().ok()?;
                let port: [u8; 2] = c.get(4..6)?.try_into().ok()?;
                Some(SocketAddr::from((
                    Ipv4Addr::from(ip),
                    u16::from_be_bytes(port),
                )))
            }
            _ => {
                let ip: [u8; 16] = c.get(..16)?.try_into().ok()?;
                let port: [u8; 2] = c.get(16..18)?.try_into().ok()?;
                Some(SocketAddr::from((
                    Ipv6Addr::from(ip),
                    u16::from_be_bytes(port),
                )))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

/// Writes `addr` in compact form into `out` if it has the wanted family and
/// `out` has room; returns the bytes written (0 for another family).
pub(crate) fn write_compact_peer(
    addr: &core::net::SocketAddr,
    family: AddressFamily,
    out: &mut [u8],
) -> Option<usize> {
    match (addr, family) {
        (core::net::SocketAddr::V4(a), AddressFamily::V4) => {
            let dst = out.get_mut(..6)?;
            let (ip, port) = dst.split_at_mut(4);
            ip.copy_from_slice(&a.ip().octets());
            port.copy_from_slice(&a.port().to_be_bytes());
            Some(6)
        }
        (core::net::SocketAddr::V6(a), AddressFamily::V6) => {
            let dst = out.get_mut(..18)?;
            let (ip, port) = dst.split_at_mut(16);
            ip.copy_from_slice(&a.ip().octets());
            port.copy_from_slice(&a.port().to_be_bytes());
            Some(18)
        }
        _ => Some(0),
    }
}
