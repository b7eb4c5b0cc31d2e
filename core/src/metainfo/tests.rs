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
    assert_eq!(files[0].path().collect::<Vec<_>>(), ["a.txt"]);
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
    assert_eq!(f[0].path().collect::<Vec<_>>(), ["a", "b"]);
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
    // Zero-length torrent has zero pieces.
    assert!(parse(&single(0, 16_384, 0)).is_ok());
    // Piece length limits.
    assert_eq!(kind(&single(0, 0, 0)), ErrorKind::BadPieceLength);
    assert_eq!(kind(&single(0, -16384, 0)), ErrorKind::BadPieceLength);
    assert!(parse(&single(0, DEFAULT_MIN_PIECE_LENGTH as i64, 0)).is_ok());
    assert_eq!(
        kind(&single(0, DEFAULT_MIN_PIECE_LENGTH as i64 - 1, 0)),
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
        assert_eq!(kind(&t), ErrorKind::BadPath(*want), "{comp:?}");
        // The same in the name.
        let t = format!(
            "d4:infod6:lengthi1e4:name{comp}12:piece lengthi1024e6:pieces{}ee",
            pieces(1)
        );
        assert_eq!(
            kind(t.as_bytes()),
            ErrorKind::BadPath(*want),
            "name {comp:?}"
        );
    }
    let mut t = multi("d6:lengthi1e4:pathl1:Xee", 1024, 1);
    let at = t.iter().position(|&b| b == b'X').unwrap();
    t[at] = 0xff;
    assert_eq!(kind(&t), ErrorKind::BadPath(PathError::NotUtf8));
    // Component length edge.
    let ok = format!("{}:{}", MAX_COMPONENT_LEN, "x".repeat(MAX_COMPONENT_LEN));
    assert!(parse(&multi(&format!("d6:lengthi1e4:pathl{ok}ee"), 1024, 1)).is_ok());
    let long = format!(
        "{}:{}",
        MAX_COMPONENT_LEN + 1,
        "x".repeat(MAX_COMPONENT_LEN + 1)
    );
    assert_eq!(
        kind(&multi(&format!("d6:lengthi1e4:pathl{long}ee"), 1024, 1)),
        ErrorKind::BadPath(PathError::TooLong)
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
    let t = multi("d6:lengthi1e4:pathl1:ae4:pathl2:..ee", 1024, 1);
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
