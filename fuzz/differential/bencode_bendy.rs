//! Differential check shared by the `bencode_differential` fuzz target and
//! the regression replay in `core/tests/fuzz_regressions.rs`: our strict
//! decoder accepts exactly what bendy (a canonical bencode decoder) accepts
//! as one complete value whose integers fit i64.

use bendy::decoding::Decoder;
use bendy::state_tracker::Token as BToken;
use ourtorrent_core::bencode::{decode, DecodeOptions, Token, MAX_DEPTH};

/// bendy: exactly one top-level value, all tokens valid, all bytes used.
fn bendy_accepts(data: &[u8]) -> bool {
    let mut depth = 0usize;
    let mut roots = 0usize;
    for t in Decoder::new(data).with_max_depth(MAX_DEPTH).tokens() {
        let Ok(t) = t else { return false };
        match t {
            BToken::List | BToken::Dict => {
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
            }
            BToken::End => depth -= 1,
            // bendy leaves integer width to the caller; bencode values in
            // BitTorrent are i64 (our documented limit).
            BToken::Num(n) if n.parse::<i64>().is_err() => return false,
            BToken::String(_) | BToken::Num(_) => {
                if depth == 0 {
                    roots += 1;
                }
            }
        }
    }
    roots == 1 && depth == 0
}

/// Panics if our strict decoder and bendy disagree on `data`.
pub fn check(data: &[u8]) {
    let mut toks = vec![Token::EMPTY; data.len() / 2 + 1];
    let opts = DecodeOptions {
        max_depth: MAX_DEPTH,
        ..DecodeOptions::default()
    };
    let ours = decode(data, &mut toks, opts);
    assert_eq!(
        ours.is_ok(),
        bendy_accepts(data),
        "ours: {:?}",
        ours.map(|d| d.tokens().len())
    );
}
