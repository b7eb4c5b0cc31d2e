//! `POST /api/torrents` with file priorities (`"files"` in JSON,
//! `?files=` for `.torrent` bodies): in force before the first byte,
//! bad values refuse the whole add; against a libtorrent seeder.

mod daemon_support;

use daemon_support::*;
use ourtorrent_tests::fixtures::{lt_and_tempdir, LtSeeder};
use ourtorrent_tests::free_tcp_port;
use serde_json::Value;

fn index_of(files: &Value, path: &str) -> usize {
    files
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .and_then(|f| f["index"].as_u64())
        .unwrap_or_else(|| panic!("no {path} in {files}")) as usize
}

#[test]
fn daemon_add_with_skipped_file_never_creates_it() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (torrent, tree) = fixture(d.path(), 16 << 10, 300_000);
    let src = d.path().join("src");
    let seed = LtSeeder::new(&py, &torrent, &src)
        .opts(&["--no-trackers", "--progress-every", "0.5"])
        .start_warm();
    let port = seed.port;
    let (dl, state) = (d.path().join("dl"), d.path().join("state"));
    let daemon = Daemon::start(&dl, &state, &[]);
    let bytes = std::fs::read(&torrent).unwrap();
    let post = |q: &str, ctype: &str, body: &[u8]| {
        daemon.req("POST", &format!("/api/torrents{q}"), Some(ctype), body)
    };
    // Bad values: 400 and nothing added.
    for q in [
        "?files=skip,later",
        "?files=skip,skip,skip,skip,skip,skip,skip",
    ] {
        let (st, v) = post(q, "application/x-bittorrent", &bytes);
        assert_eq!(st, 400, "{q}: {v}");
    }
    std::fs::create_dir_all(&dl).unwrap();
    std::fs::copy(&torrent, dl.join("t.torrent")).unwrap();
    for files in [
        r#"[{"index": 99, "priority": "skip"}]"#,
        r#"[{"index": 0, "priority": "later"}]"#,
    ] {
        let body = format!(r#"{{"path": "t.torrent", "files": {files}}}"#);
        let (st, v) = post("", "application/json", body.as_bytes());
        assert_eq!(st, 400, "{body}: {v}");
    }
    assert_eq!(
        daemon.get("/api/torrents").as_array().map(Vec::len),
        Some(0)
    );
    // ?files= by position, paused: the priorities are those given.
    let id = daemon.add(&torrent, "?paused=true");
    let files = daemon.get(&format!("/api/torrents/{id}/files"));
    let (a, n_files) = (index_of(&files, "a.bin"), files.as_array().unwrap().len());
    let (st, v) = daemon.req("DELETE", &format!("/api/torrents/{id}"), None, b"");
    assert_eq!(st, 200, "{v}");
    let list: Vec<&str> = (0..n_files)
        .map(|i| if i == a { "skip" } else { "high" })
        .collect();
    let id = daemon.add(&torrent, &format!("?paused=true&files={}", list.join(",")));
    let files = daemon.get(&format!("/api/torrents/{id}/files"));
    for (i, f) in files.as_array().unwrap().iter().enumerate() {
        assert_eq!(f["priority"], list[i], "{files}");
    }
    let (st, v) = daemon.req("DELETE", &format!("/api/torrents/{id}"), None, b"");
    assert_eq!(st, 200, "{v}");
    // JSON "files", started at once: a.bin is never created, the rest completes.
    let body = serde_json::json!({
        "path": "t.torrent",
        "peers": [format!("127.0.0.1:{port}")],
        "files": [{"index": a, "priority": "skip"}],
    });
    let (st, v) = post("", "application/json", body.to_string().as_bytes());
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_i64().unwrap();
    daemon.wait(id, 60, "seeding", |v| v["state"] == "seeding");
    assert!(
        !dl.join("tree/a.bin").exists(),
        "a skipped file was created"
    );
    for rel in ["sub/b.bin", "sub/deeper/c.txt", "sub/big.bin"] {
        let x = std::fs::read(tree.join(rel)).unwrap();
        let y = std::fs::read(dl.join("tree").join(rel)).unwrap();
        assert!(x == y, "{rel} differs");
    }
    daemon.stop();
}

/// `listen_port` in `/api/settings`: stored, `restart_required` until
/// the next start, which listens for peers there; 0 and 65536 refused.
#[test]
fn daemon_settings_listen_port_applies_at_next_start() {
    let d = tempfile::tempdir().unwrap();
    let (dl, state) = (d.path().join("dl"), d.path().join("state"));
    let (dl, state) = (dl.display().to_string(), state.display().to_string());
    let daemon = Daemon::start(dl.as_ref(), state.as_ref(), &[]);
    let s = daemon.get("/api/settings");
    assert_eq!(s["restart_required"], false, "{s}");
    assert_eq!(s["listen_port"], s["listen_port_in_use"], "{s}");
    let put = |body: &str| {
        daemon.req(
            "PUT",
            "/api/settings",
            Some("application/json"),
            body.as_bytes(),
        )
    };
    for bad in [0, 65536] {
        let (st, v) = put(&format!(r#"{{"listen_port": {bad}}}"#));
        assert_eq!(st, 400, "{bad}: {v}");
    }
    assert_eq!(daemon.get("/api/settings"), s);
    let port = free_tcp_port();
    let (st, v) = put(&format!(r#"{{"listen_port": {port}}}"#));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["listen_port"], port, "{v}");
    assert_eq!(v["restart_required"], true, "{v}");
    assert_eq!(v["listen_port_in_use"], s["listen_port_in_use"], "{v}");
    daemon.stop();
    // Next start without --listen: the stored port.
    let daemon = Daemon::start_with(&state, &["--download-dir", &dl, "--no-dht"]);
    assert!(
        daemon
            .startup
            .contains(&format!("peers on 127.0.0.1:{port},")),
        "{}",
        daemon.startup
    );
    let s = daemon.get("/api/settings");
    assert_eq!(s["listen_port_in_use"], port, "{s}");
    assert_eq!(s["restart_required"], false, "{s}");
    daemon.stop();
}
