//! End-to-end tests of the QEMU firmware's BitTorrent job: a tracker
//! (opentracker or `shell-std tracker`), peers (libtorrent, our client, a
//! scripted corrupt peer) and a leecher on the host; the firmware downloads
//! through 10.0.2.2, verifies, announces and seeds back through `hostfwd`.
//! Set-up and the network check: `qemu_net.rs`; skips as there.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use ourtorrent_tests::bep15::{announce_seeder, wait_for_scrape, wait_for_udp_tracker};
use ourtorrent_tests::opentracker::Opentracker;
use ourtorrent_tests::qemu::{
    assert_only_gateway, guest_destinations, run_firmware, run_firmware_with, Run,
};
use ourtorrent_tests::{
    free_tcp_port, free_udp_port, lt_info, lt_script, lt_swarm_script, require_libtorrent,
    require_tool, run, shell_std, write_data, Proc,
};

/// opentracker on 127.0.0.1 UDP `port`, tracking only `info_hash`.
/// Returns it and its UDP port once it answers a BEP 15 connect.
fn opentracker_on(dir: &Path, info_hash: &str, port: u16) -> (Proc, u16) {
    std::fs::write(dir.join("whitelist"), format!("{info_hash}\n")).unwrap();
    let t = Opentracker::start(dir, &dir.join("whitelist"), port, free_tcp_port());
    (t.proc, t.udp_port)
}

/// A small torrent on disk: `data/blob.bin` of `len` bytes, `t.torrent`
/// (with the tracker) and `nt.torrent` (same info, no tracker, for the
/// leecher). Returns (info-hash hex, piece hashes hex).
fn make_torrent(
    dir: &Path,
    py: &Path,
    len: usize,
    piece_len: u32,
    tracker: u16,
) -> (String, String) {
    let blob = dir.join("data/blob.bin");
    write_data(&blob, len, 42);
    let script = lt_script();
    let create = |out: &str, with_tracker: bool| {
        let mut cmd = Command::new(py);
        cmd.arg(&script)
            .arg("create")
            .arg(&blob)
            .arg(dir.join(out))
            .args(["--v1-only", "--piece-size", &piece_len.to_string()]);
        if with_tracker {
            cmd.args(["--tracker", &format!("udp://127.0.0.1:{tracker}/announce")]);
        }
        run(&mut cmd);
    };
    create("t.torrent", true);
    create("nt.torrent", false);
    let info = lt_info(py, &dir.join("t.torrent"));
    let ih = info["info_hash"].as_str().expect("info_hash").to_string();
    let data = std::fs::read(&blob).unwrap();
    (ih, piece_hashes(&data, piece_len))
}

/// A libtorrent peer (tests/py/lt_swarm.py). Seeders say READY once a
/// tracker replied (the firmware finds them through the tracker).
fn lt_peer(py: &Path, args: &[&str]) -> Proc {
    let mut args: Vec<&str> = args.to_vec();
    if args.first() == Some(&"seed") {
        args.extend(["--ready-on", "tracker"]);
    } else {
        args.push("--no-trackers");
    }
    Proc::spawn(
        &format!("lt_peer {}", args[0]),
        Command::new(py).arg(lt_swarm_script()).args(args),
    )
}

/// A peer that serves every piece but corrupts `bad_piece` (every byte
/// flipped): the firmware must reject it. Counts the piece messages sent.
fn corrupt_peer(
    data: Vec<u8>,
    piece_len: usize,
    info_hash: [u8; 20],
    bad_piece: u32,
) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let data = data.clone();
            let counter = counter.clone();
            thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(20)));
                let mut hs = [0u8; 68];
                if c.read_exact(&mut hs).is_err() || hs[28..48] != info_hash {
                    return;
                }
                let pieces = data.len().div_ceil(piece_len);
                let mut out = Vec::new();
                out.extend_from_slice(&hs[..28]);
                out.extend_from_slice(&info_hash);
                out.extend_from_slice(b"-BAD001-000000000000");
                let mut bits = vec![0u8; pieces.div_ceil(8)];
                for i in 0..pieces {
                    bits[i / 8] |= 0x80 >> (i % 8);
                }
                out.extend_from_slice(&(1 + bits.len() as u32).to_be_bytes());
                out.push(5);
                out.extend_from_slice(&bits);
                out.extend_from_slice(&[0, 0, 0, 1, 1]); // unchoke
                if c.write_all(&out).is_err() {
                    return;
                }
                loop {
                    let mut len = [0u8; 4];
                    if c.read_exact(&mut len).is_err() {
                        return;
                    }
                    let mut msg = vec![0u8; u32::from_be_bytes(len) as usize];
                    if c.read_exact(&mut msg).is_err() {
                        return;
                    }
                    if msg.first() != Some(&6) || msg.len() != 13 {
                        continue;
                    }
                    let word = |o: usize| u32::from_be_bytes(msg[o..o + 4].try_into().unwrap());
                    let (index, begin, length) = (word(1), word(5), word(9));
                    let at = index as usize * piece_len + begin as usize;
                    let Some(block) = data.get(at..at + length as usize) else {
                        return;
                    };
                    let mut block = block.to_vec();
                    if index == bad_piece {
                        block.iter_mut().for_each(|b| *b ^= 0xff);
                    }
                    let mut m = Vec::new();
                    m.extend_from_slice(&(9 + length).to_be_bytes());
                    m.push(7);
                    m.extend_from_slice(&index.to_be_bytes());
                    m.extend_from_slice(&begin.to_be_bytes());
                    m.extend_from_slice(&block);
                    if c.write_all(&m).is_err() {
                        return;
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (port, sent)
}

const TORRENT_LEN: usize = 64 * 1024;
const PIECE_LEN: u32 = 16 * 1024;

#[test]
fn qemu_bittorrent_job_opentracker_libtorrent_seeder_and_leecher() {
    if require_tool("qemu-system-arm").is_none() || require_tool("opentracker").is_none() {
        return;
    }
    bittorrent_job(TrackerKind::Opentracker);
}

/// The same job with our own tracker (`shell-std tracker`).
#[test]
fn qemu_bittorrent_job_shell_std_tracker_libtorrent_seeder_and_leecher() {
    if require_tool("qemu-system-arm").is_none() {
        return;
    }
    let Some(bin) = shell_std_with_tracker() else {
        panic!("target/debug/shell-std with a `tracker` subcommand not found: run `cargo test --workspace` (it builds shell-std) or set OURTORRENT_SHELL_STD");
    };
    bittorrent_job(TrackerKind::ShellStd(bin));
}

/// The job with our own stack on the host: `shell-std tracker`, `shell-std
/// client seed` as the only seeder (announcing its listen port to the
/// tracker), then `shell-std client download` leeching the data back from
/// the firmware through `hostfwd`.
#[test]
fn qemu_bittorrent_job_shell_std_tracker_our_client_seeder_and_leecher() {
    if require_tool("qemu-system-arm").is_none() {
        return;
    }
    let Some(bin) = shell_std_with_client() else {
        panic!("target/debug/shell-std with `tracker`, `create` and `client` subcommands not found: run `cargo build -p shell-std` (or `cargo test --workspace`) or set OURTORRENT_SHELL_STD");
    };
    let dir = tempfile::tempdir().unwrap();
    let tracker_port = free_udp_port();
    let t = dir.path().join("t.torrent");
    let data_dir = dir.path().join("data");
    let blob = data_dir.join("blob.bin");
    write_data(&blob, TORRENT_LEN, 42);
    let (ih, pieces) = shell_std_create(&bin, &blob, &t, PIECE_LEN, tracker_port);
    let (_tracker, tracker_port) = shell_std_tracker_on(&bin, dir.path(), &ih, tracker_port);
    let ih_bytes = ih_bytes(&ih);
    // Our seeder: announces `started` (left=0, its listen port) to the
    // torrent's tracker; the firmware maps 127.0.0.1:PORT to 10.0.2.2:PORT.
    let seed_port = free_tcp_port();
    let seeder = Proc::spawn(
        "shell-std client seed",
        Command::new(&bin)
            .args(["client", "seed", "--no-dht"])
            .arg(&t)
            .arg("--data")
            .arg(&blob)
            .args(["--listen", &format!("127.0.0.1:{seed_port}"), "--quiet"]),
    );
    assert!(
        seeder
            .wait_line("seeding: listening on", Duration::from_secs(15))
            .is_some(),
        "our seeder never started seeding"
    );
    wait_for_seeders(tracker_port, &ih_bytes, 1);
    let fwd = free_tcp_port();
    let leech_dir = dir.path().join("leech");
    // The leecher starts once the firmware listens (QEMU's hostfwd accepts
    // and drops connections before that).
    let start_leecher = {
        let (bin, t, out) = (bin.clone(), t.clone(), leech_dir.clone());
        move || {
            Proc::spawn(
                "shell-std client download",
                Command::new(&bin)
                    .args(["client", "download", "--no-dht"])
                    .arg(&t)
                    .arg("--out")
                    .arg(&out)
                    .args(["--peer", &format!("127.0.0.1:{fwd}")])
                    .args(["--listen", "127.0.0.1:0"])
                    .args(["--no-trackers", "--no-seed", "--quiet"]),
            )
        }
    };
    let (run, leecher) = run_job(tracker_port, &ih, &pieces, fwd, start_leecher);
    assert!(
        run.stdout
            .contains(&format!("peer: 10.0.2.2:{seed_port} handshake ok")),
        "the firmware did not reach our seeder:\n{}",
        run.stdout
    );
    eprintln!(
        "firmware from our seeder: {} ms; our leecher from the firmware: {:?}",
        run.figure("download: ok", "ms").unwrap_or(0),
        leecher.wait_line("downloaded:", Duration::from_secs(10))
    );
    // Our leecher got every byte from the firmware (its only peer).
    assert!(
        leecher
            .wait_line("complete:", Duration::from_secs(10))
            .is_some(),
        "our leecher did not finish"
    );
    let got = std::fs::read(leech_dir.join("blob.bin")).expect("leeched file");
    let want = std::fs::read(&blob).unwrap();
    assert!(got == want, "leeched data differs");
    assert_only_gateway(&run, 10);
    assert!(run.elapsed < Duration::from_secs(25), "{:?}", run.elapsed);
}

/// [`shell_std_with_tracker`], if that binary also has `create` and
/// `client`.
fn shell_std_with_client() -> Option<PathBuf> {
    let bin = shell_std_with_tracker()?;
    let has = |args: &[&str]| {
        Command::new(&bin)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    (has(&["create", "--help"]) && has(&["client", "seed", "--help"])).then_some(bin)
}

/// `shell-std create` of the single file `blob` into `torrent`, announcing
/// to `udp://127.0.0.1:TRACKER/announce`. Returns (info-hash hex, piece
/// hashes hex).
fn shell_std_create(
    bin: &Path,
    blob: &Path,
    torrent: &Path,
    piece_len: u32,
    tracker: u16,
) -> (String, String) {
    let out = run(Command::new(bin)
        .arg("create")
        .arg(blob)
        .args(["--tracker", &format!("udp://127.0.0.1:{tracker}/announce")])
        .args(["--piece-length", &piece_len.to_string(), "--no-date", "-o"])
        .arg(torrent));
    let ih = out
        .split("info-hash ")
        .nth(1)
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|| panic!("no info-hash in `{out}`"));
    assert_eq!(ih.len(), 40, "{out}");
    let data = std::fs::read(blob).unwrap();
    (ih, piece_hashes(&data, piece_len))
}

/// SHA-1 of every piece, 40 hex digits each, in order.
fn piece_hashes(data: &[u8], piece_len: u32) -> String {
    let mut pieces = String::new();
    for chunk in data.chunks(piece_len as usize) {
        let mut h = ourtorrent_core::pieces::PieceHasher::new();
        h.update(chunk);
        for b in h.finish() {
            pieces.push_str(&format!("{b:02x}"));
        }
    }
    pieces
}

/// Waits until the UDP tracker on `port` counts at least `n` seeders of
/// `info_hash`.
fn wait_for_seeders(port: u16, info_hash: &[u8; 20], n: u32) {
    wait_for_scrape(port, info_hash, &format!("{n} seeders"), |c| c.seeders >= n);
}

/// Runs the job (download from the swarm of the tracker on `tracker_port`,
/// then seed 15 s through `hostfwd` from 127.0.0.1:`fwd`), starting the
/// leecher `start_leecher` makes once the firmware listens (QEMU's hostfwd
/// accepts and drops connections before that); asserts the job's report:
/// `started` and `completed` announced, every piece verified, none
/// rejected, one complete leecher served. Returns the run and the leecher.
fn run_job(
    tracker_port: u16,
    ih: &str,
    pieces: &str,
    fwd: u16,
    start_leecher: impl FnOnce() -> Proc + Send + 'static,
) -> (Run, Proc) {
    let leecher_slot: Arc<Mutex<Option<Proc>>> = Arc::default();
    let trigger = {
        let slot = leecher_slot.clone();
        Box::new(move || *slot.lock().unwrap() = Some(start_leecher()))
    };
    let run = run_firmware_with(
        &format!(
            "tracker={tracker_port} info_hash={ih} length={TORRENT_LEN} piece_len={PIECE_LEN} \
             pieces={pieces} port={fwd} seed_ms=15000 deadline_ms=25000"
        ),
        Some(fwd),
        Some(("seed: listening", trigger)),
    );
    let leecher = leecher_slot
        .lock()
        .unwrap()
        .take()
        .expect("the firmware never listened for a leecher");
    assert_eq!(run.code, Some(0), "firmware failed");
    assert!(run.stdout.contains("result: ok"));
    assert!(run.stdout.contains("announce: ok event=started"));
    assert!(run.stdout.contains("announce: ok event=completed"));
    assert_eq!(
        run.figure("download: ok", "bytes"),
        Some(TORRENT_LEN as u64)
    );
    assert_eq!(run.figure("download: ok", "verified"), Some(4));
    assert_eq!(run.figure("download: ok", "rejected"), Some(0));
    assert_eq!(run.figure("seed: ok", "leecher_complete"), Some(1));
    assert!(run.figure("seed: ok", "uploaded").unwrap() >= TORRENT_LEN as u64);
    (run, leecher)
}

/// Which tracker the job test runs against.
enum TrackerKind {
    Opentracker,
    ShellStd(PathBuf),
}

/// The workspace's `shell-std` binary (built by `cargo test` for its own
/// tests), or the one named by `OURTORRENT_SHELL_STD`, if it has the
/// `tracker` subcommand.
fn shell_std_with_tracker() -> Option<PathBuf> {
    let bin = shell_std();
    let ok = Command::new(&bin)
        .args(["tracker", "--help"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(bin)
}

/// `shell-std tracker` on 127.0.0.1 UDP `port`, memory only, tracking
/// only `info_hash`; returned once it answers a BEP 15 connect.
fn shell_std_tracker_on(bin: &Path, dir: &Path, info_hash: &str, port: u16) -> (Proc, u16) {
    std::fs::write(dir.join("allow"), format!("{info_hash}\n")).unwrap();
    let proc = Proc::spawn(
        "shell-std tracker",
        Command::new(bin)
            .args(["tracker", "--no-db", "--udp", &format!("127.0.0.1:{port}")])
            .arg("--http")
            .arg(format!("127.0.0.1:{}", free_tcp_port()))
            .arg("--allow")
            .arg(dir.join("allow")),
    );
    wait_for_udp_tracker(port);
    (proc, port)
}

/// Announce, download from a libtorrent seeder, verify, announce
/// completed, seed to a libtorrent leecher; the leecher's bytes must be
/// the torrent's.
fn bittorrent_job(kind: TrackerKind) {
    let Some(py) = require_libtorrent() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tracker_port = free_udp_port();
    let (ih, pieces) = make_torrent(dir.path(), &py, TORRENT_LEN, PIECE_LEN, tracker_port);
    // The torrent names the tracker's port; start the tracker on it now.
    let (_tracker, tracker_port) = match &kind {
        TrackerKind::Opentracker => opentracker_on(dir.path(), &ih, tracker_port),
        TrackerKind::ShellStd(bin) => shell_std_tracker_on(bin, dir.path(), &ih, tracker_port),
    };
    let t = dir.path().join("t.torrent");
    let nt = dir.path().join("nt.torrent");
    let data_dir = dir.path().join("data");
    let leech_dir = dir.path().join("leech");
    let seed_port = free_tcp_port();
    let seeder = lt_peer(
        &py,
        &[
            "seed",
            t.to_str().unwrap(),
            data_dir.to_str().unwrap(),
            &seed_port.to_string(),
            "--max-seconds",
            "50",
        ],
    );
    assert!(
        seeder.wait_line("READY", Duration::from_secs(15)).is_some(),
        "the libtorrent seeder never got a tracker reply"
    );
    let fwd = free_tcp_port();
    // The leecher starts once the firmware listens (QEMU's hostfwd accepts
    // and drops connections before that, and libtorrent backs off from a
    // peer that failed).
    let start_leecher = {
        let py = py.clone();
        let args: Vec<String> = vec![
            "leech".into(),
            nt.to_str().unwrap().into(),
            leech_dir.to_str().unwrap().into(),
            free_tcp_port().to_string(),
            "--connect".into(),
            fwd.to_string(),
            "--max-seconds".into(),
            "30".into(),
        ];
        move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            lt_peer(&py, &args)
        }
    };
    let (run, leecher) = run_job(tracker_port, &ih, &pieces, fwd, start_leecher);
    assert!(run.stdout.contains("announce: ok event=stopped"));
    // BEP 3: the firmware's `completed` was counted, and its `stopped`
    // took it out of the swarm: only the libtorrent seeder is left (the
    // leecher uses no tracker).
    let ih_bytes = ih_bytes(&ih);
    wait_for_scrape(
        tracker_port,
        &ih_bytes,
        "the firmware completed and gone",
        |c| c.seeders == 1 && c.completed >= 1 && c.leechers == 0,
    );
    // The leecher got every byte from the firmware, and only from it.
    assert!(
        leecher.wait_line("DONE", Duration::from_secs(10)).is_some(),
        "the leecher did not finish"
    );
    let got = std::fs::read(leech_dir.join("blob.bin")).expect("leeched file");
    let want = std::fs::read(data_dir.join("blob.bin")).unwrap();
    assert!(got == want, "leeched data differs");
    assert_only_gateway(&run, 10);
    assert!(run.elapsed < Duration::from_secs(25), "{:?}", run.elapsed);
}

/// A swarm with a corrupt seeder: a torrent (see [`make_torrent`]) that
/// opentracker tracks, and a [`corrupt_peer`] of `bad_piece` announced to
/// it as a seeder.
struct CorruptSwarm {
    _tracker: Proc,
    tracker_port: u16,
    /// Info-hash and piece hashes, hex.
    ih: String,
    pieces: String,
    bad_port: u16,
    /// Piece messages the corrupt peer sent.
    served: Arc<AtomicUsize>,
}

fn corrupt_swarm(dir: &Path, py: &Path, bad_piece: u32) -> CorruptSwarm {
    let tracker_port = free_udp_port();
    let (ih, pieces) = make_torrent(dir, py, TORRENT_LEN, PIECE_LEN, tracker_port);
    let (tracker, tracker_port) = opentracker_on(dir, &ih, tracker_port);
    let data = std::fs::read(dir.join("data/blob.bin")).unwrap();
    let ih_bytes = ih_bytes(&ih);
    let (bad_port, served) = corrupt_peer(data, PIECE_LEN as usize, ih_bytes, bad_piece);
    announce_seeder(tracker_port, &ih_bytes, bad_port);
    CorruptSwarm {
        _tracker: tracker,
        tracker_port,
        ih,
        pieces,
        bad_port,
        served,
    }
}

/// 40 hex digits → 20 bytes.
fn ih_bytes(ih: &str) -> [u8; 20] {
    ourtorrent_core::id::InfoHash::from_hex(ih.as_bytes())
        .unwrap()
        .0
}

#[test]
fn qemu_bittorrent_rejects_a_corrupt_piece_opentracker() {
    if require_tool("qemu-system-arm").is_none() || require_tool("opentracker").is_none() {
        return;
    }
    let Some(py) = require_libtorrent() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The only peer corrupts piece 2: the firmware must refuse it, drop the
    // peer and, with nobody left, fail without accepting the data.
    let CorruptSwarm {
        _tracker,
        tracker_port,
        ih,
        pieces,
        bad_port,
        served,
    } = corrupt_swarm(dir.path(), &py, 2);
    let run = run_firmware(
        &format!(
            "tracker={tracker_port} info_hash={ih} length={TORRENT_LEN} piece_len={PIECE_LEN} \
             pieces={pieces} seed_ms=0 deadline_ms=15000"
        ),
        None,
    );
    assert_eq!(run.code, Some(1), "a corrupt piece must fail the run");
    // Failed, it still leaves the swarm (BEP 3 `stopped`).
    assert!(
        run.stdout.contains("announce: ok event=stopped"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "peer: 10.0.2.2:{bad_port} banned: sent a bad piece"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("piece: 2 rejected: SHA-1 mismatch"),
        "{}",
        run.stdout
    );
    let last = run
        .stdout
        .lines()
        .find(|l| l.starts_with("result:"))
        .unwrap();
    assert!(
        last.starts_with("result: FAILED: no usable peer left (verified=")
            && last.ends_with(" rejected=1)"),
        "{last}"
    );
    // Piece 2 was never counted as verified.
    let verified: u32 = last
        .split("verified=")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(verified < 4, "{last}");
    assert!(!run.stdout.contains("download: ok"), "{}", run.stdout);
    assert!(served.load(Ordering::SeqCst) >= 1);
    assert_only_gateway(&run, 10);
    assert!(run.elapsed < Duration::from_secs(15), "{:?}", run.elapsed);
}

#[test]
fn qemu_bittorrent_refetches_a_corrupt_piece_from_a_good_peer_opentracker() {
    if require_tool("qemu-system-arm").is_none() || require_tool("opentracker").is_none() {
        return;
    }
    let Some(py) = require_libtorrent() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let CorruptSwarm {
        _tracker,
        tracker_port,
        ih,
        pieces,
        bad_port,
        served,
    } = corrupt_swarm(dir.path(), &py, 0);
    let data_dir = dir.path().join("data");
    let t = dir.path().join("t.torrent");
    let seeder = lt_peer(
        &py,
        &[
            "seed",
            t.to_str().unwrap(),
            data_dir.to_str().unwrap(),
            &free_tcp_port().to_string(),
            "--max-seconds",
            "40",
        ],
    );
    assert!(seeder.wait_line("READY", Duration::from_secs(15)).is_some());
    let run = run_firmware(
        &format!(
            "tracker={tracker_port} info_hash={ih} length={TORRENT_LEN} piece_len={PIECE_LEN} \
             pieces={pieces} seed_ms=0 deadline_ms=20000"
        ),
        None,
    );
    // Whoever sent piece 0, only verified data is kept: the run completes
    // from libtorrent, and a piece from the corrupt peer, if it got one
    // in, was rejected and fetched again.
    assert_eq!(run.code, Some(0), "firmware failed");
    assert_eq!(run.figure("download: ok", "verified"), Some(4));
    let rejected = run.figure("download: ok", "rejected").unwrap();
    if rejected > 0 {
        assert!(run
            .stdout
            .contains(&format!("peer: 10.0.2.2:{bad_port} banned")));
    }
    eprintln!(
        "corrupt peer sent {} blocks; firmware rejected {rejected} pieces",
        served.load(Ordering::SeqCst)
    );
    assert_only_gateway(&run, 10);
}

#[test]
fn qemu_bittorrent_refuses_torrents_beyond_its_limits() {
    if require_tool("qemu-system-arm").is_none() {
        return;
    }
    let h = "0123456789abcdef0123456789abcdef01234567";
    let base = format!("tracker=6969 info_hash={h}");
    let cases = [
        (
            format!("{base} length=1048576 piece_len=16384 pieces={h}"),
            "result: FAILED: config: torrent of 1048576 bytes exceeds 65536",
        ),
        (
            format!("{base} length=65536 piece_len=131072 pieces={h}"),
            "result: FAILED: config: piece of 131072 bytes exceeds 65536",
        ),
        (
            format!("{base} length=65536 piece_len=512 pieces={h}"),
            "result: FAILED: config: 128 pieces exceed 64",
        ),
        (
            format!("{base} length=65536 piece_len=16384 pieces={h}{h}"),
            "result: FAILED: config: 2 piece hashes for 4 pieces",
        ),
        (
            format!("tracker=6969 length=65536 piece_len=16384 pieces={h}"),
            "result: FAILED: config: missing `info_hash=`",
        ),
    ];
    for (append, want) in cases {
        let run = run_firmware(&append, None);
        assert_eq!(run.code, Some(2), "{append}");
        assert!(run.stdout.contains(want), "{append}:\n{}", run.stdout);
        assert!(guest_destinations(&run.pcap).is_empty());
    }
}
