#!/usr/bin/env bash
# Mutation check for the filter's tests through the real .wasm in the harness:
# - the scenario tests (harness/tests/filter_scenarios.rs) must pass against the real filter module
#   and, with the case corpus (harness/tests/cases.rs), FAIL against two tiny mutants that accept any configuration and then allow every request
#   (harness/testdata/mutants/allow-all) or answer 403 to every request (.../deny-all);
# - the filter rebuilt from a copy of the source with a security check removed
#   (scripts/mutants/apply.py: the canonical-path refusal, the XFCC digest check) must make the
#   corpus or scenario tests fail (issue 7).
# Honours CARGO_TARGET_DIR. Exit 0 when all of it holds.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
started=$(date +%s)

echo "== building the real filter, the two mutants and the test binary"
bash scripts/build-filter.sh --quiet
real="$CARGO_TARGET_DIR/wasm32-wasip1/release/kubelet_authz_filter.wasm"
for m in allow-all deny-all; do
    cargo build --release --quiet --target wasm32-wasip1 \
        --manifest-path "harness/testdata/mutants/$m/Cargo.toml" \
        --target-dir "$CARGO_TARGET_DIR/mutants"
done
cargo test -p kubelet-authz-harness --test filter_scenarios --test corpus --test cases --no-run --quiet

# Runs the tests ($2, default filter_scenarios) against module $1; prints "passed failed" from
# the test summary.
run_tests() {
    local out
    out=$(KUBELET_AUTHZ_FILTER_WASM="$1" cargo test -p kubelet-authz-harness --test "${2:-filter_scenarios}" --quiet 2>&1 || true)
    local summary
    summary=$(grep -E '^test result:' <<<"$out" | tail -n 1)
    if [[ -z "$summary" ]]; then
        echo "no test summary for $1:" >&2
        echo "$out" | tail -n 30 >&2
        echo "-1 -1"
        return
    fi
    local passed failed
    passed=$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$summary")
    failed=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$summary")
    echo "$passed $failed"
}

status=0
read -r passed failed < <(run_tests "$real")
echo "== real filter: $passed passed, $failed failed"
if [[ "$failed" != 0 || "$passed" -lt 80 ]]; then
    echo "FAIL: the scenario tests must all pass (and be at least 80) against the real filter" >&2
    status=1
fi
for m in allow-all deny-all; do
    module="$CARGO_TARGET_DIR/mutants/wasm32-wasip1/release/mutant_${m//-/_}.wasm"
    for suite in filter_scenarios cases; do
        read -r mpassed mfailed < <(run_tests "$module" "$suite")
        echo "== mutant $m: $mfailed of $((mpassed + mfailed)) $suite tests failed"
        if [[ "$mfailed" -le 0 ]]; then
            echo "FAIL: the $suite tests did not catch the $m mutant" >&2
            status=1
        fi
    done
done

# Source mutations: each removes one security check; the filter is rebuilt from a copy.
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
for m in no-canonical-path:corpus trust-xfcc:filter_scenarios; do
    name=${m%%:*}
    suite=${m#*:}
    rm -rf "$copy/src"
    mkdir -p "$copy/src"
    git ls-files -z | xargs -0 cp --parents -t "$copy/src"
    if ! python3 scripts/mutants/apply.py "$name" "$copy/src"; then
        status=1
        continue
    fi
    (cd "$copy/src" && cargo build -p kubelet-authz-filter --target wasm32-wasip1 --release --quiet \
        --target-dir "$CARGO_TARGET_DIR/source-mutants")
    module="$CARGO_TARGET_DIR/source-mutants/wasm32-wasip1/release/kubelet_authz_filter.wasm"
    read -r mpassed mfailed < <(run_tests "$module" "$suite")
    echo "== source mutant $name: $mfailed of $((mpassed + mfailed)) $suite tests failed"
    if [[ "$mfailed" -le 0 ]]; then
        echo "FAIL: the $suite tests did not catch the $name mutant" >&2
        status=1
    fi
done

echo "== check-mutants: $(( $(date +%s) - started ))s, $([[ $status == 0 ]] && echo OK || echo FAILED)"
exit $status
