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
