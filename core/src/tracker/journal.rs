//! The tracker's change journal: a compact binary record of what changed in
//! its swarms, appended by the shell's persistence writer one blob per
//! flush and replayed over the last checkpoint at start.
//!
//! Every record carries an **absolute** value (a peer's whole state, a
//! torrent's completed count, never a delta), so replaying a record twice,
//! or over a checkpoint that already holds it, changes nothing: that is
//! what makes a checkpoint taken while the journal grows (a "fuzzy"
//! checkpoint) exact once the journal since its start is replayed on top.
//!
//! # Format (all integers big-endian)
//! A blob is [`VERSION`] (one byte) followed by records back to back. A
//! record is a tag byte, the 20-byte info-hash, then by tag:
//!
//! | tag | record | then | bytes |
//! |---|---|---|---|
//! | [`TAG_PEER4_SET`] | IPv4 peer present | ip(4) port(2) flags(1) last_seen(4) | 32 |
//! | [`TAG_PEER6_SET`] | IPv6 peer present | ip(16) port(2) flags(1) last_seen(4) | 44 |
//! | [`TAG_PEER4_REMOVED`] | IPv4 peer gone | ip(4) port(2) | 27 |
//! | [`TAG_PEER6_REMOVED`] | IPv6 peer gone | ip(16) port(2) | 39 |
//! | [`TAG_COMPLETED`] | completed count | count(4) | 25 |
//!
//! `flags` is [`FLAG_SEEDER`] or 0 (any other bit is refused, so decoding
//! then encoding reproduces an accepted blob byte for byte); `last_seen` is
//! whole seconds since the Unix epoch.
//!
//! # Limits
//! A blob is at most [`MAX_BLOB_LEN`] bytes (longer input is refused at
//! that offset); a record at most [`MAX_RECORD_LEN`]. Decoding never
//! allocates and never panics: a bad byte ends the iteration with a
//! [`JournalError`] naming what was wrong and where, after yielding every
//! record before it.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::codec::{Reader, Writer};
use crate::id::InfoHash;

/// Format version, the first byte of every blob.
pub const VERSION: u8 = 1;
/// An IPv4 peer is present ([`Record::PeerSet`]).
pub const TAG_PEER4_SET: u8 = 1;
/// An IPv6 peer is present ([`Record::PeerSet`]).
pub const TAG_PEER6_SET: u8 = 2;
/// An IPv4 peer is gone ([`Record::PeerRemoved`]).
pub const TAG_PEER4_REMOVED: u8 = 3;
/// An IPv6 peer is gone ([`Record::PeerRemoved`]).
pub const TAG_PEER6_REMOVED: u8 = 4;
/// A torrent's completed count ([`Record::Completed`]).
pub const TAG_COMPLETED: u8 = 5;
/// The seeder bit of a peer record's flags.
pub const FLAG_SEEDER: u8 = 1;
/// Bytes of the longest record (an IPv6 peer set).
pub const MAX_RECORD_LEN: usize = 1 + 20 + 16 + 2 + 1 + 4;
/// Largest blob [`Records`] decodes (and the shell writes): 4 MiB.
pub const MAX_BLOB_LEN: usize = 4 << 20;

/// One change, with its absolute result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// The peer at `addr` is in `info_hash`'s swarm with this state.
    PeerSet {
        /// The torrent.
        info_hash: InfoHash,
        /// Where the peer listens (an IPv6 address's flow info and scope
        /// are not kept).
        addr: SocketAddr,
        /// `left == 0`.
        seeder: bool,
        /// Last announce, seconds since the Unix epoch.
        last_seen: u32,
    },
    /// The peer at `addr` left `info_hash`'s swarm (or expired).
    PeerRemoved {
        /// The torrent.
        info_hash: InfoHash,
        /// The peer's address.
        addr: SocketAddr,
    },
    /// `info_hash` has been completed `count` times (BEP 48 `downloaded`).
    Completed {
        /// The torrent.
        info_hash: InfoHash,
        /// The count after the change.
        count: u32,
    },
}

impl Record {
    /// The record's tag byte.
    pub fn tag(&self) -> u8 {
        match self {
            Record::PeerSet { addr, .. } if addr.is_ipv4() => TAG_PEER4_SET,
            Record::PeerSet { .. } => TAG_PEER6_SET,
            Record::PeerRemoved { addr, .. } if addr.is_ipv4() => TAG_PEER4_REMOVED,
            Record::PeerRemoved { .. } => TAG_PEER6_REMOVED,
            Record::Completed { .. } => TAG_COMPLETED,
        }
    }

    /// Bytes the record takes encoded.
    pub fn encoded_len(&self) -> usize {
        record_len(self.tag()).unwrap_or(MAX_RECORD_LEN)
    }

    /// Writes the record at the start of `out`; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(out);
        w.u8(self.tag());
        match self {
            Record::PeerSet {
                info_hash,
                addr,
                seeder,
                last_seen,
            } => {
                w.put(info_hash.as_bytes());
                put_addr(&mut w, addr);
                w.u8(if *seeder { FLAG_SEEDER } else { 0 });
                w.u32(*last_seen);
            }
            Record::PeerRemoved { info_hash, addr } => {
                w.put(info_hash.as_bytes());
                put_addr(&mut w, addr);
            }
            Record::Completed { info_hash, count } => {
                w.put(info_hash.as_bytes());
                w.u32(*count);
            }
        }
        w.finish()
            .map_err(|needed| EncodeError::BufferTooSmall { needed })
    }
}

fn put_addr(w: &mut Writer<'_>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(a) => w.put(&a.octets()),
        IpAddr::V6(a) => w.put(&a.octets()),
    }
    w.u16(addr.port());
}

/// Encoded length of a record with tag `tag`, if the tag is known.
pub fn record_len(tag: u8) -> Option<usize> {
    match tag {
        TAG_PEER4_SET => Some(32),
        TAG_PEER6_SET => Some(MAX_RECORD_LEN),
        TAG_PEER4_REMOVED => Some(27),
        TAG_PEER6_REMOVED => Some(39),
        TAG_COMPLETED => Some(25),
        _ => None,
    }
}

/// Writes a blob's header ([`VERSION`]) at the start of `out`.
pub fn encode_header(out: &mut [u8]) -> Result<usize, EncodeError> {
    let mut w = Writer::new(out);
    w.u8(VERSION);
    w.finish()
        .map_err(|needed| EncodeError::BufferTooSmall { needed })
}

/// Why a record could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// `out` is shorter than the `needed` bytes.
    BufferTooSmall {
        /// Bytes the encoding takes.
        needed: usize,
    },
}

/// What was wrong with a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalErrorKind {
    /// The blob is empty (not even a version byte).
    Empty,
    /// The blob's version is not [`VERSION`].
    Version(u8),
    /// A record starts with an unknown tag.
    Tag(u8),
    /// The blob ends inside a record.
    Truncated,
    /// A peer record's flags have a bit other than [`FLAG_SEEDER`].
    Flags(u8),
    /// The blob is longer than [`MAX_BLOB_LEN`].
    TooLong,
}

/// A blob that does not decode: what, and the byte offset where (the start
/// of the offending record, or of the version byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalError {
    /// What was wrong.
    pub kind: JournalErrorKind,
    /// Offset into the blob.
    pub offset: usize,
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            JournalErrorKind::Empty => return write!(f, "empty journal blob"),
            JournalErrorKind::Version(v) => {
                return write!(f, "journal version {v} (want {VERSION})")
            }
            JournalErrorKind::Tag(t) => write!(f, "unknown record tag {t}")?,
            JournalErrorKind::Truncated => write!(f, "truncated record")?,
            JournalErrorKind::Flags(b) => write!(f, "bad peer flags {b:#04x}")?,
            JournalErrorKind::TooLong => write!(f, "blob longer than {MAX_BLOB_LEN} bytes")?,
        }
        write!(f, " at offset {}", self.offset)
    }
}

/// The records of a blob, in order; a bad byte ends the iteration with one
/// error (after every record before it).
#[derive(Clone, Debug)]
pub struct Records<'a> {
    r: Reader<'a>,
    /// Length of the part decoded (the blob up to [`MAX_BLOB_LEN`]).
    len: usize,
    too_long: bool,
    started: bool,
    done: bool,
}

impl<'a> Records<'a> {
    /// Iterates over `blob`'s records (the version byte is checked by the
    /// first call to `next`).
    pub fn new(blob: &'a [u8]) -> Self {
        let too_long = blob.len() > MAX_BLOB_LEN;
        let blob = blob.get(..MAX_BLOB_LEN).unwrap_or(blob);
        Records {
            r: Reader::new(blob),
            len: blob.len(),
            too_long,
            started: false,
            done: false,
        }
    }

    /// Offset of the next record.
    pub fn offset(&self) -> usize {
        self.r.pos()
    }

    fn fail(
        &mut self,
        kind: JournalErrorKind,
        offset: usize,
    ) -> Option<Result<Record, JournalError>> {
        self.done = true;
        Some(Err(JournalError { kind, offset }))
    }

    fn addr(r: &mut Reader<'_>, v6: bool) -> Option<SocketAddr> {
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::from(r.array::<16>()?))
        } else {
            IpAddr::V4(Ipv4Addr::from(r.array::<4>()?))
        };
        Some(SocketAddr::new(ip, r.u16()?))
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Record, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if !self.started {
            self.started = true;
            match self.r.u8() {
                None => return self.fail(JournalErrorKind::Empty, 0),
                Some(VERSION) => {}
                Some(v) => return self.fail(JournalErrorKind::Version(v), 0),
            }
        }
        let at = self.r.pos();
        let Some(tag) = self.r.u8() else {
            if self.too_long {
                return self.fail(JournalErrorKind::TooLong, self.len);
            }
            self.done = true;
            return None;
        };
        let Some(n) = record_len(tag) else {
            return self.fail(JournalErrorKind::Tag(tag), at);
        };
        let Some(body) = self.r.take(n - 1) else {
            return self.fail(JournalErrorKind::Truncated, at);
        };
        let mut b = Reader::new(body);
        let Some(info_hash) = b.array::<20>().map(InfoHash) else {
            return self.fail(JournalErrorKind::Truncated, at);
        };
        let v6 = matches!(tag, TAG_PEER6_SET | TAG_PEER6_REMOVED);
        let rec = match tag {
            TAG_COMPLETED => b.u32().map(|count| Record::Completed { info_hash, count }),
            TAG_PEER4_REMOVED | TAG_PEER6_REMOVED => {
                Self::addr(&mut b, v6).map(|addr| Record::PeerRemoved { info_hash, addr })
            }
            _ => {
                let addr = Self::addr(&mut b, v6);
                let flags = b.u8();
                if let Some(f) = flags.filter(|f| f & !FLAG_SEEDER != 0) {
                    return self.fail(JournalErrorKind::Flags(f), at);
                }
                match (addr, flags, b.u32()) {
                    (Some(addr), Some(f), Some(last_seen)) => Some(Record::PeerSet {
                        info_hash,
                        addr,
                        seeder: f == FLAG_SEEDER,
                        last_seen,
                    }),
                    _ => None,
                }
            }
        };
        match rec {
            Some(r) => Some(Ok(r)),
            None => self.fail(JournalErrorKind::Truncated, at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ih(b: u8) -> InfoHash {
        InfoHash([b; 20])
    }

    fn samples() -> [Record; 5] {
        [
            Record::PeerSet {
                info_hash: ih(1),
                addr: SocketAddr::from(([10, 0, 0, 1], 6881)),
                seeder: true,
                last_seen: 1_700_000_123,
            },
            Record::PeerSet {
                info_hash: ih(2),
                addr: "[2001:db8::7]:65535".parse().unwrap(),
                seeder: false,
                last_seen: u32::MAX,
            },
            Record::PeerRemoved {
                info_hash: ih(3),
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            },
            Record::PeerRemoved {
                info_hash: ih(4),
                addr: "[::1]:1".parse().unwrap(),
            },
            Record::Completed {
                info_hash: ih(0xff),
                count: u32::MAX,
            },
        ]
    }

    /// A blob with every kind of record.
    fn blob(buf: &mut [u8]) -> usize {
        let mut n = encode_header(buf).unwrap();
        for r in samples() {
            n += r.encode(&mut buf[n..]).unwrap();
        }
        n
    }

    #[test]
    fn every_record_round_trips_with_its_documented_length() {
        let mut buf = [0u8; 512];
        let n = blob(&mut buf);
        let mut it = Records::new(&buf[..n]);
        for want in samples() {
            let at = it.offset().max(1); // the version byte is read first
            assert_eq!(it.next(), Some(Ok(want)));
            assert_eq!(it.offset() - at, want.encoded_len());
            assert_eq!(Some(want.encoded_len()), record_len(want.tag()));
        }
        assert_eq!(it.next(), None);
        assert_eq!(it.next(), None, "fused");
        assert_eq!(n, 1 + 32 + 44 + 27 + 39 + 25);
        assert_eq!(
            samples().iter().map(Record::encoded_len).max(),
            Some(MAX_RECORD_LEN)
        );
        // A header alone is an empty journal row.
        assert_eq!(Records::new(&[VERSION]).next(), None);
    }

    #[test]
    fn truncation_at_every_offset_keeps_the_records_before_it() {
        let mut buf = [0u8; 512];
        let n = blob(&mut buf);
        let ends: [usize; 5] = {
            let mut e = [0; 5];
            let mut at = 1;
            for (i, r) in samples().iter().enumerate() {
                at += r.encoded_len();
                e[i] = at;
            }
            e
        };
        for cut in 0..n {
            let mut ok = 0;
            let mut err = None;
            for r in Records::new(&buf[..cut]) {
                match r {
                    Ok(_) => ok += 1,
                    Err(e) => err = Some(e),
                }
            }
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(ok, whole, "cut {cut}");
            let start = if whole == 0 { 1 } else { ends[whole - 1] };
            let want = match cut {
                0 => Some(JournalError {
                    kind: JournalErrorKind::Empty,
                    offset: 0,
                }),
                _ if cut == start => None,
                _ => Some(JournalError {
                    kind: JournalErrorKind::Truncated,
                    offset: start,
                }),
            };
            assert_eq!(err, want, "cut {cut}");
        }
    }

    #[test]
    fn bad_version_tag_and_flags_are_named_with_their_offset() {
        let mut buf = [0u8; 512];
        let n = blob(&mut buf);
        let mut v = buf;
        v[0] = 2;
        let e = Records::new(&v[..n]).next();
        assert_eq!(
            e,
            Some(Err(JournalError {
                kind: JournalErrorKind::Version(2),
                offset: 0
            }))
        );
        // Unknown tags at the second record: the first is still yielded.
        for tag in [0u8, 6, 0xff] {
            let mut t = buf;
            t[33] = tag;
            let got: heapless::Vec<_, 4> = Records::new(&t[..n]).collect();
            assert_eq!(got.len(), 2, "tag {tag}");
            assert_eq!(
                got[1],
                Err(JournalError {
                    kind: JournalErrorKind::Tag(tag),
                    offset: 33
                })
            );
        }
        // Flags: offset of the first record's flags byte is 1+1+20+4+2.
        for flags in [2u8, 0x80, 0xff] {
            let mut f = buf;
            f[28] = flags;
            assert_eq!(
                Records::new(&f[..n]).next(),
                Some(Err(JournalError {
                    kind: JournalErrorKind::Flags(flags),
                    offset: 1
                }))
            );
        }
        let e = JournalError {
            kind: JournalErrorKind::Tag(9),
            offset: 33,
        };
        let mut s = heapless::String::<64>::new();
        core::fmt::write(&mut s, format_args!("{e}")).unwrap();
        assert_eq!(s.as_str(), "unknown record tag 9 at offset 33");
    }

    #[test]
    fn too_long_is_reported_after_the_records_within_the_limit() {
        extern crate std;
        // 1 + 25 * k == MAX_BLOB_LEN has no solution; use a header plus
        // completed records and one peer4-removed record to land exactly.
        let comp = Record::Completed {
            info_hash: ih(1),
            count: 1,
        };
        let rem = Record::PeerRemoved {
            info_hash: ih(1),
            addr: SocketAddr::from(([1, 1, 1, 1], 1)),
        };
        // Find a, b >= 0 with 1 + 25a + 27b == MAX_BLOB_LEN.
        let (a, b) = (0..25)
            .find_map(|b| {
                let rest = MAX_BLOB_LEN - 1 - 27 * b;
                (rest % 25 == 0).then_some((rest / 25, b))
            })
            .unwrap();
        let mut v = std::vec![VERSION];
        let mut buf = [0u8; MAX_RECORD_LEN];
        for (r, k) in [(comp, a), (rem, b)] {
            let n = r.encode(&mut buf).unwrap();
            for _ in 0..k {
                v.extend_from_slice(&buf[..n]);
            }
        }
        assert_eq!(v.len(), MAX_BLOB_LEN);
        assert!(Records::new(&v).all(|r| r.is_ok()), "at the limit: fine");
        v.push(TAG_COMPLETED);
        let mut it = Records::new(&v);
        assert_eq!(it.by_ref().filter(Result::is_ok).count(), a + b);
        let err: std::vec::Vec<_> = Records::new(&v).filter_map(Result::err).collect();
        assert_eq!(
            err,
            [JournalError {
                kind: JournalErrorKind::TooLong,
                offset: MAX_BLOB_LEN
            }]
        );
    }

    #[test]
    fn encode_into_a_short_buffer_says_how_much_it_needs() {
        for r in samples() {
            let mut b = [0u8; MAX_RECORD_LEN];
            let n = r.encoded_len();
            assert_eq!(
                r.encode(&mut b[..n - 1]),
                Err(EncodeError::BufferTooSmall { needed: n })
            );
            assert_eq!(r.encode(&mut b[..n]), Ok(n));
        }
        assert_eq!(
            encode_header(&mut []),
            Err(EncodeError::BufferTooSmall { needed: 1 })
        );
    }

    /// The fuzz property holds on every truncation and every one-byte
    /// change of a blob with each kind of record.
    #[test]
    fn fuzz_property_holds_on_mutations() {
        let mut buf = [0u8; 512];
        let n = blob(&mut buf);
        for cut in 0..=n {
            crate::tracker::fuzzing::fuzz_journal(&buf[..cut]);
        }
        for i in 0..n {
            for v in [0u8, 1, 2, 5, 6, 0x80, 0xff] {
                let mut m = buf;
                m[i] = v;
                crate::tracker::fuzzing::fuzz_journal(&m[..n]);
            }
        }
    }
}
