//! The torrent layer in a deterministic simulation: several [`Torrent`]s
//! and their peer sessions exchange one torrent through in-memory links of
//! limited bandwidth on a virtual clock. One seeder is honest, one corrupts
//! every block it serves; two leechers also trade with each other. The
//! leechers must finish with the right bytes, ban the liar and nobody
//! else, fetch the bad pieces again, and end-game must cancel duplicates.

use std::collections::VecDeque;
use std::vec;
use std::vec::Vec;

use sha1::{Digest, Sha1};

use super::*;
use crate::choker::Candidate;
use crate::peer::PeerConfig;
use crate::pieces::{Availability, Bitfield, BlockSlot, Slot, XorShift32};
use crate::wire::{piece_header, Frame, Framer, Status, DEFAULT_MAX_MESSAGE_LEN};

struct VecStore;

impl PickerStorage for VecStore {
    type Have = Vec<u8>;
    type Counts = Vec<u16>;
    type Slots = Vec<Slot>;
    type Blocks = Vec<BlockSlot>;
    type Flight = Vec<u16>;
}

impl TorrentStorage for VecStore {
    type Peers = Vec<PeerEntry>;
    type Log = Vec<u32>;
    type Candidates = Vec<Candidate>;
}

const PIECE: u32 = 32 * 1024;
const PIECES: u32 = 24;
const TOTAL: u64 = PIECE as u64 * PIECES as u64 - 5_000;
const TICK_MS: u64 = 10;
const MAX_TICKS: u64 = 20_000;

fn content() -> Vec<u8> {
    let mut r = XorShift32::new(77);
    (0..TOTAL).map(|_| r.next_u32() as u8).collect()
}

fn torrent(geo: Geometry, complete: bool, seed: u32) -> Torrent<VecStore> {
    let n = geo.piece_count();
    let mut have = Bitfield::new(vec![0u8; (n as usize).div_ceil(8)], n).unwrap();
    if complete {
        have.set_all();
    }
    let slots = 4;
    let parts = TorrentParts {
        picker: PickerParts {
            have,
            avail: Availability::new(vec![0u16; n as usize], n).unwrap(),
            slots: vec![Slot::default(); slots],
            blocks: vec![BlockSlot::default(); Picker::<VecStore>::blocks_needed(&geo, slots)],
            flight: vec![0; 8],
        },
        peers: vec![PeerEntry::default(); 8],
        log: vec![0u32; n as usize],
        candidates: vec![Candidate::new(PeerKey(0), Instant::ZERO); 8],
    };
    let cfg = TorrentConfig {
        picker: PickerConfig {
            request_timeout_ms: 3_000,
            ..PickerConfig::default()
        },
        ..TorrentConfig::default()
    };
    Torrent::new(geo, parts, cfg, seed).unwrap()
}

struct Node {
    t: Torrent<VecStore>,
    data: Vec<u8>,
    corrupt: bool,
    /// Keys this node banned (from its verify outcomes).
    banned: Vec<PeerKey>,
    hash_failures: u32,
}

struct Side {
    node: usize,
    s: PeerSession<Vec<u8>>,
    framer: Framer,
    inbox: Vec<u8>,
    outbox: Vec<u8>,
    uploads: VecDeque<BlockRequest>,
}

struct Link {
    sides: [Side; 2],
    /// Bytes per tick each way.
    rate: usize,
    open: bool,
}

#[derive(Default)]
struct Counts {
    /// The torrent's piece hashes.
    hashes: Vec<[u8; 20]>,
    cancels_received: u32,
    /// Blocks delivered per (from node, to node).
    blocks: std::collections::BTreeMap<(usize, usize), u32>,
}

fn side(node: &mut Node, i: usize, now: Instant) -> Side {
    let key = node.t.add_peer(now).unwrap();
    let pieces = node.t.picker().geometry().piece_count();
    let cfg = PeerConfig {
        pipeline: 8,
        snub_timeout_ms: 3_000,
        ..PeerConfig::default()
    };
    let bits = vec![0u8; (pieces as usize).div_ceil(8)];
    Side {
        node: i,
        s: PeerSession::new(key, bits, pieces, true, cfg, now).unwrap(),
        framer: Framer::new(DEFAULT_MAX_MESSAGE_LEN),
        inbox: Vec::new(),
        outbox: Vec::new(),
        uploads: VecDeque::new(),
    }
}

/// One side's turn: handle what arrived, then queue what to send.
/// Returns false if the connection must close.
fn step(node: &mut Node, sd: &mut Side, peer_node: usize, now: Instant, c: &mut Counts) -> bool {
    let geo = *node.t.picker().geometry();
    let expected = &c.hashes;
    let (mut cancels, mut delivered) = (0u32, 0u32);
    let mut pos = 0;
    loop {
        let (msg, n) = match sd.framer.parse(&sd.inbox[pos..]) {
            Ok(Status::Complete((Frame::Message(m), n))) => (m, n),
            Ok(Status::Partial) => break,
            other => panic!("framing: {other:?}"),
        };
        pos += n;
        match node.t.handle_message(now, &mut sd.s, msg) {
            Ok(Handled::Block {
                request,
                data,
                received,
            }) => {
                let off = geo.offset(request.index, request.begin).unwrap() as usize;
                if !received.duplicate {
                    node.data[off..off + data.len()].copy_from_slice(data);
                    delivered += 1;
                }
                if received.piece_complete {
                    let i = request.index;
                    let mut out = node.t.verify(i, &expected[i as usize]).unwrap();
                    if let PieceOutcome::NeedsData { from } = out {
                        let start = geo.offset(i, from).unwrap() as usize;
                        let end = geo.offset(i, 0).unwrap() as usize
                            + geo.piece_size(i).unwrap() as usize;
                        node.t.hash_data(i, &node.data[start..end]).unwrap();
                        out = node.t.verify(i, &expected[i as usize]).unwrap();
                    }
                    if let PieceOutcome::Failed { banned } = out {
                        node.hash_failures += 1;
                        node.banned.extend(banned);
                    }
                }
            }
            Ok(Handled::Request(r)) => sd.uploads.push_back(r),
            Ok(Handled::Cancel(r)) => {
                cancels += 1;
                sd.uploads.retain(|x| *x != r);
            }
            Ok(_) => {}
            Err(e) => panic!("node {} session error: {e}", sd.node),
        }
    }
    sd.inbox.drain(..pos);
    c.cancels_received += cancels;
    *c.blocks.entry((peer_node, sd.node)).or_default() += delivered;
    if node.t.should_close(sd.s.key()) {
        return false;
    }
    let mut tmp = vec![0u8; 4096];
    let n = node.t.poll_transmit(now, &mut sd.s, &mut tmp);
    sd.outbox.extend_from_slice(&tmp[..n]);
    while sd.outbox.len() < 64 * 1024 && !sd.s.am_choking() {
        let Some(r) = sd.uploads.pop_front() else {
            break;
        };
        let off = geo.offset(r.index, r.begin).unwrap() as usize;
        let mut block = node.data[off..off + r.length as usize].to_vec();
        if node.corrupt {
            block[7] ^= 0x5a;
        }
        sd.outbox
            .extend_from_slice(&piece_header(r.index, r.begin, block.len()).unwrap());
        sd.outbox.extend_from_slice(&block);
        node.t.uploaded(sd.s.key(), block.len() as u64);
    }
    if node.t.poll_timeout().is_some_and(|t| t <= now) {
        node.t.handle_timeout(now);
    }
    sd.s.handle_timeout(now, node.t.picker()).is_ok()
}

fn run(seed: u32) -> (Vec<Node>, Counts) {
    let geo = Geometry::new(TOTAL, PIECE).unwrap();
    let data = content();
    let mut rng = XorShift32::new(seed);
    // 0: honest seeder, 1: corrupting seeder, 2 and 3: leechers.
    let mut nodes: Vec<Node> = (0..4)
        .map(|i| Node {
            t: torrent(geo, i < 2, rng.next_u32()),
            data: if i < 2 {
                data.clone()
            } else {
                vec![0; TOTAL as usize]
            },
            corrupt: i == 1,
            banned: Vec::new(),
            hash_failures: 0,
        })
        .collect();
    let t0 = Instant::from_millis(1_000);
    let mut links = Vec::new();
    // The liar's links are the fastest, so it gets most requests.
    for (a, b, base) in [
        (0, 2, 6_000),
        (0, 3, 6_000),
        (1, 2, 20_000),
        (1, 3, 20_000),
        (2, 3, 9_000),
    ] {
        // Each seed draws other bandwidths (half to one and a half of base).
        let rate = base / 2 + rng.below(base as u32) as usize;
        let sa = side(&mut nodes[a], a, t0);
        let sb = side(&mut nodes[b], b, t0);
        links.push(Link {
            sides: [sa, sb],
            rate,
            open: true,
        });
    }
    let mut c = Counts {
        hashes: (0..geo.piece_count())
            .map(|i| {
                let start = geo.offset(i, 0).unwrap() as usize;
                let size = geo.piece_size(i).unwrap() as usize;
                Sha1::digest(&data[start..start + size]).into()
            })
            .collect(),
        ..Counts::default()
    };
    let mut now = t0;
    for _ in 0..MAX_TICKS {
        if nodes[2].t.is_complete() && nodes[3].t.is_complete() {
            break;
        }
        now = now.add_millis(TICK_MS);
        for l in links.iter_mut().filter(|l| l.open) {
            let [a, b] = &mut l.sides;
            let (na, nb) = (a.node, b.node);
            let ok_a = step(&mut nodes[na], a, nb, now, &mut c);
            let ok_b = step(&mut nodes[nb], b, na, now, &mut c);
            if !(ok_a && ok_b) {
                l.open = false;
                nodes[na].t.remove_peer(now, &a.s);
                nodes[nb].t.remove_peer(now, &b.s);
                continue;
            }
            for (from, to) in [(0, 1), (1, 0)] {
                let n = l.rate.min(l.sides[from].outbox.len());
                let moved: Vec<u8> = l.sides[from].outbox.drain(..n).collect();
                l.sides[to].inbox.extend_from_slice(&moved);
            }
        }
        for n in nodes.iter_mut() {
            while n.t.poll_wake().is_some() {}
        }
    }
    (nodes, c)
}

#[test]
fn leechers_finish_ban_the_liar_refetch_and_cancel_in_end_game() {
    let data = content();
    let mut cancels = 0;
    for seed in [1u32, 2, 3] {
        let (nodes, c) = run(seed);
        std::eprintln!(
            "seed {seed}: failures {:?}, cancels {}, blocks {:?}",
            nodes.iter().map(|n| n.hash_failures).collect::<Vec<_>>(),
            c.cancels_received,
            c.blocks
        );
        for l in [2, 3] {
            let n = &nodes[l];
            assert!(n.t.is_complete(), "seed {seed}: leecher {l} incomplete");
            assert!(n.data == data, "seed {seed}: leecher {l} has wrong bytes");
            assert!(
                n.hash_failures >= 1,
                "seed {seed}: the liar was never caught"
            );
            // Every verified piece is in the log once, in the order passed.
            let mut log = n.t.verified_log().to_vec();
            assert_eq!(log.len(), PIECES as usize);
            log.sort_unstable();
            log.dedup();
            assert_eq!(log.len(), PIECES as usize);
        }
        // Each leecher banned exactly the key it gave the liar (link 2: node 1
        // ↔ node 2 is the liar's side b; link 3: node 1 ↔ node 3).
        let liar_key_at_2 = PeerKey(1);
        let liar_key_at_3 = PeerKey(1);
        assert_eq!(nodes[2].banned, [liar_key_at_2], "seed {seed}");
        assert_eq!(nodes[3].banned, [liar_key_at_3], "seed {seed}");
        // The honest seeder and the other leecher were never blamed.
        assert!(nodes[2].t.reputation(PeerKey(0)).unwrap().failed <= 1);
        // The leechers traded with each other (haves fanned out).
        let between = c.blocks.get(&(2, 3)).copied().unwrap_or(0)
            + c.blocks.get(&(3, 2)).copied().unwrap_or(0);
        assert!(between > 0, "seed {seed}: leechers never traded");
        cancels += c.cancels_received;
    }
    assert!(cancels > 0, "end-game never cancelled a duplicate");
}

#[test]
fn peer_table_bounds_connections_and_keys_are_not_reused_at_once() {
    let geo = Geometry::new(TOTAL, PIECE).unwrap();
    let mut t = torrent(geo, false, 9);
    let now = Instant::from_millis(5);
    let keys: Vec<PeerKey> = (0..8).map(|_| t.add_peer(now).unwrap()).collect();
    assert_eq!(keys, (0..8).map(PeerKey).collect::<Vec<_>>());
    assert_eq!(t.add_peer(now), Err(TorrentError::TooManyPeers));
    let bits = vec![0u8; 3];
    let s = PeerSession::new(PeerKey(2), bits, PIECES, true, PeerConfig::default(), now).unwrap();
    t.remove_peer(now, &s);
    assert_eq!(t.peer_count(), 7);
    assert!(t.should_close(PeerKey(2)), "a removed key names no peer");
    assert_eq!(t.add_peer(now), Ok(PeerKey(2)), "the only free slot");
}

#[test]
fn a_torrent_over_borrowed_slices_bounds_peers_by_its_table() {
    let geo = Geometry::new(TOTAL, PIECE).unwrap();
    let n = geo.piece_count();
    let (mut have, mut avail) = ([0u8; 3], [0u16; PIECES as usize]);
    let mut slots: [Slot; 2] = Default::default();
    let mut blocks = vec![BlockSlot::default(); Picker::<VecStore>::blocks_needed(&geo, 2)];
    let mut peers: [PeerEntry; 2] = Default::default();
    let mut flight = [0u16; 2];
    let mut log = [0u32; PIECES as usize];
    let mut cands = [Candidate::new(PeerKey(0), Instant::ZERO); 2];
    let parts: TorrentParts<SliceStorage<'_>> = TorrentParts {
        picker: PickerParts {
            have: Bitfield::new(&mut have[..], n).unwrap(),
            avail: Availability::new(&mut avail[..], n).unwrap(),
            slots: &mut slots[..],
            blocks: &mut blocks[..],
            flight: &mut flight[..],
        },
        peers: &mut peers[..],
        log: &mut log[..],
        candidates: &mut cands[..],
    };
    let mut t = Torrent::new(geo, parts, TorrentConfig::default(), 3).unwrap();
    let now = Instant::from_millis(1);
    assert_eq!(t.add_peer(now), Ok(PeerKey(0)));
    assert_eq!(t.add_peer(now), Ok(PeerKey(1)));
    assert_eq!(t.add_peer(now), Err(TorrentError::TooManyPeers));
    // A log shorter than the piece count is refused up front.
    let (mut have, mut avail) = ([0u8; 3], [0u16; PIECES as usize]);
    let mut short = [0u32; PIECES as usize - 1];
    let parts: TorrentParts<SliceStorage<'_>> = TorrentParts {
        picker: PickerParts {
            have: Bitfield::new(&mut have[..], n).unwrap(),
            avail: Availability::new(&mut avail[..], n).unwrap(),
            slots: &mut slots[..],
            blocks: &mut blocks[..],
            flight: &mut flight[..],
        },
        peers: &mut peers[..],
        log: &mut short[..],
        candidates: &mut cands[..],
    };
    assert!(matches!(
        Torrent::new(geo, parts, TorrentConfig::default(), 3),
        Err(TorrentError::Pieces(PiecesError::StorageTooSmall { needed })) if needed == PIECES as usize
    ));
}

/// A peer with every piece, while we want none: not interested; once the
/// wanted mask changes the torrent wakes the peer and its next transmit
/// says `interested` (no `have` from the peer needed).
#[test]
fn a_changed_wanted_mask_rechecks_interest() {
    let geo = Geometry::new(TOTAL, PIECE).unwrap();
    let mut t = torrent(geo, false, 3);
    let now = Instant::from_millis(5);
    let none = Bitfield::new(vec![0u8; (PIECES as usize).div_ceil(8)], PIECES).unwrap();
    assert!(t.set_wanted(Some(none)).unwrap().is_none());
    let key = t.add_peer(now).unwrap();
    let bits = vec![0u8; (PIECES as usize).div_ceil(8)];
    let mut s = PeerSession::new(key, bits, PIECES, true, PeerConfig::default(), now).unwrap();
    t.handle_message(now, &mut s, Message::HaveAll).unwrap();
    let mut buf = vec![0u8; 4096];
    let _ = t.poll_transmit(now, &mut s, &mut buf);
    assert!(!s.am_interested());
    while t.poll_wake().is_some() {}
    let old = t.set_wanted(None).unwrap();
    assert!(old.is_some());
    assert_eq!(t.poll_wake(), Some(key));
    let n = t.poll_transmit(now, &mut s, &mut buf);
    assert!(s.am_interested());
    let interested = [0, 0, 0, 1, 2];
    assert!(
        buf[..n].windows(5).any(|w| w == interested),
        "no interested message in {:?}",
        &buf[..n]
    );
}
