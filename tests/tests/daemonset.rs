//! The DaemonSet (`envoy/kubernetes/`) as shipped: its manifest and kustomize base, and "node in a
//! box" tests that run the pod's own command lines (`kubelet-authz-node init`/`run`/`drain`, then
//! Envoy with the manifest's arguments) with the `kubelet-authz-node` ConfigMap's settings
//! (`node.env`), host paths mapped onto a temporary directory, against the stand-in API server and
//! a stand-in kubelet on 127.0.0.1 that trusts only the per-node CA.
//!
//! Needs Envoy (`ENVOY_BIN`), the release filter (`KUBELET_AUTHZ_FILTER_WASM`), `kubectl` (its
//! kustomize) and `openssl`; fails without. The agent binary is built here (`cargo build -p
//! kubelet-authz-node`, once per process): a test binary cannot name another crate's binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use kubelet_authz::config::Config;
use kubelet_authz_e2e::envoy::validate;
use kubelet_authz_e2e::render::workspace;
use kubelet_authz_e2e::stack::{ProxyOptions, Standins, NODE_NAME};
use kubelet_authz_node::metrics::{
    FILTER_CONFIG_REFUSALS_TOTAL, FILTER_CONFIG_VALID, FILTER_CONFIG_WRITES_TOTAL,
};
use kubelet_authz_standins::client::Client;
use serde::Deserialize as _;
use serde_json::Value;

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde_json::to_value(serde_yaml_ng::Value::deserialize(d).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(text: &str) -> Value {
    serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).unwrap()).unwrap()
}

fn k8s_dir() -> PathBuf {
    workspace().join("envoy/kubernetes")
}

fn daemonset() -> Value {
    let text = std::fs::read_to_string(k8s_dir().join("daemonset.yaml")).unwrap();
    yaml_docs(&text)
        .into_iter()
        .find(|d| d["kind"] == "DaemonSet")
        .unwrap()
}

fn daemonset_pod() -> Value {
    daemonset()["spec"]["template"]["spec"].clone()
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {list} `{name}`"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The `kubelet-authz-node` ConfigMap's settings (`node.env`, the configMapGenerator's input).
fn node_env() -> Vec<(String, String)> {
    std::fs::read_to_string(k8s_dir().join("node.env"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The agent binary, built once per test process with the cargo that builds this test.
fn agent_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = std::process::Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "kubelet-authz-node",
                "--bin",
                "kubelet-authz-node",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo build -p kubelet-authz-node:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // target/debug/deps/daemonset-HASH -> target/debug/kubelet-authz-node
        let exe = std::env::current_exe().unwrap();
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .join("kubelet-authz-node");
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
    .clone()
}

/// The DaemonSet as an operator applies it: the pod is Envoy plus the agent (one image, at
/// `/kubelet-authz-node` and `/plugin.wasm`); Envoy by its binary without hot restart; no TCP admin
/// port and no declared ports at all (a surge pod must schedule beside the old one); surge
/// updates; a grace period covering the drain; probes on /ready and /live; every container
/// locked down with a pinned image; node-critical, Linux only, every taint tolerated, no default
/// ServiceAccount token; the kubelet's configuration found on kubeadm and EKS AL2023 nodes without
/// a `type: File` hostPath that would keep the pod from starting on one of them.
#[test]
fn daemonset_manifest_is_deployable_and_locked_down() {
    let ds = daemonset();
    let rolling = &ds["spec"]["updateStrategy"]["rollingUpdate"];
    assert_eq!(rolling["maxSurge"], 1);
    assert_eq!(rolling["maxUnavailable"], 0);
    let pod = daemonset_pod();
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["nodeSelector"]["kubelet-authz.io/proxy"], "enabled");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert!(
        pod["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "every taint must be tolerated"
    );
    let mut names = Vec::new();
    for list in ["initContainers", "containers"] {
        for c in pod[list].as_array().unwrap() {
            let name = c["name"].as_str().unwrap();
            names.push(name.to_string());
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
            for banned in ["alpine", "busybox", "openssl"] {
                assert!(!image.contains(banned), "{name}: {image}");
            }
            assert!(c["resources"]["limits"]["memory"].is_string(), "{name}");
            assert!(
                c.get("ports").is_none(),
                "{name}: declared ports keep a surge pod out"
            );
            let command = strings(&c["command"]);
            assert!(
                !command
                    .iter()
                    .any(|a| a.ends_with("/sh") || a.ends_with(".sh")),
                "{name}: no shell: {command:?}"
            );
        }
    }
    assert_eq!(names, ["init", "envoy", "agent"]);
    let init = container(&pod, "initContainers", "init");
    let agent = container(&pod, "containers", "agent");
    assert_eq!(init["image"], agent["image"], "one image");
    assert_eq!(strings(&init["command"]), ["/kubelet-authz-node", "init"]);
    assert_eq!(strings(&agent["command"]), ["/kubelet-authz-node", "run"]);
    let wasm_source = node_env()
        .into_iter()
        .find(|(k, _)| k == "WASM_SOURCE")
        .unwrap()
        .1;
    assert_eq!(wasm_source, "/plugin.wasm");

    let envoy = container(&pod, "containers", "envoy");
    assert_eq!(strings(&envoy["command"]), ["/usr/local/bin/envoy"]);
    let args = strings(&envoy["args"]);
    for a in ["--disable-hot-restart", "--drain-strategy", "immediate"] {
        assert!(args.iter().any(|x| x == a), "{a}: {args:?}");
    }
    assert_eq!(envoy["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(envoy["livenessProbe"]["httpGet"]["path"], "/live");
    assert_eq!(envoy["livenessProbe"]["httpGet"]["port"], 9977);

    // The drain: the agent's preStop drains up to its deadline; Envoy's preStop sleep keeps Envoy
    // (which closes its listeners at SIGTERM) alive that long; the grace period covers both.
    let drain = strings(&agent["lifecycle"]["preStop"]["exec"]["command"]);
    assert_eq!(drain[..2], ["/kubelet-authz-node", "drain"]);
    let at = drain.iter().position(|a| a == "--deadline").unwrap();
    let deadline: u64 = drain[at + 1].trim_end_matches('s').parse().unwrap();
    let sleep = envoy["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(deadline >= 600, "a drain of {deadline} s cuts long streams");
    assert!(
        sleep > deadline,
        "Envoy sleeps {sleep} s, the drain lasts {deadline} s"
    );
    assert!(grace > sleep, "grace {grace} s, Envoy's preStop {sleep} s");

    // Host paths: kubeadm's and EKS AL2023's kubelet configuration directories; never a File
    // hostPath on the kubelet's configuration.
    let volumes = pod["volumes"].as_array().unwrap();
    let host = |path: &str| {
        volumes
            .iter()
            .find(|v| v["hostPath"]["path"] == path)
            .unwrap_or_else(|| panic!("no hostPath {path}"))["hostPath"]["type"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(host("/var/lib/kubelet"), "Directory");
    assert_eq!(host("/etc/kubernetes/kubelet"), "DirectoryOrCreate");
    for v in volumes {
        let p = v["hostPath"]["path"].as_str().unwrap_or_default();
        assert!(
            !(p.contains("config.yaml") || p.contains("config.json")),
            "a File hostPath on the kubelet's configuration: {v}"
        );
    }
    // The filter ConfigMap (fixed name) and the restart settings (generated, hash-suffixed).
    let filter = volumes
        .iter()
        .find(|v| v["name"] == "filter-config")
        .unwrap();
    assert_eq!(filter["configMap"]["name"], "kubelet-authz-filter");
    for c in [init, agent] {
        assert_eq!(
            c["envFrom"][0]["configMapRef"]["name"],
            "kubelet-authz-node"
        );
    }
}

/// The kustomize base builds (`kubectl kustomize`): the filter ConfigMap keeps its fixed name and
/// holds exactly `filter.yaml` (a configuration the engine accepts once a node's values are
/// merged), the node ConfigMap's name carries a content hash the DaemonSet refers to, and the
/// DaemonSet's containers take every setting of `node.env`.
#[test]
fn kustomize_base_builds_with_both_configmaps() {
    let out = std::process::Command::new("kubectl")
        .args(["kustomize"])
        .arg(k8s_dir())
        .output()
        .expect("kubectl (kustomize) is needed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = yaml_docs(&String::from_utf8_lossy(&out.stdout));
    let cm = |pred: &dyn Fn(&str) -> bool| {
        docs.iter()
            .find(|d| d["kind"] == "ConfigMap" && pred(d["metadata"]["name"].as_str().unwrap()))
            .unwrap()
            .clone()
    };
    let filter = cm(&|n| n == "kubelet-authz-filter");
    let text = filter["data"]["filter.yaml"].as_str().unwrap();
    assert_eq!(
        text,
        std::fs::read_to_string(k8s_dir().join("filter.yaml")).unwrap()
    );
    let node = kubelet_authz_node::filterconfig::NodeValues {
        node_name: NODE_NAME.into(),
        kubelet_version: "1.34".into(),
        apiserver_authority: "kubernetes.default.svc".into(),
    };
    let json =
        kubelet_authz_node::filterconfig::merge(Path::new("filter.yaml"), text, &node).unwrap();
    let c = Config::from_json(json.as_bytes()).unwrap();
    assert_eq!(
        c.enforcement,
        kubelet_authz::config::Enforcement::Shadow,
        "the base starts in Shadow"
    );
    let generated = cm(&|n| n.starts_with("kubelet-authz-node-"));
    let name = generated["metadata"]["name"].as_str().unwrap();
    assert!(name.len() > "kubelet-authz-node-".len(), "{name}: no hash");
    for (k, v) in node_env() {
        assert_eq!(generated["data"][&k], v, "{k}");
    }
    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    for (list, c) in [("initContainers", "init"), ("containers", "agent")] {
        assert_eq!(
            container(pod, list, c)["envFrom"][0]["configMapRef"]["name"],
            name
        );
    }
}

/// The kubelet drop-in the agent's `configure` installs trusts exactly the per-node CA the
/// DaemonSet's agent makes (`PKI_DIR/ca.crt` on the `/var/lib/kubelet-authz` host directory).
#[test]
fn kubelet_dropin_trusts_the_agents_ca() {
    let text = std::fs::read_to_string(k8s_dir().join("node/90-kubelet-authz.conf")).unwrap();
    let y = yaml(&text);
    assert_eq!(y["address"], "127.0.0.1");
    let pki = node_env()
        .into_iter()
        .find(|(k, _)| k == "PKI_DIR")
        .unwrap()
        .1;
    assert_eq!(
        y["authentication"]["x509"]["clientCAFile"],
        format!("{pki}/ca.crt")
    );
    let state = daemonset_pod()["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "node-pki")
        .unwrap()["hostPath"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        pki.starts_with(&format!("{state}/")),
        "{pki} is not on the host path {state}"
    );
}

/// A node on this machine: the stand-in API server knows Node `worker-1` (kubelet v1.34.2) and lets
/// the node's own client certificate read it; kubelet-style files (certificate and key in one PEM);
/// the filter ConfigMap as a volume (`filter/..data/filter.yaml`).
struct Node {
    dir: tempfile::TempDir,
    api: kubelet_authz_standins::apiserver::ApiServer,
    ca: PathBuf,
}

/// One pod of the DaemonSet on the node: its emptyDirs (rendered files, admin socket).
#[derive(Clone, Copy)]
struct Pod(&'static str);

const POD: Pod = Pod("pod-1");
const POD2: Pod = Pod("pod-2");

/// A ConfigMap or projected volume as the kubelet writes it (its atomic writer): the payload in a
/// new `..<stamp>` directory, a `..data` symlink renamed over the old one, the visible file a
/// symlink to `..data/<file>`.
fn write_volume(dir: &Path, file: &str, text: &str) {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::fs::create_dir_all(dir).unwrap();
    let payload = format!(
        "..2026_01_01_00_00_00.{:09}",
        N.fetch_add(1, Ordering::SeqCst)
    );
    std::fs::create_dir(dir.join(&payload)).unwrap();
    std::fs::write(dir.join(&payload).join(file), text).unwrap();
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&payload, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    if std::fs::symlink_metadata(dir.join(file)).is_err() {
        std::os::unix::fs::symlink(format!("..data/{file}"), dir.join(file)).unwrap();
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
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
        let n = Node {
            ca: pki.ca_cert(),
            dir,
            api,
        };
        n.set_filter(&std::fs::read_to_string(k8s_dir().join("filter.yaml")).unwrap());
        n
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A new content of the filter ConfigMap, swapped in as the kubelet updates a volume.
    fn set_filter(&self, text: &str) {
        write_volume(&self.path("filter"), "filter.yaml", text);
    }

    fn out(&self, pod: Pod) -> PathBuf {
        self.path(&format!("{}/rendered", pod.0))
    }

    fn admin(&self, pod: Pod) -> PathBuf {
        self.path(&format!("{}/admin.sock", pod.0))
    }

    /// The env of a container: the ConfigMap's settings (`node.env`) and the manifest's own
    /// (downward API), with every host or pod path mapped onto this node's files. An absolute path
    /// the test does not know is an error, so a new path in the manifest cannot go unchecked. The
    /// agent's default host paths (the kubelet's configuration and kubeconfig, picked from the
    /// mounts of `/var/lib/kubelet` and `/etc/kubernetes`) are given as this node's files.
    fn env(&self, pod: Pod, list: &str, name: &str) -> Vec<(String, String)> {
        let p = daemonset_pod();
        let c = container(&p, list, name);
        let mut raw = vec![
            ("NODE_NAME".to_string(), NODE_NAME.to_string()),
            ("LISTEN_ADDRESS".to_string(), "127.0.0.1".to_string()),
        ];
        if c.get("envFrom").is_some() {
            raw.extend(node_env());
        }
        for e in c["env"].as_array().into_iter().flatten() {
            if let Some(v) = e["value"].as_str() {
                raw.push((e["name"].as_str().unwrap().to_string(), v.to_string()));
            }
        }
        let mut out: Vec<(String, String)> = raw
            .into_iter()
            .map(|(key, value)| {
                if !value.starts_with('/') {
                    return (key, value);
                }
                let mapped = match key.as_str() {
                    "OUTPUT_DIR" => self.out(pod),
                    "ADMIN_SOCKET" => self.admin(pod),
                    "METRICS_SOCKET" => self.path(&format!("{}/agent.sock", pod.0)),
                    "WASM_SOURCE" => kubelet_authz_e2e::envoy::filter_wasm().unwrap(),
                    "FILTER_WASM" => self.path(&format!("{}/wasm/plugin.wasm", pod.0)),
                    "FILTER_CONFIG" => self.path("filter/filter.yaml"),
                    "PKI_DIR" => self.path("node-state/pki"),
                    "STATE_DIR" => self.path("node-state"),
                    "NODE_CLIENT_CERT" => self.path("kubelet-client-current.pem"),
                    "APISERVER_TOKEN" => self.path("sa-token/token"),
                    "SERVING_CERT" => self.path("kubelet-server-current.pem"),
                    "CLUSTER_CA" => self.ca.clone(),
                    other => panic!("{name}: path {other}={value} is not mapped by this test"),
                };
                (key, mapped.display().to_string())
            })
            .collect();
        if name == "init" {
            out.push((
                "KUBELET_CONFIG".into(),
                self.path("config.yaml").display().to_string(),
            ));
            out.push((
                "KUBELET_KUBECONFIG".into(),
                self.path("kubelet.conf").display().to_string(),
            ));
        }
        out
    }

    /// The command line of a container (`command` + `args`), the agent mapped onto its binary.
    fn command(
        &self,
        pod: Pod,
        list: &str,
        name: &str,
        argv: &[String],
        overrides: &[(&str, &str)],
    ) -> std::process::Command {
        assert_eq!(argv[0], "/kubelet-authz-node", "{name}: {argv:?}");
        let mut cmd = std::process::Command::new(agent_bin());
        cmd.args(&argv[1..]).env_clear();
        for (k, v) in self.env(pod, list, name) {
            cmd.env(k, v);
        }
        for (k, v) in overrides {
            cmd.env(k, v);
        }
        cmd
    }

    fn argv(list: &str, name: &str) -> Vec<String> {
        let p = daemonset_pod();
        let c = container(&p, list, name);
        let mut argv = strings(&c["command"]);
        argv.extend(strings(&c["args"]));
        argv
    }

    /// Run the `init` container as written; answers (success, stderr).
    fn init(&self, pod: Pod, overrides: &[(&str, &str)]) -> (bool, String) {
        let argv = Node::argv("initContainers", "init");
        let out = self
            .command(pod, "initContainers", "init", &argv, overrides)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Start the `agent` container as written (until killed); its stderr in `agent.log`.
    fn start_agent(&self, pod: Pod, overrides: &[(&str, &str)]) -> tokio::process::Child {
        let argv = Node::argv("containers", "agent");
        let log = std::fs::File::create(self.path(&format!("{}/agent.log", pod.0))).unwrap();
        let mut cmd: tokio::process::Command = self
            .command(pod, "containers", "agent", &argv, overrides)
            .into();
        cmd.stderr(log).kill_on_drop(true).spawn().unwrap()
    }

    fn agent_log(&self, pod: Pod) -> String {
        std::fs::read_to_string(self.path(&format!("{}/agent.log", pod.0))).unwrap_or_default()
    }

    /// The agent's preStop hook as written, with the drain deadline replaced by `deadline`.
    fn drain(&self, pod: Pod, deadline: &str) -> std::process::Child {
        let p = daemonset_pod();
        let agent = container(&p, "containers", "agent");
        let mut argv = strings(&agent["lifecycle"]["preStop"]["exec"]["command"]);
        let at = argv.iter().position(|a| a == "--deadline").unwrap();
        argv[at + 1] = deadline.to_string();
        self.command(pod, "containers", "agent", &argv, &[])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn envoy_log(&self, pod: Pod) -> String {
        std::fs::read_to_string(self.path(&format!("{}/envoy.log", pod.0))).unwrap_or_default()
    }

    /// Envoy with the manifest's command line (`/rendered/...` mapped onto the pod's directory),
    /// once its metrics listener answers GET /live.
    async fn start_envoy(&self, pod: Pod, metrics: u16) -> tokio::process::Child {
        let mut argv = Node::argv("containers", "envoy");
        assert_eq!(argv[0], "/usr/local/bin/envoy");
        argv[0] = kubelet_authz_e2e::envoy::envoy_bin()
            .unwrap()
            .display()
            .to_string();
        for a in argv.iter_mut().skip(1) {
            if let Some(rest) = a.strip_prefix("/rendered/") {
                *a = self.out(pod).join(rest).display().to_string();
            } else {
                assert!(!a.starts_with('/'), "unmapped path in the envoy args: {a}");
            }
        }
        let log = std::fs::File::create(self.path(&format!("{}/envoy.log", pod.0))).unwrap();
        let mut envoy = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while plain(metrics, "GET", "/live").await != 200 {
            assert!(
                envoy.try_wait().unwrap().is_none(),
                "envoy exited:\n{}",
                self.envoy_log(pod)
            );
            assert!(
                Instant::now() < deadline,
                "not live:\n{}",
                self.envoy_log(pod)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        envoy
    }

    async fn stats(&self, pod: Pod) -> String {
        kubelet_authz_node::drain::admin(&self.admin(pod), "GET", "/stats")
            .await
            .unwrap()
            .1
    }
}

fn stat(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no stat {name}"))
}

fn read_yaml(path: &Path) -> Value {
    yaml(&std::fs::read_to_string(path).unwrap())
}

/// The wasm filter of the ECDS file, and the plugin configuration JSON in it.
fn ecds_filter(node: &Node, pod: Pod) -> (Value, Value) {
    let e = read_yaml(&node.out(pod).join("ecds/filter.yaml"));
    let r = &e["resources"][0];
    assert_eq!(r["name"], "envoy.filters.http.wasm");
    let wasm = r["typed_config"].clone();
    let cfg: Value =
        serde_json::from_str(wasm["config"]["configuration"]["value"].as_str().unwrap()).unwrap();
    (wasm, cfg)
}

/// The HTTP connection manager of the kubelet listener.
fn hcm(bootstrap: &Value) -> &Value {
    &bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
}

/// `envoy --mode validate` of the bootstrap with the ECDS filter put in place (validation does
/// not read discovery files): the bootstrap and the filter configuration both pass, and the
/// filter's `on_configure` ran.
fn validate_with_ecds(node: &Node, pod: Pod) {
    let mut b = read_yaml(&node.out(pod).join("envoy.yaml"));
    let (wasm, _) = ecds_filter(node, pod);
    let filters = hcm(&b)["http_filters"].as_array().unwrap().clone();
    let at = filters
        .iter()
        .position(|f| f["name"] == "envoy.filters.http.wasm")
        .unwrap();
    assert!(
        filters[at]["config_discovery"].is_object(),
        "the filter is not from ECDS"
    );
    b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"][at] =
        serde_json::json!({ "name": "envoy.filters.http.wasm", "typed_config": wasm });
    let file = node.out(pod).join("validate.yaml");
    std::fs::write(&file, serde_yaml_ng::to_string(&b).unwrap()).unwrap();
    let (ok, out) = validate(&file).unwrap();
    assert!(ok, "envoy --mode validate failed:\n{out}");
    assert!(
        out.contains(&format!(
            "kubelet-authz: configured for node \"{NODE_NAME}\""
        )),
        "the filter did not configure:\n{out}"
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
    plain_response(port, method, path).await.0
}

/// A plain HTTP/1.1 request: the status (0 when there was none) and the whole response.
async fn plain_response(port: u16, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return (0, String::new());
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The agent's series through Envoy's metrics listener (`GET /metrics/agent`).
async fn agent_metrics(port: u16) -> String {
    let (status, text) = plain_response(port, "GET", kubelet_authz_node::metrics::ENVOY_PATH).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{text}"
    );
    text
}

/// The value of an unlabelled sample in a Prometheus text exposition.
fn sample(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map(str::to_string)
}

/// The init container, run as written: the per-node CA and the proxy's certificate are made once;
/// the kubelet version is read from the Node object with the node's own certificate (and kept on
/// the node), the API server endpoint from the kubelet's kubeconfig, the TLS policy from the
/// kubelet's configuration; the bootstrap with its ECDS filter passes `envoy --mode validate`, in
/// Shadow (the base) and, the ConfigMap switched, in Enforce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_init_renders_a_valid_bootstrap() {
    let node = Node::start().await;
    let (ok, err) = node.init(POD, &[]);
    assert!(ok, "init: {err}");
    assert!(err.contains("made the per-node CA"), "{err}");
    assert!(err.contains("kubelet version 1.34"), "{err}");
    assert!(err.contains("APISERVER_AUTH=auto: node-cert"), "{err}");
    let ca = std::fs::read(node.path("node-state/pki/ca.crt")).unwrap();
    let proxy = std::fs::read_link(node.path("node-state/pki/proxy-current.pem")).unwrap();
    assert_eq!(
        std::fs::read_to_string(node.path("node-state/kubelet-version"))
            .unwrap()
            .trim(),
        "v1.34.2",
        "the last known version is kept on the node"
    );
    // The module was copied where Envoy reads it.
    assert_eq!(
        std::fs::read(node.path("pod-1/wasm/plugin.wasm")).unwrap(),
        std::fs::read(kubelet_authz_e2e::envoy::filter_wasm().unwrap()).unwrap()
    );
    // A second start keeps the CA and the still-fresh certificate.
    let (ok, err) = node.init(POD, &[]);
    assert!(ok, "init again: {err}");
    assert!(!err.contains("made the per-node CA"), "{err}");
    assert_eq!(
        std::fs::read(node.path("node-state/pki/ca.crt")).unwrap(),
        ca
    );
    assert_eq!(
        std::fs::read_link(node.path("node-state/pki/proxy-current.pem")).unwrap(),
        proxy
    );

    validate_with_ecds(&node, POD);
    let b = read_yaml(&node.out(POD).join("envoy.yaml"));
    let (wasm, cfg) = ecds_filter(&node, POD);
    let c = Config::from_value(&cfg).unwrap();
    assert_eq!(c.node_name, NODE_NAME);
    assert_eq!(c.api_server().cluster, "kube-apiserver");
    assert_eq!(cfg["kubeletVersion"], "1.34");
    assert_eq!(cfg["enforcement"], "Shadow", "the base starts in Shadow");
    assert_eq!(b["node"]["id"], NODE_NAME);
    assert!(b["node"]["cluster"].is_string());

    // Admin on a unix socket only; the metrics listener: /ready to the kubelet's /healthz through
    // the kubelet cluster, /live from Envoy, /stats/prometheus from the admin socket, else 404.
    assert!(b["admin"]["address"]["pipe"]["path"].is_string());
    assert!(b["admin"]["address"].get("socket_address").is_none());
    let listeners = b["static_resources"]["listeners"].as_array().unwrap();
    let metrics = listeners.iter().find(|l| l["name"] == "metrics").unwrap();
    assert_eq!(metrics["bypass_overload_manager"], true);
    assert_eq!(metrics["ignore_global_conn_limit"], true);
    let routes = metrics["filter_chains"][0]["filters"][1]["typed_config"]["route_config"]
        ["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap();
    let by_path = |p: &str| routes.iter().find(|r| r["match"]["path"] == p).unwrap();
    assert_eq!(by_path("/ready")["route"]["cluster"], "kubelet");
    assert_eq!(by_path("/ready")["route"]["prefix_rewrite"], "/healthz");
    assert_eq!(by_path("/live")["direct_response"]["status"], 200);
    assert_eq!(by_path("/stats/prometheus")["route"]["cluster"], "admin");
    let to_admin: Vec<&str> = routes
        .iter()
        .filter(|r| r["route"]["cluster"] == "admin")
        .map(|r| r["match"]["path"].as_str().unwrap())
        .collect();
    assert_eq!(to_admin, ["/stats/prometheus"]);
    assert_eq!(routes.last().unwrap()["direct_response"]["status"], 404);
    // The kubelet listener: SO_REUSEPORT, drained by `drain`, slow and silent clients bounded.
    let kubelet_l = &listeners[0];
    assert_eq!(kubelet_l["enable_reuse_port"], true);
    assert_eq!(kubelet_l["traffic_direction"], "INBOUND");
    assert_eq!(
        kubelet_l["filter_chains"][0]["transport_socket_connect_timeout"],
        "10s"
    );
    assert_eq!(hcm(&b)["request_headers_timeout"], "10s");
    assert_eq!(
        hcm(&b)["common_http_protocol_options"]["idle_timeout"],
        "180s"
    );
    // The connection cap and the breakers sized to it.
    let cap = b["overload_manager"]["resource_monitors"]
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
    assert!(!node.out(POD).join("sds/apiserver-token.yaml").exists());
    for c in [api, kubelet] {
        assert_eq!(
            protocol(c)["common_http_protocol_options"]["max_connection_duration"],
            "3600s",
            "{}",
            c["name"]
        );
    }
    let text = std::fs::read_to_string(node.out(POD).join("envoy.yaml")).unwrap();
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
        let t = std::fs::read_to_string(node.out(POD).join(format!("sds/{sds}.yaml"))).unwrap();
        assert!(t.contains("watched_directory"), "{sds}: {t}");
    }
    // The HTTP settings the filter's guarantees rest on are the front proxy's.
    let s = Standins::start().await.unwrap();
    let front = yaml(
        &s.params(&ProxyOptions::version("1.36"))
            .unwrap()
            .render()
            .unwrap(),
    );
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
    assert_eq!(
        hcm(&b)["route_config"]["virtual_hosts"][0]["routes"],
        hcm(&front)["route_config"]["virtual_hosts"][0]["routes"],
        "the routes and their idle timeouts"
    );
    let front_wasm = hcm(&front)["http_filters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "envoy.filters.http.wasm")
        .unwrap()["typed_config"]["config"]
        .clone();
    let strip = |mut w: Value| {
        w["configuration"] = Value::Null;
        w["vm_config"]["code"] = Value::Null;
        w
    };
    assert_eq!(
        strip(wasm["config"].clone()),
        strip(front_wasm),
        "the wasm filter settings differ"
    );
    let rbac = &hcm(&b)["http_filters"][0];
    assert_eq!(rbac["name"], "envoy.filters.http.rbac");
    assert_eq!(rbac["typed_config"]["rules"]["action"], "DENY");

    // An IPv6 node: both listeners on the node's IPv6 address; the bootstrap validates.
    let (ok, err) = node.init(POD, &[("LISTEN_ADDRESS", "::1")]);
    assert!(ok, "init on IPv6: {err}");
    validate_with_ecds(&node, POD);
    let b6 = read_yaml(&node.out(POD).join("envoy.yaml"));
    for l in b6["static_resources"]["listeners"].as_array().unwrap() {
        assert_eq!(
            l["address"]["socket_address"]["address"], "::1",
            "{}",
            l["name"]
        );
    }

    // An API server outage at boot: the last known version (kept above) opens the port.
    let dead = format!("https://127.0.0.1:{}", free_port());
    let outage = [("APISERVER_URL", dead.as_str()), ("VERSION_ATTEMPTS", "2")];
    let (ok, err) = node.init(POD, &outage);
    assert!(ok, "init during an outage: {err}");
    assert!(
        err.contains("using the last known kubelet version 1.34"),
        "{err}"
    );
    // Without one, init fails, naming what to do.
    std::fs::remove_file(node.path("node-state/kubelet-version")).unwrap();
    let (ok, err) = node.init(POD, &outage);
    assert!(!ok, "init without a version: {err}");
    assert!(
        err.contains("no last known version") && err.contains("--kubelet-version"),
        "{err}"
    );

    // The Shadow -> Enforce switch (the enforce overlay's ConfigMap) renders and validates.
    node.set_filter("enforcement: Enforce\n");
    let (ok, err) = node.init(POD, &[]);
    assert!(ok, "init Enforce: {err}");
    assert!(err.contains("Enforce"), "{err}");
    validate_with_ecds(&node, POD);
    assert_eq!(ecds_filter(&node, POD).1["enforcement"], "Enforce");
}

/// `init` refuses, with a message naming the problem, what would otherwise start a broken or open
/// proxy, and writes no bootstrap: a missing or wrong certificate file, an unknown Node, a cipher
/// suite Envoy lacks, a filter setting the engine refuses, a node value in the ConfigMap, a bad
/// credential mode (exit code 2, clap's), a missing ServiceAccount token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_init_refuses_broken_inputs() {
    let node = Node::start().await;
    let not_pem = node.path("not-a-cert.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let missing = node.path("missing.pem").display().to_string();
    let bad_cfg = node.path("bad-config.yaml");
    std::fs::write(
        &bad_cfg,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ntlsCipherSuites:\n- TLS_RSA_WITH_RC4_128_SHA\n",
    )
    .unwrap();
    let not_pem = not_pem.display().to_string();
    let bad_cfg = bad_cfg.display().to_string();
    type Case<'a> = (Vec<(&'a str, &'a str)>, Option<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("SERVING_CERT", &missing)],
            None,
            "serving certificate",
        ),
        (
            vec![("NODE_CLIENT_CERT", &not_pem)],
            None,
            "holds no PEM certificate",
        ),
        (vec![("NODE_NAME", "worker-9")], None, "worker-9"),
        (
            vec![("KUBELET_CONFIG", &bad_cfg)],
            None,
            "TLS_RSA_WITH_RC4_128_SHA",
        ),
        (vec![], Some("enforcement: enforce\n"), "enforcement"),
        (vec![], Some("nodeName: worker-2\n"), "nodeName"),
        (vec![("APISERVER_AUTH", "iam")], None, "--apiserver-auth"),
        (
            vec![("APISERVER_AUTH", "serviceaccount-token")],
            None,
            "ServiceAccount token",
        ),
    ];
    let good = std::fs::read_to_string(k8s_dir().join("filter.yaml")).unwrap();
    for (overrides, filter, expected) in cases {
        let _ = std::fs::remove_dir_all(node.out(POD));
        node.set_filter(filter.unwrap_or(&good));
        let (ok, err) = node.init(POD, &overrides);
        assert!(!ok, "{overrides:?} {filter:?}: init succeeded");
        assert!(err.contains(expected), "{overrides:?} {filter:?}: {err}");
        assert!(
            !node.out(POD).join("envoy.yaml").exists(),
            "{overrides:?}: a bootstrap was written"
        );
    }
}

/// Requests sent by a background loop, one new connection each: counts and the failures.
struct Loop {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>, BTreeSet<u16>)>,
}

impl Loop {
    /// `expected`: the statuses that count as answered (e.g. 200 in Shadow, 401 in Enforce).
    fn start(ca: &Path, url: String, expected: &'static [u16]) -> Loop {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client = Client::new(ca, None).unwrap();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let (mut n, mut failures, mut seen) = (0, Vec::new(), BTreeSet::new());
            while !s.load(Ordering::SeqCst) {
                n += 1;
                match client.get(&url, &[]).await {
                    Ok(r) if expected.contains(&r.status) => {
                        seen.insert(r.status);
                    }
                    Ok(r) => failures.push(format!(
                        "#{n}: {} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    )),
                    Err(e) => failures.push(format!("#{n}: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (n, failures, seen)
        });
        Loop { stop, task }
    }

    async fn finish(self) -> (usize, Vec<String>, BTreeSet<u16>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

/// Wait until `f` holds, within `secs`.
async fn until<F: Fn() -> bool>(secs: u64, what: &str, f: F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// "Node in a box": init, Envoy and the agent as written, against the stand-ins.
/// - It starts; the metrics listener serves /ready, /live and /stats/prometheus, nothing of the
///   admin API; Shadow forwards with the proxy's local identity (the kubelet accepts it); the
///   node's own client certificate (403) and the proxy's local one (handshake) are refused
///   downstream.
/// - Three rotations without a restart: the serving certificate (symlink swap), the node's client
///   certificate (the API server sees the new one), the proxy's certificate renewed by the agent's
///   PKI (`init` with a renewal window longer than the validity).
/// - Live filter configuration (ECDS): the ConfigMap flipped Shadow -> Enforce -> Shadow under a
///   continuous request loop, no request failing; a configuration the engine refuses is not
///   written (the agent logs the field) and the old one keeps serving; one that reaches Envoy
///   anyway is rejected by Envoy (its ECDS stats count it) and the old one keeps serving.
/// - Readiness follows the kubelet: /ready 503 with the kubelet down, /live 200.
/// - The connection cap (8 here): connections beyond it are closed; silent connections that hold
///   the cap are closed after the handshake timeout (2 s here), and a legitimate client gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_node_in_a_box() {
    use kubelet_authz_standins::kubelet::{Kubelet, KubeletConfig};
    use kubelet_authz_standins::pki::{CertPaths, ClientSubject, Pki};
    let started = Instant::now();
    let node = Node::start().await;
    // The agent's PKI first (init makes it), so the stand-in kubelet can trust its CA: run init
    // once without waiting for a kubelet.
    let spare = free_port().to_string();
    let (ok, err) = node.init(POD, &[("KUBELET_VERSION", "1.34"), ("LISTEN_PORT", &spare)]);
    assert!(ok, "init: {err}");
    let mut kubelet = Kubelet::start(
        KubeletConfig::new(node.path("pki")).client_ca(&node.path("node-state/pki/ca.crt"), true),
    )
    .await
    .unwrap();
    let kubelet_addr = kubelet.addr();
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
    let kubelet_port = kubelet_addr.port().to_string();
    let overrides = [
        ("LISTEN_PORT", listen_s.as_str()),
        ("METRICS_PORT", metrics_s.as_str()),
        ("KUBELET_PORT", kubelet_port.as_str()),
        ("KUBELET_SERVER_NAME", "localhost"),
        ("MAX_CONNECTIONS", "8"),
        ("HANDSHAKE_TIMEOUT", "2s"),
        // Seconds here, an hour in the ConfigMap: how long a pooled upstream connection may keep
        // presenting a client certificate that has been rotated.
        ("UPSTREAM_MAX_CONNECTION_AGE", "2s"),
    ];
    let (ok, err) = node.init(POD, &overrides);
    assert!(ok, "init: {err}");
    assert!(err.contains("APISERVER_AUTH=auto: node-cert"), "{err}");
    let mut envoy = node.start_envoy(POD, metrics).await;
    let logs = || node.envoy_log(POD);
    let mut agent = node.start_agent(POD, &[("POLL_SECONDS", "1")]);

    // The metrics listener.
    assert_eq!(plain(metrics, "GET", "/ready").await, 200, "{}", logs());
    assert_eq!(plain(metrics, "GET", "/live").await, 200);
    assert_eq!(plain(metrics, "GET", "/stats/prometheus").await, 200);
    for (method, path) in [
        ("POST", "/quitquitquit"),
        ("GET", "/config_dump"),
        ("GET", "/certs"),
        ("POST", "/ready"),
        ("GET", "/healthz"),
        ("GET", "/stats/prometheus/../config_dump"),
        ("POST", "/metrics/agent"),
        ("GET", "/metrics"),
        ("GET", "/metrics/agent/x"),
    ] {
        assert_eq!(plain(metrics, method, path).await, 404, "{method} {path}");
    }
    assert!(node.admin(POD).exists(), "no admin socket");

    // Shadow: an anonymous request is decided, audited and forwarded; the stand-in kubelet, which
    // requires a certificate of the per-node CA, answers.
    let url = format!("https://localhost:{listen}/pods");
    let anonymous = Client::new(&node.ca, None).unwrap();
    let r = anonymous.get(&url, &[]).await.unwrap();
    assert_eq!(r.status, 200, "{:?}\n{}", r, logs());
    let node_cert = CertPaths {
        cert: node.path("pki/node.crt"),
        key: node.path("pki/node.key"),
    };
    let as_node = Client::new(&node.ca, Some(&node_cert)).unwrap();
    assert_eq!(
        as_node.get(&url, &[]).await.unwrap().status,
        403,
        "the node's credential was accepted downstream"
    );
    let local = node.path("node-state/pki/proxy-current.pem");
    let as_proxy = Client::new(
        &node.ca,
        Some(&CertPaths {
            cert: local.clone(),
            key: local.clone(),
        }),
    )
    .unwrap();
    assert!(
        as_proxy.get(&url, &[]).await.is_err(),
        "the proxy's local identity was accepted downstream"
    );

    // Rotation 1: the serving certificate.
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
    until(15, "the renewed serving certificate", || {
        let now = served_serial(listen);
        now != before && now.starts_with("serial=")
    })
    .await;

    // Rotation 2: the node's client certificate.
    let node_user = format!("system:node:{NODE_NAME}");
    let first_client = format!("X509SHA256={}", cert_sha256(&client_first));
    await_review_credential(&node, &url, &first_client, 10, "node-cert-1").await;
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
    await_review_credential(&node, &url, &second_client, 15, "node-cert-2").await;
    let last = node
        .api
        .records()
        .into_iter()
        .rev()
        .find(|r| r.kind == "TokenReview")
        .unwrap();
    assert_eq!(last.caller, node_user, "the renewed certificate's user");

    // Rotation 3: the proxy's local certificate, renewed by the agent's PKI.
    let kubelet_saw = |kubelet: &Kubelet| -> Option<String> {
        kubelet
            .records()
            .last()
            .and_then(|r| r["clientCert"]["sha256"].as_str().map(str::to_string))
    };
    let local_first = cert_sha256(&local);
    assert_eq!(anonymous.get(&url, &[]).await.unwrap().status, 200);
    assert_eq!(kubelet_saw(&kubelet).as_deref(), Some(local_first.as_str()));
    let link_before = std::fs::read_link(&local).unwrap();
    // Certificates are named by the second: make sure the new one gets a new name.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut renew = overrides.to_vec();
    renew.push(("RENEW_DAYS", "31"));
    let (ok, err) = node.init(POD, &renew);
    assert!(ok, "renewal: {err}");
    assert!(err.contains("issued"), "{err}");
    assert_ne!(std::fs::read_link(&local).unwrap(), link_before);
    let local_second = cert_sha256(&local);
    assert_ne!(local_first, local_second);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = anonymous.get(&url, &[]).await.unwrap();
        assert_eq!(r.status, 200, "{r:?}\n{}", logs());
        if kubelet_saw(&kubelet).as_deref() == Some(local_second.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the kubelet still sees the old proxy certificate\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Live configuration: Shadow -> Enforce -> Shadow under a request loop; every request is
    // answered (200 forwarded in Shadow, 401 for an anonymous caller in Enforce).
    let requests = Loop::start(&node.ca, url.clone(), &[200, 401]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = || async { anonymous.get(&url, &[]).await.unwrap().status };
    node.set_filter(
        &std::fs::read_to_string(k8s_dir().join("filter.yaml"))
            .unwrap()
            .replace("enforcement: Shadow", "enforcement: Enforce"),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while status().await != 401 {
        assert!(
            Instant::now() < deadline,
            "still Shadow\n{}",
            node.agent_log(POD)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        node.agent_log(POD).contains("(Enforce)"),
        "{}",
        node.agent_log(POD)
    );
    node.set_filter("enforcement: Shadow\n");
    let deadline = Instant::now() + Duration::from_secs(15);
    while status().await != 200 {
        assert!(
            Instant::now() < deadline,
            "still Enforce\n{}",
            node.agent_log(POD)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (n, failures, seen) = requests.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {n} requests failed during the flips: {failures:?}",
        failures.len()
    );
    assert_eq!(seen, BTreeSet::from([200, 401]), "{n} requests");

    // A configuration the engine refuses is not written; the old one keeps serving.
    let ecds = node.out(POD).join("ecds/filter.yaml");
    let before = std::fs::read_to_string(&ecds).unwrap();
    node.set_filter("enforcement: Sometimes\n");
    let agent_log = || node.agent_log(POD);
    until(10, "the refusal in the agent's log", || {
        agent_log().contains("REFUSED")
    })
    .await;
    let line = agent_log()
        .lines()
        .find(|l| l.contains("REFUSED"))
        .unwrap()
        .to_string();
    assert!(line.contains("enforcement"), "{line}");
    assert!(line.contains(FILTER_CONFIG_REFUSALS_TOTAL), "{line}");
    assert_eq!(std::fs::read_to_string(&ecds).unwrap(), before);
    assert_eq!(status().await, 200, "Shadow keeps serving");
    // ... and counted, through Envoy's metrics port.
    let m = agent_metrics(metrics).await;
    assert_eq!(sample(&m, FILTER_CONFIG_VALID).as_deref(), Some("0"), "{m}");
    assert_eq!(
        sample(&m, FILTER_CONFIG_REFUSALS_TOTAL).as_deref(),
        Some("1"),
        "{m}"
    );
    let writes = sample(&m, FILTER_CONFIG_WRITES_TOTAL).unwrap();
    // One that reaches Envoy anyway (written past the agent) is rejected by Envoy, visibly.
    let stats = node.stats(POD).await;
    let prefix = "extension_config_discovery.http_filter.envoy.filters.http.wasm";
    let rejected = stat(&stats, &format!("{prefix}.update_rejected"))
        + stat(&stats, &format!("{prefix}.config_fail"));
    let mut bad: Value = yaml(&before);
    let cfg_text = bad["resources"][0]["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let mut cfg: Value = serde_json::from_str(&cfg_text).unwrap();
    cfg["enforcement"] = Value::String("Enforce".into());
    cfg["authorization"]["mode"] = Value::String("RBAC".into());
    bad["resources"][0]["typed_config"]["config"]["configuration"]["value"] =
        Value::String(cfg.to_string());
    kubelet_authz_node::bootstrap::write_atomic(&ecds, &bad).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let stats = node.stats(POD).await;
        let now = stat(&stats, &format!("{prefix}.update_rejected"))
            + stat(&stats, &format!("{prefix}.config_fail"));
        if now > rejected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Envoy did not reject the configuration\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let prom = kubelet_authz_node::drain::admin(&node.admin(POD), "GET", "/stats/prometheus")
        .await
        .unwrap()
        .1;
    assert!(
        prom.contains("envoy_extension_config_discovery_http_filter"),
        "not exported"
    );
    for _ in 0..5 {
        assert_eq!(
            status().await,
            200,
            "the old (Shadow) configuration keeps serving\n{}",
            logs()
        );
    }
    // A good ConfigMap again: accepted, written (over the file Envoy rejected), valid again.
    node.set_filter("enforcement: Shadow\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = agent_metrics(metrics).await;
        if sample(&m, FILTER_CONFIG_VALID).as_deref() == Some("1") {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "still refused\n{m}\n{}",
            agent_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        sample(&m, FILTER_CONFIG_REFUSALS_TOTAL).as_deref(),
        Some("1"),
        "{m}"
    );
    assert_ne!(
        sample(&m, FILTER_CONFIG_WRITES_TOTAL).unwrap(),
        writes,
        "{m}"
    );
    assert_eq!(status().await, 200, "Shadow");

    // Readiness follows the kubelet; liveness does not.
    kubelet.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while plain(metrics, "GET", "/ready").await != 503 {
        assert!(Instant::now() < deadline, "ready without a kubelet");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(plain(metrics, "GET", "/live").await, 200);
    let mut again =
        KubeletConfig::new(node.path("pki")).client_ca(&node.path("node-state/pki/ca.crt"), true);
    again.listen = kubelet_addr;
    kubelet = Kubelet::start(again).await.unwrap();
    assert!(kubelet.records().is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    while plain(metrics, "GET", "/ready").await != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready with the kubelet back\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

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
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(300), s.read(&mut b)).await {
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
    // Silent connections fill the cap; the handshake timeout (2 s) frees it: a legitimate client
    // is served within it (plus the cap monitor's refresh).
    let filled = Instant::now();
    let deadline = filled + Duration::from_secs(6);
    let quick = Client::new(&node.ca, None)
        .unwrap()
        .with_timeout(Duration::from_secs(1));
    loop {
        if let Ok(r) = quick.get(&url, &[]).await {
            assert_eq!(r.status, 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "locked out for {:?} by silent connections",
            filled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "served {:?} after the cap filled with silent connections",
        filled.elapsed()
    );
    drop(held);

    assert!(envoy.try_wait().unwrap().is_none(), "envoy restarted");
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent exited:\n{}",
        node.agent_log(POD)
    );
    envoy.kill().await.unwrap();
    agent.kill().await.unwrap();
    eprintln!("node in a box: {:?}", started.elapsed());
}

/// Overload: with a heap bound below Envoy's own heap, the overload manager stops the kubelet
/// listener's requests (503), while the metrics listener, exempt from it, keeps answering
/// /live, /ready and /stats/prometheus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_health_under_overload() {
    use kubelet_authz_standins::kubelet::{Kubelet, KubeletConfig};
    let node = Node::start().await;
    let spare = free_port().to_string();
    let (ok, err) = node.init(POD, &[("KUBELET_VERSION", "1.34"), ("LISTEN_PORT", &spare)]);
    assert!(ok, "init: {err}");
    let kubelet = Kubelet::start(
        KubeletConfig::new(node.path("pki")).client_ca(&node.path("node-state/pki/ca.crt"), true),
    )
    .await
    .unwrap();
    let (listen, metrics) = (free_port(), free_port());
    let (listen_s, metrics_s) = (listen.to_string(), metrics.to_string());
    let kubelet_port = kubelet.addr().port().to_string();
    let (ok, err) = node.init(
        POD,
        &[
            ("LISTEN_PORT", &listen_s),
            ("METRICS_PORT", &metrics_s),
            ("KUBELET_PORT", &kubelet_port),
            ("KUBELET_SERVER_NAME", "localhost"),
            ("MAX_HEAP_BYTES", "10000000"),
        ],
    );
    assert!(ok, "init: {err}");
    let mut envoy = node.start_envoy(POD, metrics).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while stat(
        &node.stats(POD).await,
        "overload.envoy.overload_actions.stop_accepting_requests.active",
    ) != 1
    {
        assert!(
            Instant::now() < deadline,
            "not overloaded\n{}",
            node.envoy_log(POD)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = Client::new(&node.ca, None)
        .unwrap()
        .get(&format!("https://localhost:{listen}/pods"), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    for path in ["/live", "/ready", "/stats/prometheus"] {
        assert_eq!(
            plain(metrics, "GET", path).await,
            200,
            "{path} under overload"
        );
    }
    envoy.kill().await.unwrap();
}

/// A rolling replacement as the DaemonSet does it (maxSurge 1): the new pod's init and Envoy start
/// beside the old pod's (the same `NODE_IP:PORT`, SO_REUSEPORT; init does not wait for the old
/// Envoy), the old pod's preStop drain runs, then the old Envoy is killed. A continuous request
/// loop loses no request, and a WebSocket exec stream and a followed container log (`logs -f`)
/// held on the old Envoy keep working after its listener closed, until the drain deadline; the
/// log ends when the old Envoy is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_rolling_replacement_loses_nothing() {
    use kubelet_authz_standins::kubelet::{Kubelet, KubeletConfig};
    let node = Node::start().await;
    let spare = free_port().to_string();
    let (ok, err) = node.init(POD, &[("KUBELET_VERSION", "1.34"), ("LISTEN_PORT", &spare)]);
    assert!(ok, "init: {err}");
    let kubelet = Kubelet::start(
        KubeletConfig::new(node.path("pki")).client_ca(&node.path("node-state/pki/ca.crt"), true),
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
    let (ok, err) = node.init(POD, &overrides);
    assert!(ok, "init: {err}");
    let mut old = node.start_envoy(POD, metrics).await;
    let url = format!("https://localhost:{listen}/pods");
    let client = Client::new(&node.ca, None).unwrap();
    // A long stream on the old Envoy.
    let (mut ws, resp) = client
        .websocket(
            &format!("https://localhost:{listen}/exec/default/web/app?command=sh&stdin=true"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 101);
    echo(&mut ws, 0).await.unwrap();
    // And a `kubectl logs -f` (the stand-in kubelet writes a line every 250 ms).
    let mut logs = FollowedLog::start(&node.ca, listen).await;

    let requests = Loop::start(&node.ca, url.clone(), &[200]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The surge pod: its init does not wait for the old Envoy on the port, its Envoy binds beside.
    let t = Instant::now();
    let (ok, err) = node.init(POD2, &overrides);
    assert!(ok, "surge init: {err}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the surge init waited {:?}: {err}",
        t.elapsed()
    );
    let mut new = node.start_envoy(POD2, metrics).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The old pod is deleted: its agent's preStop drains (deadline shortened to 14 s here).
    let drained = Instant::now();
    let drain = node.drain(POD, "14s");
    // The drain time (--drain-time-s 10) passes: the old listener closes; the stream lives on.
    tokio::time::sleep(Duration::from_secs(12)).await;
    // New connections go to the new Envoy only: the old one serves no new request.
    let served = stat(&node.stats(POD).await, "http.kubelet.downstream_rq_total");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        stat(&node.stats(POD).await, "http.kubelet.downstream_rq_total"),
        served,
        "the drained Envoy still takes requests"
    );
    echo(&mut ws, 1)
        .await
        .expect("the exec stream on the draining Envoy");
    let out = tokio::task::spawn_blocking(move || drain.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let drain_log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "drain: {drain_log}");
    assert!(
        drained.elapsed() >= Duration::from_secs(13),
        "the drain returned early ({:?}) with a stream open: {drain_log}",
        drained.elapsed()
    );
    assert!(drain_log.contains("deadline"), "{drain_log}");
    echo(&mut ws, 2)
        .await
        .expect("the exec stream until the drain deadline");
    let before = logs
        .latest()
        .await
        .expect("the followed log on the draining Envoy");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = logs
        .latest()
        .await
        .expect("the followed log until the drain deadline");
    assert!(after > before, "the followed log stalled at line {before}");
    // The kubelet sends SIGTERM after the preStop hooks: the old Envoy goes.
    old.kill().await.unwrap();
    assert!(
        logs.ends_within(Duration::from_secs(5)).await,
        "the followed log outlived the old Envoy"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (n, failures, _) = requests.finish().await;
    assert!(n > 50, "only {n} requests");
    assert!(
        failures.is_empty(),
        "{} of {n} requests failed during the replacement: {failures:?}",
        failures.len()
    );
    assert_eq!(client.get(&url, &[]).await.unwrap().status, 200);
    assert_eq!(plain(metrics, "GET", "/ready").await, 200);
    assert!(new.try_wait().unwrap().is_none());
    new.kill().await.unwrap();
}

/// Send `ping N` on a WebSocket and expect it echoed within 3 s.
async fn echo<S>(ws: &mut S, n: usize) -> Result<(), String>
where
    S: futures_util::Sink<tokio_tungstenite::tungstenite::Message>
        + futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
    <S as futures_util::Sink<tokio_tungstenite::tungstenite::Message>>::Error: std::fmt::Debug,
{
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::Text(format!("ping {n}").into()))
        .await
        .map_err(|e| format!("{e:?}"))?;
    match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) if t.as_str() == format!("ping {n}") => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

/// The serial of the certificate served on `port` (any certificate: no verification).
/// `curl -N` following a container log through the proxy, as `kubectl logs -f` does.
struct FollowedLog {
    _child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl FollowedLog {
    async fn start(ca: &Path, port: u16) -> FollowedLog {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = tokio::process::Command::new("curl")
            .arg("-sSN")
            .arg("--cacert")
            .arg(ca)
            .arg(format!(
                "https://localhost:{port}/containerLogs/default/web/app?follow=true"
            ))
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("curl");
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut log = FollowedLog {
            _child: child,
            lines,
        };
        assert_eq!(log.latest().await, Some(0), "the followed log's first line");
        log
    }

    /// The number of the newest line that has arrived (waiting up to 2 s for the first one);
    /// `None` once the stream has ended.
    async fn latest(&mut self) -> Option<u64> {
        let mut last = None;
        let mut wait = Duration::from_secs(2);
        loop {
            match tokio::time::timeout(wait, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    last = line
                        .strip_prefix("log line ")
                        .and_then(|n| n.parse::<u64>().ok());
                    assert!(last.is_some(), "not a log line: {line:?}");
                    wait = Duration::from_millis(100);
                }
                Ok(Ok(None)) | Ok(Err(_)) => return None,
                Err(_) => return last,
            }
        }
    }

    /// Whether the stream ends (EOF) within `d`.
    async fn ends_within(&mut self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(200), self.lines.next_line()).await {
                Ok(Ok(None)) | Ok(Err(_)) => return true,
                _ => {}
            }
        }
        false
    }
}

fn served_serial(port: u16) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -serial"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The kubelet's certificate rotation: a fresh symlink renamed over `link`.
fn swap_symlink(link: &Path, target: &Path) {
    let tmp = PathBuf::from(format!("{}.updated", link.display()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
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

/// Send requests with fresh bearer tokens until a review reaches the stand-in API server with
/// `credential`, within `secs`.
async fn await_review_credential(node: &Node, url: &str, credential: &str, secs: u64, what: &str) {
    let client = Client::new(&node.ca, None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    for n in 1.. {
        let mark = node.api.records().len();
        let auth = format!("Bearer probe-{what}-{n}");
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
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no review with {credential} within {secs} s; the last one: {seen:?} (the proxy answered {answer})\n{}",
            node.envoy_log(POD)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Nodes without a kubelet client certificate (EKS): `init` (auto) takes the projected
/// ServiceAccount token, reads its Node with it (the shipped serviceaccount-token RBAC), and its
/// bootstrap injects the token on the reviews with an upstream filter of the kube-apiserver
/// cluster; after the kubelet's refresh of the projected volume the reviews carry the new token
/// within seconds, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_serviceaccount_token_mode() {
    use kubelet_authz_standins::kubelet::{Kubelet, KubeletConfig};
    const SA: &str = "system:serviceaccount:kubelet-authz:kubelet-authz";
    let (one, two) = ("sa-token-one.jwt", "sa-token-two.jwt");
    let groups = "\"system:serviceaccounts,system:serviceaccounts:kubelet-authz\"";
    let tokens = format!(
        "{one},{SA},uid-sa,{groups}\n{two},{SA},uid-sa,{groups}\nalice-token,alice,uid-alice\n"
    );
    let rbac_file = [
        "rbac-serviceaccount-token.yaml",
        "serviceaccount-token/rbac-serviceaccount-token.yaml",
    ]
    .iter()
    .map(|f| k8s_dir().join(f))
    .find(|p| p.exists())
    .unwrap();
    let rbac = std::fs::read_to_string(rbac_file).unwrap();
    let node = Node::start_with(&rbac, &tokens).await;
    std::fs::remove_file(node.path("kubelet-client-current.pem")).unwrap();
    let token_dir = node.path("sa-token");
    write_volume(&token_dir, "token", one);
    let spare = free_port().to_string();
    let (ok, err) = node.init(POD, &[("KUBELET_VERSION", "1.34"), ("LISTEN_PORT", &spare)]);
    assert!(ok, "init: {err}");
    let kubelet = Kubelet::start(
        KubeletConfig::new(node.path("pki")).client_ca(&node.path("node-state/pki/ca.crt"), true),
    )
    .await
    .unwrap();
    let (listen, metrics) = (free_port(), free_port());
    let (listen_s, metrics_s) = (listen.to_string(), metrics.to_string());
    let kubelet_port = kubelet.addr().port().to_string();
    let _ = std::fs::remove_file(node.path("node-state/kubelet-version"));
    let (ok, err) = node.init(
        POD,
        &[
            ("LISTEN_PORT", &listen_s),
            ("METRICS_PORT", &metrics_s),
            ("KUBELET_PORT", &kubelet_port),
            ("KUBELET_SERVER_NAME", "localhost"),
        ],
    );
    assert!(ok, "init: {err}");
    assert!(
        err.contains("APISERVER_AUTH=auto: serviceaccount-token"),
        "{err}"
    );
    assert!(
        err.contains("kubelet version 1.34"),
        "read with the token: {err}"
    );
    validate_with_ecds(&node, POD);
    let b = read_yaml(&node.out(POD).join("envoy.yaml"));
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
    assert!(!node.out(POD).join("sds/node-client.yaml").exists());
    let sds = std::fs::read_to_string(node.out(POD).join("sds/apiserver-token.yaml")).unwrap();
    assert!(
        sds.contains(&node.path("sa-token/token").display().to_string()),
        "{sds}"
    );

    let mut envoy = node.start_envoy(POD, metrics).await;
    let url = format!("https://localhost:{listen}/pods");
    let client = Client::new(&node.ca, None).unwrap();
    let cred = |t: &str| {
        format!(
            "TokenSHA256={}",
            kubelet_authz::identity::x509::sha256_hex(t.as_bytes())
        )
    };
    let mark = node.api.records().len();
    let r = client
        .get(&url, &[("authorization", "Bearer alice-token")])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}\n{}", node.envoy_log(POD));
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
    write_volume(&token_dir, "token", two);
    await_review_credential(&node, &url, &cred(two), 15, "sa-token-2").await;
    let mark = node.api.records().len();
    assert_eq!(
        client
            .get(&url, &[("authorization", "Bearer probe-after")])
            .await
            .unwrap()
            .status,
        200
    );
    let after = node.api.records()[mark..].to_vec();
    assert!(!after.is_empty());
    for r in &after {
        assert_eq!(r.caller_credential, cred(two), "{r:?}");
    }
    assert!(envoy.try_wait().unwrap().is_none(), "envoy restarted");
    envoy.kill().await.unwrap();
}

/// `init` waits only for what conflicts: while a wildcard listener (`0.0.0.0`, the kubelet not yet
/// moved) holds the kubelet port it waits and says why; once it is gone it finishes. (A listener on
/// the node IP, the previous pod's Envoy, does not hold it: the rolling replacement test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_init_waits_for_a_wildcard_listener_only() {
    let node = Node::start().await;
    let wildcard = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = wildcard.local_addr().unwrap().port().to_string();
    let argv = Node::argv("initContainers", "init");
    let log = node.path("init-wait.log");
    let mut init = node
        .command(
            POD,
            "initContainers",
            "init",
            &argv,
            &[("LISTEN_PORT", &port), ("KUBELET_VERSION", "1.34")],
        )
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        init.try_wait().unwrap().is_none(),
        "init did not wait: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("waiting: 0.0.0.0 listens on port {port}")),
        "{text}"
    );
    // Rendered already: only the start of Envoy waits.
    assert!(node.out(POD).join("envoy.yaml").exists());
    drop(wildcard);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = init.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "init still waiting: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
}

/// The Istio form's gateway pod keeps its per-node CA with the same agent: its `node-ca` init
/// container's command (`kubelet-authz-node pki --wait-for-port 10250`), run as written with the
/// kubelet on loopback, makes the CA and the proxy's certificate once and keeps them on the next
/// start; the renewal container runs the same
/// subcommand with `--renew-every`.
#[test]
fn istio_gateway_pki_containers_run_the_agent() {
    let text =
        std::fs::read_to_string(workspace().join("envoy/istio/gateway-deployment.yaml")).unwrap();
    let deploy = yaml_docs(&text)
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    let pod = &deploy["spec"]["template"]["spec"];
    let init = container(pod, "initContainers", "node-ca");
    let renew = container(pod, "containers", "node-ca-renew");
    assert_eq!(
        init["image"],
        container(&daemonset_pod(), "initContainers", "init")["image"]
    );
    assert_eq!(
        strings(&renew["command"])[..2],
        ["/kubelet-authz-node", "pki"]
    );
    assert!(strings(&renew["command"]).contains(&"--renew-every".to_string()));
    // The start order: after the CA, it waits until the kubelet port has no wildcard listener.
    let argv = strings(&init["command"]);
    assert!(
        argv.windows(2).any(|w| w == ["--wait-for-port", "10250"]),
        "{argv:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    // The node's sockets as the host-network pod reads them: the kubelet on 127.0.0.1:10250.
    std::fs::create_dir(dir.path().join("net")).unwrap();
    std::fs::write(
        dir.path().join("net/tcp"),
        "  sl  local_address rem_address   st\n   0: 0100007F:280A 00000000:0000 0A 0 0 0 0 0 1\n",
    )
    .unwrap();
    let run = || {
        assert_eq!(argv[0], "/kubelet-authz-node");
        let mut cmd = std::process::Command::new(agent_bin());
        cmd.args(&argv[1..])
            .env_clear()
            .env("PROC_NET", dir.path().join("net"));
        for e in init["env"].as_array().unwrap() {
            let (k, v) = (e["name"].as_str().unwrap(), e["value"].as_str().unwrap());
            assert_eq!(k, "PKI_DIR", "unmapped env {k}={v}");
            cmd.env(k, dir.path().join("pki"));
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run();
    let ca = std::fs::read(dir.path().join("pki/ca.crt")).unwrap();
    let current = std::fs::read_link(dir.path().join("pki/proxy-current.pem")).unwrap();
    run();
    assert_eq!(std::fs::read(dir.path().join("pki/ca.crt")).unwrap(), ca);
    assert_eq!(
        std::fs::read_link(dir.path().join("pki/proxy-current.pem")).unwrap(),
        current
    );
}
