//! Table tests for the kubelet's effective configuration (`kubeletconfig::effective_config`): the
//! `--config` file (YAML or JSON) with the `--config-dir` drop-ins merged as the kubelet merges
//! them, unknown fields and TLS names refused with the field named, the TLS policy mapped to
//! Envoy's names, and the behind-the-proxy profile.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kubelet_authz::kubeletconfig::{
    behind_proxy, dropin_names, effective_config, CheckStatus, EffectiveConfig, Source,
    CIPHER_SUITES, PER_NODE_CA_FILE, PROXY_DROPIN, PROXY_DROPIN_NAME, TLS_VERSIONS,
};
use rstest::rstest;
use serde_json::json;

const HEAD: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

fn yaml(name: &str, body: &str) -> Source {
    Source::new(name, format!("{HEAD}{body}"))
}

fn base(body: &str) -> Source {
    yaml("/var/lib/kubelet/config.yaml", body)
}

fn eff(body: &str) -> EffectiveConfig {
    effective_config(&base(body), &[]).unwrap()
}

fn err(base_body: &str, dropins: &[(&str, &str)]) -> String {
    let dropins: Vec<Source> = dropins.iter().map(|(n, b)| yaml(n, b)).collect();
    effective_config(&base(base_body), &dropins)
        .unwrap_err()
        .to_string()
}

/// A kubeadm 1.31 node's /var/lib/kubelet/config.yaml (trimmed).
const KUBEADM: &str = "\
authentication:
  anonymous:
    enabled: false
  webhook:
    cacheTTL: 0s
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
  webhook:
    cacheAuthorizedTTL: 0s
    cacheUnauthorizedTTL: 0s
cgroupDriver: systemd
clusterDNS:
- 10.96.0.10
clusterDomain: cluster.local
containerRuntimeEndpoint: unix:///var/run/containerd/containerd.sock
cpuManagerReconcilePeriod: 0s
evictionPressureTransitionPeriod: 0s
fileCheckFrequency: 0s
healthzBindAddress: 127.0.0.1
healthzPort: 10248
httpCheckFrequency: 0s
imageMaximumGCAge: 0s
imageMinimumGCAge: 0s
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: \"0\"
  verbosity: 0
memorySwap: {}
nodeStatusReportFrequency: 0s
nodeStatusUpdateFrequency: 0s
rotateCertificates: true
runtimeRequestTimeout: 0s
shutdownGracePeriod: 0s
shutdownGracePeriodCriticalPods: 0s
staticPodPath: /etc/kubernetes/manifests
streamingConnectionIdleTimeout: 0s
syncFrequency: 0s
volumeStatsAggPeriod: 0s
";

/// An EKS AL2023 node's /etc/kubernetes/kubelet/config.json (as nodeadm writes it, trimmed).
const EKS_CONFIG_JSON: &str = r#"{
  "apiVersion": "kubelet.config.k8s.io/v1beta1",
  "kind": "KubeletConfiguration",
  "address": "0.0.0.0",
  "authentication": {
    "anonymous": { "enabled": false },
    "webhook": { "cacheTTL": "2m0s", "enabled": true },
    "x509": { "clientCAFile": "/etc/kubernetes/pki/ca.crt" }
  },
  "authorization": {
    "mode": "Webhook",
    "webhook": { "cacheAuthorizedTTL": "5m0s", "cacheUnauthorizedTTL": "30s" }
  },
  "cgroupDriver": "systemd",
  "cgroupRoot": "/",
  "clusterDNS": ["10.100.0.10"],
  "clusterDomain": "cluster.local",
  "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
  "evictionHard": { "memory.available": "100Mi", "nodefs.available": "10%", "nodefs.inodesFree": "5%" },
  "featureGates": { "RotateKubeletServerCertificate": true },
  "hairpinMode": "hairpin-veth",
  "kubeReserved": { "cpu": "70m", "ephemeral-storage": "1Gi", "memory": "442Mi" },
  "kubeReservedCgroup": "/runtime",
  "logging": { "verbosity": 2 },
  "maxPods": 29,
  "protectKernelDefaults": true,
  "providerID": "aws:///us-west-2a/i-0123456789abcdef0",
  "readOnlyPort": 0,
  "serializeImagePulls": false,
  "serverTLSBootstrap": true,
  "shutdownGracePeriod": "2m30s",
  "shutdownGracePeriodCriticalPods": "30s",
  "systemReservedCgroup": "/system",
  "tlsCipherSuites": [
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_RSA_WITH_AES_128_GCM_SHA256"
  ]
}
"#;

// ---- reading one file -------------------------------------------------------------------------

#[test]
fn yaml_base_with_defaults() {
    let c = effective_config(&base(KUBEADM), &[]).unwrap();
    assert_eq!(c.address, "0.0.0.0");
    assert_eq!(c.port, 10250);
    assert!(c.settings.webhook_authentication.value);
    assert_eq!(
        c.settings.client_ca_file.value,
        "/etc/kubernetes/pki/ca.crt"
    );
    assert_eq!(c.document["clusterDNS"], json!(["10.96.0.10"]));
    assert_eq!(c.sources, vec!["/var/lib/kubelet/config.yaml".to_string()]);
    let tls = c.envoy_tls();
    assert_eq!(tls.tls_minimum_protocol_version, "TLSv1_2");
    assert!(tls.cipher_suites.is_empty(), "no list: Envoy's defaults");
    let doc = c.effective_document();
    assert_eq!(doc["address"], "0.0.0.0");
    assert_eq!(doc["port"], 10250);
    assert_eq!(doc["tlsMinVersion"], "VersionTLS12");
    assert_eq!(doc["authentication"]["webhook"]["cacheTTL"], "0s");
}

#[test]
fn json_base() {
    let c = effective_config(
        &Source::new("/etc/kubernetes/kubelet/config.json", EKS_CONFIG_JSON),
        &[],
    )
    .unwrap();
    assert_eq!(c.document["maxPods"], 29);
    assert_eq!(c.address, "0.0.0.0");
    assert_eq!(
        c.envoy_tls().cipher_suites,
        vec![
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-RSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            "ECDHE-RSA-CHACHA20-POLY1305",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-RSA-AES256-GCM-SHA384",
            "AES256-GCM-SHA384",
            "AES128-GCM-SHA256",
        ]
    );
}

#[test]
fn json_tls13_is_never_downgraded() {
    let text = r#"{"apiVersion":"kubelet.config.k8s.io/v1beta1","kind":"KubeletConfiguration","tlsMinVersion":"VersionTLS13"}"#;
    let c = effective_config(&Source::new("/c.json", text), &[]).unwrap();
    assert_eq!(c.envoy_tls().tls_minimum_protocol_version, "TLSv1_3");
}

#[test]
fn relative_paths_of_the_base_are_resolved_against_its_directory() {
    let c = effective_config(
        &yaml(
            "/etc/kubernetes/kubelet/config.yaml",
            "authentication:\n  x509:\n    clientCAFile: ../pki/ca.crt\nstaticPodPath: manifests\n",
        ),
        &[yaml(
            "/etc/kubernetes/kubelet/config.d/10.conf",
            "tlsCertFile: relative.crt\n",
        )],
    )
    .unwrap();
    assert_eq!(
        c.settings.client_ca_file.value,
        "/etc/kubernetes/pki/ca.crt"
    );
    assert_eq!(
        c.document["staticPodPath"],
        "/etc/kubernetes/kubelet/manifests"
    );
    assert_eq!(
        c.document["tlsCertFile"], "relative.crt",
        "drop-ins are not resolved"
    );
}

// ---- drop-ins ---------------------------------------------------------------------------------

#[test]
fn dropins_merge_in_order() {
    let base = base(
        "address: 10.0.0.5\nport: 10250\nclusterDNS: [10.96.0.10, 10.96.0.11]\nfeatureGates:\n  A: true\n  B: true\nauthentication:\n  webhook:\n    enabled: true\n    cacheTTL: 2m\n  x509:\n    clientCAFile: /etc/kubernetes/pki/ca.crt\nmaxPods: 110\n",
    );
    let d10 = yaml(
        "/etc/kubelet.d/10-a.conf",
        "address: 10.0.0.6\nclusterDNS: [10.96.0.99]\nfeatureGates:\n  B: false\n  C: true\nauthentication:\n  webhook:\n    enabled: false\n",
    );
    let d20 = yaml(
        "/etc/kubelet.d/20-b.conf",
        "address: 127.0.0.1\nfeatureGates:\n  C: false\nmaxPods: null\n",
    );
    let c = effective_config(&base, &[d10, d20]).unwrap();
    // Later wins, over the base and over earlier drop-ins.
    assert_eq!(c.address, "127.0.0.1");
    // Lists are replaced, not appended.
    assert_eq!(c.document["clusterDNS"], json!(["10.96.0.99"]));
    // Maps and nested structs merge key by key.
    assert_eq!(
        c.document["featureGates"],
        json!({"A": true, "B": false, "C": false})
    );
    assert_eq!(
        c.document["authentication"]["webhook"],
        json!({"enabled": false, "cacheTTL": "2m"})
    );
    assert!(!c.settings.webhook_authentication.value);
    assert_eq!(
        c.settings.client_ca_file.value,
        "/etc/kubernetes/pki/ca.crt"
    );
    // Untouched fields stay; `null` leaves the value as it was (Go decodes into the struct).
    assert_eq!(c.port, 10250);
    assert_eq!(c.document["maxPods"], 110);
    assert_eq!(c.sources.len(), 3);
}

#[test]
fn order_is_the_callers() {
    let a = yaml("/d/10.conf", "address: 127.0.0.1\n");
    let b = yaml("/d/20.conf", "address: ::1\n");
    let c = effective_config(&base(""), &[a.clone(), b.clone()]).unwrap();
    assert_eq!(c.address, "::1");
    let c = effective_config(&base(""), &[b, a]).unwrap();
    assert_eq!(c.address, "127.0.0.1");
}

#[test]
fn eks_al2023_config_json_with_a_dropin() {
    let base = Source::new("/etc/kubernetes/kubelet/config.json", EKS_CONFIG_JSON);
    let d40 = Source::new(
        "/etc/kubernetes/kubelet/config.json.d/40-x.conf",
        r#"{"apiVersion":"kubelet.config.k8s.io/v1beta1","kind":"KubeletConfiguration","maxPods":58,"featureGates":{"DisableKubeletCloudCredentialProviders":true}}"#,
    );
    let c = effective_config(&base, std::slice::from_ref(&d40)).unwrap();
    assert_eq!(c.document["maxPods"], 58);
    assert_eq!(
        c.document["featureGates"],
        json!({"RotateKubeletServerCertificate": true, "DisableKubeletCloudCredentialProviders": true})
    );
    // Not behind the proxy yet: bound to every address, tokens accepted, the cluster CA trusted.
    let failed = failed_checks(&c);
    assert_eq!(
        failed,
        vec!["loopback", "webhook-authentication-off", "per-node-ca"]
    );
    // With the proxy's drop-in after it: behind the proxy, TLS policy kept.
    let proxy = Source::new(
        format!("/etc/kubernetes/kubelet/config.json.d/{PROXY_DROPIN_NAME}"),
        PROXY_DROPIN,
    );
    let c = effective_config(&base, &[d40, proxy]).unwrap();
    assert!(failed_checks(&c).is_empty(), "{:?}", failed_checks(&c));
    assert_eq!(c.address, "127.0.0.1");
    assert_eq!(c.envoy_tls().cipher_suites.len(), 8);
}

#[rstest]
#[case::yaml_and_json_ignored(
    &["10-a.conf", "20-b.yaml", "30-c.json", "40-d.conf"],
    &["10-a.conf", "40-d.conf"]
)]
#[case::lexical_not_numeric(&["9-a.conf", "10-b.conf", "100-c.conf"], &["10-b.conf", "100-c.conf", "9-a.conf"])]
#[case::bytes_uppercase_first(&["b.conf", "B.conf", "a.conf"], &["B.conf", "a.conf", "b.conf"])]
#[case::editor_leftovers_ignored(
    &["10-a.conf~", ".10-a.conf.swp", "10-a.conf.bak", "10-a.conf", "conf", "10-a.CONF"],
    &["10-a.conf"]
)]
// The kubelet's rule is `filepath.Ext(name) == ".conf"`: a hidden `.conf` file counts.
#[case::hidden_conf_counts_as_for_the_kubelet(&[".50-hidden.conf", "10-a.conf"], &[".50-hidden.conf", "10-a.conf"])]
// filepath.WalkDir descends into subdirectories, visiting a directory where its name sorts.
#[case::subdirectories_walked(
    &["30.conf", "20-sub/05.conf", "10.conf", "20-sub.conf", "20-sub/x.yaml"],
    &["10.conf", "20-sub/05.conf", "20-sub.conf", "30.conf"]
)]
#[case::empty(&[], &[])]
fn dropin_names_as_the_kubelet(#[case] names: &[&str], #[case] want: &[&str]) {
    let got = dropin_names(names.iter().map(|s| s.to_string()));
    assert_eq!(got, want);
}

// ---- refused ----------------------------------------------------------------------------------

#[rstest]
#[case::top_level(
    "addres: 127.0.0.1\n",
    "addres: unknown field (did you mean `address`?)"
)]
#[case::case_sensitive(
    "Address: 127.0.0.1\n",
    "Address: unknown field (did you mean `address`?)"
)]
#[case::top_level_far(
    "kubeletAuthzMode: x\n",
    "kubeletAuthzMode: unknown field (see the KubeletConfiguration"
)]
#[case::authentication(
    "authentication:\n  webhok:\n    enabled: false\n",
    "authentication.webhok: unknown field (did you mean `webhook`?)"
)]
#[case::nested_far(
    "authentication:\n  tokens: {}\n",
    "authentication.tokens: unknown field (known fields here: x509, webhook, anonymous)"
)]
#[case::authn_webhook(
    "authentication:\n  webhook:\n    enable: false\n",
    "authentication.webhook.enable: unknown field"
)]
#[case::authn_anonymous(
    "authentication:\n  anonymous:\n    enabled: false\n    x: 1\n",
    "authentication.anonymous.x: unknown field"
)]
#[case::authn_x509(
    "authentication:\n  x509:\n    clientCaFile: /ca.crt\n",
    "authentication.x509.clientCaFile: unknown field"
)]
#[case::authorization("authorization:\n  mod: Webhook\n", "authorization.mod: unknown field")]
#[case::authz_webhook(
    "authorization:\n  webhook:\n    cacheTTL: 1m\n",
    "authorization.webhook.cacheTTL: unknown field"
)]
#[case::tls_version(
    "tlsMinVersion: VersionTLS14\n",
    "tlsMinVersion: unknown TLS version \"VersionTLS14\""
)]
#[case::tls_version_envoy_spelling(
    "tlsMinVersion: TLSv1_2\n",
    "tlsMinVersion: unknown TLS version"
)]
#[case::cipher_unknown(
    "tlsCipherSuites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, ECDHE-RSA-AES128-GCM-SHA256]\n",
    "tlsCipherSuites[1]: unknown cipher suite \"ECDHE-RSA-AES128-GCM-SHA256\""
)]
#[case::cipher_rc4("tlsCipherSuites: [TLS_RSA_WITH_RC4_128_SHA]\n", "tlsCipherSuites[0]: cipher suite \"TLS_RSA_WITH_RC4_128_SHA\" is accepted by the kubelet but Envoy (BoringSSL) cannot serve it")]
#[case::wrong_type(
    "authentication:\n  webhook:\n    enabled: \"no\"\n",
    "authentication.webhook.enabled: expected true or false, got a string"
)]
#[case::port_range(
    "port: 70000\n",
    "port: expected a port between 1 and 65535, got 70000"
)]
#[case::address_type("address: [127.0.0.1]\n", "address: expected a string, got a list")]
fn refused_in_the_base_with_the_field(#[case] body: &str, #[case] want: &str) {
    let e = err(body, &[]);
    assert!(
        e.starts_with(&format!("/var/lib/kubelet/config.yaml: {want}")),
        "{e}"
    );
}

#[rstest]
#[case::unknown_field(
    "authentication:\n  webhok:\n    enabled: false\n",
    "authentication.webhok: unknown field"
)]
#[case::tls(
    "tlsCipherSuites: [TLS_FOO]\n",
    "tlsCipherSuites[0]: unknown cipher suite"
)]
fn refused_in_a_dropin_with_file_and_field(#[case] body: &str, #[case] want: &str) {
    let e = err(
        "",
        &[
            ("/d/10-ok.conf", "address: 127.0.0.1\n"),
            ("/d/20-bad.conf", body),
        ],
    );
    assert!(e.starts_with(&format!("/d/20-bad.conf: {want}")), "{e}");
}

#[rstest]
#[case::other_kind(
    "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeProxyConfiguration\n",
    "/d/10.conf: unsupported kind `KubeProxyConfiguration`"
)]
#[case::other_version(
    "apiVersion: kubelet.config.k8s.io/v1\nkind: KubeletConfiguration\n",
    "/d/10.conf: unsupported apiVersion `kubelet.config.k8s.io/v1`"
)]
#[case::no_head("address: 127.0.0.1\n", "/d/10.conf: unsupported kind ``")]
#[case::empty(
    "",
    "/d/10.conf: not a YAML or JSON document: expected a KubeletConfiguration mapping, got null"
)]
#[case::syntax("{\"kind\": ", "/d/10.conf: not a YAML or JSON document")]
fn dropin_must_be_a_kubelet_configuration(#[case] text: &str, #[case] want: &str) {
    let e = effective_config(&base(""), &[Source::new("/d/10.conf", text)])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(want), "{e}");
}

#[test]
fn opaque_nested_values_are_kept_unchecked() {
    let c = eff("logging:\n  format: json\n  anythingNew: 1\ntracing:\n  endpoint: x\nfeatureGates:\n  SomeFutureGate: true\n");
    assert_eq!(c.document["logging"]["anythingNew"], 1);
}

// ---- TLS --------------------------------------------------------------------------------------

#[rstest]
#[case::tls10("VersionTLS10", "TLSv1_0")]
#[case::tls11("VersionTLS11", "TLSv1_1")]
#[case::tls12("VersionTLS12", "TLSv1_2")]
#[case::tls13("VersionTLS13", "TLSv1_3")]
#[case::empty_is_tls12("", "TLSv1_2")]
fn tls_version_mapped(#[case] go: &str, #[case] envoy: &str) {
    let c = eff(&format!("tlsMinVersion: \"{go}\"\n"));
    assert_eq!(c.envoy_tls().tls_minimum_protocol_version, envoy);
}

#[test]
fn every_tls_version_has_a_row() {
    assert_eq!(TLS_VERSIONS.len(), 4);
}

#[rstest]
#[case::ecdhe_ecdsa_aes128_cbc(
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    Some("ECDHE-ECDSA-AES128-SHA")
)]
#[case::ecdhe_ecdsa_aes256_cbc(
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    Some("ECDHE-ECDSA-AES256-SHA")
)]
#[case::ecdhe_rsa_aes128_cbc("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", Some("ECDHE-RSA-AES128-SHA"))]
#[case::ecdhe_rsa_aes256_cbc("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", Some("ECDHE-RSA-AES256-SHA"))]
#[case::ecdhe_ecdsa_aes128_gcm(
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    Some("ECDHE-ECDSA-AES128-GCM-SHA256")
)]
#[case::ecdhe_ecdsa_aes256_gcm(
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    Some("ECDHE-ECDSA-AES256-GCM-SHA384")
)]
#[case::ecdhe_rsa_aes128_gcm(
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    Some("ECDHE-RSA-AES128-GCM-SHA256")
)]
#[case::ecdhe_rsa_aes256_gcm(
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    Some("ECDHE-RSA-AES256-GCM-SHA384")
)]
#[case::ecdhe_rsa_chacha_sha256(
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    Some("ECDHE-RSA-CHACHA20-POLY1305")
)]
#[case::ecdhe_ecdsa_chacha_sha256(
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    Some("ECDHE-ECDSA-CHACHA20-POLY1305")
)]
#[case::ecdhe_rsa_chacha_legacy(
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
    Some("ECDHE-RSA-CHACHA20-POLY1305")
)]
#[case::ecdhe_ecdsa_chacha_legacy(
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
    Some("ECDHE-ECDSA-CHACHA20-POLY1305")
)]
#[case::rsa_3des("TLS_RSA_WITH_3DES_EDE_CBC_SHA", Some("DES-CBC3-SHA"))]
#[case::rsa_aes128_cbc("TLS_RSA_WITH_AES_128_CBC_SHA", Some("AES128-SHA"))]
#[case::rsa_aes256_cbc("TLS_RSA_WITH_AES_256_CBC_SHA", Some("AES256-SHA"))]
#[case::rsa_aes128_gcm("TLS_RSA_WITH_AES_128_GCM_SHA256", Some("AES128-GCM-SHA256"))]
#[case::rsa_aes256_gcm("TLS_RSA_WITH_AES_256_GCM_SHA384", Some("AES256-GCM-SHA384"))]
#[case::ecdhe_ecdsa_aes128_cbc_sha256(
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    Some("ECDHE-ECDSA-AES128-SHA256")
)]
#[case::ecdhe_rsa_aes128_cbc_sha256(
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    Some("ECDHE-RSA-AES128-SHA256")
)]
// TLS 1.3 suites are not configurable (Go ignores them, BoringSSL too): left out of Envoy's list.
#[case::tls13_aes128("TLS_AES_128_GCM_SHA256", None)]
#[case::tls13_aes256("TLS_AES_256_GCM_SHA384", None)]
#[case::tls13_chacha("TLS_CHACHA20_POLY1305_SHA256", None)]
fn cipher_mapped(#[case] go: &str, #[case] envoy: Option<&str>) {
    // Alongside one TLS 1.2 suite, so that a TLS 1.3 name shows as left out.
    let c = eff(&format!(
        "tlsCipherSuites: [{go}, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n"
    ));
    let tls = c.envoy_tls();
    let mut want: Vec<String> = envoy.map(str::to_string).into_iter().collect();
    if !want.iter().any(|w| w == "ECDHE-RSA-AES128-GCM-SHA256") {
        want.push("ECDHE-RSA-AES128-GCM-SHA256".into());
    }
    assert_eq!(tls.cipher_suites, want);
    assert_eq!(tls.tls_minimum_protocol_version, "TLSv1_2");
}

#[rstest]
#[case::rsa_rc4("TLS_RSA_WITH_RC4_128_SHA")]
#[case::rsa_aes128_cbc_sha256("TLS_RSA_WITH_AES_128_CBC_SHA256")]
#[case::ecdhe_ecdsa_rc4("TLS_ECDHE_ECDSA_WITH_RC4_128_SHA")]
#[case::ecdhe_rsa_rc4("TLS_ECDHE_RSA_WITH_RC4_128_SHA")]
#[case::ecdhe_rsa_3des("TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA")]
fn cipher_the_kubelet_takes_but_envoy_cannot_serve_is_refused(#[case] go: &str) {
    let e = err(&format!("tlsCipherSuites: [{go}]\n"), &[]);
    assert!(
        e.contains(&format!("tlsCipherSuites[0]: cipher suite \"{go}\" is accepted by the kubelet but Envoy (BoringSSL) cannot serve it")),
        "{e}"
    );
}

#[test]
fn every_go_cipher_name_has_a_row_above() {
    // 3 TLS 1.3 + 10 TLS 1.2 + 2 legacy ChaCha20 names + 12 insecure (Go's tls package).
    assert_eq!(CIPHER_SUITES.len(), 27);
}

#[test]
fn only_tls13_suites_means_tls13_only() {
    let c = eff("tlsCipherSuites: [TLS_AES_128_GCM_SHA256, TLS_CHACHA20_POLY1305_SHA256]\n");
    let tls = c.envoy_tls();
    assert_eq!(tls.tls_minimum_protocol_version, "TLSv1_3");
    assert!(tls.cipher_suites.is_empty());
}

#[test]
fn duplicates_collapse_in_the_kubelets_order() {
    let c = eff("tlsCipherSuites: [TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256]\n");
    assert_eq!(
        c.envoy_tls().cipher_suites,
        vec!["ECDHE-RSA-CHACHA20-POLY1305", "ECDHE-RSA-AES128-GCM-SHA256"]
    );
}

#[test]
fn envoy_tls_serialises_camel_case() {
    let v = serde_json::to_value(eff("tlsMinVersion: VersionTLS13\n").envoy_tls()).unwrap();
    assert_eq!(
        v,
        json!({"tlsMinimumProtocolVersion": "TLSv1_3", "cipherSuites": []})
    );
}

// ---- behind the proxy -------------------------------------------------------------------------

fn failed_checks(c: &EffectiveConfig) -> Vec<&'static str> {
    behind_proxy(c)
        .into_iter()
        .filter(|r| r.status == CheckStatus::Fail)
        .map(|r| r.id)
        .collect()
}

fn proxy_dropin() -> Source {
    Source::new(
        format!("/etc/kubernetes/kubelet.conf.d/{PROXY_DROPIN_NAME}"),
        PROXY_DROPIN,
    )
}

#[test]
fn shipped_dropin_is_the_constant_byte_for_byte() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../envoy/kubernetes/node/90-kubelet-authz.conf"
    );
    assert_eq!(std::fs::read_to_string(path).unwrap(), PROXY_DROPIN);
    assert!(PROXY_DROPIN.contains(PER_NODE_CA_FILE));
}

#[test]
fn proxy_dropin_holds_only_what_the_proxy_needs() {
    let c = effective_config(&proxy_dropin(), &[]).unwrap();
    assert_eq!(
        c.document,
        json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "authentication": {
                "x509": {"clientCAFile": PER_NODE_CA_FILE},
                "webhook": {"enabled": false},
                "anonymous": {"enabled": false}
            },
            "authorization": {"mode": "Webhook"}
        })
    );
    assert!(failed_checks(&c).is_empty(), "the drop-in alone passes");
}

#[test]
fn kubeadm_base_with_the_dropin_passes() {
    let c = effective_config(&base(KUBEADM), &[]).unwrap();
    assert_eq!(
        failed_checks(&c),
        vec!["loopback", "webhook-authentication-off", "per-node-ca"]
    );
    let c = effective_config(&base(KUBEADM), &[proxy_dropin()]).unwrap();
    assert!(failed_checks(&c).is_empty(), "{:?}", failed_checks(&c));
    assert_eq!(behind_proxy(&c).len(), 6);
}

#[rstest]
#[case::all_addresses("address: 0.0.0.0\n", "loopback")]
#[case::node_ip("address: 10.0.0.5\n", "loopback")]
#[case::ipv6_any("address: \"::\"\n", "loopback")]
#[case::webhook_on(
    "authentication:\n  webhook:\n    enabled: true\n",
    "webhook-authentication-off"
)]
#[case::anonymous_on("authentication:\n  anonymous:\n    enabled: true\n", "anonymous-off")]
#[case::cluster_ca(
    "authentication:\n  x509:\n    clientCAFile: /etc/kubernetes/pki/ca.crt\n",
    "per-node-ca"
)]
#[case::no_ca("authentication:\n  x509:\n    clientCAFile: \"\"\n", "per-node-ca")]
#[case::always_allow("authorization:\n  mode: AlwaysAllow\n", "authorization-webhook")]
#[case::read_only_port("readOnlyPort: 10255\n", "read-only-port-off")]
fn each_bypass_is_one_finding(#[case] later_dropin: &str, #[case] id: &str) {
    let c = effective_config(
        &base(KUBEADM),
        &[
            proxy_dropin(),
            yaml("/etc/kubernetes/kubelet.conf.d/99-later.conf", later_dropin),
        ],
    )
    .unwrap();
    assert_eq!(failed_checks(&c), vec![id]);
}

#[rstest]
#[case::v4("127.0.0.1", true)]
#[case::v4_other_loopback("127.0.0.2", true)]
#[case::v6("::1", true)]
#[case::v6_long("0:0:0:0:0:0:0:1", true)]
#[case::name("localhost", true)]
#[case::any("0.0.0.0", false)]
#[case::mapped("::ffff:127.0.0.1", false)]
#[case::node("192.168.1.10", false)]
#[case::other_name("node-1", false)]
fn loopback_addresses(#[case] address: &str, #[case] loopback: bool) {
    assert_eq!(kubelet_authz::kubeletconfig::is_loopback(address), loopback);
}

// ---- defaulting runs on the base only ---------------------------------------------------------

#[test]
fn empty_mode_is_defaulted_in_the_base_only() {
    let c = eff("authorization:\n  mode: \"\"\nport: 0\n");
    assert_eq!(c.settings.authorization_mode.value, "Webhook");
    assert_eq!(c.port, 10250);
    let c = effective_config(
        &base("authorization:\n  mode: AlwaysAllow\n"),
        &[
            proxy_dropin(),
            yaml("/d/99.conf", "authorization:\n  mode: \"\"\n"),
        ],
    )
    .unwrap();
    assert_eq!(c.settings.authorization_mode.value, "");
    assert_eq!(failed_checks(&c), vec!["authorization-webhook"]);
}

#[test]
fn port_zero_in_a_dropin_is_refused_unless_overridden() {
    let e = err("", &[("/d/10.conf", "port: 0\n")]);
    assert!(
        e.starts_with("/d/10.conf: port: 0 in a drop-in is not defaulted"),
        "{e}"
    );
    let c = effective_config(
        &base(""),
        &[
            yaml("/d/10.conf", "port: 0\n"),
            yaml("/d/20.conf", "port: 10260\n"),
        ],
    )
    .unwrap();
    assert_eq!(c.port, 10260);
}
