//! Memory per peer of the tracker's in-memory swarms, measured as RSS.
//!
//! `cargo bench -p shell-std --bench swarm_memory` fills one shard with
//! `TORRENTS` torrents and `PEERS` IPv4 peers (peer p in torrent p mod
//! TORRENTS: two peers a torrent at the defaults, the shape of
//! `shell-std loadtest --torrents 1000000 --peers 2000000`) and prints the
//! resident set before and after, and their difference per peer. RSS is
//! read from `/proc/self/status`; the process has nothing else allocated.
//! Env: `TORRENTS`, `PEERS`, `PERSIST=1` (track changes for SQLite, then
//! drain them as the writer would).

use std::net::{Ipv4Addr, SocketAddr};

use ourtorrent_core::id::InfoHash;
use ourtorrent_core::tracker::AnnounceEvent;
use shell_std::tracker::state::rss_bytes;
use shell_std::tracker::swarm::{Announce, Limits, Swarms};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A SHA-1-like spread of `i` over 20 bytes (splitmix64).
fn info_hash(i: usize) -> InfoHash {
    let mut b = [0u8; 20];
    let mut x = i as u64;
    for chunk in b.chunks_mut(8) {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let n = chunk.len();
        chunk.copy_from_slice(&z.to_le_bytes()[..n]);
    }
    InfoHash(b)
}

fn main() {
    let torrents = env("TORRENTS", 1_000_000).max(1);
    let peers = env("PEERS", 2_000_000);
    let persist = env("PERSIST", 0) == 1;
    let before = rss_bytes().unwrap_or(0);
    let mut s = Swarms::new(
        Limits {
            max_torrents: torrents,
            max_peers_per_torrent: 10_000,
        },
        60_000,
    );
    if !persist {
        s = s.without_persistence();
    }
    let now = 1_800_000_000_000u64;
    for p in 0..peers {
        let ip = Ipv4Addr::from(0x0a00_0000u32.wrapping_add((p / 60_000) as u32));
        let port = 1024 + (p % 60_000) as u16;
        let a = Announce {
            info_hash: info_hash(p % torrents),
            addr: SocketAddr::from((ip, port)),
            event: AnnounceEvent::Started,
            seeder: p % 3 == 0,
        };
        if s.announce(&a, now).is_err() {
            eprintln!("announce {p} refused");
            std::process::exit(1);
        }
        if persist && p % 200_000 == 0 {
            drop(s.take_batch());
        }
    }
    drop(s.take_batch());
    let after = rss_bytes().unwrap_or(0);
    let grown = after.saturating_sub(before);
    println!(
        "torrents {} peers {} rss before {:.1} MiB after {:.1} MiB: {:.1} B/peer (whole RSS / peers: {:.1})",
        s.torrent_count(),
        s.peer_count(),
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        grown as f64 / s.peer_count().max(1) as f64,
        after as f64 / s.peer_count().max(1) as f64,
    );
}
