#!/usr/bin/python3
"""Two libtorrent DHT nodes on 127.0.0.1 for OurTorrent's DHT tests.

  lt_dht.py ROUTER_PORT NODE_PORT INFO_HASH_HEX SAVE_DIR

Starts a router (no bootstrap) and a node bootstrapped from it; the node
adds a magnet for INFO_HASH_HEX and keeps announcing it to the DHT (on
NODE_PORT). Prints "READY" once both listen, then reads commands on stdin:
  GETPEERS HEX   the node looks HEX up (dht_get_peers, retried every 2 s
                 for up to 30 s); prints "PEERS ip:port ..." for the first
                 reply listing peers, or "NOPEERS"
  QUIT           exit
Settings from /work/shared/PEERS.md ("DHT, magnets and PEX on loopback").
Must run under Debian's /usr/bin/python3 (python3-libtorrent).
"""
import sys
import threading
import time

import libtorrent as lt


def session(port, bootstrap):
    return lt.session({
        'listen_interfaces': '127.0.0.1:%d' % port,
        'outgoing_interfaces': '127.0.0.1',
        'enable_dht': True,
        'dht_bootstrap_nodes': bootstrap,
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
    router_port, node_port = int(sys.argv[1]), int(sys.argv[2])
    info_hash, save_dir = sys.argv[3], sys.argv[4]
    router = session(router_port, '')
    node = session(node_port, '127.0.0.1:%d' % router_port)
    params = lt.parse_magnet_uri('magnet:?xt=urn:btih:' + info_hash)
    params.save_path = save_dir
    handle = node.add_torrent(params)
    lock = threading.Lock()

    def keep_announcing():
        while True:
            with lock:
                handle.force_dht_announce()
            time.sleep(1)

    threading.Thread(target=keep_announcing, daemon=True).start()
    print('READY', flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == 'QUIT':
            break
        if cmd[0] == 'GETPEERS':
            want = lt.sha1_hash(bytes.fromhex(cmd[1]))
            deadline = time.time() + 30
            found = None
            while found is None and time.time() < deadline:
                with lock:
                    node.dht_get_peers(want)
                until = time.time() + 2
                while found is None and time.time() < until:
                    node.wait_for_alert(200)
                    for a in node.pop_alerts():
                        if isinstance(a, lt.dht_get_peers_reply_alert) \
                                and a.info_hash == want and a.num_peers() > 0:
                            found = a.peers()
            if found:
                print('PEERS ' + ' '.join('%s:%d' % p for p in found), flush=True)
            else:
                print('NOPEERS', flush=True)


if __name__ == '__main__':
    main()
