//! The BEP 10 extension handshake: the bencoded dictionary sent as extended
//! message id 0.
//!
//! Known keys: `m` (extension name → message id, 0 = disabled), `v`
//! (client name), `p` (listen port), `reqq` (request queue length),
//! `metadata_size` (BEP 9), `yourip` (the receiver's address as the sender
//! sees it, 4 or 16 bytes). Unknown keys are ignored (BEP 10); so are
//! unknown names in `m`, which are kept for the shell to look up.
//!
//! Decoding uses [`crate::bencode::decode`] in lenient mode (real clients
//! send unsorted keys); repeated keys take the first value; `m` comes out sorted by name. Encoding uses the
//! core's canonical [`Encoder`].
//!
//! # Limits and refusals
//! - at most [`MAX_EXTENSION_TOKENS`] bencode values with
//!   [`ExtensionHandshake::decode`] (or the length of the caller's token
//!   slice with [`ExtensionHandshake::decode_with`]);
//! - at most [`MAX_EXTENSIONS`] entries in `m` ([`ExtensionError::TooManyExtensions`]);
//! - a known key with the wrong type or an out-of-range value
//!   ([`ExtensionError::BadValue`]): `m` ids 0..=255, `p` 0..=65535,
//!   `reqq` 0..=2^32-1, `metadata_size` ≥ 0, `yourip` 4 or 16 bytes;
//! - a payload that is not a dictionary.

use core::fmt;

use crate::bencode::{
    self, decode, DecodeOptions, EncodeError, Encoder, SliceWriter, Token, Value,
};

/// Most `m` entries kept (libtorrent sends about 6).
pub const MAX_EXTENSIONS: usize = 16;

/// Token budget of [`ExtensionHandshake::decode`] (each value is one
/// token; a typical handshake needs about 30).
pub const MAX_EXTENSION_TOKENS: usize = 128;

/// Which known key was malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `m`.
    M,
    /// `v`.
    V,
    /// `p`.
    P,
    /// `reqq`.
    Reqq,
    /// `metadata_size`.
    MetadataSize,
    /// `yourip`.
    YourIp,
}

/// Why an extension handshake was refused or could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtensionError {
    /// The payload is not valid bencode (or exceeds the token budget).
    Bencode(bencode::Error),
    /// The payload is not a dictionary.
    NotADict,
    /// More than [`MAX_EXTENSIONS`] entries in `m`.
    TooManyExtensions,
    /// A known key with the wrong type or range.
    BadValue(Field),
    /// Encoding: the output buffer is full.
    BufferTooSmall,
    /// Encoding: duplicate names in `m`.
    DuplicateName,
}

impl fmt::Display for ExtensionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtensionError::Bencode(e) => write!(f, "extension handshake: {e}"),
            ExtensionError::NotADict => f.write_str("extension handshake is not a dictionary"),
            ExtensionError::TooManyExtensions => write!(
                f,
                "extension handshake: more than {MAX_EXTENSIONS} extensions"
            ),
            ExtensionError::BadValue(k) => write!(f, "extension handshake: bad value for {k:?}"),
            ExtensionError::BufferTooSmall => f.write_str("extension handshake: buffer too small"),
            ExtensionError::DuplicateName => {
                f.write_str("extension handshake: duplicate extension name")
            }
        }
    }
}

impl core::error::Error for ExtensionError {}

/// A decoded (or to-be-encoded) extension handshake; byte strings borrow
/// from the payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtensionHandshake<'a> {
    /// BEP 10 `m`: extension name → the id the sender wants to receive it
    /// under (0 = disabled), sorted by name (decode sorts; the first of
    /// repeated names is kept).
    pub m: heapless::Vec<(&'a [u8], u8), MAX_EXTENSIONS>,
    /// BEP 10 `v`: client name and version (UTF-8 by convention).
    pub v: Option<&'a [u8]>,
    /// BEP 10 `p`: the sender's TCP listen port.
    pub p: Option<u16>,
    /// BEP 10 `reqq`: how many outstanding requests the sender accepts.
    pub reqq: Option<u32>,
    /// BEP 9 `metadata_size`: size of the info dictionary in bytes.
    pub metadata_size: Option<u64>,
    /// BEP 10 `yourip`: the receiver's IP as seen by the sender (4 or 16 bytes).
    pub yourip: Option<&'a [u8]>,
}

fn int_in<T: TryFrom<i64>>(v: Value<'_, '_>, field: Field) -> Result<T, ExtensionError> {
    v.as_int()
        .and_then(|i| T::try_from(i).ok())
        .ok_or(ExtensionError::BadValue(field))
}

impl<'a> ExtensionHandshake<'a> {
    /// The id the sender assigned to extension `name` (`None` if absent or 0).
    pub fn id_of(&self, name: &[u8]) -> Option<u8> {
        self.m
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, id)| id)
            .filter(|&id| id != 0)
    }

    /// Decodes a handshake payload with a stack token array of
    /// [`MAX_EXTENSION_TOKENS`].
    pub fn decode(payload: &'a [u8]) -> Result<Self, ExtensionError> {
        let mut tokens = [Token::EMPTY; MAX_EXTENSION_TOKENS];
        Self::decode_with(payload, &mut tokens)
    }

    /// Decodes a handshake payload using the caller's token array.
    pub fn decode_with(payload: &'a [u8], tokens: &mut [Token]) -> Result<Self, ExtensionError> {
        let doc =
            decode(payload, tokens, DecodeOptions::lenient()).map_err(ExtensionError::Bencode)?;
        let root = doc.root().ok_or(ExtensionError::NotADict)?;
        let entries = root.as_dict().ok_or(ExtensionError::NotADict)?;
        let mut out = ExtensionHandshake::default();
        let mut seen = [false; 6];
        for (key, value) in entries {
            let field = match key {
                b"m" => Field::M,
                b"v" => Field::V,
                b"p" => Field::P,
                b"reqq" => Field::Reqq,
                b"metadata_size" => Field::MetadataSize,
                b"yourip" => Field::YourIp,
                _ => continue, // BEP 10: unknown keys are ignored.
            };
            // Lenient mode may repeat a key: the first one counts.
            if let Some(s) = seen.get_mut(field as usize) {
                if *s {
                    continue;
                }
                *s = true;
            }
            match field {
                Field::M => {
                    let m = value.as_dict().ok_or(ExtensionError::BadValue(Field::M))?;
                    for (name, id) in m {
                        let id: u8 = int_in(id, Field::M)?;
                        if out.m.iter().any(|(n, _)| *n == name) {
                            continue;
                        }
                        out.m
                            .push((name, id))
                            .map_err(|_| ExtensionError::TooManyExtensions)?;
                    }
                    // Canonical order (by name) whatever order the peer sent,
                    // so decode → encode → decode is the identity (fuzz finding).
                    out.m.sort_unstable_by(|a, b| a.0.cmp(b.0));
                }
                Field::V => {
                    out.v = Some(value.as_bytes().ok_or(ExtensionError::BadValue(Field::V))?)
                }
                Field::P => out.p = Some(int_in(value, Field::P)?),
                Field::Reqq => out.reqq = Some(int_in(value, Field::Reqq)?),
                Field::MetadataSize => {
                    out.metadata_size = Some(int_in(value, Field::MetadataSize)?)
                }
                Field::YourIp => {
                    let ip = value
                        .as_bytes()
                        .filter(|b| b.len() == 4 || b.len() == 16)
                        .ok_or(ExtensionError::BadValue(Field::YourIp))?;
                    out.yourip = Some(ip);
                }
            }
        }
        Ok(out)
    }

    /// Encodes the handshake as canonical bencode into `out` (the payload
    /// of extended message 0); returns the length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, ExtensionError> {
        fn map(e: EncodeError<bencode::SliceWriterFull>) -> ExtensionError {
            match e {
                EncodeError::Write(_) => ExtensionError::BufferTooSmall,
                EncodeError::DuplicateKey => ExtensionError::DuplicateName,
                // Every other case is a bug in the code below; report it
                // as a bad `m` rather than panic.
                _ => ExtensionError::BadValue(Field::M),
            }
        }
        let mut names = self.m.clone();
        names.as_mut_slice().sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut e = Encoder::new(SliceWriter::new(out));
        e.begin_dict().map_err(map)?;
        // Keys in byte order: m < metadata_size < p < reqq < v < yourip.
        e.key(b"m").map_err(map)?;
        e.begin_dict().map_err(map)?;
        for &(name, id) in names.iter() {
            e.key(name).map_err(map)?;
            e.int(i64::from(id)).map_err(map)?;
        }
        e.end().map_err(map)?;
        if let Some(n) = self.metadata_size {
            let n = i64::try_from(n).map_err(|_| ExtensionError::BadValue(Field::MetadataSize))?;
            e.key(b"metadata_size").map_err(map)?;
            e.int(n).map_err(map)?;
        }
        if let Some(p) = self.p {
            e.key(b"p").map_err(map)?;
            e.int(i64::from(p)).map_err(map)?;
        }
        if let Some(q) = self.reqq {
            e.key(b"reqq").map_err(map)?;
            e.int(i64::from(q)).map_err(map)?;
        }
        if let Some(v) = self.v {
            e.key(b"v").map_err(map)?;
            e.bytes(v).map_err(map)?;
        }
        if let Some(ip) = self.yourip {
            if ip.len() != 4 && ip.len() != 16 {
                return Err(ExtensionError::BadValue(Field::YourIp));
            }
            e.key(b"yourip").map_err(map)?;
            e.bytes(ip).map_err(map)?;
        }
        e.end().map_err(map)?;
        let (_, n) = e.finish().map_err(map)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode::ErrorKind;

    /// A libtorrent-like handshake with unsorted keys and an unknown key.
    static LT: &[u8] = b"d1:md11:ut_metadatai2e6:ut_pexi1ee1:pi6881e13:metadata_sizei31235e\
4:reqqi500e11:upload_onlyi0e1:v16:libtorrent 2.0.86:yourip4:\x7f\x00\x00\x01e";

    #[test]
    fn m_is_sorted_by_name_whatever_the_input_order() {
        // "utOpex" sorts before "ut_metadata" ('O' < '_'); lenient input order
        // must not leak into the decoded value.
        let h = ExtensionHandshake::decode(b"d1:md11:ut_metadatai1e6:utOpexi2eee").unwrap();
        assert_eq!(
            h.m.as_slice(),
            &[(&b"utOpex"[..], 2), (&b"ut_metadata"[..], 1)]
        );
    }

    #[test]
    fn decodes_libtorrent_like() {
        let h = ExtensionHandshake::decode(LT).unwrap();
        assert_eq!(
            h.m.as_slice(),
            &[(&b"ut_metadata"[..], 2), (&b"ut_pex"[..], 1)]
        );
        assert_eq!(h.id_of(b"ut_pex"), Some(1));
        assert_eq!(h.id_of(b"lt_donthave"), None);
        assert_eq!(h.p, Some(6881));
        assert_eq!(h.reqq, Some(500));
        assert_eq!(h.metadata_size, Some(31235));
        assert_eq!(h.v, Some(&b"libtorrent 2.0.8"[..]));
        assert_eq!(h.yourip, Some(&[127, 0, 0, 1][..]));
        let mut buf = [0u8; 256];
        let n = h.encode(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            &b"d1:md11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei31235e1:pi6881e\
4:reqqi500e1:v16:libtorrent 2.0.86:yourip4:\x7f\x00\x00\x01e"[..]
        );
        assert_eq!(ExtensionHandshake::decode(&buf[..n]).unwrap(), h);
        assert_eq!(
            h.encode(&mut buf[..n - 1]),
            Err(ExtensionError::BufferTooSmall)
        );
    }

    #[test]
    fn minimal() {
        static EMPTY: &[u8] = b"de";
        let h = ExtensionHandshake::decode(EMPTY).unwrap();
        assert_eq!(h, ExtensionHandshake::default());
        let mut buf = [0u8; 16];
        let n = h.encode(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"d1:mdee");
    }

    #[test]
    fn refusals() {
        static LIST: &[u8] = b"le";
        static BAD_M: &[u8] = b"d1:mi1ee";
        static BIG_ID: &[u8] = b"d1:md1:ai256eee";
        static NEG_ID: &[u8] = b"d1:md1:ai-1eee";
        static BIG_PORT: &[u8] = b"d1:pi65536ee";
        static MAX_PORT: &[u8] = b"d1:pi65535ee";
        static BIG_REQQ: &[u8] = b"d4:reqqi4294967296ee";
        static NEG_SIZE: &[u8] = b"d13:metadata_sizei-1ee";
        static IP5: &[u8] = b"d6:yourip5:abcdee";
        static IP16: &[u8] = b"d6:yourip16:0123456789abcdefe";
        static V_INT: &[u8] = b"d1:vi1ee";
        static TRUNC: &[u8] = b"d1:m";
        assert_eq!(
            ExtensionHandshake::decode(LIST),
            Err(ExtensionError::NotADict)
        );
        assert_eq!(
            ExtensionHandshake::decode(BAD_M),
            Err(ExtensionError::BadValue(Field::M))
        );
        assert_eq!(
            ExtensionHandshake::decode(BIG_ID),
            Err(ExtensionError::BadValue(Field::M))
        );
        assert_eq!(
            ExtensionHandshake::decode(NEG_ID),
            Err(ExtensionError::BadValue(Field::M))
        );
        assert_eq!(
            ExtensionHandshake::decode(BIG_PORT),
            Err(ExtensionError::BadValue(Field::P))
        );
        assert_eq!(ExtensionHandshake::decode(MAX_PORT).unwrap().p, Some(65535));
        assert_eq!(
            ExtensionHandshake::decode(BIG_REQQ),
            Err(ExtensionError::BadValue(Field::Reqq))
        );
        assert_eq!(
            ExtensionHandshake::decode(NEG_SIZE),
            Err(ExtensionError::BadValue(Field::MetadataSize))
        );
        assert_eq!(
            ExtensionHandshake::decode(IP5),
            Err(ExtensionError::BadValue(Field::YourIp))
        );
        assert_eq!(
            ExtensionHandshake::decode(IP16)
                .unwrap()
                .yourip
                .map(|b| b.len()),
            Some(16)
        );
        assert_eq!(
            ExtensionHandshake::decode(V_INT),
            Err(ExtensionError::BadValue(Field::V))
        );
        assert!(matches!(
            ExtensionHandshake::decode(TRUNC),
            Err(ExtensionError::Bencode(bencode::Error {
                kind: ErrorKind::UnexpectedEnd,
                ..
            }))
        ));
    }

    #[test]
    fn extension_count_edge() {
        // MAX_EXTENSIONS entries accepted, one more refused.
        fn dict(n: usize, buf: &mut [u8]) -> usize {
            let mut e = Encoder::new(SliceWriter::new(buf));
            let names: [[u8; 2]; 26] = core::array::from_fn(|i| [b'a' + i as u8, b'x']);
            e.begin_dict().unwrap();
            e.key(b"m").unwrap();
            e.begin_dict().unwrap();
            for name in names.iter().take(n) {
                e.key(name).unwrap();
                e.int(1).unwrap();
            }
            e.end().unwrap();
            e.end().unwrap();
            e.finish().unwrap().1
        }
        let mut buf = [0u8; 512];
        let n = dict(MAX_EXTENSIONS, &mut buf);
        assert_eq!(
            ExtensionHandshake::decode(&buf[..n]).unwrap().m.len(),
            MAX_EXTENSIONS
        );
        let n = dict(MAX_EXTENSIONS + 1, &mut buf);
        assert_eq!(
            ExtensionHandshake::decode(&buf[..n]),
            Err(ExtensionError::TooManyExtensions)
        );
    }

    #[test]
    fn ten_thousand_m_entries_are_refused() {
        // Attack: an extension handshake whose `m` has 10 000 entries
        // (hash-map growth / CPU in clients that store every name).
        let mut p = std::vec::Vec::from(&b"d1:md"[..]);
        for i in 0..10_000u32 {
            let name = std::format!("x{i:05}");
            p.extend_from_slice(std::format!("{}:{name}i1e", name.len()).as_bytes());
        }
        p.extend_from_slice(b"ee");
        // The default token budget stops it inside `m`: 1 (root) + 1 (key)
        // + 1 (m) + 2 per entry, so the 63rd entry's value is the 129th token.
        let entry = 2 + 6 + 3; // "6:x00000i1e"
        assert_eq!(
            ExtensionHandshake::decode(&p),
            Err(ExtensionError::Bencode(bencode::Error {
                kind: ErrorKind::TokenLimit,
                offset: 5 + 62 * entry + 8
            }))
        );
        // With tokens for everything, the `m` bound refuses it.
        let mut tokens = std::vec![Token::EMPTY; 20_010];
        assert_eq!(
            ExtensionHandshake::decode_with(&p, &mut tokens),
            Err(ExtensionError::TooManyExtensions)
        );
    }

    #[test]
    fn token_limit() {
        let mut tokens = [Token::EMPTY; 3];
        assert!(ExtensionHandshake::decode_with(b"d1:pi1ee", &mut tokens).is_ok());
        assert!(matches!(
            ExtensionHandshake::decode_with(b"d1:pi1e1:vi1ee", &mut tokens),
            Err(ExtensionError::Bencode(bencode::Error {
                kind: ErrorKind::TokenLimit,
                ..
            }))
        ));
    }

    #[test]
    fn duplicate_name_refused_on_encode() {
        let mut h = ExtensionHandshake::default();
        h.m.push((b"a", 1)).unwrap();
        h.m.push((b"a", 2)).unwrap();
        assert_eq!(h.encode(&mut [0u8; 64]), Err(ExtensionError::DuplicateName));
    }
}
