//! Peer session tests: a deterministic two-session simulation over an
//! in-memory link, and one test per timer and refusal.

use super::*;
use crate::pieces::{Availability, Geometry, PickerConfig, Verdict};
use crate::wire::{piece_header, Frame, Framer, Status, DEFAULT_MAX_MESSAGE_LEN};
use sha1::{Digest, Sha1};
use std::boxed::Box;
use std::vec;
use std::vec::Vec;

const T0: Instant = Instant(5_000);
const TOTAL: u64 = 150_000;
const PIECE: u32 = 40_000; // 4 pieces, 3 blocks each, last piece 30 000 bytes

type TestPicker = crate::pieces::testutil::TestPicker<'static>;

fn leak<T: Clone>(v: T, n: usize) -> &'static mut [T] {
    Box::leak(vec![v; n].into_boxed_slice())
}

fn picker(seed: bool) -> TestPicker {
    let g = Geometry::new(TOTAL, PIECE).unwrap();
    let n = g.piece_count();
    let mut have = Bitfield::new(leak(0u8, 1), n).unwrap();
    if seed {
        have.set_all();
    }
    crate::pieces::testutil::new_picker(
        g,
        have,
        Availability::new(leak(0u16, n as usize), n).unwrap(),
        4,
        PickerConfig::default(),
        42,
    )
    .unwrap()
}

fn session(key: u16, fast: bool) -> PeerSession<&'static mut [u8]> {
    PeerSession::new(
        PeerKey(key),
        leak(0u8, 1),
        4,
        fast,
        PeerConfig::default(),
        T0,
    )
    .unwrap()
}

fn content() -> Vec<u8> {
    (0..TOTAL as u32).map(|i| (i % 251) as u8).collect()
}

struct Side {
    s: PeerSession<&'static mut [u8]>,
    p: TestPicker,
    framer: Framer,
    inbox: Vec<u8>,
    file: Vec<u8>,
    hashes: Vec<[u8; 20]>,
    bad_pieces: usize,
}

impl Side {
    fn new(key: u16, fast: bool, seed: bool) -> Side {
        let data = content();
        let hashes = data
            .chunks(PIECE as usize)
            .map(|c| Sha1::digest(c).into())
            .collect();
        Side {
            s: session(key, fast),
            p: picker(seed),
            framer: Framer::new(DEFAULT_MAX_MESSAGE_LEN),
            inbox: Vec::new(),
            file: if seed { data } else { vec![0; TOTAL as usize] },
            hashes,
            bad_pieces: 0,
        }
    }

    /// Everything this side wants to send now.
    fn transmit(&mut self, now: Instant, link: &mut Vec<u8>) {
        let mut buf = [0u8; 256];
        loop {
            let n = self.s.poll_transmit(now, &mut self.p, &mut buf);
            if n == 0 {
                break;
            }
            link.extend_from_slice(&buf[..n]);
        }
    }

    /// Handles every whole message in the inbox; replies (blocks) go to `link`.
    fn receive(&mut self, now: Instant, link: &mut Vec<u8>) {
        let inbox = core::mem::take(&mut self.inbox);
        let mut pos = 0;
        while let Status::Complete((frame, n)) = self.framer.parse(&inbox[pos..]).unwrap() {
            let Frame::Message(m) = frame else { panic!() };
            match self.s.handle_message(now, &mut self.p, m).unwrap() {
                Handled::Request(r) => {
                    let at = r.index as usize * PIECE as usize + r.begin as usize;
                    let data = &self.file[at..at + r.length as usize];
                    link.extend_from_slice(&piece_header(r.index, r.begin, data.len()).unwrap());
                    link.extend_from_slice(data);
                }
                Handled::Block {
                    request,
                    data,
                    received,
                } => {
                    assert!(!received.duplicate);
                    let at = request.index as usize * PIECE as usize + request.begin as usize;
                    self.file[at..at + data.len()].copy_from_slice(data);
                    if received.piece_complete {
                        let i = request.index;
                        let mut v = self.p.verify(i, &self.hashes[i as usize]).unwrap();
                        if let Verdict::NeedsData { from } = v {
                            let start = i as usize * PIECE as usize;
                            let end = (start + PIECE as usize).min(TOTAL as usize);
                            self.p
                                .hash_data(i, &self.file[start + from as usize..end])
                                .unwrap();
                            v = self.p.verify(i, &self.hashes[i as usize]).unwrap();
                        }
                        match v {
                            Verdict::Passed => self.s.send_have(&self.p, i).unwrap(),
                            _ => self.bad_pieces += 1,
                        }
                    }
                }
                _ => {}
            }
            pos += n;
        }
        self.inbox = inbox[pos..].to_vec();
        while let Some(e) = self.s.poll_event() {
            if e == Event::Interested {
                self.s.set_choking(false).unwrap();
            }
        }
    }
}

fn simulate(fast: bool) -> (Side, Side) {
    let mut seeder = Side::new(1, fast, true);
    let mut leecher = Side::new(2, fast, false);
    let mut now = T0;
    for _ in 0..200 {
        let mut to_leecher = Vec::new();
        let mut to_seeder = Vec::new();
        seeder.transmit(now, &mut to_leecher);
        leecher.transmit(now, &mut to_seeder);
        seeder.inbox.extend_from_slice(&to_seeder);
        leecher.inbox.extend_from_slice(&to_leecher);
        let mut replies = Vec::new();
        seeder.receive(now, &mut replies);
        leecher.inbox.extend_from_slice(&replies);
        leecher.receive(now, &mut Vec::new());
        if leecher.p.is_complete() {
            // Deliver the last have messages.
            let mut to_seeder = Vec::new();
            leecher.transmit(now, &mut to_seeder);
            seeder.inbox.extend_from_slice(&to_seeder);
            seeder.receive(now, &mut Vec::new());
            break;
        }
        now = now.add_millis(10);
    }
    (seeder, leecher)
}

#[test]
fn leecher_downloads_everything_from_seeder() {
    for fast in [false, true] {
        let (seeder, leecher) = simulate(fast);
        assert!(leecher.p.is_complete(), "fast={fast}");
        assert_eq!(leecher.file, seeder.file);
        assert_eq!(leecher.bad_pieces, 0);
        assert!(!seeder.s.am_choking() && !leecher.s.peer_choking());
        // The seeder learned every piece through have messages.
        assert!(seeder.s.peer_has().is_complete());
        // Done: the leecher lost interest.
        assert!(!leecher.s.am_interested());
    }
}

fn feed(
    s: &mut PeerSession<&'static mut [u8]>,
    p: &mut TestPicker,
    bytes: &[u8],
) -> Result<(), PeerError> {
    let m = Message::decode(bytes).unwrap();
    s.handle_message(T0, p, m).map(|_| ())
}

#[test]
fn keepalive_timing() {
    let mut p = picker(false);
    let mut s = session(1, false);
    let mut buf = [0u8; 64];
    // No pieces and no fast extension: the bitfield is skipped.
    assert_eq!(s.poll_transmit(T0, &mut p, &mut buf), 0);
    assert_eq!(s.poll_timeout(&p), T0.add_millis(DEFAULT_KEEPALIVE_MS));
    let before = T0.add_millis(DEFAULT_KEEPALIVE_MS - 1);
    assert_eq!(s.poll_transmit(before, &mut p, &mut buf), 0);
    let at = T0.add_millis(DEFAULT_KEEPALIVE_MS);
    assert_eq!(s.poll_transmit(at, &mut p, &mut buf), 4);
    assert_eq!(&buf[..4], &[0, 0, 0, 0]);
    assert_eq!(s.poll_transmit(at, &mut p, &mut buf), 0);
}

#[test]
fn first_message_is_bitfield_or_fast_equivalent() {
    let mut buf = [0u8; 64];
    let mut seed = picker(true);
    let mut s = session(1, true);
    assert_eq!(s.poll_transmit(T0, &mut seed, &mut buf), 5);
    assert_eq!(&buf[..5], &[0, 0, 0, 1, 0x0e]); // BEP 6: have all
    let mut empty = picker(false);
    let mut s = session(1, true);
    assert_eq!(s.poll_transmit(T0, &mut empty, &mut buf), 5);
    assert_eq!(&buf[..5], &[0, 0, 0, 1, 0x0f]); // BEP 6: have none
    let mut seed = picker(true);
    let mut s = session(1, false);
    assert_eq!(s.poll_transmit(T0, &mut seed, &mut buf), 6);
    assert_eq!(&buf[..6], &[0, 0, 0, 2, 5, 0xf0]);
}

#[test]
fn inactivity_timeout() {
    let p = picker(false);
    let mut s = session(1, false);
    let limit = T0.add_millis(DEFAULT_INACTIVITY_TIMEOUT_MS);
    assert_eq!(s.handle_timeout(Instant(limit.0 - 1), &p), Ok(()));
    assert_eq!(s.handle_timeout(limit, &p), Err(PeerError::Inactive));
}

#[test]
fn snubbing_after_silence_with_requests_out() {
    let mut p = picker(false);
    let mut s = session(1, false);
    feed(&mut s, &mut p, &[0, 0, 0, 2, 5, 0xf0]).unwrap(); // bitfield: all
    feed(&mut s, &mut p, &[0, 0, 0, 1, 1]).unwrap(); // unchoke
    assert_eq!(s.poll_event(), Some(Event::Unchoked));
    let mut buf = [0u8; 1024];
    let n = s.poll_transmit(T0, &mut p, &mut buf);
    assert_eq!(&buf[..5], &[0, 0, 0, 1, 2]); // interested first
                                             // 11 blocks in all (3 + 3 + 3 + 2), all requested at once.
    assert_eq!(n, 5 + DEFAULT_PIPELINE.min(11) * 17);
    let deadline = T0.add_millis(DEFAULT_SNUB_TIMEOUT_MS);
    assert_eq!(s.poll_timeout(&p), deadline);
    s.handle_timeout(Instant(deadline.0 - 1), &p).unwrap();
    assert!(!s.is_snubbed());
    s.handle_timeout(deadline, &p).unwrap();
    assert!(s.is_snubbed());
    assert_eq!(s.poll_event(), Some(Event::Snubbed));
}

#[test]
fn choke_without_fast_drops_requests() {
    for fast in [false, true] {
        let mut p = picker(false);
        let mut s = session(1, fast);
        let first: &[u8] = if fast {
            &[0, 0, 0, 1, 0x0e]
        } else {
            &[0, 0, 0, 2, 5, 0xf0]
        };
        feed(&mut s, &mut p, first).unwrap();
        feed(&mut s, &mut p, &[0, 0, 0, 1, 1]).unwrap();
        let mut buf = [0u8; 1024];
        s.poll_transmit(T0, &mut p, &mut buf);
        assert!(p.in_flight(PeerKey(1)) > 0);
        feed(&mut s, &mut p, &[0, 0, 0, 1, 0]).unwrap();
        // BEP 6: with fast, requests survive a choke until rejected.
        assert_eq!(p.in_flight(PeerKey(1)) > 0, fast, "fast={fast}");
    }
}

#[test]
fn requests_while_choking() {
    static REQ: [u8; 17] = [0, 0, 0, 13, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0];
    for fast in [false, true] {
        let mut p = picker(true);
        let mut s = session(1, fast);
        let mut buf = [0u8; 64];
        s.poll_transmit(T0, &mut p, &mut buf);
        let h = s
            .handle_message(T0, &mut p, Message::decode(&REQ).unwrap())
            .unwrap();
        assert_eq!(h, Handled::Nothing);
        let n = s.poll_transmit(T0, &mut p, &mut buf);
        if fast {
            assert_eq!(
                &buf[..n],
                &[0, 0, 0, 13, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0]
            );
        } else {
            assert_eq!(n, 0);
        }
        // Unchoked: the request is handed to the shell.
        s.set_choking(false).unwrap();
        let h = s
            .handle_message(T0, &mut p, Message::decode(&REQ).unwrap())
            .unwrap();
        assert!(matches!(h, Handled::Request(r) if r.length == 16384));
    }
}

#[test]
fn reject_after_choking_is_sent_only_with_fast() {
    let req = BlockRequest {
        index: 1,
        begin: 16384,
        length: 16384,
    };
    for fast in [false, true] {
        let mut p = picker(true);
        let mut s = session(1, fast);
        let mut buf = [0u8; 64];
        s.poll_transmit(T0, &mut p, &mut buf);
        s.reject(req).unwrap();
        let n = s.poll_transmit(T0, &mut p, &mut buf);
        if fast {
            // BEP 6: reject request (0x10) index 1, begin 16384, length 16384.
            assert_eq!(
                &buf[..n],
                &[0, 0, 0, 13, 0x10, 0, 0, 0, 1, 0, 0, 0x40, 0, 0, 0, 0x40, 0]
            );
        } else {
            assert_eq!(n, 0);
        }
    }
    // The control queue is bounded: rejects past it are refused.
    let mut s = session(1, true);
    for _ in 0..OUT_QUEUE_LEN - 1 {
        s.reject(req).unwrap();
    }
    assert_eq!(s.reject(req), Err(PeerError::QueueFull));
}

/// aria2 sends a bitfield mid-session in place of many haves: it updates
/// what the peer has (and the swarm's availability), as in libtorrent.
#[test]
fn a_later_bitfield_or_have_all_is_an_update() {
    let mut p = picker(false);
    let mut s = session(1, true);
    // have 1, then interested, then a bitfield of pieces 0 and 2.
    feed(&mut s, &mut p, &[0, 0, 0, 5, 4, 0, 0, 0, 1]).unwrap();
    feed(&mut s, &mut p, &[0, 0, 0, 1, 2]).unwrap();
    feed(&mut s, &mut p, &[0, 0, 0, 2, 5, 0xa0]).unwrap();
    let avail = |p: &TestPicker| (0..4).map(|i| p.availability().get(i)).collect::<Vec<_>>();
    assert_eq!(avail(&p), [1, 0, 1, 0]);
    assert!(s.peer_has().get(0) && !s.peer_has().get(1) && s.peer_has().get(2));
    assert!(s.am_interested());
    // A malformed late bitfield is refused and changes nothing.
    assert_eq!(
        feed(&mut s, &mut p, &[0, 0, 0, 2, 5, 0xa8]),
        Err(PeerError::Wire(WireError::BitfieldSpareBits))
    );
    assert_eq!(avail(&p), [1, 0, 1, 0]);
    // Have all, then have none (BEP 6), later in the session.
    feed(&mut s, &mut p, &[0, 0, 0, 1, 0x0e]).unwrap();
    assert_eq!(avail(&p), [1, 1, 1, 1]);
    assert_eq!(s.peer_has().count(), 4);
    feed(&mut s, &mut p, &[0, 0, 0, 1, 0x0f]).unwrap();
    assert_eq!(avail(&p), [0, 0, 0, 0]);
    assert_eq!(s.peer_has().count(), 0);
    // Leaving after updates leaves no count behind.
    feed(&mut s, &mut p, &[0, 0, 0, 2, 5, 0x30]).unwrap();
    p.peer_gone(s.key(), s.peer_has());
    assert_eq!(avail(&p), [0, 0, 0, 0]);
}

#[test]
fn refusals() {
    let mut p = picker(true);
    // BEP 10: an extension handshake may precede the bitfield / have all.
    let mut s = session(1, false);
    feed(&mut s, &mut p, &[0, 0, 0, 4, 20, 0, b'd', b'e']).unwrap();
    feed(&mut s, &mut p, &[0, 0, 0, 2, 5, 0xf0]).unwrap();
    assert_eq!(s.peer_has().count(), 4);
    let mut s = session(1, true);
    feed(&mut s, &mut p, &[0, 0, 0, 4, 20, 0, b'd', b'e']).unwrap();
    feed(&mut s, &mut p, &[0, 0, 0, 1, 0x0e]).unwrap();
    // Bitfield with a spare bit, or the wrong size.
    let mut s = session(1, false);
    assert_eq!(
        feed(&mut s, &mut p, &[0, 0, 0, 2, 5, 0xf8]),
        Err(PeerError::Wire(WireError::BitfieldSpareBits))
    );
    let mut s = session(1, false);
    assert_eq!(
        feed(&mut s, &mut p, &[0, 0, 0, 3, 5, 0xf0, 0]),
        Err(PeerError::Wire(WireError::BitfieldLength {
            expected: 1,
            got: 2
        }))
    );
    // Have: last piece accepted, one past refused.
    let mut s = session(1, false);
    feed(&mut s, &mut p, &[0, 0, 0, 5, 4, 0, 0, 0, 3]).unwrap();
    assert_eq!(
        feed(&mut s, &mut p, &[0, 0, 0, 5, 4, 0, 0, 0, 4]),
        Err(PeerError::PieceOutOfRange(4))
    );
    // Fast messages without the extension.
    for (bytes, id) in [
        (&[0u8, 0, 0, 1, 0x0e][..], 0x0e),
        (&[0, 0, 0, 1, 0x0f][..], 0x0f),
        (&[0, 0, 0, 5, 0x0d, 0, 0, 0, 0][..], 0x0d),
        (&[0, 0, 0, 5, 0x11, 0, 0, 0, 0][..], 0x11),
        (
            &[0, 0, 0, 13, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0][..],
            0x10,
        ),
    ] {
        let mut s = session(1, false);
        assert_eq!(
            feed(&mut s, &mut p, bytes),
            Err(PeerError::FastNotNegotiated(id))
        );
    }
    // Request length: 16 KiB accepted (ignored while choked), one more refused.
    let mut s = session(1, false);
    feed(
        &mut s,
        &mut p,
        &[0, 0, 0, 13, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0],
    )
    .unwrap();
    assert_eq!(
        feed(
            &mut s,
            &mut p,
            &[0, 0, 0, 13, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 1]
        ),
        Err(PeerError::RequestTooLarge(16385))
    );
    // Peer bitfield storage too small.
    assert!(matches!(
        PeerSession::new(PeerKey(1), &mut [], 4, false, PeerConfig::default(), T0),
        Err(PeerError::StorageTooSmall(1))
    ));
}

#[test]
fn out_queue_bound() {
    let p = picker(true);
    let mut s = session(1, false);
    // The bitfield is queued already: OUT_QUEUE_LEN - 1 more fit.
    for i in 0..OUT_QUEUE_LEN - 1 {
        s.send_have(&p, i as u32 % 4).unwrap();
    }
    assert_eq!(s.send_have(&p, 0), Err(PeerError::QueueFull));
}
