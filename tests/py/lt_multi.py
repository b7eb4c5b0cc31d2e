#!/usr/bin/python3
"""One libtorrent session holding many torrents on 127.0.0.1, for the
daemon benchmark (scripts/bench-daemon.sh).

  lt_multi.py seed  SAVE_DIR PORT TORRENT...   seed them all (seed_mode)
  lt_multi.py leech SAVE_DIR PORT --connect [IP:]PORT TORRENT...

Prints, one a line, flushed:
  READY port=P                      (seed) every torrent seeding
  DONE seconds=S cpu=C rss_kib=R    (leech) every torrent complete: wall
                                    seconds since the first add, this
                                    process's CPU seconds (user + system)
                                    and peak RSS (KiB); exit 0
  TIMEOUT done=N of=M               (leech) gave up after --max-seconds
Settings as lt_swarm.py (loopback, no DHT/LSD/UPnP, TCP only), and no
per-session limits that would cap 20 torrents (active_downloads/seeds,
connections).
"""
import argparse
import resource
import signal
import sys
import time

import libtorrent as lt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["seed", "leech"])
    ap.add_argument("save_dir")
    ap.add_argument("port", type=int)
    ap.add_argument("torrents", nargs="+")
    ap.add_argument("--connect", default=None)
    ap.add_argument("--max-seconds", type=float, default=300)
    a = ap.parse_args()
    stop = {"flag": False}
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.__setitem__("flag", True))
    ses = lt.session({
        "listen_interfaces": "127.0.0.1:%d" % a.port,
        "outgoing_interfaces": "127.0.0.1",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,

        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "active_downloads": -1,
        "active_seeds": -1,
        "active_limit": -1,
        "connections_limit": 2000,
    })
    peer = None
    if a.connect:
        ip, _, port = a.connect.rpartition(":")
        peer = (ip or "127.0.0.1", int(port))
    t0 = time.monotonic()
    handles = []
    for t in a.torrents:
        p = lt.add_torrent_params()
        p.ti = lt.torrent_info(t)
        p.save_path = a.save_dir
        if a.role == "seed":
            p.flags |= lt.torrent_flags.seed_mode
        h = ses.add_torrent(p)
        h.replace_trackers([])
        handles.append(h)
    ready = False
    last_connect = 0.0
    while not stop["flag"] and time.monotonic() - t0 < a.max_seconds:
        time.sleep(0.02)
        ses.pop_alerts()
        if a.role == "seed":
            # Peers are refused until a torrent is seeding: ready once all are.
            if not ready and all(h.status().is_seeding for h in handles):
                ready = True
                print("READY port=%d" % ses.listen_port(), flush=True)
            continue
        now = time.monotonic()
        done = sum(1 for h in handles if h.status().is_seeding)
        if done == len(handles):
            ru = resource.getrusage(resource.RUSAGE_SELF)
            print("DONE seconds=%.3f cpu=%.3f rss_kib=%d"
                  % (now - t0, ru.ru_utime + ru.ru_stime, ru.ru_maxrss), flush=True)
            ses.pause()
            return 0
        if peer and now - last_connect > 0.5:
            last_connect = now
            for h in handles:
                if h.status().num_peers == 0:
                    h.connect_peer(peer)
    ses.pause()
    if a.role == "leech":
        done = sum(1 for h in handles if h.status().is_seeding)
        print("TIMEOUT done=%d of=%d" % (done, len(handles)), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
