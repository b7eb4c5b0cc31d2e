//! The swarm around a QEMU board, for the `qemu_*` job tests: torrents
//! made by libtorrent or `shell-std create`, trackers (opentracker,
//! `shell-std tracker`), libtorrent peers, a scripted corrupt peer, and
//! piece hashes for the firmware's command line.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::bep15::{wait_for_scrape, wait_for_udp_tracker};
use crate::opentracker::Opentracker;
use crate::{free_tcp_port, lt_info, lt_script, lt_swarm_script, run, shell_std, write_data, Proc};

/// opentracker on 127.0.0.1 UDP `port`, tracking only `info_hash`.
/// Returns it and its UDP port once it answers a BEP 15 connect.
pub fn opentracker_on(dir: &Path, info_hash: &str, port: u16) -> (Proc, u16) {
    std::fs::write(dir.join("whitelist"), format!("{info_hash}\n")).unwrap();
    let t = Opentracker::start(dir, &dir.join("whitelist"), port, free_tcp_port());
    (t.proc, t.udp_port)
}

/// A small torrent on disk: `data/blob.bin` of `len` bytes, `t.torrent`
/// (with the tracker) and `nt.torrent` (same info, no tracker, for the
/// leecher). Returns (info-hash hex, piece hashes hex).
pub fn make_torrent(
    dir: &Path,
    py: &Path,
    len: usize,
    piece_len: u32,
    tracker: u16,
) -> (String, String) {
    let blob = dir.join("data/blob.bin");
    write_data(&blob, len, 42);
    let script = lt_script();
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
        run(&mut cmd);
    };
    create("t.torrent", true);
    create("nt.torrent", false);
    let info = lt_info(py, &dir.join("t.torrent"));
    let ih = info["info_hash"].as_str().expect("info_hash").to_string();
    let data = std::fs::read(&blob).unwrap();
    (ih, piece_hashes(&data, piece_len))
}

/// A libtorrent peer (tests/py/lt_swarm.py). Seeders say READY once a
/// tracker replied (the firmware finds them through the tracker).
pub fn lt_peer(py: &Path, args: &[&str]) -> Proc {
    let mut args: Vec<&str> = args.to_vec();
    if args.first() == Some(&"seed") {
        args.extend(["--ready-on", "tracker"]);
    } else {
        args.push("--no-trackers");
    }
    Proc::spawn(
        &format!("lt_peer {}", args[0]),
        Command::new(py).arg(lt_swarm_script()).args(args),
    )
}

/// A peer that serves every piece but corrupts `bad_piece` (every byte
/// flipped): the firmware must reject it. Counts the piece messages sent.
pub fn corrupt_peer(
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

/// [`shell_std_with_tracker`], if that binary also has `create` and
/// `client`.
pub fn shell_std_with_client() -> Option<PathBuf> {
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
pub fn shell_std_create(
    bin: &Path,
    blob: &Path,
    torrent: &Path,
    piece_len: u32,
    tracker: u16,
) -> (String, String) {
    let out = run(Command::new(bin)
        .arg("create")
        .arg(blob)
        .args(["--tracker", &format!("udp://127.0.0.1:{tracker}/announce")])
        .args(["--piece-length", &piece_len.to_string(), "--no-date", "-o"])
        .arg(torrent));
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
pub fn piece_hashes(data: &[u8], piece_len: u32) -> String {
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
pub fn wait_for_seeders(port: u16, info_hash: &[u8; 20], n: u32) {
    wait_for_scrape(port, info_hash, &format!("{n} seeders"), |c| c.seeders >= n);
}

/// The workspace's `shell-std` binary (built by `cargo test` for its own
/// tests), or the one named by `OURTORRENT_SHELL_STD`, if it has the
/// `tracker` subcommand.
pub fn shell_std_with_tracker() -> Option<PathBuf> {
    let bin = shell_std();
    let ok = Command::new(&bin)
        .args(["tracker", "--help"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(bin)
}

/// `shell-std tracker` on 127.0.0.1 UDP `port`, memory only, tracking
/// only `info_hash`; returned once it answers a BEP 15 connect.
pub fn shell_std_tracker_on(bin: &Path, dir: &Path, info_hash: &str, port: u16) -> (Proc, u16) {
    std::fs::write(dir.join("allow"), format!("{info_hash}\n")).unwrap();
    let proc = Proc::spawn(
        "shell-std tracker",
        Command::new(bin)
            .args(["tracker", "--no-db", "--udp", &format!("127.0.0.1:{port}")])
            .arg("--http")
            .arg(format!("127.0.0.1:{}", free_tcp_port()))
            .arg("--allow")
            .arg(dir.join("allow")),
    );
    wait_for_udp_tracker(port);
    (proc, port)
}

/// 40 hex digits → 20 bytes.
pub fn ih_bytes(ih: &str) -> [u8; 20] {
    ourtorrent_core::id::InfoHash::from_hex(ih.as_bytes())
        .unwrap()
        .0
}

/// A TCP relay in front of a peer on 127.0.0.1:`target`: each connection
/// to the relay's port is forwarded to the target, and the bytes the
/// target sends back are counted (what a seeder uploaded through it).
pub struct CountingRelay {
    /// The relay's port (announce it in place of the target's).
    pub port: u16,
    /// Bytes from the target to the relay's clients so far.
    pub to_clients: Arc<std::sync::atomic::AtomicU64>,
}

impl CountingRelay {
    /// Starts the relay (threads that end with the test process).
    pub fn start(target: u16) -> CountingRelay {
        use std::sync::atomic::AtomicU64;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let to_clients = Arc::new(AtomicU64::new(0));
        let counter = to_clients.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let pump = |mut from: std::net::TcpStream,
                            mut to: std::net::TcpStream,
                            count: Option<Arc<AtomicU64>>| {
                    thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            if let Some(c) = &count {
                                c.fetch_add(n as u64, Ordering::SeqCst);
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                pump(client, server, None);
                pump(s2, c2, Some(counter.clone()));
            }
        });
        CountingRelay { port, to_clients }
    }
}
