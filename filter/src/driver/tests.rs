//! The driver against a fake proxy: what it dispatches, answers, resumes and schedules.

use std::time::Duration;

use kubelet_authz::config::Config;
use kubelet_authz::decision::{CalloutKind, CalloutResponse, Request};

use super::{Filter, Next, MAX_TICK_MS};
use crate::host::{Host, HostError, Level, MetricKind};
use crate::metrics;

const ROOT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Dispatch { ctx: u32, token: u32, path: String },
    Resume(u32),
    Reply(u32, u16, String),
    Remove(u32, String),
    Set(u32, String, String),
    Tick(u64),
}

#[derive(Default)]
struct Fake {
    effective: u32,
    next_token: u32,
    fail_dispatch: bool,
    /// Output hostcalls that fail (with `BadArgument`), by the name in [`HostError::call`].
    fail: Vec<&'static str>,
    events: Vec<Ev>,
    logs: Vec<(Level, String)>,
    counters: Vec<(String, u64)>,
    histograms: Vec<(String, Vec<u64>)>,
    /// `source_address` reads, by the context effective at the time.
    source_reads: Vec<u32>,
}

impl Fake {
    /// The proxy enters a callback with that callback's context effective.
    fn at(&mut self, context_id: u32) -> &mut Self {
        self.effective = context_id;
        self
    }
    fn take(&mut self) -> Vec<Ev> {
        std::mem::take(&mut self.events)
    }
    /// A counter by its Prometheus series, as flushed so far.
    fn counter(&self, series: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| metrics::prometheus_of(n).as_deref() == Some(series))
            .map_or(0, |(_, v)| *v)
    }
    fn check(&self, call: &'static str) -> Result<(), HostError> {
        if self.fail.contains(&call) {
            return Err(HostError { call, status: 2 });
        }
        Ok(())
    }
    fn audits(&self) -> Vec<&str> {
        self.logs
            .iter()
            .filter(|(l, m)| {
                *l == Level::Info && m.starts_with(kubelet_authz::audit::AUDIT_LOG_PREFIX)
            })
            .map(|(_, m)| m.as_str())
            .collect()
    }
}

impl Host for Fake {
    fn log(&mut self, level: Level, message: &str) {
        self.logs.push((level, message.to_string()));
    }
    fn set_effective_context(&mut self, context_id: u32) -> Result<(), HostError> {
        self.check("set_effective_context")?;
        self.effective = context_id;
        Ok(())
    }
    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(String, String)],
        _body: &[u8],
        _timeout: Duration,
    ) -> Result<u32, HostError> {
        assert_eq!(cluster, "kube-apiserver");
        if self.fail_dispatch {
            return Err(HostError {
                call: "dispatch_http_call",
                status: 2,
            });
        }
        self.next_token += 1;
        let path = headers
            .iter()
            .find(|(k, _)| k == ":path")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        self.events.push(Ev::Dispatch {
            ctx: self.effective,
            token: self.next_token,
            path,
        });
        Ok(self.next_token)
    }
    fn resume_request(&mut self) -> Result<(), HostError> {
        self.check("continue_stream")?;
        self.events.push(Ev::Resume(self.effective));
        Ok(())
    }
    fn send_response(&mut self, status: u16, body: &[u8]) -> Result<(), HostError> {
        self.check("send_local_response")?;
        self.events.push(Ev::Reply(
            self.effective,
            status,
            String::from_utf8_lossy(body).into_owned(),
        ));
        Ok(())
    }
    fn remove_request_header(&mut self, name: &str) -> Result<(), HostError> {
        self.check("remove_header_map_value")?;
        self.events
            .push(Ev::Remove(self.effective, name.to_string()));
        Ok(())
    }
    fn set_request_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.events
            .push(Ev::Set(self.effective, name.to_string(), value.to_string()));
        Ok(())
    }
    fn define_metric(&mut self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        self.check("define_metric")?;
        if kind == MetricKind::Histogram {
            self.histograms.push((name.to_string(), Vec::new()));
            return Ok(u32::try_from(self.histograms.len() - 1).unwrap_or(u32::MAX));
        }
        self.counters.push((name.to_string(), 0));
        Ok(u32::try_from(self.counters.len() - 1).unwrap_or(u32::MAX))
    }
    fn record(&mut self, id: u32, value: u64) -> Result<(), HostError> {
        self.check("record_metric")?;
        if let Some(h) = self.histograms.get_mut(id as usize) {
            h.1.push(value);
        }
        Ok(())
    }
    fn increment(&mut self, id: u32, by: u64) -> Result<(), HostError> {
        self.check("increment_metric")?;
        if let Some(c) = self.counters.get_mut(id as usize) {
            c.1 += by;
        }
        Ok(())
    }
    fn source_address(&mut self) -> Result<Option<Vec<u8>>, HostError> {
        self.check("get_property")?;
        self.source_reads.push(self.effective);
        Ok(Some(format!("10.0.0.{}:5555", self.effective).into_bytes()))
    }

    fn set_tick_period_ms(&mut self, ms: u64) -> Result<(), HostError> {
        self.check("set_tick_period")?;
        assert_eq!(self.effective, ROOT, "tick period set on the root");
        self.events.push(Ev::Tick(ms));
        Ok(())
    }
}

fn filter(json: &str) -> Filter {
    let config = Config::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let mut f = Filter::new(config, ROOT, [7; 32], 42);
    // As the root does after configuring: the flush tick runs from the start.
    f.start(Fake::default().at(ROOT));
    assert_eq!(f.tick_ms(), metrics::FLUSH_MS);
    f
}

fn bearer(token: &str) -> Request {
    let mut r = Request::new("GET", "/pods").header("authorization", &format!("Bearer {token}"));
    r.request_id = Some("req-1".into());
    r
}

fn http(body: &str) -> CalloutResponse {
    CalloutResponse::Http {
        status: 201,
        retry_after: None,
        body: body.as_bytes().to_vec(),
    }
}

const ALICE: &str = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","status":{"authenticated":true,"user":{"username":"alice","groups":["dev"]}}}"#;
const ALLOWED: &str = r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","status":{"allowed":true,"reason":"rbac"}}"#;
const NO_OPINION: &str = r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","status":{"allowed":false}}"#;

const TR: &str = kubelet_authz::review::TOKEN_REVIEW_PATH;
const SAR: &str = kubelet_authz::review::SUBJECT_ACCESS_REVIEW_PATH;

#[test]
fn bearer_allowed_after_two_callouts() {
    let mut f = filter(r#"{"nodeName":"n1"}"#);
    let mut h = Fake::default();
    assert_eq!(
        f.on_request_headers(h.at(10), 10, bearer("t1"), 1000),
        Next::Pause
    );
    assert_eq!(
        h.take(),
        vec![Ev::Dispatch {
            ctx: 10,
            token: 1,
            path: TR.into()
        }]
    );
    f.on_call_response(h.at(10), 10, 1, http(ALICE), 1001);
    assert_eq!(
        h.take(),
        vec![Ev::Dispatch {
            ctx: 10,
            token: 2,
            path: SAR.into()
        }]
    );
    f.on_call_response(h.at(10), 10, 2, http(ALLOWED), 1002);
    assert_eq!(
        h.take(),
        vec![Ev::Remove(10, "authorization".into()), Ev::Resume(10)]
    );
    assert_eq!(f.pending(), 0);
    let audits = h.audits();
    assert_eq!(audits.len(), 1);
    assert!(audits[0].contains("\"auditID\":\"req-1\""), "{}", audits[0]);
    assert!(!audits[0].contains("t1"));
    // The client address is read once, when the event is written, in the request's context.
    assert!(
        audits[0].contains("\"sourceIPs\":[\"10.0.0.10\"]"),
        "{}",
        audits[0]
    );
    assert_eq!(h.source_reads, vec![10]);
    assert!(h.counters.is_empty(), "counted in the VM until the tick");
    f.on_tick(h.at(ROOT), 2000);
    assert_eq!(
        h.counter(r#"kubelet_authz_decisions_total{outcome="allowed",subresource="pods"}"#),
        1
    );
    assert_eq!(
        h.counter(r#"kubelet_authz_authentications_total{method="bearer"}"#),
        1
    );
    assert_eq!(
        h.counter(r#"kubelet_authz_callouts_total{kind="tokenreview",result="ok"}"#),
        1
    );
    assert_eq!(
        h.counter(r#"kubelet_authz_callouts_total{kind="subjectaccessreview",result="ok"}"#),
        1
    );
    assert_eq!(
        h.histograms,
        [
            (metrics::latency_name(CalloutKind::TokenReview), vec![1]),
            (
                metrics::latency_name(CalloutKind::SubjectAccessReview),
                vec![1]
            ),
        ]
    );
    assert_eq!(
        h.counter(r#"kubelet_authz_cache_misses_total{cache="token"}"#),
        1
    );
    assert_eq!(
        h.counter(r#"kubelet_authz_cache_misses_total{cache="sar"}"#),
        1
    );

    // Cached now: decided synchronously, no callout.
    assert_eq!(
        f.on_request_headers(h.at(11), 11, bearer("t1"), 1003),
        Next::Continue
    );
    assert_eq!(h.take(), vec![Ev::Remove(11, "authorization".into())]);
    f.on_tick(h.at(ROOT), 3000);
    assert_eq!(
        h.counter(r#"kubelet_authz_cache_hits_total{cache="token"}"#),
        1
    );
    assert_eq!(
        h.counter(r#"kubelet_authz_cache_hits_total{cache="sar"}"#),
        1
    );
    assert_eq!(
        h.counter(r#"kubelet_authz_decisions_total{outcome="allowed",subresource="pods"}"#),
        2
    );
    assert_eq!(h.take(), vec![], "the flush is no proxy action");
}

#[test]
fn no_credentials_is_401_at_once() {
    let mut f = filter(r#"{"nodeName":"n1"}"#);
    let mut h = Fake::default();
    let r = Request::new("GET", "/pods");
    assert_eq!(f.on_request_headers(h.at(10), 10, r, 1000), Next::Pause);
    assert_eq!(h.take(), vec![Ev::Reply(10, 401, "Unauthorized".into())]);
    assert!(h.audits()[0].contains("\"code\":401"));
    f.flush_metrics(&mut h);
    assert_eq!(
        h.counter(r#"kubelet_authz_decisions_total{outcome="unauthenticated",subresource="none"}"#),
        1
    );
}

#[test]
fn anonymous_always_allow_continues() {
    let mut f = filter(
        r#"{"nodeName":"n1","authentication":{"anonymous":{"enabled":true}},"authorization":{"mode":"AlwaysAllow"},"audit":{"enabled":false}}"#,
    );
    let mut h = Fake::default();
    let r = Request::new("GET", "/healthz");
    assert_eq!(f.on_request_headers(h.at(10), 10, r, 1000), Next::Continue);
    assert_eq!(h.take(), vec![]);
    assert!(h.audits().is_empty());
    assert!(
        h.source_reads.is_empty(),
        "no audit, no source address read"
    );
    f.flush_metrics(&mut h);
    assert_eq!(
        h.counter(r#"kubelet_authz_authentications_total{method="anonymous"}"#),
        1
    );
}

#[test]
fn forbidden_after_every_subresource() {
    let mut f = filter(r#"{"nodeName":"n1"}"#);
    let mut h = Fake::default();
    f.on_request_headers(h.at(10), 10, bearer("t1"), 1000);
    f.on_call_response(h.at(10), 10, 1, http(ALICE), 1001);
    h.take();
    f.on_call_response(h.at(10), 10, 2, http(NO_OPINION), 1002);
    let ev = h.take();
    let last = ev.last().cloned();
    match ev.first() {
        Some(Ev::Dispatch { path, .. }) if path == SAR => {
            // 1.36 tries pods then proxy.
            f.on_call_response(h.at(10), 10, 3, http(NO_OPINION), 1003);
            let ev = h.take();
            assert!(
                matches!(ev.as_slice(), [Ev::Reply(10, 403, b)] if b.starts_with("Forbidden (user=alice, verb=get, resource=nodes, subresource(s)=[pods proxy])")),
                "{ev:?}"
            );
        }
        _ => panic!("expected a second SubjectAccessReview, got {last:?}"),
    }
}

#[test]
fn identical_requests_share_callouts() {
    let mut f = filter(r#"{"nodeName":"n1"}"#);
    let mut h = Fake::default();
    assert_eq!(
        f.on_request_headers(h.at(10), 10, bearer("t1"), 1000),
        Next::Pause
    );
    assert_eq!(
        f.on_request_headers(h.at(11), 11, bearer("t1"), 1000),
        Next::Pause
    );
    assert_eq!(h.take().len(), 1, "one TokenReview for both");
    f.on_call_response(h.at(10), 10, 1, http(ALICE), 1001);
    // The leader sends the SubjectAccessReview; the waiter joins it.
    assert_eq!(
        h.take(),
        vec![Ev::Dispatch {
            ctx: 10,
            token: 2,
            path: SAR.into()
        }]
    );
    f.on_call_response(h.at(10), 10, 2, http(ALLOWED), 1002);
    let ev = h.take();
    assert!(ev.contains(&Ev::Resume(10)), "{ev:?}");
    assert!(ev.contains(&Ev::Resume(11)), "{ev:?}");
    assert!(
        ev.contains(&Ev::Remove(11, "authorization".into())),
        "{ev:?}"
    );
    assert_eq!(f.pending(), 0);
    assert_eq!(f.engine().inflight_len(), 0);
}

#[test]
fn leader_gone_waiter_leads_from_the_root_tick() {
    let mut f = filter(r#"{"nodeName":"n1"}"#);
    let mut h = Fake::default();
    f.on_request_headers(h.at(10), 10, bearer("t1"), 1000);
    f.on_request_headers(h.at(11), 11, bearer("t1"), 1000);
    h.take();
    f.on_done(h.at(10), 10, 1001);
    // The waiter must call now, but request 10's callback may not send for it: deferred.
    assert_eq!(h.take(), vec![Ev::Tick(1)]);
    assert_eq!(f.timers(), 1);
    f.on_tick(h.at(ROOT), 1002);
    assert_eq!(
        h.take(),
        vec![
            Ev::Dispatch {
                ctx: ROOT,
                token: 2,
                path: TR.into()
            },
            Ev::Tick(metrics::FLUSH_MS)
        ]
    );
    // The late answer to the gone leader's callout is ignored.
    f.on_call_response(h.at(10), 10, 1, http(ALICE), 1003);
    assert_eq!(h.take(), vec![]);
    // The answer arrives at the root and is routed to request 11, whose SAR goes from the root.
    f.on_call_response(h.at(ROOT), ROOT, 2, http(ALICE), 1004);
    assert_eq!(
        h.take(),
        vec![Ev::Dispatch {
            ctx: ROOT,
            token: 3,
            path: SAR.into()
        }]
    );
    f.on_call_response(h.at(ROOT), ROOT, 3, http(ALLOWED), 1005);
    assert_eq!(
        h.take(),
        vec![Ev::Remove(11, "authorization".into()), Ev::Resume(11)]
    );
    assert_eq!(h.effective, ROOT, "effective context restored");
}

#[test]
fn dispatch_failure_retries_then_fails_closed() {
    let mut f = filter(r#"{"nodeName":"n1"}"#);
    let mut h = Fake {
        fail_dispatch: true,
        ..Fake::default()
    };
    let mut now = 1000;
    assert_eq!(
        f.on_request_headers(h.at(10), 10, bearer("t1"), now),
        Next::Pause
    );
    assert_eq!(h.take(), vec![Ev::Tick(100)]);
    for _ in 0..200 {
        if f.pending() == 0 {
            break;
        }
        now += 100;
        f.on_tick(h.at(ROOT), now);
    }
    let ev = h.take();
    assert!(
        ev.contains(&Ev::Reply(10, 401, "Unauthorized".into())),
        "{ev:?}"
    );
    assert_eq!(ev.last(), Some(&Ev::Tick(metrics::FLUSH_MS)));
    f.flush_metrics(&mut h);
    assert_eq!(
        h.counter(r#"kubelet_authz_callouts_total{kind="tokenreview",result="send_failed"}"#),
        5
    );
    assert_eq!(
        h.counter(r#"kubelet_authz_callout_retries_total{kind="tokenreview"}"#),
        4
    );
    assert!(
        h.histograms.is_empty(),
        "no latency for a callout never sent"
    );
    assert!(
        now - 1000 >= 500 + 750 + 1125 + 1687,
        "backoff respected: {now}"
    );
    assert_eq!(f.engine().inflight_len(), 0);
}

#[test]
fn callout_timeout_is_retried_from_the_root() {
    let mut f = filter(r#"{"nodeName":"n1"}"#);
    let mut h = Fake::default();
    f.on_request_headers(h.at(10), 10, bearer("t1"), 1000);
    h.take();
    f.on_call_response(h.at(10), 10, 1, crate::convert::no_response(), 1001);
    assert_eq!(h.take(), vec![Ev::Tick(100)]);
    f.on_tick(h.at(ROOT), 1700);
    assert_eq!(
        h.take(),
        vec![
            Ev::Dispatch {
                ctx: ROOT,
                token: 2,
                path: TR.into()
            },
            Ev::Tick(metrics::FLUSH_MS)
        ]
    );
    f.on_call_response(h.at(ROOT), ROOT, 2, http(ALICE), 1701);
    f.on_call_response(h.at(ROOT), ROOT, 3, http(ALLOWED), 1702);
    assert!(h.take().contains(&Ev::Resume(10)));
}

#[test]
fn shadow_forwards_denials_and_counts_them() {
    let mut f = filter(r#"{"nodeName":"n1","enforcement":"Shadow"}"#);
    let mut h = Fake::default();
    assert_eq!(
        f.on_request_headers(h.at(10), 10, Request::new("GET", "/pods"), 1000),
        Next::Continue
    );
    f.flush_metrics(&mut h);
    assert_eq!(
        h.counter(r#"kubelet_authz_shadow_denials_total{subresource="none"}"#),
        1
    );
    assert!(h.audits()[0].contains("shadow"));
}

#[test]
fn done_with_waiter_leaves_queue() {
    let mut f = filter(r#"{"nodeName":"n1"}"#);
    let mut h = Fake::default();
    f.on_request_headers(h.at(10), 10, bearer("t1"), 1000);
    f.on_request_headers(h.at(11), 11, bearer("t1"), 1000);
    h.take();
    f.on_done(h.at(11), 11, 1001);
    assert_eq!(h.take(), vec![]);
    f.on_call_response(h.at(10), 10, 1, http(ALICE), 1002);
    f.on_call_response(h.at(10), 10, 2, http(ALLOWED), 1003);
    let ev = h.take();
    assert!(!ev.iter().any(|e| matches!(e, Ev::Resume(11))), "{ev:?}");
    assert_eq!(f.pending(), 0);
}

#[test]
fn held_until_forwarded_and_after_a_local_reply() {
    let mut f = filter(r#"{"nodeName":"n1"}"#);
    let mut h = Fake::default();
    f.on_request_headers(h.at(10), 10, bearer("t1"), 1000);
    assert!(f.holds(10), "undecided");
    f.on_call_response(h.at(10), 10, 1, http(ALICE), 1001);
    f.on_call_response(h.at(10), 10, 2, http(ALLOWED), 1002);
    assert!(!f.holds(10), "forwarded");

    f.on_request_headers(h.at(11), 11, Request::new("POST", "/run/ns/pod/c"), 1003);
    assert!(f.holds(11), "answered 401: its body must not pass");
    f.on_done(h.at(11), 11, 1004);
    assert!(!f.holds(11));
}

// Host errors: the SDK's wrappers panicked on any status but `Ok` (a dead VM); the filter's own
// bindings (`abi.rs`) return it, and the driver fails closed (issue 16, trap audit).

/// Decide `bearer("t1")` as context 10 with every callout answered (TokenReview, then allowed).
fn decide_allowed(f: &mut Filter, h: &mut Fake) {
    f.on_request_headers(h.at(10), 10, bearer("t1"), 1000);
    f.on_call_response(h.at(10), 10, 1, http(ALICE), 1001);
    f.on_call_response(h.at(10), 10, 2, http(ALLOWED), 1002);
}

#[test]
fn credentials_that_cannot_be_stripped_are_never_forwarded() {
    let mut f = filter(r#"{"nodeName":"n1"}"#);
    let mut h = Fake {
        fail: vec!["remove_header_map_value"],
        ..Fake::default()
    };
    decide_allowed(&mut f, &mut h);
    let ev = h.take();
    assert!(!ev.iter().any(|e| matches!(e, Ev::Resume(_))), "{ev:?}");
    assert_eq!(
        ev.last(),
        Some(&Ev::Reply(10, 500, "Internal Server Error".into()))
    );
    assert_eq!(f.pending(), 0);
}

#[test]
fn a_failed_resume_is_answered_500() {
    let mut f = filter(r#"{"nodeName":"n1"}"#);
    let mut h = Fake {
        fail: vec!["continue_stream"],
        ..Fake::default()
    };
    decide_allowed(&mut f, &mut h);
    let ev = h.take();
    assert_eq!(
        ev.last(),
        Some(&Ev::Reply(10, 500, "Internal Server Error".into()))
    );
    assert_eq!(f.pending(), 0);
}

#[test]
fn a_failed_local_reply_is_logged_and_the_filter_goes_on() {
    let mut f = filter(r#"{"nodeName":"n1"}"#);
    let mut h = Fake {
        fail: vec!["send_local_response"],
        ..Fake::default()
    };
    assert_eq!(
        f.on_request_headers(h.at(10), 10, Request::new("GET", "/pods"), 1000),
        Next::Pause
    );
    assert!(h
        .logs
        .iter()
        .any(|(l, m)| *l == Level::Error && m.contains("send_local_response")));
    // The next request is decided as always.
    h.fail.clear();
    decide_allowed(&mut f, &mut h);
    assert!(h.take().contains(&Ev::Resume(10)));
}

#[test]
fn failed_metric_and_timer_calls_change_no_decision() {
    let mut f = filter(r#"{"nodeName":"n1"}"#);
    let mut h = Fake {
        fail: vec![
            "define_metric",
            "increment_metric",
            "record_metric",
            "set_tick_period",
        ],
        ..Fake::default()
    };
    decide_allowed(&mut f, &mut h);
    assert_eq!(
        h.take(),
        vec![
            Ev::Dispatch {
                ctx: 10,
                token: 1,
                path: TR.into()
            },
            Ev::Dispatch {
                ctx: 10,
                token: 2,
                path: SAR.into()
            },
            Ev::Remove(10, "authorization".into()),
            Ev::Resume(10),
        ]
    );
    // The flush fails too: logged once, and nothing else happens.
    f.on_tick(h.at(ROOT), 5000);
    f.on_tick(h.at(ROOT), 6000);
    assert_eq!(h.take(), vec![]);
    let warned = h
        .logs
        .iter()
        .filter(|(l, m)| *l == Level::Warn && m.contains("metrics"))
        .count();
    assert_eq!(warned, 1, "{:?}", h.logs);
}

#[test]
fn a_request_gone_with_its_callout_counts_it_cancelled() {
    let mut f = filter(r#"{"nodeName":"n1"}"#);
    let mut h = Fake::default();
    f.on_request_headers(h.at(10), 10, bearer("t1"), 1000);
    f.on_done(h.at(10), 10, 1500);
    f.flush_metrics(&mut h);
    assert_eq!(
        h.counter(r#"kubelet_authz_callouts_total{kind="tokenreview",result="cancelled"}"#),
        1
    );
    // Its late answer is neither counted again nor timed.
    f.on_call_response(h.at(10), 10, 1, http(ALICE), 1600);
    f.flush_metrics(&mut h);
    assert_eq!(
        h.counter(r#"kubelet_authz_callouts_total{kind="tokenreview",result="ok"}"#),
        0
    );
    assert!(h.histograms.is_empty());
}

#[test]
fn the_tick_flushes_every_second_and_runs_faster_while_retries_wait() {
    let mut f = filter(r#"{"nodeName":"n1"}"#);
    let mut h = Fake::default();
    f.on_request_headers(h.at(10), 10, bearer("t1"), 1000);
    h.take();
    // A 500 is retried after a backoff: the tick speeds up for it ...
    let unavailable = CalloutResponse::Http {
        status: 500,
        retry_after: None,
        body: Vec::new(),
    };
    f.on_call_response(h.at(10), 10, 1, unavailable, 1001);
    assert_eq!(h.take(), vec![Ev::Tick(MAX_TICK_MS)]);
    assert!(f.metrics().is_dirty());
    // ... and every tick flushes what was counted.
    f.on_tick(h.at(ROOT), 1101);
    assert!(!f.metrics().is_dirty());
    assert_eq!(
        h.counter(r#"kubelet_authz_callouts_total{kind="tokenreview",result="status_5xx"}"#),
        1
    );
    assert_eq!(
        h.counter(r#"kubelet_authz_callout_retries_total{kind="tokenreview"}"#),
        1
    );
    // With the retry sent, back to the flush period.
    for now in (1201..=3001).step_by(100) {
        f.on_tick(h.at(ROOT), now);
        if f.timers() == 0 {
            break;
        }
    }
    assert_eq!(f.tick_ms(), metrics::FLUSH_MS);
    assert!(h.take().contains(&Ev::Tick(metrics::FLUSH_MS)));
}

#[test]
fn an_answer_for_a_context_that_cannot_be_entered_is_dropped() {
    let mut f = filter(r#"{"nodeName":"n1"}"#);
    let mut h = Fake::default();
    f.on_request_headers(h.at(10), 10, bearer("t1"), 1000);
    f.on_call_response(h.at(10), 10, 1, http(ALICE), 1001);
    h.take();
    // The SubjectAccessReview comes back while the root is effective, and the host refuses to
    // make context 10 effective again (it went away): nothing is sent to anybody.
    h.fail.push("set_effective_context");
    f.on_call_response(h.at(ROOT), ROOT, 2, http(ALLOWED), 1002);
    let ev = h.take();
    assert!(ev.is_empty(), "{ev:?}");
    assert_eq!(f.pending(), 0);
}

#[test]
fn a_timer_overflow_is_audited_with_its_reason() {
    let mut f = filter(r#"{"nodeName":"n1","limits":{"maxInflight":8192}}"#);
    let mut h = Fake {
        fail_dispatch: true,
        ..Fake::default()
    };
    // Every request's TokenReview cannot be sent, so each waits for a retry timer; one more
    // request than there are timers is failed closed at once.
    let now = 1000;
    let over = 100 + u32::try_from(super::MAX_TIMERS).unwrap();
    for id in 100..=over {
        let mut r = bearer(&format!("t{id}"));
        r.request_id = Some(format!("req-{id}"));
        assert_eq!(f.on_request_headers(h.at(id), id, r, now), Next::Pause);
    }
    let ev = h.take();
    assert!(
        ev.contains(&Ev::Reply(over, 401, "Unauthorized".into())),
        "the request beyond the bound is answered 401"
    );
    assert_eq!(f.pending(), super::MAX_TIMERS);
    let audits = h.audits();
    assert_eq!(audits.len(), 1, "{audits:?}");
    let line = audits.first().copied().unwrap_or_default();
    assert!(
        line.contains(&format!(
            "\"authorization.k8s.io/reason\":\"authentication failed: {}\"",
            super::TOO_MANY_TIMERS
        )),
        "{line}"
    );
}

/// The audit policy decides which decisions are written: one log line each, from the VM's one
/// buffer, and none for a dropped decision (it is still acted on).
#[test]
fn the_audit_policy_decides_what_is_written() {
    let cfg = |audit: &str| {
        format!(
            r#"{{"nodeName":"n1","authentication":{{"anonymous":{{"enabled":true}}}},"authorization":{{"mode":"AlwaysAllow"}},"audit":{audit}}}"#
        )
    };
    // The built-in policy: an allowed healthz read is dropped; an exec and a refusal are written.
    let mut f = filter(&cfg(r#"{"enabled":true}"#));
    let mut h = Fake::default();
    let healthz = Request::new("GET", "/healthz");
    assert_eq!(
        f.on_request_headers(h.at(10), 10, healthz.clone(), 1000),
        Next::Continue
    );
    assert!(h.audits().is_empty(), "{:?}", h.audits());
    assert!(
        h.source_reads.is_empty(),
        "a dropped event reads no client address"
    );
    let exec = Request::new("POST", "/exec/ns/p/c?command=sh");
    assert_eq!(
        f.on_request_headers(h.at(11), 11, exec, 1001),
        Next::Continue
    );
    let refused = Request::new("GET", "/pods/../exec");
    assert_eq!(
        f.on_request_headers(h.at(12), 12, refused, 1002),
        Next::Pause
    );
    let audits = h.audits();
    assert_eq!(audits.len(), 2, "{audits:?}");
    assert!(audits[0].contains(r#""verb":"create""#), "{}", audits[0]);
    assert!(audits[1].contains(r#""code":400"#), "{}", audits[1]);
    assert_eq!(h.source_reads, vec![11, 12], "one read per written event");
    // A user policy that drops everything: nothing written, the decision still acted on.
    let mut f = filter(&cfg(r#"{"policy":{"rules":[{"level":"None"}]}}"#));
    let mut h = Fake::default();
    let exec = Request::new("POST", "/exec/ns/p/c?command=sh");
    assert_eq!(
        f.on_request_headers(h.at(10), 10, exec, 1000),
        Next::Continue
    );
    assert!(h.audits().is_empty());
    // Every decision: the healthz read is written too.
    let mut f = filter(&cfg(r#"{"policy":{"rules":[{"level":"Metadata"}]}}"#));
    let mut h = Fake::default();
    assert_eq!(
        f.on_request_headers(h.at(10), 10, healthz, 1000),
        Next::Continue
    );
    assert_eq!(h.audits().len(), 1);
}
