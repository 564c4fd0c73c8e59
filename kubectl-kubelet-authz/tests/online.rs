//! Online mode against the stand-in API server (`kubelet_authz_standins::apiserver`, started in
//! process on a loopback port): real TLS, tokens, SubjectAccessReview, SelfSubjectAccessReview,
//! Node and RBAC reads, all decided by the RBAC evaluator over the shared fixtures. The plugin
//! binary runs as a process against it. (The stand-ins crate is a dev-dependency; it does not
//! build wasmtime, and the plugin itself depends on none of our other crates but the engine.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command as Proc;

use assert_cmd::Command;
use kubelet_authz_standins::apiserver::{ApiServer, ApiServerConfig};
use predicates::prelude::*;
use serde_json::Value;

/// A running stand-in API server, on its own runtime (the test thread blocks on the plugin's
/// process while the server answers), stopped when dropped.
struct Server {
    runtime: tokio::runtime::Runtime,
    server: Option<ApiServer>,
    dir: tempfile::TempDir,
    url: String,
    ca: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown());
        }
    }
}

fn shared(name: &str) -> String {
    format!(
        "{}/../authz/tests/fixtures/rbac/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn start() -> Server {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = ApiServerConfig::new(dir.path().join("pki"))
        .tokens_csv(
            "admin-token,root,1,\"system:masters\"\nalice-token,alice,2,\"observability\"\n",
        )
        .rbac_file(Path::new(&shared("seed-roles.yaml")))
        .unwrap()
        .rbac_file(Path::new(&shared("tricky-roles.yaml")))
        .unwrap()
        .nodes_yaml(
            "apiVersion: v1\nkind: Node\nmetadata: {name: old-worker}\nstatus:\n  nodeInfo: {kubeletVersion: v1.31.4}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: new-worker}\nstatus:\n  nodeInfo: {kubeletVersion: v1.36.0}\n",
            "nodes.yaml",
        );
    let server = runtime
        .block_on(ApiServer::start(config))
        .unwrap_or_else(|e| panic!("starting the stand-in API server: {e}"));
    let url = server.url();
    let ca = server.ca_cert().to_path_buf();
    Server {
        runtime,
        server: Some(server),
        dir,
        url,
        ca,
    }
}

impl Server {
    fn kubeconfig(&self, token: &str) -> String {
        let path = self.dir.path().join(format!("kubeconfig-{token}"));
        write_kubeconfig(&path, &self.url, &self.ca, token);
        path.to_str().unwrap().to_string()
    }

    fn cmd(&self, token: &str, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("kubectl-kubelet_authz").unwrap();
        c.args(args).args(["--kubeconfig", &self.kubeconfig(token)]);
        c
    }
}

fn write_kubeconfig(path: &Path, url: &str, ca: &Path, token: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: s\n  cluster: {{server: \"{url}\", certificate-authority: \"{}\"}}\nusers:\n- name: u\n  user: {{token: {token}}}\ncontexts:\n- name: c\n  context: {{cluster: s, user: u}}\ncurrent-context: c\n",
        ca.display()
    );
    std::fs::write(path, text).unwrap();
}

#[test]
fn online_commands() {
    let s = start();

    // SelfSubjectAccessReview as alice (group observability).
    s.cmd("alice-token", &["can-i", "/pods", "-o", "json"])
        .assert()
        .code(0);
    let out = s
        .cmd("alice-token", &["can-i", "/pods", "-o", "json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mode"], "online");
    assert_eq!(v["user"], Value::Null);
    assert_eq!(v["subresource"], "pods");
    s.cmd("alice-token", &["can-i", "/exec/a/b/c"])
        .assert()
        .code(1);

    // SubjectAccessReview for --as.
    s.cmd(
        "admin-token",
        &[
            "can-i",
            "/metrics",
            "--as",
            "system:serviceaccount:monitoring:prometheus",
        ],
    )
    .assert()
    .code(0)
    .stdout("yes (get nodes/metrics)\n");
    s.cmd(
        "admin-token",
        &[
            "can-i",
            "/exec/a/b/c",
            "--as",
            "debugger",
            "--strict-upgrade",
            "false",
        ],
    )
    .assert()
    .code(0);
    s.cmd("admin-token", &["can-i", "/exec/a/b/c", "--as", "debugger"])
        .assert()
        .code(1);

    // The kubelet version comes from the Node.
    s.cmd(
        "admin-token",
        &[
            "can-i",
            "/pods",
            "--as",
            "a",
            "--as-group",
            "observability",
            "--node",
            "old-worker",
        ],
    )
    .assert()
    .code(1)
    .stdout(predicate::str::contains("kubelet 1.31 predates"));
    s.cmd(
        "admin-token",
        &[
            "can-i",
            "/pods",
            "--as",
            "a",
            "--as-group",
            "observability",
            "--node",
            "new-worker",
        ],
    )
    .assert()
    .code(0);
    // ... unless given.
    s.cmd(
        "admin-token",
        &[
            "can-i",
            "/pods",
            "--as",
            "a",
            "--as-group",
            "observability",
            "--node",
            "old-worker",
            "--kubelet-version",
            "1.36",
        ],
    )
    .assert()
    .code(0);
    // A Node that does not exist, or may not be read: cluster error.
    s.cmd("admin-token", &["can-i", "/pods", "--node", "missing"])
        .assert()
        .code(3);
    s.cmd("alice-token", &["can-i", "/pods", "--node", "old-worker"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("--kubelet-version"));

    // RBAC lists: allowed for system:masters, forbidden for alice.
    s.cmd("admin-token", &["who-can", "/pods"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("observability"));
    s.cmd("admin-token", &["audit", "--fail-on", "critical"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("kubelet-proxy-get"));
    s.cmd(
        "admin-token",
        &["impact", "--from-version", "1.31", "--to-version", "1.36"],
    )
    .assert()
    .code(1);
    s.cmd("alice-token", &["audit"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(
            "listing clusterroles is forbidden",
        ))
        .stderr(predicate::str::contains("--rbac-file"));

    // An unknown token: the API server answers 401, a cluster error.
    s.cmd("wrong-token", &["can-i", "/pods"]).assert().code(3);
}

/// The real `kubectl auth can-i` (the binary on PATH) and `kubectl kubelet-authz can-i` agree on
/// every subresource check, against the same API server.
#[test]
fn real_kubectl_agrees_with_can_i() {
    let s = start();
    let kubeconfig = s.kubeconfig("admin-token");
    let users = [
        "debugger",
        "system:serviceaccount:monitoring:prometheus",
        "kube-apiserver-kubelet-client",
        "nobody",
    ];
    let paths = [
        ("GET", "/pods"),
        ("GET", "/metrics/cadvisor"),
        ("GET", "/healthz"),
        ("GET", "/statusz"),
        ("GET", "/flagz"),
        ("GET", "/configz"),
        ("POST", "/exec/ns/pod/ctr"),
        ("GET", "/exec/ns/pod/ctr"),
        ("HEAD", "/healthz"),
    ];
    let mut compared = 0;
    for user in users {
        for (method, path) in paths {
            let out = s
                .cmd(
                    "admin-token",
                    &["can-i", method, path, "--as", user, "-o", "json"],
                )
                .output()
                .unwrap();
            let v: Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{user} {method} {path}: {e}: {out:?}"));
            for check in v["checks"].as_array().unwrap() {
                let verb = check["verb"].as_str().unwrap();
                let sub = check["subresource"].as_str().unwrap();
                let ours = check["allowed"].as_bool().unwrap();
                // kubectl cannot ask for the empty verb (HEAD): `*` is what RBAC matches it with.
                let kubectl_verb = if verb.is_empty() { "*" } else { verb };
                let k = Proc::new("kubectl")
                    .args([
                        "--kubeconfig",
                        &kubeconfig,
                        "auth",
                        "can-i",
                        kubectl_verb,
                        "nodes",
                    ])
                    .arg(format!("--subresource={sub}"))
                    .args(["--as", user])
                    .output()
                    .expect("kubectl must be on PATH");
                let theirs = match k.status.code() {
                    Some(0) => true,
                    Some(1) => false,
                    other => panic!("kubectl {other:?}: {}", String::from_utf8_lossy(&k.stderr)),
                };
                assert_eq!(
                    ours, theirs,
                    "{user} {method} {path}: {verb} nodes/{sub}: plugin {ours}, kubectl {theirs}"
                );
                compared += 1;
            }
        }
    }
    assert!(compared >= 40, "compared only {compared} checks");
}

/// Drop what legitimately differs between a live cluster and files (`mode`, free-text reasons and
/// notes, the granting binding), keep every answer.
fn answers_only(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                // `grant`: only the local evaluator can name the binding; a SAR carries no such field.
                for k in ["mode", "reason", "notes", "grant"] {
                    m.remove(k);
                }
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

/// Online (the stand-in API server) and offline (`--rbac-file`, the same RBAC) give the same
/// answers for can-i, who-can and audit.
#[test]
fn online_and_offline_agree() {
    let s = start();
    let offline = |args: &[&str]| -> (Option<i32>, Value) {
        let out = Command::cargo_bin("kubectl-kubelet_authz")
            .unwrap()
            .args(args)
            .args(["-o", "json", "--rbac-file", &shared("seed-roles.yaml")])
            .args(["--rbac-file", &shared("tricky-roles.yaml")])
            .output()
            .unwrap();
        (
            out.status.code(),
            answers_only(serde_json::from_slice(&out.stdout).unwrap()),
        )
    };
    let online = |args: &[&str]| -> (Option<i32>, Value) {
        let out = s
            .cmd("admin-token", args)
            .args(["-o", "json"])
            .output()
            .unwrap();
        (
            out.status.code(),
            answers_only(serde_json::from_slice(&out.stdout).unwrap()),
        )
    };
    let mut cases: Vec<Vec<&str>> = Vec::new();
    for user in [
        "debugger",
        "system:serviceaccount:monitoring:prometheus",
        "nobody",
    ] {
        for path in [
            "/pods",
            "/metrics",
            "/statusz",
            "/exec/ns/pod/ctr",
            "/healthz",
        ] {
            cases.push(vec!["can-i", path, "--as", user]);
        }
    }
    for path in ["/pods", "/exec/ns/pod/ctr", "/metrics/cadvisor"] {
        cases.push(vec!["who-can", path]);
        cases.push(vec!["who-can", "create", path]);
    }
    cases.push(vec!["audit"]);
    for args in &cases {
        let (code_on, on) = online(args);
        let (code_off, off) = offline(args);
        assert_eq!(code_on, code_off, "{args:?}: exit codes");
        assert_eq!(on, off, "{args:?}: online and offline answers differ");
    }
}
