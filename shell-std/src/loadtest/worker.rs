//! One socket's closed loop ([`Worker`]): `--concurrency / --sockets`
//! slots, each refilled at once when its reply (or timeout) comes; the
//! transaction id carries the slot (low 16 bits) and a generation, so a
//! late reply counts as stale. Latencies and errors go to a [`Tally`].
//!
//! Limits: a connection id is used for [`CID_REFRESH`] at most (BEP 15);
//! replies of up to 2048 bytes; timeouts looked at every 50 ms.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ourtorrent_core::id::InfoHash;
use ourtorrent_core::tracker::udp::{
    encode_scrape_request, ConnectRequest, ConnectionId, Limits, Response, TransactionId,
};
use ourtorrent_core::tracker::{AddressFamily, AnnounceEvent};

use super::cli::LoadtestArgs;
use super::fake::{fake_announce, Rng};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    Connect,
    Announce,
    Scrape,
}

pub(super) const KINDS: [Kind; 3] = [Kind::Connect, Kind::Announce, Kind::Scrape];

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Announce => "announce",
            Kind::Scrape => "scrape",
        }
    }
    pub(super) fn idx(self) -> usize {
        self as usize
    }
}

#[derive(Default)]
pub(super) struct Tally {
    /// Latencies in µs per kind.
    pub(super) lat: [Vec<u32>; 3],
    pub(super) error_replies: u64,
    pub(super) timeouts: u64,
    pub(super) stale: u64,
    pub(super) unparsable: u64,
    pub(super) send_errors: u64,
    pub(super) sent: u64,
}

#[derive(Clone, Copy)]
pub(super) struct Slot {
    pub(super) kind: Kind,
    pub(super) gen: u16,
    pub(super) sent: Instant,
    pub(super) busy: bool,
}

pub(super) struct Worker<'a> {
    pub(super) a: &'a LoadtestArgs,
    pub(super) target: SocketAddr,
    /// Bit p set: fake peer p was announced (and gets `stopped` at the end).
    pub(super) announced: Vec<u64>,
    pub(super) hashes: &'a [InfoHash],
    pub(super) weights: [u32; 3],
    pub(super) sock: UdpSocket,
    pub(super) rng: Rng,
    pub(super) cid: Option<ConnectionId>,
    pub(super) cid_at: Instant,
    pub(super) slots: Vec<Slot>,
    pub(super) tally: Tally,
    pub(super) buf: [u8; 2048],
}

/// A connection id is used this long before a fresh connect is forced
/// (BEP 15 ids live 2 minutes).
pub(super) const CID_REFRESH: Duration = Duration::from_secs(60);

impl Worker<'_> {
    fn pick(&mut self) -> Kind {
        if self.cid.is_none() || self.cid_at.elapsed() > CID_REFRESH {
            return Kind::Connect;
        }
        let total: u32 = self.weights.iter().sum();
        let mut x = (self.rng.next() % u64::from(total.max(1))) as u32;
        for k in KINDS {
            let w = self.weights[k.idx()];
            if x < w {
                return k;
            }
            x -= w;
        }
        Kind::Announce
    }

    fn send(&mut self, i: usize) {
        let kind = self.pick();
        let gen = self.slots[i].gen.wrapping_add(1);
        let tid = TransactionId((u32::from(gen) << 16) | i as u32);
        let mut out = [0u8; 2048];
        let cid = self.cid.unwrap_or(ConnectionId(0));
        let n = match kind {
            Kind::Connect => ConnectRequest {
                transaction_id: tid,
            }
            .encode(&mut out),
            Kind::Announce => {
                // Peer p belongs to torrent p mod N and re-announces there,
                // as real peers do: the swarms stay bounded by --peers.
                let peer = self.rng.below(self.a.peers);
                self.announced[peer / 64] |= 1 << (peer % 64);
                fake_announce(
                    self.hashes,
                    peer,
                    cid,
                    tid,
                    AnnounceEvent::None,
                    self.a.numwant,
                )
                .encode(&mut out)
            }
            Kind::Scrape => {
                let hs: Vec<InfoHash> = (0..self.a.scrape_hashes.max(1))
                    .map(|_| self.hashes[self.rng.below(self.hashes.len())])
                    .collect();
                encode_scrape_request(cid, tid, &hs, &mut out)
            }
        };
        let Ok(n) = n else {
            self.tally.send_errors += 1;
            return;
        };
        self.slots[i] = Slot {
            kind,
            gen,
            sent: Instant::now(),
            busy: true,
        };
        self.tally.sent += 1;
        if self.sock.send_to(&out[..n], self.target).is_err() {
            self.tally.send_errors += 1;
        }
    }

    fn receive(&mut self, n: usize) {
        let limits = Limits {
            max_peers: 10_000,
            ..Limits::default()
        };
        let family = AddressFamily::of(&self.target);
        let Ok(resp) = Response::parse(&self.buf[..n], family, &limits) else {
            self.tally.unparsable += 1;
            // A reply we cannot parse but whose header names our request
            // (e.g. opentracker's 8-byte refusal of a hash it does not
            // track) still ends that request.
            if let Some(tid) = self.buf.get(4..8) {
                let tid = u32::from_be_bytes([tid[0], tid[1], tid[2], tid[3]]);
                let (i, gen) = ((tid & 0xffff) as usize, (tid >> 16) as u16);
                if n >= 8 && self.slots.get(i).is_some_and(|s| s.busy && s.gen == gen) {
                    self.slots[i].busy = false;
                    self.send(i);
                }
            }
            return;
        };
        let tid = resp.transaction_id().0;
        let (i, gen) = ((tid & 0xffff) as usize, (tid >> 16) as u16);
        let Some(slot) = self.slots.get(i).copied() else {
            self.tally.stale += 1;
            return;
        };
        if !slot.busy || slot.gen != gen {
            self.tally.stale += 1;
            return;
        }
        let us = slot.sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        let ok = matches!(
            (&resp, slot.kind),
            (Response::Connect(_), Kind::Connect)
                | (Response::Announce(_), Kind::Announce)
                | (Response::Scrape(_), Kind::Scrape)
        );
        if let Response::Connect(c) = &resp {
            self.cid = Some(c.connection_id);
            self.cid_at = Instant::now();
        }
        if ok {
            self.tally.lat[slot.kind.idx()].push(us);
        } else {
            // An error reply (e.g. opentracker's 8-byte refusal), or a reply
            // of the wrong kind; a bad connection id is dropped silently by
            // our tracker, so force a reconnect on any error.
            self.tally.error_replies += 1;
            if slot.kind != Kind::Connect {
                self.cid = None;
            }
        }
        self.slots[i].busy = false;
        self.send(i);
    }

    pub(super) fn run(mut self, until: Instant) -> (Tally, Vec<u64>) {
        let timeout = Duration::from_millis(self.a.timeout_ms.max(1));
        for i in 0..self.slots.len() {
            // Until the first connect answers, only connects go out.
            self.send(i);
        }
        let mut last_scan = Instant::now();
        while Instant::now() < until {
            match self.sock.recv_from(&mut self.buf) {
                Ok((n, from)) if from == self.target => self.receive(n),
                Ok(_) => self.tally.stale += 1,
                Err(_) => {}
            }
            if last_scan.elapsed() >= Duration::from_millis(50) {
                last_scan = Instant::now();
                for i in 0..self.slots.len() {
                    let s = self.slots[i];
                    if s.busy && s.sent.elapsed() >= timeout {
                        self.tally.timeouts += 1;
                        if s.kind == Kind::Connect {
                            self.cid = None;
                        }
                        self.slots[i].busy = false;
                        self.send(i);
                    }
                }
            }
        }
        (self.tally, self.announced)
    }
}
