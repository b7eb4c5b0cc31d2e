//! Real BitTorrent clients using our tracker on 127.0.0.1: a libtorrent
//! seeder (python3-libtorrent, `tests/py/lt_swarm.py`) with an aria2c, a
//! libtorrent or our own client as the leecher (ours finds the seeder only
//! through the tracker), over the tracker's UDP URL and then its HTTP URL.
//! Each download must finish and verify, the seeder must see the leecher's
//! client in its peer list, and the tracker must have counted both peers
//! and the completion. Named after the third party: `cargo test aria2`,
//! `cargo test libtorrent`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use ourtorrent_tests::libtorrent::lt_swarm;
use ourtorrent_tests::{
    free_tcp_port, free_udp_port, require_libtorrent, require_tool, run, write_data, Proc,
};

/// A 3 MiB file and its torrent (256 KiB pieces) announcing to `url`.
fn make_torrent(dir: &Path, url: &str) -> (PathBuf, PathBuf) {
    let mktorrent = require_tool("mktorrent").expect("checked by the caller");
    let seed_dir = dir.join("seed");
    let data = seed_dir.join("payload.bin");
    write_data(&data, 3 << 20, 42);
    let torrent = dir.join("payload.torrent");
    run(Command::new(mktorrent)
        .args(["-l", "18", "-a", url, "-o"])
        .arg(&torrent)
        .arg(&data));
    (torrent, seed_dir)
}

#[derive(Clone, Copy)]
enum Leecher {
    Aria2,
    Libtorrent,
    /// Our own client, finding the seeder through the tracker only.
    Ours,
}

fn swarm(leecher: Leecher, http: bool) {
    let Some(py) = require_libtorrent() else {
        return;
    };
    if require_tool("mktorrent").is_none() {
        return;
    }
    let aria2 = match leecher {
        Leecher::Aria2 => match require_tool("aria2c") {
            Some(p) => Some(p),
            None => return,
        },
        Leecher::Libtorrent | Leecher::Ours => None,
    };
    let t = Tracker::start(&["--no-db", "--interval", "60"]);
    let url = if http {
        format!("http://{}/announce", t.http)
    } else {
        format!("udp://{}/announce", t.udp)
    };
    let dir = tempfile::tempdir().unwrap();
    let (torrent, seed_dir) = make_torrent(dir.path(), &url);

    let seeder = Proc::spawn(
        "lt-seed",
        &mut lt_swarm(&py, "seed", &torrent, &seed_dir, free_tcp_port()),
    );
    seeder.wait_for("TRACKER_OK", Duration::from_secs(30));

    let leech_dir = dir.path().join("leech");
    std::fs::create_dir_all(&leech_dir).unwrap();
    let (mut leech, client_tag) = match aria2 {
        Some(aria2) => {
            let dht = dir.path().join("dht.dat");
            let p = Proc::spawn(
                "aria2c",
                Command::new(aria2)
                    .arg(format!("--dir={}", leech_dir.display()))
                    .args([
                        "--interface=127.0.0.1",
                        "--bt-enable-lpd=false",
                        "--enable-peer-exchange=false",
                        "--disable-ipv6=true",
                        "--seed-time=0",
                        "--enable-dht=true",
                        "--enable-dht6=false",
                        "--summary-interval=0",
                        "--console-log-level=warn",
                        "--check-integrity=true",
                        "--bt-stop-timeout=60",
                    ])
                    .arg(format!("--dht-file-path={}", dht.display()))
                    .arg(format!("--listen-port={}", free_tcp_port()))
                    .arg(format!("--dht-listen-port={}", free_udp_port()))
                    .arg(&torrent),
            );
            (p, "aria2")
        }
        None if matches!(leecher, Leecher::Ours) => {
            let p = Proc::spawn(
                "ours",
                Command::new(BIN)
                    .args(["client", "download", "--no-dht"])
                    .arg(&torrent)
                    .arg("--out")
                    .arg(&leech_dir)
                    .args(["--listen", "127.0.0.1:0", "--no-seed", "--quiet"]),
            );
            (p, "ourtorrent")
        }
        None => {
            let p = Proc::spawn(
                "lt-leech",
                &mut lt_swarm(&py, "leech", &torrent, &leech_dir, free_tcp_port()),
            );
            p.wait_for("DONE", Duration::from_secs(60));
            (p, "libtorrent")
        }
    };
    let status = leech.wait_exit(Duration::from_secs(90));
    assert!(status.success(), "leecher failed: {status:?}");
    assert_eq!(
        std::fs::read(leech_dir.join("payload.bin")).unwrap(),
        std::fs::read(seed_dir.join("payload.bin")).unwrap(),
        "downloaded data differs"
    );
    // The seeder saw the leecher (by client name, from its handshake).
    let want = client_tag;
    let is_leecher = |l: &str| l.starts_with("PEER") && l.to_lowercase().contains(want);
    let lines = seeder.drain();
    if !lines.iter().any(|l| is_leecher(l)) {
        // The two seeds may have disconnected before the seeder polled its
        // peer list for the client name: then the connection alert (the
        // only other peer of this swarm is the leecher) must be there.
        assert!(
            lines.iter().any(|l| l.starts_with("PEER 127.0.0.1:")),
            "seeder never saw the {want} leecher: {lines:?}"
        );
    }
    // The tracker saw both: two announcing peers (the leecher may already
    // have said stopped), and one completion.
    let st = t.stats();
    let kind = if http {
        "http_announce"
    } else {
        "udp_announce"
    };
    assert!(st["requests"][kind].as_u64() >= Some(2), "{st}");
    let ih = ih_of(&torrent, &py);
    let scrape = || t.get(&format!("/scrape?info_hash={}", pct(&ih))).1;
    match leecher {
        Leecher::Libtorrent | Leecher::Ours => {
            // libtorrent sends event=completed when its download finishes;
            // ours too, even when it leaves at once (--no-seed), before
            // stopped.
            let body = poll(15, "completion counted by the tracker", || {
                let body = scrape();
                contains(&body, b"10:downloadedi1e").then_some(body)
            });
            assert!(
                contains(&body, b"8:completei1e") || contains(&body, b"8:completei2e"),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
        Leecher::Aria2 => {
            // aria2 with --seed-time=0 leaves at once: it announces started
            // then stopped (no completed), so the tracker saw it come and go:
            // three announces in all, the seeder still listed.
            poll(15, "aria2's announces", || {
                (t.stats()["requests"][kind].as_u64() >= Some(3)).then_some(())
            });
            let body = scrape();
            assert!(
                contains(&body, b"8:completei1e"),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    eprintln!("tracker stats: {}", t.stats());
}

/// The torrent's info-hash, from libtorrent (a second opinion, not ours).
fn ih_of(torrent: &Path, py: &Path) -> Vec<u8> {
    let v = ourtorrent_tests::lt_info(py, torrent);
    let hex = v["info_hash"].as_str().unwrap();
    (0..20)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn our_client_leecher_libtorrent_seeder_udp_tracker() {
    swarm(Leecher::Ours, false);
}

#[test]
fn our_client_leecher_libtorrent_seeder_http_tracker() {
    swarm(Leecher::Ours, true);
}

#[test]
fn aria2_leecher_libtorrent_seeder_udp_tracker() {
    swarm(Leecher::Aria2, false);
}

#[test]
fn aria2_leecher_libtorrent_seeder_http_tracker() {
    swarm(Leecher::Aria2, true);
}

#[test]
fn libtorrent_leecher_libtorrent_seeder_udp_tracker() {
    swarm(Leecher::Libtorrent, false);
}

#[test]
fn libtorrent_leecher_libtorrent_seeder_http_tracker() {
    swarm(Leecher::Libtorrent, true);
}

/// Our seeder and an aria2c leecher that finds it through our HTTP tracker.
/// aria2 sends a bitfield in the middle of the session (in place of many
/// haves); a seeder that calls that a protocol error drops it and the
/// download stalls. Must finish byte-identical.
#[test]
fn aria2_leecher_from_our_seeder_http_tracker() {
    let Some(aria2) = require_tool("aria2c") else {
        return;
    };
    if require_tool("mktorrent").is_none() {
        return;
    }
    let t = Tracker::start(&["--no-db", "--interval", "60"]);
    let dir = tempfile::tempdir().unwrap();
    let (torrent, seed_dir) = make_torrent(dir.path(), &format!("http://{}/announce", t.http));
    let seeder = Proc::spawn(
        "ours-seed",
        Command::new(BIN)
            .args(["client", "seed", "--no-dht"])
            .arg(&torrent)
            .arg("--data")
            .arg(seed_dir.join("payload.bin"))
            .args([
                "--listen",
                &format!("127.0.0.1:{}", free_tcp_port()),
                "--quiet",
            ]),
    );
    seeder.wait_for("seeding:", Duration::from_secs(30));
    poll(15, "the seeder's announce", || {
        (t.stats()["requests"]["http_announce"].as_u64() >= Some(1)).then_some(())
    });
    let leech_dir = dir.path().join("leech");
    std::fs::create_dir_all(&leech_dir).unwrap();
    let mut leech = Proc::spawn(
        "aria2c",
        Command::new(aria2)
            .arg(format!("--dir={}", leech_dir.display()))
            .args([
                "--interface=127.0.0.1",
                "--bt-enable-lpd=false",
                "--enable-peer-exchange=false",
                "--disable-ipv6=true",
                "--seed-time=0",
                "--enable-dht=false",
                "--summary-interval=0",
                "--console-log-level=warn",
                "--bt-stop-timeout=30",
            ])
            .arg(format!("--listen-port={}", free_tcp_port()))
            .arg(&torrent),
    );
    let status = leech.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "aria2c failed: {status:?}");
    assert_eq!(
        std::fs::read(leech_dir.join("payload.bin")).unwrap(),
        std::fs::read(seed_dir.join("payload.bin")).unwrap(),
        "downloaded data differs"
    );
}

/// Two libtorrent sessions in one process, on one torrent, announcing to
/// `udp://` `tracker`: libtorrent shares one BEP 15 connection id across
/// every session of a process, so the second session sends the first
/// one's id from its own port. Prints `S<i> peers=<n>` per tracker reply,
/// `S<i> error <msg>` per tracker error; exits 0 once both sessions got a
/// reply listing a peer, 1 after 40 s.
const LT_TWO_SESSIONS: &str = r#"
import os, sys, time
import libtorrent as lt
tracker, d = sys.argv[1], sys.argv[2]
data = os.path.join(d, "x.bin")
with open(data, "wb") as f:
    f.write(os.urandom(64 * 1024))
fs = lt.file_storage()
lt.add_files(fs, data)
ct = lt.create_torrent(fs, 16 * 1024, flags=lt.create_torrent.v1_only)
ct.add_tracker(tracker)
lt.set_piece_hashes(ct, d)
ti = lt.torrent_info(lt.bencode(ct.generate()))
sessions, handles = [], []
for i in range(2):
    s = lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "outgoing_interfaces": "127.0.0.1",
        "enable_dht": False, "enable_lsd": False,
        "enable_upnp": False, "enable_natpmp": False,
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.tracker_notification,
    })
    p = lt.add_torrent_params()
    p.ti = ti
    p.save_path = d if i == 0 else os.path.join(d, "leech")
    if i == 0:
        p.flags |= lt.torrent_flags.seed_mode
    sessions.append(s)
    handles.append(s.add_torrent(p))
got = [False, False]
t0 = time.monotonic()
last = 0.0
while not all(got) and time.monotonic() - t0 < 40:
    time.sleep(0.05)
    for i, s in enumerate(sessions):
        for a in s.pop_alerts():
            if isinstance(a, lt.tracker_reply_alert):
                print("S%d peers=%d" % (i, a.num_peers), flush=True)
                got[i] = got[i] or a.num_peers > 0
            elif isinstance(a, lt.tracker_error_alert):
                print("S%d error %s" % (i, a.message()), flush=True)
    now = time.monotonic()
    if now - last > 1.0:
        last = now
        for i, h in enumerate(handles):
            if not got[i]:
                h.force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)
print("BOTH" if all(got) else "TIMEOUT", flush=True)
sys.exit(0 if all(got) else 1)
"#;

#[test]
fn libtorrent_two_sessions_in_one_process_both_get_peers_udp_tracker() {
    let Some(py) = require_libtorrent() else {
        return;
    };
    let t = Tracker::start(&["--no-db", "--interval", "60"]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("udp://{}/announce", t.udp);
    let mut p = Proc::spawn(
        "lt-two-sessions",
        Command::new(py)
            .args(["-c", LT_TWO_SESSIONS, &url])
            .arg(dir.path()),
    );
    let status = p.wait_exit(Duration::from_secs(60));
    let lines = p.drain();
    assert!(
        status.success(),
        "both sessions must get peers from our UDP tracker: {lines:?}\n{}",
        t.stats()
    );
    assert!(lines.iter().any(|l| l == "BOTH"), "{lines:?}");
    let st = t.stats();
    assert_eq!(st["peers"], 2, "{st}");
    assert!(st["errors"]["udp_bad_connection_id"].is_null(), "{st}");
}

/// One client process seeding two torrents announces both to our UDP
/// tracker over one BEP 15 connection: the session's UDP tracker client
/// reuses its connection id across torrents (one connect, two announces).
#[test]
fn our_session_shares_one_udp_connection_id_across_torrents() {
    let t = Tracker::start(&["--no-db", "--interval", "60"]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("udp://{}/announce", t.udp);
    let mut args: Vec<std::ffi::OsString> = vec!["client".into(), "seed".into(), "--no-dht".into()];
    let mut data = Vec::new();
    for seed in [1u64, 2] {
        let f = dir.path().join(format!("f{seed}.bin"));
        write_data(&f, 200_000, seed);
        let tor = dir.path().join(format!("f{seed}.torrent"));
        run(Command::new(BIN)
            .arg("create")
            .arg(&f)
            .args(["--tracker", &url, "-o"])
            .arg(&tor));
        args.push(tor.into());
        data.push(f);
    }
    for f in &data {
        args.push("--data".into());
        args.push(f.into());
    }
    let _seeder = Proc::spawn(
        "ours-seed",
        Command::new(BIN)
            .args(&args)
            .args(["--listen", "127.0.0.1:0", "--quiet"]),
    );
    poll(20, "two announces", || {
        (t.stats()["requests"]["udp_announce"].as_u64() >= Some(2)).then_some(())
    });
    let st = t.stats();
    assert_eq!(st["requests"]["udp_connect"].as_u64(), Some(1), "{st}");
}

/// SIGTERM (what `kill`, systemd and docker send) stops our client as
/// Ctrl-C does: its `stopped` announce reaches the tracker, which forgets
/// the peer, and a seeder that was complete exits 0.
#[test]
fn our_client_announces_stopped_on_sigterm() {
    let t = Tracker::start(&["--no-db", "--interval", "60"]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.bin");
    write_data(&f, 300_000, 7);
    let tor = dir.path().join("x.torrent");
    run(Command::new(env!("CARGO_BIN_EXE_shell-std"))
        .arg("create")
        .arg(&f)
        .args(["--tracker", &format!("udp://{}/announce", t.udp), "-o"])
        .arg(&tor));
    let mut seeder = Proc::spawn(
        "ours-seed",
        Command::new(env!("CARGO_BIN_EXE_shell-std"))
            .args(["client", "seed", "--no-dht"])
            .arg(&tor)
            .arg("--data")
            .arg(&f)
            .args(["--listen", "127.0.0.1:0", "--quiet"]),
    );
    poll(20, "the seeder in the swarm", || {
        (t.stats()["peers"].as_u64() == Some(1)).then_some(())
    });
    run(Command::new("kill").args(["-TERM", &seeder.child.id().to_string()]));
    let status = seeder.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    poll(10, "the stopped announce", || {
        (t.stats()["peers"].as_u64() == Some(0)).then_some(())
    });
}
