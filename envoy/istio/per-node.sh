#!/bin/sh
# Prints the per-node Istio objects (wasmplugin.yaml, gateway-deployment.yaml beside this script)
# for one node:  per-node.sh NODE NODE_IP [KUBELET_VERSION] | kubectl apply -f -
# For every Linux node:
#   kubectl get nodes -l kubernetes.io/os=linux -o jsonpath='{range .items[*]}{.metadata.name} {.status.addresses[?(@.type=="InternalIP")].address} {.status.nodeInfo.kubeletVersion}{"\n"}{end}' |
#     while read -r n ip v; do sh envoy/istio/per-node.sh "$n" "$ip" "${v#v}"; done | kubectl apply -f -
set -eu
[ $# -ge 2 ] || { echo "usage: per-node.sh NODE NODE_IP [KUBELET_VERSION]" >&2; exit 2; }
node=$1 ip=$2 version=${3:-1.33}
version=${version#v}
version=$(printf '%s' "$version" | sed -n 's/^\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
[ -n "$version" ] || { echo "per-node.sh: KUBELET_VERSION: expected a version such as 1.33" >&2; exit 2; }
printf '%s' "$node" | grep -Eqx '[a-z0-9]([-a-z0-9.]*[a-z0-9])?' || { echo "per-node.sh: NODE: not a node name: \`$node\`" >&2; exit 2; }
printf '%s' "$ip" | grep -Eqx '[0-9]{1,3}(\.[0-9]{1,3}){3}' || { echo "per-node.sh: NODE_IP: not an IPv4 address: \`$ip\`" >&2; exit 2; }
dir=$(dirname "$0")
for f in wasmplugin.yaml gateway-deployment.yaml; do
  echo "---"
  sed -e "s/worker-1/$node/g" -e "s/10\.0\.0\.11/$ip/g" -e "s/kubeletVersion: \"1\.33\"/kubeletVersion: \"$version\"/" "$dir/$f"
done
