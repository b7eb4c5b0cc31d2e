#!/usr/bin/python3
"""libtorrent's bencoder as a second opinion on BEP 9 / BEP 11 payloads.

  lt_bencode.py make    -> one line per payload: NAME HEX, made with
                           lt.bencode (ut_metadata dicts + data, ut_pex dicts)
  lt_bencode.py read HEX... -> one JSON line per payload: lt.bdecode's view
                           (byte strings as hex), or null if it refuses

Must run under Debian's /usr/bin/python3 (python3-libtorrent).
"""
import json
import sys

import libtorrent as lt


def v4(a, b, c, d, port):
    return bytes([a, b, c, d]) + port.to_bytes(2, "big")


def v6(last, port):
    return bytes([0x20, 0x01] + [0] * 13 + [last]) + port.to_bytes(2, "big")


def make():
    data = bytes(range(256)) * 64  # 16 KiB
    out = {
        "md_request": lt.bencode({"msg_type": 0, "piece": 7}),
        "md_data": lt.bencode({"msg_type": 1, "piece": 2, "total_size": 40000}) + data[:7232],
        "md_data_full": lt.bencode({"msg_type": 1, "piece": 0, "total_size": 40000}) + data,
        "md_reject": lt.bencode({"msg_type": 2, "piece": 3}),
        "pex": lt.bencode({
            "added": v4(127, 0, 0, 1, 6881) + v4(10, 0, 0, 2, 6882),
            "added.f": bytes([0x10, 0x02]),
            "added6": v6(1, 6883),
            "added6.f": bytes([0x04]),
            "dropped": v4(10, 0, 0, 3, 80),
            "dropped6": b"",
        }),
        "pex_big": lt.bencode({
            "added": b"".join(v4(10, 1, i // 256, i % 256, 6881) for i in range(60)),
            "added.f": bytes([0x01] * 60),
            "dropped": b"".join(v4(10, 2, 0, i, 1) for i in range(55)),
        }),
    }
    for k, v in out.items():
        print(k, v.hex())


def plain(v):
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {(k.decode() if isinstance(k, bytes) else k): plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


def read(hexes):
    for h in hexes:
        print(json.dumps(plain(lt.bdecode(bytes.fromhex(h)))))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make()
    else:
        read(sys.argv[2:])
