//! The sans-IO DHT node (BEP 5): answers queries, keeps a peer store, and
//! runs iterative lookups.
//!
//! Driving it (quinn-proto style): feed every datagram to
//! [`Dht::handle_datagram`]; then drain [`Dht::poll_transmit`] (into a
//! buffer of at least [`krpc::MAX_DATAGRAM_LEN`] bytes) and
//! [`Dht::poll_event`]; call [`Dht::handle_timeout`] at
//! [`Dht::poll_timeout`]. App calls: [`Dht::bootstrap`], [`Dht::get_peers`],
//! [`Dht::announce`]. The node has no clock and no RNG: time is a parameter
//! and randomness comes from the caller's seed (expanded with SHA-1).
//!
//! Bounds: [`MAX_LOOKUPS`] lookups, each with [`ALPHA`] queries in flight
//! and at most [`Config::max_lookup_messages`] queries; [`MAX_INFLIGHT`]
//! outstanding queries; [`MAX_QUEUED`] datagrams waiting to be sent (more
//! replies are dropped and counted); [`MAX_EVENTS`] events. Replies never
//! exceed [`MAX_REPLY_AMPLIFICATION`] × the request's size. The peer store
//! and the routing table live in caller storage.
//!
//! Security: write tokens are SHA-1(secret ‖ requester IPv4 ‖ info-hash),
//! the secret rotating every [`TOKEN_ROTATION`] (the previous one is still
//! accepted, BEP 5's "up to ten minutes"); responses must come from the
//! address queried, with the transaction id sent, and the id expected;
//! BEP 42 ids are enforced for public addresses before a node enters the
//! table. Garbage is dropped silently (counted in [`Stats`]).

use core::net::{Ipv4Addr, SocketAddrV4};

use sha1::{Digest, Sha1};

use super::krpc::{
    self, error_code, Body, Message, Query, Response, ResponseParts, Token, COMPACT_NODE_LEN,
    MAX_TID_LEN, MAX_TOKEN_LEN, RECOMMENDED_TOKENS,
};
use super::table::{Insert, NodeSlot, RoutingTable};
use super::{bep42, NodeId, K};
use crate::id::InfoHash;
use crate::time::{Duration, Instant};

/// BEP 5 / Kademlia: queries in flight per lookup.
pub const ALPHA: usize = 3;
/// Concurrent lookups (app lookups and bucket refreshes).
pub const MAX_LOOKUPS: usize = 8;
/// Candidates a lookup keeps (nearest first).
pub const LOOKUP_WIDTH: usize = 32;
/// Outstanding queries of the whole node.
pub const MAX_INFLIGHT: usize = 64;
/// Datagrams queued for [`Dht::poll_transmit`].
pub const MAX_QUEUED: usize = 64;
/// Events queued for [`Dht::poll_event`].
pub const MAX_EVENTS: usize = 32;
/// Peers reported per [`Event::PeersFound`] (more in one reply are dropped).
pub const MAX_PEERS_PER_EVENT: usize = 32;
/// Nodes taken from one reply's `nodes` (BEP 5 sends K; more are ignored).
pub const MAX_NODES_PER_REPLY: usize = K;
/// Peers put in one get_peers reply (before the amplification cap).
pub const MAX_VALUES_PER_REPLY: usize = 50;
/// A reply is at most this many times the size of its request, so a
/// spoofed request cannot turn us into an amplifier.
pub const MAX_REPLY_AMPLIFICATION: usize = 4;
/// Write-token secret lifetime; tokens stay valid for two periods.
pub const TOKEN_ROTATION: Duration = Duration::from_secs(5 * 60);
/// Bytes of a write token we issue.
pub const TOKEN_LEN: usize = 8;
/// Routers remembered by [`Dht::bootstrap`] for retries.
pub const MAX_ROUTERS: usize = 8;
/// While the table holds fewer than [`K`] nodes, bootstrap again this often.
pub const BOOTSTRAP_RETRY: Duration = Duration::from_secs(30);
/// A lookup that could not send (queues full) tries again this much later.
pub const SEND_RETRY: Duration = Duration::from_millis(100);
/// BEP 42: agreeing `ip` reports in a row before [`Dht::external_ip`]
/// trusts them.
pub const EXTERNAL_IP_VOTES: u8 = 3;
/// Peers stored per info-hash (the oldest is replaced beyond that).
pub const MAX_PEERS_PER_INFO_HASH: usize = 100;

/// Node settings.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// A query unanswered for this long has failed.
    pub query_timeout: Duration,
    /// Queries one lookup may send in all (its message budget).
    pub max_lookup_messages: u16,
    /// How long an announced peer is kept.
    pub peer_ttl: Duration,
    /// Refuse nodes whose id breaks BEP 42 for a public address.
    pub enforce_bep42: bool,
    /// BEP 43: send `ro=1` and answer no queries.
    pub read_only: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            query_timeout: Duration::from_secs(5),
            max_lookup_messages: 64,
            peer_ttl: Duration::from_secs(30 * 60),
            enforce_bep42: true,
            read_only: false,
        }
    }
}

/// A stored peer (caller storage; start from [`PeerSlot::EMPTY`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerSlot {
    /// Torrent.
    pub info_hash: InfoHash,
    /// Peer address.
    pub addr: SocketAddrV4,
    /// When it expires.
    pub expires: Instant,
    /// Slot in use.
    pub used: bool,
}

impl PeerSlot {
    /// An unused slot.
    pub const EMPTY: PeerSlot = PeerSlot {
        info_hash: InfoHash([0; 20]),
        addr: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        expires: Instant::ZERO,
        used: false,
    };
}

/// Identifies a lookup started by an app call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LookupId(pub u32);

/// What the node reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A get_peers (or announce) lookup received peers.
    PeersFound {
        /// The lookup.
        lookup: LookupId,
        /// Torrent.
        info_hash: InfoHash,
        /// Peers from one reply.
        peers: heapless::Vec<SocketAddrV4, MAX_PEERS_PER_EVENT>,
    },
    /// A lookup finished.
    LookupDone {
        /// The lookup.
        lookup: LookupId,
        /// Its target (info-hash or node id).
        target: NodeId,
        /// Queries it sent (announce_peer ones included).
        messages: u16,
        /// Nodes that answered.
        responded: u16,
        /// Peers received in all.
        peers: u32,
        /// announce_peer queries sent (announce lookups).
        announced: u16,
    },
}

/// Counters (for `/stats`-like output).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams that did not decode.
    pub malformed: u64,
    /// Queries answered or refused.
    pub queries_in: u64,
    /// Responses or errors with no matching query (tid, address).
    pub unsolicited: u64,
    /// KRPC errors received in reply to our queries.
    pub errors_in: u64,
    /// Responses whose id was not the one expected.
    pub id_mismatch: u64,
    /// Nodes refused by BEP 42.
    pub bep42_refused: u64,
    /// announce_peer with a bad token.
    pub bad_tokens: u64,
    /// Peers stored by announce_peer.
    pub announces_stored: u64,
    /// Queries that timed out.
    pub timeouts: u64,
    /// Datagrams dropped because the send queue was full.
    pub queue_full: u64,
    /// Replies dropped because even trimmed they broke the amplification cap.
    pub replies_capped: u64,
    /// Events dropped because the event queue was full.
    pub events_dropped: u64,
    /// Datagrams handed to the shell.
    pub datagrams_out: u64,
}

/// SHA-1 counter-mode expansion of the caller's seed.
#[derive(Clone, Debug)]
struct Rng {
    seed: [u8; 32],
    counter: u64,
}

impl Rng {
    fn bytes20(&mut self) -> [u8; 20] {
        self.counter = self.counter.wrapping_add(1);
        let mut h = Sha1::new();
        h.update(self.seed);
        h.update(self.counter.to_be_bytes());
        h.finalize().into()
    }

    fn u16(&mut self) -> u16 {
        let [a, b, ..] = self.bytes20();
        u16::from_be_bytes([a, b])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// Table maintenance or newcomer verification.
    Ping,
    /// A lookup query (slot, lookup id to catch reused slots).
    Lookup(usize, u32),
    /// announce_peer at the end of an announce lookup.
    Announce,
}

#[derive(Clone, Copy, Debug)]
struct Inflight {
    tid: u16,
    to: SocketAddrV4,
    expected: Option<NodeId>,
    deadline: Instant,
    purpose: Purpose,
}

type Tid = heapless::Vec<u8, MAX_TID_LEN>;
type WriteToken = heapless::Vec<u8, MAX_TOKEN_LEN>;

#[derive(Clone, Debug)]
enum OutQuery {
    Ping,
    FindNode(NodeId),
    GetPeers(InfoHash),
    Announce(InfoHash, u16, bool, WriteToken),
}

#[derive(Clone, Copy, Debug)]
enum ReplyKind {
    Plain,
    FindNode(NodeId),
    GetPeers(InfoHash),
    Error(i64, &'static [u8]),
}

#[derive(Clone, Debug)]
enum Out {
    Query(SocketAddrV4, u16, OutQuery),
    Reply(SocketAddrV4, Tid, usize, ReplyKind),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CandState {
    New,
    InFlight,
    Responded,
    Failed,
}

#[derive(Clone, Debug)]
struct Cand {
    id: Option<NodeId>,
    addr: SocketAddrV4,
    state: CandState,
    token: WriteToken,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LookupKind {
    FindNode,
    GetPeers,
    Announce(u16, bool),
    /// A bucket refresh or bootstrap: no events.
    Quiet,
}

#[derive(Clone, Debug)]
struct Lookup {
    id: LookupId,
    target: NodeId,
    kind: LookupKind,
    cands: heapless::Vec<Cand, LOOKUP_WIDTH>,
    sent: u16,
    responded: u16,
    peers: u32,
}

/// Why an app call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Busy {
    /// All [`MAX_LOOKUPS`] lookup slots are in use.
    TooManyLookups,
}

/// A DHT node over caller storage (routing table slots and peer store).
#[derive(Debug)]
pub struct Dht<'s> {
    config: Config,
    table: RoutingTable<'s>,
    peers: &'s mut [PeerSlot],
    rng: Rng,
    secret: [u8; 20],
    prev_secret: [u8; 20],
    rotate_at: Instant,
    inflight: heapless::Vec<Inflight, MAX_INFLIGHT>,
    queue: heapless::Deque<Out, MAX_QUEUED>,
    events: heapless::Deque<Event, MAX_EVENTS>,
    lookups: [Option<Lookup>; MAX_LOOKUPS],
    next_lookup: u32,
    routers: heapless::Vec<SocketAddrV4, MAX_ROUTERS>,
    rebootstrap_at: Option<Instant>,
    ip_votes: Option<(Ipv4Addr, u8)>,
    retry_at: Option<Instant>,
    last_timeout: Instant,
    stats: Stats,
}

impl<'s> Dht<'s> {
    /// A node with id `id` (use [`bep42::generate`] for a public address),
    /// randomness expanded from `seed` (must be secret and random: it keys
    /// the write tokens), a routing table over `nodes` and a peer store over
    /// `peers`. `now` starts the token rotation.
    pub fn new(
        config: Config,
        id: NodeId,
        seed: [u8; 32],
        nodes: &'s mut [NodeSlot],
        peers: &'s mut [PeerSlot],
        now: Instant,
    ) -> Self {
        for p in peers.iter_mut() {
            *p = PeerSlot::EMPTY;
        }
        let mut rng = Rng { seed, counter: 0 };
        let secret = rng.bytes20();
        let prev_secret = rng.bytes20();
        Dht {
            config,
            table: RoutingTable::new(id, nodes),
            peers,
            rng,
            secret,
            prev_secret,
            rotate_at: now.add_millis(TOKEN_ROTATION.millis()),
            inflight: heapless::Vec::new(),
            queue: heapless::Deque::new(),
            events: heapless::Deque::new(),
            lookups: Default::default(),
            next_lookup: 0,
            routers: heapless::Vec::new(),
            rebootstrap_at: None,
            ip_votes: None,
            retry_at: None,
            last_timeout: Instant::ZERO,
            stats: Stats::default(),
        }
    }

    /// Our node id.
    pub fn id(&self) -> NodeId {
        self.table.own_id()
    }

    /// The routing table (read-only; e.g. to save it).
    pub fn table(&self) -> &RoutingTable<'s> {
        &self.table
    }

    /// Our public IPv4 address as responders report it (BEP 42 `ip`),
    /// once [`EXTERNAL_IP_VOTES`] replies in a row agree: the shell can then
    /// pick a BEP 42 id with [`bep42::generate`].
    pub fn external_ip(&self) -> Option<Ipv4Addr> {
        self.ip_votes
            .filter(|(_, n)| *n >= EXTERNAL_IP_VOTES)
            .map(|(ip, _)| ip)
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Peers stored for `info_hash` at `now`.
    pub fn stored_peers(
        &self,
        info_hash: &InfoHash,
        now: Instant,
    ) -> impl Iterator<Item = SocketAddrV4> + '_ {
        let ih = *info_hash;
        self.peers
            .iter()
            .filter(move |p| p.used && p.info_hash == ih && p.expires > now)
            .map(|p| p.addr)
    }

    /// Peers in the store at `now` (unexpired, every info-hash).
    pub fn stored_peer_count(&self, now: Instant) -> usize {
        self.peers
            .iter()
            .filter(|p| p.used && p.expires > now)
            .count()
    }

    // ---------------------------------------------------------------- app calls

    /// Joins the DHT through `routers` (and the table's nodes): a lookup
    /// for our own id. Returns its id (it ends with a `LookupDone`). The
    /// first [`MAX_ROUTERS`] routers are remembered: while the table holds
    /// fewer than [`K`] nodes, the node bootstraps again every
    /// [`BOOTSTRAP_RETRY`].
    pub fn bootstrap(&mut self, now: Instant, routers: &[SocketAddrV4]) -> Result<LookupId, Busy> {
        for &r in routers {
            if !self.routers.contains(&r) && self.routers.push(r).is_err() {
                break;
            }
        }
        self.rebootstrap_at = Some(now.add_millis(BOOTSTRAP_RETRY.millis()));
        self.bootstrap_lookup(now, LookupKind::FindNode, routers)
    }

    fn bootstrap_lookup(
        &mut self,
        now: Instant,
        kind: LookupKind,
        routers: &[SocketAddrV4],
    ) -> Result<LookupId, Busy> {
        let own = self.id();
        let slot = self.start(own, kind)?;
        if let Some(Some(lk)) = self.lookups.get_mut(slot) {
            for &addr in routers.iter().take(LOOKUP_WIDTH) {
                if !lk.cands.iter().any(|c| c.addr == addr) {
                    let _ = lk.cands.push(Cand {
                        id: None,
                        addr,
                        state: CandState::New,
                        token: WriteToken::new(),
                    });
                }
            }
            sort_cands(lk);
        }
        Ok(self.run(slot, now))
    }

    /// Looks up peers for `info_hash` (`PeersFound` events, then
    /// `LookupDone`).
    pub fn get_peers(&mut self, now: Instant, info_hash: InfoHash) -> Result<LookupId, Busy> {
        let slot = self.start(NodeId(info_hash.0), LookupKind::GetPeers)?;
        Ok(self.run(slot, now))
    }

    /// Looks up `info_hash` and announces us on `port` (or, with
    /// `implied_port`, on the port our datagrams come from, BEP 5) to the
    /// closest nodes that gave us a token.
    pub fn announce(
        &mut self,
        now: Instant,
        info_hash: InfoHash,
        port: u16,
        implied_port: bool,
    ) -> Result<LookupId, Busy> {
        let slot = self.start(
            NodeId(info_hash.0),
            LookupKind::Announce(port, implied_port),
        )?;
        Ok(self.run(slot, now))
    }

    /// Adds a node known from elsewhere (a saved table, a peer's DHT port
    /// message, BEP 5 "PORT"): it is pinged and enters the table if it
    /// answers.
    pub fn add_node(&mut self, now: Instant, addr: SocketAddrV4) {
        self.send_query(now, addr, None, OutQuery::Ping, Purpose::Ping);
    }

    /// Puts a node from a saved table (a previous run's state) straight into
    /// the routing table and pings it: it answered us before, so a restart
    /// need not wait for an answer to have a table; if it stays silent it
    /// turns bad ([`super::table::BAD_AFTER_FAILURES`]) and a newcomer
    /// replaces it. Returns whether it entered the table (refused: a bad
    /// address, our own id, a BEP 42 breach, a full bucket).
    pub fn restore_node(&mut self, now: Instant, id: NodeId, addr: SocketAddrV4) -> bool {
        if addr.port() == 0 || addr.ip().is_unspecified() || !self.bep42_ok(&id, addr) {
            return false;
        }
        let added = matches!(
            self.table.insert(id, addr, now),
            Insert::Added | Insert::Replaced | Insert::Updated
        );
        if added {
            self.send_query(now, addr, Some(id), OutQuery::Ping, Purpose::Ping);
        }
        added
    }

    fn start(&mut self, target: NodeId, kind: LookupKind) -> Result<usize, Busy> {
        let slot = self
            .lookups
            .iter()
            .position(|l| l.is_none())
            .ok_or(Busy::TooManyLookups)?;
        let id = LookupId(self.next_lookup);
        self.next_lookup = self.next_lookup.wrapping_add(1);
        let mut lk = Lookup {
            id,
            target,
            kind,
            cands: heapless::Vec::new(),
            sent: 0,
            responded: 0,
            peers: 0,
        };
        let mut near = [(
            NodeId::default(),
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        ); 2 * K];
        let n = self.table.closest(&target, &mut near);
        for &(id, addr) in near.iter().take(n) {
            let _ = lk.cands.push(Cand {
                id: Some(id),
                addr,
                state: CandState::New,
                token: WriteToken::new(),
            });
        }
        if let Some(s) = self.lookups.get_mut(slot) {
            *s = Some(lk);
        }
        Ok(slot)
    }

    fn run(&mut self, slot: usize, now: Instant) -> LookupId {
        let id = self
            .lookups
            .get(slot)
            .and_then(|l| l.as_ref())
            .map(|l| l.id)
            .unwrap_or(LookupId(u32::MAX));
        self.step(slot, now);
        id
    }

    // ---------------------------------------------------------------- inputs

    /// Handles one datagram from `from` received at `now`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddrV4, bytes: &[u8]) {
        self.stats.datagrams_in += 1;
        let mut toks = [Token::EMPTY; RECOMMENDED_TOKENS];
        let msg = match krpc::decode(bytes, &mut toks) {
            Ok(m) => m,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        if from.port() == 0 || from.ip().is_unspecified() {
            self.stats.malformed += 1;
            return;
        }
        match msg.body {
            Body::Query { id, query } => self.on_query(now, from, &msg, id, query, bytes.len()),
            Body::Response(r) => self.on_response(now, from, msg.tid, Some(&r)),
            Body::Error { .. } => self.on_response(now, from, msg.tid, None),
        }
    }

    fn on_query(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        msg: &Message<'_>,
        id: NodeId,
        query: Query<'_>,
        req_len: usize,
    ) {
        self.stats.queries_in += 1;
        if self.config.read_only {
            return;
        }
        // A known node stays good; an unknown one is verified by a ping
        // before it may enter the table (only if its bucket has room).
        if !msg.read_only
            && !self.table.heard_from(&id, from, now)
            && self.table.has_room_for(&id)
            && self.bep42_ok(&id, from)
            && self.inflight.len() < MAX_INFLIGHT / 2
            && !self.inflight.iter().any(|f| f.to == from)
        {
            self.send_query(now, from, Some(id), OutQuery::Ping, Purpose::Ping);
        }
        let Ok(tid) = Tid::from_slice(msg.tid) else {
            return;
        };
        let kind = match query {
            Query::Ping => ReplyKind::Plain,
            Query::FindNode { target } => ReplyKind::FindNode(target),
            Query::GetPeers { info_hash } => ReplyKind::GetPeers(info_hash),
            Query::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
            } => {
                if !self.token_ok(token, from.ip(), &info_hash) {
                    self.stats.bad_tokens += 1;
                    ReplyKind::Error(error_code::PROTOCOL, b"bad token")
                } else {
                    let port = if implied_port { from.port() } else { port };
                    self.store_peer(now, info_hash, SocketAddrV4::new(*from.ip(), port));
                    ReplyKind::Plain
                }
            }
            Query::Unknown { .. } => {
                ReplyKind::Error(error_code::METHOD_UNKNOWN, b"method unknown")
            }
        };
        self.enqueue(Out::Reply(from, tid, req_len, kind));
    }

    fn on_response(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        tid: &[u8],
        r: Option<&Response<'_>>,
    ) {
        let Ok(tid) = <[u8; 2]>::try_from(tid).map(u16::from_be_bytes) else {
            self.stats.unsolicited += 1;
            return;
        };
        let Some(pos) = self
            .inflight
            .iter()
            .position(|f| f.tid == tid && f.to == from)
        else {
            self.stats.unsolicited += 1;
            return;
        };
        let f = self.inflight.swap_remove(pos);
        let Some(r) = r else {
            // An error reply: the node is alive but did not help.
            self.stats.errors_in += 1;
            self.lookup_failed(now, f.purpose, from);
            return;
        };
        if f.expected.is_some_and(|e| e != r.id) || r.id == self.id() {
            self.stats.id_mismatch += 1;
            self.table.failed(from);
            self.lookup_failed(now, f.purpose, from);
            return;
        }
        if let Some(ip) = r.ip {
            self.ip_votes = match self.ip_votes {
                Some((v, n)) if v == *ip.ip() => Some((v, n.saturating_add(1))),
                _ => Some((*ip.ip(), 1)),
            };
        }
        if self.bep42_ok(&r.id, from) {
            if let Insert::Full(Some((qid, qaddr))) = self.table.insert(r.id, from, now) {
                if self.inflight.len() < MAX_INFLIGHT / 2 {
                    self.send_query(now, qaddr, Some(qid), OutQuery::Ping, Purpose::Ping);
                }
            }
        }
        if let Purpose::Lookup(slot, lid) = f.purpose {
            self.lookup_response(now, slot, lid, from, r);
        }
    }

    /// Handles timers due at `now`: query timeouts, token rotation, table
    /// maintenance (questionable pings, bucket refreshes).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_timeout = now;
        if self.retry_at.is_some_and(|r| r <= now) {
            self.retry_at = None;
        }
        let mut i = 0;
        while let Some(f) = self.inflight.get(i).copied() {
            if f.deadline <= now {
                self.inflight.swap_remove(i);
                self.stats.timeouts += 1;
                self.table.failed(f.to);
                self.lookup_failed(now, f.purpose, f.to);
            } else {
                i += 1;
            }
        }
        if now >= self.rotate_at {
            self.prev_secret = self.secret;
            self.secret = self.rng.bytes20();
            self.rotate_at = now.add_millis(TOKEN_ROTATION.millis());
        }
        if self.inflight.len() < MAX_INFLIGHT / 2 {
            if let Some((id, addr)) = self.table.next_questionable(now) {
                self.send_query(now, addr, Some(id), OutQuery::Ping, Purpose::Ping);
            }
        }
        if let Some(at) = self.rebootstrap_at.filter(|at| now >= *at) {
            if self.table.len() < K {
                let routers = self.routers.clone();
                let _ = self.bootstrap_lookup(now, LookupKind::Quiet, &routers);
                self.rebootstrap_at = Some(at.max(now).add_millis(BOOTSTRAP_RETRY.millis()));
            } else {
                self.rebootstrap_at = None;
            }
        }
        if self.lookups.iter().any(|l| l.is_none()) {
            if let Some(b) = self.table.next_stale_bucket(now) {
                let target = self.table.random_id_in_bucket(b, self.rng.bytes20());
                if let Ok(slot) = self.start(target, LookupKind::Quiet) {
                    self.step(slot, now);
                }
            }
        }
        for slot in 0..MAX_LOOKUPS {
            self.step(slot, now);
        }
    }

    // ---------------------------------------------------------------- outputs

    /// When to call [`Dht::handle_timeout`] next (`None`: nothing pending).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let inflight = self.inflight.iter().map(|f| f.deadline).min();
        // Table work that could not start (no lookup slot, too many
        // queries in flight) waits a little instead of spinning.
        let table = self
            .table
            .next_due()
            .map(|t| t.max(self.last_timeout.add_millis(SEND_RETRY.millis())));
        [
            inflight,
            table,
            Some(self.rotate_at),
            self.rebootstrap_at,
            self.retry_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next datagram to send, written into `buf` (give it
    /// [`krpc::MAX_DATAGRAM_LEN`] bytes): its destination and length.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(SocketAddrV4, usize)> {
        while let Some(out) = self.queue.pop_front() {
            let sent = match out {
                Out::Query(to, tid, q) => self.encode_query(tid, &q, buf).map(|n| (to, n)),
                Out::Reply(to, tid, req_len, kind) => self
                    .encode_reply(now, to, &tid, req_len, kind, buf)
                    .map(|n| (to, n)),
            };
            if let Some(s) = sent {
                self.stats.datagrams_out += 1;
                return Some(s);
            }
        }
        None
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---------------------------------------------------------------- internals

    fn bep42_ok(&mut self, id: &NodeId, addr: SocketAddrV4) -> bool {
        if !self.config.enforce_bep42 || bep42::is_valid(id, *addr.ip()) {
            true
        } else {
            self.stats.bep42_refused += 1;
            false
        }
    }

    fn make_token(secret: &[u8; 20], ip: &Ipv4Addr, ih: &InfoHash) -> [u8; TOKEN_LEN] {
        let mut h = Sha1::new();
        h.update(secret);
        h.update(ip.octets());
        h.update(ih.0);
        let d: [u8; 20] = h.finalize().into();
        let mut t = [0u8; TOKEN_LEN];
        for (o, i) in t.iter_mut().zip(d) {
            *o = i;
        }
        t
    }

    fn token_ok(&self, token: &[u8], ip: &Ipv4Addr, ih: &InfoHash) -> bool {
        token == Self::make_token(&self.secret, ip, ih)
            || token == Self::make_token(&self.prev_secret, ip, ih)
    }

    pub(crate) fn store_peer(&mut self, now: Instant, ih: InfoHash, addr: SocketAddrV4) {
        if addr.port() == 0 || addr.ip().is_unspecified() {
            return;
        }
        self.stats.announces_stored += 1;
        let expires = now.add_millis(self.config.peer_ttl.millis());
        let live = |p: &PeerSlot| p.used && p.expires > now;
        if let Some(p) = self
            .peers
            .iter_mut()
            .find(|p| live(p) && p.info_hash == ih && p.addr == addr)
        {
            p.expires = expires;
            return;
        }
        let same = self
            .peers
            .iter()
            .filter(|p| live(p) && p.info_hash == ih)
            .count();
        let slot = if same >= MAX_PEERS_PER_INFO_HASH {
            // Replace this torrent's oldest peer.
            self.peers
                .iter_mut()
                .filter(|p| live(p) && p.info_hash == ih)
                .min_by_key(|p| p.expires)
        } else if self.peers.iter().any(|p| !live(p)) {
            self.peers.iter_mut().find(|p| !live(p))
        } else {
            self.peers.iter_mut().min_by_key(|p| p.expires)
        };
        if let Some(p) = slot {
            *p = PeerSlot {
                info_hash: ih,
                addr,
                expires,
                used: true,
            };
        }
    }

    fn enqueue(&mut self, out: Out) -> bool {
        if self.queue.push_back(out).is_err() {
            self.stats.queue_full += 1;
            false
        } else {
            true
        }
    }

    fn push_event(&mut self, e: Event) {
        if self.events.push_back(e).is_err() {
            self.stats.events_dropped += 1;
        }
    }

    fn send_query(
        &mut self,
        now: Instant,
        to: SocketAddrV4,
        expected: Option<NodeId>,
        q: OutQuery,
        purpose: Purpose,
    ) -> bool {
        if self.inflight.is_full() || self.queue.is_full() || to.port() == 0 {
            return false;
        }
        let mut tid = self.rng.u16();
        while self.inflight.iter().any(|f| f.tid == tid) {
            tid = tid.wrapping_add(1);
        }
        let f = Inflight {
            tid,
            to,
            expected,
            deadline: now.add_millis(self.config.query_timeout.millis()),
            purpose,
        };
        self.inflight.push(f).is_ok() && self.enqueue(Out::Query(to, tid, q))
    }

    fn encode_query(&self, tid: u16, q: &OutQuery, buf: &mut [u8]) -> Option<usize> {
        let query = match q {
            OutQuery::Ping => Query::Ping,
            OutQuery::FindNode(t) => Query::FindNode { target: *t },
            OutQuery::GetPeers(ih) => Query::GetPeers { info_hash: *ih },
            OutQuery::Announce(ih, port, implied, token) => Query::AnnouncePeer {
                info_hash: *ih,
                port: *port,
                implied_port: *implied,
                token,
            },
        };
        krpc::encode_query(
            &tid.to_be_bytes(),
            self.config.read_only,
            &self.id(),
            &query,
            buf,
        )
        .ok()
    }

    fn encode_reply(
        &mut self,
        now: Instant,
        to: SocketAddrV4,
        tid: &[u8],
        req_len: usize,
        kind: ReplyKind,
        buf: &mut [u8],
    ) -> Option<usize> {
        let budget = req_len.saturating_mul(MAX_REPLY_AMPLIFICATION);
        let id = self.id();
        let (target, token, want_values) = match kind {
            ReplyKind::Error(code, msg) => {
                let n = krpc::encode_error(tid, code, msg, buf).ok()?;
                return self.capped(n, budget);
            }
            ReplyKind::Plain => {
                let parts = ResponseParts {
                    id,
                    nodes: None,
                    values: None::<core::iter::Empty<SocketAddrV4>>,
                    token: None,
                    ip: Some(to),
                };
                let n = krpc::encode_response(tid, false, parts, buf).ok()?;
                return self.capped(n, budget);
            }
            ReplyKind::FindNode(t) => (t, None, None),
            ReplyKind::GetPeers(ih) => (
                NodeId(ih.0),
                Some(Self::make_token(&self.secret, to.ip(), &ih)),
                Some(ih),
            ),
        };
        let mut nodes = [0u8; COMPACT_NODE_LEN * K];
        let mut near = [(
            NodeId::default(),
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        ); K];
        let stored = match want_values {
            Some(ih) => self
                .stored_peers(&ih, now)
                .count()
                .min(MAX_VALUES_PER_REPLY),
            None => 0,
        };
        // BEP 5: values when we have peers, otherwise the closest nodes.
        let mut n_nodes = 0;
        if stored == 0 {
            n_nodes = self.table.closest(&target, &mut near);
            for (slot, (nid, a)) in nodes.chunks_exact_mut(COMPACT_NODE_LEN).zip(near.iter()) {
                slot.copy_from_slice(&krpc::node_to_compact(nid, a));
            }
        }
        let mut n_values = stored;
        // Trim until the reply fits the amplification budget.
        for _ in 0..16 {
            let parts = ResponseParts {
                id,
                nodes: (stored == 0)
                    .then(|| nodes.get(..n_nodes * COMPACT_NODE_LEN).unwrap_or_default()),
                values: want_values
                    .filter(|_| stored > 0)
                    .map(|ih| self.stored_peers(&ih, now).take(n_values)),
                token: token.as_ref().map(|t| t.as_slice()),
                ip: Some(to),
            };
            let n = krpc::encode_response(tid, false, parts, buf).ok()?;
            if n <= budget {
                return Some(n);
            }
            let over = n - budget;
            if n_values > 0 {
                n_values = n_values.saturating_sub(over.div_ceil(8).max(1));
            } else if n_nodes > 0 {
                n_nodes = n_nodes.saturating_sub(over.div_ceil(COMPACT_NODE_LEN).max(1));
            } else {
                break;
            }
        }
        self.stats.replies_capped += 1;
        None
    }

    fn capped(&mut self, n: usize, budget: usize) -> Option<usize> {
        if n <= budget {
            Some(n)
        } else {
            self.stats.replies_capped += 1;
            None
        }
    }

    // ---------------------------------------------------------------- lookups

    fn lookup_at(&mut self, slot: usize, lid: u32) -> Option<&mut Lookup> {
        self.lookups
            .get_mut(slot)
            .and_then(|l| l.as_mut())
            .filter(|l| l.id.0 == lid)
    }

    fn lookup_failed(&mut self, now: Instant, purpose: Purpose, from: SocketAddrV4) {
        if let Purpose::Lookup(slot, lid) = purpose {
            if let Some(lk) = self.lookup_at(slot, lid) {
                if let Some(c) = lk.cands.iter_mut().find(|c| c.addr == from) {
                    c.state = CandState::Failed;
                }
                self.step(slot, now);
            }
        }
    }

    fn lookup_response(
        &mut self,
        now: Instant,
        slot: usize,
        lid: u32,
        from: SocketAddrV4,
        r: &Response<'_>,
    ) {
        let own = self.id();
        let enforce = self.config.enforce_bep42;
        let Some(lk) = self.lookup_at(slot, lid) else {
            return;
        };
        lk.responded = lk.responded.saturating_add(1);
        if let Some(c) = lk.cands.iter_mut().find(|c| c.addr == from) {
            c.state = CandState::Responded;
            c.id = Some(r.id);
            c.token = r
                .token
                .and_then(|t| WriteToken::from_slice(t).ok())
                .unwrap_or_default();
        }
        let (lookup, info_hash) = (lk.id, InfoHash(lk.target.0));
        let wants_peers = matches!(lk.kind, LookupKind::GetPeers | LookupKind::Announce(..));
        let mut peers = heapless::Vec::<SocketAddrV4, MAX_PEERS_PER_EVENT>::new();
        if wants_peers {
            if let Some(v) = r.values {
                for p in v
                    .iter()
                    .filter(|p| p.port() != 0 && !p.ip().is_unspecified())
                {
                    if !peers.contains(&p) && peers.push(p).is_err() {
                        break;
                    }
                }
            }
        }
        lk.peers = lk.peers.saturating_add(peers.len() as u32);
        if let Some(nodes) = r.nodes {
            for (id, addr) in nodes.iter().take(MAX_NODES_PER_REPLY) {
                if id == own
                    || addr.port() == 0
                    || addr.ip().is_unspecified()
                    || (enforce && !bep42::is_valid(&id, *addr.ip()))
                {
                    continue;
                }
                add_cand(lk, id, addr);
            }
        }
        sort_cands(lk);
        if !peers.is_empty() {
            self.push_event(Event::PeersFound {
                lookup,
                info_hash,
                peers,
            });
        }
        self.step(slot, now);
    }

    /// Sends what the lookup in `slot` may send; finishes it when done.
    fn step(&mut self, slot: usize, now: Instant) {
        let max = self.config.max_lookup_messages;
        loop {
            let Some(lk) = self.lookups.get_mut(slot).and_then(|l| l.as_mut()) else {
                return;
            };
            let in_flight = lk
                .cands
                .iter()
                .filter(|c| c.state == CandState::InFlight)
                .count();
            // The window: the closest live candidates up to the K-th that
            // responded. A query still in flight (a slow or dead node)
            // holds the lookup only while fewer than K closer-or-equal
            // nodes have answered (Kademlia's end: the K closest known
            // nodes have responded).
            let mut responded = 0;
            let mut next = None;
            for c in lk.cands.iter_mut().filter(|c| c.state != CandState::Failed) {
                if responded >= K {
                    break;
                }
                match c.state {
                    CandState::Responded => responded += 1,
                    CandState::New if next.is_none() => next = Some(c),
                    _ => {}
                }
            }
            let can_send = in_flight < ALPHA && lk.sent < max;
            match next {
                Some(c) if can_send => {
                    c.state = CandState::InFlight;
                    let (to, expected) = (c.addr, c.id);
                    lk.sent += 1;
                    let q = match lk.kind {
                        LookupKind::FindNode | LookupKind::Quiet => OutQuery::FindNode(lk.target),
                        _ => OutQuery::GetPeers(InfoHash(lk.target.0)),
                    };
                    let purpose = Purpose::Lookup(slot, lk.id.0);
                    if !self.send_query(now, to, expected, q, purpose) {
                        // No room to send now: retry shortly.
                        self.retry_at = Some(now.add_millis(SEND_RETRY.millis()));
                        if let Some(c) = self
                            .lookups
                            .get_mut(slot)
                            .and_then(|l| l.as_mut())
                            .and_then(|l| l.cands.iter_mut().find(|c| c.addr == to))
                        {
                            c.state = CandState::New;
                        }
                        return;
                    }
                }
                _ => {
                    let more = next.is_some() && lk.sent < max;
                    if (in_flight == 0 || responded >= K) && !more {
                        self.finish(slot, now);
                    }
                    return;
                }
            }
        }
    }

    fn finish(&mut self, slot: usize, now: Instant) {
        let Some(lk) = self.lookups.get_mut(slot).and_then(|l| l.take()) else {
            return;
        };
        let mut announced = 0u16;
        if let LookupKind::Announce(port, implied) = lk.kind {
            let ih = InfoHash(lk.target.0);
            for c in lk
                .cands
                .iter()
                .filter(|c| c.state == CandState::Responded && !c.token.is_empty())
                .take(K)
            {
                let q = OutQuery::Announce(ih, port, implied, c.token.clone());
                if self.send_query(now, c.addr, c.id, q, Purpose::Announce) {
                    announced += 1;
                }
            }
        }
        if lk.kind != LookupKind::Quiet {
            self.push_event(Event::LookupDone {
                lookup: lk.id,
                target: lk.target,
                messages: lk.sent.saturating_add(announced),
                responded: lk.responded,
                peers: lk.peers,
                announced,
            });
        }
    }
}

fn sort_cands(lk: &mut Lookup) {
    let t = lk.target;
    lk.cands
        .sort_unstable_by_key(|c| (c.id.is_some(), c.id.map(|id| id.distance(&t))));
}

fn add_cand(lk: &mut Lookup, id: NodeId, addr: SocketAddrV4) {
    if lk.cands.iter().any(|c| c.addr == addr || c.id == Some(id)) {
        return;
    }
    let cand = Cand {
        id: Some(id),
        addr,
        state: CandState::New,
        token: WriteToken::new(),
    };
    if lk.cands.is_full() {
        // Replace the farthest candidate if the newcomer is nearer.
        let d = id.distance(&lk.target);
        let t = lk.target;
        let far = lk
            .cands
            .iter()
            .enumerate()
            .filter(|(_, c)| c.state != CandState::InFlight)
            .max_by_key(|(_, c)| c.id.map(|i| i.distance(&t)))
            .map(|(i, c)| (i, c.id.map(|i| i.distance(&t))));
        if let Some((i, Some(fd))) = far {
            if d < fd {
                lk.cands.swap_remove(i);
                let _ = lk.cands.push(cand);
            }
        }
    } else {
        let _ = lk.cands.push(cand);
    }
}

#[cfg(test)]
mod tests;
