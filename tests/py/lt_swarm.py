#!/usr/bin/python3
"""A libtorrent peer on 127.0.0.1 for the tracker tests (run by the Rust tests).

  lt_swarm.py seed  TORRENT SAVE_DIR PORT [--max-seconds N]
  lt_swarm.py leech TORRENT SAVE_DIR PORT [--max-seconds N]

Prints, one a line, flushed:
  TRACKER_OK <url>          a tracker replied to an announce
  TRACKER_ERR <url> <msg>   a tracker announce failed
  PEER <ip:port> <client>   a peer connected (again once its client name is known)
  DONE                      (leech) every piece is downloaded and verified
seed: seeds (seed_mode, no re-hash) until SIGTERM or --max-seconds (120).
leech: exits 0 after DONE, 1 on timeout (--max-seconds, default 60).

Settings for an all-127.0.0.1 swarm: loopback listen/outgoing interfaces,
no DHT/LSD/UPnP/NAT-PMP, several connections per IP, TCP only (uTP on
loopback is very slow), announce to every tracker of every tier.
Must run under Debian's /usr/bin/python3 (python3-libtorrent).
"""
import argparse
import signal
import sys
import time

import libtorrent as lt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["seed", "leech"])
    ap.add_argument("torrent")
    ap.add_argument("save_dir")
    ap.add_argument("port", type=int)
    ap.add_argument("--max-seconds", type=float, default=None)
    args = ap.parse_args()
    max_s = args.max_seconds or (120 if args.role == "seed" else 60)

    stop = {"flag": False}
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.__setitem__("flag", True))

    ses = lt.session({
        "listen_interfaces": "127.0.0.1:%d" % args.port,
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
    })
    p = lt.add_torrent_params()
    p.ti = lt.torrent_info(args.torrent)
    p.save_path = args.save_dir
    if args.role == "seed":
        p.flags |= lt.torrent_flags.seed_mode
    h = ses.add_torrent(p)

    seen = set()
    done = False
    t0 = time.monotonic()
    while not stop["flag"] and time.monotonic() - t0 < max_s:
        time.sleep(0.05)
        for a in ses.pop_alerts():
            if isinstance(a, lt.tracker_reply_alert):
                print("TRACKER_OK %s peers=%d" % (a.url, a.num_peers), flush=True)
            elif isinstance(a, lt.tracker_error_alert):
                print("TRACKER_ERR %s %s" % (a.url, a.message()), flush=True)
            elif isinstance(a, (lt.peer_connect_alert, lt.incoming_connection_alert)):
                # A connection may end before the next peer-list poll (two
                # seeds disconnect at once): report it with client "?".
                key = "%s:%d" % (a.endpoint[0], a.endpoint[1])
                if (key, "?") not in seen:
                    seen.add((key, "?"))
                    print("PEER %s ?" % key, flush=True)
        for pi in h.get_peer_info():
            key = "%s:%d" % (pi.ip[0], pi.ip[1])
            client = pi.client.decode("utf-8", "replace") if isinstance(pi.client, bytes) else pi.client
            # The client name arrives with the handshake: report it again
            # once it is known.
            if (key, client) not in seen:
                seen.add((key, client))
                print("PEER %s %s" % (key, client), flush=True)
        if args.role == "leech" and not done and h.status().is_seeding:
            done = True
            print("DONE", flush=True)
            # Let the tracker hear "completed" before leaving.
            h.force_reannounce()
            time.sleep(0.5)
            return 0
    if args.role == "leech":
        return 0 if done else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
