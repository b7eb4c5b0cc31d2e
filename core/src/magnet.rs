//! Magnet URIs (BEP 9): `magnet:?xt=urn:btih:<hash>&dn=<name>&tr=<url>&x.pe=<peer>`.
//!
//! The info-hash is 40 hex or 32 base32 characters (BEP 9). Values are
//! percent-decoded (`+` as space) into one caller buffer, from which the
//! returned [`Magnet`] borrows; a buffer as long as the URI always suffices.
//! Bounded: at most [`MAX_TRACKERS`] `tr` and [`MAX_PEERS`] `x.pe`
//! parameters (more is an error, not a silent drop). Unknown parameters and
//! other `xt` URNs (e.g. BEP 52 `urn:btmh:`) are ignored; a second,
//! different `btih` is refused.

use core::fmt;

use heapless::Vec;

use crate::id::{IdError, InfoHash};
use crate::percent::{self, PercentError};

/// Most `tr` (tracker) parameters kept.
pub const MAX_TRACKERS: usize = 16;
/// Most `x.pe` (peer address) parameters kept.
pub const MAX_PEERS: usize = 16;

/// What was wrong with the URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Does not start with `magnet:?`.
    NotMagnet,
    /// No `xt=urn:btih:` parameter.
    MissingInfoHash,
    /// A malformed info-hash.
    BadInfoHash(IdError),
    /// Two different `btih` info-hashes.
    ConflictingInfoHash,
    /// A bad `%` escape.
    BadEscape,
    /// A decoded value is not UTF-8.
    NotUtf8,
    /// The decode buffer is too small.
    BufferFull,
    /// More than [`MAX_TRACKERS`] trackers.
    TooManyTrackers,
    /// More than [`MAX_PEERS`] peers.
    TooManyPeers,
}

/// A magnet error: what, and the byte offset into the URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    /// What was wrong.
    pub kind: ErrorKind,
    /// Byte offset into the URI.
    pub offset: usize,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::BadInfoHash(e) => write!(f, "magnet: {e}")?,
            k => write!(f, "magnet: {k:?}")?,
        }
        write!(f, " at byte {}", self.offset)
    }
}

impl core::error::Error for Error {}

/// A parsed magnet link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Magnet<'b> {
    /// The v1 info-hash (`xt=urn:btih:`).
    pub info_hash: InfoHash,
    /// `dn`: display name.
    pub display_name: Option<&'b str>,
    /// `tr`: tracker URLs, in order.
    pub trackers: Vec<&'b str, MAX_TRACKERS>,
    /// `x.pe`: peer addresses (`host:port`), in order.
    pub peers: Vec<&'b str, MAX_PEERS>,
}

impl<'b> Magnet<'b> {
    /// Parses `uri`, decoding values into `buf`.
    pub fn parse(uri: &str, buf: &'b mut [u8]) -> Result<Magnet<'b>, Error> {
        const PREFIX: &str = "magnet:?";
        let query = uri
            .get(..PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(PREFIX))
            .and_then(|_| uri.get(PREFIX.len()..))
            .ok_or(Error {
                kind: ErrorKind::NotMagnet,
                offset: 0,
            })?;
        let mut rest: &'b mut [u8] = buf;
        let mut info_hash: Option<InfoHash> = None;
        let mut m = Magnet {
            info_hash: InfoHash::default(),
            display_name: None,
            trackers: Vec::new(),
            peers: Vec::new(),
        };
        let mut offset = PREFIX.len();
        for param in query.split('&') {
            let at = offset;
            offset += param.len() + 1;
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let vat = at + key.len() + 1;
            let e = |kind| Error { kind, offset: vat };
            match key {
                "xt" => {
                    const BTIH: &str = "urn:btih:";
                    let Some(h) = value
                        .get(..BTIH.len())
                        .filter(|p| p.eq_ignore_ascii_case(BTIH))
                        .and_then(|_| value.get(BTIH.len()..))
                    else {
                        continue; // another URN (e.g. BEP 52 btmh): ignored
                    };
                    let hat = vat + BTIH.len();
                    let parsed = match h.len() {
                        32 => InfoHash::from_base32(h.as_bytes()),
                        _ => InfoHash::from_hex(h.as_bytes()),
                    }
                    .map_err(|ie| {
                        let off = match ie {
                            IdError::BadChar(i) => hat + i,
                            IdError::BadLength(_) => hat,
                        };
                        Error {
                            kind: ErrorKind::BadInfoHash(ie),
                            offset: off,
                        }
                    })?;
                    if info_hash.is_some_and(|prev| prev != parsed) {
                        return Err(e(ErrorKind::ConflictingInfoHash));
                    }
                    info_hash = Some(parsed);
                }
                "dn" | "tr" | "x.pe" => {
                    let (s, tail) = take_decoded(value, rest, vat)?;
                    rest = tail;
                    match key {
                        "dn" => m.display_name = Some(s),
                        "tr" => m
                            .trackers
                            .push(s)
                            .map_err(|_| e(ErrorKind::TooManyTrackers))?,
                        _ => m.peers.push(s).map_err(|_| e(ErrorKind::TooManyPeers))?,
                    }
                }
                _ => {} // BEP 9: unknown parameters are ignored
            }
        }
        m.info_hash = info_hash.ok_or(Error {
            kind: ErrorKind::MissingInfoHash,
            offset: 0,
        })?;
        Ok(m)
    }
}

/// Percent-decodes `value` into the front of `buf`; returns the decoded
/// text and the unused tail of `buf`.
fn take_decoded<'b>(
    value: &str,
    buf: &'b mut [u8],
    at: usize,
) -> Result<(&'b str, &'b mut [u8]), Error> {
    let n = percent::decode(value.as_bytes(), buf, true)
        .map_err(|pe| match pe {
            PercentError::BadEscape(i) => Error {
                kind: ErrorKind::BadEscape,
                offset: at + i,
            },
            PercentError::BufferFull(i) => Error {
                kind: ErrorKind::BufferFull,
                offset: at + i,
            },
        })?
        .len();
    let (head, tail) = buf.split_at_mut_checked(n).ok_or(Error {
        kind: ErrorKind::BufferFull,
        offset: at,
    })?;
    let s = core::str::from_utf8(head).map_err(|_| Error {
        kind: ErrorKind::NotUtf8,
        offset: at,
    })?;
    Ok((s, tail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;

    const HEX: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

    fn parse(uri: &str) -> Result<(InfoHash, Option<String>, usize, usize), Error> {
        let mut buf = [0u8; 4096];
        Magnet::parse(uri, &mut buf).map(|m| {
            (
                m.info_hash,
                m.display_name.map(String::from),
                m.trackers.len(),
                m.peers.len(),
            )
        })
    }

    #[test]
    fn full_magnet() {
        let uri = std::format!(
            "magnet:?xt=urn:btih:{HEX}&dn=My+File%20%C3%A9&tr=udp%3A%2F%2F127.0.0.1%3A6969&tr=http://t/a&x.pe=127.0.0.1:6881&foo=bar"
        );
        let mut buf = [0u8; 256];
        let m = Magnet::parse(&uri, &mut buf).unwrap();
        assert_eq!(m.info_hash, InfoHash::from_hex(HEX.as_bytes()).unwrap());
        assert_eq!(m.display_name, Some("My File é"));
        assert_eq!(&m.trackers[..], ["udp://127.0.0.1:6969", "http://t/a"]);
        assert_eq!(&m.peers[..], ["127.0.0.1:6881"]);
    }

    #[test]
    fn base32_and_case() {
        let (h, ..) = parse("MAGNET:?xt=URN:BTIH:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK").unwrap();
        assert_eq!(h, InfoHash::from_hex(HEX.as_bytes()).unwrap());
    }

    #[test]
    fn errors_with_offsets() {
        assert_eq!(
            parse("http://x").unwrap_err(),
            Error {
                kind: ErrorKind::NotMagnet,
                offset: 0
            }
        );
        assert_eq!(
            parse("magnet:?dn=x").unwrap_err().kind,
            ErrorKind::MissingInfoHash
        );
        assert_eq!(
            parse("magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88z").unwrap_err(),
            Error {
                kind: ErrorKind::BadInfoHash(IdError::BadChar(39)),
                offset: 20 + 39
            }
        );
        assert_eq!(
            parse("magnet:?xt=urn:btih:abc").unwrap_err().kind,
            ErrorKind::BadInfoHash(IdError::BadLength(3))
        );
        let other = "0000000000000000000000000000000000000000";
        let two = std::format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btih:{other}");
        assert_eq!(
            parse(&two).unwrap_err().kind,
            ErrorKind::ConflictingInfoHash
        );
        let same = std::format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btih:{HEX}");
        assert!(parse(&same).is_ok());
        let esc = std::format!("magnet:?xt=urn:btih:{HEX}&dn=a%2");
        assert_eq!(
            parse(&esc).unwrap_err(),
            Error {
                kind: ErrorKind::BadEscape,
                offset: 65
            }
        );
        let utf = std::format!("magnet:?xt=urn:btih:{HEX}&dn=%FF");
        assert_eq!(parse(&utf).unwrap_err().kind, ErrorKind::NotUtf8);
        // v2 URN alone is not enough.
        assert_eq!(
            parse("magnet:?xt=urn:btmh:1220abcd").unwrap_err().kind,
            ErrorKind::MissingInfoHash
        );
    }

    #[test]
    fn tracker_limit_edge_and_buffer() {
        let mut uri = std::format!("magnet:?xt=urn:btih:{HEX}");
        for i in 0..MAX_TRACKERS {
            uri += &std::format!("&tr=http://t{i}/");
        }
        assert_eq!(parse(&uri).unwrap().2, MAX_TRACKERS);
        uri += "&tr=http://one-more/";
        assert_eq!(parse(&uri).unwrap_err().kind, ErrorKind::TooManyTrackers);

        let uri = std::format!("magnet:?xt=urn:btih:{HEX}&dn=abcdef");
        let mut six = [0u8; 6];
        assert!(Magnet::parse(&uri, &mut six).is_ok());
        let mut five = [0u8; 5];
        assert_eq!(
            Magnet::parse(&uri, &mut five).unwrap_err().kind,
            ErrorKind::BufferFull
        );
    }

    #[test]
    fn thousand_tr_parameters_refused_at_the_first_extra() {
        // Attack: a magnet link with 1000 trackers (client-side DoS, or a
        // client turned into an announce flood). Refused at the value of the
        // 17th `tr`, never stored, never silently truncated.
        let mut uri = std::format!("magnet:?xt=urn:btih:{HEX}");
        let mut at = 0;
        for i in 0..1000 {
            if i == MAX_TRACKERS {
                at = uri.len() + "&tr=".len();
            }
            uri += &std::format!("&tr=udp%3A%2F%2Ft{i}.example%3A6969");
        }
        assert_eq!(
            parse(&uri).unwrap_err(),
            Error {
                kind: ErrorKind::TooManyTrackers,
                offset: at
            }
        );
    }

    #[test]
    fn truncated_escape_in_a_value() {
        // Attack: `%4` at the very end (one hex digit, then end of input):
        // an out-of-bounds read in naive decoders.
        let uri = std::format!("magnet:?xt=urn:btih:{HEX}&dn=ab%4");
        let at = uri.len() - 2;
        assert_eq!(
            parse(&uri).unwrap_err(),
            Error {
                kind: ErrorKind::BadEscape,
                offset: at
            }
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;
        proptest! {
            #[test]
            fn never_panics(s in "magnet:\\?[a-z.=&%:0-9A-F+]{0,120}") {
                let mut buf = [0u8; 64];
                let _ = Magnet::parse(&s, &mut buf);
            }
        }
    }
}
