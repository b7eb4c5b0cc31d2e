#!/usr/bin/python3
"""libtorrent peers for OurTorrent's DHT, magnet and PEX tests and the
magnet benchmark, all on 127.0.0.1.

  lt_dht_swarm.py router PORT
  lt_dht_swarm.py seed   PORT TORRENT SAVE_DIR [options]
  lt_dht_swarm.py leech  PORT MAGNET  SAVE_DIR [options]

router: a DHT node that bootstraps from nobody (others bootstrap from it).
seed:   seeds TORRENT's data in SAVE_DIR (seed_mode, no re-hash) and, with
        --router, announces it to the DHT every 2 s (force_dht_announce).
leech:  downloads MAGNET (metadata from peers, BEP 9) into SAVE_DIR; with
        --router, looks it up again every 2 s while it has no peer.
Options:
  --router R        DHT on, bootstrapping from 127.0.0.1:R (else DHT off)
  --connect P       also connect to 127.0.0.1:P (retried every 0.5 s)
  --max-seconds N   give up (leech) or stop (router, seed) after N s (120)
  --report-peers    print "PEER ip:port" for every peer seen connected, and
                    "GONE ip:port why" when one disconnects
  --download-limit B / --upload-limit B   cap the torrent at B bytes/s
  --linger          leech: once done, keep seeding until --max-seconds
  --no-pex          neither send nor use ut_pex for this torrent
  --start-now       leech: not auto-managed (libtorrent's default queues a
                    new torrent and starts it ~0.5 s later)

Prints, one a line, flushed:
  READY port=P                  listening (a seeder's torrent is not
                                auto-managed: it serves at once)
  PEER ip:port                  (--report-peers)
  METADATA seconds=S            (leech) the metadata arrived, S after start
  DONE seconds=S                (leech) complete; exit 0
  TIMEOUT                       (leech) gave up; exit 1
Settings from /work/shared/PEERS.md ("DHT, magnets and PEX on loopback").
Must run under Debian's /usr/bin/python3 (python3-libtorrent).
"""
import argparse
import signal
import time

import libtorrent as lt


def session(port, router):
    return lt.session({
        "listen_interfaces": "127.0.0.1:%d" % port,
        "outgoing_interfaces": "127.0.0.1",
        "enable_dht": router is not None,
        "dht_bootstrap_nodes": "" if not router else "127.0.0.1:%d" % router,
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "enable_ip_notifier": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "out_enc_policy": 2,
        "in_enc_policy": 2,
        "alert_mask": lt.alert.category_t.status_notification
        | lt.alert.category_t.peer_notification
        | lt.alert.category_t.connect_notification
        | lt.alert.category_t.error_notification,
    })


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["router", "seed", "leech"])
    ap.add_argument("port", type=int)
    ap.add_argument("what", nargs="?")
    ap.add_argument("save_dir", nargs="?")
    ap.add_argument("--router", type=int, default=None)
    ap.add_argument("--connect", action="append", default=[])
    ap.add_argument("--max-seconds", type=float, default=120)
    ap.add_argument("--report-peers", action="store_true")
    ap.add_argument("--download-limit", type=int, default=0)
    ap.add_argument("--upload-limit", type=int, default=0)
    ap.add_argument("--linger", action="store_true")
    ap.add_argument("--start-now", action="store_true")
    ap.add_argument("--no-pex", action="store_true")
    a = ap.parse_args()
    stop = {"flag": False}
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.__setitem__("flag", True))
    t0 = time.monotonic()
    if a.role == "router":
        ses = session(a.port, 0)
        print("READY port=%d" % ses.listen_port(), flush=True)
        while not stop["flag"] and time.monotonic() - t0 < a.max_seconds:
            time.sleep(0.1)
        return 0
    ses = session(a.port, a.router)
    if a.role == "seed":
        p = lt.add_torrent_params()
        p.ti = lt.torrent_info(a.what)
        p.flags |= lt.torrent_flags.seed_mode
        # Not auto-managed: an auto-managed torrent starts paused and is
        # resumed ~0.5 s later, and connections before that are reset.
        p.flags &= ~lt.torrent_flags.auto_managed
        p.flags &= ~lt.torrent_flags.paused
    else:
        p = lt.parse_magnet_uri(a.what)
        if a.start_now:
            p.flags &= ~lt.torrent_flags.auto_managed
            p.flags &= ~lt.torrent_flags.paused
    p.save_path = a.save_dir
    if a.no_pex:
        p.flags |= lt.torrent_flags.disable_pex
    h = ses.add_torrent(p)
    if a.download_limit:
        h.set_download_limit(a.download_limit)
    if a.upload_limit:
        h.set_upload_limit(a.upload_limit)
    print("READY port=%d" % ses.listen_port(), flush=True)
    peers = [("127.0.0.1", int(c)) for c in a.connect]
    seen = set()
    got_meta = done = False
    last_connect = last_announce = 0.0
    while not stop["flag"] and time.monotonic() - t0 < a.max_seconds:
        for al in ses.wait_for_alert(50) and ses.pop_alerts() or []:
            if a.report_peers and isinstance(al, lt.peer_disconnected_alert):
                print("GONE %s:%d %s" % (al.endpoint[0], al.endpoint[1], al.message()),
                      flush=True)
            if isinstance(al, lt.metadata_received_alert) and not got_meta:
                got_meta = True
                print("METADATA seconds=%.3f" % (time.monotonic() - t0), flush=True)
        now = time.monotonic()
        # A seeder announces every 2 s; a leecher looks up again every 2 s
        # while it has no peer (libtorrent's own interval is 15 min).
        if a.router and now - last_announce > 2 and (
                a.role == "seed" or h.status().num_peers == 0):
            last_announce = now
            h.force_dht_announce()
        if peers and now - last_connect > 0.5:
            last_connect = now
            for pe in peers:
                h.connect_peer(pe)
        if a.report_peers:
            for pi in h.get_peer_info():
                key = "%s:%d" % (pi.ip[0], pi.ip[1])
                if key not in seen:
                    seen.add(key)
                    print("PEER %s" % key, flush=True)
        if a.role == "leech" and not done:
            st = h.status()
            if st.has_metadata and st.is_seeding:
                done = True
                if not got_meta:
                    print("METADATA seconds=%.3f" % (now - t0), flush=True)
                print("DONE seconds=%.3f" % (time.monotonic() - t0), flush=True)
                if not a.linger:
                    return 0
    if a.role == "leech" and not done:
        print("TIMEOUT", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
