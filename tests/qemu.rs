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
    run_firmware_with(append, host_port, None)
}

/// A callback run (once, on the reader thread) when the firmware prints a
/// line starting with the given prefix.
type Trigger = (&'static str, Box<dyn FnOnce() + Send>);

/// [`run_firmware`], calling `trigger` when its line appears (e.g. start a
/// leecher once the firmware listens).
fn run_firmware_with(append: &str, host_port: Option<u16>, trigger: Option<Trigger>) -> Run {
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
        use std::io::BufRead;
        let mut s = String::new();
        let mut trigger = trigger;
        let mut lines = std::io::BufReader::new(&mut pipe);
        let mut line = String::new();
        while lines.read_line(&mut line).unwrap_or(0) > 0 {
            if trigger.as_ref().is_some_and(|(p, _)| line.starts_with(p)) {
                if let Some((_, f)) = trigger.take() {
                    f();
                }
            }
            s.push_str(&line);
            line.clear();
        }
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

// ---------------------------------------------------------------------------
// The BitTorrent job: a tracker, peers and a leecher on the host.
// ---------------------------------------------------------------------------

/// A child process whose stdout lines are collected; killed on drop.
struct Proc {
    child: Child,
    lines: Arc<std::sync::Mutex<Vec<String>>>,
    name: String,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let out = child.stdout.take().expect("stdout");
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let l = lines.clone();
        thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                l.lock().unwrap().push(line);
            }
        });
        Proc {
            child,
            lines,
            name: name.to_string(),
        }
    }

    /// The first line starting with `prefix`, waiting up to `timeout`.
    fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Option<String> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with(prefix))
            {
                return Some(l.clone());
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                thread::sleep(Duration::from_millis(50)); // let the reader finish
                return self
                    .lines
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|l| l.starts_with(prefix))
                    .cloned();
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("--- {}:\n{}", self.name, self.output());
    }
}

/// A free UDP port on 127.0.0.1 (a moment ago).
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// opentracker on 127.0.0.1 UDP `port`, tracking only `info_hash` (Debian
/// builds it with a whitelist). Returns it and its UDP port once it
/// answers a BEP 15 connect.
fn opentracker_on(dir: &Path, info_hash: &str, port: u16) -> (Proc, u16) {
    let tcp = free_port();
    std::fs::write(dir.join("whitelist"), format!("{info_hash}\n")).unwrap();
    std::fs::write(
        dir.join("opentracker.conf"),
        format!(
            "listen.udp 127.0.0.1:{port}\nlisten.tcp 127.0.0.1:{tcp}\n\
             listen.udp.workers 1\naccess.whitelist {}\n",
            dir.join("whitelist").display()
        ),
    )
    .unwrap();
    let proc = Proc::spawn(
        "opentracker",
        Command::new("opentracker")
            .args(["-f", "opentracker.conf"])
            .current_dir(dir),
    );
    wait_for_udp_tracker(port);
    (proc, port)
}

/// Announces `peer_port` on 127.0.0.1 as a seeder of `info_hash` to the
/// UDP tracker on `tracker_port` (BEP 15, hand-encoded: the test's own
/// second opinion on the wire format).
fn announce_seeder(tracker_port: u16, info_hash: &[u8; 20], peer_port: u16) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.connect(("127.0.0.1", tracker_port)).unwrap();
    let mut req = Vec::new();
    req.extend_from_slice(&0x0417_2710_1980u64.to_be_bytes());
    req.extend_from_slice(&0u32.to_be_bytes());
    req.extend_from_slice(&11u32.to_be_bytes());
    s.send(&req).unwrap();
    let mut buf = [0u8; 512];
    let n = s.recv(&mut buf).expect("connect reply");
    assert_eq!(n, 16);
    let mut a = Vec::new();
    a.extend_from_slice(&buf[8..16]); // connection id
    a.extend_from_slice(&1u32.to_be_bytes()); // announce
    a.extend_from_slice(&12u32.to_be_bytes());
    a.extend_from_slice(info_hash);
    a.extend_from_slice(b"-FAKE01-000000000000");
    a.extend_from_slice(&0u64.to_be_bytes()); // downloaded
    a.extend_from_slice(&0u64.to_be_bytes()); // left: a seeder
    a.extend_from_slice(&0u64.to_be_bytes()); // uploaded
    a.extend_from_slice(&2u32.to_be_bytes()); // started
    a.extend_from_slice(&0u32.to_be_bytes()); // ip
    a.extend_from_slice(&0u32.to_be_bytes()); // key
    a.extend_from_slice(&(-1i32).to_be_bytes());
    a.extend_from_slice(&peer_port.to_be_bytes());
    s.send(&a).unwrap();
    let n = s.recv(&mut buf).expect("announce reply");
    assert!(n >= 20 && buf[3] == 1, "announce refused: {:?}", &buf[..n]);
}

/// A small torrent on disk: `data/blob.bin` of `len` bytes, `t.torrent`
/// (with the tracker) and `nt.torrent` (same info, no tracker, for the
/// leecher). Returns (info-hash hex, piece hashes hex).
fn make_torrent(
    dir: &Path,
    py: &Path,
    len: usize,
    piece_len: u32,
    tracker: u16,
) -> (String, String) {
    let blob = dir.join("data/blob.bin");
    ourtorrent_tests::write_data(&blob, len, 42);
    let script = ourtorrent_tests::lt_script();
    let create = |out: &str, with_tracker: bool| {
        let mut cmd = Command::new(py);
        cmd.arg(&script)
            .arg("create")
            .arg(&blob)
            .arg(dir.join(out))
            .args(["--v1-only", "--piece-size", &piece_len.to_string()]);
        if with_tracker {
            cmd.args(["--tracker", &format!("udp://127.0.0.1:{tracker}/announce")]);
        }
        ourtorrent_tests::run(&mut cmd);
    };
    create("t.torrent", true);
    create("nt.torrent", false);
    let info = ourtorrent_tests::run(
        Command::new(py)
            .arg(&script)
            .arg("info")
            .arg(dir.join("t.torrent")),
    );
    let info: serde_json::Value = serde_json::from_str(&info).expect("info JSON");
    let ih = info["info_hash"].as_str().expect("info_hash").to_string();
    let data = std::fs::read(&blob).unwrap();
    (ih, piece_hashes(&data, piece_len))
}

/// A libtorrent peer (tests/py/lt_swarm.py). Seeders say READY once a
/// tracker replied (the firmware finds them through the tracker).
fn lt_peer(py: &Path, args: &[&str]) -> Proc {
    let script = repo_root().join("tests/py/lt_swarm.py");
    let mut args: Vec<&str> = args.to_vec();
    if args.first() == Some(&"seed") {
        args.extend(["--ready-on", "tracker"]);
    } else {
        args.push("--no-trackers");
    }
    Proc::spawn(
        &format!("lt_peer {}", args[0]),
        Command::new(py).arg(script).args(args),
    )
}

/// A peer that serves every piece but corrupts `bad_piece` (every byte
/// flipped): the firmware must reject it. Counts the piece messages sent.
fn corrupt_peer(
    data: Vec<u8>,
    piece_len: usize,
    info_hash: [u8; 20],
    bad_piece: u32,
) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let data = data.clone();
            let counter = counter.clone();
            thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(20)));
                let mut hs = [0u8; 68];
                if c.read_exact(&mut hs).is_err() || hs[28..48] != info_hash {
                    return;
                }
                let pieces = data.len().div_ceil(piece_len);
                let mut out = Vec::new();
                out.extend_from_slice(&hs[..28]);
                out.extend_from_slice(&info_hash);
                out.extend_from_slice(b"-BAD001-000000000000");
                let mut bits = vec![0u8; pieces.div_ceil(8)];
                for i in 0..pieces {
                    bits[i / 8] |= 0x80 >> (i % 8);
                }
                out.extend_from_slice(&(1 + bits.len() as u32).to_be_bytes());
                out.push(5);
                out.extend_from_slice(&bits);
                out.extend_from_slice(&[0, 0, 0, 1, 1]); // unchoke
                if c.write_all(&out).is_err() {
                    return;
                }
                loop {
                    let mut len = [0u8; 4];
                    if c.read_exact(&mut len).is_err() {
                        return;
                    }
                    let mut msg = vec![0u8; u32::from_be_bytes(len) as usize];
                    if c.read_exact(&mut msg).is_err() {
                        return;
                    }
                    if msg.first() != Some(&6) || msg.len() != 13 {
                        continue;
                    }
                    let word = |o: usize| u32::from_be_bytes(msg[o..o + 4].try_into().unwrap());
                    let (index, begin, length) = (word(1), word(5), word(9));
                    let at = index as usize * piece_len + begin as usize;
                    let Some(block) = data.get(at..at + length as usize) else {
                        return;
                    };
                    let mut block = block.to_vec();
                    if index == bad_piece {
                        block.iter_mut().for_each(|b| *b ^= 0xff);
                    }
                    let mut m = Vec::new();
                    m.extend_from_slice(&(9 + length).to_be_bytes());
                    m.push(7);
                    m.extend_from_slice(&index.to_be_bytes());
                    m.extend_from_slice(&begin.to_be_bytes());
                    m.extend_from_slice(&block);
                    if c.write_all(&m).is_err() {
                        return;
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (port, sent)
}

/// Asserts the pcap shows traffic, all of it to 10.0.2.2.
fn assert_only_gateway(run: &Run) {
    let dests = guest_destinations(&run.pcap);
    assert!(
        dests.len() > 10,
        "only {} guest frames captured",
        dests.len()
    );
    let gateway = Ipv4Addr::new(10, 0, 2, 2);
    assert!(
        dests.iter().all(|d| *d == gateway),
        "guest addressed {:?}",
        dests.iter().find(|d| **d != gateway)
    );
}

const TORRENT_LEN: usize = 64 * 1024;
const PIECE_LEN: u32 = 16 * 1024;

#[test]
fn qemu_bittorrent_job_opentracker_libtorrent_seeder_and_leecher() {
    if require_tool("qemu-system-arm").is_none() || require_tool("opentracker").is_none() {
        return;
    }
    bittorrent_job(TrackerKind::Opentracker);
}

/// The same job with our own tracker (`shell-std tracker`).
#[test]
fn qemu_bittorrent_job_shell_std_tracker_libtorrent_seeder_and_leecher() {
    if require_tool("qemu-system-arm").is_none() {
        return;
    }
    let Some(bin) = shell_std_with_tracker() else {
        panic!("target/debug/shell-std with a `tracker` subcommand not found: run `cargo test --workspace` (it builds shell-std) or set OURTORRENT_SHELL_STD");
    };
    bittorrent_job(TrackerKind::ShellStd(bin));
}

/// The job with our own stack on the host: `shell-std tracker`, `shell-std
/// client seed` as the only seeder (announcing its listen port to the
/// tracker), then `shell-std client download` leeching the data back from
/// the firmware through `hostfwd`.
#[test]
fn qemu_bittorrent_job_shell_std_tracker_our_client_seeder_and_leecher() {
    if require_tool("qemu-system-arm").is_none() {
        return;
    }
    let Some(bin) = shell_std_with_client() else {
        panic!("target/debug/shell-std with `tracker`, `create` and `client` subcommands not found: run `cargo build -p shell-std` (or `cargo test --workspace`) or set OURTORRENT_SHELL_STD");
    };
    let dir = tempfile::tempdir().unwrap();
    let tracker_port = free_udp_port();
    let t = dir.path().join("t.torrent");
    let data_dir = dir.path().join("data");
    let blob = data_dir.join("blob.bin");
    ourtorrent_tests::write_data(&blob, TORRENT_LEN, 42);
    let (ih, pieces) = shell_std_create(&bin, &blob, &t, PIECE_LEN, tracker_port);
    let (_tracker, tracker_port) = shell_std_tracker_on(&bin, dir.path(), &ih, tracker_port);
    let ih_bytes: [u8; 20] = ourtorrent_core::id::InfoHash::from_hex(ih.as_bytes())
        .unwrap()
        .0;
    // Our seeder: announces `started` (left=0, its listen port) to the
    // torrent's tracker; the firmware maps 127.0.0.1:PORT to 10.0.2.2:PORT.
    let seed_port = free_port();
    let mut seeder = Proc::spawn(
        "shell-std client seed",
        Command::new(&bin)
            .args(["client", "seed"])
            .arg(&t)
            .arg("--data")
            .arg(&blob)
            .args(["--listen", &format!("127.0.0.1:{seed_port}"), "--quiet"]),
    );
    assert!(
        seeder
            .wait_line("seeding: listening on", Duration::from_secs(15))
            .is_some(),
        "our seeder never started seeding"
    );
    wait_for_seeders(tracker_port, &ih_bytes, 1);
    let fwd = free_port();
    let leech_dir = dir.path().join("leech");
    // The leecher starts once the firmware listens (QEMU's hostfwd accepts
    // and drops connections before that).
    let leecher_slot: Arc<std::sync::Mutex<Option<Proc>>> = Arc::default();
    let start_leecher = {
        let (bin, slot, t, out) = (
            bin.clone(),
            leecher_slot.clone(),
            t.clone(),
            leech_dir.clone(),
        );
        Box::new(move || {
            *slot.lock().unwrap() = Some(Proc::spawn(
                "shell-std client download",
                Command::new(&bin)
                    .args(["client", "download"])
                    .arg(&t)
                    .arg("--out")
                    .arg(&out)
                    .args(["--peer", &format!("127.0.0.1:{fwd}")])
                    .args(["--listen", "127.0.0.1:0"])
                    .args(["--no-trackers", "--no-seed", "--quiet"]),
            ));
        })
    };
    let run = run_firmware_with(
        &format!(
            "tracker={tracker_port} info_hash={ih} length={TORRENT_LEN} piece_len={PIECE_LEN} \
             pieces={pieces} port={fwd} seed_ms=15000 deadline_ms=25000"
        ),
        Some(fwd),
        Some(("seed: listening", start_leecher)),
    );
    let mut leecher = leecher_slot
        .lock()
        .unwrap()
        .take()
        .expect("the firmware never listened for a leecher");
    assert_eq!(run.code, Some(0), "firmware failed");
    assert!(run.stdout.contains("result: ok"));
    assert!(run.stdout.contains("announce: ok event=started"));
    assert!(run.stdout.contains("announce: ok event=completed"));
    assert!(
        run.stdout
            .contains(&format!("peer: 10.0.2.2:{seed_port} handshake ok")),
        "the firmware did not reach our seeder:\n{}",
        run.stdout
    );
    assert_eq!(
        run.figure("download: ok", "bytes"),
        Some(TORRENT_LEN as u64)
    );
    assert_eq!(run.figure("download: ok", "verified"), Some(4));
    assert_eq!(run.figure("download: ok", "rejected"), Some(0));
    assert_eq!(run.figure("seed: ok", "leecher_complete"), Some(1));
    assert!(run.figure("seed: ok", "uploaded").unwrap() >= TORRENT_LEN as u64);
    eprintln!(
        "firmware from our seeder: {} ms; our leecher from the firmware: {:?}",
        run.figure("download: ok", "ms").unwrap_or(0),
        leecher.wait_line("downloaded:", Duration::from_secs(10))
    );
    // Our leecher got every byte from the firmware (its only peer).
    assert!(
        leecher
            .wait_line("complete:", Duration::from_secs(10))
            .is_some(),
        "our leecher did not finish"
    );
    let got = std::fs::read(leech_dir.join("blob.bin")).expect("leeched file");
    let want = std::fs::read(&blob).unwrap();
    assert!(got == want, "leeched data differs");
    assert_only_gateway(&run);
    assert!(run.elapsed < Duration::from_secs(25), "{:?}", run.elapsed);
}

/// [`shell_std_with_tracker`], if that binary also has `create` and
/// `client`.
fn shell_std_with_client() -> Option<PathBuf> {
    let bin = shell_std_with_tracker()?;
    let has = |args: &[&str]| {
        Command::new(&bin)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    (has(&["create", "--help"]) && has(&["client", "seed", "--help"])).then_some(bin)
}

/// `shell-std create` of the single file `blob` into `torrent`, announcing
/// to `udp://127.0.0.1:TRACKER/announce`. Returns (info-hash hex, piece
/// hashes hex).
fn shell_std_create(
    bin: &Path,
    blob: &Path,
    torrent: &Path,
    piece_len: u32,
    tracker: u16,
) -> (String, String) {
    let out = ourtorrent_tests::run(
        Command::new(bin)
            .arg("create")
            .arg(blob)
            .args(["--tracker", &format!("udp://127.0.0.1:{tracker}/announce")])
            .args(["--piece-length", &piece_len.to_string(), "--no-date", "-o"])
            .arg(torrent),
    );
    let ih = out
        .split("info-hash ")
        .nth(1)
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|| panic!("no info-hash in `{out}`"));
    assert_eq!(ih.len(), 40, "{out}");
    let data = std::fs::read(blob).unwrap();
    (ih, piece_hashes(&data, piece_len))
}

/// SHA-1 of every piece, 40 hex digits each, in order.
fn piece_hashes(data: &[u8], piece_len: u32) -> String {
    let mut pieces = String::new();
    for chunk in data.chunks(piece_len as usize) {
        let mut h = ourtorrent_core::pieces::PieceHasher::new();
        h.update(chunk);
        for b in h.finish() {
            pieces.push_str(&format!("{b:02x}"));
        }
    }
    pieces
}

/// Waits until the UDP tracker on `port` counts at least `n` seeders of
/// `info_hash`.
fn wait_for_seeders(port: u16, info_hash: &[u8; 20], n: u32) {
    wait_for_scrape(port, info_hash, &format!("{n} seeders"), |c| c.seeders >= n);
}

/// One torrent's counts in a BEP 15 scrape reply.
#[derive(Clone, Copy, Debug)]
struct Scraped {
    seeders: u32,
    completed: u32,
    leechers: u32,
}

/// Waits until a BEP 15 scrape (hand-encoded) of `info_hash` at the UDP
/// tracker on `port` satisfies `ok` (`what` names it for the failure).
fn wait_for_scrape(port: u16, info_hash: &[u8; 20], what: &str, ok: impl Fn(Scraped) -> bool) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.connect(("127.0.0.1", port)).unwrap();
    let mut last = None;
    for _ in 0..100 {
        let mut req = Vec::new();
        req.extend_from_slice(&0x0417_2710_1980u64.to_be_bytes());
        req.extend_from_slice(&0u32.to_be_bytes());
        req.extend_from_slice(&21u32.to_be_bytes());
        let mut buf = [0u8; 512];
        if s.send(&req).is_ok() && matches!(s.recv(&mut buf), Ok(16)) {
            let mut sc = Vec::new();
            sc.extend_from_slice(&buf[8..16]); // connection id
            sc.extend_from_slice(&2u32.to_be_bytes()); // scrape
            sc.extend_from_slice(&22u32.to_be_bytes());
            sc.extend_from_slice(info_hash);
            if s.send(&sc).is_ok() {
                if let Ok(20) = s.recv(&mut buf) {
                    let word = |o: usize| u32::from_be_bytes(buf[o..o + 4].try_into().unwrap());
                    let c = Scraped {
                        seeders: word(8),
                        completed: word(12),
                        leechers: word(16),
                    };
                    last = Some(c);
                    if buf[3] == 2 && ok(c) {
                        return;
                    }
                }
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("the tracker on {port} never counted {what} (last scrape: {last:?})");
}

/// Which tracker the job test runs against.
enum TrackerKind {
    Opentracker,
    ShellStd(PathBuf),
}

/// The workspace's `shell-std` binary (built by `cargo test` for its own
/// tests), or the one named by `OURTORRENT_SHELL_STD`, if it has the
/// `tracker` subcommand.
fn shell_std_with_tracker() -> Option<PathBuf> {
    let bin = std::env::var_os("OURTORRENT_SHELL_STD")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join("target"))
                .join("debug/shell-std")
        });
    let ok = Command::new(&bin)
        .args(["tracker", "--help"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(bin)
}

/// `shell-std tracker` on 127.0.0.1 UDP `port`, memory only, tracking
/// only `info_hash`; returned once it answers a BEP 15 connect.
fn shell_std_tracker_on(bin: &Path, dir: &Path, info_hash: &str, port: u16) -> (Proc, u16) {
    std::fs::write(dir.join("allow"), format!("{info_hash}\n")).unwrap();
    let proc = Proc::spawn(
        "shell-std tracker",
        Command::new(bin)
            .args(["tracker", "--no-db", "--udp", &format!("127.0.0.1:{port}")])
            .arg("--http")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--allow")
            .arg(dir.join("allow")),
    );
    wait_for_udp_tracker(port);
    (proc, port)
}

/// Waits until a UDP tracker answers a BEP 15 connect on `port`.
fn wait_for_udp_tracker(port: u16) {
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut req = Vec::new();
    req.extend_from_slice(&0x0417_2710_1980u64.to_be_bytes());
    req.extend_from_slice(&0u32.to_be_bytes());
    req.extend_from_slice(&7u32.to_be_bytes());
    for _ in 0..50 {
        let _ = probe.send_to(&req, ("127.0.0.1", port));
        let mut buf = [0u8; 64];
        if let Ok((16, _)) = probe.recv_from(&mut buf) {
            return;
        }
    }
    panic!("no UDP tracker answered on port {port}");
}

/// Announce, download from a libtorrent seeder, verify, announce
/// completed, seed to a libtorrent leecher; the leecher's bytes must be
/// the torrent's.
fn bittorrent_job(kind: TrackerKind) {
    let Some(py) = ourtorrent_tests::require_libtorrent() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tracker_port = free_udp_port();
    let (ih, pieces) = make_torrent(dir.path(), &py, TORRENT_LEN, PIECE_LEN, tracker_port);
    // The torrent names the tracker's port; start the tracker on it now.
    let (_tracker, tracker_port) = match &kind {
        TrackerKind::Opentracker => opentracker_on(dir.path(), &ih, tracker_port),
        TrackerKind::ShellStd(bin) => shell_std_tracker_on(bin, dir.path(), &ih, tracker_port),
    };
    let t = dir.path().join("t.torrent");
    let nt = dir.path().join("nt.torrent");
    let data_dir = dir.path().join("data");
    let leech_dir = dir.path().join("leech");
    let seed_port = free_port();
    let mut seeder = lt_peer(
        &py,
        &[
            "seed",
            t.to_str().unwrap(),
            data_dir.to_str().unwrap(),
            &seed_port.to_string(),
            "--max-seconds",
            "50",
        ],
    );
    assert!(
        seeder.wait_line("READY", Duration::from_secs(15)).is_some(),
        "the libtorrent seeder never got a tracker reply"
    );
    let fwd = free_port();
    // The leecher starts once the firmware listens (QEMU's hostfwd accepts
    // and drops connections before that, and libtorrent backs off from a
    // peer that failed).
    let leecher_slot: Arc<std::sync::Mutex<Option<Proc>>> = Arc::default();
    let start_leecher = {
        let (py, slot) = (py.clone(), leecher_slot.clone());
        let args: Vec<String> = vec![
            "leech".into(),
            nt.to_str().unwrap().into(),
            leech_dir.to_str().unwrap().into(),
            free_port().to_string(),
            "--connect".into(),
            fwd.to_string(),
            "--max-seconds".into(),
            "30".into(),
        ];
        Box::new(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            *slot.lock().unwrap() = Some(lt_peer(&py, &args));
        })
    };
    let run = run_firmware_with(
        &format!(
            "tracker={tracker_port} info_hash={ih} length={TORRENT_LEN} piece_len={PIECE_LEN} \
             pieces={pieces} port={fwd} seed_ms=15000 deadline_ms=25000"
        ),
        Some(fwd),
        Some(("seed: listening", start_leecher)),
    );
    let mut leecher = leecher_slot
        .lock()
        .unwrap()
        .take()
        .expect("the firmware never listened for a leecher");
    assert_eq!(run.code, Some(0), "firmware failed");
    assert!(run.stdout.contains("result: ok"));
    assert!(run.stdout.contains("announce: ok event=started"));
    assert!(run.stdout.contains("announce: ok event=completed"));
    assert!(run.stdout.contains("announce: ok event=stopped"));
    assert_eq!(
        run.figure("download: ok", "bytes"),
        Some(TORRENT_LEN as u64)
    );
    assert_eq!(run.figure("download: ok", "verified"), Some(4));
    assert_eq!(run.figure("download: ok", "rejected"), Some(0));
    assert_eq!(run.figure("seed: ok", "leecher_complete"), Some(1));
    assert!(run.figure("seed: ok", "uploaded").unwrap() >= TORRENT_LEN as u64);
    // BEP 3: the firmware's `completed` was counted, and its `stopped`
    // took it out of the swarm: only the libtorrent seeder is left (the
    // leecher uses no tracker).
    let ih_bytes = ourtorrent_core::id::InfoHash::from_hex(ih.as_bytes())
        .unwrap()
        .0;
    wait_for_scrape(
        tracker_port,
        &ih_bytes,
        "the firmware completed and gone",
        |c| c.seeders == 1 && c.completed >= 1 && c.leechers == 0,
    );
    // The leecher got every byte from the firmware, and only from it.
    assert!(
        leecher.wait_line("DONE", Duration::from_secs(10)).is_some(),
        "the leecher did not finish"
    );
    let got = std::fs::read(leech_dir.join("blob.bin")).expect("leeched file");
    let want = std::fs::read(data_dir.join("blob.bin")).unwrap();
    assert!(got == want, "leeched data differs");
    assert_only_gateway(&run);
    assert!(run.elapsed < Duration::from_secs(25), "{:?}", run.elapsed);
}

#[test]
fn qemu_bittorrent_rejects_a_corrupt_piece_opentracker() {
    if require_tool("qemu-system-arm").is_none() || require_tool("opentracker").is_none() {
        return;
    }
    let Some(py) = ourtorrent_tests::require_libtorrent() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tracker_port = free_udp_port();
    let (ih, pieces) = make_torrent(dir.path(), &py, TORRENT_LEN, PIECE_LEN, tracker_port);
    let (_tracker, tracker_port) = opentracker_on(dir.path(), &ih, tracker_port);
    let data = std::fs::read(dir.path().join("data/blob.bin")).unwrap();
    let ih_bytes: [u8; 20] = ourtorrent_core::id::InfoHash::from_hex(ih.as_bytes())
        .unwrap()
        .0;
    // The only peer corrupts piece 2: the firmware must refuse it, drop the
    // peer and, with nobody left, fail without accepting the data.
    let (bad_port, served) = corrupt_peer(data, PIECE_LEN as usize, ih_bytes, 2);
    announce_seeder(tracker_port, &ih_bytes, bad_port);
    let run = run_firmware(
        &format!(
            "tracker={tracker_port} info_hash={ih} length={TORRENT_LEN} piece_len={PIECE_LEN} \
             pieces={pieces} seed_ms=0 deadline_ms=15000"
        ),
        None,
    );
    assert_eq!(run.code, Some(1), "a corrupt piece must fail the run");
    // Failed, it still leaves the swarm (BEP 3 `stopped`).
    assert!(
        run.stdout.contains("announce: ok event=stopped"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "peer: 10.0.2.2:{bad_port} banned: sent a bad piece"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("piece: 2 rejected: SHA-1 mismatch"),
        "{}",
        run.stdout
    );
    let last = run
        .stdout
        .lines()
        .find(|l| l.starts_with("result:"))
        .unwrap();
    assert!(
        last.starts_with("result: FAILED: no usable peer left (verified=")
            && last.ends_with(" rejected=1)"),
        "{last}"
    );
    // Piece 2 was never counted as verified.
    let verified: u32 = last
        .split("verified=")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(verified < 4, "{last}");
    assert!(!run.stdout.contains("download: ok"), "{}", run.stdout);
    assert!(served.load(Ordering::SeqCst) >= 1);
    assert_only_gateway(&run);
    assert!(run.elapsed < Duration::from_secs(15), "{:?}", run.elapsed);
}

#[test]
fn qemu_bittorrent_refetches_a_corrupt_piece_from_a_good_peer_opentracker() {
    if require_tool("qemu-system-arm").is_none() || require_tool("opentracker").is_none() {
        return;
    }
    let Some(py) = ourtorrent_tests::require_libtorrent() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tracker_port = free_udp_port();
    let (ih, pieces) = make_torrent(dir.path(), &py, TORRENT_LEN, PIECE_LEN, tracker_port);
    let (_tracker, tracker_port) = opentracker_on(dir.path(), &ih, tracker_port);
    let data_dir = dir.path().join("data");
    let data = std::fs::read(data_dir.join("blob.bin")).unwrap();
    let ih_bytes: [u8; 20] = ourtorrent_core::id::InfoHash::from_hex(ih.as_bytes())
        .unwrap()
        .0;
    let (bad_port, served) = corrupt_peer(data, PIECE_LEN as usize, ih_bytes, 0);
    announce_seeder(tracker_port, &ih_bytes, bad_port);
    let t = dir.path().join("t.torrent");
    let mut seeder = lt_peer(
        &py,
        &[
            "seed",
            t.to_str().unwrap(),
            data_dir.to_str().unwrap(),
            &free_port().to_string(),
            "--max-seconds",
            "40",
        ],
    );
    assert!(seeder.wait_line("READY", Duration::from_secs(15)).is_some());
    let run = run_firmware(
        &format!(
            "tracker={tracker_port} info_hash={ih} length={TORRENT_LEN} piece_len={PIECE_LEN} \
             pieces={pieces} seed_ms=0 deadline_ms=20000"
        ),
        None,
    );
    // Whoever sent piece 0, only verified data is kept: the run completes
    // from libtorrent, and a piece from the corrupt peer, if it got one
    // in, was rejected and fetched again.
    assert_eq!(run.code, Some(0), "firmware failed");
    assert_eq!(run.figure("download: ok", "verified"), Some(4));
    let rejected = run.figure("download: ok", "rejected").unwrap();
    if rejected > 0 {
        assert!(run
            .stdout
            .contains(&format!("peer: 10.0.2.2:{bad_port} banned")));
    }
    eprintln!(
        "corrupt peer sent {} blocks; firmware rejected {rejected} pieces",
        served.load(Ordering::SeqCst)
    );
    assert_only_gateway(&run);
}

#[test]
fn qemu_bittorrent_refuses_torrents_beyond_its_limits() {
    if require_tool("qemu-system-arm").is_none() {
        return;
    }
    let h = "0123456789abcdef0123456789abcdef01234567";
    let base = format!("tracker=6969 info_hash={h}");
    let cases = [
        (
            format!("{base} length=1048576 piece_len=16384 pieces={h}"),
            "result: FAILED: config: torrent of 1048576 bytes exceeds 65536",
        ),
        (
            format!("{base} length=65536 piece_len=131072 pieces={h}"),
            "result: FAILED: config: piece of 131072 bytes exceeds 65536",
        ),
        (
            format!("{base} length=65536 piece_len=512 pieces={h}"),
            "result: FAILED: config: 128 pieces exceed 64",
        ),
        (
            format!("{base} length=65536 piece_len=16384 pieces={h}{h}"),
            "result: FAILED: config: 2 piece hashes for 4 pieces",
        ),
        (
            format!("tracker=6969 length=65536 piece_len=16384 pieces={h}"),
            "result: FAILED: config: missing `info_hash=`",
        ),
    ];
    for (append, want) in cases {
        let run = run_firmware(&append, None);
        assert_eq!(run.code, Some(2), "{append}");
        assert!(run.stdout.contains(want), "{append}:\n{}", run.stdout);
        assert!(guest_destinations(&run.pcap).is_empty());
    }
}
