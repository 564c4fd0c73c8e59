#!/usr/bin/env bash
# Builds the filter image for real, with Debian's buildah (no daemon, no base image): FROM scratch,
# ONE layer holding
#   /plugin.wasm  the filter module: Istio's WasmPlugin image format (`url: oci://...`)
#   /busybox      a static busybox, so the DaemonSet's `filter` init container can copy the module
#                 into its pod (`/busybox cp /plugin.wasm /wasm/...`)
# and writes it as an OCI archive. Push it with e.g.
#   skopeo copy oci-archive:FILE docker://registry.example.com/kubelet-authz/filter:0.1.0
# and pin the manifest digest it prints in envoy/kubernetes/daemonset.yaml and the WasmPlugin.
#
#   scripts/build-image.sh [WASM] [OUT.tar] [IMAGE]
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
WASM=${1:-$TARGET_DIR/wasm32-wasip1/release/kubelet_authz_filter.wasm}
OUT=${2:-$TARGET_DIR/kubelet-authz-filter.oci.tar}
IMAGE=${3:-localhost/kubelet-authz/filter:0.1.0}
BUSYBOX=${BUSYBOX:-/bin/busybox}
die() { printf 'build-image: %s\n' "$*" >&2; exit 1; }

command -v buildah >/dev/null || die "buildah is missing: run scripts/setup.sh"
[ -f "$WASM" ] || die "$WASM is missing: cargo build -p kubelet-authz-filter --target wasm32-wasip1 --release"
[ -x "$BUSYBOX" ] || die "$BUSYBOX is missing: apt-get install busybox-static"
"$BUSYBOX" true 2>/dev/null || die "$BUSYBOX does not run"
if command -v ldd >/dev/null && ldd "$BUSYBOX" 2>&1 | grep -q '=>'; then
  die "$BUSYBOX is dynamically linked: a FROM scratch image needs busybox-static"
fi

work=$(mktemp -d)
trap 'buildah --root "$work/root" --runroot "$work/run" --storage-driver vfs rm --all >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
mkdir -p "$work/context"
cp "$WASM" "$work/context/plugin.wasm"
cp "$BUSYBOX" "$work/context/busybox"
chmod 0444 "$work/context/plugin.wasm"
chmod 0555 "$work/context/busybox"
cat >"$work/context/Containerfile" <<'CEOF'
FROM scratch
COPY plugin.wasm busybox /
CEOF

b() { buildah --root "$work/root" --runroot "$work/run" --storage-driver vfs "$@"; }
b bud --quiet --isolation chroot --timestamp 0 --format oci \
  --label org.opencontainers.image.title=kubelet-authz-filter \
  -f "$work/context/Containerfile" -t "$IMAGE" "$work/context" >/dev/null
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"
b push --quiet "$IMAGE" "oci-archive:$OUT"
echo "build-image: wrote $OUT ($IMAGE, plugin.wasm sha256:$(sha256sum "$WASM" | cut -d' ' -f1))"
