//! Native decision cost: a cached decision (token and SubjectAccessReview both cached) and an
//! uncached one (two callouts answered in memory), on a realistic Prometheus scrape (the 1.2 KB
//! ServiceAccount token of `envoy/bench/token-1k.txt`, the scrape headers) and on the minimal
//! request of the earlier runs (a short token). Target: cached <= 1 us.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use kubelet_authz::config::Config;
use kubelet_authz::decision::{run_to_end, CalloutKind, CalloutResponse, Engine, Request, Session};

fn answer(kind: CalloutKind) -> CalloutResponse {
    let body = match kind {
        CalloutKind::TokenReview => {
            r#"{"status":{"authenticated":true,"user":{"username":"system:serviceaccount:monitoring:prometheus","groups":["system:serviceaccounts","system:authenticated"]}}}"#
        }
        CalloutKind::SubjectAccessReview => {
            r#"{"status":{"allowed":true,"reason":"RBAC: allowed"}}"#
        }
    };
    CalloutResponse::Http {
        status: 201,
        retry_after: None,
        body: body.as_bytes().to_vec(),
    }
}

/// The 1.2 KB bound ServiceAccount token of the realistic workload.
const TOKEN: &str = include_str!("../../envoy/bench/token-1k.txt");

/// A Prometheus scrape as a driver hands it over (the filter copies only the headers the engine
/// reads, `Request::from_header_bytes`).
fn realistic() -> Request {
    let authorization = format!("Bearer {}", TOKEN.trim_end());
    let headers: [(&[u8], &[u8]); 10] = [
        (b":method", b"GET"),
        (b":path", b"/metrics/cadvisor"),
        (b":authority", b"node-1:10250"),
        (b"user-agent", b"Prometheus/2.53.0"),
        (
            b"accept",
            b"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        ),
        (b"accept-encoding", b"gzip"),
        (b"authorization", authorization.as_bytes()),
        (b"x-prometheus-scrape-timeout-seconds", b"10"),
        (b"x-forwarded-proto", b"http"),
        (b"x-request-id", b"0d3c5f9e-7e1a-4a8e-9a51-2f7b2b1c9e00"),
    ];
    Request::from_header_bytes(headers)
}

/// The minimal request of the earlier runs (a short token).
fn minimal() -> Request {
    Request::new("GET", "/metrics/cadvisor")
        .header(
            "authorization",
            "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9.payload.signature",
        )
        .header("user-agent", "Prometheus/2.53")
}

fn bench(c: &mut Criterion) {
    let cfg = Config::from_json(br#"{"nodeName":"node-1"}"#).unwrap();
    for (name, req) in [("realistic", realistic()), ("minimal", minimal())] {
        let mut engine = Engine::new(cfg.clone(), [3; 32]);
        let mut s = Session::new(1, req.clone());
        run_to_end(&mut engine, &mut s, 0, &mut |c| answer(c.kind));
        // The request is built in the (untimed) setup: a driver builds it once from the headers
        // it reads; the timed part is the engine's decision, verdict included.
        c.bench_function(&format!("decision/cached/{name}"), |b| {
            b.iter_batched(
                || Session::new(1, req.clone()),
                |mut s| black_box(run_to_end(&mut engine, &mut s, 1, &mut |c| answer(c.kind))),
                BatchSize::SmallInput,
            )
        });
    }
    let no_cache = Config::from_json(br#"{"nodeName":"node-1","authentication":{"webhook":{"cacheTTL":"0s"}},"authorization":{"webhook":{"cacheAuthorizedTTL":"0s","cacheUnauthorizedTTL":"0s"}}}"#).unwrap();
    let mut engine = Engine::new(no_cache, [3; 32]);
    let req = realistic();
    c.bench_function(
        "decision/uncached/realistic (TokenReview + SAR answered in memory)",
        |b| {
            b.iter_batched(
                || Session::new(1, req.clone()),
                |mut s| black_box(run_to_end(&mut engine, &mut s, 1, &mut |c| answer(c.kind))),
                BatchSize::SmallInput,
            )
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
