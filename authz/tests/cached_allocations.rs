//! Heap allocations of a cached decision (issue 24: "a cached decision that allocates nothing
//! per request"), counted by dhat's allocator in testing mode, from the request's header bytes to
//! the last action: the engine's decision of a Prometheus scrape with a 1.2 KB ServiceAccount
//! token once its token and SubjectAccessReview are cached; the same request through the
//! scheduler (headers in, forward out, counted, not audited); and a `GET /pods` with the same
//! token, which the built-in audit policy writes (its client address read, its line logged).
//!
//! The request is read into the buffers of a finished one ([`Request::from_header_bytes_in`]),
//! as the filter does; the finished decision's buffers go back to the engine. So after one
//! decision of the same shape, a cached decision allocates nothing. The one allocation of the
//! audited path is the client address the proxy returns (the test's stand-in for the hostcall
//! makes it, as the proxy does through the module's allocator).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kubelet_authz::config::Config;
use kubelet_authz::decision::{run_to_end, CalloutKind, Engine, Request, Session, Step};
use kubelet_authz::schedule::{Action, Done, Scheduler};
use kubelet_authz_test_support::workload::{answer, ScrapeHeaders};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// The most allocations each path may make per cached decision (the present counts).
const CEILINGS: [(&str, u64); 3] = [("engine", 0), ("scheduler", 0), ("audited", 1)];

/// Allocations made by `f`.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = dhat::HeapStats::get().total_blocks;
    f();
    dhat::HeapStats::get().total_blocks - before
}

/// What the stand-in driver saw.
#[derive(Default)]
struct Seen {
    sent: Vec<(u32, CalloutKind)>,
    logged: usize,
}

/// Carry out every action of the scheduler as a driver does (a dispatch is answered later by the
/// caller; the client address is the proxy's bytes; a written line is given back).
fn drain(s: &mut Scheduler, seen: &mut Seen) {
    while let Some(action) = s.poll() {
        let reported = action.is_reported();
        let result = match action {
            Action::Dispatch { callout, .. } => {
                let token = 100 + u32::try_from(seen.sent.len()).unwrap();
                seen.sent.push((token, callout.kind));
                Done::Sent(token)
            }
            Action::ReadSource { .. } => Done::Source(Some(b"10.0.0.1:5555".to_vec())),
            Action::Log { message, .. } => {
                seen.logged += 1;
                s.reclaim_line(message);
                Done::Ok
            }
            _ => Done::Ok,
        };
        if reported {
            s.report(Ok(result));
        }
    }
}

/// Request `id` with `headers` through the scheduler, answering its callouts until decided.
fn decide(s: &mut Scheduler, seen: &mut Seen, id: u32, headers: &ScrapeHeaders, now: u64) {
    let request = Request::from_header_bytes_in(headers.pairs(), s.spare_request());
    s.on_request(id, request, now);
    drain(s, seen);
    for _ in 0..4 {
        if s.pending() == 0 {
            return;
        }
        let (token, kind) = *seen.sent.last().unwrap();
        s.on_response(id, token, answer(kind), now);
        drain(s, seen);
    }
    panic!("request {id} undecided after four callouts");
}

#[test]
fn a_cached_decision_allocates_at_most_its_ceiling() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let config = Config::from_json(br#"{"nodeName":"node-1"}"#).unwrap();
    let scrape = ScrapeHeaders::new();
    let pods = ScrapeHeaders::for_path("/pods");

    // The engine alone: one decision with callouts, one cached to fill the pools, then counted.
    let mut engine = Engine::new(config.settings().clone(), [3; 32]);
    let cached = |engine: &mut Engine, id: u32| {
        let request = Request::from_header_bytes_in(scrape.pairs(), engine.spare_request());
        let mut session = Session::new(id, request);
        let verdict = run_to_end(engine, &mut session, 1, &mut |c| answer(c.kind));
        engine.reclaim(session.into_request(), verdict);
    };
    cached(&mut engine, 1);
    cached(&mut engine, 2);
    let mut step = None;
    let engine_count = allocations(|| {
        let request = Request::from_header_bytes_in(scrape.pairs(), engine.spare_request());
        let mut session = Session::new(3, request);
        match session.start(&mut engine, 1).step {
            Step::Forward(v) => {
                step = Some("forward");
                engine.reclaim(session.into_request(), v);
            }
            other => panic!("cached and allowed: {other:?}"),
        }
    });
    assert_eq!(step, Some("forward"));

    // Through the scheduler (the built-in audit policy drops allowed metrics reads).
    let mut s = Scheduler::new(config, 1, [3; 32], 7);
    s.start();
    let mut seen = Seen::default();
    drain(&mut s, &mut seen);
    decide(&mut s, &mut seen, 10, &scrape, 1);
    assert_eq!(
        seen.sent.len(),
        2,
        "a TokenReview and a SubjectAccessReview"
    );
    decide(&mut s, &mut seen, 11, &scrape, 2);
    let scheduler_count = allocations(|| decide(&mut s, &mut seen, 12, &scrape, 3));
    assert!(s.continued(), "cached and allowed: forwarded at once");
    assert_eq!(seen.sent.len(), 2, "no callout for a cached decision");
    assert_eq!(seen.logged, 0, "an allowed scrape is not audited");

    // Audited: the pods list (its own SubjectAccessReview first, then cached).
    decide(&mut s, &mut seen, 20, &pods, 4);
    decide(&mut s, &mut seen, 21, &pods, 5);
    let logged = seen.logged;
    let audited_count = allocations(|| decide(&mut s, &mut seen, 22, &pods, 6));
    assert!(s.continued(), "cached and allowed: forwarded at once");
    assert_eq!(seen.logged, logged + 1, "the pods list is audited");

    let counts = [
        ("engine", engine_count),
        ("scheduler", scheduler_count),
        ("audited", audited_count),
    ];
    println!("allocations per cached decision: {counts:?}");
    for ((name, n), (_, ceiling)) in counts.iter().zip(CEILINGS) {
        assert!(
            n <= &ceiling,
            "the {name} path makes {n} allocations per cached decision, more than {ceiling}"
        );
    }
}
