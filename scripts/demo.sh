#!/usr/bin/env bash
# The demo: set up, build the release filter and the demo binary, then run the stand-in API
# server and kubelet and a real Envoy with the filter on loopback, send requests as several
# identities to several kubelet endpoints, print the matrix, and stop everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
say() { printf '==> %s\n' "$*"; }

say "building the filter (release, wasm32-wasip1) and the demo binary"
bash scripts/build-filter.sh -q --locked
cargo build -q -p kubelet-authz-e2e --bin kubelet-authz-demo --locked

export KUBELET_AUTHZ_FILTER_WASM="$TARGET/wasm32-wasip1/release/kubelet_authz_filter.wasm"
export ENVOY_BIN="$PWD/.venv/bin/envoy"

# The demo binary stops Envoy and the stand-ins itself; if it is killed, stop what it started.
demo_pid=""
cleanup() {
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
    for child in $(pgrep -P "$demo_pid" || true); do kill "$child" 2>/dev/null || true; done
    kill "$demo_pid" 2>/dev/null || true
    wait "$demo_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "running the demo"
"$TARGET/debug/kubelet-authz-demo" &
demo_pid=$!
status=0
wait "$demo_pid" || status=$?
demo_pid=""
exit "$status"
