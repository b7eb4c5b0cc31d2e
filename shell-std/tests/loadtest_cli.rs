//! `shell-std loadtest` as a user runs it: against nothing it says so and
//! fails; it takes host names; it removes its fake peers from the target's
//! swarms at the end (`stopped`) unless told `--no-stop`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Tracker, BIN};
use ourtorrent_tests::free_udp_port;

/// Runs a load test with small numbers; returns (exit success, stdout, stderr).
fn loadtest(target: &str, extra: &[&str]) -> (bool, String, String) {
    let o = Command::new(BIN)
        .args(["loadtest", "--target", target])
        .args(["--concurrency", "8", "--torrents", "5", "--peers", "40"])
        .args(extra)
        .output()
        .expect("run shell-std loadtest");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn loadtest_against_a_closed_port_says_no_replies_and_fails() {
    // A loopback port nobody listens on (bound, then released).
    let port = free_udp_port();
    let start = Instant::now();
    let (ok, out, err) = loadtest(
        &format!("127.0.0.1:{port}"),
        &["--duration", "1", "--timeout-ms", "200"],
    );
    assert!(!ok, "exit 0 against nothing: {out}");
    assert!(err.contains("no replies from 127.0.0.1:"), "{err}");
    assert!(out.is_empty(), "a table of zeros: {out}");
    assert!(start.elapsed() < Duration::from_secs(10));
    // An unknown host name is refused up front.
    let (ok, _, err) = loadtest("no-such-host.invalid:6969", &["--duration", "1"]);
    assert!(!ok && err.contains("no-such-host.invalid"), "{err}");
}

#[test]
fn loadtest_takes_a_host_name_and_stops_its_fake_peers() {
    let t = Tracker::start(&["--no-db"]);
    let by_name = format!("localhost:{}", t.udp.port());
    let json = |out: &str| -> serde_json::Value { serde_json::from_str(out.trim()).unwrap() };

    // --no-stop: the fake peers stay in the swarms.
    let (ok, out, err) = loadtest(&by_name, &["--duration", "1", "--json", "--no-stop"]);
    assert!(ok, "{err}");
    let r = json(&out);
    assert!(
        r["kinds"]["announce"]["responses"].as_u64() > Some(0),
        "{r}"
    );
    assert!(r["stopped"].is_null());
    let left = t.stats()["peers"].as_u64().unwrap();
    assert!(left > 0 && left <= 40, "{left}");

    // Default: each announced fake peer is sent `stopped`; the same seed
    // announces the same 40 peers, so none is left.
    let (ok, out, err) = loadtest(
        &format!("udp://{by_name}/announce"),
        &["--duration", "1", "--json"],
    );
    assert!(ok, "{err}");
    let r = json(&out);
    let sent = r["stopped"]["sent"].as_u64().unwrap();
    assert!(sent >= left, "{r}");
    assert_eq!(r["stopped"]["acknowledged"], sent, "{r}");
    assert_eq!(t.stats()["peers"], 0);
}
