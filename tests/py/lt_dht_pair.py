#!/usr/bin/python3
"""Two libtorrent DHT nodes on 127.0.0.1 that know only a given router.

  lt_dht_pair.py ROUTER_PORT SEED_PORT LEECH_PORT INFO_HASH_HEX SAVE_DIR

The "seeder" (on SEED_PORT) adds a magnet for INFO_HASH_HEX and keeps
announcing it to the DHT; the "leecher" (on LEECH_PORT) looks it up with
dht_get_peers every 2 s. Both bootstrap only from 127.0.0.1:ROUTER_PORT.
Prints "READY" once both listen, then "FOUND ip:port ..." for the first
get_peers reply listing the seeder, or "NOTFOUND" after 60 s; then exits.
Settings from /work/shared/PEERS.md ("DHT, magnets and PEX on loopback").
Must run under Debian's /usr/bin/python3 (python3-libtorrent).
"""
import sys
import time

import libtorrent as lt


def session(port, router_port):
    return lt.session({
        'listen_interfaces': '127.0.0.1:%d' % port,
        'outgoing_interfaces': '127.0.0.1',
        'enable_dht': True,
        'dht_bootstrap_nodes': '127.0.0.1:%d' % router_port,
        'dht_restrict_routing_ips': False,
        'dht_restrict_search_ips': False,
        'enable_ip_notifier': False,
        'enable_lsd': False,
        'enable_upnp': False,
        'enable_natpmp': False,
        'enable_outgoing_utp': False,
        'enable_incoming_utp': False,
        'alert_mask': lt.alert.category_t.dht_notification
        | lt.alert.category_t.dht_operation_notification
        | lt.alert.category_t.status_notification,
    })


def main():
    router, seed_port, leech_port = (int(a) for a in sys.argv[1:4])
    info_hash, save_dir = sys.argv[4], sys.argv[5]
    seeder = session(seed_port, router)
    leecher = session(leech_port, router)
    params = lt.parse_magnet_uri('magnet:?xt=urn:btih:' + info_hash)
    params.save_path = save_dir
    handle = seeder.add_torrent(params)
    want = lt.sha1_hash(bytes.fromhex(info_hash))
    print('READY', flush=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        handle.force_dht_announce()
        leecher.dht_get_peers(want)
        until = time.time() + 2
        while time.time() < until:
            leecher.wait_for_alert(200)
            seeder.pop_alerts()
            for a in leecher.pop_alerts():
                if isinstance(a, lt.dht_get_peers_reply_alert) \
                        and a.info_hash == want \
                        and ('127.0.0.1', seed_port) in a.peers():
                    print('FOUND ' + ' '.join('%s:%d' % p for p in a.peers()),
                          flush=True)
                    return
    print('NOTFOUND', flush=True)


if __name__ == '__main__':
    main()
