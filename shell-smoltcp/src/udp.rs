//! UDP to the gateway: [`UdpSocket`] (one bound socket, one remote) and
//! [`UdpRequest`] (a request/response exchange with retransmission, the
//! shape of a BEP 15 connect or announce).
//!
//! Limits: a datagram larger than the socket's send buffer is refused
//! ([`Error::SendBuffer`]); one larger than the caller's receive buffer is
//! dropped and reported ([`Error::Truncated`]); datagrams from any endpoint
//! other than the [`Remote`] are silently dropped. No IP fragmentation (the
//! `proto-ipv4-fragmentation` feature is off): a datagram must fit the MTU
//! (1500 bytes less 28 of headers), which every BEP 15 packet does for
//! peer lists under ~240 entries.

use smoltcp::iface::SocketHandle;
use smoltcp::phy::Device;
use smoltcp::socket::udp;
use smoltcp::storage::PacketMetadata;

use crate::config::Remote;
use crate::error::Error;
use crate::stack::{Clock, Stack};

/// The buffers of one UDP socket: `PACKETS` datagrams and `BYTES` payload
/// bytes in each direction. Place them in a `static` (or a long-lived
/// local) and hand a `&mut` to [`UdpSocket::bind`].
pub struct UdpBuffers<const PACKETS: usize, const BYTES: usize> {
    rx_meta: [PacketMetadata<udp::UdpMetadata>; PACKETS],
    rx_payload: [u8; BYTES],
    tx_meta: [PacketMetadata<udp::UdpMetadata>; PACKETS],
    tx_payload: [u8; BYTES],
}

impl<const PACKETS: usize, const BYTES: usize> UdpBuffers<PACKETS, BYTES> {
    /// Zeroed buffers (usable in a `static` initialiser).
    pub const fn new() -> Self {
        UdpBuffers {
            rx_meta: [PacketMetadata::EMPTY; PACKETS],
            rx_payload: [0; BYTES],
            tx_meta: [PacketMetadata::EMPTY; PACKETS],
            tx_payload: [0; BYTES],
        }
    }
}

impl<const PACKETS: usize, const BYTES: usize> Default for UdpBuffers<PACKETS, BYTES> {
    fn default() -> Self {
        Self::new()
    }
}

/// A UDP socket bound to a local port that exchanges datagrams with one
/// [`Remote`] only.
#[derive(Debug)]
pub struct UdpSocket {
    handle: SocketHandle,
    remote: Remote,
}

impl UdpSocket {
    /// Opens a socket in `stack` on `local_port` (0 is refused: pick one,
    /// e.g. [`Stack::ephemeral_port`]) for datagrams with `remote`.
    pub fn bind<'a, D: Device, C: Clock, const P: usize, const B: usize>(
        stack: &mut Stack<'a, D, C>,
        buffers: &'a mut UdpBuffers<P, B>,
        local_port: u16,
        remote: Remote,
    ) -> Result<Self, Error> {
        let rx = udp::PacketBuffer::new(&mut buffers.rx_meta[..], &mut buffers.rx_payload[..]);
        let tx = udp::PacketBuffer::new(&mut buffers.tx_meta[..], &mut buffers.tx_payload[..]);
        let mut socket = udp::Socket::new(rx, tx);
        socket.bind(local_port).map_err(|_| Error::Bind)?;
        let handle = stack.add_socket(socket)?;
        Ok(UdpSocket { handle, remote })
    }

    /// The remote this socket talks to.
    pub fn remote(&self) -> Remote {
        self.remote
    }

    /// Queues `datagram` for the remote and drives the stack. `WouldBlock`
    /// while the send buffer is full; [`Error::SendBuffer`] if the datagram
    /// can never fit it.
    pub fn poll_send<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        now_ms: u64,
        datagram: &[u8],
    ) -> nb::Result<(), Error> {
        let socket = stack.socket::<udp::Socket>(self.handle);
        if datagram.len() > socket.payload_send_capacity() {
            return Err(nb::Error::Other(Error::SendBuffer));
        }
        let sent = match socket.send_slice(datagram, self.remote.endpoint()) {
            Ok(()) => Ok(()),
            Err(udp::SendError::BufferFull) => Err(nb::Error::WouldBlock),
            // The gateway endpoint is always addressable; keep a typed error.
            Err(udp::SendError::Unaddressable) => Err(nb::Error::Other(Error::Bind)),
        };
        if sent.is_ok() {
            stack.note_progress();
        }
        stack.poll_at(now_ms);
        sent
    }

    /// Drives the stack, then returns the length of the next datagram from
    /// the remote, copied into `buf`. Datagrams from other endpoints are
    /// dropped; one longer than `buf` is dropped with [`Error::Truncated`].
    pub fn poll_recv<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        now_ms: u64,
        buf: &mut [u8],
    ) -> nb::Result<usize, Error> {
        stack.poll_at(now_ms);
        let socket = stack.socket::<udp::Socket>(self.handle);
        loop {
            // `recv` (not `recv_slice`) so that a stranger's datagram is
            // dropped before its size is looked at.
            match socket.recv() {
                Ok((data, meta)) if self.remote.matches(&meta.endpoint) => {
                    let Some(dest) = buf.get_mut(..data.len()) else {
                        return Err(nb::Error::Other(Error::Truncated));
                    };
                    dest.copy_from_slice(data);
                    return Ok(data.len());
                }
                Ok(_) => continue,
                Err(_) => return Err(nb::Error::WouldBlock),
            }
        }
    }

    /// Closes the socket and frees its slot in `stack`.
    pub fn release<D: Device, C: Clock>(self, stack: &mut Stack<'_, D, C>) {
        stack.remove_socket(self.handle);
    }
}

/// When a [`UdpRequest`] sends again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Wait after the first send, in milliseconds.
    pub first_ms: u64,
    /// Double the wait after every retransmission (BEP 15 §"Time outs":
    /// 15 · 2ⁿ seconds).
    pub doubling: bool,
    /// Sends in all (the first one included); then [`Error::Timeout`].
    pub tries: u8,
}

impl Retry {
    /// BEP 15's schedule: 15 s, doubling, up to n = 8 (9 sends).
    pub const BEP15: Retry = Retry {
        first_ms: 15_000,
        doubling: true,
        tries: 9,
    };
}

/// A request/response exchange on a [`UdpSocket`]: sends the request,
/// resends it on the [`Retry`] schedule until a datagram arrives from the
/// remote, then returns that datagram.
///
/// The request bytes are passed to every [`UdpRequest::poll`] (the helper
/// stores none). Matching an answer to the request beyond its source (e.g.
/// a BEP 15 transaction id) is the caller's job: on a mismatch, call `poll`
/// again and the exchange goes on.
#[derive(Debug)]
pub struct UdpRequest {
    socket: UdpSocket,
    retry: Retry,
    sent: u8,
    next_send_ms: u64,
    wait_ms: u64,
}

impl UdpRequest {
    /// Starts an exchange on `socket`; the first `poll` sends.
    pub fn new(socket: UdpSocket, retry: Retry) -> Self {
        UdpRequest {
            socket,
            retry,
            sent: 0,
            next_send_ms: 0,
            wait_ms: retry.first_ms,
        }
    }

    /// Starts over (for the next request on the same socket).
    pub fn restart(&mut self) {
        self.sent = 0;
        self.next_send_ms = 0;
        self.wait_ms = self.retry.first_ms;
    }

    /// How many times the request has been sent.
    pub fn sends(&self) -> u8 {
        self.sent
    }

    /// Drives the exchange at `now_ms`: returns the answer's length in
    /// `response`, or sends/resends `request` when due, or `WouldBlock`.
    /// [`Error::Timeout`] once every try has waited its full interval.
    pub fn poll<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        now_ms: u64,
        request: &[u8],
        response: &mut [u8],
    ) -> nb::Result<usize, Error> {
        match self.socket.poll_recv(stack, now_ms, response) {
            Err(nb::Error::WouldBlock) => {}
            done => return done,
        }
        if self.sent > 0 && now_ms < self.next_send_ms {
            return Err(nb::Error::WouldBlock);
        }
        if self.sent >= self.retry.tries {
            return Err(nb::Error::Other(Error::Timeout));
        }
        self.socket.poll_send(stack, now_ms, request)?;
        if self.sent > 0 && self.retry.doubling {
            self.wait_ms = self.wait_ms.saturating_mul(2);
        }
        self.sent += 1;
        self.next_send_ms = now_ms.saturating_add(self.wait_ms);
        Err(nb::Error::WouldBlock)
    }

    /// Ends the exchange, giving the socket back.
    pub fn into_socket(self) -> UdpSocket {
        self.socket
    }
}
