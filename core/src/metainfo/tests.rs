//! Metainfo tests: inline torrents for the happy paths and every refusal.

use super::*;
use std::format;
use std::string::String;
use std::vec::Vec;

/// `20 * n` bytes of piece hashes as a bencoded string.
fn pieces(n: usize) -> String {
    format!("{}:{}", 20 * n, "a".repeat(20 * n))
}

fn single(length: i64, piece_len: i64, n: usize) -> Vec<u8> {
    format!(
        "d8:announce18:http://t.example/a4:infod6:lengthi{length}e4:name5:a.txt12:piece lengthi{piece_len}e6:pieces{}ee",
        pieces(n)
    )
    .into_bytes()
}

fn multi(files: &str, piece_len: i64, n: usize) -> Vec<u8> {
    format!(
        "d4:infod5:filesl{files}e4:name3:dir12:piece lengthi{piece_len}e6:pieces{}ee",
        pieces(n)
    )
    .into_bytes()
}

fn parse(input: &[u8]) -> Result<(InfoHash, u64, usize), Error> {
    let mut toks = [Token::EMPTY; 256];
    Metainfo::parse(input, &mut toks, &Limits::default())
        .map(|m| (m.info_hash(), m.total_length(), m.piece_count()))
}

fn kind(input: &[u8]) -> ErrorKind {
    parse(input).unwrap_err().kind
}

fn strict() -> Limits {
    Limits {
        strict_paths: true,
        ..Limits::default()
    }
}

fn strict_kind(input: &[u8]) -> ErrorKind {
    let mut toks = [Token::EMPTY; 256];
    Metainfo::parse(input, &mut toks, &strict())
        .unwrap_err()
        .kind
}

/// A file's safe path as a `String`.
fn path_of(f: &File<'_, '_>) -> String {
    let mut buf = [0u8; 4096];
    String::from(f.path_into(&mut buf).unwrap().path)
}

/// Every safe path of `t` (default limits, `min_piece_length` 16).
fn paths(t: &[u8]) -> Vec<(String, bool)> {
    let mut toks = [Token::EMPTY; 256];
    let limits = Limits {
        min_piece_length: 16,
        ..Limits::default()
    };
    let m = Metainfo::parse(t, &mut toks, &limits).unwrap();
    let mut buf = [0u8; 4096];
    m.files()
        .map(|f| {
            let p = f.path_into(&mut buf).unwrap();
            (String::from(p.path), p.changed)
        })
        .collect()
}

#[test]
fn single_file() {
    let t = single(40_000, 16_384, 3);
    let mut toks = [Token::EMPTY; 64];
    let m = Metainfo::parse(&t, &mut toks, &Limits::default()).unwrap();
    assert_eq!(m.name(), "a.txt");
    assert_eq!(m.total_length(), 40_000);
    assert_eq!(m.piece_count(), 3);
    assert_eq!(m.piece_size(2), Some(40_000 - 2 * 16_384));
    assert_eq!(m.piece_size(3), None);
    assert_eq!(m.piece_hash(2), Some([b'a'; 20]));
    assert_eq!(m.piece_hash(3), None);
    assert!(!m.is_multi_file());
    assert!(!m.is_private());
    let files: Vec<_> = m.files().collect();
    assert_eq!(files.len(), 1);
    assert_eq!(path_of(&files[0]), "a.txt");
    assert_eq!(
        m.trackers().collect::<Vec<_>>(),
        [(0, "http://t.example/a")]
    );
    // The info-hash is SHA-1 of the exact info bytes.
    let start = t.windows(6).position(|w| w == b"4:info").unwrap() + 6;
    let info = &t[start..t.len() - 1];
    assert_eq!(m.info_bytes(), info);
    assert_eq!(m.info_hash().0, <[u8; 20]>::from(Sha1::digest(info)));
}

#[test]
fn multi_file_offsets_and_attr() {
    let files = "d6:lengthi10e4:pathl1:a1:bee\
                 d4:attr1:p6:lengthi6e4:pathl4:.pad1:6ee\
                 d6:lengthi20e4:pathl1:cee";
    let t = multi(files, 16, 3);
    let mut toks = [Token::EMPTY; 64];
    let m = Metainfo::parse(
        &t,
        &mut toks,
        &Limits {
            min_piece_length: 16,
            ..Limits::default()
        },
    )
    .unwrap();
    assert!(m.is_multi_file());
    assert_eq!(m.file_count(), 3);
    assert_eq!(m.total_length(), 36);
    let f: Vec<_> = m.files().collect();
    assert_eq!(path_of(&f[0]), "a/b");
    assert_eq!((f[1].offset, f[1].is_padding()), (10, true));
    assert_eq!(
        (f[2].offset, f[2].length, f[2].is_padding()),
        (16, 20, false)
    );
}

#[test]
fn announce_list_overrides_announce() {
    let t = b"d8:announce3:one13:announce-listll3:two5:threeel4:fouree4:infod6:lengthi1e4:name1:x12:piece lengthi1024e6:pieces20:aaaaaaaaaaaaaaaaaaaa7:privatei1eee";
    let mut toks = [Token::EMPTY; 64];
    let m = Metainfo::parse(t, &mut toks, &Limits::default()).unwrap();
    assert_eq!(
        m.trackers().collect::<Vec<_>>(),
        [(0, "two"), (0, "three"), (1, "four")]
    );
    assert!(m.is_private());
}

#[test]
fn piece_count_and_length_edges() {
    // Exactly one piece's worth, then one byte more needs a second hash.
    assert!(parse(&single(16_384, 16_384, 1)).is_ok());
    assert_eq!(
        kind(&single(16_385, 16_384, 1)),
        ErrorKind::PieceCountMismatch
    );
    assert!(parse(&single(16_385, 16_384, 2)).is_ok());
    assert_eq!(kind(&single(10, 16_384, 2)), ErrorKind::PieceCountMismatch);
    // Piece length limits.
    assert_eq!(kind(&single(1, 0, 1)), ErrorKind::BadPieceLength);
    assert_eq!(kind(&single(1, -16384, 1)), ErrorKind::BadPieceLength);
    assert!(parse(&single(1, DEFAULT_MIN_PIECE_LENGTH as i64, 1)).is_ok());
    assert_eq!(
        kind(&single(1, DEFAULT_MIN_PIECE_LENGTH as i64 - 1, 1)),
        ErrorKind::BadPieceLength
    );
    assert!(parse(&single(1, DEFAULT_MAX_PIECE_LENGTH as i64, 1)).is_ok());
    assert_eq!(
        kind(&single(1, DEFAULT_MAX_PIECE_LENGTH as i64 + 1, 1)),
        ErrorKind::BadPieceLength
    );
    // pieces not a multiple of 20.
    let t = b"d4:infod6:lengthi1e4:name1:x12:piece lengthi1024e6:pieces19:aaaaaaaaaaaaaaaaaaaee";
    assert_eq!(
        parse(t).unwrap_err(),
        Error {
            kind: ErrorKind::PiecesNotMultipleOf20,
            offset: 57
        }
    );
}

#[test]
fn lengths() {
    assert_eq!(kind(&single(-1, 16_384, 0)), ErrorKind::NegativeLength);
    let files = format!(
        "d6:lengthi{}e4:pathl1:aeed6:lengthi1e4:pathl1:bee",
        i64::MAX
    );
    // 2 * i64::MAX + 1 = u64::MAX still fits; one byte more does not.
    let fits = format!("{files}d6:lengthi{}e4:pathl1:cee", i64::MAX);
    assert_eq!(
        kind(&multi(&fits, 1 << 20, 0)),
        ErrorKind::PieceCountMismatch
    );
    let three = format!("{fits}d6:lengthi1e4:pathl1:dee");
    assert_eq!(kind(&multi(&three, 1 << 20, 0)), ErrorKind::LengthOverflow);
    assert_eq!(
        kind(&multi("d6:lengthi-5e4:pathl1:aee", 1024, 0)),
        ErrorKind::NegativeLength
    );
}

#[test]
fn layout_errors() {
    let both = b"d4:infod5:filesld6:lengthi1e4:pathl1:aeee6:lengthi1e4:name1:x12:piece lengthi1024e6:pieces20:aaaaaaaaaaaaaaaaaaaaee";
    assert_eq!(kind(both), ErrorKind::AmbiguousLayout);
    let neither = b"d4:infod4:name1:x12:piece lengthi1024e6:pieces0:ee";
    assert_eq!(kind(neither), ErrorKind::AmbiguousLayout);
    assert_eq!(kind(&multi("", 1024, 0)), ErrorKind::Missing("files"));
    assert_eq!(kind(b"d4:infoi1ee"), ErrorKind::WrongType("info"));
    assert_eq!(kind(b"le"), ErrorKind::WrongType("root"));
    assert_eq!(kind(b"de"), ErrorKind::Missing("info"));
    assert_eq!(
        kind(b"d4:infod4:name1:x12:piece lengthi1024e9:file treedeee"),
        ErrorKind::V2Only
    );
    assert_eq!(
        kind(b"d4:info"),
        ErrorKind::Bencode(bencode::ErrorKind::UnexpectedEnd)
    );
}

#[test]
fn path_refusals() {
    let cases: &[(&str, PathError)] = &[
        ("0:", PathError::Empty),
        ("1:.", PathError::Dots),
        ("2:..", PathError::Dots),
        ("5:a/../", PathError::Separator),
        ("4:/etc", PathError::Separator),
        ("3:a\\b", PathError::Separator),
        ("3:a\0b", PathError::Nul),
        ("2:C:", PathError::Drive),
        ("3:...", PathError::Dots),
        ("3:.. ", PathError::Dots),
        ("2:. ", PathError::Dots),
        ("1: ", PathError::Empty),
        ("3:a\u{1}b", PathError::Control),
        ("3:a\u{7f}b", PathError::Control),
        ("1:\n", PathError::Control),
    ];
    for (comp, want) in cases {
        let files = format!("d6:lengthi1e4:pathl1:a{comp}ee");
        let t = multi(&files, 1024, 1);
        assert_eq!(strict_kind(&t), ErrorKind::BadPath(*want), "{comp:?}");
        // Sanitized by default: one changed, safe component.
        let p = paths(&t);
        let last = p[0].0.rsplit('/').next().unwrap();
        assert!(p[0].1 && check_component(last.as_bytes()).is_ok(), "{p:?}");
        // The same in the name.
        let t = format!(
            "d4:infod6:lengthi1e4:name{comp}12:piece lengthi1024e6:pieces{}ee",
            pieces(1)
        );
        assert_eq!(
            strict_kind(t.as_bytes()),
            ErrorKind::BadPath(*want),
            "name {comp:?}"
        );
    }
    let mut t = multi("d6:lengthi1e4:pathl1:Xee", 1024, 1);
    let at = t.iter().position(|&b| b == b'X').unwrap();
    t[at] = 0xff;
    assert_eq!(strict_kind(&t), ErrorKind::BadPath(PathError::NotUtf8));
    assert_eq!(paths(&t), [("_".into(), true)]);
    // Component length edge.
    let ok = format!("{}:{}", MAX_COMPONENT_LEN, "x".repeat(MAX_COMPONENT_LEN));
    assert!(parse(&multi(&format!("d6:lengthi1e4:pathl{ok}ee"), 1024, 1)).is_ok());
    let long = format!(
        "{}:{}",
        MAX_COMPONENT_LEN + 1,
        "x".repeat(MAX_COMPONENT_LEN + 1)
    );
    assert_eq!(
        strict_kind(&multi(&format!("d6:lengthi1e4:pathl{long}ee"), 1024, 1)),
        ErrorKind::BadPath(PathError::TooLong)
    );
    assert_eq!(
        paths(&multi(&format!("d6:lengthi1e4:pathl{long}ee"), 1024, 1))[0].0,
        "x".repeat(MAX_COMPONENT_LEN)
    );
    assert_eq!(
        kind(&multi("d6:lengthi1e4:pathlee", 1024, 1)),
        ErrorKind::EmptyPath
    );
}

#[test]
fn repeated_keys_that_change_meaning_are_refused() {
    // First-wins would see 1 byte, last-wins 99999 bytes, same info-hash.
    let t = format!(
        "d4:infod6:lengthi1e6:lengthi99999e4:name1:x12:piece lengthi1024e6:pieces{}ee",
        pieces(1)
    );
    assert_eq!(
        parse(t.as_bytes()).unwrap_err(),
        Error {
            kind: ErrorKind::DuplicateKey("length"),
            offset: 27
        }
    );
    let t = multi("d6:lengthi1e4:pathl1:ae4:pathl1:bee", 1024, 1);
    assert_eq!(kind(&t), ErrorKind::DuplicateKey("path"));
    let t = format!(
        "d4:infod6:lengthi1e4:name1:x12:piece lengthi1024e6:pieces{}e4:infodee",
        pieces(1)
    );
    assert_eq!(kind(t.as_bytes()), ErrorKind::DuplicateKey("info"));
    // Keys we do not read may repeat (lenient, as real torrents need).
    let t = format!(
        "d4:infod1:zi1e1:zi2e6:lengthi1e4:name1:x12:piece lengthi1024e6:pieces{}ee",
        pieces(1)
    );
    assert!(parse(t.as_bytes()).is_ok());
}

#[test]
fn depth_and_file_count_limits() {
    let limits = Limits {
        max_path_depth: 3,
        max_files: 2,
        ..Limits::default()
    };
    let mut toks = [Token::EMPTY; 64];
    let three = multi("d6:lengthi1e4:pathl1:a1:b1:cee", 1024, 1);
    assert!(Metainfo::parse(&three, &mut toks, &limits).is_ok());
    let four = multi("d6:lengthi1e4:pathl1:a1:b1:c1:dee", 1024, 1);
    assert_eq!(
        Metainfo::parse(&four, &mut toks, &limits).unwrap_err().kind,
        ErrorKind::PathTooDeep
    );
    let two = multi("d6:lengthi1e4:pathl1:aeed6:lengthi1e4:pathl1:bee", 1024, 1);
    assert!(Metainfo::parse(&two, &mut toks, &limits).is_ok());
    let f3 = multi(
        "d6:lengthi1e4:pathl1:aeed6:lengthi1e4:pathl1:beed6:lengthi1e4:pathl1:cee",
        1024,
        1,
    );
    assert_eq!(
        Metainfo::parse(&f3, &mut toks, &limits).unwrap_err().kind,
        ErrorKind::TooManyFiles
    );
}

#[test]
fn unsorted_keys_are_accepted_and_hashed_raw() {
    // Real-world torrents with keys out of order: lenient decode, raw hash.
    let t = format!(
        "d4:infod4:name1:x6:lengthi1e12:piece lengthi1024e6:pieces{}ee",
        pieces(1)
    );
    let (h, total, n) = parse(t.as_bytes()).unwrap();
    assert_eq!((total, n), (1, 1));
    let info = &t.as_bytes()[7..t.len() - 1];
    assert_eq!(h.0, <[u8; 20]>::from(Sha1::digest(info)));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut toks = [Token::EMPTY; 64];
            let _ = Metainfo::parse(&data, &mut toks, &Limits::default());
        }

        #[test]
        fn mutated_torrent_never_panics(pos in 0usize..200, byte in any::<u8>()) {
            let mut t = multi("d6:lengthi10e4:pathl1:a1:beed6:lengthi20e4:pathl1:cee", 1024, 1);
            let i = pos % t.len();
            t[i] = byte;
            let mut toks = [Token::EMPTY; 64];
            if let Ok(m) = Metainfo::parse(&t, &mut toks, &Limits::default()) {
                prop_assert_eq!(m.files().map(|f| f.length).sum::<u64>(), m.total_length());
            }
        }
    }
}

fn sanitized(raw: &[u8]) -> (String, bool) {
    let mut out = [0u8; MAX_COMPONENT_LEN];
    let s = sanitize_component(raw, &mut out);
    (String::from(s.name), s.changed)
}

#[test]
fn sanitize_rules() {
    let cases: &[(&[u8], &str)] = &[
        (b"plain.txt", "plain.txt"),
        (b"", "_"),
        (b".", "_"),
        (b"..", "__"),
        (b"...", "___"),
        (b".. ", "___"),
        (b" ", "_"),
        (b".hidden", ".hidden"),
        (b"a/../b", "a_.._b"),
        (b"/etc", "_etc"),
        (b"a\\b", "a_b"),
        (b"a\0b", "a_b"),
        (b"C:", "C_"),
        (b"C:x", "C_x"),
        (b"1:x", "1:x"),
        (b"a:b", "a_b"),
        (b"a\x01b\nc\x7f", "a_b_c_"),
        (b"a\xffb", "a_b"),
        (b"a\xe2\x80b", "a_b"),
        ("a\u{202e}txt.exe".as_bytes(), "a_txt.exe"),
        ("caf\u{e9}".as_bytes(), "caf\u{e9}"),
    ];
    for (raw, want) in cases {
        let (got, changed) = sanitized(raw);
        assert_eq!(got, *want, "{raw:?}");
        assert_eq!(changed, raw != &want.as_bytes(), "{raw:?}");
        assert_eq!(check_component(raw).is_ok(), !changed, "{raw:?}");
        assert!(check_component(got.as_bytes()).is_ok(), "{got:?}");
    }
}

#[test]
fn sanitize_cuts_long_names_on_a_char_boundary_keeping_the_extension() {
    // Exactly the limit: unchanged; one byte more: cut.
    let max = "x".repeat(MAX_COMPONENT_LEN);
    assert_eq!(sanitized(max.as_bytes()), (max.clone(), false));
    let long = format!("{max}y.mkv");
    let (got, changed) = sanitized(long.as_bytes());
    assert!(changed);
    assert_eq!(got.len(), MAX_COMPONENT_LEN);
    assert!(got.ends_with("x.mkv"));
    // Two-byte characters: the cut never splits one.
    let e = format!("{}.txt", "\u{e9}".repeat(200));
    let (got, _) = sanitized(e.as_bytes());
    assert!(got.len() <= MAX_COMPONENT_LEN && got.ends_with(".txt"));
    assert_eq!(got.len(), 250 + 4); // 125 é (2 bytes) + ".txt"
                                    // An extension longer than MAX_EXTENSION_LEN is not kept.
    let ext = format!("{max}.{}", "e".repeat(MAX_EXTENSION_LEN));
    assert_eq!(sanitized(ext.as_bytes()).0, max);
    let ext = format!("{max}.{}", "e".repeat(MAX_EXTENSION_LEN - 1));
    assert!(sanitized(ext.as_bytes()).0.ends_with(&"e".repeat(15)));
    // Cutting a run of dots cannot make `..`-like names.
    let dots = format!("{}x{}", ".".repeat(300), ".");
    let (got, _) = sanitized(dots.as_bytes());
    assert!(check_component(got.as_bytes()).is_ok(), "{got:?}");
}

#[test]
fn renames_like_libtorrent() {
    let mut buf = [0u8; 600];
    assert_eq!(renamed("a.txt", 1, &mut buf), Some("a.1.txt"));
    assert_eq!(renamed("d/a", 12, &mut buf), Some("d/a.12"));
    assert_eq!(renamed("d.x/a", 2, &mut buf), Some("d.x/a.2"));
    assert_eq!(renamed(".hidden", 1, &mut buf), Some(".hidden.1"));
    // A name at the limit stays within it.
    let long = format!("{}.mkv", "x".repeat(MAX_COMPONENT_LEN - 4));
    let r = renamed(&long, 1, &mut buf).unwrap();
    assert_eq!(r.len(), MAX_COMPONENT_LEN);
    assert!(r.ends_with("x.1.mkv"));
    assert_eq!(renamed("abc", 1, &mut [0u8; 4]), None);

    let taken = ["a.txt", "a.1.txt"];
    let (p, k) = unique_path("A.TXT", &mut buf, |q| {
        taken.iter().any(|t| t.eq_ignore_ascii_case(q))
    })
    .unwrap();
    assert_eq!((p, k), ("A.2.TXT", 2));
    assert_eq!(unique_path("b", &mut buf, |_| false).unwrap(), ("b", 0));
    assert_eq!(
        unique_path("b", &mut buf, |_| true).unwrap_err(),
        UniqueError::TooManyDuplicates
    );
    assert_eq!(
        unique_path("bbbbbbb", &mut [0u8; 3], |_| false).unwrap_err(),
        UniqueError::BufferTooSmall
    );
}

#[test]
fn unsafe_names_and_single_file_names() {
    // A multi-file torrent named `..` is stored as `__`.
    let t = format!(
        "d4:infod5:filesld6:lengthi1e4:pathl1:aeee4:name2:..12:piece lengthi1024e6:pieces{}ee",
        pieces(1)
    );
    let mut toks = [Token::EMPTY; 64];
    let m = Metainfo::parse(t.as_bytes(), &mut toks, &Limits::default()).unwrap();
    assert_eq!(
        (m.name(), m.name_changed(), m.raw_name()),
        ("__", true, &b".."[..])
    );
    // A single file needs a name (libtorrent: "missing name").
    for name in ["1:.", "2:..", "0:", "1: "] {
        let t = format!(
            "d4:infod6:lengthi1e4:name{name}12:piece lengthi1024e6:pieces{}ee",
            pieces(1)
        );
        assert!(
            matches!(kind(t.as_bytes()), ErrorKind::BadPath(_)),
            "{name}"
        );
    }
    let t = format!(
        "d4:infod6:lengthi1e4:name4:/etc12:piece lengthi1024e6:pieces{}ee",
        pieces(1)
    );
    assert_eq!(paths(t.as_bytes()), [("_etc".into(), true)]);
}

#[test]
fn zero_length_torrents_are_refused() {
    assert_eq!(kind(&single(0, 16_384, 0)), ErrorKind::ZeroLength);
    let files = "d6:lengthi0e4:pathl1:aeed6:lengthi0e4:pathl1:bee";
    assert_eq!(kind(&multi(files, 1024, 0)), ErrorKind::ZeroLength);
    // One byte is enough.
    assert!(parse(&single(1, 16_384, 1)).is_ok());
}

#[test]
fn trailing_bytes_after_the_torrent_keep_the_info_hash() {
    let t = single(40_000, 16_384, 3);
    let clean = parse(&t).unwrap();
    for tail in [&b"\n"[..], b"\r\n", b"garbage", b"de"] {
        let mut u = t.clone();
        u.extend_from_slice(tail);
        assert_eq!(parse(&u).unwrap(), clean, "{tail:?}");
    }
}

#[test]
fn bep47_attributes() {
    // A padding file without `path`, a symlink without `length`, and one
    // with a `length` that is ignored; x and h.
    let files = "d6:lengthi16e4:pathl1:aee\
                 d4:attr1:p6:lengthi6ee\
                 d4:attr1:l4:pathl4:linke12:symlink pathl1:aee\
                 d4:attr1:l6:lengthi99e4:pathl3:bade12:symlink pathl2:..3:etcee\
                 d4:attr2:xh6:lengthi2e4:pathl3:runee";
    let t = multi(files, 16, 2);
    let mut toks = [Token::EMPTY; 128];
    let limits = Limits {
        min_piece_length: 16,
        ..Limits::default()
    };
    let m = Metainfo::parse(&t, &mut toks, &limits).unwrap();
    assert_eq!(m.total_length(), 24);
    let f: Vec<_> = m.files().collect();
    assert!(f[1].is_padding() && f[1].raw_path().count() == 0);
    let mut buf = [0u8; 64];
    assert!(f[0].symlink_into(&mut buf).is_none());
    assert_eq!((f[2].length, f[2].is_symlink()), (0, true));
    assert_eq!(f[2].symlink_into(&mut buf), Some(Ok("a")));
    assert_eq!(f[3].length, 0);
    assert_eq!(f[3].symlink_into(&mut buf), Some(Err(PathError::Dots)));
    assert!(f[4].is_executable() && f[4].is_hidden() && f[4].offset == 22);
    // A file without `path` that is not padding is still refused.
    let t = multi("d6:lengthi6ee", 1024, 1);
    assert_eq!(kind(&t), ErrorKind::Missing("path"));
}

/// A hybrid (BEP 52) torrent: two files, 16 KiB pieces, with `info`
/// extras and `piece layers` given as raw bencode.
fn hybrid(v1_files: &str, tree: &str, layers: &str, n: usize) -> Vec<u8> {
    format!(
        "d4:infod5:filesl{v1_files}e9:file tree{tree}12:meta versioni2e4:name1:t12:piece lengthi16384e6:pieces{}e12:piece layers{layers}e",
        pieces(n)
    )
    .into_bytes()
}

fn root32(c: char) -> String {
    format!("32:{}", core::iter::repeat_n(c, 32).collect::<String>())
}

#[test]
fn hybrid_halves_must_agree() {
    let v1 = "d6:lengthi20000e4:pathl1:aee\
              d4:attr1:p6:lengthi12768e4:pathl4:.pad5:12768ee\
              d6:lengthi5e4:pathl1:d1:bee";
    let tree = |alen: u32, bname: &str| {
        format!(
            "d1:ad0:d6:lengthi{alen}e11:pieces root{}ee1:dd{bname}d0:d6:lengthi5e11:pieces root{}eeee",
            root32('r'),
            root32('s')
        )
    };
    let layers = format!("d{}64:{}e", root32('r'), "h".repeat(64));
    let good = hybrid(v1, &tree(20000, "1:b"), &layers, 3);
    assert!(parse(&good).is_ok(), "{:?}", parse(&good));
    let cases = [
        (hybrid(v1, &tree(20001, "1:b"), &layers, 3), V2Error::Length),
        (hybrid(v1, &tree(20000, "1:c"), &layers, 3), V2Error::Files),
        (hybrid(v1, "de", &layers, 3), V2Error::Files),
        (hybrid(v1, "d1:ai1ee", &layers, 3), V2Error::FileTree),
        (
            hybrid(
                v1,
                &tree(20000, "1:b"),
                &format!("d{}32:{}e", root32('r'), "h".repeat(32)),
                3,
            ),
            V2Error::PieceLayer,
        ),
        (
            // v1 without the pad: `d/b` is not piece-aligned.
            hybrid(
                "d6:lengthi20000e4:pathl1:aeed6:lengthi5e4:pathl1:d1:bee",
                &tree(20000, "1:b"),
                &layers,
                2,
            ),
            V2Error::Alignment,
        ),
    ];
    for (t, want) in cases {
        assert_eq!(kind(&t), ErrorKind::Hybrid(want));
    }
    // `meta version` must be 2; piece length a power of two ≥ 16 KiB.
    let t = String::from_utf8(good.clone()).unwrap();
    let bad = t.replace("12:meta versioni2e", "12:meta versioni3e");
    assert_eq!(
        kind(bad.as_bytes()),
        ErrorKind::Hybrid(V2Error::MetaVersion)
    );
    let bad = t.replace("12:meta versioni2e", "");
    assert_eq!(
        kind(bad.as_bytes()),
        ErrorKind::Hybrid(V2Error::MetaVersion)
    );
    // v2-only keeps its refusal.
    assert_eq!(
        kind(b"d4:infod9:file treede12:meta versioni2e4:name1:x12:piece lengthi16384eee"),
        ErrorKind::V2Only
    );
}

mod sanitize_props {
    use super::*;
    use proptest::prelude::*;

    /// A torrent with hostile names, duplicates and BEP 47 entries.
    fn hostile() -> Vec<u8> {
        multi(
            "d6:lengthi10e4:pathl2:..1:xeed6:lengthi5e4:pathl3:a/b1:Xee\
             d6:lengthi5e4:pathl3:a_b1:xeed4:attr1:p6:lengthi3ee\
             d4:attr1:l4:pathl1:le12:symlink pathl2:..ee",
            1024,
            1,
        )
    }

    proptest! {
        #[test]
        fn sanitized_component_is_always_safe(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut out = [0u8; MAX_COMPONENT_LEN];
            let s = sanitize_component(&raw, &mut out);
            prop_assert!(check_component(s.name.as_bytes()).is_ok(), "{:?}", s.name);
            prop_assert_eq!(s.changed, check_component(&raw).is_err());
            // Deterministic.
            let mut again = [0u8; MAX_COMPONENT_LEN];
            prop_assert_eq!(sanitize_component(&raw, &mut again).name, s.name);
        }

        #[test]
        fn mutated_hostile_torrent_keeps_the_fuzz_properties(
            edits in proptest::collection::vec((0usize..400, any::<u8>()), 1..4)
        ) {
            let mut t = hostile();
            for (pos, byte) in edits {
                let i = pos % t.len();
                t[i] = byte;
            }
            crate::fuzzing::metainfo(&t);
        }
    }

    #[test]
    fn hostile_torrent_keeps_the_fuzz_properties() {
        crate::fuzzing::metainfo(&hostile());
        let mut toks = [Token::EMPTY; 128];
        assert!(Metainfo::parse(&hostile(), &mut toks, &Limits::default()).is_ok());
    }
}
