#!/usr/bin/env bash
# UDP tracker benchmark on loopback: `shell-std loadtest` against
#   1. our tracker, memory only (--no-db),
#   2. our tracker with SQLite persistence (WAL, 1 s flushes),
#   3. opentracker (Debian, listen.udp.workers 1, whitelist of the test's hashes),
# each with the same load, the server pinned to one core and the load
# generator to another (taskset). Prints responses/s, the server's CPU time
# per response (from /proc/PID/stat: robust when other load shares the
# machine) and the ratios.
#
#   scripts/bench-tracker.sh            # 10 s per run
#   DURATION=5 CONCURRENCY=128 MIX=1:8:1 scripts/bench-tracker.sh
#
# Needs: opentracker (apt-get install opentracker), taskset, python3, ss.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-64}
MIX=${MIX:-1:8:1}
TORRENTS=${TORRENTS:-1000}
PEERS=${PEERS:-10000}
SERVER_CPU=${SERVER_CPU:-0}
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

load() { # port name
  local t0; t0=$(cpu_ticks "$server_pid")
  taskset -c "$GEN_CPU" "$BIN" loadtest --target "127.0.0.1:$1" --duration "$DURATION" \
    --concurrency "$CONCURRENCY" --mix "$MIX" --torrents "$TORRENTS" --peers "$PEERS" \
    --json > "$tmp/$2.json"
  local t1; t1=$(cpu_ticks "$server_pid")
  python3 - "$tmp/$2.json" "$2" "$((t1 - t0))" "$(getconf CLK_TCK)" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
cpu_s = int(sys.argv[3]) / int(sys.argv[4])
r["server_cpu_seconds"] = cpu_s
r["server_cpu_us_per_response"] = 1e6 * cpu_s / max(r["responses"], 1)
json.dump(r, open(sys.argv[1], "w"))
k = r["kinds"]
print("%-14s %10.0f resp/s  (connect %.0f, announce %.0f, scrape %.0f; announce p50 %d us p99 %d us; timeouts %d, error or unparsable replies %d)" % (
    sys.argv[2], r["responses_per_second"], k["connect"]["per_second"], k["announce"]["per_second"],
    k["scrape"]["per_second"], k["announce"]["p50_us"], k["announce"]["p99_us"],
    r["errors"]["timeouts"], r["errors"]["error_replies"] + r["errors"]["unparsable"]))
print("%-14s server CPU %.2f s = %.2f us per response" % ("", cpu_s, r["server_cpu_us_per_response"]))
EOF
}

stop_server() {
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

echo "loadtest: ${DURATION}s, ${CONCURRENCY} in flight, mix ${MIX}, ${TORRENTS} torrents, ${PEERS} peers; server on CPU ${SERVER_CPU}, generator on CPU ${GEN_CPU}"

# 1. ours, memory only
p=$(free_port)
taskset -c "$SERVER_CPU" "$BIN" tracker --udp "127.0.0.1:$p" --http "127.0.0.1:$(free_port)" --no-db 2>"$tmp/ours-nodb.log" &
server_pid=$!
wait_udp "$p"
load "$p" ours-nodb
stop_server

# 2. ours, SQLite
p=$(free_port)
taskset -c "$SERVER_CPU" "$BIN" tracker --udp "127.0.0.1:$p" --http "127.0.0.1:$(free_port)" --db "$tmp/bench.db" 2>"$tmp/ours-db.log" &
server_pid=$!
wait_udp "$p"
load "$p" ours-sqlite
stop_server

# 3. opentracker, one UDP worker, whitelist of the load test's hashes
"$BIN" loadtest --torrents "$TORRENTS" --duration 0 --write-whitelist "$tmp/whitelist"
p=$(free_port)
cat > "$tmp/opentracker.conf" <<EOF
listen.udp 127.0.0.1:$p
listen.tcp 127.0.0.1:$(free_port)
listen.udp.workers 1
access.whitelist $tmp/whitelist
EOF
(cd "$tmp" && exec taskset -c "$SERVER_CPU" opentracker -f "$tmp/opentracker.conf" >/dev/null 2>&1) &
server_pid=$!
wait_udp "$p"
load "$p" opentracker
stop_server

python3 - "$tmp" <<'EOF'
import json, sys
d = sys.argv[1]
j = {n: json.load(open("%s/%s.json" % (d, n))) for n in ("ours-nodb", "ours-sqlite", "opentracker")}
r = {n: v["responses_per_second"] for n, v in j.items()}
c = {n: v["server_cpu_us_per_response"] for n, v in j.items()}
print("responses/s ratio, ours --no-db / opentracker: %.2f" % (r["ours-nodb"] / r["opentracker"]))
print("responses/s ratio, ours SQLite  / opentracker: %.2f" % (r["ours-sqlite"] / r["opentracker"]))
print("server CPU per response, opentracker / ours --no-db: %.2f" % (c["opentracker"] / c["ours-nodb"]))
print("server CPU per response, opentracker / ours SQLite:  %.2f" % (c["opentracker"] / c["ours-sqlite"]))
EOF
