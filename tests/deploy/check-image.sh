#!/usr/bin/env bash
# Builds the filter image with scripts/build-image.sh and checks what Istio and the DaemonSet rely
# on, with Debian's skopeo and umoci: an OCI image of exactly ONE layer, holding /plugin.wasm equal
# (sha256) to the built module, and a /busybox that runs the DaemonSet's own `filter` init container
# command (taken from envoy/kubernetes/daemonset.yaml) to copy it. Prints "N passed, 0 failed".
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$SECONDS
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
WASM=${KUBELET_AUTHZ_FILTER_WASM:-$TARGET_DIR/wasm32-wasip1/release/kubelet_authz_filter.wasm}
die() { printf 'check-image: %s\n' "$*" >&2; exit 1; }
for t in skopeo umoci buildah; do command -v "$t" >/dev/null || die "$t is missing: run scripts/setup.sh"; done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
archive="$work/filter.oci.tar"
bash scripts/build-image.sh "$WASM" "$archive" localhost/kubelet-authz/filter:test

passed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }

manifest=$(skopeo inspect --raw "oci-archive:$archive")
layers=$(printf '%s' "$manifest" | jq '.layers | length')
[ "$layers" = 1 ] || die "expected one layer, found $layers: $manifest"
ok "one layer"
config=$(skopeo inspect --config "oci-archive:$archive")
[ "$(printf '%s' "$config" | jq -r .os)" = linux ] || die "image os is not linux: $config"
ok "config os linux"

skopeo copy --quiet "oci-archive:$archive" "oci:$work/layout:filter"
# skopeo verified every blob against its digest while copying; check the layer's once more.
layer=$(printf '%s' "$manifest" | jq -r '.layers[0].digest')
[ "sha256:$(sha256sum "$work/layout/blobs/sha256/${layer#sha256:}" | cut -d' ' -f1)" = "$layer" ] ||
  die "layer blob does not match its digest $layer"
ok "layer digest $layer"
umoci unpack --rootless --image "$work/layout:filter" "$work/bundle" >/dev/null
rootfs="$work/bundle/rootfs"
files=$(cd "$rootfs" && find . -mindepth 1 | sort | tr '\n' ' ')
[ "$files" = "./busybox ./plugin.wasm " ] || die "unexpected files in the image: $files"
ok "files: $files"
[ "$(sha256sum <"$rootfs/plugin.wasm")" = "$(sha256sum <"$WASM")" ] || die "/plugin.wasm differs from $WASM"
ok "/plugin.wasm is the built module (sha256:$(sha256sum <"$WASM" | cut -d' ' -f1))"

# The DaemonSet's own init command, with its paths mapped into the unpacked image and a temp dir.
mapfile -t cmd < <(.venv/bin/python - <<'PYEOF'
import yaml
for d in yaml.safe_load_all(open("envoy/kubernetes/daemonset.yaml")):
    if d and d.get("kind") == "DaemonSet":
        for c in d["spec"]["template"]["spec"]["initContainers"]:
            if c["name"] == "filter":
                print("\n".join(c["command"]))
PYEOF
)
[ "${#cmd[@]}" -ge 3 ] || die "no filter init container command in daemonset.yaml"
mkdir -p "$work/wasm"
mapped=()
for a in "${cmd[@]}"; do
  case "$a" in
    /wasm/*) mapped+=("$work$a") ;;
    /*) mapped+=("$rootfs$a") ;;
    *) mapped+=("$a") ;;
  esac
done
"${mapped[@]}"
copied=$(find "$work/wasm" -type f)
[ -n "$copied" ] && cmp -s "$copied" "$WASM" || die "the init command did not copy the module: ${cmd[*]}"
ok "the DaemonSet's init command (${cmd[*]}) copies the module"
digest=$(skopeo inspect "oci-archive:$archive" | jq -r .Digest)
echo "image manifest digest: $digest (pin this one)"
echo "check-image: $((SECONDS - started)) s"
echo "$passed passed, 0 failed"
