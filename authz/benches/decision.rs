//! Native decision cost: a cached decision (token and SubjectAccessReview both cached) and an
//! uncached one (two callouts answered in memory), on a realistic Prometheus scrape (the 1.2 KB
//! ServiceAccount token of `envoy/bench/token-1k.txt`, the scrape headers) and on the minimal
//! request of the earlier runs (a short token). Target: cached <= 1 us.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use kubelet_authz::config::Config;
use kubelet_authz::decision::{run_to_end, Engine, Request, Session};
use kubelet_authz_test_support::workload::{answer, minimal, scrape as realistic, ScrapeHeaders};

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
    // As the filter drives it: the request read from its header bytes into the buffers of the
    // last one, decided, and its buffers given back (no allocation).
    let mut engine = Engine::new(cfg.clone(), [3; 32]);
    let headers = ScrapeHeaders::new();
    c.bench_function("decision/cached/realistic-from-bytes", |b| {
        b.iter(|| {
            let request = Request::from_header_bytes_in(headers.pairs(), engine.spare_request());
            let mut s = Session::new(1, request);
            let v = run_to_end(&mut engine, &mut s, 1, &mut |c| answer(c.kind));
            let status = v.status;
            engine.reclaim(s.into_request(), v);
            black_box(status)
        })
    });
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
