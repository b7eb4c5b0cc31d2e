//! Every input a fuzz target ever failed on, replayed through the same
//! property helper (files under `tests/fuzz_regressions/`, named
//! `<target>-<what>.bin`).

use std::path::Path;

#[test]
fn replay_fuzz_findings() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(&path).unwrap();
        let target = name.split('-').next().unwrap();
        match target {
            "bencode" => ourtorrent_core::fuzzing::bencode(&data),
            "udp_tracker_request" => ourtorrent_core::fuzzing::udp_tracker_request(&data),
            "udp_tracker_response" => ourtorrent_core::fuzzing::udp_tracker_response(&data),
            "http_tracker_response" => ourtorrent_core::fuzzing::http_tracker_response(&data),
            "http_announce_query" => ourtorrent_core::fuzzing::http_announce_query(&data),
            "peer_wire" => ourtorrent_core::fuzzing::peer_wire(&data),
            "handshake" => ourtorrent_core::fuzzing::handshake(&data),
            "extension_handshake" => ourtorrent_core::fuzzing::extension_handshake(&data),
            "metainfo" => ourtorrent_core::fuzzing::metainfo(&data),
            "magnet" => ourtorrent_core::fuzzing::magnet(&data),
            other => panic!("{name}: unknown fuzz target {other}"),
        }
        n += 1;
    }
    assert!(n > 0, "no regression inputs found in {}", dir.display());
}
