//! End-to-end tests of the QEMU firmware's BitTorrent job: a tracker
//! (opentracker or `shell-std tracker`), peers (libtorrent, our client, a
//! scripted corrupt peer) and a leecher on the host; the firmware downloads
//! through 10.0.2.2, verifies, announces and seeds back through `hostfwd`.
//! Set-up and the network check: `qemu_net.rs`; skips as there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ourtorrent_tests::bep15::{announce_seeder, wait_for_scrape};
use ourtorrent_tests::qemu::{
    assert_only_gateway, guest_destinations, run_firmware, run_firmware_with, Run,
};
use ourtorrent_tests::qemu_swarm::{
    corrupt_peer, ih_bytes, lt_peer, make_torrent, opentracker_on, shell_std_create,
    shell_std_tracker_on, shell_std_with_client, shell_std_with_tracker, wait_for_seeders,
};
use ourtorrent_tests::{
    free_tcp_port, free_udp_port, require_libtorrent, require_tool, write_data, Proc,
};

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
            .args(["client", "seed"])
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
                    .args(["client", "download"])
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
            format!("{base} length=4194305 piece_len=16384 pieces={h}"),
            "result: FAILED: config: torrent of 4194305 bytes exceeds 4194304",
        ),
        (
            format!("{base} length=65536 piece_len=524288 pieces={h}"),
            "result: FAILED: config: piece of 524288 bytes exceeds 262144",
        ),
        (
            format!("{base} length=65536 piece_len=512 pieces={h}"),
            "result: FAILED: config: piece of 512 bytes is not a multiple of 16384",
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
