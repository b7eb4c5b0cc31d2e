#!/usr/bin/env bash
# OurTorrent's whole test suite. Installs what the tests need when it is
# missing (Debian packages, the embedded Rust target, cargo-fuzz), then runs
# every test. Under CI=true no test skips for a missing tool: missing fails.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# --- Debian packages: third-party peers and tools the tests drive ---------
need=()
command -v mktorrent >/dev/null || need+=(mktorrent)
command -v aria2c >/dev/null || need+=(aria2)
command -v opentracker >/dev/null || need+=(opentracker)
command -v redis-server >/dev/null || need+=(redis-server)
command -v qemu-system-arm >/dev/null || need+=(qemu-system-arm)
/usr/bin/python3 -c 'import libtorrent' 2>/dev/null || need+=(python3-libtorrent)
# the daemon's web page test drives a headless chromium through chromedriver
command -v chromedriver >/dev/null || need+=(chromium chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  log "installing Debian packages: ${need[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need[@]}"
fi

# --- Rust targets and tools ------------------------------------------------
if ! rustup target list --installed | grep -qx thumbv7m-none-eabi; then
  log "adding the thumbv7m-none-eabi target"
  rustup target add thumbv7m-none-eabi
fi

# --- the tests -------------------------------------------------------------
log "cargo test --workspace"
cargo test --workspace

log "core builds for thumbv7m-none-eabi (no_std, no alloc)"
cargo build -p ourtorrent-core --target thumbv7m-none-eabi

if [ -x scripts/fuzz-smoke.sh ]; then
  log "fuzz smoke run"
  scripts/fuzz-smoke.sh
fi
