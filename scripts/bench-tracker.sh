#!/usr/bin/env bash
# UDP tracker benchmark on loopback: `shell-std loadtest` against
#   1. our tracker, memory only (--no-db),
#   2. our tracker with SQLite persistence (WAL, 1 s flushes),
#   3. opentracker (Debian, listen.udp.workers $WORKERS, whitelist of the test's hashes),
# each with the same load, the server pinned to one core and the load
# generator to another (taskset). Prints responses/s, the server's CPU time
# per response (from /proc/PID/stat: robust when other load shares the
# machine) and the ratios. Rounds are interleaved (so load from elsewhere
# hits all three alike) and the summary is the median of each server.
#
#   scripts/bench-tracker.sh            # 3 rounds of 10 s per server
#   DURATION=5 ROUNDS=5 CONCURRENCY=128 MIX=1:8:1 scripts/bench-tracker.sh
#   WORKERS=2 scripts/bench-tracker.sh  # 2 UDP workers each (ours --workers 2, opentracker
#                                       # listen.udp.workers 2) on CPUs 0-1; the generator
#                                       # shares CPU 1, so compare CPU per response too
#
# Needs: opentracker (apt-get install opentracker), taskset, python3, ss.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONCURRENCY=${CONCURRENCY:-64}
MIX=${MIX:-1:8:1}
TORRENTS=${TORRENTS:-1000}
PEERS=${PEERS:-10000}
WORKERS=${WORKERS:-1}
if [ "$WORKERS" -gt 1 ]; then SERVER_CPU=${SERVER_CPU:-0-1}; else SERVER_CPU=${SERVER_CPU:-0}; fi
GEN_CPU=${GEN_CPU:-1}

cargo build --release -q -p shell-std
BIN=$PWD/target/release/shell-std
command -v opentracker >/dev/null || { echo "opentracker missing: apt-get install opentracker" >&2; exit 1; }

tmp=$(mktemp -d)
# opentracker drops root privileges after start: it must still read the whitelist.
chmod 755 "$tmp"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill -KILL "$server_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_udp() { # port
  for _ in $(seq 100); do
    ss -Hlun "sport = :$1" | grep -q . && return 0
    sleep 0.05
  done
  echo "server on udp $1 did not come up" >&2; exit 1
}

cpu_ticks() { # pid -> utime+stime in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}

load() { # port name round
  local t0 t1 out="$tmp/$2-$3.json"
  t0=$(cpu_ticks "$server_pid")
  taskset -c "$GEN_CPU" "$BIN" loadtest --target "127.0.0.1:$1" --duration "$DURATION" \
    --concurrency "$CONCURRENCY" --mix "$MIX" --torrents "$TORRENTS" --peers "$PEERS" \
    --json > "$out"
  t1=$(cpu_ticks "$server_pid")
  python3 - "$out" "$2" "$((t1 - t0))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
path, name, ticks, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
r = json.load(open(path))
cpu_s = ticks / hz
r["server_cpu_seconds"] = cpu_s
r["server_cpu_us_per_response"] = 1e6 * cpu_s / max(r["responses"], 1)
json.dump(r, open(path, "w"))
k, e = r["kinds"], r["errors"]
print("%-12s %9.0f resp/s (connect %.0f, announce %.0f, scrape %.0f; announce p50 %d us, p99 %d us;"
      " timeouts %d, error/unparsable replies %d); server CPU %.2f s = %.2f us/response; generator CPU %.0f%%" % (
    name, r["responses_per_second"], k["connect"]["per_second"], k["announce"]["per_second"],
    k["scrape"]["per_second"], k["announce"]["p50_us"], k["announce"]["p99_us"],
    e["timeouts"], e["error_replies"] + e["unparsable"], cpu_s, r["server_cpu_us_per_response"],
    100.0 * (r.get("generator_cpu_seconds") or 0) / r["seconds"]))
PY
}

stop_server() {
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

run_ours() { # name round extra-args...
  local name=$1 round=$2 p
  shift 2
  p=$(free_port)
  taskset -c "$SERVER_CPU" "$BIN" tracker --workers "$WORKERS" --udp "127.0.0.1:$p" --http "127.0.0.1:$(free_port)" "$@" 2>"$tmp/$name.log" &
  server_pid=$!
  wait_udp "$p"
  load "$p" "$name" "$round"
  stop_server
}

run_opentracker() { # round
  local p
  p=$(free_port)
  printf 'listen.udp 127.0.0.1:%s\nlisten.tcp 127.0.0.1:%s\nlisten.udp.workers %s\naccess.whitelist %s\n' \
    "$p" "$(free_port)" "$WORKERS" "$tmp/whitelist" > "$tmp/opentracker.conf"
  (cd "$tmp" && exec taskset -c "$SERVER_CPU" opentracker -f "$tmp/opentracker.conf" >/dev/null 2>&1) &
  server_pid=$!
  wait_udp "$p"
  load "$p" opentracker "$1"
  stop_server
}

echo "loadtest: ${WORKERS} server worker(s), ${ROUNDS} rounds of ${DURATION}s, ${CONCURRENCY} in flight, mix ${MIX}, ${TORRENTS} torrents, ${PEERS} peers; server on CPU ${SERVER_CPU}, generator on CPU ${GEN_CPU}"
"$BIN" loadtest --torrents "$TORRENTS" --duration 0 --write-whitelist "$tmp/whitelist"

for r in $(seq "$ROUNDS"); do
  run_ours ours-nodb "$r" --no-db
  rm -f "$tmp"/bench.db*
  run_ours ours-sqlite "$r" --db "$tmp/bench.db"
  run_opentracker "$r"
done

python3 - "$tmp" "$ROUNDS" <<'PY'
import json, statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
names = ("ours-nodb", "ours-sqlite", "opentracker")
j = {n: [json.load(open("%s/%s-%d.json" % (d, n, r))) for r in range(1, rounds + 1)] for n in names}
r = {n: statistics.median(x["responses_per_second"] for x in v) for n, v in j.items()}
c = {n: statistics.median(x["server_cpu_us_per_response"] for x in v) for n, v in j.items()}
print("\nmedian of %d rounds:" % rounds)
for n in names:
    print("  %-12s %9.0f responses/s  %6.2f us server CPU per response" % (n, r[n], c[n]))
print("responses/s ratio, ours --no-db / opentracker: %.2f" % (r["ours-nodb"] / r["opentracker"]))
print("responses/s ratio, ours SQLite  / opentracker: %.2f" % (r["ours-sqlite"] / r["opentracker"]))
print("server CPU per response, opentracker / ours --no-db: %.2f" % (c["opentracker"] / c["ours-nodb"]))
print("server CPU per response, opentracker / ours SQLite:  %.2f" % (c["opentracker"] / c["ours-sqlite"]))
PY
