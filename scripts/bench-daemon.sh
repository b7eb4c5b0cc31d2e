#!/usr/bin/env bash
# Many torrents in one process (issue 12's closing benchmark; not part of
# the test suite):
#
#   scripts/bench-daemon.sh          # RUNS=3 N=20 SIZE_MIB=32 PIECE=262144
#
# N torrents of SIZE_MIB each under /tmp (deleted at the end), seeded by one
# libtorrent session (tests/py/lt_multi.py seed). Then RUNS rounds, each in
# turn (alternating, so drift hits both alike):
#   ours  `shell-std daemon` (release), the N torrents added with
#         `shell-std remote add --peer` at once, until every one seeds;
#   lt    one libtorrent session leeching the same N (lt_multi.py leech).
# Per leecher: wall seconds from the first add to all complete, CPU seconds
# (user + system) and peak RSS of the leeching process (ours from /proc at
# the end; libtorrent's from getrusage, Python interpreter included).
set -euo pipefail
trap 'echo "bench-daemon.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
N=${N:-20}
SIZE_MIB=${SIZE_MIB:-32}
PIECE=${PIECE:-262144}
PY=/usr/bin/python3
BIN=$PWD/target/release/shell-std
LT=$PWD/tests/py/lt_multi.py

cargo build --release -p shell-std >/dev/null
W=$(mktemp -d /tmp/ot-bench-daemon.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TCK=$(getconf CLK_TCK)

echo "==> data: $N torrents of $SIZE_MIB MiB in $W"
mkdir -p "$W/src" "$W/t"
torrents=()
for i in $(seq 1 "$N"); do
  head -c $((SIZE_MIB << 20)) /dev/urandom > "$W/src/f$i.bin"
  "$BIN" create "$W/src/f$i.bin" --piece-length "$PIECE" -o "$W/t/f$i.torrent" >/dev/null
  torrents+=("$W/t/f$i.torrent")
done
SP=$(port)
$PY "$LT" seed "$W/src" "$SP" "${torrents[@]}" --max-seconds 3600 > "$W/seed.log" 2>&1 &
pids+=($!)
until grep -q READY "$W/seed.log"; do sleep 0.1; done
# Warm-up: this libtorrent seeder resets the first connection it gets after
# its start (seen with our client; a retry waits out a 10 s backoff), so one
# throwaway download takes that hit before the rounds.
"$BIN" client download "${torrents[0]}" --out "$W/warm" --peer "127.0.0.1:$SP" \
  --listen 127.0.0.1:0 --no-trackers --no-seed --quiet >/dev/null
rm -rf "$W/warm"

ours() {
  local dl="$W/ours" st="$W/ours-state"
  rm -rf "$dl" "$st"; mkdir -p "$dl"
  "$BIN" daemon --http 127.0.0.1:0 --listen 127.0.0.1:0 --download-dir "$dl" --state "$st" \
    > "$W/d.out" 2> "$W/d.err" &
  local dp=$!
  until grep -q "api on" "$W/d.out"; do sleep 0.02; done
  local url; url=$(grep -o 'http://127.0.0.1:[0-9]*' "$W/d.out")
  local t0; t0=$(date +%s%N)
  for t in "${torrents[@]}"; do "$BIN" remote --url "$url" add "$t" --peer "127.0.0.1:$SP" >/dev/null; done
  until [ "$("$BIN" remote --url "$url" list --json | grep -o '"state":"seeding"' | wc -l)" -eq "$N" ]; do
    sleep 0.05
  done
  local t1; t1=$(date +%s%N)
  local rss; rss=$(awk '/VmHWM/ {print $2}' /proc/$dp/status)
  local cpu; cpu=$(awk -v t="$TCK" '{printf "%.3f", ($14 + $15) / t}' /proc/$dp/stat)
  kill -TERM $dp; wait $dp || true
  printf 'ours seconds=%.3f cpu=%s rss_kib=%s\n' "$(echo "($t1 - $t0) / 1000000000" | bc -l)" "$cpu" "$rss"
}

lt() {
  local dl="$W/lt"
  rm -rf "$dl"; mkdir -p "$dl"
  local line; line=$($PY "$LT" leech "$dl" "$(port)" --connect "127.0.0.1:$SP" "${torrents[@]}" | tail -1)
  echo "lt ${line#DONE }"
}

for r in $(seq 1 "$RUNS"); do
  echo "==> round $r"
  ours | tee -a "$W/results"
  lt | tee -a "$W/results"
done

echo "==> medians over $RUNS rounds ($N x $SIZE_MIB MiB)"
for who in ours lt; do
  for k in seconds cpu rss_kib; do
    v=$(grep "^$who " "$W/results" | grep -o "$k=[0-9.]*" | cut -d= -f2 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf '%s %s=%s  ' "$who" "$k" "$v"
  done
  echo
done
