//! Property check behind the `krpc` fuzz target (see [`crate::fuzzing`]).

use core::net::{Ipv4Addr, SocketAddrV4};

use super::krpc::{self, Body, Message, Token, RECOMMENDED_TOKENS};
use super::node::{Config, Dht, PeerSlot, MAX_REPLY_AMPLIFICATION};
use super::{NodeId, NodeSlot, K};
use crate::id::InfoHash;
use crate::time::Instant;

/// KRPC: decode never panics and reports an offset within the input; a
/// decoded message re-encodes, the re-encoding decodes to the same message
/// (values compared as peers: non-6-byte entries are dropped) and encoding
/// is then a fixed point (canonical bytes).
///
/// Then the same datagram goes to a [`Dht`] holding 60 peers for the seed
/// corpus' info-hash: it must not panic, and every reply to the sender is
/// at most [`MAX_REPLY_AMPLIFICATION`] × the datagram's size.
pub fn fuzz_krpc(data: &[u8]) {
    node_property(data);
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

fn node_property(data: &[u8]) {
    let mut nodes = [NodeSlot::EMPTY; 4 * K];
    let mut peers = [PeerSlot::EMPTY; 64];
    let now = Instant::from_secs(10);
    let mut d = Dht::new(
        Config::default(),
        NodeId([7; 20]),
        [7; 32],
        &mut nodes,
        &mut peers,
        now,
    );
    let ih = InfoHash(*b"mnopqrstuvwxyz123456");
    for i in 0..60u16 {
        d.store_peer(
            now,
            ih,
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i as u8), 1000 + i),
        );
    }
    let from = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 9), 6881);
    d.handle_datagram(now, from, data);
    let mut buf = [0u8; krpc::MAX_DATAGRAM_LEN];
    while let Some((to, n)) = d.poll_transmit(now, &mut buf) {
        assert!(n <= buf.len());
        let mut toks = [Token::EMPTY; RECOMMENDED_TOKENS];
        let out = krpc::decode(buf.get(..n).unwrap(), &mut toks).expect("we send valid KRPC");
        if !matches!(out.body, Body::Query { .. }) {
            assert_eq!(to, from);
            assert!(
                n <= MAX_REPLY_AMPLIFICATION * data.len(),
                "{n} bytes for {}",
                data.len()
            );
        }
    }
    d.handle_timeout(now.add_millis(60_000));
}
