//! Every deployment file in `envoy/`: Envoy bootstraps are rendered with the template step and
//! pass `envoy --mode validate` (which instantiates the wasm VM and runs the filter's
//! `on_configure`); the Kubernetes DaemonSet's own render script is run against the template and
//! its output validated too; the Istio WasmPlugin's `pluginConfig` is a valid filter configuration
//! and its listener patch matches the front proxy's settings.
//!
//! Needs Envoy (`ENVOY_BIN`) and the release filter (`KUBELET_AUTHZ_FILTER_WASM`); fails without.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kubelet_authz::config::Config;
use kubelet_authz_e2e::envoy::validate;
use kubelet_authz_e2e::render::{placeholders, workspace};
use kubelet_authz_e2e::stack::{ProxyOptions, Standins, NODE_NAME};
use serde::Deserialize as _;
use serde_json::Value;

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            let y = serde_yaml_ng::Value::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::to_value(y).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

/// The HTTP connection manager and the wasm filter of a rendered bootstrap.
fn hcm(bootstrap: &Value) -> &Value {
    &bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
}

/// The wasm filter's `config` (wherever it is in the filter chain).
fn wasm_config(bootstrap: &Value) -> &Value {
    let filters = hcm(bootstrap)["http_filters"].as_array().unwrap();
    let wasm = filters
        .iter()
        .find(|f| f["name"] == "envoy.filters.http.wasm")
        .expect("no wasm filter");
    &wasm["typed_config"]["config"]
}

fn plugin_config(bootstrap: &Value) -> Config {
    let wasm = wasm_config(bootstrap);
    let json = wasm["configuration"]["value"].as_str().unwrap();
    Config::from_json(json.as_bytes()).unwrap()
}

fn validate_ok(file: &Path) {
    let (ok, out) = validate(file).unwrap();
    assert!(
        ok,
        "envoy --mode validate {} failed:\n{out}",
        file.display()
    );
    assert!(
        out.contains(&format!(
            "kubelet-authz: configured for node \"{NODE_NAME}\""
        )),
        "the filter did not configure:\n{out}"
    );
}

/// Every YAML file under `envoy/` is covered by a test here: Envoy bootstraps generically, the
/// rest by name.
#[tokio::test]
async fn every_envoy_bootstrap_in_envoy_dir_renders_and_validates() {
    let s = Standins::start().await.unwrap();
    let mut files = Vec::new();
    yaml_files(&workspace().join("envoy"), &mut files);
    files.sort();
    // Checked by name below: Kubernetes and Istio objects, the DaemonSet's bootstrap template (it
    // has placeholders of its own and is rendered by its own script) and the ConfigMap holding it.
    let known_other: BTreeSet<&str> = [
        "istio/wasmplugin.yaml",
        "istio/shared.yaml",
        "istio/gateway-deployment.yaml",
        "kubernetes/daemonset.yaml",
        "kubernetes/namespace.yaml",
        "kubernetes/rbac.yaml",
        "kubernetes/configmap.yaml",
        "kubernetes/node-proxy.yaml",
        "kubernetes/node/kubelet-config.yaml",
    ]
    .into();
    let mut bootstraps = 0;
    for f in &files {
        let rel = f.strip_prefix(workspace().join("envoy")).unwrap();
        let text = std::fs::read_to_string(f).unwrap();
        if !text.contains("static_resources:") || known_other.contains(rel.to_str().unwrap()) {
            assert!(
                known_other.contains(rel.to_str().unwrap()),
                "{}: not an Envoy bootstrap and not checked by any test here",
                f.display()
            );
            continue;
        }
        bootstraps += 1;
        // Render with the stand-ins' values for every placeholder it uses.
        let all = s.params(&ProxyOptions::version("1.36")).unwrap().vars();
        let used = placeholders(&text);
        let vars = all.into_iter().filter(|(k, _)| used.contains(k)).collect();
        let rendered = kubelet_authz_e2e::render::render(&text, &vars)
            .unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
        let out = s.dir().join(format!(
            "{}.rendered.yaml",
            rel.display().to_string().replace('/', "_")
        ));
        std::fs::write(&out, rendered).unwrap();
        validate_ok(&out);
    }
    assert!(bootstraps >= 1, "no Envoy bootstrap found under envoy/");
}

/// The front proxy for each supported shape (versions, anonymous, shadow, strict off) validates,
/// and carries the settings the filter's guarantees rest on.
#[tokio::test]
async fn front_proxy_variants_validate_and_keep_the_security_settings() {
    let s = Standins::start().await.unwrap();
    let mut variants = vec![
        ProxyOptions::version("1.31"),
        ProxyOptions::version("1.33").anonymous(true),
        ProxyOptions::version("1.36").strict(false),
    ];
    let mut shadow = ProxyOptions::version("1.36");
    shadow.enforcement = "Shadow".into();
    variants.push(shadow);
    for (i, opts) in variants.iter().enumerate() {
        let yaml = s.params(opts).unwrap().render().unwrap();
        assert!(
            placeholders(&yaml).is_empty(),
            "placeholders left: {:?}",
            placeholders(&yaml)
        );
        let file = s.dir().join(format!("variant-{i}.yaml"));
        std::fs::write(&file, &yaml).unwrap();
        validate_ok(&file);

        let b: Value =
            serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&yaml).unwrap())
                .unwrap();
        let listener = &b["static_resources"]["listeners"][0];
        let tls = &listener["filter_chains"][0]["transport_socket"]["typed_config"];
        assert_eq!(tls["require_client_certificate"], false);
        assert!(
            tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"].is_string()
        );
        let h = hcm(&b);
        assert_eq!(h["normalize_path"], true);
        assert_eq!(h["merge_slashes"], true);
        assert_eq!(h["path_with_escaped_slashes_action"], "REJECT_REQUEST");
        assert_eq!(h["forward_client_cert_details"], "SANITIZE_SET");
        for k in ["subject", "cert", "uri", "dns"] {
            assert_eq!(h["set_current_client_cert_details"][k], true, "{k}");
        }
        let upgrades: Vec<&str> = h["upgrade_configs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["upgrade_type"].as_str().unwrap())
            .collect();
        assert_eq!(upgrades, ["websocket", "spdy/3.1"]);
        let wasm = &h["http_filters"][0];
        assert_eq!(wasm["name"], "envoy.filters.http.wasm");
        let cfg = &wasm["typed_config"]["config"];
        assert_eq!(cfg["fail_open"], false);
        assert_eq!(cfg["failure_policy"], "FAIL_RELOAD");
        assert_eq!(cfg["reload_config"]["backoff"]["base_interval"], "1s");
        assert_eq!(cfg["vm_config"]["runtime"], "envoy.wasm.runtime.v8");
        assert_eq!(h["http_filters"][1]["name"], "envoy.filters.http.router");

        let c = plugin_config(&b);
        assert_eq!(c.node_name, NODE_NAME);
        assert_eq!(c.anonymous_enabled, opts.anonymous);
        assert_eq!(c.strict_upgrade_verb, opts.strict_upgrade_verb);
        assert_eq!(c.api_server.cluster, "kube-apiserver");

        let clusters = b["static_resources"]["clusters"].as_array().unwrap();
        let names: Vec<&str> = clusters
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["kube-apiserver", "kubelet"]);
        for c in clusters {
            let up = &c["transport_socket"]["typed_config"];
            assert!(
                up["@type"]
                    .as_str()
                    .unwrap()
                    .ends_with("UpstreamTlsContext"),
                "{}: not TLS",
                c["name"]
            );
            let ctx = &up["common_tls_context"];
            assert!(ctx["tls_certificates"][0]["certificate_chain"]["filename"].is_string());
            assert!(ctx["validation_context"]["trusted_ca"]["filename"].is_string());
            assert!(ctx["validation_context"]["match_typed_subject_alt_names"][0].is_object());
        }
    }
}

/// The route idle timeouts bound how long a request held by the filter waits when the filter's VM
/// dies under it (issue 16): the streaming endpoints keep the kubelet's 4h, every other endpoint
/// gets a bound that is short, yet longer than the filter's longest decision with the template's
/// callout timeout (a TokenReview and two SubjectAccessReviews, each `MAX_ATTEMPTS` attempts of
/// `apiServer.timeout` plus the full backoff with 20% jitter), so that it never cuts a decision
/// short. `hardening_panic.rs` proves the bound through Envoy.
#[tokio::test]
async fn route_idle_timeouts_bound_a_held_request() {
    use kubelet_authz::decision::{BASE_RETRY_DELAY_MS, MAX_ATTEMPTS};
    let s = Standins::start().await.unwrap();
    let yaml = s
        .params(&ProxyOptions::version("1.36"))
        .unwrap()
        .render()
        .unwrap();
    let b: Value =
        serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&yaml).unwrap())
            .unwrap();
    let routes = hcm(&b)["route_config"]["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(routes.len(), 2, "{routes:#?}");
    assert_eq!(
        routes[0]["match"]["safe_regex"]["regex"],
        "/(exec|attach|portForward|containerLogs|logs)(/.*)?"
    );
    assert_eq!(routes[0]["route"]["idle_timeout"], "14400s");
    assert_eq!(routes[1]["match"]["prefix"], "/");
    let idle = routes[1]["route"]["idle_timeout"].as_str().unwrap();
    let idle_s: f64 = idle.trim_end_matches('s').parse().unwrap();

    let timeout = plugin_config(&b).api_server.timeout.as_secs_f64();
    let mut backoff = 0.0;
    let mut d = BASE_RETRY_DELAY_MS as f64 / 1000.0;
    for _ in 1..MAX_ATTEMPTS {
        backoff += d * 1.2;
        d *= 1.5;
    }
    let per_review = f64::from(MAX_ATTEMPTS) * timeout + backoff;
    let longest_decision = 3.0 * per_review;
    assert!(
        idle_s > longest_decision,
        "idle timeout {idle} cuts decisions of up to {longest_decision:.1}s"
    );
    assert!(idle_s <= 300.0, "idle timeout {idle} is not a short bound");
    for r in &routes {
        assert_eq!(r["route"]["cluster"], "kubelet");
        assert_eq!(r["route"]["timeout"], "0s");
    }

    // The DaemonSet's bootstrap template has the same two routes.
    let mut text =
        std::fs::read_to_string(workspace().join("envoy/kubernetes/node-proxy.yaml")).unwrap();
    // Its placeholders, filled with a word so that the template parses as YAML.
    while let Some(at) = text.find("${") {
        let end = at + text[at..].find('}').unwrap();
        text.replace_range(at..=end, "x");
    }
    let node: Value =
        serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text).unwrap())
            .unwrap();
    let kubelet = node["static_resources"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "kubelet")
        .unwrap();
    let node_routes = kubelet["filter_chains"][0]["filters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "envoy.filters.network.http_connection_manager")
        .unwrap()["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
        .clone();
    assert_eq!(
        node_routes,
        Value::Array(routes.clone()),
        "node-proxy.yaml routes"
    );

    // The Istio form: two named VirtualService routes, and an EnvoyFilter route patch for each.
    let docs = yaml_docs(&workspace().join("envoy/istio/wasmplugin.yaml"));
    let vs = kind(&docs, "VirtualService");
    let http = vs["spec"]["http"].as_array().unwrap();
    assert_eq!(http.len(), 2);
    assert_eq!(http[0]["name"], "kubelet-streaming");
    assert_eq!(
        http[0]["match"][0]["uri"]["regex"],
        routes[0]["match"]["safe_regex"]["regex"]
    );
    assert_eq!(http[1]["name"], "kubelet");
    assert!(http[1].get("match").is_none());
    let shared = yaml_docs(&workspace().join("envoy/istio/shared.yaml"));
    let patches = kind(&shared, "EnvoyFilter")["spec"]["configPatches"]
        .as_array()
        .unwrap()
        .clone();
    for (name, want) in [("kubelet-streaming", "14400s"), ("kubelet", idle)] {
        let p = patches
            .iter()
            .find(|p| {
                p["applyTo"] == "HTTP_ROUTE"
                    && p["match"]["routeConfiguration"]["vhost"]["route"]["name"] == name
            })
            .unwrap_or_else(|| panic!("no route patch for {name}"));
        assert_eq!(p["match"]["context"], "GATEWAY");
        assert_eq!(p["patch"]["operation"], "MERGE");
        assert_eq!(p["patch"]["value"]["route"]["idle_timeout"], want, "{name}");
    }
}

fn k8s_dir() -> PathBuf {
    workspace().join("envoy/kubernetes")
}

fn daemonset_pod() -> Value {
    let docs = yaml_docs(&k8s_dir().join("daemonset.yaml"));
    kind(&docs, "DaemonSet")["spec"]["template"]["spec"].clone()
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {list} `{name}`"))
}

/// The DaemonSet as an operator applies it: Envoy by its binary without hot restart, no TCP admin
/// port, every container locked down, pinned images, node-critical, Linux only, every node's
/// taints tolerated, no ServiceAccount token, and the ConfigMap holding exactly the files its
/// containers run.
#[test]
fn daemonset_manifest_is_deployable_and_locked_down() {
    let pod = daemonset_pod();
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert!(
        pod["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "every taint must be tolerated"
    );
    let mut all = 0;
    for list in ["initContainers", "containers"] {
        for c in pod[list].as_array().unwrap() {
            all += 1;
            let name = c["name"].as_str().unwrap();
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{name}"
            );
            assert!(sc["capabilities"].get("add").is_none(), "{name}");
            let image = c["image"].as_str().unwrap();
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
            assert!(
                image.contains("@sha256:") || tag.chars().any(|ch| ch.is_ascii_digit()),
                "{name}: image {image} is not pinned"
            );
            assert!(!tag.contains("latest"), "{name}: floating tag {image}");
            assert!(c["resources"]["limits"]["memory"].is_string(), "{name}");
        }
    }
    assert!(all >= 5, "{all} containers");
    let envoy = container(&pod, "containers", "envoy");
    assert_eq!(
        envoy["command"],
        serde_json::json!(["/usr/local/bin/envoy"])
    );
    let args: Vec<&str> = envoy["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--disable-hot-restart"), "{args:?}");
    let ports: Vec<u64> = envoy["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    assert!(
        !ports.contains(&9901),
        "admin must not be on TCP: {ports:?}"
    );

    // The ConfigMap is exactly the files beside it (scripts/gen-configmap.py keeps it so).
    let docs = yaml_docs(&k8s_dir().join("configmap.yaml"));
    let cm = kind(&docs, "ConfigMap");
    let data = cm["data"].as_object().unwrap();
    assert_eq!(data.len(), 3);
    for (file, text) in data {
        assert_eq!(
            text.as_str().unwrap(),
            std::fs::read_to_string(k8s_dir().join(file)).unwrap(),
            "configmap.yaml is stale for {file}: run python3 scripts/gen-configmap.py"
        );
    }
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .unwrap();
    assert_eq!(volume["configMap"]["name"], cm["metadata"]["name"]);
}

/// A node on this machine: the stand-in API server knows Node `worker-1` (kubelet v1.34.2) and lets
/// the node's own client certificate read it; kubelet-style files (certificate and key in one PEM).
struct Node {
    dir: tempfile::TempDir,
    api: kubelet_authz_standins::apiserver::ApiServer,
    ca: PathBuf,
}

impl Node {
    async fn start() -> Node {
        use kubelet_authz_standins::apiserver::{ApiServer, ApiServerConfig};
        use kubelet_authz_standins::pki::{ClientSubject, Pki};
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        let pki = Pki::open(&pki_dir).unwrap();
        let node = pki
            .client_cert(
                "node",
                &ClientSubject::new(&format!("system:node:{NODE_NAME}"), &["system:nodes"]),
            )
            .unwrap();
        let server = pki.server();
        let cat = |c: &Path, k: &Path, out: &str| {
            let text = std::fs::read_to_string(c).unwrap() + &std::fs::read_to_string(k).unwrap();
            std::fs::write(dir.path().join(out), text).unwrap();
        };
        cat(&node.cert, &node.key, "kubelet-client-current.pem");
        cat(&server.cert, &server.key, "kubelet-server-current.pem");
        let rbac = format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: node-read}}\n\
             rules: [{{apiGroups: [\"\"], resources: [nodes], verbs: [get]}}]\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: node-read}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: node-read}}\n\
             subjects: [{{kind: User, name: \"system:node:{NODE_NAME}\"}}]\n"
        );
        let nodes = format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {NODE_NAME}}}\n\
             status: {{nodeInfo: {{kubeletVersion: v1.34.2}}}}\n"
        );
        let api = ApiServer::start(
            ApiServerConfig::new(&pki_dir)
                .rbac_yaml(&rbac, "node-read")
                .nodes_yaml(&nodes, "nodes"),
        )
        .await
        .unwrap();
        std::fs::write(
            dir.path().join("kubelet.conf"),
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: default\n  cluster:\n    server: {}\n",
                api.url()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("config.yaml"),
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\naddress: 127.0.0.1\n\
             tlsMinVersion: VersionTLS12\ntlsCipherSuites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, \
             TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256]\n",
        )
        .unwrap();
        Node {
            ca: pki.ca_cert(),
            dir,
            api,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The env of container `name` of the DaemonSet, with the downward API and the host paths
    /// mapped onto this node's files. An absolute path the test does not know is an error, so a
    /// new host path in the manifest cannot go unchecked.
    fn env(&self, list: &str, name: &str) -> Vec<(String, String)> {
        let pod = daemonset_pod();
        let c = container(&pod, list, name);
        let mut out = vec![
            ("NODE_NAME".to_string(), NODE_NAME.to_string()),
            ("LISTEN_ADDRESS".to_string(), "127.0.0.1".to_string()),
        ];
        for e in c["env"].as_array().unwrap() {
            let Some(value) = e["value"].as_str() else {
                continue;
            };
            let key = e["name"].as_str().unwrap();
            let value = value.replace("$(NODE_NAME)", NODE_NAME);
            let value = if value.starts_with('/') {
                let mapped = match key {
                    "TEMPLATE" => k8s_dir().join("node-proxy.yaml"),
                    "OUTPUT_DIR" => self.path("rendered"),
                    "ADMIN_SOCKET" => self.path("admin.sock"),
                    "FILTER_WASM" => kubelet_authz_e2e::envoy::filter_wasm().unwrap(),
                    "KUBELET_CONFIG" => self.path("config.yaml"),
                    "KUBELET_KUBECONFIG" => self.path("kubelet.conf"),
                    "SERVING_CERT" => self.path("kubelet-server-current.pem"),
                    "NODE_CLIENT_CERT" => self.path("kubelet-client-current.pem"),
                    "PROXY_CERT" => self.path("node-ca/proxy-current.pem"),
                    "CLUSTER_CA" => self.ca.clone(),
                    "STATE_DIR" => self.path("node-ca"),
                    other => panic!("{name}: host path {other}={value} is not mapped by this test"),
                };
                mapped.display().to_string()
            } else {
                value
            };
            out.push((key.to_string(), value));
        }
        out
    }

    /// Run a container's own command line (the script from the ConfigMap) with `env` plus
    /// `overrides`; answers (success, stderr).
    fn run(&self, list: &str, name: &str, overrides: &[(&str, &str)]) -> (bool, String) {
        let pod = daemonset_pod();
        let c = container(&pod, list, name);
        let command: Vec<String> = c["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                a.as_str()
                    .unwrap()
                    .replace("/config/", &format!("{}/", k8s_dir().display()))
            })
            .collect();
        assert_eq!(command[0], "/bin/sh", "{name}: {command:?}");
        let mut cmd = std::process::Command::new("sh");
        cmd.args(&command[1..]).env_clear();
        cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default());
        for (k, v) in self.env(list, name) {
            cmd.env(k, v);
        }
        for (k, v) in overrides {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn rendered(node: &Node) -> Value {
    let text = std::fs::read_to_string(node.path("rendered/envoy.yaml")).unwrap();
    assert!(placeholders(&text).is_empty(), "{:?}", placeholders(&text));
    serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text).unwrap()).unwrap()
}

/// The DaemonSet's init containers, run as written (their scripts from the ConfigMap, their env
/// from the manifest): the per-node CA and the proxy's certificate are made once; the render step
/// reads the kubelet version from the Node object with the node's own certificate, the API server
/// endpoint from the kubelet's kubeconfig and the TLS policy from the kubelet's configuration, and
/// its bootstrap passes `envoy --mode validate` in Shadow and, switched, in Enforce.
// Multi-threaded: the scripts run as blocking child processes while the in-process stand-in
// API server answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_init_containers_render_a_valid_bootstrap() {
    let node = Node::start().await;
    let (ok, err) = node.run("initContainers", "node-ca", &[]);
    assert!(ok, "node-ca: {err}");
    let ca = std::fs::read(node.path("node-ca/ca.crt")).unwrap();
    let proxy = std::fs::read_link(node.path("node-ca/proxy-current.pem")).unwrap();
    // A second start keeps the CA and the still-fresh certificate.
    let (ok, err) = node.run("initContainers", "node-ca", &[]);
    assert!(ok, "node-ca again: {err}");
    assert_eq!(std::fs::read(node.path("node-ca/ca.crt")).unwrap(), ca);
    assert_eq!(
        std::fs::read_link(node.path("node-ca/proxy-current.pem")).unwrap(),
        proxy
    );

    let (ok, err) = node.run("initContainers", "render", &[]);
    assert!(ok, "render: {err}");
    assert!(err.contains("kubelet version 1.34"), "{err}");
    let file = node.path("rendered/envoy.yaml");
    validate_ok(&file);
    let b = rendered(&node);

    let c = plugin_config(&b);
    assert_eq!(c.node_name, NODE_NAME);
    assert_eq!(c.api_server.cluster, "kube-apiserver");
    let cfg_json: Value =
        serde_json::from_str(wasm_config(&b)["configuration"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(cfg_json["kubeletVersion"], "1.34");
    assert_eq!(
        cfg_json["enforcement"], "Shadow",
        "the manifest starts in Shadow"
    );

    // Admin on a unix socket only; the metrics listener serves /ready and /stats/prometheus only.
    assert!(b["admin"]["address"]["pipe"]["path"].is_string());
    assert!(b["admin"]["address"].get("socket_address").is_none());
    let listeners = b["static_resources"]["listeners"].as_array().unwrap();
    let metrics = listeners.iter().find(|l| l["name"] == "metrics").unwrap();
    let routes = metrics["filter_chains"][0]["filters"][1]["typed_config"]["route_config"]
        ["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap();
    let to_admin: Vec<&str> = routes
        .iter()
        .filter(|r| r["route"]["cluster"] == "admin")
        .map(|r| r["match"]["path"].as_str().unwrap())
        .collect();
    assert_eq!(to_admin, ["/ready", "/stats/prometheus"]);
    assert_eq!(routes.last().unwrap()["direct_response"]["status"], 404);
    // The connection cap and the breakers sized to it.
    let om = &b["overload_manager"]["resource_monitors"];
    let cap = om
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "envoy.resource_monitors.global_downstream_max_connections")
        .unwrap();
    let max = cap["typed_config"]["max_active_downstream_connections"]
        .as_u64()
        .unwrap();
    assert!((1000..=10_000).contains(&max), "{max}");
    let clusters = b["static_resources"]["clusters"].as_array().unwrap();
    let kubelet = clusters.iter().find(|c| c["name"] == "kubelet").unwrap();
    assert_eq!(
        kubelet["circuit_breakers"]["thresholds"][0]["max_requests"],
        max
    );
    // The kubelet's TLS policy, its TLS 1.3 suite left to BoringSSL.
    let tls = &listeners[0]["filter_chains"][0]["transport_socket"]["typed_config"]
        ["common_tls_context"]["tls_params"];
    assert_eq!(tls["tls_minimum_protocol_version"], "TLSv1_2");
    assert_eq!(
        tls["cipher_suites"],
        serde_json::json!([
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-RSA-AES256-GCM-SHA384"
        ])
    );
    // The API server at the kubelet's own endpoint (not a Service), every certificate by SDS.
    let api = clusters
        .iter()
        .find(|c| c["name"] == "kube-apiserver")
        .unwrap();
    let addr = &api["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"];
    assert_eq!(addr["port_value"], node.api.addr().port());
    let text = std::fs::read_to_string(&file).unwrap();
    for inline in ["certificate_chain", "private_key", "trusted_ca"] {
        assert!(
            !text.contains(inline),
            "certificates must come through SDS: {inline}"
        );
    }
    for sds in [
        "kubelet-serving",
        "node-client",
        "proxy-local",
        "cluster-ca",
    ] {
        let t = std::fs::read_to_string(node.path(&format!("rendered/sds/{sds}.yaml"))).unwrap();
        assert!(t.contains("watched_directory"), "{sds}: {t}");
    }
    // The HTTP settings the filter's guarantees rest on are the front proxy's.
    let s = Standins::start().await.unwrap();
    let front_yaml = s
        .params(&ProxyOptions::version("1.36"))
        .unwrap()
        .render()
        .unwrap();
    let front: Value =
        serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&front_yaml).unwrap())
            .unwrap();
    for k in [
        "normalize_path",
        "merge_slashes",
        "path_with_escaped_slashes_action",
        "forward_client_cert_details",
        "set_current_client_cert_details",
        "upgrade_configs",
        "use_remote_address",
        "stream_idle_timeout",
    ] {
        assert_eq!(hcm(&b)[k], hcm(&front)[k], "{k}");
    }
    let wasm = |v: &Value| {
        let mut w = wasm_config(v).clone();
        w["configuration"] = Value::Null;
        w
    };
    assert_eq!(wasm(&b), wasm(&front), "the wasm filter settings differ");
    // The node's own client certificate is refused before the filter.
    let rbac = &hcm(&b)["http_filters"][0];
    assert_eq!(rbac["name"], "envoy.filters.http.rbac");
    assert_eq!(rbac["typed_config"]["rules"]["action"], "DENY");

    // The Shadow -> Enforce switch (the documented `kubectl set env`) renders and validates.
    let (ok, err) = node.run("initContainers", "render", &[("ENFORCEMENT", "Enforce")]);
    assert!(ok, "render Enforce: {err}");
    validate_ok(&file);
    let b = rendered(&node);
    let cfg_json: Value =
        serde_json::from_str(wasm_config(&b)["configuration"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(cfg_json["enforcement"], "Enforce");
}

/// The render step refuses, with a message naming the problem, what would otherwise start a broken
/// or open proxy: a missing or wrong certificate file, an unknown Node, a cipher suite Envoy lacks,
/// a bad Enforcement value.
// Multi-threaded: the scripts run as blocking child processes while the in-process stand-in
// API server answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_render_refuses_broken_inputs() {
    let node = Node::start().await;
    let (ok, err) = node.run("initContainers", "node-ca", &[]);
    assert!(ok, "node-ca: {err}");
    let not_pem = node.path("not-a-cert.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let missing = node.path("missing.pem");
    let bad_cfg = node.path("bad-config.yaml");
    std::fs::write(&bad_cfg, "tlsCipherSuites:\n- TLS_RSA_WITH_RC4_128_SHA\n").unwrap();
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![("SERVING_CERT", missing.display().to_string())],
            "serving certificate",
        ),
        (
            vec![("NODE_CLIENT_CERT", not_pem.display().to_string())],
            "holds no PEM certificate",
        ),
        (vec![("NODE_NAME", "worker-9".into())], "answered `404`"),
        (
            vec![("KUBELET_CONFIG", bad_cfg.display().to_string())],
            "TLS_RSA_WITH_RC4_128_SHA",
        ),
        (vec![("ENFORCEMENT", "enforce".into())], "ENFORCEMENT"),
    ];
    for (overrides, expected) in cases {
        let _ = std::fs::remove_file(node.path("rendered/envoy.yaml"));
        let o: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (ok, err) = node.run("initContainers", "render", &o);
        assert!(!ok, "{overrides:?}: render succeeded");
        assert!(err.contains(expected), "{overrides:?}: {err}");
        assert!(
            !node.path("rendered/envoy.yaml").exists(),
            "{overrides:?}: a bootstrap was written"
        );
    }
}

/// The Istio form: per-node gateway, WasmPlugin, routing and TLS; the objects refer to each other
/// consistently, the plugin's configuration is one the filter accepts, and the listener patch
/// neither uses `mode: SERVER` (never attached on a gateway) nor adds a second `websocket`.
#[tokio::test]
async fn istio_objects_are_complete_and_consistent() {
    let mut docs = yaml_docs(&workspace().join("envoy/istio/wasmplugin.yaml"));
    docs.extend(yaml_docs(&workspace().join("envoy/istio/shared.yaml")));
    let deploy = yaml_docs(&workspace().join("envoy/istio/gateway-deployment.yaml"));
    let named = |k: &str, n: &str| -> Value {
        docs.iter()
            .find(|d| d["kind"] == k && d["metadata"]["name"] == n)
            .unwrap_or_else(|| panic!("no {k}/{n}"))
            .clone()
    };
    let wp = kind(&docs, "WasmPlugin");
    assert_eq!(wp["apiVersion"], "extensions.istio.io/v1alpha1");
    assert_eq!(wp["spec"]["phase"], "AUTHN");
    assert_eq!(wp["spec"]["failStrategy"], "FAIL_RELOAD");
    for m in wp["spec"]["match"].as_array().unwrap() {
        assert!(
            m.get("mode").is_none() || m["mode"] == "CLIENT",
            "gateway listeners are CLIENT to Istio: {m}"
        );
    }
    let cfg = Config::from_value(&wp["spec"]["pluginConfig"]).unwrap();
    assert_eq!(cfg.node_name, "worker-1");
    // The plugin calls the API-server ServiceEntry's outbound cluster.
    let api = named("ServiceEntry", "kube-apiserver");
    let api_host = api["spec"]["hosts"][0].as_str().unwrap();
    let api_port = api["spec"]["ports"][0]["number"].as_u64().unwrap();
    assert_eq!(
        cfg.api_server.cluster,
        format!("outbound|{api_port}||{api_host}")
    );
    let api_dr = named("DestinationRule", "kube-apiserver");
    assert_eq!(api_dr["spec"]["host"], api_host);
    assert_eq!(api_dr["spec"]["trafficPolicy"]["tls"]["mode"], "MUTUAL");
    assert_eq!(
        api_dr["spec"]["trafficPolicy"]["tls"]["clientCertificate"],
        "/var/lib/kubelet/pki/kubelet-client-current.pem",
        "the node's own credential"
    );
    // Gateway on the node IP, optional client certificate, selecting this node's gateway pod.
    let gw = kind(&docs, "Gateway");
    let server = &gw["spec"]["servers"][0];
    assert_eq!(server["port"]["number"], 10250);
    assert_eq!(server["tls"]["mode"], "OPTIONAL_MUTUAL");
    assert!(server["bind"].is_string());
    let pod_labels = &deploy[0]["spec"]["template"]["metadata"]["labels"];
    for (k, v) in gw["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "Gateway selector {k}");
    }
    for (k, v) in wp["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "WasmPlugin selector {k}");
    }
    assert_eq!(deploy[0]["spec"]["template"]["spec"]["hostNetwork"], true);
    // Routing to the kubelet on 127.0.0.1:10250 with TLS.
    let vs = kind(&docs, "VirtualService");
    assert_eq!(vs["spec"]["gateways"][0], gw["metadata"]["name"]);
    let dest = &vs["spec"]["http"][0]["route"][0]["destination"];
    let kubelet = named("ServiceEntry", "kubelet");
    assert_eq!(dest["host"], kubelet["spec"]["hosts"][0]);
    assert_eq!(kubelet["spec"]["endpoints"][0]["address"], "127.0.0.1");
    assert_eq!(kubelet["spec"]["ports"][0]["number"], 10250);
    let kubelet_dr = docs
        .iter()
        .find(|d| d["kind"] == "DestinationRule" && d["spec"]["host"] == dest["host"])
        .unwrap();
    assert_eq!(kubelet_dr["spec"]["trafficPolicy"]["tls"]["mode"], "MUTUAL");
    // The listener patch: the front proxy's settings, SPDY added, no second `websocket`.
    let s = Standins::start().await.unwrap();
    let yaml = s
        .params(&ProxyOptions::version("1.36"))
        .unwrap()
        .render()
        .unwrap();
    let b: Value =
        serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&yaml).unwrap())
            .unwrap();
    let front = hcm(&b);
    let ef = kind(&docs, "EnvoyFilter");
    let patch = &ef["spec"]["configPatches"][0]["patch"]["value"]["typed_config"];
    assert_eq!(
        ef["spec"]["configPatches"][0]["patch"]["operation"],
        "MERGE"
    );
    for k in [
        "normalize_path",
        "merge_slashes",
        "path_with_escaped_slashes_action",
        "forward_client_cert_details",
        "set_current_client_cert_details",
    ] {
        assert_eq!(patch[k], front[k], "EnvoyFilter {k}");
    }
    assert_eq!(
        patch["upgrade_configs"],
        serde_json::json!([{ "upgrade_type": "spdy/3.1" }]),
        "MERGE appends to Istio's list, which already has websocket"
    );
}

/// The kubelet configuration the runbook prescribes passes the CIS kubelet checks of
/// `kubectl kubelet-authz check-config` for every supported version it names, keeps the kubelet
/// on loopback with the per-node CA of the DaemonSet, and its TLS policy renders.
#[test]
fn prescribed_kubelet_config_passes_check_config() {
    use kubelet_authz::kubeletconfig::{check, parse_config, CheckStatus};
    let file = k8s_dir().join("node/kubelet-config.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let settings = parse_config(&text).unwrap();
    for v in ["1.32", "1.33", "1.34", "1.35", "1.36"] {
        let results = check(&settings, v.parse().unwrap());
        assert!(results.len() >= 5, "{v}: {} checks", results.len());
        let failed: Vec<_> = results
            .iter()
            .filter(|r| r.status == CheckStatus::Fail)
            .map(|r| format!("{} {}: {}", r.id, r.title, r.actual))
            .collect();
        assert!(failed.is_empty(), "{v}: {failed:?}");
    }
    let y: Value =
        serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text).unwrap())
            .unwrap();
    assert_eq!(y["address"], "127.0.0.1");
    let node_ca = daemonset_pod()["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "node-ca")
        .unwrap()["hostPath"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        y["authentication"]["x509"]["clientCAFile"],
        format!("{node_ca}/ca.crt"),
        "the kubelet must trust the DaemonSet's per-node CA"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.1 request to the metrics listener: status (0 when nothing answers).
async fn plain(port: u16, method: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return 0;
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The serial of the certificate served on `port` (any certificate: no verification).
fn served_serial(port: u16) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// "Node in a box": the DaemonSet's own containers (init scripts, then Envoy with the manifest's
/// command line) on this machine, host paths mapped onto a temporary directory, against the
/// stand-in API server and a stand-in kubelet on 127.0.0.1 that trusts only the per-node CA.
/// It starts; the metrics listener serves only GET /ready and /stats/prometheus; Shadow forwards
/// with the proxy's local identity (the kubelet accepts it); the node's own client certificate
/// (403) and the proxy's local one (handshake) are refused downstream; a kubelet-style rotation of the serving certificate (new file, symlink
/// swap) is served without a restart; the connection cap closes connections beyond it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_node_in_a_box() {
    use kubelet_authz_standins::client::Client;
    use kubelet_authz_standins::kubelet::{Kubelet, KubeletConfig};
    use kubelet_authz_standins::pki::CertPaths;
    let node = Node::start().await;
    let (ok, err) = node.run("initContainers", "node-ca", &[]);
    assert!(ok, "node-ca: {err}");
    let kubelet = Kubelet::start(
        KubeletConfig::new(node.path("pki")).client_ca(&node.path("node-ca/ca.crt"), true),
    )
    .await
    .unwrap();
    // The serving certificate as the kubelet keeps it: a stamped file behind a symlink.
    let serving = node.path("kubelet-server-current.pem");
    let first = node.path("kubelet-server-1.pem");
    std::fs::rename(&serving, &first).unwrap();
    std::os::unix::fs::symlink(&first, &serving).unwrap();

    let (listen, metrics) = (free_port(), free_port());
    let (listen_s, metrics_s) = (listen.to_string(), metrics.to_string());
    let kubelet_port = kubelet.addr().port().to_string();
    let overrides = [
        ("LISTEN_PORT", listen_s.as_str()),
        ("METRICS_PORT", metrics_s.as_str()),
        ("KUBELET_PORT", kubelet_port.as_str()),
        ("KUBELET_SERVER_NAME", "localhost"),
        ("MAX_CONNECTIONS", "8"),
    ];
    let (ok, err) = node.run("initContainers", "render", &overrides);
    assert!(ok, "render: {err}");

    // Envoy with the container's own command line.
    let pod = daemonset_pod();
    let c = container(&pod, "containers", "envoy");
    let mut argv: Vec<String> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .chain(c["args"].as_array().unwrap())
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(argv[0], "/usr/local/bin/envoy");
    argv[0] = kubelet_authz_e2e::envoy::envoy_bin()
        .unwrap()
        .display()
        .to_string();
    for a in argv.iter_mut().skip(1) {
        if a.starts_with("/rendered/") {
            *a = node
                .path(&a.replacen("/rendered/", "rendered/", 1))
                .display()
                .to_string();
        } else {
            assert!(!a.starts_with('/'), "unmapped path in the envoy args: {a}");
        }
    }
    let log = std::fs::File::create(node.path("envoy.log")).unwrap();
    let mut envoy = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let logs = || std::fs::read_to_string(node.path("envoy.log")).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while plain(metrics, "GET", "/ready").await != 200 {
        assert!(
            envoy.try_wait().unwrap().is_none(),
            "envoy exited:\n{}",
            logs()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "not ready:\n{}",
            logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // The metrics listener: two read-only paths, nothing else of the admin API.
    assert_eq!(plain(metrics, "GET", "/stats/prometheus").await, 200);
    for (method, path) in [
        ("POST", "/quitquitquit"),
        ("GET", "/config_dump"),
        ("GET", "/certs"),
        ("POST", "/ready"),
        ("GET", "/stats/prometheus/../config_dump"),
    ] {
        assert_eq!(plain(metrics, method, path).await, 404, "{method} {path}");
    }
    assert!(node.path("admin.sock").exists(), "no admin socket");

    // Shadow: an anonymous request is decided, audited and forwarded; the stand-in kubelet, which
    // requires a certificate of the per-node CA, answers.
    let url = format!("https://localhost:{listen}/pods");
    let anonymous = Client::new(&node.ca, None).unwrap();
    let r = anonymous.get(&url, &[]).await.unwrap();
    assert_eq!(r.status, 200, "{:?}\n{}", r, logs());
    // The node's own client certificate is refused downstream.
    let node_cert = CertPaths {
        cert: node.path("pki/node.crt"),
        key: node.path("pki/node.key"),
    };
    let as_node = Client::new(&node.ca, Some(&node_cert)).unwrap();
    let r = as_node.get(&url, &[]).await.unwrap();
    assert_eq!(
        r.status, 403,
        "the node's credential was accepted downstream"
    );
    // The proxy's kubelet-facing identity (per-node CA) is refused at the TLS handshake.
    let local = node.path("node-ca/proxy-current.pem");
    let proxy_cert = CertPaths {
        cert: local.clone(),
        key: local,
    };
    let as_proxy = Client::new(&node.ca, Some(&proxy_cert)).unwrap();
    assert!(
        as_proxy.get(&url, &[]).await.is_err(),
        "the proxy's local identity was accepted downstream"
    );

    // Rotation: a new serving certificate moved in by a symlink swap is served without a restart.
    let before = served_serial(listen);
    assert!(before.starts_with("serial="), "{before}");
    let second = node.path("kubelet-server-2.pem");
    let made = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
             -subj /CN=rotated -keyout {k} -out {c} 2>/dev/null && cat {k} >> {c}",
            k = node.path("rotated.key").display(),
            c = second.display()
        ))
        .status()
        .unwrap();
    assert!(made.success());
    let tmp = node.path("kubelet-server-current.pem.tmp");
    std::os::unix::fs::symlink(&second, &tmp).unwrap();
    std::fs::rename(&tmp, &serving).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let now = served_serial(listen);
        if now != before && now.starts_with("serial=") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still serving {now}\n{}",
            logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(envoy.try_wait().unwrap().is_none(), "envoy restarted");

    // The connection cap (8 here): connections beyond it are closed at once; probes still work.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(
            tokio::net::TcpStream::connect(("127.0.0.1", listen))
                .await
                .unwrap(),
        );
    }
    let mut closed = 0;
    for s in &mut held {
        use tokio::io::AsyncReadExt as _;
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(std::time::Duration::from_millis(300), s.read(&mut b)).await
        {
            closed += 1;
        }
    }
    assert!(
        closed >= 10,
        "only {closed} of 20 connections closed over a cap of 8"
    );
    assert_eq!(
        plain(metrics, "GET", "/ready").await,
        200,
        "probe under the cap"
    );
    drop(held);
    envoy.kill().await.unwrap();
}
