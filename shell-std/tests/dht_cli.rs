//! `shell-std dht` as a user runs it, over 127.0.0.1: as the only router of
//! two libtorrent DHT nodes that find each other through it; saving its
//! table on SIGTERM and loading it on restart; counting garbage and
//! oversized datagrams without falling over.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use ourtorrent_core::dht::krpc::{self, Body, Query, Token, RECOMMENDED_TOKENS};
use ourtorrent_core::dht::NodeId;
use ourtorrent_tests::{repo_root, require_libtorrent};
use serde_json::Value;

/// A `shell-std dht` process (killed when dropped) with its stdout lines
/// on a channel.
struct Node {
    child: Child,
    lines: Receiver<String>,
    addr: SocketAddrV4,
    id: String,
}

impl Node {
    /// Starts `shell-std dht --listen 127.0.0.1:0 --state STATE ARGS…` and
    /// waits for its "dht listening on" line.
    fn start(state: &Path, args: &[String]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shell-std"))
            .args(["dht", "--listen", "127.0.0.1:0", "--state"])
            .arg(state)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut n = Node {
            child,
            lines,
            addr: "0.0.0.0:0".parse().unwrap(),
            id: String::new(),
        };
        let l = n.line(|l| l.starts_with("dht listening on "), 10);
        // "dht listening on ADDR node-id HEX"
        let w: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(w.len(), 6, "{l}");
        n.addr = w[3].parse().unwrap();
        n.id = w[5].to_string();
        assert_eq!(n.id.len(), 40, "{l}");
        n
    }

    /// The next stdout line matching `want`, within `secs`.
    fn line(&mut self, want: impl Fn(&str) -> bool, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if want(&l) => return l,
                Ok(_) => {}
                Err(e) => panic!("no matching line within {secs} s: {e}"),
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// SIGUSR1, and the stats line it prints.
    fn stats(&mut self) -> Value {
        self.signal("-USR1");
        self.stats_line()
    }

    fn stats_line(&mut self) -> Value {
        let l = self.line(|l| l.starts_with("{\"dht_stats\""), 10);
        serde_json::from_str::<Value>(&l).unwrap()["dht_stats"].clone()
    }

    /// Polls the stats (every 100 ms, for up to `secs`) until `ok` holds.
    fn stats_until(&mut self, secs: u64, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.stats();
            if ok(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "stats never matched: {s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM: the final stats line, after a successful exit.
    fn stop(mut self) -> Value {
        self.signal("-TERM");
        let s = self.stats_line();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "exit status {st}");
                return s;
            }
            assert!(Instant::now() < deadline, "did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn n(v: &Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_u64()
        .unwrap_or_else(|| panic!("{path:?} in {v}"))
}

fn free_udp_and_tcp_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[test]
fn dht_router_lets_libtorrent_nodes_find_each_other() {
    let Some(py) = require_libtorrent() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut router = Node::start(&tmp.path().join("router.state"), &[]);
    let (seed, leech) = (free_udp_and_tcp_port(), free_udp_and_tcp_port());
    let info_hash = "5e".repeat(20);
    let mut lt = Command::new(py)
        .arg(repo_root().join("tests/py/lt_dht_pair.py"))
        .args([
            router.addr.port().to_string(),
            seed.to_string(),
            leech.to_string(),
        ])
        .arg(&info_hash)
        .arg(tmp.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(lt.stdout.take().unwrap());
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let wait = |secs| rx.recv_timeout(Duration::from_secs(secs));
    assert_eq!(wait(20).unwrap(), "READY");
    // The script gives up after 60 s.
    let started = Instant::now();
    let found = wait(90).unwrap();
    let _ = lt.kill();
    let _ = lt.wait();
    assert!(found.starts_with("FOUND "), "libtorrent: {found}");
    assert!(
        found
            .split_whitespace()
            .any(|p| p == format!("127.0.0.1:{seed}")),
        "{found}"
    );
    eprintln!(
        "libtorrent's leecher found the seeder in {:?}",
        started.elapsed()
    );
    // Both libtorrent nodes joined through us, and the seeder announced to us.
    let s = router.stats();
    assert!(n(&s, &["table_nodes"]) >= 2, "{s}");
    assert!(n(&s, &["in", "get_peers"]) > 0, "{s}");
    assert!(n(&s, &["in", "announce_peer"]) > 0, "{s}");
    assert!(n(&s, &["core", "announces_stored"]) > 0, "{s}");
    assert!(n(&s, &["peers_stored"]) >= 1, "{s}");
    assert!(n(&s, &["out", "response"]) > 0, "{s}");
    router.stop();
}

#[test]
fn dht_restart_loads_the_table_saved_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let router = Node::start(&tmp.path().join("router.state"), &[]);
    let state = tmp.path().join("node.state");
    let boot = vec!["--bootstrap".to_string(), router.addr.to_string()];
    let mut node = Node::start(&state, &boot);
    node.stats_until(10, |s| n(s, &["table_nodes"]) >= 1);
    let id = node.id.clone();
    let last = node.stop();
    assert!(n(&last, &["table_nodes"]) >= 1, "{last}");

    // The file: a header, our id, the router as "id ip:port".
    let text = std::fs::read_to_string(&state).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with('#'), "{text}");
    assert_eq!(lines[1], format!("id {id}"), "{text}");
    assert!(
        lines.contains(&format!("{} {}", router.id, router.addr).as_str()),
        "{text}"
    );
    // Written atomically: no temporary file left beside it.
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["node.state"], "{names:?}");

    // Restarted without --bootstrap: same id, a table from its first stats,
    // and the restored router answers its ping.
    let mut again = Node::start(&state, &[]);
    assert_eq!(again.id, id);
    let first = again.stats();
    assert!(n(&first, &["table_nodes"]) >= 1, "{first}");
    again.stats_until(10, |s| n(s, &["in", "response"]) >= 1);
    again.stop();
    router.stop();
}

#[test]
fn dht_garbage_and_oversized_datagrams_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Node::start(&tmp.path().join("dht.state"), &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let garbage: [&[u8]; 5] = [
        b"garbage",
        b"d1:ad2:id20:",
        b"d1:t2:aa1:y1:qe",
        &[b'x'; 1501],
        &[b'd'; 65_000],
    ];
    for g in garbage {
        sock.send_to(g, node.addr).unwrap();
    }
    // Still alive: a ping is answered with its id.
    let mut q = [0u8; 1500];
    let me = NodeId([0x42; 20]);
    let len = krpc::encode_query(b"zz", false, &me, &Query::Ping, &mut q).unwrap();
    sock.send_to(&q[..len], node.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1500];
    let reply = loop {
        let (n, _) = sock.recv_from(&mut buf).expect("a reply to the ping");
        let mut toks = [Token::EMPTY; RECOMMENDED_TOKENS];
        let m = krpc::decode(&buf[..n], &mut toks).unwrap();
        // The node also pings us (a newcomer) before trusting us.
        if let (b"zz", Body::Response(r)) = (m.tid, m.body) {
            break r.id;
        }
    };
    let hex: String = reply.0.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, node.id);
    let s = node.stats();
    assert_eq!(n(&s, &["oversized"]), 2, "{s}");
    assert_eq!(n(&s, &["in", "malformed"]), 5, "{s}");
    assert_eq!(n(&s, &["core", "malformed"]), 5, "{s}");
    assert_eq!(n(&s, &["core", "datagrams_in"]), 6, "{s}");
    assert_eq!(n(&s, &["in", "ping"]), 1, "{s}");
    node.stop();
}

/// `shell-std dht --lookup IH --json …` run to its end (bounded by `--timeout`
/// plus a margin): the exit code and the JSON object's `lookup`.
fn lookup_once(state: &Path, router: u16, ih: &str, timeout_s: u64) -> (Option<i32>, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shell-std"))
        .args(["dht", "--listen", "127.0.0.1:0", "--state"])
        .arg(state)
        .args(["--bootstrap", &format!("127.0.0.1:{router}")])
        .args([
            "--lookup",
            ih,
            "--json",
            "--timeout",
            &timeout_s.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(out), &mut s);
        let _ = tx.send(s);
    });
    // WAIT_FOR_NODES (10 s) or the timeout, plus start and exit.
    let s = rx
        .recv_timeout(Duration::from_secs(timeout_s.max(10) + 20))
        .expect("--lookup ends within its timeout");
    let code = child.wait().unwrap().code();
    let v: Value = serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{e}: {s}"));
    (code, v["lookup"].clone())
}

#[test]
fn dht_lookup_finds_the_libtorrent_seeder_and_counts_its_messages() {
    let Some(py) = require_libtorrent() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ih = "a7".repeat(20);
    // A libtorrent router, 4 more nodes, the last one announcing `ih`.
    let mut net = Command::new(py)
        .arg(repo_root().join("tests/py/lt_dht_net.py"))
        .args(["net", "6", &ih, "--max-seconds", "120"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(net.stdout.take().unwrap());
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let router: u16 = rx.recv_timeout(Duration::from_secs(20)).unwrap()["ROUTER port=".len()..]
        .parse()
        .unwrap();
    let ready = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let seeder = ready
        .strip_prefix("READY seeder=")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{ready}"))
        .to_string();
    // The seeder's first announce can miss a router it has not yet joined:
    // a few tries, each bounded.
    let mut last = Value::Null;
    for _ in 0..5 {
        let (code, l) = lookup_once(&tmp.path().join("l.state"), router, &ih, 20);
        let found = l["peers"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p.as_str() == Some(seeder.as_str())));
        if found {
            assert_eq!(code, Some(0), "{l}");
            assert!(n(&l, &["messages_sent"]) >= 2, "{l}");
            assert!(n(&l, &["messages_received"]) >= 2, "{l}");
            assert!(n(&l, &["out", "get_peers"]) >= 1, "{l}");
            assert!(n(&l, &["in", "response"]) >= 1, "{l}");
            let ms = |k: &str| l[k].as_f64().unwrap_or_else(|| panic!("{k} in {l}"));
            assert!(ms("first_peer_ms") <= ms("done_ms"), "{l}");
            let _ = net.kill();
            let _ = net.wait();
            return;
        }
        last = l;
        std::fs::remove_file(tmp.path().join("l.state")).ok();
    }
    let _ = net.kill();
    let _ = net.wait();
    panic!("the seeder {seeder} was never found: {last}");
}

#[test]
fn dht_lookup_without_peers_exits_1_within_its_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let router = Node::start(&tmp.path().join("router.state"), &[]);
    let started = Instant::now();
    let (code, l) = lookup_once(
        &tmp.path().join("l.state"),
        router.addr.port(),
        &"0c".repeat(20),
        5,
    );
    assert_eq!(code, Some(1), "{l}");
    assert_eq!(l["peers"].as_array().map(Vec::len), Some(0), "{l}");
    assert!(l["first_peer_ms"].is_null(), "{l}");
    assert!(n(&l, &["out", "get_peers"]) >= 1, "{l}");
    assert!(n(&l, &["in", "response"]) >= 1, "{l}");
    assert!(started.elapsed() < Duration::from_secs(5 + 10), "{l}");
    router.stop();
}

#[test]
fn dht_lookup_refuses_a_bad_info_hash_and_timeout() {
    for args in [
        ["--lookup", "abc", "--timeout", "5"],
        ["--lookup", &"zz".repeat(20), "--timeout", "5"],
        ["--lookup", &"ab".repeat(20), "--timeout", "0"],
        ["--lookup", &"ab".repeat(20), "--timeout", "3601"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_shell-std"))
            .args(["dht", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
}
