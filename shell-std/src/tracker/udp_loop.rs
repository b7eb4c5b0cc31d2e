//! The UDP (BEP 15) socket side of `shell-std tracker`: binding (with
//! `SO_REUSEPORT` when several workers share an address) and the worker
//! loops that receive datagrams, hand them to their front
//! ([`super::state`]) and send the replies.
//!
//! Two loops: [`udp_loop`] (one `recvfrom`/`sendto` pair per datagram,
//! `--udp-batch 1`) and [`udp_loop_batched`] (up to [`MAX_UDP_BATCH`]
//! queued datagrams per wake-up, handled under one front lock, answered
//! with one `sendmmsg`). Limits: a datagram longer than [`MAX_DATAGRAM`]
//! is dropped as oversized; a loop sees its stop flag within the socket's
//! read timeout (set by [`super::run`]); `sendmmsg` makes the batched loop
//! Linux-only.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use tracing::warn;

use super::{Clock, Shared};

/// Largest UDP datagram read; a longer one is dropped as oversized (no
/// BEP 15 request is near this: a 74-hash scrape is 1496 bytes).
pub const MAX_DATAGRAM: usize = 4096;

/// Largest `--udp-batch`.
pub const MAX_UDP_BATCH: usize = 64;
/// Room for one reply in a batch: the core bounds a reply at four times
/// its request ([`MAX_DATAGRAM`]).
const BATCH_REPLY_BYTES: usize = 4 * MAX_DATAGRAM;

/// A UDP socket bound to `addr`, with `SO_REUSEPORT` when several workers
/// share the address (the kernel spreads datagrams over their sockets by
/// source address and port).
pub(super) fn bind_udp(
    addr: SocketAddr,
    reuse_port: bool,
    recv_buffer: usize,
) -> Result<UdpSocket> {
    use rustix::net::{bind, socket, sockopt, AddressFamily, SocketType};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = socket(family, SocketType::DGRAM, None)?;
    if reuse_port {
        sockopt::set_socket_reuseport(&fd, true)?;
    }
    if recv_buffer > 0 {
        // Capped by the kernel, never an error: the default stays.
        if let Err(e) = sockopt::set_socket_recv_buffer_size(&fd, recv_buffer) {
            warn!("udp {addr}: SO_RCVBUF {recv_buffer}: {e}");
        }
    }
    bind(&fd, &addr)?;
    Ok(UdpSocket::from(fd))
}

pub(super) fn udp_loop(
    sock: UdpSocket,
    shared: Shared,
    front: usize,
    clock: Clock,
    stop: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut out = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                // e.g. ECONNREFUSED from an earlier reply's ICMP: not fatal.
                shared.front(front).stats.err("udp_recv_error");
                tracing::debug!("udp recv: {e}");
                continue;
            }
        };
        let reply = shared
            .front(front)
            .handle_udp(clock.now_ms(), from, &buf[..n], &mut out);
        if let Some(len) = reply {
            if sock.send_to(&out[..len], from).is_err() {
                shared.front(front).stats.err("udp_send_error");
            }
        }
    }
}

/// One received datagram of a batch: its receive slot, length and source.
#[derive(Clone, Copy)]
struct Received {
    slot: usize,
    len: usize,
    from: SocketAddr,
}

/// Bytes of one receive slot: one more than [`MAX_DATAGRAM`], so that an
/// oversized datagram is seen as such (and dropped), not cut to size.
const RECV_SLOT: usize = MAX_DATAGRAM + 1;

/// True for the errors that only mean "nothing queued (yet)".
fn is_idle(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

/// Receives up to `max` datagrams with one `recvfrom` each (the first
/// waits, the others take only what is queued), datagram `i` into the
/// `i`-th [`RECV_SLOT`]-byte slot of `bufs`; appends them to `got`.
/// (`recvmmsg` was measured in its place: no faster at 1 worker, slower
/// at 2 — the per-datagram kernel work is the same and entering the
/// syscall is ~0.1% of the time — so it was dropped, as issue 13 asks.)
fn recv_each(
    sock: &UdpSocket,
    bufs: &mut [u8],
    max: usize,
    got: &mut Vec<Received>,
) -> std::io::Result<()> {
    use rustix::net::{recvfrom, RecvFlags};
    for (slot, buf) in bufs.chunks_exact_mut(RECV_SLOT).take(max).enumerate() {
        let (len, from) = if slot == 0 {
            sock.recv_from(buf)?
        } else {
            match recvfrom(sock, &mut buf[..], RecvFlags::DONTWAIT) {
                Ok((n, _, Some(a))) => match SocketAddr::try_from(a) {
                    Ok(a) => (n, a),
                    Err(_) => continue,
                },
                Ok((_, _, None)) => continue,
                Err(_) => break,
            }
        };
        got.push(Received { slot, len, from });
    }
    Ok(())
}

/// [`udp_loop`] handling up to `batch` queued datagrams per wake-up,
/// answered with one `sendmmsg` (Linux).
pub(super) fn udp_loop_batched(
    sock: UdpSocket,
    shared: Shared,
    front: usize,
    clock: Clock,
    stop: Arc<AtomicBool>,
    batch: usize,
) {
    use rustix::net::SocketAddrAny;
    use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags};
    let batch = batch.clamp(1, MAX_UDP_BATCH);
    let mut bufs = vec![0u8; batch * RECV_SLOT];
    let mut got: Vec<Received> = Vec::with_capacity(batch);
    let mut out = vec![0u8; batch * BATCH_REPLY_BYTES];
    let mut replies: Vec<(SocketAddr, usize)> = Vec::with_capacity(batch);
    while !stop.load(Ordering::Relaxed) {
        replies.clear();
        got.clear();
        if let Err(e) = recv_each(&sock, &mut bufs, batch, &mut got) {
            // e.g. ECONNREFUSED from an earlier reply's ICMP: not fatal.
            if !is_idle(&e) {
                shared.front(front).stats.err("udp_recv_error");
                tracing::debug!("udp recv: {e}");
            }
        }
        if got.is_empty() {
            continue;
        }
        let mut st = shared.front(front);
        let now = clock.now_ms();
        for g in &got {
            let slot = replies.len() * BATCH_REPLY_BYTES;
            let Some(o) = out.get_mut(slot..slot + BATCH_REPLY_BYTES) else {
                break;
            };
            let at = g.slot * RECV_SLOT;
            let Some(d) = bufs.get(at..at + g.len) else {
                continue;
            };
            if let Some(len) = st.handle_udp(now, g.from, d, o) {
                replies.push((g.from, len));
            }
        }
        drop(st);
        if replies.is_empty() {
            continue;
        }
        let addrs: Vec<SocketAddrAny> = replies
            .iter()
            .map(|(a, _)| SocketAddrAny::from(*a))
            .collect();
        let iovs: Vec<[std::io::IoSlice<'_>; 1]> = replies
            .iter()
            .enumerate()
            .map(|(i, (_, len))| {
                let at = i * BATCH_REPLY_BYTES;
                [std::io::IoSlice::new(out.get(at..at + len).unwrap_or(&[]))]
            })
            .collect();
        let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = (0..replies.len())
            .map(|_| SendAncillaryBuffer::default())
            .collect();
        let mut msgs: Vec<MMsgHdr<'_>> = addrs
            .iter()
            .zip(&iovs)
            .zip(controls.iter_mut())
            .map(|((a, iov), c)| MMsgHdr::new_with_addr(a, iov, c))
            .collect();
        let mut sent = 0;
        while sent < msgs.len() {
            match msgs
                .get_mut(sent..)
                .map(|m| sendmmsg(&sock, m, SendFlags::empty()))
            {
                Some(Ok(n)) if n > 0 => sent += n,
                _ => {
                    // Skip the one that failed (as a failed sendto would).
                    shared.front(front).stats.err("udp_send_error");
                    sent += 1;
                }
            }
        }
    }
}
