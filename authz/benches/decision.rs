//! Native decision cost: a cached decision (token and SubjectAccessReview both cached) and an
//! uncached one (two callouts answered in memory). Target: cached <= 1 us.
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

fn request() -> Request {
    Request::new("GET", "/metrics/cadvisor")
        .header(":authority", "node-1:10250")
        .header(
            "authorization",
            "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9.payload.signature",
        )
        .header("user-agent", "Prometheus/2.53")
        .header("accept", "text/plain")
}

fn bench(c: &mut Criterion) {
    let cfg = Config::from_json(br#"{"nodeName":"node-1"}"#).unwrap();
    let mut engine = Engine::new(cfg.clone(), [3; 32]);
    let req = request();
    let mut s = Session::new(1, req.clone());
    run_to_end(&mut engine, &mut s, 0, &mut |c| answer(c.kind));
    // The request is built in the (untimed) setup: a driver builds it once from the headers it
    // reads; the timed part is the engine's decision, verdict included.
    c.bench_function("decision/cached", |b| {
        b.iter_batched(
            || Session::new(1, req.clone()),
            |mut s| black_box(run_to_end(&mut engine, &mut s, 1, &mut |c| answer(c.kind))),
            BatchSize::SmallInput,
        )
    });
    let no_cache = Config::from_json(br#"{"nodeName":"node-1","authentication":{"webhook":{"cacheTTL":"0s"}},"authorization":{"webhook":{"cacheAuthorizedTTL":"0s","cacheUnauthorizedTTL":"0s"}}}"#).unwrap();
    let mut engine = Engine::new(no_cache, [3; 32]);
    c.bench_function(
        "decision/uncached (TokenReview + SAR answered in memory)",
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
