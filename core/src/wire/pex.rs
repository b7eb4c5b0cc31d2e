//! BEP 11 peer exchange (`ut_pex`): the message codec and the rules for
//! sending and receiving it, per peer connection ([`PexPeer`]).
//!
//! A message is the payload of a BEP 10 extended message: a bencoded dict
//! of byte strings, each a list of compact peers — `added` / `dropped`
//! (IPv4: 4-byte address + 2-byte port), `added6` / `dropped6` (IPv6: 16 +
//! 2 bytes) — and `added.f` / `added6.f`, one flag byte per added peer
//! ([`PexFlags`]). Absent keys are empty lists. [`PexMessage`] is a
//! zero-copy view of those strings.
//!
//! # Limits and refusals
//! - decoding reads at most [`MAX_PEX_TOKENS`] bencode values (lenient key
//!   order; repeated keys: the first counts; unknown keys ignored) and keeps
//!   at most [`PexLimits::max_added`] added and [`PexLimits::max_dropped`]
//!   dropped peers (IPv4 first), reporting what it left out in [`Cut`];
//! - a peer list that is not a string, or whose length is not a multiple of
//!   the entry size, is refused ([`PexError`], with the field and offset);
//!   flags whose length is not one per added peer are ignored (as
//!   libtorrent does) and reported in [`Cut::flags_ignored`];
//! - encoding writes at most [`MAX_PEX_ADDED`] added and [`MAX_PEX_DROPPED`]
//!   dropped peers ([`encode_update`] says how many it took);
//! - [`PexPeer`]: at most one message a [`PEX_INTERVAL`] to a peer; a
//!   peer's messages closer than [`MIN_RECEIVE_INTERVAL`] are refused;
//!   nothing at all for private torrents (BEP 27); learned peers exclude
//!   what the caller's predicate says (our own addresses, peers we are
//!   connected to) and unusable addresses (port 0, unspecified, multicast,
//!   broadcast).

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::bencode::{
    self, decode, DecodeOptions, EncodeError, Encoder, SliceWriter, SliceWriterFull, Token,
};
use crate::time::{Duration, Instant};

/// Added peers per message: "no more than 50 added peers" in total over
/// `added` and `added6` (the µTorrent/Azureus PEX convention BEP 11 follows).
pub const MAX_PEX_ADDED: usize = 50;

/// Dropped peers per message (same convention).
pub const MAX_PEX_DROPPED: usize = 50;

/// At most one PEX message a minute to a peer.
pub const PEX_INTERVAL: Duration = Duration::from_secs(60);

/// A peer's PEX messages closer together than this are refused (the
/// convention asks for tolerance to senders "just under a minute").
pub const MIN_RECEIVE_INTERVAL: Duration = Duration::from_secs(45);

/// Token budget of [`PexMessage::decode`] (a full message needs 13).
pub const MAX_PEX_TOKENS: usize = 32;

/// Bytes of a compact IPv4 peer.
pub const V4_LEN: usize = 6;
/// Bytes of a compact IPv6 peer.
pub const V6_LEN: usize = 18;

/// BEP 11 flag byte of an added peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PexFlags(pub u8);

impl PexFlags {
    /// 0x01: prefers encryption.
    pub const ENCRYPTION: u8 = 0x01;
    /// 0x02: seed / upload only.
    pub const SEED: u8 = 0x02;
    /// 0x04: supports uTP.
    pub const UTP: u8 = 0x04;
    /// 0x08: supports `ut_holepunch`.
    pub const HOLEPUNCH: u8 = 0x08;
    /// 0x10: reachable (we connected to it).
    pub const REACHABLE: u8 = 0x10;

    /// True if every bit of `flag` is set.
    pub fn has(self, flag: u8) -> bool {
        self.0 & flag == flag
    }
}

/// Which key of a `ut_pex` dict was malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `added`.
    Added,
    /// `added.f`.
    AddedF,
    /// `added6`.
    Added6,
    /// `added6.f`.
    Added6F,
    /// `dropped`.
    Dropped,
    /// `dropped6`.
    Dropped6,
}

/// Why a `ut_pex` message was refused or could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PexError {
    /// The payload is not valid bencode (or exceeds the token budget).
    Bencode(bencode::Error),
    /// The payload is not a dictionary.
    NotADict,
    /// A known key whose value is not a byte string.
    NotAString {
        /// Which key.
        field: Field,
        /// Offset of its value.
        offset: usize,
    },
    /// A peer list whose length is not a multiple of the entry size (or,
    /// encoding, flags that are not one per peer).
    BadLength {
        /// Which key.
        field: Field,
        /// Its length.
        len: usize,
        /// Offset of its value (0 when encoding).
        offset: usize,
    },
    /// Encoding: more than [`MAX_PEX_ADDED`] / [`MAX_PEX_DROPPED`] peers.
    TooMany(Field),
    /// Encoding: the output buffer is full.
    BufferTooSmall,
}

impl fmt::Display for PexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PexError::Bencode(e) => write!(f, "ut_pex: {e}"),
            PexError::NotADict => f.write_str("ut_pex: not a dictionary"),
            PexError::NotAString { field, offset } => {
                write!(f, "ut_pex: {field:?} at byte {offset} is not a string")
            }
            PexError::BadLength { field, len, offset } => {
                write!(
                    f,
                    "ut_pex: {field:?} at byte {offset} has a bad length {len}"
                )
            }
            PexError::TooMany(k) => write!(f, "ut_pex: too many peers in {k:?}"),
            PexError::BufferTooSmall => f.write_str("ut_pex: output buffer too small"),
        }
    }
}

impl core::error::Error for PexError {}

/// How much of a message [`PexMessage::decode`] keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PexLimits {
    /// Added peers kept, IPv4 first.
    pub max_added: usize,
    /// Dropped peers kept, IPv4 first.
    pub max_dropped: usize,
}

impl Default for PexLimits {
    fn default() -> Self {
        PexLimits {
            max_added: MAX_PEX_ADDED,
            max_dropped: MAX_PEX_DROPPED,
        }
    }
}

/// What [`PexMessage::decode`] left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cut {
    /// Added peers beyond [`PexLimits::max_added`].
    pub added: usize,
    /// Dropped peers beyond [`PexLimits::max_dropped`].
    pub dropped: usize,
    /// `added.f` or `added6.f` had the wrong length and were ignored.
    pub flags_ignored: bool,
}

/// A `ut_pex` message: compact peer lists borrowed from the payload.
/// Every list's length is a multiple of its entry size; flags are empty or
/// one byte per added peer of their family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PexMessage<'a> {
    /// `added`: compact IPv4 peers.
    pub added: &'a [u8],
    /// `added.f`: one [`PexFlags`] byte per `added` peer, or empty.
    pub added_f: &'a [u8],
    /// `added6`: compact IPv6 peers.
    pub added6: &'a [u8],
    /// `added6.f`: one flag byte per `added6` peer, or empty.
    pub added6_f: &'a [u8],
    /// `dropped`: compact IPv4 peers.
    pub dropped: &'a [u8],
    /// `dropped6`: compact IPv6 peers.
    pub dropped6: &'a [u8],
}

fn v4(b: &[u8]) -> Option<SocketAddr> {
    let [a, b2, c, d, p0, p1] = *b else {
        return None;
    };
    Some(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(a, b2, c, d),
        u16::from_be_bytes([p0, p1]),
    )))
}

fn v6(b: &[u8]) -> Option<SocketAddr> {
    let (ip, port) = b.split_first_chunk::<16>()?;
    let port: [u8; 2] = port.try_into().ok()?;
    Some(SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::from(*ip),
        u16::from_be_bytes(port),
        0,
        0,
    )))
}

/// Takes at most `keep` whole entries of `size` from `list`; returns them
/// and how many were left out.
fn keep_first(list: &[u8], size: usize, keep: usize) -> (&[u8], usize) {
    let n = list.len() / size;
    let k = n.min(keep);
    (list.get(..k * size).unwrap_or_default(), n - k)
}

impl<'a> PexMessage<'a> {
    /// Decodes a `ut_pex` payload with a stack token array of
    /// [`MAX_PEX_TOKENS`], keeping what `limits` allows.
    pub fn decode(payload: &'a [u8], limits: PexLimits) -> Result<(Self, Cut), PexError> {
        let mut tokens = [Token::EMPTY; MAX_PEX_TOKENS];
        let doc =
            decode(payload, &mut tokens, DecodeOptions::lenient()).map_err(PexError::Bencode)?;
        let root = doc.root().ok_or(PexError::NotADict)?;
        let entries = root.as_dict().ok_or(PexError::NotADict)?;
        let mut seen = [false; 6];
        let mut m = PexMessage::default();
        for (key, value) in entries {
            let (field, size) = match key {
                b"added" => (Field::Added, V4_LEN),
                b"added.f" => (Field::AddedF, 1),
                b"added6" => (Field::Added6, V6_LEN),
                b"added6.f" => (Field::Added6F, 1),
                b"dropped" => (Field::Dropped, V4_LEN),
                b"dropped6" => (Field::Dropped6, V6_LEN),
                _ => continue, // unknown keys are ignored
            };
            match seen.get_mut(field as usize) {
                Some(s) if !*s => *s = true,
                _ => continue, // a repeated key: the first counts
            }
            let offset = value.offset();
            let b = value
                .as_bytes()
                .ok_or(PexError::NotAString { field, offset })?;
            if b.len() % size != 0 {
                return Err(PexError::BadLength {
                    field,
                    len: b.len(),
                    offset,
                });
            }
            *match field {
                Field::Added => &mut m.added,
                Field::AddedF => &mut m.added_f,
                Field::Added6 => &mut m.added6,
                Field::Added6F => &mut m.added6_f,
                Field::Dropped => &mut m.dropped,
                Field::Dropped6 => &mut m.dropped6,
            } = b;
        }
        let mut cut = Cut::default();
        // libtorrent too uses flags only when there is one per peer.
        if !m.added_f.is_empty() && m.added_f.len() != m.added.len() / V4_LEN {
            m.added_f = &[];
            cut.flags_ignored = true;
        }
        if !m.added6_f.is_empty() && m.added6_f.len() != m.added6.len() / V6_LEN {
            m.added6_f = &[];
            cut.flags_ignored = true;
        }
        let (added, c4) = keep_first(m.added, V4_LEN, limits.max_added);
        let left = limits.max_added - added.len() / V4_LEN;
        let (added6, c6) = keep_first(m.added6, V6_LEN, left);
        cut.added = c4 + c6;
        m.added_f = m.added_f.get(..added.len() / V4_LEN).unwrap_or(m.added_f);
        m.added6_f = m
            .added6_f
            .get(..added6.len() / V6_LEN)
            .unwrap_or(m.added6_f);
        m.added = added;
        m.added6 = added6;
        let (dropped, d4) = keep_first(m.dropped, V4_LEN, limits.max_dropped);
        let left = limits.max_dropped - dropped.len() / V4_LEN;
        let (dropped6, d6) = keep_first(m.dropped6, V6_LEN, left);
        cut.dropped = d4 + d6;
        m.dropped = dropped;
        m.dropped6 = dropped6;
        Ok((m, cut))
    }

    /// Number of added peers (both families).
    pub fn added_len(&self) -> usize {
        self.added.len() / V4_LEN + self.added6.len() / V6_LEN
    }

    /// Number of dropped peers (both families).
    pub fn dropped_len(&self) -> usize {
        self.dropped.len() / V4_LEN + self.dropped6.len() / V6_LEN
    }

    /// The added peers with their flags (0 when the message has none),
    /// IPv4 first.
    pub fn added_peers(&self) -> impl Iterator<Item = (SocketAddr, PexFlags)> + 'a {
        let flag = |f: &'a [u8], i: usize| PexFlags(f.get(i).copied().unwrap_or(0));
        let (f4, f6) = (self.added_f, self.added6_f);
        let a4 = self.added.chunks_exact(V4_LEN).enumerate();
        let a6 = self.added6.chunks_exact(V6_LEN).enumerate();
        a4.filter_map(move |(i, b)| Some((v4(b)?, flag(f4, i))))
            .chain(a6.filter_map(move |(i, b)| Some((v6(b)?, flag(f6, i)))))
    }

    /// The dropped peers, IPv4 first.
    pub fn dropped_peers(&self) -> impl Iterator<Item = SocketAddr> + 'a {
        self.dropped
            .chunks_exact(V4_LEN)
            .filter_map(v4)
            .chain(self.dropped6.chunks_exact(V6_LEN).filter_map(v6))
    }

    /// Encodes the message as canonical bencode into `out` (empty lists are
    /// left out); returns the length. Refuses lists of bad length and more
    /// than [`MAX_PEX_ADDED`] / [`MAX_PEX_DROPPED`] peers, so what it writes
    /// decodes again to the same message with nothing cut.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, PexError> {
        let fields = [
            (Field::Added, self.added, V4_LEN),
            (Field::AddedF, self.added_f, 1),
            (Field::Added6, self.added6, V6_LEN),
            (Field::Added6F, self.added6_f, 1),
            (Field::Dropped, self.dropped, V4_LEN),
            (Field::Dropped6, self.dropped6, V6_LEN),
        ];
        for &(field, b, size) in &fields {
            if b.len() % size != 0 {
                return Err(PexError::BadLength {
                    field,
                    len: b.len(),
                    offset: 0,
                });
            }
        }
        let flags_ok = |f: &[u8], peers: usize| f.is_empty() || f.len() == peers;
        if !flags_ok(self.added_f, self.added.len() / V4_LEN) {
            return Err(PexError::BadLength {
                field: Field::AddedF,
                len: self.added_f.len(),
                offset: 0,
            });
        }
        if !flags_ok(self.added6_f, self.added6.len() / V6_LEN) {
            return Err(PexError::BadLength {
                field: Field::Added6F,
                len: self.added6_f.len(),
                offset: 0,
            });
        }
        if self.added_len() > MAX_PEX_ADDED {
            return Err(PexError::TooMany(Field::Added));
        }
        if self.dropped_len() > MAX_PEX_DROPPED {
            return Err(PexError::TooMany(Field::Dropped));
        }
        let mut e = Encoder::new(SliceWriter::new(out));
        e.begin_dict().map_err(map_encode)?;
        // Keys in byte order: added < added.f < added6 < added6.f < dropped < dropped6.
        for &(field, b, _) in &fields {
            if b.is_empty() {
                continue;
            }
            e.key(key_of(field)).map_err(map_encode)?;
            e.bytes(b).map_err(map_encode)?;
        }
        e.end().map_err(map_encode)?;
        let (_, n) = e.finish().map_err(map_encode)?;
        Ok(n)
    }
}

fn key_of(field: Field) -> &'static [u8] {
    match field {
        Field::Added => b"added",
        Field::AddedF => b"added.f",
        Field::Added6 => b"added6",
        Field::Added6F => b"added6.f",
        Field::Dropped => b"dropped",
        Field::Dropped6 => b"dropped6",
    }
}

fn map_encode(e: EncodeError<SliceWriterFull>) -> PexError {
    match e {
        EncodeError::Write(_) => PexError::BufferTooSmall,
        // Keys are written in a fixed order; nothing else can fail.
        _ => PexError::BufferTooSmall,
    }
}

/// What [`encode_update`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Bytes written.
    pub len: usize,
    /// Leading entries of `added` that went in (keep the rest for later).
    pub added: usize,
    /// Leading entries of `dropped` that went in.
    pub dropped: usize,
}

/// Largest compact list [`encode_update`] builds: 50 IPv6 peers.
const LIST_CAP: usize = MAX_PEX_ADDED * V6_LEN;

/// Encodes a PEX message from addresses: the first [`MAX_PEX_ADDED`] of
/// `added` (with their flags) and the first [`MAX_PEX_DROPPED`] of
/// `dropped`, split by family. IPv4-mapped IPv6 addresses go out as IPv4.
pub fn encode_update(
    added: &[(SocketAddr, PexFlags)],
    dropped: &[SocketAddr],
    out: &mut [u8],
) -> Result<Encoded, PexError> {
    let added = added.get(..MAX_PEX_ADDED).unwrap_or(added);
    let dropped = dropped.get(..MAX_PEX_DROPPED).unwrap_or(dropped);
    let mut a4 = heapless::Vec::<u8, LIST_CAP>::new();
    let mut f4 = heapless::Vec::<u8, MAX_PEX_ADDED>::new();
    let mut a6 = heapless::Vec::<u8, LIST_CAP>::new();
    let mut f6 = heapless::Vec::<u8, MAX_PEX_ADDED>::new();
    // Capacities hold 50 of the largest entry, so these pushes cannot fail.
    for &(addr, flags) in added {
        let c = compact(addr);
        let (list, fl) = match c {
            Compact::V4(_) => (&mut a4, &mut f4),
            Compact::V6(_) => (&mut a6, &mut f6),
        };
        let _ = list.extend_from_slice(c.bytes());
        let _ = fl.push(flags.0);
    }
    let mut d4 = heapless::Vec::<u8, LIST_CAP>::new();
    let mut d6 = heapless::Vec::<u8, LIST_CAP>::new();
    for &addr in dropped {
        let _ = match compact(addr) {
            Compact::V4(b) => d4.extend_from_slice(&b),
            Compact::V6(b) => d6.extend_from_slice(&b),
        };
    }
    let m = PexMessage {
        added: &a4,
        added_f: &f4,
        added6: &a6,
        added6_f: &f6,
        dropped: &d4,
        dropped6: &d6,
    };
    let len = m.encode(out)?;
    Ok(Encoded {
        len,
        added: added.len(),
        dropped: dropped.len(),
    })
}

enum Compact {
    V4([u8; V4_LEN]),
    V6([u8; V6_LEN]),
}

impl Compact {
    fn bytes(&self) -> &[u8] {
        match self {
            Compact::V4(b) => b,
            Compact::V6(b) => b,
        }
    }
}

fn compact(addr: SocketAddr) -> Compact {
    let ip = match addr.ip() {
        IpAddr::V6(ip) => ip
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(ip)),
        ip => ip,
    };
    let [p0, p1] = addr.port().to_be_bytes();
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, c, d] = ip.octets();
            Compact::V4([a, b, c, d, p0, p1])
        }
        IpAddr::V6(ip) => {
            let mut b = [0u8; V6_LEN];
            let (head, tail) = b.split_at_mut(16);
            head.copy_from_slice(&ip.octets());
            tail.copy_from_slice(&[p0, p1]);
            Compact::V6(b)
        }
    }
}

/// True for addresses no peer can be reached at: port 0, unspecified,
/// multicast, IPv4 broadcast.
pub fn is_unusable(addr: &SocketAddr) -> bool {
    addr.port() == 0
        || match addr.ip() {
            IpAddr::V4(ip) => ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast(),
            IpAddr::V6(ip) => ip.is_unspecified() || ip.is_multicast(),
        }
}

/// Why [`PexPeer::handle_message`] refused a message (ignore it; not a
/// reason on its own to disconnect).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PexRefused {
    /// BEP 27: a private torrent uses no PEX.
    Private,
    /// Less than [`MIN_RECEIVE_INTERVAL`] since the peer's last message.
    TooSoon {
        /// Time since the last accepted message.
        since: Duration,
    },
}

/// PEX rules for one peer connection: when we may send, and what we learn
/// from what it sends. The caller builds the added/dropped lists (peers
/// connected / disconnected since the last message to this peer) and
/// encodes them with [`encode_update`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PexPeer {
    private: bool,
    last_sent: Option<Instant>,
    last_received: Option<Instant>,
}

impl PexPeer {
    /// The rules for a connection of a torrent that is `private` (BEP 27)
    /// or not.
    pub fn new(private: bool) -> Self {
        PexPeer {
            private,
            last_sent: None,
            last_received: None,
        }
    }

    /// False for private torrents: do not even offer `ut_pex` in the
    /// extension handshake (BEP 27).
    pub fn enabled(&self) -> bool {
        !self.private
    }

    /// True if a PEX message may go to this peer at `now`.
    pub fn may_send(&self, now: Instant) -> bool {
        self.poll_timeout().is_some_and(|t| t <= now)
    }

    /// A PEX message went to this peer at `now`.
    pub fn on_sent(&mut self, now: Instant) {
        self.last_sent = Some(now);
    }

    /// When the next message may be sent (`None` for private torrents).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.private {
            return None;
        }
        Some(self.last_sent.map_or(Instant::ZERO, |t| t + PEX_INTERVAL))
    }

    /// A PEX message from this peer at `now`: the peers to learn are its
    /// added peers minus unusable addresses ([`is_unusable`]) and minus
    /// those `skip` returns true for (our own addresses, peers we are
    /// connected to).
    pub fn handle_message<'m, F>(
        &mut self,
        now: Instant,
        msg: &PexMessage<'m>,
        skip: F,
    ) -> Result<impl Iterator<Item = (SocketAddr, PexFlags)> + 'm, PexRefused>
    where
        F: Fn(&SocketAddr) -> bool + 'm,
    {
        if self.private {
            return Err(PexRefused::Private);
        }
        if let Some(last) = self.last_received {
            let since = now.saturating_duration_since(last);
            if since < MIN_RECEIVE_INTERVAL {
                return Err(PexRefused::TooSoon { since });
            }
        }
        self.last_received = Some(now);
        Ok(msg
            .added_peers()
            .filter(move |(a, _)| !is_unusable(a) && !skip(a)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode::ErrorKind;
    use std::vec::Vec;

    /// As libtorrent writes it: every key present, empty ones too.
    static LT: &[u8] = b"d5:added12:\x7f\x00\x00\x01\x1a\xe1\x0a\x00\x00\x02\x1a\xe27:added.f2:\x10\x026:added618:\
\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x1a\xe38:added6.f1:\x047:dropped6:\
\x0a\x00\x00\x03\x00\x508:dropped60:e";

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn v4_list(n: usize, first: u8) -> Vec<u8> {
        (0..n)
            .flat_map(|i| [10, first, (i >> 8) as u8, i as u8, 0x1a, 0xe1])
            .collect()
    }

    fn v6_list(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                let mut b = [0u8; 18];
                b[0] = 0x20;
                b[1] = 0x01;
                b[14] = (i >> 8) as u8;
                b[15] = i as u8;
                b[16] = 0x1a;
                b[17] = 0xe1;
                b
            })
            .collect()
    }

    fn roundtrip(m: &PexMessage<'_>) -> Vec<u8> {
        let mut buf = [0u8; 4096];
        let n = m.encode(&mut buf).unwrap();
        let (again, cut) = PexMessage::decode(&buf[..n], PexLimits::default()).unwrap();
        assert_eq!(&again, m);
        assert_eq!(cut, Cut::default());
        assert_eq!(m.encode(&mut buf[..n - 1]), Err(PexError::BufferTooSmall));
        buf[..n].to_vec()
    }

    #[test]
    fn decodes_libtorrent_like() {
        let (m, cut) = PexMessage::decode(LT, PexLimits::default()).unwrap();
        assert_eq!(cut, Cut::default());
        let added: Vec<_> = m.added_peers().collect();
        assert_eq!(
            added,
            [
                (sa("127.0.0.1:6881"), PexFlags(0x10)),
                (sa("10.0.0.2:6882"), PexFlags(0x02)),
                (sa("[::1]:6883"), PexFlags(0x04)),
            ]
        );
        assert!(added[0].1.has(PexFlags::REACHABLE));
        assert!(added[1].1.has(PexFlags::SEED));
        assert!(!added[1].1.has(PexFlags::SEED | PexFlags::UTP));
        assert_eq!(m.dropped_peers().collect::<Vec<_>>(), [sa("10.0.0.3:80")]);
        assert_eq!((m.added_len(), m.dropped_len()), (3, 1));
        // Re-encoded canonically, empty lists left out.
        let out = roundtrip(&m);
        assert!(!out.windows(10).any(|w| w == b"8:dropped6"));
        assert_eq!(
            PexMessage::decode(b"de", PexLimits::default()),
            Ok((PexMessage::default(), Cut::default()))
        );
        assert_eq!(roundtrip(&PexMessage::default()), b"de");
    }

    #[test]
    fn added_limit_edge() {
        let fifty = v4_list(MAX_PEX_ADDED, 1);
        let m = PexMessage {
            added: &fifty,
            ..PexMessage::default()
        };
        let bytes = roundtrip(&m);
        assert_eq!(
            PexMessage::decode(&bytes, PexLimits::default())
                .unwrap()
                .0
                .added_len(),
            50
        );
        // 51: one cut on decode, refused on encode.
        let fifty_one = v4_list(MAX_PEX_ADDED + 1, 1);
        let flags = std::vec![1u8; MAX_PEX_ADDED + 1];
        let big = PexMessage {
            added: &fifty_one,
            added_f: &flags,
            ..PexMessage::default()
        };
        assert_eq!(
            big.encode(&mut [0u8; 4096]),
            Err(PexError::TooMany(Field::Added))
        );
        let mut p = Vec::from(&b"d5:added306:"[..]);
        p.extend_from_slice(&fifty_one);
        p.extend_from_slice(b"7:added.f51:");
        p.extend_from_slice(&flags);
        p.push(b'e');
        let (m, cut) = PexMessage::decode(&p, PexLimits::default()).unwrap();
        assert_eq!(m.added, &fifty_one[..300]);
        assert_eq!(m.added_f.len(), 50);
        assert_eq!(
            cut,
            Cut {
                added: 1,
                ..Cut::default()
            }
        );
        roundtrip(&m);
    }

    #[test]
    fn limit_spans_both_families() {
        let a4 = v4_list(30, 1);
        let a6 = v6_list(30);
        let f4 = [1u8; 30];
        let f6 = [2u8; 30];
        let d4 = v4_list(40, 2);
        let d6 = v6_list(40);
        let mut p = Vec::new();
        // Built by hand: the encoder refuses more than 50.
        for (k, v) in [
            (&b"added"[..], &a4[..]),
            (b"added.f", &f4),
            (b"added6", &a6),
            (b"added6.f", &f6),
            (b"dropped", &d4),
            (b"dropped6", &d6),
        ] {
            p.extend_from_slice(std::format!("{}:", k.len()).as_bytes());
            p.extend_from_slice(k);
            p.extend_from_slice(std::format!("{}:", v.len()).as_bytes());
            p.extend_from_slice(v);
        }
        p.insert(0, b'd');
        p.push(b'e');
        let (m, cut) = PexMessage::decode(&p, PexLimits::default()).unwrap();
        assert_eq!(m.added.len() / V4_LEN, 30);
        assert_eq!(m.added6.len() / V6_LEN, 20);
        assert_eq!((m.added_f.len(), m.added6_f.len()), (30, 20));
        assert_eq!(m.dropped.len() / V4_LEN, 40);
        assert_eq!(m.dropped6.len() / V6_LEN, 10);
        assert_eq!(
            cut,
            Cut {
                added: 10,
                dropped: 30,
                flags_ignored: false
            }
        );
        assert!(m
            .added_peers()
            .all(|(a, f)| f.0 == if a.is_ipv4() { 1 } else { 2 }));
        roundtrip(&m);
        // Caller limits: zero keeps nothing and says so.
        let none = PexLimits {
            max_added: 0,
            max_dropped: 0,
        };
        let (m, cut) = PexMessage::decode(&p, none).unwrap();
        assert_eq!(m, PexMessage::default());
        assert_eq!(
            cut,
            Cut {
                added: 60,
                dropped: 80,
                flags_ignored: false
            }
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            PexMessage::decode(b"d5:added7:1234567e", PexLimits::default()),
            Err(PexError::BadLength {
                field: Field::Added,
                len: 7,
                offset: 8
            })
        );
        assert_eq!(
            PexMessage::decode(b"d8:dropped617:12345678901234567e", PexLimits::default()),
            Err(PexError::BadLength {
                field: Field::Dropped6,
                len: 17,
                offset: 11
            })
        );
        assert_eq!(
            PexMessage::decode(b"d7:droppedi1ee", PexLimits::default()),
            Err(PexError::NotAString {
                field: Field::Dropped,
                offset: 10
            })
        );
        assert_eq!(
            PexMessage::decode(b"le", PexLimits::default()),
            Err(PexError::NotADict)
        );
        assert!(matches!(
            PexMessage::decode(b"d5:added6:123456", PexLimits::default()),
            Err(PexError::Bencode(bencode::Error {
                kind: ErrorKind::UnexpectedEnd,
                ..
            }))
        ));
        // Trailing bytes are refused (a second value would be hidden).
        assert!(matches!(
            PexMessage::decode(b"dex", PexLimits::default()),
            Err(PexError::Bencode(bencode::Error {
                kind: ErrorKind::TrailingBytes,
                offset: 2
            }))
        ));
    }

    #[test]
    fn flags_of_wrong_length_are_ignored() {
        let (m, cut) = PexMessage::decode(
            b"d5:added12:\x01\x02\x03\x04\x00\x01\x05\x06\x07\x08\x00\x027:added.f1:\x02e",
            PexLimits::default(),
        )
        .unwrap();
        assert!(m.added_f.is_empty());
        assert!(cut.flags_ignored);
        assert!(m.added_peers().all(|(_, f)| f == PexFlags(0)));
        // Flags without peers too.
        let (m, cut) = PexMessage::decode(b"d8:added6.f1:\x01e", PexLimits::default()).unwrap();
        assert_eq!((m, cut.flags_ignored), (PexMessage::default(), true));
        // Encoding refuses them.
        let a = v4_list(2, 1);
        let bad = PexMessage {
            added: &a,
            added_f: &[1],
            ..PexMessage::default()
        };
        assert_eq!(
            bad.encode(&mut [0u8; 64]),
            Err(PexError::BadLength {
                field: Field::AddedF,
                len: 1,
                offset: 0
            })
        );
        let odd = PexMessage {
            dropped: &a[..5],
            ..PexMessage::default()
        };
        assert!(matches!(
            odd.encode(&mut [0u8; 64]),
            Err(PexError::BadLength {
                field: Field::Dropped,
                ..
            })
        ));
    }

    #[test]
    fn repeated_and_unknown_keys() {
        let (m, _) = PexMessage::decode(
            b"d7:dropped6:\x01\x01\x01\x01\x00\x011:xli1ei2ee7:dropped6:\x02\x02\x02\x02\x00\x02e",
            PexLimits::default(),
        )
        .unwrap();
        assert_eq!(m.dropped_peers().collect::<Vec<_>>(), [sa("1.1.1.1:1")]);
    }

    #[test]
    fn token_budget_edge() {
        // root 1 + key/value 2 + unknown list 2 + k elements.
        let msg = |k: usize| {
            let mut p = Vec::from(&b"d1:xl"[..]);
            for _ in 0..k {
                p.extend_from_slice(b"i1e");
            }
            p.extend_from_slice(b"ee");
            p
        };
        assert!(PexMessage::decode(&msg(MAX_PEX_TOKENS - 3), PexLimits::default()).is_ok());
        assert!(matches!(
            PexMessage::decode(&msg(MAX_PEX_TOKENS - 2), PexLimits::default()),
            Err(PexError::Bencode(bencode::Error {
                kind: ErrorKind::TokenLimit,
                ..
            }))
        ));
    }

    #[test]
    fn encode_update_takes_fifty_of_each() {
        let added: Vec<_> = (0..60u32)
            .map(|i| {
                let a = if i % 2 == 0 {
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 6881)
                } else {
                    SocketAddr::new(
                        IpAddr::V6(Ipv6Addr::from(
                            0x2001_0000_0000_0000_0000_0000_0000_0000u128 + u128::from(i),
                        )),
                        6881,
                    )
                };
                (a, PexFlags(i as u8))
            })
            .collect();
        let dropped: Vec<_> = (0..51u32)
            .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i)), 1))
            .collect();
        let mut buf = [0u8; 4096];
        let e = encode_update(&added, &dropped, &mut buf).unwrap();
        assert_eq!((e.added, e.dropped), (50, 50));
        let (m, cut) = PexMessage::decode(&buf[..e.len], PexLimits::default()).unwrap();
        assert_eq!(cut, Cut::default());
        let mut got: Vec<_> = m.added_peers().collect();
        let mut want = added[..50].to_vec();
        got.sort_by_key(|p| p.1 .0);
        want.sort_by_key(|p| p.1 .0);
        assert_eq!(got, want);
        assert_eq!(m.dropped_peers().collect::<Vec<_>>(), dropped[..50]);
        // Exactly 50 and 50: all taken.
        let e = encode_update(&added[..50], &dropped[..50], &mut buf).unwrap();
        assert_eq!((e.added, e.dropped), (50, 50));
        // IPv4-mapped IPv6 goes out as IPv4.
        let mapped = sa("[::ffff:1.2.3.4]:5");
        let e = encode_update(&[(mapped, PexFlags(0))], &[], &mut buf).unwrap();
        let (m, _) = PexMessage::decode(&buf[..e.len], PexLimits::default()).unwrap();
        assert_eq!(m.added_peers().next(), Some((sa("1.2.3.4:5"), PexFlags(0))));
        assert!(m.added6.is_empty());
        assert_eq!(
            encode_update(&added, &[], &mut buf[..10]),
            Err(PexError::BufferTooSmall)
        );
    }

    #[test]
    fn send_interval_edge() {
        let mut p = PexPeer::new(false);
        assert!(p.enabled());
        let t = Instant::from_secs(1000);
        assert!(p.may_send(t));
        p.on_sent(t);
        assert_eq!(p.poll_timeout(), Some(t + PEX_INTERVAL));
        assert!(!p.may_send(Instant::from_millis(t.millis() + PEX_INTERVAL.millis() - 1)));
        assert!(p.may_send(t + PEX_INTERVAL));
    }

    #[test]
    fn private_torrents_never_use_pex() {
        let mut p = PexPeer::new(true);
        assert!(!p.enabled());
        assert!(!p.may_send(Instant::from_secs(1_000_000)));
        assert_eq!(p.poll_timeout(), None);
        let (m, _) = PexMessage::decode(LT, PexLimits::default()).unwrap();
        assert!(matches!(
            p.handle_message(Instant::ZERO, &m, |_| false),
            Err(PexRefused::Private)
        ));
    }

    #[test]
    fn receive_interval_edge_and_filtering() {
        let mut p = PexPeer::new(false);
        let a4 = [
            127, 0, 0, 1, 0x1a, 0xe1, // our own address
            10, 0, 0, 2, 0x1a, 0xe1, // already connected
            10, 0, 0, 3, 0x1a, 0xe1, // new
            10, 0, 0, 4, 0, 0, // port 0
            0, 0, 0, 0, 0x1a, 0xe1, // unspecified
            224, 0, 0, 1, 0x1a, 0xe1, // multicast
            255, 255, 255, 255, 0x1a, 0xe1, // broadcast
        ];
        let m = PexMessage {
            added: &a4,
            ..PexMessage::default()
        };
        let own = [sa("127.0.0.1:6881")];
        let connected = [sa("10.0.0.2:6881")];
        let skip = move |a: &SocketAddr| own.contains(a) || connected.contains(a);
        let t = Instant::from_secs(500);
        let learned: Vec<_> = p.handle_message(t, &m, skip).unwrap().collect();
        assert_eq!(learned, [(sa("10.0.0.3:6881"), PexFlags(0))]);
        let almost = Instant::from_millis(t.millis() + MIN_RECEIVE_INTERVAL.millis() - 1);
        assert!(matches!(
            p.handle_message(almost, &m, skip),
            Err(PexRefused::TooSoon { since }) if since.millis() == MIN_RECEIVE_INTERVAL.millis() - 1
        ));
        // A refused message does not restart the interval.
        assert_eq!(
            p.handle_message(t + MIN_RECEIVE_INTERVAL, &m, skip)
                .map(|l| l.count())
                .ok(),
            Some(1)
        );
        let v6 = [
            sa("[::]:1"),
            sa("[ff02::1]:1"),
            sa("[2001::1]:0"),
            sa("[2001::1]:1"),
        ];
        assert_eq!(
            v6.iter().map(is_unusable).collect::<Vec<_>>(),
            [true, true, true, false]
        );
    }
}
