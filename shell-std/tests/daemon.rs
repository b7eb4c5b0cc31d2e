//! `shell-std daemon` as a process, driven over its HTTP API on real
//! loopback sockets: downloads from a libtorrent seeder, pause/resume,
//! removal with data, refused inputs, the token, and restarts (`kill -9`
//! mid-download; a clean stop that re-hashes nothing).

mod daemon_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use daemon_support::*;
use ourtorrent_tests::fixtures::LtSeeder;
use ourtorrent_tests::{require_libtorrent, run, run_bounded, write_data, Proc};
use serde_json::Value;

#[test]
fn daemon_libtorrent_seeder_download_with_pause_and_resume() {
    let Some(py) = require_libtorrent() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let (torrent, tree) = fixture(d.path(), 16 << 10, 2_000_000);
    // ~2.1 MB at 400 kB/s: ~5 s, time to see progress and pause.
    let seed = LtSeeder::new(&py, &torrent, &d.path().join("src"))
        .opts(&["--upload-limit", "400000", "--no-trackers"])
        .start();
    let port = seed.port;
    let dl = d.path().join("dl");
    let daemon = Daemon::start(&dl, &d.path().join("state"), &[]);
    let id = daemon.add(&torrent, &format!("?peers=127.0.0.1:{port}"));
    let v = daemon.wait(id, 30, "progress", |v| {
        v["state"] == "downloading" && n(v, "pieces_verified") > 5
    });
    assert!(v["progress"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["name"], "tree");
    // The list shows it too.
    let list = daemon.get("/api/torrents");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["id"], id);
    // Peers and trackers while it runs.
    let peers = daemon.get(&format!("/api/torrents/{id}/peers"));
    assert!(
        peers
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["addr"] == format!("127.0.0.1:{port}")),
        "{peers}"
    );
    // Pause: no peers, no more pieces.
    let (st, v) = daemon.req("POST", &format!("/api/torrents/{id}/pause"), None, b"");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["state"], "paused");
    let paused_at = n(&v, "pieces_verified");
    std::thread::sleep(Duration::from_millis(1500));
    let v = daemon.get(&format!("/api/torrents/{id}"));
    assert_eq!(v["state"], "paused");
    assert_eq!(n(&v, "peers"), 0, "{v}");
    assert_eq!(
        n(&v, "pieces_verified"),
        paused_at,
        "pieces arrived while paused"
    );
    let pieces = daemon.get(&format!("/api/torrents/{id}/pieces"));
    assert_eq!(n(&pieces, "verified"), paused_at);
    // Resume: the pieces it had are trusted (nothing hashed), it completes.
    let (st, v) = daemon.req("POST", &format!("/api/torrents/{id}/resume"), None, b"");
    assert_eq!(st, 200, "{v}");
    let v = daemon.wait(id, 60, "seeding", |v| v["state"] == "seeding");
    assert_eq!(n(&v, "hashed_at_start"), 0, "{v}");
    assert_eq!(n(&v, "trusted_at_start"), paused_at, "{v}");
    assert_eq!(v["progress"].as_f64(), Some(1.0));
    assert_eq!(n(&v, "fetched") + paused_at, n(&v, "pieces"), "{v}");
    same_tree(&tree, &dl.join("tree"));
    let files = daemon.get(&format!("/api/torrents/{id}/files"));
    assert_eq!(files.as_array().map(Vec::len), Some(5), "{files}");
    assert!(files
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["progress"].as_f64() == Some(1.0)));
    let (st, m) = http_raw(daemon.api, "GET", "/metrics", None, b"", &[]);
    let m = String::from_utf8_lossy(&m).into_owned();
    assert_eq!(st, 200);
    assert!(
        m.contains("ourtorrent_torrents{state=\"seeding\"} 1"),
        "{m}"
    );
    daemon.stop();
}

/// Each bad request gets its 4xx with a JSON error, and the daemon's
/// torrents are as before.
#[test]
fn daemon_bad_inputs_get_the_right_4xx_and_change_nothing() {
    let d = tempfile::tempdir().unwrap();
    let (torrent, tree) = fixture(d.path(), 32 << 10, 100_000);
    let dl = d.path().join("dl");
    std::fs::create_dir_all(&dl).unwrap();
    // Data in place: it seeds.
    copy_tree(&tree, &dl.join("tree"));
    let daemon = Daemon::start(&dl, &d.path().join("state"), &[]);
    let id = daemon.add(&torrent, "");
    daemon.wait(id, 20, "seeding", |v| v["state"] == "seeding");
    let before = daemon.get("/api/torrents");
    let outside = d.path().join("outside.torrent");
    std::fs::copy(&torrent, &outside).unwrap();
    let json = Some("application/json");
    let bt = Some("application/x-bittorrent");
    let path_json = |p: &Path| format!("{{\"path\": {:?}}}", p.display().to_string());
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/torrents".into(),
            bt,
            b"garbage".to_vec(),
            400,
            "not a valid .torrent",
        ),
        (
            "POST",
            "/api/torrents".into(),
            json,
            b"{nope".to_vec(),
            400,
            "JSON body",
        ),
        (
            "POST",
            "/api/torrents".into(),
            json,
            b"{\"colour\": 1}".to_vec(),
            400,
            "unknown field",
        ),
        (
            "POST",
            "/api/torrents".into(),
            json,
            path_json(&outside).into_bytes(),
            403,
            "outside the download folder",
        ),
        (
            "POST",
            "/api/torrents".into(),
            json,
            b"{\"path\": \"../outside.torrent\"}".to_vec(),
            403,
            "outside the download folder",
        ),
        (
            "POST",
            "/api/torrents".into(),
            json,
            b"{\"path\": \"missing.torrent\"}".to_vec(),
            400,
            "missing.torrent",
        ),
        (
            "POST",
            "/api/torrents".into(),
            json,
            b"{\"magnet\": \"magnet:?xt=urn:btih:0000000000000000000000000000000000000000\"}"
                .to_vec(),
            400,
            "nothing to connect to",
        ),
        (
            "POST",
            "/api/torrents".into(),
            Some("text/plain"),
            b"x".to_vec(),
            415,
            "Content-Type",
        ),
        (
            "POST",
            "/api/torrents".into(),
            None,
            b"x".to_vec(),
            415,
            "Content-Type",
        ),
        (
            "POST",
            "/api/torrents?peers=nonsense".into(),
            bt,
            std::fs::read(&torrent).unwrap(),
            400,
            "IP:PORT",
        ),
        (
            "POST",
            "/api/torrents".into(),
            bt,
            vec![b'd'; 8 * 1024 * 1024],
            400,
            "not a valid .torrent",
        ),
        (
            "POST",
            "/api/torrents".into(),
            bt,
            vec![b'd'; 8 * 1024 * 1024 + 1],
            413,
            "larger than",
        ),
        (
            "POST",
            "/api/torrents".into(),
            bt,
            std::fs::read(&torrent).unwrap(),
            409,
            "already added",
        ),
        (
            "GET",
            "/api/torrents/999".into(),
            None,
            Vec::new(),
            404,
            "no torrent with id 999",
        ),
        (
            "GET",
            "/api/torrents/abc".into(),
            None,
            Vec::new(),
            400,
            "not a number",
        ),
        (
            "GET",
            "/api/torrents/999/files".into(),
            None,
            Vec::new(),
            404,
            "no torrent",
        ),
        (
            "POST",
            "/api/torrents/999/pause".into(),
            None,
            Vec::new(),
            404,
            "no torrent",
        ),
        (
            "DELETE",
            "/api/torrents/999".into(),
            None,
            Vec::new(),
            404,
            "no torrent",
        ),
        (
            "DELETE",
            format!("/api/torrents/{id}?delete_data=maybe"),
            None,
            Vec::new(),
            400,
            "delete_data",
        ),
        (
            "GET",
            "/api/nothing".into(),
            None,
            Vec::new(),
            404,
            "no such route",
        ),
    ];
    for (method, path, ctype, body, want, says) in cases {
        let (st, v) = daemon.req(method, &path, ctype, &body);
        assert_eq!(st, want, "{method} {path}: {v}");
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no JSON error: {v}"));
        assert!(
            msg.contains(says),
            "{method} {path}: {msg:?} does not say {says:?}"
        );
        if want == 409 {
            assert_eq!(v["id"], id, "409 names the torrent that is there");
        }
    }
    // Headers are bounded too (hyper: 100 at most).
    let many: Vec<(String, String)> = (0..150).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (st, _) = http_raw(daemon.api, "GET", "/api/torrents", None, b"", &many);
    assert_eq!(st, 431, "150 headers");
    // Nothing changed.
    let mut after = daemon.get("/api/torrents");
    let mut before = before;
    for v in [&mut before, &mut after] {
        for t in v.as_array_mut().unwrap() {
            for k in [
                "up_rate",
                "down_rate",
                "uploaded",
                "downloaded",
                "peers",
                "seeds",
            ] {
                t[k] = Value::Null;
            }
        }
    }
    assert_eq!(before, after);
    same_tree(&tree, &dl.join("tree"));
    assert!(outside.exists());
    daemon.stop();
}

/// `delete_data=true` removes the torrent's files and its emptied
/// folders, and nothing else: a stranger's file in its folder, the
/// download folder's other files and anything outside stay.
#[test]
fn daemon_delete_with_data_removes_only_the_torrents_files() {
    let d = tempfile::tempdir().unwrap();
    let (torrent, tree) = fixture(d.path(), 32 << 10, 100_000);
    let dl = d.path().join("dl");
    copy_tree(&tree, &dl.join("tree"));
    write_data(&dl.join("neighbour.bin"), 1000, 5);
    write_data(&dl.join("tree/sub/mine.txt"), 10, 6);
    // A second torrent of a single file, also in place.
    write_data(&dl.join("single.bin"), 70_000, 7);
    let single = d.path().join("single.torrent");
    run(Command::new(BIN)
        .arg("create")
        .arg(dl.join("single.bin"))
        .arg("-o")
        .arg(&single));
    let daemon = Daemon::start(&dl, &d.path().join("state"), &[]);
    let mut events = sse(daemon.api);
    sse_wait(&mut events, "text/event-stream", 10);
    let id = daemon.add(&torrent, "");
    sse_wait(
        &mut events,
        &format!("{{\"data\":{{\"id\":{id},\"info_hash\""),
        10,
    );
    let id2 = daemon.add(&single, "");
    daemon.wait(id, 20, "seeding", |v| v["state"] == "seeding");
    daemon.wait(id2, 20, "seeding", |v| v["state"] == "seeding");
    // Progress snapshots every second.
    sse_wait(&mut events, "\"type\":\"torrents\"", 10);
    // Recheck hashes everything again and seeds.
    let (st, v) = daemon.req("POST", &format!("/api/torrents/{id2}/recheck"), None, b"");
    assert_eq!(st, 200, "{v}");
    let v = daemon.wait(id2, 20, "seeding after recheck", |v| {
        v["state"] == "seeding" && v["hashed_at_start"] == v["pieces"]
    });
    assert_eq!(n(&v, "trusted_at_start"), 0, "{v}");
    let (st, v) = daemon.req(
        "DELETE",
        &format!("/api/torrents/{id}?delete_data=true"),
        None,
        b"",
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data_deleted"], true);
    sse_wait(
        &mut events,
        &format!("{{\"data\":{{\"id\":{id}}},\"type\":\"removed\"}}"),
        10,
    );
    for rel in [
        "a.bin",
        "sub/b.bin",
        "sub/deeper/c.txt",
        "empty-not.bin",
        "sub/big.bin",
    ] {
        assert!(!dl.join("tree").join(rel).exists(), "{rel} left");
    }
    assert!(!dl.join("tree/sub/deeper").exists(), "emptied folder left");
    assert!(
        dl.join("tree/sub/mine.txt").exists(),
        "a stranger's file was removed"
    );
    assert!(dl.join("neighbour.bin").exists());
    assert!(dl.join("single.bin").exists());
    assert!(
        tree.join("a.bin").exists(),
        "the source outside was touched"
    );
    // Removed without data: the file stays; the list is empty.
    let (st, v) = daemon.req("DELETE", &format!("/api/torrents/{id2}"), None, b"");
    assert_eq!(st, 200, "{v}");
    assert!(dl.join("single.bin").exists());
    assert_eq!(daemon.get("/api/torrents"), Value::Array(Vec::new()));
    let (st, _) = daemon.req("GET", &format!("/api/torrents/{id}"), None, b"");
    assert_eq!(st, 404);
    daemon.stop();
}

/// With `--token` every route needs it: 401 without, or with a wrong
/// one; the right one (header or `?token=`) gets through.
#[test]
fn daemon_token_is_required_when_set() {
    let d = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &d.path().join("dl"),
        &d.path().join("state"),
        &["--token", "s3cret"],
    );
    for path in ["/api/torrents", "/metrics", "/api/torrents/1", "/"] {
        let (st, v) = http(daemon.api, "GET", path, None, b"", &[]);
        assert_eq!(st, 401, "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains("token"), "{v}");
        let (st, _) = http(
            daemon.api,
            "GET",
            path,
            None,
            b"",
            &[("Authorization", "Bearer s3cre7")],
        );
        assert_eq!(st, 401, "{path} with a wrong token");
    }
    let (st, v) = http(
        daemon.api,
        "GET",
        "/api/torrents",
        None,
        b"",
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!((st, v), (200, Value::Array(Vec::new())));
    let (st, _) = http(
        daemon.api,
        "GET",
        "/api/torrents?token=s3cret",
        None,
        b"",
        &[],
    );
    assert_eq!(st, 200);
    daemon.stop();
}

/// `kill -9` mid-download, then a restart on the same state: every piece
/// verified before the kill is kept (found again without fetching), the
/// rest is fetched, the data is byte-identical.
#[test]
fn daemon_libtorrent_kill_9_mid_download_resumes_without_refetching() {
    let Some(py) = require_libtorrent() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let (torrent, tree) = fixture(d.path(), 16 << 10, 2_000_000);
    let seed = LtSeeder::new(&py, &torrent, &d.path().join("src"))
        .opts(&["--upload-limit", "300000", "--no-trackers"])
        .start();
    let port = seed.port;
    let dl = d.path().join("dl");
    let state = d.path().join("state");
    let mut daemon = Daemon::start(&dl, &state, &[]);
    let id = daemon.add(&torrent, &format!("?peers=127.0.0.1:{port}"));
    // Past a save or two (every 2 s) and well short of the end.
    let v = daemon.wait(id, 30, "some pieces", |v| n(v, "pieces_verified") >= 40);
    std::thread::sleep(Duration::from_millis(2500));
    let v2 = daemon.get(&format!("/api/torrents/{id}"));
    assert_eq!(v2["state"], "downloading", "too fast to interrupt: {v2}");
    let before_kill = n(&v2, "pieces_verified");
    assert!(before_kill >= n(&v, "pieces_verified"));
    daemon.proc.child.kill().unwrap(); // SIGKILL
    daemon.proc.child.wait().unwrap();
    drop(daemon);
    let daemon = Daemon::start(&dl, &state, &[]);
    let v = daemon.wait(id, 60, "seeding after restart", |v| v["state"] == "seeding");
    let total = n(&v, "pieces");
    let at_start = total - n(&v, "fetched");
    assert!(
        at_start >= before_kill,
        "{before_kill} pieces verified before the kill, only {at_start} kept: {v}"
    );
    assert_eq!(
        n(&v, "hashed_at_start") + n(&v, "trusted_at_start"),
        at_start,
        "{v}"
    );
    same_tree(&tree, &dl.join("tree"));
    daemon.stop();
}

/// After a clean stop a restart trusts every piece and hashes none; the
/// time from start to seeding is measured (printed) and bounded.
#[test]
fn daemon_clean_restart_rehashes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let size = 64 << 20;
    let (torrent, tree) = fixture(d.path(), 256 << 10, size);
    let dl = d.path().join("dl");
    copy_tree(&tree, &dl.join("tree"));
    let state = d.path().join("state");
    let daemon = Daemon::start(&dl, &state, &[]);
    let id = daemon.add(&torrent, "");
    let v = daemon.wait(id, 60, "seeding", |v| v["state"] == "seeding");
    let pieces = n(&v, "pieces");
    assert_eq!(n(&v, "hashed_at_start"), pieces, "first start hashes: {v}");
    let first_ms = n(&v, "start_ms");
    daemon.stop();
    let t0 = Instant::now();
    let daemon = Daemon::start(&dl, &state, &[]);
    let v = daemon.wait(id, 20, "seeding after restart", |v| v["state"] == "seeding");
    let wall = t0.elapsed();
    assert_eq!(n(&v, "hashed_at_start"), 0, "{v}");
    assert_eq!(n(&v, "trusted_at_start"), pieces, "{v}");
    let restart_ms = n(&v, "start_ms");
    eprintln!(
        "figure: {} MiB, {pieces} pieces: first start (hashing) {first_ms} ms; \
         clean restart to seeding {restart_ms} ms in the daemon, {} ms from spawn",
        size >> 20,
        wall.as_millis()
    );
    assert!(restart_ms < 1000, "{v}");
    assert!(wall < Duration::from_secs(5), "{wall:?}");
    // A file touched while the daemon was down is hashed again (only it).
    daemon.stop();
    write_data(&dl.join("tree/a.bin"), 100_000, 1); // same bytes, new mtime
    let daemon = Daemon::start(&dl, &state, &[]);
    let v = daemon.wait(id, 20, "seeding after a touch", |v| v["state"] == "seeding");
    let hashed = n(&v, "hashed_at_start");
    assert!(hashed > 0 && hashed < 5, "only a.bin's pieces: {v}");
    assert_eq!(hashed + n(&v, "trusted_at_start"), pieces, "{v}");
    daemon.stop();
}

/// `shell-std remote` against a running daemon: add, list (table and
/// JSON), pause, resume, remove with data; an unknown id fails with the
/// daemon's words.
#[test]
fn remote_drives_a_running_daemon() {
    let d = tempfile::tempdir().unwrap();
    let (torrent, tree) = fixture(d.path(), 32 << 10, 100_000);
    let dl = d.path().join("dl");
    copy_tree(&tree, &dl.join("tree"));
    let daemon = Daemon::start(&dl, &d.path().join("state"), &["--token", "tok"]);
    let url = format!("http://{}", daemon.api);
    let remote = |args: &[&str]| {
        run_bounded(
            Command::new(BIN)
                .args(["remote", "--url", &url, "--token", "tok"])
                .args(args),
            Duration::from_secs(30),
        )
    };
    let t = torrent.display().to_string();
    let (ok, so, se) = remote(&["add", &t]);
    assert!(ok && so.starts_with("added: id 1 info-hash "), "{so}{se}");
    daemon.wait(1, 20, "seeding", |v| v["state"] == "seeding");
    let (ok, so, se) = remote(&["list"]);
    assert!(
        ok && so.contains("tree") && so.contains("seeding") && so.contains("100.0%"),
        "{so}{se}"
    );
    let (ok, so, _) = remote(&["pause", "1"]);
    assert!(ok && so.trim() == "1: paused", "{so}");
    let (ok, so, _) = remote(&["list", "--json"]);
    let v: Value = serde_json::from_str(&so).unwrap();
    assert!(ok && v[0]["state"] == "paused", "{so}");
    let (ok, so, _) = remote(&["resume", "1"]);
    assert!(ok && so.starts_with("1: "), "{so}");
    daemon.wait(1, 20, "seeding", |v| v["state"] == "seeding");
    let (ok, _, se) = remote(&["pause", "99"]);
    assert!(
        !ok && se.contains("no torrent with id 99 (HTTP 404)"),
        "{se}"
    );
    // A wrong token is refused with the daemon's words.
    let (ok, _, se) = run_bounded(
        Command::new(BIN).args(["remote", "--url", &url, "list"]),
        Duration::from_secs(30),
    );
    assert!(!ok && se.contains("HTTP 401"), "{se}");
    let (ok, so, _) = remote(&["remove", "1", "--delete-data"]);
    assert!(ok && so.contains("removed with its data"), "{so}");
    assert!(!dl.join("tree").exists());
    daemon.stop();
}

/// The page at `/` is served by the binary itself, with nothing fetched
/// from elsewhere.
#[test]
fn daemon_serves_its_web_page_with_no_outside_assets() {
    let d = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&d.path().join("dl"), &d.path().join("state"), &[]);
    let (st, body) = http_raw(daemon.api, "GET", "/", None, b"", &[]);
    let page = String::from_utf8_lossy(&body);
    assert_eq!(st, 200);
    assert!(page.contains("<title>OurTorrent</title>"), "{page}");
    assert!(page.contains("new EventSource(\"/api/events\""));
    assert!(!page.contains("://"), "the page refers to another site");
    daemon.stop();
}

/// The API's server bounds: a client that never finishes its headers is
/// dropped after the header timeout (10 s); past 64 open connections a
/// newcomer is closed unanswered, and served again once some close.
#[test]
fn daemon_api_drops_slow_clients_and_bounds_connections() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let d = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&d.path().join("dl"), &d.path().join("state"), &[]);
    let t0 = Instant::now();
    let mut slow = TcpStream::connect(daemon.api).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    slow.write_all(b"GET /api/torrents HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let r = slow.read(&mut buf);
    let waited = t0.elapsed();
    assert!(
        matches!(r, Ok(0))
            || r.as_ref()
                .is_ok_and(|n| buf[..*n].starts_with(b"HTTP/1.1 408")),
        "slow client not dropped: {r:?}"
    );
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(15),
        "{waited:?}"
    );
    // 64 kept-alive connections fill the server (each answered once, so
    // each is known to hold its slot); the 65th is closed unanswered.
    let idle: Vec<TcpStream> = (0..64)
        .map(|i| {
            let mut s = TcpStream::connect(daemon.api).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(b"GET /api/torrents HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let n = s.read(&mut buf).unwrap();
            assert!(
                buf[..n].starts_with(b"HTTP/1.1 200"),
                "connection {i} not served"
            );
            s
        })
        .collect();
    let mut extra = TcpStream::connect(daemon.api).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = extra.write_all(b"GET /api/torrents HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = extra.read(&mut buf);
    assert!(
        matches!(r, Ok(0))
            || r.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the 65th connection was not closed unanswered: {r:?}"
    );
    drop(idle);
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        // Until the server has seen them close, a request may go unanswered.
        let mut s = TcpStream::connect(daemon.api).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"GET /api/torrents HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        if got.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < end, "not served again");
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.stop();
}

/// Paused stays paused across a restart, and resuming it then trusts the
/// saved pieces (nothing hashed); the byte counters survive too.
#[test]
fn daemon_paused_torrent_stays_paused_across_restart_and_resumes_without_hashing() {
    let d = tempfile::tempdir().unwrap();
    let (torrent, tree) = fixture(d.path(), 32 << 10, 300_000);
    let dl = d.path().join("dl");
    copy_tree(&tree, &dl.join("tree"));
    let state = d.path().join("state");
    let daemon = Daemon::start(&dl, &state, &[]);
    let id = daemon.add(&torrent, "");
    let v = daemon.wait(id, 20, "seeding", |v| v["state"] == "seeding");
    let pieces = n(&v, "pieces");
    let (st, v) = daemon.req("POST", &format!("/api/torrents/{id}/pause"), None, b"");
    assert_eq!((st, v["state"].as_str()), (200, Some("paused")), "{v}");
    daemon.stop();
    let daemon = Daemon::start(&dl, &state, &[]);
    let v = daemon.get(&format!("/api/torrents/{id}"));
    assert_eq!(v["state"], "paused", "{v}");
    assert_eq!(n(&v, "pieces_verified"), pieces, "{v}");
    let (st, _) = daemon.req("POST", &format!("/api/torrents/{id}/resume"), None, b"");
    assert_eq!(st, 200);
    let v = daemon.wait(id, 20, "seeding", |v| v["state"] == "seeding");
    assert_eq!(n(&v, "hashed_at_start"), 0, "{v}");
    assert_eq!(n(&v, "trusted_at_start"), pieces, "{v}");
    daemon.stop();
}

/// Without `--download-dir` and `--listen` a restart uses the folder and
/// the peer address of the last run (kept in the state).
#[test]
fn daemon_restart_without_flags_keeps_its_folder_and_peer_port() {
    let d = tempfile::tempdir().unwrap();
    let dl = d.path().join("dl");
    let state = d.path().join("state");
    let daemon = Daemon::start(&dl, &state, &[]);
    let first = daemon.startup.clone();
    daemon.stop();
    let peers_on = |l: &str| {
        l.split("peers on ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .map(String::from)
            .unwrap_or_else(|| panic!("no peers address in {l:?}"))
    };
    let daemon = Daemon::start_with(&state.display().to_string(), &[]);
    let again = daemon.startup.clone();
    assert_eq!(peers_on(&again), peers_on(&first), "{first}\n{again}");
    let dl_real = dl.canonicalize().unwrap();
    assert!(
        again.contains(&format!("downloads in {},", dl_real.display())),
        "{again}"
    );
    daemon.stop();
}

/// A disk that fills during a download stops that torrent in state
/// `error` with the cause naming the file (as the client says it), its
/// peers closed; once there is room again `resume` finishes it.
#[test]
fn daemon_libtorrent_disk_full_mid_download_is_an_error_then_resumes() {
    let Some(py) = require_libtorrent() else {
        return;
    };
    let Some(unshare) = ourtorrent_tests::require_tool("unshare") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let (torrent, tree) = fixture(d.path(), 16 << 10, 2_000_000);
    let seed = LtSeeder::new(&py, &torrent, &d.path().join("src"))
        .opts(&["--upload-limit", "400000", "--no-trackers"])
        .start();
    let port = seed.port;
    // The download folder is a 3 MiB tmpfs in the daemon's own mount
    // namespace (the test reaches it through /proc/PID/root).
    let dl = d.path().join("dl");
    std::fs::create_dir_all(&dl).unwrap();
    let state = d.path().join("state");
    let proc = Proc::spawn(
        "daemon",
        Command::new(unshare)
            .args(["-m", "sh", "-c"])
            .arg("mount -t tmpfs -o size=3m none \"$0\" && exec \"$@\"")
            .arg(&dl)
            .arg(BIN)
            .args(["daemon", "--http", "127.0.0.1:0", "--listen", "127.0.0.1:0"])
            .arg("--download-dir")
            .arg(&dl)
            .arg("--state")
            .arg(&state),
    );
    let line = proc.wait_for("daemon: api on http://", Duration::from_secs(20));
    let api: std::net::SocketAddr = line["daemon: api on http://".len()..]
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap();
    let inside = Path::new("/proc")
        .join(proc.child.id().to_string())
        .join("root")
        .join(dl.strip_prefix("/").unwrap());
    let bytes = std::fs::read(&torrent).unwrap();
    let q = format!("/api/torrents?peers=127.0.0.1:{port}");
    let (st, v) = http(
        api,
        "POST",
        &q,
        Some("application/x-bittorrent"),
        &bytes,
        &[],
    );
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_i64().unwrap();
    let get = || http(api, "GET", &format!("/api/torrents/{id}"), None, b"", &[]).1;
    let wait = |secs: u64, what: &str, ok: &dyn Fn(&Value) -> bool| -> Value {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = get();
            if ok(&v) {
                return v;
            }
            assert!(Instant::now() < end, "timed out: {what}: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait(30, "downloading", &|v| n(v, "pieces_verified") > 5);
    // Fill the file system: the files are sparse, so the next writes fail.
    let filler = inside.join("filler.bin");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![7u8; 64 << 10];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let v = wait(30, "error", &|v| v["state"] == "error");
    let why = v["error"].as_str().unwrap_or_default();
    assert!(why.contains("No space left"), "{v}");
    assert!(why.contains("tree/"), "names the file: {v}");
    assert_eq!(n(&v, "peers"), 0, "{v}");
    // Room again: resume finishes it, byte-identical.
    std::fs::remove_file(&filler).unwrap();
    let (st, v) = http(
        api,
        "POST",
        &format!("/api/torrents/{id}/resume"),
        None,
        b"",
        &[],
    );
    assert_eq!(st, 200, "{v}");
    wait(60, "seeding", &|v| v["state"] == "seeding");
    same_tree(&tree, &inside.join("tree"));
    drop(proc);
}
