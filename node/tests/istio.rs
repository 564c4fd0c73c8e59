//! `kubelet-authz-node istio-objects`: the per-node Istio objects from a Node List fixture
//! (labelled and unlabelled nodes, IPv4 and IPv6, several kubelet versions, one without a version).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::path::PathBuf;

use assert_cmd::Command;
use rstest::rstest;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/istio")
        .join(name)
}

fn generate(file: &str) -> Vec<Value> {
    generate_with(file, &[])
}

fn generate_with(file: &str, args: &[&str]) -> Vec<Value> {
    let out = Command::cargo_bin("kubelet-authz-node")
        .unwrap()
        .args(["istio-objects", "--nodes"])
        .arg(fixture(file))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

#[test]
fn exactly_the_labelled_nodes_objects_come_out() {
    let objects = generate("nodes.json");
    let ids: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    // Sorted by node name; nothing for the unlabelled control plane or `proxy=disabled`.
    assert_eq!(
        ids,
        [
            "Gateway/kubelet-worker-a",
            "WasmPlugin/kubelet-authz-worker-a",
            "VirtualService/kubelet-worker-a",
            "VirtualService/kube-apiserver-worker-a",
            "DestinationRule/kubelet-worker-a",
            "Deployment/kubelet-authz-gateway-worker-a",
            "Gateway/kubelet-worker-b",
            "WasmPlugin/kubelet-authz-worker-b",
            "VirtualService/kubelet-worker-b",
            "VirtualService/kube-apiserver-worker-b",
            "DestinationRule/kubelet-worker-b",
            "Deployment/kubelet-authz-gateway-worker-b",
        ]
    );
    for o in &objects {
        let labels = &o["metadata"]["labels"];
        assert_eq!(labels["kubelet-authz.io/per-node"], "true", "{o}");
        assert_eq!(o["metadata"]["namespace"], "kubelet-authz");
        // Nothing of the template's node is left.
        let text = o.to_string();
        assert!(
            !text.contains("worker-1") && !text.contains("10.0.0.11"),
            "{text}"
        );
    }
}

#[rstest]
#[case("worker-a", "2001:db8::a", "1.33")]
#[case("worker-b", "192.0.2.7", "1.34")]
fn a_nodes_objects_carry_its_name_address_and_version(
    #[case] node: &str,
    #[case] ip: &str,
    #[case] version: &str,
) {
    let objects = generate("nodes.json");
    let gw = format!("kubelet-{node}");
    let g = find(&objects, "Gateway", &gw);
    assert_eq!(g["spec"]["selector"]["kubelet-authz.io/node"], node);
    assert_eq!(g["spec"]["servers"][0]["bind"], ip);
    let wp = find(&objects, "WasmPlugin", &format!("kubelet-authz-{node}"));
    assert_eq!(
        wp["spec"]["selector"]["matchLabels"]["kubelet-authz.io/node"],
        node
    );
    assert_eq!(wp["spec"]["pluginConfig"]["nodeName"], node);
    assert_eq!(wp["spec"]["pluginConfig"]["kubeletVersion"], version);
    for vs in [gw.clone(), format!("kube-apiserver-{node}")] {
        assert_eq!(
            find(&objects, "VirtualService", &vs)["spec"]["gateways"],
            serde_json::json!([gw])
        );
    }
    let dr = find(&objects, "DestinationRule", &gw);
    assert_eq!(
        dr["spec"]["workloadSelector"]["matchLabels"]["kubelet-authz.io/node"],
        node
    );
    assert_eq!(dr["spec"]["trafficPolicy"]["tls"]["sni"], node);
    assert_eq!(
        dr["spec"]["trafficPolicy"]["tls"]["subjectAltNames"],
        serde_json::json!([node])
    );
    let d = find(
        &objects,
        "Deployment",
        &format!("kubelet-authz-gateway-{node}"),
    );
    assert_eq!(d["spec"]["template"]["spec"]["nodeName"], node);
    assert_eq!(
        d["spec"]["selector"]["matchLabels"]["kubelet-authz.io/node"],
        node
    );
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"]["kubelet-authz.io/node"],
        node
    );
    // The pods the Deployment makes are the ones the Gateway, WasmPlugin and DestinationRule select.
    let pod = &d["spec"]["template"]["metadata"]["labels"];
    for (k, v) in g["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod[k], v, "{k}");
    }
}

/// `--extension-api TrafficExtension` (Istio 1.30+): the same objects, with each WasmPlugin
/// replaced by a TrafficExtension of the same name that carries the very same plugin
/// configuration, module, phase, failure policy, selector and match.
#[test]
fn the_traffic_extension_variant_carries_the_wasm_plugins_configuration() {
    let plugins = generate("nodes.json");
    let extensions = generate_with("nodes.json", &["--extension-api", "TrafficExtension"]);
    assert_eq!(plugins.len(), extensions.len());
    let mut seen = 0;
    for (wp, te) in plugins.iter().zip(&extensions) {
        if wp["kind"] != "WasmPlugin" {
            assert_eq!(wp, te, "only the WasmPlugin changes");
            continue;
        }
        seen += 1;
        assert_eq!(te["kind"], "TrafficExtension");
        assert_eq!(te["apiVersion"], "extensions.istio.io/v1alpha1");
        assert_eq!(te["metadata"], wp["metadata"]);
        let (w, t) = (&wp["spec"], &te["spec"]);
        assert_eq!(
            t["wasm"]["pluginConfig"], w["pluginConfig"],
            "the same configuration"
        );
        for k in [
            "url",
            "imagePullPolicy",
            "pluginName",
            "failStrategy",
            "type",
        ] {
            assert_eq!(t["wasm"][k], w[k], "wasm.{k}");
        }
        for k in ["selector", "phase", "match"] {
            assert_eq!(t[k], w[k], "{k}");
        }
        assert_eq!(t["wasm"]["failStrategy"], "FAIL_RELOAD");
        assert!(t.get("lua").is_none() && t.get("url").is_none(), "{t}");
    }
    assert_eq!(seen, 2, "one per labelled node");
    let out = Command::cargo_bin("kubelet-authz-node")
        .unwrap()
        .args(["istio-objects", "--extension-api", "LuaFilter", "--nodes"])
        .arg(fixture("nodes.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown API is refused");
}

#[rstest]
#[case(
    "nodes-without-version.json",
    "node worker-new: no status.nodeInfo.kubeletVersion"
)]
#[case("not-a-list.json", "not a `kubectl get nodes -o json` List")]
fn bad_input_is_a_one_line_error_with_exit_2(#[case] file: &str, #[case] want: &str) {
    let out = Command::cargo_bin("kubelet-authz-node")
        .unwrap()
        .args(["istio-objects", "--nodes"])
        .arg(fixture(file))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "nothing printed on an error");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains(want), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn no_labelled_node_prints_nothing() {
    let out = Command::cargo_bin("kubelet-authz-node")
        .unwrap()
        .args(["istio-objects", "--nodes", "-"])
        .write_stdin(r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Node","metadata":{"name":"n"}}]}"#)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
}

/// The gateway pod's `node-ca` init: the CA first, then it waits while a wildcard listener holds
/// the kubelet port and ends once the kubelet is on loopback.
#[test]
fn pki_waits_for_the_kubelet_to_leave_the_wildcard_address() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let proc_net = dir.path().join("net");
    std::fs::create_dir(&proc_net).unwrap();
    let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
    // 0.0.0.0:10250 (0x280A) listening.
    let wildcard = format!("{header}   0: 00000000:280A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n");
    // 127.0.0.1:10250 listening.
    let loopback = format!("{header}   0: 0100007F:280A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n");
    std::fs::write(proc_net.join("tcp"), &wildcard).unwrap();
    let pki = dir.path().join("pki");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("kubelet-authz-node"))
        .args(["pki", "--wait-for-port", "10250", "--pki-dir"])
        .arg(&pki)
        .arg("--proc-net")
        .arg(&proc_net)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !pki.join("ca.crt").exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "no per-node CA");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "ended while the kubelet held *:10250"
    );
    std::fs::write(proc_net.join("tcp"), &loopback).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still waiting with the kubelet on loopback"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("0.0.0.0 listens on port 10250"), "{err}");
}

/// The kubelet's TLS policy carried over: `--kubelet-config` (and its drop-ins) set every
/// Gateway's `minProtocolVersion` and `cipherSuites` as the engine maps them for the DaemonSet.
#[rstest]
#[case::eks_tls13(&["eks/config.json"], "TLSV1_3", false)]
#[case::kubeadm_ciphers(&["kubeadm/config.yaml", "kubeadm/conf.d"], "TLSV1_2", true)]
fn the_kubelets_tls_policy_is_carried_over(
    #[case] files: &[&str],
    #[case] min: &str,
    #[case] ciphers: bool,
) {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut cmd = Command::cargo_bin("kubelet-authz-node").unwrap();
    cmd.args(["istio-objects", "--nodes"])
        .arg(fixture("nodes.json"))
        .arg("--kubelet-config")
        .arg(base.join(files[0]));
    if let Some(dir) = files.get(1) {
        cmd.arg("--config-dir").arg(base.join(dir));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let objects: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect();
    let gateways: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "Gateway").collect();
    assert_eq!(gateways.len(), 2);
    for g in gateways {
        let tls = &g["spec"]["servers"][0]["tls"];
        assert_eq!(tls["minProtocolVersion"], min);
        let suites = tls["cipherSuites"].as_array();
        if ciphers {
            let suites = suites.expect("cipherSuites");
            assert!(
                suites.iter().any(|c| c == "ECDHE-ECDSA-AES256-GCM-SHA384"),
                "{suites:?}"
            );
        } else {
            assert!(suites.is_none(), "{tls}");
        }
    }
}
