#!/usr/bin/env bash
# Builds the image with scripts/build-image.sh and checks, with Debian's skopeo and umoci, what the
# DaemonSet, Istio and the nodes rely on:
#   - the archive is ONE OCI image index naming exactly linux/amd64 and linux/arm64;
#   - each platform's image: config os/architecture, ENTRYPOINT ["/kubelet-authz-node"], two gzip
#     OCI layers, the LAST holding only /plugin.wasm (Istio's WasmPlugin reads that layer), the same
#     wasm layer blob on both platforms;
#   - each image holds exactly /kubelet-authz-node (0555, root, a static ELF for that machine: no
#     interpreter) and /plugin.wasm (0444, root, byte-identical to the built module);
#   - the amd64 agent runs (`--version`, `--help`), and the arm64 agent runs under
#     qemu-aarch64-static (exit 0) and prints the same as the amd64 one;
#   - DEPLOY.md's push (`skopeo copy --all --preserve-digests --digestfile`) keeps the index digest,
#     and a second build gives the same digest (reproducible).
# Nothing is skipped: a missing tool (qemu included) fails. Prints "N passed, 0 failed".
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$SECONDS
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
WASM=${KUBELET_AUTHZ_FILTER_WASM:-$TARGET_DIR/wasm32-wasip1/release/kubelet_authz_filter.wasm}
# The arm64 agent runs under this user-mode emulator (Debian qemu-user-static); never skipped.
QEMU_AARCH64=${QEMU_AARCH64:-qemu-aarch64-static}
die() { printf 'check-image: %s\n' "$*" >&2; exit 1; }
for t in skopeo umoci buildah jq file tar python3 "$QEMU_AARCH64"; do
  command -v "$t" >/dev/null || die "$t is missing: run scripts/setup.sh"
done
# OCI arch -> ELF e_machine (and what `file` calls it).
declare -A E_MACHINE=([amd64]=62 [arm64]=183)
declare -A FILE_MACHINE=([amd64]="x86-64" [arm64]="ARM aarch64")
declare -A RUN=([amd64]="" [arm64]="$QEMU_AARCH64")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
archive="$work/kubelet-authz.oci.tar"
bash scripts/build-image.sh "$WASM" "$archive" localhost/kubelet-authz:test

passed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }

# The ELF header of $1: "class endianness e_machine interp", interp 1 when a PT_INTERP segment
# (a dynamic loader) is asked for.
elf() {
  python3 - "$1" <<'PYEOF'
import struct, sys
b = open(sys.argv[1], "rb").read()
if b[:4] != b"\x7fELF" or b[4] != 2 or b[5] != 1:
    print("not-elf64le 0 0 0"); sys.exit()
machine, = struct.unpack_from("<H", b, 18)
phoff, = struct.unpack_from("<Q", b, 32)
phentsize, phnum = struct.unpack_from("<HH", b, 54)
interp = any(struct.unpack_from("<I", b, phoff + i * phentsize)[0] == 3 for i in range(phnum))
print(f"elf64 le {machine} {int(interp)}")
PYEOF
}

# --- the index ---
index=$(skopeo inspect --raw "oci-archive:$archive")
[ "$(jq -r .mediaType <<<"$index")" = application/vnd.oci.image.index.v1+json ] ||
  die "the archive's top manifest is not an OCI image index: $index"
platforms=$(jq -r '[.manifests[] | "\(.platform.os)/\(.platform.architecture)"] | sort | join(" ")' <<<"$index")
[ "$platforms" = "linux/amd64 linux/arm64" ] || die "the index names [$platforms], expected linux/amd64 linux/arm64: $index"
index_digest="sha256:$(printf '%s' "$index" | sha256sum | cut -d' ' -f1)"
ok "skopeo: one OCI image index ($index_digest) naming $platforms"

# The push of docs/DEPLOY.md (prerequisite "The image"), to a local layout instead of a registry.
skopeo copy --quiet --all --preserve-digests --digestfile "$work/pushed.digest" \
  "oci-archive:$archive" "oci:$work/all:kubelet-authz"
# skopeo verified every blob against its digest while copying; the digest it reports is the index's.
[ "$(cat "$work/pushed.digest")" = "$index_digest" ] && [ "$(jq -r '.manifests[0].digest' "$work/all/index.json")" = "$index_digest" ] ||
  die "skopeo copy --all reports $(cat "$work/pushed.digest"), not the index $index_digest: $(cat "$work/all/index.json")"
ok "skopeo copy --all --preserve-digests --digestfile (the documented push) keeps the index and reports its digest"

declare -A HELP VERSION WASM_LAYER
for arch in amd64 arm64; do
  digest=$(jq -r --arg a "$arch" '.manifests[] | select(.platform.architecture == $a) | .digest' <<<"$index")
  # One platform on its own: the layout umoci reads (umoci does not pick a platform from an index).
  skopeo --override-os linux --override-arch "$arch" copy --quiet "oci-archive:$archive" "oci:$work/layout:$arch"
  manifest=$(skopeo inspect --raw "oci:$work/layout:$arch")
  [ "sha256:$(printf '%s' "$manifest" | sha256sum | cut -d' ' -f1)" = "$digest" ] ||
    die "$arch: skopeo picked a manifest other than the index's $digest"
  config=$(skopeo inspect --config "oci:$work/layout:$arch")
  [ "$(jq -r '"\(.os)/\(.architecture)"' <<<"$config")" = "linux/$arch" ] || die "$arch: config is $(jq -c '{os, architecture}' <<<"$config")"
  [ "$(jq -c .config.Entrypoint <<<"$config")" = '["/kubelet-authz-node"]' ] ||
    die "$arch: ENTRYPOINT is $(jq -c .config.Entrypoint <<<"$config"), expected [\"/kubelet-authz-node\"]"
  [ "$(jq -c '.config.Cmd // null' <<<"$config")" = null ] || die "$arch: the image sets a Cmd: $(jq -c .config.Cmd <<<"$config")"
  ok "$arch: manifest $digest, config linux/$arch, ENTRYPOINT [\"/kubelet-authz-node\"], no Cmd"

  # The layers, read from the blobs themselves: media type, files, modes, owners.
  [ "$(jq '.layers | length' <<<"$manifest")" = 2 ] || die "$arch: expected two layers: $manifest"
  jq -e '[.layers[].mediaType] | all(. == "application/vnd.oci.image.layer.v1.tar+gzip")' <<<"$manifest" >/dev/null ||
    die "$arch: Istio reads gzip OCI layers, found $(jq -c '[.layers[].mediaType]' <<<"$manifest")"
  listing=()
  for i in 0 1; do
    blob="$work/layout/blobs/sha256/$(jq -r ".layers[$i].digest" <<<"$manifest" | cut -d: -f2)"
    listing+=("$(tar --numeric-owner -tvzf "$blob" | awk '{print $1, $2, $NF}' | sed 's#^\(.*\) \./#\1 #; s# /# #' | sort | tr '\n' ';')")
  done
  [ "${listing[0]}" = "-r-xr-xr-x 0/0 kubelet-authz-node;" ] || die "$arch: layer 1 is [${listing[0]}], expected the agent alone (0555, root)"
  [ "${listing[1]}" = "-r--r--r-- 0/0 plugin.wasm;" ] || die "$arch: the last layer is [${listing[1]}], expected plugin.wasm alone (0444, root)"
  WASM_LAYER[$arch]=$(jq -r '.layers[1].digest' <<<"$manifest")
  ok "$arch: two gzip layers: [${listing[0]}] then [${listing[1]}] (Istio's WasmPlugin reads the last)"

  umoci unpack --rootless --image "$work/layout:$arch" "$work/bundle-$arch" >/dev/null
  rootfs="$work/bundle-$arch/rootfs"
  files=$(cd "$rootfs" && find . -mindepth 1 | sort | tr '\n' ' ')
  [ "$files" = "./kubelet-authz-node ./plugin.wasm " ] || die "$arch: unexpected files in the image: $files"
  cmp -s "$rootfs/plugin.wasm" "$WASM" || die "$arch: /plugin.wasm differs from $WASM"
  ok "$arch: umoci unpacks exactly $files; /plugin.wasm is the built module (sha256:$(sha256sum <"$WASM" | cut -d' ' -f1))"

  agent="$rootfs/kubelet-authz-node"
  [ "$(elf "$agent")" = "elf64 le ${E_MACHINE[$arch]} 0" ] ||
    die "$arch: /kubelet-authz-node is not a static 64-bit little-endian ELF for e_machine ${E_MACHINE[$arch]} (got: $(elf "$agent"); $(file -b "$agent"))"
  described=$(file -b "$agent")
  grep -q "${FILE_MACHINE[$arch]}" <<<"$described" && grep -qE 'statically linked|static-pie linked' <<<"$described" ||
    die "$arch: file(1) says: $described"
  ok "$arch: /kubelet-authz-node is a static ELF for ${FILE_MACHINE[$arch]}, no interpreter ($(stat -c %s "$agent") bytes)"

  run=("$agent")
  [ -z "${RUN[$arch]}" ] || run=("${RUN[$arch]}" "$agent")
  VERSION[$arch]=$("${run[@]}" --version) || die "$arch: ${run[*]} --version exited $?"
  HELP[$arch]=$("${run[@]}" --help) || die "$arch: ${run[*]} --help exited $?"
  grep -qx "kubelet-authz-node [0-9][0-9.]*" <<<"${VERSION[$arch]}" || die "$arch: --version printed: ${VERSION[$arch]}"
  grep -q "Usage: kubelet-authz-node" <<<"${HELP[$arch]}" || die "$arch: --help printed: ${HELP[$arch]}"
  ok "$arch: ${RUN[$arch]:+${RUN[$arch]} }/kubelet-authz-node --version (${VERSION[$arch]}) and --help exit 0"
done

[ "${WASM_LAYER[amd64]}" = "${WASM_LAYER[arm64]}" ] ||
  die "the wasm layers differ between platforms: ${WASM_LAYER[amd64]} and ${WASM_LAYER[arm64]}"
ok "one wasm layer blob for both platforms (${WASM_LAYER[amd64]})"
[ "${VERSION[amd64]}" = "${VERSION[arm64]}" ] && [ "${HELP[amd64]}" = "${HELP[arm64]}" ] ||
  die "the arm64 agent prints other --version/--help than the amd64 one: $(diff <(echo "${VERSION[amd64]}"; echo "${HELP[amd64]}") <(echo "${VERSION[arm64]}"; echo "${HELP[arm64]}"))"
ok "the arm64 agent (under qemu) prints the same --version and --help as the amd64 one"

# Reproducible: the same inputs give the same index digest (buildah --timestamp 0), so a digest pinned
# from one build can be checked against a rebuild.
bash scripts/build-image.sh "$WASM" "$work/again.oci.tar" localhost/kubelet-authz:test >/dev/null
again="sha256:$(skopeo inspect --raw "oci-archive:$work/again.oci.tar" | sha256sum | cut -d' ' -f1)"
[ "$again" = "$index_digest" ] || die "a second build gave the index $again, the first $index_digest: the build is not reproducible"
ok "reproducible: a second build gives the same index digest"

echo "image index digest: $index_digest (pin this one)"
echo "check-image: $((SECONDS - started)) s"
echo "$passed passed, 0 failed"
