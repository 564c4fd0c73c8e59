//! kubectl's plugin-completion convention, with the real `kubectl`: `kubectl kubelet-authz <TAB>`
//! makes kubectl (1.26+) run `kubectl_complete-kubelet_authz` from PATH; both executables of this
//! crate are put on PATH exactly as an install would, and kubectl's own `__complete` answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

fn bin_dir() -> PathBuf {
    let plugin = PathBuf::from(env!("CARGO_BIN_EXE_kubectl-kubelet_authz"));
    let complete = PathBuf::from(env!("CARGO_BIN_EXE_kubectl_complete-kubelet_authz"));
    assert_eq!(plugin.parent(), complete.parent(), "installed side by side");
    plugin.parent().unwrap().to_path_buf()
}

/// What the real kubectl prints on stdout for `kubectl __complete kubelet-authz WORDS...`.
fn kubectl_complete(words: &[&str]) -> Vec<String> {
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("kubectl")
        .arg("__complete")
        .arg("kubelet-authz")
        .args(words)
        .env("PATH", path)
        .env("KUBECONFIG", "/dev/null")
        .output()
        .expect("kubectl is on PATH (the machine image has it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn kubectl_completes_the_plugins_subcommands() {
    let out = kubectl_complete(&[""]);
    for sub in [
        "can-i",
        "who-can",
        "audit",
        "suggest-role",
        "check-config",
        "impact",
        "audit-log",
    ] {
        assert!(out.iter().any(|l| l == sub), "{sub} missing: {out:?}");
    }
    assert_eq!(out.last().map(String::as_str), Some(":4"), "{out:?}");
}

#[test]
fn kubectl_completes_flags_values_and_kubelet_paths() {
    let versions = kubectl_complete(&["can-i", "--kubelet-version", "1.3"]);
    assert_eq!(
        versions.first().map(String::as_str),
        Some("1.36"),
        "{versions:?}"
    );
    assert!(versions.iter().any(|v| v == "1.33"), "{versions:?}");
    let paths = kubectl_complete(&["can-i", "get", "/metrics/"]);
    assert!(paths.iter().any(|p| p == "/metrics/cadvisor"), "{paths:?}");
    assert!(
        paths
            .iter()
            .all(|p| p.starts_with("/metrics/") || p.starts_with(':')),
        "{paths:?}"
    );
    let flags = kubectl_complete(&["who-can", "--rb"]);
    assert!(flags.iter().any(|f| f == "--rbac-file"), "{flags:?}");
}
