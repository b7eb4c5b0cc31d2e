//! The shell's own message counters ([`Counters`]: datagrams by KRPC kind,
//! each way, and socket errors) and [`stats_json`], the JSON line they and
//! the core's [`Stats`] print as.
//!
//! Limits: the counters are `u64` and never reset.

#[cfg(doc)]
use ourtorrent_core::dht::krpc::MAX_DATAGRAM_LEN;
use ourtorrent_core::dht::krpc::{self, Body, Query, Token};
use ourtorrent_core::dht::{Dht, Stats};
use ourtorrent_core::time::Instant;
use serde_json::json;

use super::hex;

/// Messages by kind, one direction.
#[derive(Clone, Copy, Debug, Default)]
pub struct KindCounts {
    pub(super) ping: u64,
    pub(super) find_node: u64,
    pub(super) get_peers: u64,
    pub(super) announce_peer: u64,
    pub(super) other_query: u64,
    pub(super) response: u64,
    pub(super) error: u64,
    pub(super) malformed: u64,
}

impl KindCounts {
    /// Counts `bytes` by its KRPC kind (`tokens`: scratch for the decoder).
    pub(super) fn count(&mut self, bytes: &[u8], tokens: &mut [Token]) {
        let c = match krpc::decode(bytes, tokens).map(|m| m.body) {
            Ok(Body::Query { query, .. }) => match query {
                Query::Ping => &mut self.ping,
                Query::FindNode { .. } => &mut self.find_node,
                Query::GetPeers { .. } => &mut self.get_peers,
                Query::AnnouncePeer { .. } => &mut self.announce_peer,
                Query::Unknown { .. } => &mut self.other_query,
            },
            Ok(Body::Response(_)) => &mut self.response,
            Ok(Body::Error { .. }) => &mut self.error,
            Err(_) => &mut self.malformed,
        };
        *c += 1;
    }

    pub(super) fn json(&self) -> serde_json::Value {
        json!({
            "ping": self.ping,
            "find_node": self.find_node,
            "get_peers": self.get_peers,
            "announce_peer": self.announce_peer,
            "other_query": self.other_query,
            "response": self.response,
            "error": self.error,
            "malformed": self.malformed,
        })
    }
}

/// The shell's own counters, beside the core's [`Stats`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// Datagrams received, by kind.
    pub msgs_in: KindCounts,
    /// Datagrams sent, by kind.
    pub msgs_out: KindCounts,
    /// Datagrams longer than [`MAX_DATAGRAM_LEN`] (also `malformed`).
    pub oversized: u64,
    /// Datagrams from IPv6 sources (dropped: the core is IPv4 only).
    pub ipv6_dropped: u64,
    /// `recv_from` errors.
    pub recv_errors: u64,
    /// `send_to` errors (the datagram is dropped).
    pub send_errors: u64,
}

/// One JSON object: node id, uptime, table size, peers stored, messages
/// in/out by kind, the core's counters and the shell's errors.
pub(super) fn stats_json(dht: &Dht<'_>, c: &Counters, now: Instant) -> serde_json::Value {
    let s: Stats = dht.stats();
    json!({
        "dht_stats": {
            "node_id": hex(&dht.id().0),
            "uptime_s": now.secs(),
            "table_nodes": dht.table().len(),
            "table_buckets": dht.table().buckets(),
            "peers_stored": dht.stored_peer_count(now),
            "in": c.msgs_in.json(),
            "out": c.msgs_out.json(),
            "oversized": c.oversized,
            "ipv6_dropped": c.ipv6_dropped,
            "recv_errors": c.recv_errors,
            "send_errors": c.send_errors,
            "core": {
                "datagrams_in": s.datagrams_in,
                "datagrams_out": s.datagrams_out,
                "malformed": s.malformed,
                "queries_in": s.queries_in,
                "unsolicited": s.unsolicited,
                "errors_in": s.errors_in,
                "id_mismatch": s.id_mismatch,
                "bep42_refused": s.bep42_refused,
                "bad_tokens": s.bad_tokens,
                "announces_stored": s.announces_stored,
                "timeouts": s.timeouts,
                "queue_full": s.queue_full,
                "replies_capped": s.replies_capped,
                "events_dropped": s.events_dropped,
            },
        }
    })
}

/// Messages of all kinds in `k`.
pub(super) fn total(k: &KindCounts) -> u64 {
    k.ping
        + k.find_node
        + k.get_peers
        + k.announce_peer
        + k.other_query
        + k.response
        + k.error
        + k.malformed
}
