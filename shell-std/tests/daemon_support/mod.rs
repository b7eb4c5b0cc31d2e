//! Shared by the daemon's process tests (`daemon.rs`, `daemon_page.rs`):
//! a running `shell-std daemon` ([`Daemon`]), plain HTTP/1.1 requests with
//! bounded waits ([`http`]), the SSE stream, and the test torrents.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[allow(unused_imports)] // not every daemon test compares trees
pub use ourtorrent_tests::fixtures::assert_same_tree as same_tree;
use ourtorrent_tests::fixtures::tree_torrent;
use ourtorrent_tests::{run, Proc};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_shell-std");

/// A running daemon (killed on drop) and its API address.
pub struct Daemon {
    pub proc: Proc,
    pub api: SocketAddr,
    /// `--token`, sent with [`Daemon::req`].
    token: Option<String>,
    /// Its startup line (`daemon: api on …, peers on …, downloads in …`).
    pub startup: String,
}

impl Daemon {
    /// `shell-std daemon` with its downloads in `dl` and state in `state`,
    /// plus `extra` flags (`--no-dht` unless they give `--dht-bootstrap`:
    /// the public routers are not on loopback); returns once the API
    /// listens.
    pub fn start(dl: &Path, state: &Path, extra: &[&str]) -> Daemon {
        let (dl, state) = (dl.display().to_string(), state.display().to_string());
        let mut args = vec!["--listen", "127.0.0.1:0", "--download-dir", &dl];
        if !extra.contains(&"--dht-bootstrap") {
            args.push("--no-dht");
        }
        args.extend_from_slice(extra);
        Self::start_with(&state, &args)
    }

    /// `shell-std daemon --http 127.0.0.1:0 --state STATE ARGS`.
    pub fn start_with(state: &str, args: &[&str]) -> Daemon {
        let extra = args;
        let proc = Proc::spawn(
            "daemon",
            Command::new(BIN)
                .arg("daemon")
                .args(["--http", "127.0.0.1:0", "--state", state])
                .args(args),
        );
        let line = proc.wait_for("daemon: api on http://", Duration::from_secs(20));
        let api = line["daemon: api on http://".len()..]
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("bad startup line {line:?}"));
        let token = extra
            .iter()
            .position(|a| *a == "--token")
            .and_then(|i| extra.get(i + 1))
            .map(|t| format!("Bearer {t}"));
        Daemon {
            proc,
            api,
            token,
            startup: line,
        }
    }

    pub fn req(&self, method: &str, path: &str, ctype: Option<&str>, body: &[u8]) -> (u16, Value) {
        match &self.token {
            Some(t) => http(self.api, method, path, ctype, body, &[("Authorization", t)]),
            None => http(self.api, method, path, ctype, body, &[]),
        }
    }

    pub fn get(&self, path: &str) -> Value {
        let (st, v) = self.req("GET", path, None, b"");
        assert_eq!(st, 200, "GET {path}: {v}");
        v
    }

    /// Adds a `.torrent` by upload; returns its id.
    pub fn add(&self, torrent: &Path, query: &str) -> i64 {
        let bytes = std::fs::read(torrent).unwrap();
        let (st, v) = self.req(
            "POST",
            &format!("/api/torrents{query}"),
            Some("application/x-bittorrent"),
            &bytes,
        );
        assert_eq!(st, 201, "add: {v}");
        v["id"].as_i64().expect("id")
    }

    /// Adds a magnet link (JSON); returns its id.
    pub fn add_magnet(&self, magnet: &str) -> i64 {
        let body = serde_json::json!({ "magnet": magnet }).to_string();
        let (st, v) = self.req(
            "POST",
            "/api/torrents",
            Some("application/json"),
            body.as_bytes(),
        );
        assert_eq!(st, 201, "add magnet: {v}");
        assert_eq!(v["state"], "fetching_metadata", "{v}");
        v["id"].as_i64().expect("id")
    }

    /// Polls torrent `id` every 50 ms until `ok` holds, for `secs`.
    pub fn wait(&self, id: i64, secs: u64, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.get(&format!("/api/torrents/{id}"));
            if ok(&v) {
                return v;
            }
            assert!(Instant::now() < end, "timed out: {what}: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit (bounded).
    pub fn stop(mut self) {
        let pid = self.proc.child.id().to_string();
        run(Command::new("kill").args(["-TERM", &pid]));
        let st = self.proc.wait_exit(Duration::from_secs(20));
        assert!(st.success(), "daemon exit: {st}");
    }
}

/// One HTTP/1.1 request (Connection: close) with bounded waits; returns
/// the status and the body as JSON (`Value::String` when not JSON).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    ctype: Option<&str>,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let (st, raw) = http_raw(addr, method, path, ctype, body, headers);
    let v = serde_json::from_slice(&raw)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into_owned()));
    (st, v)
}

pub fn http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    ctype: Option<&str>,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, Vec<u8>) {
    let (st, _, body) = http_parts(addr, method, path, ctype, body, headers);
    (st, body)
}

/// [`http_raw`] with the response head too (lower-cased, for header checks).
pub fn http_parts(
    addr: SocketAddr,
    method: &str,
    path: &str,
    ctype: Option<&str>,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(c) = ctype {
        head.push_str(&format!("Content-Type: {c}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write head");
    // The server may answer (413) before reading a large body: a failed
    // body write is not the test's verdict, the answer is.
    let _ = s.write_all(body);
    // To the end of the body (Content-Length), or of the connection.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => raw.extend_from_slice(&buf[..k]),
        }
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|n| raw.len() >= at + 4 + n) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
    (status, head, raw[at..].to_vec())
}

/// Opens the SSE stream `GET /api/events`.
pub fn sse(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(s, "GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    s
}

/// Reads the SSE stream until `needle` shows up (within `secs`); returns
/// what was read.
pub fn sse_wait(s: &mut TcpStream, needle: &str, secs: u64) -> String {
    let end = Instant::now() + Duration::from_secs(secs);
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(_) => {} // read timeout: look again
        }
        let text = String::from_utf8_lossy(&got);
        if text.contains(needle) {
            return text.into_owned();
        }
    }
    panic!(
        "no {needle:?} on the event stream in {secs} s:\n{}",
        String::from_utf8_lossy(&got)
    );
}

/// A multi-file tree (with a larger file) and its torrent, `piece` bytes a
/// piece; returns (torrent, tree).
pub fn fixture(dir: &Path, piece: u32, big: usize) -> (PathBuf, PathBuf) {
    fixture_with(dir, piece, big, None)
}

/// [`fixture`] with a tracker URL in the torrent.
pub fn fixture_with(
    dir: &Path,
    piece: u32,
    big: usize,
    tracker: Option<&str>,
) -> (PathBuf, PathBuf) {
    tree_torrent(BIN, dir, piece, big, tracker)
}

pub fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

/// A bad request: method, path, content type, body, the status it must
/// get, and what its error must say.
pub type Case<'a> = (&'a str, String, Option<&'a str>, Vec<u8>, u16, &'a str);

pub fn copy_tree(from: &Path, to: &Path) {
    for e in walk(from) {
        let rel = e.strip_prefix(from).unwrap();
        let dst = to.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&e, &dst).unwrap();
    }
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
