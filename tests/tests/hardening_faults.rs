//! API-server faults through a real Envoy (what `e2e.rs`'s outage test does not cover): a
//! SubjectAccessReview answered `allowed` and `denied`, malformed JSON, 429, 500 or a closed
//! connection then recovery, and a 16 MiB body (over the 1 MiB cap: refused unread, retried, then
//! 500). Each: never an allow that the API server did not give, answers within bounded time, and
//! service restored when the fault ends. One Envoy for the file; the caller is Alice's client
//! certificate (no TokenReview), each fault on a subresource of its own so no cache hides it.
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
use kubelet_authz_e2e::stack::{users, ProxyOptions, Standins, CERT_ALICE};
use kubelet_authz_standins::apiserver::{Fault, FaultKind};
use kubelet_authz_standins::client::ClientResponse;

async fn get(s: &Standins, envoy: &Envoy, path: &str) -> (ClientResponse, Duration) {
    let t = Instant::now();
    let r = s
        .client(Some(CERT_ALICE))
        .unwrap()
        .request("GET", &format!("{}{path}", envoy.url()), &[], "")
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (r, t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_faults_never_allow_and_service_recovers() {
    let s = Standins::start().await.unwrap();
    let envoy = s
        .front_proxy("hardening-faults", &ProxyOptions::version("1.36"))
        .await
        .unwrap();
    let sar = ["SubjectAccessReview"];

    // allowed && denied: an authorizer error, 500 at once (no fall-through to proxy).
    s.apiserver
        .set_fault(Fault::always(FaultKind::AllowedAndDenied).for_reviews(&sar));
    let (r, took) = get(&s, &envoy, "/pods").await;
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        format!(
            "Authorization error (user={}, verb=get, resource=nodes, subresource=pods)",
            users::ALICE
        )
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(s.kubelet.records().is_empty());
    s.apiserver.clear_fault();
    // As the kubelet's webhook authorizer, the answer is cached (allowed: 5m) and read back as an
    // error until it expires; other checks are served.
    assert_eq!(
        get(&s, &envoy, "/pods").await.0.status,
        500,
        "cached as the kubelet does"
    );
    assert_eq!(get(&s, &envoy, "/metrics").await.0.status, 200, "restored");

    // Malformed JSON on every attempt: never an allow, bounded time.
    s.apiserver
        .set_fault(Fault::always(FaultKind::MalformedJson).for_reviews(&sar));
    let (r, took) = get(&s, &envoy, "/healthz").await;
    assert_eq!(r.status, 500, "{r:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    s.apiserver.clear_fault();
    assert_eq!(get(&s, &envoy, "/healthz").await.0.status, 200, "restored");

    // 429 twice, then the answer: the retries (Retry-After) get it.
    s.apiserver
        .set_fault(Fault::times(FaultKind::TooManyRequests, 2).for_reviews(&sar));
    let (r, took) = get(&s, &envoy, "/configz").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");

    // 500 twice, then the answer; a closed connection twice, then the answer (both denials, on
    // subresources of their own): both retried (reference 2.10), the answer is the API server's.
    for (kind, path, status) in [
        (FaultKind::Error500, "/spec/", 403),
        (FaultKind::Close, "/checkpoint/default/web/app", 403),
    ] {
        s.apiserver
            .set_fault(Fault::times(kind, 2).for_reviews(&sar));
        let mark = s.apiserver.records().len();
        let (r, took) = get(&s, &envoy, path).await;
        assert_eq!(r.status, status, "{kind:?}: {r:?}");
        assert_eq!(
            s.apiserver.records().len() - mark,
            3,
            "{kind:?}: three attempts"
        );
        assert!(took < Duration::from_secs(15), "{kind:?}: {took:?}");
    }
    s.apiserver.clear_fault();

    // A 16 MiB body on every attempt: refused unread (the cap is 1 MiB; a review is a few KB),
    // retried as a failed attempt, then the kubelet's answer to a failing authorizer. Never the
    // allow padded inside it.
    s.apiserver
        .set_fault(Fault::always(FaultKind::HugeBody).for_reviews(&sar));
    let mark = s.apiserver.records().len();
    s.kubelet.clear_records();
    let (r, took) = get(&s, &envoy, "/stats/summary").await;
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        format!(
            "Authorization error (user={}, verb=get, resource=nodes, subresource=stats)",
            users::ALICE
        )
    );
    assert_eq!(s.apiserver.records().len() - mark, 5, "five attempts");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(s.kubelet.records().is_empty());
    s.apiserver.clear_fault();
    // One huge answer, then the real one: the retry gets it, and the VM keeps serving.
    s.apiserver
        .set_fault(Fault::times(FaultKind::HugeBody, 1).for_reviews(&sar));
    let (r, took) = get(&s, &envoy, "/logs/").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    s.apiserver.clear_fault();
    assert_eq!(get(&s, &envoy, "/metrics").await.0.status, 200, "restored");

    envoy.stop().await;
    s.shutdown().await;
}
