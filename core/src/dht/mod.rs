//! The Mainline DHT (BEP 5): a KRPC codec, a routing table of k-buckets in
//! caller storage and a sans-IO node that answers queries, stores peers and
//! runs iterative lookups.
//!
//! - [`krpc`]: decode/encode KRPC datagrams (ping, find_node, get_peers,
//!   announce_peer, responses, errors) over the [`crate::bencode`] decoder;
//! - [`bep42`]: the node-id ↔ IP binding of BEP 42 (crc32c), applied to
//!   public addresses only;
//! - [`table`]: the routing table (k = [`K`] nodes per bucket);
//! - [`node`]: the [`Dht`] state machine, its peer store and write tokens.
//!
//! Limits: IPv4 only (BEP 32's `nodes6`/IPv6 peers are ignored), no BEP 44
//! storage, no BEP 51 sampling. Every buffer is handed in by the caller:
//! a [`Dht`] is ~36 KB of its own state (lookups, queues, events) plus
//! 48 bytes per routing-table slot and 40 per stored peer, all caller-sized.
//!
//! Tested by unit tests per module, a 70-node simulation with lossy and
//! malicious nodes (`sim.rs`), the `krpc` fuzz target, and
//! `tests/dht_libtorrent.rs` (this node against libtorrent's DHT).

pub mod bep42;
#[doc(hidden)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
pub mod fuzzing;
pub mod krpc;
pub mod node;
pub mod table;

#[cfg(test)]
mod sim;

pub use node::{Config, Dht, Event, LookupId, PeerSlot, Stats};
pub use table::{NodeSlot, RoutingTable};

/// BEP 5: bucket size ("each bucket can only hold K nodes, currently eight").
pub const K: usize = 8;

/// A 160-bit DHT node id (BEP 5), compared by XOR distance.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Debug)]
pub struct NodeId(pub [u8; 20]);

impl NodeId {
    /// The id from exactly 20 bytes.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        b.try_into().ok().map(NodeId)
    }

    /// XOR distance to `other`, as a big-endian 160-bit number.
    pub fn distance(&self, other: &NodeId) -> [u8; 20] {
        let mut d = [0u8; 20];
        for ((o, a), b) in d.iter_mut().zip(self.0.iter()).zip(other.0.iter()) {
            *o = a ^ b;
        }
        d
    }

    /// Number of leading bits shared with `other` (160 when equal).
    pub fn common_prefix_len(&self, other: &NodeId) -> usize {
        let mut n = 0;
        for byte in self.distance(other) {
            if byte == 0 {
                n += 8;
            } else {
                return n + byte.leading_zeros() as usize;
            }
        }
        n
    }
}
