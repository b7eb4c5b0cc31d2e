//! The routing table (BEP 5 "Routing Table"): k-buckets of [`K`] nodes in
//! caller storage.
//!
//! Bucket `i` holds the nodes whose id shares exactly `i` leading bits with
//! ours; the last bucket collects every node closer than that. The caller's
//! slice gives `len / K` buckets (at most [`MAX_BUCKETS`]); 20–32 buckets
//! cover today's Mainline DHT, since only ~log2(nodes) buckets ever fill.
//!
//! A node enters the table only after it answered one of our queries
//! ([`RoutingTable::insert`]); it is *good* while it answered or queried us
//! in the last [`QUESTIONABLE_AFTER`] (15 min), *questionable* after that
//! (the node pings it), and *bad* after [`BAD_AFTER_FAILURES`] unanswered
//! queries in a row (the next newcomer replaces it). A bucket unchanged for
//! [`REFRESH_AFTER`] is refreshed by a lookup for a random id in its range.

use core::net::{Ipv4Addr, SocketAddrV4};

use super::{NodeId, K};
use crate::time::{Duration, Instant};

/// Most buckets a table uses (one per bit of a 160-bit id).
pub const MAX_BUCKETS: usize = 160;
/// BEP 5: a node not heard from in 15 minutes becomes questionable.
pub const QUESTIONABLE_AFTER: Duration = Duration::from_secs(15 * 60);
/// BEP 5: refresh a bucket not changed in 15 minutes.
pub const REFRESH_AFTER: Duration = Duration::from_secs(15 * 60);
/// BEP 5: "fails to respond to multiple queries in a row" → bad.
pub const BAD_AFTER_FAILURES: u8 = 2;

/// One table entry (caller storage; start from [`NodeSlot::EMPTY`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSlot {
    /// Node id.
    pub id: NodeId,
    /// Node address.
    pub addr: SocketAddrV4,
    /// Last time it answered us (or queried us after having answered).
    pub last_seen: Instant,
    /// Last time we pinged it because it was questionable.
    pub last_pinged: Instant,
    /// Unanswered queries in a row.
    pub fails: u8,
    /// Slot in use.
    pub used: bool,
}

impl NodeSlot {
    /// An unused slot.
    pub const EMPTY: NodeSlot = NodeSlot {
        id: NodeId([0; 20]),
        addr: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        last_seen: Instant::ZERO,
        last_pinged: Instant::ZERO,
        fails: 0,
        used: false,
    };

    fn is_bad(&self) -> bool {
        self.fails >= BAD_AFTER_FAILURES
    }
}

/// Result of [`RoutingTable::insert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// Already present: refreshed.
    Updated,
    /// Added into a free slot.
    Added,
    /// Replaced a bad node.
    Replaced,
    /// The bucket is full of good nodes; the node was dropped. If one of
    /// them is questionable, it is returned so the caller pings it.
    Full(Option<(NodeId, SocketAddrV4)>),
    /// Refused: our own id, or an id/address pair conflicting with an entry.
    Refused,
}

/// The routing table over caller storage.
#[derive(Debug)]
pub struct RoutingTable<'s> {
    own: NodeId,
    slots: &'s mut [NodeSlot],
    changed: [Instant; MAX_BUCKETS],
}

impl<'s> RoutingTable<'s> {
    /// A table for `own` over `slots` (cleared). `slots.len() / K` buckets,
    /// at most [`MAX_BUCKETS`]; spare slots are unused.
    pub fn new(own: NodeId, slots: &'s mut [NodeSlot]) -> Self {
        for s in slots.iter_mut() {
            *s = NodeSlot::EMPTY;
        }
        RoutingTable {
            own,
            slots,
            changed: [Instant::ZERO; MAX_BUCKETS],
        }
    }

    /// Our node id.
    pub fn own_id(&self) -> NodeId {
        self.own
    }

    /// Number of buckets.
    pub fn buckets(&self) -> usize {
        (self.slots.len() / K).min(MAX_BUCKETS)
    }

    /// Nodes in the table.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.used).count()
    }

    /// True when no node is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every node (for persistence).
    pub fn nodes(&self) -> impl Iterator<Item = &NodeSlot> + '_ {
        self.slots.iter().filter(|s| s.used)
    }

    /// The bucket `id` belongs to (`None` for our own id or no buckets).
    pub fn bucket_of(&self, id: &NodeId) -> Option<usize> {
        let cpl = self.own.common_prefix_len(id);
        let n = self.buckets();
        (cpl < 160 && n > 0).then(|| cpl.min(n - 1))
    }

    fn bucket_mut(&mut self, b: usize) -> &mut [NodeSlot] {
        self.slots.get_mut(b * K..(b + 1) * K).unwrap_or_default()
    }

    fn touch(&mut self, b: usize, now: Instant) {
        if let Some(c) = self.changed.get_mut(b) {
            *c = now;
        }
    }

    /// Records that `id` at `addr` answered a query of ours at `now`.
    pub fn insert(&mut self, id: NodeId, addr: SocketAddrV4, now: Instant) -> Insert {
        let Some(b) = self.bucket_of(&id) else {
            return Insert::Refused;
        };
        // An address already known under another id (anywhere) is refused,
        // so nobody can evict a node by re-using its address.
        if self
            .slots
            .iter()
            .any(|s| s.used && s.addr == addr && s.id != id)
        {
            return Insert::Refused;
        }
        let bucket = self.bucket_mut(b);
        if let Some(s) = bucket.iter_mut().find(|s| s.used && s.id == id) {
            if s.addr != addr {
                return Insert::Refused;
            }
            s.last_seen = now;
            s.fails = 0;
            self.touch(b, now);
            return Insert::Updated;
        }
        let fresh = NodeSlot {
            id,
            addr,
            last_seen: now,
            last_pinged: Instant::ZERO,
            fails: 0,
            used: true,
        };
        let result = if let Some(s) = bucket.iter_mut().find(|s| !s.used) {
            *s = fresh;
            Insert::Added
        } else if let Some(s) = bucket.iter_mut().find(|s| s.is_bad()) {
            *s = fresh;
            Insert::Replaced
        } else {
            // BEP 5: ping the least recently seen questionable node.
            let q = bucket
                .iter()
                .filter(|s| now.saturating_duration_since(s.last_seen) >= QUESTIONABLE_AFTER)
                .min_by_key(|s| s.last_seen)
                .map(|s| (s.id, s.addr));
            return Insert::Full(q);
        };
        self.touch(b, now);
        result
    }

    /// Records a query from `id` at `addr`: refreshes it if present (a node
    /// that answered before and queries us now stays good).
    pub fn heard_from(&mut self, id: &NodeId, addr: SocketAddrV4, now: Instant) -> bool {
        match self
            .slots
            .iter_mut()
            .find(|s| s.used && s.id == *id && s.addr == addr)
        {
            Some(s) => {
                s.last_seen = now;
                true
            }
            None => false,
        }
    }

    /// Records an unanswered query to `addr`.
    pub fn failed(&mut self, addr: SocketAddrV4) {
        if let Some(s) = self.slots.iter_mut().find(|s| s.used && s.addr == addr) {
            s.fails = s.fails.saturating_add(1);
        }
    }

    /// Is there room in `id`'s bucket (a free or bad slot)?
    pub fn has_room_for(&self, id: &NodeId) -> bool {
        let Some(b) = self.bucket_of(id) else {
            return false;
        };
        self.slots
            .get(b * K..(b + 1) * K)
            .is_some_and(|s| s.iter().any(|s| !s.used || s.is_bad() || s.id == *id))
    }

    /// Is `id` in the table?
    pub fn contains(&self, id: &NodeId) -> bool {
        self.slots.iter().any(|s| s.used && s.id == *id)
    }

    /// Writes the up to `out.len()` closest non-bad nodes to `target` into
    /// `out`, nearest first; returns how many.
    pub fn closest(&self, target: &NodeId, out: &mut [(NodeId, SocketAddrV4)]) -> usize {
        let mut n = 0;
        for s in self.slots.iter().filter(|s| s.used && !s.is_bad()) {
            let d = s.id.distance(target);
            // Insertion sort into the first n entries.
            let pos = out
                .get(..n)
                .unwrap_or_default()
                .iter()
                .position(|(id, _)| d < id.distance(target))
                .unwrap_or(n);
            if pos >= out.len() {
                continue;
            }
            if n < out.len() {
                n += 1;
            }
            if let Some(tail) = out.get_mut(pos..n) {
                tail.rotate_right(1);
                if let Some(first) = tail.first_mut() {
                    *first = (s.id, s.addr);
                }
            }
        }
        n
    }

    /// A questionable node due for a ping at `now` (not pinged within
    /// [`QUESTIONABLE_AFTER`]); marks it pinged.
    pub fn next_questionable(&mut self, now: Instant) -> Option<(NodeId, SocketAddrV4)> {
        let s = self.slots.iter_mut().find(|s| {
            s.used
                && now.saturating_duration_since(s.last_seen) >= QUESTIONABLE_AFTER
                && (s.last_pinged == Instant::ZERO
                    || now.saturating_duration_since(s.last_pinged) >= QUESTIONABLE_AFTER)
        })?;
        s.last_pinged = now;
        Some((s.id, s.addr))
    }

    /// A non-empty bucket not changed within [`REFRESH_AFTER`] at `now`;
    /// marks it changed (the caller starts its refresh lookup).
    pub fn next_stale_bucket(&mut self, now: Instant) -> Option<usize> {
        let n = self.buckets();
        let b = (0..n).find(|&b| {
            let used = self
                .slots
                .get(b * K..(b + 1) * K)
                .is_some_and(|s| s.iter().any(|s| s.used));
            used && self
                .changed
                .get(b)
                .is_some_and(|c| now.saturating_duration_since(*c) >= REFRESH_AFTER)
        })?;
        self.touch(b, now);
        Some(b)
    }

    /// When the next bucket refresh or questionable ping is due.
    pub fn next_due(&self) -> Option<Instant> {
        let ping = self
            .slots
            .iter()
            .filter(|s| s.used)
            .map(|s| {
                let after_seen = s.last_seen.add_millis(QUESTIONABLE_AFTER.millis());
                let after_ping = if s.last_pinged == Instant::ZERO {
                    Instant::ZERO
                } else {
                    s.last_pinged.add_millis(QUESTIONABLE_AFTER.millis())
                };
                after_seen.max(after_ping)
            })
            .min();
        let refresh = (0..self.buckets())
            .filter(|&b| {
                self.slots
                    .get(b * K..(b + 1) * K)
                    .is_some_and(|s| s.iter().any(|s| s.used))
            })
            .filter_map(|b| self.changed.get(b))
            .map(|c| c.add_millis(REFRESH_AFTER.millis()))
            .min();
        match (ping, refresh) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A random id in bucket `b`'s range: our first `b` bits, bit `b`
    /// flipped (except in the last bucket), the rest from `random`.
    pub fn random_id_in_bucket(&self, b: usize, random: [u8; 20]) -> NodeId {
        let mut id = random;
        let last = b + 1 >= self.buckets();
        for bit in 0..b.min(160) {
            let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
            if let (Some(o), Some(r)) = (self.own.0.get(byte), id.get_mut(byte)) {
                *r = (*r & !mask) | (*o & mask);
            }
        }
        if !last && b < 160 {
            let (byte, mask) = (b / 8, 0x80u8 >> (b % 8));
            if let (Some(o), Some(r)) = (self.own.0.get(byte), id.get_mut(byte)) {
                *r = (*r & !mask) | (!*o & mask);
            }
        }
        NodeId(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u32) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 + i), 6881)
    }

    /// An id sharing exactly `cpl` leading bits with `own`, varied by `tag`.
    fn id_at(own: &NodeId, cpl: usize, tag: u8) -> NodeId {
        let mut id = own.0;
        id[cpl / 8] ^= 0x80 >> (cpl % 8);
        assert!(cpl < 152);
        id[19] ^= tag.wrapping_add(1);
        NodeId(id)
    }

    const T0: Instant = Instant::from_secs(1000);

    #[test]
    fn dht_table_buckets_hold_k_and_replace_bad_nodes() {
        let own = NodeId([0x55; 20]);
        let mut slots = [NodeSlot::EMPTY; 4 * K];
        let mut t = RoutingTable::new(own, &mut slots);
        assert_eq!(t.buckets(), 4);
        assert_eq!(t.insert(own, addr(0), T0), Insert::Refused);
        for i in 0..K as u8 {
            assert_eq!(
                t.insert(id_at(&own, 1, i), addr(i.into()), T0),
                Insert::Added
            );
        }
        // The (K+1)th node of a bucket of good nodes is dropped.
        let extra = id_at(&own, 1, 200);
        assert_eq!(t.insert(extra, addr(200), T0), Insert::Full(None));
        assert_eq!(t.len(), K);
        assert!(!t.has_room_for(&extra));
        // Re-insert refreshes, no duplicate.
        assert_eq!(t.insert(id_at(&own, 1, 3), addr(3), T0), Insert::Updated);
        // Same id from another address, or a known address with another id: refused.
        assert_eq!(t.insert(id_at(&own, 1, 3), addr(99), T0), Insert::Refused);
        assert_eq!(t.insert(id_at(&own, 2, 0), addr(3), T0), Insert::Refused);
        // One failure: still good; BAD_AFTER_FAILURES: replaced.
        t.failed(addr(5));
        assert_eq!(t.insert(extra, addr(200), T0), Insert::Full(None));
        t.failed(addr(5));
        assert!(t.has_room_for(&extra));
        assert_eq!(t.insert(extra, addr(200), T0), Insert::Replaced);
        assert!(t.contains(&extra) && !t.contains(&id_at(&own, 1, 5)));
        // A node in the deepest bucket and beyond share the last bucket.
        assert_eq!(t.bucket_of(&id_at(&own, 3, 0)), Some(3));
        assert_eq!(t.bucket_of(&id_at(&own, 150, 0)), Some(3));
    }

    #[test]
    fn dht_table_questionable_after_15_minutes_is_offered_for_ping() {
        let own = NodeId([0x11; 20]);
        let mut slots = [NodeSlot::EMPTY; 2 * K];
        let mut t = RoutingTable::new(own, &mut slots);
        for i in 0..K as u8 {
            t.insert(
                id_at(&own, 0, i),
                addr(i.into()),
                T0.add_millis(u64::from(i)),
            );
        }
        let just_before = T0.add_millis(QUESTIONABLE_AFTER.millis() - 1);
        assert_eq!(
            t.insert(id_at(&own, 0, 100), addr(100), just_before),
            Insert::Full(None)
        );
        assert_eq!(t.next_questionable(just_before), None);
        let at = T0.add_millis(QUESTIONABLE_AFTER.millis());
        // Least recently seen first (node 0).
        assert_eq!(
            t.insert(id_at(&own, 0, 100), addr(100), at),
            Insert::Full(Some((id_at(&own, 0, 0), addr(0))))
        );
        assert_eq!(t.next_questionable(at), Some((id_at(&own, 0, 0), addr(0))));
        // Pinged: not offered again for another 15 minutes.
        assert_eq!(t.next_questionable(at), None);
        // A query from it after it answered before keeps it good.
        assert!(t.heard_from(&id_at(&own, 0, 1), addr(1), at));
        assert!(!t.heard_from(&id_at(&own, 0, 1), addr(2), at));
        assert!(t.next_due().is_some());
    }

    #[test]
    fn dht_table_bucket_refresh_after_15_minutes_and_random_ids() {
        let own = NodeId([0xa5; 20]);
        let mut slots = [NodeSlot::EMPTY; 8 * K];
        let mut t = RoutingTable::new(own, &mut slots);
        t.insert(id_at(&own, 2, 0), addr(1), T0);
        assert_eq!(
            t.next_stale_bucket(T0.add_millis(REFRESH_AFTER.millis() - 1)),
            None
        );
        let due = T0.add_millis(REFRESH_AFTER.millis());
        assert_eq!(t.next_due(), Some(due));
        assert_eq!(t.next_stale_bucket(due), Some(2));
        assert_eq!(
            t.next_stale_bucket(due),
            None,
            "refresh marks the bucket changed"
        );
        for b in 0..8 {
            for r in [[0u8; 20], [0xff; 20], [0x3c; 20]] {
                let id = t.random_id_in_bucket(b, r);
                assert_eq!(t.bucket_of(&id), Some(b), "bucket {b}");
            }
        }
    }

    #[test]
    fn dht_table_closest_is_sorted_by_xor_distance() {
        let own = NodeId([0; 20]);
        let mut slots = [NodeSlot::EMPTY; 20 * K];
        let mut t = RoutingTable::new(own, &mut slots);
        let mut ids = std::vec::Vec::new();
        for i in 0..60u32 {
            let mut id = [0u8; 20];
            id[..4].copy_from_slice(&(i.wrapping_mul(2_654_435_761)).to_be_bytes());
            id[19] = 1;
            if t.insert(NodeId(id), addr(i), T0) == Insert::Added {
                ids.push(NodeId(id));
            }
        }
        let target = NodeId([0x77; 20]);
        let mut out = [(NodeId::default(), addr(0)); K];
        let n = t.closest(&target, &mut out);
        assert_eq!(n, K.min(ids.len()));
        ids.sort_by_key(|id| id.distance(&target));
        let got: std::vec::Vec<_> = out[..n].iter().map(|(id, _)| *id).collect();
        assert_eq!(got, ids[..n]);
    }
}
