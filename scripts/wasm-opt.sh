#!/usr/bin/env bash
# Optimises proxy-wasm modules for size in place with binaryen's wasm-opt -Oz (Debian `binaryen`,
# installed by scripts/setup.sh): on the filter, 474 -> 436 KB (docs/PERFORMANCE.md "Module size").
#
# `-ocimfs 20`: a function with one caller is inlined into it only when it is small. Plain -Oz
# inlines every such function, and Envoy's RSS with the filter then grew by 9 MiB (109 MiB against
# 99.5 MiB, envoy/bench/run.sh's footprint, 3 x 3 starts, measured at opt-level "z"), presumably
# V8 compiling the few huge functions that result. With the limit the RSS is cargo's artefact's,
# and the start to the first answer too.
#
#   bash scripts/wasm-opt.sh MODULE.wasm...
#
# Each module is read from its path and replaced by the optimised one (written beside it first).
set -euo pipefail
command -v wasm-opt >/dev/null || { echo "wasm-opt.sh: wasm-opt is missing (Debian binaryen): run scripts/setup.sh" >&2; exit 1; }
# The WebAssembly features rustc's wasm32-wasip1 target emits (Debian's binaryen 108 enables none
# unless told; without them it refuses the module's memory.copy).
FEATURES=(--enable-bulk-memory --enable-sign-ext --enable-mutable-globals
  --enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue)
for wasm in "$@"; do
  wasm-opt "${FEATURES[@]}" -Oz --one-caller-inline-max-function-size 20 "$wasm" -o "$wasm.opt"
  mv -f "$wasm.opt" "$wasm"
done
