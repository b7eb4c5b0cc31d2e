//! Property checks behind the cargo-fuzz targets in `fuzz/` (rustls style:
//! each target is a three-line wrapper around one of these). They decode,
//! re-encode and compare, and assert the limits; a failed `assert!` here is
//! a finding. Not part of the supported API.

pub use crate::dht::fuzzing::fuzz_krpc as krpc;
pub use crate::tracker::fuzzing::{
    fuzz_http_announce_query as http_announce_query, fuzz_http_response as http_tracker_response,
    fuzz_journal as tracker_journal, fuzz_tracker_url as tracker_url,
    fuzz_udp_request as udp_tracker_request, fuzz_udp_response as udp_tracker_response,
};
pub use crate::wire::fuzzing::{
    fuzz_extension_handshake as extension_handshake, fuzz_handshake as handshake,
    fuzz_peer_wire as peer_wire,
};

use crate::bencode::{self, DecodeOptions, Encoder, ErrorKind, SliceWriter, Token};
use crate::magnet::Magnet;
use crate::metainfo::{Limits, Metainfo};

/// Tokens available to the fuzz helpers (fuzz inputs are small).
const FUZZ_TOKENS: usize = 4096;
/// Largest input re-encoded by [`bencode`].
const FUZZ_MAX_LEN: usize = 1 << 16;

/// Bencode: strict decode → encode reproduces the input byte for byte
/// (canonical form is unique); lenient accepts a superset of strict that
/// differs only by key order; spans and limits hold.
pub fn bencode(data: &[u8]) {
    let mut toks = [Token::EMPTY; FUZZ_TOKENS];
    let strict =
        bencode::decode(data, &mut toks, DecodeOptions::default()).map(|d| d.tokens().len());
    let mut toks2 = [Token::EMPTY; FUZZ_TOKENS];
    let lenient = bencode::decode(data, &mut toks2, DecodeOptions::lenient());
    match (&strict, &lenient) {
        (Ok(n), Ok(doc)) => assert_eq!(*n, doc.tokens().len()),
        (Ok(_), Err(e)) => panic!("strict accepted, lenient refused: {e:?}"),
        (Err(e), Ok(_)) => assert!(
            matches!(e.kind, ErrorKind::UnsortedKey | ErrorKind::DuplicateKey),
            "lenient accepted what strict refused for {e:?}"
        ),
        // Strict stops at the first ordering error; lenient reads on and
        // may fail later. Otherwise both report the same error.
        (Err(a), Err(b)) => assert!(
            a == b
                || (matches!(a.kind, ErrorKind::UnsortedKey | ErrorKind::DuplicateKey)
                    && a.offset <= b.offset),
            "strict {a:?} vs lenient {b:?}"
        ),
    }
    if let Err(e) = strict {
        assert!(e.offset <= data.len());
    }
    if strict.is_err() || data.len() > FUZZ_MAX_LEN {
        return;
    }
    let Ok(doc) = bencode::decode(data, &mut toks, DecodeOptions::default()) else {
        panic!("strict decode not deterministic");
    };
    let root = doc.root();
    assert!(root.is_some());
    if let Some(root) = root {
        assert_eq!(root.raw(), data);
        let mut out = [0u8; FUZZ_MAX_LEN];
        let mut e = Encoder::new(SliceWriter::new(&mut out));
        assert!(
            e.value(root).is_ok(),
            "re-encoding a strict document failed"
        );
        let Ok((w, n)) = e.finish() else {
            panic!("encoder unfinished")
        };
        assert_eq!(n, data.len());
        assert_eq!(w.written(), data, "decode → encode is not the identity");
    }
}

/// Most files whose paths [`metainfo`] checks for uniqueness.
const FUZZ_MAX_FILES: usize = 256;
/// Bytes of paths [`metainfo`] keeps for the uniqueness check.
const FUZZ_PATH_ARENA: usize = 1 << 16;

/// Fixed-capacity list of strings (no heap).
struct Arena {
    bytes: [u8; FUZZ_PATH_ARENA],
    ends: [usize; FUZZ_MAX_FILES],
    n: usize,
}

impl Arena {
    fn new() -> Self {
        Arena {
            bytes: [0; FUZZ_PATH_ARENA],
            ends: [0; FUZZ_MAX_FILES],
            n: 0,
        }
    }
    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        core::str::from_utf8(&self.bytes[start..self.ends[i]]).unwrap_or("")
    }
    fn push(&mut self, s: &str) -> bool {
        let start = if self.n == 0 {
            0
        } else {
            self.ends[self.n - 1]
        };
        if self.n == FUZZ_MAX_FILES || start + s.len() > FUZZ_PATH_ARENA {
            return false;
        }
        self.bytes[start..start + s.len()].copy_from_slice(s.as_bytes());
        self.ends[self.n] = start + s.len();
        self.n += 1;
        true
    }
    fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.n).map(|i| self.get(i))
    }
}

/// True if `dir` is a proper folder prefix of `path` (ASCII case folded).
fn is_dir_of(dir: &str, path: &str) -> bool {
    path.len() > dir.len()
        && path.as_bytes()[dir.len()] == b'/'
        && path.as_bytes()[..dir.len()].eq_ignore_ascii_case(dir.as_bytes())
}

/// Metainfo: no panic; an accepted torrent's accessors agree with its
/// validation (file lengths sum to the total, piece count matches); every
/// sanitized path is relative, made of components that pass the strict
/// check (no `.`/`..`, separators, NUL), and after [`unique_path`]
/// renaming no two files share a path (case folded) and no file sits where
/// another file's folder is. The strict parse accepts a subset of the
/// default one, with unchanged paths.
///
/// [`unique_path`]: crate::metainfo::unique_path
pub fn metainfo(data: &[u8]) {
    use crate::metainfo::{check_component, path_buffer_len, unique_path, DEFAULT_MAX_PATH_DEPTH};
    const BUF: usize = (crate::metainfo::MAX_COMPONENT_LEN + 1) * (DEFAULT_MAX_PATH_DEPTH + 1);
    let mut toks = [Token::EMPTY; FUZZ_TOKENS];
    let limits = Limits::default();
    let Ok(m) = Metainfo::parse(data, &mut toks, &limits) else {
        let mut toks = [Token::EMPTY; FUZZ_TOKENS];
        let strict = Limits {
            strict_paths: true,
            ..limits
        };
        assert!(Metainfo::parse(data, &mut toks, &strict).is_err());
        return;
    };
    assert!(BUF >= path_buffer_len(&limits));
    assert!(check_component(m.name().as_bytes()).is_ok());
    assert!(m.total_length() > 0);
    let mut strict_toks = [Token::EMPTY; FUZZ_TOKENS];
    let strict = Metainfo::parse(
        data,
        &mut strict_toks,
        &Limits {
            strict_paths: true,
            ..limits
        },
    );
    let mut total = 0u64;
    let mut buf = [0u8; BUF];
    let mut sanitized = Arena::new();
    let mut any_changed = m.name_changed();
    for f in m.files() {
        total += f.length;
        let Ok(p) = f.path_into(&mut buf) else {
            panic!("path buffer too small");
        };
        any_changed |= p.changed;
        if f.is_padding() && p.path.is_empty() {
            continue; // BEP 47: a padding file may have no path
        }
        assert!(!p.path.is_empty() && !p.path.starts_with('/'));
        for c in p.path.split('/') {
            assert!(check_component(c.as_bytes()).is_ok(), "unsafe {c:?}");
        }
        if !f.is_padding() {
            sanitized.push(p.path);
        }
        if let Some(Ok(t)) = f.symlink_into(&mut buf) {
            assert!(t.split('/').all(|c| check_component(c.as_bytes()).is_ok()));
        }
    }
    assert_eq!(
        strict.is_ok(),
        !any_changed,
        "strict and sanitized disagree"
    );
    assert_eq!(total, m.total_length());
    // Rename duplicates as the shells do; check the result is unique.
    let mut chosen = Arena::new();
    for i in 0..sanitized.n {
        let p = sanitized.get(i);
        let mut out = [0u8; BUF];
        let taken = |q: &str| {
            chosen.iter().any(|c| c.eq_ignore_ascii_case(q))
                || sanitized.iter().any(|s| is_dir_of(q, s))
        };
        let Ok((name, _)) = unique_path(p, &mut out, taken) else {
            return;
        };
        chosen.push(name);
    }
    for (i, a) in chosen.iter().enumerate() {
        for (j, b) in chosen.iter().enumerate() {
            assert!(i == j || !a.eq_ignore_ascii_case(b), "duplicate {a:?}");
            assert!(!is_dir_of(a, b), "{a:?} is also a folder");
        }
    }
    assert_eq!(
        m.piece_count() as u64,
        m.total_length().div_ceil(m.piece_length())
    );
    assert!(m.piece_hash(m.piece_count()).is_none());
}

/// Magnet: no panic; decoded values fit the buffer; limits hold.
pub fn magnet(data: &[u8]) {
    let Ok(s) = core::str::from_utf8(data) else {
        return;
    };
    let mut buf = [0u8; 1024];
    let parsed = Magnet::parse(s, &mut buf);
    if let Ok(m) = parsed {
        assert!(m.trackers.len() <= crate::magnet::MAX_TRACKERS);
        assert!(m.peers.len() <= crate::magnet::MAX_PEERS);
        assert!(s.len() >= 8 + 9 + 32);
    }
}

/// UDP tracker server triage (BEP 15): whatever arrives, no reply without a
/// connection id we issued to that address (except a connect response), and
/// no reply larger than [`MAX_AMPLIFICATION`](crate::tracker::udp::server::MAX_AMPLIFICATION)
/// × the request. The first byte
/// picks the address family and whether to splice a valid connection id into
/// the datagram, so the fuzzer also reaches the paths after validation.
pub fn udp_tracker_server(data: &[u8]) {
    use crate::time::Instant;
    use crate::tracker::udp::server::{Decision, DropReason, Server, SwarmInfo, MAX_AMPLIFICATION};
    use crate::tracker::udp::{
        encode_scrape_response, ConnectionId, Limits as UdpLimits, TorrentStats,
    };
    use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let ip = if head & 1 == 1 {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    };
    let from = SocketAddr::new(ip, 6881);
    let now = Instant::from_secs(10_000);
    let server = Server::new(&[7u8; 32], UdpLimits::default());
    let mut dgram = [0u8; 2048];
    let len = rest.len().min(dgram.len());
    dgram[..len].copy_from_slice(&rest[..len]);
    if head & 2 == 2 && len >= 8 {
        let id = server.connection_ids().issue(now, from.ip());
        dgram[..8].copy_from_slice(&id.0.to_be_bytes());
    }
    let dgram = &dgram[..len];
    let id_valid = dgram
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(|b| {
            server
                .connection_ids()
                .validate(now, from.ip(), ConnectionId(u64::from_be_bytes(b)))
        })
        .unwrap_or(false);
    let bound = MAX_AMPLIFICATION * len;
    let mut out = [0u8; 8192];
    match server.handle(now, from, dgram, &mut out) {
        Decision::Connect(n) => assert!(n == 16 && n <= bound),
        Decision::Error(n) => assert!(id_valid && n <= bound, "error reply {n} to {len} bytes"),
        Decision::Announce(a) => {
            assert!(id_valid);
            let peers = (0..5000u32).map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(i)), 1));
            let swarm = SwarmInfo {
                interval: 1800,
                leechers: 1,
                seeders: 1,
            };
            let mut reply = [0u8; 8192];
            let n = server.announce_reply(&a, len, &from, swarm, peers, &mut reply);
            assert!(
                matches!(n, Ok(n) if n <= bound),
                "announce reply {n:?} to {len} bytes"
            );
        }
        Decision::Scrape(s) => {
            assert!(id_valid);
            assert!(s.info_hashes.len() <= server.limits().max_scrape_hashes);
            let stats = (0..s.info_hashes.len()).map(|_| TorrentStats::default());
            let n = encode_scrape_response(s.transaction_id, stats, &mut out);
            assert!(matches!(n, Ok(n) if n <= bound));
        }
        Decision::Drop(DropReason::BadConnectionId) => assert!(!id_valid),
        Decision::Drop(_) => {}
    }
}

/// Bitfield messages (BEP 3): accepted exactly when the length is
/// ceil(pieces / 8) and the spare bits are zero; the view never reports a
/// piece beyond `pieces`. The first 3 bytes give the piece count.
pub fn bitfield(data: &[u8]) {
    use crate::pieces::Bitfield;
    use crate::wire::check_bitfield;
    let Some((head, payload)) = data.split_first_chunk::<3>() else {
        return;
    };
    let pieces = u32::from_be_bytes([0, head[0], head[1], head[2]]);
    let want_len = (pieces as usize).div_ceil(8);
    let spare_clear = match payload.last() {
        Some(&last) if pieces % 8 != 0 => last & (0xff >> (pieces % 8)) == 0,
        _ => true,
    };
    let ok = check_bitfield(payload, pieces).is_ok();
    assert_eq!(ok, payload.len() == want_len && spare_clear);
    if let Ok(bf) = Bitfield::from_message(payload, pieces) {
        assert!(ok);
        assert!(bf.count() <= pieces);
        assert!(!bf.get(pieces));
        let set = payload.iter().map(|b| b.count_ones()).sum::<u32>();
        assert_eq!(bf.count(), set);
    }
}

pub use crate::wire::fuzzing::{fuzz_ut_metadata as ut_metadata, fuzz_ut_pex as ut_pex};
