//! The scheduler by table: a script of events in, the actions it asks for out, carried out by a
//! fake driver that can fail any of them. Each row is one behaviour: waiting lists and
//! de-duplication, retries and deferred callouts on timers, the bounds, every fail-closed answer
//! (a verdict, counted and audited), the tick period, a VM restart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashSet;

use rstest::rstest;

use super::*;
use crate::metrics::Series;

const ROOT: u32 = 1;
const ALICE: &str = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","status":{"authenticated":true,"user":{"username":"alice","groups":["dev"]}}}"#;
const ALLOWED: &str = r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","status":{"allowed":true,"reason":"rbac"}}"#;
const NO_OPINION: &str = r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","status":{"allowed":false}}"#;

const NODE: &str = r#"{"nodeName":"n1"}"#;
const SHADOW: &str = r#"{"nodeName":"n1","enforcement":"Shadow"}"#;
const ANONYMOUS_ALLOW: &str = r#"{"nodeName":"n1","authentication":{"anonymous":{"enabled":true}},"authorization":{"mode":"AlwaysAllow"}}"#;
/// Room for more callouts in flight than there are timers and streams.
const ROOMY: &str = r#"{"nodeName":"n1","limits":{"maxInflight":20000,"maxWaiters":20000}}"#;

/// One event of a script; each happens 10 ms after the one before (from 1000 ms), a tick at its
/// own time.
#[derive(Debug, Clone, Copy)]
enum Ev {
    /// Request `id` with `Authorization: Bearer <token>` (none when empty), `GET /pods`.
    Req(u32, &'static str),
    /// The answer to callout `#token`, delivered to context `ctx`.
    Resp(u32, u32, Answer),
    /// The root's tick at this time.
    Tick(u64),
    /// Request `id` ends.
    Done(u32),
    /// Request `id`'s headers could not be read.
    Unreadable(u32),
}

/// A callout's answer.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Body(&'static str),
    Reset,
}

use Answer::{Body, Reset};
use Ev::{Done as End, Req, Resp, Tick, Unreadable};

/// A driver that carries actions out and records them, one line each (`Log`, `Count` and
/// `Record` kept apart), and can fail what it is told to.
struct World {
    s: Scheduler,
    now: Millis,
    next_token: u32,
    /// Actions that fail: `dispatch`, `forward`, `reply`, `tick`, `source`.
    fail: HashSet<&'static str>,
    /// Contexts that cannot be entered.
    gone: HashSet<u32>,
    /// Leave reported actions unreported.
    mute: bool,
    trace: Vec<String>,
    logs: Vec<(Level, String)>,
    counts: Vec<(usize, u64)>,
    records: Vec<(crate::decision::CalloutKind, u64)>,
    continued: Vec<u32>,
}

impl World {
    fn new(json: &str) -> Self {
        let config = Config::from_json(json.as_bytes()).unwrap();
        let mut w = World {
            s: Scheduler::new(config, ROOT, [7; 32], 42),
            now: 1000,
            next_token: 0,
            fail: HashSet::new(),
            gone: HashSet::new(),
            mute: false,
            trace: Vec::new(),
            logs: Vec::new(),
            counts: Vec::new(),
            records: Vec::new(),
            continued: Vec::new(),
        };
        w.s.start();
        w.drain();
        assert_eq!(
            w.take(),
            ["tick 1000"],
            "the flush tick runs from the start"
        );
        w
    }

    fn drain(&mut self) {
        while let Some(action) = self.s.poll() {
            let reported = action.is_reported();
            let result = self.carry_out(action);
            if reported && !self.mute {
                self.s.report(result);
            }
        }
    }

    fn failing(&self, what: &str) -> Result<(), Failure> {
        if self.fail.contains(what) {
            return Err(Failure::Failed(format!("{what} failed")));
        }
        Ok(())
    }

    fn enter(&self, id: u32) -> Result<(), Failure> {
        if self.gone.contains(&id) {
            return Err(Failure::Gone(format!("context {id} is gone")));
        }
        Ok(())
    }

    fn carry_out(&mut self, action: Action) -> Result<Done, Failure> {
        match action {
            Action::Log { level, message } => {
                self.logs.push((level, message));
                Ok(Done::Ok)
            }
            Action::Count { series, by } => {
                self.counts.push((series, by));
                Ok(Done::Ok)
            }
            Action::Record { kind, ms } => {
                self.records.push((kind, ms));
                Ok(Done::Ok)
            }
            Action::Dispatch { from, callout } => {
                self.failing("dispatch")?;
                self.next_token += 1;
                let t = self.next_token;
                self.trace
                    .push(format!("send {} from {from} #{t}", callout.kind.name()));
                Ok(Done::Sent(t))
            }
            Action::Forward {
                stream,
                remove,
                set,
                resume,
            } => {
                self.enter(stream)?;
                self.failing("forward")?;
                let how = if resume { "resume" } else { "continue" };
                self.trace.push(format!(
                    "forward {stream} {how} -{} +{}",
                    remove.join(","),
                    set.len()
                ));
                Ok(Done::Ok)
            }
            Action::Reply { stream, status, .. } => {
                self.enter(stream)?;
                self.failing("reply")?;
                self.trace.push(format!("reply {stream} {status}"));
                Ok(Done::Ok)
            }
            Action::ReadSource { stream } => {
                self.enter(stream)?;
                self.failing("source")?;
                Ok(Done::Source(Some(
                    format!("10.0.0.{stream}:5555").into_bytes(),
                )))
            }
            Action::SetTick { ms } => {
                self.failing("tick")?;
                self.trace.push(format!("tick {ms}"));
                Ok(Done::Ok)
            }
        }
    }

    fn run(&mut self, script: &[Ev]) {
        for ev in script {
            self.now += 10;
            let now = self.now;
            match *ev {
                Req(id, token) => {
                    self.trace.push(format!("> req {id}"));
                    let mut r = Request::new("GET", "/pods");
                    if !token.is_empty() {
                        r = r.header("authorization", &format!("Bearer {token}"));
                    }
                    self.s.on_request(id, r, now);
                    self.drain();
                    if self.s.continued() {
                        self.continued.push(id);
                    }
                }
                Resp(ctx, token, answer) => {
                    self.trace.push(format!("> resp #{token} at {ctx}"));
                    let response = match answer {
                        Body(b) => CalloutResponse::Http {
                            status: 201,
                            retry_after: None,
                            body: b.as_bytes().to_vec(),
                        },
                        Reset => CalloutResponse::Failed("reset".into()),
                    };
                    self.s.on_response(ctx, token, response, now);
                    self.drain();
                }
                Tick(at) => {
                    self.now = at;
                    self.trace.push(format!("> tick at {at}"));
                    self.s.on_tick(at);
                    self.drain();
                }
                End(id) => {
                    self.trace.push(format!("> done {id}"));
                    self.s.on_done(id, now);
                    self.drain();
                }
                Unreadable(id) => {
                    self.trace.push(format!("> unreadable {id}"));
                    self.s.on_unreadable(id, "get_header_map_pairs failed", now);
                    self.drain();
                }
            }
        }
    }

    fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.trace)
    }

    /// A counter by its Prometheus series: handed over plus not yet.
    fn counter(&self, prometheus: &str) -> u64 {
        let index = (0..crate::metrics::SERIES)
            .find(|i| Series::of(*i).unwrap().prometheus() == prometheus)
            .unwrap_or_else(|| panic!("no series {prometheus}"));
        let handed: u64 = self
            .counts
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, by)| by)
            .sum();
        handed + self.s.counters().unflushed(index)
    }

    fn audits(&self) -> Vec<&str> {
        self.logs
            .iter()
            .filter(|(l, m)| *l == Level::Info && m.starts_with(crate::audit::AUDIT_LOG_PREFIX))
            .map(|(_, m)| m.as_str())
            .collect()
    }
}

/// Scripts and the actions they lead to, in order (`> ...` marks each event).
#[rstest]
#[case::no_credentials_401_at_once(NODE, &[Req(10, "")], &["> req 10", "reply 10 401"])]
#[case::anonymous_always_allow_continues_in_its_own_callback(
    ANONYMOUS_ALLOW,
    &[Req(10, "")],
    &["> req 10", "forward 10 continue - +0"]
)]
#[case::bearer_allowed_after_two_callouts_then_cached(
    NODE,
    &[Req(10, "t"), Resp(10, 1, Body(ALICE)), Resp(10, 2, Body(ALLOWED)), Req(11, "t")],
    &[
        "> req 10", "send TokenReview from 10 #1",
        "> resp #1 at 10", "send SubjectAccessReview from 10 #2",
        "> resp #2 at 10", "forward 10 resume -authorization +0",
        "> req 11", "forward 11 continue -authorization +0",
    ]
)]
#[case::forbidden_after_each_subresource(
    NODE,
    &[Req(10, "t"), Resp(10, 1, Body(ALICE)), Resp(10, 2, Body(NO_OPINION)), Resp(10, 3, Body(NO_OPINION))],
    &[
        "> req 10", "send TokenReview from 10 #1",
        "> resp #1 at 10", "send SubjectAccessReview from 10 #2",
        "> resp #2 at 10", "send SubjectAccessReview from 10 #3",
        "> resp #3 at 10", "reply 10 403",
    ]
)]
#[case::waiting_list_shares_each_callout(
    NODE,
    &[Req(10, "t"), Req(11, "t"), Resp(10, 1, Body(ALICE)), Resp(10, 2, Body(ALLOWED))],
    &[
        "> req 10", "send TokenReview from 10 #1",
        "> req 11",
        "> resp #1 at 10", "send SubjectAccessReview from 10 #2",
        "> resp #2 at 10",
        "forward 10 resume -authorization +0", "forward 11 resume -authorization +0",
    ]
)]
#[case::an_answer_at_the_root_is_routed_by_token(
    NODE,
    &[Req(10, "t"), Resp(ROOT, 1, Body(ALICE))],
    &["> req 10", "send TokenReview from 10 #1", "> resp #1 at 1", "send SubjectAccessReview from 1 #2"]
)]
#[case::leader_gone_waiter_leads_from_the_root_tick(
    NODE,
    &[Req(10, "t"), Req(11, "t"), End(10), Tick(2000)],
    &[
        "> req 10", "send TokenReview from 10 #1",
        "> req 11",
        "> done 10", "tick 1",
        "> tick at 2000", "send TokenReview from 1 #2", "tick 1000",
    ]
)]
#[case::a_waiter_that_ends_leaves_the_list(
    NODE,
    &[Req(10, "t"), Req(11, "t"), End(11), Resp(10, 1, Body(ALICE))],
    &[
        "> req 10", "send TokenReview from 10 #1",
        "> req 11", "> done 11",
        "> resp #1 at 10", "send SubjectAccessReview from 10 #2",
    ]
)]
#[case::a_reset_is_retried_from_the_root(
    NODE,
    &[Req(10, "t"), Resp(10, 1, Reset), Tick(3000)],
    &[
        "> req 10", "send TokenReview from 10 #1",
        "> resp #1 at 10", "tick 100",
        "> tick at 3000", "send TokenReview from 1 #2", "tick 1000",
    ]
)]
#[case::an_answer_nobody_waits_for_is_dropped(
    NODE,
    &[Req(10, "t"), End(10), Resp(10, 1, Body(ALICE))],
    &["> req 10", "send TokenReview from 10 #1", "> done 10", "> resp #1 at 10"]
)]
#[case::shadow_forwards_a_denial(
    SHADOW,
    &[Req(10, "")],
    &["> req 10", "forward 10 continue - +0"]
)]
#[case::unreadable_headers_are_answered_500(NODE, &[Unreadable(10)], &["> unreadable 10", "reply 10 500"])]
fn scripts(#[case] config: &str, #[case] script: &[Ev], #[case] want: &[&str]) {
    let mut w = World::new(config);
    w.run(script);
    assert_eq!(w.take(), want);
}

/// Every fail-closed answer is a verdict: answered 500 (never forwarded, in Shadow too),
/// counted as a decision and an internal error, audited with its reason.
#[rstest]
#[case::a_header_edit_fails(NODE)]
#[case::a_header_edit_fails_in_shadow(SHADOW)]
fn failed_forwards_are_500_verdicts(#[case] config: &str) {
    let mut w = World::new(config);
    w.run(&[Req(10, "t"), Resp(10, 1, Body(ALICE))]);
    w.take();
    w.fail.insert("forward");
    w.run(&[Resp(10, 2, Body(ALLOWED))]);
    assert_eq!(w.take(), ["> resp #2 at 10", "reply 10 500"]);
    let internal = r#"kubelet_authz_decisions_total{outcome="internal_error",subresource="pods"}"#;
    assert_eq!(w.counter(internal), 1);
    let allowed = r#"kubelet_authz_decisions_total{outcome="allowed",subresource="pods"}"#;
    assert_eq!(w.counter(allowed), 0);
    assert_eq!(w.counter("kubelet_authz_internal_errors_total"), 1);
    let audits = w.audits();
    assert_eq!(audits.len(), 1, "{audits:?}");
    for want in [
        r#""code":500"#,
        r#""authorization.k8s.io/reason":"forward failed""#,
        r#""kubelet-authz.io/outcome":"internal_error""#,
        r#""sourceIPs":["10.0.0.10"]"#,
        r#""username":"alice""#,
    ] {
        assert!(audits[0].contains(want), "{want} in {}", audits[0]);
    }
    assert!(
        w.s.holds(10),
        "answered locally: its body is held until it ends"
    );
}

/// A driver that does not report a reported action gets it taken as failed: fail closed.
#[test]
fn an_unreported_forward_is_failed_closed() {
    let mut w = World::new(NODE);
    w.run(&[Req(10, "t"), Resp(10, 1, Body(ALICE))]);
    w.take();
    w.mute = true;
    w.run(&[Resp(10, 2, Body(ALLOWED))]);
    assert_eq!(
        w.take(),
        [
            "> resp #2 at 10",
            "forward 10 resume -authorization +0",
            "reply 10 500"
        ]
    );
    let audits = w.audits();
    assert_eq!(audits.len(), 1, "{audits:?}");
    let why = r#""authorization.k8s.io/reason":"the driver did not report the action's result""#;
    assert!(audits[0].contains(why), "{}", audits[0]);
}

/// The request went away before its answer: nobody to answer, counted, nothing audited.
#[rstest]
#[case::before_a_forward(&[ALLOWED])]
#[case::before_a_reply(&[NO_OPINION, NO_OPINION])]
fn gone_before_the_answer(#[case] sars: &[&'static str]) {
    let mut w = World::new(NODE);
    w.run(&[Req(10, "t"), Resp(ROOT, 1, Body(ALICE))]);
    let (last, before) = sars.split_last().unwrap();
    for (i, sar) in before.iter().enumerate() {
        w.run(&[Resp(ROOT, 2 + i as u32, Body(sar))]);
    }
    w.gone.insert(10);
    let token = 1 + sars.len() as u32;
    w.run(&[Resp(ROOT, token, Body(last))]);
    assert_eq!(w.take().last(), Some(&format!("> resp #{token} at 1")));
    assert_eq!(w.counter("kubelet_authz_internal_errors_total"), 1);
    assert!(w.audits().is_empty());
    assert_eq!(w.s.pending(), 0);
    assert!(!w.s.holds(10));
}

#[rstest]
#[case::dispatch(
    "dispatch",
    "kubelet_authz_callouts_total{kind=\"tokenreview\",result=\"send_failed\"}"
)]
#[case::tick("tick", "")]
fn failed_hostcalls_change_no_decision(#[case] fail: &'static str, #[case] series: &str) {
    let mut w = World::new(NODE);
    w.fail.insert(fail);
    w.run(&[Req(10, "t")]);
    if fail == "dispatch" {
        // Fed back as a failed callout: retried on a timer, then failed closed 401 at the end.
        assert!(w.counter(series) >= 1);
        assert_eq!(w.s.timers(), 1);
        for t in 0..12 {
            w.run(&[Tick(2000 + t * 10_000)]);
        }
        assert!(w.take().contains(&"reply 10 401".to_string()));
    } else {
        w.run(&[Resp(10, 1, Reset)]);
        let trace = ["> req 10", "send TokenReview from 10 #1", "> resp #1 at 10"];
        assert_eq!(w.take(), trace, "no faster tick");
        assert_eq!(w.s.timers(), 1, "the retry is still scheduled");
        assert_eq!(
            w.s.tick_ms(),
            1000,
            "a failed set keeps the period last set"
        );
        assert!(w
            .logs
            .iter()
            .any(|(l, m)| *l == Level::Error && m.contains("tick failed")));
    }
}

#[test]
fn too_many_undecided_requests_are_500_verdicts() {
    let mut w = World::new(ROOMY);
    for id in 0..MAX_STREAMS as u32 {
        w.s.on_request(
            100 + id,
            Request::new("GET", "/pods").header("authorization", "Bearer t"),
            1000,
        );
        w.drain();
    }
    assert_eq!(w.s.pending(), MAX_STREAMS);
    w.take();
    w.run(&[Req(7, "t")]);
    assert_eq!(w.take(), ["> req 7", "reply 7 500"]);
    assert_eq!(
        w.counter(r#"kubelet_authz_decisions_total{outcome="internal_error",subresource="none"}"#),
        1
    );
    let audits = w.audits();
    assert_eq!(audits.len(), 1);
    assert!(audits[0].contains(TOO_MANY_STREAMS), "{}", audits[0]);
    assert!(w.s.holds(7), "its body is held until it ends");
    w.run(&[End(7)]);
    assert!(!w.s.holds(7));
}

#[test]
fn an_id_still_undecided_is_refused() {
    let mut w = World::new(NODE);
    w.run(&[Req(10, "t"), Req(10, "t")]);
    assert_eq!(
        w.take(),
        [
            "> req 10",
            "send TokenReview from 10 #1",
            "> req 10",
            "reply 10 500"
        ]
    );
    assert_eq!(w.s.pending(), 1, "the first is still deciding");
}

#[test]
fn too_many_timers_fail_the_request_closed_in_the_engines_shape() {
    let mut w = World::new(ROOMY);
    // Distinct tokens, each reset: one retry timer each.
    let tokens: Vec<String> = (0..=MAX_TIMERS).map(|i| format!("t{i}")).collect();
    for (i, t) in tokens.iter().enumerate() {
        let id = 100 + i as u32;
        let r = Request::new("GET", "/pods").header("authorization", &format!("Bearer {t}"));
        w.s.on_request(id, r, 1000);
        w.drain();
        w.s.on_response(
            id,
            w.next_token,
            CalloutResponse::Failed("reset".into()),
            1001,
        );
        w.drain();
    }
    assert_eq!(w.s.timers(), MAX_TIMERS);
    let last = format!("reply {} 401", 100 + MAX_TIMERS);
    assert_eq!(w.take().last(), Some(&last));
    let audits = w.audits();
    assert!(
        audits.iter().any(|a| a.contains(TOO_MANY_TIMERS)),
        "audited with its reason"
    );
}

#[test]
fn the_work_bound_fails_every_undecided_request_closed() {
    let mut w = World::new(NODE);
    w.run(&[Req(10, "t"), Req(11, "t"), Req(12, "other")]);
    w.take();
    w.s.max_work = 1;
    w.run(&[Resp(10, 1, Body(ALICE))]);
    let trace = w.take();
    for id in [10, 11, 12] {
        assert!(trace.contains(&format!("reply {id} 500")), "{trace:?}");
    }
    assert_eq!(w.s.pending(), 0);
    assert_eq!(
        w.counter(r#"kubelet_authz_callouts_total{kind="tokenreview",result="cancelled"}"#),
        1
    );
    let audits = w.audits();
    assert_eq!(audits.len(), 3);
    assert!(
        audits.iter().all(|a| a.contains(TOO_MUCH_WORK)),
        "{audits:?}"
    );
}

/// The tick runs every second to flush the counters, faster while a timer is due, and the
/// counters are handed over on it.
#[test]
fn the_tick_follows_the_timers_and_flushes() {
    let mut w = World::new(NODE);
    w.run(&[Req(10, "t"), Resp(10, 1, Reset)]);
    assert_eq!(
        w.take(),
        [
            "> req 10",
            "send TokenReview from 10 #1",
            "> resp #1 at 10",
            "tick 100"
        ]
    );
    assert!(w.counts.is_empty(), "counted in the VM until the tick");
    assert_eq!(w.records.len(), 1, "latency recorded on the answer");
    w.run(&[Tick(3000)]);
    assert_eq!(
        w.take(),
        ["> tick at 3000", "send TokenReview from 1 #2", "tick 1000"]
    );
    assert!(!w.counts.is_empty());
    let n = w.counts.len();
    w.run(&[Tick(4000)]);
    assert_eq!(w.counts.len(), n, "nothing new, nothing handed over");
}

/// A VM restart (Envoy's FAIL_RELOAD, or a new configuration): the old scheduler hands its
/// counters over; the new one ignores the old callouts' answers and decides afresh.
#[test]
fn a_restarted_vm_starts_clean() {
    let mut old = World::new(NODE);
    old.run(&[Req(10, "t"), Resp(10, 1, Body(ALICE))]);
    old.s.flush();
    old.drain();
    assert!(!old.counts.is_empty());
    assert!(!old.s.counters().is_dirty());
    let mut w = World::new(NODE);
    w.run(&[Resp(10, 2, Body(ALLOWED)), End(10), Req(11, "t")]);
    assert_eq!(
        w.take(),
        [
            "> resp #2 at 10",
            "> done 10",
            "> req 11",
            "send TokenReview from 11 #1"
        ]
    );
    assert!(w
        .logs
        .iter()
        .any(|(l, m)| *l == Level::Debug && m.contains("nobody waits")));
}

#[test]
fn only_written_events_read_the_client_address() {
    let mut w = World::new(NODE);
    w.fail.insert("source");
    w.run(&[Req(10, "")]);
    let audits = w.audits();
    assert_eq!(audits.len(), 1, "a 401 is written by the built-in policy");
    assert!(!audits[0].contains("sourceIPs\":[\"10"), "{}", audits[0]);
    assert_eq!(w.s.pending(), 0);
    let mut a = World::new(ANONYMOUS_ALLOW);
    a.run(&[Req(10, "")]);
    assert_eq!(a.continued, [10]);
}
