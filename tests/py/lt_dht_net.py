#!/usr/bin/python3
"""A loopback libtorrent DHT for OurTorrent's DHT lookup benchmark
(scripts/bench-dht.sh), all on 127.0.0.1.

  lt_dht_net.py net N INFOHASH [--router R] [--max-seconds S]
  lt_dht_net.py lookup ROUTER INFOHASH [--timeout S]

net:    one process holding N libtorrent DHT sessions. Without --router the
        first is the router (bootstraps from nobody) and the others
        bootstrap from it; with --router all N bootstrap from 127.0.0.1:R.
        The last session is the seeder: it holds a magnet of INFOHASH and
        announces it (force_dht_announce) every 2 s. Prints, flushed:
          ROUTER port=P        (only without --router)
          READY seeder=127.0.0.1:P nodes=N
        then runs until SIGTERM/SIGINT or --max-seconds (600).
lookup: a fresh session bootstrapping from 127.0.0.1:ROUTER; once its table
        holds a node it runs one dht_get_peers(INFOHASH) and prints one JSON
        line: peers, lookup_started_ms and first_peer_ms/done_ms (since the
        session was created; libtorrent reports peers only at the end),
        messages_sent/messages_received (libtorrent's dht.dht_messages_out
        and _in counters, from session start to the reply: bootstrap
        included, as for `shell-std dht --lookup`), and per-kind queries
        sent. Exit 0 if peers were found, 1 if not (or timed out).
Settings from /work/shared/PEERS.md ("DHT, magnets and PEX on loopback").
Must run under Debian's /usr/bin/python3 (python3-libtorrent).
"""
import argparse
import json
import signal
import sys
import tempfile
import time

import libtorrent as lt


def session(router):
    return lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "outgoing_interfaces": "127.0.0.1",
        "enable_dht": True,
        "dht_bootstrap_nodes": "" if router is None else "127.0.0.1:%d" % router,
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        # Every node is on 127.0.0.1: libtorrent's per-IP limit (5 queries/s,
        # then the IP is ignored for 5 min) and its DHT upload cap (8000 B/s)
        # would make the router and busy nodes go silent.
        "dht_block_ratelimit": 1000000,
        "dht_upload_rate_limit": 100000000,
        "enable_ip_notifier": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "alert_mask": lt.alert.category_t.dht_notification
        | lt.alert.category_t.dht_operation_notification
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.error_notification,
    })


KINDS = ["ping", "find_node", "get_peers", "announce_peer"]


def counters(ses, wait_s=2.0):
    """Posts session stats and returns the session_stats_alert's values (a dict by name)."""
    ses.post_session_stats()
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        ses.wait_for_alert(int((end - time.monotonic()) * 1000) + 1)
        for a in ses.pop_alerts():
            if isinstance(a, lt.session_stats_alert):
                return a.values
    return None


def net(a):
    stop = {"flag": False}
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.__setitem__("flag", True))
    sessions = []
    router = a.router
    if router is None:
        r = session(None)
        router = r.listen_port()
        sessions.append(r)
        print("ROUTER port=%d" % router, flush=True)
    while len(sessions) < a.n:
        sessions.append(session(router))
    seeder = sessions[-1]
    # The seeder's torrent: a magnet of INFOHASH (no data is needed for
    # get_peers to return it), announced on its port.
    p = lt.parse_magnet_uri("magnet:?xt=urn:btih:%s" % a.info_hash)
    p.save_path = tempfile.mkdtemp(prefix="lt-dht-net.")
    p.flags &= ~lt.torrent_flags.auto_managed
    p.flags &= ~lt.torrent_flags.paused
    h = seeder.add_torrent(p)
    print("READY seeder=127.0.0.1:%d nodes=%d" % (seeder.listen_port(), len(sessions)),
          flush=True)
    t0 = time.monotonic()
    last = 0.0
    while not stop["flag"] and time.monotonic() - t0 < a.max_seconds:
        if time.monotonic() - last >= 2.0:
            h.force_dht_announce()
            last = time.monotonic()
        for s in sessions:
            s.pop_alerts()
        time.sleep(0.1)
    return 0


def lookup(a):
    t0 = time.monotonic()
    ms = lambda: round((time.monotonic() - t0) * 1000, 1)
    ses = session(a.router)
    end = t0 + a.timeout
    # Like `shell-std dht --lookup`: the lookup starts once the table
    # holds a node.
    while time.monotonic() < end:
        v = counters(ses, 0.5)
        if v is not None and v["dht.dht_nodes"] > 0:
            break
        time.sleep(0.01)
    started_ms = ms()
    ses.dht_get_peers(lt.sha1_hash(bytes.fromhex(a.info_hash)))
    peers, done_ms, timed_out = [], None, True
    while time.monotonic() < end and done_ms is None:
        ses.wait_for_alert(int((end - time.monotonic()) * 1000) + 1)
        for al in ses.pop_alerts():
            if isinstance(al, lt.dht_get_peers_reply_alert):
                peers = ["%s:%d" % p for p in al.peers()]
                done_ms, timed_out = ms(), False
    v = counters(ses) or {}
    out = {
        "lookup": {
            "info_hash": a.info_hash,
            "peers": peers,
            "lookup_started_ms": started_ms,
            "first_peer_ms": done_ms if peers else None,
            "done_ms": done_ms if done_ms is not None else ms(),
            "timed_out": timed_out,
            "messages_sent": v.get("dht.dht_messages_out"),
            "messages_received": v.get("dht.dht_messages_in"),
            "out": {k: v.get("dht.dht_%s_out" % k) for k in KINDS},
        }
    }
    print(json.dumps(out), flush=True)
    return 0 if peers else 1


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="role", required=True)
    n = sub.add_parser("net")
    n.add_argument("n", type=int)
    n.add_argument("info_hash")
    n.add_argument("--router", type=int, default=None)
    n.add_argument("--max-seconds", type=float, default=600)
    lk = sub.add_parser("lookup")
    lk.add_argument("router", type=int)
    lk.add_argument("info_hash")
    lk.add_argument("--timeout", type=float, default=30)
    a = ap.parse_args()
    return net(a) if a.role == "net" else lookup(a)


if __name__ == "__main__":
    sys.exit(main())
