//! The firmware's BitTorrent job on the host: the guest [`Stack`] runs
//! `job::run` over the in-memory link (`common`) on a virtual clock, and
//! the host side plays a BEP 15 tracker (hand-encoded), a seeder and a
//! leecher (hand-written BEP 3, as second opinions on the wire format).
//! The host runs whenever the guest idles; each idle is one virtual
//! millisecond.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::*;
use shell_smoltcp::core_protocol::id::InfoHash;
use shell_smoltcp::core_protocol::pieces::{Geometry, PieceHasher};
use shell_smoltcp::core_protocol::tracker::AnnounceEvent;
use shell_smoltcp::embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use shell_smoltcp::flash::{Fault, Flash, RamNor, RamNorError};
use shell_smoltcp::job::{self, JobBuffers, Report, TorrentConfig, FRAME_BUF_LEN, MAX_PIECES};
use shell_smoltcp::smoltcp::iface::{SocketHandle, SocketStorage};
use shell_smoltcp::smoltcp::socket::{tcp, udp};
use shell_smoltcp::smoltcp::wire::IpAddress;
use shell_smoltcp::{
    Clock, NetConfig, Remote, Stack, TcpBuffers, UdpBuffers, GATEWAY, GUEST_ADDR, PEER_PORT,
};

const TRACKER_PORT: u16 = 6969;
const SEEDER_PORT: u16 = 7001;
const PIECE: u32 = 16 * 1024;
const LEN: usize = 3 * PIECE as usize - 1000;
const IH: [u8; 20] = [0x5a; 20];

fn content() -> Vec<u8> {
    (0..LEN)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect()
}

// ------------------------------------------------------------ the tracker

/// BEP 15 by hand: answers connect and announce, lists the seeder, and
/// records every announce's event (0 none, 1 completed, 2 started, 3
/// stopped) and `left`.
struct Tracker {
    h: SocketHandle,
    events: Vec<(u32, u64)>,
    /// The `interval` it asks for, in seconds.
    interval: u32,
    /// Announces still to answer with an error reply (BEP 15 action 3).
    refuse: usize,
}

impl Tracker {
    fn step(&mut self, host: &mut Host) {
        let s = host.sockets.get_mut::<udp::Socket>(self.h);
        let mut buf = [0u8; 1500];
        while let Ok((n, meta)) = s.recv_slice(&mut buf) {
            let req = &buf[..n];
            let word = |o: usize| u32::from_be_bytes(req[o..o + 4].try_into().unwrap());
            let mut out = Vec::new();
            match (n, word(8)) {
                (16, 0) => {
                    out.extend_from_slice(&0u32.to_be_bytes());
                    out.extend_from_slice(&req[12..16]);
                    out.extend_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes());
                }
                (98, 1) => {
                    let left = u64::from_be_bytes(req[64..72].try_into().unwrap());
                    self.events.push((word(80), left));
                    if self.refuse > 0 {
                        self.refuse -= 1;
                        out.extend_from_slice(&3u32.to_be_bytes());
                        out.extend_from_slice(&req[12..16]);
                        out.extend_from_slice(b"go away");
                        s.send_slice(&out, meta.endpoint).unwrap();
                        continue;
                    }
                    out.extend_from_slice(&1u32.to_be_bytes());
                    out.extend_from_slice(&req[12..16]);
                    out.extend_from_slice(&self.interval.to_be_bytes());
                    out.extend_from_slice(&0u32.to_be_bytes()); // leechers
                    out.extend_from_slice(&1u32.to_be_bytes()); // seeders
                    out.extend_from_slice(&[127, 0, 0, 1]);
                    out.extend_from_slice(&SEEDER_PORT.to_be_bytes());
                }
                other => panic!("tracker: unexpected datagram {other:?}"),
            }
            s.send_slice(&out, meta.endpoint).unwrap();
        }
    }
}

// --------------------------------------------------------------- the peers

/// A host peer over one TCP socket: a seeder (listening on
/// [`SEEDER_PORT`], serving one block every `delay_ms`) or a leecher
/// (connecting to the guest's [`PEER_PORT`], fetching the pieces the
/// guest announces).
struct Peer {
    h: SocketHandle,
    seeder: bool,
    /// BEP 10 `reqq` we send (the seeder).
    reqq: Option<u32>,
    /// A piece whose first request is never answered (the seeder).
    withhold: Option<u32>,
    /// A piece served with every byte flipped (the seeder).
    corrupt: Option<u32>,
    delay_ms: u64,
    data: Vec<u8>,
    inbox: Vec<u8>,
    outbox: Vec<u8>,
    handshaken: bool,
    /// Our handshake is queued.
    said_hello: bool,
    /// Requests received and not yet served (index, begin, length).
    queue: Vec<(u32, u32, u32)>,
    outstanding: usize,
    max_outstanding: usize,
    cancels: Vec<(u32, u32, u32)>,
    last_served: u64,
    /// The guest's handshake reserved bytes and extension handshake.
    guest_reserved: [u8; 8],
    guest_ext: Option<Vec<u8>>,
    /// Leecher: the guest's pieces, ours, and when the first block came.
    guest_has: Vec<bool>,
    have: Vec<bool>,
    unchoked: bool,
    asked: Option<u32>,
    first_block_at: Option<u64>,
}

impl Peer {
    fn new(h: SocketHandle, seeder: bool, data: Vec<u8>) -> Self {
        let pieces = LEN.div_ceil(PIECE as usize);
        Peer {
            h,
            seeder,
            reqq: None,
            withhold: None,
            corrupt: None,
            delay_ms: 0,
            data,
            inbox: Vec::new(),
            outbox: Vec::new(),
            handshaken: false,
            said_hello: false,
            queue: Vec::new(),
            outstanding: 0,
            max_outstanding: 0,
            cancels: Vec::new(),
            last_served: 0,
            guest_reserved: [0; 8],
            guest_ext: None,
            guest_has: vec![false; pieces],
            have: vec![seeder; pieces],
            unchoked: false,
            asked: None,
            first_block_at: None,
        }
    }

    fn msg(&mut self, id: u8, payload: &[u8]) {
        self.outbox
            .extend_from_slice(&(1 + payload.len() as u32).to_be_bytes());
        self.outbox.push(id);
        self.outbox.extend_from_slice(payload);
    }

    fn handshake(&mut self) {
        let mut hs = vec![19];
        hs.extend_from_slice(b"BitTorrent protocol");
        // BEP 10 bit only: the guest must not use BEP 6 with us.
        hs.extend_from_slice(&[0, 0, 0, 0, 0, 0x10, 0, 0]);
        hs.extend_from_slice(&IH);
        hs.extend_from_slice(if self.seeder {
            b"-HS0001-seeder000000"
        } else {
            b"-HL0001-leecher00000"
        });
        self.outbox.extend_from_slice(&hs);
    }

    fn step(&mut self, host: &mut Host, now: u64) {
        let s = host.sockets.get_mut::<tcp::Socket>(self.h);
        if !s.is_open() {
            // Not connected (yet, or any more): the seeder listens again, the
            // leecher connects again until it has every piece.
            (self.handshaken, self.said_hello) = (false, false);
            self.inbox.clear();
            self.outbox.clear();
            if self.seeder {
                s.listen(SEEDER_PORT).unwrap();
            } else if !self.have.iter().all(|&h| h) {
                let cx = host.iface.context();
                let s = host.sockets.get_mut::<tcp::Socket>(self.h);
                let local = 40000 + (now % 1000) as u16;
                s.connect(cx, (IpAddress::Ipv4(GUEST_ADDR), PEER_PORT), local)
                    .unwrap();
            }
            return;
        }
        if !s.may_send() {
            return;
        }
        if !self.seeder && !self.said_hello {
            self.said_hello = true;
            self.handshake();
            self.msg(2, &[]); // interested
        }
        let mut buf = [0u8; 4096];
        while s.can_recv() {
            let n = s.recv_slice(&mut buf).unwrap();
            self.inbox.extend_from_slice(&buf[..n]);
        }
        self.parse(now);
        self.serve(now);
        self.fetch();
        let s = host.sockets.get_mut::<tcp::Socket>(self.h);
        if !self.outbox.is_empty() {
            if let Ok(n) = s.send_slice(&self.outbox) {
                self.outbox.drain(..n);
            }
        }
    }

    fn parse(&mut self, now: u64) {
        if !self.handshaken {
            if self.inbox.len() < 68 {
                return;
            }
            assert_eq!(&self.inbox[28..48], &IH, "handshake for another torrent");
            self.guest_reserved.copy_from_slice(&self.inbox[20..28]);
            self.inbox.drain(..68);
            self.handshaken = true;
            if self.seeder {
                self.said_hello = true;
                self.handshake();
                if let Some(q) = self.reqq {
                    let ext = format!("d4:reqqi{q}ee");
                    let mut p = vec![0];
                    p.extend_from_slice(ext.as_bytes());
                    self.msg(20, &p);
                }
                let mut bits = vec![0u8; self.have.len().div_ceil(8)];
                for i in 0..self.have.len() {
                    bits[i / 8] |= 0x80 >> (i % 8);
                }
                self.msg(5, &bits);
                self.msg(1, &[]); // unchoke
            }
        }
        loop {
            if self.inbox.len() < 4 {
                return;
            }
            let len = u32::from_be_bytes(self.inbox[..4].try_into().unwrap()) as usize;
            if self.inbox.len() < 4 + len {
                return;
            }
            let m: Vec<u8> = self.inbox.drain(..4 + len).skip(4).collect();
            let word = |o: usize| u32::from_be_bytes(m[o..o + 4].try_into().unwrap());
            match m.first() {
                None => {}
                Some(1) => self.unchoked = true,
                Some(0) => self.unchoked = false,
                Some(4) => self.guest_has[word(1) as usize] = true,
                Some(5) => {
                    for (i, h) in self.guest_has.iter_mut().enumerate() {
                        *h = m[1 + i / 8] & (0x80 >> (i % 8)) != 0;
                    }
                }
                Some(6) => {
                    self.queue.push((word(1), word(5), word(9)));
                    self.outstanding += 1;
                    self.max_outstanding = self.max_outstanding.max(self.outstanding);
                }
                Some(7) => {
                    let (i, begin) = (word(1), word(5));
                    let at = (i * PIECE + begin) as usize;
                    assert!(m[9..] == self.data[at..at + m.len() - 9], "bad block {i}");
                    self.have[i as usize] = true;
                    self.asked = None;
                    self.first_block_at.get_or_insert(now);
                    self.msg(4, &i.to_be_bytes()); // have
                }
                Some(8) => {
                    let c = (word(1), word(5), word(9));
                    self.cancels.push(c);
                    if let Some(p) = self.queue.iter().position(|q| *q == c) {
                        self.queue.remove(p);
                    }
                    self.outstanding -= 1;
                }
                Some(20) if m.get(1) == Some(&0) => self.guest_ext = Some(m[2..].to_vec()),
                // Have all / have none are refused: BEP 6 was not negotiated.
                Some(14) | Some(15) => panic!("BEP 6 message without BEP 6"),
                Some(_) => {}
            }
        }
    }

    /// The seeder: one block every `delay_ms`.
    fn serve(&mut self, now: u64) {
        if !self.seeder || self.queue.is_empty() || now < self.last_served + self.delay_ms {
            return;
        }
        let (i, begin, length) = self.queue.remove(0);
        if self.withhold == Some(i) {
            // The first request of this piece is never answered.
            self.withhold = None;
            return;
        }
        self.last_served = now;
        self.outstanding -= 1;
        let at = (i * PIECE + begin) as usize;
        let mut p = Vec::new();
        p.extend_from_slice(&i.to_be_bytes());
        p.extend_from_slice(&begin.to_be_bytes());
        p.extend_from_slice(&self.data[at..at + length as usize]);
        if self.corrupt == Some(i) {
            p[8..].iter_mut().for_each(|b| *b ^= 0xff);
        }
        self.msg(7, &p);
    }

    /// The leecher: one request at a time for a piece the guest has.
    fn fetch(&mut self) {
        if self.seeder || !self.unchoked || self.asked.is_some() {
            return;
        }
        let Some(i) = (0..self.have.len()).find(|&i| self.guest_has[i] && !self.have[i]) else {
            return;
        };
        let size = (LEN - i * PIECE as usize).min(PIECE as usize) as u32;
        let mut r = Vec::new();
        for w in [i as u32, 0, size] {
            r.extend_from_slice(&w.to_be_bytes());
        }
        self.msg(6, &r);
        self.asked = Some(i as u32);
    }
}

// ----------------------------------------------------------- the world

/// The host side, run by the guest's clock whenever the guest idles.
struct World {
    host: Host,
    tracker: Tracker,
    seeder: Peer,
    leecher: Option<Peer>,
}

#[derive(Clone)]
struct SimClock {
    time: VClock,
    world: Rc<RefCell<World>>,
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        self.time.now_ms()
    }
    fn idle(&self) {
        let now = self.time.now_ms();
        let w = &mut *self.world.borrow_mut();
        w.host.poll(now);
        w.tracker.step(&mut w.host);
        w.seeder.step(&mut w.host, now);
        if let Some(l) = w.leecher.as_mut() {
            l.step(&mut w.host, now);
        }
        w.host.poll(now);
        self.time.advance(1);
    }
}

/// Runs the job against the world until it ends; returns its result,
/// its log and the world.
fn run_job(
    seeder: impl FnOnce(&mut Peer),
    with_leecher: bool,
    seed_ms: u32,
) -> (Result<Report, job::JobError>, String, Rc<RefCell<World>>) {
    run_job_with(|_| {}, seeder, with_leecher, seed_ms)
}

/// [`run_job`] with a tracker set up by `tracker` (it asks for an interval
/// of 1800 s and refuses nothing unless told).
fn run_job_with(
    tracker: impl FnOnce(&mut Tracker),
    seeder: impl FnOnce(&mut Peer),
    with_leecher: bool,
    seed_ms: u32,
) -> (Result<Report, job::JobError>, String, Rc<RefCell<World>>) {
    let flash = Box::leak(Box::new(RamNor::new(Vec::leak(vec![0u8; 64 * 1024]), None)));
    run_job_on(flash, tracker, seeder, with_leecher, seed_ms)
}

/// A NOR flash whose memory outlives one run (the model over a shared
/// vector, one operation at a time), so that a second run finds what the
/// first one programmed.
#[derive(Clone, Default)]
struct Persistent(Rc<RefCell<Vec<u8>>>);

impl Persistent {
    fn new() -> Self {
        Persistent(Rc::new(RefCell::new(vec![0u8; 64 * 1024])))
    }
    fn with<T>(&self, f: impl FnOnce(&mut RamNor<'_>) -> T) -> T {
        let mut mem = self.0.borrow_mut();
        f(&mut RamNor::new(&mut mem, None))
    }
}

impl ErrorType for Persistent {
    type Error = RamNorError;
}

impl ReadNorFlash for Persistent {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.with(|f| ReadNorFlash::read(f, offset, bytes))
    }
    fn capacity(&self) -> usize {
        self.0.borrow().len()
    }
}

impl NorFlash for Persistent {
    const WRITE_SIZE: usize = RamNor::WRITE_SIZE;
    const ERASE_SIZE: usize = RamNor::ERASE_SIZE;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.with(|f| NorFlash::erase(f, from, to))
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.with(|f| NorFlash::write(f, offset, bytes))
    }
}

/// [`run_job_with`] over the given flash.
fn run_job_on(
    flash: &'static mut dyn Flash,
    tracker: impl FnOnce(&mut Tracker),
    seeder: impl FnOnce(&mut Peer),
    with_leecher: bool,
    seed_ms: u32,
) -> (Result<Report, job::JobError>, String, Rc<RefCell<World>>) {
    let data = content();
    let (guest_end, host_end, _wire) = link(vec![]);
    let mut host = Host::new(host_end, GATEWAY);
    let t = host.udp(TRACKER_PORT);
    let s = host.tcp();
    let l = host.tcp();
    let mut seed = Peer::new(s, true, data.clone());
    seeder(&mut seed);
    let world = Rc::new(RefCell::new(World {
        host,
        tracker: {
            let mut tr = Tracker {
                h: t,
                events: Vec::new(),
                interval: 1800,
                refuse: 0,
            };
            tracker(&mut tr);
            tr
        },
        seeder: seed,
        leecher: with_leecher.then(|| Peer::new(l, false, data.clone())),
    }));
    let clock = SimClock {
        time: VClock::default(),
        world: world.clone(),
    };
    let slots: &'static mut [SocketStorage<'static>] = Vec::leak(
        (0..1 + job::MAX_PEERS)
            .map(|_| SocketStorage::EMPTY)
            .collect(),
    );
    let config = NetConfig {
        mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
        random_seed: 11,
    };
    let mut stack = Stack::new(guest_end, clock, &config, slots);
    let geometry = Geometry::new(LEN as u64, PIECE).unwrap();
    let mut hashes = [[0u8; 20]; MAX_PIECES];
    for (i, h) in hashes
        .iter_mut()
        .enumerate()
        .take(geometry.piece_count() as usize)
    {
        let start = i * PIECE as usize;
        let mut hasher = PieceHasher::new();
        hasher.update(&data[start..(start + PIECE as usize).min(LEN)]);
        *h = hasher.finish();
    }
    let cfg = TorrentConfig {
        info_hash: InfoHash(IH),
        geometry,
        hashes,
        tracker: Remote::new(GATEWAY, TRACKER_PORT).unwrap(),
        announce_port: PEER_PORT,
        seed_ms,
    };
    let bufs = JobBuffers {
        udp: Box::leak(Box::new(UdpBuffers::<1, 512>::new())),
        tcp: std::array::from_fn(|_| Box::leak(Box::new(TcpBuffers::<3072, 2048>::new()))),
        flash,
        frame: Box::leak(Box::new([0u8; FRAME_BUF_LEN])),
    };
    let mut log = String::new();
    let r = job::run(&mut stack, bufs, &cfg, 60_000, 5, &mut log);
    eprintln!("{log}");
    (r, log, world)
}

#[test]
fn job_serves_while_it_downloads_honours_reqq_and_announces_stopped() {
    let (r, log, world) = run_job(
        |s| {
            s.reqq = Some(2);
            s.delay_ms = 300;
        },
        true,
        20_000,
    );
    let report = r.unwrap();
    let w = world.borrow();
    assert_eq!(report.verified, 3);
    assert_eq!(report.rejected, 0);
    // BEP 3: started, completed, stopped, with what was left each time.
    assert_eq!(
        w.tracker.events,
        [(2, LEN as u64), (1, 0), (3, 0)],
        "announces"
    );
    // BEP 10: both sides set the bit, the guest sent its extension
    // handshake with its `reqq`, and kept to ours.
    assert_eq!(w.seeder.guest_reserved[5] & 0x10, 0x10);
    assert_eq!(
        w.seeder.guest_reserved[7] & 0x04,
        0x04,
        "guest offers BEP 6"
    );
    let ext = String::from_utf8_lossy(w.seeder.guest_ext.as_deref().expect("no ext handshake"));
    assert!(
        ext.contains(&format!("4:reqqi{}e", job::UPLOAD_QUEUE)),
        "{ext}"
    );
    assert_eq!(
        w.seeder.max_outstanding, 2,
        "our reqq of 2 was not honoured"
    );
    // The leecher got a verified piece from the guest before the guest had
    // them all (one phase: it serves while it downloads), then the rest.
    let leecher = w.leecher.as_ref().unwrap();
    assert!(leecher.have.iter().all(|&h| h), "the leecher is incomplete");
    let first = leecher.first_block_at.unwrap();
    let complete = log.find("download: ok").unwrap();
    let served = log.find("peer: inbound handshake ok").unwrap();
    assert!(served < complete, "{log}");
    assert!(
        first < report.download_ms,
        "first block to the leecher at {first} ms, download done at {} ms",
        report.download_ms
    );
    assert!(report.leecher_complete);
    assert!(report.uploaded >= LEN as u64);
}

#[test]
fn a_request_that_times_out_is_cancelled_and_asked_again() {
    let (r, log, world) = run_job(|s| s.withhold = Some(1), false, 0);
    let report = r.unwrap();
    let w = world.borrow();
    assert_eq!(report.verified, 3);
    let size = PIECE;
    assert_eq!(w.seeder.cancels, [(1, 0, size)], "{log}");
    // Fetched after the request timeout.
    assert!(report.download_ms >= job::REQUEST_TIMEOUT_MS, "{report:?}");
    assert_eq!(w.tracker.events.last(), Some(&(3, 0)));
}

#[test]
fn a_lone_sender_of_a_bad_piece_is_banned_and_the_job_still_announces_stopped() {
    let (r, log, world) = run_job(|s| s.corrupt = Some(0), false, 0);
    let Err(job::JobError::NoPeers { verified, rejected }) = r else {
        panic!("{r:?}");
    };
    assert_eq!(rejected, 1);
    assert!(verified < 3);
    assert!(log.contains("piece: 0 rejected: SHA-1 mismatch"), "{log}");
    assert!(
        log.contains(&format!(
            "peer: 10.0.2.2:{SEEDER_PORT} banned: sent a bad piece"
        )),
        "{log}"
    );
    // BEP 3: leaving the swarm after a failure too, with what is left.
    let w = world.borrow();
    let (event, left) = *w.tracker.events.last().unwrap();
    assert_eq!(event, 3, "{:?}", w.tracker.events);
    assert!(left >= u64::from(PIECE) - 1000, "{left}");
}

// ----------------------------------------------- the announce schedule

#[test]
fn a_refused_started_is_announced_again_after_the_backoff() {
    let (r, log, world) = run_job_with(|t| t.refuse = 1, |_| {}, false, 0);
    let report = r.unwrap();
    assert_eq!(report.verified, 3);
    // The core Announcer's backoff: RETRY_BASE (15 s) after one failure.
    assert!(
        log.contains("announce: failed: tracker: error reply to started; next try in 15000 ms"),
        "{log}"
    );
    let w = world.borrow();
    assert_eq!(
        w.tracker.events,
        [(2, LEN as u64), (2, LEN as u64), (1, 0), (3, 0)],
        "announces"
    );
}

#[test]
fn a_tracker_that_refuses_every_started_fails_the_job_and_gets_no_stopped() {
    let (r, log, world) = run_job_with(|t| t.refuse = usize::MAX, |_| {}, false, 0);
    assert_eq!(
        r.unwrap_err(),
        job::JobError::TrackerRefused(AnnounceEvent::Started),
        "{log}"
    );
    // Tries at 0 s, 15 s and 45 s (the backoff doubles) within the 60 s
    // deadline; `stopped` only goes to a tracker that answered `started`.
    let w = world.borrow();
    assert_eq!(w.tracker.events, [(2, LEN as u64); 3], "announces");
    assert!(!log.contains("peer: connecting"), "{log}");
}

#[test]
fn a_long_seed_announces_again_at_the_tracker_interval() {
    // 30 s: the shortest interval the Announcer honours.
    let (r, log, world) = run_job_with(|t| t.interval = 30, |_| {}, false, 45_000);
    let report = r.unwrap();
    assert_eq!(report.verified, 3);
    let w = world.borrow();
    assert_eq!(
        w.tracker.events,
        [(2, LEN as u64), (1, 0), (0, 0), (3, 0)],
        "announces\n{log}"
    );
    assert!(log.contains("announce: ok event=none"), "{log}");
}

// ------------------------------------------------------------ the flash

#[test]
fn a_restart_over_the_same_flash_resumes_and_fetches_nothing() {
    let flash = Persistent::new();
    let (r, _, _) = run_job_on(Box::leak(Box::new(flash.clone())), |_| {}, |_| {}, false, 0);
    let first = r.unwrap();
    assert_eq!((first.verified, first.resumed), (3, 0));
    assert!(first.ready_to_boot);
    let (r, log, world) = run_job_on(Box::leak(Box::new(flash.clone())), |_| {}, |_| {}, false, 0);
    let second = r.unwrap();
    assert!(log.contains("flash: kept"), "{log}");
    assert!(
        log.contains("resume: verified=3 marked=3 pieces=3"),
        "{log}"
    );
    assert_eq!((second.verified, second.resumed), (0, 3));
    assert!(second.ready_to_boot);
    let w = world.borrow();
    assert_eq!(w.seeder.max_outstanding, 0, "a block was asked for again");
    // BEP 3: nothing left from the first announce on.
    assert_eq!(
        w.tracker.events.first(),
        Some(&(2, 0)),
        "{:?}",
        w.tracker.events
    );
}

#[test]
fn a_marked_piece_whose_bytes_changed_is_fetched_again() {
    let flash = Persistent::new();
    let (r, log, _) = run_job_on(Box::leak(Box::new(flash.clone())), |_| {}, |_| {}, false, 0);
    r.unwrap();
    // Clear bits of piece 1 (a program can): its hash no longer matches.
    let data_at: usize = log
        .split("data_at=")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    flash
        .with(|f| NorFlash::write(f, (data_at + PIECE as usize) as u32, &[0; 4]))
        .unwrap();
    let (r, log, _) = run_job_on(Box::leak(Box::new(flash.clone())), |_| {}, |_| {}, false, 0);
    let second = r.unwrap();
    assert!(
        log.contains("resume: piece 1 marked but its hash differs: unmarked"),
        "{log}"
    );
    assert_eq!((second.verified, second.resumed), (1, 2));
    // Fetched again and marked again: a third start keeps all three.
    let (r, log, _) = run_job_on(Box::leak(Box::new(flash.clone())), |_| {}, |_| {}, false, 0);
    assert_eq!(r.unwrap().resumed, 3, "{log}");
}

#[test]
fn a_flash_write_error_fails_the_piece_not_the_job() {
    // Write 1 formats the header; write 2 is the first block.
    let flash = Box::leak(Box::new(RamNor::new(
        Vec::leak(vec![0u8; 64 * 1024]),
        Some(Fault::Write(2)),
    )));
    let (r, log, _) = run_job_on(flash, |_| {}, |_| {}, false, 0);
    let report = r.unwrap();
    assert_eq!(report.flash_errors, 1);
    assert_eq!(report.verified, 3);
    assert!(report.ready_to_boot);
    assert!(log.contains("not stored: flash write at"), "{log}");
}
