//! The tracker's shared state and the two request handlers (one UDP
//! datagram, one HTTP GET). The protocol decisions for UDP come from the
//! core's [`Server`]; this module applies them to the swarm and counts.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use ourtorrent_core::id::InfoHash;
use ourtorrent_core::time::Instant;
use ourtorrent_core::tracker::udp::server::{error_reply, Decision, DropReason, Server, SwarmInfo};
use ourtorrent_core::tracker::udp::{encode_scrape_response, ParseErrorKind, TorrentStats};
use ourtorrent_core::tracker::AnnounceEvent;
use serde_json::json;

use super::http_proto::{self, ReplyCounts};
use super::swarm::{Announce, AnnounceError, Swarms};

/// Tunables of the handlers.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Seconds between announces, told to clients.
    pub interval: u32,
    /// Peers returned when the client does not say.
    pub default_numwant: u32,
    /// Most peers returned to one announce.
    pub max_numwant: u32,
}

/// Request and error counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Answered requests by kind (`udp_connect`, `http_announce`, ...).
    pub requests: BTreeMap<&'static str, u64>,
    /// Errors and drops by reason.
    pub errors: BTreeMap<&'static str, u64>,
    /// All requests received (answered or not).
    pub total: u64,
    /// Requests per second over the last rate tick.
    pub rate: f64,
}

impl Stats {
    fn req(&mut self, kind: &'static str) {
        *self.requests.entry(kind).or_default() += 1;
    }

    /// Counts an error or drop.
    pub fn err(&mut self, reason: &'static str) {
        *self.errors.entry(reason).or_default() += 1;
    }
}

/// Everything the handlers share.
pub struct State {
    /// The core's stateless UDP triage.
    pub server: Server,
    /// Swarms.
    pub swarms: Swarms,
    /// Counters.
    pub stats: Stats,
    /// Allowed info-hashes, if restricted.
    pub allow: Option<HashSet<InfoHash>>,
    /// Tunables.
    pub settings: Settings,
    rng: u64,
}

fn drop_reason(r: &DropReason) -> &'static str {
    match r {
        DropReason::BadConnectionId => "udp_bad_connection_id",
        DropReason::OutputTooSmall => "udp_output_too_small",
        DropReason::Malformed(e) => match e.kind {
            ParseErrorKind::Truncated => "udp_truncated",
            ParseErrorKind::BadProtocolId => "udp_bad_protocol_id",
            _ => "udp_malformed",
        },
    }
}

impl State {
    /// New state; `seed` starts the sampling PRNG.
    pub fn new(
        server: Server,
        swarms: Swarms,
        allow: Option<HashSet<InfoHash>>,
        settings: Settings,
        seed: u64,
    ) -> Self {
        State {
            server,
            swarms,
            stats: Stats::default(),
            allow,
            settings,
            rng: seed | 1,
        }
    }

    fn next_rand(&mut self) -> usize {
        // xorshift64: only picks where a reply's peer list starts.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x as usize
    }

    fn allowed(&self, ih: &InfoHash) -> bool {
        self.allow.as_ref().is_none_or(|a| a.contains(ih))
    }

    fn numwant(&self, asked: Option<u32>) -> u32 {
        asked
            .unwrap_or(self.settings.default_numwant)
            .min(self.settings.max_numwant)
    }

    /// Handles one UDP datagram at `now_ms` (ms since the Unix epoch);
    /// returns the length of the reply written into `out`, if any.
    pub fn handle_udp(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        self.stats.total += 1;
        match self.server.handle(Instant(now_ms), from, datagram, out) {
            Decision::Connect(n) => {
                self.stats.req("udp_connect");
                Some(n)
            }
            Decision::Error(n) => {
                self.stats.err("udp_malformed_replied");
                Some(n)
            }
            Decision::Drop(r) => {
                self.stats.err(drop_reason(&r));
                None
            }
            Decision::Announce(a) => {
                let refuse = |st: &mut State, reason, msg: &[u8], out: &mut [u8]| {
                    st.stats.err(reason);
                    error_reply(datagram.len(), a.transaction_id, msg, out).ok()
                };
                if !self.allowed(&a.info_hash) {
                    return refuse(self, "not_allowed", b"info-hash not allowed", out);
                }
                let addr = SocketAddr::new(from.ip(), a.port);
                let ann = Announce {
                    info_hash: a.info_hash,
                    addr,
                    event: a.event,
                    seeder: a.left == 0,
                };
                let counts = match self.swarms.announce(&ann, now_ms) {
                    Ok(c) => c,
                    Err(AnnounceError::TorrentLimit) => {
                        return refuse(self, "torrent_limit", b"tracker full", out);
                    }
                };
                let want = if a.event == AnnounceEvent::Stopped {
                    0
                } else {
                    self.numwant(u32::try_from(a.num_want).ok())
                };
                let mut req = a;
                req.num_want = i32::try_from(want).unwrap_or(i32::MAX);
                let start = self.next_rand();
                let info = SwarmInfo {
                    interval: self.settings.interval,
                    leechers: counts.leechers,
                    seeders: counts.seeders,
                };
                let peers = self
                    .swarms
                    .get(&a.info_hash)
                    .into_iter()
                    .flat_map(|t| t.sample(addr, start, want as usize));
                match self
                    .server
                    .announce_reply(&req, datagram.len(), &from, info, peers, out)
                {
                    Ok(n) => {
                        self.stats.req("udp_announce");
                        Some(n)
                    }
                    Err(_) => {
                        self.stats.err("udp_output_too_small");
                        None
                    }
                }
            }
            Decision::Scrape(s) => {
                let swarms = &self.swarms;
                let stats = s.info_hashes.iter().map(|ih| {
                    let c = swarms.counts(&ih);
                    TorrentStats {
                        seeders: c.seeders,
                        completed: c.completed,
                        leechers: c.leechers,
                    }
                });
                match encode_scrape_response(s.transaction_id, stats, out) {
                    Ok(n) => {
                        self.stats.req("udp_scrape");
                        Some(n)
                    }
                    Err(_) => {
                        self.stats.err("udp_output_too_small");
                        None
                    }
                }
            }
        }
    }

    /// Handles `GET target` from `peer` at `now_ms`: (HTTP status,
    /// content type, body).
    pub fn handle_http(
        &mut self,
        now_ms: u64,
        peer: SocketAddr,
        target: &str,
    ) -> (u16, &'static str, Vec<u8>) {
        self.stats.total += 1;
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        const BENCODE: &str = "text/plain";
        match path {
            "/announce" => match http_proto::parse_announce(query) {
                Err(why) => {
                    self.stats.err("http_bad_announce");
                    (200, BENCODE, http_proto::failure(why))
                }
                Ok(q) if !self.allowed(&q.info_hash) => {
                    self.stats.err("not_allowed");
                    (200, BENCODE, http_proto::failure("info-hash not allowed"))
                }
                Ok(q) => {
                    let addr = SocketAddr::new(peer.ip(), q.port);
                    let ann = Announce {
                        info_hash: q.info_hash,
                        addr,
                        event: q.event,
                        seeder: q.left == Some(0),
                    };
                    let counts = match self.swarms.announce(&ann, now_ms) {
                        Ok(c) => c,
                        Err(AnnounceError::TorrentLimit) => {
                            self.stats.err("torrent_limit");
                            return (200, BENCODE, http_proto::failure("tracker full"));
                        }
                    };
                    let want = if q.event == AnnounceEvent::Stopped {
                        0
                    } else {
                        self.numwant(q.numwant)
                    };
                    let start = self.next_rand();
                    let c = ReplyCounts {
                        interval: self.settings.interval,
                        complete: counts.seeders,
                        incomplete: counts.leechers,
                        downloaded: counts.completed,
                    };
                    let peers = self
                        .swarms
                        .get(&q.info_hash)
                        .into_iter()
                        .flat_map(|t| t.sample(addr, start, want as usize));
                    let body = http_proto::announce_reply(c, peers, q.compact);
                    self.stats.req("http_announce");
                    (200, BENCODE, body)
                }
            },
            "/scrape" => match http_proto::parse_scrape(query) {
                Err(why) => {
                    self.stats.err("http_bad_scrape");
                    (200, BENCODE, http_proto::failure(why))
                }
                Ok(hashes) => {
                    let entries: Vec<_> = hashes
                        .iter()
                        .map(|ih| {
                            let c = self.swarms.counts(ih);
                            let r = ReplyCounts {
                                interval: self.settings.interval,
                                complete: c.seeders,
                                incomplete: c.leechers,
                                downloaded: c.completed,
                            };
                            (*ih, r)
                        })
                        .collect();
                    self.stats.req("http_scrape");
                    (200, BENCODE, http_proto::scrape_reply(&entries))
                }
            },
            "/stats" => {
                self.stats.req("http_stats");
                let body = self.stats_json().to_string().into_bytes();
                (200, "application/json", body)
            }
            _ => {
                self.stats.err("http_not_found");
                (404, "text/plain", b"not found\n".to_vec())
            }
        }
    }

    /// The `/stats` document.
    pub fn stats_json(&self) -> serde_json::Value {
        let s = &self.swarms;
        json!({
            "torrents": s.torrent_count(),
            "peers": s.peer_count(),
            "seeders": s.seeder_count(),
            "leechers": s.peer_count() - s.seeder_count(),
            "requests": self.stats.requests,
            "errors": self.stats.errors,
            "requests_total": self.stats.total,
            "requests_per_second": self.stats.rate,
            "peer_limit_hits": s.peer_limit_hits,
            "pending_db_rows": s.dirty_count(),
        })
    }
}
