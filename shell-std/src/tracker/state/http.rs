//! One HTTP `GET` on the tracker's front (BEP 3): `/announce` and
//! `/scrape`, parsed and encoded by the core's `tracker::http` codec.
//! Replies are always compact (BEP 23, IPv6 peers in `peers6`, BEP 7); a
//! scrape names at most [`MAX_HTTP_SCRAPE_HASHES`] info-hashes (BEP 48: no
//! full scrape). Refusals are BEP 3 `failure reason`s.

use std::net::SocketAddr;

use ourtorrent_core::id::InfoHash;
use ourtorrent_core::tracker::http::{self, AnnounceResponse, Peers};
use ourtorrent_core::tracker::udp::TorrentStats;
use ourtorrent_core::tracker::{AddressFamily, AnnounceEvent};

use super::State;
use crate::tracker::store::StoreError;
use crate::tracker::swarm::{Announce, Counts};

/// Bencoded replies are served as `text/plain`, as trackers usually do.
const BENCODE: &str = "text/plain";

/// Most info-hashes in one HTTP scrape (as for UDP, BEP 15's ~74).
pub const MAX_HTTP_SCRAPE_HASHES: usize = ourtorrent_core::tracker::udp::MAX_SCRAPE_HASHES;

/// A BEP 3 failure reply (HTTP 200, `d14:failure reason...e`).
fn failure(reason: &str) -> (u16, &'static str, Vec<u8>) {
    let mut out = vec![0u8; 64 + reason.len()];
    let n = http::encode_failure(reason.as_bytes(), &mut out).unwrap_or(0);
    out.truncate(n);
    (200, BENCODE, out)
}

impl State {
    /// Handles `GET target` from `peer` at `now_ms`: (HTTP status,
    /// content type, body). Queries are parsed and replies encoded by the
    /// core's `tracker::http` codec; refusals are BEP 3 `failure reason`s.
    pub fn handle_http(
        &mut self,
        now_ms: u64,
        peer: SocketAddr,
        target: &str,
    ) -> (u16, &'static str, Vec<u8>) {
        self.stats.total += 1;
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        match path {
            "/announce" => self.http_announce(now_ms, peer, query),
            "/scrape" => self.http_scrape(query),
            _ => {
                self.stats.err("http_not_found");
                (404, "text/plain", b"not found\n".to_vec())
            }
        }
    }

    fn http_announce(
        &mut self,
        now_ms: u64,
        peer: SocketAddr,
        query: &str,
    ) -> (u16, &'static str, Vec<u8>) {
        let q = match http::parse_announce_query(query.as_bytes()) {
            Ok(q) => q,
            Err(e) => {
                self.stats.err("http_bad_announce");
                return failure(&e.to_string());
            }
        };
        if !self.allowed(&q.info_hash) {
            self.stats.err("not_allowed");
            return failure("info-hash not allowed");
        }
        let addr = SocketAddr::new(peer.ip(), q.port);
        let ann = Announce {
            info_hash: q.info_hash,
            addr,
            event: q.event,
            seeder: q.left == 0,
        };
        let want = if q.event == AnnounceEvent::Stopped {
            0
        } else {
            self.numwant(q.numwant) as usize
        };
        let start = self.next_rand();
        let mut got: Option<(Counts, Vec<SocketAddr>)> = None;
        let store = self.store.clone();
        let done = store.announce(self.front, &ann, now_ms, want, start, &mut |c, peers| {
            got = Some((c, peers.collect()));
        });
        match done {
            Ok(()) => {}
            Err(StoreError::TorrentLimit) => {
                self.stats.err("torrent_limit");
                return failure("tracker full");
            }
            Err(StoreError::Unavailable) => {
                self.stats.err("store_unavailable");
                return failure("swarm store unavailable");
            }
        }
        let Some((counts, peers)) = got else {
            self.stats.err("http_encode");
            return failure("internal error");
        };
        // Always compact (BEP 23 lets a tracker answer compact even to
        // `compact=0`; the core encodes only that model): IPv4 peers in
        // `peers`, IPv6 peers in `peers6` (BEP 7).
        let mut out = vec![0u8; 256 + want * 24];
        let mut v4 = vec![0u8; want * AddressFamily::V4.peer_len()];
        let mut v6 = vec![0u8; want * AddressFamily::V6.peer_len()];
        let sample = || peers.iter().copied();
        let mut r = AnnounceResponse::new(self.settings.interval);
        r.min_interval = Some((self.settings.interval / 2).max(1));
        r.complete = Some(counts.seeders);
        r.incomplete = Some(counts.leechers);
        r.peers = Peers::Compact(http::compact_peers(sample(), AddressFamily::V4, &mut v4));
        r.peers6 = http::compact_peers(sample(), AddressFamily::V6, &mut v6);
        let encoded = http::encode_announce_response(&r, &mut out);
        match encoded {
            Ok(n) => {
                out.truncate(n);
                self.stats.req("http_announce");
                (200, BENCODE, out)
            }
            Err(_) => {
                self.stats.err("http_encode");
                failure("internal error")
            }
        }
    }

    fn http_scrape(&mut self, query: &str) -> (u16, &'static str, Vec<u8>) {
        let mut buf = [InfoHash::default(); MAX_HTTP_SCRAPE_HASHES];
        let hashes = match http::parse_scrape_query(query.as_bytes(), &mut buf) {
            Ok([]) => {
                self.stats.err("http_bad_scrape");
                return failure("full scrape is not supported: give info_hash");
            }
            Ok(h) => h,
            Err(e) => {
                self.stats.err("http_bad_scrape");
                return failure(&e.to_string());
            }
        };
        let (store, front) = (self.store.clone(), self.front);
        let entries: Result<Vec<(InfoHash, TorrentStats)>, StoreError> = hashes
            .iter()
            .map(|ih| {
                let c = store.counts(front, ih)?;
                let s = TorrentStats {
                    seeders: c.seeders,
                    completed: c.completed,
                    leechers: c.leechers,
                };
                Ok((*ih, s))
            })
            .collect();
        let Ok(mut entries) = entries else {
            self.stats.err("store_unavailable");
            return failure("swarm store unavailable");
        };
        // Bencode dict keys are unique: a hash asked twice is answered once.
        entries.sort_unstable_by_key(|e| e.0);
        entries.dedup_by_key(|e| e.0);
        let mut out = vec![0u8; 64 + entries.len() * 100];
        match http::encode_scrape_response(&mut entries, &mut out) {
            Ok(n) => {
                out.truncate(n);
                self.stats.req("http_scrape");
                (200, BENCODE, out)
            }
            Err(_) => {
                self.stats.err("http_encode");
                failure("internal error")
            }
        }
    }
}
