//! Our metainfo parser against torrents made by third-party tools: mktorrent
//! and libtorrent (python3-libtorrent), with libtorrent as the reference for
//! info-hash, piece count and file list.
//! `cargo test mktorrent` / `cargo test libtorrent` run these.

use std::path::Path;
use std::process::Command;

use ourtorrent_core::bencode::Token;
use ourtorrent_core::metainfo::{path_buffer_len, Limits, Metainfo};
use ourtorrent_tests::{
    lt_info, lt_script, make_tree, require_libtorrent, require_tool, run, write_data,
};
use serde_json::Value as Json;

/// Parses with our core and asserts agreement with libtorrent's view.
fn assert_agrees(torrent: &Path, lt: &Json) {
    let bytes = std::fs::read(torrent).unwrap();
    let mut toks = vec![Token::EMPTY; bytes.len() / 2 + 1];
    let m = Metainfo::parse(&bytes, &mut toks, &Limits::default()).expect("our parse");
    assert_eq!(m.info_hash().to_string(), lt["info_hash"].as_str().unwrap());
    assert_eq!(m.name(), lt["name"].as_str().unwrap());
    assert_eq!(m.piece_length(), lt["piece_length"].as_u64().unwrap());
    assert_eq!(m.piece_count() as u64, lt["num_pieces"].as_u64().unwrap());
    assert_eq!(m.total_length(), lt["total_size"].as_u64().unwrap());
    assert_eq!(m.is_private(), lt["private"].as_bool().unwrap());
    // libtorrent's paths include the torrent name for multi-file torrents.
    let mut buf = vec![0u8; path_buffer_len(&Limits::default())];
    let ours: Vec<(String, u64, bool)> = m
        .files()
        .map(|f| {
            let p = f.path_into(&mut buf).unwrap();
            assert!(!p.changed, "a well-formed torrent needs no renaming");
            let p = if m.is_multi_file() {
                format!("{}/{}", m.name(), p.path)
            } else {
                p.path.to_string()
            };
            (p, f.length, f.is_padding())
        })
        .collect();
    let theirs: Vec<(String, u64, bool)> = lt["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f[0].as_str().unwrap().to_string(),
                f[1].as_u64().unwrap(),
                f[2].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(ours, theirs);
    // BEP 12: clients shuffle the URLs within a tier (libtorrent does), so
    // compare tiers as sets.
    let mut trackers: Vec<(u64, String)> = m
        .trackers()
        .map(|(t, u)| (t as u64, u.to_string()))
        .collect();
    let mut lt_trackers: Vec<(u64, String)> = lt["trackers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t[0].as_u64().unwrap(), t[1].as_str().unwrap().to_string()))
        .collect();
    trackers.sort();
    lt_trackers.sort();
    assert_eq!(trackers, lt_trackers);
}

#[test]
fn mktorrent_multi_file_matches_libtorrent() {
    let (Some(mk), Some(py)) = (require_tool("mktorrent"), require_libtorrent()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("tree");
    make_tree(&src);
    let t = dir.path().join("tree.torrent");
    run(Command::new(mk)
        .args(["-l", "15", "-p", "-c", "multi"])
        .args(["-a", "http://127.0.0.1:6969/announce,udp://127.0.0.1:6969"])
        .args(["-a", "udp://127.0.0.1:7000"])
        .arg("-o")
        .arg(&t)
        .arg(&src));
    let lt = lt_info(&py, &t);
    assert_eq!(lt["files"].as_array().unwrap().len(), 4);
    assert_agrees(&t, &lt);
}

#[test]
fn mktorrent_single_file_matches_libtorrent() {
    let (Some(mk), Some(py)) = (require_tool("mktorrent"), require_libtorrent()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Piece-length edge: exactly 3 pieces of 32 KiB, then one byte more.
    for (i, len) in [3 * 32_768usize, 3 * 32_768 + 1].into_iter().enumerate() {
        let src = dir.path().join(format!("single{i}.bin"));
        write_data(&src, len, 9 + i as u64);
        let t = dir.path().join(format!("single{i}.torrent"));
        run(Command::new(&mk)
            .args(["-l", "15", "-a", "http://127.0.0.1:6969/announce", "-o"])
            .arg(&t)
            .arg(&src));
        let lt = lt_info(&py, &t);
        assert_eq!(lt["num_pieces"].as_u64().unwrap(), 3 + i as u64);
        assert_agrees(&t, &lt);
    }
}

#[test]
fn libtorrent_created_v1_and_hybrid_torrents() {
    let Some(py) = require_libtorrent() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("tree");
    make_tree(&src);
    for flags in [&["--v1-only"][..], &[][..]] {
        let t = dir.path().join(format!("lt{}.torrent", flags.len()));
        run(Command::new(&py)
            .arg(lt_script())
            .arg("create")
            .arg(&src)
            .arg(&t)
            .args(flags)
            .args(["--piece-size", "16384", "--tracker", "udp://127.0.0.1:6969"]));
        let lt = lt_info(&py, &t);
        if flags.is_empty() {
            // Hybrid (BEP 52) torrents from libtorrent carry BEP 47 pad files.
            let pads = lt["files"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f[2].as_bool().unwrap())
                .count();
            assert!(pads > 0, "expected padding files in a hybrid torrent");
        }
        assert_agrees(&t, &lt);
    }
}
