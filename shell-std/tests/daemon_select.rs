//! `shell-std daemon`'s file priorities (`PUT /api/torrents/{id}/files`,
//! `remote files`) and rate limits (`/api/settings`, per-torrent limits,
//! `remote limits`), against a libtorrent seeder on 127.0.0.1.

mod daemon_support;

use std::process::Command;
use std::time::Duration;

use daemon_support::*;
use ourtorrent_tests::libtorrent::lt_seeder_with;
use ourtorrent_tests::{free_tcp_port, require_libtorrent, run_bounded};
use serde_json::Value;

/// The index of the file at `path` in a `GET …/files` answer.
fn index_of(files: &Value, path: &str) -> u64 {
    files
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .and_then(|f| f["index"].as_u64())
        .unwrap_or_else(|| panic!("no {path} in {files}"))
}

fn file<'a>(files: &'a Value, path: &str) -> &'a Value {
    files
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("no {path} in {files}"))
}

/// A file skipped before the start is never created; a file skipped
/// mid-download (`remote files --set`) stops being fetched; the rest
/// completes byte-identical; the priorities are kept across a restart.
#[test]
fn daemon_libtorrent_skipped_files_are_not_fetched_and_stay_skipped() {
    let Some(py) = require_libtorrent() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let (torrent, tree) = fixture(d.path(), 16 << 10, 2_000_000);
    let port = free_tcp_port();
    let _seed = lt_seeder_with(
        &py,
        &torrent,
        &d.path().join("src"),
        port,
        &["--upload-limit", "300000", "--no-trackers"],
    );
    let (dl, state) = (d.path().join("dl"), d.path().join("state"));
    let daemon = Daemon::start(&dl, &state, &[]);
    let id = daemon.add(&torrent, &format!("?paused=true&peers=127.0.0.1:{port}"));
    let files = daemon.get(&format!("/api/torrents/{id}/files"));
    assert!(
        files
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["priority"] == "normal"),
        "{files}"
    );
    let a = index_of(&files, "a.bin");
    let big = index_of(&files, "sub/big.bin");
    let put = |body: String| {
        daemon.req(
            "PUT",
            &format!("/api/torrents/{id}/files"),
            Some("application/json"),
            body.as_bytes(),
        )
    };
    // Refused, nothing changed: an index out of range, a bad word,
    // skipping everything.
    let (st, v) = put(r#"[{"index": 99, "priority": "skip"}]"#.into());
    assert_eq!(st, 400, "{v}");
    let (st, v) = put(format!(r#"[{{"index": {a}, "priority": "later"}}]"#));
    assert_eq!(st, 400, "{v}");
    let all: Vec<Value> = files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| serde_json::json!({"index": f["index"], "priority": "skip"}))
        .collect();
    let (st, v) = put(Value::from(all).to_string());
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("every file"), "{v}");
    // Skip a.bin before it starts.
    let (st, v) = put(format!(r#"[{{"index": {a}, "priority": "skip"}}]"#));
    assert_eq!(st, 200, "{v}");
    assert_eq!(file(&v, "a.bin")["priority"], "skip", "{v}");
    assert_eq!(file(&v, "sub/b.bin")["priority"], "normal", "{v}");
    let (st, v) = daemon.req("POST", &format!("/api/torrents/{id}/resume"), None, b"");
    assert_eq!(st, 200, "{v}");
    daemon.wait(id, 30, "some pieces", |v| n(v, "pieces_verified") > 3);
    // Skip big.bin mid-download, through `remote files`.
    let url = format!("http://{}", daemon.api);
    let set = format!("{big}=skip");
    let (ok, so, se) = run_bounded(
        Command::new(BIN).args(["remote", "--url", &url, "files", "1", "--set", &set]),
        Duration::from_secs(30),
    );
    assert!(
        ok && so
            .lines()
            .any(|l| l.contains("skip") && l.contains("sub/big.bin")),
        "{so}{se}"
    );
    let v = daemon.wait(id, 60, "complete", |v| v["state"] == "seeding");
    assert!(n(&v, "pieces_verified") < n(&v, "pieces"), "{v}");
    let files = daemon.get(&format!("/api/torrents/{id}/files"));
    assert!(
        file(&files, "sub/big.bin")["progress"].as_f64().unwrap() < 1.0,
        "{files}"
    );
    assert!(
        !dl.join("tree/a.bin").exists(),
        "a skipped file was created"
    );
    for rel in ["sub/b.bin", "sub/deeper/c.txt", "empty-not.bin"] {
        let x = std::fs::read(tree.join(rel)).unwrap();
        let y = std::fs::read(dl.join("tree").join(rel)).unwrap();
        assert!(x == y, "{rel} differs");
        assert_eq!(file(&files, rel)["progress"].as_f64(), Some(1.0), "{files}");
    }
    daemon.stop();

    // Restart: the priorities come back from state.db.
    let daemon = Daemon::start(&dl, &state, &[]);
    let files = daemon.get(&format!("/api/torrents/{id}/files"));
    assert_eq!(file(&files, "a.bin")["priority"], "skip", "{files}");
    assert_eq!(file(&files, "sub/big.bin")["priority"], "skip", "{files}");
    let v = daemon.wait(id, 20, "seeding after restart", |v| v["state"] == "seeding");
    assert_eq!(n(&v, "hashed_at_start"), 0, "{v}");
    assert!(
        !dl.join("tree/a.bin").exists(),
        "a skipped file was created"
    );
    daemon.stop();
}
