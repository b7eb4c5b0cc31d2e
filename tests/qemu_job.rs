//! End-to-end tests of the QEMU firmware's BitTorrent job: a tracker
//! (opentracker or `shell-std tracker`), peers (libtorrent, our client, a
//! scripted corrupt peer) and a leecher on the host; the firmware downloads
//! through 10.0.2.2, verifies, announces and seeds back through `hostfwd`.
//! Set-up and the network check: `qemu_net.rs`; skips as there.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ourtorrent_tests::bep15::wait_for_scrape;
use ourtorrent_tests::qemu::{assert_only_gateway, guest_destinations, run_firmware, Board, Run};
use ourtorrent_tests::qemu_setup::{
    lt_leecher, lt_tracker_seeder, our_leecher, require_board_opentracker_libtorrent,
    run_board_with_leecher, CorruptSwarm, HostTracker, LtSwarm, OurSwarm, TrackedTorrent,
};
use ourtorrent_tests::qemu_swarm::{ih_bytes, shell_std_with_client, shell_std_with_tracker};
use ourtorrent_tests::{free_tcp_port, require_libtorrent, require_tool, Proc};

const TORRENT_LEN: usize = 64 * 1024;
const PIECE_LEN: u32 = 16 * 1024;

#[test]
fn qemu_bittorrent_job_opentracker_libtorrent_seeder_and_leecher() {
    if require_tool("qemu-system-arm").is_none() || require_tool("opentracker").is_none() {
        return;
    }
    bittorrent_job(HostTracker::Opentracker);
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
    bittorrent_job(HostTracker::ShellStd(bin));
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
    // Our tracker and our seeder, which announces `started` (left=0, its
    // listen port) to it; the firmware maps 127.0.0.1:PORT to
    // 10.0.2.2:PORT.
    let swarm = OurSwarm::start(&bin, dir.path(), TORRENT_LEN, PIECE_LEN, 42);
    let (seed_port, blob) = (swarm.seed_port, &swarm.blob);
    let fwd = free_tcp_port();
    let leech_dir = dir.path().join("leech");
    // The leecher starts once the firmware listens.
    let start_leecher = our_leecher(&bin, &swarm.torrent_file, &leech_dir, fwd);
    let (run, leecher) = run_job(&swarm.torrent, fwd, start_leecher);
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
    let want = std::fs::read(blob).unwrap();
    assert!(got == want, "leeched data differs");
    assert_only_gateway(&run, 10);
    assert!(run.elapsed < Duration::from_secs(25), "{:?}", run.elapsed);
}

/// Runs the job (download `torrent` from its tracker's swarm, then seed
/// 15 s through `hostfwd` from 127.0.0.1:`fwd`), starting the leecher
/// `start_leecher` makes once the firmware listens; asserts the job's
/// report: `started` and `completed` announced, every piece verified, none
/// rejected, one complete leecher served. Returns the run and the leecher.
fn run_job(
    torrent: &TrackedTorrent,
    fwd: u16,
    start_leecher: impl FnOnce() -> Proc + Send + 'static,
) -> (Run, Proc) {
    let append = format!(
        "{} port={fwd} seed_ms=15000 deadline_ms=25000",
        torrent.job_line()
    );
    let (run, leecher) = run_board_with_leecher(
        Board {
            host_port: Some(fwd),
            ..Board::new(&append)
        },
        start_leecher,
    );
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

/// Announce, download from a libtorrent seeder, verify, announce
/// completed, seed to a libtorrent leecher; the leecher's bytes must be
/// the torrent's.
fn bittorrent_job(kind: HostTracker) {
    let Some(py) = require_libtorrent() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The torrent names the tracker's port; the tracker starts on it.
    let swarm = LtSwarm::start(dir.path(), &py, TORRENT_LEN, PIECE_LEN, &kind, 50);
    let torrent = &swarm.torrent;
    let nt = dir.path().join("nt.torrent");
    let data_dir = dir.path().join("data");
    let leech_dir = dir.path().join("leech");
    let fwd = free_tcp_port();
    // The leecher starts once the firmware listens (libtorrent also backs
    // off from a peer that failed).
    let start_leecher = lt_leecher(&py, &nt, &leech_dir, fwd, 30);
    let (run, leecher) = run_job(torrent, fwd, start_leecher);
    assert!(run.stdout.contains("announce: ok event=stopped"));
    // BEP 3: the firmware's `completed` was counted, and its `stopped`
    // took it out of the swarm: only the libtorrent seeder is left (the
    // leecher uses no tracker).
    let ih_bytes = ih_bytes(&torrent.ih);
    wait_for_scrape(
        torrent.tracker_port,
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

/// A [`CorruptSwarm`] of the job's torrent.
fn corrupt_swarm(dir: &Path, py: &Path, bad_piece: u32) -> CorruptSwarm {
    CorruptSwarm::start(dir, py, TORRENT_LEN, PIECE_LEN, bad_piece)
}

#[test]
fn qemu_bittorrent_rejects_a_corrupt_piece_opentracker() {
    let Some(py) = require_board_opentracker_libtorrent() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The only peer corrupts piece 2: the firmware must refuse it, drop the
    // peer and, with nobody left, fail without accepting the data.
    let CorruptSwarm {
        torrent,
        bad_port,
        served,
    } = corrupt_swarm(dir.path(), &py, 2);
    let run = run_firmware(
        &format!("{} seed_ms=0 deadline_ms=15000", torrent.job_line()),
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
    let Some(py) = require_board_opentracker_libtorrent() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let CorruptSwarm {
        torrent,
        bad_port,
        served,
    } = corrupt_swarm(dir.path(), &py, 0);
    let _seeder = lt_tracker_seeder(&py, dir.path(), 40);
    let run = run_firmware(
        &format!("{} seed_ms=0 deadline_ms=20000", torrent.job_line()),
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
