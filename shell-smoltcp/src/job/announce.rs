//! The job's tracker: BEP 15 announces through the core's client session
//! ([`Client`]) over one UDP socket, polled from the job's loop, and the
//! list of tracker peers worth trying.
//!
//! What to announce and when is the core's [`Announcer`] (one tracker):
//! `started` (its reply gives the peers), regular announces at the
//! tracker's interval (their peers are kept too), `completed` once every
//! piece is verified, backoff after a failed announce, and when the job
//! ends `completed` (if still owed) and `stopped`, once each, if `started`
//! was answered (best effort, bounded by [`STOPPED_WAIT_MS`]). The job only
//! performs the announces the schedule hands out and reports how each
//! ended.
//!
//! # QEMU's user-mode network
//! Peers on the host announce themselves as `127.0.0.1:PORT`; the guest
//! reaches the host only as `10.0.2.2`, so a loopback (or `10.0.2.2`) peer
//! address is kept as its port at the gateway. Any other address is
//! skipped, and so is a peer on our own announced port (this node:
//! opentracker lists the announcing peer too). At most
//! [`MAX_PEER_ATTEMPTS`] are kept; the rest are counted and logged.

use core::fmt::Write;
use core::net::{IpAddr, Ipv4Addr};

use ourtorrent_core::pieces::XorShift32;
use ourtorrent_core::time::Instant;
use ourtorrent_core::tracker::announce::{Announcer, AnnouncerConfig};
use ourtorrent_core::tracker::udp::client::{
    AnnounceParams, AnnounceResult, Client, ClientConfig, ClientError, Event, TransactionIds,
    TRANSMIT_BUF_LEN,
};
use ourtorrent_core::tracker::AnnounceEvent;
use smoltcp::phy::Device;

use super::{JobError, MAX_PEER_ATTEMPTS};
use crate::config::GATEWAY;
use crate::error::Error;
use crate::stack::{Clock, Stack};
use crate::udp::UdpSocket;

/// How long the job waits for the tracker to acknowledge `stopped`.
pub const STOPPED_WAIT_MS: u64 = 2_000;
/// Bytes of a tracker reply we read (20 + 6 per peer: 167 peers).
const RX_LEN: usize = 1024;

/// BEP 15 transaction ids from a stream of their own (a copy of the job's
/// generator would make the first one equal the tracker `key`).
pub(super) struct Tids(pub XorShift32);

impl TransactionIds for Tids {
    fn next_transaction_id(&mut self) -> u32 {
        self.0.next_u32()
    }
}

/// Connections to one tracker peer before it is given up (each ended
/// connection counts, failed or not, so a peer that keeps closing on us
/// is not retried forever).
pub const MAX_TRIES: u8 = 5;
/// Wait before trying a peer again after a connection ended; it doubles
/// with each try. A board's forwarded port accepts before its firmware
/// listens (QEMU's `hostfwd`), so a first try may fail that way.
pub const RETRY_MS: u64 = 500;

/// One tracker peer to try.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    port: u16,
    /// Not before this time.
    next_try: u64,
    tries: u8,
    banned: bool,
}

impl Candidate {
    fn usable(&self) -> bool {
        !self.banned && self.tries < MAX_TRIES
    }
}

/// Tracker peers to try, as ports at the gateway, in the order received;
/// each is tried again after a connection to it ends ([`RETRY_MS`],
/// doubling, at most [`MAX_TRIES`] times) unless it was banned.
#[derive(Debug, Default)]
pub(super) struct Candidates {
    ports: heapless::Vec<Candidate, MAX_PEER_ATTEMPTS>,
    /// Usable peers not kept: the list was full.
    pub dropped: usize,
}

/// What [`Candidates::offer`] did with a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Offer {
    /// Kept, to be tried.
    Added,
    /// Already in the list.
    Known,
    /// Not kept: [`MAX_PEER_ATTEMPTS`] are kept already.
    Full,
}

impl Candidates {
    /// Adds `port` unless known or the list is full.
    pub fn offer(&mut self, port: u16) -> Offer {
        if self.ports.iter().any(|c| c.port == port) {
            return Offer::Known;
        }
        let c = Candidate {
            port,
            next_try: 0,
            tries: 0,
            banned: false,
        };
        match self.ports.push(c) {
            Ok(()) => Offer::Added,
            Err(_) => {
                self.dropped += 1;
                Offer::Full
            }
        }
    }

    /// The next peer due at `now` that is not `busy` (connected already).
    pub fn next(&mut self, now: u64, busy: impl Fn(u16) -> bool) -> Option<u16> {
        let c = self
            .ports
            .iter_mut()
            .find(|c| c.usable() && c.next_try <= now && !busy(c.port))?;
        c.tries += 1;
        // Not again until this connection ends (`ended` sets the time).
        c.next_try = u64::MAX;
        Some(c.port)
    }

    /// The connection to `port` ended at `now`: try again later.
    pub fn ended(&mut self, port: u16, now: u64) {
        if let Some(c) = self.ports.iter_mut().find(|c| c.port == port) {
            let shift = u32::from(c.tries.saturating_sub(1)).min(16);
            c.next_try = now.saturating_add(RETRY_MS << shift);
        }
    }

    /// `port` sent a bad piece: never again.
    pub fn ban(&mut self, port: u16) {
        if let Some(c) = self.ports.iter_mut().find(|c| c.port == port) {
            c.banned = true;
        }
    }

    /// Every peer kept is banned or was tried [`MAX_TRIES`] times.
    pub fn exhausted(&self) -> bool {
        !self.ports.iter().any(Candidate::usable)
    }
}

/// The port at the gateway of a peer the tracker returned, if the guest
/// can reach it and it is not this node (`our_port`).
pub(super) fn reachable_port(peer: core::net::SocketAddr, our_port: u16) -> Option<u16> {
    let reachable = match peer.ip() {
        IpAddr::V4(a) => a.is_loopback() || a == Ipv4Addr::from(GATEWAY.octets()),
        IpAddr::V6(a) => a.is_loopback(),
    };
    let port = peer.port();
    (reachable && port != our_port && port != 0).then_some(port)
}

/// The index of our one tracker in the [`Announcer`].
const TRACKER: usize = 0;

/// Where the transfer stands, sent with an announce (BEP 3: totals since
/// `started`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Totals {
    pub downloaded: u64,
    pub uploaded: u64,
    pub left: u64,
}

/// An announce the tracker answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Answered {
    pub event: AnnounceEvent,
    /// Peers in the reply.
    pub peers: usize,
}

/// The announce handed out by the [`Announcer`] and not yet reported.
#[derive(Clone, Copy, Debug)]
struct Pending {
    idx: usize,
    event: AnnounceEvent,
    /// When it began (ms).
    began: u64,
}

/// The job's tracker: the socket, the BEP 15 session, what we announce and
/// the core's schedule of the announces.
pub(super) struct Tracker {
    udp: UdpSocket,
    client: Client<Tids>,
    params: AnnounceParams,
    schedule: Announcer<1>,
    pending: Option<Pending>,
    /// Why the latest failed announce failed.
    last_failure: Option<JobError>,
}

impl Tracker {
    /// A tracker session on `udp` announcing `params` (the schedule sets
    /// the event, [`Self::poll`] the totals).
    pub fn new(udp: UdpSocket, tids: Tids, params: AnnounceParams) -> Result<Self, JobError> {
        let schedule =
            Announcer::from_tiers(AnnouncerConfig::default(), [0]).map_err(JobError::Schedule)?;
        Ok(Tracker {
            udp,
            client: Client::new(ClientConfig::default(), tids),
            params,
            schedule,
            pending: None,
            last_failure: None,
        })
    }

    /// The tracker answered `started` (so `stopped` is owed).
    pub fn started(&self) -> bool {
        self.schedule.tracker(TRACKER).is_some_and(|t| t.started())
    }

    /// The tracker answered `completed`.
    pub fn told_complete(&self) -> bool {
        self.schedule
            .tracker(TRACKER)
            .is_some_and(|t| t.told_complete())
    }

    /// A `completed` is in flight.
    pub fn completing(&self) -> bool {
        self.pending
            .is_some_and(|p| p.event == AnnounceEvent::Completed)
    }

    /// Every piece is verified: `completed` is owed.
    pub fn set_complete(&mut self, now_ms: u64) {
        self.schedule.set_complete(Instant::from_millis(now_ms));
    }

    /// The job is over: from now on only `completed` (if owed) and
    /// `stopped`, once each, if `started` was answered.
    pub fn stop(&mut self, now_ms: u64) {
        self.schedule.stop(Instant::from_millis(now_ms));
    }

    /// Stopping, and nothing is left to announce or to wait for.
    pub fn is_finished(&self) -> bool {
        self.schedule.is_finished()
    }

    /// Why `event` did not get through: the latest failure if it was of
    /// `event`, else the tracker's silence.
    pub fn failure(&self, event: AnnounceEvent) -> JobError {
        match self.last_failure {
            Some(e @ (JobError::TrackerRefused(ev) | JobError::TrackerFailed(ev, _)))
                if ev == event =>
            {
                e
            }
            _ => JobError::TrackerSilent(event),
        }
    }

    /// Starts the announce the schedule has due, if any, with the
    /// `totals` of now; moves datagrams both ways; once the announce in
    /// flight ends, reports it to the schedule and logs it. An answer
    /// offers its peers to `candidates` and is returned. A failure (an
    /// error reply, a session that gave up) is logged and kept for
    /// [`Self::failure`]: the schedule backs off and tries again. Only a
    /// driver error is an error.
    pub fn poll<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        now_ms: u64,
        totals: impl FnOnce() -> Totals,
        candidates: &mut Candidates,
        log: &mut impl Write,
    ) -> Result<Option<Answered>, JobError> {
        if self.pending.is_none() {
            if let Some((idx, event)) = self.schedule.poll_announce(Instant::from_millis(now_ms)) {
                self.begin(now_ms, idx, event, totals(), log);
            }
        }
        self.exchange(stack, now_ms, candidates, log)
    }

    /// The rest of [`Self::poll`], once for every `totals`.
    fn exchange<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        now_ms: u64,
        candidates: &mut Candidates,
        log: &mut impl Write,
    ) -> Result<Option<Answered>, JobError> {
        let Some(p) = self.pending else {
            return Ok(None);
        };
        self.transfer(stack, now_ms, log)?;
        Ok(self.conclude(now_ms, p, candidates, log))
    }

    /// Moves datagrams both ways. Out of line, as [`Self::conclude`]: each
    /// frame is large (here the datagram buffers and the session's parse of
    /// a reply, there the reply of up to 128 peers, about 4 KiB), and they
    /// are never on the stack together, nor in a caller's frame.
    #[inline(never)]
    fn transfer<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        now_ms: u64,
        log: &mut impl Write,
    ) -> Result<(), JobError> {
        let now = Instant::from_millis(now_ms);
        let mut tx = [0u8; TRANSMIT_BUF_LEN];
        while let Some(n) = self.client.poll_transmit(now, &mut tx) {
            match self
                .udp
                .poll_send(stack, now_ms, tx.get(..n).unwrap_or_default())
            {
                Ok(()) => {}
                // The session retransmits on its own schedule.
                Err(nb::Error::WouldBlock) => break,
                Err(nb::Error::Other(e)) => return Err(JobError::Net("announce", e)),
            }
        }
        let mut rx = [0u8; RX_LEN];
        match self.udp.poll_recv(stack, now_ms, &mut rx) {
            Ok(n) => {
                // A stray or stale datagram is ignored by the session.
                let _ = self
                    .client
                    .handle_datagram(now, rx.get(..n).unwrap_or_default());
            }
            Err(nb::Error::WouldBlock) => {}
            // Too long for `rx`: dropped; the session retransmits.
            Err(nb::Error::Other(Error::Truncated)) => {
                let _ = writeln!(log, "announce: reply over {RX_LEN} bytes dropped");
            }
            Err(nb::Error::Other(e)) => return Err(JobError::Net("announce", e)),
        }
        Ok(())
    }

    /// Once the announce `p` ended: reports it to the schedule, logs it,
    /// and returns it if answered.
    #[inline(never)]
    fn conclude(
        &mut self,
        now_ms: u64,
        p: Pending,
        candidates: &mut Candidates,
        log: &mut impl Write,
    ) -> Option<Answered> {
        let answer = self.client.poll_event()?;
        self.pending = None;
        let ms = now_ms.saturating_sub(p.began);
        let event = p.event;
        let failure = match answer {
            Event::Announced(r) => {
                // BEP 15 has no min interval.
                let now = Instant::from_millis(now_ms);
                self.schedule.on_reply(now, p.idx, r.interval, None);
                let peers = self.answered(event, &r, ms, candidates, log);
                return Some(Answered { event, peers });
            }
            Event::TrackerError(msg) => {
                let msg = core::str::from_utf8(&msg).unwrap_or("(not UTF-8)");
                let _ = writeln!(log, "announce: event={event} error reply: {msg}");
                JobError::TrackerRefused(event)
            }
            Event::Failed(e) => JobError::TrackerFailed(event, e),
            Event::Scraped(_) => JobError::TrackerFailed(event, ClientError::Busy),
        };
        self.failed(now_ms, p.idx, failure, log);
        None
    }

    /// Starts announcing `event` to tracker `idx` with these `totals`; a
    /// session that refuses is a failed announce.
    fn begin(
        &mut self,
        now_ms: u64,
        idx: usize,
        event: AnnounceEvent,
        totals: Totals,
        log: &mut impl Write,
    ) {
        self.params.event = event;
        (
            self.params.downloaded,
            self.params.uploaded,
            self.params.left,
        ) = (totals.downloaded, totals.uploaded, totals.left);
        match self
            .client
            .announce(Instant::from_millis(now_ms), self.params)
        {
            Ok(()) => {
                self.pending = Some(Pending {
                    idx,
                    event,
                    began: now_ms,
                })
            }
            Err(e) => self.failed(now_ms, idx, JobError::TrackerFailed(event, e), log),
        }
    }

    /// Reports a failed announce to the schedule (which backs off) and
    /// logs when the next try comes.
    fn failed(&mut self, now_ms: u64, idx: usize, why: JobError, log: &mut impl Write) {
        self.schedule.on_failure(Instant::from_millis(now_ms), idx);
        self.last_failure = Some(why);
        let _ = write!(log, "announce: failed: {why}");
        match self.schedule.tracker(idx) {
            Some(t) if !self.schedule.is_stopping() => {
                let wait = t.next_announce().millis().saturating_sub(now_ms);
                let _ = writeln!(log, "; next try in {wait} ms");
            }
            _ => {
                let _ = writeln!(log);
            }
        }
    }

    /// Logs an answer and keeps its usable peers. Out of line: the reply
    /// holds up to 128 peers (about 4 KiB).
    #[inline(never)]
    fn answered(
        &mut self,
        event: AnnounceEvent,
        r: &AnnounceResult,
        ms: u64,
        candidates: &mut Candidates,
        log: &mut impl Write,
    ) -> usize {
        if event == AnnounceEvent::Started {
            let _ = writeln!(
                log,
                "announce: ok event=started peers={} seeders={} leechers={} ms={ms}",
                r.peers.len(),
                r.seeders,
                r.leechers,
            );
        } else {
            let _ = writeln!(log, "announce: ok event={event} ms={ms}");
        }
        for &p in r.peers.iter() {
            let Some(port) = reachable_port(p, self.params.port) else {
                let _ = writeln!(log, "peer: skipped {p}");
                continue;
            };
            if candidates.offer(port) == Offer::Full {
                let _ = writeln!(
                    log,
                    "peer: 10.0.2.2:{port} not kept: {MAX_PEER_ATTEMPTS} peers kept already"
                );
            }
        }
        r.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_kept_once_up_to_the_limit() {
        let mut c = Candidates::default();
        assert!(c.exhausted());
        assert_eq!(c.offer(7000), Offer::Added);
        assert_eq!(c.offer(7000), Offer::Known);
        for p in 1..MAX_PEER_ATTEMPTS as u16 {
            assert_eq!(c.offer(7000 + p), Offer::Added);
        }
        assert_eq!(c.offer(9999), Offer::Full);
        assert_eq!(c.offer(9998), Offer::Full);
        assert_eq!(c.dropped, 2);
        assert_eq!(c.next(0, |_| false), Some(7000));
        assert!(!c.exhausted());
        assert_eq!(c.next(0, |p| p == 7001), Some(7002), "busy is skipped");
        for _ in 2..MAX_PEER_ATTEMPTS {
            assert!(c.next(0, |_| false).is_some());
        }
        assert_eq!(c.next(0, |_| false), None, "each is in use");
    }

    #[test]
    fn a_peer_is_tried_again_with_a_doubling_wait_until_max_tries() {
        let mut c = Candidates::default();
        c.offer(7000);
        let mut now = 0;
        for t in 0..MAX_TRIES {
            assert!(!c.exhausted());
            assert_eq!(c.next(now, |_| false), Some(7000), "try {t}");
            assert_eq!(c.next(now, |_| false), None, "in use");
            c.ended(7000, now);
            let wait = RETRY_MS << t;
            assert_eq!(c.next(now + wait - 1, |_| false), None, "too early");
            now += wait;
        }
        assert_eq!(c.next(now, |_| false), None);
        assert!(c.exhausted());
        // A banned peer is never tried again.
        c.offer(7001);
        assert!(!c.exhausted());
        c.ban(7001);
        assert!(c.exhausted());
        assert_eq!(c.next(u64::MAX, |_| false), None);
    }

    #[test]
    fn only_the_host_and_not_ourselves_is_reachable() {
        let at = |s: &str| s.parse::<core::net::SocketAddr>().unwrap();
        assert_eq!(reachable_port(at("127.0.0.1:7000"), 6881), Some(7000));
        assert_eq!(reachable_port(at("10.0.2.2:7000"), 6881), Some(7000));
        assert_eq!(reachable_port(at("[::1]:7000"), 6881), Some(7000));
        assert_eq!(
            reachable_port(at("127.0.0.1:6881"), 6881),
            None,
            "ourselves"
        );
        assert_eq!(reachable_port(at("127.0.0.1:0"), 6881), None);
        assert_eq!(reachable_port(at("192.168.1.9:7000"), 6881), None);
        assert_eq!(reachable_port(at("[2001:db8::1]:7000"), 6881), None);
    }
}
