//! One kubeadm node's whole life in a box (issue 20, Acceptance), with the shipped objects' own
//! commands read from `kubectl kustomize envoy/overlays/configure` (the DaemonSet with the
//! `configure` component, and the `kubelet-authz-unconfigure` DaemonSet):
//!
//! label (the `configure` init container) -> the pod (`init`, Envoy, the agent's `run`) in Shadow
//! -> Enforce (the filter ConfigMap volume rewritten) -> "reboot" (Envoy, the agent and the
//! kubelet killed; the kubelet started by the stand-in systemd; the pod again) -> "remove" (the
//! pod leaves, the unconfigure DaemonSet's command) -> the node's files back byte for byte.
//!
//! The box: a host root in a temporary directory holding a kubeadm node's files (the kubelet's
//! configuration, kubeconfig, certificates, `kubelet.service` with `10-kubeadm.conf`); the
//! stand-in kubelet (`kubelet-authz-kubelet`) run from those unit files by the stand-in
//! `systemctl` (`kubelet-authz-systemctl`, on PATH as `systemctl`), which `configure` calls as it
//! calls the host's; the stand-in API server in process; the real Envoy (`ENVOY_BIN`) with the
//! release filter (`KUBELET_AUTHZ_FILTER_WASM`) on the node's address (a non-loopback address
//! of this machine) and the kubelet's port, as on a node. Host paths of the manifests are mapped
//! through the containers' own volume mounts: a `hostPath` volume onto the box, a pod volume
//! onto the pod's directory. `--host-root /host` becomes `/` (no chroot) with the box's paths of
//! the kubeadm files given as flags.
//!
//! A kubelet that does not come back making `configure` roll back is proven, with the same shipped
//! command line, by `node/tests/configure.rs`: `a_failed_restart_is_rolled_back` (the restart
//! fails) and `a_kubelet_that_does_not_come_back_is_rolled_back` (the kubelet starts but never
//! answers): exit 1, the files as they were, the kubelet answering on its old address.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use kubelet_authz_e2e::hostfs::{snapshot, write_volume};
use kubelet_authz_e2e::render::workspace;
use kubelet_authz_e2e::stack::NODE_NAME;
use kubelet_authz_node::listeners;
use kubelet_authz_node::probe::{healthz, ClientCert, Probe};
use kubelet_authz_standins::client::Client;
use kubelet_authz_standins::pki::{CertPaths, ClientSubject, Pki};
use kubelet_authz_standins::systemctl::{Systemd, HOST_ROOT_ENV};
use serde::Deserialize as _;
use serde_json::Value;

/// The directory of the binaries (`kubelet-authz-node`, the stand-in kubelet and systemctl), built
/// once per test process with the cargo that builds this test (a test cannot name another crate's
/// binary).
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = std::process::Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "kubelet-authz-node",
                "-p",
                "kubelet-authz-standins",
                "--bins",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo build of the agent and the stand-ins:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // target/debug/deps/node_lifecycle-HASH -> target/debug
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        for bin in [
            "kubelet-authz-node",
            "kubelet-authz-kubelet",
            "kubelet-authz-systemctl",
        ] {
            assert!(dir.join(bin).is_file(), "{bin} was not built");
        }
        dir
    })
}

/// The objects `kubectl apply -k envoy/overlays/configure` creates.
fn overlay() -> Vec<Value> {
    let out = std::process::Command::new("kubectl")
        .args(["kustomize"])
        .arg(workspace().join("envoy/overlays/configure"))
        .output()
        .expect("kubectl (its kustomize) on PATH");
    assert!(
        out.status.success(),
        "kubectl kustomize envoy/overlays/configure:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_json::to_value(serde_yaml_ng::Value::deserialize(d).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// The pod spec of the DaemonSet `name` in the overlay.
fn pod_spec(objects: &[Value], name: &str) -> Value {
    objects
        .iter()
        .find(|o| o["kind"] == "DaemonSet" && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no DaemonSet {name}"))["spec"]["template"]["spec"]
        .clone()
}

fn container(pod: &Value, list: &str, name: &str) -> Value {
    pod[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {list} `{name}`"))
        .clone()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// `command` + `args` of a container.
fn argv(c: &Value) -> Vec<String> {
    let mut argv = strings(&c["command"]);
    argv.extend(strings(&c["args"]));
    argv
}

/// The data of the ConfigMap named in a container's `envFrom`.
fn env_from(objects: &[Value], c: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for from in c["envFrom"].as_array().into_iter().flatten() {
        let name = from["configMapRef"]["name"].as_str().unwrap();
        let cm = objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no ConfigMap {name}"));
        for (k, v) in cm["data"].as_object().unwrap() {
            out.push((k.clone(), v.as_str().unwrap().to_string()));
        }
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A non-loopback address of this machine: the node's address (`status.hostIP`).
fn node_ip() -> IpAddr {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("192.0.2.1:9")
        .or_else(|_| s.connect("8.8.8.8:53"))
        .expect("a route to a non-loopback address (the node's IP)");
    let ip = s.local_addr().unwrap().ip();
    assert!(!ip.is_loopback(), "{ip}");
    ip
}

/// One kubeadm node in a box, its cluster (the stand-in API server) and the shipped objects.
struct NodeBox {
    root: tempfile::TempDir,
    /// PATH entries: `systemctl`.
    tools: tempfile::TempDir,
    /// The pods' own volumes (`<pod>/<volume>`), outside the host.
    pods: tempfile::TempDir,
    cluster: Pki,
    _cluster_dir: tempfile::TempDir,
    api: kubelet_authz_standins::apiserver::ApiServer,
    objects: Vec<Value>,
    port: u16,
    metrics: u16,
    ip: IpAddr,
}

impl NodeBox {
    async fn new() -> NodeBox {
        use kubelet_authz_standins::apiserver::{ApiServer, ApiServerConfig};
        let bins = bin_dir();
        let root = tempfile::tempdir().unwrap();
        let tools = tempfile::tempdir().unwrap();
        let pods = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            bins.join("kubelet-authz-systemctl"),
            tools.path().join("systemctl"),
        )
        .unwrap();
        let cluster_dir = tempfile::tempdir().unwrap();
        let cluster = Pki::open(cluster_dir.path()).unwrap();
        let ip = node_ip();
        // Who may do what: the node reads its Node; alice may use the kubelet API (nodes/proxy),
        // bob may not.
        cluster
            .client_cert(
                "node",
                &ClientSubject::new(&format!("system:node:{NODE_NAME}"), &["system:nodes"]),
            )
            .unwrap();
        cluster
            .client_cert("alice", &ClientSubject::new("alice", &["dev"]))
            .unwrap();
        cluster
            .client_cert("bob", &ClientSubject::new("bob", &["dev"]))
            .unwrap();
        let rbac = format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: node-read}}\n\
             rules: [{{apiGroups: [\"\"], resources: [nodes], verbs: [get]}}]\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: node-read}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: node-read}}\n\
             subjects: [{{kind: User, name: \"system:node:{NODE_NAME}\"}}]\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: kubelet-api}}\n\
             rules: [{{apiGroups: [\"\"], resources: [nodes/proxy], verbs: [get]}}]\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: alice}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubelet-api}}\n\
             subjects: [{{kind: User, name: alice}}]\n"
        );
        let nodes = format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {NODE_NAME}}}\n\
             status: {{nodeInfo: {{kubeletVersion: v1.31.4}}}}\n"
        );
        let api = ApiServer::start(
            ApiServerConfig::new(cluster_dir.path())
                .rbac_yaml(&rbac, "rbac")
                .nodes_yaml(&nodes, "nodes"),
        )
        .await
        .unwrap();
        let b = NodeBox {
            root,
            tools,
            pods,
            cluster,
            _cluster_dir: cluster_dir,
            objects: overlay(),
            port: free_port(),
            metrics: free_port(),
            ip,
            api,
        };
        b.kubeadm_files();
        b
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn ps(&self, rel: &str) -> String {
        self.p(rel).display().to_string()
    }

    fn write(&self, rel: &str, text: &str, mode: u32) {
        let path = self.p(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A kubeadm node's files: the kubelet on 0.0.0.0 trusting the cluster CA with webhook
    /// authentication, its kubeconfig, its client and serving certificates (key in the same
    /// PEM), the unit and kubeadm's drop-in.
    fn kubeadm_files(&self) {
        let cat = |c: &CertPaths| {
            std::fs::read_to_string(&c.cert).unwrap() + &std::fs::read_to_string(&c.key).unwrap()
        };
        self.write(
            "etc/kubernetes/pki/ca.crt",
            &std::fs::read_to_string(self.cluster.ca_cert()).unwrap(),
            0o644,
        );
        self.write(
            "var/lib/kubelet/config.yaml",
            &format!(
                "# written by kubeadm\napiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
                 port: {}\ntlsMinVersion: VersionTLS12\nauthentication:\n  x509:\n    clientCAFile: {}\n  \
                 webhook:\n    enabled: true\nauthorization:\n  mode: Webhook\n",
                self.port,
                self.ps("etc/kubernetes/pki/ca.crt"),
            ),
            0o600,
        );
        self.write(
            "etc/kubernetes/kubelet.conf",
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: default\n  cluster:\n    server: {}\n",
                self.api.url()
            ),
            0o600,
        );
        self.write(
            "var/lib/kubelet/pki/kubelet-client-current.pem",
            &cat(&self.cluster.paths("node")),
            0o600,
        );
        let ip = self.ip.to_string();
        let serving = self
            .cluster
            .write_server_cert("serving", &["localhost", "127.0.0.1", &ip, NODE_NAME])
            .unwrap();
        self.write(
            "var/lib/kubelet/pki/kubelet-server-current.pem",
            &cat(&serving),
            0o600,
        );
        self.write(
            "etc/systemd/system/kubelet.service",
            "[Unit]\nDescription=kubelet\n[Service]\nExecStart=/usr/bin/kubelet\nRestart=always\n",
            0o644,
        );
        self.write(
            "etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
            &format!(
                "[Service]\nEnvironment=\"KUBELET_CONFIG_ARGS=--config={}\"\nExecStart=\n\
                 ExecStart={} --pki-dir {} $KUBELET_CONFIG_ARGS $KUBELET_EXTRA_ARGS\n",
                self.ps("var/lib/kubelet/config.yaml"),
                bin_dir().join("kubelet-authz-kubelet").display(),
                self.cluster.dir().display()
            ),
            0o644,
        );
    }

    fn systemd(&self) -> Systemd {
        Systemd::new(self.root.path())
    }

    fn path_env(&self) -> String {
        format!(
            "{}:{}",
            self.tools.path().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// `systemctl ARGS` as systemd's own boot runs it (the stand-in binary on PATH).
    fn systemctl(&self, args: &[&str]) {
        let out = std::process::Command::new("systemctl")
            .args(args)
            .env("PATH", self.path_env())
            .env(HOST_ROOT_ENV, self.root.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "systemctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn loopback(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn client_cert(&self, name: &str) -> ClientCert {
        let p = self.cluster.paths(name);
        ClientCert::from_pem_files(&p.cert, &p.key).unwrap()
    }

    fn proxy_cert(&self) -> ClientCert {
        ClientCert::from_pem_file(&self.p("var/lib/kubelet-authz/pki/proxy-current.pem")).unwrap()
    }

    /// Wait until the kubelet answers /healthz on 127.0.0.1 with `cert`.
    async fn wait_kubelet(&self, cert: &ClientCert, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let p = tokio::task::block_in_place(|| self.probe(cert));
            if p == Probe::Answered(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the kubelet does not answer: {p}; log:\n{}",
                self.kubelet_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn probe(&self, cert: &ClientCert) -> Probe {
        healthz(self.loopback(), Some(cert), Duration::from_secs(3))
    }

    fn kubelet_log(&self) -> String {
        std::fs::read_to_string(self.systemd().log_path()).unwrap_or_default()
    }

    fn listen_addrs(&self) -> Vec<IpAddr> {
        listeners::listeners(Path::new("/proc"), self.port)
            .unwrap()
            .into_iter()
            .map(|l| l.addr.ip())
            .collect()
    }

    /// The node's files (not `run/` and `var/log/`, which the stand-in systemd writes).
    fn snapshot(&self) -> BTreeMap<String, String> {
        snapshot(self.root.path(), &["run", "var/log"]).unwrap()
    }

    /// The privileged agent's command of a shipped container (`configure`, `unconfigure`) on the
    /// box: `--host-root /host` -> `/` (no chroot, the host's paths given as the box's), `--stay`
    /// dropped (the DaemonSet's container waits there forever). Its exit status and stderr.
    async fn host_agent(&self, c: &Value, sub: &str) -> (Option<i32>, String) {
        let argv = argv(c);
        assert_eq!(
            argv.get(..2),
            Some(&["/kubelet-authz-node".to_string(), sub.to_string()][..]),
            "{argv:?}"
        );
        let mut args = Vec::new();
        let mut words = argv.into_iter().skip(1);
        while let Some(w) = words.next() {
            match w.as_str() {
                "--host-root" => {
                    assert_eq!(words.next().as_deref(), Some("/host"));
                    args.extend(["--host-root".to_string(), "/".to_string()]);
                }
                "--stay" => {}
                _ => args.push(w),
            }
        }
        for (flag, rel) in [
            ("--kubelet-config", "var/lib/kubelet/config.yaml"),
            ("--config-dir", "etc/kubernetes/kubelet.conf.d"),
            (
                "--systemd-dropin-dir",
                "etc/systemd/system/kubelet.service.d",
            ),
            ("--pki-dir", "var/lib/kubelet-authz/pki"),
            ("--state-dir", "var/lib/kubelet-authz"),
        ] {
            args.extend([flag.to_string(), self.ps(rel)]);
        }
        args.extend([
            "--distribution".to_string(),
            "kubeadm".to_string(),
            "--kubelet-binary".to_string(),
            bin_dir()
                .join("kubelet-authz-kubelet")
                .display()
                .to_string(),
        ]);
        let out = tokio::time::timeout(
            Duration::from_secs(180),
            tokio::process::Command::new(bin_dir().join("kubelet-authz-node"))
                .args(&args)
                .env("PATH", self.path_env())
                .env(HOST_ROOT_ENV, self.root.path())
                .output(),
        )
        .await
        .expect("the agent within 180 s")
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("--- {sub}: {}\n{err}", out.status);
        (out.status.code(), err)
    }

    fn pod_dir(&self, pod: &str, rest: &str) -> PathBuf {
        self.pods.path().join(pod).join(rest)
    }

    /// A path as container `c` of pod `spec` (or, not mounted there, another container of the pod)
    /// sees it, on this machine: under a `hostPath` mount,
    /// the box's file; under a pod volume, the pod's directory; the image's `/plugin.wasm`, the
    /// release filter. Any other absolute path is an error (a new path in the manifest cannot go
    /// unchecked).
    fn map_path(&self, spec: &Value, c: &Value, pod: &str, value: &str) -> PathBuf {
        // The container's mounts first; then the pod's other containers' (a path rendered by one
        // container for another, e.g. the admin socket for Envoy: the same volume at the same
        // mount path in each).
        let mut mounts = c["volumeMounts"].as_array().cloned().unwrap_or_default();
        if !mounts.iter().any(|m| {
            let at = m["mountPath"].as_str().unwrap();
            value == at || value.starts_with(&format!("{at}/"))
        }) {
            for list in ["initContainers", "containers"] {
                for other in spec[list].as_array().into_iter().flatten() {
                    mounts.extend(
                        other["volumeMounts"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default(),
                    );
                }
            }
        }
        let best = mounts
            .iter()
            .filter_map(|m| {
                let at = m["mountPath"].as_str().unwrap();
                let rest = if value == at {
                    ""
                } else {
                    value.strip_prefix(&format!("{at}/"))?
                };
                Some((at.len(), m["name"].as_str().unwrap().to_string(), rest))
            })
            .max_by_key(|(len, _, _)| *len);
        let Some((_, volume, rest)) = best else {
            if value == "/plugin.wasm" {
                return kubelet_authz_e2e::envoy::filter_wasm().unwrap();
            }
            // Not mounted in this container: a path that does not exist there either.
            return self.pod_dir(pod, &format!("unmounted{value}"));
        };
        let v = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == volume.as_str())
            .unwrap();
        if let Some(host) = v["hostPath"]["path"].as_str() {
            let host = host.trim_start_matches('/');
            let joined = if rest.is_empty() {
                host.to_string()
            } else {
                format!("{host}/{rest}")
            };
            self.p(joined.trim_start_matches('/'))
        } else {
            std::fs::create_dir_all(self.pod_dir(pod, &volume)).unwrap();
            self.pod_dir(pod, &format!("{volume}/{rest}"))
        }
    }

    /// The environment of container `c`: its ConfigMap's (`envFrom`) and its own (the downward
    /// API's `spec.nodeName`, `status.hostIP`), the paths mapped, and the box's `overrides`.
    fn env(
        &self,
        spec: &Value,
        c: &Value,
        pod: &str,
        overrides: &[(String, String)],
    ) -> Vec<(String, String)> {
        let mut env = env_from(&self.objects, c);
        for e in c["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap().to_string();
            let value = if let Some(v) = e["value"].as_str() {
                v.to_string()
            } else {
                match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some("spec.nodeName") => NODE_NAME.to_string(),
                    Some("status.hostIP") => self.ip.to_string(),
                    other => panic!("{name}: valueFrom {other:?} not known to this test"),
                }
            };
            env.push((name, value));
        }
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| {
                if v.starts_with('/') {
                    let mapped = self.map_path(spec, c, pod, &v).display().to_string();
                    (k, mapped)
                } else {
                    (k, v)
                }
            })
            .collect();
        for (k, v) in overrides {
            env.retain(|(name, _)| name != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }

    /// The pod's `init` container as written; (success, stderr).
    async fn init(&self, pod: &str) -> (bool, String) {
        let spec = pod_spec(&self.objects, "kubelet-authz");
        let c = container(&spec, "initContainers", "init");
        let argv = argv(&c);
        assert_eq!(argv[0], "/kubelet-authz-node");
        // The agent's defaults for a kubeadm node's kubelet files, as the pod sees them (the
        // drop-in directory through its mount, added by the configure component).
        let kubelet_config = self
            .map_path(&spec, &c, pod, "/var/lib/kubelet/config.yaml")
            .display()
            .to_string();
        let kubeconfig = self
            .map_path(&spec, &c, pod, "/etc/kubernetes/kubelet.conf")
            .display()
            .to_string();
        let mut overrides = self.box_overrides();
        let kubelet_config_dir = self
            .map_path(&spec, &c, pod, "/etc/kubernetes/kubelet.conf.d")
            .display()
            .to_string();
        overrides.push(("KUBELET_CONFIG".into(), kubelet_config));
        overrides.push(("KUBELET_CONFIG_DIR".into(), kubelet_config_dir));
        overrides.push(("KUBELET_KUBECONFIG".into(), kubeconfig));
        let log_path = self.pod_dir(pod, "init.log");
        std::fs::create_dir_all(log_path.parent().unwrap()).unwrap();
        let mut child = tokio::process::Command::new(bin_dir().join("kubelet-authz-node"))
            .args(&argv[1..])
            .env_clear()
            .envs(self.env(&spec, &c, pod, &overrides))
            .stderr(std::fs::File::create(&log_path).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
        let err = std::fs::read_to_string(&log_path).unwrap_or_default();
        let status = status
            .unwrap_or_else(|_| panic!("init ({pod}) still runs after 60 s:\n{err}"))
            .unwrap();
        eprintln!("--- init ({pod}): {status}\n{err}");
        (status.success(), err)
    }

    /// What differs from the ConfigMap on this box: the kubelet's port (a free one, not 10250),
    /// the metrics port (the machine is shared), the name in the stand-in kubelet's serving
    /// certificate (`localhost`, not the node's name).
    fn box_overrides(&self) -> Vec<(String, String)> {
        vec![
            ("LISTEN_PORT".into(), self.port.to_string()),
            ("METRICS_PORT".into(), self.metrics.to_string()),
            ("KUBELET_SERVER_NAME".into(), "localhost".into()),
        ]
    }

    /// What the kubelet does before the pod's first container: a `DirectoryOrCreate` hostPath is
    /// made when missing (0755), a `Directory` or `File` one must exist. The directories made.
    fn host_paths(&self) -> Vec<String> {
        let spec = pod_spec(&self.objects, "kubelet-authz");
        let mut made = Vec::new();
        for v in spec["volumes"].as_array().unwrap() {
            let Some(path) = v["hostPath"]["path"].as_str() else {
                continue;
            };
            let rel = path.trim_start_matches('/');
            let on_box = if rel.is_empty() {
                self.root.path().to_path_buf()
            } else {
                self.p(rel)
            };
            match v["hostPath"]["type"].as_str().unwrap_or_default() {
                "DirectoryOrCreate" => {
                    if !on_box.exists() {
                        std::fs::create_dir_all(&on_box).unwrap();
                        made.push(rel.to_string());
                    }
                }
                "Directory" => assert!(on_box.is_dir(), "hostPath {path}: no directory"),
                "File" => assert!(on_box.is_file(), "hostPath {path}: no file"),
                other => panic!("hostPath {path}: type {other:?} not known to this test"),
            }
        }
        made
    }

    /// The filter ConfigMap's volume of `pod` (its `filter.yaml`).
    fn set_filter(&self, pod: &str, text: &str) {
        write_volume(&self.pod_dir(pod, "filter-config"), "filter.yaml", text).unwrap();
    }

    fn shipped_filter(&self) -> String {
        let cm = self
            .objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "kubelet-authz-filter")
            .unwrap();
        cm["data"]["filter.yaml"].as_str().unwrap().to_string()
    }

    /// Envoy with the manifest's command line, once its metrics listener answers /live.
    async fn start_envoy(&self, pod: &str) -> tokio::process::Child {
        let spec = pod_spec(&self.objects, "kubelet-authz");
        let c = container(&spec, "containers", "envoy");
        let mut argv = argv(&c);
        assert_eq!(argv[0], "/usr/local/bin/envoy");
        argv[0] = kubelet_authz_e2e::envoy::envoy_bin()
            .unwrap()
            .display()
            .to_string();
        for a in argv.iter_mut().skip(1) {
            if a.starts_with('/') {
                *a = self.map_path(&spec, &c, pod, a).display().to_string();
            }
        }
        let log_path = self.pod_dir(pod, "envoy.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut envoy = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while plain(SocketAddr::new(self.ip, self.metrics), "GET", "/live").await != 200 {
            let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            assert!(
                envoy.try_wait().unwrap().is_none(),
                "envoy exited:\n{}",
                log()
            );
            assert!(Instant::now() < deadline, "envoy not live:\n{}", log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        envoy
    }

    /// The agent container as written (until killed); its stderr in the pod's `agent.log`.
    fn start_agent(&self, pod: &str) -> tokio::process::Child {
        let spec = pod_spec(&self.objects, "kubelet-authz");
        let c = container(&spec, "containers", "agent");
        let argv = argv(&c);
        assert_eq!(argv[0], "/kubelet-authz-node");
        let log = std::fs::File::create(self.pod_dir(pod, "agent.log")).unwrap();
        let mut overrides = self.box_overrides();
        overrides.push(("POLL_SECONDS".into(), "1".into()));
        tokio::process::Command::new(bin_dir().join("kubelet-authz-node"))
            .args(&argv[1..])
            .env_clear()
            .envs(self.env(&spec, &c, pod, &overrides))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    fn agent_log(&self, pod: &str) -> String {
        std::fs::read_to_string(self.pod_dir(pod, "agent.log")).unwrap_or_default()
    }

    fn envoy_log(&self, pod: &str) -> String {
        std::fs::read_to_string(self.pod_dir(pod, "envoy.log")).unwrap_or_default()
    }

    /// A client of the proxy (the node's address), as `who` (a cluster client certificate) or
    /// anonymous.
    fn client(&self, who: Option<&str>) -> Client {
        let cert = who.map(|n| self.cluster.paths(n));
        Client::new(&self.cluster.ca_cert(), cert.as_ref()).unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", SocketAddr::new(self.ip, self.port))
    }

    /// GET `path` through Envoy; the status.
    async fn status(&self, who: Option<&str>, path: &str) -> u16 {
        match self.client(who).get(&self.url(path), &[]).await {
            Ok(r) => r.status,
            Err(e) => panic!("GET {path} as {who:?}: {e}"),
        }
    }

    /// The pod: `init`, Envoy, the agent; the filter ConfigMap volume holds `filter`.
    async fn start_pod(
        &self,
        pod: &str,
        filter: &str,
    ) -> (tokio::process::Child, tokio::process::Child) {
        self.set_filter(pod, filter);
        let (ok, err) = self.init(pod).await;
        assert!(ok, "init ({pod}): {err}");
        let envoy = self.start_envoy(pod).await;
        let agent = self.start_agent(pod);
        (envoy, agent)
    }
}

impl Drop for NodeBox {
    fn drop(&mut self) {
        let _ = self.systemd().stop();
    }
}

/// A plain HTTP/1.1 request to the metrics listener (on the node's address): status (0 when nothing answers).
async fn plain(addr: SocketAddr, method: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// What the poller saw of the kubelet's configuration files.
#[derive(Default)]
struct Seen {
    polls: usize,
    /// Every content of the kubelet drop-in and of the unit drop-in (`None`: absent).
    dropin: BTreeSet<Option<Vec<u8>>>,
    unit: BTreeSet<Option<Vec<u8>>>,
    /// Moments the kubelet's configuration was not whole.
    gaps: Vec<String>,
}

/// Polls, until stopped, that the kubelet always has its whole configuration: kubeadm's files
/// untouched, the drop-ins absent or whole (their contents collected, checked at the end), and
/// never the proxy's drop-in without the per-node CA it names (a kubelet would exit at start).
fn poller(b: &NodeBox, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Seen> {
    let base_path = b.p("var/lib/kubelet/config.yaml");
    let kubeadm_path = b.p("etc/systemd/system/kubelet.service.d/10-kubeadm.conf");
    let dropin_path = b.p("etc/kubernetes/kubelet.conf.d/90-kubelet-authz.conf");
    let unit_path = b.p("etc/systemd/system/kubelet.service.d/90-kubelet-authz.conf");
    let ca_path = b.p("var/lib/kubelet-authz/pki/ca.crt");
    let base = std::fs::read(&base_path).unwrap();
    let kubeadm = std::fs::read(&kubeadm_path).unwrap();
    std::thread::spawn(move || {
        let mut seen = Seen::default();
        let read = |p: &Path| std::fs::read(p).ok();
        while !stop.load(Ordering::SeqCst) {
            seen.polls += 1;
            if read(&base_path).as_ref() != Some(&base) {
                seen.gaps
                    .push("the kubelet's config.yaml changed or went missing".into());
            }
            if read(&kubeadm_path).as_ref() != Some(&kubeadm) {
                seen.gaps
                    .push("10-kubeadm.conf changed or went missing".into());
            }
            let d1 = read(&dropin_path);
            let ca = read(&ca_path);
            let d3 = read(&dropin_path);
            seen.unit.insert(read(&unit_path));
            if let (Some(a), Some(c)) = (&d1, &d3) {
                let whole_ca = ca.as_ref().is_some_and(|ca| {
                    String::from_utf8_lossy(ca)
                        .trim_end()
                        .ends_with("-----END CERTIFICATE-----")
                });
                if a == c && !whole_ca {
                    seen.gaps.push(format!(
                        "the drop-in names the per-node CA, which is {}",
                        if ca.is_some() { "partial" } else { "missing" }
                    ));
                }
            }
            seen.dropin.insert(d1);
            seen.dropin.insert(d3);
            std::thread::sleep(Duration::from_millis(2));
        }
        seen
    })
}

/// The node's life: label -> configure -> Shadow -> Enforce -> reboot -> remove, with the shipped
/// objects' commands; the files back byte for byte at the end and the kubelet's configuration
/// never missing or partial on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeadm_node_lifecycle() {
    let started = Instant::now();
    let b = NodeBox::new().await;
    let ds = pod_spec(&b.objects, "kubelet-authz");
    let configure = container(&ds, "initContainers", "configure");
    assert_eq!(
        ds["initContainers"][0]["name"], "configure",
        "configure runs before init"
    );
    let unconfigure = container(
        &pod_spec(&b.objects, "kubelet-authz-unconfigure"),
        "containers",
        "unconfigure",
    );

    // The node as kubeadm made it: the kubelet started by systemd on 0.0.0.0 with the cluster CA.
    b.systemctl(&["daemon-reload"]);
    b.systemctl(&["start", "kubelet"]);
    let alice = b.client_cert("alice");
    b.wait_kubelet(&alice, "first boot").await;
    assert_eq!(b.listen_addrs(), vec![IpAddr::from([0, 0, 0, 0])]);
    let before = b.snapshot();

    let stop = Arc::new(AtomicBool::new(false));
    let watch = poller(&b, stop.clone());

    // 1. Label: the pod's volumes, then the configure init container.
    let made = b.host_paths();
    let (code, log) = b.host_agent(&configure, "configure").await;
    assert_eq!(code, Some(0), "configure: {log}");
    for step in [
        "systemctl daemon-reload",
        "systemctl restart kubelet",
        "listens on loopback only",
    ] {
        assert!(log.contains(step), "no step {step:?} in:\n{log}");
    }
    let proxy = b.proxy_cert();
    assert_eq!(b.probe(&proxy), Probe::Answered(200));
    assert!(
        matches!(b.probe(&alice), Probe::Down(_)),
        "the cluster CA is still trusted"
    );
    assert_eq!(b.listen_addrs(), vec![IpAddr::from([127, 0, 0, 1])]);
    let configured = b.snapshot();

    // 2. The pod: init, Envoy, the agent. Shadow: forwarded, the kubelet answers.
    let shadow = b.shipped_filter();
    assert!(shadow.contains("enforcement: Shadow"), "{shadow}");
    let (mut envoy, mut agent) = b.start_pod("pod-1", &shadow).await;
    // The kubelet on loopback, Envoy (a socket per worker) on the node's address.
    let addrs: BTreeSet<IpAddr> = b.listen_addrs().into_iter().collect();
    assert_eq!(addrs, BTreeSet::from([IpAddr::from([127, 0, 0, 1]), b.ip]));
    assert_eq!(
        b.status(None, "/pods").await,
        200,
        "{}",
        b.envoy_log("pod-1")
    );
    assert_eq!(b.status(Some("bob"), "/pods").await, 200);

    // 3. Enforce: the ConfigMap volume rewritten; anonymous 401, bob 403, alice forwarded.
    let enforce = shadow.replace("enforcement: Shadow", "enforcement: Enforce");
    b.set_filter("pod-1", &enforce);
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.status(None, "/pods").await != 401 {
        assert!(
            Instant::now() < deadline,
            "still Shadow:\n{}",
            b.agent_log("pod-1")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(b.status(Some("bob"), "/pods").await, 403);
    assert_eq!(
        b.status(Some("alice"), "/pods").await,
        200,
        "{}",
        b.envoy_log("pod-1")
    );

    // 4. Reboot: Envoy, the agent and the kubelet killed, /run emptied (a tmpfs); systemd loads the
    // units and starts the kubelet, which comes up behind the proxy by itself; then the pod again.
    envoy.kill().await.unwrap();
    agent.kill().await.unwrap();
    let pid = b.systemd().pid().unwrap().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    std::fs::remove_dir_all(b.p("run")).unwrap();
    b.systemctl(&["daemon-reload"]);
    b.systemctl(&["start", "kubelet"]);
    b.wait_kubelet(&proxy, "after the reboot").await;
    assert!(matches!(b.probe(&alice), Probe::Down(_)));
    assert_eq!(b.listen_addrs(), vec![IpAddr::from([127, 0, 0, 1])]);
    let pid = b.systemd().pid().unwrap();
    let (code, log) = b.host_agent(&configure, "configure").await;
    assert_eq!(code, Some(0), "configure after the reboot: {log}");
    assert!(log.contains("already configured"), "{log}");
    assert!(!log.contains("restart kubelet"), "{log}");
    assert_eq!(b.systemd().pid().unwrap(), pid, "the kubelet was restarted");
    assert!(b.host_paths().is_empty());
    let (mut envoy, mut agent) = b.start_pod("pod-2", &enforce).await;
    assert_eq!(
        b.status(None, "/pods").await,
        401,
        "{}",
        b.envoy_log("pod-2")
    );
    assert_eq!(b.status(Some("bob"), "/pods").await, 403);
    assert_eq!(
        b.status(Some("alice"), "/pods").await,
        200,
        "{}",
        b.envoy_log("pod-2")
    );
    assert!(envoy.try_wait().unwrap().is_none(), "envoy exited");
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent exited:\n{}",
        b.agent_log("pod-2")
    );

    // 5. Remove: the pod leaves, the unconfigure DaemonSet's command runs.
    envoy.kill().await.unwrap();
    agent.kill().await.unwrap();
    let (code, log) = b.host_agent(&unconfigure, "unconfigure").await;
    assert_eq!(code, Some(0), "unconfigure: {log}");
    stop.store(true, Ordering::SeqCst);
    let seen = watch.join().unwrap();

    // The node's files as they were, but the directories the pod's DirectoryOrCreate hostPaths
    // made (empty).
    let mut want = before.clone();
    for dir in &made {
        want.insert(dir.clone(), "dir 755".to_string());
    }
    let after = b.snapshot();
    let differ: Vec<_> = want
        .keys()
        .chain(after.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| want.get(*k) != after.get(*k))
        .map(|k| format!("{k}: was {:?}, is {:?}", want.get(k), after.get(k)))
        .collect();
    assert!(
        differ.is_empty(),
        "the node's files are not as they were: {differ:#?}"
    );
    b.wait_kubelet(&alice, "after unconfigure").await;
    assert_eq!(b.listen_addrs(), vec![IpAddr::from([0, 0, 0, 0])]);

    // 6. The kubelet's configuration was whole throughout.
    assert!(seen.polls > 100, "only {} polls", seen.polls);
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
    let whole = |rel: &str| {
        configured
            .get(rel)
            .unwrap_or_else(|| panic!("{rel} not written by configure"))
            .splitn(3, ' ')
            .nth(2)
            .unwrap()
            .as_bytes()
            .to_vec()
    };
    let want_dropin = BTreeSet::from([
        None,
        Some(whole("etc/kubernetes/kubelet.conf.d/90-kubelet-authz.conf")),
    ]);
    assert_eq!(
        seen.dropin, want_dropin,
        "the kubelet drop-in was seen partial"
    );
    let want_unit = BTreeSet::from([
        None,
        Some(whole(
            "etc/systemd/system/kubelet.service.d/90-kubelet-authz.conf",
        )),
    ]);
    assert_eq!(seen.unit, want_unit, "the unit drop-in was seen partial");
    // Every start of the kubelet found its configuration (the stand-in exits with an error when
    // its client CA file is missing or a file does not parse).
    let klog = b.kubelet_log();
    assert!(!klog.contains("Error"), "a kubelet start failed:\n{klog}");
    eprintln!(
        "node lifecycle: {:?}, {} polls",
        started.elapsed(),
        seen.polls
    );
}
