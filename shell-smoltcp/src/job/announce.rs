//! The job's tracker: BEP 15 announces through the core's client session
//! ([`Client`]) over one UDP socket, polled from the job's loop, and the
//! list of tracker peers worth trying.
//!
//! The sequence is BEP 3's: `started` (its reply gives the peers),
//! `completed` once every piece is verified, `stopped` when the job ends
//! (best effort, bounded by [`STOPPED_WAIT_MS`]). A job lasts seconds, far
//! less than any tracker interval, so there are no regular re-announces.
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

/// Tracker peers to try, as ports at the gateway, in the order received.
#[derive(Debug, Default)]
pub(super) struct Candidates {
    ports: heapless::Vec<u16, MAX_PEER_ATTEMPTS>,
    next: usize,
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
        if self.ports.contains(&port) {
            return Offer::Known;
        }
        match self.ports.push(port) {
            Ok(()) => Offer::Added,
            Err(_) => {
                self.dropped += 1;
                Offer::Full
            }
        }
    }

    /// The next peer not tried yet.
    pub fn next(&mut self) -> Option<u16> {
        let p = self.ports.get(self.next).copied()?;
        self.next += 1;
        Some(p)
    }

    /// Every peer kept has been tried.
    pub fn exhausted(&self) -> bool {
        self.next >= self.ports.len()
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

/// The job's tracker: the socket, the session and what we announce.
pub(super) struct Tracker {
    udp: UdpSocket,
    client: Client<Tids>,
    params: AnnounceParams,
    /// The announce in flight and when it began.
    pending: Option<(AnnounceEvent, u64)>,
    /// The tracker acknowledged `started` (so `stopped` is owed).
    pub started: bool,
}

impl Tracker {
    /// A tracker session on `udp` announcing `params` (its event is set by
    /// [`Self::begin`]).
    pub fn new(udp: UdpSocket, tids: Tids, params: AnnounceParams) -> Self {
        Tracker {
            udp,
            client: Client::new(ClientConfig::default(), tids),
            params,
            pending: None,
            started: false,
        }
    }

    /// Abandons the announce in flight, if any.
    pub fn cancel(&mut self) {
        self.client.cancel();
        // An answer already in is dropped too.
        let _ = self.client.poll_event();
        self.pending = None;
    }

    /// Starts announcing `event` with these transfer figures (BEP 3:
    /// totals since `started`).
    pub fn begin(
        &mut self,
        now_ms: u64,
        event: AnnounceEvent,
        downloaded: u64,
        uploaded: u64,
        left: u64,
    ) -> Result<(), JobError> {
        self.params.event = event;
        (
            self.params.downloaded,
            self.params.uploaded,
            self.params.left,
        ) = (downloaded, uploaded, left);
        self.client
            .announce(Instant::from_millis(now_ms), self.params)
            .map_err(|e| JobError::TrackerFailed(event, e))?;
        self.pending = Some((event, now_ms));
        Ok(())
    }

    /// Moves datagrams both ways; once the announce in flight is answered,
    /// logs it, offers its peers to `candidates` and returns its event and
    /// the number of peers in the reply. An error reply or a session that
    /// gave up is an error.
    pub fn poll<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        now_ms: u64,
        candidates: &mut Candidates,
        log: &mut impl Write,
    ) -> Result<Option<(AnnounceEvent, usize)>, JobError> {
        let Some((event, began)) = self.pending else {
            return Ok(None);
        };
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
        let Some(answer) = self.client.poll_event() else {
            return Ok(None);
        };
        self.pending = None;
        let ms = now_ms.saturating_sub(began);
        match answer {
            Event::Announced(r) => Ok(Some((event, self.answered(event, &r, ms, candidates, log)))),
            Event::TrackerError(msg) => {
                let msg = core::str::from_utf8(&msg).unwrap_or("(not UTF-8)");
                let _ = writeln!(log, "announce: event={event} error reply: {msg}");
                Err(JobError::TrackerRefused(event))
            }
            Event::Failed(e) => Err(JobError::TrackerFailed(event, e)),
            Event::Scraped(_) => Err(JobError::TrackerFailed(event, ClientError::Busy)),
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
            self.started = true;
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
        assert_eq!(c.next(), Some(7000));
        assert!(!c.exhausted());
        for _ in 1..MAX_PEER_ATTEMPTS {
            assert!(c.next().is_some());
        }
        assert_eq!(c.next(), None);
        assert!(c.exhausted());
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
