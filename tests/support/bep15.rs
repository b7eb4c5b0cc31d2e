//! BEP 15 (UDP tracker protocol) written by hand, once: the tests' own
//! second opinion on the wire format, independent of the core's encoder
//! (a unit test below checks the two agree). [`Udp`] is a client socket for
//! tracker tests (requests by hand, replies parsed by the core); the free
//! functions probe, announce to and scrape a tracker on 127.0.0.1 with
//! bounded waits. IPv4 and IPv6 requests are the same; only replies differ.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ourtorrent_core::id::{InfoHash, PeerId};
use ourtorrent_core::tracker::udp::{ConnectionId, Limits, Response, TorrentStats, TransactionId};
use ourtorrent_core::tracker::{AddressFamily, AnnounceEvent};

/// BEP 15: the magic constant of a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// BEP 15 actions.
pub const ACTION_CONNECT: u32 = 0;
pub const ACTION_ANNOUNCE: u32 = 1;
pub const ACTION_SCRAPE: u32 = 2;

/// A connect request: protocol id, action 0, transaction id (16 bytes).
pub fn connect_request(transaction_id: u32) -> Vec<u8> {
    let mut r = Vec::with_capacity(16);
    r.extend_from_slice(&PROTOCOL_ID.to_be_bytes());
    r.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
    r.extend_from_slice(&transaction_id.to_be_bytes());
    r
}

/// An announce request's fields, in BEP 15 order (98 bytes, no BEP 41
/// options).
#[derive(Clone, Debug)]
pub struct Announce {
    pub connection_id: u64,
    pub transaction_id: u32,
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    pub downloaded: u64,
    pub left: u64,
    pub uploaded: u64,
    /// 0 none, 1 completed, 2 started, 3 stopped.
    pub event: u32,
    /// 0: the sender's address.
    pub ip: u32,
    pub key: u32,
    /// -1: the tracker's default.
    pub num_want: i32,
    pub port: u16,
}

impl Announce {
    pub fn encode(&self) -> Vec<u8> {
        let mut a = Vec::with_capacity(98);
        a.extend_from_slice(&self.connection_id.to_be_bytes());
        a.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
        a.extend_from_slice(&self.transaction_id.to_be_bytes());
        a.extend_from_slice(&self.info_hash);
        a.extend_from_slice(&self.peer_id);
        a.extend_from_slice(&self.downloaded.to_be_bytes());
        a.extend_from_slice(&self.left.to_be_bytes());
        a.extend_from_slice(&self.uploaded.to_be_bytes());
        a.extend_from_slice(&self.event.to_be_bytes());
        a.extend_from_slice(&self.ip.to_be_bytes());
        a.extend_from_slice(&self.key.to_be_bytes());
        a.extend_from_slice(&self.num_want.to_be_bytes());
        a.extend_from_slice(&self.port.to_be_bytes());
        a
    }
}

/// A scrape request: connection id, action 2, transaction id, the hashes.
pub fn scrape_request(connection_id: u64, transaction_id: u32, hashes: &[[u8; 20]]) -> Vec<u8> {
    let mut r = Vec::with_capacity(16 + 20 * hashes.len());
    r.extend_from_slice(&connection_id.to_be_bytes());
    r.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    r.extend_from_slice(&transaction_id.to_be_bytes());
    for h in hashes {
        r.extend_from_slice(h);
    }
    r
}

/// The connection id of a 16-byte connect reply.
fn connection_id_of(reply: &[u8]) -> u64 {
    u64::from_be_bytes(reply[8..16].try_into().expect("16-byte connect reply"))
}

/// Waits (10 s at most) until a UDP tracker answers a connect on
/// 127.0.0.1:`port` with 16 bytes.
pub fn wait_for_udp_tracker(port: u16) {
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let req = connect_request(7);
    // Generous: start-up is slow while other tests load the machine.
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        let _ = probe.send_to(&req, ("127.0.0.1", port));
        let mut buf = [0u8; 64];
        if let Ok((16, _)) = probe.recv_from(&mut buf) {
            return;
        }
    }
    panic!("no UDP tracker answered on port {port}");
}

/// Announces `peer_port` on 127.0.0.1 as a seeder (left 0, `started`) of
/// `info_hash` to the UDP tracker on `tracker_port`; panics unless it
/// answers with an announce reply within 2 s a step. opentracker loads its
/// whitelist in a thread of its own, so it may answer connects before it
/// tracks the hash: its 8-byte refusal is retried (100 tries, 100 ms apart).
pub fn announce_seeder(tracker_port: u16, info_hash: &[u8; 20], peer_port: u16) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.connect(("127.0.0.1", tracker_port)).unwrap();
    let mut buf = [0u8; 512];
    for _ in 0..100 {
        s.send(&connect_request(11)).unwrap();
        let n = s.recv(&mut buf).expect("connect reply");
        assert_eq!(n, 16);
        let a = Announce {
            connection_id: connection_id_of(&buf[..n]),
            transaction_id: 12,
            info_hash: *info_hash,
            peer_id: *b"-FAKE01-000000000000",
            downloaded: 0,
            left: 0,
            uploaded: 0,
            event: 2,
            ip: 0,
            key: 0,
            num_want: -1,
            port: peer_port,
        };
        s.send(&a.encode()).unwrap();
        let n = s.recv(&mut buf).expect("announce reply");
        if n >= 20 && buf[3] == ACTION_ANNOUNCE as u8 {
            return;
        }
        // opentracker's refusal of a hash not (yet) on its whitelist.
        let not_yet = n == 8 && buf[3] == ACTION_ANNOUNCE as u8;
        assert!(not_yet, "announce refused: {:?}", &buf[..n]);
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the tracker on {tracker_port} never accepted the announce");
}

/// One torrent's counts in a scrape reply.
#[derive(Clone, Copy, Debug)]
pub struct Scraped {
    pub seeders: u32,
    pub completed: u32,
    pub leechers: u32,
}

/// Waits (100 tries, 100 ms apart) until a scrape of `info_hash` at the
/// UDP tracker on 127.0.0.1:`port` satisfies `ok` (`what` names it for the
/// failure).
pub fn wait_for_scrape(port: u16, info_hash: &[u8; 20], what: &str, ok: impl Fn(Scraped) -> bool) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.connect(("127.0.0.1", port)).unwrap();
    let mut last = None;
    for _ in 0..100 {
        let mut buf = [0u8; 512];
        if s.send(&connect_request(21)).is_ok() && matches!(s.recv(&mut buf), Ok(16)) {
            let sc = scrape_request(connection_id_of(&buf[..16]), 22, &[*info_hash]);
            if s.send(&sc).is_ok() {
                if let Ok(20) = s.recv(&mut buf) {
                    let word = |o: usize| u32::from_be_bytes(buf[o..o + 4].try_into().unwrap());
                    let c = Scraped {
                        seeders: word(8),
                        completed: word(12),
                        leechers: word(16),
                    };
                    last = Some(c);
                    if buf[3] == ACTION_SCRAPE as u8 && ok(c) {
                        return;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the tracker on {port} never counted {what} (last scrape: {last:?})");
}

/// A BEP 15 client socket for tracker tests: requests encoded here,
/// replies parsed by the core (500 ms read timeout).
pub struct Udp {
    pub sock: UdpSocket,
    pub target: SocketAddr,
    tid: u32,
}

impl Udp {
    pub fn new(target: SocketAddr) -> Udp {
        let bind = if target.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        };
        let sock = UdpSocket::bind(bind).expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        Udp {
            sock,
            target,
            tid: 7,
        }
    }

    pub fn next_tid(&mut self) -> TransactionId {
        self.tid += 1;
        TransactionId(self.tid)
    }

    /// Sends raw bytes; returns the raw reply, if one comes within 500 ms.
    pub fn raw(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        self.sock.send_to(bytes, self.target).expect("send");
        let mut buf = [0u8; 4096];
        match self.sock.recv_from(&mut buf) {
            Ok((n, _)) => Some(buf[..n].to_vec()),
            Err(_) => None,
        }
    }

    pub fn parse(&self, reply: &[u8]) -> Response<'static> {
        let leaked: &'static [u8] = Box::leak(reply.to_vec().into_boxed_slice());
        Response::parse(leaked, AddressFamily::of(&self.target), &Limits::default())
            .expect("parse reply")
    }

    /// A connect request with the next transaction id.
    pub fn connect_bytes(&mut self) -> Vec<u8> {
        connect_request(self.next_tid().0)
    }

    pub fn connect(&mut self) -> ConnectionId {
        let tid = self.next_tid();
        let r = self.raw(&connect_request(tid.0)).expect("connect reply");
        match self.parse(&r) {
            Response::Connect(c) => {
                assert_eq!(c.transaction_id, tid);
                c.connection_id
            }
            other => panic!("not a connect reply: {other:?}"),
        }
    }

    /// An announce from peer id `[port as u8; 20]`, key 1, nothing up or
    /// down.
    pub fn announce_bytes(
        &mut self,
        cid: ConnectionId,
        ih: InfoHash,
        port: u16,
        left: u64,
        event: AnnounceEvent,
        num_want: i32,
    ) -> Vec<u8> {
        Announce {
            connection_id: cid.0,
            transaction_id: self.next_tid().0,
            info_hash: ih.0,
            peer_id: PeerId([port as u8; 20]).0,
            downloaded: 0,
            left,
            uploaded: 0,
            event: event.to_udp(),
            ip: 0,
            key: 1,
            num_want,
            port,
        }
        .encode()
    }

    /// Announces; returns the parsed reply (panics on no reply).
    pub fn announce(
        &mut self,
        cid: ConnectionId,
        ih: InfoHash,
        port: u16,
        left: u64,
        event: AnnounceEvent,
    ) -> Response<'static> {
        let req = self.announce_bytes(cid, ih, port, left, event, -1);
        let r = self.raw(&req).expect("announce reply");
        self.parse(&r)
    }

    /// Scrapes; returns the stats per hash.
    pub fn scrape(&mut self, cid: ConnectionId, hashes: &[InfoHash]) -> Vec<TorrentStats> {
        let hashes: Vec<[u8; 20]> = hashes.iter().map(|h| h.0).collect();
        let req = scrape_request(cid.0, self.next_tid().0, &hashes);
        let r = self.raw(&req).expect("scrape reply");
        match self.parse(&r) {
            Response::Scrape(s) => s.stats.iter().collect(),
            other => panic!("not a scrape reply: {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ourtorrent_core::tracker::udp::{
        encode_scrape_request, AnnounceRequest, ConnectRequest, UdpOptions,
    };

    /// The hand encoding and the core's agree byte for byte.
    #[test]
    fn hand_encoding_matches_the_core() {
        let mut out = [0u8; 256];
        let n = ConnectRequest {
            transaction_id: TransactionId(0x0102_0304),
        }
        .encode(&mut out)
        .unwrap();
        assert_eq!(connect_request(0x0102_0304), out[..n]);

        let n = AnnounceRequest {
            connection_id: ConnectionId(0x1122_3344_5566_7788),
            transaction_id: TransactionId(9),
            info_hash: InfoHash([0xab; 20]),
            peer_id: PeerId(*b"-FAKE01-000000000000"),
            downloaded: 1 << 40,
            left: 12345,
            uploaded: 7,
            event: AnnounceEvent::Stopped,
            ip: std::net::Ipv4Addr::new(10, 0, 0, 1),
            key: 0xdead_beef,
            num_want: -1,
            port: 6881,
            options: UdpOptions::EMPTY,
        }
        .encode(&mut out)
        .unwrap();
        let hand = Announce {
            connection_id: 0x1122_3344_5566_7788,
            transaction_id: 9,
            info_hash: [0xab; 20],
            peer_id: *b"-FAKE01-000000000000",
            downloaded: 1 << 40,
            left: 12345,
            uploaded: 7,
            event: 3,
            ip: u32::from(std::net::Ipv4Addr::new(10, 0, 0, 1)),
            key: 0xdead_beef,
            num_want: -1,
            port: 6881,
        };
        assert_eq!(hand.encode().len(), 98);
        assert_eq!(hand.encode(), out[..n]);

        let hashes = [InfoHash([1; 20]), InfoHash([2; 20])];
        let n =
            encode_scrape_request(ConnectionId(5), TransactionId(6), &hashes, &mut out).unwrap();
        assert_eq!(scrape_request(5, 6, &[[1; 20], [2; 20]]), out[..n]);
    }
}
