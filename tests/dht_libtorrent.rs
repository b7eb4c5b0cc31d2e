//! The core's sans-IO DHT node, driven over a 127.0.0.1 UDP socket by this
//! test, against libtorrent's DHT (python3-libtorrent): it bootstraps from a
//! libtorrent router, finds the peer a libtorrent node announces, and
//! announces a torrent that the libtorrent node then finds.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration as StdDuration, Instant as StdInstant};

use ourtorrent_core::dht::{Config, Dht, Event, NodeId, NodeSlot, PeerSlot, K};
use ourtorrent_core::id::InfoHash;
use ourtorrent_core::time::{Duration, Instant};
use ourtorrent_tests::{free_tcp_udp_port, repo_root, require_libtorrent};

struct Driver<'s> {
    dht: Dht<'s>,
    sock: UdpSocket,
    start: StdInstant,
    events: Vec<Event>,
    sent: u64,
}

impl Driver<'_> {
    fn now(&self) -> Instant {
        Instant::from_millis(self.start.elapsed().as_millis() as u64)
    }

    /// Runs the node until `done` holds for its events or `secs` pass.
    fn pump(&mut self, secs: u64, done: impl Fn(&[Event]) -> bool) -> bool {
        let deadline = StdInstant::now() + StdDuration::from_secs(secs);
        let mut buf = [0u8; 1500];
        while StdInstant::now() < deadline {
            let now = self.now();
            while let Some((to, n)) = self.dht.poll_transmit(now, &mut buf) {
                self.sock.send_to(&buf[..n], to).unwrap();
                self.sent += 1;
            }
            while let Some(e) = self.dht.poll_event() {
                self.events.push(e);
            }
            if done(&self.events) {
                return true;
            }
            let wait = self
                .dht
                .poll_timeout()
                .map(|t| t.millis().saturating_sub(now.millis()))
                .unwrap_or(50)
                .clamp(1, 50);
            self.sock
                .set_read_timeout(Some(StdDuration::from_millis(wait)))
                .unwrap();
            let mut rx = [0u8; 2048];
            if let Ok((n, SocketAddr::V4(from))) = self.sock.recv_from(&mut rx) {
                let now = self.now();
                self.dht.handle_datagram(now, from, &rx[..n]);
            }
            let now = self.now();
            if self.dht.poll_timeout().is_some_and(|t| t <= now) {
                self.dht.handle_timeout(now);
            }
        }
        false
    }
}

struct Lt(Child);

impl Drop for Lt {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn dht_core_node_and_libtorrent_find_each_others_peers() {
    let Some(py) = require_libtorrent() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (router, node) = (free_tcp_udp_port(), free_tcp_udp_port());
    let theirs = InfoHash([0x3c; 20]);
    let mut lt = Lt(Command::new(py)
        .arg(repo_root().join("tests/py/lt_dht.py"))
        .args([router.to_string(), node.to_string()])
        .arg(String::from_utf8(theirs.to_hex().to_vec()).unwrap())
        .arg(tmp.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap());
    let mut out = BufReader::new(lt.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY");

    let mut slots = vec![NodeSlot::EMPTY; 20 * K];
    let mut peers = vec![PeerSlot::EMPTY; 64];
    let config = Config {
        query_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let mut id = [0u8; 20];
    id[..8].copy_from_slice(&(std::process::id() as u64).to_be_bytes());
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ours = sock.local_addr().unwrap().port();
    let mut d = Driver {
        dht: Dht::new(
            config,
            NodeId(id),
            [0x5a; 32],
            &mut slots,
            &mut peers,
            Instant::ZERO,
        ),
        sock,
        start: StdInstant::now(),
        events: Vec::new(),
        sent: 0,
    };
    let router_addr = SocketAddrV4::new([127, 0, 0, 1].into(), router);
    let now = d.now();
    let boot = d.dht.bootstrap(now, &[router_addr]).unwrap();
    assert!(d.pump(20, |ev| ev
        .iter()
        .any(|e| matches!(e, Event::LookupDone { lookup, responded, .. } if *lookup == boot && *responded > 0))));

    // Their announced peer, found by our lookup (retried while libtorrent announces).
    let want = SocketAddrV4::new([127, 0, 0, 1].into(), node);
    let found_at = StdInstant::now();
    let mut found = false;
    for _ in 0..15 {
        let now = d.now();
        let l = d.dht.get_peers(now, theirs).unwrap();
        d.pump(10, |ev| {
            ev.iter()
                .any(|e| matches!(e, Event::LookupDone { lookup, .. } if *lookup == l))
        });
        found = d
            .events
            .iter()
            .any(|e| matches!(e, Event::PeersFound { peers, .. } if peers.contains(&want)));
        if found {
            break;
        }
        std::thread::sleep(StdDuration::from_millis(500));
    }
    assert!(
        found,
        "libtorrent's peer {want} not found; events {:?}",
        d.events
    );
    eprintln!(
        "found libtorrent's peer in {:?}, {} datagrams sent",
        found_at.elapsed(),
        d.sent
    );

    // Ours, announced with implied_port, found by libtorrent.
    let mine = InfoHash([0xc3; 20]);
    let now = d.now();
    let a = d.dht.announce(now, mine, 0, true).unwrap();
    assert!(d.pump(20, |ev| ev
        .iter()
        .any(|e| matches!(e, Event::LookupDone { lookup, announced, .. } if *lookup == a && *announced > 0))));
    let mut stdin = lt.0.stdin.take().unwrap();
    writeln!(
        stdin,
        "GETPEERS {}",
        String::from_utf8(mine.to_hex().to_vec()).unwrap()
    )
    .unwrap();
    // Keep answering libtorrent's queries while it looks.
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        line
    });
    while !reader.is_finished() {
        d.pump(1, |_| false);
    }
    let reply = reader.join().unwrap();
    assert!(
        reply
            .split_whitespace()
            .any(|p| p == format!("127.0.0.1:{ours}")),
        "libtorrent saw: {reply}"
    );
    let _ = writeln!(stdin, "QUIT");
}
