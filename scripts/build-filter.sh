#!/usr/bin/env bash
# The filter module as it ships: cargo's release build of kubelet-authz-filter for wasm32-wasip1
# (opt-level "s", compressed relocations: Cargo.toml, filter/build.rs), then scripts/wasm-opt.sh
# over cargo's artefact, in place (docs/PERFORMANCE.md "Module size"). The tests, the image and the
# benchmark build it with this script.
#
#   bash scripts/build-filter.sh [cargo build options: --locked, --quiet, --features F, --target-dir DIR]
#
# The module is <target dir>/wasm32-wasip1/release/kubelet_authz_filter.wasm. A later plain
# `cargo build` of the filter puts cargo's own (larger, otherwise identical) artefact back there.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --target-dir) target_dir=${args[$((i + 1))]:-} ;;
    --target-dir=*) target_dir=${args[$i]#--target-dir=} ;;
  esac
done
cargo build -p kubelet-authz-filter --target wasm32-wasip1 --release "$@"
bash scripts/wasm-opt.sh "$target_dir/wasm32-wasip1/release/kubelet_authz_filter.wasm"
