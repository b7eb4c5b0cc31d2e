//! `shell-std info` as a user runs it: on a torrent made by mktorrent, and on
//! bad files (one-line error naming what and where, exit code 1).

use std::process::Command;

use ourtorrent_tests::{make_tree, require_tool, run};

fn shell_std() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shell-std"))
}

#[test]
fn info_prints_mktorrent_torrent() {
    let Some(mk) = require_tool("mktorrent") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("tree");
    make_tree(&src);
    let t = dir.path().join("tree.torrent");
    run(Command::new(mk)
        .args(["-l", "15", "-p", "-a", "udp://127.0.0.1:6969", "-o"])
        .arg(&t)
        .arg(&src));
    let out = run(shell_std().arg("info").arg(&t));
    for want in [
        "tree",
        "udp://127.0.0.1:6969",
        "32.00 KiB (32768 bytes)",
        "(140018 bytes)",
        "tree/sub/deeper/c.txt",
        "Private       ┆ yes",
        "Pieces        ┆ 5",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // The info-hash line is 40 hex digits.
    let line = out.lines().find(|l| l.contains("Info-hash")).unwrap();
    let hex = line.split('┆').nth(1).unwrap().trim_end_matches('│').trim();
    assert_eq!(hex.len(), 40);
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn info_refuses_bad_files_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[u8], &str)] = &[
        // A single file needs a name: `..` cannot be renamed into one.
        (
            b"d4:infod6:lengthi1e4:name2:..12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee",
            "'.' or '..' path component at byte 25",
        ),
        (
            b"d4:infod6:lengthi0e4:name1:x12:piece lengthi16384e6:pieces0:ee",
            "the torrent has no data (total length 0) at byte 7",
        ),
        (b"d4:info", "unexpected end of input at byte 7"),
        (
            b"d4:infod6:lengthi5e4:name1:x12:piece lengthi0e6:pieces0:ee",
            "piece length out of range at byte 43",
        ),
    ];
    for (i, (bytes, want)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("bad{i}.torrent"));
        std::fs::write(&p, bytes).unwrap();
        let out = shell_std().arg("info").arg(&p).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "want {want:?} in {err:?}");
        assert!(out.stdout.is_empty());
    }
    let out = shell_std()
        .arg("info")
        .arg(dir.path().join("missing.torrent"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// `info --json` of `t`, parsed.
fn info_json(t: &std::path::Path) -> serde_json::Value {
    let out = run(shell_std().args(["info", "--json"]).arg(t));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn info_json_matches_libtorrent_on_a_hybrid_torrent() {
    let Some(py) = ourtorrent_tests::require_libtorrent() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("tree");
    make_tree(&src);
    let t = dir.path().join("lt.torrent");
    // libtorrent's hybrid (BEP 52) torrents carry BEP 47 pad files.
    run(Command::new(&py)
        .arg(ourtorrent_tests::lt_script())
        .arg("create")
        .arg(&src)
        .arg(&t)
        .args(["--piece-size", "16384"])
        .args(["--tracker", "udp://127.0.0.1:6969"])
        .args(["--tracker", "http://127.0.0.1:8080/announce"]));
    let lt = ourtorrent_tests::lt_info(&py, &t);
    let ours = info_json(&t);
    assert_eq!(ours["name"], lt["name"]);
    assert_eq!(ours["info_hash"], lt["info_hash"]);
    assert_eq!(ours["piece_length"], lt["piece_length"]);
    assert_eq!(ours["pieces"], lt["num_pieces"]);
    assert_eq!(ours["total_size"], lt["total_size"]);
    assert_eq!(ours["private"], lt["private"]);
    let files = |v: &serde_json::Value| v.as_array().unwrap().len();
    assert_eq!(files(&ours["files"]), files(&lt["files"]));
    let mut pads = 0;
    for (o, l) in ours["files"]
        .as_array()
        .unwrap()
        .iter()
        .zip(lt["files"].as_array().unwrap())
    {
        assert_eq!(o["path"], l[0]);
        assert_eq!(o["length"], l[1]);
        assert_eq!(o["padding"], l[2]);
        pads += usize::from(o["padding"] == true);
    }
    assert!(pads > 0, "expected pad files");
    let trackers: Vec<_> = ours["trackers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| serde_json::json!([t["tier"], t["url"]]))
        .collect();
    assert_eq!(serde_json::Value::from(trackers), lt["trackers"]);
}

#[test]
fn info_json_has_the_values_create_made() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("blob.bin");
    ourtorrent_tests::write_data(&src, 40_000, 8);
    let t = dir.path().join("blob.torrent");
    let created = run(shell_std()
        .arg("create")
        .arg(&src)
        .args(["--piece-length", "16K", "--private", "--source", "SRC"])
        .args(["-t", "udp://127.0.0.1:6969", "-t", "http://127.0.0.1:1/a"])
        .arg("-o")
        .arg(&t));
    let ih = created.split("info-hash ").nth(1).unwrap().trim();
    let v = info_json(&t);
    assert_eq!(v["name"], "blob.bin");
    assert_eq!(v["info_hash"], ih);
    assert_eq!(v["piece_length"], 16384);
    assert_eq!(v["pieces"], 3); // ceil(40000 / 16384)
    assert_eq!(v["total_size"], 40_000);
    assert_eq!(v["private"], true);
    assert_eq!(v["source"], "SRC");
    assert_eq!(
        v["files"],
        serde_json::json!([{"path": "blob.bin", "length": 40000, "padding": false}])
    );
    assert_eq!(
        v["trackers"],
        serde_json::json!([
            {"tier": 0, "url": "udp://127.0.0.1:6969"},
            {"tier": 1, "url": "http://127.0.0.1:1/a"}
        ])
    );
}

#[test]
fn info_magnet_link_round_trips_through_the_core_parser() {
    use ourtorrent_core::magnet::Magnet;
    let dir = tempfile::tempdir().unwrap();
    // A name and a tracker that need escaping: space, '&', '+', '%', UTF-8.
    let name = "my file & co+100% é.bin";
    let src = dir.path().join(name);
    ourtorrent_tests::write_data(&src, 20_000, 9);
    let t = dir.path().join("m.torrent");
    let trackers = [
        "http://127.0.0.1:8080/announce?passkey=a%2Fb&x=1",
        "udp://[::1]:6969/announce",
        "http://127.0.0.1:8080/announce?passkey=a%2Fb&x=1", // repeated: listed once
    ];
    let mut cmd = shell_std();
    cmd.arg("create").arg(&src).arg("-o").arg(&t);
    for tr in trackers {
        cmd.args(["--tracker", tr]);
    }
    run(&mut cmd);
    let text = run(shell_std().arg("info").arg(&t));
    let link = text
        .lines()
        .find_map(|l| l.strip_prefix("Magnet: "))
        .unwrap_or_else(|| panic!("no magnet line in:\n{text}"));
    assert!(!link.contains(' '), "{link}");
    let v = info_json(&t);
    assert_eq!(v["magnet"], link);
    let mut buf = [0u8; 1024];
    let m = Magnet::parse(link, &mut buf).unwrap();
    assert_eq!(m.info_hash.to_string(), v["info_hash"].as_str().unwrap());
    assert_eq!(m.display_name, Some(name));
    assert_eq!(&m.trackers[..], &trackers[..2]);
}

#[test]
fn info_magnet_link_keeps_at_most_the_core_parsers_tracker_limit() {
    use ourtorrent_core::magnet::{Magnet, MAX_TRACKERS};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("blob.bin");
    ourtorrent_tests::write_data(&src, 1000, 2);
    let t = dir.path().join("many.torrent");
    let urls: Vec<String> = (0..=MAX_TRACKERS)
        .map(|i| format!("udp://127.0.0.1:{}", 7000 + i))
        .collect();
    let mut cmd = shell_std();
    cmd.arg("create").arg(&src).arg("-o").arg(&t);
    for u in &urls {
        cmd.args(["-t", u]);
    }
    run(&mut cmd);
    let v = info_json(&t);
    assert_eq!(v["trackers"].as_array().unwrap().len(), MAX_TRACKERS + 1);
    let link = v["magnet"].as_str().unwrap();
    let mut buf = [0u8; 2048];
    let m = Magnet::parse(link, &mut buf).unwrap();
    assert_eq!(&m.trackers[..], &urls[..MAX_TRACKERS]);
}
