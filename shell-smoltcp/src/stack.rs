//! [`Stack`]: one smoltcp interface on one device, its socket set, and the
//! clock that drives them.
//!
//! The stack holds no buffers of its own: the socket slots are a slice the
//! caller hands to [`Stack::new`], and each socket's buffers are handed to
//! the helper that opens it. Running out of slots is [`Error::NoSocketSlot`],
//! not a panic (smoltcp's `SocketSet::add` would panic).

use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy::Device;
use smoltcp::socket::AnySocket;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

use crate::config::{NetConfig, GATEWAY, GUEST_ADDR, PREFIX_LEN};
use crate::error::Error;

/// A monotonic millisecond clock (the firmware's SysTick counter, or a
/// virtual clock in tests).
pub trait Clock {
    /// Milliseconds since an arbitrary start; never decreases.
    fn now_ms(&self) -> u64;

    /// Called by [`Stack::block_until`] when a poll made no progress, to
    /// wait a little (the firmware sleeps until its next tick with `wfi`).
    /// The default returns at once (busy polling).
    fn idle(&self) {}
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
    fn idle(&self) {
        (**self).idle()
    }
}

/// First port of the ephemeral range handed out by [`Stack::ephemeral_port`]
/// (RFC 6335 §6: 49152–65535).
const EPHEMERAL_FIRST: u16 = 49152;

/// The interface at [`GUEST_ADDR`]/24 with default route via [`GATEWAY`],
/// over device `D`, timed by clock `C`, with sockets stored in `'a` storage.
pub struct Stack<'a, D: Device, C: Clock> {
    device: D,
    clock: C,
    iface: Interface,
    sockets: SocketSet<'a>,
    capacity: usize,
    used: usize,
    next_port: u16,
    progressed: bool,
}

impl<'a, D: Device, C: Clock> Stack<'a, D, C> {
    /// Sets up the interface (static address, default route) on `device`.
    /// `slots` bounds how many sockets can be open at once.
    pub fn new(
        mut device: D,
        clock: C,
        config: &NetConfig,
        slots: &'a mut [SocketStorage<'a>],
    ) -> Self {
        let now = Instant::from_millis(clock_millis(&clock));
        let mut cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(config.mac)));
        cfg.random_seed = config.random_seed;
        let mut iface = Interface::new(cfg, &mut device, now);
        iface.update_ip_addrs(|addrs| {
            // A fresh interface has no address; the vector has room for one.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(GUEST_ADDR), PREFIX_LEN));
        });
        // The route table is empty: adding the first route cannot fail.
        let _ = iface.routes_mut().add_default_ipv4_route(GATEWAY);
        let capacity = slots.len();
        let port_offset = (config.random_seed % 1024) as u16;
        Stack {
            device,
            clock,
            iface,
            sockets: SocketSet::new(slots),
            capacity,
            used: 0,
            next_port: EPHEMERAL_FIRST + port_offset,
            progressed: false,
        }
    }

    /// The clock's time in milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Drives the interface at time `now_ms`: receives every pending frame,
    /// sends what the sockets have queued, runs the TCP timers. Returns true
    /// if some socket's state may have changed.
    pub fn poll_at(&mut self, now_ms: u64) -> bool {
        let now = Instant::from_millis(millis_i64(now_ms));
        let changed = self.iface.poll(now, &mut self.device, &mut self.sockets)
            == PollResult::SocketStateChanged;
        self.progressed |= changed;
        changed
    }

    /// [`Stack::poll_at`] at the clock's time.
    pub fn poll(&mut self) -> bool {
        let now = self.now_ms();
        self.poll_at(now)
    }

    /// Milliseconds until the interface wants to be polled again (a TCP
    /// retransmit or ACK timer), `None` if only a new frame can wake it.
    pub fn poll_delay_ms(&mut self, now_ms: u64) -> Option<u64> {
        let now = Instant::from_millis(millis_i64(now_ms));
        self.iface
            .poll_delay(now, &self.sockets)
            .map(|d| d.total_millis())
    }

    /// Calls `f(stack, now)` until it returns a value or an error, or until
    /// the clock reaches `deadline_ms` ([`Error::Timeout`]). Between calls
    /// that made no progress it lets the clock idle ([`Clock::idle`]).
    pub fn block_until<T>(
        &mut self,
        deadline_ms: u64,
        mut f: impl FnMut(&mut Self, u64) -> nb::Result<T, Error>,
    ) -> Result<T, Error> {
        loop {
            let now = self.now_ms();
            self.progressed = false;
            match f(self, now) {
                Ok(v) => return Ok(v),
                Err(nb::Error::Other(e)) => return Err(e),
                Err(nb::Error::WouldBlock) => {}
            }
            if now >= deadline_ms {
                return Err(Error::Timeout);
            }
            if !self.progressed {
                self.clock.idle();
            }
        }
    }

    /// A local port for an outgoing connection, from the ephemeral range,
    /// different on each call (it wraps after 16384 calls).
    pub fn ephemeral_port(&mut self) -> u16 {
        let port = self.next_port;
        self.next_port = if port == u16::MAX {
            EPHEMERAL_FIRST
        } else {
            port + 1
        };
        port
    }

    /// The device (e.g. to read its counters).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// How many socket slots are free.
    pub fn free_slots(&self) -> usize {
        self.capacity - self.used
    }

    pub(crate) fn add_socket<T: AnySocket<'a>>(
        &mut self,
        socket: T,
    ) -> Result<SocketHandle, Error> {
        if self.used >= self.capacity {
            return Err(Error::NoSocketSlot);
        }
        self.used += 1;
        Ok(self.sockets.add(socket))
    }

    pub(crate) fn remove_socket(&mut self, handle: SocketHandle) {
        self.sockets.remove(handle);
        self.used -= 1;
    }

    pub(crate) fn socket<T: AnySocket<'a>>(&mut self, handle: SocketHandle) -> &mut T {
        self.sockets.get_mut(handle)
    }

    pub(crate) fn socket_and_context<T: AnySocket<'a>>(
        &mut self,
        handle: SocketHandle,
    ) -> (&mut T, &mut smoltcp::iface::Context) {
        (self.sockets.get_mut(handle), self.iface.context())
    }

    pub(crate) fn note_progress(&mut self) {
        self.progressed = true;
    }
}

fn clock_millis<C: Clock>(clock: &C) -> i64 {
    millis_i64(clock.now_ms())
}

/// smoltcp counts milliseconds in an `i64`; a `u64` clock past `i64::MAX`
/// (292 million years) saturates.
fn millis_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}
