//! The stand-in API server against the real `kubectl` (v1.32 at `/usr/bin/kubectl`), and both
//! stand-in binaries started as processes (ready line on stdout, clean stop on SIGTERM).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Stdio;

use kubelet_authz_standins::apiserver::{ApiServer, ApiServerConfig};
use kubelet_authz_standins::client::Client;
use tokio::io::AsyncBufReadExt as _;

const KUBECTL: &str = "/usr/bin/kubectl";

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// The shared seed roles (`debugger` may `get nodes/proxy`).
fn seed_roles() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../authz/tests/fixtures/rbac/seed-roles.yaml")
}

async fn kubectl(home: &Path, kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    assert!(
        Path::new(KUBECTL).exists(),
        "{KUBECTL} is missing: install kubectl v1.32"
    );
    let out = tokio::process::Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_kubectl_auth_can_i_and_get() {
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::start(
        ApiServerConfig::new(dir.path().join("pki"))
            .tokens_file(&testdata("tokens.csv"))
            .unwrap()
            .rbac_file(&testdata("rbac.yaml"))
            .unwrap()
            .rbac_file(&seed_roles())
            .unwrap()
            .nodes_file(&testdata("nodes.yaml"))
            .unwrap(),
    )
    .await
    .unwrap();
    let kc = |token: &str| {
        let path = dir.path().join(format!("kubeconfig-{token}"));
        server.write_kubeconfig(&path, Some(token), None).unwrap();
        path
    };
    let (admin, alice, bob) = (kc("admin-token"), kc("alice-token"), kc("bob-token"));
    let home = dir.path();

    let (code, out, err) = kubectl(
        home,
        &admin,
        &[
            "auth",
            "can-i",
            "get",
            "nodes",
            "--subresource=proxy",
            "--as=alice",
        ],
    )
    .await;
    assert_eq!((code, out.trim()), (1, "no"), "{err}");
    let (code, out, err) = kubectl(
        home,
        &admin,
        &[
            "auth",
            "can-i",
            "get",
            "nodes",
            "--subresource=proxy",
            "--as=carol",
        ],
    )
    .await;
    assert_eq!((code, out.trim()), (0, "yes"), "{err}");
    let (code, out, err) = kubectl(home, &alice, &["auth", "can-i", "get", "nodes/metrics"]).await;
    assert_eq!((code, out.trim()), (0, "yes"), "{err}");
    let (code, out, err) = kubectl(home, &bob, &["auth", "can-i", "get", "nodes/metrics"]).await;
    assert_eq!((code, out.trim()), (1, "no"), "{err}");

    // What kubectl sent: protobuf SelfSubjectAccessReviews, decoded; `nodes/metrics` is a node
    // named `metrics`, and `--as` became impersonation.
    let records = server.records();
    assert_eq!(records.len(), 4);
    assert_eq!(records[0].kind, "SelfSubjectAccessReview");
    assert_eq!(records[0].caller, "alice");
    assert_eq!(
        records[0].request["spec"]["resourceAttributes"]["subresource"],
        "proxy"
    );
    assert_eq!(
        records[2].request["spec"]["resourceAttributes"]["name"],
        "metrics"
    );

    let (code, out, err) = kubectl(
        home,
        &admin,
        &[
            "auth",
            "can-i",
            "get",
            "nodes",
            "--subresource=proxy",
            "--as=debugger",
        ],
    )
    .await;
    assert_eq!((code, out.trim()), (0, "yes"), "{err}");

    let (code, out, err) = kubectl(home, &alice, &["get", "clusterroles"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("node-proxy"), "{out}");
    assert!(out.contains("kubelet-api-admin"), "{out}");
    let (code, out, err) = kubectl(home, &alice, &["get", "nodes"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("worker-old"), "{out}");
    let (code, _, err) = kubectl(home, &bob, &["get", "clusterroles"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("Forbidden"), "{err}");
    server.shutdown().await;
}

async fn ready_line(child: &mut tokio::process::Child) -> serde_json::Value {
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    serde_json::from_str(&line).unwrap()
}

async fn sigterm(mut child: tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binaries_report_ready_and_stop_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let mut api = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubelet-authz-apiserver"))
        .arg("--pki-dir")
        .arg(&pki)
        .arg("--tokens")
        .arg(testdata("tokens.csv"))
        .arg("--rbac")
        .arg(testdata("rbac.yaml"))
        .arg("--nodes")
        .arg(testdata("nodes.yaml"))
        .args(["--client-cert", "proxy=kubelet-authz-proxy:system:proxies"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ready = ready_line(&mut api).await;
    let url = ready["url"].as_str().unwrap().to_string();
    assert!(ready["clientCerts"]["proxy"]["cert"].is_string());
    let client = Client::new(Path::new(ready["ca"].as_str().unwrap()), None).unwrap();
    let resp = client.get(&format!("{url}/version"), &[]).await.unwrap();
    assert_eq!(resp.status, 200);

    let mut kubelet = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubelet-authz-kubelet"))
        .arg("--pki-dir")
        .arg(&pki)
        .arg("--client-ca")
        .arg(pki.join("ca.crt"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ready = ready_line(&mut kubelet).await;
    let resp = client
        .get(&format!("{}/pods", ready["url"].as_str().unwrap()), &[])
        .await
        .unwrap();
    assert_eq!(resp.json()["path"], "/pods");
    sigterm(kubelet).await;
    sigterm(api).await;
}
