//! A fleet: three boards, each its own QEMU with user-mode networking and a
//! `hostfwd` for its peer port, swarm one 1 MiB image from one
//! rate-limited libtorrent seeder. The tracker (opentracker) hands out the
//! boards' forwarded ports, which each board reaches as 10.0.2.2:PORT; the
//! seeder is reached through a relay that counts what it uploads. The
//! boards must serve each other: the seeder uploads well under 3× the
//! image. Once with opentracker, once with our tracker (`shell-std
//! tracker`). `cargo test qemu_fleet` runs exactly these tests.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use ourtorrent_tests::bep15::announce_seeder;
use ourtorrent_tests::qemu::{
    assert_only_gateway, erased_flash, run_board, Board, FlashImage, Run,
};
use ourtorrent_tests::qemu_swarm::{
    ih_bytes, make_torrent, opentracker_on, shell_std_tracker_on, shell_std_with_tracker,
    CountingRelay,
};
use ourtorrent_tests::{
    free_tcp_port, free_udp_port, lt_swarm_script, require_libtorrent, require_tool, Proc,
};

const IMAGE_LEN: usize = 1024 * 1024;
const PIECE_LEN: u32 = 16 * 1024;
const PIECES: u64 = (IMAGE_LEN / PIECE_LEN as usize) as u64;
/// The seeder's upload limit (libtorrent's per-torrent limit), bytes/s.
const SEED_RATE: usize = 256 * 1024;
const BOARDS: usize = 3;

/// The seeder, its relay and the tracker of one image.
struct Swarm {
    _tracker: Proc,
    _seeder: Proc,
    relay: CountingRelay,
    tracker_port: u16,
    ih: String,
    pieces: String,
    data: Vec<u8>,
}

/// The swarm's tracker: opentracker, or ours (`shell-std tracker`).
fn swarm(dir: &Path, py: &Path, ours: Option<&Path>) -> Swarm {
    let tracker_port = free_udp_port();
    let (ih, pieces) = make_torrent(dir, py, IMAGE_LEN, PIECE_LEN, tracker_port);
    let (tracker, tracker_port) = match ours {
        Some(bin) => shell_std_tracker_on(bin, dir, &ih, tracker_port),
        None => opentracker_on(dir, &ih, tracker_port),
    };
    let seed_port = free_tcp_port();
    let seeder = Proc::spawn(
        "lt seeder (rate-limited)",
        Command::new(py)
            .arg(lt_swarm_script())
            .arg("seed")
            .arg(dir.join("t.torrent"))
            .arg(dir.join("data"))
            .arg(seed_port.to_string())
            .args(["--no-trackers", "--max-seconds", "60"])
            .args(["--upload-limit", &SEED_RATE.to_string()]),
    );
    assert!(
        seeder.wait_line("READY", Duration::from_secs(15)).is_some(),
        "the seeder did not start"
    );
    // The swarm knows the seeder by its relay.
    let relay = CountingRelay::start(seed_port);
    announce_seeder(tracker_port, &ih_bytes(&ih), relay.port);
    let data = std::fs::read(dir.join("data/blob.bin")).unwrap();
    Swarm {
        _tracker: tracker,
        _seeder: seeder,
        relay,
        tracker_port,
        ih,
        pieces,
        data,
    }
}

/// Runs `n` boards at once on fresh flash files in `dir`; each announces
/// its forwarded port and seeds for `seed_ms` once complete (or until no
/// connected peer misses a piece).
fn fleet(dir: &Path, s: &Swarm, n: usize, tag: &str, seed_ms: u32) -> Vec<(Run, u16)> {
    let boards: Vec<_> = (0..n)
        .map(|i| {
            let fwd = free_tcp_port();
            let flash = dir.join(format!("flash-{tag}-{i}.bin"));
            erased_flash(&flash);
            let append = format!(
                "tracker={} info_hash={} length={IMAGE_LEN} piece_len={PIECE_LEN} pieces={} \
                 port={fwd} seed_ms={seed_ms} deadline_ms=40000",
                s.tracker_port, s.ih, s.pieces
            );
            thread::spawn(move || {
                let run = run_board(Board {
                    host_port: Some(fwd),
                    flash: Some(flash.clone()),
                    timeout: Duration::from_secs(50),
                    ..Board::new(&append)
                });
                (run, fwd, flash)
            })
        })
        .collect();
    let mut runs = Vec::new();
    for b in boards {
        let (run, fwd, flash) = b.join().expect("board thread");
        assert_eq!(run.code, Some(0), "board on {fwd} failed");
        assert_eq!(run.figure("report:", "ready_to_boot"), Some(1));
        assert_eq!(run.figure("report:", "verified"), Some(PIECES));
        let img = FlashImage::read(&flash, &run);
        for (i, want) in s.data.chunks(PIECE_LEN as usize).enumerate() {
            assert!(img.marked(i), "board {fwd}: piece {i} not marked");
            assert!(
                img.piece(i, PIECE_LEN as usize, want.len()) == want,
                "board {fwd}: piece {i} differs"
            );
        }
        assert_only_gateway(&run, 100);
        runs.push((run, fwd));
    }
    runs
}

#[test]
fn qemu_fleet_three_boards_share_one_rate_limited_seeder() {
    if require_tool("qemu-system-arm").is_none() || require_tool("opentracker").is_none() {
        return;
    }
    let Some(py) = require_libtorrent() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = swarm(dir.path(), &py, None);

    // One board alone first: the seeder's rate bounds it.
    let one = fleet(dir.path(), &s, 1, "one", 0);
    let one_ms = one[0].0.figure("download: ok", "ms").unwrap();
    let seeded_one = s.relay.to_clients.swap(0, Ordering::SeqCst);

    eprintln!("FIGURE qemu_fleet: 1 board {one_ms} ms (seeder sent {seeded_one} B)");
    three_boards(dir.path(), &s);
}

/// The same fleet with our own tracker handing out the boards' ports.
#[test]
fn qemu_fleet_three_boards_with_our_tracker() {
    if require_tool("qemu-system-arm").is_none() {
        return;
    }
    let Some(py) = require_libtorrent() else {
        return;
    };
    let Some(bin) = shell_std_with_tracker() else {
        panic!("target/debug/shell-std with a `tracker` subcommand not found: run `cargo build -p shell-std` or set OURTORRENT_SHELL_STD");
    };
    let dir = tempfile::tempdir().unwrap();
    let s = swarm(dir.path(), &py, Some(&bin));
    three_boards(dir.path(), &s);
}

/// Runs [`BOARDS`] boards at once and checks the swarm's figures: every
/// byte came from the seeder or a board, the seeder sent well under
/// [`BOARDS`] images, the boards served each other.
fn three_boards(dir: &Path, s: &Swarm) {
    s.relay.to_clients.store(0, Ordering::SeqCst);
    let runs = fleet(dir, s, BOARDS, "fleet", 8000);
    let seeded = s.relay.to_clients.load(Ordering::SeqCst);
    let ms: Vec<u64> = runs
        .iter()
        .map(|(r, _)| r.figure("download: ok", "ms").unwrap())
        .collect();
    let up: Vec<u64> = runs
        .iter()
        .map(|(r, _)| r.figure("report:", "uploaded").unwrap())
        .collect();
    let board_up: u64 = up.iter().sum();
    eprintln!(
        "FIGURE qemu_fleet: {BOARDS} boards {ms:?} ms, uploaded to each other {up:?} B \
         (sum {board_up}), seeder sent {seeded} B ({:.2} images)",
        seeded as f64 / IMAGE_LEN as f64
    );
    // Every byte a board has came from the seeder or another board.
    assert!(
        seeded + board_up >= (BOARDS * IMAGE_LEN) as u64,
        "seeder {seeded} + boards {board_up} < {BOARDS} images"
    );
    // 1.4-1.8 images measured: boards pick pieces from the seeder at the
    // same time before any has them (and in end-game); 3 if they never
    // served each other.
    assert!(
        seeded * 4 < 9 * IMAGE_LEN as u64,
        "the seeder sent {seeded} B (over 2.25 images): boards did not serve each other"
    );
    assert!(
        board_up >= IMAGE_LEN as u64,
        "boards uploaded {board_up} B to each other"
    );
    for (run, fwd) in &runs {
        assert!(
            run.stdout.contains("peer: inbound handshake ok")
                || runs.iter().any(|(_, other)| run
                    .stdout
                    .contains(&format!("10.0.2.2:{other} handshake ok"))
                    && other != fwd),
            "board {fwd} met no other board"
        );
    }
}
