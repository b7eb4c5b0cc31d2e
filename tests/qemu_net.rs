//! End-to-end network check of the QEMU firmware (`shell-smoltcp/firmware`)
//! and its image: run on an emulated mps2-an385 with a LAN9118 on QEMU's
//! user-mode network, against UDP and TCP echo servers on 127.0.0.1 (the
//! firmware reaches them as 10.0.2.2), and a host client that connects to
//! the firmware's port 6881 through `hostfwd`. Every frame the NIC saw is
//! dumped to a pcap file, and the test asserts that the guest addressed
//! nothing but 10.0.2.2. Also: the image fits its flash and RAM budget, and
//! bad set-ups (no server, a panic, a fault, bad arguments) fail fast.
//!
//! Needs `qemu-system-arm` and the `thumbv7m-none-eabi` target
//! (`scripts/test.sh` installs both); without QEMU the tests skip, except
//! under `CI=true` where they fail. The BitTorrent job: `qemu_job.rs`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ourtorrent_tests::qemu::{assert_only_gateway, firmware, guest_destinations, run_firmware};
use ourtorrent_tests::{free_tcp_port, free_udp_port, require_tool};

/// Flash and static RAM of a 32-bit little-endian ELF, from its section
/// headers (ELF spec, "Sections"): flash is every allocated section with
/// contents (`.vector_table`, `.text`, `.rodata`, and `.data`'s load image);
/// static RAM is every allocated section placed in RAM (`.data`, `.bss`,
/// `.uninit`). What `size` would call text + data and data + bss.
fn elf_sizes(elf: &[u8]) -> (u64, u64) {
    const SHT_PROGBITS: u32 = 1;
    const SHF_ALLOC: u32 = 2;
    const RAM_START: u32 = 0x2000_0000;
    assert_eq!(&elf[..6], b"\x7fELF\x01\x01", "not a 32-bit LE ELF");
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    let (shoff, shentsize, shnum) = (u32_at(0x20) as usize, u16_at(0x2e), u16_at(0x30));
    let (mut flash, mut ram) = (0, 0);
    for i in 0..shnum {
        let h = shoff + i * shentsize;
        let (kind, flags, addr, size) =
            (u32_at(h + 4), u32_at(h + 8), u32_at(h + 12), u32_at(h + 20));
        if flags & SHF_ALLOC == 0 {
            continue;
        }
        if kind == SHT_PROGBITS {
            flash += u64::from(size);
        }
        if addr >= RAM_START {
            ram += u64::from(size);
        }
    }
    (flash, ram)
}

/// A UDP echo on 127.0.0.1; counts the datagrams it echoed.
fn udp_echo() -> (u16, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let port = socket.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            c.fetch_add(1, Ordering::SeqCst);
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    (port, count)
}

/// A TCP echo on 127.0.0.1 (one connection at a time); counts the bytes.
fn tcp_echo() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 16384];
            while let Ok(n @ 1..) = conn.read(&mut buf) {
                if conn.write_all(&buf[..n]).is_err() {
                    break;
                }
                c.fetch_add(n, Ordering::SeqCst);
            }
        }
    });
    (port, count)
}

/// Connects to the firmware through `hostfwd` and checks it echoes `data`.
/// QEMU accepts before the guest listens and then drops the connection, so
/// it retries until an echo starts or `stop` is set.
fn echo_client(port: u16, data: Vec<u8>, stop: Arc<AtomicBool>) -> thread::JoinHandle<bool> {
    thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
                thread::sleep(Duration::from_millis(20));
                continue;
            };
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut first = [0u8; 1];
            if c.write_all(&data[..1]).is_err() || c.read(&mut first).unwrap_or(0) == 0 {
                thread::sleep(Duration::from_millis(20));
                continue;
            }
            let writer = {
                let mut w = c.try_clone().unwrap();
                let rest = data[1..].to_vec();
                thread::spawn(move || {
                    w.write_all(&rest).unwrap();
                    w.shutdown(Shutdown::Write).unwrap();
                })
            };
            let mut back = first.to_vec();
            c.read_to_end(&mut back).unwrap();
            writer.join().unwrap();
            return back == data;
        }
        false
    })
}

#[test]
fn qemu_firmware_udp_tcp_and_inbound_echo() {
    if require_tool("qemu-system-arm").is_none() {
        return;
    }
    let (udp_port, datagrams) = udp_echo();
    let (tcp_port, echoed) = tcp_echo();
    let fwd = free_tcp_port();
    let stop = Arc::new(AtomicBool::new(false));
    let inbound: Vec<u8> = (0..65_536u32).map(|i| (i * 13 + i / 256) as u8).collect();
    let client = echo_client(fwd, inbound.clone(), stop.clone());
    let kib = 1024;
    let run = run_firmware(
        &format!(
            "udp={udp_port} tcp={tcp_port} kib={kib} serve=1 deadline_ms=20000 \
             info_hash=0123456789abcdef0123456789abcdef01234567"
        ),
        Some(fwd),
    );
    stop.store(true, Ordering::SeqCst);
    assert_eq!(run.code, Some(0), "firmware failed");
    assert!(run.stdout.contains("result: ok"));
    assert!(run
        .stdout
        .contains("info_hash: 0123456789abcdef0123456789abcdef01234567"));
    assert!(run.stdout.contains("mac: 52:54:00:12:34:56"));
    // UDP: the echo answered; the firmware's answer is the request.
    assert_eq!(run.figure("udp: ok", "bytes"), Some(22));
    assert!(datagrams.load(Ordering::SeqCst) >= 1);
    // TCP out: every byte went to the host and back, verified in the guest.
    assert_eq!(run.figure("tcp: ok", "bytes"), Some(kib * 1024));
    assert_eq!(echoed.load(Ordering::SeqCst), kib as usize * 1024);
    assert!(run.figure("tcp: ok", "kib_per_s").unwrap() > 0);
    // TCP in: the host's 64 KiB came back through hostfwd.
    assert!(client.join().unwrap(), "inbound echo differs");
    assert_eq!(run.figure("serve: ok", "bytes"), Some(inbound.len() as u64));
    // The guest addressed nothing but the gateway.
    assert_only_gateway(&run, 100);
    assert!(run.elapsed < Duration::from_secs(20), "{:?}", run.elapsed);
}

#[test]
fn qemu_firmware_fits_its_flash_and_ram_budget() {
    if require_tool("qemu-system-arm").is_none() {
        return;
    }
    let (flash, ram) = elf_sizes(&std::fs::read(firmware()).expect("read ELF"));
    eprintln!("firmware: flash {flash} bytes, static RAM {ram} bytes");
    assert!(flash > 16 * 1024, "implausibly small: {flash}");
    assert!(flash <= 128 * 1024, "flash {flash} bytes > 128 KiB");
    assert!(ram <= 96 * 1024, "static RAM {ram} bytes > 96 KiB");
}

#[test]
fn qemu_firmware_fails_fast_without_servers() {
    if require_tool("qemu-system-arm").is_none() {
        return;
    }
    // TCP: the host refuses the connection (RST): fails at once.
    let run = run_firmware(&format!("tcp={} deadline_ms=5000", free_tcp_port()), None);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout
            .contains("result: FAILED: tcp: connection refused"),
        "{}",
        run.stdout
    );
    assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);

    // UDP: nobody answers; retransmissions run into the deadline.
    let port = free_udp_port();
    let run = run_firmware(&format!("udp={port} deadline_ms=1500"), None);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout.contains("result: FAILED: udp: timed out"),
        "{}",
        run.stdout
    );
    assert!(
        run.elapsed >= Duration::from_millis(1400) && run.elapsed < Duration::from_secs(6),
        "{:?}",
        run.elapsed
    );
}

#[test]
fn qemu_firmware_panic_and_fault_exit_with_failure() {
    if require_tool("qemu-system-arm").is_none() {
        return;
    }
    let run = run_firmware("crash=panic", None);
    assert_eq!(run.code, Some(1), "a panic must not exit 0");
    assert!(
        run.stdout.contains("crash=panic asked for"),
        "{}",
        run.stdout
    );
    let run = run_firmware("crash=fault", None);
    assert_eq!(run.code, Some(1), "a fault must not exit 0 or hang");
    assert!(
        run.stdout.contains("result: FAILED: hard fault at pc="),
        "{}",
        run.stdout
    );
}

#[test]
fn qemu_firmware_refuses_bad_configuration() {
    if require_tool("qemu-system-arm").is_none() {
        return;
    }
    // Any remote but 10.0.2.2 is refused before a frame is sent.
    let run = run_firmware("udp=6969 host=10.0.2.3", None);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stdout
            .contains("result: FAILED: config: remote address is not the gateway 10.0.2.2"),
        "{}",
        run.stdout
    );
    assert!(guest_destinations(&run.pcap).is_empty());

    let run = run_firmware("udp=6969 speed=11", None);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stdout.contains("args: unknown key in `speed=11`"),
        "{}",
        run.stdout
    );

    let run = run_firmware("udp=0", None);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stdout.contains("args: bad value in `udp=0`"),
        "{}",
        run.stdout
    );
}
