use super::*;
use crate::dht::krpc::Values;
use std::vec::Vec;

const T0: Instant = Instant::from_secs(100);
const IH: InfoHash = InfoHash([0x17; 20]);

fn a(last: u8, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, last), port)
}

struct Store {
    nodes: [NodeSlot; 16 * K],
    peers: [PeerSlot; 256],
}

fn store() -> Store {
    Store {
        nodes: [NodeSlot::EMPTY; 16 * K],
        peers: [PeerSlot::EMPTY; 256],
    }
}

fn node(s: &mut Store, id: u8) -> Dht<'_> {
    Dht::new(
        Config::default(),
        NodeId([id; 20]),
        [id; 32],
        &mut s.nodes,
        &mut s.peers,
        T0,
    )
}

fn query(tid: &[u8], id: NodeId, q: Query<'_>) -> Vec<u8> {
    let mut out = [0u8; 1500];
    let n = krpc::encode_query(tid, false, &id, &q, &mut out).unwrap();
    out[..n].to_vec()
}

/// Every datagram `d` sends now, as (destination, bytes).
fn drain(d: &mut Dht<'_>, now: Instant) -> Vec<(SocketAddrV4, Vec<u8>)> {
    let mut v = Vec::new();
    let mut buf = [0u8; krpc::MAX_DATAGRAM_LEN];
    while let Some((to, n)) = d.poll_transmit(now, &mut buf) {
        v.push((to, buf[..n].to_vec()));
    }
    v
}

fn body(b: &[u8]) -> Body<'_> {
    let mut toks = [Token::EMPTY; RECOMMENDED_TOKENS];
    krpc::decode(b, &mut toks).unwrap().body
}

fn reply_to(out: &[(SocketAddrV4, Vec<u8>)], to: SocketAddrV4) -> Vec<u8> {
    out.iter()
        .find(|(t, b)| *t == to && !matches!(body(b), Body::Query { .. }))
        .map(|(_, b)| b.clone())
        .expect("a reply")
}

fn get_token(d: &mut Dht<'_>, from: SocketAddrV4, now: Instant) -> Vec<u8> {
    d.handle_datagram(
        now,
        from,
        &query(b"gp", NodeId([9; 20]), Query::GetPeers { info_hash: IH }),
    );
    let r = reply_to(&drain(d, now), from);
    let Body::Response(r) = body(&r) else {
        panic!()
    };
    r.token.unwrap().to_vec()
}

fn announce(
    d: &mut Dht<'_>,
    from: SocketAddrV4,
    token: &[u8],
    port: u16,
    implied: bool,
    now: Instant,
) -> Body<'static> {
    let q = query(
        b"an",
        NodeId([9; 20]),
        Query::AnnouncePeer {
            info_hash: IH,
            port,
            implied_port: implied,
            token,
        },
    );
    d.handle_datagram(now, from, &q);
    let r = reply_to(&drain(d, now), from);
    match body(&r) {
        Body::Response(_) => Body::Error {
            code: 0,
            message: b"",
        },
        Body::Error { code, .. } => Body::Error {
            code,
            message: b"err",
        },
        _ => panic!(),
    }
}

#[test]
fn dht_node_answers_ping_and_verifies_newcomer_before_table() {
    let mut s = store();
    let mut d = node(&mut s, 1);
    let peer = a(2, 7000);
    let pid = NodeId([2; 20]);
    d.handle_datagram(T0, peer, &query(b"p1", pid, Query::Ping));
    let out = drain(&mut d, T0);
    // A reply with our id and the tid, plus a verification ping to the newcomer.
    let rep = reply_to(&out, peer);
    let Body::Response(r) = body(&rep) else {
        panic!()
    };
    assert_eq!(r.id, NodeId([1; 20]));
    assert!(d.table().is_empty(), "not in the table before it answers");
    let (_, ping) = out
        .iter()
        .find(|(_, b)| matches!(body(b), Body::Query { .. }))
        .unwrap();
    let mut toks = [Token::EMPTY; 64];
    let tid = krpc::decode(ping, &mut toks).unwrap().tid.to_vec();
    // An answer from another port is unsolicited.
    let mut buf = [0u8; 100];
    let parts = |id| ResponseParts {
        id,
        nodes: None,
        values: None::<core::iter::Empty<_>>,
        token: None,
        ip: None,
    };
    let n = krpc::encode_response(&tid, false, parts(pid), &mut buf).unwrap();
    d.handle_datagram(T0, a(2, 7001), &buf[..n]);
    assert_eq!(d.stats().unsolicited, 1);
    assert!(d.table().is_empty());
    // The right answer enters the table.
    d.handle_datagram(T0, peer, &buf[..n]);
    assert!(d.table().contains(&pid));
    // Replayed: no matching query any more.
    d.handle_datagram(T0, peer, &buf[..n]);
    assert_eq!(d.stats().unsolicited, 2);
}

#[test]
fn dht_node_id_mismatch_is_refused() {
    let mut s = store();
    let mut d = node(&mut s, 1);
    let peer = a(3, 7000);
    d.handle_datagram(T0, peer, &query(b"p1", NodeId([3; 20]), Query::Ping));
    let out = drain(&mut d, T0);
    let (_, ping) = out
        .iter()
        .find(|(_, b)| matches!(body(b), Body::Query { .. }))
        .unwrap();
    let mut toks = [Token::EMPTY; 64];
    let tid = krpc::decode(ping, &mut toks).unwrap().tid.to_vec();
    let mut buf = [0u8; 100];
    let parts = ResponseParts {
        id: NodeId([4; 20]),
        nodes: None,
        values: None::<core::iter::Empty<_>>,
        token: None,
        ip: None,
    };
    let n = krpc::encode_response(&tid, false, parts, &mut buf).unwrap();
    d.handle_datagram(T0, peer, &buf[..n]);
    assert_eq!(d.stats().id_mismatch, 1);
    assert!(d.table().is_empty());
}

#[test]
fn dht_node_read_only_queriers_are_not_pinged() {
    let mut s = store();
    let mut d = node(&mut s, 1);
    let mut out = [0u8; 200];
    let n = krpc::encode_query(b"r1", true, &NodeId([5; 20]), &Query::Ping, &mut out).unwrap();
    d.handle_datagram(T0, a(5, 1), &out[..n]);
    let sent = drain(&mut d, T0);
    assert_eq!(sent.len(), 1, "only the reply");
}

#[test]
fn dht_node_tokens_bound_to_ip_and_info_hash_and_rotate() {
    let mut s = store();
    let mut d = node(&mut s, 1);
    let from = a(7, 6000);
    let token = get_token(&mut d, from, T0);
    assert_eq!(token.len(), TOKEN_LEN);
    // Another IP with the same token: 203.
    let other = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 8), 6000);
    assert_eq!(
        announce(&mut d, other, &token, 6881, false, T0),
        Body::Error {
            code: 203,
            message: b"err"
        }
    );
    assert_eq!(d.stats().bad_tokens, 1);
    // Same IP, other port: accepted (tokens bind the IP only), stored with `port`.
    assert_eq!(
        announce(&mut d, a(7, 6001), &token, 6881, false, T0),
        Body::Error {
            code: 0,
            message: b""
        }
    );
    assert_eq!(d.stored_peers(&IH, T0).collect::<Vec<_>>(), [a(7, 6881)]);
    // implied_port: the source port is stored.
    assert_eq!(
        announce(&mut d, a(7, 6002), &token, 0, true, T0),
        Body::Error {
            code: 0,
            message: b""
        }
    );
    assert!(d.stored_peers(&IH, T0).any(|p| p == a(7, 6002)));
    // Token for one info-hash does not work for another.
    let q = query(
        b"an",
        NodeId([9; 20]),
        Query::AnnouncePeer {
            info_hash: InfoHash([1; 20]),
            port: 1,
            implied_port: false,
            token: &token,
        },
    );
    d.handle_datagram(T0, from, &q);
    assert!(matches!(
        body(&reply_to(&drain(&mut d, T0), from)),
        Body::Error { code: 203, .. }
    ));
    // One rotation: still valid; two: refused.
    let t1 = T0.add_millis(TOKEN_ROTATION.millis());
    d.handle_timeout(t1);
    drain(&mut d, t1);
    assert_eq!(
        announce(&mut d, from, &token, 6881, false, t1),
        Body::Error {
            code: 0,
            message: b""
        }
    );
    let t2 = t1.add_millis(TOKEN_ROTATION.millis());
    d.handle_timeout(t2);
    drain(&mut d, t2);
    assert_eq!(
        announce(&mut d, from, &token, 6881, false, t2),
        Body::Error {
            code: 203,
            message: b"err"
        }
    );
}

#[test]
fn dht_node_unknown_method_gets_204() {
    let mut s = store();
    let mut d = node(&mut s, 1);
    d.handle_datagram(
        T0,
        a(2, 1),
        &query(
            b"u1",
            NodeId([2; 20]),
            Query::Unknown {
                method: b"sample_infohashes",
            },
        ),
    );
    assert!(matches!(
        body(&reply_to(&drain(&mut d, T0), a(2, 1))),
        Body::Error { code: 204, .. }
    ));
}

#[test]
fn dht_node_peer_store_expires() {
    let mut s = store();
    let mut d = node(&mut s, 1);
    let token = get_token(&mut d, a(7, 1), T0);
    announce(&mut d, a(7, 1), &token, 5000, false, T0);
    let ttl = Config::default().peer_ttl.millis();
    assert_eq!(d.stored_peers(&IH, T0.add_millis(ttl - 1)).count(), 1);
    assert_eq!(d.stored_peers(&IH, T0.add_millis(ttl)).count(), 0);
    assert_eq!(d.stored_peer_count(T0.add_millis(ttl - 1)), 1);
    assert_eq!(d.stored_peer_count(T0.add_millis(ttl)), 0);
}

#[test]
fn dht_node_peer_store_bounded_per_info_hash() {
    let mut s = store();
    let mut d = node(&mut s, 1);
    for i in 0..(MAX_PEERS_PER_INFO_HASH as u16 + 20) {
        let from = a(7, 1000 + i);
        let token = get_token(&mut d, from, T0);
        announce(&mut d, from, &token, 0, true, T0.add_millis(u64::from(i)));
    }
    let now = T0.add_millis(1000);
    assert_eq!(d.stored_peers(&IH, now).count(), MAX_PEERS_PER_INFO_HASH);
    // The oldest went first.
    assert!(!d.stored_peers(&IH, now).any(|p| p == a(7, 1000)));
    assert!(d
        .stored_peers(&IH, now)
        .any(|p| p == a(7, 1000 + MAX_PEERS_PER_INFO_HASH as u16 + 19)));
}

#[test]
fn dht_node_reply_never_amplifies_beyond_factor() {
    let mut s = store();
    let mut d = node(&mut s, 1);
    // 100 peers stored for IH.
    for i in 0..100u16 {
        let from = SocketAddrV4::new(Ipv4Addr::new(127, 1, (i >> 8) as u8, i as u8), 2000 + i);
        let token = get_token(&mut d, from, T0);
        announce(&mut d, from, &token, 0, true, T0);
    }
    // A minimal spoofed get_peers (1-byte tid) from a victim.
    let req = query(b"x", NodeId([9; 20]), Query::GetPeers { info_hash: IH });
    let victim = a(200, 53);
    d.handle_datagram(T0, victim, &req);
    let r = reply_to(&drain(&mut d, T0), victim);
    assert!(
        r.len() <= MAX_REPLY_AMPLIFICATION * req.len(),
        "{} > {} × {}",
        r.len(),
        MAX_REPLY_AMPLIFICATION,
        req.len()
    );
    let Body::Response(resp) = body(&r) else {
        panic!()
    };
    let n = resp
        .values
        .map(|v: Values<'_>| v.iter().count())
        .unwrap_or(0);
    assert!(n > 10, "trimmed, not emptied: {n}");
    // With the cap removed it would not have fit: the cap did bite.
    assert!(n < 100);
}

#[test]
fn dht_node_garbage_and_oversize_are_counted_not_answered() {
    let mut s = store();
    let mut d = node(&mut s, 1);
    d.handle_datagram(T0, a(2, 1), b"garbage");
    d.handle_datagram(T0, a(2, 1), &[b'x'; krpc::MAX_DATAGRAM_LEN + 1]);
    d.handle_datagram(T0, a(2, 0), &query(b"p", NodeId([2; 20]), Query::Ping));
    assert_eq!(d.stats().malformed, 3);
    assert!(drain(&mut d, T0).is_empty());
}

#[test]
fn dht_node_lookup_bounded_alpha_and_timeouts() {
    let mut s = store();
    let mut d = node(&mut s, 1);
    let routers: Vec<_> = (0..10).map(|i| a(50 + i, 6881)).collect();
    let lid = d.bootstrap(T0, &routers).unwrap();
    let sent = drain(&mut d, T0);
    assert_eq!(sent.len(), ALPHA, "alpha queries in flight");
    // Nobody answers: after each timeout the next alpha go out, then done.
    let mut total = sent.len();
    let mut events = Vec::new();
    while !events.iter().any(|e| matches!(e, Event::LookupDone { .. })) {
        let now = d.poll_timeout().unwrap();
        d.handle_timeout(now);
        total += drain(&mut d, now).len();
        events.extend(core::iter::from_fn(|| d.poll_event()));
    }
    assert_eq!(total, 10);
    assert!(events.iter().any(|e| matches!(e, Event::LookupDone { lookup, messages: 10, responded: 0, .. } if *lookup == lid)));
    assert_eq!(d.stats().timeouts, 10);
    // The table is still empty: the routers are tried again after BOOTSTRAP_RETRY.
    let retry = T0.add_millis(BOOTSTRAP_RETRY.millis());
    assert_eq!(d.poll_timeout(), Some(retry));
    d.handle_timeout(retry);
    assert_eq!(drain(&mut d, retry).len(), ALPHA);
}

/// Answers the one outstanding ping `d` sent to `to` as node `id`.
fn answer_ping(
    d: &mut Dht<'_>,
    out: &[(SocketAddrV4, Vec<u8>)],
    to: SocketAddrV4,
    id: NodeId,
    now: Instant,
) {
    let (_, ping) = out
        .iter()
        .find(|(t, b)| {
            *t == to
                && matches!(
                    body(b),
                    Body::Query {
                        query: Query::Ping,
                        ..
                    }
                )
        })
        .expect("a ping");
    let mut toks = [Token::EMPTY; 64];
    let tid = krpc::decode(ping, &mut toks).unwrap().tid.to_vec();
    let mut buf = [0u8; 100];
    let parts = ResponseParts {
        id,
        nodes: None,
        values: None::<core::iter::Empty<_>>,
        token: None,
        ip: None,
    };
    let n = krpc::encode_response(&tid, false, parts, &mut buf).unwrap();
    d.handle_datagram(now, to, &buf[..n]);
}

#[test]
fn dht_node_bep42_enforced_for_public_addresses_only() {
    let mut s = store();
    let mut d = node(&mut s, 1);
    // BEP 42 vector: 124.31.75.21 with r = 1.
    let public = SocketAddrV4::new(Ipv4Addr::new(124, 31, 75, 21), 6881);
    let good = bep42::generate(*public.ip(), [0x01; 20]);
    let bad = NodeId([0x02; 20]);
    assert!(!bep42::is_valid(&bad, *public.ip()));
    d.add_node(T0, public);
    let out = drain(&mut d, T0);
    answer_ping(&mut d, &out, public, bad, T0);
    assert!(!d.table().contains(&bad));
    assert_eq!(d.stats().bep42_refused, 1);
    d.add_node(T0, public);
    let out = drain(&mut d, T0);
    answer_ping(&mut d, &out, public, good, T0);
    assert!(d.table().contains(&good));
    // Loopback: any id.
    d.add_node(T0, a(9, 9));
    let out = drain(&mut d, T0);
    answer_ping(&mut d, &out, a(9, 9), bad, T0);
    assert!(d.table().contains(&bad));
}

#[test]
fn dht_node_questionable_ping_and_bucket_refresh_after_15_minutes() {
    let mut s = store();
    let mut d = node(&mut s, 1);
    let peer = a(2, 2);
    let pid = NodeId([0x80; 20]);
    d.add_node(T0, peer);
    let out = drain(&mut d, T0);
    answer_ping(&mut d, &out, peer, pid, T0);
    assert!(d.table().contains(&pid));
    let fifteen = super::super::table::QUESTIONABLE_AFTER.millis();
    // Before 15 minutes nothing but token rotations happens.
    let due = d.poll_timeout().unwrap();
    assert!(due <= T0.add_millis(fifteen));
    let mut now = due;
    while now < T0.add_millis(fifteen) {
        d.handle_timeout(now);
        assert!(drain(&mut d, now).is_empty(), "nothing sent at {now:?}");
        now = d.poll_timeout().unwrap();
    }
    // At 15 minutes: a ping to the questionable node and a refresh
    // find_node for a random id in its bucket.
    assert_eq!(now, T0.add_millis(fifteen));
    d.handle_timeout(now);
    let out = drain(&mut d, now);
    assert!(out.iter().any(|(t, b)| *t == peer
        && matches!(
            body(b),
            Body::Query {
                query: Query::Ping,
                ..
            }
        )));
    let refresh = out.iter().find_map(|(t, b)| match body(b) {
        Body::Query {
            query: Query::FindNode { target },
            ..
        } if *t == peer => Some(target),
        _ => None,
    });
    let target = refresh.expect("a refresh lookup");
    assert_eq!(d.table().bucket_of(&target), d.table().bucket_of(&pid));
    assert_ne!(target, pid);
    // No answer: two failures make it bad, and it is not offered again.
    let later = now.add_millis(Config::default().query_timeout.millis());
    d.handle_timeout(later);
    assert_eq!(d.stats().timeouts, 2);
    let mut near = [(NodeId::default(), a(0, 0)); 1];
    assert_eq!(
        d.table().closest(&pid, &mut near),
        0,
        "bad nodes are not handed out"
    );
}

#[test]
fn dht_node_replies_carry_requester_ip_and_votes_set_external_ip() {
    let mut s = store();
    let mut d = node(&mut s, 1);
    let peer = a(2, 4444);
    d.handle_datagram(T0, peer, &query(b"p1", NodeId([2; 20]), Query::Ping));
    let rep = reply_to(&drain(&mut d, T0), peer);
    let Body::Response(r) = body(&rep) else {
        panic!()
    };
    assert_eq!(r.ip, Some(peer));
    // Three agreeing reports set our external IP; a dissenting one resets.
    let me = SocketAddrV4::new(Ipv4Addr::new(124, 31, 75, 21), 1);
    let report = |d: &mut Dht<'_>, from: SocketAddrV4, ip: SocketAddrV4| {
        d.add_node(T0, from);
        let out = drain(d, T0);
        let (_, ping) = out.iter().find(|(t, _)| *t == from).unwrap();
        let mut toks = [Token::EMPTY; 64];
        let tid = krpc::decode(ping, &mut toks).unwrap().tid.to_vec();
        let mut buf = [0u8; 128];
        let id = NodeId([from.ip().octets()[3]; 20]);
        let parts = ResponseParts {
            id,
            nodes: None,
            values: None::<core::iter::Empty<_>>,
            token: None,
            ip: Some(ip),
        };
        let n = krpc::encode_response(&tid, false, parts, &mut buf).unwrap();
        d.handle_datagram(T0, from, &buf[..n]);
    };
    report(&mut d, a(10, 1), me);
    report(&mut d, a(11, 1), me);
    assert_eq!(d.external_ip(), None);
    report(&mut d, a(12, 1), me);
    assert_eq!(d.external_ip(), Some(*me.ip()));
    report(&mut d, a(13, 1), a(99, 1));
    assert_eq!(d.external_ip(), None);
}

#[test]
fn dht_node_memory_footprint() {
    // The node's own state (the table and peer store are the caller's).
    let size = core::mem::size_of::<Dht<'static>>();
    std::println!(
        "Dht: {size} bytes; NodeSlot: {} bytes; PeerSlot: {} bytes",
        core::mem::size_of::<NodeSlot>(),
        core::mem::size_of::<PeerSlot>()
    );
    assert!(size < 64 * 1024, "{size}");
}

#[test]
fn dht_node_lookup_waits_when_queues_are_full_then_resumes() {
    let mut s = store();
    let mut d = node(&mut s, 1);
    // Fill the send queue with replies nobody drains.
    for i in 0..MAX_QUEUED as u16 + 5 {
        d.handle_datagram(
            T0,
            a(3, 100 + i),
            &query(b"q", NodeId([3; 20]), Query::Unknown { method: b"x" }),
        );
    }
    assert!(d.stats().queue_full > 0);
    let lid = d.bootstrap(T0, &[a(60, 1)]).unwrap();
    // Nothing queued for the router yet.
    let out = drain(&mut d, T0);
    assert!(!out.iter().any(|(t, _)| *t == a(60, 1)));
    let retry = d.poll_timeout().unwrap();
    assert_eq!(retry, T0.add_millis(SEND_RETRY.millis()));
    d.handle_timeout(retry);
    let out = drain(&mut d, retry);
    assert!(
        out.iter().any(|(t, _)| *t == a(60, 1)),
        "lookup {lid:?} resumed"
    );
}

#[test]
fn dht_node_poll_timeout_does_not_spin_when_table_work_is_blocked() {
    let mut s = store();
    let mut d = node(&mut s, 1);
    let peer = a(2, 2);
    d.add_node(T0, peer);
    let out = drain(&mut d, T0);
    answer_ping(&mut d, &out, peer, NodeId([0x80; 20]), T0);
    // Just before the bucket goes stale, every lookup slot gets busy.
    let due = T0.add_millis(super::super::table::REFRESH_AFTER.millis());
    let before = Instant::from_millis(due.millis() - 1);
    for i in 0..MAX_LOOKUPS as u8 {
        d.get_peers(before, InfoHash([i; 20])).unwrap();
    }
    assert_eq!(d.get_peers(before, IH), Err(Busy::TooManyLookups));
    drain(&mut d, before);
    // The bucket is stale, but no refresh lookup can start.
    d.handle_timeout(due);
    drain(&mut d, due);
    let next = d.poll_timeout().unwrap();
    assert!(next > due, "{next:?} must be after {due:?}");
}

#[test]
fn dht_node_read_only_mode_sends_ro_and_answers_nothing() {
    let mut s = store();
    let config = Config {
        read_only: true,
        ..Config::default()
    };
    let mut d = Dht::new(
        config,
        NodeId([1; 20]),
        [1; 32],
        &mut s.nodes,
        &mut s.peers,
        T0,
    );
    d.handle_datagram(T0, a(2, 2), &query(b"p1", NodeId([2; 20]), Query::Ping));
    assert!(
        drain(&mut d, T0).is_empty(),
        "BEP 43: a read-only node answers no query"
    );
    d.bootstrap(T0, &[a(3, 3)]).unwrap();
    let out = drain(&mut d, T0);
    let mut toks = [Token::EMPTY; 64];
    assert!(krpc::decode(&out[0].1, &mut toks).unwrap().read_only);
}

#[test]
fn dht_node_restore_node_enters_table_and_is_pinged() {
    let mut s = store();
    let mut d = node(&mut s, 1);
    let peer = a(5, 7000);
    let pid = NodeId([5; 20]);
    assert!(d.restore_node(T0, pid, peer));
    assert!(d.table().contains(&pid), "in the table before any answer");
    let out = drain(&mut d, T0);
    assert!(out
        .iter()
        .any(|(to, b)| *to == peer && matches!(body(b), Body::Query { .. })));
    // Refused: our own id, port 0, an unspecified address.
    assert!(!d.restore_node(T0, NodeId([1; 20]), a(6, 7000)));
    assert!(!d.restore_node(T0, NodeId([6; 20]), a(6, 0)));
    let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 7000);
    assert!(!d.restore_node(T0, NodeId([6; 20]), any));
    // A public address whose id breaks BEP 42 is refused.
    let public = SocketAddrV4::new(Ipv4Addr::new(8, 8, 8, 8), 7000);
    assert!(!d.restore_node(T0, NodeId([6; 20]), public));
    assert_eq!(d.table().len(), 1);
    // Silent: each unanswered ping counts as a failure.
    let later = T0.add_millis(Config::default().query_timeout.millis() + 1);
    d.handle_timeout(later);
    assert_eq!(d.table().nodes().next().map(|n| n.fails), Some(1));
}

#[test]
fn dht_node_lookup_ends_once_k_answered_without_waiting_for_a_silent_node() {
    let mut s = store();
    let mut d = node(&mut s, 1);
    let routers: Vec<_> = (0..10).map(|i| a(50 + i, 6881)).collect();
    let silent = routers[0];
    let lid = d
        .bootstrap_lookup(T0, LookupKind::FindNode, &routers)
        .unwrap();
    // Everyone but `silent` answers at once (with its id, no nodes).
    let mut sent = 0;
    let mut done = None;
    for _ in 0..routers.len() + 1 {
        let out = drain(&mut d, T0);
        sent += out.len();
        for (to, q) in out.iter().filter(|(to, _)| *to != silent) {
            let mut toks = [Token::EMPTY; 64];
            let tid = krpc::decode(q, &mut toks).unwrap().tid.to_vec();
            let mut buf = [0u8; 100];
            let parts = ResponseParts {
                id: NodeId([to.ip().octets()[3]; 20]),
                nodes: None,
                values: None::<core::iter::Empty<_>>,
                token: None,
                ip: None,
            };
            let n = krpc::encode_response(&tid, false, parts, &mut buf).unwrap();
            d.handle_datagram(T0, *to, &buf[..n]);
        }
        while let Some(e) = d.poll_event() {
            if let Event::LookupDone {
                lookup,
                responded,
                messages,
                ..
            } = e
            {
                assert_eq!(lookup, lid);
                done = Some((responded, messages));
            }
        }
    }
    // Done at T0: K answered, so the silent node's timeout is not awaited.
    let (responded, messages) = done.expect("the lookup ended before any timeout");
    assert!(usize::from(responded) >= K, "{responded}");
    assert!(usize::from(messages) <= routers.len(), "{messages}");
    assert!(sent <= routers.len(), "{sent}");
}
