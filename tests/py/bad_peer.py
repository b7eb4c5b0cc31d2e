#!/usr/bin/env python3
"""A scripted misbehaving BitTorrent peer for OurTorrent's tests.

  bad_peer.py MODE PORT INFO_HASH_HEX PIECES [DATA PIECE_LEN]

Listens on 127.0.0.1:PORT, answers the handshake for INFO_HASH_HEX, then:
  corrupt   bitfield (all pieces), unchoke, answers every request with random bytes
  oversized bitfield, then a message whose length prefix is 16 MiB
  bitfield  a bitfield one byte too long
  reverse   an honest but unusual seeder of DATA (a single-file torrent's
            file): each batch of requests that arrives together is
            answered last request first, so blocks arrive out of order
Prints "READY" once listening; serves connections until killed.
"""
import os
import socket
import struct
import sys
import threading


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b


def read_request(conn):
    """Next message; returns (index, begin, length) for a request, else None."""
    (n,) = struct.unpack(">I", recv_exact(conn, 4))
    body = recv_exact(conn, n) if n else b""
    if body and body[0] == 6:
        return struct.unpack(">III", body[1:13])
    return None


def serve_reversed(conn, data):
    with open(data, "rb") as f:
        while True:
            batch = [read_request(conn)]
            conn.settimeout(0.05)  # gather what arrived with it
            try:
                while True:
                    batch.append(read_request(conn))
            except socket.timeout:
                pass
            conn.settimeout(None)
            for r in reversed([r for r in batch if r]):
                index, begin, length = r
                f.seek(index * PIECE_LEN[0] + begin)
                conn.sendall(struct.pack(">IBII", 9 + length, 7, index, begin) + f.read(length))


PIECE_LEN = [0]


def serve(conn, mode, info_hash, pieces, data=None):
    try:
        hs = recv_exact(conn, 68)
        if hs[28:48] != info_hash:
            return
        conn.sendall(b"\x13BitTorrent protocol" + b"\0" * 8 + info_hash + b"-BAD000-" + os.urandom(12))
        nbytes = (pieces + 7) // 8
        bits = bytearray(b"\xff" * nbytes)
        spare = nbytes * 8 - pieces
        if spare:
            bits[-1] &= (0xFF << spare) & 0xFF
        if mode == "bitfield":
            conn.sendall(struct.pack(">IB", 2 + nbytes, 5) + bytes(bits) + b"\0")
        else:
            conn.sendall(struct.pack(">IB", 1 + nbytes, 5) + bytes(bits))
        if mode == "oversized":
            conn.sendall(struct.pack(">IB", 16 << 20, 7) + b"\0" * 1024)
        conn.sendall(struct.pack(">IB", 1, 1))  # unchoke
        if mode == "reverse":
            serve_reversed(conn, data)
        while True:
            (n,) = struct.unpack(">I", recv_exact(conn, 4))
            body = recv_exact(conn, n) if n else b""
            if body and body[0] == 6 and mode == "corrupt":
                index, begin, length = struct.unpack(">III", body[1:13])
                conn.sendall(struct.pack(">IBII", 9 + length, 7, index, begin) + os.urandom(length))
    except (EOFError, OSError):
        pass
    finally:
        conn.close()


def main():
    mode, port, ih, pieces = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), int(sys.argv[4])
    data = sys.argv[5] if len(sys.argv) > 5 else None
    if data:
        PIECE_LEN[0] = int(sys.argv[6])
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(8)
    print("READY", flush=True)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c, mode, ih, pieces, data), daemon=True).start()


if __name__ == "__main__":
    main()
