//! `shell-std daemon` with magnet links (BEP 9) and its session DHT
//! (BEP 5), against libtorrent on 127.0.0.1: a magnet with only `x.pe`,
//! a bare magnet (`remote add`) found through a libtorrent DHT router, and
//! a restart that does not fetch the metadata again.

mod daemon_support;

use std::process::Command;
use std::time::Duration;

use daemon_support::*;
use ourtorrent_tests::fixtures::{info_hash_hex, lt_and_tempdir, LtDhtSwarm, LtSeeder};
use ourtorrent_tests::{free_tcp_port, run_bounded};

/// A magnet with only `x.pe` to a libtorrent seeder: `fetching_metadata`,
/// then it downloads byte-identical under the same id; after a restart
/// (seeder gone) it is a torrent at once, never `fetching_metadata`, and
/// its pieces are trusted from the fast-resume data.
#[test]
fn daemon_libtorrent_magnet_x_pe_then_restart_does_not_fetch_again() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (torrent, tree) = fixture(d.path(), 32 << 10, 1_000_000);
    let hex = info_hash_hex(BIN, &torrent);
    let src = d.path().join("src");
    let seed = LtSeeder::new(&py, &torrent, &src)
        .opts(&["--upload-limit", "500000", "--no-trackers"])
        .start();
    let port = seed.port;
    let (dl, state) = (d.path().join("dl"), d.path().join("state"));
    let daemon = Daemon::start(&dl, &state, &[]);
    let id = daemon.add_magnet(&format!(
        "magnet:?xt=urn:btih:{hex}&dn=from-magnet&x.pe=127.0.0.1:{port}"
    ));
    // The same magnet again: 409 with the id.
    let body =
        serde_json::json!({ "magnet": format!("magnet:?xt=urn:btih:{hex}&x.pe=127.0.0.1:{port}") });
    let (st, v) = daemon.req(
        "POST",
        "/api/torrents",
        Some("application/json"),
        body.to_string().as_bytes(),
    );
    assert_eq!(st, 409, "{v}");
    let v = daemon.wait(id, 60, "seeding", |v| v["state"] == "seeding");
    assert_eq!(v["name"], "tree", "{v}");
    assert_eq!(v["info_hash"], hex.as_str());
    same_tree(&tree, &dl.join("tree"));
    daemon.stop();
    drop(seed);

    let daemon = Daemon::start(&dl, &state, &[]);
    let v = daemon.get(&format!("/api/torrents/{id}"));
    assert_ne!(v["state"], "fetching_metadata", "{v}");
    assert_eq!(v["name"], "tree", "{v}");
    let v = daemon.wait(id, 20, "seeding after restart", |v| v["state"] == "seeding");
    assert_eq!(n(&v, "hashed_at_start"), 0, "{v}");
    assert_eq!(n(&v, "trusted_at_start"), n(&v, "pieces"), "{v}");
    daemon.stop();
}

/// A bare magnet (no `x.pe`, no `tr`): the daemon's DHT, bootstrapped from
/// a libtorrent router, finds the libtorrent seeder announced there; the
/// download is byte-identical and the routing table is saved in `--state`.
#[test]
fn daemon_libtorrent_dht_router_and_seeder_to_a_bare_magnet() {
    let Some((py, d)) = lt_and_tempdir() else {
        return;
    };
    let (torrent, tree) = fixture(d.path(), 32 << 10, 500_000);
    let hex = info_hash_hex(BIN, &torrent);
    let dht = LtDhtSwarm::start(&py, &torrent, &d.path().join("src"));
    let router = dht.router_port;
    let (dl, state) = (d.path().join("dl"), d.path().join("state"));
    let boot = format!("127.0.0.1:{router}");
    let daemon = Daemon::start(&dl, &state, &["--dht-bootstrap", &boot]);
    // Through `remote add`, as a user would.
    let url = format!("http://{}", daemon.api);
    let magnet = format!("magnet:?xt=urn:btih:{hex}");
    let (ok, so, se) = run_bounded(
        Command::new(BIN).args(["remote", "--url", &url, "add", &magnet]),
        Duration::from_secs(30),
    );
    assert!(ok && so.starts_with("added: id 1 "), "{so}{se}");
    let id = 1;
    let v = daemon.wait(id, 60, "seeding", |v| v["state"] == "seeding");
    assert_eq!(v["name"], "tree", "{v}");
    same_tree(&tree, &dl.join("tree"));
    daemon.stop();
    let table = std::fs::read_to_string(state.join(".ourtorrent-dht.state"))
        .expect("DHT state saved in --state");
    assert!(table.lines().count() >= 3, "no node saved:\n{table}");
}

/// A magnet whose peer never answers stays `fetching_metadata`, across a
/// restart too (the magnet is stored); removing it forgets it for good.
#[test]
fn daemon_magnet_waiting_for_metadata_survives_a_restart_and_can_be_removed() {
    let d = tempfile::tempdir().unwrap();
    let (dl, state) = (d.path().join("dl"), d.path().join("state"));
    let daemon = Daemon::start(&dl, &state, &[]);
    let closed = free_tcp_port();
    let hex = "0123456789abcdef0123456789abcdef01234567";
    let id = daemon.add_magnet(&format!(
        "magnet:?xt=urn:btih:{hex}&dn=waiting&x.pe=127.0.0.1:{closed}"
    ));
    let v = daemon.get(&format!("/api/torrents/{id}"));
    assert_eq!(v["state"], "fetching_metadata", "{v}");
    assert_eq!(v["name"], "waiting", "{v}");
    assert_eq!(v["info_hash"], hex);
    daemon.stop();
    let daemon = Daemon::start(&dl, &state, &[]);
    let list = daemon.get("/api/torrents");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["state"], "fetching_metadata", "{list}");
    // Nothing to pause or list files of yet: 409, saying why.
    let (st, v) = daemon.req("POST", &format!("/api/torrents/{id}/pause"), None, b"");
    assert_eq!(st, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("metadata"), "{v}");
    let (st, v) = daemon.req("GET", &format!("/api/torrents/{id}/files"), None, b"");
    assert_eq!(st, 409, "{v}");
    let (st, v) = daemon.req("DELETE", &format!("/api/torrents/{id}"), None, b"");
    assert_eq!(st, 200, "{v}");
    assert_eq!(daemon.get("/api/torrents"), serde_json::json!([]));
    daemon.stop();
    let daemon = Daemon::start(&dl, &state, &[]);
    assert_eq!(daemon.get("/api/torrents"), serde_json::json!([]));
    daemon.stop();
}
