//! `kubectl kubelet-authz check-config --behind-proxy FILE [--config-dir DIR]`: the profile of a
//! kubelet only the proxy can reach. The shipped drop-in passes (alone, and merged over a kubeadm
//! base); each way around the proxy is one finding and exit 1; input errors are exit 2.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use rstest::rstest;
use serde_json::Value;

fn bin() -> Command {
    Command::cargo_bin("kubectl-kubelet_authz").unwrap()
}

/// A kubeadm-style base configuration (webhook authentication on, the cluster CA, every address).
fn base() -> String {
    format!(
        "{}/tests/fixtures/kubelet-config-cis.yaml",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn shipped_dropin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../envoy/kubernetes/node/90-kubelet-authz.conf")
}

const HEAD: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

/// A drop-in directory holding the shipped drop-in plus `extra` files.
fn dropin_dir(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(shipped_dropin(), dir.path().join("90-kubelet-authz.conf")).unwrap();
    for (name, text) in extra {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn run(args: &[&str]) -> (Option<i32>, Value, String) {
    let out = bin()
        .arg("check-config")
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code(),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn failed(v: &Value) -> Vec<String> {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn shipped_dropin_alone_passes() {
    let (code, v, err) = run(&["--behind-proxy", shipped_dropin().to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(v["profile"], "behind-proxy");
    assert_eq!(v["passed"], true);
    assert_eq!(v["checks"].as_array().unwrap().len(), 6);
}

#[test]
fn base_with_the_shipped_dropin_passes() {
    let dir = dropin_dir(&[("20-site.yaml", "not read: only *.conf files are drop-ins")]);
    let (code, v, err) = run(&[
        "--behind-proxy",
        &base(),
        "--config-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(failed(&v).is_empty(), "{v}");
    assert_eq!(v["sources"].as_array().unwrap().len(), 2);
}

#[test]
fn base_alone_fails_with_each_way_around() {
    let (code, v, _) = run(&["--behind-proxy", &base()]);
    assert_eq!(code, Some(1));
    assert_eq!(
        failed(&v),
        ["loopback", "webhook-authentication-off", "per-node-ca"]
    );
    // The table names the fix.
    bin()
        .args(["check-config", "--behind-proxy", &base()])
        .assert()
        .code(1)
        .stdout(predicates::str::contains(
            "set `authentication.webhook.enabled: false`",
        ))
        .stdout(predicates::str::contains(
            "3 of 6 checks failed (behind the proxy)",
        ));
}

#[rstest]
#[case::every_address("address: 0.0.0.0\n", "loopback")]
#[case::node_ip("address: 192.168.1.10\n", "loopback")]
#[case::webhook_tokens(
    "authentication:\n  webhook:\n    enabled: true\n",
    "webhook-authentication-off"
)]
#[case::anonymous("authentication:\n  anonymous:\n    enabled: true\n", "anonymous-off")]
#[case::cluster_ca(
    "authentication:\n  x509:\n    clientCAFile: /etc/kubernetes/pki/ca.crt\n",
    "per-node-ca"
)]
#[case::always_allow("authorization:\n  mode: AlwaysAllow\n", "authorization-webhook")]
#[case::read_only_port("readOnlyPort: 10255\n", "read-only-port-off")]
fn each_bypass_fails(#[case] body: &str, #[case] id: &str) {
    // A later drop-in undoes one setting of the proxy's.
    let dir = dropin_dir(&[("99-site.conf", &format!("{HEAD}{body}"))]);
    let (code, v, err) = run(&[
        "--behind-proxy",
        &base(),
        "--config-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(failed(&v), [id]);
}

#[test]
fn an_earlier_dropin_cannot_undo_the_proxys() {
    let dir = dropin_dir(&[(
        "10-site.conf",
        &format!("{HEAD}address: 0.0.0.0\nauthentication:\n  webhook:\n    enabled: true\n"),
    )]);
    let (code, _, err) = run(&[
        "--behind-proxy",
        &base(),
        "--config-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn config_dir_applies_to_the_cis_report_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("10-anon.conf"),
        format!("{HEAD}authentication:\n  anonymous:\n    enabled: true\n"),
    )
    .unwrap();
    let (code, v, _) = run(&[&base(), "--config-dir", dir.path().to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(v.get("profile").is_none());
    assert!(failed(&v).contains(&"4.2.1".to_string()), "{v}");
}

#[rstest]
#[case::unknown_field(&[("10-a.conf", "authentication:\n  webhok:\n    enabled: false\n")], "10-a.conf: authentication.webhok: unknown field")]
#[case::unknown_cipher(&[("10-a.conf", "tlsCipherSuites: [TLS_NOPE]\n")], "10-a.conf: tlsCipherSuites[0]: unknown cipher suite")]
#[case::other_kind(&[("10-a.conf", "")], "")]
fn input_errors_are_exit_2(#[case] files: &[(&str, &str)], #[case] needle: &str) {
    let files: Vec<(&str, String)> = files
        .iter()
        .map(|(n, b)| {
            let text = if b.is_empty() {
                "apiVersion: v1\nkind: Pod\n".to_string()
            } else {
                format!("{HEAD}{b}")
            };
            (*n, text)
        })
        .collect();
    let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let dir = dropin_dir(&files);
    let (code, _, err) = run(&[
        "--behind-proxy",
        &base(),
        "--config-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let needle = if needle.is_empty() {
        "10-a.conf: unsupported kind `Pod`"
    } else {
        needle
    };
    assert!(err.contains(needle), "{err}");
}

#[test]
fn missing_config_dir_is_exit_2() {
    let (code, _, err) = run(&["--behind-proxy", &base(), "--config-dir", "/nonexistent.d"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("cannot read the drop-in directory `/nonexistent.d` (--config-dir)"),
        "{err}"
    );
}

#[test]
fn behind_proxy_and_flags_conflict() {
    let (code, _, err) = run(&["--behind-proxy", "--flags", &base()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot be used with"), "{err}");
}
