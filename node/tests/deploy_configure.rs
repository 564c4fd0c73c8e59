//! The privileged mode's objects: the `configure` component (envoy/kubernetes/configure)
//! built onto the base with `kubectl kustomize` (it also adds envoy/kubernetes/configure/unconfigure-daemonset.yaml).
//! Both validate (`kubernetes-validate --strict`), and their commands are command lines the agent
//! accepts. kubectl and .venv/bin/kubernetes-validate must be installed (scripts/setup.sh).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser as _;
use kubelet_authz_node::cli::{Cli, Command as Sub};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `kubectl kustomize` of a kustomization that takes the base and the component, as an operator
/// writes it next to a checkout.
fn build_with_component(dir: &Path) -> Vec<Value> {
    std::os::unix::fs::symlink(repo().join("envoy/kubernetes"), dir.join("upstream")).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources: [upstream]\ncomponents: [upstream/configure]\n",
    )
    .unwrap();
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("built.yaml"), &out.stdout).unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn validate(file: &Path) {
    let kv = repo().join(".venv/bin/kubernetes-validate");
    let out = Command::new(&kv)
        .args(["--strict", "-k", "1.33.0"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/setup.sh installs it)", kv.display()));
    assert!(
        out.status.success(),
        "{}: {}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn container<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn argv(c: &Value) -> Vec<String> {
    c["command"]
        .as_array()
        .unwrap()
        .iter()
        .chain(c["args"].as_array().into_iter().flatten())
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_configure_component_runs_configure_first_privileged_with_the_host_root() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = build_with_component(tmp.path());
    validate(&tmp.path().join("built.yaml"));
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet" && d["metadata"]["name"] == "kubelet-authz")
        .unwrap();
    let spec = &ds["spec"]["template"]["spec"];
    let names: Vec<&str> = spec["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"configure"));
    assert_eq!(names.get(1), Some(&"init"));
    assert_eq!(spec["hostPID"], true);
    assert_eq!(spec["hostNetwork"], true);
    let configure = container(&spec["initContainers"], "configure");
    let init = container(&spec["initContainers"], "init");
    assert_eq!(configure["image"], init["image"]);
    assert_eq!(configure["securityContext"]["privileged"], true);
    let mount = configure["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/host")
        .unwrap();
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(volume["hostPath"]["path"], "/");
    let cli = Cli::try_parse_from(argv(configure)).unwrap_or_else(|e| panic!("{e}"));
    let Sub::Configure(args) = cli.command else {
        panic!("not configure: {:?}", argv(configure));
    };
    assert_eq!(args.host_root, Path::new("/host"));
    assert_eq!(args.distribution, "auto");
}

#[test]
fn the_unconfigure_daemonset_serves_the_remove_label() {
    let file = repo().join("envoy/kubernetes/configure/unconfigure-daemonset.yaml");
    validate(&file);
    let ds: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["nodeSelector"]["kubelet-authz.io/proxy"], "remove");
    assert_eq!(spec["hostPID"], true);
    assert_eq!(spec["hostNetwork"], true);
    let c = container(&spec["containers"], "unconfigure");
    let base: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo().join("envoy/kubernetes/daemonset.yaml")).unwrap(),
    )
    .unwrap();
    let init = container(&base["spec"]["template"]["spec"]["initContainers"], "init");
    assert_eq!(c["image"], init["image"]);
    assert_eq!(c["securityContext"]["privileged"], true);
    let cli = Cli::try_parse_from(argv(c)).unwrap_or_else(|e| panic!("{e}"));
    let Sub::Unconfigure(args) = cli.command else {
        panic!("not unconfigure: {:?}", argv(c));
    };
    assert_eq!(args.host_root, Path::new("/host"));
    assert!(args.stay);
    // The pod outlives the proxy pod's drain (the base's grace period) before it gives up.
    let grace = base["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        args.timeout.as_secs() >= grace,
        "{:?} < {grace}s",
        args.timeout
    );
}
