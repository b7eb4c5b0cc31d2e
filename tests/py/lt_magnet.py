#!/usr/bin/python3
"""A libtorrent leecher that has only a magnet link and one peer address,
for OurTorrent's BEP 9 serving test.

  lt_magnet.py MAGNET PEER_PORT [--max-seconds N]

Connects to 127.0.0.1:PEER_PORT and waits for the metadata. Prints, flushed:
  METADATA info_hash=<hex> size=<bytes> pieces=<n>   got and checked it; exit 0
  TIMEOUT                                            gave up; exit 1
Must run under Debian's /usr/bin/python3 (python3-libtorrent).
"""
import sys
import time

import libtorrent as lt


def main():
    magnet, port = sys.argv[1], int(sys.argv[2])
    limit = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
    ses = lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "outgoing_interfaces": "127.0.0.1",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        # Plain BitTorrent handshakes: no MSE/PE obfuscation (2 = pe_disabled).
        "out_enc_policy": 2,
        "in_enc_policy": 2,
        "alert_mask": lt.alert.category_t.status_notification,
    })
    p = lt.parse_magnet_uri(magnet)
    p.save_path = "."
    p.flags |= lt.torrent_flags.upload_mode  # metadata only: write nothing
    h = ses.add_torrent(p)
    t0 = time.monotonic()
    last = 0.0
    while time.monotonic() - t0 < limit:
        now = time.monotonic()
        if now - last > 0.5 and h.status().num_peers == 0:
            last = now
            h.connect_peer(("127.0.0.1", port))
        for al in ses.wait_for_alert(100) and ses.pop_alerts() or []:
            if isinstance(al, lt.metadata_received_alert):
                ti = h.torrent_file()
                print("METADATA info_hash=%s size=%d pieces=%d"
                      % (ti.info_hashes().v1, ti.metadata_size(), ti.num_pieces()), flush=True)
                return 0
    print("TIMEOUT", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
