#!/usr/bin/python3
"""libtorrent as a second opinion on .torrent files (run by the Rust tests).

  lt_torrent.py info TORRENT            -> JSON: name, info_hash, piece_length,
                                           num_pieces, total_size, private,
                                           files [[path, size, pad]], trackers [[tier, url]]
  lt_torrent.py create DIR OUT [--v1-only] [--piece-size N] [--tracker URL]...

Must run under Debian's /usr/bin/python3 (python3-libtorrent).
"""
import json
import os
import sys

import libtorrent as lt


def info(path):
    ti = lt.torrent_info(path)
    fs = ti.files()
    files = []
    for i in range(fs.num_files()):
        pad = bool(fs.file_flags(i) & lt.file_storage.flag_pad_file)
        files.append([fs.file_path(i), fs.file_size(i), pad])
    out = {
        "name": ti.name(),
        "info_hash": str(ti.info_hashes().v1),
        "piece_length": ti.piece_length(),
        "num_pieces": ti.num_pieces(),
        "total_size": ti.total_size(),
        "private": ti.priv(),
        "files": files,
        "trackers": [[t.tier, t.url] for t in ti.trackers()],
    }
    print(json.dumps(out))


def create(src, out, args):
    fs = lt.file_storage()
    lt.add_files(fs, src)
    flags = 0
    piece_size = 0
    trackers = []
    i = 0
    while i < len(args):
        if args[i] == "--v1-only":
            flags |= lt.create_torrent.v1_only
        elif args[i] == "--piece-size":
            i += 1
            piece_size = int(args[i])
        elif args[i] == "--tracker":
            i += 1
            trackers.append(args[i])
        i += 1
    ct = lt.create_torrent(fs, piece_size, flags=flags)
    for tier, url in enumerate(trackers):
        ct.add_tracker(url, tier)
    lt.set_piece_hashes(ct, os.path.dirname(os.path.abspath(src)))
    with open(out, "wb") as f:
        f.write(lt.bencode(ct.generate()))


if __name__ == "__main__":
    if sys.argv[1] == "info":
        info(sys.argv[2])
    elif sys.argv[1] == "create":
        create(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit("usage: lt_torrent.py info|create ...")
