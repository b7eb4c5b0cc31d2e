//! `shell-std create` as a user runs it: every slip in a tracker URL refused
//! before anything is written, the output folder checked first, no
//! overwrite without `--force`, size suffixes for `--piece-length`, and
//! `--source` / `--web-seed` stored where other clients look for them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ourtorrent_core::bencode::{self, DecodeOptions, Token};
use ourtorrent_tests::write_data;

const BIN: &str = env!("CARGO_BIN_EXE_shell-std");

/// A 40 000-byte file to make torrents of.
fn data(dir: &Path) -> PathBuf {
    let p = dir.join("blob.bin");
    write_data(&p, 40_000, 3);
    p
}

fn create(src: &Path, out: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("create")
        .arg(src)
        .args(args)
        .arg("-o")
        .arg(out)
        .output()
        .expect("run shell-std create")
}

/// Asserts a one-line refusal containing `want`, exit code `code`, nothing
/// on stdout.
fn assert_refused(o: &Output, code: i32, want: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(want), "want {want:?} in {err:?}");
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// Files in `dir` other than `keep`.
fn others(dir: &Path, keep: &[&Path]) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !keep.contains(&p.as_path()))
        .collect()
}

/// Decodes `torrent` and returns `f(root)`.
fn with_root<T>(torrent: &Path, f: impl FnOnce(bencode::Value<'_, '_>) -> T) -> T {
    let bytes = std::fs::read(torrent).unwrap();
    let mut toks = vec![Token::EMPTY; 4096];
    let doc = bencode::decode(&bytes, &mut toks, DecodeOptions::default()).unwrap();
    f(doc.root().unwrap())
}

fn info_hash_of(stdout: &[u8]) -> String {
    let s = String::from_utf8_lossy(stdout);
    let ih = s.split("info-hash ").nth(1).expect("info-hash").trim();
    assert_eq!(ih.len(), 40, "{s}");
    ih.to_string()
}

#[test]
fn create_refuses_bad_tracker_urls() {
    let d = tempfile::tempdir().unwrap();
    let src = data(d.path());
    let out = d.path().join("t.torrent");
    let cases = [
        (
            "udp//127.0.0.1:6969/announce",
            "scheme must be followed by \"://\" at byte 3",
        ),
        ("htp://127.0.0.1/announce", "unsupported scheme"),
        ("127.0.0.1:6969", "no scheme"),
        (
            "udp://127.0.0.1:69690",
            "port out of range (1-65535) at byte 16",
        ),
        ("udp://127.0.0.1:0", "port out of range"),
        ("", "empty tracker URL"),
        (
            "udp://127.0.0.1:6969,http://127.0.0.1/announce",
            "several URLs in one",
        ),
        (
            "udp://127.0.0.1:6969 ",
            "space or control character in URL at byte 20",
        ),
        ("udp://:6969", "no host"),
        ("http:///announce", "no host"),
        ("udp://127.0.0.1/announce", "needs a port"),
    ];
    for (url, want) in cases {
        // A good tracker first: the bad one is caught wherever it stands.
        let o = create(
            &src,
            &out,
            &["--tracker", "udp://127.0.0.1:6969", "--tracker", url],
        );
        assert_refused(&o, 1, want);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("--tracker {url:?}")), "{err}");
        assert!(!out.exists(), "{url:?}: output written");
        assert!(others(d.path(), &[&src]).is_empty(), "{url:?}: leftovers");
    }
    // Accepted forms, for contrast.
    for url in [
        "udp://127.0.0.1:6969",
        "http://127.0.0.1/announce?k=1",
        "https://tracker.example:8443/a",
    ] {
        let o = create(&src, &out, &["--force", "--tracker", url]);
        assert!(
            o.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let got = with_root(&out, |r| {
            r.get(b"announce").unwrap().as_str().map(String::from)
        });
        assert_eq!(got.as_deref(), Some(url));
    }
}

#[test]
fn create_refuses_to_overwrite_without_force() {
    let d = tempfile::tempdir().unwrap();
    let src = data(d.path());
    let out = d.path().join("t.torrent");
    let o = create(&src, &out, &["--comment", "first"]);
    assert!(o.status.success());
    let first = std::fs::read(&out).unwrap();

    let o = create(&src, &out, &["--comment", "second"]);
    assert_refused(&o, 1, "file exists (use --force to overwrite it)");
    assert_eq!(std::fs::read(&out).unwrap(), first, "file changed");
    assert!(others(d.path(), &[&src, &out]).is_empty());

    let o = create(&src, &out, &["--comment", "second", "--force"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("created "));
    let comment = with_root(&out, |r| {
        r.get(b"comment").unwrap().as_str().map(String::from)
    });
    assert_eq!(comment.as_deref(), Some("second"));
    assert!(
        others(d.path(), &[&src, &out]).is_empty(),
        "temporary file left"
    );
}

#[test]
fn create_checks_the_output_folder_before_hashing() {
    let d = tempfile::tempdir().unwrap();
    let src = data(d.path());
    let o = create(&src, &d.path().join("missing/t.torrent"), &[]);
    assert_refused(&o, 1, "missing does not exist");
    assert!(!d.path().join("missing").exists());
    // The output is a folder.
    let o = create(&src, d.path(), &["--force"]);
    assert_refused(&o, 1, "is a folder");
    // The output's "folder" is a file.
    let o = create(&src, &src.join("t.torrent"), &[]);
    assert_refused(&o, 1, "is not a folder");
    assert_eq!(others(d.path(), &[&src]), Vec::<PathBuf>::new());
}

#[test]
fn create_piece_length_takes_size_suffixes() {
    let d = tempfile::tempdir().unwrap();
    let src = data(d.path());
    for (arg, want) in [
        ("16KiB", 16 << 10),
        ("256K", 256 << 10),
        ("1M", 1 << 20),
        ("32768", 32 << 10),
    ] {
        let out = d.path().join(format!("{arg}.torrent"));
        let o = create(&src, &out, &["--piece-length", arg]);
        assert!(
            o.status.success(),
            "{arg}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let got = with_root(&out, |r| {
            r.get(b"info")
                .unwrap()
                .get(b"piece length")
                .unwrap()
                .as_int()
        });
        assert_eq!(got, Some(want), "{arg}");
    }
    // Refused by the argument parser (exit code 2, as for any bad flag).
    for (arg, want) in [
        ("1000K", "not a power of two"),
        ("8K", "outside 16K..=256M"),
        ("512M", "outside 16K..=256M"),
        ("1X", "unknown size suffix"),
        ("big", "is not a size"),
    ] {
        let out = d.path().join("bad.torrent");
        let o = create(&src, &out, &["--piece-length", arg]);
        assert_refused(&o, 2, want);
        assert!(!out.exists());
    }
}

#[test]
fn create_stores_source_and_web_seeds() {
    let d = tempfile::tempdir().unwrap();
    let src = data(d.path());
    let plain = d.path().join("plain.torrent");
    let tagged = d.path().join("tagged.torrent");
    let a = create(&src, &plain, &["--no-date"]);
    let b = create(
        &src,
        &tagged,
        &[
            "--no-date",
            "--source",
            "OURTRACKER",
            "--web-seed",
            "http://127.0.0.1:8000/files/",
            "--web-seed",
            "https://mirror.example/blob.bin",
        ],
    );
    assert!(a.status.success() && b.status.success());
    assert_ne!(info_hash_of(&a.stdout), info_hash_of(&b.stdout));
    let (source, seeds) = with_root(&tagged, |r| {
        let source = r
            .get(b"info")
            .unwrap()
            .get(b"source")
            .unwrap()
            .as_str()
            .map(String::from);
        let seeds: Vec<String> = r
            .get(b"url-list")
            .unwrap()
            .as_list()
            .unwrap()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        (source, seeds)
    });
    assert_eq!(source.as_deref(), Some("OURTRACKER"));
    assert_eq!(
        seeds,
        [
            "http://127.0.0.1:8000/files/",
            "https://mirror.example/blob.bin"
        ]
    );
    assert!(with_root(&plain, |r| r.get(b"url-list").is_none()));

    let o = create(
        &src,
        &d.path().join("x.torrent"),
        &["--web-seed", "udp://127.0.0.1:1"],
    );
    assert_refused(&o, 1, "a web seed is an http:// or https:// URL");
    let o = create(
        &src,
        &d.path().join("x.torrent"),
        &["--web-seed", "ftp://h/x"],
    );
    assert_refused(&o, 1, "unsupported scheme");
}
