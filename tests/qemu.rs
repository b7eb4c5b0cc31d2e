//! End-to-end tests of the QEMU firmware (`shell-smoltcp/firmware`): build
//! it, run it on an emulated mps2-an385 with a LAN9118 on QEMU's user-mode
//! network, against UDP and TCP echo servers on 127.0.0.1 (the firmware
//! reaches them as 10.0.2.2), and a host client that connects to the
//! firmware's port 6881 through `hostfwd`. Every frame the NIC saw is dumped
//! to a pcap file, and the test asserts that the guest addressed nothing but
//! 10.0.2.2.
//!
//! Needs `qemu-system-arm` and the `thumbv7m-none-eabi` target
//! (`scripts/test.sh` installs both); without QEMU the tests skip, except
//! under `CI=true` where they fail.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use ourtorrent_tests::{repo_root, require_tool};

/// The outer timeout of one QEMU run (the firmware has its own deadline,
/// shorter than this).
const QEMU_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the firmware once per test process; returns the ELF's path.
fn firmware() -> &'static Path {
    static ELF: OnceLock<PathBuf> = OnceLock::new();
    ELF.get_or_init(|| {
        let dir = repo_root().join("shell-smoltcp/firmware");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--release", "--quiet"])
            .current_dir(&dir);
        // The outer `cargo test` sets variables that would leak into the
        // firmware's build (target dir, flags for the host, coverage).
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let keep = key == "CARGO_HOME"
                || key.starts_with("CARGO_NET_")
                || key.starts_with("CARGO_HTTP_")
                || key.starts_with("CARGO_REGISTRIES_");
            if (key.starts_with("CARGO_") && !keep)
                || key == "RUSTFLAGS"
                || key == "RUSTDOCFLAGS"
                || key == "RUSTC_WRAPPER"
                || key == "RUSTC_WORKSPACE_WRAPPER"
                || key == "__CARGO_FIX_PLZ"
                || key == "CARGO"
            {
                cmd.env_remove(key.as_ref());
            }
        }
        let out = cmd.output().expect("spawn cargo for the firmware");
        assert!(
            out.status.success(),
            "firmware build failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let elf = dir.join("target/thumbv7m-none-eabi/release/ourtorrent-firmware");
        assert!(elf.is_file(), "no ELF at {}", elf.display());
        elf
    })
}

/// A QEMU process, killed if the test ends first.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one run printed and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    elapsed: Duration,
    pcap: Vec<u8>,
}

impl Run {
    /// The value of `key=` on the report line starting with `prefix`.
    fn figure(&self, prefix: &str, key: &str) -> Option<u64> {
        let line = self.stdout.lines().find(|l| l.starts_with(prefix))?;
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))?
            .parse()
            .ok()
    }
}

/// Runs the firmware with `append` as its command line, and `hostfwd` from
/// 127.0.0.1:`host_port` to the guest's 6881 if given.
fn run_firmware(append: &str, host_port: Option<u16>) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap_path = dir.path().join("lan9118.pcap");
    let mut netdev = String::from("user,id=n0");
    if let Some(p) = host_port {
        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{p}-10.0.2.15:6881"));
    }
    let mut cmd = Command::new("qemu-system-arm");
    cmd.args([
        "-M",
        "mps2-an385",
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "none",
    ])
    .args(["-semihosting-config", "enable=on,target=native"])
    .args(["-netdev", &netdev])
    .args(["-net", "nic,netdev=n0,model=lan9118"])
    .arg("-object")
    .arg(format!(
        "filter-dump,id=dump0,netdev=n0,file={}",
        pcap_path.display()
    ))
    .arg("-kernel")
    .arg(firmware())
    .args(["-append", append])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let start = Instant::now();
    let mut qemu = Qemu(cmd.spawn().expect("spawn qemu-system-arm"));
    let mut pipe = qemu.0.stdout.take().expect("stdout");
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    });
    let code = loop {
        if let Some(status) = qemu.0.try_wait().expect("wait qemu") {
            break status.code();
        }
        if start.elapsed() > QEMU_TIMEOUT {
            break None; // killed by Drop
        }
        thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    drop(qemu);
    let stdout = reader.join().expect("stdout reader");
    eprintln!("--- firmware `{append}` ({elapsed:?}, exit {code:?}):\n{stdout}");
    let pcap = std::fs::read(&pcap_path).unwrap_or_default();
    Run {
        code,
        stdout,
        elapsed,
        pcap,
    }
}

/// The IPv4 destinations (IPv4 packets and ARP requests) of every frame the
/// guest sent, read from a pcap file (libpcap format: a 24-byte header,
/// then 16-byte record headers whose third word is the captured length).
fn guest_destinations(pcap: &[u8]) -> Vec<Ipv4Addr> {
    const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    assert!(pcap.len() >= 24, "no pcap written");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &pcap[at + 16..(at + 16 + len).min(pcap.len())];
        at += 16 + len;
        if frame.len() < 14 || frame[6..12] != GUEST_MAC {
            continue;
        }
        let ip = |o: usize| Ipv4Addr::new(frame[o], frame[o + 1], frame[o + 2], frame[o + 3]);
        match (frame[12], frame[13]) {
            (0x08, 0x00) if frame.len() >= 34 => out.push(ip(30)),
            (0x08, 0x06) if frame.len() >= 42 => out.push(ip(38)),
            _ => {}
        }
    }
    out
}

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

/// A port that was free a moment ago (nothing listens on it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    let fwd = free_port();
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
    let dests = guest_destinations(&run.pcap);
    assert!(
        dests.len() > 100,
        "only {} guest frames captured",
        dests.len()
    );
    let gateway = Ipv4Addr::new(10, 0, 2, 2);
    assert!(
        dests.iter().all(|d| *d == gateway),
        "guest addressed {:?}",
        dests.iter().find(|d| **d != gateway)
    );
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
    let run = run_firmware(&format!("tcp={} deadline_ms=5000", free_port()), None);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout
            .contains("result: FAILED: tcp: connection refused"),
        "{}",
        run.stdout
    );
    assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);

    // UDP: nobody answers; retransmissions run into the deadline.
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
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
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout
            .contains("result: FAILED: config: remote address is not the gateway 10.0.2.2"),
        "{}",
        run.stdout
    );
    assert!(guest_destinations(&run.pcap).is_empty());

    let run = run_firmware("udp=6969 speed=11", None);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout.contains("args: unknown key in `speed=11`"),
        "{}",
        run.stdout
    );

    let run = run_firmware("udp=0", None);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout.contains("args: bad value in `udp=0`"),
        "{}",
        run.stdout
    );
}
