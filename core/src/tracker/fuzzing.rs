//! Decode → encode → decode helpers for the fuzz targets in `fuzz/`
//! (rustls `msgs/mod.rs` style). Each decodes arbitrary bytes and, when that
//! succeeds, re-encodes the value and asserts that decoding the output gives
//! the same value. Panicking (`assert!`) is confined to these helpers.

use super::udp::{Limits, Request, Response};
use super::AddressFamily;

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
    }
}
