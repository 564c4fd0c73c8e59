#!/usr/bin/env bash
# Validates every deployment object under envoy/ offline, as an operator's `kubectl apply -k` would
# need it (a missing tool is a failure, never a skip; scripts/setup.sh installs them):
# - `kubectl kustomize` builds the base (envoy/kubernetes: the kubelet-authz-node ConfigMap with a
#   content hash in its name), every overlay (envoy/overlays/*) and the ServiceMonitor variant of the
#   monitoring bundle; every object YAML under envoy/kubernetes is in some build;
# - every Kubernetes object of those builds: PyPI kubernetes-validate --strict against 1.32, 1.33
#   and 1.34. The Prometheus Operator kinds (PodMonitor, ServiceMonitor, PrometheusRule) are not in
#   Kubernetes' schemas: they are taken out by apiVersion monitoring.coreos.com and validated
#   against the operator's CRD schemas (npm @kubernetes-models/prometheus-operator,
#   tests/deploy/validate-monitoring.mjs); any other kind kubernetes-validate has no schema for
#   fails;
# - what each overlay is for: enforce's filter.yaml is the base's with only `enforcement` changed,
#   eks has the ServiceAccount-token RBAC and kubeadm has not, configure has the privileged init
#   container and the unconfigure DaemonSet, the monitors select the DaemonSet's pods, the
#   dashboard ConfigMap holds grafana-dashboard.json;
# - the monitoring bundle with promtool (tests/deploy/check-monitoring.py): `promtool check rules`,
#   `promtool test rules` (every alert fires and stays silent where it should, and the tests fail
#   when an alert is broken), every runbook link reaches a section of docs/DEPLOY.md, every
#   dashboard query parses;
# - every Istio object: the CRD schemas of npm @kubernetes-models/istio (tests/deploy/validate-istio.mjs);
#   both for the shipped files and for the per-node objects that envoy/istio/per-node.sh (the node
#   agent's `istio-objects`, built here with cargo unless KUBELET_AUTHZ_NODE names the binary)
#   prints for the Node List fixture node/tests/fixtures/istio/nodes.json (IPv4 and IPv6 nodes),
#   also with a kubelet configuration's TLS policy (--kubelet-config) and with
#   `--extension-api TrafficExtension` (Istio 1.30+: no npm package has its schema; it is checked
#   against tests/deploy/trafficextension-v1alpha1.schema.json, transcribed from Istio's CRD);
# - the Mermaid diagrams of README.md and docs/*.md parse with mermaid (tests/deploy/check-mermaid.mjs);
# - each validator is first shown to refuse a broken object.
# (The Envoy bootstraps are validated with `envoy --mode validate` by tests/tests/configs.rs.)
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
die() { printf 'check-deploy: %s\n' "$*" >&2; exit 1; }

KV=.venv/bin/kubernetes-validate
PY=.venv/bin/python
NPM_DIR=${KUBELET_AUTHZ_NPM_DIR:-.work/npm}
[ -x "$KV" ] || die "$KV is missing: run scripts/setup.sh"
command -v node >/dev/null || die "node is missing: run scripts/setup.sh"
command -v kubectl >/dev/null || die "kubectl is missing (it builds the kustomizations): install it"
command -v promtool >/dev/null || die "promtool is missing: run scripts/setup.sh (Debian package prometheus)"
for pkg in @kubernetes-models/istio @kubernetes-models/prometheus-operator ajv mermaid jsdom; do
  [ -d "$NPM_DIR/node_modules/$pkg" ] || die "$NPM_DIR/node_modules/$pkg is missing: run scripts/setup.sh"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The kustomizations: the base, every overlay, and the ServiceMonitor variant (written here as an
# overlay of its own; kustomize takes relative paths only).
mkdir -p "$work/servicemonitor-variant"
rel=$(realpath --relative-to="$work/servicemonitor-variant" envoy)
cat >"$work/servicemonitor-variant/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [$rel/overlays/kubeadm]
components: [$rel/kubernetes/monitoring, $rel/kubernetes/monitoring/servicemonitor]
EOF
builds=()
for dir in envoy/kubernetes envoy/overlays/*/ "$work/servicemonitor-variant"; do
  dir=${dir%/}
  case "$dir" in
    envoy/kubernetes) name=base ;;
    envoy/overlays/*) name=overlay-$(basename "$dir") ;;
    *) name=servicemonitor-variant ;;
  esac
  [ -f "$dir/kustomization.yaml" ] || die "$dir: no kustomization.yaml"
  kubectl kustomize "$dir" >"$work/$name.yaml" 2>"$work/$name.err" \
    || die "kubectl kustomize $dir failed: $(cat "$work/$name.err")"
  builds+=("$work/$name.yaml")
done
grep -q 'name: kubelet-authz-node-' "$work/base.yaml" || die "the base has no hash-suffixed kubelet-authz-node ConfigMap"
echo "kubectl kustomize: ${#builds[@]} builds (base, $(find envoy/overlays -mindepth 1 -maxdepth 1 -type d | wc -l) overlays, the ServiceMonitor variant)"
for o in kubeadm eks enforce monitoring configure; do
  [ -f "$work/overlay-$o.yaml" ] || die "envoy/overlays/$o is missing"
done

# Per-node Istio objects for the nodes of a Node List fixture, as an operator generates them.
if [ -z "${KUBELET_AUTHZ_NODE:-}" ]; then
  command -v cargo >/dev/null || die "cargo is missing: set KUBELET_AUTHZ_NODE to a built kubelet-authz-node"
  cargo build -q -p kubelet-authz-node || die "cargo build -p kubelet-authz-node failed"
  KUBELET_AUTHZ_NODE=${CARGO_TARGET_DIR:-target}/debug/kubelet-authz-node
fi
export KUBELET_AUTHZ_NODE
sh envoy/istio/per-node.sh --nodes node/tests/fixtures/istio/nodes.json >"$work/per-node-b.yaml" \
  || die "envoy/istio/per-node.sh --nodes node/tests/fixtures/istio/nodes.json failed"
[ "$(grep -c '^kind: WasmPlugin' "$work/per-node-b.yaml")" -eq 2 ] \
  || die "per-node.sh: expected the objects of the fixture's 2 labelled nodes"
grep -q 'bind: 2001:db8::a' "$work/per-node-b.yaml" || die "per-node.sh: the IPv6 node's Gateway has no IPv6 bind"
# With the kubelet's TLS policy carried over (a kubeadm fixture with tlsCipherSuites in a drop-in).
sh envoy/istio/per-node.sh --nodes node/tests/fixtures/istio/nodes.json \
  --kubelet-config node/tests/fixtures/kubeadm/config.yaml --config-dir node/tests/fixtures/kubeadm/conf.d \
  >"$work/per-node-tls.yaml" || die "envoy/istio/per-node.sh --kubelet-config failed"
grep -q 'cipherSuites' "$work/per-node-tls.yaml" || die "per-node.sh --kubelet-config: no cipherSuites in the Gateways"
# The TrafficExtension variant (Istio 1.30+) instead of the WasmPlugins.
sh envoy/istio/per-node.sh --nodes node/tests/fixtures/istio/nodes.json --extension-api TrafficExtension \
  >"$work/per-node-te.yaml" || die "envoy/istio/per-node.sh --extension-api TrafficExtension failed"
[ "$(grep -c '^kind: TrafficExtension' "$work/per-node-te.yaml")" -eq 2 ] && ! grep -q '^kind: WasmPlugin' "$work/per-node-te.yaml" \
  || die "per-node.sh --extension-api TrafficExtension: expected 2 TrafficExtensions and no WasmPlugin"

# Sort every document: Kubernetes objects (deduplicated across builds) to one file per build for
# kubernetes-validate, Prometheus Operator and Istio objects to JSON lines for node; the raw Istio
# files are validated as they are. The overlays' own checks run here too.
mapfile -t istio_files < <(find envoy/istio -name '*.yaml' | sort)
"$PY" - "$work" "${builds[@]}" -- "${istio_files[@]}" "$work/per-node-b.yaml" "$work/per-node-tls.yaml" "$work/per-node-te.yaml" <<'PYEOF'
import glob, hashlib, json, os, sys, yaml
work = sys.argv[1]
sep = sys.argv.index("--")
builds, istio_files = sys.argv[2:sep], sys.argv[sep + 1:]
def fail(msg): sys.exit(f"check-deploy: {msg}")
def docs(f): return [d for d in yaml.safe_load_all(open(f)) if d]
mon = open(os.path.join(work, "monitoring.jsonl"), "w")
istio = open(os.path.join(work, "istio.jsonl"), "w")
seen, k8s_files, objects = set(), [], {}
for b in builds:
    name = os.path.basename(b)[:-len(".yaml")]
    objects[name] = docs(b)
    core = []
    for d in objects[name]:
        group = d.get("apiVersion", "").split("/")[0]
        key = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()
        if key in seen:
            continue
        seen.add(key)
        if group == "monitoring.coreos.com":
            mon.write(json.dumps({"file": name, "object": d}) + "\n")
        elif group.endswith("istio.io"):
            istio.write(json.dumps({"file": name, "object": d}) + "\n")
        else:
            core.append(d)
    if core:
        out = os.path.join(work, f"k8s-{name}.yaml")
        yaml.safe_dump_all(core, open(out, "w"))
        k8s_files.append(out)
for f in istio_files:
    for i, d in enumerate(docs(f)):
        api = d.get("apiVersion", "")
        if api.split("/")[0].endswith("istio.io"):
            istio.write(json.dumps({"file": f, "object": d}) + "\n")
        elif api:
            out = os.path.join(work, f"k8s-istio-{len(k8s_files):03d}-{os.path.basename(f)}")
            yaml.safe_dump(d, open(out, "w"))
            k8s_files.append(out)
        elif "static_resources" not in d:
            fail(f"{f}: document {i} is neither a Kubernetes object nor an Envoy bootstrap")
open(os.path.join(work, "k8s.list"), "w").write("\n".join(k8s_files) + "\n")

# Every Kubernetes object in a YAML file under envoy/kubernetes is in some build.
ids = {(d.get("kind"), d["metadata"].get("name"), d["metadata"].get("namespace"))
       for ds in objects.values() for d in ds}
for f in sorted(glob.glob("envoy/kubernetes/**/*.yaml", recursive=True)):
    if f.startswith("envoy/kubernetes/monitoring/tests/") or f == "envoy/kubernetes/filter.yaml":
        continue  # promtool tests (check-monitoring.py); the filter ConfigMap's content (daemonset.rs)
    for d in docs(f):
        group = d.get("apiVersion", "").split("/")[0]
        if group in ("kustomize.config.k8s.io", "kubelet.config.k8s.io"):
            continue  # kustomize's own files; the node's KubeletConfiguration (configs.rs)
        md = d.get("metadata", {})
        if not md.get("name") or (d.get("kind"), md.get("name"), md.get("namespace")) not in ids:
            if os.path.dirname(f).startswith("envoy/overlays"):
                continue
            fail(f"{f}: {d.get('kind')}/{md.get('name')} is in no kustomization (envoy/kubernetes, envoy/overlays/*): list it")

def find(name, kind, obj_name):
    for d in objects[name]:
        if d["kind"] == kind and d["metadata"]["name"] == obj_name:
            return d
    return None
def need(name, kind, obj_name):
    d = find(name, kind, obj_name)
    if d is None:
        fail(f"{name}: no {kind}/{obj_name}")
    return d

# enforce: the base's filter settings with only enforcement changed.
base_filter = yaml.safe_load(need("base", "ConfigMap", "kubelet-authz-filter")["data"]["filter.yaml"])
enf_filter = yaml.safe_load(need("overlay-enforce", "ConfigMap", "kubelet-authz-filter")["data"]["filter.yaml"])
if base_filter.get("enforcement") != "Shadow":
    fail("base: kubelet-authz-filter filter.yaml: enforcement must be Shadow (the safe default)")
if enf_filter != {**base_filter, "enforcement": "Enforce"}:
    fail("overlays/enforce: filter.yaml must be the base's with `enforcement: Enforce` only: copy the base's filter.yaml into envoy/overlays/enforce/filter.yaml")
for o in ("kubeadm", "eks", "monitoring"):
    f = yaml.safe_load(need(f"overlay-{o}", "ConfigMap", "kubelet-authz-filter")["data"]["filter.yaml"])
    if f.get("enforcement") != "Shadow":
        fail(f"overlays/{o}: must start in Shadow")

# eks: the ServiceAccount-token bindings; kubeadm: none of them.
for b in ("kubelet-authz:auth-delegator", "kubelet-authz:node-reader"):
    need("overlay-eks", "ClusterRoleBinding", b)
    if find("overlay-kubeadm", "ClusterRoleBinding", b) or find("base", "ClusterRoleBinding", b):
        fail(f"base/kubeadm: {b} is only for nodes without a client certificate (overlays/eks)")

# configure: the privileged init container runs before init, and the unconfigure DaemonSet is there;
# no other build has either.
ds = need("overlay-configure", "DaemonSet", "kubelet-authz")
inits = [c["name"] for c in ds["spec"]["template"]["spec"].get("initContainers", [])]
if inits[:2] != ["configure", "init"]:
    fail(f"overlays/configure: init containers {inits}: `configure` must run first, then `init`")
need("overlay-configure", "DaemonSet", "kubelet-authz-unconfigure")
for o in ("base", "overlay-kubeadm", "overlay-eks", "overlay-enforce", "overlay-monitoring"):
    if find(o, "DaemonSet", "kubelet-authz-unconfigure"):
        fail(f"{o}: the unconfigure DaemonSet is only for the opt-in privileged mode (overlays/configure)")
    d = find(o, "DaemonSet", "kubelet-authz")
    if d and any(c["name"] == "configure" for c in d["spec"]["template"]["spec"].get("initContainers", [])):
        fail(f"{o}: the privileged configure step is opt-in (overlays/configure)")

# monitoring: the monitors select the DaemonSet's pods; the dashboard is the file.
ds = need("overlay-monitoring", "DaemonSet", "kubelet-authz")
pod_labels = ds["spec"]["template"]["metadata"]["labels"]
ns = ds["metadata"]["namespace"]
def selects(sel, labels):
    return all(labels.get(k) == v for k, v in sel.get("matchLabels", {}).items()) and not sel.get("matchExpressions")
pm = need("overlay-monitoring", "PodMonitor", "kubelet-authz")
if not selects(pm["spec"]["selector"], pod_labels) or ns not in pm["spec"]["namespaceSelector"]["matchNames"]:
    fail("PodMonitor kubelet-authz does not select the DaemonSet's pods")
need("overlay-monitoring", "PrometheusRule", "kubelet-authz")
cm = need("overlay-monitoring", "ConfigMap", "kubelet-authz-grafana-dashboard")
if cm["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
    fail("ConfigMap kubelet-authz-grafana-dashboard: needs the label grafana_dashboard: \"1\"")
if json.loads(cm["data"]["grafana-dashboard.json"]) != json.load(open("envoy/kubernetes/monitoring/grafana-dashboard.json")):
    fail("ConfigMap kubelet-authz-grafana-dashboard does not hold grafana-dashboard.json")
if find("servicemonitor-variant", "PodMonitor", "kubelet-authz"):
    fail("the ServiceMonitor variant must remove the PodMonitor (else every series is scraped twice)")
svc = need("servicemonitor-variant", "Service", "kubelet-authz-metrics")
sm = need("servicemonitor-variant", "ServiceMonitor", "kubelet-authz")
if not selects({"matchLabels": svc["spec"]["selector"]}, pod_labels) or not selects(sm["spec"]["selector"], svc["metadata"]["labels"]):
    fail("ServiceMonitor -> Service -> DaemonSet pods: a selector does not match")
if svc["spec"].get("clusterIP") != "None":
    fail("Service kubelet-authz-metrics must be headless")
print("overlays: enforce = base with Enforce only; eks has the ServiceAccount-token RBAC, kubeadm not; monitors select the pods")
PYEOF
mapfile -t k8s < "$work/k8s.list"
[ "${#k8s[@]}" -ge 4 ] || die "expected Kubernetes objects from at least 4 builds, found ${#k8s[@]} files"

# kubernetes-validate must refuse an unknown field (--strict), or it proves nothing.
sed 's/^\(  *\)hostNetwork: true/\1hostNetwork: true\n\1hostNetwrk: true/' envoy/kubernetes/daemonset.yaml >"$work/broken-daemonset.yaml"
if "$KV" --strict -k 1.33.0 "$work/broken-daemonset.yaml" >/dev/null 2>&1; then
  die "kubernetes-validate --strict accepted a DaemonSet with an unknown field"
fi

passed=0 failed=0
for v in 1.32.0 1.33.0 1.34.0; do
  for f in "${k8s[@]}"; do
    # A kind without a schema is only a warning to kubernetes-validate: a failure here.
    if out=$("$KV" --strict -k "$v" "$f" 2>&1) && ! grep -q "Couldn't find schema" <<<"$out"; then
      passed=$((passed + $(grep -c ' passed for resource ' <<<"$out")))
    else
      failed=$((failed + 1))
      printf 'FAIL %s (Kubernetes %s):\n%s\n' "$f" "$v" "$(grep -v ' passed for resource ' <<<"$out")"
    fi
  done
done
echo "kubernetes-validate --strict (1.32, 1.33, 1.34): ${#k8s[@]} files, $passed object validations passed, $failed files failed"

# The node scripts run from a directory of this run whose node_modules is the installed one (an
# ES module resolves packages from its own directory): nothing is written into $NPM_DIR.
js="$work/js"
mkdir -p "$js"
ln -s "$(realpath "$NPM_DIR/node_modules")" "$js/node_modules"
cp tests/deploy/validate-istio.mjs tests/deploy/trafficextension-v1alpha1.schema.json \
  tests/deploy/validate-monitoring.mjs tests/deploy/check-mermaid.mjs "$js/"
[ "$(grep -c '"kind": "TrafficExtension"' "$work/istio.jsonl")" -eq 2 ] || die "expected the 2 TrafficExtensions among the Istio objects"
istio_rc=0 mon_rc=0
node "$js/validate-istio.mjs" <"$work/istio.jsonl" || istio_rc=$?
[ "$(wc -l <"$work/monitoring.jsonl")" -ge 3 ] || die "expected the PodMonitor, ServiceMonitor and PrometheusRule among the builds"
node "$js/validate-monitoring.mjs" <"$work/monitoring.jsonl" || mon_rc=$?

mon_ok=0
"$PY" tests/deploy/check-monitoring.py . "$work/promtool" || mon_ok=$?

# The diagrams of the docs (DEPLOY.md opens with one) must render on GitHub: parsed by mermaid.
mermaid_rc=0
node "$js/check-mermaid.mjs" README.md docs/*.md || mermaid_rc=$?

echo "check-deploy: $((SECONDS - started)) s"
[ "$failed" -eq 0 ] && [ "$istio_rc" -eq 0 ] && [ "$mon_rc" -eq 0 ] && [ "$mon_ok" -eq 0 ] && [ "$mermaid_rc" -eq 0 ] \
  || die "invalid deployment objects or diagrams (above)"
