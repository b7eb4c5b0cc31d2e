use super::*;
use crate::id::{InfoHash, PeerId};
use crate::tracker::udp::request::{encode_scrape_request, UdpOptions};
use crate::tracker::udp::{ParseErrorKind, Response, MAX_SCRAPE_HASHES, PROTOCOL_ID};
use crate::tracker::AnnounceEvent;
use core::net::{Ipv4Addr, Ipv6Addr};
use std::vec::Vec;

const K1: [u8; SECRET_LEN] = [7; SECRET_LEN];
const K2: [u8; SECRET_LEN] = [8; SECRET_LEN];
const K3: [u8; SECRET_LEN] = [9; SECRET_LEN];

fn a4() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(198, 51, 100, 7), 6881))
}

fn a6() -> SocketAddr {
    SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7), 6881))
}

/// An arbitrary, large "now" so that tick wrap-around is exercised too.
const T0: u64 = 1_700_000_000_000;

/// The SipHash reference key 00 01 .. 0f.
fn reference_mac() -> Mac {
    Mac {
        k0: 0x0706_0504_0302_0100,
        k1: 0x0f0e_0d0c_0b0a_0908,
    }
}

#[test]
fn siphash_matches_the_reference_vectors() {
    // Aumasson & Bernstein, "SipHash: a fast short-input PRF", appendix A
    // (15-byte message), and the reference code's vectors for 0 and 8 bytes.
    let m = reference_mac();
    let msg: Vec<u8> = (0u8..15).collect();
    assert_eq!(m.hash(&msg), 0xa129_ca61_49be_45e5);
    assert_eq!(m.hash(&[]), 0x726f_db47_dd0e_0e31);
    assert_eq!(m.hash(&msg[..8]), 0x93f5_f579_9a93_2462);
}

#[test]
fn every_secret_byte_keys_the_tag() {
    let base: [u8; SECRET_LEN] = core::array::from_fn(|i| i as u8);
    let ip: IpAddr = Ipv4Addr::new(198, 51, 100, 7).into();
    let tag = Mac::new(&base).tag(1, ip);
    for i in 0..SECRET_LEN {
        let mut s = base;
        s[i] ^= 0x80;
        assert_ne!(Mac::new(&s).tag(1, ip), tag, "secret byte {i}");
    }
    // Tick, family and address are all covered.
    assert_ne!(Mac::new(&base).tag(2, ip), tag);
    let mapped: IpAddr = Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped().into();
    assert_ne!(Mac::new(&base).tag(1, mapped), tag);
}

#[test]
fn lifetime_edges() {
    let ids = ConnectionIds::new(&K1);
    for start in [T0, T0 + 14_999, 0, 5_000] {
        let issued = Instant(start);
        for addr in [a4(), a6()] {
            let id = ids.issue(issued, addr.ip());
            // Accepted for the whole 2 minutes (BEP 15), at 1 s steps.
            for s in 0..=CONNECTION_ID_LIFETIME_SECS {
                assert!(ids.validate(issued + crate::time::Duration::from_secs(s), addr.ip(), id));
            }
            // Never after 135 s.
            let late = Instant(start + 135_000);
            assert!(!ids.validate(late, addr.ip(), id));
            // Not from the future: one tick earlier than its issue tick.
            let early = Instant((start / 15_000 * 15_000).saturating_sub(1));
            if start >= 15_000 {
                assert!(!ids.validate(early, addr.ip(), id));
            }
        }
    }
}

#[test]
fn bound_to_ip_not_port_and_secret() {
    let ids = ConnectionIds::new(&K1);
    let now = Instant(T0);
    let id = ids.issue(now, a4().ip());
    // Another IP (other v4 address, v6, the v4-mapped v6 form) is refused.
    assert!(!ids.validate(now, Ipv4Addr::new(198, 51, 100, 8).into(), id));
    assert!(!ids.validate(now, a6().ip(), id));
    let mapped = Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped();
    assert!(!ids.validate(now, mapped.into(), id));
    assert!(!ConnectionIds::new(&K2).validate(now, a4().ip(), id));
    // Flipping any bit breaks it.
    for bit in 0..64 {
        assert!(
            !ids.validate(now, a4().ip(), ConnectionId(id.0 ^ (1 << bit))),
            "{bit}"
        );
    }
    // The same inputs give the same id (stateless), different ticks differ.
    assert_eq!(ids.issue(now, a4().ip()), id);
    assert_ne!(ids.issue(Instant(T0 + 15_000), a4().ip()), id);
    // The 64-bit wire value that a client sends back for an IPv4 id round trips.
    assert!(ids.validate(
        now,
        a4().ip(),
        ConnectionId(u64::from_be_bytes(id.0.to_be_bytes()))
    ));
}

#[test]
fn rotation_keeps_previous_only() {
    let mut ids = ConnectionIds::new(&K1);
    let now = Instant(T0);
    let id = ids.issue(now, a4().ip());
    ids.rotate(&K2);
    assert!(ids.validate(now, a4().ip(), id));
    let id2 = ids.issue(now, a4().ip());
    assert_ne!(id, id2);
    ids.rotate(&K3);
    assert!(!ids.validate(now, a4().ip(), id));
    assert!(ids.validate(now, a4().ip(), id2));
}

#[test]
fn restored_secrets_keep_ids_valid() {
    // A restart that restores (current, previous) accepts the ids issued
    // under either; a fresh secret accepts neither.
    let mut before = ConnectionIds::new(&K1);
    let now = Instant(T0);
    let old = before.issue(now, a4().ip());
    before.rotate(&K2);
    let cur = before.issue(now, a4().ip());
    let after = ConnectionIds::with_previous(&K2, &K1);
    assert!(after.validate(now, a4().ip(), old));
    assert!(after.validate(now, a4().ip(), cur));
    assert_eq!(after.issue(now, a4().ip()), cur);
    let fresh = ConnectionIds::new(&K3);
    assert!(!fresh.validate(now, a4().ip(), old));
    assert!(!fresh.validate(now, a4().ip(), cur));
}

#[test]
fn wrapped_tick_is_refused() {
    let ids = ConnectionIds::new(&K1);
    let id = ids.issue(Instant(T0), a4().ip());
    // 2^16 ticks later the 16-bit tick matches again, but the MAC does not.
    let later = Instant(T0 + 65_536 * 15_000);
    assert!(!ids.validate(later, a4().ip(), id));
}

fn connect_req(tid: u32) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&PROTOCOL_ID.to_be_bytes());
    p[12..].copy_from_slice(&tid.to_be_bytes());
    p
}

fn announce_req(cid: ConnectionId, num_want: i32, pad: usize) -> Vec<u8> {
    let req = AnnounceRequest {
        connection_id: cid,
        transaction_id: TransactionId(77),
        info_hash: InfoHash([1; 20]),
        peer_id: PeerId([2; 20]),
        downloaded: 0,
        left: 10,
        uploaded: 0,
        event: AnnounceEvent::Started,
        ip: Ipv4Addr::UNSPECIFIED,
        key: 5,
        num_want,
        port: 6881,
        options: UdpOptions::EMPTY,
    };
    let mut out = [0u8; 98];
    req.encode(&mut out).unwrap();
    let mut v = out.to_vec();
    v.extend(core::iter::repeat_n(1u8, pad)); // BEP 41 NOPs
    v
}

fn server() -> Server {
    Server::new(&K1, Limits::default())
}

#[test]
fn triage() {
    let s = server();
    let now = Instant(T0);
    let mut out = [0u8; 2000];
    // Connect → 16-byte reply with a valid id.
    let Decision::Connect(n) = s.handle(now, a4(), &connect_req(9), &mut out) else {
        panic!()
    };
    assert_eq!(n, 16);
    let Ok(Response::Connect(c)) =
        Response::parse(&out[..n], AddressFamily::V4, &Limits::default())
    else {
        panic!()
    };
    assert_eq!(c.transaction_id, TransactionId(9));
    let cid = c.connection_id;
    // Announce with it → to process; from another port of the same IP
    // (another socket of the same client process) → to process too; from
    // another address → dropped.
    let ann = announce_req(cid, -1, 0);
    assert!(matches!(s.handle(now, a4(), &ann, &mut out), Decision::Announce(a) if a.port == 6881));
    for port in [1, 6882, 65535] {
        let mut other_port = a4();
        other_port.set_port(port);
        assert!(matches!(
            s.handle(now, other_port, &ann, &mut out),
            Decision::Announce(_)
        ));
    }
    let other_ip = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 8), 6881));
    assert_eq!(
        s.handle(now, other_ip, &ann, &mut out),
        Decision::Drop(DropReason::BadConnectionId)
    );
    assert_eq!(
        s.handle(now, a6(), &ann, &mut out),
        Decision::Drop(DropReason::BadConnectionId)
    );
    // Expired.
    assert_eq!(
        s.handle(Instant(T0 + 135_000), a4(), &ann, &mut out),
        Decision::Drop(DropReason::BadConnectionId)
    );
    // Scrape.
    let mut sc = [0u8; 100];
    let n = encode_scrape_request(cid, TransactionId(3), &[InfoHash([4; 20])], &mut sc).unwrap();
    assert!(
        matches!(s.handle(now, a4(), &sc[..n], &mut out), Decision::Scrape(r) if r.info_hashes.len() == 1)
    );
    // Malformed with a valid id → a bounded error reply naming the problem.
    let mut bad = ann.clone();
    bad[83] = 9;
    let Decision::Error(n) = s.handle(now, a4(), &bad, &mut out) else {
        panic!()
    };
    assert!(n <= MAX_AMPLIFICATION * bad.len());
    let Ok(Response::Error(e)) = Response::parse(&out[..n], AddressFamily::V4, &Limits::default())
    else {
        panic!()
    };
    assert_eq!(e.transaction_id, TransactionId(77));
    assert_eq!(e.message, b"udp tracker: unknown event 9 at byte 80");
    // Malformed with a bad id → nothing.
    bad[0] ^= 1;
    assert_eq!(
        s.handle(now, a4(), &bad, &mut out),
        Decision::Drop(DropReason::BadConnectionId)
    );
    // Too short / not the protocol → nothing.
    assert_eq!(
        s.handle(now, a4(), &[0; 15], &mut out),
        Decision::Drop(DropReason::Malformed(crate::tracker::udp::ParseError::new(
            ParseErrorKind::Truncated,
            15
        )))
    );
    assert!(matches!(
        s.handle(now, a4(), &[0; 16], &mut out),
        Decision::Drop(DropReason::Malformed(_))
    ));
    // Output too small.
    assert_eq!(
        s.handle(now, a4(), &connect_req(1), &mut out[..15]),
        Decision::Drop(DropReason::OutputTooSmall)
    );
    // Too many scrape hashes with a valid id → error reply, smaller than the request.
    let hs = [InfoHash([0; 20]); MAX_SCRAPE_HASHES + 1];
    let n = encode_scrape_request(cid, TransactionId(3), &hs, &mut out).unwrap();
    let req = out[..n].to_vec();
    assert!(matches!(s.handle(now, a4(), &req, &mut out), Decision::Error(m) if m < n));
}

#[test]
fn max_peers_bound() {
    assert_eq!(max_peers_for_request(98, AddressFamily::V4), 62);
    assert_eq!(max_peers_for_request(98, AddressFamily::V6), 20);
    assert_eq!(max_peers_for_request(0, AddressFamily::V4), 0);
    assert_eq!(
        max_peers_for_request(usize::MAX, AddressFamily::V6),
        (usize::MAX - 20) / 18
    );
}

#[test]
fn replies_never_exceed_amplification_bound() {
    let s = server();
    let now = Instant(T0);
    let many: Vec<SocketAddr> = (0..2000u32)
        .flat_map(|i| {
            [
                SocketAddr::from((Ipv4Addr::from(i), 1)),
                SocketAddr::from((Ipv6Addr::from(u128::from(i)), 1)),
            ]
        })
        .collect();
    let mut out = [0u8; 20 + 18 * 2000];
    for from in [a4(), a6()] {
        let cid = s.connection_ids().issue(now, from.ip());
        for pad in [0, 1, 50, 300] {
            for want in [-1, 0, 10, 50, 1000, i32::MAX] {
                let req = announce_req(cid, want, pad);
                let Decision::Announce(a) = s.handle(now, from, &req, &mut out) else {
                    panic!()
                };
                let n = s
                    .announce_reply(
                        &a,
                        req.len(),
                        &from,
                        SwarmInfo::default(),
                        many.iter().copied(),
                        &mut out,
                    )
                    .unwrap();
                assert!(n <= MAX_AMPLIFICATION * req.len(), "{pad} {want}");
                let fam = AddressFamily::of(&from);
                let peers = (n - 20) / fam.peer_len();
                if let Ok(w) = usize::try_from(want) {
                    assert!(peers <= w);
                }
                assert_eq!(
                    peers,
                    max_peers_for_request(req.len(), fam)
                        .min(usize::try_from(want).unwrap_or(usize::MAX))
                        .min(2000)
                );
            }
        }
        let n = error_reply(16, TransactionId(1), &[b'x'; 500], &mut out).unwrap();
        assert_eq!(n, 64);
    }
}

#[test]
fn spoofed_connect_flood_is_stateless_and_bad_ids_get_no_reply() {
    // Attack: UDP reflection with spoofed sources (BEP 15 "UDP connections
    // / spoofing"; cf. Adamsky et al., USENIX WOOT 2015, on reflective DDoS
    // through BitTorrent's UDP protocols): a connect flood. The
    // server keeps no per-client state (`handle` takes `&self`), answers a
    // connect with exactly as many bytes as it received, and anything else
    // only with an id issued to that very address.
    let s = server();
    let now = Instant(T0);
    let mut out = [0u8; 64];
    let mut ids = Vec::new();
    for i in 0..10_000u32 {
        let from = SocketAddr::from((Ipv4Addr::from(0x0a00_0000 | i), 6881));
        let req = connect_req(i);
        let Decision::Connect(n) = s.handle(now, from, &req, &mut out) else {
            panic!("connect {i} not answered")
        };
        assert_eq!(n, req.len());
        if i < 2 {
            let Ok(Response::Connect(c)) =
                Response::parse(&out[..n], AddressFamily::V4, &Limits::default())
            else {
                panic!()
            };
            ids.push((from, c.connection_id));
        }
    }
    // An id issued to one spoofed address does not work from another.
    let (a, id_a) = ids[0];
    let (b, _) = ids[1];
    let ann = announce_req(id_a, -1, 0);
    assert!(matches!(
        s.handle(now, a, &ann, &mut out),
        Decision::Announce(_)
    ));
    assert_eq!(
        s.handle(now, b, &ann, &mut out),
        Decision::Drop(DropReason::BadConnectionId)
    );
    // Malformed requests with a guessed id: no error reply at all.
    for guess in [0u64, 1, PROTOCOL_ID, u64::MAX, id_a.0 ^ 1] {
        let mut bad = announce_req(ConnectionId(guess), -1, 0);
        bad[83] = 9; // unknown event
        assert_eq!(
            s.handle(now, a, &bad, &mut out),
            Decision::Drop(DropReason::BadConnectionId)
        );
    }
}

#[test]
fn scrape_with_1000_hashes_gets_a_small_reply_or_none() {
    // Attack: a 1000-hash scrape. With a valid id: an error reply far
    // smaller than the request; with a bad (spoofed) id: nothing.
    let s = server();
    let now = Instant(T0);
    let cid = s.connection_ids().issue(now, a4().ip());
    let hs = [InfoHash([3; 20]); 1000];
    let mut req = [0u8; 16 + 20 * 1000];
    let n = encode_scrape_request(cid, TransactionId(5), &hs, &mut req).unwrap();
    assert_eq!(n, req.len());
    let mut out = [0u8; 256];
    let Decision::Error(m) = s.handle(now, a4(), &req, &mut out) else {
        panic!()
    };
    assert!(m <= 8 + 64 && m < n);
    let Ok(Response::Error(e)) = Response::parse(&out[..m], AddressFamily::V4, &Limits::default())
    else {
        panic!()
    };
    assert_eq!(e.transaction_id, TransactionId(5));
    assert_eq!(
        s.handle(now, a6(), &req, &mut out),
        Decision::Drop(DropReason::BadConnectionId)
    );
}
