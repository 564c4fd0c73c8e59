#!/bin/sh
# kubelet-authz: the per-node CA and the proxy's local identity (run by the DaemonSet's `node-ca`
# init container, and by its `node-ca-renew` container with the argument `loop`).
#
# On first start it makes a CA on this node (key never leaves STATE_DIR, a root-only host
# directory); the kubelet trusts it as its client CA (`authentication.x509.clientCAFile:
# STATE_DIR/ca.crt`). It then issues the proxy's client certificate (CN PROXY_CN, a reserved
# `system:` name that only node CAs mint and only the local kubelet trusts) and keeps it fresh: a new
# certificate is written next to the old one and the symlink `proxy-current.pem` is swapped, the way
# the kubelet rotates its own, so Envoy (SDS with watched_directory) picks it up without a restart.
#
# Environment: STATE_DIR (e.g. /var/lib/kubelet-authz/pki), NODE_NAME, PROXY_CN
# (system:kubelet-authz:proxy), CERT_DAYS (30), RENEW_DAYS (10), CHECK_SECONDS (3600, loop only).
set -eu
umask 077

: "${STATE_DIR:?STATE_DIR is not set}"
: "${NODE_NAME:?NODE_NAME is not set}"
: "${PROXY_CN:=system:kubelet-authz:proxy}"
: "${CERT_DAYS:=30}"
: "${RENEW_DAYS:=10}"
: "${CHECK_SECONDS:=3600}"

say() { echo "node-ca: $*" >&2; }

make_ca() {
  if [ -s "$STATE_DIR/ca.key" ] && [ -s "$STATE_DIR/ca.crt" ]; then
    return 0
  fi
  say "making the per-node CA in $STATE_DIR (first start on node $NODE_NAME)"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$STATE_DIR/ca.key.tmp"
  openssl req -x509 -new -key "$STATE_DIR/ca.key.tmp" -sha256 -days 3650 \
    -subj "/CN=kubelet-authz node CA ${NODE_NAME}" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$STATE_DIR/ca.crt.tmp"
  mv -f "$STATE_DIR/ca.key.tmp" "$STATE_DIR/ca.key"
  mv -f "$STATE_DIR/ca.crt.tmp" "$STATE_DIR/ca.crt"
}

# Is proxy-current.pem present, issued by this CA, and valid for at least RENEW_DAYS more?
proxy_fresh() {
  cur="$STATE_DIR/proxy-current.pem"
  [ -s "$cur" ] || return 1
  openssl x509 -in "$cur" -noout -checkend $((RENEW_DAYS * 86400)) >/dev/null 2>&1 || return 1
  openssl verify -CAfile "$STATE_DIR/ca.crt" "$cur" >/dev/null 2>&1 || return 1
}

issue_proxy() {
  stamp=$(date -u +%Y-%m-%d-%H-%M-%S)
  new="$STATE_DIR/proxy-$stamp.pem"
  work="$STATE_DIR/.issue"
  rm -rf "$work"
  mkdir "$work"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/key.pem"
  openssl req -new -key "$work/key.pem" -subj "/CN=${PROXY_CN}" -out "$work/req.csr"
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=clientAuth" >"$work/ext.cnf"
  openssl x509 -req -in "$work/req.csr" -CA "$STATE_DIR/ca.crt" -CAkey "$STATE_DIR/ca.key" \
    -CAcreateserial -sha256 -days "$CERT_DAYS" -extfile "$work/ext.cnf" -out "$work/cert.pem" 2>/dev/null
  cat "$work/cert.pem" "$work/key.pem" >"$new.tmp"
  mv -f "$new.tmp" "$new"
  # The kubelet's way: a new file, then an atomic swap of the symlink.
  ln -s "$new" "$STATE_DIR/proxy-current.pem.tmp"
  mv -f "$STATE_DIR/proxy-current.pem.tmp" "$STATE_DIR/proxy-current.pem"
  rm -rf "$work"
  # Keep the current and the previous certificate only.
  ls -1 "$STATE_DIR"/proxy-2*.pem 2>/dev/null | sort | head -n -2 | while read -r old; do rm -f "$old"; done
  say "issued $(openssl x509 -in "$new" -noout -serial) for ${PROXY_CN}, valid ${CERT_DAYS} days"
}

once() {
  mkdir -p "$STATE_DIR"
  chmod 700 "$STATE_DIR"
  make_ca
  proxy_fresh || issue_proxy
}

once
if [ "${1:-}" = loop ]; then
  while sleep "$CHECK_SECONDS"; do
    once
  done
fi
