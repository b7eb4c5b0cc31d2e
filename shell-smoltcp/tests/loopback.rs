//! Host tests of the driver: the guest [`Stack`] and a plain smoltcp
//! interface playing the host (`10.0.2.2`, or a foreign address) exchange
//! frames over an in-memory Ethernet link (`common`), on a virtual
//! millisecond clock, with optional frame loss.

mod common;

use common::*;

use shell_smoltcp::smoltcp::iface::SocketStorage;
use shell_smoltcp::smoltcp::socket::{tcp, udp};
use shell_smoltcp::smoltcp::wire::{IpAddress, Ipv4Address};
use shell_smoltcp::{
    nb, Clock, ConfigError, Error, NetConfig, Remote, Retry, Stack, TcpBuffers, TcpStream,
    UdpBuffers, UdpRequest, UdpSocket, GATEWAY, GUEST_ADDR, PEER_PORT,
};

type Guest = Stack<'static, End, VClock>;

fn guest(device: End, clock: &VClock, slots: usize) -> Guest {
    let slots: &'static mut [SocketStorage<'static>] =
        Vec::leak((0..slots).map(|_| SocketStorage::EMPTY).collect());
    let config = NetConfig {
        mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
        random_seed: 7,
    };
    Stack::new(device, clock.clone(), &config, slots)
}

/// Runs `f` against the guest, then lets the host do `host` and poll, one
/// virtual millisecond per round, until `f` is done or `limit_ms` passes.
fn run<T>(
    g: &mut Guest,
    host: &mut Host,
    clock: &VClock,
    limit_ms: u64,
    mut f: impl FnMut(&mut Guest, u64) -> nb::Result<T, Error>,
    mut on_host: impl FnMut(&mut Host),
) -> Result<T, Error> {
    let deadline = clock.now_ms() + limit_ms;
    loop {
        let now = clock.now_ms();
        match f(g, now) {
            Ok(v) => return Ok(v),
            Err(nb::Error::Other(e)) => return Err(e),
            Err(nb::Error::WouldBlock) => {}
        }
        host.poll(now);
        on_host(host);
        host.poll(now);
        assert!(now < deadline, "still blocked after {limit_ms} ms");
        clock.advance(1);
    }
}

fn udp_bufs() -> &'static mut UdpBuffers<4, 2048> {
    Box::leak(Box::new(UdpBuffers::new()))
}

fn tcp_bufs() -> &'static mut TcpBuffers<8192, 8192> {
    Box::leak(Box::new(TcpBuffers::new()))
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

// ------------------------------------------------------------------ tests

#[test]
fn remote_refuses_everything_but_the_gateway() {
    assert_eq!(Remote::new(GATEWAY, 6969).unwrap().port(), 6969);
    assert_eq!(
        Remote::new(GATEWAY, 6969).unwrap().endpoint().to_string(),
        "10.0.2.2:6969"
    );
    for addr in [
        Ipv4Address::new(10, 0, 2, 3),
        Ipv4Address::new(10, 0, 2, 15),
        Ipv4Address::new(127, 0, 0, 1),
        Ipv4Address::new(0, 0, 0, 0),
        Ipv4Address::new(255, 255, 255, 255),
        Ipv4Address::new(10, 0, 2, 255),
        Ipv4Address::new(8, 8, 8, 8),
    ] {
        assert_eq!(
            Remote::new(addr, 80),
            Err(ConfigError::NotGateway),
            "{addr}"
        );
    }
    assert_eq!(Remote::new(GATEWAY, 0), Err(ConfigError::ZeroPort));
    assert_eq!(Remote::gateway(0), Err(ConfigError::ZeroPort));
    assert_eq!(
        Error::from(ConfigError::NotGateway),
        Error::Config(ConfigError::NotGateway)
    );
}

#[test]
fn udp_request_gets_its_answer_through_loss() {
    // The first two IPv4 frames (the request and its first resend) are
    // lost; the third send gets through.
    let mut ipv4_seen = 0;
    let (a, b, wire) = lossy_link(move |_, frame| {
        let ipv4 = frame.get(12..14) == Some(&[0x08, 0x00][..]);
        ipv4_seen += usize::from(ipv4);
        ipv4 && ipv4_seen <= 2
    });
    let clock = VClock::default();
    let mut g = guest(a, &clock, 2);
    let mut host = Host::new(b, GATEWAY);
    let hs = host.udp(6969);

    let remote = Remote::gateway(6969).unwrap();
    let socket = UdpSocket::bind(&mut g, udp_bufs(), 40000, remote).unwrap();
    let retry = Retry {
        first_ms: 200,
        doubling: true,
        tries: 6,
    };
    let mut req = UdpRequest::new(socket, retry);
    let request = *b"connect?";
    let mut resp = [0u8; 64];
    let n = run(
        &mut g,
        &mut host,
        &clock,
        10_000,
        |g, now| req.poll(g, now, &request, &mut resp),
        |h| h.udp_echo(hs),
    )
    .unwrap();
    assert_eq!(&resp[..n], b"?tcennoc");
    assert_eq!(req.sends(), 3, "two losses, three sends");
    assert_eq!(wire.borrow().dropped, 2);
    // Sends at 0, 200 and 600 ms (doubling): the answer follows the third.
    assert!((600..620).contains(&clock.now_ms()), "{}", clock.now_ms());
}

#[test]
fn udp_request_times_out_on_schedule() {
    let (a, b, _) = link(vec![]);
    let clock = VClock::default();
    let mut g = guest(a, &clock, 2);
    let mut host = Host::new(b, GATEWAY); // nobody on the port

    let socket = UdpSocket::bind(&mut g, udp_bufs(), 40001, Remote::gateway(9).unwrap()).unwrap();
    let mut req = UdpRequest::new(
        socket,
        Retry {
            first_ms: 100,
            doubling: true,
            tries: 4,
        },
    );
    let mut resp = [0u8; 64];
    let err = run(
        &mut g,
        &mut host,
        &clock,
        10_000,
        |g, now| req.poll(g, now, b"hello", &mut resp),
        |_| {},
    )
    .unwrap_err();
    assert_eq!(err, Error::Timeout);
    assert_eq!(req.sends(), 4);
    // Waits of 100, 200, 400 and 800 ms after the four sends.
    assert_eq!(clock.now_ms(), 1500);
}

#[test]
fn udp_drops_datagrams_from_other_ports_and_reports_truncation() {
    let (a, b, _) = link(vec![]);
    let clock = VClock::default();
    let mut g = guest(a, &clock, 2);
    let mut host = Host::new(b, GATEWAY);
    let stranger = host.udp(7000);
    let friend = host.udp(7001);

    let mut socket =
        UdpSocket::bind(&mut g, udp_bufs(), 40002, Remote::gateway(7001).unwrap()).unwrap();
    // Resolve ARP by sending first.
    run(
        &mut g,
        &mut host,
        &clock,
        5_000,
        |g, now| socket.poll_send(g, now, b"hi"),
        |_| {},
    )
    .unwrap();
    let guest_ep = (IpAddress::Ipv4(GUEST_ADDR), 40002);
    let mut buf = [0u8; 8];
    let mut step = 0;
    let n = run(
        &mut g,
        &mut host,
        &clock,
        5_000,
        |g, now| socket.poll_recv(g, now, &mut buf),
        |h| {
            if step == 0 {
                h.sockets
                    .get_mut::<udp::Socket>(stranger)
                    .send_slice(b"from a stranger", guest_ep)
                    .unwrap();
                h.sockets
                    .get_mut::<udp::Socket>(friend)
                    .send_slice(b"friend", guest_ep)
                    .unwrap();
            }
            step += 1;
        },
    )
    .unwrap();
    assert_eq!(&buf[..n], b"friend");

    let mut sent = false;
    let err = run(
        &mut g,
        &mut host,
        &clock,
        5_000,
        |g, now| socket.poll_recv(g, now, &mut buf),
        |h| {
            if !sent {
                h.sockets
                    .get_mut::<udp::Socket>(friend)
                    .send_slice(b"longer than eight", guest_ep)
                    .unwrap();
                sent = true;
            }
        },
    )
    .unwrap_err();
    assert_eq!(err, Error::Truncated);

    let huge = [0u8; 4096];
    assert_eq!(
        socket.poll_send(&mut g, clock.now_ms(), &huge),
        Err(nb::Error::Other(Error::SendBuffer))
    );
}

#[test]
fn socket_slots_are_bounded_and_released() {
    let (a, _b, _) = link(vec![]);
    let clock = VClock::default();
    let mut g = guest(a, &clock, 1);
    let r = Remote::gateway(1).unwrap();
    let s = UdpSocket::bind(&mut g, udp_bufs(), 1, r).unwrap();
    assert_eq!(g.free_slots(), 0);
    assert_eq!(
        UdpSocket::bind(&mut g, udp_bufs(), 2, r).unwrap_err(),
        Error::NoSocketSlot
    );
    assert_eq!(
        TcpStream::connect(&mut g, tcp_bufs(), r).unwrap_err(),
        Error::NoSocketSlot
    );
    s.release(&mut g);
    assert_eq!(g.free_slots(), 1);
    assert_eq!(
        UdpSocket::bind(&mut g, udp_bufs(), 0, r).unwrap_err(),
        Error::Bind
    );
    assert_eq!(g.free_slots(), 1);
}

/// Sends `data` on `stream` while reading the echo back; returns the echo.
fn echo_through(
    g: &mut Guest,
    host: &mut Host,
    clock: &VClock,
    stream: &mut TcpStream,
    data: &[u8],
    mut on_host: impl FnMut(&mut Host),
) -> Vec<u8> {
    let mut sent = 0;
    let mut back = Vec::new();
    let mut buf = [0u8; 2048];
    run(
        g,
        host,
        clock,
        60_000,
        |g, now| {
            if sent < data.len() {
                match stream.poll_send(g, now, &data[sent..]) {
                    Ok(n) => sent += n,
                    Err(nb::Error::WouldBlock) => {}
                    Err(e) => return Err(e),
                }
            }
            match stream.poll_recv(g, now, &mut buf) {
                Ok(0) => return Err(nb::Error::Other(Error::ConnectionReset)),
                Ok(n) => back.extend_from_slice(&buf[..n]),
                Err(nb::Error::WouldBlock) => {}
                Err(e) => return Err(e),
            }
            if back.len() >= data.len() {
                Ok(())
            } else {
                Err(nb::Error::WouldBlock)
            }
        },
        &mut on_host,
    )
    .unwrap();
    back
}

#[test]
fn tcp_connect_echo_and_close() {
    let (a, b, _) = link(vec![]);
    let clock = VClock::default();
    let mut g = guest(a, &clock, 2);
    let mut host = Host::new(b, GATEWAY);
    let hs = host.tcp();
    host.sockets
        .get_mut::<tcp::Socket>(hs)
        .listen(6882)
        .unwrap();

    let mut stream =
        TcpStream::connect(&mut g, tcp_bufs(), Remote::gateway(6882).unwrap()).unwrap();
    run(
        &mut g,
        &mut host,
        &clock,
        5_000,
        |g, now| stream.poll_established(g, now),
        |_| {},
    )
    .unwrap();
    let data = pattern(100_000);
    let back = echo_through(&mut g, &mut host, &clock, &mut stream, &data, |h| {
        h.tcp_echo(hs)
    });
    assert!(back == data, "echo differs");
    run(
        &mut g,
        &mut host,
        &clock,
        5_000,
        |g, now| stream.poll_flush(g, now),
        |_| {},
    )
    .unwrap();

    stream.close(&mut g, clock.now_ms());
    let mut buf = [0u8; 16];
    // The host closes after our FIN: we read end-of-stream, then closed.
    let n = run(
        &mut g,
        &mut host,
        &clock,
        5_000,
        |g, now| stream.poll_recv(g, now, &mut buf),
        |h| h.tcp_echo(hs),
    )
    .unwrap();
    assert_eq!(n, 0);
    run(
        &mut g,
        &mut host,
        &clock,
        5_000,
        |g, now| stream.poll_closed(g, now),
        |h| h.tcp_echo(hs),
    )
    .unwrap();
    assert_eq!(
        stream.poll_send(&mut g, clock.now_ms(), b"late"),
        Err(nb::Error::Other(Error::InvalidState))
    );
    stream.release(&mut g);
    assert_eq!(g.free_slots(), 2);
}

#[test]
fn tcp_connect_refused_is_an_error_not_a_hang() {
    let (a, b, _) = link(vec![]);
    let clock = VClock::default();
    let mut g = guest(a, &clock, 2);
    let mut host = Host::new(b, GATEWAY); // no listener: the host answers RST
    let mut stream =
        TcpStream::connect(&mut g, tcp_bufs(), Remote::gateway(1234).unwrap()).unwrap();
    let err = run(
        &mut g,
        &mut host,
        &clock,
        5_000,
        |g, now| stream.poll_established(g, now),
        |_| {},
    )
    .unwrap_err();
    assert_eq!(err, Error::ConnectionReset);
}

#[test]
fn tcp_listener_serves_the_gateway() {
    let (a, b, _) = link(vec![5, 9, 40, 41]);
    let clock = VClock::default();
    let mut g = guest(a, &clock, 2);
    let mut host = Host::new(b, GATEWAY);
    let hs = host.tcp();
    {
        let cx = host.iface.context();
        host.sockets
            .get_mut::<tcp::Socket>(hs)
            .connect(cx, (IpAddress::Ipv4(GUEST_ADDR), PEER_PORT), 50000)
            .unwrap();
    }
    let mut stream = TcpStream::listen(&mut g, tcp_bufs(), PEER_PORT).unwrap();
    run(
        &mut g,
        &mut host,
        &clock,
        10_000,
        |g, now| stream.poll_established(g, now),
        |_| {},
    )
    .unwrap();

    // The host sends a request; the guest answers it with 32 KiB (a piece,
    // later), through lost frames.
    let piece = pattern(32 * 1024);
    let mut got = Vec::new();
    let mut req = [0u8; 16];
    let mut asked = false;
    let n = run(
        &mut g,
        &mut host,
        &clock,
        10_000,
        |g, now| stream.poll_recv(g, now, &mut req),
        |h| {
            if !asked {
                asked = h
                    .sockets
                    .get_mut::<tcp::Socket>(hs)
                    .send_slice(b"GET")
                    .unwrap()
                    == 3;
            }
        },
    )
    .unwrap();
    assert_eq!(&req[..n], b"GET");
    let mut sent = 0;
    run(
        &mut g,
        &mut host,
        &clock,
        30_000,
        |g, now| {
            if sent < piece.len() {
                if let Ok(n) = stream.poll_send(g, now, &piece[sent..]) {
                    sent += n;
                }
                return Err(nb::Error::WouldBlock);
            }
            stream.poll_flush(g, now)
        },
        |h| {
            let s = h.sockets.get_mut::<tcp::Socket>(hs);
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = s.recv_slice(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        },
    )
    .unwrap();
    let s = host.sockets.get_mut::<tcp::Socket>(hs);
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = s.recv_slice(&mut buf) {
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got == piece,
        "received {} of {} bytes",
        got.len(),
        piece.len()
    );
}

#[test]
fn tcp_listener_aborts_a_foreign_peer() {
    let (a, b, _) = link(vec![]);
    let clock = VClock::default();
    let mut g = guest(a, &clock, 2);
    let stranger_addr = Ipv4Address::new(10, 0, 2, 3);
    let mut host = Host::new(b, stranger_addr);
    let hs = host.tcp();
    {
        let cx = host.iface.context();
        host.sockets
            .get_mut::<tcp::Socket>(hs)
            .connect(cx, (IpAddress::Ipv4(GUEST_ADDR), PEER_PORT), 50001)
            .unwrap();
    }
    let mut stream = TcpStream::listen(&mut g, tcp_bufs(), PEER_PORT).unwrap();
    let err = run(
        &mut g,
        &mut host,
        &clock,
        10_000,
        |g, now| stream.poll_established(g, now),
        |_| {},
    )
    .unwrap_err();
    assert_eq!(err, Error::ForeignPeer);
}

#[test]
fn block_until_honours_its_deadline() {
    let clock = VClock::default();
    // A clock that moves on every idle: block_until must stop at the deadline.
    struct Ticking(VClock);
    impl Clock for Ticking {
        fn now_ms(&self) -> u64 {
            self.0.now_ms()
        }
        fn idle(&self) {
            self.0.advance(1);
        }
    }
    let (a2, _b2, _) = link(vec![]);
    let slots = Vec::leak((0..1).map(|_| SocketStorage::EMPTY).collect());
    let cfg = NetConfig {
        mac: [2, 0, 0, 0, 0, 1],
        random_seed: 1,
    };
    let mut s = Stack::new(a2, Ticking(clock.clone()), &cfg, slots);
    let err = s
        .block_until(250, |_, _| -> nb::Result<(), Error> {
            Err(nb::Error::WouldBlock)
        })
        .unwrap_err();
    assert_eq!(err, Error::Timeout);
    assert_eq!(clock.now_ms(), 250);
    assert_eq!(s.block_until(1000, |_, now| Ok(now)).unwrap(), 250);
}
