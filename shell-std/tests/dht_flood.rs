//! Issue 11, hostile: a flood of get_peers and find_node (2,000 datagrams
//! from 200 source ports, each answering the node's pings so that its
//! table fills and replies carry nodes) against a `shell-std dht` node.
//! Every reply stays within the core's amplification bound
//! (`MAX_REPLY_AMPLIFICATION` × the request), the node keeps answering an
//! honest node afterwards, its RSS (from /proc) stays bounded, and its
//! counters count the flood.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use ourtorrent_core::dht::krpc::{self, Body, Query, ResponseParts, Token, RECOMMENDED_TOKENS};
use ourtorrent_core::dht::node::MAX_REPLY_AMPLIFICATION;
use ourtorrent_core::dht::NodeId;
use ourtorrent_core::id::InfoHash;
use ourtorrent_tests::Proc;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_shell-std");
/// Source sockets, and queries sent from each.
const SOCKETS: usize = 200;
const PER_SOCKET: usize = 10;
/// Sockets that send at once (a window of 100 datagrams, so the kernel's
/// receive buffer never drops one and the counts are exact).
const WINDOW: usize = 10;
/// RSS growth allowed over the flood.
const MAX_RSS_GROWTH_KIB: u64 = 16 << 10;

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {s}"))
}

fn stats(node: &Proc) -> Value {
    let ok = Command::new("kill")
        .args(["-USR1", &node.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -USR1");
    let l = node.wait_for("{\"dht_stats\"", Duration::from_secs(10));
    serde_json::from_str::<Value>(&l).unwrap()["dht_stats"].clone()
}

fn n(v: &Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_u64()
        .unwrap_or_else(|| panic!("no {path:?} in {v}"))
}

/// Query `q` of socket `s`: get_peers or find_node, targets spread.
fn query(s: usize, q: usize, out: &mut [u8]) -> usize {
    let me = NodeId([s as u8; 20]);
    let mut t = [0u8; 20];
    t[0] = (s * 31 + q * 7) as u8;
    t[1] = q as u8;
    let query = if q % 2 == 0 {
        Query::GetPeers {
            info_hash: InfoHash(t),
        }
    } else {
        Query::FindNode { target: NodeId(t) }
    };
    krpc::encode_query(&[s as u8, q as u8], false, &me, &query, out).unwrap()
}

/// Handles one datagram to socket `s`: a reply to one of ours is returned
/// as (query index, length); a ping from the node is answered.
fn handle(sock: &UdpSocket, s: usize, from: SocketAddr, d: &[u8]) -> Option<(usize, usize)> {
    let mut toks = [Token::EMPTY; RECOMMENDED_TOKENS];
    let m = krpc::decode(d, &mut toks).ok()?;
    match m.body {
        Body::Response(_) if m.tid.len() == 2 && m.tid[0] == s as u8 => {
            Some((usize::from(m.tid[1]), d.len()))
        }
        Body::Query {
            query: Query::Ping, ..
        } => {
            let mut out = [0u8; 256];
            let parts = ResponseParts::<std::iter::Empty<_>> {
                id: NodeId([s as u8; 20]),
                nodes: None,
                values: None,
                token: None,
                ip: None,
            };
            let len = krpc::encode_response(m.tid, false, parts, &mut out).unwrap();
            let _ = sock.send_to(&out[..len], from);
            None
        }
        _ => None,
    }
}

#[test]
fn dht_flood_of_get_peers_and_find_node_is_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Proc::spawn(
        "dht",
        Command::new(BIN)
            .args(["dht", "--listen", "127.0.0.1:0", "--state"])
            .arg(tmp.path().join("dht.state")),
    );
    let l = node.wait_for("dht listening on ", Duration::from_secs(10));
    let addr: SocketAddr = l.split_whitespace().nth(3).unwrap().parse().unwrap();
    let pid = node.child.id();
    let rss0 = rss_kib(pid);

    let socks: Vec<UdpSocket> = (0..SOCKETS)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let mut req_len = [0usize; PER_SOCKET];
    let mut replies = 0usize;
    let mut worst = 0.0f64;
    let t0 = Instant::now();
    let mut buf = [0u8; 2048];
    for w in (0..SOCKETS).step_by(WINDOW) {
        let mut got = [[false; PER_SOCKET]; WINDOW];
        for (i, s) in socks[w..w + WINDOW].iter().enumerate() {
            for (q, rl) in req_len.iter_mut().enumerate() {
                let len = query(w + i, q, &mut buf);
                *rl = len;
                s.send_to(&buf[..len], addr).unwrap();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.iter().flatten().any(|g| !g) && Instant::now() < deadline {
            let mut idle = true;
            for (i, s) in socks[w..w + WINDOW].iter().enumerate() {
                while let Ok((len, from)) = s.recv_from(&mut buf) {
                    idle = false;
                    if let Some((q, len)) = handle(s, w + i, from, &buf[..len]) {
                        let rl = req_len[q.min(PER_SOCKET - 1)];
                        assert!(
                            len <= MAX_REPLY_AMPLIFICATION * rl,
                            "reply of {len} B to a {rl} B query"
                        );
                        worst = worst.max(len as f64 / rl as f64);
                        if let Some(g) = got[i].get_mut(q) {
                            replies += usize::from(!*g);
                            *g = true;
                        }
                    }
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let flood = t0.elapsed();
    let rss1 = rss_kib(pid);
    eprintln!(
        "flood: {} queries from {SOCKETS} ports in {flood:?}, {replies} replies, \
         worst reply/request {worst:.2}, RSS {rss0} KiB -> {rss1} KiB",
        SOCKETS * PER_SOCKET
    );
    assert_eq!(replies, SOCKETS * PER_SOCKET, "every query answered");
    assert!(
        rss1 <= rss0 + MAX_RSS_GROWTH_KIB,
        "RSS grew from {rss0} KiB to {rss1} KiB"
    );

    // An honest node is still answered.
    let honest = UdpSocket::bind("127.0.0.1:0").unwrap();
    honest
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let len = krpc::encode_query(
        b"hn",
        false,
        &NodeId([0xee; 20]),
        &Query::GetPeers {
            info_hash: InfoHash([0x77; 20]),
        },
        &mut buf,
    )
    .unwrap();
    honest.send_to(&buf[..len], addr).unwrap();
    let mut rx = [0u8; 2048];
    loop {
        let (n, _) = honest.recv_from(&mut rx).expect("the honest node's reply");
        let mut toks = [Token::EMPTY; RECOMMENDED_TOKENS];
        let m = krpc::decode(&rx[..n], &mut toks).unwrap();
        if let (b"hn", Body::Response(r)) = (m.tid, m.body) {
            assert!(r.nodes.is_some(), "the table filled: nodes in the reply");
            break;
        }
    }

    // The counters count the flood (plus the honest query).
    let s = stats(&node);
    let half = (SOCKETS * PER_SOCKET / 2) as u64;
    assert_eq!(n(&s, &["in", "get_peers"]), half + 1, "{s}");
    assert_eq!(n(&s, &["in", "find_node"]), half, "{s}");
    assert!(n(&s, &["core", "queries_in"]) > 2 * half, "{s}");
    assert!(n(&s, &["out", "response"]) > 2 * half, "{s}");
    assert!(n(&s, &["table_nodes"]) > 0, "{s}");
    assert_eq!(n(&s, &["core", "replies_capped"]), 0, "{s}");
}
