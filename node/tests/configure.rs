//! `kubelet-authz-node configure` / `unconfigure` on a node in a box: a host root in a temporary
//! directory with the kubelet's files (kubeadm: YAML config + `10-kubeadm.conf` unit drop-in;
//! EKS AL2023: JSON config + `config.json.d/`), the stand-in kubelet run by the stand-in
//! `systemctl` from those unit files (`kubelet-authz-systemctl` on PATH as `systemctl`), and the
//! real agent binary, run as the DaemonSet runs it (`--host-root /` here: no chroot, the paths
//! point into the box).
//!
//! The stand-in binaries are built by `cargo build -p kubelet-authz-standins --bins` on first use
//! (into the same target directory).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kubelet_authz_node::listeners;
use kubelet_authz_node::probe::{healthz, ClientCert, Probe};
use kubelet_authz_standins::pki::{ClientSubject, Pki};
use kubelet_authz_standins::systemctl::{Systemd, HOST_ROOT_ENV};

/// The directory holding the binaries (`kubelet-authz-node` and the stand-ins).
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let node = PathBuf::from(env!("CARGO_BIN_EXE_kubelet-authz-node"));
        let dir = node.parent().unwrap().to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "kubelet-authz-standins", "--bins"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo to build the stand-ins");
        assert!(status.success(), "building the stand-in binaries failed");
        for bin in ["kubelet-authz-kubelet", "kubelet-authz-systemctl"] {
            assert!(
                dir.join(bin).is_file(),
                "{} not built",
                dir.join(bin).display()
            );
        }
        dir
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One node in a box.
struct Node {
    root: tempfile::TempDir,
    /// PATH entries: `systemctl` and `envoy` (the fake one) live here.
    tools: tempfile::TempDir,
    /// The cluster's PKI (the kubelet's serving certificate and the original client CA).
    cluster: Pki,
    _cluster_dir: tempfile::TempDir,
    port: u16,
    distribution: &'static str,
}

impl Node {
    fn p(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn ps(&self, rel: &str) -> String {
        self.p(rel).display().to_string()
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.p(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }

    fn systemd(&self) -> Systemd {
        Systemd::new(self.root.path())
    }

    fn kubeadm() -> Node {
        let node = Node::new("kubeadm");
        let config = format!(
            "# written by kubeadm\napiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             port: {}\nauthentication:\n  x509:\n    clientCAFile: {}\n  webhook:\n    enabled: true\n\
             authorization:\n  mode: Webhook\n",
            node.port,
            node.cluster.ca_cert().display()
        );
        node.write("var/lib/kubelet/config.yaml", &config);
        std::fs::set_permissions(
            node.p("var/lib/kubelet/config.yaml"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        node.write(
            "etc/systemd/system/kubelet.service",
            "[Unit]\nDescription=kubelet\n[Service]\nExecStart=/usr/bin/kubelet\nRestart=always\n",
        );
        node.write(
            "etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
            &format!(
                "[Service]\nEnvironment=\"KUBELET_CONFIG_ARGS=--config={}\"\nExecStart=\n\
                 ExecStart={} --pki-dir {} $KUBELET_CONFIG_ARGS $KUBELET_EXTRA_ARGS\n",
                node.ps("var/lib/kubelet/config.yaml"),
                bin_dir().join("kubelet-authz-kubelet").display(),
                node.cluster.dir().display()
            ),
        );
        node.boot();
        node
    }

    fn eks() -> Node {
        let node = Node::new("eks-al2023");
        let config = format!(
            "{{\"apiVersion\":\"kubelet.config.k8s.io/v1beta1\",\"kind\":\"KubeletConfiguration\",\
             \"port\":{},\"authentication\":{{\"x509\":{{\"clientCAFile\":\"{}\"}},\
             \"webhook\":{{\"enabled\":true}}}},\"authorization\":{{\"mode\":\"Webhook\"}}}}\n",
            node.port,
            node.cluster.ca_cert().display()
        );
        node.write("etc/kubernetes/kubelet/config.json", &config);
        node.write(
            "etc/kubernetes/kubelet/config.json.d/40-nodeadm.conf",
            "{\"apiVersion\":\"kubelet.config.k8s.io/v1beta1\",\"kind\":\"KubeletConfiguration\",\"maxPods\":17}\n",
        );
        // nodeadm without spec.kubelet.config: no --config-dir in NODEADM_KUBELET_ARGS.
        node.write(
            "etc/eks/kubelet/environment",
            &format!(
                "NODEADM_KUBELET_ARGS=\"--pki-dir {} --config {}\"\n",
                node.cluster.dir().display(),
                node.ps("etc/kubernetes/kubelet/config.json"),
            ),
        );
        node.write(
            "etc/systemd/system/kubelet.service",
            &format!(
                "[Service]\nEnvironmentFile={}\nExecStart={} $NODEADM_KUBELET_ARGS\n",
                node.ps("etc/eks/kubelet/environment"),
                bin_dir().join("kubelet-authz-kubelet").display(),
            ),
        );
        node.boot();
        node
    }

    fn new(distribution: &'static str) -> Node {
        let bins = bin_dir();
        let root = tempfile::tempdir().unwrap();
        let tools = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            bins.join("kubelet-authz-systemctl"),
            tools.path().join("systemctl"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            bins.join("kubelet-authz-kubelet"),
            tools.path().join("envoy"),
        )
        .unwrap();
        // Every host has /var/lib.
        std::fs::create_dir_all(root.path().join("var/lib")).unwrap();
        let cluster_dir = tempfile::tempdir().unwrap();
        let cluster = Pki::open(cluster_dir.path()).unwrap();
        cluster
            .client_cert("alice", &ClientSubject::new("alice", &["dev"]))
            .unwrap();
        Node {
            root,
            tools,
            cluster,
            _cluster_dir: cluster_dir,
            port: free_port(),
            distribution,
        }
    }

    /// Start the kubelet as the host's boot does, and wait until it answers.
    fn boot(&self) {
        let sd = self.systemd();
        sd.daemon_reload().unwrap();
        sd.start().unwrap();
        self.wait_answering(&self.alice(), Duration::from_secs(20));
    }

    fn alice(&self) -> ClientCert {
        let p = self.cluster.paths("alice");
        ClientCert::from_pem_files(&p.cert, &p.key).unwrap()
    }

    fn proxy(&self) -> ClientCert {
        ClientCert::from_pem_file(&self.p("var/lib/kubelet-authz/pki/proxy-current.pem")).unwrap()
    }

    fn loopback(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn probe(&self, cert: &ClientCert) -> Probe {
        healthz(self.loopback(), Some(cert), Duration::from_secs(3))
    }

    fn wait_answering(&self, cert: &ClientCert, timeout: Duration) {
        let start = Instant::now();
        loop {
            let p = self.probe(cert);
            if p == Probe::Answered(200) {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "the kubelet does not answer: {p}; log:\n{}",
                std::fs::read_to_string(self.systemd().log_path()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn listen_addrs(&self) -> Vec<IpAddr> {
        listeners::listeners(Path::new("/proc"), self.port)
            .unwrap()
            .into_iter()
            .map(|l| l.addr.ip())
            .collect()
    }

    fn agent(&self, cmd: &str, timeout: &str) -> std::process::Output {
        // The shipped command line, with the box's host root (no chroot) and timeout, and the
        // box's paths for the distribution's.
        let mut args = shipped_args(cmd, timeout);
        args.extend([
            "--distribution".into(),
            self.distribution.into(),
            "--pki-dir".into(),
            self.ps("var/lib/kubelet-authz/pki"),
            "--state-dir".into(),
            self.ps("var/lib/kubelet-authz"),
            "--systemd-dropin-dir".into(),
            self.ps("etc/systemd/system/kubelet.service.d"),
            "--kubelet-binary".into(),
            bin_dir()
                .join("kubelet-authz-kubelet")
                .display()
                .to_string(),
        ]);
        if self.distribution == "kubeadm" {
            args.extend([
                "--kubelet-config".into(),
                self.ps("var/lib/kubelet/config.yaml"),
                "--config-dir".into(),
                self.ps("etc/kubernetes/kubelet.conf.d"),
            ]);
        } else {
            args.extend([
                "--kubelet-config".into(),
                self.ps("etc/kubernetes/kubelet/config.json"),
                "--config-dir".into(),
                self.ps("etc/kubernetes/kubelet/config.json.d"),
            ]);
        }
        let path = format!(
            "{}:{}",
            self.tools.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = assert_cmd::Command::cargo_bin("kubelet-authz-node")
            .unwrap()
            .args(&args)
            .env("PATH", path)
            .env(HOST_ROOT_ENV, self.root.path())
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap();
        eprintln!(
            "--- {cmd}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Every file and directory of the host root (but `run/` and `var/log/`, which the stand-in
    /// systemd writes, and `exclude`): contents, modes, symlink targets.
    fn snapshot(&self, exclude: &[&str]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut skip = vec!["run", "var/log"];
        skip.extend_from_slice(exclude);
        snap(self.root.path(), self.root.path(), &skip, &mut out);
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.systemd().stop();
    }
}

/// The agent's arguments in the shipped objects: `configure` from the component
/// (envoy/kubernetes/configure), `unconfigure` from envoy/kubernetes/configure/unconfigure-daemonset.yaml
/// (without `--stay`, which waits forever); `--host-root /host` becomes `/` and `--timeout` the
/// test's.
fn shipped_args(cmd: &str, timeout: &str) -> Vec<String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let command: Vec<String> = if cmd == "configure" {
        let patch: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(repo.join("envoy/kubernetes/configure/configure-init.json"))
                .unwrap(),
        )
        .unwrap();
        let op = patch
            .as_array()
            .unwrap()
            .iter()
            .find(|op| op["value"]["name"] == "configure")
            .unwrap();
        serde_json::from_value(op["value"]["command"].clone()).unwrap()
    } else {
        let ds: serde_json::Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(
                repo.join("envoy/kubernetes/configure/unconfigure-daemonset.yaml"),
            )
            .unwrap(),
        )
        .unwrap();
        serde_json::from_value(ds["spec"]["template"]["spec"]["containers"][0]["command"].clone())
            .unwrap()
    };
    assert_eq!(
        command.first().map(String::as_str),
        Some("/kubelet-authz-node")
    );
    assert_eq!(command.get(1).map(String::as_str), Some(cmd));
    let mut out = Vec::new();
    let mut words = command.into_iter().skip(1);
    while let Some(w) = words.next() {
        match w.as_str() {
            "--host-root" => {
                assert_eq!(words.next().as_deref(), Some("/host"));
                out.extend(["--host-root".to_string(), "/".to_string()]);
            }
            "--timeout" => {
                words.next();
                out.extend(["--timeout".to_string(), timeout.to_string()]);
            }
            "--stay" => {}
            _ => out.push(w),
        }
    }
    assert!(
        out.contains(&"--timeout".to_string()),
        "{out:?}: no --timeout shipped"
    );
    out
}

fn snap(root: &Path, dir: &Path, skip: &[&str], out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if skip.iter().any(|s| rel == *s) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            out.insert(
                rel,
                format!("link -> {}", std::fs::read_link(&path).unwrap().display()),
            );
        } else if meta.is_dir() {
            out.insert(rel.clone(), format!("dir {mode:o}"));
            snap(root, &path, skip, out);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            out.insert(
                rel,
                format!("file {mode:o} {}", String::from_utf8_lossy(&bytes)),
            );
        }
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A non-loopback address of this machine (the fake Envoy's NODE_IP).
fn node_ip() -> IpAddr {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("192.0.2.1:9")
        .or_else(|_| s.connect("8.8.8.8:53"))
        .expect("a route to a non-loopback address (the node's IP)");
    let ip = s.local_addr().unwrap().ip();
    assert!(!ip.is_loopback(), "{ip}");
    ip
}

/// The whole life of a kubeadm node: configure, configure again, reboot, unconfigure.
#[test]
fn kubeadm_configure_reboot_unconfigure() {
    let node = Node::kubeadm();
    let before = node.snapshot(&[]);
    assert_eq!(
        node.listen_addrs(),
        vec![IpAddr::from([0, 0, 0, 0])],
        "the kubelet starts on 0.0.0.0"
    );

    let out = node.agent("configure", "30s");
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    for step in [
        "per-node CA",
        "recorded the previous state",
        "wrote",
        "systemctl daemon-reload",
        "systemctl restart kubelet",
        "listens on loopback only",
    ] {
        assert!(log.contains(step), "no step {step:?} in:\n{log}");
    }
    // Right after configure returns: on loopback only, the proxy's certificate is accepted, the
    // cluster CA's (alice) is refused at the handshake.
    assert_eq!(node.probe(&node.proxy()), Probe::Answered(200));
    assert!(matches!(node.probe(&node.alice()), Probe::Down(_)));
    assert_eq!(node.listen_addrs(), vec![IpAddr::from([127, 0, 0, 1])]);
    // The files: the drop-in (the CA path of this box), the unit drop-in adding --config-dir.
    let dropin =
        std::fs::read_to_string(node.p("etc/kubernetes/kubelet.conf.d/90-kubelet-authz.conf"))
            .unwrap();
    assert!(dropin.contains(&format!(
        "clientCAFile: {}",
        node.ps("var/lib/kubelet-authz/pki/ca.crt")
    )));
    let unit = std::fs::read_to_string(
        node.p("etc/systemd/system/kubelet.service.d/90-kubelet-authz.conf"),
    )
    .unwrap();
    assert!(unit.contains("--config-dir="), "{unit}");
    let pki_mode = std::fs::metadata(node.p("var/lib/kubelet-authz/pki"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(pki_mode & 0o777, 0o700);

    // Again: nothing to do, no restart.
    let pid = node.systemd().pid().unwrap().unwrap();
    let out = node.agent("configure", "30s");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already configured"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("restart kubelet"));
    assert_eq!(node.systemd().pid().unwrap(), Some(pid));

    // Reboot: the kubelet killed, the units loaded again, the kubelet started from its files.
    node.systemd().stop().unwrap();
    node.boot_configured();
    assert!(matches!(node.probe(&node.alice()), Probe::Down(_)));
    assert_eq!(node.listen_addrs(), vec![IpAddr::from([127, 0, 0, 1])]);

    // Unconfigure: every file as it was, the kubelet back on 0.0.0.0 with the cluster CA.
    let out = node.agent("unconfigure", "30s");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node.snapshot(&[]), before);
    assert_eq!(node.probe(&node.alice()), Probe::Answered(200));
    assert_eq!(node.listen_addrs(), vec![IpAddr::from([0, 0, 0, 0])]);

    // Unconfigure again: nothing to undo.
    let out = node.agent("unconfigure", "30s");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing to undo"), "{}", stderr(&out));
    assert_eq!(node.snapshot(&[]), before);
}

impl Node {
    /// Boot a configured node: the kubelet must come up behind the proxy by itself.
    fn boot_configured(&self) {
        let sd = self.systemd();
        sd.daemon_reload().unwrap();
        sd.start().unwrap();
        self.wait_answering(&self.proxy(), Duration::from_secs(20));
    }
}

/// EKS AL2023: JSON configuration, nodeadm's `config.json.d/` (its own drop-in kept), no unit
/// change.
#[test]
fn eks_al2023_configure_unconfigure() {
    let node = Node::eks();
    let before = node.snapshot(&[]);
    let out = node.agent("configure", "30s");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node.probe(&node.proxy()), Probe::Answered(200));
    assert!(matches!(node.probe(&node.alice()), Probe::Down(_)));
    assert_eq!(node.listen_addrs(), vec![IpAddr::from([127, 0, 0, 1])]);
    assert!(node
        .p("etc/kubernetes/kubelet/config.json.d/90-kubelet-authz.conf")
        .is_file());
    // nodeadm passed no --config-dir: the unit drop-in adds it.
    let argv = node.systemd().resolve().unwrap();
    assert!(
        argv.contains(&format!(
            "--config-dir={}",
            node.ps("etc/kubernetes/kubelet/config.json.d")
        )),
        "{argv:?}"
    );

    let out = node.agent("unconfigure", "30s");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node.snapshot(&[]), before);
    assert_eq!(node.probe(&node.alice()), Probe::Answered(200));
}

/// `systemctl restart kubelet` fails (the kubelet stopped and not started): configure restores
/// the files, restarts the kubelet and exits 1.
#[test]
fn a_failed_restart_is_rolled_back() {
    let node = Node::kubeadm();
    let before = node.snapshot(&[]);
    node.write("run/standin-systemctl/fail-restart", "1");
    let out = node.agent("configure", "20s");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("rolling back"), "{log}");
    assert!(log.contains("the kubelet answers again"), "{log}");
    // The node's files as they were; of the agent's state only the per-node CA is left.
    assert_eq!(node.snapshot(&["var/lib/kubelet-authz"]), before);
    assert!(!node.p("var/lib/kubelet-authz/backup").exists());
    assert_eq!(node.probe(&node.alice()), Probe::Answered(200));
    assert_eq!(node.listen_addrs(), vec![IpAddr::from([0, 0, 0, 0])]);
}

/// The kubelet "starts" but never answers (it exits at once): after the timeout configure rolls
/// back and exits 1.
#[test]
fn a_kubelet_that_does_not_come_back_is_rolled_back() {
    let node = Node::eks();
    let before = node.snapshot(&[]);
    node.write("run/standin-systemctl/dead-start", "1");
    let out = node.agent("configure", "3s");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("rolling back"), "{}", stderr(&out));
    assert_eq!(node.snapshot(&["var/lib/kubelet-authz"]), before);
    assert_eq!(node.probe(&node.alice()), Probe::Answered(200));
}

/// `unconfigure` does not give the port back while an Envoy holds it on the node's address.
#[test]
fn unconfigure_waits_for_envoy_to_leave() {
    let node = Node::eks();
    let before = node.snapshot(&[]);
    let out = node.agent("configure", "30s");
    assert!(out.status.success(), "{}", stderr(&out));
    let configured = node.snapshot(&[]);

    // A process named `envoy` on NODE_IP:PORT (the stand-in kubelet binary under that name).
    let ip = node_ip();
    let fake_pki = tempfile::tempdir().unwrap();
    let mut envoy = std::process::Command::new(node.tools.path().join("envoy"))
        .args(["--pki-dir", &fake_pki.path().display().to_string()])
        .args(["--listen", &SocketAddr::new(ip, node.port).to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead as _;
        let mut line = String::new();
        std::io::BufReader::new(envoy.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("url"), "{line}");
    }
    let out = node.agent("unconfigure", "2s");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Envoy still listens"),
        "{}",
        stderr(&out)
    );
    assert_eq!(node.snapshot(&[]), configured);
    assert_eq!(node.probe(&node.proxy()), Probe::Answered(200));

    envoy.kill().unwrap();
    envoy.wait().unwrap();
    let out = node.agent("unconfigure", "30s");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node.snapshot(&[]), before);
}

/// A drop-in sorting after the proxy's that puts the kubelet back on 0.0.0.0: configure refuses
/// before any restart and leaves the files as they were.
#[test]
fn an_overriding_dropin_is_refused_without_a_restart() {
    let node = Node::eks();
    node.write(
        "etc/kubernetes/kubelet/config.json.d/99-local.conf",
        "{\"apiVersion\":\"kubelet.config.k8s.io/v1beta1\",\"kind\":\"KubeletConfiguration\",\"address\":\"0.0.0.0\"}\n",
    );
    let before = node.snapshot(&[]);
    let pid = node.systemd().pid().unwrap();
    let out = node.agent("configure", "10s");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("address 0.0.0.0"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("restart kubelet"),
        "{}",
        stderr(&out)
    );
    assert_eq!(node.snapshot(&["var/lib/kubelet-authz"]), before);
    assert_eq!(node.systemd().pid().unwrap(), pid);
}

/// A node built configured (envoy/node/cloud-init.yaml: `kubelet-authz-node pki` and the drop-ins
/// before the kubelet's first start): its kubelet comes up behind the proxy, the DaemonSet's
/// `configure` adopts it without a restart, and `unconfigure` takes it off the proxy.
#[test]
fn a_node_built_configured_is_adopted_and_can_be_unconfigured() {
    use kubelet_authz_node::configure::{dropin_text, systemd_dropin_text, UnitDropin};
    let node = Node::kubeadm();
    let before = node.snapshot(&[]);
    node.systemd().stop().unwrap();

    // First boot: the CA with the agent, then the drop-ins (cloud-init's write_files).
    let out = assert_cmd::Command::cargo_bin("kubelet-authz-node")
        .unwrap()
        .args(["pki", "--pki-dir"])
        .arg(node.p("var/lib/kubelet-authz/pki"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    node.write(
        "etc/kubernetes/kubelet.conf.d/90-kubelet-authz.conf",
        &dropin_text(&node.p("var/lib/kubelet-authz/pki/ca.crt")),
    );
    node.write(
        "etc/systemd/system/kubelet.service.d/90-kubelet-authz.conf",
        &systemd_dropin_text(
            UnitDropin::KubeadmConfigArgs,
            Path::new("/usr/bin/kubelet"),
            &node.p("var/lib/kubelet/config.yaml"),
            &node.p("etc/kubernetes/kubelet.conf.d"),
        ),
    );
    node.boot_configured();
    assert_eq!(node.listen_addrs(), vec![IpAddr::from([127, 0, 0, 1])]);

    let pid = node.systemd().pid().unwrap();
    let out = node.agent("configure", "30s");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("adopted"), "{}", stderr(&out));
    assert_eq!(node.systemd().pid().unwrap(), pid);

    let out = node.agent("unconfigure", "30s");
    assert!(out.status.success(), "{}", stderr(&out));
    // The files as they were, but the directories the first boot made (empty now).
    let mut want = before;
    for dir in [
        "etc/kubernetes",
        "etc/kubernetes/kubelet.conf.d",
        "var/lib/kubelet-authz",
    ] {
        want.insert(dir.to_string(), "dir 755".to_string());
    }
    assert_eq!(node.snapshot(&[]), want);
    assert_eq!(node.probe(&node.alice()), Probe::Answered(200));
    assert_eq!(node.listen_addrs(), vec![IpAddr::from([0, 0, 0, 0])]);
}

/// A node moved behind the proxy by hand, the manual way (the drop-in copied, nodeadm's unit left
/// without `--config-dir`): configure completes it, and unconfigure removes the hand-copied drop-in
/// too (it is byte for byte the agent's).
#[test]
fn a_hand_copied_dropin_is_the_agents_and_is_removed() {
    use kubelet_authz_node::configure::dropin_text;
    let node = Node::eks();
    let before = node.snapshot(&[]);
    node.write(
        "etc/kubernetes/kubelet/config.json.d/90-kubelet-authz.conf",
        &dropin_text(&node.p("var/lib/kubelet-authz/pki/ca.crt")),
    );
    let out = node.agent("configure", "30s");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node.probe(&node.proxy()), Probe::Answered(200));
    let out = node.agent("unconfigure", "30s");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node.snapshot(&[]), before);
    assert_eq!(node.probe(&node.alice()), Probe::Answered(200));
}

/// A node moved behind the proxy by hand without `configure` (no backup record; the drop-ins are
/// byte for byte the agent's): `unconfigure` still takes it off the proxy.
#[test]
fn a_node_configured_by_hand_is_unconfigured() {
    use kubelet_authz_node::configure::{dropin_text, systemd_dropin_text, UnitDropin};
    let node = Node::eks();
    let before = node.snapshot(&[]);
    let out = assert_cmd::Command::cargo_bin("kubelet-authz-node")
        .unwrap()
        .args(["pki", "--pki-dir"])
        .arg(node.p("var/lib/kubelet-authz/pki"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    node.write(
        "etc/kubernetes/kubelet/config.json.d/90-kubelet-authz.conf",
        &dropin_text(&node.p("var/lib/kubelet-authz/pki/ca.crt")),
    );
    node.write(
        "etc/systemd/system/kubelet.service.d/90-kubelet-authz.conf",
        &systemd_dropin_text(
            UnitDropin::NodeadmExecStart,
            &bin_dir().join("kubelet-authz-kubelet"),
            &node.p("etc/kubernetes/kubelet/config.json"),
            &node.p("etc/kubernetes/kubelet/config.json.d"),
        ),
    );
    node.systemd().stop().unwrap();
    node.boot_configured();

    let out = node.agent("unconfigure", "30s");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no record of a configure, but"),
        "{}",
        stderr(&out)
    );
    let mut want = before;
    for dir in [
        "etc/systemd/system/kubelet.service.d",
        "var/lib/kubelet-authz",
    ] {
        want.insert(dir.to_string(), "dir 755".to_string());
    }
    assert_eq!(node.snapshot(&[]), want);
    assert_eq!(node.probe(&node.alice()), Probe::Answered(200));
    assert_eq!(node.listen_addrs(), vec![IpAddr::from([0, 0, 0, 0])]);
}
