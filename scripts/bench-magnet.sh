#!/usr/bin/env bash
# Magnet benchmark over loopback (not part of the test suite): time from
# start to metadata and to complete, ours vs a libtorrent leecher, in one
# swarm found only through the DHT.
#
#   scripts/bench-magnet.sh            # RUNS=5 SIZE_MIB=64 PIECE=262144
#
# One swarm for the whole run: a libtorrent DHT router and a libtorrent
# seeder of a trackerless torrent (data under /tmp, deleted at the end)
# that announces it to the router. Then RUNS rounds, each running both
# leechers one after the other, the order swapped every round (so drift
# hits both alike), each given only `magnet:?xt=urn:btih:H` and the router:
#   ours  shell-std client download MAGNET --dht-bootstrap 127.0.0.1:R
#         (a fresh output folder and DHT table each time)
#   lt    tests/py/lt_dht_swarm.py leech (libtorrent with DHT, bootstrapping
#         from the same router), as added by default (auto-managed: queued,
#         started ~0.5 s later)
#   lt0   the same with --start-now (not auto-managed: starts at once)
# Both are timed the same way: from the process's launch to the line that
# says the metadata arrived (ours "metadata:", libtorrent "METADATA") and
# to the line that says the download is complete and verified ("complete:",
# "DONE"). Prints per-run lines and a summary (median and range).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
SIZE_MIB=${SIZE_MIB:-64}
PIECE=${PIECE:-262144}
PY=/usr/bin/python3
BIN=${BIN:-$PWD/target/release/shell-std}
LT=$PWD/tests/py/lt_dht_swarm.py

[ -n "${NO_BUILD:-}" ] || cargo build --release -p shell-std >/dev/null
W=$(mktemp -d /tmp/ot-bench-magnet.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

# A port free for TCP and UDP (a client's listener and its DHT share one).
port() {
  $PY -c '
import socket
while True:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
    p = u.getsockname()[1]; t = socket.socket()
    try:
        t.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass'
}

# stamp T0 FILE: each stdin line written to FILE as "<seconds since T0> line".
stamp() {
  $PY -u -c '
import sys, time
t0 = float(sys.argv[1]); out = open(sys.argv[2], "w")
for line in sys.stdin:
    out.write("%.3f %s" % (time.time() - t0, line)); out.flush()' "$1" "$2"
}

# first SECONDS of the first line of FILE starting (after the stamp) with WORD
at() { awk -v w="$2" '$2 == w { print $1; exit }' "$1"; }

echo "==> data: $SIZE_MIB MiB, pieces of $PIECE bytes, in $W"
mkdir -p "$W/src"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$W/src/data.bin"
"$BIN" create "$W/src/data.bin" --piece-length "$PIECE" -o "$W/t.torrent" >/dev/null
H=$("$BIN" info --json "$W/t.torrent" | $PY -c 'import json,sys; print(json.load(sys.stdin)["info_hash"])')
MAGNET="magnet:?xt=urn:btih:$H"

R=$(port)
$PY "$LT" router "$R" --max-seconds 3600 > "$W/router.log" &
pids+=($!)
S=$(port)
$PY "$LT" seed "$S" "$W/t.torrent" "$W/src" --router "$R" --max-seconds 3600 > "$W/seed.log" &
pids+=($!)
for _ in $(seq 100); do grep -q READY "$W/seed.log" 2>/dev/null && grep -q READY "$W/router.log" && break; sleep 0.1; done
sleep 3 # the seeder's first DHT announces

ours() { # $1: run
  local o="$W/ours$1" p; p=$(port); mkdir -p "$o"
  local t0; t0=$($PY -c 'import time; print(time.time())')
  timeout 120 "$BIN" client download "$MAGNET" --out "$o" --listen "127.0.0.1:$p" \
    --dht-bootstrap "127.0.0.1:$R" --no-seed --quiet 2>"$o.err" | stamp "$t0" "$o.log"
  local m c; m=$(at "$o.log" metadata:); c=$(at "$o.log" complete:)
  cmp -s "$W/src/data.bin" "$o/data.bin" || c="BAD"
  echo "ours $1 ${m:-NA} ${c:-NA}" | tee -a "$W/results"
  rm -rf "$o"
}

lt() { # $1: run, $2: name, $3…: extra options
  local o="$W/$2$1" p; p=$(port); mkdir -p "$o"
  local t0; t0=$($PY -c 'import time; print(time.time())')
  timeout 120 $PY "$LT" leech "$p" "$MAGNET" "$o" --router "$R" --max-seconds 110 "${@:3}" \
    2>"$o.err" | stamp "$t0" "$o.log"
  local m c; m=$(at "$o.log" METADATA); c=$(at "$o.log" DONE)
  cmp -s "$W/src/data.bin" "$o/data.bin" || c="BAD"
  printf '%-4s %s %s %s\n' "$2" "$1" "${m:-NA}" "${c:-NA}" | tee -a "$W/results"
  rm -rf "$o"
}

echo "==> $RUNS rounds (client run metadata_s complete_s)"
for i in $(seq "$RUNS"); do
  if [ $((i % 2)) -eq 1 ]; then
    ours "$i"; lt "$i" lt; lt "$i" lt0 --start-now
  else
    lt "$i" lt0 --start-now; lt "$i" lt; ours "$i"
  fi
done

echo "==> summary: median [min..max] seconds from launch, $SIZE_MIB MiB"
$PY - "$W/results" "$SIZE_MIB" <<'PYEOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
size = float(sys.argv[2])
for who in ("ours", "lt", "lt0"):
    r = [x for x in rows if x[0] == who]
    bad = sum(1 for x in r if "NA" in x or "BAD" in x)
    ok = [x for x in r if "NA" not in x and "BAD" not in x]
    if not ok:
        print("%-5s no successful run (%d failed)" % (who, bad)); continue
    m = [float(x[2]) for x in ok]; c = [float(x[3]) for x in ok]
    print("%-5s metadata %.3f [%.3f..%.3f]  complete %.3f [%.3f..%.3f]  (%.0f MiB/s overall; %d ok, %d failed)"
          % (who, statistics.median(m), min(m), max(m), statistics.median(c), min(c), max(c),
             size / statistics.median(c), len(ok), bad))
PYEOF
