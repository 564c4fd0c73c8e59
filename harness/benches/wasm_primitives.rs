//! The parts of the filter's cached path, measured inside wasm through the harness host (wasmtime,
//! Cranelift), with the bench module of `harness/testdata/bench-module` (built here for
//! `wasm32-wasip1` with the filter's release settings):
//!
//! - `read/*`: the request headers callback of a realistic Prometheus scrape (1 KB bearer token,
//!   the scrape headers), reading the headers the engine uses with one
//!   `proxy_get_header_map_pairs` (`read/pairs`) or one `proxy_get_header_map_value` per name
//!   (`read/values`), against a callback that reads nothing (`read/none`);
//! - `token_key/*`: the token-cache key of the same 1 KB token, 10 times per callback (subtract
//!   `read/none` and divide by 10 for one key): SHA-256 of salt || token (the old key),
//!   HMAC-SHA256, SipHash-1-3 and SipHash-2-4 with 128-bit output, keyed BLAKE3.
//!
//! Run: `cargo bench -p kubelet-authz-harness --bench wasm_primitives`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use kubelet_authz_harness::host::Host;

/// The 1 KB ServiceAccount token of the realistic workload (`envoy/bench/bench.py` makes it).
const TOKEN: &str = include_str!("../../envoy/bench/token-1k.txt");
/// Hashes per callback in the `token_key` cases.
pub const HASHES_PER_REQUEST: u32 = 10;

fn module() -> PathBuf {
    kubelet_authz_harness::testdata::build(
        "bench-module",
        "bench_module",
        Path::new(env!("CARGO_TARGET_TMPDIR")),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn send(vm: &Host) -> kubelet_authz_harness::host::Stream {
    vm.request()
        .method("GET")
        .path("/metrics/cadvisor")
        .authority("bench-node:10250")
        .header("user-agent", "Prometheus/2.53.0")
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        )
        .header("accept-encoding", "gzip")
        .header("authorization", &format!("Bearer {}", TOKEN.trim_end()))
        .header("x-prometheus-scrape-timeout-seconds", "10")
        .header("x-forwarded-proto", "http")
        .header("x-request-id", "0d3c5f9e-7e1a-4a8e-9a51-2f7b2b1c9e00")
        .send_headers(true)
        .unwrap()
}

fn requests(path: &Path, mode: &str, iters: u64) -> Duration {
    const PER_VM: u64 = 20_000;
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(PER_VM);
        let vm = Host::load(path).unwrap();
        vm.configure(mode).unwrap();
        let start = Instant::now();
        for _ in 0..n {
            let s = send(&vm);
            black_box(s.outcome());
            s.finish().unwrap();
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

fn bench(c: &mut Criterion) {
    let path = module();
    let mut g = c.benchmark_group("wasm_primitives");
    g.measurement_time(Duration::from_secs(4));
    for mode in ["none", "pairs", "values"] {
        g.bench_function(format!("read/{mode}"), |b| {
            b.iter_custom(|iters| requests(&path, mode, iters));
        });
    }
    for alg in ["sha256", "hmac-sha256", "sip13", "sip24", "blake3"] {
        let mode = format!("hash-{alg}:{HASHES_PER_REQUEST}");
        g.bench_function(format!("token_key/{alg}_x{HASHES_PER_REQUEST}"), |b| {
            b.iter_custom(|iters| requests(&path, &mode, iters));
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
