//! The files for node pools built fresh (`envoy/node/`): each parses, and the kubelet settings in
//! it are the shipped drop-in's (`envoy/kubernetes/node/90-kubelet-authz.conf`, the engine's
//! `PROXY_DROPIN`), so a node built from them is configured as `kubelet-authz-node configure`
//! would configure it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

use kubelet_authz::kubeletconfig::{PROXY_DROPIN, PROXY_DROPIN_NAME};
use kubelet_authz_node::configure::{distribution, systemd_dropin_text, SYSTEMD_DROPIN_NAME};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(repo().join(path)).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The drop-in's settings: its document without apiVersion and kind.
fn dropin_settings() -> Value {
    let mut doc: Value = serde_yaml_ng::from_str(PROXY_DROPIN).unwrap();
    let map = doc.as_object_mut().unwrap();
    map.remove("apiVersion");
    map.remove("kind");
    doc
}

/// The image of the DaemonSet's `init` container (the agent's image).
fn agent_image() -> String {
    let ds = yaml("envoy/kubernetes/daemonset.yaml");
    ds["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "init")
        .unwrap()["image"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn shipped_dropin_file_is_the_engines() {
    let text =
        std::fs::read_to_string(repo().join("envoy/kubernetes/node").join(PROXY_DROPIN_NAME))
            .unwrap();
    assert_eq!(text, PROXY_DROPIN);
}

#[test]
fn cloud_init_writes_the_dropins_and_makes_the_ca_first() {
    let text = std::fs::read_to_string(repo().join("envoy/node/cloud-init.yaml")).unwrap();
    assert!(
        text.starts_with("#cloud-config\n"),
        "cloud-init needs the header"
    );
    let doc = yaml("envoy/node/cloud-init.yaml");
    let kubeadm = distribution("kubeadm").unwrap();
    let files = doc["write_files"].as_array().unwrap();
    let content = |path: &str| -> String {
        files
            .iter()
            .find(|f| f["path"] == path)
            .unwrap_or_else(|| panic!("no write_files entry {path}"))["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        content(&format!("{}/{PROXY_DROPIN_NAME}", kubeadm.config_dir)),
        PROXY_DROPIN
    );
    assert_eq!(
        content(&format!(
            "{}/{SYSTEMD_DROPIN_NAME}",
            kubeadm.systemd_dropin_dir
        )),
        systemd_dropin_text(
            kubeadm.unit_dropin,
            Path::new(kubeadm.kubelet_binary),
            Path::new(kubeadm.kubelet_config),
            Path::new(kubeadm.config_dir),
        )
    );
    // The CA with the agent's own image (`kubelet-authz-node pki`), on the state directory.
    let runcmd: Vec<Vec<String>> = doc["runcmd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c.as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    let image = agent_image();
    let run = runcmd
        .iter()
        .find(|c| c.get(3).is_some_and(|w| w == "run"))
        .expect("a `ctr run` of the agent");
    assert!(run.contains(&image), "{run:?} runs {image}");
    let agent_args: Vec<&str> = run
        .iter()
        .skip_while(|w| *w != "/kubelet-authz-node")
        .map(String::as_str)
        .collect();
    assert_eq!(
        agent_args,
        [
            "/kubelet-authz-node",
            "pki",
            "--pki-dir",
            "/var/lib/kubelet-authz/pki"
        ]
    );
    assert!(run
        .iter()
        .any(|w| w.contains("src=/var/lib/kubelet-authz,dst=/var/lib/kubelet-authz")));
    assert!(runcmd.iter().any(|c| c.first().is_some_and(|w| w == "ctr")
        && c.contains(&image)
        && c.contains(&"pull".to_string())));
}

#[test]
fn al2023_nodeconfig_holds_the_dropins_settings_and_the_label() {
    let doc = yaml("envoy/node/nodeconfig.yaml");
    assert_eq!(doc["apiVersion"], "node.eks.aws/v1alpha1");
    assert_eq!(doc["kind"], "NodeConfig");
    assert_eq!(doc["spec"]["kubelet"]["config"], dropin_settings());
    let flags: Vec<&str> = doc["spec"]["kubelet"]["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(flags.contains(&"--node-labels=kubelet-authz.io/proxy=enabled"));
    // The label is the DaemonSet's node selector.
    let ds = yaml("envoy/kubernetes/daemonset.yaml");
    assert_eq!(
        ds["spec"]["template"]["spec"]["nodeSelector"]["kubelet-authz.io/proxy"],
        "enabled"
    );
}

#[test]
fn kubeadm_patch_holds_the_dropins_settings() {
    let mut doc = yaml("envoy/node/kubeletconfiguration+strategic.yaml");
    assert_eq!(doc["apiVersion"], "kubelet.config.k8s.io/v1beta1");
    assert_eq!(doc["kind"], "KubeletConfiguration");
    let map = doc.as_object_mut().unwrap();
    map.remove("apiVersion");
    map.remove("kind");
    assert_eq!(doc, dropin_settings());
}
