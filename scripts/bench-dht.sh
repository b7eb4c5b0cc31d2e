#!/usr/bin/env bash
# DHT lookup benchmark over loopback (not part of the test suite): messages
# sent and time until a get_peers lookup returns the seeder, ours vs
# libtorrent, in one DHT of libtorrent and OurTorrent nodes.
#
#   scripts/bench-dht.sh            # RUNS=7 LT_NODES=24 OURS_NODES=8
#
# The DHT (one for the whole run): a libtorrent router, LT_NODES-1 more
# libtorrent sessions (one python process, tests/py/lt_dht_net.py net), the
# last of them a seeder announcing a random info-hash every 2 s, and
# OURS_NODES `shell-std dht` nodes bootstrapping from the router. After a
# settling pause, RUNS rounds each run both lookups one after the other,
# the order swapped every round, each from a fresh node that knows only
# the router:
#   ours  shell-std dht --lookup IH --json (a fresh, empty table file)
#   lt    tests/py/lt_dht_net.py lookup (a fresh libtorrent session)
# Both start their lookup once their table holds a node (bootstrap runs
# alongside) and count every DHT datagram they sent from start to the end
# of the lookup (ours: the shell's counters; libtorrent:
# dht.dht_messages_out). Time to the seeder: ours from the command (its
# bootstrap wait included) to the first reply with the seeder; libtorrent
# from its dht_get_peers call to dht_get_peers_reply_alert (it reports
# peers only at the end of the lookup). Time to the end of the lookup too.
# Prints per-run lines and a summary (medians).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-7}
LT_NODES=${LT_NODES:-24}
OURS_NODES=${OURS_NODES:-8}
SETTLE=${SETTLE:-5}
PY=/usr/bin/python3
BIN=${BIN:-$PWD/target/release/shell-std}
NET=$PWD/tests/py/lt_dht_net.py

[ -n "${NO_BUILD:-}" ] || cargo build --release -p shell-std >/dev/null
W=$(mktemp -d /tmp/ot-bench-dht.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

IH=$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')
$PY "$NET" net "$LT_NODES" "$IH" --max-seconds $((60 + RUNS * 40)) >"$W/net.out" 2>"$W/net.err" &
pids+=($!)
for _ in $(seq 100); do grep -q '^READY' "$W/net.out" && break; sleep 0.1; done
grep -q '^READY' "$W/net.out" || { echo "libtorrent DHT did not start"; cat "$W/net.err"; exit 1; }
R=$(sed -n 's/^ROUTER port=//p' "$W/net.out")
SEEDER=$(sed -n 's/^READY seeder=\([^ ]*\).*/\1/p' "$W/net.out")
for i in $(seq "$OURS_NODES"); do
  "$BIN" dht --listen 127.0.0.1:0 --bootstrap "127.0.0.1:$R" --state "$W/node$i.state" \
    >"$W/node$i.out" 2>/dev/null &
  pids+=($!)
done
echo "DHT: $LT_NODES libtorrent + $OURS_NODES ours nodes, router 127.0.0.1:$R, seeder $SEEDER, info-hash $IH"
sleep "$SETTLE"

# one KIND N: runs one lookup, appends "KIND sent recv ms found" to results.
one() {
  local out
  if [ "$1" = ours ]; then
    out=$(timeout 60 "$BIN" dht --listen 127.0.0.1:0 --bootstrap "127.0.0.1:$R" \
      --state "$W/lookup$2.state" --lookup "$IH" --json --timeout 30 2>/dev/null || true)
  else
    out=$(timeout 60 $PY "$NET" lookup "$R" "$IH" --timeout 30 2>/dev/null || true)
  fi
  echo "$out" | $PY -c '
import json, sys
kind, seeder = sys.argv[1], sys.argv[2]
try:
    l = json.loads(sys.stdin.read())["lookup"]
except Exception:
    print(kind, "-", "-", "-", "-", 0); sys.exit()
found = int(seeder in l["peers"])
# Time to the seeder, from the start of the lookup itself for libtorrent
# (its session start and table wait are not counted; ours counts its wait).
start = l.get("lookup_started_ms", 0)
ms = (l["first_peer_ms"] if l["first_peer_ms"] is not None else l["done_ms"]) - start
print(kind, l["messages_sent"], l["messages_received"], round(ms, 1),
      round(l["done_ms"] - start, 1), found,
      "queries=" + json.dumps({k: v for k, v in l["out"].items() if k in
        ("ping", "find_node", "get_peers", "announce_peer")}, separators=(",", ":")))
' "$1" "$SEEDER" | tee -a "$W/results"
}

echo "kind sent received ms-to-seeder ms-to-end found queries-sent"
for r in $(seq "$RUNS"); do
  if [ $((r % 2)) = 1 ]; then one ours "$r"; one lt "$r"; else one lt "$r"; one ours "$r"; fi
done

$PY - "$W/results" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for kind in ("ours", "lt"):
    ok = [r for r in rows if r[0] == kind and r[5] == "1"]
    n = len([r for r in rows if r[0] == kind])
    if not ok:
        print("%-4s found the seeder in 0 of %d runs" % (kind, n)); continue
    med = lambda i: statistics.median(float(r[i]) for r in ok)
    rng = lambda i: "%g-%g" % (min(float(r[i]) for r in ok), max(float(r[i]) for r in ok))
    print("%-4s found the seeder in %d of %d runs; median messages sent %g (%s), "
          "received %g, time to the seeder %g ms (%s), to the lookup's end %g ms (%s)"
          % (kind, len(ok), n, med(1), rng(1), med(2), med(3), rng(3), med(4), rng(4)))
EOF
