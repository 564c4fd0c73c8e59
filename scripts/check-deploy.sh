#!/usr/bin/env bash
# Validates every deployment object under envoy/ offline, as an operator's `kubectl apply` would
# need it (a missing tool is a failure, never a skip; scripts/setup.sh installs them):
# - the kustomize base (envoy/kubernetes, `kubectl kustomize`) builds, and what it builds validates;
# - every Kubernetes object: PyPI kubernetes-validate --strict against 1.32, 1.33 and 1.34;
# - every Istio object: the CRD schemas of npm @kubernetes-models/istio (tests/deploy/validate-istio.mjs);
#   both for the shipped files and for the per-node objects that envoy/istio/per-node.sh prints;
# - each validator is first shown to refuse a broken object.
# (The Envoy bootstraps are validated with `envoy --mode validate` by tests/tests/configs.rs.)
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
die() { printf 'check-deploy: %s\n' "$*" >&2; exit 1; }

KV=.venv/bin/kubernetes-validate
PY=.venv/bin/python
NPM_DIR=.work/npm
[ -x "$KV" ] || die "$KV is missing: run scripts/setup.sh"
command -v node >/dev/null || die "node is missing: run scripts/setup.sh"
[ -d "$NPM_DIR/node_modules/@kubernetes-models/istio" ] || die "$NPM_DIR/node_modules/@kubernetes-models/istio is missing: run scripts/setup.sh"

command -v kubectl >/dev/null || die "kubectl is missing (it ships kustomize): run scripts/setup.sh"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Per-node Istio objects for a second node, as an operator would generate them.
sh envoy/istio/per-node.sh node-b.example 192.0.2.7 v1.34.1 >"$work/per-node-b.yaml"

# Split every document by kind: Kubernetes objects to files for kubernetes-validate, Istio objects to
# JSON lines for node; anything else must be an Envoy bootstrap (checked by configs.rs).
# filter.yaml is the filter ConfigMap's content (configs.rs checks it with the engine); the kustomize
# base is checked as built, below.
mapfile -t files < <(find envoy/kubernetes envoy/istio -name '*.yaml' ! -name filter.yaml ! -name kustomization.yaml | sort)
files+=("$work/per-node-b.yaml")
# The base as `kubectl apply -k` sends it (generated ConfigMaps, hash-suffixed names).
kubectl kustomize envoy/kubernetes >"$work/kustomize-base.yaml" || die "kubectl kustomize envoy/kubernetes failed"
grep -q 'name: kubelet-authz-node-' "$work/kustomize-base.yaml" || die "the base has no hash-suffixed kubelet-authz-node ConfigMap"
files+=("$work/kustomize-base.yaml")
"$PY" - "$work" "${files[@]}" <<'PYEOF'
import json, os, sys, yaml
work, files = sys.argv[1], sys.argv[2:]
k8s, istio, n = [], open(os.path.join(work, "istio.jsonl"), "w"), 0
for f in files:
    for i, d in enumerate(yaml.safe_load_all(open(f))):
        if not d:
            continue
        api = d.get("apiVersion", "")
        if not api:
            if "static_resources" not in d:
                sys.exit(f"check-deploy: {f}: document {i} is neither a Kubernetes object nor an Envoy bootstrap")
            continue
        if api.split("/")[0] == "kubelet.config.k8s.io":
            continue  # a node's KubeletConfiguration: configs.rs runs check-config on it
        if api.split("/")[0].endswith("istio.io"):
            istio.write(json.dumps({"file": f, "object": d}) + "\n")
        else:
            n += 1
            out = os.path.join(work, f"k8s-{n:03d}-{os.path.basename(f)}")
            yaml.safe_dump(d, open(out, "w"))
            k8s.append(out)
open(os.path.join(work, "k8s.list"), "w").write("\n".join(k8s) + "\n")
PYEOF
mapfile -t k8s < "$work/k8s.list"
[ "${#k8s[@]}" -ge 6 ] || die "expected at least 6 Kubernetes objects, found ${#k8s[@]}"

# kubernetes-validate must refuse an unknown field (--strict), or it proves nothing.
sed 's/^\(  *\)hostNetwork: true/\1hostNetwork: true\n\1hostNetwrk: true/' envoy/kubernetes/daemonset.yaml >"$work/broken-daemonset.yaml"
if "$KV" --strict -k 1.33.0 "$work/broken-daemonset.yaml" >/dev/null 2>&1; then
  die "kubernetes-validate --strict accepted a DaemonSet with an unknown field"
fi

passed=0 failed=0
for v in 1.32.0 1.33.0 1.34.0; do
  for f in "${k8s[@]}"; do
    if out=$("$KV" --strict -k "$v" "$f" 2>&1); then
      passed=$((passed + 1))
    else
      failed=$((failed + 1))
      printf 'FAIL %s (Kubernetes %s):\n%s\n' "$f" "$v" "$out"
    fi
  done
done
echo "kubernetes-validate --strict (1.32, 1.33, 1.34): ${#k8s[@]} objects, $passed passed, $failed failed"

cp tests/deploy/validate-istio.mjs "$NPM_DIR/validate-istio.mjs"
istio_rc=0
node "$NPM_DIR/validate-istio.mjs" <"$work/istio.jsonl" || istio_rc=$?

echo "check-deploy: $((SECONDS - started)) s"
[ "$failed" -eq 0 ] && [ "$istio_rc" -eq 0 ] || die "invalid deployment objects (above)"
