//! Selective download (`--skip`, `--only`) from a real third-party seeder
//! (python3-libtorrent) on 127.0.0.1: the skipped middle file shares its
//! first and last pieces with its neighbours; the wanted files arrive
//! byte-identical, the skipped one is never created, its bytes in the
//! shared pieces sit in the part file, and an interrupted run resumes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ourtorrent_tests::fixtures::{LtSeed, LtSeeder};
use ourtorrent_tests::{require_libtorrent, run, run_bounded, write_data};

const BIN: &str = env!("CARGO_BIN_EXE_shell-std");
const PIECE: usize = 64 << 10;
/// a.bin [0, 300000), b.bin [300000, 800000), c.bin [800000, 1200000): b
/// shares piece 4 with a and piece 12 with c; pieces 5..=11 are b's alone.
const LENS: [usize; 3] = [300_000, 500_000, 400_000];
const B_ONLY: std::ops::RangeInclusive<u64> = 5..=11;
const PIECES: u64 = 19;

fn fixture(dir: &Path) -> PathBuf {
    let tree = dir.join("src/tree");
    for (i, (name, len)) in ["a.bin", "b.bin", "c.bin"].iter().zip(LENS).enumerate() {
        write_data(&tree.join(name), len, 11 + i as u64);
    }
    let torrent = dir.join("t.torrent");
    run(Command::new(BIN)
        .arg("create")
        .arg(&tree)
        .args(["--piece-length", &PIECE.to_string(), "-o"])
        .arg(&torrent));
    torrent
}

/// A temp dir with [`fixture`] and a libtorrent seeder of it, started
/// once it has reported for a second (`start_warm`); `None` without
/// python3-libtorrent.
fn seeded_fixture() -> Option<(tempfile::TempDir, PathBuf, LtSeed)> {
    let py = require_libtorrent()?;
    let d = tempfile::tempdir().unwrap();
    let torrent = fixture(d.path());
    let src = d.path().join("src");
    let seed = LtSeeder::new(&py, &torrent, &src)
        .opts(&["--progress-every", "0.5"])
        .start_warm();
    Some((d, torrent, seed))
}

fn download(torrent: &Path, out: &Path, port: u16, extra: &[&str]) -> (bool, String, String) {
    run_bounded(
        Command::new(BIN)
            .args(["client", "download", "--no-dht"])
            .arg(torrent)
            .arg("--out")
            .arg(out)
            .args(["--listen", "127.0.0.1:0", "--no-trackers", "--no-seed"])
            .args(["--quiet", "--peer", &format!("127.0.0.1:{port}")])
            .args(extra),
        Duration::from_secs(60),
    )
}

/// "PREFIX N …" → N.
fn number_after(out: &str, prefix: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} number in:\n{out}"))
}

#[test]
fn libtorrent_seeder_skip_middle_file_shared_pieces_and_resume() {
    let Some((d, torrent, seed)) = seeded_fixture() else {
        return;
    };
    let port = seed.port;
    let out = d.path().join("out");
    // First run: stopped after 4 pieces (of the 12 wanted).
    let (ok, so, se) = download(&torrent, &out, port, &["--skip", "1", "--max-pieces", "4"]);
    assert!(ok && so.contains("stopped after"), "{so}\n{se}");
    assert!(!out.join("tree/b.bin").exists(), "skipped file created");
    // Second run, by glob: resumes and completes what is wanted.
    let (ok, so, se) = download(&torrent, &out, port, &["--skip", "*/b.bin"]);
    assert!(ok, "resume failed:\n{so}\n{se}");
    let on_disk = number_after(&so, "resumed: ");
    let fetched = number_after(&so, "downloaded: ");
    let wanted = PIECES - (B_ONLY.end() - B_ONLY.start() + 1);
    assert!(on_disk >= 4, "{so}");
    assert_eq!(
        on_disk + fetched,
        wanted,
        "pieces fetched twice or skipped ones fetched:\n{so}"
    );
    let line = so
        .lines()
        .find(|l| l.starts_with("complete: "))
        .unwrap_or_else(|| panic!("no complete line:\n{so}"));
    assert!(
        line.contains("wanted files: 2 of 3; skipped: 1 b.bin"),
        "{line}"
    );
    for name in ["a.bin", "c.bin"] {
        assert!(
            std::fs::read(d.path().join("src/tree").join(name)).unwrap()
                == std::fs::read(out.join("tree").join(name)).unwrap(),
            "{name} differs"
        );
    }
    assert!(!out.join("tree/b.bin").exists(), "skipped file created");
    // b's bytes in the shared pieces 4 and 12 are in the part file.
    let parts = std::fs::read(out.join(".tree.parts")).expect("part file");
    let b = std::fs::read(d.path().join("src/tree/b.bin")).unwrap();
    let head = &b[..4 * PIECE + PIECE - LENS[0]];
    let tail = &b[12 * PIECE - LENS[0]..];
    for (what, s) in [("head", head), ("tail", tail)] {
        assert!(
            parts.windows(s.len()).any(|w| w == s),
            "b.bin's {what} ({} bytes) is not in the part file",
            s.len()
        );
    }
    assert!(
        parts.len() <= 2 * PIECE,
        "part file of {} bytes",
        parts.len()
    );
    // A third run finds everything wanted on disk.
    let (ok, so, se) = download(&torrent, &out, port, &["--only", "0,2"]);
    assert!(ok, "{so}\n{se}");
    assert!(
        so.contains("(already on disk) (wanted files: 2 of 3"),
        "{so}"
    );
    // --check-only with the same selection: complete (exit 0), nothing made.
    let (ok, so, se) = download(&torrent, &out, port, &["--check-only", "--skip", "1"]);
    assert!(ok, "{so}\n{se}");
    assert!(
        so.contains("checked: tree: 12 of 19 pieces verified"),
        "{so}"
    );
    assert!(!out.join("tree/b.bin").exists(), "skipped file created");
}

/// `--sequential`: the first pieces verified are the first pieces (without
/// it the first four are picked at random, then rarest first: this test
/// fails then).
#[test]
fn libtorrent_seeder_sequential_fetches_the_first_pieces_first() {
    let Some((d, torrent, seed)) = seeded_fixture() else {
        return;
    };
    let port = seed.port;
    let out = d.path().join("out");
    let (ok, so, se) = download(&torrent, &out, port, &["--sequential", "--max-pieces", "4"]);
    assert!(ok && so.contains("stopped after"), "{so}\n{se}");
    let src = std::fs::read(d.path().join("src/tree/a.bin")).unwrap();
    let got = std::fs::read(out.join("tree/a.bin")).unwrap();
    assert!(
        got[..4 * PIECE] == src[..4 * PIECE],
        "pieces 0..4 are not the ones fetched first"
    );
}
