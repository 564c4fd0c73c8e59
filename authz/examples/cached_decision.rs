//! Runs N cached decisions of a Prometheus scrape with a 1.2 KB ServiceAccount token (the
//! criterion bench's realistic request), for instruction counts under
//! `valgrind --tool=callgrind` (repeatable whatever else the machine runs; docs/PERFORMANCE.md):
//!
//! ```text
//! cargo build --profile bench -p kubelet-authz --example cached_decision
//! valgrind --tool=callgrind target/release/examples/cached_decision 0
//! valgrind --tool=callgrind target/release/examples/cached_decision 10000
//! ```
//!
//! The difference of the two totals over 10,000 is the instructions of one cached decision
//! (session, verdict and the request's clone included, as a driver builds each request).

use kubelet_authz::config::Config;
use kubelet_authz::decision::{run_to_end, CalloutKind, CalloutResponse, Engine, Request, Session};

const TOKEN: &str = include_str!("../../envoy/bench/token-1k.txt");

fn answer(kind: CalloutKind) -> CalloutResponse {
    let body = match kind {
        CalloutKind::TokenReview => {
            r#"{"status":{"authenticated":true,"user":{"username":"system:serviceaccount:monitoring:prometheus","groups":["system:serviceaccounts","system:authenticated"]}}}"#
        }
        CalloutKind::SubjectAccessReview => r#"{"status":{"allowed":true,"reason":"rbac"}}"#,
    };
    CalloutResponse::Http {
        status: 201,
        retry_after: None,
        body: body.as_bytes().to_vec(),
    }
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let Ok(config) = Config::from_json(br#"{"nodeName":"node-1"}"#) else {
        std::process::exit(2);
    };
    let authorization = format!("Bearer {}", TOKEN.trim_end());
    let headers: [(&[u8], &[u8]); 5] = [
        (b":method", b"GET"),
        (b":path", b"/metrics/cadvisor"),
        (b"user-agent", b"Prometheus/2.53.0"),
        (b"authorization", authorization.as_bytes()),
        (b"x-request-id", b"0d3c5f9e-7e1a-4a8e-9a51-2f7b2b1c9e00"),
    ];
    let request = Request::from_header_bytes(headers);
    let mut engine = Engine::new(config.settings().clone(), [3; 32]);
    let mut warm = Session::new(0, request.clone());
    run_to_end(&mut engine, &mut warm, 0, &mut |c| answer(c.kind));
    let mut allowed = 0u32;
    for i in 0..n {
        let mut s = Session::new(i, request.clone());
        let v = run_to_end(&mut engine, &mut s, 1, &mut |c| answer(c.kind));
        allowed += u32::from(v.status == 200);
    }
    println!("{allowed} of {n} allowed");
}
