//! The stand-in kubelet started from its files (`--config`, `--config-dir`), as the node-in-a-box
//! tests start it: the engine's effective configuration decides the address, the port, the client
//! CA and whether a client certificate is required; a missing client CA file refuses to start.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;

use kubelet_authz_standins::kubelet::KubeletConfig;

const HEAD: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn defaults_then_dropins_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca.crt");
    write(&ca, "not read here");
    let config = tmp.path().join("config.yaml");
    write(
        &config,
        &format!("{HEAD}port: 11250\nauthentication:\n  x509:\n    clientCAFile: /nonexistent\n"),
    );
    // Without drop-ins: 0.0.0.0, the CA missing.
    let err = KubeletConfig::from_files(tmp.path(), &config, None).unwrap_err();
    assert!(err.to_string().contains("/nonexistent"), "{err}");

    let dir = tmp.path().join("conf.d");
    write(
        &dir.join("50-ca.conf"),
        &format!(
            "{HEAD}authentication:\n  x509:\n    clientCAFile: {}\n",
            ca.display()
        ),
    );
    write(
        &dir.join("90-proxy.conf"),
        &format!(
            "{HEAD}address: 127.0.0.1\nauthentication:\n  webhook:\n    enabled: false\n  anonymous:\n    enabled: false\n"
        ),
    );
    // Not a drop-in (the kubelet reads `*.conf` only).
    write(
        &dir.join("99-ignored.yaml"),
        &format!("{HEAD}address: 0.0.0.0\n"),
    );
    let c = KubeletConfig::from_files(tmp.path(), &config, Some(&dir)).unwrap();
    assert_eq!(c.listen, "127.0.0.1:11250".parse::<SocketAddr>().unwrap());
    assert_eq!(c.client_ca.as_deref(), Some(ca.as_path()));
    assert!(c.require_client_cert);
}

#[test]
fn webhook_on_does_not_require_a_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca.crt");
    write(&ca, "x");
    let config = tmp.path().join("config.json");
    write(
        &config,
        &format!(
            "{{\"apiVersion\":\"kubelet.config.k8s.io/v1beta1\",\"kind\":\"KubeletConfiguration\",\
             \"authentication\":{{\"x509\":{{\"clientCAFile\":\"{}\"}}}}}}",
            ca.display()
        ),
    );
    let c = KubeletConfig::from_files(tmp.path(), &config, None).unwrap();
    assert_eq!(c.listen, "0.0.0.0:10250".parse::<SocketAddr>().unwrap());
    assert!(!c.require_client_cert);
}
