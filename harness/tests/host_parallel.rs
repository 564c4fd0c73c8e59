//! Hosts are independent: many tests (threads) load the same module at once, it is compiled
//! once, and no state leaks between VMs. Also prints compile and instantiation times
//! (`cargo test --test host_parallel -- --nocapture`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod host_support;

use std::time::Instant;

use host_support::{probe_path, send};
use kubelet_authz_harness::host::{Host, Outcome};

#[test]
fn parallel_hosts_are_isolated() {
    let path = probe_path();
    let started = Instant::now();
    let first = Host::load(&path).unwrap();
    let first_load = started.elapsed();
    let compile = first.compile_time();

    let threads: Vec<_> = (0..8)
        .map(|n| {
            let path = path.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let vm = Host::load(&path).unwrap();
                let load = started.elapsed();
                vm.configure("").unwrap();
                for _ in 0..=n {
                    let rq = send(&vm, "call", &[]);
                    let token = vm.pending_calls()[0].token;
                    vm.reply_call(token, 200, &[("x", "y")], format!("thread {n}"))
                        .unwrap();
                    assert_eq!(rq.outcome(), Outcome::Forwarded);
                    assert_eq!(
                        rq.request_header("x-call-body"),
                        Some(format!("thread {n}"))
                    );
                    rq.finish().unwrap();
                }
                assert_eq!(vm.metric("probe_requests"), Some(i64::from(n) + 1));
                assert_eq!(vm.calls().len(), usize::try_from(n).unwrap() + 1);
                load
            })
        })
        .collect();
    let loads: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(first.metric("probe_requests"), None);

    let started = Instant::now();
    let vm = Host::load(&path).unwrap();
    let instantiate = started.elapsed();
    vm.configure("").unwrap();
    let started = Instant::now();
    for _ in 0..100 {
        send(&vm, "echo", &[]).finish().unwrap();
    }
    let per_request = started.elapsed() / 100;
    eprintln!(
        "compile (once): {compile:?}; first load incl. compile: {first_load:?}; \
         later loads: {loads:?}; instantiate+start: {instantiate:?}; request+finish: {per_request:?}"
    );
}
