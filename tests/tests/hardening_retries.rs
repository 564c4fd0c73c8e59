//! The retry table of DESIGN.md "Behaviour" through a real Envoy 1.40 with the release filter: each
//! row of the kubelet's client-go webhook rules, with the stand-in API server answering as the row
//! says, and the status, the number of reviews it received and the elapsed time asserted.
//!
//! | row | API server | reviews | time |
//! | --- | --- | --- | --- |
//! | 502 once, then the answer | InternalError: retried | 2 | one backoff (0.5-0.6 s) |
//! | 500 on every attempt | retried until the 5th attempt fails: 500 | 5 | the four backoffs (4.06-4.88 s) |
//! | 503 without `Retry-After` | not retried: 500 at once | 1 | < 1 s |
//! | 503 with `Retry-After: 1` twice, then the answer | the REST client waits 1 s and resends | 3 | 2 s |
//! | 429 with `Retry-After: 1` twice, then the answer | the same | 3 | 2 s |
//! | 201 with `Retry-After: 1` | a success: used, never retried | 1 | < 1 s |
//! | closed connection twice, then the answer | a reset: retried | 3 | two backoffs (1.25-1.5 s) |
//! | a hanging API server (`apiServer.timeout: 500ms`) | the client's own timeout: not retried | 1 | 0.5 s |
//! | the API server's port closed | connection refused: not retried | 0 | < 1 s |
//!
//! The caller is Alice's client certificate (no TokenReview; `kubelet-observability` role), each
//! row on a subresource whose answer is not cached yet; the refused-port row also sends a token
//! (TokenReview refused: 401).
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
use kubelet_authz_e2e::stack::{users, ProxyOptions, Standins, CERT_ALICE, PODLISTER_TOKEN};
use kubelet_authz_standins::apiserver::{Fault, FaultKind};

/// Scheduling slack on a loaded 2-core machine (TLS set-up of each attempt, timers firing late).
const SLACK: Duration = Duration::from_millis(2500);

async fn get(
    s: &Standins,
    envoy: &Envoy,
    path: &str,
    token: Option<&str>,
) -> (u16, String, Duration) {
    let t = Instant::now();
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let cert = if token.is_some() {
        None
    } else {
        Some(CERT_ALICE)
    };
    let r = s
        .client(cert)
        .unwrap()
        .request("GET", &format!("{}{path}", envoy.url()), &headers, "")
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (
        r.status,
        String::from_utf8_lossy(&r.body).into_owned(),
        t.elapsed(),
    )
}

fn authz_error(sub: &str) -> String {
    format!(
        "Authorization error (user={}, verb=get, resource=nodes, subresource={sub})",
        users::ALICE
    )
}

/// One row: the fault, the path, and what the kubelet answers.
struct Row {
    name: &'static str,
    fault: Fault,
    path: &'static str,
    status: u16,
    body: Option<String>,
    reviews: usize,
    /// The least and most time the row's waits add up to (before slack).
    min: Duration,
    max: Duration,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_of_the_retry_table() {
    let sar = ["SubjectAccessReview"];
    let rows = vec![
        Row {
            name: "502 once, then the answer",
            fault: Fault::times(FaultKind::BadGateway, 1).for_reviews(&sar),
            path: "/pods",
            status: 200,
            body: None,
            reviews: 2,
            min: ms(500),
            max: ms(600),
        },
        Row {
            name: "500 on every attempt",
            fault: Fault::always(FaultKind::Error500).for_reviews(&sar),
            path: "/metrics",
            status: 500,
            body: Some(authz_error("metrics")),
            reviews: 5,
            min: ms(500 + 750 + 1125 + 1687),
            max: ms(600 + 900 + 1350 + 2025),
        },
        Row {
            name: "503 without Retry-After",
            fault: Fault::always(FaultKind::Unavailable).for_reviews(&sar),
            path: "/healthz",
            status: 500,
            body: Some(authz_error("healthz")),
            reviews: 1,
            min: ms(0),
            max: ms(0),
        },
        Row {
            name: "503 with Retry-After: 1 twice, then the answer",
            fault: Fault::times(FaultKind::UnavailableRetryAfter, 2).for_reviews(&sar),
            path: "/configz",
            status: 200,
            body: None,
            reviews: 3,
            min: ms(2000),
            max: ms(2000),
        },
        Row {
            name: "429 with Retry-After: 1 twice, then the answer",
            fault: Fault::times(FaultKind::TooManyRequests, 2).for_reviews(&sar),
            path: "/logs/",
            status: 200,
            body: None,
            reviews: 3,
            min: ms(2000),
            max: ms(2000),
        },
        Row {
            name: "201 with Retry-After: 1",
            fault: Fault::always(FaultKind::CreatedRetryAfter).for_reviews(&sar),
            path: "/stats/summary",
            status: 200,
            body: None,
            reviews: 1,
            min: ms(0),
            max: ms(0),
        },
        Row {
            name: "closed connection twice, then the answer",
            fault: Fault::times(FaultKind::Close, 2).for_reviews(&sar),
            path: "/metrics/cadvisor",
            status: 200,
            body: None,
            reviews: 3,
            min: ms(500 + 750),
            max: ms(600 + 900),
        },
    ];

    let s = Standins::start().await.unwrap();
    let envoy = s
        .front_proxy("retries", &ProxyOptions::version("1.36"))
        .await
        .unwrap();
    for row in rows {
        s.apiserver.set_fault(row.fault.clone());
        let mark = s.apiserver.records().len();
        let (status, body, took) = get(&s, &envoy, row.path, None).await;
        s.apiserver.clear_fault();
        assert_eq!(status, row.status, "{}: {body}", row.name);
        if let Some(b) = &row.body {
            assert_eq!(&body, b, "{}", row.name);
        }
        let reviews = s.apiserver.records().len() - mark;
        assert_eq!(reviews, row.reviews, "{}: reviews received", row.name);
        assert!(
            took >= row.min && took <= row.max + SLACK,
            "{}: took {took:?}, want {:?}..{:?} (+{SLACK:?})",
            row.name,
            row.min,
            row.max
        );
    }
    envoy.stop().await;
    s.shutdown().await;
}

/// The client's own timeout is not retried: a hanging API server costs one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callout_timeout_is_not_retried() {
    let s = Standins::start().await.unwrap();
    let envoy = s
        .front_proxy(
            "retries-timeout",
            &ProxyOptions::version("1.36").api_timeout("500ms"),
        )
        .await
        .unwrap();
    s.apiserver
        .set_fault(Fault::always(FaultKind::Hang).for_reviews(&["SubjectAccessReview"]));
    let mark = s.apiserver.records().len();
    let (status, body, took) = get(&s, &envoy, "/pods", None).await;
    s.apiserver.clear_fault();
    assert_eq!((status, body), (500, authz_error("pods")));
    assert_eq!(s.apiserver.records().len() - mark, 1, "one attempt");
    assert!(took >= ms(500) && took <= ms(500) + SLACK, "took {took:?}");
    envoy.stop().await;
    s.shutdown().await;
}

/// Connection refused is not retried: the API server's port is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_not_retried() {
    let s = Standins::start().await.unwrap();
    let mut params = s.params(&ProxyOptions::version("1.36")).unwrap();
    params.apiserver_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let envoy = Envoy::start(&params.render().unwrap(), s.dir(), "retries-refused")
        .await
        .unwrap();
    let (status, body, took) = get(&s, &envoy, "/pods", None).await;
    assert_eq!(
        (status, body),
        (500, authz_error("pods")),
        "SubjectAccessReview"
    );
    let seen: Vec<String> = envoy
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("kubelet-authz") && !l.contains("audit"))
        .collect();
    assert!(took <= SLACK, "took {took:?}: retried? {seen:#?}");
    let (status, body, took) = get(&s, &envoy, "/pods", Some(PODLISTER_TOKEN)).await;
    assert_eq!(
        (status, body.as_str()),
        (401, "Unauthorized"),
        "TokenReview"
    );
    assert!(took <= SLACK, "took {took:?}: retried?");
    assert!(s.apiserver.records().is_empty());
    envoy.stop().await;
    s.shutdown().await;
}
