//! Identity spoofing through a real Envoy (what `e2e.rs` does not cover): identity headers a
//! front proxy might honour (`x-remote-user`/`x-remote-group`, `Impersonate-*`) change nothing and
//! never reach a SubjectAccessReview, and two `Authorization` headers never let the second one in.
//!
//! Credentials in more than one place, with the kubelet's union order (reference 2.8: x509, then
//! the `Authorization` bearer token, then the WebSocket subprotocol token; an error is recorded
//! and the next authenticator tried; the first success wins):
//! - a token in both the `Authorization` header and the WebSocket subprotocol: a valid header
//!   token wins and the protocol token is never reviewed; an invalid header token is an error
//!   recorded and the protocol token then authenticates (as `authz`'s
//!   `invalid_bearer_then_valid_websocket_token_authenticates`); the credential that
//!   authenticated never reaches the kubelet;
//! - a trusted client certificate with an empty CN gives no identity, so the bearer token's
//!   identity is used (table row "valid, CN empty | valid"), and without a token it is 401;
//! - a client certificate claiming `O=system:masters` from an untrusted CA is refused by Envoy at
//!   the TLS handshake, with or without a valid bearer token: no review, nothing forwarded. This
//!   is a deliberate difference from the kubelet, which drops the x509 verification error and
//!   uses the token (table row "verification fails | valid"); Envoy's downstream TLS validates
//!   any certificate offered (docs/SECURITY.md).
//!
//! Needs Envoy (`ENVOY_BIN`) and the release filter (`KUBELET_AUTHZ_FILTER_WASM`); fails without.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kubelet_authz_e2e::envoy::Envoy;
use kubelet_authz_e2e::stack::{
    users, ProxyOptions, Standins, DEBUGGER_TOKEN, OPS_TOKEN, PODLISTER_TOKEN,
};
use kubelet_authz_standins::apiserver::ReviewRecord;
use kubelet_authz_standins::client::{Client, ClientResponse};
use kubelet_authz_standins::pki::{ClientSubject, Pki};
use serde_json::Value;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_change_nothing() {
    let s = Standins::start().await.unwrap();
    let envoy = s
        .front_proxy("hardening-identity", &ProxyOptions::version("1.36"))
        .await
        .unwrap();
    let url = format!("{}/exec/default/web/app?command=id", envoy.url());
    let bearer = format!("Bearer {PODLISTER_TOKEN}");
    let ops = format!("Bearer {OPS_TOKEN}");
    let spoof: &[(&str, &str)] = &[
        ("x-remote-user", users::OPS),
        ("x-remote-group", "system:masters"),
        ("impersonate-user", users::OPS),
        ("impersonate-group", "system:masters"),
        ("impersonate-uid", "uid-ops"),
        ("impersonate-extra-scopes", "all"),
    ];
    let mark = s.apiserver.records().len();
    let mut headers = vec![("authorization", bearer.as_str())];
    headers.extend_from_slice(spoof);
    let r = s
        .client(None)
        .unwrap()
        .request("POST", &url, &headers, "")
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        format!(
            "Forbidden (user={}, verb=create, resource=nodes, subresource(s)=[proxy])\n",
            users::PODLISTER
        )
    );
    for rec in &s.apiserver.records()[mark..] {
        let text = rec.request.to_string();
        assert!(
            !text.contains("system:masters") && !text.contains(users::OPS),
            "a spoofed identity reached a review: {text}"
        );
        if rec.kind == "SubjectAccessReview" {
            assert_eq!(rec.request["spec"]["user"], users::PODLISTER);
        }
    }
    assert!(s.kubelet.records().is_empty());

    // Two Authorization headers (either order): never the union, never an exec.
    for (first, second) in [(&bearer, &ops), (&ops, &bearer)] {
        s.kubelet.clear_records();
        let r = s
            .client(None)
            .unwrap()
            .request(
                "POST",
                &url,
                &[
                    ("authorization", first.as_str()),
                    ("authorization", second.as_str()),
                ],
                "",
            )
            .await
            .unwrap();
        if r.status == 200 {
            // Only acceptable if the identity authorized is the first one and it may exec.
            assert!(first == &ops, "second Authorization header was used: {r:?}");
        } else {
            assert!(matches!(r.status, 400 | 401 | 403), "{r:?}");
            assert!(s.kubelet.records().is_empty());
        }
    }
    envoy.stop().await;
    s.shutdown().await;
}

const EXEC: &str = "/exec/default/web/app?command=id&stdout=1";

use kubelet_authz_test_support::encode::websocket_token as ws_protocol_token;

/// The reviews after `mark`, each as `TokenReview <token>` or `SAR <user> <verb> <subresource>
/// <allowed>`.
fn review_lines(s: &Standins, mark: usize) -> Vec<String> {
    s.apiserver
        .records_since(mark)
        .iter()
        .map(|r: &ReviewRecord| {
            if r.kind == "TokenReview" {
                format!(
                    "TokenReview {}",
                    r.request["spec"]["token"].as_str().unwrap_or("")
                )
            } else {
                let spec = &r.request["spec"];
                let ra = &spec["resourceAttributes"];
                format!(
                    "{} {} {} {} {}",
                    r.kind,
                    spec["user"].as_str().unwrap_or(""),
                    ra["verb"].as_str().unwrap_or(""),
                    ra["subresource"].as_str().unwrap_or(""),
                    r.response
                        .as_ref()
                        .and_then(|v| v["status"]["allowed"].as_bool())
                        .unwrap_or(false)
                )
            }
        })
        .collect()
}

/// A WebSocket upgrade `GET` of [`EXEC`] (HTTP/1.1, the 101 read as a plain response) with
/// `Sec-WebSocket-Protocol: protocols` and, when given, `Authorization: authorization`.
async fn ws_exec(
    s: &Standins,
    envoy: &Envoy,
    authorization: Option<&str>,
    protocols: &str,
) -> ClientResponse {
    let mut headers = vec![
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-protocol", protocols),
    ];
    if let Some(a) = authorization {
        headers.push(("authorization", a));
    }
    s.client(None)
        .unwrap()
        .request("GET", &format!("{}{EXEC}", envoy.url()), &headers, "")
        .await
        .unwrap()
}

/// The one request the kubelet received since it was cleared.
fn only_forwarded(s: &Standins) -> Value {
    let recs = s.kubelet.records();
    assert_eq!(recs.len(), 1, "{recs:?}");
    recs[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_header_and_websocket_protocol() {
    let s = Standins::start().await.unwrap();
    let envoy = s
        .front_proxy("hardening-identity-ws", &ProxyOptions::version("1.36"))
        .await
        .unwrap();
    let podlister = format!("Bearer {PODLISTER_TOKEN}");
    let ops = format!("Bearer {OPS_TOKEN}");
    let sar =
        |user: &str, allowed: bool| format!("SubjectAccessReview {user} create proxy {allowed}");

    // 1. Valid header token (pod lister) + protocol token of an exec-capable user: the header
    //    identity decides; the protocol token is never reviewed.
    let proto = format!("{}, v5.channel.k8s.io", ws_protocol_token(OPS_TOKEN));
    let mark = s.apiserver.records().len();
    let r = ws_exec(&s, &envoy, Some(&podlister), &proto).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        format!(
            "Forbidden (user={}, verb=create, resource=nodes, subresource(s)=[proxy])\n",
            users::PODLISTER
        )
    );
    assert_eq!(
        review_lines(&s, mark),
        vec![
            format!("TokenReview {PODLISTER_TOKEN}"),
            sar(users::PODLISTER, false)
        ]
    );
    assert!(s.kubelet.records().is_empty());

    // 2. Invalid header token + valid protocol token: the bearer error is recorded and the
    //    WebSocket authenticator runs next (union), so the protocol token's identity is used.
    let mark = s.apiserver.records().len();
    let r = ws_exec(&s, &envoy, Some("Bearer forged-token"), &proto).await;
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(
        r.header("sec-websocket-protocol"),
        Some("v5.channel.k8s.io")
    );
    assert_eq!(
        review_lines(&s, mark),
        vec![
            "TokenReview forged-token".to_string(),
            format!("TokenReview {OPS_TOKEN}"),
            sar(users::OPS, true)
        ]
    );
    let fwd = only_forwarded(&s);
    assert_eq!(fwd["path"], EXEC);
    assert_eq!(
        fwd["headers"]["sec-websocket-protocol"],
        "v5.channel.k8s.io"
    );
    assert_eq!(fwd["clientCert"]["commonName"], users::PROXY);
    // No caller credential reaches the kubelet (docs/SECURITY.md: the filter strips the caller's
    // bearer token and WebSocket token protocol before forwarding an allowed request). Checked
    // at the end so that every leak is reported at once.
    let mut leaks = Vec::new();
    if let Some(a) = fwd["headers"].get("authorization") {
        leaks.push(format!(
            "case 2 (rejected header token, allowed by the protocol token): Authorization {a} \
             forwarded to the kubelet"
        ));
    }
    s.kubelet.clear_records();

    // 3. Valid header token of the exec-capable user + protocol token of another user (the
    //    debugger, never reviewed so far, whose `get nodes/proxy` would be refused 403): the
    //    header identity; ops-token and its decision are cached from case 2, so no review at all
    //    (a TokenReview of the debugger's token would show the protocol token was looked at).
    let proto = format!("{}, v5.channel.k8s.io", ws_protocol_token(DEBUGGER_TOKEN));
    let mark = s.apiserver.records().len();
    let log = envoy.log_len();
    let r = ws_exec(&s, &envoy, Some(&ops), &proto).await;
    assert_eq!(r.status, 101, "{r:?}");
    assert!(review_lines(&s, mark).is_empty());
    let events = envoy
        .wait_audit_since(log, 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["user"]["username"], users::OPS, "{}", events[0]);
    assert_eq!(
        events[0]["annotations"]["kubelet-authz.io/authn"], "bearer",
        "{}",
        events[0]
    );
    let fwd = only_forwarded(&s);
    assert_eq!(fwd["path"], EXEC);
    assert!(fwd["headers"].get("authorization").is_none(), "{fwd}");
    let forwarded_protocols = fwd["headers"]["sec-websocket-protocol"]
        .as_str()
        .unwrap_or("");
    if forwarded_protocols != "v5.channel.k8s.io" {
        leaks.push(format!(
            "case 3 (header token authenticated): the WebSocket token subprotocol (a valid \
             token of another user) forwarded to the kubelet: Sec-WebSocket-Protocol: \
             {forwarded_protocols}"
        ));
    }
    assert!(
        leaks.is_empty(),
        "caller credentials forwarded:\n{}",
        leaks.join("\n")
    );
    envoy.stop().await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_cn_certificate_falls_through_to_the_token() {
    let s = Standins::start().await.unwrap();
    let envoy = s
        .front_proxy("hardening-identity-cn", &ProxyOptions::version("1.36"))
        .await
        .unwrap();
    let pki = Pki::open(&s.dir().join("pki")).unwrap();
    let empty = pki
        .write_client_cert("empty-cn", &ClientSubject::new("", &["system:masters"]))
        .unwrap();
    let client = Client::new(&s.ca, Some(&empty)).unwrap();
    let url = format!("{}/pods", envoy.url());
    let podlister = format!("Bearer {PODLISTER_TOKEN}");

    // Certificate (trusted, CN empty, O=system:masters) + the pod lister's token: the token's
    // identity, not the certificate's groups.
    let mark = s.apiserver.records().len();
    let r = client
        .get(&url, &[("authorization", podlister.as_str())])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        review_lines(&s, mark),
        vec![
            format!("TokenReview {PODLISTER_TOKEN}"),
            format!("SubjectAccessReview {} get pods true", users::PODLISTER)
        ]
    );
    let sar = s.apiserver.records().last().unwrap().request["spec"].clone();
    assert_eq!(
        sar["groups"],
        serde_json::json!([
            "system:serviceaccounts",
            "system:serviceaccounts:inventory",
            "system:authenticated"
        ])
    );
    let fwd = only_forwarded(&s);
    assert_eq!(fwd["path"], "/pods");
    assert!(fwd["headers"].get("authorization").is_none(), "{fwd}");
    assert_eq!(fwd["clientCert"]["commonName"], users::PROXY);

    // The same certificate alone: no identity and anonymous is off, so 401 with no review.
    s.kubelet.clear_records();
    let mark = s.apiserver.records().len();
    let r = client.get(&url, &[]).await.unwrap();
    assert_eq!(
        (r.status, String::from_utf8_lossy(&r.body).as_ref()),
        (401, "Unauthorized")
    );
    assert!(review_lines(&s, mark).is_empty());
    assert!(s.kubelet.records().is_empty());
    envoy.stop().await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_ca_system_masters_is_refused_at_the_handshake() {
    let s = Standins::start().await.unwrap();
    let envoy = s
        .front_proxy("hardening-identity-ca", &ProxyOptions::version("1.36"))
        .await
        .unwrap();
    // A second CA (same subject name as the real one, another key) and a certificate from it.
    let rogue = Pki::open(&s.dir().join("rogue-pki")).unwrap();
    let mallory = rogue
        .write_client_cert(
            "mallory",
            &ClientSubject::new("mallory", &["system:masters"]),
        )
        .unwrap();
    let client = Client::new(&s.ca, Some(&mallory)).unwrap();
    let podlister = format!("Bearer {PODLISTER_TOKEN}");
    let mark = s.apiserver.records().len();
    for path in ["/pods", EXEC] {
        for headers in [vec![], vec![("authorization", podlister.as_str())]] {
            let err = client
                .request("POST", &format!("{}{path}", envoy.url()), &headers, "")
                .await
                .expect_err("an untrusted client certificate must not get an HTTP answer");
            assert!(
                matches!(
                    err,
                    kubelet_authz_standins::client::ClientError::Io(_)
                        | kubelet_authz_standins::client::ClientError::Http(_)
                ),
                "{err:?}"
            );
        }
    }
    assert!(
        review_lines(&s, mark).is_empty(),
        "no review for a refused handshake"
    );
    assert!(s.kubelet.records().is_empty(), "nothing forwarded");
    // Envoy counted four failed client-certificate verifications on the listener.
    let prom = envoy.prometheus().await.unwrap();
    let verify_errors: u64 = prom
        .lines()
        .filter(|l| l.starts_with("envoy_listener_ssl_fail_verify_error{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    assert_eq!(verify_errors, 4, "{prom}");
    assert!(
        envoy.audit_events().unwrap().is_empty(),
        "the filter never saw a request"
    );

    // Control: the same token without the certificate is served (the refusal is the certificate).
    let r = s
        .client(None)
        .unwrap()
        .get(
            &format!("{}/pods", envoy.url()),
            &[("authorization", podlister.as_str())],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    envoy.stop().await;
    s.shutdown().await;
}
