//! `istio-objects`: the per-node objects of the Istio form (the `Gateway`, `WasmPlugin`,
//! `VirtualService`s, `DestinationRule` and gateway `Deployment` of `envoy/istio/wasmplugin.yaml`
//! and `envoy/istio/gateway-deployment.yaml`) for every node of a `kubectl get nodes -o json`
//! List labelled `kubelet-authz.io/proxy=enabled`, and nothing for the others.
//!
//! For Istio 1.30 and newer the filter can be attached with a `TrafficExtension` instead of the
//! `WasmPlugin` ([`ExtensionApi`]): the per-node `WasmPlugin` is made first and then moved field by
//! field into the `TrafficExtension` (istio/api `extensions/v1alpha1/traffic_extension.proto`:
//! selection, phase, priority and match at the top, the module's settings under `wasm`), so both
//! carry the very same plugin configuration; a `WasmPlugin` field the `TrafficExtension` has no
//! place for is an error, never dropped.
//!
//! The two shipped files are the templates (embedded at build time, so the agent image carries
//! them): each object is read as a typed JSON value and its per-node fields are set by path, never
//! by text substitution. Every object carries [`PER_NODE_LABEL`] so that
//! `kubectl apply --prune -l kubelet-authz.io/per-node=true` removes the objects of nodes that
//! are gone or no longer labelled.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};

/// The label selecting the nodes that get a gateway.
pub const NODE_LABEL: &str = "kubelet-authz.io/proxy";
/// The value of [`NODE_LABEL`] that selects a node.
pub const NODE_LABEL_VALUE: &str = "enabled";
/// The label every generated object carries (the `--prune -l` selector).
pub const PER_NODE_LABEL: &str = "kubelet-authz.io/per-node";
/// The label of the gateway pods naming their node (Istio selects a node's gateway by it).
pub const POD_NODE_LABEL: &str = "kubelet-authz.io/node";

/// `envoy/istio/wasmplugin.yaml`: Gateway, WasmPlugin, VirtualServices, DestinationRule.
const ROUTING_TEMPLATE: &str = include_str!("../../envoy/istio/wasmplugin.yaml");
/// `envoy/istio/gateway-deployment.yaml`: the gateway Deployment.
const DEPLOYMENT_TEMPLATE: &str = include_str!("../../envoy/istio/gateway-deployment.yaml");

/// Why no objects could be generated.
#[derive(Debug, thiserror::Error)]
pub enum IstioError {
    /// The nodes file is not a `kubectl get nodes -o json` List of Nodes.
    #[error("{file}: not a `kubectl get nodes -o json` List of Nodes: {message}")]
    NodeList {
        /// The file.
        file: String,
        /// The parser's message.
        message: String,
    },
    /// A labelled node cannot be served; the message says what is missing.
    #[error("node {node}: {message}")]
    Node {
        /// The node's name.
        node: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A shipped template lacks a field the generator sets (the file was edited).
    #[error("envoy/istio template: {kind}: no `{path}`: restore the field in the shipped file")]
    Template {
        /// The object's kind.
        kind: String,
        /// The missing field.
        path: String,
    },
}

/// The Istio API that attaches the filter to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExtensionApi {
    /// `extensions.istio.io/v1alpha1` `WasmPlugin` (every supported Istio; `FAIL_RELOAD` needs 1.27).
    #[default]
    WasmPlugin,
    /// `extensions.istio.io/v1alpha1` `TrafficExtension` (Istio 1.30 and newer; it supersedes
    /// `WasmPlugin`).
    TrafficExtension,
}

/// `spec` fields of a `WasmPlugin` that stay at the top of a `TrafficExtension`'s `spec`
/// (istio/api `traffic_extension.proto`, message `TrafficExtension`: `selector`, `targetRefs`,
/// `phase`, `priority`, `match`).
const TOP_LEVEL_FIELDS: [&str; 5] = ["selector", "targetRefs", "phase", "priority", "match"];
/// `spec` fields of a `WasmPlugin` that go under `spec.wasm` (message `WasmConfig`: `url`,
/// `sha256`, `imagePullPolicy`, `imagePullSecret`, `verificationKey`, `pluginConfig`,
/// `pluginName`, `failStrategy`, `vmConfig`, `type`).
const WASM_FIELDS: [&str; 10] = [
    "url",
    "sha256",
    "imagePullPolicy",
    "imagePullSecret",
    "verificationKey",
    "pluginConfig",
    "pluginName",
    "failStrategy",
    "vmConfig",
    "type",
];

/// The `TrafficExtension` that attaches what `wasm_plugin` (a whole `WasmPlugin` object) does:
/// same metadata, same selection, phase and match, and the same module, failure policy and
/// plugin configuration under `spec.wasm`. The phase's unset value is spelled differently
/// (`UNSPECIFIED_PHASE` in `WasmPlugin`, `UNSPECIFIED` in `TrafficExtension`); the rest of the
/// enums are the same.
pub fn traffic_extension(wasm_plugin: &Value) -> Result<Value, IstioError> {
    let err = |path: String| IstioError::Template {
        kind: "WasmPlugin".to_owned(),
        path,
    };
    let spec = wasm_plugin
        .get("spec")
        .and_then(Value::as_object)
        .ok_or_else(|| err("spec".to_owned()))?;
    let mut top = serde_json::Map::new();
    let mut wasm = serde_json::Map::new();
    for (k, v) in spec {
        if k == "phase" && v == "UNSPECIFIED_PHASE" {
            top.insert(k.clone(), json!("UNSPECIFIED"));
        } else if TOP_LEVEL_FIELDS.contains(&k.as_str()) {
            top.insert(k.clone(), v.clone());
        } else if WASM_FIELDS.contains(&k.as_str()) {
            wasm.insert(k.clone(), v.clone());
        } else {
            return Err(err(format!(
                "spec.{k} (a field a TrafficExtension has no place for: remove it, or use \
                 --extension-api WasmPlugin)"
            )));
        }
    }
    top.insert("wasm".to_owned(), Value::Object(wasm));
    Ok(json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "TrafficExtension",
        "metadata": wasm_plugin.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": Value::Object(top),
    }))
}

/// What the objects of one node are made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInput {
    /// The node's name.
    pub name: String,
    /// Its first `InternalIP` (the address the API server uses for the kubelet).
    pub ip: IpAddr,
    /// The kubelet's minor version (`1.34`).
    pub kubelet_version: String,
}

/// The kubelet's TLS policy for the Gateway (from the kubelet's effective configuration, the
/// engine's mapping: `tls_minimum_protocol_version` `TLSv1_3`, BoringSSL cipher names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayTls {
    /// Envoy's name of the minimum version (`TLSv1_2`, `TLSv1_3`).
    pub min_version: String,
    /// BoringSSL cipher names; empty: Envoy's defaults.
    pub cipher_suites: Vec<String>,
}

impl GatewayTls {
    /// Istio's `minProtocolVersion` for Envoy's name (`TLSv1_3` -> `TLSV1_3`).
    pub fn istio_min_version(&self) -> String {
        self.min_version.to_ascii_uppercase()
    }
}

#[derive(serde::Deserialize)]
struct NodeList {
    kind: String,
    #[serde(default)]
    items: Vec<Node>,
}

/// Parse a `kubectl get nodes -o json` List (`kind: List` or `NodeList`).
pub fn parse_node_list(file: &str, text: &str) -> Result<Vec<Node>, IstioError> {
    let list: NodeList = serde_json::from_str(text).map_err(|e| IstioError::NodeList {
        file: file.to_owned(),
        message: e.to_string(),
    })?;
    if list.kind != "List" && list.kind != "NodeList" {
        return Err(IstioError::NodeList {
            file: file.to_owned(),
            message: format!("kind `{}`, expected List or NodeList", list.kind),
        });
    }
    Ok(list.items)
}

/// The nodes labelled `kubelet-authz.io/proxy=enabled`, sorted by name, with what their objects
/// need; a labelled node without a name, an InternalIP or a kubelet version is an error.
pub fn selected_nodes(nodes: &[Node]) -> Result<Vec<NodeInput>, IstioError> {
    let mut out = Vec::new();
    for n in nodes {
        let labelled = n
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(NODE_LABEL))
            .is_some_and(|v| v == NODE_LABEL_VALUE);
        if !labelled {
            continue;
        }
        let name = n.metadata.name.clone().unwrap_or_default();
        let err = |message: String| IstioError::Node {
            node: if name.is_empty() {
                "(no name)".to_owned()
            } else {
                name.clone()
            },
            message,
        };
        if !valid_label_value(&name) {
            return Err(err(
                "the name is not usable as a label value (at most 63 characters, [a-z0-9.-]): \
                 the gateway pods are selected by it; do not label this node"
                    .to_owned(),
            ));
        }
        let status = n.status.as_ref();
        let address = status
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .ok_or_else(|| {
                err("no status.addresses InternalIP: the gateway listens on it; is the node registered?".to_owned())
            })?;
        let ip: IpAddr = address.address.parse().map_err(|_| {
            err(format!(
                "InternalIP `{}` is not an IP address",
                address.address
            ))
        })?;
        let found = status
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.kubelet_version.as_str())
            .unwrap_or_default();
        if found.is_empty() {
            return Err(err(
                "no status.nodeInfo.kubeletVersion: the filter follows the kubelet's version; \
                 wait until the kubelet has reported, or remove the label"
                    .to_owned(),
            ));
        }
        let kubelet_version = crate::version::minor_version(found).ok_or_else(|| {
            err(format!(
                "status.nodeInfo.kubeletVersion `{found}` is not a version such as v1.34.2"
            ))
        })?;
        out.push(NodeInput {
            name,
            ip,
            kubelet_version,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn valid_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn templates() -> Result<Vec<Value>, IstioError> {
    let mut out = Vec::new();
    for text in [ROUTING_TEMPLATE, DEPLOYMENT_TEMPLATE] {
        for doc in serde_yaml_ng::Deserializer::from_str(text) {
            let v: Value =
                serde::Deserialize::deserialize(doc).map_err(|e| IstioError::Template {
                    kind: "(YAML)".to_owned(),
                    path: e.to_string(),
                })?;
            if !v.is_null() {
                out.push(v);
            }
        }
    }
    Ok(out)
}

/// Set `value` at `path` (object keys), which must exist in the template.
fn set(obj: &mut Value, path: &[&str], value: Value) -> Result<(), IstioError> {
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned();
    let missing = || IstioError::Template {
        kind: kind.clone(),
        path: path.join("."),
    };
    let mut cur = &mut *obj;
    for key in path {
        cur = cur.get_mut(*key).ok_or_else(missing)?;
    }
    *cur = value;
    Ok(())
}

/// The objects of one node, in the templates' order; with `tls`, the Gateway's TLS policy is the
/// kubelet's (else the template's); the filter is attached with `api`.
pub fn node_objects(
    n: &NodeInput,
    tls: Option<&GatewayTls>,
    api: ExtensionApi,
) -> Result<Vec<Value>, IstioError> {
    let name = n.name.as_str();
    let gateway = format!("kubelet-{name}");
    let mut out = Vec::new();
    for mut obj in templates()? {
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let object_name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        match (kind.as_str(), object_name.as_str()) {
            ("Gateway", _) => {
                set(&mut obj, &["metadata", "name"], json!(gateway))?;
                set(&mut obj, &["spec", "selector", POD_NODE_LABEL], json!(name))?;
                let servers = obj
                    .pointer_mut("/spec/servers")
                    .and_then(Value::as_array_mut)
                    .ok_or(IstioError::Template {
                        kind: kind.clone(),
                        path: "spec.servers".to_owned(),
                    })?;
                for s in servers {
                    set(s, &["bind"], json!(n.ip.to_string()))?;
                    if let Some(t) = tls {
                        set(
                            s,
                            &["tls", "minProtocolVersion"],
                            json!(t.istio_min_version()),
                        )?;
                        if let Some(server_tls) = s.get_mut("tls").and_then(Value::as_object_mut) {
                            if t.cipher_suites.is_empty() {
                                server_tls.remove("cipherSuites");
                            } else {
                                server_tls
                                    .insert("cipherSuites".to_owned(), json!(t.cipher_suites));
                            }
                        }
                    }
                }
            }
            ("WasmPlugin", _) => {
                set(
                    &mut obj,
                    &["metadata", "name"],
                    json!(format!("kubelet-authz-{name}")),
                )?;
                set(
                    &mut obj,
                    &["spec", "selector", "matchLabels", POD_NODE_LABEL],
                    json!(name),
                )?;
                set(&mut obj, &["spec", "pluginConfig", "nodeName"], json!(name))?;
                set(
                    &mut obj,
                    &["spec", "pluginConfig", "kubeletVersion"],
                    json!(n.kubelet_version),
                )?;
            }
            ("VirtualService", template_name) => {
                // `kubelet-worker-1` -> `kubelet-NODE`, `kube-apiserver-worker-1` -> `kube-apiserver-NODE`.
                let prefix =
                    template_name
                        .strip_suffix("worker-1")
                        .ok_or(IstioError::Template {
                            kind: kind.clone(),
                            path: "metadata.name (ending in the template node worker-1)".to_owned(),
                        })?;
                set(
                    &mut obj,
                    &["metadata", "name"],
                    json!(format!("{prefix}{name}")),
                )?;
                set(&mut obj, &["spec", "gateways"], json!([gateway]))?;
            }
            ("DestinationRule", _) => {
                set(&mut obj, &["metadata", "name"], json!(gateway))?;
                set(
                    &mut obj,
                    &["spec", "workloadSelector", "matchLabels", POD_NODE_LABEL],
                    json!(name),
                )?;
                set(
                    &mut obj,
                    &["spec", "trafficPolicy", "tls", "sni"],
                    json!(name),
                )?;
                set(
                    &mut obj,
                    &["spec", "trafficPolicy", "tls", "subjectAltNames"],
                    json!([name]),
                )?;
            }
            ("Deployment", _) => {
                set(
                    &mut obj,
                    &["metadata", "name"],
                    json!(format!("kubelet-authz-gateway-{name}")),
                )?;
                set(
                    &mut obj,
                    &["spec", "selector", "matchLabels", POD_NODE_LABEL],
                    json!(name),
                )?;
                set(
                    &mut obj,
                    &["spec", "template", "metadata", "labels", POD_NODE_LABEL],
                    json!(name),
                )?;
                set(
                    &mut obj,
                    &["spec", "template", "spec", "nodeName"],
                    json!(name),
                )?;
            }
            _ => {
                return Err(IstioError::Template {
                    kind,
                    path: "(a kind the generator does not know: teach node/src/istio.rs)"
                        .to_owned(),
                });
            }
        }
        let metadata = obj
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or(IstioError::Template {
                kind: kind.clone(),
                path: "metadata".to_owned(),
            })?;
        let labels = metadata
            .entry("labels")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or(IstioError::Template {
                kind: kind.clone(),
                path: "metadata.labels".to_owned(),
            })?;
        labels.insert(PER_NODE_LABEL.to_owned(), json!("true"));
        labels.insert(POD_NODE_LABEL.to_owned(), json!(name));
        if kind == "WasmPlugin" && api == ExtensionApi::TrafficExtension {
            obj = traffic_extension(&obj)?;
        }
        out.push(obj);
    }
    Ok(out)
}

/// The objects of every selected node of a Node List (sorted by node name).
pub fn objects_for(
    nodes: &[Node],
    tls: Option<&GatewayTls>,
    api: ExtensionApi,
) -> Result<Vec<Value>, IstioError> {
    let mut out = Vec::new();
    for n in selected_nodes(nodes)? {
        out.extend(node_objects(&n, tls, api)?);
    }
    Ok(out)
}

/// The objects as a multi-document YAML stream (`---` before each), as `kubectl apply -f -`
/// reads it.
pub fn to_yaml(objects: &[Value]) -> Result<String, serde_yaml_ng::Error> {
    let mut s = String::new();
    for o in objects {
        s.push_str("---\n");
        s.push_str(&serde_yaml_ng::to_string(o)?);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("worker-1", true)]
    #[case("ip-10-0-0-1.ec2.internal", true)]
    #[case("", false)]
    #[case("-a", false)]
    #[case("Worker", false)]
    #[case(&"a".repeat(64), false)]
    fn label_values(#[case] s: &str, #[case] ok: bool) {
        assert_eq!(valid_label_value(s), ok);
    }

    #[test]
    fn a_traffic_extension_carries_every_field_of_the_wasm_plugin() {
        let wp = templates()
            .unwrap()
            .into_iter()
            .find(|t| t["kind"] == "WasmPlugin")
            .unwrap();
        let te = traffic_extension(&wp).unwrap();
        assert_eq!(te["apiVersion"], "extensions.istio.io/v1alpha1");
        assert_eq!(te["metadata"], wp["metadata"]);
        for (k, v) in wp["spec"].as_object().unwrap() {
            let moved = if WASM_FIELDS.contains(&k.as_str()) {
                &te["spec"]["wasm"][k]
            } else {
                &te["spec"][k]
            };
            assert_eq!(moved, v, "{k}");
        }
        assert_eq!(
            te["spec"]["wasm"]["pluginConfig"],
            wp["spec"]["pluginConfig"]
        );
    }

    #[test]
    fn a_wasm_plugin_field_without_a_place_is_an_error() {
        let wp = json!({"kind": "WasmPlugin", "metadata": {"name": "x"},
                        "spec": {"url": "oci://x/y:1", "targetRef": {"kind": "Gateway", "name": "g"}}});
        let e = traffic_extension(&wp).unwrap_err().to_string();
        assert!(e.contains("spec.targetRef"), "{e}");
        let unset = json!({"kind": "WasmPlugin", "metadata": {"name": "x"},
                           "spec": {"url": "oci://x/y:1", "phase": "UNSPECIFIED_PHASE"}});
        assert_eq!(
            traffic_extension(&unset).unwrap()["spec"]["phase"],
            "UNSPECIFIED"
        );
    }

    #[test]
    fn the_templates_are_the_shipped_objects() {
        let kinds: Vec<String> = templates()
            .unwrap()
            .iter()
            .map(|t| t["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            kinds,
            [
                "Gateway",
                "WasmPlugin",
                "VirtualService",
                "VirtualService",
                "DestinationRule",
                "Deployment"
            ]
        );
    }
}
