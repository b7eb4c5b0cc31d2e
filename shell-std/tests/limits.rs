//! Rate limits (`--max-down`, `--max-up`) measured by a real third-party
//! peer (python3-libtorrent) on 127.0.0.1: its payload counters, sampled
//! every 100 ms, give the rate we achieved over a window in the middle of
//! the transfer (past the first burst and the kernel's socket buffers),
//! which must be the cap ±10 %. Loopback runs at hundreds of MiB/s, so
//! without the cap the window would be far above it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ourtorrent_tests::fixtures::{lt_and_tempdir, lt_leech_from, LtSeeder, OurSeeder};
use ourtorrent_tests::{free_tcp_port, run, run_bounded, write_data};

const BIN: &str = env!("CARGO_BIN_EXE_shell-std");
const MIB: f64 = (1u64 << 20) as f64;
/// The cap under test: 1 MiB/s.
const CAP: &str = "1M";
/// Start of the measuring window after the first payload byte, and its
/// length (seconds).
const SKIP_S: f64 = 1.5;
const WINDOW_S: f64 = 3.0;

/// A single-file torrent of `len` bytes (256 KiB pieces, content from
/// `seed`) in `dir`;
/// returns (torrent, data file).
fn single(dir: &Path, len: usize, seed: u64) -> (std::path::PathBuf, std::path::PathBuf) {
    single_named(dir, "data.bin", len, seed)
}

/// [`single`] with the file (and torrent) named `name`.
fn single_named(
    dir: &Path,
    name: &str,
    len: usize,
    seed: u64,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let data = src.join(name);
    write_data(&data, len, seed);
    let torrent = dir.join("t.torrent");
    run(Command::new(BIN)
        .arg("create")
        .arg(&data)
        .args(["--piece-length", "256K", "-o"])
        .arg(&torrent));
    (torrent, data)
}

/// `PROGRESS t=T wall=W down=D up=U` lines → (t, down, up); with
/// `wall`, W in place of T.
fn samples_by(lines: &[String], wall: bool) -> Vec<(f64, u64, u64)> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("PROGRESS "))
        .filter_map(|l| {
            let mut t = None;
            let mut d = None;
            let mut u = None;
            for kv in l.split_whitespace() {
                match kv.split_once('=') {
                    Some(("t", v)) if !wall => t = v.parse().ok(),
                    Some(("wall", v)) if wall => t = v.parse().ok(),
                    Some(("down", v)) => d = v.parse().ok(),
                    Some(("up", v)) => u = v.parse().ok(),
                    _ => {}
                }
            }
            Some((t?, d?, u?))
        })
        .collect()
}

fn samples(lines: &[String]) -> Vec<(f64, u64, u64)> {
    samples_by(lines, false)
}

/// The counter (`up`) at time `t`, linearly between samples.
fn up_at(s: &[(f64, u64, u64)], t: f64) -> Option<f64> {
    let i = s.iter().position(|x| x.0 >= t)?;
    let b = s.get(i)?;
    let a = s.get(i.checked_sub(1)?)?;
    let f = (t - a.0) / (b.0 - a.0).max(1e-9);
    Some(a.2 as f64 + f * (b.2 as f64 - a.2 as f64))
}

/// The rate (bytes/s) of the counter `pick` over [`WINDOW_S`] seconds,
/// starting [`SKIP_S`] after it first moved; `None` if the samples do not
/// cover the window.
fn window_rate(s: &[(f64, u64, u64)], pick: impl Fn(&(f64, u64, u64)) -> u64) -> Option<f64> {
    let first = s.iter().find(|x| pick(x) > 0)?.0;
    let a = s.iter().find(|x| x.0 >= first + SKIP_S)?;
    let b = s.iter().find(|x| x.0 >= a.0 + WINDOW_S)?;
    Some((pick(b) - pick(a)) as f64 / (b.0 - a.0))
}

fn assert_near_cap(what: &str, rate: f64) {
    let cap = MIB;
    eprintln!(
        "{what}: {:.3} MiB/s against a cap of {:.3} MiB/s ({:+.1} %)",
        rate / MIB,
        cap / MIB,
        (rate / cap - 1.0) * 100.0
    );
    assert!(
        (rate - cap).abs() <= cap * 0.10,
        "{what}: {:.3} MiB/s is not within 10 % of the {:.3} MiB/s cap",
        rate / MIB,
        cap / MIB
    );
}

#[test]
fn libtorrent_seeder_to_our_client_under_max_down() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    // Big enough that the window ends before the download does (the
    // requests we pipeline fill the kernel's buffers first).
    let (torrent, data) = single(d.path(), 9 << 20, 7);
    let src = d.path().join("src");
    // Started once the seeder has reported for a second (`start_warm`).
    let seed = LtSeeder::new(&py, &torrent, &src)
        .opts(&["--progress-every", "0.1"])
        .start_warm();
    let port = seed.port;
    let out = d.path().join("out");
    let (ok, so, se) = run_bounded(
        Command::new(BIN)
            .args(["client", "download", "--no-dht"])
            .arg(&torrent)
            .arg("--out")
            .arg(&out)
            .args(["--listen", "127.0.0.1:0", "--no-trackers", "--no-seed"])
            .args(["--quiet", "--max-down", CAP])
            .arg("--peer")
            .arg(format!("127.0.0.1:{port}")),
        Duration::from_secs(60),
    );
    assert!(ok, "download failed:\n{so}\n{se}");
    assert!(
        std::fs::read(&data).unwrap() == std::fs::read(out.join("data.bin")).unwrap(),
        "data differs"
    );
    // The seeder's upload counter, over the window.
    let s = samples(&seed.drain());
    let rate = window_rate(&s, |x| x.2).unwrap_or_else(|| panic!("too few samples: {s:?}"));
    assert_near_cap("download (libtorrent's upload counter)", rate);
    // Our own add-to-done figure (it includes connecting), for the log.
    if let Some(l) = so.lines().find(|l| l.starts_with("downloaded: ")) {
        eprintln!("ours: {l}");
    }
}

#[test]
fn libtorrent_leecher_from_our_seeder_under_max_up() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (torrent, data) = single(d.path(), 7 << 20, 7);
    let port = free_tcp_port();
    let _seed = OurSeeder::new(BIN)
        .torrent(&torrent, &data)
        .port(port)
        .opts(["--no-dht", "--no-trackers", "--quiet", "--max-up", CAP])
        .start();
    let save = d.path().join("lt");
    let opts = ["--max-seconds", "40", "--progress-every", "0.1"];
    let (ok, so, se) = lt_leech_from(&py, &torrent, &save, port, &opts, Duration::from_secs(50));
    assert!(
        ok && so.contains("DONE"),
        "libtorrent leech failed:\n{so}\n{se}"
    );
    assert!(
        std::fs::read(&data).unwrap() == std::fs::read(save.join("data.bin")).unwrap(),
        "data differs"
    );
    let lines: Vec<String> = so.lines().map(str::to_owned).collect();
    let s = samples(&lines);
    let rate = window_rate(&s, |x| x.1).unwrap_or_else(|| panic!("too few samples: {s:?}"));
    assert_near_cap("upload (libtorrent's download counter)", rate);
}

/// Two torrents in one session under one `--max-down`: the cap holds for
/// both together (the sum of the two libtorrent seeders' upload counters,
/// on the wall clock, over the window).
#[test]
fn libtorrent_two_seeders_two_torrents_share_the_session_cap() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let mut torrents = Vec::new();
    let mut seeds = Vec::new();
    let mut ports = Vec::new();
    for k in 0..2 {
        let dir = d.path().join(format!("t{k}"));
        // Two names: one --out folder holds both.
        let (torrent, _) = single_named(&dir, &format!("data{k}.bin"), 5 << 20, 20 + k);
        let src = dir.join("src");
        let seed = LtSeeder::new(&py, &torrent, &src)
            .opts(&["--progress-every", "0.1"])
            .start();
        torrents.push(torrent);
        ports.push(seed.port);
        seeds.push(seed);
    }
    for s in &seeds {
        s.warm_up();
    }
    let out = d.path().join("out");
    let mut cmd = Command::new(BIN);
    cmd.args(["client", "download", "--no-dht"])
        .args(&torrents)
        .arg("--out")
        .arg(&out)
        .args(["--listen", "127.0.0.1:0", "--no-trackers", "--no-seed"])
        .args(["--quiet", "--max-down", CAP]);
    for p in &ports {
        cmd.arg("--peer").arg(format!("127.0.0.1:{p}"));
    }
    let (ok, so, se) = run_bounded(&mut cmd, Duration::from_secs(60));
    assert!(ok, "download failed:\n{so}\n{se}");
    let s: Vec<Vec<(f64, u64, u64)>> = seeds.iter().map(|p| samples_by(&p.drain(), true)).collect();
    let first = s
        .iter()
        .filter_map(|x| x.iter().find(|y| y.2 > 0).map(|y| y.0))
        .fold(f64::MAX, f64::min);
    let (a, b) = (first + SKIP_S, first + SKIP_S + WINDOW_S);
    let mut total = 0.0;
    for (k, x) in s.iter().enumerate() {
        let (ua, ub) = (up_at(x, a), up_at(x, b));
        let (Some(ua), Some(ub)) = (ua, ub) else {
            panic!("seeder {k}: samples do not cover the window: {x:?}");
        };
        // Both torrents were moving in the window (it is shared).
        assert!(ub > ua, "seeder {k} sent nothing in the window");
        total += ub - ua;
    }
    assert_near_cap(
        "two torrents together (both seeders' upload counters)",
        total / WINDOW_S,
    );
}
