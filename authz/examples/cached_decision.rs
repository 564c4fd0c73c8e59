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
use kubelet_authz::decision::{run_to_end, Engine, Session};
use kubelet_authz_test_support::workload::{answer, scrape};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let Ok(config) = Config::from_json(br#"{"nodeName":"node-1"}"#) else {
        std::process::exit(2);
    };
    let request = scrape();
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
