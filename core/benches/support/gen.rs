//! Generates a large multi-file `.torrent` (shared by the decode benchmark
//! and the zero-allocation test): `files` files under nested directories,
//! `piece_len` pieces, canonical bencode written by our encoder.

use ourtorrent_core::bencode::{Encoder, SliceWriter};

/// Builds the torrent; deterministic for given arguments.
pub fn big_torrent(files: usize, piece_len: u64) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let names: Vec<(String, String, String, u64)> = (0..files)
        .map(|i| {
            (
                format!("album_{:04}", i / 250),
                format!("disc_{}", (i / 25) % 10),
                format!("track_{i:06}_{:x}.flac", rnd() % 0xffff),
                1 + rnd() % (3 << 20),
            )
        })
        .collect();
    let total: u64 = names.iter().map(|n| n.3).sum();
    let pieces = total.div_ceil(piece_len) as usize;
    let hashes: Vec<u8> = (0..pieces * 20).map(|_| rnd() as u8).collect();

    let mut buf = vec![0u8; files * 128 + hashes.len() + 4096];
    let mut e = Encoder::new(SliceWriter::new(&mut buf));
    e.begin_dict().unwrap();
    e.key(b"announce").unwrap();
    e.bytes(b"udp://127.0.0.1:6969").unwrap();
    e.key(b"created by").unwrap();
    e.bytes(b"ourtorrent bench").unwrap();
    e.key(b"info").unwrap();
    e.begin_dict().unwrap();
    e.key(b"files").unwrap();
    e.begin_list().unwrap();
    for (a, d, f, len) in &names {
        e.begin_dict().unwrap();
        e.key(b"length").unwrap();
        e.int(*len as i64).unwrap();
        e.key(b"path").unwrap();
        e.begin_list().unwrap();
        for c in [a, d, f] {
            e.bytes(c.as_bytes()).unwrap();
        }
        e.end().unwrap();
        e.end().unwrap();
    }
    e.end().unwrap();
    e.key(b"name").unwrap();
    e.bytes(b"big-collection").unwrap();
    e.key(b"piece length").unwrap();
    e.int(piece_len as i64).unwrap();
    e.key(b"pieces").unwrap();
    e.bytes(&hashes).unwrap();
    e.end().unwrap();
    e.end().unwrap();
    let (w, _) = e.finish().unwrap();
    w.written().to_vec()
}
