use super::*;
use std::format;
use std::string::String;
use std::vec::Vec;

fn dec(b: &[u8]) -> Result<Message<'_>, Error> {
    let mut toks = [Token::EMPTY; RECOMMENDED_TOKENS];
    decode(b, &mut toks)
}

fn reencode(b: &[u8]) -> Vec<u8> {
    let m = dec(b).unwrap();
    let mut out = [0u8; MAX_DATAGRAM_LEN];
    let n = encode(&m, &mut out).unwrap();
    out[..n].to_vec()
}

const ID: [u8; 20] = *b"abcdefghij0123456789";
const ID2: [u8; 20] = *b"mnopqrstuvwxyz123456";

// BEP 5's own examples (canonical bencode, so they re-encode byte for byte).
static PING_Q: &[u8] = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
static PING_R: &[u8] = b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re";
static FIND_Q: &[u8] =
    b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe";
static GET_Q: &[u8] =
    b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe";
static GET_R_VALUES: &[u8] =
    b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re";
static ANNOUNCE_Q: &[u8] = b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe";
static ERROR: &[u8] = b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee";

#[test]
fn dht_krpc_bep5_examples_decode() {
    let m = dec(PING_Q).unwrap();
    assert_eq!(m.tid, b"aa");
    assert_eq!(
        m.body,
        Body::Query {
            id: NodeId(ID),
            query: Query::Ping
        }
    );
    let Body::Response(r) = dec(PING_R).unwrap().body else {
        panic!()
    };
    assert_eq!(r.id, NodeId(ID2));
    assert!(r.nodes.is_none() && r.values.is_none() && r.token.is_none());
    assert_eq!(
        dec(FIND_Q).unwrap().body,
        Body::Query {
            id: NodeId(ID),
            query: Query::FindNode {
                target: NodeId(ID2)
            }
        }
    );
    assert_eq!(
        dec(GET_Q).unwrap().body,
        Body::Query {
            id: NodeId(ID),
            query: Query::GetPeers {
                info_hash: InfoHash(ID2)
            }
        }
    );
    let Body::Response(r) = dec(GET_R_VALUES).unwrap().body else {
        panic!()
    };
    assert_eq!(r.token, Some(&b"aoeusnth"[..]));
    let peers: Vec<_> = r.values.unwrap().iter().collect();
    assert_eq!(
        peers,
        [
            peer_from_compact(b"axje.u").unwrap(),
            peer_from_compact(b"idhtnm").unwrap()
        ]
    );
    assert_eq!(
        dec(ANNOUNCE_Q).unwrap().body,
        Body::Query {
            id: NodeId(ID),
            query: Query::AnnouncePeer {
                info_hash: InfoHash(ID2),
                port: 6881,
                implied_port: true,
                token: b"aoeusnth"
            }
        }
    );
    assert_eq!(
        dec(ERROR).unwrap().body,
        Body::Error {
            code: error_code::GENERIC,
            message: b"A Generic Error Ocurred"
        }
    );
}

#[test]
fn dht_krpc_bep5_examples_reencode_byte_for_byte() {
    for ex in [
        PING_Q,
        PING_R,
        FIND_Q,
        GET_Q,
        GET_R_VALUES,
        ANNOUNCE_Q,
        ERROR,
    ] {
        assert_eq!(reencode(ex), ex, "{}", String::from_utf8_lossy(ex));
    }
}

#[test]
fn dht_krpc_error_codes_201_to_204() {
    for code in 201..=204 {
        let mut out = [0u8; 64];
        let n = encode_error(b"xy", code, b"msg", &mut out).unwrap();
        assert_eq!(
            dec(&out[..n]).unwrap().body,
            Body::Error {
                code,
                message: b"msg"
            }
        );
    }
}

#[test]
fn dht_krpc_nodes_compact_26_bytes() {
    let mut nodes = Vec::new();
    nodes.extend_from_slice(&node_to_compact(
        &NodeId(ID),
        &"1.2.3.4:6881".parse().unwrap(),
    ));
    nodes.extend_from_slice(&node_to_compact(
        &NodeId(ID2),
        &"5.6.7.8:1".parse().unwrap(),
    ));
    let mut out = [0u8; 200];
    let n = encode_response(
        b"t1",
        false,
        ResponseParts {
            id: NodeId(ID),
            nodes: Some(&nodes),
            values: None::<core::iter::Empty<_>>,
            token: None,
            ip: None,
        },
        &mut out,
    )
    .unwrap();
    let Body::Response(r) = dec(&out[..n]).unwrap().body else {
        panic!()
    };
    let got: Vec<_> = r.nodes.unwrap().iter().collect();
    assert_eq!(
        got,
        [
            (NodeId(ID), "1.2.3.4:6881".parse().unwrap()),
            (NodeId(ID2), "5.6.7.8:1".parse().unwrap())
        ]
    );
    // 25 bytes: not a whole node.
    let bad = b"d1:rd2:id20:abcdefghij01234567895:nodes25:aaaaaaaaaaaaaaaaaaaaaaaaae1:t2:aa1:y1:re";
    let e = dec(bad).unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadLength("nodes"));
    assert_eq!(&bad[e.offset..e.offset + 3], b"25:");
}

#[test]
fn dht_krpc_unknown_keys_ignored() {
    // `v`, `ip`, `ro` (kept), `p`, `bs`, `nodes6`, `want`, and a 16-byte value (IPv6-ish) skipped.
    let msg = b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234561:pi5e4:wantl2:n4ee2:bsi1e2:ip6:\x01\x02\x03\x04\x00\x011:q9:get_peers2:roi1e1:t2:aa1:v4:LT011:y1:qe";
    let m = dec(msg).unwrap();
    assert!(m.read_only);
    assert_eq!(
        m.body,
        Body::Query {
            id: NodeId(ID),
            query: Query::GetPeers {
                info_hash: InfoHash(ID2)
            }
        }
    );
    let r = b"d1:rd2:id20:abcdefghij01234567896:nodes60:6:valuesl6:axje.u18:012345678901234567e1:x1:ye1:t2:aa1:v4:UT011:y1:re";
    let Body::Response(r) = dec(r).unwrap().body else {
        panic!()
    };
    assert_eq!(r.values.unwrap().iter().count(), 1);
    // Unsorted keys are accepted (lenient), re-encoded sorted.
    let unsorted = b"d1:y1:q1:t2:aa1:q4:ping1:ad2:id20:abcdefghij0123456789ee";
    assert_eq!(reencode(unsorted), PING_Q);
}

#[test]
fn dht_krpc_unknown_method_kept_for_204() {
    let m = dec(b"d1:ad2:id20:abcdefghij01234567895:token1:xe1:q3:put1:t2:aa1:y1:qe").unwrap();
    assert_eq!(
        m.body,
        Body::Query {
            id: NodeId(ID),
            query: Query::Unknown { method: b"put" }
        }
    );
}

#[test]
fn dht_krpc_announce_port_rules() {
    // (port, implied_port) of the decoded announce, or the error kind.
    let ok = |port: &str, implied: &str| {
        let s = format!("d1:ad2:id20:abcdefghij0123456789{implied}9:info_hash20:mnopqrstuvwxyz123456{port}5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe");
        let mut toks = [Token::EMPTY; 64];
        match decode(s.as_bytes(), &mut toks) {
            Ok(Message {
                body:
                    Body::Query {
                        query:
                            Query::AnnouncePeer {
                                port, implied_port, ..
                            },
                        ..
                    },
                ..
            }) => Ok((port, implied_port)),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.kind),
        }
    };
    assert_eq!(ok("4:porti65535e", ""), Ok((65535, false)));
    assert_eq!(ok("4:porti1e", ""), Ok((1, false)));
    assert_eq!(ok("4:porti65536e", ""), Err(ErrorKind::BadPort));
    assert_eq!(ok("4:porti0e", ""), Err(ErrorKind::BadPort));
    assert_eq!(ok("4:porti-1e", ""), Err(ErrorKind::BadPort));
    assert_eq!(ok("", ""), Err(ErrorKind::Missing("port")));
    assert_eq!(ok("", "12:implied_porti1e"), Ok((0, true)));
    assert_eq!(ok("4:porti0e", "12:implied_porti1e"), Ok((0, true)));
    assert_eq!(ok("4:porti80e", "12:implied_porti0e"), Ok((80, false)));
    assert_eq!(
        ok("4:porti80e", "12:implied_port1:x"),
        Err(ErrorKind::WrongType("implied_port"))
    );
}

#[test]
fn dht_krpc_limits_at_edge() {
    let with_tid = |n: usize| {
        let s = format!(
            "d1:rd2:id20:abcdefghij0123456789e1:t{}:{}1:y1:re",
            n,
            "x".repeat(n)
        );
        dec(s.as_bytes()).map(|_| ()).map_err(|e| e.kind)
    };
    assert_eq!(with_tid(MAX_TID_LEN), Ok(()));
    assert_eq!(with_tid(MAX_TID_LEN + 1), Err(ErrorKind::BadLength("t")));
    let with_token = |n: usize| {
        let s = format!(
            "d1:rd2:id20:abcdefghij01234567895:token{}:{}e1:t1:x1:y1:re",
            n,
            "k".repeat(n)
        );
        dec(s.as_bytes()).map(|_| ()).map_err(|e| e.kind)
    };
    assert_eq!(with_token(MAX_TOKEN_LEN), Ok(()));
    assert_eq!(
        with_token(MAX_TOKEN_LEN + 1),
        Err(ErrorKind::BadLength("token"))
    );
    // Datagram length: pad an ignored key up to the limit.
    let padded = |total: usize| {
        let base = "d1:rd2:id20:abcdefghij0123456789e1:t1:x1:y1:r1:z";
        let fixed = base.len() + 1 + 5; // "e" + "NNNN:"
        let pad = total - fixed;
        let s = format!("{base}{pad:04}:{}e", "p".repeat(pad));
        assert_eq!(s.len(), total);
        dec(s.as_bytes()).map(|_| ()).map_err(|e| e.kind)
    };
    assert_eq!(padded(MAX_DATAGRAM_LEN), Ok(()));
    assert_eq!(padded(MAX_DATAGRAM_LEN + 1), Err(ErrorKind::TooLong));
    let long_msg = format!(
        "d1:eli201e{}:{}e1:t1:x1:y1:ee",
        MAX_ERROR_MESSAGE_LEN + 1,
        "m".repeat(MAX_ERROR_MESSAGE_LEN + 1)
    );
    assert_eq!(
        dec(long_msg.as_bytes()).unwrap_err().kind,
        ErrorKind::BadLength("e")
    );
    // Token array too small → typed bencode error.
    let mut toks = [Token::EMPTY; 4];
    assert_eq!(
        decode(PING_Q, &mut toks).unwrap_err().kind,
        ErrorKind::Bencode(bencode::ErrorKind::TokenLimit)
    );
}

#[test]
fn dht_krpc_bad_messages_typed_with_offsets() {
    let cases: &[(&[u8], ErrorKind, usize)] = &[
        (
            b"",
            ErrorKind::Bencode(bencode::ErrorKind::UnexpectedEnd),
            0,
        ),
        (b"le", ErrorKind::NotADict, 0),
        (b"d1:y1:qe", ErrorKind::Missing("t"), 0),
        (b"d1:t2:aae", ErrorKind::Missing("y"), 0),
        (b"d1:t2:aa1:y1:xe", ErrorKind::UnknownType, 11),
        (b"d1:t2:aa1:y1:qe", ErrorKind::Missing("q"), 0),
        (b"d1:q4:ping1:t2:aa1:y1:qe", ErrorKind::Missing("a"), 0),
        (
            b"d1:ai1e1:q4:ping1:t2:aa1:y1:qe",
            ErrorKind::WrongType("a"),
            4,
        ),
        (
            b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe",
            ErrorKind::BadLength("id"),
            9,
        ),
        (b"d1:ti5e1:y1:qe", ErrorKind::WrongType("t"), 4),
        (b"d1:eli201ee1:t2:aa1:y1:ee", ErrorKind::BadError, 4),
        (b"d1:e3:abc1:t2:aa1:y1:ee", ErrorKind::BadError, 4),
        (
            b"d1:rd2:id20:abcdefghij01234567896:valuesli1eee1:t2:aa1:y1:re",
            ErrorKind::WrongType("values"),
            41,
        ),
        (b"d1:t2:aa1:y1:re", ErrorKind::Missing("r"), 0),
    ];
    for (input, kind, offset) in cases {
        let e = dec(input).unwrap_err();
        assert_eq!(
            (e.kind, e.offset),
            (*kind, *offset),
            "{}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn dht_krpc_every_prefix_is_refused_without_panic() {
    for ex in [
        PING_Q,
        PING_R,
        FIND_Q,
        GET_Q,
        GET_R_VALUES,
        ANNOUNCE_Q,
        ERROR,
    ] {
        for n in 0..ex.len() {
            assert!(dec(&ex[..n]).is_err());
        }
    }
}

#[test]
fn dht_krpc_encode_small_buffer_is_typed() {
    let m = dec(ANNOUNCE_Q).unwrap();
    let mut out = [0u8; 512];
    let n = encode(&m, &mut out).unwrap();
    for short in 0..n {
        assert_eq!(
            encode(&m, &mut out[..short]),
            Err(EncodeErrorKind::BufferFull)
        );
    }
}

#[test]
fn dht_krpc_response_ip_bep42() {
    let r = b"d2:ip6:\x7c\x1f\x4b\x15\x1a\xe11:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:re";
    let Body::Response(resp) = dec(r).unwrap().body else {
        panic!()
    };
    assert_eq!(resp.ip, Some("124.31.75.21:6881".parse().unwrap()));
    assert_eq!(reencode(r), r);
    // An IPv6 `ip` (18 bytes) is ignored, not an error.
    let v6 = b"d2:ip18:0123456789abcdefgh1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:re";
    let Body::Response(resp) = dec(v6).unwrap().body else {
        panic!()
    };
    assert_eq!(resp.ip, None);
}

/// Datagrams captured from python3-libtorrent 2.0.8 on 127.0.0.1 (our
/// socket at 127.0.0.1:47612 asking, the node id `LT_ID`): they carry `ip`,
/// `p` and `v`, errors carry an `r` too, and `nodes` lists the asker itself.
const LT_ID: [u8; 20] = *b"L\xad\xcd],\x87uO\xdd\xbc\xd6\xbf\x1a\x8d\x8d\xd8=\x13Xn";
static LT_PING: &[u8] = b"d2:ip6:\x7f\x00\x00\x01\xb9\xfc1:rd2:id20:L\xad\xcd],\x87uO\xdd\xbc\xd6\xbf\x1a\x8d\x8d\xd8=\x13Xn1:pi47612ee1:t2:aa1:v4:LT\x02\x081:y1:re";
static LT_GET_PEERS_VALUES: &[u8] = b"d2:ip6:\x7f\x00\x00\x01\xb9\xfc1:rd2:id20:L\xad\xcd],\x87uO\xdd\xbc\xd6\xbf\x1a\x8d\x8d\xd8=\x13Xn5:nodes26:abcdefghij0123456789\x7f\x00\x00\x01\xb9\xfc1:pi47612e5:token4:\x1c~\xaf\x006:valuesl6:\x7f\x00\x00\x01\xb9\xfcee1:t2:ae1:v4:LT\x02\x081:y1:re";
static LT_BAD_TOKEN: &[u8] = b"d1:eli203e13:invalid tokene2:ip6:\x7f\x00\x00\x01\xb9\xfc1:rd2:id20:L\xad\xcd],\x87uO\xdd\xbc\xd6\xbf\x1a\x8d\x8d\xd8=\x13Xn1:pi47612ee1:t2:af1:v4:LT\x02\x081:y1:ee";
/// libtorrent's first bootstrap query: get_peers with `bs`.
static LT_BOOTSTRAP_QUERY: &[u8] = b"d1:ad2:bsi1e2:id20:z\x98\xab\xcbQ\xb6-\x0e\x96-\xfe\xc1\xa1l\xc0\xcd Z;[9:info_hash20:z\x98\xab\xcbQ\xb6-\x0e\x96-\xfe\xc1x\x1e\xf8\xb8;<\xf0\x1ee1:q9:get_peers1:t2:K\x8a1:v4:LT\x02\x081:y1:qe";

#[test]
fn dht_krpc_decodes_libtorrent_datagrams() {
    let me: SocketAddrV4 = "127.0.0.1:47612".parse().unwrap();
    let Body::Response(r) = dec(LT_PING).unwrap().body else {
        panic!()
    };
    assert_eq!((r.id, r.ip), (NodeId(LT_ID), Some(me)));
    let m = dec(LT_GET_PEERS_VALUES).unwrap();
    assert_eq!(m.tid, b"ae");
    let Body::Response(r) = m.body else { panic!() };
    assert_eq!(r.token, Some(&b"\x1c~\xaf\x00"[..]));
    assert_eq!(r.values.unwrap().iter().collect::<Vec<_>>(), [me]);
    assert_eq!(
        r.nodes.unwrap().iter().collect::<Vec<_>>(),
        [(NodeId(ID), me)]
    );
    assert_eq!(
        dec(LT_BAD_TOKEN).unwrap().body,
        Body::Error {
            code: error_code::PROTOCOL,
            message: b"invalid token"
        }
    );
    let q = dec(LT_BOOTSTRAP_QUERY).unwrap();
    assert!(matches!(
        q.body,
        Body::Query {
            query: Query::GetPeers { .. },
            ..
        }
    ));
    // Re-encoded without the keys we ignore (`p`, `v`, `r` of an error), same message.
    for lt in [
        LT_PING,
        LT_GET_PEERS_VALUES,
        LT_BAD_TOKEN,
        LT_BOOTSTRAP_QUERY,
    ] {
        let again = reencode(lt);
        assert!(again.len() < lt.len());
        assert_eq!(
            dec(&again).unwrap(),
            dec(lt).unwrap_or_else(|e| panic!("{e}")).clone(),
            "{}",
            String::from_utf8_lossy(lt)
        );
    }
}

#[test]
fn dht_krpc_implied_port_announce_still_sends_port_for_libtorrent() {
    let q = Query::AnnouncePeer {
        info_hash: InfoHash(ID2),
        port: 0,
        implied_port: true,
        token: b"tk",
    };
    let mut out = [0u8; 256];
    let n = encode_query(b"aa", false, &NodeId(ID), &q, &mut out).unwrap();
    let s = &out[..n];
    assert!(
        s.windows(9).any(|w| w == b"4:porti0e"),
        "{}",
        String::from_utf8_lossy(s)
    );
    assert_eq!(
        dec(s).unwrap().body,
        Body::Query {
            id: NodeId(ID),
            query: q
        }
    );
    // Port 0 without implied_port is refused.
    let bad = Query::AnnouncePeer {
        info_hash: InfoHash(ID2),
        port: 0,
        implied_port: false,
        token: b"tk",
    };
    assert_eq!(
        encode_query(b"aa", false, &NodeId(ID), &bad, &mut out),
        Err(EncodeErrorKind::Invalid)
    );
}
