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
