//! `shell-std daemon`'s file priorities (`PUT /api/torrents/{id}/files`,
//! `remote files`) and rate limits (`/api/settings`, per-torrent limits,
//! `remote limits`), against a libtorrent seeder on 127.0.0.1.

mod daemon_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use daemon_support::*;
use ourtorrent_tests::fixtures::{lt_and_tempdir, LtSeed, LtSeeder};
use ourtorrent_tests::{run, run_bounded, write_data};
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
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    // ~3 MB at 200 kB/s: ~15 s, time to skip big.bin mid-way.
    let (torrent, tree) = fixture(d.path(), 16 << 10, 3_000_000);
    let src = d.path().join("src");
    // Started once it has run for a second (`start_warm`).
    let seed = LtSeeder::new(&py, &torrent, &src)
        .opts(&["--upload-limit", "200000", "--no-trackers"])
        .opts(&["--progress-every", "0.5"])
        .start_warm();
    let port = seed.port;
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
    daemon.wait(id, 30, "some pieces", |v| n(v, "pieces_verified") > 0);
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

const MIB: f64 = (1u64 << 20) as f64;

/// A single-file torrent of `len` bytes (256 KiB pieces) in `dir`;
/// returns (torrent, data).
fn single(dir: &Path, len: usize) -> (PathBuf, PathBuf) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let data = src.join("data.bin");
    write_data(&data, len, 5);
    let torrent = dir.join("t.torrent");
    run(Command::new(BIN)
        .arg("create")
        .arg(&data)
        .args(["--piece-length", "256K", "-o"])
        .arg(&torrent));
    (torrent, data)
}

/// The seeder's upload rate (bytes/s) over 3 s starting 1.5 s after its
/// counter first moved, from its `PROGRESS t=T … up=U` lines.
fn seeder_rate(lines: &[String]) -> f64 {
    let s: Vec<(f64, u64)> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("PROGRESS "))
        .filter_map(|l| {
            let kv = |k: &str| {
                l.split_whitespace()
                    .find_map(|x| x.strip_prefix(k).and_then(|v| v.parse::<f64>().ok()))
            };
            Some((kv("t=")?, kv("up=")? as u64))
        })
        .collect();
    let first = s.iter().find(|x| x.1 > 0).expect("no upload").0;
    let a = s
        .iter()
        .find(|x| x.0 >= first + 1.5)
        .expect("too few samples");
    let b = s
        .iter()
        .find(|x| x.0 >= a.0 + 3.0)
        .expect("too few samples");
    (b.1 - a.1) as f64 / (b.0 - a.0)
}

fn assert_near(what: &str, rate: f64, cap: f64) {
    eprintln!(
        "{what}: {:.3} MiB/s against a cap of {:.3} MiB/s ({:+.1} %)",
        rate / MIB,
        cap / MIB,
        (rate / cap - 1.0) * 100.0
    );
    assert!(
        (rate - cap).abs() <= cap * 0.10,
        "{what}: {:.3} MiB/s is not within 10 % of {:.3} MiB/s",
        rate / MIB,
        cap / MIB
    );
}

/// A libtorrent seeder (progress every 100 ms) of `torrent`, started for
/// a second (it resets connections just after it listens).
fn counted_seeder(py: &Path, torrent: &Path, src: &Path) -> LtSeed {
    LtSeeder::new(py, torrent, src)
        .opts(&["--progress-every", "0.1"])
        .start_warm()
}

/// `remote limits --down 1M` (global, `/api/settings`): libtorrent's
/// upload counter holds 1 MiB/s ±10 %; the setting is kept across a
/// restart.
#[test]
fn daemon_libtorrent_global_download_cap_from_settings_holds() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (torrent, data) = single(d.path(), 9 << 20);
    let seed = counted_seeder(&py, &torrent, &d.path().join("src"));
    let port = seed.port;
    let (dl, state) = (d.path().join("dl"), d.path().join("state"));
    let daemon = Daemon::start(&dl, &state, &[]);
    let url = format!("http://{}", daemon.api);
    let (ok, so, se) = run_bounded(
        Command::new(BIN).args(["remote", "--url", &url, "limits", "--down", "1M"]),
        Duration::from_secs(30),
    );
    assert!(ok && so.contains("download limit: 1048576 B/s"), "{so}{se}");
    let s = daemon.get("/api/settings");
    assert_eq!(n(&s, "download_limit"), 1 << 20, "{s}");
    assert_eq!(n(&s, "upload_limit"), 0, "{s}");
    // Refused, nothing changed.
    let (st, v) = daemon.req(
        "PUT",
        "/api/settings",
        Some("application/json"),
        br#"{"max_connections": 0}"#,
    );
    assert_eq!(st, 400, "{v}");
    let (st, v) = daemon.req(
        "PUT",
        "/api/settings",
        Some("application/json"),
        br#"{"down": 1}"#,
    );
    assert_eq!(st, 400, "{v}");
    assert_eq!(daemon.get("/api/settings"), s);
    let id = daemon.add(&torrent, &format!("?peers=127.0.0.1:{port}"));
    daemon.wait(id, 40, "seeding", |v| v["state"] == "seeding");
    assert!(std::fs::read(&data).unwrap() == std::fs::read(dl.join("data.bin")).unwrap());
    assert_near(
        "global cap (libtorrent's upload counter)",
        seeder_rate(&seed.drain()),
        MIB,
    );
    daemon.stop();
    // Kept across a restart (its `--listen 127.0.0.1:0` takes a new port).
    let daemon = Daemon::start(&dl, &state, &[]);
    let again = daemon.get("/api/settings");
    for k in ["download_limit", "upload_limit", "max_connections"] {
        assert_eq!(again[k], s[k], "{k}: {again}");
    }
    daemon.stop();
}

/// A torrent's own cap (`PUT /api/torrents/{id}`, set while paused) holds
/// at 512 KiB/s ±10 % with no global cap.
#[test]
fn daemon_libtorrent_per_torrent_download_cap_holds() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (torrent, data) = single(d.path(), 5 << 20);
    let seed = counted_seeder(&py, &torrent, &d.path().join("src"));
    let port = seed.port;
    let (dl, state) = (d.path().join("dl"), d.path().join("state"));
    let daemon = Daemon::start(&dl, &state, &[]);
    let id = daemon.add(&torrent, &format!("?paused=true&peers=127.0.0.1:{port}"));
    let (st, v) = daemon.req(
        "PUT",
        &format!("/api/torrents/{id}"),
        Some("application/json"),
        br#"{"download_limit": 524288}"#,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(n(&v, "download_limit"), 512 << 10, "{v}");
    assert_eq!(n(&v, "upload_limit"), 0, "{v}");
    let (st, v) = daemon.req("POST", &format!("/api/torrents/{id}/resume"), None, b"");
    assert_eq!(st, 200, "{v}");
    daemon.wait(id, 40, "seeding", |v| v["state"] == "seeding");
    assert!(std::fs::read(&data).unwrap() == std::fs::read(dl.join("data.bin")).unwrap());
    assert_near(
        "per-torrent cap (libtorrent's upload counter)",
        seeder_rate(&seed.drain()),
        0.5 * MIB,
    );
    daemon.stop();
}
