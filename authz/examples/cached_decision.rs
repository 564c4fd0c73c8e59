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
//! The difference of the two totals over 10,000 is the instructions of one cached decision as a
//! driver makes it: the request read from its header bytes into the buffers of the last one,
//! the session, the verdict, and the buffers given back.

use kubelet_authz::config::Config;
use kubelet_authz::decision::{run_to_end, Engine, Request, Session};
use kubelet_authz_test_support::workload::{answer, ScrapeHeaders};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let Ok(config) = Config::from_json(br#"{"nodeName":"node-1"}"#) else {
        std::process::exit(2);
    };
    let headers = ScrapeHeaders::new();
    let mut engine = Engine::new(config.settings().clone(), [3; 32]);
    let mut allowed = 0u32;
    // Decision 0 makes the callouts (answered in memory); the rest are cached.
    for i in 0..=n {
        let request = Request::from_header_bytes_in(headers.pairs(), engine.spare_request());
        let mut s = Session::new(i, request);
        let v = run_to_end(&mut engine, &mut s, 1, &mut |c| answer(c.kind));
        allowed += u32::from(v.status == 200 && i > 0);
        engine.reclaim(s.into_request(), v);
    }
    println!("{allowed} of {n} allowed");
}
