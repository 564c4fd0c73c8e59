//! The kubelet's TLS policy as Envoy takes it: every BoringSSL cipher name and every minimum
//! version `kubeletconfig` maps a kubelet name to is accepted by the real Envoy 1.40
//! (`envoy --mode validate` builds the listeners' TLS contexts with a strict cipher list), and a
//! name Envoy does not know is refused (so the check can fail).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kubelet_authz::kubeletconfig::{
    effective_config, CipherMapping, Source, CIPHER_SUITES, TLS_VERSIONS,
};
use kubelet_authz_e2e::envoy::validate;
use kubelet_authz_standins::pki::Pki;

/// A bootstrap with one TLS listener per `(version, suites)`.
fn bootstrap(pki: &Pki, listeners: &[(&str, Vec<String>)]) -> String {
    let server = pki.server();
    let mut out = String::from("static_resources:\n  listeners:\n");
    for (i, (version, suites)) in listeners.iter().enumerate() {
        out.push_str(&format!(
            r#"  - name: l{i}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_params: {{tls_minimum_protocol_version: {version}, cipher_suites: {suites}}}
            tls_certificates: [{{certificate_chain: {{filename: "{cert}"}}, private_key: {{filename: "{key}"}}}}]
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: s, cluster: c}}
"#,
            port = 20000 + i,
            suites = serde_json::to_string(suites).unwrap(),
            cert = server.cert.display(),
            key = server.key.display(),
        ));
    }
    out.push_str(
        "  clusters:\n  - name: c\n    load_assignment: {cluster_name: c, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}\n",
    );
    out
}

fn validates(listeners: &[(&str, Vec<String>)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::open(&dir.path().join("pki")).unwrap();
    let file = dir.path().join("envoy.yaml");
    std::fs::write(&file, bootstrap(&pki, listeners)).unwrap();
    validate(&file).unwrap()
}

#[test]
fn every_mapped_name_is_accepted_by_envoy() {
    let mut suites: Vec<String> = Vec::new();
    for (_, m) in CIPHER_SUITES {
        if let CipherMapping::Envoy(name) = m {
            if !suites.iter().any(|s| s == name) {
                suites.push(name.to_string());
            }
        }
    }
    assert_eq!(suites.len(), 17, "{suites:?}");
    let listeners: Vec<(&str, Vec<String>)> = TLS_VERSIONS
        .iter()
        .map(|(_, envoy)| (*envoy, suites.clone()))
        .collect();
    let (ok, out) = validates(&listeners);
    assert!(ok, "{out}");
}

#[test]
fn a_name_envoy_does_not_know_is_refused() {
    let (ok, out) = validates(&[("TLSv1_2", vec!["RC4-SHA".to_string()])]);
    assert!(!ok, "{out}");
    assert!(out.contains("Failed to initialize cipher suites"), "{out}");
}

/// The policy derived from a kubelet configuration (EKS AL2023's list, insecure RSA suites
/// included) validates as derived.
#[test]
fn derived_policy_validates() {
    let cfg = effective_config(
        &Source::new(
            "/etc/kubernetes/kubelet/config.json",
            r#"{"apiVersion":"kubelet.config.k8s.io/v1beta1","kind":"KubeletConfiguration","tlsMinVersion":"VersionTLS12","tlsCipherSuites":["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256","TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256","TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305","TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305","TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384","TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384","TLS_RSA_WITH_AES_256_GCM_SHA384","TLS_RSA_WITH_AES_128_GCM_SHA256","TLS_AES_128_GCM_SHA256"]}"#,
        ),
        &[],
    )
    .unwrap();
    let tls = cfg.envoy_tls();
    let (ok, out) = validates(&[(tls.tls_minimum_protocol_version.as_str(), tls.cipher_suites)]);
    assert!(ok, "{out}");
}
