//! `https://` trackers and `.torrent` URLs as a user meets them: our own
//! `shell-std tracker` behind a TLS front end with a test CA (from the
//! shared test support), `SSL_CERT_FILE` naming that CA; `client download
//! http://…/x.torrent` from a tiny test server, its errors (404, too big,
//! not a torrent, untrusted certificate); and the exit when every `--peer`
//! refuses and nothing else can give data.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Tracker, BIN};
use ourtorrent_tests::web::{forward, response, target, Server, TestCa};
use ourtorrent_tests::{free_tcp_port, require_tool, run, run_bounded, write_data, Proc};

/// The .torrent size limit of `shell-std` (`torrent::MAX_TORRENT_FILE`).
const MAX_TORRENT_FILE: usize = shell_std::torrent::MAX_TORRENT_FILE as usize;

/// `dir/data.bin` (300 kB) and its torrent with `trackers`.
fn fixture(dir: &Path, trackers: &[&str]) -> (PathBuf, PathBuf) {
    let data = dir.join("data.bin");
    write_data(&data, 300_000, 16);
    let torrent = dir.join("t.torrent");
    let mut cmd = Command::new(BIN);
    cmd.arg("create").arg(&data).args(["--piece-length", "32K"]);
    for t in trackers {
        cmd.args(["--tracker", t]);
    }
    run(cmd.arg("-o").arg(&torrent));
    (torrent, data)
}

/// A seeder of `torrent` on a free port; returns it once it listens.
fn seeder(torrent: &Path, data: &Path, ca: Option<&Path>) -> (Proc, u16) {
    let port = free_tcp_port();
    let mut cmd = Command::new(BIN);
    cmd.args(["client", "seed", "--no-dht"])
        .arg(torrent)
        .arg("--data")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--quiet"]);
    without_ca_env(&mut cmd);
    if let Some(ca) = ca {
        cmd.env("SSL_CERT_FILE", ca);
    }
    let p = Proc::spawn("seeder", &mut cmd);
    p.wait_for("seeding: listening on", Duration::from_secs(30));
    (p, port)
}

/// Trust only what the test says: no inherited `SSL_CERT_FILE`/`_DIR`.
fn without_ca_env(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR")
}

/// Our tracker behind an HTTPS front end with a test CA: with
/// `SSL_CERT_FILE=ca.pem` the seeder and the downloader find each other
/// through it and the download is byte-identical; without it the tracker
/// table says the certificate is not trusted.
#[test]
fn https_tracker_with_a_test_ca() {
    let d = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&["--no-db"]);
    let ca = TestCa::new(d.path());
    let front = Server::start(Some(ca.server_config()), forward(tracker.http));
    let announce = front.url(true, "/announce");
    let (torrent, data) = fixture(d.path(), &[&announce]);

    // `create` took it; `info` shows it.
    let info = run(Command::new(BIN).arg("info").arg(&torrent));
    assert!(info.contains(&announce), "{info}");

    let (_seed, _) = seeder(&torrent, &data, Some(&ca.ca_pem));
    // Its `started` went through the TLS front end (the only way in).
    common::poll(20, "the seeder's announce over https", || {
        (tracker.stats()["peers"].as_u64() == Some(1)).then_some(())
    });
    let out = d.path().join("out");
    let t0 = Instant::now();
    let (ok, so, se) = run_bounded(
        without_ca_env(Command::new(BIN).args(["client", "download", "--no-dht"]))
            .arg(&torrent)
            .arg("--out")
            .arg(&out)
            .args(["--listen", "127.0.0.1:0", "--no-seed", "--quiet"])
            .env("SSL_CERT_FILE", &ca.ca_pem),
        Duration::from_secs(60),
    );
    assert!(ok, "{so}\n{se}");
    assert!(
        std::fs::read(out.join("data.bin")).unwrap() == std::fs::read(&data).unwrap(),
        "download differs"
    );
    eprintln!(
        "download through the https tracker: {:.2} s",
        t0.elapsed().as_secs_f64()
    );

    // Without the CA: the tracker table (shown on a terminal) says why.
    let Some(script) = require_tool("script") else {
        return;
    };
    let cmd = format!(
        "stty cols 200 rows 24; exec {BIN} client download --no-dht {} --out {} --listen 127.0.0.1:0 --no-seed",
        torrent.display(),
        d.path().join("out2").display()
    );
    let p = Proc::spawn(
        "untrusted",
        without_ca_env(Command::new(script).args(["-q", "-e", "-c", &cmd, "/dev/null"])),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let mut row: Option<Vec<String>> = None;
    // The tracker table, header to bottom border (cells wrap).
    while !row
        .as_ref()
        .is_some_and(|r| r.last().is_some_and(|l| l.contains('╰') || l.contains('└')))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(l) = p.next_line(left) else {
            panic!("no tracker table within 30 s:\n{}", seen.join("\n"));
        };
        match &mut row {
            Some(r) => r.push(l),
            // The tracker table's header (the info table lists the URL too).
            None if l.contains("Status") && l.contains("Interval") => row = Some(vec![l]),
            None => seen.push(l),
        }
    }
    let row = row.unwrap_or_default().join("\n");
    // The status cell's words, wherever the table wrapped them.
    let words = row
        .replace(['│', '┆', '╰', '└', '─', '┴'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        words.contains(&announce) && words.contains("TLS: certificate not trusted (unknown issuer"),
        "tracker row:\n{row}"
    );
    eprintln!("{row}");
}

/// `client download URL`: the .torrent fetched first (through a redirect),
/// then downloaded byte-identical from a `--peer`; a 404, an oversized
/// body, a page that is not a torrent and an untrusted HTTPS server each
/// give one clear line and a non-zero exit.
#[test]
fn torrent_urls_download_and_fail_clearly() {
    let d = tempfile::tempdir().unwrap();
    let (torrent, data) = fixture(d.path(), &[]);
    let bytes = Arc::new(std::fs::read(&torrent).unwrap());
    // One byte over the limit, without Content-Length: the client counts.
    let big = Arc::new(vec![b'd'; MAX_TORRENT_FILE + 1]);
    let handler = {
        let (bytes, big) = (bytes.clone(), big.clone());
        Arc::new(move |head: &[u8]| match target(head).as_str() {
            // /r/N: N redirects before the torrent.
            t if t.starts_with("/r/") => match t.trim_start_matches("/r/").parse::<u32>() {
                Ok(0) => response("200 OK", None, &bytes, true),
                Ok(n) => format!(
                    "HTTP/1.1 302 Found\r\nLocation: /r/{}\r\nConnection: close\r\n\r\n",
                    n - 1
                )
                .into_bytes(),
                Err(_) => response("400 Bad Request", None, b"", true),
            },
            "/x.torrent" => response("200 OK", Some("application/x-bittorrent"), &bytes, true),
            "/moved" => {
                b"HTTP/1.1 302 Found\r\nLocation: /x.torrent\r\nConnection: close\r\n\r\n".to_vec()
            }
            "/big.torrent" => response("200 OK", None, &big, false),
            "/page" => response("200 OK", Some("text/html"), b"<html>hello</html>", true),
            _ => response("404 Not Found", Some("text/plain"), b"no such file", true),
        })
    };
    let web = Server::start(None, handler.clone());
    let ca = TestCa::new(d.path());
    let tls = Server::start(Some(ca.server_config()), handler);
    let (_seed, port) = seeder(&torrent, &data, None);

    let fetch = |url: &str, out: &Path, ca: Option<&Path>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["client", "download", "--no-dht", url])
            .arg("--out")
            .arg(out)
            .args(["--listen", "127.0.0.1:0", "--no-seed", "--quiet"])
            .args(["--peer", &format!("127.0.0.1:{port}")]);
        without_ca_env(&mut cmd);
        if let Some(ca) = ca {
            cmd.env("SSL_CERT_FILE", ca);
        }
        run_bounded(&mut cmd, Duration::from_secs(90))
    };

    // http:// through a redirect, through the most redirects followed
    // (MAX_REDIRECTS, 5), then https:// with the test CA.
    for (i, (url, ca)) in [
        (web.url(false, "/moved"), None),
        (web.url(false, "/r/5"), None),
        (tls.url(true, "/x.torrent"), Some(ca.ca_pem.as_path())),
    ]
    .into_iter()
    .enumerate()
    {
        let out = d.path().join(format!("out-{i}"));
        let (ok, so, se) = fetch(&url, &out, ca);
        assert!(ok, "{url}:\n{so}\n{se}");
        assert!(
            std::fs::read(out.join("data.bin")).unwrap() == std::fs::read(&data).unwrap(),
            "{url}: download differs"
        );
    }

    let missing = d.path().join("no-such-ca.pem");
    let closed = free_tcp_port();
    let refused = format!("http://127.0.0.1:{closed}/x.torrent");
    let refused_why = format!("127.0.0.1:{closed}: connection refused");
    let limit = format!("reply larger than the {MAX_TORRENT_FILE}-byte limit");
    for (url, ca, want) in [
        (web.url(false, "/nope.torrent"), None, "HTTP 404 Not Found"),
        (web.url(false, "/big.torrent"), None, limit.as_str()),
        (web.url(false, "/r/6"), None, "more than 5 redirects"),
        (
            web.url(false, "/page"),
            None,
            "not a torrent (the server sent 18 bytes of text/html)",
        ),
        (
            tls.url(true, "/x.torrent"),
            None,
            "TLS: certificate not trusted (unknown issuer",
        ),
        (
            tls.url(true, "/x.torrent"),
            Some(missing.as_path()),
            "TLS: certificate not trusted (unknown issuer; failed to read PEM from file",
        ),
        (refused.clone(), None, refused_why.as_str()),
    ] {
        let out = d.path().join("never");
        let (ok, so, se) = fetch(&url, &out, ca);
        assert!(!ok, "{url}: succeeded:\n{so}\n{se}");
        let lines: Vec<&str> = se.trim().lines().collect();
        assert_eq!(lines.len(), 1, "{url}: one line wanted:\n{se}");
        assert!(
            lines[0].starts_with(&format!("error: {url}: {want}")),
            "{url}: {se}"
        );
        assert!(!out.exists(), "{url}: created {}", out.display());
    }
}

/// Python's `http.server` behind its `ssl` module (OpenSSL), with the
/// test CA's leaf: our client fetches the .torrent over https from a TLS
/// stack that is not ours, then downloads byte-identical.
#[test]
fn openssl_https_server_python_serves_the_torrent() {
    let Some(py) = require_tool("python3") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let (torrent, data) = fixture(d.path(), &[]);
    let ca = TestCa::new(d.path());
    const SERVER: &str = "import http.server, os, ssl, sys
os.chdir(sys.argv[1])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
srv = http.server.HTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], ssl.OPENSSL_VERSION, flush=True)
srv.serve_forever()
";
    let server = Proc::spawn(
        "python-https",
        Command::new(py)
            .args(["-c", SERVER])
            .arg(d.path())
            .arg(&ca.leaf_pem)
            .arg(&ca.leaf_key)
            .stderr(std::process::Stdio::null()),
    );
    let line = server
        .next_line(Duration::from_secs(20))
        .expect("python https server's port");
    let port = line.split(' ').next().unwrap_or_default();
    eprintln!("python https server: {line}");
    let (_seed, seed_port) = seeder(&torrent, &data, None);
    let out = d.path().join("out");
    let (ok, so, se) = run_bounded(
        without_ca_env(Command::new(BIN).args(["client", "download", "--no-dht"]))
            .arg(format!("https://localhost:{port}/t.torrent"))
            .arg("--out")
            .arg(&out)
            .args(["--listen", "127.0.0.1:0", "--no-seed", "--quiet"])
            .args(["--peer", &format!("127.0.0.1:{seed_port}")])
            .env("SSL_CERT_FILE", &ca.ca_pem),
        Duration::from_secs(60),
    );
    assert!(ok, "{so}\n{se}");
    assert!(
        std::fs::read(out.join("data.bin")).unwrap() == std::fs::read(&data).unwrap(),
        "download differs"
    );
}

/// No tracker and every `--peer` refuses: each peer's error, then
/// "nothing to connect to" and a non-zero exit (not a silent wait).
#[test]
fn every_peer_refusing_ends_with_nothing_to_connect_to() {
    let d = tempfile::tempdir().unwrap();
    let (torrent, _) = fixture(d.path(), &[]);
    let closed = free_tcp_port();
    let t0 = Instant::now();
    let (ok, so, se) = run_bounded(
        Command::new(BIN)
            .args(["client", "download", "--no-dht"])
            .arg(&torrent)
            .arg("--out")
            .arg(d.path().join("out"))
            .args(["--listen", "127.0.0.1:0", "--quiet"])
            .args(["--peer", "127.0.0.1:1", "--peer"])
            .arg(format!("127.0.0.1:{closed}")),
        Duration::from_secs(30),
    );
    assert!(!ok, "{so}\n{se}");
    assert!(se.contains("127.0.0.1:1: connection refused\n"), "{se}");
    assert!(
        se.contains(&format!("127.0.0.1:{closed}: connection refused\n")),
        "{se}"
    );
    assert!(
        se.contains(
            "error: nothing to connect to: no --peer completed a handshake and the torrent lists no tracker"
        ),
        "{se}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
}
