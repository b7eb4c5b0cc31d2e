//! Deterministic simulation: a client and the server triage on a virtual
//! clock over a seeded lossy link.

use super::*;
use crate::tracker::udp::response::{encode_scrape_response, ConnectResponse, ErrorResponse};
use crate::tracker::udp::server::{Decision, Server, SwarmInfo, SECRET_LEN};
use crate::tracker::udp::Response as Resp;
use core::net::Ipv4Addr;
use std::collections::VecDeque;
use std::vec::Vec;

/// xorshift64: a tiny deterministic PRNG for the link and the ids.
#[derive(Clone)]
struct XorShift(u64);

impl XorShift {
    /// Spreads small seeds over all bits (xorshift mixes poorly at first).
    fn seeded(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn tids(seed: u64) -> impl FnMut() -> u32 {
    let mut r = XorShift::seeded(seed ^ 0xabcd);
    move || r.next() as u32
}

const ONE_WAY: Duration = Duration::from_millis(40);

fn params() -> AnnounceParams {
    AnnounceParams {
        info_hash: InfoHash([0x11; 20]),
        peer_id: PeerId([0x22; 20]),
        downloaded: 0,
        left: 1000,
        uploaded: 0,
        event: AnnounceEvent::Started,
        key: 1,
        num_want: -1,
        port: 6881,
    }
}

fn client_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 51413))
}

struct Sim<T: TransactionIds> {
    now: Instant,
    client: Client<T>,
    server: Server,
    link: XorShift,
    /// Loss probability in 1/1000.
    loss: u64,
    /// Datagrams travelling to the client.
    to_client: VecDeque<(Instant, Vec<u8>)>,
    /// (time, length) of every client transmission.
    sent: Vec<(Instant, usize)>,
}

impl<T: TransactionIds> Sim<T> {
    fn new(client: Client<T>, seed: u64, loss: u64) -> Self {
        Sim {
            now: Instant::from_secs(1_000_000),
            client,
            server: Server::new(&[3; SECRET_LEN], Limits::default()),
            link: XorShift::seeded(seed),
            loss,
            to_client: VecDeque::new(),
            sent: Vec::new(),
        }
    }

    fn lost(&mut self) -> bool {
        self.link.next() % 1000 < self.loss
    }

    /// Runs until the client reports an event.
    fn run(&mut self) -> Event {
        let mut buf = [0u8; TRANSMIT_BUF_LEN];
        loop {
            while let Some(n) = self.client.poll_transmit(self.now, &mut buf) {
                self.sent.push((self.now, n));
                if self.lost() {
                    continue;
                }
                let mut out = [0u8; 2048];
                let from = client_addr();
                let reply = match self.server.handle(self.now, from, &buf[..n], &mut out) {
                    Decision::Connect(m) | Decision::Error(m) => Some(m),
                    Decision::Announce(a) => {
                        let peers =
                            (1..=3u8).map(|i| SocketAddr::from((Ipv4Addr::new(10, 0, 0, i), 6881)));
                        let swarm = SwarmInfo {
                            interval: 1800,
                            leechers: 2,
                            seeders: 1,
                        };
                        let mut tmp = [0u8; 2048];
                        let m = self
                            .server
                            .announce_reply(&a, n, &from, swarm, peers, &mut tmp)
                            .unwrap();
                        out[..m].copy_from_slice(&tmp[..m]);
                        Some(m)
                    }
                    Decision::Scrape(s) => {
                        let stats = s.info_hashes.iter().map(|h| TorrentStats {
                            seeders: u32::from(h.0[0]),
                            completed: 0,
                            leechers: 0,
                        });
                        let mut tmp = [0u8; 2048];
                        let m = encode_scrape_response(s.transaction_id, stats, &mut tmp).unwrap();
                        out[..m].copy_from_slice(&tmp[..m]);
                        Some(m)
                    }
                    Decision::Drop(r) => panic!("server dropped a client datagram: {r}"),
                };
                if let Some(m) = reply {
                    if !self.lost() {
                        self.to_client
                            .push_back((self.now + ONE_WAY + ONE_WAY, out[..m].to_vec()));
                    }
                }
            }
            if let Some(ev) = self.client.poll_event() {
                return ev;
            }
            let next_rx = self.to_client.front().map(|(t, _)| *t);
            let next = match (next_rx, self.client.poll_timeout()) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).expect("client stalled with nothing pending"),
            };
            self.now = next;
            while self.to_client.front().is_some_and(|(t, _)| *t <= self.now) {
                let (_, d) = self.to_client.pop_front().unwrap();
                let _ = self.client.handle_datagram(self.now, &d);
            }
            self.client.handle_timeout(self.now);
        }
    }
}

fn new_client(seed: u64) -> Client<impl FnMut() -> u32> {
    Client::new(ClientConfig::default(), tids(seed))
}

#[test]
fn lossless_announce_and_scrape() {
    let mut sim = Sim::new(new_client(1), 1, 0);
    sim.client.announce(sim.now, params()).unwrap();
    let Event::Announced(r) = sim.run() else {
        panic!()
    };
    assert_eq!(
        (r.interval, r.leechers, r.seeders, r.dropped),
        (1800, 2, 1, 0)
    );
    assert_eq!(r.peers.len(), 3);
    assert_eq!(sim.sent.iter().map(|s| s.1).collect::<Vec<_>>(), [16, 98]);
    sim.client
        .scrape(sim.now, &[InfoHash([5; 20]), InfoHash([6; 20])])
        .unwrap();
    let Event::Scraped(s) = sim.run() else {
        panic!()
    };
    assert_eq!(s.iter().map(|t| t.seeders).collect::<Vec<_>>(), [5, 6]);
    // The scrape reused the connection id: one more datagram only.
    assert_eq!(sim.sent.len(), 3);
}

#[test]
fn retransmit_schedule_then_give_up() {
    let mut sim = Sim::new(new_client(2), 2, 1000);
    let t0 = sim.now;
    sim.client.announce(t0, params()).unwrap();
    assert_eq!(sim.run(), Event::Failed(ClientError::TimedOut));
    // BEP 15: retransmit after 15·2ⁿ s, n = 0..=8.
    let offsets: Vec<u64> = sim
        .sent
        .iter()
        .map(|(t, _)| (t.millis() - t0.millis()) / 1000)
        .collect();
    assert_eq!(offsets, [0, 15, 45, 105, 225, 465, 945, 1905, 3825]);
    assert!(sim.sent.iter().all(|&(_, n)| n == 16));
    // Gave up when the n = 8 timeout (3840 s) expired.
    assert_eq!(sim.now, t0 + Duration::from_secs(3825 + 3840));
    assert!(sim.client.is_idle());
    assert_eq!(sim.client.poll_timeout(), None);
}

#[test]
fn lossy_link_eventually_succeeds() {
    for seed in 1..=40u64 {
        let mut sim = Sim::new(new_client(seed), seed, 300);
        sim.client.announce(sim.now, params()).unwrap();
        let ev = sim.run();
        assert!(matches!(ev, Event::Announced(_)), "seed {seed}: {ev:?}");
        // Every gap between two transmissions is a BEP 15 backoff step or
        // the prompt follow-up to a connect response (≤ one round trip).
        for w in sim.sent.windows(2) {
            let gap = w[1].0.millis() - w[0].0.millis();
            let ok = gap <= 2 * ONE_WAY.millis() || (0..=8).any(|n| gap == 15_000 << n);
            assert!(ok, "seed {seed}: gap {gap}");
        }
    }
    // At 80 % loss, some runs still succeed and the others give up cleanly.
    let (mut ok, mut gave_up) = (0, 0);
    for seed in 1..=40u64 {
        let mut sim = Sim::new(new_client(seed), seed, 800);
        sim.client.announce(sim.now, params()).unwrap();
        match sim.run() {
            Event::Announced(_) => ok += 1,
            Event::Failed(ClientError::TimedOut) => gave_up += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(
        ok > 0 && gave_up > 0 && ok + gave_up == 40,
        "{ok} {gave_up}"
    );
}

#[test]
fn connection_id_reused_for_sixty_seconds() {
    let mut sim = Sim::new(new_client(3), 3, 0);
    sim.client.announce(sim.now, params()).unwrap();
    assert!(matches!(sim.run(), Event::Announced(_)));
    let received = sim.now - ONE_WAY - ONE_WAY; // the connect reply came one RTT before
    assert!(sim.client.connection_id(sim.now).is_some());
    // 59 s after receipt: announce directly.
    sim.now = received + Duration::from_secs(59);
    sim.sent.clear();
    sim.client.announce(sim.now, params()).unwrap();
    assert!(matches!(sim.run(), Event::Announced(_)));
    assert_eq!(sim.sent.iter().map(|s| s.1).collect::<Vec<_>>(), [98]);
    // 60 s after receipt: the id has expired, connect again.
    sim.now = received + Duration::from_secs(60);
    sim.sent.clear();
    sim.client.announce(sim.now, params()).unwrap();
    assert!(matches!(sim.run(), Event::Announced(_)));
    assert_eq!(sim.sent.iter().map(|s| s.1).collect::<Vec<_>>(), [16, 98]);
}

#[test]
fn expired_id_during_retransmits_reconnects() {
    // Connect succeeds, then the announce is lost repeatedly: after 15 s and
    // 45 s the id is still fresh (< 60 s), at 105 s it is not.
    let mut c = new_client(4);
    let t0 = Instant::from_secs(500);
    let mut buf = [0u8; TRANSMIT_BUF_LEN];
    c.announce(t0, params()).unwrap();
    let n = c.poll_transmit(t0, &mut buf).unwrap();
    let tid = TransactionId(u32::from_be_bytes(buf[12..16].try_into().unwrap()));
    assert_eq!(n, 16);
    let mut reply = [0u8; 16];
    ConnectResponse {
        transaction_id: tid,
        connection_id: ConnectionId(99),
    }
    .encode(&mut reply)
    .unwrap();
    c.handle_datagram(t0, &reply).unwrap();
    let mut lens = Vec::new();
    let mut now = t0;
    for _ in 0..4 {
        let n = c.poll_transmit(now, &mut buf).unwrap();
        lens.push(n);
        assert_eq!(c.poll_transmit(now, &mut buf), None);
        now = c.poll_timeout().unwrap();
    }
    // announce at 0 s, 15 s, 45 s; at 105 s the id (received at 0) is stale.
    assert_eq!(lens, [98, 98, 98, 16]);
}

#[test]
fn transaction_ids_and_errors() {
    let mut c = new_client(5);
    let now = Instant::from_secs(10);
    let mut buf = [0u8; TRANSMIT_BUF_LEN];
    assert_eq!(
        c.handle_datagram(now, &[0, 0, 0, 3, 0, 0, 0, 1]),
        Err(Ignored::Unsolicited)
    );
    c.announce(now, params()).unwrap();
    assert_eq!(c.announce(now, params()), Err(ClientError::Busy));
    c.poll_transmit(now, &mut buf).unwrap();
    let tid = u32::from_be_bytes(buf[12..16].try_into().unwrap());
    let mut reply = [0u8; 64];
    let n = ErrorResponse {
        transaction_id: TransactionId(tid.wrapping_add(1)),
        message: b"go away",
    }
    .encode(&mut reply)
    .unwrap();
    assert_eq!(
        c.handle_datagram(now, &reply[..n]),
        Err(Ignored::WrongTransaction)
    );
    assert_eq!(
        c.handle_datagram(now, &reply[..5]),
        Err(Ignored::Malformed(ParseError::new(
            crate::tracker::udp::ParseErrorKind::Truncated,
            5
        )))
    );
    // An announce reply while connecting is unexpected.
    let n2 = Resp::Scrape(crate::tracker::udp::ScrapeResponse {
        transaction_id: TransactionId(tid),
        stats: crate::tracker::udp::ScrapeStats::new(&[]).unwrap(),
    })
    .encode(&mut reply)
    .unwrap();
    assert_eq!(
        c.handle_datagram(now, &reply[..n2]),
        Err(Ignored::Unexpected)
    );
    let n = ErrorResponse {
        transaction_id: TransactionId(tid),
        message: b"go away",
    }
    .encode(&mut reply)
    .unwrap();
    c.handle_datagram(now, &reply[..n]).unwrap();
    assert_eq!(
        c.poll_event(),
        Some(Event::TrackerError(
            heapless::Vec::from_slice(b"go away").unwrap()
        ))
    );
    assert!(c.is_idle());
    assert_eq!(c.scrape(now, &[]), Err(ClientError::NoInfoHashes));
    assert_eq!(
        c.scrape(now, &[InfoHash::default(); MAX_SCRAPE_HASHES + 1]),
        Err(ClientError::TooManyInfoHashes)
    );
    c.scrape(now, &[InfoHash::default(); MAX_SCRAPE_HASHES])
        .unwrap();
    // A buffer too small fails the query instead of stalling.
    assert_eq!(c.poll_transmit(now, &mut buf[..15]), None);
    assert_eq!(
        c.poll_event(),
        Some(Event::Failed(ClientError::BufferTooSmall))
    );
}

#[test]
fn url_data_is_sent_as_bep41_options() {
    let config = ClientConfig {
        url_data: heapless::Vec::from_slice(b"/announce?passkey=abc").unwrap(),
        ..ClientConfig::default()
    };
    let mut sim = Sim::new(Client::new(config, tids(6)), 6, 0);
    sim.client.announce(sim.now, params()).unwrap();
    assert!(matches!(sim.run(), Event::Announced(_)));
    assert_eq!(sim.sent[1].1, 98 + 2 + 21);
}

#[test]
fn peers_beyond_capacity_are_counted() {
    let mut c = new_client(7);
    let now = Instant::from_secs(10);
    let mut buf = [0u8; TRANSMIT_BUF_LEN];
    c.announce(now, params()).unwrap();
    c.poll_transmit(now, &mut buf).unwrap();
    let tid = TransactionId(u32::from_be_bytes(buf[12..16].try_into().unwrap()));
    let mut r = [0u8; 16];
    ConnectResponse {
        transaction_id: tid,
        connection_id: ConnectionId(1),
    }
    .encode(&mut r)
    .unwrap();
    c.handle_datagram(now, &r).unwrap();
    c.poll_transmit(now, &mut buf).unwrap();
    let tid = TransactionId(u32::from_be_bytes(buf[12..16].try_into().unwrap()));
    let mut out = [0u8; 20 + 6 * (CLIENT_MAX_PEERS + 5)];
    let peers = (0..CLIENT_MAX_PEERS as u32 + 5).map(|i| SocketAddr::from((Ipv4Addr::from(i), 1)));
    let n = crate::tracker::udp::encode_announce_response(
        tid,
        1,
        0,
        0,
        peers,
        AddressFamily::V4,
        usize::MAX,
        &mut out,
    )
    .unwrap();
    c.handle_datagram(now, &out[..n]).unwrap();
    let Some(Event::Announced(a)) = c.poll_event() else {
        panic!()
    };
    assert_eq!((a.peers.len(), a.dropped), (CLIENT_MAX_PEERS, 5));
}
