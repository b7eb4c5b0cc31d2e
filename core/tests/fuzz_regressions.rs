//! Replays fuzz inputs through the same property helpers the cargo-fuzz
//! targets use, in plain `cargo test` (no nightly, no libFuzzer):
//! - every input a fuzz target ever failed on (and edge inputs worth
//!   pinning), in `tests/fuzz_regressions/<target>-<what>.bin`;
//! - every checked-in seed in `fuzz/corpus/<target>/`.

use std::path::Path;

#[path = "../../fuzz/differential/bencode_bendy.rs"]
mod bencode_bendy;

/// Runs the property helper of fuzz target `target` on `data`.
fn dispatch(target: &str, data: &[u8]) {
    use ourtorrent_core::fuzzing as f;
    match target {
        "bencode" => f::bencode(data),
        "bencode_differential" => bencode_bendy::check(data),
        "metainfo" => f::metainfo(data),
        "magnet" => f::magnet(data),
        "udp_tracker_request" => f::udp_tracker_request(data),
        "udp_tracker_response" => f::udp_tracker_response(data),
        "udp_tracker_server" => f::udp_tracker_server(data),
        "http_tracker_response" => f::http_tracker_response(data),
        "http_announce_query" => f::http_announce_query(data),
        "peer_wire" => f::peer_wire(data),
        "handshake" => f::handshake(data),
        "extension_handshake" => f::extension_handshake(data),
        "bitfield" => f::bitfield(data),
        "tracker_url" => f::tracker_url(data),
        "tracker_journal" => f::tracker_journal(data),
        "ut_metadata" => f::ut_metadata(data),
        "ut_pex" => f::ut_pex(data),
        "krpc" => f::krpc(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

#[test]
fn replay_fuzz_findings() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let target = name.split('-').next().unwrap();
        dispatch(target, &std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "no regression inputs found in {}", dir.display());
}

#[test]
fn replay_seed_corpora() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut targets = 0;
    for dir in std::fs::read_dir(&corpus).unwrap() {
        let dir = dir.unwrap().path();
        let target = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut seeds = 0;
        for seed in std::fs::read_dir(&dir).unwrap() {
            dispatch(&target, &std::fs::read(seed.unwrap().path()).unwrap());
            seeds += 1;
        }
        assert!(seeds > 0, "empty seed corpus for {target}");
        targets += 1;
    }
    // As many seed corpora as `[[bin]]` targets in fuzz/Cargo.toml.
    let manifest = std::fs::read_to_string(corpus.join("../Cargo.toml")).unwrap();
    let bins = manifest.matches("[[bin]]").count();
    assert_eq!(targets, bins, "one seed corpus per fuzz target");
}
