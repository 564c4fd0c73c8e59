//! Hardening, natively: floods of distinct tokens and of identical concurrent requests keep every
//! cache and queue at its bound, and what overflows fails closed in the kubelet's shapes (401 while
//! authenticating, 500 while authorizing); the path-confusion corpus through the engine alone (no
//! Envoy normalisation in front): nothing non-canonical is authorized, and what is authorized is
//! the subresource of the path that is forwarded.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kubelet_authz::config::Config;
use kubelet_authz::decision::{
    run_to_end, Callout, CalloutKind, CalloutResponse, Engine, Outcome, Progress, Request, Session,
    Step,
};
use kubelet_authz::review::{SubjectAccessReview, TokenReview};
use proptest::prelude::*;

use kubelet_authz_test_support::oracle::{checks, checks_136, resolved};

fn engine(extra: &str) -> Engine {
    let sep = if extra.is_empty() { "" } else { "," };
    let cfg =
        Config::from_json(format!(r#"{{"nodeName":"worker-1"{sep}{extra}}}"#).as_bytes()).unwrap();
    Engine::new(cfg, [7; 32])
}

fn ok(v: serde_json::Value) -> CalloutResponse {
    CalloutResponse::Http {
        status: 201,
        retry_after: None,
        body: v.to_string().into_bytes(),
    }
}

/// An API server: tokens `user-N` authenticate as user `uN` (odd N are rejected); user
/// `podlister` (token `pl`) may `get` `pods`; nothing else is allowed.
fn api(c: &Callout) -> CalloutResponse {
    match c.kind {
        CalloutKind::TokenReview => {
            let tr: TokenReview = serde_json::from_str(&c.body).unwrap();
            let t = tr.spec.token;
            let status = if t == "pl" {
                serde_json::json!({"authenticated": true, "user": {"username": "podlister"}})
            } else if let Some(n) = t.strip_prefix("user-").and_then(|n| n.parse::<u64>().ok()) {
                if n % 2 == 0 {
                    serde_json::json!({"authenticated": true, "user": {"username": format!("u{n}")}})
                } else {
                    serde_json::json!({"authenticated": false})
                }
            } else {
                serde_json::json!({"authenticated": false})
            };
            ok(serde_json::json!({"kind": "TokenReview", "status": status}))
        }
        CalloutKind::SubjectAccessReview => {
            let sar: SubjectAccessReview = serde_json::from_str(&c.body).unwrap();
            let a = sar.spec.resource_attributes.unwrap();
            let allowed =
                sar.spec.user == "podlister" && a.verb == "get" && a.subresource == "pods";
            ok(serde_json::json!({"kind": "SubjectAccessReview", "status": {"allowed": allowed}}))
        }
    }
}

fn bearer(method: &str, target: &str, token: &str) -> Request {
    Request::new(method, target).header("authorization", &format!("Bearer {token}"))
}

fn call_of(p: &Progress) -> Option<&Callout> {
    match &p.step {
        Step::Call(c) => Some(c),
        _ => None,
    }
}

/// A cheap deterministic generator of distinct random-looking tokens.
fn random_token(i: u64) -> String {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 31;
    format!("user-{}-{x:016x}", i)
}

#[test]
fn hundred_thousand_distinct_tokens_keep_the_caches_at_their_bounds() {
    let mut e = engine("");
    let mut calls = 0u64;
    let mut allowed = 0u64;
    for i in 0..100_000u64 {
        // `user-N-...` does not parse as `user-N`: every random token is rejected, and half of
        // a second series (`user-N`) authenticates, so both caches fill.
        let token = if i % 4 == 0 {
            format!("user-{i}")
        } else {
            random_token(i)
        };
        let mut s = Session::new(1, bearer("GET", "/pods", &token));
        let v = run_to_end(&mut e, &mut s, i, &mut |c| {
            calls += 1;
            api(c)
        });
        if v.outcome == Outcome::Allowed {
            allowed += 1;
        }
        assert!(
            e.token_cache_len() <= 4096,
            "token cache {}",
            e.token_cache_len()
        );
        assert!(e.sar_cache_len() <= 8192, "SAR cache {}", e.sar_cache_len());
        assert_eq!(e.inflight_len(), 0);
    }
    assert_eq!(allowed, 0, "no flood token may be allowed");
    assert_eq!(e.token_cache_len(), 4096);
    assert_eq!(e.sar_cache_len(), 8192);
    // One TokenReview per distinct token, two SARs (pods, proxy) per authenticated one (every 4th).
    assert_eq!(calls, 100_000 + 2 * 25_000);
    // The legitimate caller still gets in after the flood.
    let mut s = Session::new(1, bearer("GET", "/pods", "pl"));
    assert_eq!(
        run_to_end(&mut e, &mut s, 100_001, &mut api).outcome,
        Outcome::Allowed
    );
}

#[test]
fn distinct_tokens_in_flight_are_capped_and_the_overflow_is_401() {
    let mut e = engine(r#""limits":{"maxInflight":1024}"#);
    let mut leaders = Vec::new();
    let mut refused = 0;
    for i in 0..100_000u32 {
        let mut s = Session::new(i + 1, bearer("GET", "/pods", &random_token(u64::from(i))));
        let p = s.start(&mut e, 0);
        match p.step {
            Step::Call(_) => leaders.push(s),
            Step::Reply(v) => {
                assert_eq!((v.status, v.outcome), (401, Outcome::Unauthenticated));
                assert_eq!(v.body, "Unauthorized");
                refused += 1;
            }
            other => panic!("request {i}: {other:?}"),
        }
        assert!(e.inflight_len() <= 1024);
    }
    assert_eq!(leaders.len(), 1024);
    assert_eq!(refused, 100_000 - 1024);
    // The leaders go away (client resets): the table empties, and service resumes.
    for mut s in leaders {
        assert!(s.abandon(&mut e).is_none());
    }
    assert_eq!(e.inflight_len(), 0);
    let mut s = Session::new(1, bearer("GET", "/pods", "pl"));
    assert_eq!(
        run_to_end(&mut e, &mut s, 0, &mut api).outcome,
        Outcome::Allowed
    );
}

#[test]
fn ten_thousand_identical_new_requests_send_one_review_and_cap_the_waiters() {
    let mut e = engine("");
    let mut leader = Session::new(1, bearer("GET", "/pods", "pl"));
    let first = leader.start(&mut e, 0);
    let tr = call_of(&first).unwrap().clone();
    let mut waiters = Vec::new();
    let mut refused = 0;
    for id in 2..=10_001u32 {
        let mut s = Session::new(id, bearer("GET", "/pods", "pl"));
        match s.start(&mut e, 0).step {
            Step::Wait => waiters.push(s),
            Step::Reply(v) => {
                assert_eq!(v.status, 401, "overflow fails closed while authenticating");
                refused += 1;
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    assert_eq!(waiters.len(), 1024, "maxWaiters");
    assert_eq!(refused, 10_000 - 1024);
    assert_eq!(e.inflight_len(), 1);
    // The one TokenReview comes back: the leader goes on to its SAR, the waiters are woken.
    let p = leader.on_callout(&mut e, 0, api(&tr), 0);
    let wake = p.wake.clone().unwrap();
    assert_eq!(wake.waiters.len(), 1024);
    let sar = call_of(&p).unwrap().clone();
    assert_eq!(sar.kind, CalloutKind::SubjectAccessReview);
    let mut sar_waiters = 0;
    for s in &mut waiters {
        match s.on_shared(&mut e, 0, wake.result.clone()).step {
            Step::Wait => sar_waiters += 1,
            Step::Reply(v) => assert_eq!(v.status, 500, "overflow fails closed while authorizing"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sar_waiters, 1024);
    let p = leader.on_callout(&mut e, 0, api(&sar), 0);
    assert!(matches!(p.step, Step::Forward(_)));
    let wake = p.wake.unwrap();
    let mut forwarded = 0;
    for s in &mut waiters {
        if wake.waiters.contains(&s.id()) {
            assert!(matches!(
                s.on_shared(&mut e, 0, wake.result.clone()).step,
                Step::Forward(_)
            ));
            forwarded += 1;
        }
    }
    assert_eq!(forwarded, 1024);
    assert_eq!(e.inflight_len(), 0);
}

#[test]
fn distinct_sars_in_flight_overflow_is_500() {
    let mut e = engine(r#""limits":{"maxInflight":8}"#);
    let mut pending = 0;
    let mut errors = 0;
    for i in 0..64u64 {
        // Authenticated users (even N): the TokenReview is answered at once, the SAR is left
        // pending.
        let token = format!("user-{}", i * 2);
        let mut s = Session::new(
            u32::try_from(i).unwrap() + 1,
            bearer("GET", "/pods", &token),
        );
        let p = s.start(&mut e, 0);
        let tr = call_of(&p).cloned();
        let p = match tr {
            Some(tr) => s.on_callout(&mut e, 0, api(&tr), 0),
            None => p,
        };
        match p.step {
            Step::Call(c) if c.kind == CalloutKind::SubjectAccessReview => pending += 1,
            Step::Reply(v) => {
                assert!(
                    v.status == 500 || v.status == 401,
                    "overflow must fail closed: {v:?}"
                );
                errors += 1;
            }
            other => panic!("{i}: {other:?}"),
        }
        assert!(e.inflight_len() <= 8);
    }
    assert_eq!(pending, 8);
    assert_eq!(errors, 56);
}

/// Targets no normaliser touched: the engine alone must refuse or authorize them correctly.
const RAW_CORPUS: &[(&str, &str, Option<&str>)] = &[
    // (method, target, Some(decoded path forwarded) | None = 400)
    ("GET", "//exec/default/web/app", None),
    ("GET", "/pods/../exec/default/web/app", None),
    ("GET", "/pods/%2e%2e/exec/default/web/app", None),
    ("GET", "/pods/%2E./exec/default/web/app", None),
    ("GET", "/pods%2F..%2Fexec/default/web/app", None),
    ("GET", "/./exec/default/web/app", None),
    ("GET", "/pods/.", None),
    ("GET", "/pods\\..\\exec", None),
    ("GET", "/pods%5C..%5Cexec", None),
    ("GET", "/pods/%c0%ae%c0%ae/exec", None),
    ("GET", "/pods%zz", None),
    ("GET", "/pods%2", None),
    ("GET", "/pods%252F..%252Fexec", None),
    ("GET", "/pods\u{0}/../exec", None),
    ("GET", "/pods%00", None),
    ("GET", "/pods\t", None),
    ("GET", "/pods\u{7f}", None),
    ("GET", "/pods\u{e9}", None),
    ("GET", "/healthz/../exec/default/web/app", None),
    ("GET", "/pods#/../exec", None),
    ("GET", "http://x/exec/default/web/app", None),
    ("GET", "*", None),
    ("GET", "exec/default/web/app", None),
    ("GET", "", None),
    ("GET", "/pods/..;/exec", Some("/pods/..;/exec")),
    ("GET", "/pods?/../exec", Some("/pods")),
    // An encoded `?` or `#` is part of the path (found by `cargo fuzz run path`).
    ("GET", "/pods%3Fx", Some("/pods?x")),
    ("GET", "/pods%23x", Some("/pods#x")),
    ("GET", "/pods?x=%2F..%2Fexec", Some("/pods")),
    ("GET", "/%70ods", Some("/pods")),
    ("GET", "/runningpods/", Some("/runningpods/")),
    ("GET", "/runningPods/", Some("/runningPods/")),
    ("HEAD", "/pods", Some("/pods")),
    (
        "OPTIONS",
        "/exec/default/web/app",
        Some("/exec/default/web/app"),
    ),
    ("get", "/pods", Some("/pods")),
    (
        "post",
        "/exec/default/web/app",
        Some("/exec/default/web/app"),
    ),
];

#[test]
fn raw_path_corpus_through_the_engine_has_no_bypass() {
    let mut e = engine("");
    let cases = kubelet_authz_test_support::corpus::load().unwrap();
    for (method, target, want) in RAW_CORPUS {
        assert!(
            cases
                .iter()
                .any(|c| c.method == *method && c.target == *target),
            "{method} {target:?} is not in the case corpus (authz/tests/cases/path-confusion.yaml)"
        );
        for override_header in [None, Some("POST"), Some("GET")] {
            let mut req = bearer(method, target, "pl");
            if let Some(o) = override_header {
                req = req.header("x-http-method-override", o);
            }
            let mut s = Session::new(1, req);
            let mut sent = Vec::new();
            let v = run_to_end(&mut e, &mut s, 0, &mut |c| {
                sent.push(c.kind);
                api(c)
            });
            match want {
                None => {
                    assert_eq!(
                        (v.status, v.outcome),
                        (400, Outcome::BadRequest),
                        "{method} {target:?}"
                    );
                    assert!(
                        sent.is_empty(),
                        "{method} {target:?}: reviews before the 400"
                    );
                }
                Some(path) => {
                    // The decoded path is what the kubelet serves: the subresources tried are its.
                    assert_eq!(v.path, *path, "{method} {target:?}");
                    let tried: Vec<&str> =
                        v.checks.iter().map(|c| c.subresource.as_str()).collect();
                    assert_eq!(tried[0], checks_136(path)[0], "{method} {target:?}");
                    let verb = if *method == "GET" { "get" } else { "" };
                    assert_eq!(
                        v.verb, verb,
                        "{method} {target:?}: verb from the method only"
                    );
                    let allowed = v.outcome == Outcome::Allowed;
                    assert_eq!(
                        allowed,
                        verb == "get" && checks_136(path)[0] == "pods",
                        "{method} {target:?}: {v:?}"
                    );
                }
            }
            // Whatever the engine allowed, Go's resolution of it is still a pods path.
            if v.outcome == Outcome::Allowed {
                assert_eq!(checks_136(&resolved(&v.path))[0], "pods", "{target:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    /// Any target built from path-confusion pieces: if the pod lister is allowed, the path the
    /// kubelet's mux resolves it to is a pods path (no `..`, `//`, encoded separator slips by).
    #[test]
    fn confusion_pieces_never_reach_exec(pieces in prop::collection::vec(prop_oneof![
        Just("/"), Just("//"), Just("."), Just(".."), Just("%2e"), Just("%2E"), Just("%2f"),
        Just("%2F"), Just("%5c"), Just("\\"), Just(";"), Just("..;"), Just("%00"), Just("%c0%ae"),
        Just("%25"), Just("%"), Just("?"), Just("#"), Just("pods"), Just("runningpods"),
        Just("exec"), Just("x"), Just("%70ods"), Just("\u{0}"), Just(" "),
    ], 1..10)) {
        let target = format!("/{}", pieces.concat());
        let mut e = engine("");
        let mut s = Session::new(1, bearer("GET", &target, "pl"));
        let v = run_to_end(&mut e, &mut s, 0, &mut api);
        if v.outcome == Outcome::Allowed {
            prop_assert_eq!(checks_136(&resolved(&v.path))[0], "pods", "{:?} -> {:?}", target, v.path);
            prop_assert!(!v.path.contains("//") && !v.path.contains('\\'));
        }
    }
}

/// The hand-written oracle (authz/tests/support/oracle.rs, shared by the corpus tests) agrees
/// with the engine on every endpoint, for every version with default gates: a wrong oracle would
/// make the corpus tests assert the wrong thing.
#[test]
fn the_test_oracle_agrees_with_the_engine() {
    let mut paths: Vec<String> = kubelet_authz::kubelet::ENDPOINTS
        .iter()
        .map(|e| e.path.to_string())
        .collect();
    paths.extend(
        [
            "/",
            "/pods?x",
            "/runningPods/",
            "/checkpoint",
            "/flagz/x",
            "/statusz",
            "/logsx",
        ]
        .map(String::from),
    );
    for minor in 21..=36 {
        let model = kubelet_authz::kubelet::KubeletModel::for_version(
            kubelet_authz::KubeletVersion::new(minor).unwrap(),
        );
        for p in &paths {
            let engine: Vec<&str> = model.subresources(p).iter().map(|s| s.as_str()).collect();
            assert_eq!(checks(minor, p), engine, "1.{minor} {p}");
        }
    }
}
