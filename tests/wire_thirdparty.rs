//! BEP 9 (`ut_metadata`) and BEP 11 (`ut_pex`) against libtorrent
//! (python3-libtorrent): payloads bencoded by libtorrent that our codecs
//! decode, ours that libtorrent's decoder reads back, and our
//! `MetadataFetch` fetching the metadata from a libtorrent seeder over
//! 127.0.0.1. `cargo test -p ourtorrent-tests --test wire_thirdparty`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant as StdInstant};

use ourtorrent_core::bencode::{self, DecodeOptions, Token};
use ourtorrent_core::id::{InfoHash, PeerId};
use ourtorrent_core::time::Instant;
use ourtorrent_core::wire::metadata::{
    FetchEvent, FetchLimits, MetadataFetch, MetadataMsg, ServeBudget,
};
use ourtorrent_core::wire::pex::{encode_update, Cut, PexFlags, PexLimits, PexMessage};
use ourtorrent_core::wire::{
    ExtensionHandshake, Frame, Framer, Handshake, Message, Reserved, Status,
};
use ourtorrent_tests::libtorrent::{lt_info, lt_script, lt_swarm};
use ourtorrent_tests::{repo_root, require_libtorrent, run, write_data, Proc};
use serde_json::Value as Json;

fn lt_bencode(py: &std::path::Path, args: &[&str]) -> String {
    run(Command::new(py)
        .arg(repo_root().join("tests/py/lt_bencode.py"))
        .args(args))
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn ut_metadata_and_ut_pex_payloads_from_libtorrent_bencode() {
    let Some(py) = require_libtorrent() else {
        return;
    };
    let made: std::collections::HashMap<String, Vec<u8>> = lt_bencode(&py, &["make"])
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), hex(v))
        })
        .collect();
    let block: Vec<u8> = (0..=255u8).cycle().take(16384).collect();
    assert_eq!(
        MetadataMsg::decode(&made["md_request"]),
        Ok(MetadataMsg::Request { piece: 7 })
    );
    assert_eq!(
        MetadataMsg::decode(&made["md_reject"]),
        Ok(MetadataMsg::Reject { piece: 3 })
    );
    assert_eq!(
        MetadataMsg::decode(&made["md_data"]),
        Ok(MetadataMsg::Data {
            piece: 2,
            total_size: 40000,
            data: &block[..7232]
        })
    );
    assert_eq!(
        MetadataMsg::decode(&made["md_data_full"]),
        Ok(MetadataMsg::Data {
            piece: 0,
            total_size: 40000,
            data: &block
        })
    );
    // Our encodings are byte-identical to libtorrent's (both canonical).
    for k in ["md_request", "md_reject", "md_data", "md_data_full"] {
        let m = MetadataMsg::decode(&made[k]).unwrap();
        let mut out = vec![0u8; m.encoded_len()];
        m.encode(&mut out).unwrap();
        assert_eq!(out, made[k], "{k}");
    }

    let (pex, cut) = PexMessage::decode(&made["pex"], PexLimits::default()).unwrap();
    assert_eq!(cut, Cut::default());
    assert_eq!(
        pex.added_peers().collect::<Vec<_>>(),
        [
            (sa("127.0.0.1:6881"), PexFlags(0x10)),
            (sa("10.0.0.2:6882"), PexFlags(0x02)),
            (sa("[2001::1]:6883"), PexFlags(0x04)),
        ]
    );
    assert_eq!(pex.dropped_peers().collect::<Vec<_>>(), [sa("10.0.0.3:80")]);
    let (big, cut) = PexMessage::decode(&made["pex_big"], PexLimits::default()).unwrap();
    assert_eq!(
        cut,
        Cut {
            added: 10,
            dropped: 5,
            flags_ignored: false
        }
    );
    assert_eq!(big.added_len(), 50);
    assert_eq!(
        big.added_peers().last(),
        Some((sa("10.1.0.49:6881"), PexFlags(1)))
    );

    // And the other way: libtorrent's decoder reads what we encode.
    let added: Vec<_> = pex.added_peers().collect();
    let dropped: Vec<_> = pex.dropped_peers().collect();
    let mut buf = [0u8; 1024];
    let e = encode_update(&added, &dropped, &mut buf).unwrap();
    let req = MetadataMsg::Data {
        piece: 1,
        total_size: 40000,
        data: &block,
    };
    let mut md = vec![0u8; req.encoded_len()];
    req.encode(&mut md).unwrap();
    let dict_len = md.len() - block.len();
    let out = lt_bencode(
        &py,
        &["read", &to_hex(&buf[..e.len]), &to_hex(&md[..dict_len])],
    );
    let lines: Vec<Json> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0],
        serde_json::json!({
            "added": "7f0000011ae10a0000021ae2",
            "added.f": "1002",
            "added6": "200100000000000000000000000000011ae3",
            "added6.f": "04",
            "dropped": "0a0000030050",
        })
    );
    assert_eq!(
        lines[1],
        serde_json::json!({"msg_type": 1, "piece": 1, "total_size": 40000})
    );
}

/// Reads whole peer-wire frames from a socket with our framer.
struct Conn {
    sock: TcpStream,
    framer: Framer,
    buf: Vec<u8>,
}

impl Conn {
    fn send(&mut self, m: &Message<'_>) {
        let mut out = vec![0u8; 4 + m.encoded_len()];
        let n = m.encode(&mut out).unwrap();
        self.sock.write_all(&out[..n]).unwrap();
    }

    /// The next frame: the handshake, or an extended message's id and
    /// payload (other messages: both `None`).
    #[allow(clippy::type_complexity)]
    fn next(
        &mut self,
        deadline: StdInstant,
    ) -> std::io::Result<(Option<Handshake>, Option<(u8, Vec<u8>)>)> {
        loop {
            assert!(StdInstant::now() < deadline, "libtorrent went quiet");
            match self.framer.parse(&self.buf).unwrap() {
                Status::Complete((frame, n)) => {
                    let r = match frame {
                        Frame::Handshake(h) => (Some(h), None),
                        Frame::Message(Message::Extended { id, payload }) => {
                            (None, Some((id, payload.to_vec())))
                        }
                        Frame::Message(_) => (None, None),
                    };
                    self.buf.drain(..n);
                    return Ok(r);
                }
                Status::Partial => {
                    let mut chunk = [0u8; 65536];
                    let n = self.sock.read(&mut chunk)?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }
}

/// A v1 torrent of 20 MiB in 16 KiB pieces made by libtorrent in `dir`:
/// its path, the exact `info` bytes (1280 hashes, so more than one 16 KiB
/// metadata piece) and libtorrent's info-hash.
fn make_torrent(
    py: &std::path::Path,
    dir: &std::path::Path,
) -> (std::path::PathBuf, Vec<u8>, InfoHash) {
    let data = dir.join("payload");
    // 20 MiB in 16 KiB pieces: 1280 hashes, so the info dict is > 16 KiB.
    write_data(&data.join("blob.bin"), 20 << 20, 9);
    let torrent = dir.join("t.torrent");
    run(Command::new(py)
        .arg(lt_script())
        .args(["create"])
        .arg(&data)
        .arg(&torrent)
        .args(["--v1-only", "--piece-size", "16384"]));
    let bytes = std::fs::read(&torrent).unwrap();
    let mut toks = vec![Token::EMPTY; 64];
    let doc = bencode::decode(&bytes, &mut toks, DecodeOptions::torrent_file()).unwrap();
    let info = doc.root().unwrap().get(b"info").unwrap().raw().to_vec();
    assert!(
        info.len() > 16384 && info.len() < 2 * 16384,
        "{}",
        info.len()
    );
    // libtorrent's info-hash; the fetch checks the SHA-1 of what it gets against it.
    let lt_info = lt_info(py, &torrent);
    let info_hash = InfoHash::from_hex(lt_info["info_hash"].as_str().unwrap().as_bytes()).unwrap();

    (torrent, info, info_hash)
}

/// Connects and exchanges handshakes. libtorrent resets connections to a
/// torrent it is still starting (right after "READY"): retry until it
/// answers with its handshake.
fn connect(port: u16, hs: &Handshake, deadline: StdInstant) -> Conn {
    loop {
        assert!(
            StdInstant::now() < deadline,
            "libtorrent never took our handshake"
        );
        let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut conn = Conn {
            sock,
            framer: Framer::with_handshake(1 << 20),
            buf: Vec::new(),
        };
        conn.sock.write_all(&hs.to_bytes()).unwrap();
        if let Ok((Some(theirs), _)) = conn.next(deadline) {
            assert_eq!(theirs.info_hash, hs.info_hash);
            assert!(theirs.reserved.extension_protocol());
            return conn;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Our `MetadataFetch` asks a libtorrent seeder for the metadata of a
/// torrent whose info dict spans two 16 KiB metadata pieces, and gets the
/// exact `info` bytes of the `.torrent` (checked by SHA-1 and byte for byte).
#[test]
fn metadata_fetch_from_libtorrent_seeder() {
    let Some(py) = require_libtorrent() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (torrent, info, info_hash) = make_torrent(&py, dir.path());
    let seeder = Proc::spawn(
        "lt-seed",
        lt_swarm(&py, "seed", &torrent, dir.path(), 0).args([
            "--no-trackers",
            "--max-seconds",
            "60",
        ]),
    );
    let port: u16 = seeder
        .wait_for("READY port=", Duration::from_secs(60))
        .trim_start_matches("READY port=")
        .trim()
        .parse()
        .unwrap();

    let hs = Handshake {
        reserved: Reserved::default().with_extension_protocol(true),
        info_hash,
        peer_id: PeerId(*b"-OT0100-metadatatest"),
    };
    let deadline = StdInstant::now() + Duration::from_secs(30);
    let mut conn = connect(port, &hs, deadline);
    // BEP 10: our ut_metadata id is 3.
    const OUR_UT_METADATA: u8 = 3;
    let mut ours = ExtensionHandshake::default();
    ours.m.push((b"ut_metadata", OUR_UT_METADATA)).unwrap();
    let mut payload = [0u8; 128];
    let n = ours.encode(&mut payload).unwrap();
    conn.send(&Message::Extended {
        id: 0,
        payload: &payload[..n],
    });

    let mut buf = vec![0u8; 4 << 20];
    let mut fetch = MetadataFetch::<u8, 4>::new(info_hash, &mut buf, FetchLimits::default());
    let start = StdInstant::now();
    let now = || Instant::from_millis(start.elapsed().as_millis() as u64);
    let mut their_id = None;
    let mut requests = 0;
    loop {
        let (_, ext) = conn
            .next(deadline)
            .expect("libtorrent closed the connection");
        match ext {
            Some((0, p)) => {
                let theirs = ExtensionHandshake::decode(&p).unwrap();
                their_id = theirs.id_of(b"ut_metadata");
                let size = theirs
                    .metadata_size
                    .expect("libtorrent sends metadata_size");
                assert_eq!(size, info.len() as u64);
                fetch.add_peer(0, size).unwrap();
            }
            Some((OUR_UT_METADATA, p)) => {
                let m = MetadataMsg::decode(&p).unwrap();
                fetch.handle_message(now(), 0, &m).unwrap();
            }
            _ => {}
        }
        if let Some(id) = their_id {
            while let Some((_, piece)) = fetch.poll_request(now()) {
                requests += 1;
                let req = MetadataMsg::Request { piece };
                let mut p = [0u8; 64];
                let n = req.encode(&mut p).unwrap();
                conn.send(&Message::Extended {
                    id,
                    payload: &p[..n],
                });
            }
        }
        if let Some(ev) = fetch.poll_event() {
            assert_eq!(ev, FetchEvent::Complete);
            break;
        }
    }
    assert_eq!(fetch.metadata(), Some(&info[..]));
    assert_eq!(requests, 2);
}

/// The serving side: a libtorrent leecher that has only the magnet link
/// connects to us and gets the metadata from our `answer`s
/// (`ServeBudget`), checks it against the info-hash and reports it.
#[test]
fn metadata_served_to_libtorrent_magnet_leecher() {
    let Some(py) = require_libtorrent() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, info, info_hash) = make_torrent(&py, dir.path());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let magnet = format!(
        "magnet:?xt=urn:btih:{}",
        String::from_utf8(info_hash.to_hex().to_vec()).unwrap()
    );
    let leecher = Proc::spawn(
        "lt-magnet",
        Command::new(&py)
            .arg(repo_root().join("tests/py/lt_magnet.py"))
            .arg(&magnet)
            .arg(port.to_string())
            .args(["--max-seconds", "30"])
            .current_dir(dir.path()),
    );

    let deadline = StdInstant::now() + Duration::from_secs(30);
    let (sock, _) = listener.accept().unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut conn = Conn {
        sock,
        framer: Framer::with_handshake(1 << 20),
        buf: Vec::new(),
    };
    const OUR_UT_METADATA: u8 = 3;
    let mut budget = ServeBudget::default();
    let mut their_id = None;
    let mut served = 0;
    let start = StdInstant::now();
    let report = loop {
        assert!(
            StdInstant::now() < deadline,
            "libtorrent never got the metadata"
        );
        if let Some(line) = leecher.next_line(Duration::ZERO) {
            if line.starts_with("METADATA") {
                break line;
            }
            assert_ne!(line, "TIMEOUT");
        }
        let (hs, ext) = match conn.next(deadline) {
            Ok(frame) => frame,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            // libtorrent may close once it has the metadata (we have no
            // pieces for it): its report follows.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && served > 0 => {
                let left = deadline.saturating_duration_since(StdInstant::now());
                break leecher.next_line(left).expect("libtorrent's report");
            }
            Err(e) => panic!("libtorrent connection after {served} pieces: {e}"),
        };
        if let Some(theirs) = hs {
            assert_eq!(theirs.info_hash, info_hash);
            let ours = Handshake {
                reserved: Reserved::default().with_extension_protocol(true),
                info_hash,
                peer_id: PeerId(*b"-OT0100-metadataserv"),
            };
            conn.sock.write_all(&ours.to_bytes()).unwrap();
            let mut eh = ExtensionHandshake::default();
            eh.m.push((b"ut_metadata", OUR_UT_METADATA)).unwrap();
            eh.metadata_size = Some(info.len() as u64);
            let mut p = [0u8; 128];
            let n = eh.encode(&mut p).unwrap();
            conn.send(&Message::Extended {
                id: 0,
                payload: &p[..n],
            });
        }
        match ext {
            Some((0, p)) => {
                their_id = ExtensionHandshake::decode(&p)
                    .unwrap()
                    .id_of(b"ut_metadata");
            }
            Some((OUR_UT_METADATA, p)) => {
                let MetadataMsg::Request { piece } = MetadataMsg::decode(&p).unwrap() else {
                    panic!("libtorrent sent us something other than a request");
                };
                let now = Instant::from_millis(start.elapsed().as_millis() as u64);
                let reply = budget.answer(now, Some(&info), piece);
                assert!(matches!(reply, MetadataMsg::Data { .. }));
                served += 1;
                let mut out = vec![0u8; reply.encoded_len()];
                reply.encode(&mut out).unwrap();
                conn.send(&Message::Extended {
                    id: their_id.expect("a request before libtorrent's extension handshake"),
                    payload: &out,
                });
            }
            _ => {}
        }
    };
    assert_eq!(
        report,
        format!(
            "METADATA info_hash={} size={} pieces=1280",
            String::from_utf8(info_hash.to_hex().to_vec()).unwrap(),
            info.len()
        )
    );
    assert_eq!(served, 2);
}
