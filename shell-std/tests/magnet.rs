//! `shell-std client download 'magnet:?…'` end to end on 127.0.0.1: the
//! metadata fetched from real peers (libtorrent, our own seeder found
//! through our tracker), checked against the info-hash, then the download
//! byte-identical; and a hostile peer whose metadata does not hash is
//! refused while an honest one completes the download. Test names carry
//! the third party's name.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use common::Tracker;
use ourtorrent_core::id::InfoHash;
use ourtorrent_core::wire::metadata::MetadataMsg;
use ourtorrent_core::wire::{
    ExtensionHandshake, Frame, Framer, Handshake, Message, Reserved, Status,
};
use ourtorrent_tests::fixtures::{
    assert_same_tree, info_hash_hex, lt_and_tempdir, tree_torrent, LtDhtPeer, LtDhtSwarm, LtSeeder,
    OurSeeder,
};
use ourtorrent_tests::{free_tcp_port, free_tcp_udp_port, run, run_bounded, write_data, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_shell-std");

/// `dir/src/tree` and a torrent of it announcing to `tracker` (none when
/// empty); returns (torrent, tree, info-hash hex).
fn fixture(dir: &Path, tracker: &str) -> (PathBuf, PathBuf, String) {
    let tracker = (!tracker.is_empty()).then_some(tracker);
    let (torrent, tree) = tree_torrent(BIN, dir, 32768, 1_500_000, tracker);
    let hex = info_hash_hex(BIN, &torrent);
    (torrent, tree, hex)
}

/// `client download MAGNET --out OUT --no-seed --quiet` plus `extra`
/// (and `--listen 127.0.0.1:0` unless `extra` has one), bounded.
fn download_magnet(magnet: &str, out: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["client", "download", magnet, "--out"])
        .arg(out)
        .args(["--no-seed", "--quiet"])
        .args(extra);
    if !extra.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    run_bounded(&mut cmd, Duration::from_secs(60))
}

#[test]
fn libtorrent_seeder_magnet_with_only_x_pe() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (torrent, tree, hex) = fixture(d.path(), "http://127.0.0.1:9/announce");
    let src = d.path().join("src");
    let seed = LtSeeder::new(&py, &torrent, &src)
        .opts(&["--no-trackers"])
        .start();
    let port = seed.port;
    let magnet = format!("magnet:?xt=urn:btih:{hex}&dn=tree&x.pe=127.0.0.1:{port}");
    let out = d.path().join("out");
    let saved = d.path().join("saved.torrent");
    let (ok, so, se) = download_magnet(
        &magnet,
        &out,
        &["--save-torrent", saved.to_str().unwrap(), "--no-dht"],
    );
    assert!(ok, "magnet download failed:\n{so}\n{se}");
    assert!(so.contains("metadata: "), "{so}");
    assert!(so.contains("resumed: 0 of 51"), "{so}");
    assert_same_tree(&tree, &out.join("tree"));
    // The saved .torrent has the same info-hash as the original.
    let info = run(Command::new(BIN).arg("info").arg(&saved).arg("--json"));
    assert!(info.contains(&hex), "{info}");
}

/// A magnet with only `tr=` to our tracker: our seeder announced there and
/// serves the metadata (BEP 9) and the data.
#[test]
fn magnet_with_only_tr_to_our_tracker_and_our_seeder() {
    let tracker = Tracker::start(&["--no-db"]);
    let url = format!("http://{}/announce", tracker.http);
    let d = tempfile::tempdir().unwrap();
    let (torrent, tree, hex) = fixture(d.path(), &url);
    let _seed = OurSeeder::new(BIN)
        .name("seed")
        .torrent(&torrent, &tree)
        .port(free_tcp_port())
        .opts(["--quiet", "--no-dht"])
        .start();
    let magnet = format!(
        "magnet:?xt=urn:btih:{hex}&tr={}",
        url.replace(':', "%3A").replace('/', "%2F")
    );
    let out = d.path().join("out");
    let (ok, so, se) = download_magnet(&magnet, &out, &["--no-dht"]);
    assert!(ok, "magnet download failed:\n{so}\n{se}");
    assert!(so.contains("metadata: "), "{so}");
    assert_same_tree(&tree, &out.join("tree"));
}

/// A fake peer: answers the handshakes offering `ut_metadata` with the
/// real `metadata_size`, and every request with bytes of the right length
/// that are not the metadata. Reports each piece it served on `served`.
fn fake_metadata_peer(ih: InfoHash, size: usize, served: mpsc::Sender<u32>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let served = served.clone();
            std::thread::spawn(move || {
                let _ = fake_conn(&mut s, ih, size, &served);
            });
        }
    });
    port
}

fn fake_conn(
    s: &mut TcpStream,
    ih: InfoHash,
    size: usize,
    served: &mpsc::Sender<u32>,
) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let hs = Handshake {
        reserved: Reserved::default().with_extension_protocol(true),
        info_hash: ih,
        peer_id: ourtorrent_core::id::PeerId(*b"-XX0001-fakefakefake"),
    };
    s.write_all(&hs.to_bytes())?;
    let eh = format!("d1:md11:ut_metadatai2ee13:metadata_sizei{size}ee");
    let mut out = vec![0u8; 64 + eh.len()];
    let n = Message::Extended {
        id: 0,
        payload: eh.as_bytes(),
    }
    .encode(&mut out)
    .unwrap();
    s.write_all(&out[..n])?;
    let mut framer = Framer::with_handshake(1 << 20);
    let mut buf = Vec::new();
    let mut their_id = None;
    let mut chunk = [0u8; 4096];
    loop {
        let k = s.read(&mut chunk)?;
        if k == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..k]);
        let mut pos = 0;
        let mut replies = Vec::new();
        while let Ok(Status::Complete((f, n))) = framer.parse(&buf[pos..]) {
            pos += n;
            match f {
                Frame::Message(Message::Extended { id: 0, payload }) => {
                    their_id = ExtensionHandshake::decode(payload)
                        .ok()
                        .and_then(|h| h.id_of(b"ut_metadata"));
                }
                Frame::Message(Message::Extended { id: 2, payload }) => {
                    if let (Some(t), Ok(MetadataMsg::Request { piece })) =
                        (their_id, MetadataMsg::decode(payload))
                    {
                        let start = piece as usize * 16384;
                        let len = (size - start).min(16384);
                        let junk = vec![b'x'; len];
                        let m = MetadataMsg::Data {
                            piece,
                            total_size: size as u32,
                            data: &junk,
                        };
                        let mut p = vec![0u8; m.encoded_len()];
                        let n = m.encode(&mut p).unwrap();
                        let mut w = vec![0u8; n + 16];
                        let k = Message::Extended {
                            id: t,
                            payload: &p[..n],
                        }
                        .encode(&mut w)
                        .unwrap();
                        replies.extend_from_slice(&w[..k]);
                        let _ = served.send(piece);
                    }
                }
                _ => {}
            }
        }
        buf.drain(..pos);
        s.write_all(&replies)?;
    }
}

/// Hostile: the first peer's metadata does not hash to the info-hash. It
/// is refused (and banned); a second fake offers a `metadata_size` over
/// the 4 MiB limit and is never asked; the honest libtorrent seeder, which
/// comes up only after the first fake served, gives the real metadata and
/// the data.
#[test]
fn libtorrent_seeder_completes_a_magnet_after_a_peer_with_bad_metadata() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (torrent, tree, hex) = fixture(d.path(), "http://127.0.0.1:9/announce");
    let size = metadata_size(&torrent);
    let ih = InfoHash::from_hex(hex.as_bytes()).unwrap();
    let (tx, served) = mpsc::channel();
    let fake = fake_metadata_peer(ih, size, tx);
    let (tx_big, asked_big) = mpsc::channel();
    let big = fake_metadata_peer(ih, 5 << 20, tx_big);
    let honest = free_tcp_port();
    let magnet = format!(
        "magnet:?xt=urn:btih:{hex}&x.pe=127.0.0.1:{fake}&x.pe=127.0.0.1:{big}\
         &x.pe=127.0.0.1:{honest}"
    );
    let out = d.path().join("out");
    let mut client = Proc::spawn(
        "client",
        Command::new(BIN)
            .args(["client", "download", &magnet, "--out"])
            .arg(&out)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--no-seed",
                "--quiet",
                "--no-dht",
            ]),
    );
    served
        .recv_timeout(Duration::from_secs(20))
        .expect("the fake peer was asked for the metadata");
    let _seed = LtDhtPeer::seed(honest, &torrent, &d.path().join("src"))
        .report_peers()
        .max_seconds(60)
        .start(&py);
    let line = client.wait_for("metadata:", Duration::from_secs(40));
    assert!(line.contains("(1 refused)"), "{line}");
    client.wait_for("complete:", Duration::from_secs(40));
    assert!(client.wait_exit(Duration::from_secs(10)).success());
    assert_same_tree(&tree, &out.join("tree"));
    assert!(
        asked_big.try_recv().is_err(),
        "the peer offering 5 MiB of metadata was asked for a piece"
    );
}

/// Length of the `info` value of a .torrent (the metadata size, BEP 9).
fn metadata_size(torrent: &Path) -> usize {
    let b = std::fs::read(torrent).unwrap();
    let mut tokens = vec![ourtorrent_core::bencode::Token::EMPTY; 4096];
    let m = ourtorrent_core::metainfo::Metainfo::parse(
        &b,
        &mut tokens,
        &ourtorrent_core::metainfo::Limits::default(),
    )
    .unwrap();
    m.info_bytes().len()
}

/// BEP 5 + BEP 9: a libtorrent DHT router and a libtorrent seeder of a
/// trackerless torrent announcing there; our client, given only the
/// magnet and `--dht-bootstrap` to the router, finds the seeder through
/// the DHT, fetches the metadata and downloads byte-identical; its routing
/// table is saved in the output folder on exit.
#[test]
fn libtorrent_dht_router_and_seeder_to_our_magnet_client() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (torrent, tree, hex) = fixture(d.path(), "");
    let dht = LtDhtSwarm::start(&py, &torrent, &d.path().join("src"));
    let router = dht.router_port;
    let out = d.path().join("out");
    let magnet = format!("magnet:?xt=urn:btih:{hex}");
    let listen = format!("127.0.0.1:{}", free_tcp_udp_port());
    let (ok, so, se) = download_magnet(
        &magnet,
        &out,
        &[
            "--dht-bootstrap",
            &format!("127.0.0.1:{router}"),
            "--listen",
            &listen,
        ],
    );
    assert!(ok, "magnet download over the DHT failed:\n{so}\n{se}");
    assert!(so.contains("metadata: "), "{so}");
    assert_same_tree(&tree, &out.join("tree"));
    let state =
        std::fs::read_to_string(out.join(".ourtorrent-dht.state")).expect("DHT state saved");
    assert!(state.lines().count() >= 3, "no node saved:\n{state}");
}

/// The other way: our seeder announces to the DHT through our own
/// `shell-std dht` router; a libtorrent leecher with only the magnet finds
/// it there, gets the metadata from it (BEP 9) and the data.
#[test]
fn libtorrent_leecher_finds_our_seeder_through_our_dht_router() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (torrent, tree, hex) = fixture(d.path(), "");
    let router = Proc::spawn(
        "dht",
        Command::new(BIN)
            .args(["dht", "--listen", "127.0.0.1:0", "--state"])
            .arg(d.path().join("router.state")),
    );
    let line = router.wait_for("dht listening on", Duration::from_secs(10));
    let raddr: std::net::SocketAddr = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    let _seed = OurSeeder::new(BIN)
        .name("seed")
        .torrent(&torrent, &tree)
        .port(free_tcp_udp_port())
        .opts(["--quiet", "--dht-bootstrap", &raddr.to_string()])
        .start();
    let save = d.path().join("lt");
    std::fs::create_dir_all(&save).unwrap();
    let magnet = format!("magnet:?xt=urn:btih:{hex}");
    let mut leech = LtDhtPeer::leech(free_tcp_udp_port(), &magnet, &save)
        .dht_router(raddr.port())
        .max_seconds(60)
        .start(&py);
    leech.wait_for("METADATA", Duration::from_secs(60));
    leech.wait_for("DONE", Duration::from_secs(60));
    // Its files are complete once it has closed them.
    assert!(leech.wait_exit(Duration::from_secs(20)).success());
    assert_same_tree(&tree, &save.join("tree"));
}

/// BEP 11, receiving: our client knows only a libtorrent leecher A (slowed
/// down, so it stays connected to its seeder B); A's PEX tells us of B, we
/// dial B and the download completes; the address book counts B as PEX.
#[test]
fn libtorrent_pex_tells_our_client_of_a_seeder_it_did_not_know() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (torrent, tree, hex) = fixture(d.path(), "");
    let b = free_tcp_port();
    let _b = LtDhtPeer::seed(b, &torrent, &d.path().join("src"))
        .max_seconds(60)
        .start(&py);
    let a = free_tcp_port();
    let a_save = d.path().join("a");
    std::fs::create_dir_all(&a_save).unwrap();
    let magnet = format!("magnet:?xt=urn:btih:{hex}");
    let a_proc = LtDhtPeer::leech(a, &magnet, &a_save)
        .connect(b)
        .download_limit(20000)
        .linger()
        .report_peers()
        .max_seconds(60)
        .start(&py);
    a_proc.wait_for(&format!("PEER 127.0.0.1:{b}"), Duration::from_secs(20));
    let out = d.path().join("out");
    let (ok, so, se) = run_bounded(
        Command::new(BIN)
            .args(["client", "download"])
            .arg(&torrent)
            .arg("--out")
            .arg(&out)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--peer",
                &format!("127.0.0.1:{a}"),
                "--no-trackers",
                "--no-dht",
                "--no-seed",
            ]),
        Duration::from_secs(60),
    );
    assert!(ok, "download failed:\n{so}\n{se}");
    let known = so
        .lines()
        .find(|l| l.starts_with("peers known:"))
        .unwrap_or_else(|| panic!("no 'peers known' line:\n{so}"));
    assert!(known.contains("PEX 1"), "{known}");
    // The swarm table has the same count in its PEX row.
    let row = so
        .lines()
        .find(|l| l.contains(" PEX "))
        .unwrap_or_else(|| panic!("no swarm table:\n{so}"));
    let cells: Vec<&str> = row
        .split(['│', '┆'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(cells.get(..2), Some(&["PEX", "1"][..]), "{row}");
    assert_same_tree(&tree, &out.join("tree"));
}

/// BEP 11, sending: a libtorrent seeder B (upload-limited, so our download
/// stays connected to it; its PEX off, so it cannot learn L from us and
/// dial it first), our client downloading from B, and a libtorrent leecher
/// L that knows only our client: our PEX tells L of B, and L connects to
/// B's listening port.
#[test]
fn libtorrent_leecher_learns_a_seeder_from_our_pex() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (torrent, _tree, hex) = fixture(d.path(), "");
    let b = free_tcp_port();
    let _b = LtDhtPeer::seed(b, &torrent, &d.path().join("src"))
        .upload_limit(60000)
        .no_pex()
        .max_seconds(60)
        .start(&py);
    let ours = free_tcp_port();
    let _client = Proc::spawn(
        "ours",
        Command::new(BIN)
            .args(["client", "download"])
            .arg(&torrent)
            .arg("--out")
            .arg(d.path().join("out"))
            .args([
                "--listen",
                &format!("127.0.0.1:{ours}"),
                "--peer",
                &format!("127.0.0.1:{b}"),
                "--no-trackers",
                "--no-dht",
                "--quiet",
            ]),
    );
    let l_save = d.path().join("l");
    std::fs::create_dir_all(&l_save).unwrap();
    let magnet = format!("magnet:?xt=urn:btih:{hex}");
    let l = LtDhtPeer::leech(free_tcp_port(), &magnet, &l_save)
        .connect(ours)
        .report_peers()
        .max_seconds(40)
        .start(&py);
    l.wait_for(&format!("PEER 127.0.0.1:{b}"), Duration::from_secs(30));
}

/// A magnet stopped by `--max-pieces`, then the same magnet and a .torrent
/// in one command (one session): the magnet's metadata is fetched again
/// from its `x.pe` libtorrent seeder and only its missing pieces are
/// downloaded (resume); the .torrent's data comes from a second libtorrent
/// seeder (`--peer`); both finish byte-identical.
#[test]
fn libtorrent_seeders_a_magnet_resumes_beside_a_torrent_in_one_command() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (t1, tree, hex) = fixture(d.path(), "");
    let one = d.path().join("src2/one.bin");
    write_data(&one, 700_000, 77);
    let t2 = d.path().join("two.torrent");
    run(Command::new(BIN)
        .arg("create")
        .arg(&one)
        .args(["--piece-length", "32768", "-o"])
        .arg(&t2));
    // Slow (~4 s for the 1.6 MB): the first run stops long before the end.
    let (src, src2) = (d.path().join("src"), d.path().join("src2"));
    let s1 = LtSeeder::new(&py, &t1, &src)
        .opts(&["--upload-limit", "400000"])
        .start();
    let s2 = LtSeeder::new(&py, &t2, &src2).start();
    let (p1, p2) = (s1.port, s2.port);
    let magnet = format!("magnet:?xt=urn:btih:{hex}&x.pe=127.0.0.1:{p1}");
    let out = d.path().join("out");
    let (ok, so, se) = download_magnet(&magnet, &out, &["--no-dht", "--max-pieces", "10"]);
    assert!(ok && so.contains("stopped after"), "{so}\n{se}");
    let (ok, so, se) = run_bounded(
        Command::new(BIN)
            .args(["client", "download", &magnet])
            .arg(&t2)
            .arg("--out")
            .arg(&out)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--peer",
                &format!("127.0.0.1:{p2}"),
                "--no-dht",
                "--no-seed",
                "--quiet",
            ]),
        Duration::from_secs(60),
    );
    assert!(ok, "{so}\n{se}");
    assert!(so.contains("metadata: "), "{so}");
    let resumed: u64 = so
        .lines()
        .filter_map(|l| l.strip_prefix("resumed: "))
        .find(|l| l.contains(" of 51 "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no resumed line for the magnet:\n{so}"));
    assert!(resumed >= 10, "{so}");
    assert_same_tree(&tree, &out.join("tree"));
    assert!(
        std::fs::read(&one).unwrap() == std::fs::read(out.join("one.bin")).unwrap_or_default(),
        "one.bin differs:\n{so}"
    );
}

/// BEP 27: a private torrent's connections offer no `ut_pex` (and still
/// serve its metadata); a public one's offer both.
#[test]
fn private_torrents_offer_no_pex() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("p.bin");
    write_data(&data, 100_000, 5);
    for private in [true, false] {
        let t = d.path().join(format!("p{private}.torrent"));
        let mut c = Command::new(BIN);
        c.arg("create")
            .arg(&data)
            .args(["--tracker", "http://127.0.0.1:9/a", "-o"])
            .arg(&t);
        if private {
            c.arg("--private");
        }
        run(&mut c);
        let port = free_tcp_port();
        let _seed = OurSeeder::new(BIN)
            .name("seed")
            .torrent(&t, &data)
            .port(port)
            .opts(["--quiet", "--no-trackers"])
            .start();
        let ih = InfoHash::from_hex(
            serde_json::from_str::<serde_json::Value>(&run(Command::new(BIN)
                .args(["info", "--json"])
                .arg(&t)))
            .unwrap()["info_hash"]
                .as_str()
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        let m = their_extension_handshake(port, ih);
        assert!(m.contains("ut_metadata"), "{m}");
        assert_eq!(m.contains("ut_pex"), !private, "private {private}: {m}");
    }
}

/// Connects to 127.0.0.1:`port` for `ih` and returns the peer's BEP 10
/// handshake payload (lossy text).
fn their_extension_handshake(port: u16, ih: InfoHash) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let hs = Handshake {
        reserved: Reserved::default().with_extension_protocol(true),
        info_hash: ih,
        peer_id: ourtorrent_core::id::PeerId(*b"-XX0001-probeprobepr"),
    };
    s.write_all(&hs.to_bytes()).unwrap();
    let mut framer = Framer::with_handshake(1 << 20);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before the extension handshake");
        buf.extend_from_slice(&chunk[..n]);
        let mut pos = 0;
        while let Ok(Status::Complete((f, k))) = framer.parse(&buf[pos..]) {
            pos += k;
            if let Frame::Message(Message::Extended { id: 0, payload }) = f {
                return String::from_utf8_lossy(payload).into_owned();
            }
        }
        buf.drain(..pos);
    }
}

/// Two magnets in one command, each with its own libtorrent seeder in
/// `x.pe`, and `--save-torrent DIR`: both download byte-identical and each
/// metadata is saved as `DIR/NAME.torrent` with the magnet's info-hash.
#[test]
fn libtorrent_seeders_two_magnets_in_one_command_save_their_torrents() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let mut magnets = Vec::new();
    let mut seeds = Vec::new();
    let mut files = Vec::new();
    for (i, len) in [(1u64, 300_000usize), (2, 500_000)] {
        let data = d.path().join(format!("src{i}/m{i}.bin"));
        write_data(&data, len, 100 + i);
        let t = d.path().join(format!("m{i}.torrent"));
        run(Command::new(BIN)
            .arg("create")
            .arg(&data)
            .args(["--piece-length", "16384", "-o"])
            .arg(&t));
        let hex = info_hash_hex(BIN, &t);
        let port = free_tcp_port();
        let src = d.path().join(format!("src{i}"));
        seeds.push(
            LtDhtPeer::seed(port, &t, &src)
                .report_peers()
                .max_seconds(60)
                .start(&py),
        );
        magnets.push(format!("magnet:?xt=urn:btih:{hex}&x.pe=127.0.0.1:{port}"));
        files.push((data, hex, format!("m{i}.bin")));
    }
    let out = d.path().join("out");
    let saved = d.path().join("saved");
    std::fs::create_dir_all(&saved).unwrap();
    let (ok, so, se) = run_bounded(
        Command::new(BIN)
            .args(["client", "download"])
            .args(&magnets)
            .arg("--out")
            .arg(&out)
            .arg("--save-torrent")
            .arg(&saved)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--no-dht",
                "--no-seed",
                "--quiet",
            ]),
        Duration::from_secs(60),
    );
    assert!(ok, "{so}\n{se}");
    for (data, hex, name) in &files {
        assert!(
            std::fs::read(data).unwrap() == std::fs::read(out.join(name)).unwrap_or_default(),
            "{name} differs:\n{so}"
        );
        let t = saved.join(format!("{name}.torrent"));
        let info = run(Command::new(BIN).args(["info", "--json"]).arg(&t));
        assert!(info.contains(hex.as_str()), "{}: {info}", t.display());
    }
}
