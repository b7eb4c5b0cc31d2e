//! The simulated swarm: the info-hashes a seed gives ([`info_hashes`]),
//! and fake peer `p`'s announce ([`fake_announce`]), the same every time
//! so that a later `stopped` names the same peer. [`Rng`] is splitmix64.
//!
//! Limits: none of its own (peer numbers wrap into ports 1024..61024).

use ourtorrent_core::id::{InfoHash, PeerId};
use ourtorrent_core::tracker::udp::{AnnounceRequest, ConnectionId, TransactionId, UdpOptions};
use ourtorrent_core::tracker::AnnounceEvent;

/// The announce of fake peer `peer`: it belongs to torrent `peer mod N`,
/// with a peer id, port and key derived from its number, so a later
/// announce (e.g. `stopped`) names the same peer.
pub(super) fn fake_announce(
    hashes: &[InfoHash],
    peer: usize,
    connection_id: ConnectionId,
    transaction_id: TransactionId,
    event: AnnounceEvent,
    num_want: i32,
) -> AnnounceRequest<'static> {
    let mut pid = *b"-OTLOAD-000000000000";
    pid[8..].copy_from_slice(
        format!("{peer:012}")
            .as_bytes()
            .get(..12)
            .unwrap_or(b"000000000000"),
    );
    AnnounceRequest {
        connection_id,
        transaction_id,
        info_hash: hashes[peer % hashes.len()],
        peer_id: PeerId(pid),
        downloaded: 0,
        left: if peer % 4 == 0 { 0 } else { 1 << 20 },
        uploaded: 0,
        event,
        ip: std::net::Ipv4Addr::UNSPECIFIED,
        key: peer as u32,
        num_want,
        port: 1024 + (peer % 60_000) as u16,
        options: UdpOptions::EMPTY,
    }
}

pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The info-hashes a run with `seed` uses.
pub fn info_hashes(seed: u64, n: usize) -> Vec<InfoHash> {
    let mut r = Rng(seed ^ 0x6f75_7274_6f72_7265);
    (0..n)
        .map(|_| {
            let mut h = [0u8; 20];
            for c in h.chunks_mut(8) {
                let v = r.next().to_le_bytes();
                c.copy_from_slice(&v[..c.len()]);
            }
            InfoHash(h)
        })
        .collect()
}
