#!/usr/bin/python3
"""A libtorrent peer on 127.0.0.1 for OurTorrent's end-to-end tests and
benchmarks (tracker, client and QEMU tests all drive this one script).

  lt_swarm.py seed  TORRENT SAVE_DIR PORT [options]
  lt_swarm.py leech TORRENT SAVE_DIR PORT [options]

Options:
  --connect [IP:]PORT  add a peer directly (handle.connect_peer), retried
                       every 0.5 s until connected (QEMU's hostfwd accepts
                       before the guest listens); IP defaults to 127.0.0.1
  --no-trackers        ignore the torrent's trackers (only --connect peers)
  --ready-on listen|tracker
                       seed: print "READY port=P" once listening (default)
                       or once a tracker replied
  --max-seconds N      seed: stop after N s (default 300);
                       leech: give up after N s (default 120)
  --download-limit B   cap this torrent's download at B bytes/s
                       (torrent-level, so it applies on loopback too)
  --upload-limit B     cap this torrent's upload at B bytes/s (likewise)
  --report-choke       print every change of a peer choking us
  --progress-every S   print a PROGRESS line every S seconds

Prints, one a line, flushed:
  READY port=P              (seed) see --ready-on
  TRACKER_OK <url> peers=N  a tracker replied to an announce
  TRACKER_ERR <url> <msg>   a tracker announce failed
  PEER <ip:port> <client>   a peer connected (again once its name is known)
  CHOKED <ip:port> t=T      (--report-choke) the peer choked us; T is wall
  UNCHOKED <ip:port> t=T    clock seconds (comparable across processes)
  DONE bytes=N seconds=S MiB/s=R   (leech) complete and verified; exit 0
  PROGRESS t=T wall=W down=D up=U  (--progress-every) T: seconds since the
                            torrent was added; W: wall clock (comparable
                            across processes); D, U: payload bytes received
                            and sent
  TIMEOUT progress=P        (leech) gave up; exit 1
Seeds (seed_mode, no re-hash) until SIGTERM/SIGINT or --max-seconds.

Settings for an all-127.0.0.1 swarm (/work/shared/PEERS.md): loopback
listen/outgoing interfaces, no DHT/LSD/UPnP/NAT-PMP, several connections per
IP, TCP only (uTP on loopback is ~10x slower), announce to every tracker.
Must run under Debian's /usr/bin/python3 (python3-libtorrent).
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
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.tracker_notification
        | lt.alert.category_t.peer_notification
        | lt.alert.category_t.connect_notification,
    })


def peer_addr(s):
    ip, _, port = s.rpartition(":")
    return (ip or "127.0.0.1", int(port))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["seed", "leech"])
    ap.add_argument("torrent")
    ap.add_argument("save_dir")
    ap.add_argument("port", type=int)
    ap.add_argument("--connect", action="append", default=[])
    ap.add_argument("--no-trackers", action="store_true")
    ap.add_argument("--ready-on", choices=["listen", "tracker"], default="listen")
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--download-limit", type=int, default=0)
    ap.add_argument("--upload-limit", type=int, default=0)
    ap.add_argument("--report-choke", action="store_true")
    ap.add_argument("--progress-every", type=float, default=0)
    a = ap.parse_args()
    limit = a.max_seconds or (300 if a.role == "seed" else 120)
    stop = {"flag": False}
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.__setitem__("flag", True))

    ses = session(a.port)
    p = lt.add_torrent_params()
    p.ti = lt.torrent_info(a.torrent)
    p.save_path = a.save_dir
    if a.role == "seed":
        p.flags |= lt.torrent_flags.seed_mode
    t0 = time.monotonic()
    h = ses.add_torrent(p)
    if a.no_trackers:
        h.replace_trackers([])
    if a.download_limit:
        h.set_download_limit(a.download_limit)
    if a.upload_limit:
        h.set_upload_limit(a.upload_limit)
    choked_by = {}
    total = p.ti.total_size()
    peers = [peer_addr(c) for c in a.connect]

    ready = False
    seen = set()
    last_connect = 0.0
    last_progress = 0.0
    while not stop["flag"] and time.monotonic() - t0 < limit:
        time.sleep(0.01)
        now = time.monotonic()
        for al in ses.pop_alerts():
            if isinstance(al, lt.tracker_reply_alert):
                print("TRACKER_OK %s peers=%d" % (al.url, al.num_peers), flush=True)
                if a.role == "seed" and a.ready_on == "tracker" and not ready:
                    ready = True
                    print("READY port=%d" % ses.listen_port(), flush=True)
            elif isinstance(al, lt.tracker_error_alert):
                print("TRACKER_ERR %s %s" % (al.url, al.message()), flush=True)
            elif isinstance(al, (lt.peer_connect_alert, lt.incoming_connection_alert)):
                # A connection may end before the next peer-list poll.
                key = "%s:%d" % (al.endpoint[0], al.endpoint[1])
                if (key, "?") not in seen:
                    seen.add((key, "?"))
                    print("PEER %s ?" % key, flush=True)
        for pi in h.get_peer_info():
            key = "%s:%d" % (pi.ip[0], pi.ip[1])
            client = pi.client.decode("utf-8", "replace") if isinstance(pi.client, bytes) else pi.client
            if (key, client) not in seen:  # the name arrives with the handshake
                seen.add((key, client))
                print("PEER %s %s" % (key, client), flush=True)
            if a.report_choke:
                c = bool(pi.flags & lt.peer_info.remote_choked)
                if choked_by.get(key, True) != c:
                    print("%s %s t=%.3f" % ("CHOKED" if c else "UNCHOKED", key, time.time()),
                          flush=True)
                choked_by[key] = c
        s = h.status()
        if a.progress_every and now - last_progress >= a.progress_every:
            last_progress = now
            print("PROGRESS t=%.3f wall=%.3f down=%d up=%d"
                  % (now - t0, time.time(), s.total_payload_download, s.total_payload_upload),
                  flush=True)
        if peers and s.num_peers < len(peers) and now - last_connect > 0.5:
            last_connect = now
            for peer in peers:
                h.connect_peer(peer)
        if a.role == "seed":
            if a.ready_on == "listen" and not ready and ses.listen_port():
                ready = True
                print("READY port=%d" % ses.listen_port(), flush=True)
        elif s.is_seeding:
            dt = max(now - t0, 1e-6)
            print("DONE bytes=%d seconds=%.3f MiB/s=%.1f" % (total, dt, total / dt / 2**20),
                  flush=True)
            # Let the last have messages and the tracker's "completed" go out.
            if not a.no_trackers:
                h.force_reannounce()
            time.sleep(0.5)
            ses.pause()
            return 0
    ses.pause()
    if a.role == "leech":
        print("TIMEOUT progress=%.3f" % h.status().progress, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
