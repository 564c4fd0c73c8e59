//! One cached decision through the real filter `.wasm` in the harness host (wasmtime): the
//! request headers callback (read headers and properties, authenticate from the token cache,
//! authorize from the SubjectAccessReview cache, audit per policy, counters, continue) and the end of the
//! stream. DESIGN.md target: <= 5 us per decision.
//!
//! Needs the release artefact (`cargo build -p kubelet-authz-filter --target wasm32-wasip1
//! --release`, or `KUBELET_AUTHZ_FILTER_WASM`). Run: `cargo bench -p kubelet-authz-harness --bench
//! wasm_decision`.
//!
//! Two requests: `realistic` is a Prometheus scrape with the 1.2 KB ServiceAccount token of
//! `envoy/bench/token-1k.txt` and the scrape headers (the realistic workload of
//! `envoy/bench/run.sh`); `minimal` the short-token request of the earlier runs.
//!
//! `host_floor_noop_module` runs the same request through the no-op module of
//! `envoy/bench/noop-filter` (`KUBELET_AUTHZ_NOOP_WASM`, else built by `envoy/bench/run.sh` under
//! `<target>/bench-noop/`): what the harness host itself costs per request, to subtract.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use kubelet_authz_harness::host::{Host, HostOptions, LogLevel, Outcome};

/// The 1.2 KB bound ServiceAccount token of the realistic workload.
const LONG_TOKEN: &str = include_str!("../../envoy/bench/token-1k.txt");

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Minimal,
    Realistic,
}

/// The audit configuration of a run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Audit {
    /// `audit.enabled: false`.
    Off,
    /// The built-in policy: an allowed scrape is not written.
    Builtin,
    /// `audit.policy.rules: [{level: Metadata}]`: every decision written.
    Every,
}

fn config(audit: Audit) -> String {
    let audit = match audit {
        Audit::Off => r#"{"enabled":false}"#,
        Audit::Builtin => r#"{"enabled":true}"#,
        Audit::Every => r#"{"enabled":true,"policy":{"rules":[{"level":"Metadata"}]}}"#,
    };
    format!(r#"{{"nodeName":"bench-node","kubeletVersion":"1.36","audit":{audit}}}"#)
}

fn token_review_response() -> String {
    r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","status":{"authenticated":true,
"user":{"username":"bench-user","uid":"uid-bench","groups":["observability"]},"audiences":[]}}"#
        .to_string()
}

fn sar_response() -> String {
    r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","status":{"allowed":true,
"reason":"bench"}}"#
        .to_string()
}

/// Send one request; answers its outcome with the stream still open.
fn send(vm: &Host, w: Workload) -> kubelet_authz_harness::host::Stream {
    let r = vm
        .request()
        .method("GET")
        .path("/metrics/cadvisor")
        .authority("bench-node:10250");
    let r = match w {
        Workload::Minimal => r
            .header("authorization", "Bearer bench-token")
            .header("user-agent", "kubelet-authz-bench"),
        Workload::Realistic => r
            .header("user-agent", "Prometheus/2.53.0")
            .header(
                "accept",
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            )
            .header("accept-encoding", "gzip")
            .header("authorization", &format!("Bearer {}", LONG_TOKEN.trim_end()))
            .header("x-prometheus-scrape-timeout-seconds", "10")
            .header("x-forwarded-proto", "http"),
    };
    r.header("x-request-id", "0d3c5f9e-7e1a-4a8e-9a51-2f7b2b1c9e00")
        .property("connection.mtls", [0])
        .property("source.address", "127.0.0.1:40000")
        .send_headers(true)
        .unwrap()
}

/// A VM whose caches hold the bench token and its SubjectAccessReview: the first request is
/// answered through the callouts, and a second one must be forwarded with none.
fn warm_vm(audit: Audit, w: Workload) -> Host {
    let options = HostOptions {
        // Audit lines are formatted and handed to the host, which drops them (as Envoy does below
        // its log level) instead of keeping millions of them.
        log_level: LogLevel::Warn,
        ..HostOptions::default()
    };
    let vm = Host::load_with(Host::default_module_path(), options).unwrap();
    vm.configure(config(audit)).unwrap();
    let first = send(&vm, w);
    for _ in 0..4 {
        let calls = vm.pending_calls();
        let Some(call) = calls.first() else { break };
        let body = if call.path().is_some_and(|p| p.contains("tokenreviews")) {
            token_review_response()
        } else {
            sar_response()
        };
        vm.reply_call(
            call.token,
            201,
            &[("content-type", "application/json")],
            body,
        )
        .unwrap();
    }
    assert!(
        matches!(first.outcome(), Outcome::Forwarded),
        "warm-up request not forwarded: {:?}",
        first.outcome()
    );
    first.finish().unwrap();
    let again = send(&vm, w);
    assert!(matches!(again.outcome(), Outcome::Forwarded));
    again.finish().unwrap();
    assert!(
        vm.pending_calls().is_empty(),
        "a cached request made a callout"
    );
    vm
}

/// Time `iters` cached decisions, on a fresh warm VM every `PER_VM` of them (the host keeps
/// per-stream state, so one VM must not see millions of streams).
fn cached_decisions(iters: u64, audit: Audit, w: Workload) -> Duration {
    const PER_VM: u64 = 20_000;
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(PER_VM);
        let vm = warm_vm(audit, w);
        let start = Instant::now();
        for _ in 0..n {
            let s = send(&vm, w);
            black_box(s.outcome());
            s.finish().unwrap();
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

/// The no-op module, when it has been built.
fn noop_module() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KUBELET_AUTHZ_NOOP_WASM") {
        return Some(PathBuf::from(p));
    }
    let release = Host::default_module_path();
    // <target>/wasm32-wasip1/release/x.wasm -> <target>
    let target = release.parent()?.parent()?.parent()?.to_path_buf();
    let p = target
        .join("bench-noop")
        .join("wasm32-wasip1")
        .join("release")
        .join("kubelet_authz_bench_noop_filter.wasm");
    p.exists().then_some(p)
}

fn noop_requests(path: &Path, iters: u64, w: Workload) -> Duration {
    const PER_VM: u64 = 20_000;
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(PER_VM);
        let vm = Host::load(path).unwrap();
        vm.configure("").unwrap();
        let start = Instant::now();
        for _ in 0..n {
            let s = send(&vm, w);
            black_box(s.outcome());
            s.finish().unwrap();
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("wasm_decision");
    g.measurement_time(Duration::from_secs(5));
    let noop = noop_module();
    if noop.is_none() {
        eprintln!(
            "wasm_decision: no no-op module (run envoy/bench/run.sh or set KUBELET_AUTHZ_NOOP_WASM); \
             host_floor_noop_module not measured"
        );
    }
    for (name, w) in [
        ("realistic", Workload::Realistic),
        ("minimal", Workload::Minimal),
    ] {
        g.bench_function(format!("{name}/cached_allow_audit_builtin_policy"), |b| {
            b.iter_custom(|iters| cached_decisions(iters, Audit::Builtin, w));
        });
        g.bench_function(format!("{name}/cached_allow_audit_every_decision"), |b| {
            b.iter_custom(|iters| cached_decisions(iters, Audit::Every, w));
        });
        g.bench_function(format!("{name}/cached_allow_audit_off"), |b| {
            b.iter_custom(|iters| cached_decisions(iters, Audit::Off, w));
        });
        if let Some(path) = &noop {
            g.bench_function(format!("{name}/host_floor_noop_module"), |b| {
                b.iter_custom(|iters| noop_requests(path, iters, w));
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
