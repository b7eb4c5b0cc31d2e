//! The end of a run: a `stopped` announce (BEP 15 event 3) for every fake
//! peer announced, so the target's swarms are left as they were found.
//!
//! Limits: [`STOP_WINDOW`] announces in flight; a window with no reply for
//! `--timeout-ms` is given up; three connect attempts.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Result;
use ourtorrent_core::id::InfoHash;
use ourtorrent_core::tracker::udp::{
    ConnectRequest, ConnectionId, Limits, Response, TransactionId,
};
use ourtorrent_core::tracker::{AddressFamily, AnnounceEvent};

use super::cli::LoadtestArgs;
use super::fake::fake_announce;
use super::worker::CID_REFRESH;

/// What the `stopped` round did.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Stopped {
    /// Fake peers sent a `stopped` announce.
    pub(super) sent: u64,
    /// Announce replies received to them.
    pub(super) acknowledged: u64,
}

/// Most `stopped` announces in flight at once.
const STOP_WINDOW: usize = 256;

/// Sends a `stopped` announce for every peer set in `announced`, a window
/// of [`STOP_WINDOW`] at a time; a window with no reply for `--timeout-ms`
/// is given up (the tracker will expire those peers itself).
pub(super) fn stop_peers(
    a: &LoadtestArgs,
    target: SocketAddr,
    hashes: &[InfoHash],
    announced: &[u64],
    sock: &UdpSocket,
) -> Result<Stopped> {
    let timeout = Duration::from_millis(a.timeout_ms.max(1));
    let family = AddressFamily::of(&target);
    let limits = Limits::default();
    let mut done = Stopped::default();
    let mut buf = [0u8; 2048];
    // Transaction ids with the top bit set: never those of the main loop's
    // slots, so late replies to it are ignored here.
    let mut tid = 0x8000_0000u32;
    let connect = |tid: &mut u32| -> Result<Option<ConnectionId>> {
        let (mut out, mut buf) = ([0u8; 16], [0u8; 2048]);
        for _ in 0..3 {
            *tid += 1;
            let n = ConnectRequest {
                transaction_id: TransactionId(*tid),
            }
            .encode(&mut out)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            sock.send_to(&out[..n], target)?;
            let until = Instant::now() + timeout;
            while Instant::now() < until {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    if let (true, Ok(Response::Connect(c))) =
                        (from == target, Response::parse(&buf[..n], family, &limits))
                    {
                        if c.transaction_id.0 == *tid {
                            return Ok(Some(c.connection_id));
                        }
                    }
                }
            }
        }
        Ok(None)
    };
    let Some(mut cid) = connect(&mut tid)? else {
        return Ok(done);
    };
    let mut cid_at = Instant::now();
    let peers = (0..announced.len() * 64).filter(|p| announced[p / 64] & (1 << (p % 64)) != 0);
    let mut in_flight = 0usize;
    let mut last_reply = Instant::now();
    let mut peers = peers.peekable();
    while peers.peek().is_some() || in_flight > 0 {
        if cid_at.elapsed() > CID_REFRESH {
            match connect(&mut tid)? {
                Some(c) => (cid, cid_at) = (c, Instant::now()),
                None => break,
            }
        }
        while in_flight < STOP_WINDOW {
            let Some(p) = peers.next() else { break };
            tid += 1;
            let mut req = [0u8; 256];
            let n = fake_announce(
                hashes,
                p,
                cid,
                TransactionId(tid),
                AnnounceEvent::Stopped,
                0,
            )
            .encode(&mut req)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            if sock.send_to(&req[..n], target).is_ok() {
                done.sent += 1;
                in_flight += 1;
            }
        }
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == target => {
                last_reply = Instant::now();
                in_flight = in_flight.saturating_sub(1);
                if let Ok(Response::Announce(_)) = Response::parse(&buf[..n], family, &limits) {
                    done.acknowledged += 1;
                }
            }
            _ if last_reply.elapsed() >= timeout => {
                // Lost: move on.
                in_flight = 0;
                last_reply = Instant::now();
            }
            _ => {}
        }
    }
    Ok(done)
}
