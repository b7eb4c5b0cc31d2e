//! Tests of the state file (parse, round trip, size limit) and of the node
//! id choice (BEP 42).

use std::net::{Ipv4Addr, SocketAddrV4};

use ourtorrent_core::dht::{bep42, Config, Dht, NodeId, NodeSlot, PeerSlot, K};
use ourtorrent_core::time::Instant;

use super::state::STATE_HEADER;
use super::*;

#[test]
fn state_parses_id_nodes_and_skips_bad_lines() {
    let id = "11".repeat(20);
    let n = "22".repeat(20);
    let text = format!(
        "{STATE_HEADER}\nid {id}\n\n{n} 127.0.0.1:6881\n{n} nonsense\nzz 1.2.3.4:5\n{n} [::1]:5\nid {n}\n"
    );
    let st = parse_state(&text);
    assert_eq!(st.id, Some(NodeId([0x11; 20])));
    assert_eq!(
        st.nodes,
        [(NodeId([0x22; 20]), "127.0.0.1:6881".parse().unwrap())]
    );
    // `nonsense`, `zz`, the IPv6 address and the second `id`.
    assert_eq!(st.bad_lines, 4);
    assert_eq!(st.first_bad, Some(5));
}

#[test]
fn state_parser_never_panics_on_random_text() {
    // xorshift64: reproducible lines drawn from the format's alphabet.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let abc = b"0123456789abcdefABCDEFxz:.[] \t#id\n\xff";
    let mut text = Vec::new();
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push(abc[(x % abc.len() as u64) as usize]);
    }
    let mut text = String::from_utf8_lossy(&text).into_owned();
    // A good line after the noise still loads.
    text.push_str(&format!("\n{} 127.0.0.9:9\n", "ab".repeat(20)));
    let st = parse_state(&text);
    assert!(st.bad_lines > 0);
    assert_eq!(
        st.nodes.last(),
        Some(&(NodeId([0xab; 20]), "127.0.0.9:9".parse().unwrap()))
    );
}

#[test]
fn state_file_round_trips_and_is_size_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dht.state");
    assert_eq!(load_state(&path).unwrap(), None);
    let mut slots = vec![NodeSlot::EMPTY; 4 * K];
    let mut peers = vec![PeerSlot::EMPTY; 4];
    let mut d = Dht::new(
        Config::default(),
        NodeId([1; 20]),
        [7; 32],
        &mut slots,
        &mut peers,
        Instant::ZERO,
    );
    let addr: SocketAddrV4 = "127.0.0.2:7000".parse().unwrap();
    assert!(d.restore_node(Instant::ZERO, NodeId([0x80; 20]), addr));
    assert_eq!(save_state(&path, d.id(), d.table()).unwrap(), 1);
    let st = load_state(&path).unwrap().unwrap();
    assert_eq!(st.id, Some(NodeId([1; 20])));
    assert_eq!(st.nodes, [(NodeId([0x80; 20]), addr)]);
    assert_eq!(st.bad_lines, 0);
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // At the limit it loads; one byte more is refused.
    let big = dir.path().join("big");
    std::fs::write(&big, "#".repeat(MAX_STATE_BYTES as usize)).unwrap();
    assert!(load_state(&big).unwrap().is_some());
    std::fs::write(&big, "#".repeat(MAX_STATE_BYTES as usize + 1)).unwrap();
    let e = load_state(&big).unwrap_err().to_string();
    assert!(e.contains("longer than"), "{e}");
}

#[test]
fn node_id_is_kept_unless_it_breaks_bep42_on_a_public_address() {
    let saved = NodeId([9; 20]);
    let local = Ipv4Addr::new(127, 0, 0, 1);
    let any = Ipv4Addr::UNSPECIFIED;
    let public = Ipv4Addr::new(124, 31, 75, 21);
    assert_eq!(choose_id(Some(saved), local, [1; 20]), saved);
    assert_eq!(choose_id(Some(saved), any, [1; 20]), saved);
    assert_eq!(choose_id(None, local, [1; 20]), NodeId([1; 20]));
    assert!(!bep42::is_valid(&saved, public));
    let fresh = choose_id(Some(saved), public, [1; 20]);
    assert!(bep42::is_valid(&fresh, public));
    assert_eq!(choose_id(Some(fresh), public, [2; 20]), fresh);
    assert!(bep42::is_valid(&choose_id(None, public, [3; 20]), public));
}
