//! Property check behind the `krpc` fuzz target (see [`crate::fuzzing`]).

use super::krpc::{self, Body, Message, Token, RECOMMENDED_TOKENS};

/// KRPC: decode never panics and reports an offset within the input; a
/// decoded message re-encodes, the re-encoding decodes to the same message
/// (values compared as peers: non-6-byte entries are dropped) and encoding
/// is then a fixed point (canonical bytes).
pub fn fuzz_krpc(data: &[u8]) {
    let mut toks = [Token::EMPTY; RECOMMENDED_TOKENS];
    let m = match krpc::decode(data, &mut toks) {
        Ok(m) => m,
        Err(e) => {
            assert!(e.offset <= data.len().max(krpc::MAX_DATAGRAM_LEN));
            return;
        }
    };
    let mut out = [0u8; 2 * krpc::MAX_DATAGRAM_LEN];
    let n = krpc::encode(&m, &mut out).expect("a decoded message re-encodes");
    let first = out.get(..n).unwrap();
    let mut toks2 = [Token::EMPTY; RECOMMENDED_TOKENS];
    let m2 = krpc::decode(first, &mut toks2).expect("re-encoding decodes");
    assert!(same(&m, &m2), "{m:?} vs {m2:?}");
    let mut out2 = [0u8; 2 * krpc::MAX_DATAGRAM_LEN];
    let n2 = krpc::encode(&m2, &mut out2).expect("second encode");
    assert_eq!(out2.get(..n2).unwrap(), first, "encoding is not canonical");
}

fn same(a: &Message<'_>, b: &Message<'_>) -> bool {
    if a.tid != b.tid || a.read_only != b.read_only {
        return false;
    }
    match (a.body, b.body) {
        (Body::Response(x), Body::Response(y)) => {
            let vals_eq = match (x.values, y.values) {
                (Some(p), Some(q)) => p.iter().eq(q.iter()),
                (None, None) => true,
                _ => false,
            };
            x.id == y.id && x.nodes == y.nodes && x.token == y.token && x.ip == y.ip && vals_eq
        }
        (x, y) => x == y,
    }
}
