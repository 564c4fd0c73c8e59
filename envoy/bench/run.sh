#!/usr/bin/env bash
# Load benchmark of the kubelet-authz filter: one command, one run on loopback.
#
#   bash envoy/bench/run.sh [--duration 3] [--latency-duration 2] [--connections 16]
#                           [--configs a,b,c,g,d,d0,e,f] [--realistic-configs b,g,d,d0]
#                           [--jwt-configs b,g,d,d0]
#                           [--footprint-configs b,g,d] [--footprint-runs 3]
#                           [--out envoy/bench/results.json]
#                           [--perf d] [--sched fifo|nice|normal] [--keep] [--no-build]
#                           [--noop-wasm <module> --noop-config <configuration>]
#
# Builds what it needs (release filter .wasm, the no-op .wasm of envoy/bench/noop-filter, the
# stand-in API server and kubelet), then envoy/bench/bench.py starts the stand-ins, an upstream
# Envoy with direct_response and one proxy Envoy (--concurrency 1) per configuration, drives each
# with wrk on two workloads (minimal: one short token; realistic: a node's clients with 1.2 KB
# ServiceAccount tokens and Prometheus' scrape headers; and issue 24's two single-path ones with a
# 1.2 KB token, jwt-pods and jwt-scrape), measures the node footprint (each of
# b, g, d started alone: time from process start to the first answer through the listener, and
# Envoy's RSS; d over b and over g), prints the tables and writes the JSON.
# With --noop-wasm set to the harness's bench module (harness/testdata/bench-module) and
# --noop-config clock:10, remove:10 or pairs, configuration g measures one hostcall of the cached
# path in Envoy against --noop-config none.
# About 125 s of load by default (at most 150 s); every process it starts is stopped on exit. See
# docs/PERFORMANCE.md for the method and the latest numbers.
#
# Environment: CARGO_TARGET_DIR (default <repo>/target), ENVOY_BIN (default <repo>/.venv/bin/envoy,
# installed by scripts/setup.sh when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

BUILD=1
ARGS=()
for a in "$@"; do
  case "$a" in
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,/^set -euo/{/^#/p}' "$0"; python3 envoy/bench/bench.py --help | sed -n '/^options:/,$p'; exit 0 ;;
    *) ARGS+=("$a") ;;
  esac
done

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
ENVOY=${ENVOY_BIN:-$ROOT/.venv/bin/envoy}
if [ ! -x "$ENVOY" ]; then
  [ -z "${ENVOY_BIN:-}" ] || die "ENVOY_BIN=$ENVOY is not executable"
  say "no Envoy at $ENVOY: running scripts/setup.sh"
  bash scripts/setup.sh
fi
command -v wrk >/dev/null || die "wrk is missing (scripts/setup.sh installs it)"
command -v python3 >/dev/null || die "python3 is missing"

FILTER_WASM=$TARGET/wasm32-wasip1/release/kubelet_authz_filter.wasm
NOOP_TARGET=$TARGET/bench-noop
NOOP_WASM=$NOOP_TARGET/wasm32-wasip1/release/kubelet_authz_bench_noop_filter.wasm
# The stand-ins in an optimised profile without LTO (the workspace's release profile is tuned for
# the .wasm; the stand-ins only need to be fast, not small).
STANDIN_DIR=$TARGET/benchstandin
export CARGO_PROFILE_BENCHSTANDIN_INHERITS=release CARGO_PROFILE_BENCHSTANDIN_LTO=false \
  CARGO_PROFILE_BENCHSTANDIN_CODEGEN_UNITS=16 CARGO_PROFILE_BENCHSTANDIN_OPT_LEVEL=2 \
  CARGO_PROFILE_BENCHSTANDIN_PANIC=unwind

if [ "$BUILD" = 1 ]; then
  say "building the filter (release, wasm32-wasip1, wasm-opt -Oz: scripts/build-filter.sh)"
  CARGO_TARGET_DIR=$TARGET bash scripts/build-filter.sh -q
  # The same profile and link flags as the filter, but not wasm-opt: on the no-op module it costs
  # Envoy 3.3 MiB of RSS and 25 ms of start (docs/PERFORMANCE.md "Module size"), which would
  # flatter the filter against its floor.
  say "building the no-op filter"
  (cd envoy/bench/noop-filter && CARGO_TARGET_DIR=$NOOP_TARGET cargo build -q --target wasm32-wasip1 --release)
  say "building the stand-in API server and kubelet"
  CARGO_TARGET_DIR=$TARGET cargo build -q -p kubelet-authz-standins --profile benchstandin \
    --bin kubelet-authz-apiserver --bin kubelet-authz-kubelet
fi
for f in "$FILTER_WASM" "$NOOP_WASM" "$STANDIN_DIR/kubelet-authz-apiserver" "$STANDIN_DIR/kubelet-authz-kubelet"; do
  [ -e "$f" ] || die "$f is missing (run without --no-build)"
done

ENVOY_VERSION=$("$ENVOY" --version 2>&1 | grep -o '[0-9]*\.[0-9]*\.[0-9]*/Clean' | head -1 | cut -d/ -f1 || true)

BENCH_PID=""
cleanup() {
  # bench.py stops what it started; this only stops bench.py itself if the script is interrupted.
  if [ -n "$BENCH_PID" ] && kill -0 "$BENCH_PID" 2>/dev/null; then
    kill -TERM "$BENCH_PID" 2>/dev/null || true
    wait "$BENCH_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

python3 envoy/bench/bench.py \
  --envoy-bin "$ENVOY" --envoy-version "${ENVOY_VERSION:-unknown}" \
  --filter-wasm "$FILTER_WASM" --noop-wasm "$NOOP_WASM" \
  --apiserver-bin "$STANDIN_DIR/kubelet-authz-apiserver" --kubelet-bin "$STANDIN_DIR/kubelet-authz-kubelet" \
  --rbac authz/tests/fixtures/rbac/seed-roles.yaml \
  ${ARGS[@]+"${ARGS[@]}"} &
BENCH_PID=$!
wait "$BENCH_PID"
