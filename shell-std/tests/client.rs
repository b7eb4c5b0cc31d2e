//! End-to-end tests of `shell-std client` and `shell-std create` against
//! real third-party peers on 127.0.0.1 (python3-libtorrent, aria2c) and a
//! scripted bad peer. Test names carry the third party's name, so
//! `cargo test libtorrent` / `cargo test aria2` run exactly those.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ourtorrent_tests::fixtures::{
    assert_same_tree, lt_and_tempdir, lt_leech_from, tree_torrent, OurSeeder,
};
use ourtorrent_tests::libtorrent::{lt_info, lt_seeder, lt_seeder_with, lt_swarm};
use ourtorrent_tests::{
    free_tcp_port, make_tree, repo_root, require_libtorrent, require_tool, run, run_bounded,
    write_data, Proc,
};

const BIN: &str = env!("CARGO_BIN_EXE_shell-std");

/// Makes `dir/tree` (a small multi-file tree plus a larger file) and a
/// torrent of it with `piece` bytes per piece; returns (torrent, tree).
fn fixture(dir: &Path, piece: u32) -> (PathBuf, PathBuf) {
    let tracker = Some("http://127.0.0.1:9/announce");
    tree_torrent(BIN, dir, piece, 1_500_000, tracker)
}

fn download(torrent: &Path, out: &Path, peers: &[u16], extra: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["client", "download", "--no-dht"])
        .arg(torrent)
        .arg("--out")
        .arg(out)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-trackers",
            "--no-seed",
            "--quiet",
        ])
        .args(extra);
    for p in peers {
        cmd.arg("--peer").arg(format!("127.0.0.1:{p}"));
    }
    run_bounded(&mut cmd, Duration::from_secs(60))
}

/// "NAME: 12 ..." → 12.
fn number_after(out: &str, prefix: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}"));
    line[prefix.len()..]
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("bad line {line:?}"))
}

#[test]
fn libtorrent_seeder_to_our_client() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (torrent, tree) = fixture(d.path(), 32 << 10);
    let port = free_tcp_port();
    let _seed = lt_seeder(&py, &torrent, &d.path().join("src"), port);
    let out = d.path().join("out");
    let (ok, so, se) = download(&torrent, &out, &[port], &[]);
    assert!(ok, "download failed:\n{so}\n{se}");
    assert!(so.contains("resumed: 0 of"), "{so}");
    assert_same_tree(&tree, &out.join("tree"));
}

#[test]
fn libtorrent_leecher_from_our_seeder() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (torrent, tree) = fixture(d.path(), 32 << 10);
    let port = free_tcp_port();
    let seed = OurSeeder::new(BIN)
        .torrent(&torrent, &tree)
        .port(port)
        .opts(["--no-dht", "--no-trackers", "--quiet"])
        .spawn();
    let l = seed.wait_for("resumed:", Duration::from_secs(20));
    assert!(l.starts_with("resumed: 51 of 51"), "{l}");
    seed.wait_for("seeding:", Duration::from_secs(20));
    let save = d.path().join("lt");
    let opts = ["--max-seconds", "45"];
    let (ok, so, se) = lt_leech_from(&py, &torrent, &save, port, &opts, Duration::from_secs(60));
    assert!(
        ok && so.contains("DONE"),
        "libtorrent leech failed:\n{so}\n{se}"
    );
    assert_same_tree(&tree, &save.join("tree"));
}

/// Our seeder with one regular upload slot (plus the optimistic one) and
/// three rate-limited libtorrent leechers that only know the seeder: all
/// three complete and see our unchokes, and the seeder's choker log shows
/// it choking interested leechers while they download (tit-for-tat and the
/// rotating optimistic slot; a seeder that unchokes every interested peer
/// never does). The seeder's log is the witness because a choke reaches a
/// rate-limited leecher only after the blocks already queued before it, so
/// a leecher may not see a short choke at all.
#[test]
fn libtorrent_leechers_share_our_seeders_upload_slots() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (torrent, tree) = fixture(d.path(), 32 << 10);
    let port = free_tcp_port();
    let log = d.path().join("seed.log");
    let seed = OurSeeder::new(BIN)
        .env("RUST_LOG", "warn,ourtorrent::choke=debug")
        .stderr(std::fs::File::create(&log).unwrap())
        .torrent(&torrent, &tree)
        .port(port)
        .opts([
            "--no-dht",
            "--no-trackers",
            "--quiet",
            "--upload-slots",
            "1",
            // Rechoke every second, rotate the optimistic slot every 3 s.
            "--rechoke-ms",
            "1000",
        ])
        .start();
    let leechers: Vec<_> = (0..3)
        .map(|i| {
            let save = d.path().join(format!("lt{i}"));
            std::fs::create_dir_all(&save).unwrap();
            let mut cmd = lt_swarm(&py, "leech", &torrent, &save, free_tcp_port());
            cmd.args([
                "--connect",
                &format!("127.0.0.1:{port}"),
                "--no-trackers",
                // ~1.6 MB each at 150 kB/s: about 11 s unchoked.
                "--download-limit",
                "150000",
                "--report-choke",
                "--max-seconds",
                "100",
            ]);
            (
                save,
                std::thread::spawn(move || run_bounded(&mut cmd, Duration::from_secs(120))),
            )
        })
        .collect();
    for (save, h) in leechers {
        let (ok, so, se) = h.join().unwrap();
        assert!(
            ok && so.contains("DONE"),
            "libtorrent leech failed:\n{so}\n{se}"
        );
        assert_same_tree(&tree, &save.join("tree"));
        assert!(so.contains("UNCHOKED "), "never unchoked:\n{so}");
    }
    drop(seed);
    let log = std::fs::read_to_string(&log).unwrap();
    let decisions: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("ourtorrent::choke: ").map(|x| x.1))
        .collect();
    // Interested peers choked: rotations of the optimistic slot and
    // tit-for-tat swaps, several over the ~15 s the three need.
    let choked = decisions
        .iter()
        .filter(|d| d.starts_with("choke ") && d.contains("(interested true"))
        .count();
    assert!(choked >= 2, "{choked} chokes of interested peers:\n{log}");
    let optimistic = decisions
        .iter()
        .filter(|d| d.starts_with("unchoke ") && d.ends_with(", optimistic)"))
        .count();
    assert!(optimistic >= 2, "{optimistic} optimistic unchokes:\n{log}");
}

#[test]
fn aria2_seeder_to_our_client() {
    let Some(aria2) = require_tool("aria2c") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let (torrent, tree) = fixture(d.path(), 32 << 10);
    let port = free_tcp_port();
    let _seed = Proc::spawn(
        "aria2c",
        Command::new(aria2)
            .arg(format!("--dir={}", d.path().join("src").display()))
            .args([
                "--interface=127.0.0.1",
                &format!("--listen-port={port}"),
                "--bt-enable-lpd=false",
                "--enable-peer-exchange=false",
                "--disable-ipv6=true",
                "--enable-dht=false",
                "--bt-seed-unverified=true",
                "--seed-ratio=0.0",
                "--console-log-level=warn",
                "--summary-interval=0",
            ])
            .arg(&torrent),
    );
    // aria2 listens once it has loaded the torrent.
    let end = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "aria2c did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = d.path().join("out");
    let (ok, so, se) = download(&torrent, &out, &[port], &[]);
    assert!(ok, "download from aria2 failed:\n{so}\n{se}");
    assert_same_tree(&tree, &out.join("tree"));
}

#[test]
fn libtorrent_interrupted_download_resumes_only_missing_pieces() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (torrent, tree) = fixture(d.path(), 16 << 10);
    let port = free_tcp_port();
    // A slow seeder (~1.6 MB at 500 kB/s): the first run stops after 20 of
    // 101 pieces, long before the rest could arrive.
    let src = d.path().join("src");
    let _seed = lt_seeder_with(&py, &torrent, &src, port, &["--upload-limit", "500000"]);
    let out = d.path().join("out");
    let (ok, so, se) = download(&torrent, &out, &[port], &["--max-pieces", "20"]);
    assert!(ok && so.contains("stopped after"), "{so}\n{se}");
    let (ok, so, se) = download(&torrent, &out, &[port], &[]);
    assert!(ok, "resume failed:\n{so}\n{se}");
    let on_disk = number_after(&so, "resumed:");
    let total: u64 = so
        .lines()
        .find(|l| l.starts_with("resumed:"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|w| w.parse().ok())
        .expect("total pieces");
    let fetched = number_after(&so, "downloaded:");
    assert!(on_disk >= 20, "{so}");
    assert_eq!(
        on_disk + fetched,
        total,
        "pieces on disk were fetched again:\n{so}"
    );
    assert_same_tree(&tree, &out.join("tree"));
}

fn bad_peer_case(mode: &str) {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (torrent, tree) = fixture(d.path(), 32 << 10);
    let info = lt_info(&py, &torrent);
    let bad_port = free_tcp_port();
    let bad = Proc::spawn(
        "bad-peer",
        Command::new("python3")
            .arg(repo_root().join("tests/py/bad_peer.py"))
            .arg(mode)
            .arg(bad_port.to_string())
            .arg(info["info_hash"].as_str().unwrap())
            .arg(info["num_pieces"].to_string()),
    );
    bad.wait_for("READY", Duration::from_secs(10));
    let port = free_tcp_port();
    let _seed = lt_seeder(&py, &torrent, &d.path().join("src"), port);
    let out = d.path().join("out");
    let (ok, so, se) = download(&torrent, &out, &[bad_port, port], &[]);
    assert!(ok, "download failed:\n{so}\n{se}");
    let banned = so
        .lines()
        .find(|l| l.starts_with("integrity:"))
        .and_then(|l| l.split(", ").find(|p| p.ends_with("peers banned")))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse::<u32>().ok())
        .expect("summary");
    assert!(banned >= 1, "the bad peer was not banned:\n{so}\n{se}");
    assert!(se.contains("127.0.0.1:") && se.contains("banned"), "{se}");
    assert_same_tree(&tree, &out.join("tree"));
}

/// A seeder that answers each batch of requests last-first: blocks of a
/// piece arrive out of order, so the picker cannot hash them on arrival and
/// the client reads the piece back and hashes it off the lock (the debug
/// log line is the witness that this path ran); the file is identical.
#[test]
fn out_of_order_blocks_are_verified_by_reading_the_piece_back() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("src/blob.bin");
    write_data(&data, 1_000_000, 5);
    let torrent = d.path().join("t.torrent");
    let piece = 64u32 << 10;
    run(Command::new(BIN)
        .args(["create"])
        .arg(&data)
        .args([
            "--tracker",
            "http://127.0.0.1:9/announce",
            "--piece-length",
            &piece.to_string(),
            "-o",
        ])
        .arg(&torrent));
    let info = run(Command::new(BIN).arg("info").arg(&torrent));
    let ih = info
        .lines()
        .find_map(|l| l.split_whitespace().find(|w| w.len() == 40))
        .expect("info-hash in `info` output")
        .to_string();
    let pieces = 1_000_000u32.div_ceil(piece);
    let port = free_tcp_port();
    let peer = Proc::spawn(
        "bad-peer",
        Command::new("python3")
            .arg(repo_root().join("tests/py/bad_peer.py"))
            .args(["reverse", &port.to_string(), &ih, &pieces.to_string()])
            .arg(&data)
            .arg(piece.to_string()),
    );
    peer.wait_for("READY", Duration::from_secs(10));
    let out = d.path().join("out");
    let mut cmd = Command::new(BIN);
    cmd.env("RUST_LOG", "warn,shell_std::client::swarm=debug")
        .args(["client", "download", "--no-dht"])
        .arg(&torrent)
        .arg("--out")
        .arg(&out)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-trackers",
            "--no-seed",
            "--quiet",
            "--peer",
            &format!("127.0.0.1:{port}"),
        ]);
    let (ok, so, se) = run_bounded(&mut cmd, Duration::from_secs(60));
    assert!(ok, "download failed:\n{so}\n{se}");
    assert!(so.contains("0 hash failures"), "{so}");
    assert!(se.contains("blocks came out of order"), "{se}");
    assert!(std::fs::read(out.join("blob.bin")).unwrap() == std::fs::read(&data).unwrap());
}

#[test]
fn libtorrent_with_bad_peer_sending_corrupt_pieces() {
    bad_peer_case("corrupt");
}

#[test]
fn libtorrent_with_bad_peer_sending_oversized_message() {
    bad_peer_case("oversized");
}

#[test]
fn libtorrent_with_bad_peer_sending_wrong_bitfield() {
    bad_peer_case("bitfield");
}

/// A torrent whose file path tries to leave the output folder.
fn evil_torrent(path: &[&[u8]], name: &[u8]) -> Vec<u8> {
    let mut b = b"d4:infod5:filesld6:lengthi5e4:pathl".to_vec();
    for c in path {
        b.extend_from_slice(format!("{}:", c.len()).as_bytes());
        b.extend_from_slice(c);
    }
    b.extend_from_slice(b"eee4:name");
    b.extend_from_slice(format!("{}:", name.len()).as_bytes());
    b.extend_from_slice(name);
    b.extend_from_slice(b"12:piece lengthi16384e6:pieces20:");
    b.extend_from_slice(&[7u8; 20]);
    b.extend_from_slice(b"ee");
    b
}

/// With `--strict-paths`, an unsafe path is refused before anything is
/// written (by default it is renamed: tests/realworld.rs).
#[test]
fn traversal_and_absolute_paths_are_refused_with_strict_paths() {
    let d = tempfile::tempdir().unwrap();
    for (i, (path, name)) in [
        (&[&b".."[..], b"evil"][..], &b"t"[..]),
        (&[&b"/etc"[..], b"passwd"][..], &b"t"[..]),
        (&[&b"x"[..]][..], &b".."[..]),
        (&[&b"x"[..]][..], &b"/tmp"[..]),
    ]
    .into_iter()
    .enumerate()
    {
        let t = d.path().join(format!("evil{i}.torrent"));
        std::fs::write(&t, evil_torrent(path, name)).unwrap();
        let out = d.path().join(format!("out{i}"));
        std::fs::create_dir(&out).unwrap();
        let (ok, so, se) = run_bounded(
            Command::new(BIN)
                .args(["client", "download", "--no-dht"])
                .arg(&t)
                .arg("--out")
                .arg(&out)
                .args(["--listen", "127.0.0.1:0", "--quiet", "--no-seed"])
                .arg("--strict-paths"),
            Duration::from_secs(20),
        );
        assert!(!ok, "accepted {path:?}:\n{so}");
        assert_eq!(se.trim().lines().count(), 1, "not one line: {se}");
        assert!(se.starts_with("error:") && se.contains("refused"), "{se}");
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            0,
            "wrote something"
        );
    }
}

#[test]
fn symlinked_folder_on_disk_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (torrent, _) = fixture(d.path(), 32 << 10);
    let out = d.path().join("out");
    let elsewhere = d.path().join("elsewhere");
    std::fs::create_dir_all(out.join("tree")).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("tree/sub")).unwrap();
    let (ok, _, se) = run_bounded(
        Command::new(BIN)
            .args(["client", "download", "--no-dht"])
            .arg(&torrent)
            .arg("--out")
            .arg(&out)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--quiet",
                "--no-seed",
                "--no-trackers",
                // A source, so that the path check is what refuses.
                "--peer",
                "127.0.0.1:9",
            ]),
        Duration::from_secs(20),
    );
    assert!(!ok && se.contains("symlink"), "{se}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn create_then_info_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let (torrent, _) = fixture(d.path(), 32 << 10);
    let out = run(Command::new(BIN).arg("info").arg(&torrent));
    for want in [
        "tree",
        "sub/deeper/c.txt",
        "http://127.0.0.1:9/announce",
        "32.00 KiB",
    ] {
        assert!(out.contains(want), "{want} missing from:\n{out}");
    }
    // Deterministic with --no-date: same bytes twice.
    let a = d.path().join("a.torrent");
    let b = d.path().join("b.torrent");
    for t in [&a, &b] {
        run(Command::new(BIN)
            .arg("create")
            .arg(d.path().join("src/tree"))
            .args(["--no-date", "-o"])
            .arg(t));
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn libtorrent_agrees_with_created_info_hash() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let tree = d.path().join("src/tree");
    make_tree(&tree);
    for (args, single) in [(vec!["--private"], false), (vec![], true)] {
        let src = if single {
            tree.join("a.bin")
        } else {
            tree.clone()
        };
        let t = d.path().join("x.torrent");
        let made = run(Command::new(BIN)
            .arg("create")
            .arg(&src)
            .args([
                "-t",
                "udp://127.0.0.1:9/announce",
                "-t",
                "http://127.0.0.1:9/announce",
                "--force", // the second round writes over the first
            ])
            .args(&args)
            .arg("-o")
            .arg(&t));
        let ours = made.trim().rsplit(' ').next().unwrap().to_string();
        let lt = lt_info(&py, &t);
        assert_eq!(lt["info_hash"].as_str().unwrap(), ours);
        assert_eq!(lt["private"].as_bool().unwrap(), !single);
        assert_eq!(lt["trackers"].as_array().unwrap().len(), 2);
    }
}

/// Runs `shell-std ARGS` with `dir` replaced by an empty tmpfs of `size`
/// (a private mount namespace: `unshare -m`, root in CI), bounded.
fn in_small_fs(dir: &Path, size: &str, args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    std::fs::create_dir_all(dir).unwrap();
    let unshare = require_tool("unshare").expect("util-linux unshare");
    run_bounded(
        Command::new(unshare)
            .args(["-m", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs -o size={size} none \"$0\" && exec \"$@\""
            ))
            .arg(dir)
            .arg(BIN)
            .args(args),
        Duration::from_secs(60),
    )
}

/// A download into a folder whose file system cannot hold it is refused
/// before the first byte, with the sizes in the message.
#[test]
fn download_that_cannot_fit_is_refused_before_the_first_byte() {
    let d = tempfile::tempdir().unwrap();
    let (torrent, _tree) = fixture(d.path(), 32 << 10);
    let out = d.path().join("small");
    let (ok, so, se) = in_small_fs(
        &out,
        "512k",
        &[
            "client".as_ref(),
            "download".as_ref(),
            "--no-dht".as_ref(),
            torrent.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--no-trackers".as_ref(),
            "--quiet".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            // A source, so that the space check is what refuses.
            "--peer".as_ref(),
            "127.0.0.1:9".as_ref(),
        ],
    );
    assert!(!ok, "a download that cannot fit succeeded:\n{so}\n{se}");
    assert!(
        se.contains("not enough free space") && se.contains("more bytes"),
        "{se}"
    );
    assert!(!so.contains("resumed:"), "files were opened first:\n{so}");
}

/// A disk that fills during the download (the free-space check skipped)
/// stops the torrent with one line naming the file and the cause, and a
/// non-zero exit, instead of running on with no progress.
#[test]
fn libtorrent_seeder_download_onto_a_disk_that_fills_fails_naming_the_file() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (torrent, _tree) = fixture(d.path(), 32 << 10);
    let port = free_tcp_port();
    let _seed = lt_seeder(&py, &torrent, &d.path().join("src"), port);
    let out = d.path().join("small");
    let peer = format!("127.0.0.1:{port}");
    let (ok, so, se) = in_small_fs(
        &out,
        "512k",
        &[
            "client".as_ref(),
            "download".as_ref(),
            "--no-dht".as_ref(),
            torrent.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--no-trackers".as_ref(),
            "--no-seed".as_ref(),
            "--quiet".as_ref(),
            "--skip-space-check".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--peer".as_ref(),
            peer.as_ref(),
        ],
    );
    assert!(!ok, "a download onto a full disk succeeded:\n{so}\n{se}");
    let line = se
        .lines()
        .find(|l| l.starts_with("error: storage failed: write "))
        .unwrap_or_else(|| panic!("no storage error line:\n{se}"));
    assert!(
        line.contains(&out.join("tree").display().to_string())
            && line.contains("No space left on device"),
        "{line}"
    );
}

/// A second torrent: one file of its own bytes (seed `seed`), 32 KiB
/// pieces; returns (torrent, its data file).
fn single_file_fixture(dir: &Path, seed: u64) -> (PathBuf, PathBuf) {
    let data = dir.join(format!("src/one-{seed}.bin"));
    write_data(&data, 900_000, seed);
    let torrent = dir.join(format!("one-{seed}.torrent"));
    run(Command::new(BIN)
        .args(["create"])
        .arg(&data)
        .args([
            "--tracker",
            "http://127.0.0.1:9/announce",
            "--piece-length",
            "32768",
            "-o",
        ])
        .arg(&torrent));
    (torrent, data)
}

fn lt_leech(py: &Path, torrent: &Path, save: &Path, connect: u16) -> (bool, String, String) {
    let opts = ["--no-trackers", "--max-seconds", "45"];
    lt_leech_from(py, torrent, save, connect, &opts, Duration::from_secs(60))
}

/// Two torrents in one `client download`: each libtorrent seeder seeds one
/// of them; both `--peer`s are tried for both torrents (a peer that answers
/// with the other info-hash is simply not that torrent's). Both finish
/// byte-identical in one process.
#[test]
fn libtorrent_seeders_two_torrents_downloaded_at_once_in_one_process() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (t1, tree) = fixture(d.path(), 32 << 10);
    let (t2, file) = single_file_fixture(d.path(), 31);
    let (p1, p2) = (free_tcp_port(), free_tcp_port());
    let _s1 = lt_seeder(&py, &t1, &d.path().join("src"), p1);
    let _s2 = lt_seeder(&py, &t2, &d.path().join("src"), p2);
    let out = d.path().join("out");
    let mut cmd = Command::new(BIN);
    cmd.args(["client", "download", "--no-dht"])
        .arg(&t1)
        .arg(&t2)
        .arg("--out")
        .arg(&out)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-trackers",
            "--no-seed",
            "--quiet",
        ])
        .args(["--peer", &format!("127.0.0.1:{p1}")])
        .args(["--peer", &format!("127.0.0.1:{p2}")]);
    let (ok, so, se) = run_bounded(&mut cmd, Duration::from_secs(60));
    assert!(ok, "download failed:\n{so}\n{se}");
    assert_eq!(so.matches("complete: ").count(), 2, "{so}");
    assert_same_tree(&tree, &out.join("tree"));
    assert!(
        std::fs::read(&file).unwrap() == std::fs::read(out.join("one-31.bin")).unwrap(),
        "second torrent differs"
    );
}

/// One seeder process, two torrents, one listening port: two libtorrent
/// leechers, one per torrent, connect to that port; the session reads each
/// handshake and routes it by info-hash before answering. Both finish.
#[test]
fn libtorrent_leechers_of_two_torrents_through_one_listener() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (t1, tree) = fixture(d.path(), 32 << 10);
    let (t2, file) = single_file_fixture(d.path(), 32);
    let port = free_tcp_port();
    // One `seeding:` line a torrent.
    let _seed = OurSeeder::new(BIN)
        .torrent(&t1, &tree)
        .torrent(&t2, &file)
        .port(port)
        .opts(["--no-dht", "--no-trackers", "--quiet"])
        .start();
    let (a, b) = (d.path().join("lt1"), d.path().join("lt2"));
    let (r1, r2) = std::thread::scope(|s| {
        let h1 = s.spawn(|| lt_leech(&py, &t1, &a, port));
        let h2 = s.spawn(|| lt_leech(&py, &t2, &b, port));
        (h1.join().unwrap(), h2.join().unwrap())
    });
    assert!(
        r1.0 && r1.1.contains("DONE"),
        "leecher 1:\n{}\n{}",
        r1.1,
        r1.2
    );
    assert!(
        r2.0 && r2.1.contains("DONE"),
        "leecher 2:\n{}\n{}",
        r2.1,
        r2.2
    );
    assert_same_tree(&tree, &a.join("tree"));
    assert!(std::fs::read(&file).unwrap() == std::fs::read(b.join("one-32.bin")).unwrap());
}

/// A `--listen` port given explicitly that is taken is an error naming it
/// (not a silent fallback to another port).
#[test]
fn busy_explicit_listen_port_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let (t, file) = single_file_fixture(d.path(), 33);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (ok, so, se) = run_bounded(
        &mut OurSeeder::new(BIN)
            .torrent(&t, &file)
            .port(port)
            .opts(["--no-dht", "--no-trackers", "--quiet"])
            .command(),
        Duration::from_secs(30),
    );
    assert!(!ok, "seeded on a busy port:\n{so}");
    assert!(se.contains(&format!("127.0.0.1:{port}")), "{se}");
}

/// 2,000 connections to our seeder's port that send nothing (or half a
/// handshake) and stay open: a libtorrent leecher that comes next still
/// downloads (handshakes are read outside the peer slots, under a
/// deadline, and the oldest silent connection is dropped when the table
/// is full).
#[test]
fn libtorrent_leecher_gets_through_a_flood_of_silent_connections() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (t, file) = single_file_fixture(d.path(), 34);
    let port = free_tcp_port();
    let _seed = OurSeeder::new(BIN)
        .torrent(&t, &file)
        .port(port)
        .opts(["--no-dht", "--no-trackers", "--quiet"])
        .start();
    let mut flood = Vec::new();
    let open = |i: usize| {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        if i % 2 == 0 {
            use std::io::Write;
            let _ = c.write_all(b"\x13BitTorrent protocol");
        }
        Some(c)
    };
    for i in 0..2000 {
        flood.extend(open(i));
    }
    assert!(
        flood.len() > 1500,
        "only {} connections opened",
        flood.len()
    );
    // The flood goes on while the leecher runs (bounded: 4,000 more at most,
    // stopped when the leecher is done).
    let stop = std::sync::atomic::AtomicBool::new(false);
    let t0 = Instant::now();
    let (ok, so, se) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut more = Vec::new();
            for i in 0..4000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                more.extend(open(i));
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let r = lt_leech(&py, &t, &d.path().join("lt"), port);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    });
    assert!(
        ok && so.contains("DONE"),
        "libtorrent leech failed:\n{so}\n{se}"
    );
    eprintln!("leecher done in {:?} during the flood", t0.elapsed());
    assert!(
        std::fs::read(&file).unwrap() == std::fs::read(d.path().join("lt/one-34.bin")).unwrap()
    );
    drop(flood);
}

/// Ctrl-C (SIGINT) before the download is complete: exit 130 and one line
/// saying how far it got (not exit 0 as if it had finished).
#[test]
fn libtorrent_seeder_interrupted_download_exits_130_saying_how_far_it_got() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (torrent, _tree) = fixture(d.path(), 16 << 10);
    let port = free_tcp_port();
    let src = d.path().join("src");
    let _seed = lt_seeder_with(&py, &torrent, &src, port, &["--upload-limit", "200000"]);
    let mut child = Command::new(BIN)
        .args(["client", "download", "--no-dht"])
        .arg(&torrent)
        .arg("--out")
        .arg(d.path().join("out"))
        .args(["--listen", "127.0.0.1:0", "--no-trackers", "--quiet"])
        .args(["--peer", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("resumed:") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "no resumed line");
    }
    run(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "the client did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    let l = err
        .lines()
        .find(|l| l.starts_with("interrupted: "))
        .unwrap_or_else(|| panic!("no interrupted line:\n{err}"));
    assert!(
        l.ends_with("pieces verified; run the same command to resume") && l.contains("/101 "),
        "{l}"
    );
}

/// A download with no source that could ever appear (no tracker to ask, no
/// `--peer`, no DHT) says so and exits non-zero instead of waiting forever.
#[test]
fn download_with_nothing_to_connect_to_says_so_and_exits() {
    let d = tempfile::tempdir().unwrap();
    let (t, _file) = single_file_fixture(d.path(), 35);
    let (ok, so, se) = run_bounded(
        Command::new(BIN)
            .args(["client", "download", "--no-dht"])
            .arg(&t)
            .arg("--out")
            .arg(d.path().join("out"))
            .args(["--no-trackers", "--quiet", "--listen", "127.0.0.1:0"]),
        Duration::from_secs(20),
    );
    assert!(!ok, "{so}");
    assert!(se.contains("nothing to connect to"), "{se}");
    assert!(!d.path().join("out").exists(), "files were created");
}

/// Two downloads that would write one file are refused before a byte is
/// written (they would overwrite each other's pieces).
#[test]
fn two_torrents_with_one_output_path_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut torrents = Vec::new();
    for (k, seed) in [("a", 1), ("b", 2)] {
        let data = d.path().join(k).join("same.bin");
        write_data(&data, 100_000, seed);
        let t = d.path().join(format!("{k}.torrent"));
        run(Command::new(BIN)
            .args(["create", "--tracker", "http://127.0.0.1:9/announce", "-o"])
            .arg(&t)
            .arg(&data));
        torrents.push(t);
    }
    let (ok, so, se) = run_bounded(
        Command::new(BIN)
            .args(["client", "download", "--no-dht", "--quiet"])
            .args(&torrents)
            .arg("--out")
            .arg(d.path().join("out"))
            .args(["--listen", "127.0.0.1:0"]),
        Duration::from_secs(20),
    );
    assert!(!ok, "{so}");
    assert!(se.contains("same path"), "{se}");
    assert!(!d.path().join("out").exists(), "files were created");
}

/// The info-hash of a torrent, from `shell-std info --json`.
fn info_hash(torrent: &Path) -> [u8; 20] {
    let out = run(Command::new(BIN).args(["info", "--json"]).arg(torrent));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let hex = v["info_hash"].as_str().unwrap();
    let mut ih = [0u8; 20];
    for (i, b) in ih.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    ih
}

/// One torrent of a session stops alone: seeding two torrents with
/// `--seed-ratio 1`, the first reaches its ratio (a libtorrent leecher took
/// it all) and stops — the listener no longer answers its info-hash —
/// while the second is still served to a libtorrent leecher.
#[test]
fn libtorrent_leechers_one_torrent_of_a_session_stops_alone() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (t1, f1) = single_file_fixture(d.path(), 36);
    let (t2, f2) = single_file_fixture(d.path(), 37);
    let port = free_tcp_port();
    // One `seeding:` line a torrent.
    let seed = OurSeeder::new(BIN)
        .name("ours-seed")
        .torrent(&t1, &f1)
        .torrent(&t2, &f2)
        .port(port)
        .opts(["--no-dht", "--no-trackers", "--quiet"])
        .opts(["--seed-ratio", "1"])
        .start();
    let (ok, so, se) = lt_leech(&py, &t1, &d.path().join("lt1"), port);
    assert!(ok && so.contains("DONE"), "leecher 1:\n{so}\n{se}");
    // The first torrent reached its ratio and stopped.
    seed.wait_for("uploaded:", Duration::from_secs(20));
    // Its info-hash is no longer routed: the handshake gets no answer.
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut hs = vec![19u8];
    hs.extend_from_slice(b"BitTorrent protocol");
    hs.extend_from_slice(&[0; 8]);
    hs.extend_from_slice(&info_hash(&t1));
    hs.extend_from_slice(b"-XX0000-000000000000");
    c.write_all(&hs).unwrap();
    let mut buf = [0u8; 68];
    assert!(
        matches!(c.read(&mut buf), Ok(0) | Err(_)),
        "a stopped torrent still answered"
    );
    // The second is still served.
    let (ok, so, se) = lt_leech(&py, &t2, &d.path().join("lt2"), port);
    assert!(ok && so.contains("DONE"), "leecher 2:\n{so}\n{se}");
    assert!(std::fs::read(&f2).unwrap() == std::fs::read(d.path().join("lt2/one-37.bin")).unwrap());
}

/// `--check-only` verifies what is on disk, says how much is there, and
/// exits 0 only when every piece is (nothing created or fetched).
#[test]
fn check_only_reports_the_pieces_on_disk() {
    let d = tempfile::tempdir().unwrap();
    let (torrent, tree) = fixture(d.path(), 32 << 10);
    let check = |args: &[&str], data: &Path| {
        run_bounded(
            Command::new(BIN)
                .args(["client", args[0], "--no-dht"])
                .arg(&torrent)
                .arg(if args[0] == "seed" { "--data" } else { "--out" })
                .arg(data)
                .args(&args[1..])
                .args(["--check-only", "--quiet", "--listen", "127.0.0.1:0"]),
            Duration::from_secs(30),
        )
    };
    let (ok, so, se) = check(&["seed"], &tree);
    assert!(ok, "{so}\n{se}");
    assert!(
        so.contains("checked: tree: 51 of 51 pieces verified"),
        "{so}"
    );
    // One byte changed: that piece is missing, exit non-zero.
    let big = tree.join("sub/big.bin");
    let mut bytes = std::fs::read(&big).unwrap();
    bytes[100_000] ^= 1;
    std::fs::write(&big, bytes).unwrap();
    let (ok, so, se) = check(&["seed"], &tree);
    assert!(!ok, "{so}");
    assert!(
        so.contains("checked: tree: 50 of 51 pieces verified"),
        "{so}"
    );
    assert!(se.contains("1 torrent(s) incomplete on disk"), "{se}");
    // A download folder without the data: nothing is created.
    let out = d.path().join("empty");
    let (ok, _, se) = check(&["download", "--no-trackers"], &out);
    assert!(!ok && se.contains("not there: 0 of 51 pieces"), "{se}");
    assert!(!out.exists());
}

/// `--seed-time` ends seeding by itself.
#[test]
fn seed_time_ends_seeding() {
    let d = tempfile::tempdir().unwrap();
    let (t, file) = single_file_fixture(d.path(), 38);
    let (ok, so, se) = run_bounded(
        &mut OurSeeder::new(BIN)
            .torrent(&t, &file)
            .opts(["--no-dht", "--no-trackers", "--quiet"])
            .opts(["--seed-time", "1s"])
            .command(),
        Duration::from_secs(20),
    );
    assert!(ok, "{so}\n{se}");
    assert!(so.contains("uploaded: 0 bytes"), "{so}");
}

/// Columns a printable character would overflow: a minimal terminal that
/// tracks the cursor column through `\r`, `\n` and CSI sequences (the bar
/// redraws with `\r` + erase-line), and counts characters written past
/// `width` (where a terminal would wrap).
fn overflows(screen: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    let (mut col, mut line) = (0usize, String::new());
    let mut it = screen.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ params final-byte.
                if it.peek() == Some(&'[') {
                    it.next();
                    for c in it.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' | '\n' => {
                col = 0;
                line.clear();
            }
            c if c.is_control() => {}
            c => {
                if col >= width {
                    out.push(line.clone());
                }
                col += 1;
                line.push(c);
            }
        }
    }
    out
}

/// The client's screen in an 80-column terminal (a pseudo-terminal from
/// `script`): tables wrap their cells, the bar takes the width left, logs
/// stay out of the way; no line is wider than the terminal.
#[test]
fn libtorrent_seeder_download_screen_fits_80_columns() {
    let Some(py) = require_libtorrent() else {
        return;
    };
    let Some(script) = require_tool("script") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let (torrent, tree) = fixture(d.path(), 16 << 10);
    let port = free_tcp_port();
    let src = d.path().join("src");
    let _seed = lt_seeder_with(&py, &torrent, &src, port, &["--upload-limit", "2000000"]);
    let out = d.path().join("out");
    let cmd = format!(
        "stty cols 80 rows 24; exec {BIN} client download {} --out {} --peer 127.0.0.1:{port} --listen 127.0.0.1:0 --no-seed",
        torrent.display(),
        out.display()
    );
    let (ok, screen, se) = run_bounded(
        Command::new(script).args(["-q", "-e", "-c", &cmd, "/dev/null"]),
        Duration::from_secs(60),
    );
    assert!(ok, "{screen}\n{se}");
    assert!(screen.contains("complete: "), "{screen}");
    assert!(screen.contains('%'), "no percentage on the bar:\n{screen}");
    let wide = overflows(&screen, 80);
    assert!(
        wide.is_empty(),
        "{} lines wider than 80 columns: {wide:#?}",
        wide.len()
    );
    assert_same_tree(&tree, &out.join("tree"));
}
