#!/usr/bin/env bash
# What the Redis store costs (not part of the tests): `shell-std loadtest`
# (closed loop, 1:8:1 connect:announce:scrape) against
#   mem     one tracker, swarms in memory (--no-db),
#   redis1  one tracker with --store redis://… (a fresh Debian redis-server),
#   redis2  two trackers on that one Redis, one generator each, at once
#           (announces/s summed),
# each for DURATION seconds, no pinning (trackers, Redis and generators share
# the machine's cores). Also Redis's memory per stored peer (used_memory
# growth / peers stored, from INFO and the generator's distinct peers).
#
#   scripts/bench-tracker-redis.sh     # DURATION=10 TORRENTS=100000 PEERS=200000
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
TORRENTS=${TORRENTS:-100000}
PEERS=${PEERS:-200000}
CONCURRENCY=${CONCURRENCY:-64}
command -v redis-server >/dev/null || { echo "missing: redis-server (apt-get install redis-server)" >&2; exit 1; }
cargo build --release -q -p shell-std
BIN=$PWD/target/release/shell-std
W=$(mktemp -d /tmp/ot-bench-redis.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

RP=$(port)
redis-server --bind 127.0.0.1 --port "$RP" --save "" --appendonly no --dir "$W" >"$W/redis.log" &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$RP" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
redis_mem() { redis-cli -p "$RP" info memory | awk -F: '/^used_memory:/ {print $2+0}'; }

tracker() { # UDP_PORT ARGS...
  local u=$1; shift
  "$BIN" tracker --udp "127.0.0.1:$u" --no-http --no-db --workers 1 "$@" >"$W/t$u.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do ss -uln | grep -q "127.0.0.1:$u " && return 0; sleep 0.05; done
  echo "tracker on $u did not start" >&2; cat "$W/t$u.log" >&2; exit 1
}

gen() { # UDP_PORT SEED -> responses/s of announces
  "$BIN" loadtest --target "127.0.0.1:$1" --duration "$DURATION" --torrents "$TORRENTS" \
    --peers "$PEERS" --concurrency "$CONCURRENCY" --mix 1:8:1 --seed "$2" --no-stop --json \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.0f %.0f %d" % (d["kinds"]["announce"]["per_second"], d["responses_per_second"], d["errors"]["timeouts"]))'
}

U1=$(port); tracker "$U1" --max-torrents 2000000
echo "mem     announces/s, all responses/s, timeouts: $(gen "$U1" 1)"
U2=$(port); tracker "$U2" --store "redis://127.0.0.1:$RP"
m0=$(redis_mem)
echo "redis1  announces/s, all responses/s, timeouts: $(gen "$U2" 1)"
m1=$(redis_mem)
keys=$(redis-cli -p "$RP" dbsize)
# Peers stored (KEYS is fine on a benchmark's private server).
stored=$(redis-cli -p "$RP" eval "local n=0 for _,k in ipairs(redis.call('KEYS','ot:*:peers')) do n=n+redis.call('HLEN',k) end return n" 0)
U3=$(port); tracker "$U3" --store "redis://127.0.0.1:$RP"
gen "$U2" 2 >"$W/g2" & g2=$!
gen "$U3" 3 >"$W/g3" & g3=$!
wait $g2 $g3
echo "redis2  instance A: $(cat "$W/g2")  instance B: $(cat "$W/g3")  (announces/s, all responses/s, timeouts)"
awk -v a="$(cut -d' ' -f1 "$W/g2")" -v b="$(cut -d' ' -f1 "$W/g3")" 'BEGIN {printf "redis2  announces/s summed: %.0f\n", a + b}'
awk -v m0="$m0" -v m1="$m1" -v p="$stored" -v k="$keys" 'BEGIN {
  printf "redis memory after the first run: %.1f MiB for %d peers (%d keys): %.0f B a peer\n", (m1-m0)/1048576, p, k, (m1-m0)/p }'
