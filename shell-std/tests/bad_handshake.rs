//! Issue 16: `--peer`s that take the TCP connection but fail the BEP 3
//! handshake (close at once, send garbage, answer another info-hash, stay
//! silent) are reported like refused dials: one line per peer with the
//! reason, then `nothing to connect to` and a failed exit, and no
//! `uploaded:` line after the errors. A reset or EOF counts after
//! `HANDSHAKE_RESETS_TO_GIVE_UP` in a row (retried 1 s apart); the rest at
//! once.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::BIN;
use ourtorrent_tests::{run, run_bounded, write_data};

/// How a fake peer behaves once it accepted a connection.
#[derive(Clone, Copy)]
enum Fake {
    /// Closes the socket at once.
    Close,
    /// Reads ours, sends 68 bytes that are not a handshake (protocol
    /// length 0xff), then closes.
    Garbage,
    /// Reads ours, sends a well-formed handshake for another info-hash,
    /// then closes.
    OtherTorrent,
    /// Reads and never answers (the client's handshake timeout).
    Silent,
}

/// A fake peer on a free port, serving every connection the same way for
/// the life of the test process; returns its port.
fn fake_peer(how: Fake) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                match how {
                    Fake::Close => {}
                    Fake::Garbage => {
                        // Ours read first: the close is a FIN, not a reset.
                        let _ = s.read_exact(&mut [0u8; 68]);
                        let _ = s.write_all(&[0xff; 68]);
                    }
                    Fake::OtherTorrent => {
                        let _ = s.read_exact(&mut [0u8; 68]);
                        let mut h = vec![19u8];
                        h.extend_from_slice(b"BitTorrent protocol");
                        h.extend_from_slice(&[0u8; 8]);
                        h.extend_from_slice(&[0x55; 20]);
                        h.extend_from_slice(b"-XX0000-fakefakefake");
                        let _ = s.write_all(&h);
                    }
                    Fake::Silent => {
                        let mut buf = [0u8; 256];
                        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                    }
                }
            });
        }
    });
    port
}

fn torrent(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("data.bin");
    write_data(&data, 100_000, 7);
    let t = dir.join("t.torrent");
    run(Command::new(BIN)
        .arg("create")
        .arg(&data)
        .args(["--piece-length", "32K", "-o"])
        .arg(&t));
    t
}

#[test]
fn peers_failing_the_handshake_end_with_nothing_to_connect_to() {
    let d = tempfile::tempdir().unwrap();
    let t = torrent(d.path());
    let peers = [
        (fake_peer(Fake::Close), None),
        (fake_peer(Fake::Garbage), Some("protocol name length 255")),
        (fake_peer(Fake::OtherTorrent), Some("wrong info-hash")),
        (fake_peer(Fake::Silent), Some("handshake timeout")),
    ];
    let mut cmd = Command::new(BIN);
    cmd.args(["client", "download", "--no-dht"])
        .arg(&t)
        .arg("--out")
        .arg(d.path().join("out"))
        .args(["--listen", "127.0.0.1:0", "--quiet"]);
    for (p, _) in &peers {
        cmd.args(["--peer", &format!("127.0.0.1:{p}")]);
    }
    let t0 = Instant::now();
    let (ok, so, se) = run_bounded(&mut cmd, Duration::from_secs(40));
    assert!(!ok, "{so}\n{se}");
    for (p, why) in &peers {
        let prefix = format!("127.0.0.1:{p}: ");
        let line = se
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line for {prefix}\n{se}"));
        assert!(line.len() > prefix.len(), "no reason: {line}");
        if let Some(why) = why {
            assert!(line.contains(why), "{line}\n{se}");
        }
    }
    assert!(
        se.contains(
            "error: nothing to connect to: no --peer completed a handshake and the torrent lists no tracker"
        ),
        "{se}"
    );
    assert!(!so.contains("uploaded:"), "{so}");
    // The silent peer's handshake timeout (10 s) bounds it, plus retries.
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
}
