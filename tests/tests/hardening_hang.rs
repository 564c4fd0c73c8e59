//! A hanging API server through a real Envoy (`apiServer.timeout: 500ms`): the stand-in accepts
//! the review and never answers (`FaultKind::Hang`). The callout times out after 500 ms and, as
//! the kubelet's client-go webhooks do with their own client-side timeout (DESIGN.md's retry
//! table), is not retried (Envoy answers it with its `504 upstream request timeout`, which the
//! filter tells apart from the API server's 504), then:
//!
//! - a TokenReview that never answers is an authentication error: 401 `Unauthorized`;
//! - a SubjectAccessReview that never answers (client-certificate caller, so no TokenReview) is
//!   an authorizer error: 500 with the kubelet's `Authorization error (...)` body, no fall-through
//!   to the next subresource.
//!
//! Each: exactly one attempt reaches the API server, the answer comes after the 500 ms timeout
//! (plus scheduling slack), nothing reaches the kubelet, and the same request is served once the fault is
//! cleared (errors are not cached). A hung connection is released when the stand-in stops (the
//! `Hang` handler is cancelled by the server's shutdown), and every wait here is under a timeout.
//!
//! Needs Envoy (`ENVOY_BIN`) and the release filter (`KUBELET_AUTHZ_FILTER_WASM`); fails without.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use kubelet_authz_e2e::envoy::Envoy;
use kubelet_authz_e2e::stack::{users, ProxyOptions, Standins, CERT_ALICE, PROMETHEUS_TOKEN};
use kubelet_authz_standins::apiserver::{Fault, FaultKind};
use kubelet_authz_standins::client::ClientResponse;

/// The callout timeout configured for these Envoys.
const API_TIMEOUT_MS: u64 = 500;

/// The shortest and longest total time of one hung callout: one timeout (a client-side timeout is
/// not retried).
fn hang_bounds() -> (Duration, Duration) {
    (
        Duration::from_millis(API_TIMEOUT_MS),
        Duration::from_millis(API_TIMEOUT_MS),
    )
}

/// Slack over the computed upper bound for scheduling on a loaded 2-core machine (TLS set-up of
/// each attempt, timers firing late).
const SLACK: Duration = Duration::from_millis(3000);

async fn send(
    s: &Standins,
    envoy: &Envoy,
    cert: Option<&str>,
    token: Option<&str>,
    path: &str,
) -> (ClientResponse, Duration) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let t = Instant::now();
    let r = s
        .client(cert)
        .unwrap()
        .request("GET", &format!("{}{path}", envoy.url()), &headers, "")
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (r, t.elapsed())
}

/// TokenReview hangs: 401 after one attempt (its timeout is not retried); restored when cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_token_review_is_401_within_bounded_time() {
    let work = async {
        let s = Standins::start().await.unwrap();
        let envoy = s
            .front_proxy(
                "hardening-hang-tr",
                &ProxyOptions::version("1.36").api_timeout("500ms"),
            )
            .await
            .unwrap();
        let (min, max) = hang_bounds();
        assert_eq!(
            (min, max),
            (Duration::from_millis(500), Duration::from_millis(500))
        );

        s.apiserver
            .set_fault(Fault::always(FaultKind::Hang).for_reviews(&["TokenReview"]));
        let mark = s.apiserver.records().len();
        let (r, took) = send(&s, &envoy, None, Some(PROMETHEUS_TOKEN), "/metrics").await;
        assert_eq!(
            (r.status, String::from_utf8_lossy(&r.body).as_ref()),
            (401, "Unauthorized"),
            "{r:?}"
        );
        let recs = s.apiserver.records_since(mark);
        let attempts: Vec<_> = recs
            .iter()
            .map(|r| {
                (
                    r.kind.as_str(),
                    r.request["spec"]["token"].as_str().unwrap_or(""),
                    r.status,
                    r.fault.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            attempts,
            vec![("TokenReview", PROMETHEUS_TOKEN, 0, Some("hang"))],
            "one hung TokenReview attempt and no SubjectAccessReview"
        );
        assert!(
            took >= min && took <= max + SLACK,
            "answered after {took:?}, expected within [{min:?}, {:?}]",
            max + SLACK
        );
        eprintln!("TokenReview hang: 401 after {took:?}");
        assert!(s.kubelet.records().is_empty(), "nothing forwarded");
        // One attempt, ended by its own timeout, never retried.
        assert_eq!(
            envoy
                .counter(r#"kubelet_authz_callouts_total{kind="tokenreview",result="timed_out"}"#)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            envoy
                .counter(r#"kubelet_authz_callout_retries_total{kind="tokenreview"}"#)
                .await
                .unwrap(),
            0
        );
        // Envoy itself stayed responsive throughout.
        assert_eq!(
            kubelet_authz_e2e::envoy::admin_get(envoy.admin(), "/ready")
                .await
                .unwrap(),
            (200, "LIVE\n".to_string())
        );

        // Cleared: the error was not cached, the same token is reviewed again and served.
        s.apiserver.clear_fault();
        let mark = s.apiserver.records().len();
        let (r, took) = send(&s, &envoy, None, Some(PROMETHEUS_TOKEN), "/metrics").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["path"], "/metrics");
        assert!(took < Duration::from_secs(5), "{took:?}");
        let kinds: Vec<_> = s
            .apiserver
            .records_since(mark)
            .iter()
            .map(|r| (r.kind.clone(), r.status))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("TokenReview".to_string(), 201),
                ("SubjectAccessReview".to_string(), 201)
            ]
        );
        assert_eq!(s.kubelet.records().len(), 1);
        envoy.stop().await;
        s.shutdown().await;
    };
    tokio::time::timeout(Duration::from_secs(90), work)
        .await
        .expect("the hanging-TokenReview test itself must not hang");
}

/// SubjectAccessReview hangs (client certificate, no TokenReview): 500 with the kubelet's body
/// after one attempt (its timeout is not retried), no fall-through to `proxy`; restored when cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_subject_access_review_is_500_within_bounded_time() {
    let work = async {
        let s = Standins::start().await.unwrap();
        let envoy = s
            .front_proxy(
                "hardening-hang-sar",
                &ProxyOptions::version("1.36").api_timeout("500ms"),
            )
            .await
            .unwrap();
        let (min, max) = hang_bounds();

        s.apiserver
            .set_fault(Fault::always(FaultKind::Hang).for_reviews(&["SubjectAccessReview"]));
        let mark = s.apiserver.records().len();
        let (r, took) = send(&s, &envoy, Some(CERT_ALICE), None, "/pods").await;
        assert_eq!(r.status, 500, "{r:?}");
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            format!(
                "Authorization error (user={}, verb=get, resource=nodes, subresource=pods)",
                users::ALICE
            )
        );
        let attempts: Vec<_> = s
            .apiserver
            .records_since(mark)
            .iter()
            .map(|r| {
                (
                    r.kind.clone(),
                    r.request["spec"]["user"].as_str().unwrap_or("").to_string(),
                    r.request["spec"]["resourceAttributes"]["subresource"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    r.status,
                    r.fault.clone(),
                )
            })
            .collect();
        assert_eq!(
            attempts,
            vec![
                (
                    "SubjectAccessReview".to_string(),
                    users::ALICE.to_string(),
                    "pods".to_string(),
                    0,
                    Some("hang".to_string())
                );
                1
            ],
            "one hung attempt for `pods`, no TokenReview, no fall-through to `proxy`"
        );
        assert!(
            took >= min && took <= max + SLACK,
            "answered after {took:?}, expected within [{min:?}, {:?}]",
            max + SLACK
        );
        eprintln!("SubjectAccessReview hang: 500 after {took:?}");
        assert!(s.kubelet.records().is_empty(), "nothing forwarded");
        assert_eq!(
            envoy
                .counter(
                    r#"kubelet_authz_decisions_total{outcome="authorizer_error",subresource="pods"}"#
                )
                .await
                .unwrap(),
            1
        );

        // Cleared: the error was not cached, the same check is asked again and allowed.
        s.apiserver.clear_fault();
        let mark = s.apiserver.records().len();
        let (r, took) = send(&s, &envoy, Some(CERT_ALICE), None, "/pods").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["path"], "/pods");
        assert!(took < Duration::from_secs(5), "{took:?}");
        let recs = s.apiserver.records_since(mark);
        assert_eq!(recs.len(), 1, "{recs:?}");
        assert_eq!(
            (
                recs[0].kind.as_str(),
                recs[0].status,
                recs[0].fault.as_deref()
            ),
            ("SubjectAccessReview", 201, None)
        );
        assert_eq!(s.kubelet.records().len(), 1);
        envoy.stop().await;
        s.shutdown().await;
    };
    tokio::time::timeout(Duration::from_secs(90), work)
        .await
        .expect("the hanging-SubjectAccessReview test itself must not hang");
}
