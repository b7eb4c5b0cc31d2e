//! The host side of a QEMU board test, written once: a torrent and the
//! tracker that tracks it ([`TrackedTorrent`]: libtorrent's torrent with
//! opentracker or `shell-std tracker`; [`OurSwarm`]: our own tracker and
//! seeder), the libtorrent seeder the firmware finds through the tracker
//! ([`lt_tracker_seeder`]), and a board run that starts a leecher once
//! the firmware listens ([`run_board_with_leecher`], [`our_leecher`]).
//! Every wait is bounded (15 s for a seeder, the board's own timeout).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::bep15::announce_seeder;
use crate::fixtures::OurSeeder;
use crate::qemu::{run_board, Board, Run};
use crate::qemu_swarm::{
    corrupt_peer, ih_bytes, lt_peer, make_torrent, opentracker_on, shell_std_create,
    shell_std_tracker_on, wait_for_seeders,
};
use crate::{free_tcp_port, free_udp_port, require_libtorrent, require_tool, write_data, Proc};

/// How long a host seeder may take to be in the swarm.
pub const SEEDER_UP: Duration = Duration::from_secs(15);

/// Which tracker the host runs.
pub enum HostTracker {
    /// opentracker (Debian's).
    Opentracker,
    /// `shell-std tracker` from this binary.
    ShellStd(PathBuf),
}

/// A torrent and the tracker on 127.0.0.1 that tracks it (killed on drop).
pub struct TrackedTorrent {
    pub tracker: Proc,
    pub tracker_port: u16,
    /// Info-hash and piece hashes, hex.
    pub ih: String,
    pub pieces: String,
    /// Bytes, and bytes a piece.
    pub len: usize,
    pub piece_len: u32,
}

impl TrackedTorrent {
    /// libtorrent's torrent of `len` bytes in `dir` (see [`make_torrent`]:
    /// `data/blob.bin`, `t.torrent`, `nt.torrent`) announcing to
    /// `tracker`, started on a free UDP port the torrent names.
    pub fn lt(
        dir: &Path,
        py: &Path,
        len: usize,
        piece_len: u32,
        tracker: &HostTracker,
    ) -> TrackedTorrent {
        let port = free_udp_port();
        let (ih, pieces) = make_torrent(dir, py, len, piece_len, port);
        Self::track(dir, tracker, port, ih, pieces, len, piece_len)
    }

    /// `tracker` started on UDP `port` (the one the torrent names) in
    /// `dir`, tracking only `ih`.
    fn track(
        dir: &Path,
        tracker: &HostTracker,
        port: u16,
        ih: String,
        pieces: String,
        len: usize,
        piece_len: u32,
    ) -> TrackedTorrent {
        let (tracker, tracker_port) = match tracker {
            HostTracker::Opentracker => opentracker_on(dir, &ih, port),
            HostTracker::ShellStd(bin) => shell_std_tracker_on(bin, dir, &ih, port),
        };
        TrackedTorrent {
            tracker,
            tracker_port,
            ih,
            pieces,
            len,
            piece_len,
        }
    }

    /// The firmware's command line for the torrent (the caller appends
    /// `port=`, `seed_ms=`, `deadline_ms=`, ...).
    pub fn job_line(&self) -> String {
        format!(
            "tracker={} info_hash={} length={} piece_len={} pieces={}",
            self.tracker_port, self.ih, self.len, self.piece_len, self.pieces
        )
    }
}

/// `qemu-system-arm`, then opentracker, then python3-libtorrent (see
/// [`require_tool`]): Debian's python3, or `None` when one is missing (the
/// test returns; under `CI=true` it has failed).
pub fn require_board_opentracker_libtorrent() -> Option<PathBuf> {
    if require_tool("qemu-system-arm").is_none() || require_tool("opentracker").is_none() {
        return None;
    }
    require_libtorrent()
}

/// libtorrent's torrent and its tracker ([`TrackedTorrent::lt`]) with a
/// libtorrent seeder in the swarm ([`lt_tracker_seeder`]).
pub struct LtSwarm {
    pub torrent: TrackedTorrent,
    pub seeder: Proc,
}

impl LtSwarm {
    /// The torrent of `len` bytes in `dir`, `tracker`, and the seeder for
    /// at most `seconds`, returned once the tracker answered it.
    pub fn start(
        dir: &Path,
        py: &Path,
        len: usize,
        piece_len: u32,
        tracker: &HostTracker,
        seconds: u32,
    ) -> LtSwarm {
        let torrent = TrackedTorrent::lt(dir, py, len, piece_len, tracker);
        let seeder = lt_tracker_seeder(py, dir, seconds);
        LtSwarm { torrent, seeder }
    }

    /// [`LtSwarm::start`] with opentracker.
    pub fn opentracker(dir: &Path, py: &Path, len: usize, piece_len: u32, seconds: u32) -> Self {
        Self::start(dir, py, len, piece_len, &HostTracker::Opentracker, seconds)
    }
}

/// A libtorrent seeder of `dir`'s torrent (see [`make_torrent`]) for at
/// most `seconds`, returned once the tracker answered it (within
/// [`SEEDER_UP`]): the firmware finds it through the tracker.
pub fn lt_tracker_seeder(py: &Path, dir: &Path, seconds: u32) -> Proc {
    let t = dir.join("t.torrent");
    let data = dir.join("data");
    let seeder = lt_peer(
        py,
        &[
            "seed",
            t.to_str().unwrap(),
            data.to_str().unwrap(),
            &free_tcp_port().to_string(),
            "--max-seconds",
            &seconds.to_string(),
        ],
    );
    assert!(
        seeder.wait_line("READY", SEEDER_UP).is_some(),
        "the libtorrent seeder never got a tracker reply"
    );
    seeder
}

/// Our own stack on the host: `shell-std tracker` and `shell-std client
/// seed` of `data/blob.bin` (made by `shell-std create`), the seeder in
/// the tracker's swarm.
pub struct OurSwarm {
    /// The torrent and our tracker.
    pub torrent: TrackedTorrent,
    pub seeder: Proc,
    /// The .torrent, and its one file.
    pub torrent_file: PathBuf,
    pub blob: PathBuf,
    /// Our seeder's listening port.
    pub seed_port: u16,
}

impl OurSwarm {
    /// `dir/data/blob.bin` of `len` bytes (content from `seed`), its
    /// torrent `dir/t.torrent`, our tracker on a free UDP port and our
    /// seeder on a free TCP port; returned once the tracker counts the
    /// seeder (it announces its listen port; the firmware maps
    /// 127.0.0.1:PORT to 10.0.2.2:PORT).
    pub fn start(bin: &Path, dir: &Path, len: usize, piece_len: u32, seed: u64) -> OurSwarm {
        let port = free_udp_port();
        let torrent_file = dir.join("t.torrent");
        let blob = dir.join("data/blob.bin");
        write_data(&blob, len, seed);
        let (ih, pieces) = shell_std_create(bin, &blob, &torrent_file, piece_len, port);
        let ours = HostTracker::ShellStd(bin.to_path_buf());
        let torrent = TrackedTorrent::track(dir, &ours, port, ih, pieces, len, piece_len);
        let seed_port = free_tcp_port();
        let seeder = OurSeeder::new(bin)
            .name("shell-std client seed")
            .torrent(&torrent_file, &blob)
            .port(seed_port)
            .opts(["--no-dht", "--quiet"])
            .spawn();
        assert!(
            seeder
                .wait_line("seeding: listening on", SEEDER_UP)
                .is_some(),
            "our seeder never started seeding"
        );
        wait_for_seeders(torrent.tracker_port, &ih_bytes(&torrent.ih), 1);
        OurSwarm {
            torrent,
            seeder,
            torrent_file,
            blob,
            seed_port,
        }
    }
}

/// Starts our leecher (`shell-std client download`, no tracker, no DHT,
/// no seeding) of `torrent` into `out` with the board's forwarded port
/// 127.0.0.1:`fwd` as its only peer.
pub fn our_leecher(
    bin: &Path,
    torrent: &Path,
    out: &Path,
    fwd: u16,
) -> impl FnOnce() -> Proc + Send + 'static {
    let (bin, t, out) = (bin.to_path_buf(), torrent.to_path_buf(), out.to_path_buf());
    move || {
        Proc::spawn(
            "shell-std client download",
            std::process::Command::new(&bin)
                .args(["client", "download", "--no-dht"])
                .arg(&t)
                .arg("--out")
                .arg(&out)
                .args(["--peer", &format!("127.0.0.1:{fwd}")])
                .args(["--listen", "127.0.0.1:0"])
                .args(["--no-trackers", "--no-seed", "--quiet"]),
        )
    }
}

/// Runs `board`, calling `start_leecher` once the firmware prints `seed:
/// listening` (QEMU's hostfwd accepts and drops connections before that);
/// returns the run and the leecher. Panics if the firmware never listened.
pub fn run_board_with_leecher(
    board: Board,
    start_leecher: impl FnOnce() -> Proc + Send + 'static,
) -> (Run, Proc) {
    let slot: Arc<Mutex<Option<Proc>>> = Arc::default();
    let trigger = {
        let slot = slot.clone();
        Box::new(move || *slot.lock().unwrap() = Some(start_leecher()))
    };
    let run = run_board(Board {
        trigger: Some(("seed: listening", trigger)),
        ..board
    });
    let leecher = slot
        .lock()
        .unwrap()
        .take()
        .expect("the firmware never listened for a leecher");
    (run, leecher)
}

/// Starts a libtorrent leecher (no tracker) of `torrent` into `out` with
/// the board's forwarded port 127.0.0.1:`fwd` as its peer, for at most
/// `seconds`.
pub fn lt_leecher(
    py: &Path,
    torrent: &Path,
    out: &Path,
    fwd: u16,
    seconds: u32,
) -> impl FnOnce() -> Proc + Send + 'static {
    let (py, t, out) = (py.to_path_buf(), torrent.to_path_buf(), out.to_path_buf());
    move || {
        let port = free_tcp_port().to_string();
        let (fwd, seconds) = (fwd.to_string(), seconds.to_string());
        lt_peer(
            &py,
            &[
                "leech",
                t.to_str().unwrap(),
                out.to_str().unwrap(),
                &port,
                "--connect",
                &fwd,
                "--max-seconds",
                &seconds,
            ],
        )
    }
}

/// A swarm with a corrupt seeder: libtorrent's torrent (see
/// [`make_torrent`]) that opentracker tracks, and a [`corrupt_peer`] of
/// `bad_piece` announced to it as a seeder.
pub struct CorruptSwarm {
    pub torrent: TrackedTorrent,
    pub bad_port: u16,
    /// Piece messages the corrupt peer sent.
    pub served: Arc<AtomicUsize>,
}

impl CorruptSwarm {
    /// The torrent of `len` bytes in `dir`, opentracker, and the corrupt
    /// peer announced.
    pub fn start(dir: &Path, py: &Path, len: usize, piece_len: u32, bad_piece: u32) -> Self {
        let torrent = TrackedTorrent::lt(dir, py, len, piece_len, &HostTracker::Opentracker);
        let data = std::fs::read(dir.join("data/blob.bin")).unwrap();
        let ih_bytes = ih_bytes(&torrent.ih);
        let (bad_port, served) = corrupt_peer(data, piece_len as usize, ih_bytes, bad_piece);
        announce_seeder(torrent.tracker_port, &ih_bytes, bad_port);
        CorruptSwarm {
            torrent,
            bad_port,
            served,
        }
    }
}
