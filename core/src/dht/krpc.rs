//! KRPC (BEP 5): the DHT's bencoded query/response/error datagrams.
//!
//! [`decode`] reads one datagram into a [`Message`] borrowing from the input,
//! through the [`crate::bencode`] decoder (lenient key order, as real nodes
//! do not all sort keys) with a caller-provided token array. [`encode`]
//! writes a message as canonical bencode into a caller buffer.
//!
//! Understood: queries `ping`, `find_node`, `get_peers`, `announce_peer`
//! (with `implied_port`), any other query name as [`Query::Unknown`] (a node
//! answers it with error 204); responses with `id`, `nodes` (compact, 26
//! bytes per node), `values` (compact IPv4 peers, 6 bytes each) and `token`;
//! errors `[code, message]`; a response's top-level `ip` (BEP 42). Ignored: every other key (`v`, `ip`, `p`, `bs`,
//! `nodes6`, `want`, …) and `values` entries that are not 6 bytes (IPv6).
//! `ro` (BEP 43, read-only node) is kept.
//!
//! Limits: a datagram of at most [`MAX_DATAGRAM_LEN`] bytes, a transaction id
//! of at most [`MAX_TID_LEN`] bytes, a token of at most [`MAX_TOKEN_LEN`]
//! bytes, an error message of at most [`MAX_ERROR_MESSAGE_LEN`] bytes, and as
//! many values as the caller's token array holds. Every error carries the
//! byte offset of the offending value.

use core::fmt;
use core::net::{Ipv4Addr, SocketAddrV4};

use super::NodeId;
use crate::bencode::{self, DecodeOptions, EncodeError, Encoder, SliceWriter, TokenKind, Value};
use crate::id::InfoHash;

pub use crate::bencode::Token;

/// Largest datagram decoded (bigger ones are refused before parsing). A
/// full get_peers reply from libtorrent stays well under a 1500-byte MTU.
pub const MAX_DATAGRAM_LEN: usize = 1500;
/// Longest transaction id accepted (BEP 5 ids are typically 2–4 bytes).
pub const MAX_TID_LEN: usize = 16;
/// Longest write token accepted (libtorrent sends 4 bytes, others ≤ 20).
pub const MAX_TOKEN_LEN: usize = 32;
/// Longest error message accepted.
pub const MAX_ERROR_MESSAGE_LEN: usize = 256;
/// Tokens enough for any datagram a node needs to read: 16 fixed values
/// plus one per peer in `values` (a 1500-byte datagram holds at most 187).
pub const RECOMMENDED_TOKENS: usize = 208;
/// BEP 5: bytes of one compact node (20-byte id, IPv4, port).
pub const COMPACT_NODE_LEN: usize = 26;
/// BEP 5 / BEP 23: bytes of one compact IPv4 peer.
pub const COMPACT_PEER_LEN: usize = 6;

/// BEP 5 error codes.
pub mod error_code {
    /// 201 Generic Error.
    pub const GENERIC: i64 = 201;
    /// 202 Server Error.
    pub const SERVER: i64 = 202;
    /// 203 Protocol Error (malformed packet, invalid arguments, bad token).
    pub const PROTOCOL: i64 = 203;
    /// 204 Method Unknown.
    pub const METHOD_UNKNOWN: i64 = 204;
}

/// One KRPC datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// `t`: the transaction id, echoed in the reply.
    pub tid: &'a [u8],
    /// `ro` = 1 (BEP 43): the sender is read-only; do not add it to a table.
    pub read_only: bool,
    /// `y` and its payload.
    pub body: Body<'a>,
}

/// The three kinds of KRPC message (`y` = `q`, `r`, `e`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    /// `y=q`: a query and its arguments.
    Query {
        /// The querying node's id (`a.id`).
        id: NodeId,
        /// The method and its method-specific arguments.
        query: Query<'a>,
    },
    /// `y=r`: a response (`r` dict).
    Response(Response<'a>),
    /// `y=e`: an error (`e` = `[code, message]`).
    Error {
        /// Error code (201–204 in BEP 5; any integer is accepted).
        code: i64,
        /// Human-readable message.
        message: &'a [u8],
    },
}

/// A query method and its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Query<'a> {
    /// `ping`.
    Ping,
    /// `find_node`: the `target` id.
    FindNode {
        /// Id whose closest nodes are wanted.
        target: NodeId,
    },
    /// `get_peers`.
    GetPeers {
        /// Torrent whose peers are wanted.
        info_hash: InfoHash,
    },
    /// `announce_peer`.
    AnnouncePeer {
        /// Torrent announced.
        info_hash: InfoHash,
        /// `port` (may be absent when `implied_port` is set; then 0).
        port: u16,
        /// `implied_port` = 1: use the datagram's source port instead.
        implied_port: bool,
        /// The write token from an earlier get_peers reply.
        token: &'a [u8],
    },
    /// Any other method (answered with error 204).
    Unknown {
        /// The `q` value.
        method: &'a [u8],
    },
}

/// A response's fields (`r` dict).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response<'a> {
    /// The responding node's id.
    pub id: NodeId,
    /// `nodes`: compact node info.
    pub nodes: Option<CompactNodes<'a>>,
    /// `values`: compact peers.
    pub values: Option<Values<'a>>,
    /// `token`: write token for a later announce_peer.
    pub token: Option<&'a [u8]>,
    /// Top-level `ip` (BEP 42): the address the responder saw us at
    /// (compact IPv4; other lengths are ignored).
    pub ip: Option<SocketAddrV4>,
}

/// A `nodes` string: whole 26-byte compact nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactNodes<'a>(&'a [u8]);

impl<'a> CompactNodes<'a> {
    /// Wraps compact node bytes (`None` unless a multiple of 26 bytes).
    pub fn new(b: &'a [u8]) -> Option<Self> {
        (b.len() % COMPACT_NODE_LEN == 0).then_some(CompactNodes(b))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.0.len() / COMPACT_NODE_LEN
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The nodes, in order.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, SocketAddrV4)> + 'a {
        self.0.chunks_exact(COMPACT_NODE_LEN).filter_map(|c| {
            let (id, addr) = c.split_at(20);
            Some((NodeId::from_slice(id)?, peer_from_compact(addr)?))
        })
    }
}

/// A `values` list, kept as its raw bencoded bytes (validated at decode to
/// be a list of byte strings); iteration yields its 6-byte entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Values<'a>(&'a [u8]);

impl<'a> Values<'a> {
    /// The compact IPv4 peers (entries of other lengths are skipped).
    pub fn iter(&self) -> ValuesIter<'a> {
        ValuesIter {
            rest: self
                .0
                .get(1..self.0.len().saturating_sub(1))
                .unwrap_or_default(),
        }
    }
}

/// Iterator over [`Values`].
#[derive(Clone, Debug)]
pub struct ValuesIter<'a> {
    rest: &'a [u8],
}

impl Iterator for ValuesIter<'_> {
    type Item = SocketAddrV4;

    fn next(&mut self) -> Option<SocketAddrV4> {
        loop {
            // Each entry is `<len>:<bytes>` (checked by the decoder).
            let colon = self.rest.iter().position(|&b| b == b':')?;
            let len = self.rest.get(..colon)?.iter().try_fold(0usize, |n, &d| {
                n.checked_mul(10)?
                    .checked_add(usize::from(d.checked_sub(b'0')?))
            })?;
            let start = colon + 1;
            let entry = self.rest.get(start..start.checked_add(len)?)?;
            self.rest = self.rest.get(start + len..)?;
            if let Some(p) = peer_from_compact(entry) {
                return Some(p);
            }
        }
    }
}

/// A compact IPv4 peer (6 bytes, network order).
pub fn peer_from_compact(b: &[u8]) -> Option<SocketAddrV4> {
    let b: [u8; 6] = b.try_into().ok()?;
    let [a, b1, c, d, p0, p1] = b;
    Some(SocketAddrV4::new(
        Ipv4Addr::new(a, b1, c, d),
        u16::from_be_bytes([p0, p1]),
    ))
}

/// The compact form of an IPv4 peer.
pub fn peer_to_compact(a: &SocketAddrV4) -> [u8; 6] {
    let [o0, o1, o2, o3] = a.ip().octets();
    let [p0, p1] = a.port().to_be_bytes();
    [o0, o1, o2, o3, p0, p1]
}

/// The compact form of a node.
pub fn node_to_compact(id: &NodeId, a: &SocketAddrV4) -> [u8; COMPACT_NODE_LEN] {
    let mut out = [0u8; COMPACT_NODE_LEN];
    let (i, p) = out.split_at_mut(20);
    i.copy_from_slice(&id.0);
    p.copy_from_slice(&peer_to_compact(a));
    out
}

/// What was wrong with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Longer than [`MAX_DATAGRAM_LEN`].
    TooLong,
    /// Not valid bencode (or over the token limit).
    Bencode(bencode::ErrorKind),
    /// The top-level value (or `a`/`r`) is not a dict.
    NotADict,
    /// A required key is absent.
    Missing(&'static str),
    /// A key holds the wrong kind of value.
    WrongType(&'static str),
    /// A byte string of the wrong length (ids: 20; nodes: a multiple of 26;
    /// `t`, `token`, error message: over their limit).
    BadLength(&'static str),
    /// `y` is not `q`, `r` or `e`.
    UnknownType,
    /// `port` outside 1..=65535 (0 only with `implied_port`).
    BadPort,
    /// `e` is not `[integer, string]`.
    BadError,
}

/// A decode error: what and where (byte offset into the datagram).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    /// What was wrong.
    pub kind: ErrorKind,
    /// Byte offset of the offending value.
    pub offset: usize,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KRPC: {:?} at byte {}", self.kind, self.offset)
    }
}

impl core::error::Error for Error {}

fn fail<T>(kind: ErrorKind, offset: usize) -> Result<T, Error> {
    Err(Error { kind, offset })
}

fn need<'a, 't>(d: Value<'a, 't>, key: &'static str) -> Result<Value<'a, 't>, Error> {
    match d.get(key.as_bytes()) {
        Some(v) => Ok(v),
        None => fail(ErrorKind::Missing(key), d.offset()),
    }
}

fn bytes<'a>(v: Value<'a, '_>, key: &'static str, max: usize) -> Result<&'a [u8], Error> {
    let Some(b) = v.as_bytes() else {
        return fail(ErrorKind::WrongType(key), v.offset());
    };
    if b.len() > max {
        return fail(ErrorKind::BadLength(key), v.offset());
    }
    Ok(b)
}

fn id20(v: Value<'_, '_>, key: &'static str) -> Result<[u8; 20], Error> {
    let b = bytes(v, key, usize::MAX)?;
    match b.try_into() {
        Ok(a) => Ok(a),
        Err(_) => fail(ErrorKind::BadLength(key), v.offset()),
    }
}

fn int(v: Value<'_, '_>, key: &'static str) -> Result<i64, Error> {
    match v.as_int() {
        Some(i) => Ok(i),
        None => fail(ErrorKind::WrongType(key), v.offset()),
    }
}

fn dict<'a, 't>(v: Value<'a, 't>, key: &'static str) -> Result<Value<'a, 't>, Error> {
    if v.kind() == TokenKind::Dict {
        Ok(v)
    } else {
        fail(ErrorKind::WrongType(key), v.offset())
    }
}

/// Decodes one KRPC datagram. `tokens` bounds how many bencode values it
/// may hold ([`RECOMMENDED_TOKENS`] covers any datagram a node needs).
pub fn decode<'a>(input: &'a [u8], tokens: &mut [Token]) -> Result<Message<'a>, Error> {
    if input.len() > MAX_DATAGRAM_LEN {
        return fail(ErrorKind::TooLong, MAX_DATAGRAM_LEN);
    }
    let opts = DecodeOptions {
        max_depth: 4,
        ..DecodeOptions::lenient()
    };
    let doc = bencode::decode(input, tokens, opts).map_err(|e| Error {
        kind: ErrorKind::Bencode(e.kind),
        offset: e.offset,
    })?;
    let Some(root) = doc.root() else {
        return fail(ErrorKind::NotADict, 0);
    };
    if root.kind() != TokenKind::Dict {
        return fail(ErrorKind::NotADict, 0);
    }
    let tid = bytes(need(root, "t")?, "t", MAX_TID_LEN)?;
    let read_only = matches!(root.get(b"ro").and_then(|v| v.as_int()), Some(1));
    let y = need(root, "y")?;
    let body = match bytes(y, "y", usize::MAX)? {
        b"q" => decode_query(root)?,
        b"r" => {
            let mut r = decode_response(dict(need(root, "r")?, "r")?)?;
            r.ip = root
                .get(b"ip")
                .and_then(|v| v.as_bytes())
                .and_then(peer_from_compact);
            Body::Response(r)
        }
        b"e" => decode_error(need(root, "e")?)?,
        _ => return fail(ErrorKind::UnknownType, y.offset()),
    };
    Ok(Message {
        tid,
        read_only,
        body,
    })
}

fn decode_query<'a>(root: Value<'a, '_>) -> Result<Body<'a>, Error> {
    let q = need(root, "q")?;
    let method = bytes(q, "q", usize::MAX)?;
    let a = dict(need(root, "a")?, "a")?;
    let id = NodeId(id20(need(a, "id")?, "id")?);
    let query = match method {
        b"ping" => Query::Ping,
        b"find_node" => Query::FindNode {
            target: NodeId(id20(need(a, "target")?, "target")?),
        },
        b"get_peers" => Query::GetPeers {
            info_hash: InfoHash(id20(need(a, "info_hash")?, "info_hash")?),
        },
        b"announce_peer" => {
            let info_hash = InfoHash(id20(need(a, "info_hash")?, "info_hash")?);
            // BEP 5: implied_port is "0 or 1"; any non-zero counts as set.
            let implied_port = match a.get(b"implied_port") {
                Some(v) => int(v, "implied_port")? != 0,
                None => false,
            };
            let port = match a.get(b"port") {
                Some(v) => {
                    let p = int(v, "port")?;
                    match u16::try_from(p) {
                        Ok(p) if p != 0 || implied_port => p,
                        _ => return fail(ErrorKind::BadPort, v.offset()),
                    }
                }
                None if implied_port => 0,
                None => return fail(ErrorKind::Missing("port"), a.offset()),
            };
            let token = bytes(need(a, "token")?, "token", MAX_TOKEN_LEN)?;
            Query::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
            }
        }
        other => Query::Unknown { method: other },
    };
    Ok(Body::Query { id, query })
}

fn decode_response<'a>(r: Value<'a, '_>) -> Result<Response<'a>, Error> {
    let id = NodeId(id20(need(r, "id")?, "id")?);
    let nodes = match r.get(b"nodes") {
        Some(v) => match CompactNodes::new(bytes(v, "nodes", usize::MAX)?) {
            Some(n) => Some(n),
            None => return fail(ErrorKind::BadLength("nodes"), v.offset()),
        },
        None => None,
    };
    let values = match r.get(b"values") {
        Some(v) => {
            let Some(mut items) = v.as_list() else {
                return fail(ErrorKind::WrongType("values"), v.offset());
            };
            if let Some(bad) = items.find(|e| e.kind() != TokenKind::Bytes) {
                return fail(ErrorKind::WrongType("values"), bad.offset());
            }
            Some(Values(v.raw()))
        }
        None => None,
    };
    let token = match r.get(b"token") {
        Some(v) => Some(bytes(v, "token", MAX_TOKEN_LEN)?),
        None => None,
    };
    Ok(Response {
        id,
        nodes,
        values,
        token,
        ip: None,
    })
}

fn decode_error<'a>(e: Value<'a, '_>) -> Result<Body<'a>, Error> {
    let bad = Error {
        kind: ErrorKind::BadError,
        offset: e.offset(),
    };
    let mut items = e.as_list().ok_or(bad)?;
    let code = items.next().and_then(|v| v.as_int()).ok_or(bad)?;
    let msg = items.next().ok_or(bad)?;
    let message = bytes(msg, "e", MAX_ERROR_MESSAGE_LEN)?;
    Ok(Body::Error { code, message })
}

/// Why [`encode`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeErrorKind {
    /// The output buffer is too small.
    BufferFull,
    /// A field over its limit (tid, token, message) that [`decode`] would
    /// refuse, or a port of 0 without `implied_port`.
    Invalid,
}

impl<E> From<EncodeError<E>> for EncodeErrorKind {
    fn from(e: EncodeError<E>) -> Self {
        match e {
            EncodeError::Write(_) => EncodeErrorKind::BufferFull,
            _ => EncodeErrorKind::Invalid,
        }
    }
}

/// What a response encoder writes: the nodes and values may come from any
/// source (the node writes them straight from its table and peer store).
#[derive(Clone, Copy, Debug)]
pub struct ResponseParts<'a, V> {
    /// Responder id.
    pub id: NodeId,
    /// Compact nodes (26 bytes each) to write (`None`: no `nodes` key).
    pub nodes: Option<&'a [u8]>,
    /// Peers to write (`None`: no `values` key).
    pub values: Option<V>,
    /// Write token.
    pub token: Option<&'a [u8]>,
    /// The requester's address as we saw it (BEP 42 `ip`).
    pub ip: Option<SocketAddrV4>,
}

type W<'b> = Encoder<'static, SliceWriter<'b>>;
type R = Result<(), EncodeErrorKind>;

fn put(e: &mut W<'_>, k: &'static [u8], v: &[u8]) -> R {
    e.key(k)?;
    e.bytes(v)?;
    Ok(())
}

fn begin(out: &mut [u8]) -> Result<W<'_>, EncodeErrorKind> {
    let mut e = Encoder::new(SliceWriter::new(out));
    e.begin_dict()?;
    Ok(e)
}

fn trailer(mut e: W<'_>, tid: &[u8], ro: bool, y: &'static [u8]) -> Result<usize, EncodeErrorKind> {
    if tid.len() > MAX_TID_LEN {
        return Err(EncodeErrorKind::Invalid);
    }
    if ro {
        e.key(b"ro")?;
        e.int(1)?;
    }
    put(&mut e, b"t", tid)?;
    put(&mut e, b"y", y)?;
    e.end()?;
    Ok(e.finish()?.1)
}

/// Encodes `msg` as canonical bencode into `out`; returns the length.
pub fn encode(msg: &Message<'_>, out: &mut [u8]) -> Result<usize, EncodeErrorKind> {
    match msg.body {
        Body::Query { id, query } => encode_query(msg.tid, msg.read_only, &id, &query, out),
        Body::Response(r) => encode_response(
            msg.tid,
            msg.read_only,
            ResponseParts {
                id: r.id,
                nodes: r.nodes.map(|n| n.as_bytes()),
                values: r.values.map(|v| v.iter()),
                token: r.token,
                ip: r.ip,
            },
            out,
        ),
        Body::Error { code, message } => encode_error(msg.tid, code, message, out),
    }
}

/// Encodes a query.
pub fn encode_query(
    tid: &[u8],
    read_only: bool,
    id: &NodeId,
    query: &Query<'_>,
    out: &mut [u8],
) -> Result<usize, EncodeErrorKind> {
    let mut e = begin(out)?;
    e.key(b"a")?;
    e.begin_dict()?;
    put(&mut e, b"id", &id.0)?;
    let method: &[u8] = match *query {
        Query::Ping => b"ping",
        Query::FindNode { target } => {
            put(&mut e, b"target", &target.0)?;
            b"find_node"
        }
        Query::GetPeers { info_hash } => {
            put(&mut e, b"info_hash", &info_hash.0)?;
            b"get_peers"
        }
        Query::AnnouncePeer {
            info_hash,
            port,
            implied_port,
            token,
        } => {
            if token.len() > MAX_TOKEN_LEN || (port == 0 && !implied_port) {
                return Err(EncodeErrorKind::Invalid);
            }
            if implied_port {
                e.key(b"implied_port")?;
                e.int(1)?;
            }
            put(&mut e, b"info_hash", &info_hash.0)?;
            // Always sent, 0 with implied_port: libtorrent refuses an
            // announce without `port` (error 203 "missing 'port' key").
            e.key(b"port")?;
            e.int(i64::from(port))?;
            put(&mut e, b"token", token)?;
            b"announce_peer"
        }
        Query::Unknown { method } => method,
    };
    e.end()?;
    e.key(b"q")?;
    // The method name is not `'static`; write it as a value, not a key.
    e.bytes(method)?;
    trailer(e, tid, read_only, b"q")
}

/// Encodes a response from its parts.
pub fn encode_response<V>(
    tid: &[u8],
    read_only: bool,
    parts: ResponseParts<'_, V>,
    out: &mut [u8],
) -> Result<usize, EncodeErrorKind>
where
    V: Iterator<Item = SocketAddrV4>,
{
    let mut e = begin(out)?;
    if let Some(ip) = parts.ip {
        put(&mut e, b"ip", &peer_to_compact(&ip))?;
    }
    e.key(b"r")?;
    e.begin_dict()?;
    put(&mut e, b"id", &parts.id.0)?;
    if let Some(nodes) = parts.nodes {
        if nodes.len() % COMPACT_NODE_LEN != 0 {
            return Err(EncodeErrorKind::Invalid);
        }
        put(&mut e, b"nodes", nodes)?;
    }
    if let Some(token) = parts.token {
        if token.len() > MAX_TOKEN_LEN {
            return Err(EncodeErrorKind::Invalid);
        }
        put(&mut e, b"token", token)?;
    }
    if let Some(values) = parts.values {
        e.key(b"values")?;
        e.begin_list()?;
        for p in values {
            e.bytes(&peer_to_compact(&p))?;
        }
        e.end()?;
    }
    e.end()?;
    trailer(e, tid, read_only, b"r")
}

/// Encodes an error.
pub fn encode_error(
    tid: &[u8],
    code: i64,
    message: &[u8],
    out: &mut [u8],
) -> Result<usize, EncodeErrorKind> {
    if message.len() > MAX_ERROR_MESSAGE_LEN {
        return Err(EncodeErrorKind::Invalid);
    }
    let mut e = begin(out)?;
    e.key(b"e")?;
    e.begin_list()?;
    e.int(code)?;
    e.bytes(message)?;
    e.end()?;
    trailer(e, tid, false, b"e")
}

#[cfg(test)]
mod tests;
