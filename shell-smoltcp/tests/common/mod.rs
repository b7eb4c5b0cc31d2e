//! What the host tests share: an in-memory Ethernet link with optional
//! loss, a virtual millisecond clock, and a plain smoltcp interface
//! playing the host (`10.0.2.2`, or a foreign address).
#![allow(dead_code)] // each test binary uses a part

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use shell_smoltcp::smoltcp::iface::{Config, Interface, SocketHandle, SocketSet, SocketStorage};
use shell_smoltcp::smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use shell_smoltcp::smoltcp::socket::{tcp, udp};
use shell_smoltcp::smoltcp::storage::PacketMetadata;
use shell_smoltcp::smoltcp::time::Instant;
use shell_smoltcp::smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, Ipv4Address};
use shell_smoltcp::Clock;

// ---------------------------------------------------------------- the link

/// Given a frame's number and bytes, true to lose it.
pub type LossRule = Box<dyn FnMut(usize, &[u8]) -> bool>;

/// Frames in flight in each direction, and a loss rule.
#[derive(Default)]
pub struct Wire {
    pub queues: [VecDeque<Vec<u8>>; 2],
    /// Frames sent so far (both directions), numbering the loss rule.
    pub sent: usize,
    /// Drops the frames for which it returns true, given the frame's
    /// number and bytes.
    pub drop: Option<LossRule>,
    pub dropped: usize,
}

/// One end of the in-memory link: `side` 0 is the guest, 1 the host.
pub struct End {
    pub wire: Rc<RefCell<Wire>>,
    pub side: usize,
}

pub fn link(drop: Vec<usize>) -> (End, End, Rc<RefCell<Wire>>) {
    lossy_link(move |n, _| drop.contains(&n))
}

pub fn lossy_link(
    drop: impl FnMut(usize, &[u8]) -> bool + 'static,
) -> (End, End, Rc<RefCell<Wire>>) {
    let wire = Rc::new(RefCell::new(Wire {
        drop: Some(Box::new(drop)),
        ..Wire::default()
    }));
    (
        End {
            wire: wire.clone(),
            side: 0,
        },
        End {
            wire: wire.clone(),
            side: 1,
        },
        wire,
    )
}

pub struct Rx(pub Vec<u8>);
pub struct Tx {
    pub wire: Rc<RefCell<Wire>>,
    pub to: usize,
}

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let r = f(&mut frame);
        let mut wire = self.wire.borrow_mut();
        let n = wire.sent;
        wire.sent += 1;
        let lost = wire.drop.as_mut().is_some_and(|d| d(n, &frame));
        if lost {
            wire.dropped += 1;
        } else {
            wire.queues[self.to].push_back(frame);
        }
        r
    }
}

impl Device for End {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx)> {
        let frame = self.wire.borrow_mut().queues[self.side].pop_front()?;
        Some((
            Rx(frame),
            Tx {
                wire: self.wire.clone(),
                to: 1 - self.side,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx> {
        Some(Tx {
            wire: self.wire.clone(),
            to: 1 - self.side,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

// ------------------------------------------------------------------ clock

#[derive(Clone, Default)]
pub struct VClock(pub Rc<Cell<u64>>);

impl Clock for VClock {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }
}

impl VClock {
    pub fn advance(&self, ms: u64) {
        self.0.set(self.0.get() + ms);
    }
}

// ------------------------------------------------------- the host's side

/// A plain smoltcp interface at `addr`/24: the host seen through QEMU.
pub struct Host {
    pub device: End,
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
}

impl Host {
    pub fn new(mut device: End, addr: Ipv4Address) -> Self {
        let cfg = Config::new(EthernetAddress([0x52, 0x55, 10, 0, 2, 2]).into());
        let mut iface = Interface::new(cfg, &mut device, Instant::from_millis(0));
        iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(addr), 24)).unwrap());
        let slots: &'static mut [SocketStorage<'static>] =
            Vec::leak((0..4).map(|_| SocketStorage::EMPTY).collect());
        Host {
            device,
            iface,
            sockets: SocketSet::new(slots),
        }
    }

    pub fn poll(&mut self, now: u64) {
        self.iface.poll(
            Instant::from_millis(now as i64),
            &mut self.device,
            &mut self.sockets,
        );
    }

    pub fn udp(&mut self, port: u16) -> SocketHandle {
        let meta = || Vec::leak(vec![PacketMetadata::EMPTY; 8]);
        let bytes = || Vec::leak(vec![0u8; 4096]);
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(&mut meta()[..], &mut bytes()[..]),
            udp::PacketBuffer::new(&mut meta()[..], &mut bytes()[..]),
        );
        s.bind(port).unwrap();
        self.sockets.add(s)
    }

    pub fn tcp(&mut self) -> SocketHandle {
        let s = tcp::Socket::new(
            tcp::SocketBuffer::new(Vec::leak(vec![0u8; 16384])),
            tcp::SocketBuffer::new(Vec::leak(vec![0u8; 16384])),
        );
        self.sockets.add(s)
    }

    /// Echoes every datagram on `h` back, reversed.
    pub fn udp_echo(&mut self, h: SocketHandle) {
        let s = self.sockets.get_mut::<udp::Socket>(h);
        let mut buf = [0u8; 1500];
        while let Ok((n, meta)) = s.recv_slice(&mut buf) {
            buf[..n].reverse();
            s.send_slice(&buf[..n], meta.endpoint).unwrap();
        }
    }

    /// Echoes the stream on `h` back; closes when the remote has closed.
    pub fn tcp_echo(&mut self, h: SocketHandle) {
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        let mut buf = [0u8; 4096];
        while s.can_recv() && s.send_capacity() - s.send_queue() >= buf.len() {
            let n = s.recv_slice(&mut buf).unwrap();
            assert_eq!(s.send_slice(&buf[..n]).unwrap(), n);
        }
        if !s.may_recv() && s.state() == tcp::State::CloseWait && s.send_queue() == 0 {
            s.close();
        }
    }
}
