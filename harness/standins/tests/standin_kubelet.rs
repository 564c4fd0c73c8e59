//! The stand-in kubelet in-process: JSON echo, client-certificate verification, WebSocket echo on
//! `/exec`, SPDY `101`, and the PKI it runs on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use futures_util::{SinkExt as _, StreamExt as _};
use kubelet_authz::identity::x509;
use kubelet_authz::kubelet::KubeletVersion;
use kubelet_authz_standins::client::Client;
use kubelet_authz_standins::kubelet::{Kubelet, KubeletConfig};
use kubelet_authz_standins::pki::{self, ClientSubject, Pki};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn echoes_path_method_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = Kubelet::start(KubeletConfig::new(dir.path()))
        .await
        .unwrap();
    let client = Client::new(kubelet.ca_cert(), None).unwrap();
    let resp = client
        .get(
            &format!("{}/stats/summary?only_cpu_and_memory=true", kubelet.url()),
            &[
                ("authorization", "Bearer t"),
                ("x-forwarded-client-cert", "Hash=ab"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let echo = resp.json();
    assert_eq!(echo["path"], "/stats/summary?only_cpu_and_memory=true");
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["headers"]["authorization"], "Bearer t");
    assert_eq!(echo["headers"]["x-forwarded-client-cert"], "Hash=ab");
    assert!(echo["clientCert"].is_null());

    let resp = client
        .request("HEAD", &format!("{}/healthz", kubelet.url()), &[], "")
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let resp = client
        .request(
            "POST",
            &format!("{}/runningpods/", kubelet.url()),
            &[],
            "abc",
        )
        .await
        .unwrap();
    assert_eq!(resp.json()["bodyLength"], 3);
    let records = kubelet.records();
    assert_eq!(records.len(), 3);
    assert_eq!(records[1]["method"], "HEAD");
    let over_http = client
        .get(&format!("{}/_standin/records", kubelet.url()), &[])
        .await
        .unwrap()
        .json();
    assert_eq!(over_http.as_array().unwrap().len(), 3);
    kubelet.clear_records();
    assert!(kubelet.records().is_empty());
    kubelet.shutdown().await;
}

#[tokio::test]
async fn verifies_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::open(dir.path()).unwrap();
    let proxy = pki
        .write_client_cert(
            "proxy",
            &ClientSubject::new("kubelet-authz-proxy", &["system:proxies"]),
        )
        .unwrap();
    let kubelet = Kubelet::start(KubeletConfig::new(dir.path()).client_ca(&pki.ca_cert(), true))
        .await
        .unwrap();
    let with_cert = Client::new(kubelet.ca_cert(), Some(&proxy)).unwrap();
    let echo = with_cert
        .get(&format!("{}/metrics", kubelet.url()), &[])
        .await
        .unwrap()
        .json();
    assert_eq!(echo["clientCert"]["commonName"], "kubelet-authz-proxy");
    assert_eq!(
        echo["clientCert"]["organizations"],
        serde_json::json!(["system:proxies"])
    );
    let der = pki::pem_decode_first(&std::fs::read_to_string(&proxy.cert).unwrap()).unwrap();
    assert_eq!(
        echo["clientCert"]["sha256"],
        kubelet_authz::identity::x509::sha256_hex(&der)
    );
    let without = Client::new(kubelet.ca_cert(), None).unwrap();
    assert!(without
        .get(&format!("{}/metrics", kubelet.url()), &[])
        .await
        .is_err());
    kubelet.shutdown().await;
}

#[tokio::test]
async fn websocket_exec_echo() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = Kubelet::start(KubeletConfig::new(dir.path()))
        .await
        .unwrap();
    let client = Client::new(kubelet.ca_cert(), None).unwrap();
    let (mut ws, resp) = client
        .websocket(
            &format!("{}/exec/ns/pod/c?command=sh&stdin=1", kubelet.url()),
            &[(
                "sec-websocket-protocol",
                "base64url.bearer.authorization.k8s.io.dA, v5.channel.k8s.io, v4.channel.k8s.io",
            )],
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 101);
    assert_eq!(
        resp.header("sec-websocket-protocol"),
        Some("v5.channel.k8s.io")
    );
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2])
    );
    ws.close(None).await.unwrap();

    let record = &kubelet.records()[0];
    assert_eq!(record["path"], "/exec/ns/pod/c?command=sh&stdin=1");
    assert!(record["headers"]["sec-websocket-protocol"]
        .as_str()
        .unwrap()
        .starts_with("base64url.bearer.authorization.k8s.io.dA"));
    kubelet.shutdown().await;
}

#[tokio::test]
async fn spdy_upgrade_is_answered_101() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = Kubelet::start(KubeletConfig::new(dir.path()))
        .await
        .unwrap();
    let client = Client::new(kubelet.ca_cert(), None).unwrap();
    let resp = client
        .request(
            "POST",
            &format!("{}/exec/ns/pod/c?command=ls", kubelet.url()),
            &[
                ("connection", "Upgrade"),
                ("upgrade", "SPDY/3.1"),
                ("x-stream-protocol-version", "v4.channel.k8s.io"),
                ("x-stream-protocol-version", "v3.channel.k8s.io"),
            ],
            "",
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("upgrade"), Some("SPDY/3.1"));
    assert_eq!(
        resp.header("x-stream-protocol-version"),
        Some("v4.channel.k8s.io")
    );
    assert_eq!(kubelet.records()[0]["method"], "POST");
    kubelet.shutdown().await;
}

#[test]
fn pki_reuses_its_ca_and_issues_client_certs() {
    let dir = tempfile::tempdir().unwrap();
    let first = Pki::open(dir.path()).unwrap();
    let ca = std::fs::read_to_string(first.ca_cert()).unwrap();
    let second = Pki::open(dir.path()).unwrap();
    assert_eq!(ca, std::fs::read_to_string(second.ca_cert()).unwrap());
    let paths = second
        .write_client_cert(
            "node",
            &ClientSubject::new("system:node:worker-1", &["system:nodes", "b", "c"]).with_uid("42"),
        )
        .unwrap();
    let der = pki::pem_decode_first(&std::fs::read_to_string(&paths.cert).unwrap()).unwrap();
    // Read back by the engine's x509 conversion, as the filter and the stand-ins read it.
    let user = x509::user_from_der(&der, KubeletVersion::LATEST)
        .unwrap()
        .unwrap();
    assert_eq!(user.name, "system:node:worker-1");
    assert_eq!(user.groups, vec!["system:nodes", "b", "c"]);
    assert_eq!(user.uid, "42");
    assert!(second.server().cert.exists());
    assert!(second
        .write_client_cert("../x", &ClientSubject::default())
        .is_err());
}
