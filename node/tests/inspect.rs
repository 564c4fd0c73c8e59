//! `kubelet-authz-node inspect`, run as an operator runs it, on fixture files: a kubeadm YAML base
//! with drop-ins (and a `.yaml` file the kubelet does not read), an EKS AL2023 JSON base with
//! `tlsMinVersion: VersionTLS13` and its `config.json.d/`; errors are one line and exit 2.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use assert_cmd::Command;
use rstest::rstest;
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn inspect(args: &[&str]) -> std::process::Output {
    Command::cargo_bin("kubelet-authz-node")
        .unwrap()
        .arg("inspect")
        .args(args)
        .output()
        .unwrap()
}

fn inspect_json(args: &[&str]) -> Value {
    let out = inspect(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn path(rel: &str) -> String {
    fixtures().join(rel).display().to_string()
}

#[test]
fn kubeadm_yaml_with_dropins() {
    let v = inspect_json(&[
        "--kubelet-config",
        &path("kubeadm/config.yaml"),
        "--config-dir",
        &path("kubeadm/conf.d"),
        "-o",
        "json",
    ]);
    // 90-kubelet-authz.conf is applied; 95-ignored.yaml is not (it would say 0.0.0.0:10251).
    assert_eq!(v["address"], "127.0.0.1");
    assert_eq!(v["port"], 10250);
    assert_eq!(
        v["authentication"]["x509"]["clientCAFile"],
        "/var/lib/kubelet-authz/pki/ca.crt"
    );
    assert_eq!(v["authentication"]["webhook"]["enabled"], false);
    assert_eq!(v["authentication"]["webhook"]["cacheTTL"], "0s");
    assert_eq!(v["authorization"]["mode"], "Webhook");
    // Maps merge; lists are replaced by the later file.
    assert_eq!(
        v["featureGates"],
        json!({"RotateKubeletServerCertificate": true, "GracefulNodeShutdown": true})
    );
    assert_eq!(
        v["tlsCipherSuites"],
        json!([
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
            "TLS_AES_128_GCM_SHA256"
        ])
    );
    assert_eq!(v["kind"], "KubeletConfiguration");
    assert_eq!(
        v["envoy"],
        json!({
            "tlsMinimumProtocolVersion": "TLSv1_2",
            "cipherSuites": ["ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"]
        })
    );
}

#[test]
fn kubeadm_yaml_alone() {
    let v = inspect_json(&["--kubelet-config", &path("kubeadm/config.yaml")]);
    assert_eq!(v["address"], "0.0.0.0", "the default, filled in");
    assert_eq!(v["authentication"]["webhook"]["enabled"], true);
    assert_eq!(
        v["envoy"]["cipherSuites"],
        json!(["ECDHE-RSA-AES128-GCM-SHA256"])
    );
}

#[rstest]
#[case::json_alone(false)]
#[case::with_config_json_d(true)]
fn eks_json_tls13_is_never_tls12(#[case] with_dir: bool) {
    let base = path("eks/config.json");
    let dir = path("eks/config.json.d");
    let mut args = vec!["--kubelet-config", base.as_str(), "-o", "json"];
    if with_dir {
        args.extend(["--config-dir", dir.as_str()]);
    }
    let v = inspect_json(&args);
    assert_eq!(v["envoy"]["tlsMinimumProtocolVersion"], "TLSv1_3");
    assert_eq!(v["envoy"]["cipherSuites"], json!([]));
    assert_eq!(v["tlsMinVersion"], "VersionTLS13");
    assert_eq!(v["maxPods"], if with_dir { 58 } else { 29 });
}

#[test]
fn yaml_output() {
    let out = inspect(&["--kubelet-config", &path("eks/config.json"), "-o", "yaml"]);
    assert!(out.status.success());
    let v: Value = serde_yaml_ng::from_slice(&out.stdout).unwrap();
    assert_eq!(v["envoy"]["tlsMinimumProtocolVersion"], "TLSv1_3");
}

/// Run `inspect` on a base file and drop-ins written to a temporary directory; the stderr line.
fn failing(base: &str, dropins: &[(&str, &str)], extra: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    std::fs::write(&cfg, base).unwrap();
    let dir = tmp.path().join("conf.d");
    std::fs::create_dir(&dir).unwrap();
    for (name, text) in dropins {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let mut args = vec![
        "--kubelet-config".to_string(),
        cfg.display().to_string(),
        "--config-dir".to_string(),
        dir.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = inspect(&args);
    assert_eq!(out.status.code(), Some(2), "exit code");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err.replace(&tmp.path().display().to_string(), "TMP")
}

const HEAD: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

#[rstest]
#[case::unknown_field_in_a_dropin(
    &[("10-a.conf", "authentication:\n  webhok:\n    enabled: false\n")],
    &[],
    "kubelet-authz-node: TMP/conf.d/10-a.conf: authentication.webhok: unknown field"
)]
#[case::unknown_tls_name(
    &[("10-a.conf", "tlsCipherSuites: [TLS_NOPE]\n")],
    &[],
    "kubelet-authz-node: TMP/conf.d/10-a.conf: tlsCipherSuites[0]: unknown cipher suite \"TLS_NOPE\""
)]
#[case::unknown_tls_version(
    &[("20-b.conf", "tlsMinVersion: VersionTLS99\n")],
    &[],
    "kubelet-authz-node: TMP/conf.d/20-b.conf: tlsMinVersion: unknown TLS version"
)]
#[case::bad_output(&[], &["-o", "table"], "kubelet-authz-node: -o table: unknown output format; use json or yaml")]
fn errors_are_one_line_exit_2(
    #[case] dropins: &[(&str, &str)],
    #[case] extra: &[&str],
    #[case] want: &str,
) {
    let dropins: Vec<(&str, String)> = dropins
        .iter()
        .map(|(n, b)| (*n, format!("{HEAD}{b}")))
        .collect();
    let dropins: Vec<(&str, &str)> = dropins.iter().map(|(n, b)| (*n, b.as_str())).collect();
    let err = failing(HEAD, &dropins, extra);
    assert!(err.starts_with(want), "{err}");
}

#[test]
fn a_bad_yaml_file_in_the_dropin_dir_is_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    std::fs::write(&cfg, HEAD).unwrap();
    let dir = tmp.path().join("conf.d");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("10-x.yaml"), "not: [valid").unwrap();
    std::fs::write(dir.join("10-x.conf.swp"), "\0\0").unwrap();
    let out = inspect(&[
        "--kubelet-config",
        cfg.to_str().unwrap(),
        "--config-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn missing_config_dir_is_named() {
    let out = inspect(&[
        "--kubelet-config",
        &path("kubeadm/config.yaml"),
        "--config-dir",
        "/nonexistent/kubelet.conf.d",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("kubelet-authz-node: /nonexistent/kubelet.conf.d: cannot read the kubelet's drop-in directory (--config-dir)"),
        "{err}"
    );
}

#[test]
fn missing_config_file_is_named() {
    let out = inspect(&["--kubelet-config", "/nonexistent/config.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("kubelet-authz-node: /nonexistent/config.yaml: cannot read the kubelet configuration file"),
        "{err}"
    );
}

#[test]
fn usage_error_exit_2() {
    let out = inspect(&[]);
    assert_eq!(out.status.code(), Some(2));
}

/// The kubelet walks its `--config-dir` with Go's `filepath.WalkDir`, which does not follow a
/// symbolic link, not even the root: a symlinked drop-in directory contributes nothing.
#[test]
fn a_symlinked_config_dir_is_not_walked_as_by_the_kubelet() {
    let tmp = tempfile::tempdir().unwrap();
    let link = tmp.path().join("kubelet.conf.d");
    std::os::unix::fs::symlink(fixtures().join("kubeadm/conf.d"), &link).unwrap();
    let v = inspect_json(&[
        "--kubelet-config",
        &path("kubeadm/config.yaml"),
        "--config-dir",
        link.to_str().unwrap(),
    ]);
    assert_eq!(
        v["address"], "0.0.0.0",
        "90-kubelet-authz.conf was not read"
    );
    // Subdirectories of a real directory are walked.
    let real = tmp.path().join("real.d");
    std::fs::create_dir_all(real.join("sub")).unwrap();
    std::fs::copy(
        fixtures().join("kubeadm/conf.d/90-kubelet-authz.conf"),
        real.join("sub/90-kubelet-authz.conf"),
    )
    .unwrap();
    let v = inspect_json(&[
        "--kubelet-config",
        &path("kubeadm/config.yaml"),
        "--config-dir",
        real.to_str().unwrap(),
    ]);
    assert_eq!(v["address"], "127.0.0.1");
}
