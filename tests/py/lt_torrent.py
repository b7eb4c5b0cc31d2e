#!/usr/bin/python3
"""libtorrent as a second opinion on .torrent files (run by the Rust tests).

  lt_torrent.py info TORRENT            -> JSON: name, info_hash, piece_length,
                                           num_pieces, total_size, private,
                                           files [[path, size, pad, symlink, exec]],
                                           trackers [[tier, url]]
  lt_torrent.py verdict TORRENT         -> the info JSON plus "ok": true, or
                                           {"ok": false, "error": MESSAGE}
  lt_torrent.py create DIR OUT [--v1-only] [--piece-size N] [--tracker URL]...
  lt_torrent.py mutate-hybrid TORRENT OUTDIR
                                        -> writes OUTDIR/CASE.torrent, one broken
                                           variant of a hybrid torrent per case

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
        flags = fs.file_flags(i)
        pad = bool(flags & lt.file_storage.flag_pad_file)
        link = fs.symlink(i) if flags & lt.file_storage.flag_symlink else None
        exe = bool(flags & lt.file_storage.flag_executable)
        files.append([fs.file_path(i), fs.file_size(i), pad, link, exe])
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
    return out


def verdict(path):
    try:
        out = info(path)
        out["ok"] = True
    except RuntimeError as e:
        out = {"ok": False, "error": str(e)}
    print(json.dumps(out))


def mutate_hybrid(src, outdir):
    import copy
    with open(src, "rb") as f:
        t = lt.bdecode(f.read())
    tree = t[b"info"][b"file tree"]
    first = sorted(k for k in tree if b"" in tree[k])[0]
    layer = sorted(t.get(b"piece layers", {}))[0]

    def case(name, edit):
        d = copy.deepcopy(t)
        edit(d)
        with open(os.path.join(outdir, name + ".torrent"), "wb") as f:
            f.write(lt.bencode(d))

    def v2_length(d):
        d[b"info"][b"file tree"][first][b""][b"length"] += 1

    def v2_name(d):
        ft = d[b"info"][b"file tree"]
        ft[b"renamed-" + first] = ft.pop(first)

    def extra_file(d):
        d[b"info"][b"file tree"][b"zzz-extra"] = {b"": {b"length": 0}}

    def short_layer(d):
        d[b"piece layers"][layer] = d[b"piece layers"][layer][:-32]

    def meta_version(d):
        d[b"info"][b"meta version"] = 3

    def no_meta_version(d):
        del d[b"info"][b"meta version"]

    def short_root(d):
        d[b"info"][b"file tree"][first][b""][b"pieces root"] = b"x" * 31

    def tree_not_dict(d):
        d[b"info"][b"file tree"] = 5

    for name, edit in [("v2_length", v2_length), ("v2_name", v2_name),
                       ("extra_file", extra_file), ("short_layer", short_layer),
                       ("meta_version", meta_version), ("no_meta_version", no_meta_version),
                       ("short_root", short_root), ("tree_not_dict", tree_not_dict)]:
        case(name, edit)


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
        print(json.dumps(info(sys.argv[2])))
    elif sys.argv[1] == "verdict":
        verdict(sys.argv[2])
    elif sys.argv[1] == "mutate-hybrid":
        mutate_hybrid(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "create":
        create(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit("usage: lt_torrent.py info|verdict|create|mutate-hybrid ...")
