//! The QEMU firmware (`shell-smoltcp/firmware`) for the `qemu_*` tests:
//! build it once per test process, run it on an emulated mps2-an385 with a
//! LAN9118 on QEMU's user-mode network (the host is 10.0.2.2; `hostfwd`
//! maps a host port to the guest's 6881), dump every frame to a pcap file,
//! and read the guest's destinations from it. Needs `qemu-system-arm` and
//! the `thumbv7m-none-eabi` target (callers check with
//! [`crate::require_tool`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::repo_root;

/// The outer timeout of one QEMU run (the firmware has its own deadline,
/// shorter than this).
pub const QEMU_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the firmware once per test process; returns the ELF's path.
pub fn firmware() -> &'static Path {
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
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub elapsed: Duration,
    pub pcap: Vec<u8>,
}

impl Run {
    /// The value of `key=` on the report line starting with `prefix`.
    pub fn figure(&self, prefix: &str, key: &str) -> Option<u64> {
        let line = self.stdout.lines().find(|l| l.starts_with(prefix))?;
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))?
            .parse()
            .ok()
    }
}

/// Runs the firmware with `append` as its command line, and `hostfwd` from
/// 127.0.0.1:`host_port` to the guest's 6881 if given.
pub fn run_firmware(append: &str, host_port: Option<u16>) -> Run {
    run_firmware_with(append, host_port, None)
}

/// A callback run (once, on the reader thread) when the firmware prints a
/// line starting with the given prefix.
pub type Trigger = (&'static str, Box<dyn FnOnce() + Send>);

/// [`run_firmware`], calling `trigger` when its line appears (e.g. start a
/// leecher once the firmware listens).
pub fn run_firmware_with(append: &str, host_port: Option<u16>, trigger: Option<Trigger>) -> Run {
    run_board(Board {
        host_port,
        trigger,
        ..Board::new(append)
    })
}

/// Bytes of the board's PSRAM, the firmware's NOR flash (AN385: 16 MiB).
pub const FLASH_LEN: usize = 16 * 1024 * 1024;

/// One QEMU run of the firmware, with everything a test may vary.
pub struct Board {
    /// The firmware's command line.
    pub append: String,
    /// `hostfwd` from 127.0.0.1:PORT to the guest's 6881.
    pub host_port: Option<u16>,
    /// A file behind the board's PSRAM (its NOR flash), shared with QEMU:
    /// what the firmware programs is in the file, and survives a kill.
    pub flash: Option<PathBuf>,
    /// Called once when a line with this prefix appears.
    pub trigger: Option<Trigger>,
    /// `kill -9` QEMU once this many lines with this prefix appeared (a
    /// power cut).
    pub kill_after: Option<(&'static str, usize)>,
    /// The outer timeout.
    pub timeout: Duration,
}

impl Board {
    /// A board running `append`, no forwarding, no flash file.
    pub fn new(append: &str) -> Self {
        Board {
            append: append.to_string(),
            host_port: None,
            flash: None,
            trigger: None,
            kill_after: None,
            timeout: QEMU_TIMEOUT,
        }
    }
}

/// A fresh, erased flash file ([`FLASH_LEN`] bytes of 0xFF) at `path`.
pub fn erased_flash(path: &Path) {
    std::fs::write(path, vec![0xFFu8; FLASH_LEN]).expect("write flash file");
}

/// Runs one board (see [`Board`]) until it exits, is killed, or times out.
pub fn run_board(board: Board) -> Run {
    let Board {
        append,
        host_port,
        flash,
        trigger,
        kill_after,
        timeout,
    } = board;
    let append = append.as_str();
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap_path = dir.path().join("lan9118.pcap");
    let mut netdev = String::from("user,id=n0");
    if let Some(p) = host_port {
        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{p}-10.0.2.15:6881"));
    }
    let mut cmd = Command::new("qemu-system-arm");
    match &flash {
        Some(f) => {
            // The machine's RAM ("mps.ram") is the AN385 PSRAM at
            // 0x2100_0000; the firmware's own RAM is the SSRAM below it.
            cmd.args(["-M", "mps2-an385,memory-backend=flash0"])
                .arg("-object")
                .arg(format!(
                    "memory-backend-file,id=flash0,size=16M,mem-path={},share=on",
                    f.display()
                ));
        }
        None => {
            cmd.args(["-M", "mps2-an385"]);
        }
    }
    cmd.args(["-nographic", "-monitor", "none", "-serial", "none"])
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
    let cut = Arc::new(AtomicBool::new(false));
    let cut_seen = cut.clone();
    let reader = thread::spawn(move || {
        use std::io::BufRead;
        let mut s = String::new();
        let mut trigger = trigger;
        let mut kill_count = 0;
        let mut lines = std::io::BufReader::new(&mut pipe);
        let mut line = String::new();
        while lines.read_line(&mut line).unwrap_or(0) > 0 {
            if trigger.as_ref().is_some_and(|(p, _)| line.starts_with(p)) {
                if let Some((_, f)) = trigger.take() {
                    f();
                }
            }
            if let Some((p, n)) = kill_after {
                if line.starts_with(p) {
                    kill_count += 1;
                    if kill_count >= n {
                        cut.store(true, Ordering::SeqCst);
                    }
                }
            }
            s.push_str(&line);
            line.clear();
        }
        s
    });
    let code = loop {
        if cut_seen.load(Ordering::SeqCst) {
            // SIGKILL: a power cut, nothing flushed by the guest.
            let _ = qemu.0.kill();
            let _ = qemu.0.wait();
            break None;
        }
        if let Some(status) = qemu.0.try_wait().expect("wait qemu") {
            break status.code();
        }
        if start.elapsed() > timeout {
            break None; // killed by Drop
        }
        thread::sleep(Duration::from_millis(2));
    };
    let elapsed = start.elapsed();
    drop(qemu);
    let stdout = reader.join().expect("stdout reader");
    eprintln!(
        "--- firmware `{}` ({elapsed:?}, exit {code:?}):\n{stdout}",
        short(append)
    );
    let pcap = std::fs::read(&pcap_path).unwrap_or_default();
    Run {
        code,
        stdout,
        elapsed,
        pcap,
    }
}

/// A command line cut for the log (piece hashes are long).
fn short(append: &str) -> String {
    append
        .split_whitespace()
        .map(|w| match w.split_once('=') {
            Some(("pieces", v)) if v.len() > 40 => format!("pieces=<{} hashes>", v.len() / 40),
            _ => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The job's flash as the firmware lays it out (`shell_smoltcp::job`'s
/// store: a 64-byte header, a 4-byte mark per piece at 64, the data at
/// `data_at`, printed by the firmware as `flash: … data_at=N`).
pub struct FlashImage {
    pub bytes: Vec<u8>,
    pub data_at: usize,
}

impl FlashImage {
    /// Reads the flash file; `data_at` from the run's `flash:` line.
    pub fn read(path: &Path, run: &Run) -> FlashImage {
        let data_at = run.figure("flash:", "data_at").expect("no `flash:` line") as usize;
        FlashImage {
            bytes: std::fs::read(path).expect("read flash file"),
            data_at,
        }
    }

    /// Whether piece `i` carries the verified mark (programmed to zero).
    pub fn marked(&self, i: usize) -> bool {
        self.bytes[64 + 4 * i..68 + 4 * i] == [0; 4]
    }

    /// Piece `i`'s bytes as stored.
    pub fn piece(&self, i: usize, piece_len: usize, size: usize) -> &[u8] {
        let at = self.data_at + i * piece_len;
        &self.bytes[at..at + size]
    }
}

/// The IPv4 destinations (IPv4 packets and ARP requests) of every frame the
/// guest sent, read from a pcap file (libpcap format: a 24-byte header,
/// then 16-byte record headers whose third word is the captured length).
pub fn guest_destinations(pcap: &[u8]) -> Vec<Ipv4Addr> {
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

/// Asserts the pcap shows more than `min_frames` guest frames, all of them
/// to the gateway 10.0.2.2.
pub fn assert_only_gateway(run: &Run, min_frames: usize) {
    let dests = guest_destinations(&run.pcap);
    assert!(
        dests.len() > min_frames,
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
