#!/usr/bin/env bash
# Builds every cargo-fuzz target and runs each briefly (FUZZ_SECONDS, default
# 20) from its checked-in seed corpus. New inputs go to a temporary folder
# (or FUZZ_WORK, kept), so the checked-in corpus is never modified. Any
# crash fails the run. FUZZ_TARGETS="a b" limits the run to those targets.
# A long campaign: FUZZ_SECONDS=600 FUZZ_WORK=/tmp/fuzz scripts/fuzz-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-20}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
# ASan needs nightly; without a nightly toolchain fall back to no sanitizer.
if rustup toolchain list | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
  san=()
else
  fuzz=(cargo fuzz)
  san=(--sanitizer none)
fi

if [ -n "${FUZZ_WORK:-}" ]; then
  work=$FUZZ_WORK
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
"${fuzz[@]}" build "${san[@]}"
targets=${FUZZ_TARGETS:-$("${fuzz[@]}" list)}
for t in $targets; do
  dict=()
  case "$t" in
    bencode*|metainfo) dict=(-dict=fuzz/dict/bencode.dict) ;;
    magnet) dict=(-dict=fuzz/dict/magnet.dict) ;;
    udp_tracker_*) dict=(-dict=fuzz/dict/udp_tracker.dict) ;;
    handshake|bitfield) dict=(-dict=fuzz/dict/peer_wire.dict) ;;
  esac
  [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
  mkdir -p "$work/$t"
  echo "==> fuzz $t for ${secs}s"
  rc=0
  "${fuzz[@]}" run "${san[@]}" "$t" "$work/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 "${dict[@]}" >"$work/$t.log" 2>&1 || rc=$?
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' "$work/$t.log" || true
  # The final line has coverage (cov) and features (ft).
  grep -E '^#[0-9]+[[:space:]]+DONE' "$work/$t.log" | tail -1 || true
  if [ "$rc" -ne 0 ]; then
    tail -60 "$work/$t.log"
    echo "fuzz target $t failed (exit $rc)"
    exit 1
  fi
done
echo "fuzz smoke: all targets ran ${secs}s without a crash"
