//! Heap allocations of a cached decision (issue 24: "a cached decision that allocates nothing
//! per request"), counted by dhat's allocator in testing mode: the engine's decision of a
//! Prometheus scrape with a 1.2 KB ServiceAccount token once its token and SubjectAccessReview
//! are cached, and the same request through the scheduler (headers in, forward out, counted, not
//! audited). The request itself is built outside the count, as a driver builds it from the
//! headers it reads.
//!
//! Each path has a ceiling at its present count ([`CEILINGS`]): the test fails when a change
//! allocates more, and prints the counts so a change that allocates less lowers the ceiling.
//! The goal is zero.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kubelet_authz::config::Config;
use kubelet_authz::decision::{run_to_end, CalloutKind, Engine, Session, Step};
use kubelet_authz::schedule::{Action, Done, Scheduler};
use kubelet_authz_test_support::workload::{answer, scrape};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// The most allocations each path may make per cached decision (the present counts).
const CEILINGS: [(&str, u64); 2] = [("engine", 2), ("scheduler", 2)];

/// Allocations made by `f`.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = dhat::HeapStats::get().total_blocks;
    f();
    dhat::HeapStats::get().total_blocks - before
}

/// Carry out every action of the scheduler; a dispatch is answered later by the caller.
fn drain(s: &mut Scheduler, sent: &mut Vec<u32>) {
    let mut token = 100;
    while let Some(action) = s.poll() {
        let reported = action.is_reported();
        let result = match action {
            Action::Dispatch { .. } => {
                token += 1;
                sent.push(token);
                Done::Sent(token)
            }
            Action::ReadSource { .. } => Done::Source(None),
            _ => Done::Ok,
        };
        if reported {
            s.report(Ok(result));
        }
    }
}

#[test]
fn a_cached_decision_allocates_at_most_its_ceiling() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let config = Config::from_json(br#"{"nodeName":"node-1"}"#).unwrap();
    let request = scrape();

    // The engine alone.
    let mut engine = Engine::new(config.settings().clone(), [3; 32]);
    let mut warm = Session::new(1, request.clone());
    run_to_end(&mut engine, &mut warm, 0, &mut |c| answer(c.kind));
    let mut session = Session::new(2, request.clone());
    let mut step = None;
    let engine_count = allocations(|| step = Some(session.start(&mut engine, 1).step));
    assert!(
        matches!(step, Some(Step::Forward(_))),
        "cached and allowed: {step:?}"
    );
    drop(step);

    // Through the scheduler (the audit log off: the built-in policy drops allowed metrics reads).
    let mut s = Scheduler::new(config, 1, [3; 32], 7);
    s.start();
    drain(&mut s, &mut Vec::new());
    let mut sent = Vec::new();
    s.on_request(10, request.clone(), 1);
    drain(&mut s, &mut sent);
    for (i, kind) in [CalloutKind::TokenReview, CalloutKind::SubjectAccessReview]
        .into_iter()
        .enumerate()
    {
        s.on_response(10, sent[i], answer(kind), 2);
        drain(&mut s, &mut sent);
    }
    assert_eq!(s.pending(), 0, "decided");
    let mut scheduled = Some(request);
    let scheduler_count = allocations(|| {
        s.on_request(11, scheduled.take().unwrap(), 3);
        drain(&mut s, &mut sent);
    });
    assert!(s.continued(), "cached and allowed: forwarded at once");

    let counts = [("engine", engine_count), ("scheduler", scheduler_count)];
    println!("allocations per cached decision: {counts:?}");
    for ((name, n), (_, ceiling)) in counts.iter().zip(CEILINGS) {
        assert!(
            n <= &ceiling,
            "the {name} path makes {n} allocations per cached decision, more than {ceiling}"
        );
    }
}
