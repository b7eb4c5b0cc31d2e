//! Decoding a large multi-file torrent (~60,000 files, 1 MiB pieces, ~6 MB):
//! our tokenizer (strict and lenient) against bendy's, and our full metainfo
//! parse (bencode, validation of every path, info-hash) against
//! lava_torrent's. `cargo bench -p ourtorrent-core --bench decode`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ourtorrent_core::bencode::{decode, DecodeOptions, Token};
use ourtorrent_core::metainfo::{Limits, Metainfo};

#[path = "support/gen.rs"]
mod gen;

fn benches(c: &mut Criterion) {
    let t = gen::big_torrent(60_000, 1 << 20);
    eprintln!("torrent: {} bytes", t.len());
    let mut toks = vec![Token::EMPTY; t.len() / 2 + 1];

    let mut g = c.benchmark_group("tokenize");
    g.throughput(Throughput::Bytes(t.len() as u64));
    g.bench_function("ourtorrent strict", |b| {
        b.iter(|| {
            decode(black_box(&t), &mut toks, DecodeOptions::default())
                .unwrap()
                .tokens()
                .len()
        })
    });
    g.bench_function("ourtorrent lenient", |b| {
        b.iter(|| {
            decode(black_box(&t), &mut toks, DecodeOptions::lenient())
                .unwrap()
                .tokens()
                .len()
        })
    });
    g.bench_function("bendy", |b| {
        b.iter(|| {
            bendy::decoding::Decoder::new(black_box(&t))
                .with_max_depth(64)
                .tokens()
                .try_fold(0usize, |n, r| r.map(|_| n + 1))
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("metainfo");
    g.throughput(Throughput::Bytes(t.len() as u64));
    g.bench_function("ourtorrent", |b| {
        b.iter(|| {
            let m = Metainfo::parse(black_box(&t), &mut toks, &Limits::default()).unwrap();
            (m.info_hash(), m.file_count())
        })
    });
    g.bench_function("lava_torrent", |b| {
        b.iter(|| {
            let m = lava_torrent::torrent::v1::Torrent::read_from_bytes(black_box(&t[..])).unwrap();
            (m.info_hash_bytes(), m.files.map(|f| f.len()))
        })
    });
    g.finish();
}

criterion_group! {
    name = decode_benches;
    config = Criterion::default().sample_size(20);
    targets = benches
}
criterion_main!(decode_benches);
