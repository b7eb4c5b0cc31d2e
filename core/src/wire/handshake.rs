//! The BEP 3 handshake: `<pstrlen=19><"BitTorrent protocol"><8 reserved
//! bytes><20-byte info-hash><20-byte peer id>`, 68 bytes in all.
//!
//! Refuses anything whose first 20 bytes differ from the protocol header
//! (reporting the offset of the first wrong byte). Reserved bits are kept as
//! sent; helpers read the two this core uses (BEP 6 fast, BEP 10 extension
//! protocol). [`Handshake::accept`] checks a peer's handshake against ours
//! (same torrent, not ourselves) and says which extensions both sides have.

use core::fmt;

use super::{Reader, WireError, Writer};
use crate::id::{InfoHash, PeerId, ID_LEN};

/// BEP 3: the protocol name that follows the length byte 19.
pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";

/// Length of a handshake: 1 + 19 + 8 + 20 + 20.
pub const HANDSHAKE_LEN: usize = 1 + PROTOCOL.len() + 8 + 2 * ID_LEN;

/// Offset of the info-hash in a handshake (BEP 3 lets a receiver pick the
/// torrent once this much has arrived).
pub const INFO_HASH_OFFSET: usize = 1 + PROTOCOL.len() + 8;

/// The 8 reserved handshake bytes (BEP 3: "eight reserved bytes").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Reserved(pub [u8; 8]);

impl Reserved {
    /// BEP 6: the fast extension bit, `reserved[7] & 0x04`.
    pub const FAST_BYTE: usize = 7;
    /// BEP 6 bit mask within [`Self::FAST_BYTE`].
    pub const FAST_MASK: u8 = 0x04;
    /// BEP 10: the extension protocol bit, `reserved[5] & 0x10`.
    pub const EXTENSION_BYTE: usize = 5;
    /// BEP 10 bit mask within [`Self::EXTENSION_BYTE`].
    pub const EXTENSION_MASK: u8 = 0x10;

    fn bit(&self, byte: usize, mask: u8) -> bool {
        self.0.get(byte).is_some_and(|b| b & mask != 0)
    }

    fn with(mut self, byte: usize, mask: u8, on: bool) -> Self {
        if let Some(b) = self.0.get_mut(byte) {
            if on {
                *b |= mask;
            } else {
                *b &= !mask;
            }
        }
        self
    }

    /// BEP 6: the peer supports the fast extension.
    pub fn fast(&self) -> bool {
        self.bit(Self::FAST_BYTE, Self::FAST_MASK)
    }

    /// BEP 10: the peer supports the extension protocol.
    pub fn extension_protocol(&self) -> bool {
        self.bit(Self::EXTENSION_BYTE, Self::EXTENSION_MASK)
    }

    /// These bits with the fast bit set or cleared.
    pub fn with_fast(self, on: bool) -> Self {
        self.with(Self::FAST_BYTE, Self::FAST_MASK, on)
    }

    /// These bits with the extension-protocol bit set or cleared.
    pub fn with_extension_protocol(self, on: bool) -> Self {
        self.with(Self::EXTENSION_BYTE, Self::EXTENSION_MASK, on)
    }
}

/// A decoded handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Handshake {
    /// Reserved bits (extension flags).
    pub reserved: Reserved,
    /// The torrent.
    pub info_hash: InfoHash,
    /// The sender's peer id.
    pub peer_id: PeerId,
}

/// What both sides of a connection support, from the two handshakes
/// ([`Handshake::accept`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Accepted {
    /// BEP 6: both set the fast-extension bit (it is in force only then).
    pub fast: bool,
    /// BEP 10: both set the extension-protocol bit.
    pub ext: bool,
}

/// Why a peer's handshake was refused ([`Handshake::accept`]). Neither is
/// a protocol violation worth a ban: close the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refused {
    /// BEP 3: "If either side sees an info-hash it is not serving, it
    /// should sever the connection."
    WrongInfoHash,
    /// The peer id is ours: we connected to ourselves (e.g. our own address
    /// in a tracker reply).
    OurSelf,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::WrongInfoHash => "handshake: info-hash of another torrent",
            Refused::OurSelf => "handshake: our own peer id (connected to ourselves)",
        })
    }
}

impl core::error::Error for Refused {}

/// Checks the bytes of a (possibly partial) handshake header seen so far:
/// `Ok(())` if they are a prefix of a valid header.
pub(crate) fn check_header_prefix(buf: &[u8]) -> Result<(), WireError> {
    if let Some(&n) = buf.first() {
        if usize::from(n) != PROTOCOL.len() {
            return Err(WireError::BadProtocolLength(n));
        }
    }
    let name = buf.get(1..).unwrap_or_default();
    for (i, (got, want)) in name.iter().zip(PROTOCOL.iter()).enumerate() {
        if got != want {
            return Err(WireError::BadProtocolName { offset: 1 + i });
        }
    }
    Ok(())
}

impl Handshake {
    /// Decodes exactly one 68-byte handshake.
    pub fn decode(buf: &[u8]) -> Result<Handshake, WireError> {
        check_header_prefix(buf)?;
        if buf.len() < HANDSHAKE_LEN {
            return Err(WireError::Truncated {
                len: buf.len(),
                needed: HANDSHAKE_LEN,
            });
        }
        if buf.len() > HANDSHAKE_LEN {
            return Err(WireError::TrailingBytes {
                offset: HANDSHAKE_LEN,
            });
        }
        let mut r = Reader::new(buf);
        let short = WireError::Truncated {
            len: buf.len(),
            needed: HANDSHAKE_LEN,
        };
        r.take(1 + PROTOCOL.len()).ok_or(short)?;
        let reserved = Reserved(r.array().ok_or(short)?);
        let info_hash = InfoHash(r.array().ok_or(short)?);
        let peer_id = PeerId(r.array().ok_or(short)?);
        Ok(Handshake {
            reserved,
            info_hash,
            peer_id,
        })
    }

    /// Checks this handshake (the peer's) against `ours`: the info-hash must
    /// be ours and the peer id must not be. On success, says which
    /// extensions both sides set.
    pub fn accept(&self, ours: &Handshake) -> Result<Accepted, Refused> {
        if self.info_hash != ours.info_hash {
            return Err(Refused::WrongInfoHash);
        }
        if self.peer_id == ours.peer_id {
            return Err(Refused::OurSelf);
        }
        Ok(Accepted {
            fast: self.reserved.fast() && ours.reserved.fast(),
            ext: self.reserved.extension_protocol() && ours.reserved.extension_protocol(),
        })
    }

    /// The 68 encoded bytes.
    pub fn to_bytes(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        let mut w = Writer::new(&mut out);
        w.put(&[PROTOCOL.len() as u8]);
        w.put(PROTOCOL);
        w.put(&self.reserved.0);
        w.put(self.info_hash.as_bytes());
        w.put(self.peer_id.as_bytes());
        out
    }

    /// Writes the 68 bytes into `out`; returns 68.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let dst = out
            .get_mut(..HANDSHAKE_LEN)
            .ok_or(WireError::BufferTooSmall {
                needed: HANDSHAKE_LEN,
            })?;
        dst.copy_from_slice(&self.to_bytes());
        Ok(HANDSHAKE_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handshake with fast and extension bits set, info-hash 0x11.., peer id "-OT0001-" + 'a'*12.
    static GOOD: [u8; 68] = *b"\x13BitTorrent protocol\x00\x00\x00\x00\x00\x10\x00\x04\
\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\
-OT0001-aaaaaaaaaaaa";

    #[test]
    fn decodes_and_reencodes() {
        let h = Handshake::decode(&GOOD).unwrap();
        assert!(h.reserved.fast());
        assert!(h.reserved.extension_protocol());
        assert_eq!(h.info_hash, InfoHash([0x11; 20]));
        assert_eq!(&h.peer_id.0[..8], b"-OT0001-");
        assert_eq!(h.to_bytes(), GOOD);
        let mut out = [0u8; 68];
        assert_eq!(h.encode(&mut out), Ok(68));
        assert_eq!(out, GOOD);
        assert_eq!(
            h.encode(&mut [0u8; 67]),
            Err(WireError::BufferTooSmall { needed: 68 })
        );
    }

    #[test]
    fn accept() {
        let theirs = Handshake::decode(&GOOD).unwrap();
        let ours = Handshake {
            reserved: Reserved::default().with_fast(true),
            info_hash: theirs.info_hash,
            peer_id: PeerId(*b"-OT0001-bbbbbbbbbbbb"),
        };
        // Both must set a bit for it to count.
        assert_eq!(
            theirs.accept(&ours),
            Ok(Accepted {
                fast: true,
                ext: false
            })
        );
        let ours_all = Handshake {
            reserved: ours.reserved.with_extension_protocol(true),
            ..ours
        };
        assert_eq!(
            theirs.accept(&ours_all),
            Ok(Accepted {
                fast: true,
                ext: true
            })
        );
        let plain = Handshake {
            reserved: Reserved::default(),
            ..theirs
        };
        assert_eq!(plain.accept(&ours_all), Ok(Accepted::default()));
        // Another torrent.
        let other = Handshake {
            info_hash: InfoHash([0x22; 20]),
            ..ours
        };
        assert_eq!(theirs.accept(&other), Err(Refused::WrongInfoHash));
        // Ourselves (a wrong info-hash is reported first).
        let me = Handshake {
            peer_id: theirs.peer_id,
            ..ours
        };
        assert_eq!(theirs.accept(&me), Err(Refused::OurSelf));
        let me_other = Handshake {
            info_hash: InfoHash([0x22; 20]),
            ..me
        };
        assert_eq!(theirs.accept(&me_other), Err(Refused::WrongInfoHash));
    }

    #[test]
    fn reserved_bits() {
        let r = Reserved::default();
        assert!(!r.fast() && !r.extension_protocol());
        let r = r.with_fast(true).with_extension_protocol(true);
        assert_eq!(r.0, [0, 0, 0, 0, 0, 0x10, 0, 0x04]);
        assert_eq!(r.with_fast(false).0, [0, 0, 0, 0, 0, 0x10, 0, 0]);
    }

    #[test]
    fn errors() {
        let mut bad = GOOD;
        bad[0] = 18;
        assert_eq!(
            Handshake::decode(&bad),
            Err(WireError::BadProtocolLength(18))
        );
        let mut bad = GOOD;
        bad[5] = b'X';
        assert_eq!(
            Handshake::decode(&bad),
            Err(WireError::BadProtocolName { offset: 5 })
        );
        assert_eq!(
            Handshake::decode(&GOOD[..67]),
            Err(WireError::Truncated {
                len: 67,
                needed: 68
            })
        );
        assert_eq!(
            Handshake::decode(&[]),
            Err(WireError::Truncated { len: 0, needed: 68 })
        );
        let mut long = [0u8; 69];
        long[..68].copy_from_slice(&GOOD);
        assert_eq!(
            Handshake::decode(&long),
            Err(WireError::TrailingBytes { offset: 68 })
        );
        // A prefix of a valid header is fine; a wrong byte in it is not.
        assert_eq!(check_header_prefix(&GOOD[..7]), Ok(()));
        assert_eq!(
            check_header_prefix(b"\x13BitTorrent Protocol"),
            Err(WireError::BadProtocolName { offset: 12 })
        );
    }
}
