//! One task per peer connection: it moves bytes between the socket and the
//! peer's [`PeerSession`], and the session talks to the torrent (the core's
//! [`Torrent`](ourtorrent_core::torrent::Torrent) behind the shared lock)
//! for everything shared.
//!
//! A round of a connection, in the order of its files:
//! - `handshake`: ours and theirs (or theirs already read by the
//!   session's listener), then the connection is registered;
//! - `receive`: whole messages in the read buffer go to the torrent;
//! - `writes`: received blocks go to disk on a blocking thread while the
//!   task reads the next batch (two buffers), and are hashed there;
//! - `control`: the torrent's commands for this peer (cancels, the
//!   choker's decision, haves) and our requests go out;
//! - `extensions`: the BEP 10 handshake;
//! - `uploads`: requested blocks are read from disk into the output;
//! - then the task waits for the socket, a wake-up or its timer.
//!
//! Bounds: read buffer [`READ_BUF`] (plus one message; two of them while
//! downloading), output high-water [`OUT_HIGH_WATER`], queued requests from
//! a peer [`MAX_PEER_REQUESTS`] (extra ones are rejected under BEP 6, and a
//! peer that keeps asking is dropped).

mod control;
pub(crate) mod extensions;
mod handshake;
mod receive;
mod uploads;
pub(crate) mod writes;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use ourtorrent_core::peer::{PeerSession, UploadQueue};
use ourtorrent_core::pieces::PeerKey;
use ourtorrent_core::wire::{Framer, Handshake};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::peers::Source;
use super::rate::Dir;
use super::swarm::Ctx;
use writes::Writer;

/// Socket reads go into a buffer this large (plus one whole message).
pub const READ_BUF: usize = 256 << 10;
/// Stop filling the output buffer (uploads) past this many bytes.
pub const OUT_HIGH_WATER: usize = 256 << 10;
/// Bytes of blocks served per wake-up before checking the socket for
/// input and the timers again.
pub const SERVE_BUDGET: usize = 4 << 20;
/// Requests from one peer waiting to be served.
pub const MAX_PEER_REQUESTS: usize = 1024;
/// Requests in flight per peer (our pipeline; lowered by the peer's `reqq`).
pub const PIPELINE: usize = 128;
/// What we advertise as our `reqq` (BEP 10).
pub const OUR_REQQ: u32 = MAX_PEER_REQUESTS as u32;
/// Time a peer has to answer our handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection ended.
pub(crate) enum End {
    /// The peer broke the protocol: ban it.
    Protocol(String),
    /// I/O error, EOF, timeout, or we chose to close.
    Closed(String),
    /// Reset or EOF during our handshake: maybe transient (libtorrent
    /// resets connections for ~0.5 s after adding a torrent).
    Reset(String),
}

impl End {
    /// `Closed` becomes `Reset` (I/O during the handshake).
    fn transient(self) -> End {
        match self {
            End::Closed(w) => End::Reset(w),
            e => e,
        }
    }
}

fn closed(e: impl std::fmt::Display) -> End {
    End::Closed(e.to_string())
}

/// Runs one connection (outgoing or accepted) until it ends; bans peers
/// that break the protocol. `inbound`: the session already read the peer's
/// handshake (and these bytes after it) to route it here.
pub async fn peer_task(
    ctx: Arc<Ctx>,
    stream: TcpStream,
    addr: SocketAddr,
    permits: Permits,
    inbound: Option<(Handshake, Vec<u8>)>,
) {
    // The dialer booked its addresses as connected before dialling.
    if inbound.is_some() && !ctx.connected(addr, Source::Incoming) {
        return;
    }
    let inbound_conn = inbound.is_some();
    let _ = stream.set_nodelay(true);
    ctx.stats.peers.fetch_add(1, Relaxed);
    let mut seed = false;
    let mut failed = false;
    let r = match Conn::open(&ctx, &stream, addr, inbound).await {
        Ok(mut c) => {
            let r = c.run().await;
            seed = c.seed;
            c.close();
            r
        }
        Err(e) => {
            failed = true;
            // Issue 16: a peer that took the TCP connection but failed the
            // BEP 3 handshake is as unreachable as one that refused it.
            if !inbound_conn {
                let (why, transient) = match &e {
                    End::Protocol(w) | End::Closed(w) => (w.clone(), false),
                    End::Reset(w) => (w.clone(), true),
                };
                ctx.lock().book.handshake_failed(addr, why, transient);
            }
            e
        }
    };
    ctx.stats.peers.fetch_sub(1, Relaxed);
    if seed {
        ctx.stats.seeds.fetch_sub(1, Relaxed);
    }
    ctx.disconnected(addr, failed);
    match r {
        End::Protocol(why) => ctx.ban(addr, &why),
        End::Closed(why) | End::Reset(why) => tracing::debug!(%addr, "closed: {why}"),
    }
    drop(permits);
}

/// A connection's slots: one of its torrent's, one of the session's.
pub type Permits = (
    tokio::sync::OwnedSemaphorePermit,
    tokio::sync::OwnedSemaphorePermit,
);

/// One connection's state between rounds.
pub(crate) struct Conn<'a> {
    ctx: &'a Arc<Ctx>,
    stream: &'a TcpStream,
    addr: SocketAddr,
    key: PeerKey,
    notify: Arc<Notify>,
    session: PeerSession<Vec<u8>>,
    framer: Framer,
    /// Bytes read, `filled` of them valid.
    rbuf: Vec<u8>,
    filled: usize,
    /// Bytes to send, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    /// Scratch for the session's control messages.
    tmp: Vec<u8>,
    /// Requests the peer made of us, in order (bounded: our `reqq`).
    reqs: UploadQueue<MAX_PEER_REQUESTS>,
    writer: Writer,
    /// Payload bytes sent not yet added to the peer's rate window.
    up_acc: u64,
    /// Our BEP 10 handshake is still to be sent.
    ext_pending: bool,
    /// The peer's extensions (BEP 9 serving, BEP 11).
    ext: extensions::ExtState,
    /// The peer connected to us.
    inbound: bool,
    /// The peer has every piece (counted in the stats).
    seed: bool,
}

impl Conn<'_> {
    async fn run(&mut self) -> End {
        loop {
            let now = self.ctx.now();
            let (pos, err) = self.receive(now);
            if !self.ext.pex_learned.is_empty() {
                let learned = std::mem::take(&mut self.ext.pex_learned);
                self.ctx.learn(&learned, Source::Pex);
            }
            if let Err(e) = self
                .writer
                .submit(self.ctx, &mut self.rbuf, &mut self.filled, pos)
                .await
            {
                break e;
            }
            if let Some(e) = err {
                break e;
            }
            // Under a download cap, requests in flight hold a few seconds
            // of this peer's share (none waits past its timeout).
            let pipe = self.ctx.limits.pipeline(
                self.ctx.stats.peers.load(Relaxed),
                u64::from(ourtorrent_core::pieces::BLOCK_LEN),
                PIPELINE,
            );
            self.session.set_pipeline(pipe);
            let mut deadline = match self.control(now) {
                Ok(d) => d,
                Err(e) => break e,
            };
            self.send_extension_handshake();
            if let Err(e) = self.serve() {
                break e;
            }
            // Wait for the socket, a wake-up or the timer (≤ 1 s).
            let now = self.ctx.now();
            if deadline.millis() > now.millis() + 1000 {
                deadline = now.add_millis(1000);
            }
            let mut sleep = Duration::from_millis(deadline.millis().saturating_sub(now.millis()));
            // Rate limits (`super::rate`): no tokens, no reading (the
            // kernel's buffer fills and TCP slows the peer) and no serving;
            // wake when tokens are back.
            let limits = &self.ctx.limits;
            let down_allow = limits.available(Dir::Down);
            if down_allow == 0 {
                sleep = sleep.min(limits.wait(Dir::Down));
            }
            let up_blocked = !self.reqs.is_empty()
                && !self.session.am_choking()
                && limits.available(Dir::Up) == 0;
            if up_blocked {
                sleep = sleep.min(limits.wait(Dir::Up));
            }
            // Queued requests count as output: with the socket still
            // writable `writable()` is ready at once and the loop serves
            // the next batch.
            let want_write =
                self.out_pos < self.out.len() || (!self.reqs.is_empty() && !up_blocked);
            let want_read = self.filled < self.rbuf.len() && down_allow > 0;
            let stream = self.stream;
            tokio::select! {
                r = stream.readable(), if want_read => {
                    if let Err(e) = r { break closed(e) }
                    let before = self.filled;
                    let end = self
                        .rbuf
                        .len()
                        .min(before.saturating_add(usize::try_from(down_allow).unwrap_or(usize::MAX)));
                    let got = try_fill(stream, &mut self.rbuf[..end], &mut self.filled);
                    limits.take(Dir::Down, (self.filled - before) as u64);
                    match got {
                        Ok(true) => {}
                        Ok(false) => break closed("eof"),
                        Err(e) => break e,
                    }
                }
                r = stream.writable(), if want_write => {
                    if let Err(e) = r { break closed(e) }
                }
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Gives the peer's pieces, requests and upload slot back to the torrent.
    fn close(self) {
        let mut g = self.ctx.lock();
        g.forget(self.key);
        g.torrent.remove_peer(self.ctx.now(), &self.session);
        g.wake();
    }
}

/// Reads what is there into `buf[*filled..]`; `Ok(false)` on EOF.
fn try_fill(stream: &TcpStream, buf: &mut [u8], filled: &mut usize) -> Result<bool, End> {
    while *filled < buf.len() {
        match stream.try_read(&mut buf[*filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => *filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(closed(e)),
        }
    }
    Ok(true)
}

/// Writes as much of `out[*pos..]` as the socket takes now.
fn flush(stream: &TcpStream, out: &[u8], pos: &mut usize) -> Result<(), End> {
    while *pos < out.len() {
        match stream.try_write(&out[*pos..]) {
            Ok(0) => return Err(closed("write returned 0")),
            Ok(n) => *pos += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(closed(e)),
        }
    }
    Ok(())
}
