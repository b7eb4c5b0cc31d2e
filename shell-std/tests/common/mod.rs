//! Helpers for the tracker's process tests: start `shell-std tracker` on
//! free loopback ports (port 0, real ports read from its startup line),
//! kill it on drop, and talk HTTP to it with bounded timeouts (BEP 15:
//! [`Udp`], from the shared test support).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ourtorrent_core::id::InfoHash;
#[allow(unused_imports)] // not every test crate talks BEP 15
pub use ourtorrent_tests::bep15::Udp;

pub const BIN: &str = env!("CARGO_BIN_EXE_shell-std");

/// Polls `f` every 20 ms until it returns `Some` or `secs` pass.
pub fn poll<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs}s: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `shell-std tracker`, killed (SIGKILL) on drop.
pub struct Tracker {
    pub child: Child,
    pub udp: SocketAddr,
    pub http: SocketAddr,
    pub log: mpsc::Receiver<String>,
}

impl Tracker {
    /// Starts on `host` (e.g. "127.0.0.1" or "[::1]") with `args` after
    /// the address flags; waits for the startup line.
    pub fn start_on(host: &str, args: &[&str]) -> Tracker {
        let any = format!("{host}:0");
        let mut all = vec!["--udp", &any, "--http", &any];
        all.extend_from_slice(args);
        Self::start_exactly(&all)
    }

    /// Starts `shell-std tracker ARGS` with exactly `args`; waits for the
    /// startup line. A protocol not served gets address 0.0.0.0:0.
    pub fn start_exactly(args: &[&str]) -> Tracker {
        let mut child = Command::new(BIN)
            .arg("tracker")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shell-std tracker");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[tracker] {line}");
                if tx.send(line).is_err() {
                    // Keep draining so the tracker never blocks on stderr.
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let line = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains("tracker listening") => break l,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    panic!("tracker did not report its addresses");
                }
            }
        };
        let word_after = |w: &str| -> SocketAddr {
            let mut it = line.split_whitespace();
            it.find(|x| *x == w);
            match it.next() {
                Some("-") => SocketAddr::from(([0, 0, 0, 0], 0)),
                Some(s) => s
                    .split(',')
                    .next()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| panic!("bad {w} address in {line:?}")),
                None => panic!("no {w} address in {line:?}"),
            }
        };
        Tracker {
            udp: word_after("udp"),
            http: word_after("http"),
            child,
            log: rx,
        }
    }

    /// Starts on 127.0.0.1.
    pub fn start(args: &[&str]) -> Tracker {
        Self::start_on("127.0.0.1", args)
    }

    /// Starts with a database file and `--flush-ms`.
    pub fn with_db(db: &Path, flush_ms: u64, extra: &[&str]) -> Tracker {
        let flush = flush_ms.to_string();
        let mut a = vec![
            "--db",
            db.to_str().expect("utf-8 path"),
            "--flush-ms",
            &flush,
        ];
        a.extend_from_slice(extra);
        Self::start(&a)
    }

    /// (TCP listening sockets, UDP sockets) the tracker process holds,
    /// from `/proc` (Linux).
    pub fn sockets(&self) -> (usize, usize) {
        let pid = self.child.id();
        let inodes: std::collections::HashSet<String> =
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .expect("read /proc/PID/fd")
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect();
        let count = |files: &[&str], listen_only: bool| -> usize {
            files
                .iter()
                .filter_map(|f| std::fs::read_to_string(f).ok())
                .flat_map(|t| {
                    t.lines()
                        .skip(1)
                        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
                        .collect::<Vec<_>>()
                })
                .filter(|f| f.len() > 9 && (!listen_only || f[3] == "0A"))
                .filter(|f| inodes.contains(&f[9]))
                .count()
        };
        (
            count(&["/proc/net/tcp", "/proc/net/tcp6"], true),
            count(&["/proc/net/udp", "/proc/net/udp6"], false),
        )
    }

    /// Sends `sig` (e.g. "-TERM", "-KILL") and waits for the exit status.
    pub fn signal_and_wait(&mut self, sig: &str) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success());
        poll(20, "tracker exit", || self.child.try_wait().ok().flatten())
    }

    /// GET `target`; returns (status, body).
    pub fn get(&self, target: &str) -> (u16, Vec<u8>) {
        http_get(self.http, target)
    }

    /// `/stats` as JSON.
    pub fn stats(&self) -> serde_json::Value {
        let (s, body) = self.get("/stats");
        assert_eq!(s, 200);
        serde_json::from_slice(&body).expect("stats json")
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 GET with 5 s timeouts; returns (status, body).
pub fn http_get(addr: SocketAddr, target: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {target} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read reply");
    split_response(&buf)
}

/// Splits a raw HTTP response into (status, body).
pub fn split_response(buf: &[u8]) -> (u16, Vec<u8>) {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&buf[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, buf[end + 4..].to_vec())
}

/// Percent-encodes every byte (simplest correct form for binary ids).
pub fn pct(b: &[u8]) -> String {
    b.iter().map(|x| format!("%{x:02X}")).collect()
}

pub fn ih(n: u8) -> InfoHash {
    InfoHash([n; 20])
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
