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
        // Loaded into the stand-in API server by daemonset_serviceaccount_token_mode.
        "kubernetes/rbac-serviceaccount-token.yaml",
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
        assert_eq!(c.api_server().cluster, "kube-apiserver");

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

    let timeout = plugin_config(&b).api_server().timeout.as_secs_f64();
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
        Node::start_with("", "").await
    }

    /// With more RBAC objects and a bearer-token CSV for the stand-in API server.
    async fn start_with(extra_rbac: &str, tokens_csv: &str) -> Node {
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
        let mut config = ApiServerConfig::new(&pki_dir)
            .rbac_yaml(&rbac, "node-read")
            .nodes_yaml(&nodes, "nodes");
        if !extra_rbac.is_empty() {
            config = config.rbac_yaml(extra_rbac, "extra-rbac");
        }
        if !tokens_csv.is_empty() {
            config = config.tokens_csv(tokens_csv);
        }
        let api = ApiServer::start(config).await.unwrap();
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
                    "APISERVER_TOKEN" => self.path("sa-token/token"),
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
    assert!(err.contains("APISERVER_AUTH=auto: node-cert"), "{err}");
    let file = node.path("rendered/envoy.yaml");
    validate_ok(&file);
    let b = rendered(&node);

    let c = plugin_config(&b);
    assert_eq!(c.node_name, NODE_NAME);
    assert_eq!(c.api_server().cluster, "kube-apiserver");
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
    // node-cert mode: the node's certificate, no injected header.
    assert_eq!(
        api["transport_socket"]["typed_config"]["common_tls_context"]
            ["tls_certificate_sds_secret_configs"][0]["name"],
        "node-client"
    );
    let protocol = |c: &Value| {
        c["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
            .clone()
    };
    assert!(protocol(api).get("http_filters").is_none(), "{api}");
    assert!(!node.path("rendered/sds/apiserver-token.yaml").exists());
    // Rotated client certificates reach every pooled upstream connection within the hour.
    for c in [api, kubelet] {
        assert_eq!(
            protocol(c)["common_http_protocol_options"]["max_connection_duration"],
            "3600s",
            "{}",
            c["name"]
        );
    }
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
        (vec![("APISERVER_AUTH", "iam".into())], "APISERVER_AUTH"),
        (
            vec![("APISERVER_AUTH", "serviceaccount-token".into())],
            "ServiceAccount token",
        ),
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
        cfg.api_server().cluster,
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

/// Envoy with the DaemonSet's own command line (`/rendered/...` mapped onto the node's directory),
/// its output in `envoy.log`, once its metrics listener answers GET /ready.
async fn start_envoy(node: &Node, metrics: u16) -> tokio::process::Child {
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
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while plain(metrics, "GET", "/ready").await != 200 {
        assert!(
            envoy.try_wait().unwrap().is_none(),
            "envoy exited:\n{}",
            envoy_log(node)
        );
        assert!(
            std::time::Instant::now() < deadline,
            "not ready:\n{}",
            envoy_log(node)
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    envoy
}

fn envoy_log(node: &Node) -> String {
    std::fs::read_to_string(node.path("envoy.log")).unwrap_or_default()
}

/// The kubelet's certificate rotation (its certificate store): the new certificate in a new file,
/// then a fresh symlink renamed over `link` (one atomic rename in the link's directory).
fn swap_symlink(link: &Path, target: &Path) {
    let tmp = PathBuf::from(format!("{}.updated", link.display()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

/// A projected volume as the kubelet writes and refreshes it (its atomic writer): the payload in
/// a new timestamped directory `..<stamp>`, a fresh `..data_tmp` symlink to it renamed over
/// `..data`, the visible `token` a symlink to `..data/token` (made once), the previous payload
/// directory removed afterwards. The file `token` itself is never written or renamed.
fn write_projected_token(dir: &Path, stamp: &str, token: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let payload = format!("..{stamp}");
    std::fs::create_dir(dir.join(&payload)).unwrap();
    std::fs::write(dir.join(&payload).join("token"), token).unwrap();
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&payload, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    if std::fs::symlink_metadata(dir.join("token")).is_err() {
        std::os::unix::fs::symlink("..data/token", dir.join("token")).unwrap();
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

/// The SHA-256 of a PEM certificate's DER (the first certificate of the file), hex.
fn cert_sha256(pem: &Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl x509 {}", pem.display());
    kubelet_authz::identity::x509::sha256_hex(&out.stdout)
}

/// Send requests with fresh bearer tokens (each one a TokenReview the filter has not cached)
/// until a review reaches the stand-in API server with `credential`, within `secs`; answers the
/// number of requests sent. Panics with the credentials seen.
async fn await_review_credential(
    node: &Node,
    url: &str,
    credential: &str,
    secs: u64,
    what: &str,
) -> usize {
    use kubelet_authz_standins::client::Client;
    let client = Client::new(&node.ca, None).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    for n in 1.. {
        let mark = node.api.records().len();
        let token = format!("probe-{what}-{n}");
        let auth = format!("Bearer {token}");
        let answer = match client.get(url, &[("authorization", &auth)]).await {
            Ok(r) => format!("{}", r.status),
            Err(e) => format!("{e}"),
        };
        let seen: Vec<String> = node.api.records()[mark..]
            .iter()
            .filter(|r| r.kind == "TokenReview")
            .map(|r| r.caller_credential.clone())
            .collect();
        if seen.iter().any(|c| c == credential) {
            return n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: no review with {credential} within {secs} s; the last one: {seen:?} \
             (the proxy answered {answer})\n{}",
            envoy_log(node)
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    unreachable!()
}

/// "Node in a box": the DaemonSet's own containers (init scripts, then Envoy with the manifest's
/// command line) on this machine, host paths mapped onto a temporary directory, against the
/// stand-in API server and a stand-in kubelet on 127.0.0.1 that trusts only the per-node CA.
/// It starts; the metrics listener serves only GET /ready and /stats/prometheus; Shadow forwards
/// with the proxy's local identity (the kubelet accepts it); the node's own client certificate
/// (403) and the proxy's local one (handshake) are refused downstream; the connection cap closes
/// connections beyond it. Three rotations are each observed without a restart, within seconds:
/// - the kubelet's serving certificate (new file, symlink swap): the new serial is served;
/// - the node's client certificate (`kubelet-client-current.pem` swapped to a new certificate of
///   the same user `system:node:worker-1`): the stand-in API server records each review caller's
///   certificate (`X509SHA256=`), and the new one appears;
/// - the proxy's local certificate, re-issued by node-ca.sh (the script of the renewal sidecar,
///   run once with a renewal window longer than the validity so that it renews now): the
///   stand-in kubelet echoes the presented client certificate, and the new one appears.
///
/// What this test cannot catch: an SDS file without `watched_directory`. Envoy 1.40
/// (`source/common/secret/sds_api.cc`, `SdsApi::onConfigUpdate`) watches, for a secret without
/// one, the *parent directory* of every file the secret names, for `MovedTo` of any entry in it
/// ("Watch for directory instead of file ... Kubernetes secret update"), and re-reads the files
/// when their hash changed. Every rotation a node makes is such a rename in that very directory:
/// the kubelet renames a new `*-current.pem` symlink into `/var/lib/kubelet/pki`, node-ca.sh into
/// its state directory, and a projected volume renames `..data` in the volume's root, which is
/// the parent of `token`. A layout where only `watched_directory` would see the change (the
/// swapped symlink in an ancestor directory) is one no node produces, and render.sh sets
/// `watched_directory` to the file's own directory anyway, so both configurations watch the same
/// inotify directory. What `watched_directory` adds is reading certificate and key together, with
/// one hash check (no torn pair while a rename is in flight); a kubelet PEM holds both in one
/// file. `daemonset_init_containers_render_a_valid_bootstrap` asserts the setting instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_node_in_a_box() {
    use kubelet_authz_standins::client::Client;
    use kubelet_authz_standins::kubelet::{Kubelet, KubeletConfig};
    use kubelet_authz_standins::pki::{CertPaths, ClientSubject, Pki};
    let started = std::time::Instant::now();
    let node = Node::start().await;
    let (ok, err) = node.run("initContainers", "node-ca", &[]);
    assert!(ok, "node-ca: {err}");
    let kubelet = Kubelet::start(
        KubeletConfig::new(node.path("pki")).client_ca(&node.path("node-ca/ca.crt"), true),
    )
    .await
    .unwrap();
    // The serving and the client certificate as the kubelet keeps them: stamped files behind
    // symlinks.
    let serving = node.path("kubelet-server-current.pem");
    let first = node.path("kubelet-server-1.pem");
    std::fs::rename(&serving, &first).unwrap();
    std::os::unix::fs::symlink(&first, &serving).unwrap();
    let client_current = node.path("kubelet-client-current.pem");
    let client_first = node.path("kubelet-client-1.pem");
    std::fs::rename(&client_current, &client_first).unwrap();
    std::os::unix::fs::symlink(&client_first, &client_current).unwrap();

    let (listen, metrics) = (free_port(), free_port());
    let (listen_s, metrics_s) = (listen.to_string(), metrics.to_string());
    let kubelet_port = kubelet.addr().port().to_string();
    let overrides = [
        ("LISTEN_PORT", listen_s.as_str()),
        ("METRICS_PORT", metrics_s.as_str()),
        ("KUBELET_PORT", kubelet_port.as_str()),
        ("KUBELET_SERVER_NAME", "localhost"),
        ("MAX_CONNECTIONS", "8"),
        // Seconds here, an hour in the manifest: how long a pooled upstream connection may keep
        // presenting a client certificate that has been rotated.
        ("UPSTREAM_MAX_CONNECTION_AGE", "2s"),
    ];
    let (ok, err) = node.run("initContainers", "render", &overrides);
    assert!(ok, "render: {err}");
    assert!(err.contains("APISERVER_AUTH=auto: node-cert"), "{err}");

    let mut envoy = start_envoy(&node, metrics).await;
    let logs = || envoy_log(&node);

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
        key: local.clone(),
    };
    let as_proxy = Client::new(&node.ca, Some(&proxy_cert)).unwrap();
    assert!(
        as_proxy.get(&url, &[]).await.is_err(),
        "the proxy's local identity was accepted downstream"
    );

    // Rotation 1: a new serving certificate (same CA, same names) moved in by a symlink swap is
    // served.
    let pki = Pki::open(&node.path("pki")).unwrap();
    let before = served_serial(listen);
    assert!(before.starts_with("serial="), "{before}");
    let second = node.path("kubelet-server-2.pem");
    let renewed = pki
        .write_server_cert("serving-renewed", &["localhost", "127.0.0.1"])
        .unwrap();
    std::fs::write(
        &second,
        std::fs::read_to_string(&renewed.cert).unwrap()
            + &std::fs::read_to_string(&renewed.key).unwrap(),
    )
    .unwrap();
    swap_symlink(&serving, &second);
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

    // Rotation 2: the node's client certificate. The reviews are made with the first one ...
    let node_user = format!("system:node:{NODE_NAME}");
    let first_client = format!("X509SHA256={}", cert_sha256(&client_first));
    await_review_credential(&node, &url, &first_client, 10, "node-cert-1").await;
    // ... then the kubelet moves a new certificate of the same user in.
    let renewed = pki
        .client_cert(
            "node-renewed",
            &ClientSubject::new(&node_user, &["system:nodes"]),
        )
        .unwrap();
    let client_second = node.path("kubelet-client-2.pem");
    std::fs::write(
        &client_second,
        std::fs::read_to_string(&renewed.cert).unwrap()
            + &std::fs::read_to_string(&renewed.key).unwrap(),
    )
    .unwrap();
    let second_client = format!("X509SHA256={}", cert_sha256(&client_second));
    assert_ne!(first_client, second_client);
    swap_symlink(&client_current, &client_second);
    let swapped = std::time::Instant::now();
    await_review_credential(&node, &url, &second_client, 15, "node-cert-2").await;
    let took = swapped.elapsed();
    let last = node
        .api
        .records()
        .into_iter()
        .rev()
        .find(|r| r.kind == "TokenReview")
        .unwrap();
    assert_eq!(last.caller, node_user, "the renewed certificate's user");
    eprintln!("node client certificate rotation seen after {took:?}");

    // Rotation 3: the proxy's local certificate, re-issued by node-ca.sh.
    let kubelet_saw = |kubelet: &Kubelet| -> Option<String> {
        kubelet
            .records()
            .last()
            .and_then(|r| r["clientCert"]["sha256"].as_str().map(str::to_string))
    };
    let local_first = cert_sha256(&local);
    let r = anonymous.get(&url, &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(kubelet_saw(&kubelet).as_deref(), Some(local_first.as_str()));
    let link_before = std::fs::read_link(&local).unwrap();
    // node-ca.sh names certificates by the second: make sure the new one gets a new name.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (ok, err) = node.run("initContainers", "node-ca", &[("RENEW_DAYS", "31")]);
    assert!(ok, "node-ca renewal: {err}");
    assert!(err.contains("issued"), "{err}");
    assert_ne!(std::fs::read_link(&local).unwrap(), link_before);
    let local_second = cert_sha256(&local);
    assert_ne!(local_first, local_second);
    let swapped = std::time::Instant::now();
    let deadline = swapped + std::time::Duration::from_secs(15);
    loop {
        let r = anonymous.get(&url, &[]).await.unwrap();
        assert_eq!(r.status, 200, "{r:?}\n{}", logs());
        let seen = kubelet_saw(&kubelet);
        if seen.as_deref() == Some(local_second.as_str()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the kubelet still sees {seen:?}, not the renewed {local_second}\n{}",
            logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    eprintln!(
        "proxy local certificate rotation seen after {:?}",
        swapped.elapsed()
    );
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
    eprintln!("node in a box: {:?}", started.elapsed());
}

/// Nodes without a kubelet client certificate (EKS authenticates nodes with IAM exec
/// credentials): the render step, finding no `kubelet-client-current.pem`, takes
/// APISERVER_AUTH=serviceaccount-token. It reads its Node with the pod's projected ServiceAccount
/// token (allowed by the shipped rbac-serviceaccount-token.yaml, loaded into the stand-in API
/// server), and its bootstrap presents no client certificate to the API server but injects the
/// token with an upstream HTTP filter of the kube-apiserver cluster (the filter's reviews are
/// async-client requests: only upstream filters see them). Through Envoy, the TokenReview and
/// SubjectAccessReview arrive authenticated as the ServiceAccount with that token; after the
/// kubelet's refresh of the projected volume (a new `..data` directory swapped in by rename) the
/// reviews carry the new token within seconds, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_serviceaccount_token_mode() {
    use kubelet_authz_standins::client::Client;
    use kubelet_authz_standins::kubelet::{Kubelet, KubeletConfig};
    const SA: &str = "system:serviceaccount:kubelet-authz:kubelet-authz";
    let started = std::time::Instant::now();
    let (one, two) = ("sa-token-one.jwt", "sa-token-two.jwt");
    let groups = "\"system:serviceaccounts,system:serviceaccounts:kubelet-authz\"";
    let tokens = format!(
        "{one},{SA},uid-sa,{groups}\n{two},{SA},uid-sa,{groups}\nalice-token,alice,uid-alice\n"
    );
    let rbac = std::fs::read_to_string(k8s_dir().join("rbac-serviceaccount-token.yaml")).unwrap();
    let node = Node::start_with(&rbac, &tokens).await;
    // An EKS node: no kubelet client certificate; the projected token volume.
    std::fs::remove_file(node.path("kubelet-client-current.pem")).unwrap();
    let token_dir = node.path("sa-token");
    write_projected_token(&token_dir, "2026_01_01_00_00_00.000000001", one);
    let (ok, err) = node.run("initContainers", "node-ca", &[]);
    assert!(ok, "node-ca: {err}");
    let kubelet = Kubelet::start(
        KubeletConfig::new(node.path("pki")).client_ca(&node.path("node-ca/ca.crt"), true),
    )
    .await
    .unwrap();
    let (listen, metrics) = (free_port(), free_port());
    let (listen_s, metrics_s) = (listen.to_string(), metrics.to_string());
    let kubelet_port = kubelet.addr().port().to_string();
    let overrides = [
        ("LISTEN_PORT", listen_s.as_str()),
        ("METRICS_PORT", metrics_s.as_str()),
        ("KUBELET_PORT", kubelet_port.as_str()),
        ("KUBELET_SERVER_NAME", "localhost"),
    ];
    let (ok, err) = node.run("initContainers", "render", &overrides);
    assert!(ok, "render: {err}");
    assert!(
        err.contains("APISERVER_AUTH=auto: serviceaccount-token"),
        "{err}"
    );
    // Read with the token (there is no certificate): the shipped node-reader binding works.
    assert!(err.contains("kubelet version 1.34"), "{err}");
    let file = node.path("rendered/envoy.yaml");
    validate_ok(&file);
    let b = rendered(&node);
    let api = b["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "kube-apiserver")
        .unwrap()
        .clone();
    let tls = &api["transport_socket"]["typed_config"]["common_tls_context"];
    assert!(
        tls.get("tls_certificate_sds_secret_configs").is_none(),
        "no client certificate in token mode: {tls}"
    );
    let filters = api["typed_extension_protocol_options"]
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"]
        .as_array()
        .unwrap();
    assert_eq!(filters[0]["name"], "envoy.filters.http.credential_injector");
    assert_eq!(filters[0]["typed_config"]["overwrite"], true);
    assert_eq!(
        filters.last().unwrap()["name"],
        "envoy.filters.http.upstream_codec"
    );
    assert!(!node.path("rendered/sds/node-client.yaml").exists());
    let sds = std::fs::read_to_string(node.path("rendered/sds/apiserver-token.yaml")).unwrap();
    assert!(
        sds.contains(&node.path("sa-token/token").display().to_string()),
        "{sds}"
    );

    let mut envoy = start_envoy(&node, metrics).await;
    let url = format!("https://localhost:{listen}/pods");
    let client = Client::new(&node.ca, None).unwrap();
    let cred = |t: &str| {
        format!(
            "TokenSHA256={}",
            kubelet_authz::identity::x509::sha256_hex(t.as_bytes())
        )
    };
    // A user's request: TokenReview and SubjectAccessReview, both made as the ServiceAccount
    // with the first token (Shadow forwards alice's request whatever the decision).
    let mark = node.api.records().len();
    let r = client
        .get(&url, &[("authorization", "Bearer alice-token")])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}\n{}", envoy_log(&node));
    let records = node.api.records()[mark..].to_vec();
    let kinds: BTreeSet<&str> = records.iter().map(|r| r.kind.as_str()).collect();
    assert!(
        kinds.contains("TokenReview") && kinds.contains("SubjectAccessReview"),
        "{kinds:?}"
    );
    for r in &records {
        assert_eq!(r.caller, SA, "{r:?}");
        assert_eq!(r.caller_credential, cred(one), "{r:?}");
        assert_eq!(r.status, 201, "{r:?}");
    }
    assert_eq!(
        records[0].response.as_ref().unwrap()["status"]["user"]["username"],
        "alice"
    );

    // The kubelet refreshes the projected volume: new reviews carry the second token.
    write_projected_token(&token_dir, "2026_01_01_00_48_00.000000002", two);
    let swapped = std::time::Instant::now();
    await_review_credential(&node, &url, &cred(two), 15, "sa-token-2").await;
    eprintln!(
        "ServiceAccount token refresh seen after {:?}",
        swapped.elapsed()
    );
    let mark = node.api.records().len();
    let r = client
        .get(&url, &[("authorization", "Bearer probe-after")])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let after = node.api.records()[mark..].to_vec();
    assert!(!after.is_empty());
    for r in &after {
        assert_eq!(r.caller_credential, cred(two), "{r:?}");
    }
    assert!(envoy.try_wait().unwrap().is_none(), "envoy restarted");
    envoy.kill().await.unwrap();
    eprintln!("token mode: {:?}", started.elapsed());
}

/// The `stats_config.stats_tags` of a bootstrap: `(tag_name, regex)`.
fn stats_tags(bootstrap: &Value) -> Vec<(String, String)> {
    bootstrap["stats_config"]["stats_tags"]
        .as_array()
        .unwrap_or_else(|| panic!("no stats_config.stats_tags"))
        .iter()
        .map(|t| {
            (
                t["tag_name"].as_str().unwrap().to_string(),
                t["regex"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every shipped form makes the filter's labels Prometheus labels (issue 13): each Envoy bootstrap
/// has one `stats_tags` entry per label of `filter/src/metrics.rs`, and the Istio gateway asks
/// Istio for the same ones (`extraStatTags`, which Istio turns into the same regexes) and keeps
/// the filter's stats.
#[test]
fn every_shipped_form_extracts_the_filter_labels() {
    let want: Vec<(String, String)> = kubelet_authz_filter::metrics::stats_tags()
        .into_iter()
        .map(|(t, r)| (t.to_string(), r))
        .collect();
    for rel in [
        "envoy/kubelet-front-proxy.yaml",
        "envoy/kubernetes/node-proxy.yaml",
    ] {
        // Rendered with a dummy value for every placeholder: only stats_config is read.
        let text = std::fs::read_to_string(workspace().join(rel)).unwrap();
        let vars = placeholders(&text)
            .into_iter()
            .map(|p| (p, String::from("0")))
            .collect();
        let rendered = kubelet_authz_e2e::render::render(&text, &vars).unwrap();
        let b: Value = serde_json::to_value(
            serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&rendered).unwrap(),
        )
        .unwrap();
        assert_eq!(stats_tags(&b), want, "{rel}");
    }
    let cm = yaml_docs(&workspace().join("envoy/kubernetes/configmap.yaml"));
    let node_proxy = cm[0]["data"]["node-proxy.yaml"].as_str().unwrap();
    assert!(
        node_proxy.contains("stats_config:"),
        "configmap.yaml: regenerate it with scripts/gen-configmap.py"
    );

    let gw = yaml_docs(&workspace().join("envoy/istio/gateway-deployment.yaml"));
    let annotation = gw[0]["spec"]["template"]["metadata"]["annotations"]["proxy.istio.io/config"]
        .as_str()
        .unwrap();
    let proxy_config: Value =
        serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(annotation).unwrap())
            .unwrap();
    let extra: Vec<&str> = proxy_config["extraStatTags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(extra, kubelet_authz_filter::metrics::LABELS);
    assert_eq!(
        proxy_config["proxyStatsMatcher"]["inclusionPrefixes"],
        serde_json::json!([format!(
            "wasmcustom.{}",
            kubelet_authz_filter::metrics::PREFIX
        )])
    );
    // What Istio generates for an `extraStatTags` name (tools/packaging/common/envoy_bootstrap.json).
    for (tag, regex) in &want {
        assert_eq!(*regex, format!(r"({tag}=\.=(.*?);\.;)"));
    }
}
