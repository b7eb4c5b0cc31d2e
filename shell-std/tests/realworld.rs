//! Odd-but-real torrents (issue 15), each built by hand and compared with
//! what python3-libtorrent says about the same file: accepted with the same
//! info-hash and file list (paths on disk may differ only where our rule is
//! documented as safer, docs/PARSERS.md), or refused by both. Then the
//! duplicate-path and unsafe-name torrent is downloaded from a libtorrent
//! seeder, byte-identical, every file under the download folder.
//! `cargo test -p shell-std --test realworld`.

use std::path::{Path, PathBuf};
use std::process::Command;

use ourtorrent_core::pieces::PieceHasher;
use ourtorrent_tests::libtorrent::lt_seeder;
use ourtorrent_tests::{free_tcp_port, lt_script, require_libtorrent, run};
use serde_json::Value as Json;
use shell_std::client::meta::Info;
use shell_std::torrent::TorrentFile;

const BIN: &str = env!("CARGO_BIN_EXE_shell-std");
const PIECE: u64 = 16 << 10;

/// A bencode value; dict keys are sorted on encoding.
enum B {
    I(i64),
    S(Vec<u8>),
    L(Vec<B>),
    D(Vec<(&'static str, B)>),
}

fn enc(b: &B, out: &mut Vec<u8>) {
    match b {
        B::I(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
        B::S(s) => {
            out.extend_from_slice(format!("{}:", s.len()).as_bytes());
            out.extend_from_slice(s);
        }
        B::L(l) => {
            out.push(b'l');
            l.iter().for_each(|v| enc(v, out));
            out.push(b'e');
        }
        B::D(d) => {
            let mut d: Vec<_> = d.iter().collect();
            d.sort_by_key(|(k, _)| *k);
            out.push(b'd');
            for (k, v) in d {
                enc(&B::S(k.as_bytes().to_vec()), out);
                enc(v, out);
            }
            out.push(b'e');
        }
    }
}

fn s(x: impl AsRef<[u8]>) -> B {
    B::S(x.as_ref().to_vec())
}

/// One `files` entry of the torrents below.
struct F {
    path: Option<Vec<Vec<u8>>>,
    len: Option<u64>,
    attr: &'static str,
    symlink: Option<Vec<&'static str>>,
}

fn file(path: &[&[u8]], len: u64) -> F {
    F {
        path: Some(path.iter().map(|c| c.to_vec()).collect()),
        len: Some(len),
        attr: "",
        symlink: None,
    }
}

/// Deterministic data for file `i`.
fn data(i: usize, len: u64) -> Vec<u8> {
    (0..len)
        .map(|j| (j as usize * 31 + i * 7 + 1) as u8)
        .collect()
}

/// A v1 torrent (multi-file if `files`, else one file of `single` bytes)
/// with correct piece hashes for [`data`], plus `tail` after it.
fn torrent(name: &[u8], files: Option<&[F]>, single: u64, tail: &[u8]) -> Vec<u8> {
    let mut stream = Vec::new();
    let mut info = vec![("name", s(name)), ("piece length", B::I(PIECE as i64))];
    match files {
        None => {
            stream = data(0, single);
            info.push(("length", B::I(single as i64)));
        }
        Some(fs) => {
            let mut list = Vec::new();
            for (i, f) in fs.iter().enumerate() {
                let mut d = Vec::new();
                if let Some(p) = &f.path {
                    d.push(("path", B::L(p.iter().map(s).collect())));
                }
                if let Some(l) = f.len {
                    d.push(("length", B::I(l as i64)));
                    if !f.attr.contains('l') {
                        if f.attr.contains('p') {
                            stream.extend(std::iter::repeat_n(0u8, l as usize));
                        } else {
                            stream.extend(data(i, l));
                        }
                    }
                }
                if !f.attr.is_empty() {
                    d.push(("attr", s(f.attr)));
                }
                if let Some(t) = &f.symlink {
                    d.push(("symlink path", B::L(t.iter().map(s).collect())));
                }
                list.push(B::D(d));
            }
            info.push(("files", B::L(list)));
        }
    }
    let mut pieces = Vec::new();
    for chunk in stream.chunks(PIECE as usize) {
        let mut h = PieceHasher::new();
        h.update(chunk);
        pieces.extend_from_slice(&h.finish());
    }
    info.push(("pieces", B::S(pieces)));
    let mut out = Vec::new();
    enc(&B::D(vec![("info", B::D(info))]), &mut out);
    out.extend_from_slice(tail);
    out
}

/// What libtorrent says: its info JSON with "ok", or the refusal.
fn lt_verdict(py: &Path, t: &Path) -> Json {
    let out = run(Command::new(py).arg(lt_script()).arg("verdict").arg(t));
    serde_json::from_str(&out).expect("verdict JSON")
}

/// How we store a file: (path from the download folder, size, symlink).
type Stored = (String, u64, Option<String>);

/// What we say: the files as stored, or the refusal.
fn ours(t: &Path) -> Result<(String, Vec<Stored>), String> {
    let mut tf = TorrentFile::read(t).unwrap();
    let m = tf.parse().map_err(|e| e.to_string())?;
    let info = Info::from_metainfo(&m);
    let files = info
        .files
        .iter()
        .filter(|f| !f.padding)
        .map(|f| {
            let p = f.path.join("/");
            let p = if info.multi_file {
                format!("{}/{p}", info.name)
            } else {
                p
            };
            let link = f.symlink.as_ref().map(|l| match l {
                Ok(t) => format!("{}/{t}", info.name),
                Err(_) => "refused".to_string(),
            });
            (p, f.len, link)
        })
        .collect();
    Ok((m.info_hash().to_string(), files))
}

/// libtorrent's non-padding files as [`Stored`].
fn lt_files(lt: &Json) -> Vec<Stored> {
    lt["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !f[2].as_bool().unwrap())
        .map(|f| {
            (
                f[0].as_str().unwrap().to_string(),
                f[1].as_u64().unwrap(),
                f[3].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// One case: the torrent, and where our stored paths differ from
/// libtorrent's on purpose (index → our path), each a documented rule.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    differs: Vec<(usize, &'static str)>,
}

fn case(name: &'static str, bytes: Vec<u8>, differs: &[(usize, &'static str)]) -> Case {
    Case {
        name,
        bytes,
        differs: differs.to_vec(),
    }
}

fn cases() -> Vec<Case> {
    let long = [b"x".repeat(300), b".mkv".to_vec()].concat();
    let link = |path: &'static [u8], target: Vec<&'static str>, len: Option<u64>| F {
        path: Some(vec![path.to_vec()]),
        len,
        attr: "l",
        symlink: Some(target),
    };
    vec![
        // Trailing bytes after the top-level dict.
        case("trailing_newline", torrent(b"t", None, 5, b"\n"), &[]),
        case("trailing_junk", torrent(b"t", None, 5, b"\r\nxyz"), &[]),
        // Unsafe names. libtorrent drops `..`, `.` and separators; we
        // replace them (rule: replace, never drop), so paths keep their
        // depth and cannot collide.
        case(
            "dot_dot",
            torrent(b"t", Some(&[file(&[b"..", b"evil"], 5)]), 0, b""),
            &[(0, "t/__/evil")],
        ),
        case(
            "separator_in_component",
            torrent(
                b"t",
                Some(&[file(&[b"a/b"], 5), file(&[b"c\\d"], 5)]),
                0,
                b"",
            ),
            &[(0, "t/a_b"), (1, "t/c_d")],
        ),
        case(
            "absolute",
            torrent(b"t", Some(&[file(&[b"/etc", b"passwd"], 5)]), 0, b""),
            &[(0, "t/_etc/passwd")],
        ),
        case(
            "empty_component",
            torrent(b"t", Some(&[file(&[b"a", b"", b"b"], 5)]), 0, b""),
            &[],
        ),
        // Drive letters: libtorrent keeps `C:` on Linux; we never write one.
        case(
            "drive",
            torrent(b"t", Some(&[file(&[b"C:", b"x"], 5)]), 0, b""),
            &[(0, "t/C_/x")],
        ),
        case(
            "control_and_invalid_utf8",
            torrent(b"t", Some(&[file(&[b"a\x01b\nc", b"d\xffe"], 5)]), 0, b""),
            &[],
        ),
        // Bidi controls: libtorrent drops them; we replace them.
        case(
            "bidi",
            torrent(
                b"t",
                Some(&[file(&["a\u{202e}txt.exe".as_bytes()], 5)]),
                0,
                b"",
            ),
            &[(0, "t/a_txt.exe")],
        ),
        // Too long: libtorrent cuts at 240 bytes; we at the 255-byte limit.
        case(
            "long_name",
            torrent(b"t", Some(&[file(&[&long], 5)]), 0, b""),
            &[(0, "LONG")],
        ),
        case(
            "unsafe_torrent_name",
            torrent(b"/tmp", Some(&[file(&[b"a"], 5)]), 0, b""),
            &[(0, "_tmp/a")],
        ),
        case("single_file_named_dots", torrent(b"..", None, 5, b""), &[]),
        // Duplicates (also equal but for case, or a file where a folder is).
        case(
            "duplicates",
            torrent(
                b"t",
                Some(&[
                    file(&[b"a.txt"], 5),
                    file(&[b"a.txt"], 7),
                    file(&[b"A.TXT"], 9),
                    file(&[b"d"], 3),
                    file(&[b"d", b"x"], 4),
                ]),
                0,
                b"",
            ),
            &[],
        ),
        // BEP 47.
        case(
            "bep47",
            torrent(
                b"t",
                Some(&[
                    file(&[b"a"], 5),
                    F {
                        path: None,
                        len: Some(PIECE - 5),
                        attr: "p",
                        symlink: None,
                    },
                    link(b"l", vec!["a"], None),
                    link(b"l5", vec!["a"], Some(5)),
                    F {
                        attr: "xh",
                        ..file(&[b"run"], 3)
                    },
                ]),
                0,
                b"",
            ),
            &[],
        ),
        // An escaping symlink: libtorrent points it at itself; we refuse
        // the entry (not created) and keep the rest.
        case(
            "escaping_symlink",
            torrent(
                b"t",
                Some(&[
                    file(&[b"a"], 5),
                    link(b"up", vec!["..", "..", "etc"], None),
                    link(b"abs", vec!["/etc"], None),
                ]),
                0,
                b"",
            ),
            &[(1, "REFUSED"), (2, "REFUSED")],
        ),
        case("zero_length_single", torrent(b"t", None, 0, b""), &[]),
        case(
            "zero_length_multi",
            torrent(b"t", Some(&[file(&[b"a"], 0), file(&[b"b"], 0)]), 0, b""),
            &[],
        ),
    ]
}

#[test]
fn libtorrent_agrees_on_odd_torrents() {
    let Some(py) = require_libtorrent() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let mut seen_refusal = 0;
    for c in cases() {
        let t = d.path().join(format!("{}.torrent", c.name));
        std::fs::write(&t, &c.bytes).unwrap();
        let lt = lt_verdict(&py, &t);
        let us = ours(&t);
        if !lt["ok"].as_bool().unwrap() {
            assert!(
                us.is_err(),
                "{}: libtorrent refused ({}), we accepted",
                c.name,
                lt["error"]
            );
            seen_refusal += 1;
            continue;
        }
        let (ih, mut files) = us.unwrap_or_else(|e| panic!("{}: we refused: {e}", c.name));
        assert_eq!(ih, lt["info_hash"].as_str().unwrap(), "{}", c.name);
        let mut theirs = lt_files(&lt);
        assert_eq!(files.len(), theirs.len(), "{}", c.name);
        for &(i, why) in &c.differs {
            match why {
                "REFUSED" => {
                    assert_eq!(files[i].2.as_deref(), Some("refused"), "{}", c.name);
                    files[i].2 = None;
                    theirs[i].2 = None;
                }
                "LONG" => {
                    let last = files[i].0.rsplit('/').next().unwrap();
                    assert_eq!(last.len(), 255, "{}", c.name);
                    assert!(last.ends_with("x.mkv"));
                    theirs[i].0 = files[i].0.clone();
                }
                ours_path => {
                    assert_eq!(files[i].0, ours_path, "{}", c.name);
                    assert_ne!(theirs[i].0, ours_path, "{}: no longer differs", c.name);
                    theirs[i].0 = files[i].0.clone();
                }
            }
        }
        assert_eq!(files, theirs, "{}", c.name);
    }
    assert_eq!(
        seen_refusal, 3,
        "zero-length ×2 and the single file named .."
    );
}

#[test]
fn libtorrent_agrees_on_broken_hybrid_torrents() {
    let Some(py) = require_libtorrent() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("tree");
    ourtorrent_tests::make_tree(&src);
    let good = d.path().join("hybrid.torrent");
    run(Command::new(&py)
        .arg(lt_script())
        .args(["create"])
        .arg(&src)
        .arg(&good)
        .args(["--piece-size", "16384"]));
    // Well-formed hybrids, multi- and single-file: same info-hash.
    let single = d.path().join("single.torrent");
    run(Command::new(&py)
        .arg(lt_script())
        .args(["create"])
        .arg(src.join("a.bin"))
        .arg(&single)
        .args(["--piece-size", "16384"]));
    for t in [&good, &single] {
        let lt = lt_verdict(&py, t);
        assert!(lt["ok"].as_bool().unwrap());
        let (ih, _) = ours(t).unwrap();
        assert_eq!(ih, lt["info_hash"].as_str().unwrap());
    }
    let bad = d.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    run(Command::new(&py)
        .arg(lt_script())
        .arg("mutate-hybrid")
        .arg(&good)
        .arg(&bad));
    let mut n = 0;
    for e in std::fs::read_dir(&bad).unwrap() {
        let t = e.unwrap().path();
        let lt = lt_verdict(&py, &t);
        assert!(
            !lt["ok"].as_bool().unwrap(),
            "{}: libtorrent accepted",
            t.display()
        );
        let err = ours(&t).expect_err("we accepted a broken hybrid");
        assert!(err.contains("hybrid torrent"), "{}: {err}", t.display());
        n += 1;
    }
    assert_eq!(n, 8);
}

#[test]
fn strict_paths_refuses_what_the_default_renames() {
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("t.torrent");
    std::fs::write(
        &t,
        torrent(b"t", Some(&[file(&[b"..", b"evil"], 5)]), 0, b""),
    )
    .unwrap();
    let out = run(Command::new(BIN).arg("info").arg(&t));
    assert!(out.contains("renamed: \"../evil\" → __/evil"), "{out}");
    assert!(out.contains("t/__/evil"), "{out}");
    let o = Command::new(BIN)
        .args(["info", "--strict-paths"])
        .arg(&t)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("'.' or '..' path component"), "{err}");
}

/// Every path under `dir` (not following symlinks).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            walk(&p, out);
        }
    }
}

#[test]
fn libtorrent_seeder_to_our_client_with_duplicate_and_unsafe_paths() {
    let Some(py) = require_libtorrent() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let files = [
        file(&[b"a.txt"], 20_000),
        file(&[b"a.txt"], 30_000),
        file(&[b"A.TXT"], 1_000),
        file(&[b"..", b"up.bin"], 17_000),
        F {
            attr: "x",
            ..file(&[b"run.sh"], 100)
        },
        F {
            path: Some(vec![b"link".to_vec()]),
            len: None,
            attr: "l",
            symlink: Some(vec!["a.txt"]),
        },
        F {
            path: Some(vec![b"evil".to_vec()]),
            len: None,
            attr: "l",
            symlink: Some(vec!["..", "..", "..", "etc"]),
        },
    ];
    let t = d.path().join("t.torrent");
    std::fs::write(&t, torrent(b"t", Some(&files), 0, b"\n")).unwrap();
    // The seeder's data, at libtorrent's own paths for these files.
    let lt = lt_verdict(&py, &t);
    assert!(lt["ok"].as_bool().unwrap(), "{lt}");
    let seed = d.path().join("seed");
    for (i, f) in lt["files"].as_array().unwrap().iter().enumerate() {
        if f[3].is_null() {
            let p = seed.join(f[0].as_str().unwrap());
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, data(i, f[1].as_u64().unwrap())).unwrap();
        }
    }
    let port = free_tcp_port();
    let _seeder = lt_seeder(&py, &t, &seed, port);
    let out = d.path().join("out");
    let o = Command::new(BIN)
        .args(["client", "download", "--no-dht"])
        .arg(&t)
        .arg("--out")
        .arg(&out)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-trackers",
            "--no-seed",
            "--quiet",
        ])
        .arg("--peer")
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    let so = String::from_utf8_lossy(&o.stdout);
    let se = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "download failed:\n{so}\n{se}");
    // Both copies of a.txt (and the case-twin) intact, in three files.
    let root = out.join("t");
    for (i, rel) in [
        (0, "a.txt"),
        (1, "a.1.txt"),
        (2, "A.2.TXT"),
        (3, "__/up.bin"),
    ] {
        let got = std::fs::read(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(got == data(i, files[i].len.unwrap()), "{rel} differs");
    }
    for want in [
        "renamed: \"a.txt\" → a.1.txt",
        "renamed: \"../up.bin\" → __/up.bin",
    ] {
        assert!(so.contains(want), "{want:?} not in:\n{so}");
    }
    // x → executable; the safe link points inside; the escaping one is
    // refused with a warning.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o100, 0o100, "{mode:o}");
    assert_eq!(
        std::fs::read_link(root.join("link")).unwrap(),
        Path::new("a.txt")
    );
    assert_eq!(std::fs::read(root.join("link")).unwrap(), data(0, 20_000));
    assert!(std::fs::symlink_metadata(root.join("evil")).is_err());
    assert!(se.contains("evil: symlink not created"), "{se}");
    // Nothing outside the download folder, every link resolving inside.
    let mut all = Vec::new();
    walk(&out, &mut all);
    let canon_root = root.canonicalize().unwrap();
    for p in &all {
        assert!(p.starts_with(&out));
        if let Ok(r) = p.canonicalize() {
            assert!(
                r.starts_with(&canon_root),
                "{} → {}",
                p.display(),
                r.display()
            );
        }
    }
    assert!(!d.path().join("up.bin").exists());
}
