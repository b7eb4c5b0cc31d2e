//! [`TcpStream`]: one TCP connection with the gateway, active (connect to
//! `10.0.2.2:PORT`, the firmware leeching from a host peer) or passive
//! (listen on a local port such as [`crate::PEER_PORT`], a host peer
//! leeching from the firmware through QEMU's `hostfwd`).
//!
//! Limits: the windows are the sizes of the caller's [`TcpBuffers`] (QEMU's
//! LAN9118 model buffers about 10.5 KB of received frames, so receive
//! windows of 8–16 KiB are safe there); a connection idle for
//! [`TCP_TIMEOUT_MS`] while data is outstanding is dropped by smoltcp and
//! reported as [`Error::ConnectionReset`]; an inbound connection from
//! anything but the gateway is aborted ([`Error::ForeignPeer`]). One
//! listening socket accepts one connection (listen again for the next).

use smoltcp::iface::SocketHandle;
use smoltcp::phy::Device;
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::Duration;
use smoltcp::wire::IpAddress;

use crate::config::{Remote, GATEWAY};
use crate::error::Error;
use crate::stack::{Clock, Stack};

/// How long smoltcp waits for the remote to acknowledge anything before it
/// drops the connection (`tcp::Socket::set_timeout`).
pub const TCP_TIMEOUT_MS: u64 = 10_000;

/// The receive (`RX`) and send (`TX`) buffers of one TCP socket; their
/// sizes are the advertised window and the unacknowledged-data limit.
pub struct TcpBuffers<const RX: usize, const TX: usize> {
    rx: [u8; RX],
    tx: [u8; TX],
}

impl<const RX: usize, const TX: usize> TcpBuffers<RX, TX> {
    /// Zeroed buffers (usable in a `static` initialiser).
    pub const fn new() -> Self {
        TcpBuffers {
            rx: [0; RX],
            tx: [0; TX],
        }
    }
}

impl<const RX: usize, const TX: usize> Default for TcpBuffers<RX, TX> {
    fn default() -> Self {
        Self::new()
    }
}

/// A TCP connection (or a listener waiting for one) in a [`Stack`].
#[derive(Debug)]
pub struct TcpStream {
    handle: SocketHandle,
    closing: bool,
}

/// Where a connection stands, as far as the helpers care.
enum Phase {
    /// Not established yet (SYN sent, listening, SYN received).
    Opening,
    /// Established or half-closed: data may flow.
    Open,
    /// Reset, refused or timed out by smoltcp (or closed by us).
    Dead,
}

impl TcpStream {
    /// Opens a connection to `remote` from an ephemeral local port.
    pub fn connect<'a, D: Device, C: Clock, const RX: usize, const TX: usize>(
        stack: &mut Stack<'a, D, C>,
        buffers: &'a mut TcpBuffers<RX, TX>,
        remote: Remote,
    ) -> Result<Self, Error> {
        let local_port = stack.ephemeral_port();
        let handle = stack.add_socket(new_socket(buffers))?;
        let (socket, cx) = stack.socket_and_context::<tcp::Socket>(handle);
        if socket.connect(cx, remote.endpoint(), local_port).is_err() {
            stack.remove_socket(handle);
            return Err(Error::Bind);
        }
        Ok(TcpStream {
            handle,
            closing: false,
        })
    }

    /// Listens on `port` (all of the guest's addresses) for one connection.
    pub fn listen<'a, D: Device, C: Clock, const RX: usize, const TX: usize>(
        stack: &mut Stack<'a, D, C>,
        buffers: &'a mut TcpBuffers<RX, TX>,
        port: u16,
    ) -> Result<Self, Error> {
        let handle = stack.add_socket(new_socket(buffers))?;
        if stack.socket::<tcp::Socket>(handle).listen(port).is_err() {
            stack.remove_socket(handle);
            return Err(Error::Bind);
        }
        Ok(TcpStream {
            handle,
            closing: false,
        })
    }

    /// Reuses this stream's socket (and its buffers) for a new connection
    /// to `remote`, once the old one is over: after [`TcpStream::abort`],
    /// or when it was reset, refused or closed. A socket is a static buffer
    /// pair on a microcontroller; reusing it is how a firmware tries one
    /// peer after another without a buffer per attempt.
    pub fn reconnect<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        remote: Remote,
    ) -> Result<(), Error> {
        let local_port = stack.ephemeral_port();
        let (socket, cx) = stack.socket_and_context::<tcp::Socket>(self.handle);
        if socket.is_open() {
            return Err(Error::InvalidState);
        }
        socket
            .connect(cx, remote.endpoint(), local_port)
            .map_err(|_| Error::Bind)?;
        self.closing = false;
        Ok(())
    }

    /// Reuses this stream's socket to listen on `port` for one connection,
    /// once the old connection is over (see [`TcpStream::reconnect`]).
    pub fn relisten<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        port: u16,
    ) -> Result<(), Error> {
        let socket = stack.socket::<tcp::Socket>(self.handle);
        if socket.is_open() {
            return Err(Error::InvalidState);
        }
        socket.listen(port).map_err(|_| Error::Bind)?;
        self.closing = false;
        Ok(())
    }

    /// The smoltcp state (for reports and tests).
    pub fn state<D: Device, C: Clock>(&self, stack: &mut Stack<'_, D, C>) -> State {
        stack.socket::<tcp::Socket>(self.handle).state()
    }

    /// Drives the stack; `Ok` once the connection is established (for a
    /// listener: accepted from the gateway).
    pub fn poll_established<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        now_ms: u64,
    ) -> nb::Result<(), Error> {
        stack.poll_at(now_ms);
        match self.phase(stack)? {
            Phase::Opening => Err(nb::Error::WouldBlock),
            Phase::Open => Ok(()),
            Phase::Dead => Err(nb::Error::Other(self.dead_error())),
        }
    }

    /// Queues up to `data.len()` bytes, drives the stack and returns how
    /// many were taken (at least 1; `WouldBlock` while the send buffer is
    /// full or the connection is still opening). `Ok(0)` only for empty
    /// `data`.
    pub fn poll_send<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        now_ms: u64,
        data: &[u8],
    ) -> nb::Result<usize, Error> {
        if data.is_empty() {
            return Ok(0);
        }
        match self.phase(stack)? {
            Phase::Opening => {
                stack.poll_at(now_ms);
                return Err(nb::Error::WouldBlock);
            }
            Phase::Dead => return Err(nb::Error::Other(self.dead_error())),
            Phase::Open => {}
        }
        let socket = stack.socket::<tcp::Socket>(self.handle);
        let taken = match socket.send_slice(data) {
            Ok(n) => n,
            Err(tcp::SendError::InvalidState) => {
                return Err(nb::Error::Other(Error::InvalidState));
            }
        };
        if taken > 0 {
            stack.note_progress();
        }
        stack.poll_at(now_ms);
        if taken == 0 {
            Err(nb::Error::WouldBlock)
        } else {
            Ok(taken)
        }
    }

    /// Drives the stack and copies received bytes into `buf`: `Ok(n)` with
    /// `n ≥ 1`, or `Ok(0)` once the remote has closed its side (FIN) and
    /// everything before it has been read.
    pub fn poll_recv<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        now_ms: u64,
        buf: &mut [u8],
    ) -> nb::Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        stack.poll_at(now_ms);
        let socket = stack.socket::<tcp::Socket>(self.handle);
        match socket.recv_slice(buf) {
            Ok(0) => {}
            Ok(n) => {
                stack.note_progress();
                // Let the window update go out now rather than on the next poll.
                stack.poll_at(now_ms);
                return Ok(n);
            }
            Err(tcp::RecvError::Finished) => return Ok(0),
            Err(tcp::RecvError::InvalidState) => {}
        }
        match self.phase(stack)? {
            Phase::Opening | Phase::Open => Err(nb::Error::WouldBlock),
            Phase::Dead => Err(nb::Error::Other(self.dead_error())),
        }
    }

    /// Drives the stack; `Ok` once everything queued has been acknowledged.
    pub fn poll_flush<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        now_ms: u64,
    ) -> nb::Result<(), Error> {
        stack.poll_at(now_ms);
        if stack.socket::<tcp::Socket>(self.handle).send_queue() == 0 {
            return Ok(());
        }
        match self.phase(stack)? {
            Phase::Dead => Err(nb::Error::Other(self.dead_error())),
            _ => Err(nb::Error::WouldBlock),
        }
    }

    /// Closes our side (sends FIN after the queued data). Receiving goes on
    /// until the remote closes too.
    pub fn close<D: Device, C: Clock>(&mut self, stack: &mut Stack<'_, D, C>, now_ms: u64) {
        self.closing = true;
        stack.socket::<tcp::Socket>(self.handle).close();
        stack.poll_at(now_ms);
    }

    /// Drives the stack; `Ok` once the connection is closed on both sides
    /// (`TimeWait` or `Closed`). Call after [`TcpStream::close`].
    pub fn poll_closed<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        now_ms: u64,
    ) -> nb::Result<(), Error> {
        stack.poll_at(now_ms);
        match self.state(stack) {
            State::Closed | State::TimeWait => Ok(()),
            _ => Err(nb::Error::WouldBlock),
        }
    }

    /// Resets the connection (sends RST) at once.
    pub fn abort<D: Device, C: Clock>(&mut self, stack: &mut Stack<'_, D, C>, now_ms: u64) {
        self.closing = true;
        stack.socket::<tcp::Socket>(self.handle).abort();
        stack.poll_at(now_ms);
    }

    /// Frees the socket's slot in `stack` (abort or close first: a socket
    /// removed while open sends nothing more).
    pub fn release<D: Device, C: Clock>(self, stack: &mut Stack<'_, D, C>) {
        stack.remove_socket(self.handle);
    }

    fn dead_error(&self) -> Error {
        if self.closing {
            Error::InvalidState
        } else {
            Error::ConnectionReset
        }
    }

    /// Classifies the state, aborting a connection from a foreign address.
    fn phase<D: Device, C: Clock>(&self, stack: &mut Stack<'_, D, C>) -> Result<Phase, Error> {
        let socket = stack.socket::<tcp::Socket>(self.handle);
        let phase = match socket.state() {
            State::Listen | State::SynSent | State::SynReceived => Phase::Opening,
            State::Established | State::CloseWait | State::FinWait1 | State::FinWait2 => {
                Phase::Open
            }
            State::Closed | State::Closing | State::LastAck | State::TimeWait => Phase::Dead,
        };
        if let Some(ep) = socket.remote_endpoint() {
            if ep.addr != IpAddress::Ipv4(GATEWAY) {
                socket.abort();
                return Err(Error::ForeignPeer);
            }
        }
        Ok(phase)
    }
}

fn new_socket<const RX: usize, const TX: usize>(
    buffers: &mut TcpBuffers<RX, TX>,
) -> tcp::Socket<'_> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(&mut buffers.rx[..]),
        tcp::SocketBuffer::new(&mut buffers.tx[..]),
    );
    socket.set_timeout(Some(Duration::from_millis(TCP_TIMEOUT_MS)));
    // ACK at once: with windows of a few KiB a delayed ACK (smoltcp's
    // default 10 ms) stalls the sender once per window.
    socket.set_ack_delay(None);
    // Requests and block headers are small writes that must leave now.
    socket.set_nagle_enabled(false);
    socket
}
