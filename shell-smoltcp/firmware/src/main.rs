//! OurTorrent's firmware for QEMU's mps2-an385 board (Cortex-M3, LAN9118
//! Ethernet): the `shell-smoltcp` driver over the [`lan9118`] driver, timed
//! by SysTick, reporting over semihosting.
//!
//! With `tracker=PORT` it runs the BitTorrent job (`shell_smoltcp::job`):
//! announce to the BEP 15 tracker at `10.0.2.2:PORT`, download the torrent
//! given by `info_hash=`, `length=`, `piece_len=` and `pieces=` into the
//! NOR flash model over the board's PSRAM (pieces verified there before a
//! restart are kept) from the peers the tracker returns while serving the
//! pieces it has on
//! port 6881 (forwarded from the host), verify every piece, announce
//! `completed`, seed, and announce `stopped`. Without
//! it, a network check against the host: a UDP request/response (with
//! retransmission), a TCP echo of `kib` KiB verified byte by byte, and
//! optionally serving one inbound TCP echo connection on port 6881. Only
//! `10.0.2.2` is ever addressed.
//!
//! It prints one `key: value` line per figure and exits through
//! semihosting with 0 on success, 1 on any failure, panic or fault, and 2
//! when the command line is refused (a bad value or a torrent beyond the
//! limits). It never hangs: every step shares one deadline (`deadline_ms`),
//! and the test harness keeps its own timeout too.
//!
//! Command line (QEMU `-append`): see `shell_smoltcp::args::Args`.
#![no_std]
#![no_main]

mod cmdline;
mod lan9118;

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception, ExceptionFrame};
use cortex_m_semihosting::{debug, hprintln};
use panic_semihosting as _;
use shell_smoltcp::args::Crash;
use shell_smoltcp::flash::{Fault, RamNor};
use shell_smoltcp::job::{self, JobBuffers, TorrentConfig, FRAME_BUF_LEN, MAX_PEERS};
use shell_smoltcp::smoltcp::iface::SocketStorage;
use shell_smoltcp::{
    nb, Clock, ConfigError, Error, NetConfig, Remote, Retry, Stack, TcpBuffers, TcpStream,
    UdpBuffers, UdpRequest, UdpSocket, PEER_PORT,
};

use crate::lan9118::{Lan9118, MPS2_LAN9118_BASE};

/// The core clock of the AN385 FPGA image (and of QEMU's model): 25 MHz.
const CORE_HZ: u32 = 25_000_000;
/// SysTick reload for a 1 ms tick (ARMv7-M ARM B3.3: the counter wraps
/// after RELOAD + 1 cycles).
const SYSTICK_RELOAD: u32 = CORE_HZ / 1000 - 1;

/// Socket slots: UDP and one TCP socket per peer connection.
const SOCKETS: usize = 1 + MAX_PEERS;
/// TCP windows. Static RAM is the budget (96 KiB): the torrent's data is
/// in flash, so the RAM goes to the windows: MAX_PEERS × (RX + TX) and the
/// 16 KiB frame buffer. An 8 KiB receive window stays under what QEMU's
/// LAN9118 RX FIFO holds (~10.5 KB), so a window's worth of frames never
/// overflows it between two polls. The network check uses the first two
/// sockets.
const TCP_RX: usize = 8 * 1024;
const TCP_TX: usize = 4 * 1024;
/// UDP: 1 datagram of up to 512 bytes each way (a BEP 15 announce is 98
/// bytes, its reply 20 + 6 per peer: `NUM_WANT` = 16 peers fit).
const UDP_PACKETS: usize = 1;
const UDP_BYTES: usize = 512;
/// The board's PSRAM (AN385: 16 MiB at 0x2100_0000, QEMU's machine RAM
/// "mps.ram"), used as the NOR flash the image is written to. The
/// firmware's own RAM is the SSRAM at 0x2000_0000, so a memory backend
/// file behind the PSRAM holds exactly the flash contents.
const PSRAM_BASE: usize = 0x2100_0000;
const PSRAM_LEN: usize = 16 * 1024 * 1024;
/// Exit code for a refused command line.
const EXIT_CONFIG: u32 = 2;
/// The UDP check's retransmission schedule: 250 ms doubling, 6 sends
/// (about 16 s in all); the deadline cuts it shorter if it is shorter.
const UDP_RETRY: Retry = Retry {
    first_ms: 250,
    doubling: true,
    tries: 6,
};
/// The UDP check's local port.
const UDP_LOCAL_PORT: u16 = 6881;

/// Milliseconds since boot, counted by the SysTick handler.
static TICKS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

/// The SysTick clock; idles with `wfi` until the next tick (or frame).
struct SysTickClock;

impl Clock for SysTickClock {
    fn now_ms(&self) -> u64 {
        u64::from(TICKS.load(Ordering::Relaxed))
    }
    fn idle(&self) {
        cortex_m::asm::wfi();
    }
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    hprintln!("result: FAILED: hard fault at pc={:#010x}", frame.pc());
    exit(1)
}

#[exception]
unsafe fn DefaultHandler(irq: i16) {
    hprintln!("result: FAILED: unexpected exception {}", irq);
    exit(1)
}

/// Ends the run with `code` as QEMU's exit status.
fn exit(code: u32) -> ! {
    if code == 0 {
        debug::exit(debug::EXIT_SUCCESS);
    } else {
        // SYS_EXIT_EXTENDED (0x20) takes {reason, subcode}; for
        // ADP_Stopped_ApplicationExit QEMU exits with the subcode (ARM
        // semihosting spec §6.7; QEMU semihosting/arm-compat-semi.c).
        let block = [0x20026usize, code as usize];
        // SAFETY: the block is live and two words long for the call.
        unsafe {
            cortex_m_semihosting::syscall1(0x20, block.as_ptr() as usize);
        }
        // A debugger without the extended call: a plain failure.
        debug::exit(debug::EXIT_FAILURE);
    }
    // Not reached under QEMU; a debugger without semihosting exit lands here.
    loop {
        cortex_m::asm::wfi();
    }
}

type Net = Stack<'static, Lan9118, SysTickClock>;

/// Why the run failed.
enum Failure {
    Args,
    Limits(job::LimitError),
    Job(job::JobError),
    Remote(ConfigError),
    Nic(lan9118::InitError),
    Net(&'static str, Error),
    Mismatch(&'static str, usize),
    Eof(&'static str, usize),
    NoMemory,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Args => f.write_str("bad command line"),
            Failure::Limits(e) => write!(f, "config: {e}"),
            Failure::Job(e) => write!(f, "{e}"),
            Failure::Remote(e) => write!(f, "config: {e}"),
            Failure::Nic(e) => write!(f, "lan9118: {e:?}"),
            Failure::Net(step, e) => write!(f, "{step}: {e}"),
            Failure::Mismatch(step, at) => write!(f, "{step}: data differs at byte {at}"),
            Failure::Eof(step, at) => write!(f, "{step}: stream ended at byte {at}"),
            Failure::NoMemory => f.write_str("static buffers taken twice"),
        }
    }
}

/// Bytes of stack painted at boot to measure the run's high-water mark.
const STACK_PAINT: usize = 128 * 1024;
const PAINT: u32 = 0xA5A5_A5A5;

/// Paints the `STACK_PAINT` bytes below the current stack pointer (less a
/// margin for this frame); returns the top the mark is measured from.
fn paint_stack() -> usize {
    let sp = cortex_m::register::msp::read() as usize;
    let bottom = sp - STACK_PAINT;
    let mut at = bottom;
    while at < sp - 256 {
        // SAFETY: RAM below the stack pointer is unused (4 MiB of RAM,
        // statics at its start, the stack at its end growing down).
        unsafe { core::ptr::write_volatile(at as *mut u32, PAINT) };
        at += 4;
    }
    sp
}

/// Bytes of stack used below `top` since [`paint_stack`].
fn stack_used(top: usize) -> usize {
    let mut at = top - STACK_PAINT;
    // SAFETY: the same painted region, read back.
    while at < top && unsafe { core::ptr::read_volatile(at as *const u32) } == PAINT {
        at += 4;
    }
    top - at
}

#[entry]
fn main() -> ! {
    let top = paint_stack();
    let result = run();
    hprintln!("stack_used: {}", stack_used(top));
    let code = match result {
        Ok(()) => {
            hprintln!("result: ok");
            0
        }
        Err(e) => {
            hprintln!("result: FAILED: {}", e);
            match e {
                Failure::Args | Failure::Limits(_) | Failure::Remote(_) => EXIT_CONFIG,
                _ => 1,
            }
        }
    };
    exit(code)
}

/// What the command line asks for, checked, with nothing borrowed from
/// the command line itself.
struct Plan {
    torrent: Option<TorrentConfig>,
    udp_remote: Option<Remote>,
    tcp_remote: Option<Remote>,
    kib: u32,
    serve: bool,
    deadline: u64,
    flash_fault: Option<Fault>,
}

/// Reads and checks the command line. Out of line, so that its 4 KiB
/// buffer is off the stack before the network work starts.
#[inline(never)]
fn read_plan() -> Result<Plan, Failure> {
    let mut line = [0u8; shell_smoltcp::args::CMDLINE_MAX];
    let line = cmdline::read(&mut line);
    let args = match shell_smoltcp::args::parse(line) {
        Ok(a) => a,
        Err(e) => {
            hprintln!("args: {}", e);
            return Err(Failure::Args);
        }
    };
    match args.crash {
        Some(Crash::Panic) => panic!("crash=panic asked for"),
        // A permanently undefined instruction: UsageFault, escalated to
        // HardFault (ARMv7-M ARM B1.5.8), whose handler exits with failure.
        Some(Crash::Fault) => cortex_m::asm::udf(),
        None => {}
    }
    if let Some(ih) = args.info_hash {
        let hex = ih.to_hex();
        hprintln!("info_hash: {}", core::str::from_utf8(&hex).unwrap_or("?"));
    }
    // The BitTorrent job's torrent, checked against its limits before any
    // packet exists.
    let torrent = match args.tracker_port {
        Some(_) => Some(TorrentConfig::from_args(&args).map_err(Failure::Limits)?),
        None => None,
    };
    if let Some(t) = &torrent {
        hprintln!(
            "torrent: length={} piece_len={} pieces={} tracker_port={}",
            t.geometry.total_len(),
            t.geometry.piece_len(),
            t.geometry.piece_count(),
            t.tracker.port()
        );
    }
    // Every remote is checked here, before any packet exists.
    let udp_remote = args
        .udp_port
        .map(|p| Remote::new(args.host, p))
        .transpose()
        .map_err(Failure::Remote)?;
    let tcp_remote = args
        .tcp_port
        .map(|p| Remote::new(args.host, p))
        .transpose()
        .map_err(Failure::Remote)?;
    Ok(Plan {
        torrent,
        udp_remote,
        tcp_remote,
        kib: args.kib,
        serve: args.serve,
        deadline: u64::from(args.deadline_ms),
        flash_fault: args.flash_fault,
    })
}

fn run() -> Result<(), Failure> {
    let mut core = cortex_m::Peripherals::take().ok_or(Failure::NoMemory)?;
    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(SYSTICK_RELOAD);
    core.SYST.clear_current();
    core.SYST.enable_interrupt();
    core.SYST.enable_counter();

    let Plan {
        torrent,
        udp_remote,
        tcp_remote,
        kib,
        serve: inbound,
        deadline,
        flash_fault,
    } = read_plan()?;

    // SAFETY: MPS2_LAN9118_BASE is the board's LAN9118 (AN385 memory map)
    // and this is the only driver instance.
    let nic = unsafe { Lan9118::new(MPS2_LAN9118_BASE) }.map_err(Failure::Nic)?;
    let mac = nic.mac();
    hprintln!(
        "mac: {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0],
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5]
    );
    let slots =
        cortex_m::singleton!(: [SocketStorage<'static>; SOCKETS] = [SocketStorage::EMPTY; SOCKETS])
            .ok_or(Failure::NoMemory)?;
    let config = NetConfig {
        mac,
        // The SysTick count at boot varies little between boards started
        // alike; the announced port (unique per board of a fleet) keeps
        // their peer ids and piece choices apart.
        random_seed: 0x6f75_7274
            ^ u64::from(cortex_m::peripheral::SYST::get_current())
            ^ torrent
                .as_ref()
                .map_or(0, |t| u64::from(t.announce_port).wrapping_mul(0x9E37_79B9)),
    };
    // In a static, like every other buffer, so that the ELF's static RAM
    // is the firmware's whole memory budget but for the call stack.
    let net: &'static mut Net =
        cortex_m::singleton!(: Net = Stack::new(nic, SysTickClock, &config, slots))
            .ok_or(Failure::NoMemory)?;

    // Every buffer is static: these are the whole memory of the run.
    let udp_bufs = cortex_m::singleton!(: UdpBuffers<UDP_PACKETS, UDP_BYTES> = UdpBuffers::new())
        .ok_or(Failure::NoMemory)?;
    let tcp = cortex_m::singleton!(: [TcpBuffers<TCP_RX, TCP_TX>; MAX_PEERS] =
        [const { TcpBuffers::new() }; MAX_PEERS])
    .ok_or(Failure::NoMemory)?;

    if let Some(torrent) = &torrent {
        // SAFETY: the PSRAM region is RAM of the board's memory map that
        // nothing else uses (not in memory.x: no static or stack is there);
        // this is its only reference.
        let psram: &'static mut [u8] =
            unsafe { core::slice::from_raw_parts_mut(PSRAM_BASE as *mut u8, PSRAM_LEN) };
        let flash = cortex_m::singleton!(: RamNor<'static> = RamNor::new(psram, flash_fault))
            .ok_or(Failure::NoMemory)?;
        let frame = cortex_m::singleton!(: [u8; FRAME_BUF_LEN] = [0; FRAME_BUF_LEN])
            .ok_or(Failure::NoMemory)?;
        let bufs = JobBuffers {
            udp: udp_bufs,
            tcp: tcp.each_mut(),
            flash,
            frame,
        };
        let seed = config.random_seed as u32;
        let report =
            job::run(net, bufs, torrent, deadline, seed, &mut Log).map_err(Failure::Job)?;
        hprintln!(
            "report: bytes={} verified={} rejected={} peers={} download_ms={} uploaded={} leecher_complete={} resumed={} flash_errors={} ready_to_boot={}",
            report.bytes,
            report.verified,
            report.rejected,
            report.peers_used,
            report.download_ms,
            report.uploaded,
            u8::from(report.leecher_complete),
            report.resumed,
            report.flash_errors,
            u8::from(report.ready_to_boot)
        );
    } else {
        if let Some(remote) = udp_remote {
            udp_check(net, udp_bufs, remote, deadline)?;
        }
        let [tcp0, tcp1, ..] = tcp;
        if let Some(remote) = tcp_remote {
            tcp_check(net, tcp0, remote, kib, deadline)?;
        }
        if inbound {
            serve(net, tcp1, deadline)?;
        }
    }
    let c = net.device_mut().counters();
    hprintln!(
        "frames: rx={} tx={} rx_dropped={}",
        c.rx,
        c.tx,
        c.rx_dropped
    );
    hprintln!("uptime_ms: {}", net.now_ms());
    Ok(())
}

/// A request/response with retransmission: the answer must be the request
/// (a UDP echo on the host).
fn udp_check(
    net: &mut Net,
    bufs: &'static mut UdpBuffers<UDP_PACKETS, UDP_BYTES>,
    remote: Remote,
    deadline: u64,
) -> Result<(), Failure> {
    const STEP: &str = "udp";
    let socket =
        UdpSocket::bind(net, bufs, UDP_LOCAL_PORT, remote).map_err(|e| Failure::Net(STEP, e))?;
    let mut exchange = UdpRequest::new(socket, UDP_RETRY);
    let request = *b"ourtorrent udp check 1";
    let mut answer = [0u8; 64];
    let start = net.now_ms();
    let n = net
        .block_until(deadline, |net, now| {
            exchange.poll(net, now, &request, &mut answer)
        })
        .map_err(|e| Failure::Net(STEP, e))?;
    if answer[..n] != request[..] {
        return Err(Failure::Mismatch(
            STEP,
            first_difference(&answer[..n], &request),
        ));
    }
    hprintln!(
        "udp: ok bytes={} sends={} ms={}",
        n,
        exchange.sends(),
        net.now_ms() - start
    );
    exchange.into_socket().release(net);
    Ok(())
}

/// Sends `kib` KiB of a known pattern to a TCP echo and checks every byte
/// that comes back.
fn tcp_check(
    net: &mut Net,
    bufs: &'static mut TcpBuffers<TCP_RX, TCP_TX>,
    remote: Remote,
    kib: u32,
    deadline: u64,
) -> Result<(), Failure> {
    const STEP: &str = "tcp";
    let start = net.now_ms();
    let mut stream = TcpStream::connect(net, bufs, remote).map_err(|e| Failure::Net(STEP, e))?;
    net.block_until(deadline, |net, now| stream.poll_established(net, now))
        .map_err(|e| Failure::Net(STEP, e))?;
    let connected = net.now_ms();
    let total = kib as usize * 1024;
    let mut sent = 0usize;
    let mut received = 0usize;
    let mut chunk = [0u8; 1024];
    // The stream offset `chunk` was filled for (refilled only after a send).
    let mut chunk_at = usize::MAX;
    let mut buf = [0u8; 2048];
    let mut failure = None;
    net.block_until(deadline, |net, now| {
        if sent < total {
            let n = (total - sent).min(chunk.len());
            if chunk_at != sent {
                fill(&mut chunk[..n], sent);
                chunk_at = sent;
            }
            match stream.poll_send(net, now, &chunk[..n]) {
                Ok(k) => sent += k,
                Err(nb::Error::WouldBlock) => {}
                Err(e) => return Err(e),
            }
        }
        match stream.poll_recv(net, now, &mut buf) {
            Ok(0) => {
                failure = Some(Failure::Eof(STEP, received));
                return Ok(());
            }
            Ok(n) => {
                if let Some(at) = check(&buf[..n], received) {
                    failure = Some(Failure::Mismatch(STEP, received + at));
                    return Ok(());
                }
                received += n;
            }
            Err(nb::Error::WouldBlock) => {}
            Err(e) => return Err(e),
        }
        if received >= total {
            Ok(())
        } else {
            Err(nb::Error::WouldBlock)
        }
    })
    .map_err(|e| Failure::Net(STEP, e))?;
    if let Some(f) = failure {
        return Err(f);
    }
    let done = net.now_ms();
    stream.close(net, done);
    net.block_until(deadline, |net, now| stream.poll_closed(net, now))
        .map_err(|e| Failure::Net(STEP, e))?;
    let ms = (done - connected).max(1);
    hprintln!(
        "tcp: ok bytes={} connect_ms={} echo_ms={} kib_per_s={}",
        received,
        connected - start,
        done - connected,
        received as u64 * 1000 / 1024 / ms
    );
    stream.release(net);
    Ok(())
}

/// Accepts one connection on port 6881 and echoes it until the remote
/// closes (the shape of seeding to a host peer, later).
fn serve(
    net: &mut Net,
    bufs: &'static mut TcpBuffers<TCP_RX, TCP_TX>,
    deadline: u64,
) -> Result<(), Failure> {
    const STEP: &str = "serve";
    let mut stream = TcpStream::listen(net, bufs, PEER_PORT).map_err(|e| Failure::Net(STEP, e))?;
    hprintln!("serve: listening port={}", PEER_PORT);
    net.block_until(deadline, |net, now| stream.poll_established(net, now))
        .map_err(|e| Failure::Net(STEP, e))?;
    let mut buf = [0u8; 1024];
    let (mut have, mut echoed) = (0usize, 0usize);
    let mut total = 0usize;
    net.block_until(deadline, |net, now| {
        if echoed < have {
            match stream.poll_send(net, now, &buf[echoed..have]) {
                Ok(k) => echoed += k,
                Err(nb::Error::WouldBlock) => {}
                Err(e) => return Err(e),
            }
            return Err(nb::Error::WouldBlock);
        }
        match stream.poll_recv(net, now, &mut buf)? {
            0 => Ok(()),
            n => {
                (have, echoed) = (n, 0);
                total += n;
                Err(nb::Error::WouldBlock)
            }
        }
    })
    .map_err(|e| Failure::Net(STEP, e))?;
    net.block_until(deadline, |net, now| stream.poll_flush(net, now))
        .map_err(|e| Failure::Net(STEP, e))?;
    let now = net.now_ms();
    stream.close(net, now);
    net.block_until(deadline, |net, now| stream.poll_closed(net, now))
        .map_err(|e| Failure::Net(STEP, e))?;
    hprintln!("serve: ok bytes={}", total);
    stream.release(net);
    Ok(())
}

/// The job's progress lines, to the semihosting console.
struct Log;

impl fmt::Write for Log {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        cortex_m_semihosting::hprint!("{}", s);
        Ok(())
    }
}

/// The test pattern's byte at stream offset `at`.
fn pattern_byte(at: usize) -> u8 {
    (at as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3]
}

fn fill(out: &mut [u8], offset: usize) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = pattern_byte(offset + i);
    }
}

/// Index of the first byte of `got` that is not the pattern at `offset`.
fn check(got: &[u8], offset: usize) -> Option<usize> {
    got.iter()
        .enumerate()
        .position(|(i, b)| *b != pattern_byte(offset + i))
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}
