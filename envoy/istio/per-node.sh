#!/bin/sh
# Prints the per-node Istio objects (wasmplugin.yaml and gateway-deployment.yaml beside this script,
# as templates) for every node labelled kubelet-authz.io/proxy=enabled in a `kubectl get nodes -o
# json` List, and nothing for the others: the node agent's `istio-objects` does the work (no shell
# parses JSON here). Rerun it whenever nodes are added, replaced, relabelled or removed; the prune
# converges (objects of nodes that are gone or unlabelled are deleted):
#   kubectl get nodes -o json | sh envoy/istio/per-node.sh --nodes - |
#     kubectl apply -n kubelet-authz --prune -l kubelet-authz.io/per-node=true \
#       --prune-allowlist=apps/v1/Deployment \
#       --prune-allowlist=networking.istio.io/v1/Gateway \
#       --prune-allowlist=networking.istio.io/v1/VirtualService \
#       --prune-allowlist=networking.istio.io/v1/DestinationRule \
#       --prune-allowlist=extensions.istio.io/v1alpha1/WasmPlugin -f -
# (kubectl prunes custom kinds only when allow-listed.) On Istio 1.30+, `--extension-api
# TrafficExtension` prints a TrafficExtension in place of each WasmPlugin (the same plugin
# configuration): add --prune-allowlist=extensions.istio.io/v1alpha1/TrafficExtension as well. `--kubelet-config FILE [--config-dir DIR]`
# gives the Gateways the kubelets' tlsMinVersion and tlsCipherSuites (docs/DEPLOY.md, "Istio"). The binary: KUBELET_AUTHZ_NODE, else
# kubelet-authz-node on PATH; without either, use the agent image:
#   kubectl get nodes -o json | docker run --rm -i IMAGE /kubelet-authz-node istio-objects --nodes -
set -eu
bin=${KUBELET_AUTHZ_NODE:-kubelet-authz-node}
command -v "$bin" >/dev/null 2>&1 || {
  echo "per-node.sh: $bin not found: set KUBELET_AUTHZ_NODE to the node agent's binary (cargo build -p kubelet-authz-node), or run it from the agent image (see this script's header)" >&2
  exit 2
}
exec "$bin" istio-objects "$@"
