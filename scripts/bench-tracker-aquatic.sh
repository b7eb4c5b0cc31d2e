#!/usr/bin/env bash
# UDP tracker benchmark with an independent generator (not part of the tests):
# aquatic_udp_load_test 0.9.0 (crates.io) against
#   db    our tracker with SQLite (the default),
#   nodb  our tracker, memory only (--no-db),
#   aq    aquatic_udp 0.9.0 (the fastest open anchor),
# first with 1 server worker (server on core 0, generator on core 1), then with
# 2 (server on cores 0-1; the generator shares core 1, so compare responses per
# server CPU-second too). The generator keeps its defaults: 1M torrents, 2M
# peers, 4 sockets per worker, one client IP per socket, 50:50:1
# connect:announce:scrape. Runs alternate (db, nodb, aq) so drift hits all.
#
#   scripts/bench-tracker-aquatic.sh          # ROUNDS=1 DURATION=20 WORKERS="1 2"
#   MEM=1 scripts/bench-tracker-aquatic.sh    # also fill to 2M peers, RSS / peer
#
# Per run: responses/s (the generator's average), server CPU seconds
# (utime+stime of /proc/PID/stat), responses per server CPU-second, datagrams
# the server's socket dropped (ss), server RSS and peers at the end (ours from
# /stats; aquatic's from its statistics in the memory runs, where it counts
# them every 10 s). Note the generator sends while at least 90% of its
# requests so far were answered (else only now and then), so it drives every
# server to about 10% drops: the responses/s it reports is what the server
# kept up with, and a server stall costs it more than the stall.
#
# Install the anchors first:
#   cargo install --locked aquatic_udp_load_test
#   cargo install --locked aquatic_udp --no-default-features --features mimalloc
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-1}
DURATION=${DURATION:-20}
WORKERS=${WORKERS:-"1 2"}
SERVERS=${SERVERS:-"db nodb aq"}
MEM=${MEM:-0}
MEM_DURATION=${MEM_DURATION:-60}
for t in aquatic_udp_load_test aquatic_udp taskset ss curl python3; do
  command -v "$t" >/dev/null || { echo "missing: $t (see the header)" >&2; exit 1; }
done
cargo build --release -q -p shell-std
BIN=$PWD/target/release/shell-std
W=$(mktemp -d /tmp/ot-bench-aq.XXXXXX)
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; rm -rf "$W"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

gen_config() { # PORT DURATION
  cat > "$W/gen.toml" <<TOML
server_address = "127.0.0.1:$1"
log_level = "error"
workers = 1
duration = $2
summarize_last = 0
extra_statistics = false
[network]
multiple_client_ipv4s = true
sockets_per_worker = 4
recv_buffer = 8000000
[requests]
number_of_torrents = 1000000
number_of_peers = 2000000
scrape_max_torrents = 10
announce_peers_wanted = 30
weight_connect = 50
weight_announce = 50
weight_scrape = 1
peer_seeder_probability = 0.75
TOML
}

start_server() { # KIND WORKERS UDP_PORT HTTP_PORT
  local cpus=0; [ "$2" -gt 1 ] && cpus=0-1
  rm -f "$W"/t.db*
  case $1 in
    db)   taskset -c $cpus "$BIN" tracker --db "$W/t.db" --workers "$2" --udp "127.0.0.1:$3" \
            --http "127.0.0.1:$4" --max-torrents 2000000 >"$W/server.log" 2>&1 & ;;
    nodb) taskset -c $cpus "$BIN" tracker --no-db --workers "$2" --udp "127.0.0.1:$3" \
            --http "127.0.0.1:$4" --max-torrents 2000000 >"$W/server.log" 2>&1 & ;;
    aq)   aquatic_udp -p > "$W/aq.toml"
          sed -i -e "s/^socket_workers = .*/socket_workers = $2/" \
                 -e "s/^address = .*/address = \"127.0.0.1:$3\"/" "$W/aq.toml"
          if [ "${MEMRUN:-0}" = 1 ]; then # print its peer count (kept every 10 s)
            sed -i -e "s/^print_to_stdout = .*/print_to_stdout = true/" \
                   -e "s/^torrent_cleaning_interval = .*/torrent_cleaning_interval = 10/" "$W/aq.toml"
          fi
          taskset -c $cpus aquatic_udp -c "$W/aq.toml" >"$W/server.log" 2>&1 & ;;
  esac
  pid=$!
  # Ready when the UDP port is bound (bounded wait).
  for _ in $(seq 100); do ss -uln | grep -q "127.0.0.1:$3 " && return 0; sleep 0.05; done
  echo "server $1 did not start:" >&2; cat "$W/server.log" >&2; exit 1
}

stop_server() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; }

cpu_secs() { awk '{printf "%.2f", ($14+$15)/100}' "/proc/$1/stat"; }
rss_mib() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
drops() { ss -uamn | grep -A1 "127.0.0.1:$1 " | grep -o 'd[0-9]*)' | tr -d 'd)' | awk '{s+=$1} END {print s+0}'; }
peers() { curl -s --max-time 5 "127.0.0.1:$1/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["peers"])' 2>/dev/null || echo -; }

run() { # KIND WORKERS DURATION -> one result line
  local u h; u=$(port); h=$(port)
  start_server "$1" "$2" "$u" "$h"
  gen_config "$u" "$3"
  local c0; c0=$(cpu_secs "$pid")
  local r; r=$(taskset -c 1 aquatic_udp_load_test -c "$W/gen.toml" 2>&1 | awk '/Average responses per second/ {print $5}')
  local c1; c1=$(cpu_secs "$pid")
  local p="-"; [ "$1" != aq ] && p=$(peers "$h")
  [ "$1" = aq ] && [ "${MEMRUN:-0}" = 1 ] && p=$(awk '/^ *peers:/ {n=$2} END {gsub(",", "", n); print n}' "$W/server.log")
  local line
  local label=$1; [ "${MEMRUN:-0}" = 1 ] && label=$1-mem
  line=$(awk -v k="$label" -v w="$2" -v r="${r:-0}" -v c0="$c0" -v c1="$c1" -v d="$3" -v rss="$(rss_mib "$pid")" \
    -v dr="$(drops "$u")" -v p="$p" 'BEGIN {
      cpu = c1 - c0; per = cpu > 0 ? r * d / cpu : 0;
      printf "%-8s workers %d  responses/s %8.0f  server CPU s %6.2f  responses/CPU-s %8.0f  drops %8d  RSS MiB %7.1f  peers %s\n", k, w, r, cpu, per, dr, rss, p }')
  stop_server
  echo "$line" | tee -a "$W/results"
}

echo "==> $(date -u +%FT%TZ) rounds $ROUNDS, $DURATION s a run, workers: $WORKERS, servers: $SERVERS"
for w in $WORKERS; do
  for r in $(seq "$ROUNDS"); do
    for k in $SERVERS; do run "$k" "$w" "$DURATION"; done
  done
done
if [ "$MEM" = 1 ]; then
  echo "==> memory: $MEM_DURATION s fill, 1 worker (the generator cycles through its 2M peers)"
  for k in nodb aq; do MEMRUN=1 run "$k" 1 "$MEM_DURATION"; done
fi
echo "==> summary (median responses/s and responses/CPU-s by server and workers)"
python3 - "$W/results" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    rows[(f[0], int(f[2]))].append((float(f[4]), float(f[10])))
for (k, w), v in sorted(rows.items(), key=lambda x: (x[0][1], x[0][0])):
    print(f"{k:8} workers {w}: responses/s {statistics.median(a for a, _ in v):9.0f}  "
          f"responses/CPU-s {statistics.median(b for _, b in v):9.0f}  (n={len(v)})")
PY
