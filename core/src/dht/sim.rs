//! Deterministic simulation: 70 sans-IO DHT nodes on a virtual network
//! (seeded latency and loss, all on 127.0.0.1 so BEP 42 exempts them),
//! 10 of them malicious (garbage replies, oversized replies and Sybil-like
//! fake nodes, id spoofing). One node announces; others look it up.

use super::krpc::{self, Body, Query, ResponseParts, Token};
use super::node::{Config, Dht, Event, PeerSlot};
use super::{NodeId, NodeSlot, K};
use crate::id::InfoHash;
use crate::time::Instant;
use core::net::{Ipv4Addr, SocketAddrV4};
use std::boxed::Box;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::vec;
use std::vec::Vec;

/// splitmix64: the network's and the ids' randomness.
struct SimRng(u64);

impl SimRng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        for x in b.iter_mut() {
            *x = self.next() as u8;
        }
        b
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Behaviour {
    Honest,
    /// Drops this percentage of incoming datagrams.
    Lossy(u64),
    /// Answers lookups with random bytes.
    Garbage,
    /// Answers lookups with oversized datagrams or many fake nodes.
    Huge,
    /// Answers lookups claiming another id (the target's).
    Spoofer,
}

struct SimNode {
    addr: SocketAddrV4,
    dht: Dht<'static>,
    behaviour: Behaviour,
}

type Packet = Reverse<(u64, u64, usize, SocketAddrV4, Vec<u8>)>;

struct Sim {
    now: u64,
    rng: SimRng,
    nodes: Vec<SimNode>,
    index: HashMap<SocketAddrV4, usize>,
    wire: BinaryHeap<Packet>,
    seq: u64,
    events: Vec<(usize, Event)>,
    delivered: u64,
}

const BASE_PORT: u16 = 20000;
const HONEST: usize = 60;
const LOSSY: usize = 10;
const GARBAGE: usize = 4;
const HUGE: usize = 3;
const SPOOFERS: usize = 3;

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = SimRng(seed);
        let mut nodes = Vec::new();
        let mut index = HashMap::new();
        let total = HONEST + GARBAGE + HUGE + SPOOFERS;
        for i in 0..total {
            let behaviour = match i {
                _ if i < HONEST - LOSSY => Behaviour::Honest,
                _ if i < HONEST => Behaviour::Lossy(20),
                _ if i < HONEST + GARBAGE => Behaviour::Garbage,
                _ if i < HONEST + GARBAGE + HUGE => Behaviour::Huge,
                _ => Behaviour::Spoofer,
            };
            let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, BASE_PORT + i as u16);
            let slots: &'static mut [NodeSlot] = Box::leak(Box::new([NodeSlot::EMPTY; 20 * K]));
            let peers: &'static mut [PeerSlot] = Box::leak(Box::new([PeerSlot::EMPTY; 64]));
            let id = NodeId(rng.bytes());
            let dht = Dht::new(
                Config::default(),
                id,
                rng.bytes(),
                slots,
                peers,
                Instant::ZERO,
            );
            index.insert(addr, i);
            nodes.push(SimNode {
                addr,
                dht,
                behaviour,
            });
        }
        Sim {
            now: 0,
            rng,
            nodes,
            index,
            wire: BinaryHeap::new(),
            seq: 0,
            events: Vec::new(),
            delivered: 0,
        }
    }

    fn send(&mut self, from: SocketAddrV4, to: SocketAddrV4, bytes: Vec<u8>) {
        let Some(&dest) = self.index.get(&to) else {
            return; // nobody there (fake nodes)
        };
        let at = self.now + 10 + self.rng.next() % 40;
        self.seq += 1;
        self.wire.push(Reverse((at, self.seq, dest, from, bytes)));
    }

    fn flush(&mut self) {
        let now = Instant::from_millis(self.now);
        let mut buf = [0u8; krpc::MAX_DATAGRAM_LEN];
        for i in 0..self.nodes.len() {
            while let Some((to, n)) = self.nodes[i].dht.poll_transmit(now, &mut buf) {
                let from = self.nodes[i].addr;
                self.send(from, to, buf[..n].to_vec());
            }
            while let Some(e) = self.nodes[i].dht.poll_event() {
                self.events.push((i, e));
            }
        }
    }

    /// A malicious node's answer to a lookup query, or `None` to let its
    /// honest core handle the datagram.
    fn attack(&mut self, i: usize, bytes: &[u8]) -> Option<Vec<u8>> {
        let behaviour = self.nodes[i].behaviour;
        if matches!(behaviour, Behaviour::Honest | Behaviour::Lossy(_)) {
            return None;
        }
        let mut toks = [Token::EMPTY; krpc::RECOMMENDED_TOKENS];
        let m = krpc::decode(bytes, &mut toks).ok()?;
        let target = match m.body {
            Body::Query {
                query: Query::FindNode { target },
                ..
            } => target,
            Body::Query {
                query: Query::GetPeers { info_hash },
                ..
            } => NodeId(info_hash.0),
            _ => return None, // pings are answered honestly, so we get into tables
        };
        let mut out = vec![0u8; 4096];
        let n = match behaviour {
            Behaviour::Garbage => {
                let len = 1 + (self.rng.next() % 300) as usize;
                for b in out[..len].iter_mut() {
                    *b = self.rng.next() as u8;
                }
                len
            }
            Behaviour::Huge if self.rng.next() % 2 == 0 => 3000,
            Behaviour::Huge | Behaviour::Spoofer => {
                // Fake nodes right next to the target, at addresses nobody uses.
                let mut nodes = Vec::new();
                for k in 0..40u16 {
                    let mut id = target.0;
                    id[19] ^= (k + 1) as u8;
                    let a = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000 + k);
                    nodes.extend_from_slice(&krpc::node_to_compact(&NodeId(id), &a));
                }
                let id = if behaviour == Behaviour::Spoofer {
                    target
                } else {
                    self.nodes[i].dht.id()
                };
                let parts = ResponseParts {
                    id,
                    nodes: Some(&nodes[..]),
                    values: None::<core::iter::Empty<_>>,
                    token: Some(&b"tok"[..]),
                    ip: None,
                };
                krpc::encode_response(m.tid, false, parts, &mut out).unwrap()
            }
            _ => unreachable!(),
        };
        out.truncate(n);
        Some(out)
    }

    /// Runs until `deadline_ms` or until `stop` holds.
    fn run(&mut self, deadline_ms: u64, stop: impl Fn(&Sim) -> bool) {
        loop {
            self.flush();
            if stop(self) {
                return;
            }
            let next_packet = self.wire.peek().map(|Reverse(p)| p.0);
            let next_timer = self
                .nodes
                .iter()
                .filter_map(|n| n.dht.poll_timeout())
                .map(|t| t.millis())
                .min();
            let next = [next_packet, next_timer]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(u64::MAX);
            if next > deadline_ms {
                self.now = deadline_ms;
                return;
            }
            self.now = self.now.max(next);
            let now = Instant::from_millis(self.now);
            while self.wire.peek().is_some_and(|Reverse(p)| p.0 <= self.now) {
                let Reverse((_, _, dest, from, bytes)) = self.wire.pop().unwrap();
                if let Behaviour::Lossy(pct) = self.nodes[dest].behaviour {
                    if self.rng.next() % 100 < pct {
                        continue;
                    }
                }
                self.delivered += 1;
                match self.attack(dest, &bytes) {
                    Some(reply) => {
                        let me = self.nodes[dest].addr;
                        self.send(me, from, reply);
                    }
                    None => self.nodes[dest].dht.handle_datagram(now, from, &bytes),
                }
            }
            for n in self.nodes.iter_mut() {
                if n.dht.poll_timeout().is_some_and(|t| t <= now) {
                    n.dht.handle_timeout(now);
                }
            }
        }
    }

    fn done(&self, node: usize, lookup: super::LookupId) -> bool {
        self.events.iter().any(|(i, e)| {
            *i == node && matches!(e, Event::LookupDone { lookup: l, .. } if *l == lookup)
        })
    }
}

const IH: InfoHash = InfoHash(*b"simulated-info-hash!");
const ANNOUNCER: usize = 3;
const PEER_PORT: u16 = 5555;
const SEARCHERS: [usize; 5] = [17, 29, 42, 55, 59];

/// One full run: bootstrap, announce, five lookups. Returns a transcript
/// (per-lookup messages and whether the peer was found, datagrams delivered).
fn scenario(seed: u64) -> (Vec<(u16, bool)>, u64, Sim) {
    let mut sim = Sim::new(seed);
    let router = sim.nodes[0].addr;
    // Everyone but the router joins through it, 100 ms apart.
    for i in 1..sim.nodes.len() {
        sim.run(i as u64 * 100, |_| false);
        let now = Instant::from_millis(sim.now);
        sim.nodes[i].dht.bootstrap(now, &[router]).unwrap();
    }
    // Two minutes to settle (lossy nodes may need a bootstrap retry).
    sim.run(120_000, |_| false);
    // Honest tables are populated.
    let sizes: Vec<usize> = sim
        .nodes
        .iter()
        .take(HONEST)
        .map(|n| n.dht.table().len())
        .collect();
    std::println!("table sizes: {sizes:?}");
    assert!(sizes[..HONEST - LOSSY].iter().all(|&n| n >= K), "{sizes:?}");
    assert!(sizes.iter().all(|&n| n >= K / 2), "{sizes:?}");
    let now = Instant::from_millis(sim.now);
    let a = sim.nodes[ANNOUNCER]
        .dht
        .announce(now, IH, PEER_PORT, false)
        .unwrap();
    sim.run(sim.now + 60_000, |s| s.done(ANNOUNCER, a));
    let announced = sim.events.iter().find_map(|(i, e)| match e {
        Event::LookupDone {
            lookup, announced, ..
        } if *i == ANNOUNCER && *lookup == a => Some(*announced),
        _ => None,
    });
    assert!(
        announced.is_some_and(|n| n >= 3),
        "announce reached {announced:?} nodes"
    );
    let expected = SocketAddrV4::new(Ipv4Addr::LOCALHOST, PEER_PORT);
    let mut transcript = Vec::new();
    for &s in &SEARCHERS {
        let now = Instant::from_millis(sim.now);
        let l = sim.nodes[s].dht.get_peers(now, IH).unwrap();
        sim.run(sim.now + 120_000, |sim| sim.done(s, l));
        let found = sim.events.iter().any(|(i, e)| {
            *i == s && matches!(e, Event::PeersFound { lookup, peers, .. } if *lookup == l && peers.contains(&expected))
        });
        let messages = sim
            .events
            .iter()
            .find_map(|(i, e)| match e {
                Event::LookupDone {
                    lookup, messages, ..
                } if *i == s && *lookup == l => Some(*messages),
                _ => None,
            })
            .expect("lookup finished");
        transcript.push((messages, found));
    }
    let delivered = sim.delivered;
    (transcript, delivered, sim)
}

#[test]
fn dht_sim_lookup_finds_announced_peer_among_malicious_nodes() {
    let (transcript, delivered, sim) = scenario(0x5EED);
    std::println!("lookups (messages, found): {transcript:?}; datagrams delivered: {delivered}");
    let budget = Config::default().max_lookup_messages;
    for (messages, found) in &transcript {
        assert!(*found, "peer not found: {transcript:?}");
        assert!(*messages <= budget, "{messages} > {budget}");
    }
    // The attacks happened and were counted, not absorbed.
    let sum = |f: fn(&super::Stats) -> u64| {
        sim.nodes
            .iter()
            .take(HONEST)
            .map(|n| f(&n.dht.stats()))
            .sum::<u64>()
    };
    assert!(sum(|s| s.malformed) > 0, "garbage seen");
    assert!(sum(|s| s.id_mismatch) > 0, "spoofed ids seen");
    assert!(sum(|s| s.timeouts) > 0, "fake nodes and loss time out");
    // No honest node keeps a spoofer's claimed id or a fake node.
    for n in sim.nodes.iter().take(HONEST) {
        for slot in n.dht.table().nodes() {
            assert!(
                sim.index.contains_key(&slot.addr),
                "fake node {} in a table",
                slot.addr
            );
        }
    }
    // Stored where announced: some honest node holds the peer.
    let now = Instant::from_millis(sim.now);
    let holders = sim
        .nodes
        .iter()
        .filter(|n| n.dht.stored_peers(&IH, now).any(|p| p.port() == PEER_PORT))
        .count();
    assert!(holders >= 3, "{holders} holders");
}

#[test]
fn dht_sim_is_deterministic() {
    let (a, da, _) = scenario(42);
    let (b, db, _) = scenario(42);
    assert_eq!((a, da), (b, db));
}
