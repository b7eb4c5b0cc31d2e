//! The daemon's web page in a real headless browser (Debian `chromium`,
//! driven by `chromedriver` over the W3C WebDriver protocol, plain JSON
//! over HTTP): a torrent added paused through the page's file input gets
//! one file unticked in the detail view (never created), then downloads
//! the rest from a libtorrent seeder, it is paused and resumed with the
//! page's buttons, the detail view shows its files and piece map, a screenshot is
//! saved as the test's artifact (`target/tmp/daemon-page.png`), and it is
//! removed with its data through the page's confirm dialog.

mod common;
mod daemon_support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_support::*;
use ourtorrent_tests::fixtures::LtSeeder;
use ourtorrent_tests::{free_tcp_port, require_libtorrent, require_tool, Proc};
use serde_json::{json, Value};

/// The W3C name of an element reference in WebDriver replies.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver session on a chromedriver (killed on drop).
struct Browser {
    _driver: Proc,
    addr: SocketAddr,
    session: String,
}

impl Browser {
    fn start() -> Browser {
        let port = free_tcp_port();
        let driver = Proc::spawn(
            "chromedriver",
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stderr(Stdio::null()),
        );
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(addr).is_ok() {
                let (st, v) = http(addr, "GET", "/status", None, b"", &[]);
                if st == 200 && v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < end, "chromedriver did not get ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"]
            }
        }}});
        let (st, v) = post(addr, "/session", &caps);
        assert_eq!(st, 200, "new session: {v}");
        let session = v["value"]["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        Browser {
            _driver: driver,
            addr,
            session,
        }
    }

    fn cmd(&self, method: &str, path: &str, body: &Value) -> Value {
        let p = format!("/session/{}{path}", self.session);
        // A GET carries no body at all.
        let (st, v) = if body.is_null() {
            http(self.addr, method, &p, None, b"", &[])
        } else {
            let b = body.to_string();
            http(
                self.addr,
                method,
                &p,
                Some("application/json"),
                b.as_bytes(),
                &[],
            )
        };
        assert_eq!(st, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    /// Runs `script` in the page; returns its result.
    fn js(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            &json!({"script": script, "args": []}),
        )
    }

    fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            &json!({"using": "css selector", "value": css}),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("{css}: no element in {v}"))
            .to_string()
    }

    /// Clicks the first element matching `css` (the list is redrawn every
    /// second: found and clicked in one script, so it is never stale).
    fn click(&self, css: &str) {
        let clicked = self.js(&format!(
            "const e = document.querySelector({css:?}); if (!e) return false; e.click(); return true;"
        ));
        assert_eq!(clicked, true, "nothing matches {css}");
    }

    /// Polls the page's first row's text until `ok` holds.
    fn wait_row(&self, secs: u64, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let row = self
                .js("const r = document.querySelector('#rows tr'); return r ? r.innerText : '';");
            let row = row.as_str().unwrap_or("").to_string();
            if ok(&row) {
                return row;
            }
            assert!(Instant::now() < end, "timed out: {what}: row {row:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let p = format!("/session/{}", self.session);
        let _ = http(self.addr, "DELETE", &p, None, b"", &[]);
    }
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let b = body.to_string();
    http(
        addr,
        "POST",
        path,
        Some("application/json"),
        b.as_bytes(),
        &[],
    )
}

/// Standard base64 (RFC 4648) to bytes, for the screenshot.
fn base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn daemon_page_in_chromium_adds_downloads_pauses_resumes_and_removes_from_libtorrent() {
    let Some(py) = require_libtorrent() else {
        return;
    };
    if require_tool("chromedriver").is_none() || require_tool("chromium").is_none() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    // Our tracker introduces the daemon to the libtorrent seeder.
    let tracker = common::Tracker::start_on("127.0.0.1", &["--no-db"]);
    let announce = format!("http://{}/announce", tracker.http);
    let (torrent, tree) = fixture_with(d.path(), 16 << 10, 2_000_000, Some(&announce));
    let _seed = LtSeeder::new(&py, &torrent, &d.path().join("src"))
        .opts(&["--upload-limit", "400000", "--ready-on", "tracker"])
        .start();
    let dl = d.path().join("dl");
    let daemon = Daemon::start(&dl, &d.path().join("state"), &[]);
    let b = Browser::start();
    b.cmd(
        "POST",
        "/url",
        &json!({"url": format!("http://{}/", daemon.api)}),
    );
    assert_eq!(b.js("return document.title;"), "OurTorrent");
    // Add paused through the file input (WebDriver types the path into it).
    b.click("#startPaused");
    let input = b.find("#file");
    b.cmd(
        "POST",
        &format!("/element/{input}/value"),
        &json!({"text": torrent.display().to_string()}),
    );
    b.wait_row(20, "the torrent listed", |r| r.contains("tree"));
    let list = daemon.get("/api/torrents");
    let id = list[0]["id"].as_i64().expect("added through the page");
    b.wait_row(10, "paused", |r| r.contains("paused"));
    // Untick sub/b.bin in the detail view before any byte: it is never
    // created, the other files complete.
    b.click("#rows td.name");
    b.wait_row_detail();
    let unticked = b.js(
        "for (const tr of document.querySelectorAll('#files tr')) \
           if (tr.cells[1].innerText === 'sub/b.bin') { tr.querySelector('input').click(); return true; } \
         return false;",
    );
    assert_eq!(unticked, true, "no sub/b.bin row");
    let end = Instant::now() + Duration::from_secs(10);
    while !daemon
        .get(&format!("/api/torrents/{id}/files"))
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["path"] == "sub/b.bin" && f["priority"] == "skip")
    {
        assert!(Instant::now() < end, "the untick did not reach the API");
        std::thread::sleep(Duration::from_millis(50));
    }
    b.click("#rows tr button");
    let row = b.wait_row(30, "downloading", |r| r.contains("downloading"));
    assert!(row.contains("%"), "{row}");
    // Pause with the page's button; the API agrees.
    b.click("#rows tr button");
    daemon.wait(id, 10, "paused", |v| v["state"] == "paused");
    b.wait_row(10, "paused shown", |r| {
        r.contains("paused") && r.contains("Resume")
    });
    // Resume with the page's button; it reaches 100%.
    b.click("#rows tr button");
    let row = b.wait_row(60, "seeding", |r| r.contains("seeding"));
    assert!(row.contains("Pause"), "{row}");
    assert!(
        !dl.join("tree/sub/b.bin").exists(),
        "the unticked file was created"
    );
    for rel in ["a.bin", "sub/deeper/c.txt", "empty-not.bin", "sub/big.bin"] {
        let x = std::fs::read(tree.join(rel)).unwrap();
        let y = std::fs::read(dl.join("tree").join(rel)).unwrap();
        assert!(x == y, "{rel} differs");
    }
    // The detail view: files and a full piece map.
    b.click("#rows td.name");
    let files = b.wait_row_detail();
    assert_eq!(files, 5, "files listed in the detail view");
    let green = b.js(
        "const c = document.getElementById('pieces').getContext('2d'); \
         const p = c.getImageData(5, 5, 1, 1).data; return [p[0], p[1], p[2]];",
    );
    assert_eq!(green, json!([0x33, 0xaa, 0x77]), "piece map pixel");
    // The screenshot, as the test's artifact.
    let shot = b.cmd("GET", "/screenshot", &Value::Null);
    let png = base64(shot.as_str().expect("base64 PNG"));
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("daemon-page.png");
    std::fs::write(&out, &png).unwrap();
    eprintln!("screenshot: {} ({} bytes)", out.display(), png.len());
    // Remove with its data: the page asks (a confirm dialog), we accept.
    // Clicked after the script returns: the dialog blocks the page's JS.
    b.js("setTimeout(() => document.querySelector('#rows tr button:nth-of-type(2)').click(), 0); return true;");
    let asked = b.wait_alert(10);
    assert!(asked.contains("delete its files"), "{asked}");
    b.cmd("POST", "/alert/accept", &json!({}));
    b.wait_row(10, "the list empty", |r| r.is_empty());
    assert_eq!(daemon.get("/api/torrents"), json!([]));
    assert!(
        !dl.join("tree").exists(),
        "data left after remove with data"
    );
    drop(b);
    daemon.stop();
}

impl Browser {
    /// Waits for a dialog (alert, confirm) to be open; returns its text.
    fn wait_alert(&self, secs: u64) -> String {
        let p = format!("/session/{}/alert/text", self.session);
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let (st, v) = http(self.addr, "GET", &p, None, b"", &[]);
            if st == 200 {
                return v["value"].as_str().unwrap_or("").to_string();
            }
            assert!(Instant::now() < end, "no dialog opened: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the detail view's file rows; returns how many.
    fn wait_row_detail(&self) -> usize {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let n = self
                .js("return document.querySelectorAll('#files tr').length;")
                .as_u64()
                .unwrap_or(0);
            if n > 0 {
                return n as usize;
            }
            assert!(Instant::now() < end, "no file rows in the detail view");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn base64_decodes_the_rfc_vectors() {
    assert_eq!(base64("Zm9vYmFy"), b"foobar");
    assert_eq!(base64("Zm9vYg=="), b"foob");
    assert_eq!(base64(""), b"");
}
