//! One UDP datagram (BEP 15): the core's
//! [`Server`](ourtorrent_core::tracker::udp::server::Server) triages it (connect,
//! announce, scrape, or a drop), this module applies it to the store and
//! counts. Datagrams over [`MAX_DATAGRAM`] bytes are dropped; a scrape is
//! answered for at most [`MAX_SCRAPE_HASHES`] info-hashes.

use std::net::SocketAddr;

use ourtorrent_core::time::Instant;
use ourtorrent_core::tracker::udp::server::{error_reply, Decision, DropReason, SwarmInfo};
use ourtorrent_core::tracker::udp::{
    encode_scrape_response, ParseErrorKind, TorrentStats, MAX_SCRAPE_HASHES,
};
use ourtorrent_core::tracker::AnnounceEvent;

use super::State;
use crate::tracker::abuse::Verdict;
use crate::tracker::store::StoreError;
use crate::tracker::swarm::{Announce, Counts};
use crate::tracker::MAX_DATAGRAM;

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
    /// Handles one UDP datagram at `now_ms` (ms since the Unix epoch);
    /// returns the length of the reply written into `out`, if any. A
    /// datagram longer than [`MAX_DATAGRAM`] is dropped as oversized.
    pub fn handle_udp(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        self.stats.total += 1;
        match self.abuse.check(from.ip(), now_ms) {
            Verdict::Pass => {}
            Verdict::Throttled => {
                self.stats.err("udp_throttled");
                return None;
            }
            Verdict::Ignored => {
                self.stats.err("udp_ignored_source");
                return None;
            }
        }
        if datagram.len() > MAX_DATAGRAM {
            self.stats.err("udp_oversized");
            self.abuse.bad(from.ip(), now_ms);
            return None;
        }
        match self.server.handle(Instant(now_ms), from, datagram, out) {
            Decision::Connect(n) => {
                self.stats.req("udp_connect");
                Some(n)
            }
            Decision::Error(n) => {
                self.stats.err("udp_malformed_replied");
                self.abuse.bad(from.ip(), now_ms);
                Some(n)
            }
            Decision::Drop(r) => {
                self.stats.err(drop_reason(&r));
                if r != DropReason::OutputTooSmall {
                    self.abuse.bad(from.ip(), now_ms);
                }
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
                let want = if a.event == AnnounceEvent::Stopped {
                    0
                } else {
                    self.numwant(u32::try_from(a.num_want).ok())
                };
                let mut req = a;
                req.num_want = i32::try_from(want).unwrap_or(i32::MAX);
                let start = self.next_rand();
                let mut reply = Err(());
                let (server, front) = (&self.server, self.front);
                // No Arc clone here: its count would be one cache line
                // shared by every worker.
                let done = self.store.announce(
                    front,
                    &ann,
                    now_ms,
                    want as usize,
                    start,
                    &mut |c, peers| {
                        let info = SwarmInfo {
                            interval: self.settings.interval,
                            leechers: c.leechers,
                            seeders: c.seeders,
                        };
                        reply = server
                            .announce_reply(&req, datagram.len(), &from, info, peers, out)
                            .map_err(drop);
                    },
                );
                match done {
                    Ok(()) => {}
                    Err(StoreError::TorrentLimit) => {
                        return refuse(self, "torrent_limit", b"tracker full", out);
                    }
                    Err(StoreError::Unavailable) => {
                        return refuse(self, "store_unavailable", b"swarm store unavailable", out);
                    }
                }
                match reply {
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
                let (store, front) = (&self.store, self.front);
                // On the stack: the parser bounds a scrape's hashes at the
                // server's limit, the default MAX_SCRAPE_HASHES (a larger
                // limit is refused here rather than answered in part).
                if s.info_hashes.len() > MAX_SCRAPE_HASHES {
                    self.stats.err("udp_malformed_replied");
                    let msg = b"too many info-hashes";
                    return error_reply(datagram.len(), s.transaction_id, msg, out).ok();
                }
                let mut counts = [Counts::default(); MAX_SCRAPE_HASHES];
                let mut n = 0;
                for (slot, ih) in counts.iter_mut().zip(s.info_hashes.iter()) {
                    let Ok(c) = store.counts(front, &ih) else {
                        self.stats.err("store_unavailable");
                        let msg = b"swarm store unavailable";
                        return error_reply(datagram.len(), s.transaction_id, msg, out).ok();
                    };
                    *slot = c;
                    n += 1;
                }
                let stats = counts.iter().take(n).map(|c| TorrentStats {
                    seeders: c.seeders,
                    completed: c.completed,
                    leechers: c.leechers,
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
}
