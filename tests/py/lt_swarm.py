#!/usr/bin/python3
"""A libtorrent peer for OurTorrent's end-to-end tests and benchmark.

  lt_swarm.py seed  TORRENT SAVE_DIR PORT [--connect IP:PORT]... [--max-seconds N]
  lt_swarm.py leech TORRENT SAVE_DIR PORT [--connect IP:PORT]... [--max-seconds N]

Runs under Debian's /usr/bin/python3 (python3-libtorrent). Loopback settings
(see PEERS.md): listen on 127.0.0.1:PORT, no DHT/LSD/UPnP/NAT-PMP, TCP only
(uTP off), several peers per IP allowed, announce to every tracker.

seed : adds the torrent in seed_mode (no re-hash) and prints "READY port=P"
       once listening; seeds until SIGTERM/SIGINT or --max-seconds (300).
leech: prints "DONE bytes=.. seconds=.. MiB/s=.." and exits 0 when complete,
       1 on timeout (--max-seconds, default 120).
--connect adds a peer directly (handle.connect_peer), no tracker needed.
"""
import argparse
import signal
import sys
import time

import libtorrent as lt


def session(port):
    return lt.session({
        "listen_interfaces": "127.0.0.1:%d" % port,
        "outgoing_interfaces": "127.0.0.1",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "announce_to_all_tiers": True,
        "announce_to_all_trackers": True,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification,
    })


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["seed", "leech"])
    ap.add_argument("torrent")
    ap.add_argument("save_dir")
    ap.add_argument("port", type=int)
    ap.add_argument("--connect", action="append", default=[])
    ap.add_argument("--max-seconds", type=float, default=None)
    a = ap.parse_args()
    limit = a.max_seconds or (300 if a.role == "seed" else 120)
    stop = {"flag": False}
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.__setitem__("flag", True))

    ses = session(a.port)
    p = lt.add_torrent_params()
    p.ti = lt.torrent_info(a.torrent)
    p.save_path = a.save_dir
    if a.role == "seed":
        p.flags |= lt.torrent_flags.seed_mode
    t0 = time.monotonic()
    h = ses.add_torrent(p)
    total = p.ti.total_size()
    peers = []
    for c in a.connect:
        ip, port = c.rsplit(":", 1)
        peers.append((ip, int(port)))
    connected_at = 0.0
    ready = False
    while not stop["flag"]:
        time.sleep(0.01)
        now = time.monotonic()
        for al in ses.pop_alerts():
            if "error" in type(al).__name__ or "failed" in type(al).__name__:
                print("  [%s] %s" % (type(al).__name__, al.message()), flush=True)
        if peers and now - connected_at > 2:  # (re)try direct peers
            connected_at = now
            for ip, port in peers:
                h.connect_peer((ip, port))
        s = h.status()
        if a.role == "seed":
            if not ready and ses.listen_port():
                ready = True
                print("READY port=%d" % ses.listen_port(), flush=True)
        elif s.is_seeding or s.state == lt.torrent_status.seeding:
            dt = now - t0
            print("DONE bytes=%d seconds=%.3f MiB/s=%.1f" % (total, dt, total / dt / 2**20),
                  flush=True)
            return 0
        if now - t0 > limit:
            break
    if a.role == "leech":
        print("TIMEOUT progress=%.1f%%" % (h.status().progress * 100), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
