#!/usr/bin/env bash
# Client throughput benchmark over loopback (not part of the test suite).
#
#   scripts/bench-client.sh            # RUNS=3 SIZE_MIB=1024 PIECE=1048576
#   CASES=ae scripts/bench-client.sh   # only some cases (default abcde)
#
# One 1 GiB single-file torrent under /tmp (deleted at the end), then RUNS
# rounds, each running these in turn (alternating, so drift hits all alike):
#   a  libtorrent seeder -> our client      (direct --peer)
#   b  libtorrent seeder -> libtorrent leecher (connect_peer)
#   c  libtorrent seeder -> rqbit           (only if `rqbit` is on PATH)
#   d  libtorrent seeder -> aria2c          (via opentracker over HTTP)
#   e  our seeder        -> our client      (direct --peer)
# With OLD_BIN=/path/to/an/older/shell-std, cases a and e also run with
# that binary (A, E: its own seeder and client) right after the new ones,
# so old and new alternate in one run.
# Each leecher runs under /usr/bin/time -v: wall time (process start to
# exit, tracker/connect/startup included), user+sys CPU, peak RSS.
# Prints per-run lines and a summary: median and range, MiB/s, ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SIZE_MIB=${SIZE_MIB:-1024}
PIECE=${PIECE:-1048576}
CASES=${CASES:-abcde}
PY=/usr/bin/python3
BIN=$PWD/target/release/shell-std
OLD_BIN=${OLD_BIN:-}
LT=$PWD/tests/py/lt_swarm.py

cargo build --release -p shell-std >/dev/null
W=$(mktemp -d /tmp/ot-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "==> data: $SIZE_MIB MiB in $W"
mkdir -p "$W/src"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$W/src/data.bin"
OT_PORT=$(port)
"$BIN" create "$W/src/data.bin" --tracker "http://127.0.0.1:$OT_PORT/announce" \
  --piece-length "$PIECE" -o "$W/t.torrent" --no-date
HASH=$("$BIN" info "$W/t.torrent" | awk '/Info-hash/ {print $4}')

echo "==> opentracker on 127.0.0.1:$OT_PORT (whitelist $HASH)"
# Run as root, opentracker chroots (to `/` unless told with -d) and drops to
# `nobody` before it reads the whitelist: give it a world-readable folder of
# its own ($W is mode 0700) as its chroot, and a path relative to it.
OT=$W/ot
mkdir -m 755 "$OT"
echo "$HASH" > "$OT/whitelist"
chmod 644 "$OT/whitelist"
printf 'listen.tcp 127.0.0.1:%s\nlisten.udp 127.0.0.1:%s\naccess.whitelist %s\n' \
  "$OT_PORT" "$OT_PORT" whitelist > "$OT/ot.conf"
(cd "$OT" && exec opentracker -d "$OT" -f ot.conf) >"$W/ot.log" 2>&1 &
pids+=($!)

LT_PORT=$(port)
$PY "$LT" seed "$W/t.torrent" "$W/src" "$LT_PORT" --max-seconds 3600 >"$W/lt-seed.log" 2>&1 &
pids+=($!)
OUR_PORT=$(port)
"$BIN" client seed "$W/t.torrent" --data "$W/src/data.bin" --skip-verify --quiet \
  --no-trackers --listen "127.0.0.1:$OUR_PORT" >"$W/our-seed.log" 2>&1 &
pids+=($!)
if [ -n "$OLD_BIN" ]; then
  OLD_PORT=$(port)
  "$OLD_BIN" client seed "$W/t.torrent" --data "$W/src/data.bin" --skip-verify --quiet \
    --no-trackers --listen "127.0.0.1:$OLD_PORT" >"$W/old-seed.log" 2>&1 &
  pids+=($!)
fi
sleep 3
cat "$W/src/data.bin" > /dev/null   # warm the page cache for both seeders

RESULTS=$W/results.txt
: > "$RESULTS"
measure() { # name cmd...
  local name=$1; shift
  case $CASES in *"${name,,}"*) ;; *) return 0 ;; esac
  rm -rf "$W/out"; mkdir -p "$W/out"
  sync; sleep 1
  if ! timeout 120 /usr/bin/time -v -o "$W/time.txt" "$@" >"$W/run.log" 2>&1; then
    echo "  $name: FAILED"; tail -5 "$W/run.log"; return 0
  fi
  local f
  f=$(find "$W/out" -type f -name data.bin | head -1)
  if [ -z "$f" ] || ! cmp -s "$f" "$W/src/data.bin"; then
    echo "  $name: WRONG DATA"; return 0
  fi
  local wall cpu rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$W/time.txt")
  cpu=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {print u+s}' "$W/time.txt")
  rss=$(awk -F': ' '/Maximum resident/ {print $2/1024}' "$W/time.txt")
  echo "$name $wall $cpu $rss" >> "$RESULTS"
  printf '  %-2s wall %6.2f s  %7.1f MiB/s  cpu %5.2f s  rss %6.1f MiB\n' \
    "$name" "$wall" "$(echo "$SIZE_MIB / $wall" | bc -l)" "$cpu" "$rss"
}

for r in $(seq 1 "$RUNS"); do
  echo "==> round $r/$RUNS"
  measure a "$BIN" client download "$W/t.torrent" --out "$W/out" --peer "127.0.0.1:$LT_PORT" \
    --no-trackers --no-seed --quiet --listen 127.0.0.1:0
  if [ -n "$OLD_BIN" ]; then
    measure A "$OLD_BIN" client download "$W/t.torrent" --out "$W/out" --peer "127.0.0.1:$LT_PORT" \
      --no-trackers --no-seed --quiet --listen 127.0.0.1:0
  fi
  measure b $PY "$LT" leech "$W/t.torrent" "$W/out" "$(port)" --connect "127.0.0.1:$LT_PORT" \
    --max-seconds 120
  if command -v rqbit >/dev/null && [[ $CASES == *c* ]]; then
    P=$(port)
    measure c rqbit --disable-dht --disable-dht-persistence --disable-lsd \
      --disable-upnp-port-forward --ipv4-only --listen-ip 127.0.0.1 --listen-port "$P" \
      --announce-port "$P" --bind-device lo download --disable-http-api --exit-on-finish \
      -o "$W/out" "$W/t.torrent"
  fi
  DHT=$W/dht.dat; rm -f "$DHT"
  measure d aria2c --dir="$W/out" --interface=127.0.0.1 --listen-port="$(port)" \
    --bt-enable-lpd=false --enable-peer-exchange=false --disable-ipv6=true --enable-dht=false \
    --seed-time=0 --console-log-level=warn --summary-interval=0 --file-allocation=none \
    --bt-tracker-interval=1 "$W/t.torrent"
  measure e "$BIN" client download "$W/t.torrent" --out "$W/out" --peer "127.0.0.1:$OUR_PORT" \
    --no-trackers --no-seed --quiet --listen 127.0.0.1:0
  if [ -n "$OLD_BIN" ]; then
    measure E "$OLD_BIN" client download "$W/t.torrent" --out "$W/out" --peer "127.0.0.1:$OLD_PORT" \
      --no-trackers --no-seed --quiet --listen 127.0.0.1:0
  fi
done
command -v rqbit >/dev/null || echo "(c) skipped: rqbit is not installed"

echo "==> summary ($RUNS runs each, $SIZE_MIB MiB, piece $PIECE bytes; medians, [min-max])"
$PY - "$RESULTS" "$SIZE_MIB" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
size = float(sys.argv[2])
names = {"a": "lt seeder -> our client", "b": "lt seeder -> lt leecher", "c": "lt seeder -> rqbit",
         "d": "lt seeder -> aria2c", "e": "our seeder -> our client",
         "A": "lt seeder -> OLD client", "E": "OLD seeder -> OLD client"}
med = {}
for k in "aAbcdeE":
    rs = [r for r in rows if r[0] == k]
    if not rs:
        continue
    wall = [float(r[1]) for r in rs]; cpu = [float(r[2]) for r in rs]; rss = [float(r[3]) for r in rs]
    tput = [size / w for w in wall]
    med[k] = statistics.median(tput)
    print("%s %-26s time %.2f s [%.2f-%.2f]  %.0f MiB/s [%.0f-%.0f]  cpu %.2f s  peak RSS %.1f MiB [%.1f-%.1f]"
          % (k, names[k], statistics.median(wall), min(wall), max(wall), med[k], min(tput), max(tput),
             statistics.median(cpu), statistics.median(rss), min(rss), max(rss)))
if "a" in med and "b" in med:
    print("ratio a/b (ours vs libtorrent, same seeder): %.2f  (goal >= 1)" % (med["a"] / med["b"]))
if "a" in med and "d" in med:
    print("ratio a/d (ours vs aria2c): %.2f" % (med["a"] / med["d"]))
if "e" in med:
    print("e: %.0f MiB/s (goal >= 600)" % med["e"])
for new, old in (("a", "A"), ("e", "E")):
    if new in med and old in med:
        print("ratio %s/%s (new vs old binary): %.3f" % (new, old, med[new] / med[old]))
PY
