#!/bin/sh
# kubelet-authz: render this node's Envoy bootstrap (the DaemonSet's `render` init container).
#
# Reads the template (node-proxy.yaml from the ConfigMap) and writes OUTPUT_DIR/envoy.yaml and the
# SDS files OUTPUT_DIR/sds/*.yaml. Fails with a message naming the problem, never starts a
# half-configured Envoy:
# - every certificate file must exist and parse (serving, node client, proxy local, cluster CA);
# - the credential towards the API server (APISERVER_AUTH): `node-cert`, the node's own kubelet
#   client certificate (kubeadm and most distributions), or `serviceaccount-token`, the pod's
#   projected ServiceAccount token APISERVER_TOKEN, injected by Envoy as `Authorization: Bearer` on
#   the reviews (nodes without a kubelet client certificate: EKS). `auto` takes node-cert when
#   NODE_CLIENT_CERT exists, serviceaccount-token otherwise;
# - the kubelet version comes from KUBELET_VERSION, else from this node's Node object
#   (status.nodeInfo.kubeletVersion), read with that credential;
# - the TLS policy comes from the kubelet's configuration file (tlsMinVersion, tlsCipherSuites);
# - the API server is the kubelet's own control-plane endpoint (the `server:` of its kubeconfig),
#   not the ClusterIP, unless APISERVER_URL is set;
# - with WAIT_FOR_LOOPBACK_KUBELET=true it waits until nothing but 127.0.0.1 listens on the
#   kubelet port (the kubelet has been moved to loopback: see docs/DEPLOY.md, rollout order).
#
# Environment (defaults are the DaemonSet's paths):
#   NODE_NAME, LISTEN_ADDRESS      required (downward API)
#   TEMPLATE                       /config/node-proxy.yaml
#   OUTPUT_DIR                     /rendered
#   KUBELET_CONFIG                 /var/lib/kubelet/config.yaml
#   KUBELET_KUBECONFIG             /etc/kubernetes/kubelet.conf
#   SERVING_CERT                   /var/lib/kubelet/pki/kubelet-server-current.pem (cert and key)
#   NODE_CLIENT_CERT               /var/lib/kubelet/pki/kubelet-client-current.pem (cert and key)
#   APISERVER_AUTH                 auto | node-cert | serviceaccount-token
#   APISERVER_TOKEN                /var/run/secrets/kubelet-authz/token (projected ServiceAccount token)
#   PROXY_CERT                     /var/lib/kubelet-authz/pki/proxy-current.pem (cert and key)
#   CLUSTER_CA                     /etc/kubernetes/pki/ca.crt
#   APISERVER_URL                  https://host:port (default: from KUBELET_KUBECONFIG)
#   APISERVER_NAME                 kubernetes.default.svc
#   KUBELET_VERSION                empty = detect; else a minor version such as 1.33
#   ENFORCEMENT                    Shadow | Enforce
#   ANONYMOUS_ENABLED, STRICT_UPGRADE_VERB, LIMITS, APISERVER_TIMEOUT, LISTEN_PORT, METRICS_PORT,
#   ADMIN_SOCKET, FILTER_WASM, MAX_CONNECTIONS, MAX_HEAP_BYTES, KUBELET_ADDRESS, KUBELET_PORT,
#   KUBELET_SERVER_NAME, WAIT_FOR_LOOPBACK_KUBELET, UPSTREAM_MAX_CONNECTION_AGE (3600s)
set -eu

die() { echo "render: $*" >&2; exit 1; }
say() { echo "render: $*" >&2; }

: "${NODE_NAME:?render: NODE_NAME is not set}"
: "${LISTEN_ADDRESS:?render: LISTEN_ADDRESS is not set}"
: "${TEMPLATE:=/config/node-proxy.yaml}"
: "${OUTPUT_DIR:=/rendered}"
: "${KUBELET_CONFIG:=/var/lib/kubelet/config.yaml}"
: "${KUBELET_KUBECONFIG:=/etc/kubernetes/kubelet.conf}"
: "${SERVING_CERT:=/var/lib/kubelet/pki/kubelet-server-current.pem}"
: "${NODE_CLIENT_CERT:=/var/lib/kubelet/pki/kubelet-client-current.pem}"
: "${APISERVER_AUTH:=auto}"
: "${APISERVER_TOKEN:=/var/run/secrets/kubelet-authz/token}"
: "${PROXY_CERT:=/var/lib/kubelet-authz/pki/proxy-current.pem}"
: "${CLUSTER_CA:=/etc/kubernetes/pki/ca.crt}"
: "${APISERVER_URL:=}"
: "${APISERVER_NAME:=kubernetes.default.svc}"
: "${APISERVER_TIMEOUT:=10s}"
: "${KUBELET_VERSION:=}"
: "${ENFORCEMENT:=Shadow}"
: "${ANONYMOUS_ENABLED:=false}"
: "${STRICT_UPGRADE_VERB:=true}"
[ -n "${LIMITS:-}" ] || LIMITS='{}'
: "${LISTEN_PORT:=10250}"
: "${METRICS_PORT:=10249}"
: "${ADMIN_SOCKET:=/run/kubelet-authz/admin.sock}"
: "${FILTER_WASM:=/wasm/kubelet_authz_filter.wasm}"
: "${MAX_CONNECTIONS:=4096}"
: "${MAX_HEAP_BYTES:=268435456}"
: "${KUBELET_ADDRESS:=127.0.0.1}"
: "${KUBELET_PORT:=10250}"
: "${KUBELET_SERVER_NAME:=$NODE_NAME}"
: "${WAIT_FOR_LOOPBACK_KUBELET:=false}"
: "${UPSTREAM_MAX_CONNECTION_AGE:=3600s}"
case "$UPSTREAM_MAX_CONNECTION_AGE" in *[0-9]s) ;; *) die "UPSTREAM_MAX_CONNECTION_AGE: expected seconds such as 3600s, got \`$UPSTREAM_MAX_CONNECTION_AGE\`" ;; esac

case "$ENFORCEMENT" in Shadow | Enforce) ;; *) die "ENFORCEMENT: expected Shadow or Enforce, got \`$ENFORCEMENT\`" ;; esac
case "$ANONYMOUS_ENABLED" in true | false) ;; *) die "ANONYMOUS_ENABLED: expected true or false, got \`$ANONYMOUS_ENABLED\`" ;; esac
case "$STRICT_UPGRADE_VERB" in true | false) ;; *) die "STRICT_UPGRADE_VERB: expected true or false, got \`$STRICT_UPGRADE_VERB\`" ;; esac
[ -r "$TEMPLATE" ] || die "template $TEMPLATE is missing"
case "$APISERVER_AUTH" in
  node-cert | serviceaccount-token) ;;
  auto)
    if [ -e "$NODE_CLIENT_CERT" ]; then APISERVER_AUTH=node-cert; else APISERVER_AUTH=serviceaccount-token; fi
    say "APISERVER_AUTH=auto: $APISERVER_AUTH (node client certificate $NODE_CLIENT_CERT $([ -e "$NODE_CLIENT_CERT" ] && echo present || echo absent))"
    ;;
  *) die "APISERVER_AUTH: expected auto, node-cert or serviceaccount-token, got \`$APISERVER_AUTH\`" ;;
esac

# --- certificates: present and parseable, or a clear refusal -----------------------------------
cert_and_key() {
  [ -r "$2" ] || die "$1: $2 is missing or unreadable"
  openssl x509 -in "$2" -noout 2>/dev/null || die "$1: $2 holds no PEM certificate"
  openssl pkey -in "$2" -noout 2>/dev/null || die "$1: $2 holds no PEM private key"
}
cert_and_key "serving certificate" "$SERVING_CERT"
if [ "$APISERVER_AUTH" = node-cert ]; then
  cert_and_key "node client certificate" "$NODE_CLIENT_CERT"
else
  [ -r "$APISERVER_TOKEN" ] || die "ServiceAccount token: $APISERVER_TOKEN is missing or unreadable (APISERVER_AUTH=serviceaccount-token: is the projected volume mounted?)"
  [ -s "$APISERVER_TOKEN" ] || die "ServiceAccount token: $APISERVER_TOKEN is empty"
fi
cert_and_key "proxy local certificate (made by node-ca.sh)" "$PROXY_CERT"
[ -r "$CLUSTER_CA" ] || die "cluster CA: $CLUSTER_CA is missing or unreadable"
openssl x509 -in "$CLUSTER_CA" -noout 2>/dev/null || die "cluster CA: $CLUSTER_CA holds no PEM certificate"

# --- the API server: the kubelet's own control-plane endpoint -----------------------------------
if [ -z "$APISERVER_URL" ]; then
  [ -r "$KUBELET_KUBECONFIG" ] || die "kubelet kubeconfig $KUBELET_KUBECONFIG is missing: set APISERVER_URL"
  APISERVER_URL=$(awk '$1 == "server:" { print $2; exit }' "$KUBELET_KUBECONFIG" | tr -d "\"'")
  [ -n "$APISERVER_URL" ] || die "no \`server:\` in $KUBELET_KUBECONFIG: set APISERVER_URL"
fi
hostport=${APISERVER_URL#https://}
hostport=${hostport%%/*}
case "$hostport" in
  \[*\]:*) APISERVER_ADDRESS=${hostport%]:*}; APISERVER_ADDRESS=${APISERVER_ADDRESS#[}; APISERVER_PORT=${hostport##*:} ;;
  *:*) APISERVER_ADDRESS=${hostport%:*}; APISERVER_PORT=${hostport##*:} ;;
  *) APISERVER_ADDRESS=$hostport; APISERVER_PORT=443 ;;
esac
case "$APISERVER_URL" in https://*) ;; *) die "APISERVER_URL: expected https://host:port, got \`$APISERVER_URL\`" ;; esac

# --- the kubelet version: set, or read from this node's Node object -----------------------------
if [ -z "$KUBELET_VERSION" ]; then
  say "reading status.nodeInfo.kubeletVersion of node $NODE_NAME from $APISERVER_ADDRESS:$APISERVER_PORT ($APISERVER_AUTH)"
  # The token goes through printf (a shell builtin), never onto a command line.
  if [ "$APISERVER_AUTH" = node-cert ]; then
    set -- -cert "$NODE_CLIENT_CERT" -key "$NODE_CLIENT_CERT"
    auth_header=""
    credential="the node's client certificate"
  else
    set --
    auth_header="Authorization: Bearer $(cat "$APISERVER_TOKEN")\r\n"
    credential="the ServiceAccount token $APISERVER_TOKEN"
  fi
  response=$(printf "GET /api/v1/nodes/%s HTTP/1.0\r\nHost: %s\r\nAccept: application/json\r\nUser-Agent: kubelet-authz-render\r\n%b\r\n" \
      "$NODE_NAME" "$APISERVER_NAME" "$auth_header" |
    timeout 30 openssl s_client -quiet -connect "$APISERVER_ADDRESS:$APISERVER_PORT" -servername "$APISERVER_NAME" \
      "$@" -CAfile "$CLUSTER_CA" \
      -verify_return_error -verify_hostname "$APISERVER_NAME" 2>/dev/null) ||
    die "could not reach the API server at $APISERVER_ADDRESS:$APISERVER_PORT with $credential: set KUBELET_VERSION, or check APISERVER_URL and CLUSTER_CA"
  status=$(printf '%s\n' "$response" | head -n 1 | tr -d '\r' | awk '{ print $2 }')
  [ "$status" = 200 ] || die "GET /api/v1/nodes/$NODE_NAME answered \`$status\`: set KUBELET_VERSION or fix the node's access"
  KUBELET_VERSION=$(printf '%s' "$response" | tr -d '\r\n' |
    sed -n 's/.*"kubeletVersion": *"v\{0,1\}\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
  [ -n "$KUBELET_VERSION" ] || die "node $NODE_NAME has no status.nodeInfo.kubeletVersion: set KUBELET_VERSION"
  say "kubelet version $KUBELET_VERSION"
fi
case "$KUBELET_VERSION" in
  1.[0-9]*) ;;
  *) die "KUBELET_VERSION: expected a minor version such as 1.33, got \`$KUBELET_VERSION\`" ;;
esac

# --- the kubelet's TLS policy -------------------------------------------------------------------
TLS_MIN_VERSION=TLSv1_2
TLS_CIPHER_SUITES='[]'
if [ -r "$KUBELET_CONFIG" ]; then
  min=$(awk '$1 == "tlsMinVersion:" { print $2; exit }' "$KUBELET_CONFIG" | tr -d "\"'")
  case "$min" in
    "" | VersionTLS10 | VersionTLS11 | VersionTLS12) TLS_MIN_VERSION=TLSv1_2 ;;
    VersionTLS13) TLS_MIN_VERSION=TLSv1_3 ;;
    *) die "$KUBELET_CONFIG: tlsMinVersion \`$min\` is not one of VersionTLS10..VersionTLS13" ;;
  esac
  case "$min" in VersionTLS10 | VersionTLS11) say "tlsMinVersion $min raised to TLS 1.2 on the proxy (older versions are never offered)" ;; esac
  suites=$(awk '
    /^tlsCipherSuites:/ {
      s = $0; sub(/^tlsCipherSuites:[ \t]*/, "", s)
      if (s ~ /^\[/) { gsub(/[][" \047]/, "", s); n = split(s, a, ","); for (i = 1; i <= n; i++) if (a[i] != "") print a[i]; exit }
      inlist = 1; next
    }
    inlist && /^[ \t]*-/ { s = $0; sub(/^[ \t]*-[ \t]*/, "", s); gsub(/[" \047]/, "", s); print s; next }
    inlist && /^[^ \t#]/ { exit }
  ' "$KUBELET_CONFIG")
  list=""
  for go in $suites; do
    case "$go" in
      TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256) b=ECDHE-ECDSA-AES128-GCM-SHA256 ;;
      TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256) b=ECDHE-RSA-AES128-GCM-SHA256 ;;
      TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384) b=ECDHE-ECDSA-AES256-GCM-SHA384 ;;
      TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) b=ECDHE-RSA-AES256-GCM-SHA384 ;;
      TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305 | TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256) b=ECDHE-ECDSA-CHACHA20-POLY1305 ;;
      TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305 | TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256) b=ECDHE-RSA-CHACHA20-POLY1305 ;;
      TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA) b=ECDHE-ECDSA-AES128-SHA ;;
      TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA) b=ECDHE-RSA-AES128-SHA ;;
      TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA) b=ECDHE-ECDSA-AES256-SHA ;;
      TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA) b=ECDHE-RSA-AES256-SHA ;;
      TLS_RSA_WITH_AES_128_GCM_SHA256) b=AES128-GCM-SHA256 ;;
      TLS_RSA_WITH_AES_256_GCM_SHA384) b=AES256-GCM-SHA384 ;;
      TLS_RSA_WITH_AES_128_CBC_SHA) b=AES128-SHA ;;
      TLS_RSA_WITH_AES_256_CBC_SHA) b=AES256-SHA ;;
      # TLS 1.3 suites are not configurable (in Go as in BoringSSL): all of them stay on.
      TLS_AES_128_GCM_SHA256 | TLS_AES_256_GCM_SHA384 | TLS_CHACHA20_POLY1305_SHA256) continue ;;
      *) die "$KUBELET_CONFIG: tlsCipherSuites entry \`$go\` has no Envoy equivalent" ;;
    esac
    list="${list:+$list, }\"$b\""
  done
  [ -z "$list" ] || TLS_CIPHER_SUITES="[$list]"
else
  say "no kubelet configuration at $KUBELET_CONFIG: Envoy's TLS defaults (TLS 1.2+)"
fi

# --- render -------------------------------------------------------------------------------------
mkdir -p "$OUTPUT_DIR/sds"
SDS_DIR="$OUTPUT_DIR/sds"
# The node's own identity, refused downstream (regex-escaped: node names may hold dots).
NODE_CLIENT_CN=$(printf 'system:node:%s' "$NODE_NAME" | sed 's/[.]/\\\\./g')

tmp="$OUTPUT_DIR/envoy.yaml.tmp"
cp "$TEMPLATE" "$tmp"
# Keep the lines of the chosen APISERVER_AUTH, drop the other mode's.
case "$APISERVER_AUTH" in node-cert) other=serviceaccount-token ;; *) other=node-cert ;; esac
sed -i "/# >>> APISERVER_AUTH=$other\$/,/# <<< APISERVER_AUTH=$other\$/d; /# [<>][<>][<>] APISERVER_AUTH=$APISERVER_AUTH\$/d" "$tmp"
for v in NODE_NAME LISTEN_ADDRESS LISTEN_PORT METRICS_PORT ADMIN_SOCKET SDS_DIR FILTER_WASM \
         KUBELET_VERSION ANONYMOUS_ENABLED STRICT_UPGRADE_VERB ENFORCEMENT LIMITS TLS_MIN_VERSION \
         TLS_CIPHER_SUITES MAX_CONNECTIONS MAX_HEAP_BYTES APISERVER_ADDRESS APISERVER_PORT \
         APISERVER_NAME APISERVER_TIMEOUT NODE_CLIENT_CN KUBELET_ADDRESS KUBELET_PORT \
         KUBELET_SERVER_NAME UPSTREAM_MAX_CONNECTION_AGE; do
  eval "val=\${$v}"
  val=$(printf '%s' "$val" | sed 's/[\\|&]/\\&/g')
  sed -i "s|\${$v}|$val|g" "$tmp"
done
if grep -n '\${[A-Z][A-Z0-9_]*}' "$tmp" >&2; then
  die "placeholders left in $TEMPLATE (the lines above): the template and render.sh disagree"
fi

# One SDS file per secret; each watches the directory of its files, so that a new file moved in
# (the kubelet's symlink swap) is read without a restart.
tls_secret() { # name, file holding cert and key
  cat >"$SDS_DIR/$1.yaml.tmp" <<EOF
resources:
- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: $1
  tls_certificate:
    certificate_chain: { filename: "$2" }
    private_key: { filename: "$2" }
    watched_directory: { path: "$(dirname "$2")" }
EOF
  mv -f "$SDS_DIR/$1.yaml.tmp" "$SDS_DIR/$1.yaml"
}
ca_secret() { # name, CA bundle
  cat >"$SDS_DIR/$1.yaml.tmp" <<EOF
resources:
- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: $1
  validation_context:
    trusted_ca: { filename: "$2" }
    watched_directory: { path: "$(dirname "$2")" }
EOF
  mv -f "$SDS_DIR/$1.yaml.tmp" "$SDS_DIR/$1.yaml"
}
tls_secret kubelet-serving "$SERVING_CERT"
if [ "$APISERVER_AUTH" = node-cert ]; then
  tls_secret node-client "$NODE_CLIENT_CERT"
  rm -f "$SDS_DIR/apiserver-token.yaml"
else
  # A generic secret has no watched_directory: Envoy watches the file's directory for renames,
  # which is where the kubelet swaps a projected volume's `..data` (docs/DEPLOY.md).
  cat >"$SDS_DIR/apiserver-token.yaml.tmp" <<EOF
resources:
- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: apiserver-token
  generic_secret:
    secret: { filename: "$APISERVER_TOKEN" }
EOF
  mv -f "$SDS_DIR/apiserver-token.yaml.tmp" "$SDS_DIR/apiserver-token.yaml"
  rm -f "$SDS_DIR/node-client.yaml"
fi
tls_secret proxy-local "$PROXY_CERT"
ca_secret cluster-ca "$CLUSTER_CA"
mv -f "$tmp" "$OUTPUT_DIR/envoy.yaml"
say "wrote $OUTPUT_DIR/envoy.yaml for node $NODE_NAME (kubelet $KUBELET_VERSION, $ENFORCEMENT, API server $APISERVER_ADDRESS:$APISERVER_PORT with $APISERVER_AUTH, TLS $TLS_MIN_VERSION)"

# --- wait until the kubelet listens on loopback only ---------------------------------------------
if [ "$WAIT_FOR_LOOPBACK_KUBELET" = true ]; then
  port=$(printf '%04X' "$LISTEN_PORT")
  n=0
  while awk -v port="$port" '
      FNR > 1 { split($2, a, ":"); if (a[2] == port && $4 == "0A" && a[1] != "0100007F") found = 1 }
      END { exit found ? 0 : 1 }' /proc/net/tcp /proc/net/tcp6 2>/dev/null; do
    [ $((n % 30)) -eq 0 ] && say "something other than 127.0.0.1 listens on port $LISTEN_PORT (the kubelet on 0.0.0.0?): waiting for the kubelet to be moved to 127.0.0.1 (docs/DEPLOY.md)"
    n=$((n + 1))
    sleep 2
  done
fi
