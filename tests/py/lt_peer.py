#!/usr/bin/python3
"""A libtorrent peer on 127.0.0.1 for the QEMU firmware tests.

  lt_peer.py seed  TORRENT SAVE_DIR PORT [--max-seconds N]
  lt_peer.py leech TORRENT SAVE_DIR PORT --connect HOSTPORT [--max-seconds N]

seed : adds the torrent in seed_mode (no re-hash), announces to the
       torrent's trackers, prints "READY" once a tracker replied, then seeds
       until --max-seconds (default 60) or SIGTERM.
leech: downloads only from 127.0.0.1:HOSTPORT (added with connect_peer,
       again every 0.5 s until connected: QEMU's hostfwd accepts before the
       guest listens), prints "DONE bytes=N seconds=S" and exits 0 once
       complete, or "TIMEOUT" and exits 1. Give it a torrent without
       trackers so that it can only get the data from that peer.

Settings for a 127.0.0.1 swarm (see /work/shared/PEERS.md): loopback
listen, no DHT/LSD/UPnP/NAT-PMP, uTP off, several connections per IP.
Must run under Debian's /usr/bin/python3 (python3-libtorrent).
"""
import argparse
import signal
import sys
import time

import libtorrent as lt


def make_session(port):
    return lt.session(
        {
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
            | lt.alert.category_t.status_notification
            | lt.alert.category_t.tracker_notification
            | lt.alert.category_t.peer_notification
            | lt.alert.category_t.connect_notification,
        }
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["seed", "leech"])
    ap.add_argument("torrent")
    ap.add_argument("save_dir")
    ap.add_argument("port", type=int)
    ap.add_argument("--connect", type=int, default=None)
    ap.add_argument("--max-seconds", type=float, default=60)
    args = ap.parse_args()

    stop = {"flag": False}
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.__setitem__("flag", True))

    ses = make_session(args.port)
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(args.torrent)
    params.save_path = args.save_dir
    if args.role == "seed":
        params.flags |= lt.torrent_flags.seed_mode
    t0 = time.monotonic()
    h = ses.add_torrent(params)
    if args.role == "leech":
        h.replace_trackers([])  # only the peer given with --connect
    total = params.ti.total_size()
    print("%s: info_hash=%s bytes=%d port=%d"
          % (args.role, params.ti.info_hash(), total, args.port), flush=True)

    ready = False
    last_connect = 0.0
    while not stop["flag"] and time.monotonic() - t0 < args.max_seconds:
        time.sleep(0.02)
        for a in ses.pop_alerts():
            name = type(a).__name__
            if "error" in name or "failed" in name or "tracker" in name or "disconnect" in name:
                print("  [%s] %s" % (name, a.message()), flush=True)
            if name == "tracker_reply_alert" and not ready:
                ready = True
                print("READY", flush=True)
        s = h.status()
        if args.role == "leech":
            now = time.monotonic()
            if args.connect and s.num_peers == 0 and now - last_connect > 0.5:
                last_connect = now
                h.connect_peer(("127.0.0.1", args.connect))
            if s.is_seeding:
                print("DONE bytes=%d seconds=%.3f" % (total, now - t0), flush=True)
                # Let the last have messages reach the peer.
                time.sleep(0.3)
                ses.pause()
                return 0
    ses.pause()
    if args.role == "leech":
        print("TIMEOUT progress=%.3f" % h.status().progress, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
