//! Decode → encode → decode helpers for the fuzz targets in `fuzz/`
//! (rustls `msgs/mod.rs` style). Each decodes arbitrary bytes and, when that
//! succeeds, re-encodes the value and asserts that decoding the output gives
//! the same value. Panicking (`assert!`) is confined to these helpers.

use core::net::SocketAddr;

use super::http::query::{parse_announce_query, parse_scrape_query, write_scrape_query};
use super::http::response::{
    compact_peers, encode_announce_response, encode_scrape_response, AnnounceResponse, Peers,
    ScrapeResponse,
};
use super::udp::{Limits, Request, Response, TorrentStats};
use super::AddressFamily;
use crate::bencode::Token;
use crate::id::InfoHash;

/// Largest re-encoded message the helpers handle.
const OUT_LEN: usize = 1 << 16;

/// UDP tracker requests: parse, encode, re-parse, compare; also with tight
/// limits.
pub fn fuzz_udp_request(data: &[u8]) {
    let tight = Limits {
        max_scrape_hashes: 2,
        max_url_data_len: 8,
        max_peers: 2,
    };
    for limits in [Limits::default(), tight] {
        if let Ok(req) = Request::parse(data, &limits) {
            let mut out = [0u8; OUT_LEN];
            let n = req.encode(&mut out);
            assert!(n.is_ok(), "encode failed: {n:?}");
            let n = n.unwrap_or(0);
            let again = Request::parse(out.get(..n).unwrap_or_default(), &limits);
            assert_eq!(again, Ok(req));
        }
    }
}

/// UDP tracker responses, for both address families: parse, encode,
/// re-parse, compare.
pub fn fuzz_udp_response(data: &[u8]) {
    let limits = Limits::default();
    for family in [AddressFamily::V4, AddressFamily::V6] {
        if let Ok(resp) = Response::parse(data, family, &limits) {
            let mut out = [0u8; OUT_LEN];
            let n = resp.encode(&mut out);
            assert!(n.is_ok(), "encode failed: {n:?}");
            let n = n.unwrap_or(0);
            let again = Response::parse(out.get(..n).unwrap_or_default(), family, &limits);
            assert_eq!(again, Ok(resp));
        }
    }
}

/// Largest HTTP body the HTTP response helper looks at (bounds its buffers).
const HTTP_MAX_INPUT: usize = 16 * 1024;

/// Tokens available to the HTTP response helper.
const HTTP_TOKENS: usize = 2048;

fn family_eq<I: Iterator<Item = SocketAddr>, J: Iterator<Item = SocketAddr>>(
    a: I,
    b: J,
    fam: AddressFamily,
) -> bool {
    a.filter(|p| AddressFamily::of(p) == fam)
        .eq(b.filter(|p| AddressFamily::of(p) == fam))
}

/// HTTP tracker announce and scrape responses: decode, re-encode (peers
/// made compact, scrape entries sorted), decode again, compare. Peers are
/// compared per address family, since re-encoding splits a mixed
/// dictionary-model list into `peers` and `peers6`.
pub fn fuzz_http_response(data: &[u8]) {
    if data.len() > HTTP_MAX_INPUT {
        return;
    }
    let mut tokens = [Token::EMPTY; HTTP_TOKENS];
    if let Ok(r) = AnnounceResponse::decode(data, &mut tokens) {
        let mut b4 = [0u8; HTTP_MAX_INPUT];
        let mut b6 = [0u8; 2 * HTTP_MAX_INPUT];
        let mut re = r;
        re.peers = Peers::Compact(compact_peers(r.all_peers(), AddressFamily::V4, &mut b4));
        re.peers6 = compact_peers(r.all_peers(), AddressFamily::V6, &mut b6);
        let mut out = [0u8; 4 * HTTP_MAX_INPUT];
        let n = encode_announce_response(&re, &mut out);
        assert!(n.is_ok(), "encode failed: {n:?}");
        let n = n.unwrap_or(0);
        let mut tokens2 = [Token::EMPTY; HTTP_TOKENS];
        let d = AnnounceResponse::decode(out.get(..n).unwrap_or_default(), &mut tokens2);
        assert!(d.is_ok(), "re-decode failed: {d:?}");
        if let Ok(d) = d {
            assert_eq!(d.failure_reason, r.failure_reason);
            assert_eq!(d.warning_message, r.warning_message);
            assert_eq!(
                (d.interval, d.min_interval, d.complete, d.incomplete),
                (r.interval, r.min_interval, r.complete, r.incomplete)
            );
            for fam in [AddressFamily::V4, AddressFamily::V6] {
                assert!(family_eq(d.all_peers(), r.all_peers(), fam));
            }
        }
    }
    let mut tokens = [Token::EMPTY; HTTP_TOKENS];
    if let Ok(s) = ScrapeResponse::decode(data, &mut tokens) {
        if s.failure_reason.is_some() {
            return;
        }
        let mut entries: heapless::Vec<(InfoHash, TorrentStats), 256> = heapless::Vec::new();
        for f in s.files() {
            if entries.push(f).is_err() {
                return;
            }
        }
        let mut out = [0u8; 4 * HTTP_MAX_INPUT];
        // Lenient decoding admits repeated hashes, which canonical
        // encoding refuses: nothing to compare then.
        let Ok(n) = encode_scrape_response(&mut entries, &mut out) else {
            return;
        };
        let mut tokens2 = [Token::EMPTY; HTTP_TOKENS];
        let d = ScrapeResponse::decode(out.get(..n).unwrap_or_default(), &mut tokens2);
        assert!(d.is_ok(), "re-decode failed: {d:?}");
        if let Ok(d) = d {
            assert!(d.files().eq(entries.iter().copied()));
        }
    }
}

/// HTTP announce and scrape query strings: parse, rebuild, parse again,
/// compare.
pub fn fuzz_http_announce_query(data: &[u8]) {
    if let Ok(q) = parse_announce_query(data) {
        let mut out = [0u8; 1024];
        let n = q.encode(&mut out);
        assert!(n.is_ok(), "encode failed: {n:?}");
        let n = n.unwrap_or(0);
        assert_eq!(
            parse_announce_query(out.get(..n).unwrap_or_default()),
            Ok(q)
        );
    }
    let mut hashes = [InfoHash::default(); super::udp::MAX_SCRAPE_HASHES];
    if let Ok(h) = parse_scrape_query(data, &mut hashes) {
        let mut s: heapless::String<8192> = heapless::String::new();
        assert!(write_scrape_query(h, &mut s).is_ok());
        let mut again = [InfoHash::default(); super::udp::MAX_SCRAPE_HASHES];
        assert_eq!(parse_scrape_query(s.as_bytes(), &mut again), Ok(h));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_accept_samples() {
        fuzz_udp_request(&[
            0, 0, 4, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 1, 2, 3, 4,
        ]);
        fuzz_udp_request(&[]);
        fuzz_udp_response(&[0, 0, 0, 3, 0, 0, 0, 1, b'x']);
        fuzz_udp_response(&[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        fuzz_http_response(b"d8:intervali9e5:peersld2:ip3:::14:porti2eed2:ip7:1.2.3.44:porti3eeee");
        fuzz_http_response(b"d5:filesd20:bbbbbbbbbbbbbbbbbbbbde20:aaaaaaaaaaaaaaaaaaaadeee");
        fuzz_http_response(b"d14:failure reason1:xe");
        fuzz_http_announce_query(
            b"info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=%41aaaaaaaaaaaaaaaaaaa&port=1&left=2&key=",
        );
        fuzz_http_announce_query(b"info_hash=aaaaaaaaaaaaaaaaaaaa&info_hash=bbbbbbbbbbbbbbbbbbbb");
    }

    #[test]
    fn helpers_survive_noise() {
        let mut seed = 0x0123_4567_89ab_cdefu64;
        let alphabet = b"dlie0123456789:%&=_abcdefhnoprstuwxkyz";
        for len in 0..200usize {
            let mut p = std::vec::Vec::new();
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                p.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            fuzz_udp_request(&p);
            fuzz_udp_response(&p);
            fuzz_http_response(&p);
            fuzz_http_announce_query(&p);
        }
    }
}

/// A poor man's fuzzer until `fuzz/` exists: seeded mutations (byte
/// replace, insert, delete) of valid messages fed to every helper.
#[cfg(test)]
mod mutation_smoke {
    use super::*;

    #[test]
    fn mutated_seeds_round_trip() {
        let seeds: [&[u8]; 6] = [
            b"d8:completei3e10:incompletei5e8:intervali1800e12:min intervali60e5:peers12:\x0a\x00\x00\x01\x1a\xe1\xc0\xa8\x01\x02\x00\x506:peers618:\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x1a\xe115:warning message4:hey!e",
            b"d5:peersld2:ip8:10.0.0.17:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti6881eed2:ip11:example.org4:porti1eed4:porti2e2:ip3:::1ee8:intervali900ee",
            b"d5:filesd20:\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01d8:completei1e10:downloadedi2e10:incompletei3eeee",
            b"info_hash=%12%34Vx%9A%BC%DE%F0%12%34Vx%9A%BC%DE%F0%12%34Vx&peer_id=-OT0001-%00%01%02%03%04%05%06%07%08%09%0A%0B&port=6881&uploaded=0&downloaded=1024&left=4096&key=A1&event=started&numwant=50&compact=1",
            &[0, 0, 4, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 1, 0, 0, 0, 42, 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,2,0,0,0,0,0,0,0,0,0,0,0,0,0,0, 2, 3, b'/', b'a', b'b', 1, 0],
            &[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
        ];
        let mut s = 0x1234_5678_u64;
        let mut r = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for i in 0..20_000u32 {
            let mut p = seeds[(i as usize) % seeds.len()].to_vec();
            for _ in 0..(r() % 4 + 1) {
                let op = r() % 3;
                let len = p.len().max(1);
                let at = (r() as usize) % len;
                match op {
                    0 if !p.is_empty() => p[at] = r() as u8,
                    1 => p.insert(at.min(p.len()), r() as u8),
                    _ if !p.is_empty() => {
                        p.remove(at);
                    }
                    _ => {}
                }
            }
            fuzz_udp_request(&p);
            fuzz_udp_response(&p);
            fuzz_http_response(&p);
            fuzz_http_announce_query(&p);
        }
    }
}

/// Tracker URLs (UTF-8 inputs only): no panic; an error's offset is inside
/// the input; an accepted URL has a non-empty host of at most
/// `MAX_HOST_LEN` bytes, a port in 1..=65535 (explicit for UDP), a path that
/// is empty or starts with `/` or `?`, displays back as the input (scheme
/// lower-cased) and re-parses to the same value.
pub fn fuzz_tracker_url(data: &[u8]) {
    use super::url::{Scheme, TrackerUrl, MAX_HOST_LEN, MAX_URL_LEN};
    use core::fmt::Write;
    let Ok(s) = core::str::from_utf8(data) else {
        return;
    };
    let u = match TrackerUrl::parse(s) {
        Ok(u) => u,
        Err(e) => {
            assert!(e.offset <= s.len(), "offset {} past {}", e.offset, s.len());
            return;
        }
    };
    assert!(!u.host.is_empty() && u.host.len() <= MAX_HOST_LEN);
    assert!(u.port != 0);
    assert!(u.port_explicit || u.scheme != Scheme::Udp);
    assert!(u.path.is_empty() || u.path.starts_with(['/', '?']));
    let mut shown: heapless::String<MAX_URL_LEN> = heapless::String::new();
    assert!(
        write!(shown, "{u}").is_ok(),
        "display longer than the input"
    );
    let (scheme, rest) = s.split_once("://").unwrap();
    assert!(scheme.eq_ignore_ascii_case(u.scheme.as_str()));
    assert_eq!(
        shown.strip_prefix(u.scheme.as_str()),
        Some(&s[scheme.len()..])
    );
    assert_eq!(shown.get(scheme.len() + 3..), Some(rest), "display differs");
    assert_eq!(TrackerUrl::parse(&shown), Ok(u), "re-parse differs");
}

/// Tracker journal blobs: decoding never panics; an error's offset lies
/// within the input; re-encoding the records decoded (after the header)
/// reproduces the input byte for byte up to where decoding stopped; and
/// each record alone re-decodes to itself.
pub fn fuzz_journal(data: &[u8]) {
    use super::journal::{encode_header, Records, MAX_BLOB_LEN, MAX_RECORD_LEN};
    let mut out = [0u8; 1 << 16];
    let mut n = encode_header(&mut out).unwrap();
    let mut stopped_at = data.len().min(MAX_BLOB_LEN);
    for r in Records::new(data) {
        match r {
            Ok(rec) => {
                let mut blob = [0u8; MAX_RECORD_LEN + 1];
                let h = encode_header(&mut blob).unwrap();
                let k = rec.encode(&mut blob[h..]);
                assert_eq!(k, Ok(rec.encoded_len()));
                let k = k.unwrap();
                let mut again = Records::new(&blob[..h + k]);
                assert_eq!(again.next(), Some(Ok(rec)));
                assert_eq!(again.next(), None);
                if n + k <= out.len() {
                    out[n..n + k].copy_from_slice(&blob[h..h + k]);
                }
                n += k;
            }
            Err(e) => {
                assert!(e.offset <= data.len() && e.offset <= MAX_BLOB_LEN);
                stopped_at = e.offset;
            }
        }
    }
    // Past a good header, what decoded is exactly the input's prefix.
    if stopped_at > 0 && n <= out.len() {
        assert_eq!(n, stopped_at);
        assert_eq!(&out[..n], &data[..n]);
    }
}
