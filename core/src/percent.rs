//! Percent-encoding (RFC 3986 §2.1) for tracker queries and magnet links.
//!
//! Encoding leaves only RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`)
//! as they are; binary info-hashes and peer ids in HTTP tracker queries
//! (BEP 3) are escaped byte by byte. Decoding writes into a caller buffer
//! and optionally maps `+` to space (HTML form encoding, seen in magnets).

use core::fmt;

use crate::id::hex_digit;

/// Why percent-decoding failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PercentError {
    /// `%` not followed by two hex digits, at this offset of the input.
    BadEscape(usize),
    /// The output buffer is too small; this many input bytes were decoded.
    BufferFull(usize),
}

impl fmt::Display for PercentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PercentError::BadEscape(at) => write!(f, "bad percent escape at offset {at}"),
            PercentError::BufferFull(at) => write!(f, "decode buffer full at offset {at}"),
        }
    }
}

impl core::error::Error for PercentError {}

/// True for RFC 3986 unreserved bytes, which are never escaped.
pub fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// A `Display` adapter that percent-encodes bytes (for `write!` into any
/// `fmt::Write`, e.g. a `heapless::String`).
#[derive(Clone, Copy, Debug)]
pub struct Encoded<'a>(pub &'a [u8]);

impl fmt::Display for Encoded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            if is_unreserved(b) {
                fmt::Write::write_char(f, char::from(b))?;
            } else {
                let esc = [
                    b'%',
                    hex_digit(b >> 4).to_ascii_uppercase(),
                    hex_digit(b).to_ascii_uppercase(),
                ];
                f.write_str(core::str::from_utf8(&esc).map_err(|_| fmt::Error)?)?;
            }
        }
        Ok(())
    }
}

/// Length of the encoding of `input`.
pub fn encoded_len(input: &[u8]) -> usize {
    input
        .iter()
        .map(|&b| if is_unreserved(b) { 1 } else { 3 })
        .sum()
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Decodes `input` into `out`; returns the decoded prefix of `out`.
/// With `plus_is_space`, `+` decodes to a space.
pub fn decode<'o>(
    input: &[u8],
    out: &'o mut [u8],
    plus_is_space: bool,
) -> Result<&'o mut [u8], PercentError> {
    let mut i = 0;
    let mut n = 0;
    while let Some(&c) = input.get(i) {
        let (byte, used) = match c {
            b'%' => {
                let h = input.get(i + 1).copied().and_then(hex_val);
                let l = input.get(i + 2).copied().and_then(hex_val);
                match (h, l) {
                    (Some(h), Some(l)) => ((h << 4) | l, 3),
                    _ => return Err(PercentError::BadEscape(i)),
                }
            }
            b'+' if plus_is_space => (b' ', 1),
            other => (other, 1),
        };
        let slot = out.get_mut(n).ok_or(PercentError::BufferFull(i))?;
        *slot = byte;
        n += 1;
        i += used;
    }
    Ok(out.get_mut(..n).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn encode_binary_hash() {
        let b = [0x12, 0x34, b'a', b'~', b' ', 0xff];
        assert_eq!(format!("{}", Encoded(&b)), "%124a~%20%FF");
        assert_eq!(encoded_len(&b), 12);
    }

    #[test]
    fn decode_ok_and_errors() {
        let mut buf = [0u8; 16];
        assert_eq!(decode(b"a%20b+c", &mut buf, true).unwrap(), b"a b c");
        assert_eq!(decode(b"a+c%2b", &mut buf, false).unwrap(), b"a+c+");
        assert_eq!(
            decode(b"ab%2", &mut buf, false),
            Err(PercentError::BadEscape(2))
        );
        assert_eq!(
            decode(b"%zz", &mut buf, false),
            Err(PercentError::BadEscape(0))
        );
        let mut small = [0u8; 2];
        assert_eq!(
            decode(b"abc", &mut small, false),
            Err(PercentError::BufferFull(2))
        );
        // Exactly full is fine (edge of the buffer).
        assert_eq!(decode(b"a%41", &mut small, false).unwrap(), b"aA");
    }

    #[test]
    fn truncated_escape_percent4() {
        // Attack: `%` followed by fewer than two hex digits at the end of
        // the input (naive decoders read past the end).
        let mut buf = [0u8; 16];
        assert_eq!(
            decode(b"%4", &mut buf, false),
            Err(PercentError::BadEscape(0))
        );
        assert_eq!(
            decode(b"%", &mut buf, false),
            Err(PercentError::BadEscape(0))
        );
        assert_eq!(
            decode(b"abc%4", &mut buf, true),
            Err(PercentError::BadEscape(3))
        );
        assert_eq!(
            decode(b"%4g", &mut buf, false),
            Err(PercentError::BadEscape(0))
        );
        // The bytes before the bad escape were decoded, nothing more.
        assert_eq!(&buf[..3], b"abc");
    }

    #[test]
    fn round_trip_all_bytes() {
        let all: std::vec::Vec<u8> = (0..=255).collect();
        let enc = format!("{}", Encoded(&all));
        let mut buf = [0u8; 256];
        assert_eq!(decode(enc.as_bytes(), &mut buf, false).unwrap(), &all[..]);
    }
}
