//! `GET /api/torrents/{id}/files/{n}/stream` against a running daemon that
//! downloads from a rate-limited libtorrent seeder: a range in the middle
//! of a file not downloaded yet is answered with the right bytes while the
//! torrent is still incomplete; a range past the end gets 416; the whole
//! file without `Range` is byte-identical.

mod daemon_support;

use std::time::Instant;

use daemon_support::*;
use ourtorrent_tests::fixtures::LtSeeder;
use ourtorrent_tests::require_libtorrent;
use serde_json::Value;

/// Piece length of the test torrent.
const PIECE: u64 = 16 << 10;
/// `sub/big.bin`'s size: ~20 s at the seeder's limit.
const BIG: u64 = 6_000_000;
/// The seeder's upload limit (bytes/s).
const SEED_RATE: &str = "300000";
/// The range asked for: 100 kB in the middle of `sub/big.bin`.
const FIRST: u64 = 3_000_000;
const LAST: u64 = 3_099_999;
/// The range must be answered before this much of the torrent is there.
const MAX_PROGRESS: f64 = 0.6;

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Bit `i` of the `/pieces` bitfield (hex, BEP 3 order: high bit first).
fn piece_set(hex: &str, i: u64) -> bool {
    let at = (i / 8) as usize * 2;
    let byte = u8::from_str_radix(&hex[at..at + 2], 16).unwrap();
    byte & (0x80 >> (i % 8)) != 0
}

#[test]
fn daemon_streams_a_range_before_the_torrent_completes() {
    let Some(py) = require_libtorrent() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let (torrent, tree) = fixture(d.path(), PIECE as u32, BIG as usize);
    let src = std::fs::read(tree.join("sub/big.bin")).unwrap();
    let seed = LtSeeder::new(&py, &torrent, &d.path().join("src"))
        .opts(&["--upload-limit", SEED_RATE, "--no-trackers"])
        .start();
    let port = seed.port;
    let daemon = Daemon::start(&d.path().join("dl"), &d.path().join("state"), &[]);
    let id = daemon.add(&torrent, &format!("?peers=127.0.0.1:{port}"));
    daemon.wait(id, 30, "downloading", |v| v["state"] == "downloading");
    let files = daemon.get(&format!("/api/torrents/{id}/files"));
    let big = files
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "sub/big.bin")
        .unwrap_or_else(|| panic!("no sub/big.bin in {files}"));
    let (n, offset) = (
        big["index"].as_u64().unwrap(),
        big["offset"].as_u64().unwrap(),
    );
    let path = format!("/api/torrents/{id}/files/{n}/stream");

    // The range's pieces are not all there when it is asked for.
    let wanted = (offset + FIRST) / PIECE..=(offset + LAST) / PIECE;
    let pieces = daemon.get(&format!("/api/torrents/{id}/pieces"));
    let hex = pieces["bitfield"].as_str().unwrap();
    let there = wanted.clone().filter(|&p| piece_set(hex, p)).count();
    assert!(
        there < wanted.clone().count(),
        "the range's pieces were all verified before the request"
    );
    let before: Value = daemon.get(&format!("/api/torrents/{id}"));

    let t = Instant::now();
    let range = format!("bytes={FIRST}-{LAST}");
    let (st, head, body) = http_parts(daemon.api, "GET", &path, None, b"", &[("Range", &range)]);
    let took = t.elapsed();
    let after = daemon.get(&format!("/api/torrents/{id}"));
    assert_eq!(st, 206, "{head}");
    assert_eq!(
        header(&head, "content-range"),
        Some(format!("bytes {FIRST}-{LAST}/{BIG}").as_str())
    );
    assert_eq!(header(&head, "accept-ranges"), Some("bytes"));
    assert_eq!(
        header(&head, "content-type"),
        Some("application/octet-stream")
    );
    assert!(
        body == src[FIRST as usize..=LAST as usize],
        "wrong bytes for {range}"
    );
    // Answered well before the whole torrent was there. The read position
    // waits behind the blocks already requested from the seeder (a 2 MiB
    // pipeline, ~1/3 of the torrent here): measured 0.38 with the
    // read-ahead made high priority, 0.74 without it.
    assert_eq!(after["state"], "downloading", "{after}");
    let progress = after["progress"].as_f64().unwrap();
    assert!(progress < MAX_PROGRESS, "{after}");
    eprintln!(
        "range of {} pieces ({there} there at the request) answered in {took:?}; \
         progress {:.3} -> {progress:.3}",
        wanted.count(),
        before["progress"].as_f64().unwrap(),
    );

    // Past the end: 416 with the size.
    let past = format!("bytes={BIG}-");
    let (st, head, _) = http_parts(daemon.api, "GET", &path, None, b"", &[("Range", &past)]);
    assert_eq!(st, 416, "{head}");
    assert_eq!(
        header(&head, "content-range"),
        Some(format!("bytes */{BIG}").as_str())
    );

    // The whole file, asked for while it downloads: 200, byte-identical.
    let t = Instant::now();
    let (st, head, body) = http_parts(daemon.api, "GET", &path, None, b"", &[]);
    assert_eq!(st, 200, "{head}");
    assert_eq!(
        header(&head, "content-length"),
        Some(BIG.to_string().as_str())
    );
    assert!(body == src, "the streamed file differs from the source");
    eprintln!("whole file streamed in {:?}", t.elapsed());

    // An unknown file: 404.
    let (st, v) = daemon.req(
        "GET",
        &format!("/api/torrents/{id}/files/99/stream"),
        None,
        b"",
    );
    assert_eq!(st, 404, "{v}");
}
