//! Proves the decoders allocate nothing: a counting global allocator watches
//! this thread while we tokenize and fully parse a large torrent (the
//! benchmark's ~6 MB, 60,000-file input).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ourtorrent_core::bencode::{decode, DecodeOptions, Token};
use ourtorrent_core::metainfo::{Limits, Metainfo};

#[path = "../benches/support/gen.rs"]
mod gen;

struct Counting;

thread_local! {
    static WATCH: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if WATCH.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn allocations<R>(f: impl FnOnce() -> R) -> (R, usize) {
    COUNT.with(|c| c.set(0));
    WATCH.with(|w| w.set(true));
    let r = f();
    WATCH.with(|w| w.set(false));
    (r, COUNT.with(Cell::get))
}

#[test]
fn decode_and_metainfo_parse_allocate_nothing() {
    let t = gen::big_torrent(60_000, 1 << 20);
    let mut toks = vec![Token::EMPTY; t.len() / 2 + 1];
    // Sanity: the counter does see allocations.
    let (_, n) = allocations(|| vec![1u8; 10]);
    assert_eq!(n, 1);

    let (ntok, n) =
        allocations(|| decode(&t, &mut toks, DecodeOptions::default()).map(|d| d.tokens().len()));
    assert!(ntok.unwrap() > 6 * 60_000);
    assert_eq!(n, 0, "bencode::decode allocated");

    let (files, n) = allocations(|| {
        let m = Metainfo::parse(&t, &mut toks, &Limits::default()).unwrap();
        // Sanitizing paths into a caller buffer does not allocate either.
        let mut buf = [0u8; 1024];
        let paths: usize = m
            .files()
            .map(|f| f.path_into(&mut buf).unwrap().path.split('/').count())
            .sum();
        (m.file_count(), paths, m.info_hash())
    });
    assert_eq!((files.0, files.1), (60_000, 180_000));
    assert_eq!(n, 0, "Metainfo::parse allocated");
}
