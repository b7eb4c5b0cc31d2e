//! Info-hashes and peer ids (BEP 3): 20-byte identifiers and their hex,
//! base32 (BEP 9 magnet links) and percent-encoded forms.

use core::fmt;

/// Length of a SHA-1 info-hash or a peer id.
pub const ID_LEN: usize = 20;

/// Why a textual id could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdError {
    /// Wrong number of characters (40 for hex, 32 for base32).
    BadLength(usize),
    /// A character outside the alphabet, at this offset.
    BadChar(usize),
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::BadLength(n) => write!(f, "id has {n} characters (want 40 hex or 32 base32)"),
            IdError::BadChar(at) => write!(f, "invalid id character at offset {at}"),
        }
    }
}

impl core::error::Error for IdError {}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; ID_LEN]);

        impl $name {
            /// Parses 40 hex digits (either case).
            pub fn from_hex(s: &[u8]) -> Result<Self, IdError> {
                decode_hex(s).map($name)
            }

            /// Parses 32 base32 characters (RFC 4648 alphabet, either case).
            pub fn from_base32(s: &[u8]) -> Result<Self, IdError> {
                decode_base32(s).map($name)
            }

            /// The id from exactly 20 raw bytes.
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                b.try_into().ok().map($name)
            }

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; ID_LEN] {
                &self.0
            }

            /// Lower-case hex, as 40 ASCII bytes.
            pub fn to_hex(&self) -> [u8; 2 * ID_LEN] {
                encode_hex(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }
    };
}

id_type!(
    /// A v1 info-hash: SHA-1 of the bencoded `info` dict (BEP 3).
    InfoHash
);
id_type!(
    /// A peer id (BEP 3; BEP 20 conventions for its prefix).
    PeerId
);

/// Our peer-id prefix (BEP 20, Azureus style: `-`, client code `OT`, four
/// version digits, `-`), one for every shell.
pub const CLIENT_PREFIX: [u8; 8] = *b"-OT0100-";

impl PeerId {
    /// A fresh peer id: [`CLIENT_PREFIX`] then 12 random bytes drawn from
    /// `next_u32` (the shell's random source; the core has none).
    pub fn generate(mut next_u32: impl FnMut() -> u32) -> PeerId {
        let mut id = [0u8; ID_LEN];
        let (prefix, tail) = id.split_at_mut(CLIENT_PREFIX.len());
        prefix.copy_from_slice(&CLIENT_PREFIX);
        for chunk in tail.chunks_mut(4) {
            let r = next_u32().to_be_bytes();
            for (d, s) in chunk.iter_mut().zip(r) {
                *d = s;
            }
        }
        PeerId(id)
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Hex digit for a nibble (lower case).
pub(crate) fn hex_digit(n: u8) -> u8 {
    b"0123456789abcdef"
        .get(usize::from(n & 0xf))
        .copied()
        .unwrap_or(b'0')
}

fn encode_hex(b: &[u8; ID_LEN]) -> [u8; 2 * ID_LEN] {
    let mut out = [0u8; 2 * ID_LEN];
    for (pair, byte) in out.chunks_exact_mut(2).zip(b) {
        pair.copy_from_slice(&[hex_digit(byte >> 4), hex_digit(*byte)]);
    }
    out
}

fn decode_hex(s: &[u8]) -> Result<[u8; ID_LEN], IdError> {
    if s.len() != 2 * ID_LEN {
        return Err(IdError::BadLength(s.len()));
    }
    let mut out = [0u8; ID_LEN];
    for (i, (o, pair)) in out.iter_mut().zip(s.chunks_exact(2)).enumerate() {
        let (&[h, l], off) = (pair, 2 * i) else {
            return Err(IdError::BadLength(s.len()));
        };
        let hv = hex_val(h).ok_or(IdError::BadChar(off))?;
        let lv = hex_val(l).ok_or(IdError::BadChar(off + 1))?;
        *o = (hv << 4) | lv;
    }
    Ok(out)
}

fn decode_base32(s: &[u8]) -> Result<[u8; ID_LEN], IdError> {
    // 32 characters × 5 bits = 160 bits = 20 bytes, no padding.
    if s.len() != 32 {
        return Err(IdError::BadLength(s.len()));
    }
    let mut out = [0u8; ID_LEN];
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    let mut o = 0usize;
    for (i, &c) in s.iter().enumerate() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return Err(IdError::BadChar(i)),
        };
        acc = (acc << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            if let Some(slot) = out.get_mut(o) {
                *slot = (acc >> bits) as u8;
            }
            o += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &[u8] = b"c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

    #[test]
    fn generated_peer_ids_carry_the_prefix_and_the_random_tail() {
        let mut n = 0x0102_0304u32;
        let id = PeerId::generate(|| {
            n = n.wrapping_add(0x1111_1111);
            n
        });
        assert_eq!(&id.0[..8], b"-OT0100-");
        assert_eq!(
            &id.0[8..],
            &[0x12, 0x13, 0x14, 0x15, 0x23, 0x24, 0x25, 0x26, 0x34, 0x35, 0x36, 0x37]
        );
        let mut k = 0u32;
        let other = PeerId::generate(|| {
            k += 1;
            k
        });
        assert_ne!(id, other);
    }

    #[test]
    fn hex_round_trip() {
        let h = InfoHash::from_hex(HEX).unwrap();
        assert_eq!(&h.to_hex()[..], HEX);
        assert_eq!(std::format!("{h}").as_bytes(), HEX);
        let upper = std::string::String::from_utf8(HEX.to_ascii_uppercase()).unwrap();
        assert_eq!(InfoHash::from_hex(upper.as_bytes()).unwrap(), h);
    }

    #[test]
    fn hex_errors() {
        assert_eq!(InfoHash::from_hex(&HEX[..39]), Err(IdError::BadLength(39)));
        let mut bad = HEX.to_vec();
        bad[7] = b'g';
        assert_eq!(InfoHash::from_hex(&bad), Err(IdError::BadChar(7)));
    }

    #[test]
    fn base32_matches_hex() {
        // The BEP 9 example's hash in base32 and hex forms.
        let b32 = InfoHash::from_base32(b"YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK").unwrap();
        assert_eq!(b32, InfoHash::from_hex(HEX).unwrap());
        let lower = InfoHash::from_base32(b"yex6dqdlxisuvhoj6um3gnnkpqjwpkek").unwrap();
        assert_eq!(lower, b32);
        assert_eq!(
            InfoHash::from_base32(b"YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKE1"),
            Err(IdError::BadChar(31))
        );
        assert_eq!(InfoHash::from_base32(b"AAAA"), Err(IdError::BadLength(4)));
    }
}
