//! The real filter module (`kubelet_authz_filter.wasm`, from `$KUBELET_AUTHZ_FILTER_WASM` or the
//! release artefact) driven through the harness host, scenario by scenario: the authentication
//! table (reference 2.8), the authorization loop (3.5) for kubelets 1.31, 1.33 with the
//! fine-grained gate off and on, and 1.36, byte-exact replies (4), the exact reviews sent (2.6,
//! 3.6), caches and TTLs on the virtual clock, de-duplication, retries, strictUpgradeVerb, the
//! WebSocket token, spoofed XFCC, non-canonical paths, API-server outages, audit lines and
//! counters, Shadow enforcement, stale-if-error, configuration errors, and the scenario files under
//! `tests/scenarios/`.
//!
//! One test binary on purpose: the module is compiled once per process. A missing module is a
//! failure, never a skip. `scripts/check-mutants.sh` proves these tests fail against a filter that
//! allows everything and one that denies everything.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use kubelet_authz::UserInfo;
use kubelet_authz_harness::host::{CallResponse, Host, Outcome, RequestBuilder, Stream};
use kubelet_authz_harness::scenario::{audit_events, describe_call, json_path, AutoResponder};
use rstest::rstest;
use serde_json::{json, Value};

const NODE: &str = "worker-1";
const PROM: &str = "system:serviceaccount:monitoring:prometheus";
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const ALLOWED_PODS: &str = r#"kubelet_authz_decisions_total{outcome="allowed",subresource="pods"}"#;

// ---------------------------------------------------------------------------------------------
// Setup.

fn wasm() -> PathBuf {
    host_support::filter_module()
}

fn config_json(extra: &str) -> String {
    if extra.is_empty() {
        format!(r#"{{"nodeName":"{NODE}"}}"#)
    } else {
        format!(r#"{{"nodeName":"{NODE}",{extra}}}"#)
    }
}

/// A fresh VM configured with `nodeName` plus `extra` JSON members.
fn vm(extra: &str) -> Host {
    let vm = Host::load(wasm()).unwrap();
    vm.configure(config_json(extra))
        .unwrap_or_else(|e| panic!("configuration {extra}: {e}"));
    vm
}

/// Configuration for a kubelet version row: `1.31`, `1.33-off`, `1.33-on`, `1.36`.
fn version(v: &str) -> &'static str {
    match v {
        "1.31" => r#""kubeletVersion":"1.31""#,
        "1.33-off" => r#""kubeletVersion":"1.33","featureGates":{"KubeletFineGrainedAuthz":false}"#,
        "1.33-on" => r#""kubeletVersion":"1.33","featureGates":{"KubeletFineGrainedAuthz":true}"#,
        "1.36" => r#""kubeletVersion":"1.36""#,
        other => panic!("unknown version row {other}"),
    }
}

fn seed_roles() -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../authz/tests/fixtures/rbac/seed-roles.yaml");
    std::fs::read_to_string(path).unwrap()
}

fn user(name: &str, uid: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        uid: uid.into(),
        ..UserInfo::new(name, groups)
    }
}

/// The API server: a token table and the seed roles.
fn api() -> AutoResponder {
    AutoResponder::new()
        .token(
            "tok-prom",
            user(
                PROM,
                "uid-prom",
                &[
                    "system:serviceaccounts",
                    "system:serviceaccounts:monitoring",
                ],
            ),
        )
        .token("tok-alice", user("alice", "", &["dev"]))
        .token("tok-obs", user("olivia", "", &["observability"]))
        .token("tok-debugger", user("debugger", "", &[]))
        .token("tok-admin", user("kube-apiserver-kubelet-client", "", &[]))
        .rbac(&seed_roles(), "seed-roles.yaml")
        .unwrap()
}

/// A request on a plain (non-mTLS) connection from 10.0.0.1.
fn req(vm: &Host, method: &str, path: &str) -> RequestBuilder {
    vm.request()
        .method(method)
        .path(path)
        .authority("worker-1:10250")
        .header("user-agent", "scenario-test/1.0")
        .property_bool("connection.mtls", false)
        .property("source.address", "10.0.0.1:40000")
}

fn bearer(b: RequestBuilder, token: &str) -> RequestBuilder {
    b.header("authorization", &format!("Bearer {token}"))
}

/// Sends a request with a bearer token and drives it with `api`.
fn run(vm: &Host, api: &AutoResponder, method: &str, path: &str, token: &str) -> Stream {
    api.run(bearer(req(vm, method, path), token)).unwrap()
}

fn sent(vm: &Host) -> Vec<String> {
    vm.calls().iter().map(describe_call).collect()
}

/// A counter by its Prometheus series, after a tick (the filter flushes its counters on it).
fn metric(vm: &Host, series: &str) -> i64 {
    vm.tick().unwrap();
    vm.series(series).unwrap_or(0)
}

/// Callouts of `kind` (`""`: any) that did not end `ok`, after a tick.
fn callout_failures(vm: &Host, kind: &str) -> i64 {
    vm.tick().unwrap();
    let family = if kind.is_empty() {
        String::from("kubelet_authz_callouts_total{")
    } else {
        format!(r#"kubelet_authz_callouts_total{{kind="{kind}","#)
    };
    vm.prometheus()
        .iter()
        .filter(|(n, _)| n.starts_with(&family) && !n.ends_with(r#"result="ok"}"#))
        .map(|(_, m)| m.value)
        .sum()
}

fn decisions_series(outcome: &str, sub: &str) -> String {
    format!(r#"kubelet_authz_decisions_total{{outcome="{outcome}",subresource="{sub}"}}"#)
}

fn shadow_series(sub: &str) -> String {
    format!(r#"kubelet_authz_shadow_denials_total{{subresource="{sub}"}}"#)
}

/// Shadow would-denials, every subresource, after a tick.
fn shadow_denials(vm: &Host) -> i64 {
    vm.tick().unwrap();
    vm.prometheus()
        .iter()
        .filter(|(k, _)| k.starts_with("kubelet_authz_shadow_denials_total{"))
        .map(|(_, m)| m.value)
        .sum()
}

fn last_audit(vm: &Host) -> Value {
    audit_events(vm)
        .pop()
        .unwrap_or_else(|| panic!("no audit line in {:#?}", vm.logs()))
}

fn audit(ev: &Value, path: &str) -> Value {
    json_path(ev, path).cloned().unwrap_or(Value::Null)
}

#[track_caller]
fn assert_reply(s: &Stream, status: u32, body: &str) {
    match s.outcome() {
        Outcome::Replied(r) => {
            assert_eq!((r.status, r.body_str().as_str()), (status, body), "{r:?}");
            assert_eq!(r.header("content-type"), Some(TEXT_PLAIN), "{r:?}");
        }
        other => panic!(
            "expected a {status} reply, got {other:?}\nlogs: {:#?}",
            s.host().logs()
        ),
    }
}

#[track_caller]
fn assert_forwarded(s: &Stream) {
    assert_eq!(
        s.outcome(),
        Outcome::Forwarded,
        "logs: {:#?}",
        s.host().logs()
    );
}

#[track_caller]
fn assert_status(s: &Stream, status: u32, body: Option<&str>) {
    if status == 200 {
        assert_forwarded(s);
    } else {
        match body {
            Some(b) => assert_reply(s, status, b),
            None => match s.outcome() {
                Outcome::Replied(r) => assert_eq!(r.status, status, "{r:?}"),
                other => panic!("expected {status}, got {other:?}"),
            },
        }
    }
}

fn tr_ok(name: &str, groups: &[&str]) -> CallResponse {
    CallResponse::json(
        201,
        &json!({"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview",
                "status":{"authenticated":true,"user":{"username":name,"groups":groups}}}),
    )
}

#[derive(Clone, Copy, Debug)]
enum Sar {
    Allow,
    Deny,
    NoOpinion,
    Both,
    /// The API server answers 403 (an authorizer error; not retried).
    Error,
}

fn sar(answer: Sar) -> CallResponse {
    let status = match answer {
        Sar::Allow => json!({"allowed": true, "reason": "test allows"}),
        Sar::Deny => json!({"allowed": false, "denied": true, "reason": "test denies"}),
        Sar::NoOpinion => json!({"allowed": false}),
        Sar::Both => json!({"allowed": true, "denied": true}),
        Sar::Error => return CallResponse::new(403, &[("content-type", "application/json")], "{}"),
    };
    CallResponse::json(
        201,
        &json!({"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","status":status}),
    )
}

/// Answers the one pending callout.
#[track_caller]
fn answer(vm: &Host, response: CallResponse) {
    let pending = vm.pending_calls();
    assert_eq!(
        pending.len(),
        1,
        "expected one pending callout: {pending:#?}"
    );
    vm.reply_call_with(pending[0].token, response).unwrap();
}

use kubelet_authz_test_support::encode::websocket_token as ws_token;

fn websocket(b: RequestBuilder, protocols: &str) -> RequestBuilder {
    b.header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", protocols)
}

// ---------------------------------------------------------------------------------------------
// Client certificates (openssl), presented as Envoy does: XFCC + the verified peer digest.

use kubelet_authz_test_support::cert::{cert, Cert};

mod host_support;

/// The request as Envoy passes it on an mTLS connection with `c` verified.
fn with_cert(b: RequestBuilder, c: &Cert) -> RequestBuilder {
    b.header(
        "x-forwarded-client-cert",
        &kubelet_authz_harness::scenario::runner::xfcc(&c.hash, &c.pem),
    )
    .property_bool("connection.mtls", true)
    .property("connection.sha256_peer_certificate_digest", c.hash.clone())
}

// ---------------------------------------------------------------------------------------------
// Reference 2.8: every row of the authentication table (kubelet 1.33, AlwaysAllow so that only
// authentication decides).

#[derive(Clone, Copy, Debug)]
enum CertCase {
    None,
    Valid,
    EmptyCn,
    /// Two UID attributes: the x509 authenticator fails (1.33+).
    Failing,
}

#[derive(Clone, Copy, Debug)]
enum Cred {
    None,
    Valid,
    Invalid,
    ApiDown,
    NonBearer,
    ReviewError,
    WebSocket,
}

#[rstest]
#[case::r1_nothing_anonymous_on(CertCase::None, Cred::None, true, Some(("system:anonymous", "anonymous")), 0)]
#[case::r2_nothing_anonymous_off(CertCase::None, Cred::None, false, None, 0)]
#[case::r3_cert_and_valid_token(CertCase::Valid, Cred::Valid, false, Some(("system:node:worker-9", "x509")), 0)]
#[case::r3b_cert_and_invalid_token(CertCase::Valid, Cred::Invalid, true, Some(("system:node:worker-9", "x509")), 0)]
#[case::r4_empty_cn_then_token(CertCase::EmptyCn, Cred::Valid, false, Some(("alice", "bearer")), 1)]
#[case::r5a_empty_cn_anonymous_on(CertCase::EmptyCn, Cred::None, true, Some(("system:anonymous", "anonymous")), 0)]
#[case::r5b_empty_cn_anonymous_off(CertCase::EmptyCn, Cred::None, false, None, 0)]
#[case::r6_failing_cert_then_token(CertCase::Failing, Cred::Valid, true, Some(("alice", "bearer")), 1)]
#[case::r7_failing_cert_no_anonymous_fallback(CertCase::Failing, Cred::None, true, None, 0)]
#[case::r8a_invalid_token_is_401_with_anonymous(CertCase::None, Cred::Invalid, true, None, 1)]
#[case::r8b_invalid_token_anonymous_off(CertCase::None, Cred::Invalid, false, None, 1)]
#[case::r9_api_down_is_401_with_anonymous(CertCase::None, Cred::ApiDown, true, None, 5)]
#[case::r10a_non_bearer_scheme_anonymous(CertCase::None, Cred::NonBearer, true, Some(("system:anonymous", "anonymous")), 0)]
#[case::r10b_non_bearer_scheme_no_anonymous(CertCase::None, Cred::NonBearer, false, None, 0)]
#[case::r11_review_status_error(CertCase::None, Cred::ReviewError, true, None, 1)]
#[case::r12_websocket_token(CertCase::None, Cred::WebSocket, false, Some(("alice", "websocket")), 1)]
fn authentication_table(
    #[case] cert_case: CertCase,
    #[case] cred: Cred,
    #[case] anonymous: bool,
    #[case] expected: Option<(&str, &str)>,
    #[case] token_reviews: usize,
) {
    let vm = vm(&format!(
        r#""kubeletVersion":"1.33","authentication":{{"anonymous":{{"enabled":{anonymous}}}}},"authorization":{{"mode":"AlwaysAllow"}}"#
    ));
    let mut api = api();
    api.set_down(matches!(cred, Cred::ApiDown));
    if matches!(cred, Cred::ReviewError) {
        api.set_token_error(Some("token expired".into()));
    }
    let mut b = req(&vm, "GET", "/pods");
    b = match cert_case {
        CertCase::None => b,
        CertCase::Valid => with_cert(b, &cert("system:node:worker-9", &["system:nodes"], &[])),
        CertCase::EmptyCn => with_cert(b, &cert("", &["ops"], &[])),
        CertCase::Failing => with_cert(b, &cert("mallory", &[], &["u1", "u2"])),
    };
    b = match cred {
        Cred::None => b,
        Cred::Valid | Cred::ApiDown | Cred::ReviewError => bearer(b, "tok-alice"),
        Cred::Invalid => bearer(b, "nope"),
        Cred::NonBearer => b.header("authorization", "Basic YWxpY2U6cHc="),
        Cred::WebSocket => websocket(b, &format!("v4.channel.k8s.io,{}", ws_token("tok-alice"))),
    };
    let s = api.run(b).unwrap();
    let ev = last_audit(&vm);
    match expected {
        Some((name, method)) => {
            assert_forwarded(&s);
            assert_eq!(audit(&ev, "user.username"), json!(name));
            assert_eq!(
                audit(&ev, "annotations.kubelet-authz.io/authn"),
                json!(method)
            );
            assert_eq!(
                metric(
                    &vm,
                    &format!(r#"kubelet_authz_authentications_total{{method="{method}"}}"#)
                ),
                1
            );
        }
        None => {
            assert_reply(&s, 401, "Unauthorized");
            assert_eq!(audit(&ev, "responseStatus.code"), json!(401));
            assert_eq!(
                metric(
                    &vm,
                    r#"kubelet_authz_decisions_total{outcome="unauthenticated",subresource="none"}"#
                ),
                1
            );
        }
    }
    assert_eq!(
        sent(&vm),
        vec!["TokenReview"; token_reviews],
        "TokenReviews sent (a valid certificate means the token is never looked at)"
    );
}

#[test]
fn certificate_user_reaches_the_sar_with_groups_uid_and_credential_id() {
    let vm = vm(version("1.33-on"));
    let c = cert(
        "kube-apiserver-kubelet-client",
        &["system:masters", "ops"],
        &["uid-7"],
    );
    let s = api().run(with_cert(req(&vm, "GET", "/pods"), &c)).unwrap();
    assert_forwarded(&s);
    let calls = vm.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].body_str(),
        format!(
            r#"{{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{{"resourceAttributes":{{"verb":"get","version":"v1","resource":"nodes","subresource":"pods","name":"{NODE}"}},"user":"kube-apiserver-kubelet-client","groups":["system:masters","ops","system:authenticated"],"extra":{{"authentication.kubernetes.io/credential-id":["X509SHA256={}"]}},"uid":"uid-7"}}}}"#,
            c.hash
        )
    );
    assert_eq!(
        metric(&vm, r#"kubelet_authz_authentications_total{method="x509"}"#),
        1
    );
    assert_eq!(metric(&vm, "kubelet_authz_xfcc_spoofed_total"), 0);
}

// ---------------------------------------------------------------------------------------------
// Reference 3.5: every branch of the authorization loop, per kubelet version, with exact bodies.

const F131: &str = "Forbidden (user=alice, verb=get, resource=nodes, subresource=proxy)";
const F133_OFF: &str = "Forbidden (user=alice, verb=get, resource=nodes, subresource(s)=[proxy])\n";
const F_ON: &str =
    "Forbidden (user=alice, verb=get, resource=nodes, subresource(s)=[pods proxy])\n";
const E_PROXY: &str =
    "Authorization error (user=alice, verb=get, resource=nodes, subresource=proxy)";
const E_PODS: &str = "Authorization error (user=alice, verb=get, resource=nodes, subresource=pods)";

#[rstest]
#[case::v131_allow("1.31", &[Sar::Allow], 200, "", &["SAR get proxy"])]
#[case::v131_no_opinion("1.31", &[Sar::NoOpinion], 403, F131, &["SAR get proxy"])]
#[case::v131_deny("1.31", &[Sar::Deny], 403, F131, &["SAR get proxy"])]
#[case::v131_error("1.31", &[Sar::Error], 500, E_PROXY, &["SAR get proxy"])]
#[case::v131_allowed_and_denied("1.31", &[Sar::Both], 500, E_PROXY, &["SAR get proxy"])]
#[case::v133_off_allow("1.33-off", &[Sar::Allow], 200, "", &["SAR get proxy"])]
#[case::v133_off_no_opinion("1.33-off", &[Sar::NoOpinion], 403, F133_OFF, &["SAR get proxy"])]
#[case::v133_off_deny("1.33-off", &[Sar::Deny], 403, F133_OFF, &["SAR get proxy"])]
#[case::v133_off_error("1.33-off", &[Sar::Error], 500, E_PROXY, &["SAR get proxy"])]
#[case::v133_off_allowed_and_denied("1.33-off", &[Sar::Both], 500, E_PROXY, &["SAR get proxy"])]
#[case::v133_on_fine_allow("1.33-on", &[Sar::Allow], 200, "", &["SAR get pods"])]
#[case::v133_on_fallback_to_proxy("1.33-on", &[Sar::NoOpinion, Sar::Allow], 200, "", &["SAR get pods", "SAR get proxy"])]
#[case::v133_on_deny_falls_through("1.33-on", &[Sar::Deny, Sar::Allow], 200, "", &["SAR get pods", "SAR get proxy"])]
#[case::v133_on_both_refused("1.33-on", &[Sar::Deny, Sar::NoOpinion], 403, F_ON, &["SAR get pods", "SAR get proxy"])]
#[case::v133_on_error_first_no_fallback("1.33-on", &[Sar::Error], 500, E_PODS, &["SAR get pods"])]
#[case::v133_on_error_second("1.33-on", &[Sar::NoOpinion, Sar::Error], 500, E_PROXY, &["SAR get pods", "SAR get proxy"])]
#[case::v133_on_allowed_and_denied("1.33-on", &[Sar::Both], 500, E_PODS, &["SAR get pods"])]
#[case::v136_fine_allow("1.36", &[Sar::Allow], 200, "", &["SAR get pods"])]
#[case::v136_fallback_to_proxy("1.36", &[Sar::NoOpinion, Sar::Allow], 200, "", &["SAR get pods", "SAR get proxy"])]
#[case::v136_deny_falls_through("1.36", &[Sar::Deny, Sar::Allow], 200, "", &["SAR get pods", "SAR get proxy"])]
#[case::v136_both_denied("1.36", &[Sar::Deny, Sar::Deny], 403, F_ON, &["SAR get pods", "SAR get proxy"])]
#[case::v136_error_first_no_fallback("1.36", &[Sar::Error, Sar::Allow], 500, E_PODS, &["SAR get pods"])]
#[case::v136_error_second("1.36", &[Sar::Deny, Sar::Error], 500, E_PROXY, &["SAR get pods", "SAR get proxy"])]
#[case::v136_allowed_and_denied("1.36", &[Sar::Both], 500, E_PODS, &["SAR get pods"])]
fn authorization_loop(
    #[case] row: &str,
    #[case] answers: &[Sar],
    #[case] status: u32,
    #[case] body: &str,
    #[case] expected_sars: &[&str],
) {
    let vm = vm(version(row));
    let s = bearer(req(&vm, "GET", "/pods"), "tok-alice")
        .send_headers(true)
        .unwrap();
    answer(&vm, tr_ok("alice", &["dev"]));
    for a in answers {
        if s.outcome() != Outcome::Paused {
            break;
        }
        answer(&vm, sar(*a));
    }
    assert!(vm.pending_calls().is_empty(), "{:#?}", vm.pending_calls());
    if status == 200 {
        assert_forwarded(&s);
        assert!(
            s.request_header("authorization").is_none(),
            "bearer token must be stripped"
        );
    } else {
        assert_reply(&s, status, body);
    }
    let mut want = vec!["TokenReview".to_string()];
    want.extend(expected_sars.iter().map(|s| (*s).to_string()));
    assert_eq!(sent(&vm), want);
}

// The seed roles through the RBAC evaluator, per version: who reaches which endpoint. The rows
// that `authz/tests/cases/seed-roles.yaml` holds run in `cases.rs`; these are the ones it does
// not (a feature gate set explicitly, identities of this file's token table).
#[rstest]
#[case::v133_off_prometheus_pods_needs_proxy("1.33-off", "tok-prom", "GET", "/pods", 403, Some("Forbidden (user=system:serviceaccount:monitoring:prometheus, verb=get, resource=nodes, subresource(s)=[proxy])\n"), &["SAR get proxy"])]
#[case::v133_on_prometheus_pods("1.33-on", "tok-prom", "GET", "/pods", 200, None, &["SAR get pods"])]
#[case::v133_on_debugger_statusz_falls_back("1.33-on", "tok-debugger", "GET", "/statusz", 200, None, &["SAR get statusz", "SAR get proxy"])]
#[case::v133_off_observability_pods("1.33-off", "tok-obs", "GET", "/pods", 403, Some("Forbidden (user=olivia, verb=get, resource=nodes, subresource(s)=[proxy])\n"), &["SAR get proxy"])]
#[case::v133_on_observability_flagz_is_proxy("1.33-on", "tok-obs", "GET", "/flagz", 403, Some("Forbidden (user=olivia, verb=get, resource=nodes, subresource(s)=[proxy])\n"), &["SAR get proxy"])]
#[case::v136_alice_nothing("1.36", "tok-alice", "GET", "/pods", 403, Some(F_ON), &["SAR get pods", "SAR get proxy"])]
#[case::v136_admin_exec("1.36", "tok-admin", "POST", "/exec/ns/pod/ctr?command=sh", 200, None, &["SAR create proxy"])]
#[case::v136_admin_head_healthz("1.36", "tok-admin", "HEAD", "/healthz", 200, None, &["SAR  healthz"])]
fn seed_roles_per_version(
    #[case] row: &str,
    #[case] token: &str,
    #[case] method: &str,
    #[case] path: &str,
    #[case] status: u32,
    #[case] body: Option<&str>,
    #[case] expected_sars: &[&str],
) {
    let vm = vm(version(row));
    let s = run(&vm, &api(), method, path, token);
    assert_status(&s, status, body);
    let mut want = vec!["TokenReview".to_string()];
    want.extend(expected_sars.iter().map(|s| (*s).to_string()));
    assert_eq!(sent(&vm), want);
}

// ---------------------------------------------------------------------------------------------
// The reviews on the wire: exact bodies, pseudo-headers, cluster, optional proxy bearer token.

#[rstest]
#[case::with_proxy_token(Some("proxy-sa-token"))]
#[case::without_proxy_token(None)]
fn reviews_are_sent_exactly(#[case] proxy_token: Option<&str>) {
    let cluster = "outbound|443||kubernetes.default.svc.cluster.local";
    let vm = vm(&format!(
        r#""kubeletVersion":"1.36","apiServer":{{"cluster":"{cluster}","authority":"kubernetes.default.svc","bearerToken":"{}","timeout":"3s"}}"#,
        proxy_token.unwrap_or("")
    ));
    let s = run(&vm, &api(), "GET", "/pods?verbose=1", "tok-prom");
    assert_forwarded(&s);
    let calls = vm.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].body_str(),
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"tok-prom"}}"#
    );
    assert_eq!(
        calls[1].body_str(),
        format!(
            r#"{{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{{"resourceAttributes":{{"verb":"get","version":"v1","resource":"nodes","subresource":"pods","name":"{NODE}"}},"user":"{PROM}","groups":["system:serviceaccounts","system:serviceaccounts:monitoring","system:authenticated"],"uid":"uid-prom"}}}}"#
        )
    );
    for (call, path) in calls.iter().zip([
        "/apis/authentication.k8s.io/v1/tokenreviews",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
    ]) {
        assert_eq!(call.upstream, cluster);
        assert_eq!(call.method(), Some("POST"));
        assert_eq!(call.path(), Some(path));
        assert_eq!(call.authority(), Some("kubernetes.default.svc"));
        assert_eq!(call.header("content-type"), Some("application/json"));
        assert_eq!(call.timeout, Duration::from_secs(3));
        assert_eq!(
            call.header("authorization"),
            proxy_token.map(|t| format!("Bearer {t}")).as_deref()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Caches (reference 2.7, 3.6) on the virtual clock.

#[test]
fn cache_hits_send_nothing() {
    let vm = vm(version("1.36"));
    let api = api();
    assert_forwarded(&run(&vm, &api, "GET", "/pods", "tok-prom"));
    assert_eq!(vm.calls().len(), 2);
    let s = bearer(req(&vm, "GET", "/pods"), "tok-prom")
        .send_headers(true)
        .unwrap();
    assert_eq!(
        s.outcome(),
        Outcome::Forwarded,
        "decided at once, no callout"
    );
    assert_eq!(vm.calls().len(), 2);
    assert!(vm.pending_calls().is_empty());
    for cache in ["token", "sar"] {
        let hits = format!(r#"kubelet_authz_cache_hits_total{{cache="{cache}"}}"#);
        let misses = format!(r#"kubelet_authz_cache_misses_total{{cache="{cache}"}}"#);
        assert_eq!(
            (metric(&vm, &hits), metric(&vm, &misses)),
            (1, 1),
            "{cache}"
        );
    }
    assert_eq!(metric(&vm, ALLOWED_PODS), 2);
}

// ---------------------------------------------------------------------------------------------
// Metrics (issue 13): counted in the VM, flushed on the tick, no metric hostcall per request.

#[test]
fn counters_reach_the_proxy_on_the_tick_and_a_cached_request_makes_no_metric_hostcall() {
    let vm = vm(version("1.36"));
    let api = api();
    assert_eq!(
        vm.tick_period(),
        Some(Duration::from_secs(1)),
        "the flush tick runs from the configuration on"
    );
    assert_forwarded(&run(&vm, &api, "GET", "/pods", "tok-prom"));
    let before = vm.metric_calls();
    for _ in 0..3 {
        let s = bearer(req(&vm, "GET", "/pods"), "tok-prom")
            .send_headers(true)
            .unwrap();
        assert_eq!(s.outcome(), Outcome::Forwarded, "cached");
        s.finish().unwrap();
    }
    assert_eq!(
        vm.metric_calls(),
        before,
        "no metric hostcall for a cached request"
    );
    // One clock read per cached request, where it is decided: none when it ends (issue 24,
    // docs/PERFORMANCE.md "The hostcalls of the cached path, in Envoy").
    let clock = vm.clock_reads();
    let s = bearer(req(&vm, "GET", "/pods"), "tok-prom")
        .send_headers(true)
        .unwrap();
    assert_eq!(s.outcome(), Outcome::Forwarded, "cached");
    s.finish().unwrap();
    let mut read = vm.clock_reads();
    for (callback, n) in &clock {
        if let Some(now) = read.get_mut(callback) {
            *now -= n;
        }
    }
    read.retain(|_, n| *n > 0);
    assert_eq!(
        read,
        std::collections::BTreeMap::from([("proxy_on_request_headers", 1)]),
        "clock reads of one cached request"
    );
    assert!(
        vm.metric_calls()
            .keys()
            .all(|(callback, _)| *callback != "proxy_on_request_headers"),
        "{:?}",
        vm.metric_calls()
    );
    assert_eq!(vm.series(ALLOWED_PODS), None, "not flushed before the tick");
    vm.advance_clock(Duration::from_secs(1)).unwrap();
    assert_eq!(vm.series(ALLOWED_PODS), Some(5));
    assert_eq!(
        vm.series(r#"kubelet_authz_authentications_total{method="bearer"}"#),
        Some(5)
    );
    assert_eq!(
        vm.series(r#"kubelet_authz_cache_hits_total{cache="token"}"#),
        Some(4)
    );
    assert_eq!(
        vm.series(r#"kubelet_authz_cache_hits_total{cache="sar"}"#),
        Some(4)
    );
    // Counters are defined and incremented only by the tick; latency samples are recorded where
    // the callout answers arrive.
    for ((callback, hostcall), n) in vm.metric_calls() {
        let expected = match hostcall {
            "proxy_record_metric" => "proxy_on_http_call_response",
            "proxy_define_metric" if n <= 2 && callback == "proxy_on_http_call_response" => {
                "proxy_on_http_call_response"
            }
            _ => "proxy_on_tick",
        };
        assert_eq!(callback, expected, "{hostcall} x{n}");
    }
    // A tick with nothing new makes no metric hostcall.
    let flushed = vm.metric_calls();
    vm.advance_clock(Duration::from_secs(1)).unwrap();
    assert_eq!(vm.metric_calls(), flushed);
}

#[test]
fn callout_latency_is_a_histogram_in_milliseconds_by_kind() {
    let vm = vm(version("1.36"));
    let api = api();
    let s = bearer(req(&vm, "GET", "/pods"), "tok-prom")
        .send_headers(true)
        .unwrap();
    vm.advance_clock(Duration::from_millis(30)).unwrap();
    api.answer_pending(&vm).unwrap();
    vm.advance_clock(Duration::from_millis(7)).unwrap();
    api.answer_pending(&vm).unwrap();
    assert_forwarded(&s);
    let prom = vm.prometheus();
    let samples = |kind: &str| {
        prom[&format!(r#"kubelet_authz_callout_duration_milliseconds{{kind="{kind}"}}"#)]
            .samples
            .clone()
    };
    assert_eq!(samples("tokenreview"), [30]);
    assert_eq!(samples("subjectaccessreview"), [7]);
}

#[test]
fn token_ttl_2m_and_allowed_ttl_5m_expire_on_the_virtual_clock() {
    let vm = vm(version("1.36"));
    let api = api();
    assert_forwarded(&run(&vm, &api, "GET", "/pods", "tok-prom"));
    vm.advance_clock(Duration::from_secs(119)).unwrap();
    assert_forwarded(&run(&vm, &api, "GET", "/pods", "tok-prom"));
    assert_eq!(
        sent(&vm),
        ["TokenReview", "SAR get pods"],
        "1m59s: both cached"
    );
    vm.advance_clock(Duration::from_secs(2)).unwrap(); // 2m01s
    assert_forwarded(&run(&vm, &api, "GET", "/pods", "tok-prom"));
    assert_eq!(
        sent(&vm)[2..],
        ["TokenReview"],
        "2m01s: token expired, SAR cached"
    );
    vm.advance_clock(Duration::from_secs(180)).unwrap(); // 5m01s
    assert_forwarded(&run(&vm, &api, "GET", "/pods", "tok-prom"));
    assert_eq!(
        sent(&vm)[3..],
        ["TokenReview", "SAR get pods"],
        "5m01s: both expired"
    );
}

#[test]
fn unauthorized_answers_are_cached_30s() {
    let vm = vm(version("1.36"));
    let api = api();
    let f = "Forbidden (user=alice, verb=get, resource=nodes, subresource(s)=[metrics])\n";
    assert_reply(&run(&vm, &api, "GET", "/metrics", "tok-alice"), 403, f);
    vm.advance_clock(Duration::from_secs(29)).unwrap();
    assert_reply(&run(&vm, &api, "GET", "/metrics", "tok-alice"), 403, f);
    assert_eq!(vm.calls().len(), 2);
    vm.advance_clock(Duration::from_secs(2)).unwrap();
    assert_reply(&run(&vm, &api, "GET", "/metrics", "tok-alice"), 403, f);
    assert_eq!(sent(&vm)[2..], ["SAR get metrics"]);
}

#[test]
fn token_rejections_are_cached_2m_and_errors_never() {
    let vm = vm(version("1.36"));
    let api = api();
    assert_reply(&run(&vm, &api, "GET", "/pods", "nope"), 401, "Unauthorized");
    assert_reply(&run(&vm, &api, "GET", "/pods", "nope"), 401, "Unauthorized");
    assert_eq!(sent(&vm), ["TokenReview"]);
    vm.advance_clock(Duration::from_secs(121)).unwrap();
    assert_reply(&run(&vm, &api, "GET", "/pods", "nope"), 401, "Unauthorized");
    assert_eq!(sent(&vm), ["TokenReview", "TokenReview"]);

    // An authorizer error is not cached: the next request asks again.
    let vm2 = vm_136();
    let s = bearer(req(&vm2, "GET", "/metrics"), "tok-prom")
        .send_headers(true)
        .unwrap();
    answer(&vm2, tr_ok(PROM, &[]));
    answer(&vm2, sar(Sar::Error));
    assert_reply(
        &s,
        500,
        &format!(
            "Authorization error (user={PROM}, verb=get, resource=nodes, subresource=metrics)"
        ),
    );
    assert_forwarded(&run(&vm2, &api, "GET", "/metrics", "tok-prom"));
    assert_eq!(
        sent(&vm2),
        ["TokenReview", "SAR get metrics", "SAR get metrics"]
    );
}

fn vm_136() -> Host {
    vm(version("1.36"))
}

#[test]
fn zero_ttls_disable_the_caches() {
    let vm = vm(
        r#""kubeletVersion":"1.36","authentication":{"webhook":{"cacheTTL":"0s"}},"authorization":{"webhook":{"cacheAuthorizedTTL":"0s","cacheUnauthorizedTTL":"0s"}}"#,
    );
    let api = api();
    assert_forwarded(&run(&vm, &api, "GET", "/pods", "tok-prom"));
    assert_forwarded(&run(&vm, &api, "GET", "/pods", "tok-prom"));
    assert_eq!(
        sent(&vm),
        ["TokenReview", "SAR get pods", "TokenReview", "SAR get pods"]
    );
}

// ---------------------------------------------------------------------------------------------
// De-duplication: identical concurrent requests wait for one callout and are all resumed.

#[rstest]
#[case::two(2)]
#[case::five(5)]
fn identical_concurrent_requests_share_callouts(#[case] n: usize) {
    let vm = vm_136();
    let api = api();
    let streams: Vec<Stream> = (0..n)
        .map(|_| {
            bearer(req(&vm, "GET", "/pods"), "tok-prom")
                .send_headers(true)
                .unwrap()
        })
        .collect();
    assert!(streams.iter().all(|s| s.outcome() == Outcome::Paused));
    assert_eq!(
        sent(&vm),
        ["TokenReview"],
        "one TokenReview for {n} requests"
    );
    api.answer_pending(&vm).unwrap();
    assert_eq!(
        sent(&vm),
        ["TokenReview", "SAR get pods"],
        "one SAR for {n} requests"
    );
    assert!(streams.iter().all(|s| s.outcome() == Outcome::Paused));
    api.answer_pending(&vm).unwrap();
    for s in &streams {
        assert_forwarded(s);
        assert!(s.request_header("authorization").is_none());
    }
    assert_eq!(vm.calls().len(), 2);
    assert_eq!(metric(&vm, ALLOWED_PODS), i64::try_from(n).unwrap());
    assert_eq!(audit_events(&vm).len(), n);
}

#[test]
fn a_waiter_leads_when_the_leader_goes_away() {
    let vm = vm_136();
    let api = api();
    let a = bearer(req(&vm, "GET", "/pods"), "tok-prom")
        .send_headers(true)
        .unwrap();
    let b = bearer(req(&vm, "GET", "/pods"), "tok-prom")
        .send_headers(true)
        .unwrap();
    assert_eq!(vm.pending_calls().len(), 1);
    a.finish().unwrap(); // the client went away; its callout is cancelled
    api.drive(&vm, &[&b]).unwrap();
    assert_forwarded(&b);
    assert_eq!(sent(&vm), ["TokenReview", "TokenReview", "SAR get pods"]);
}

// ---------------------------------------------------------------------------------------------
// Retries (reference 2.10): retryable failures, then success; exhaustion.

#[derive(Clone, Copy, Debug)]
enum Failure {
    Status(u16),
    RetryAfter(u16),
    Reset,
    Timeout,
}

fn fail_first(vm: &Host, f: Failure) {
    let call = vm.pending_calls().remove(0);
    match f {
        Failure::Status(code) => vm
            .reply_call(
                call.token,
                code,
                &[("content-type", "application/json")],
                "{}",
            )
            .unwrap(),
        Failure::RetryAfter(code) => vm
            .reply_call(call.token, code, &[("retry-after", "1")], "")
            .unwrap(),
        Failure::Reset => vm.fail_call(call.token).unwrap(),
        Failure::Timeout => vm.advance_clock(call.timeout).unwrap(),
    }
}

// The retry table of DESIGN.md (the kubelet's client-go webhook rules) through the real .wasm:
// retried rows, then success.
#[rstest]
#[case::status_500(Failure::Status(500))]
#[case::status_502(Failure::Status(502))]
#[case::status_501(Failure::Status(501))]
#[case::status_505(Failure::Status(505))]
#[case::status_429(Failure::Status(429))]
#[case::status_504(Failure::Status(504))]
#[case::unavailable_retry_after(Failure::RetryAfter(503))]
#[case::too_many_retry_after(Failure::RetryAfter(429))]
#[case::reset(Failure::Reset)]
fn token_review_retried_then_allowed(#[case] failure: Failure) {
    let vm = vm_136();
    let api = api();
    let s = bearer(req(&vm, "GET", "/pods"), "tok-prom")
        .send_headers(true)
        .unwrap();
    fail_first(&vm, failure);
    assert_eq!(
        s.outcome(),
        Outcome::Paused,
        "a retryable failure waits for the retry"
    );
    assert!(
        vm.pending_calls().is_empty(),
        "the retry waits for its timer"
    );
    assert!(
        vm.tick_period()
            .is_some_and(|p| p <= Duration::from_millis(100)),
        "a retry timer is set: the tick is faster than the 1 s flush"
    );
    api.drive(&vm, &[&s]).unwrap();
    assert_forwarded(&s);
    assert_eq!(sent(&vm), ["TokenReview", "TokenReview", "SAR get pods"]);
    assert_eq!(
        metric(
            &vm,
            r#"kubelet_authz_callout_retries_total{kind="tokenreview"}"#
        ),
        1
    );
    assert_eq!(callout_failures(&vm, "tokenreview"), 1);
    assert_eq!(
        metric(
            &vm,
            r#"kubelet_authz_callouts_total{kind="tokenreview",result="ok"}"#
        ),
        1
    );
    assert_eq!(
        vm.prometheus()[r#"kubelet_authz_callout_duration_milliseconds{kind="tokenreview"}"#]
            .samples
            .len(),
        2,
        "one latency sample per answered attempt"
    );
}

/// A `Retry-After: 1` is the REST client's resend after one second, not the 500ms backoff.
#[test]
fn retry_after_is_waited_for_then_resent() {
    let vm = vm_136();
    let api = api();
    let s = bearer(req(&vm, "GET", "/pods"), "tok-prom")
        .send_headers(true)
        .unwrap();
    fail_first(&vm, Failure::RetryAfter(429));
    vm.advance_clock(Duration::from_millis(900)).unwrap();
    assert!(vm.pending_calls().is_empty(), "waits the full second");
    vm.advance_clock(Duration::from_millis(200)).unwrap();
    assert_eq!(vm.pending_calls().len(), 1, "resent after 1s");
    api.drive(&vm, &[&s]).unwrap();
    assert_forwarded(&s);
}

#[test]
fn sar_retried_then_allowed() {
    let vm = vm_136();
    let api = api();
    let s = bearer(req(&vm, "GET", "/pods"), "tok-prom")
        .send_headers(true)
        .unwrap();
    api.answer_pending(&vm).unwrap();
    fail_first(&vm, Failure::Status(500));
    vm.advance_clock(Duration::from_millis(400)).unwrap();
    assert!(
        vm.pending_calls().is_empty(),
        "first retry after 500ms (+ up to 20%)"
    );
    vm.advance_clock(Duration::from_millis(300)).unwrap();
    assert_eq!(vm.pending_calls().len(), 1, "retried by 700ms");
    api.answer_pending(&vm).unwrap();
    assert_forwarded(&s);
    assert_eq!(sent(&vm), ["TokenReview", "SAR get pods", "SAR get pods"]);
}

// Rows that are not retried: the kubelet's error answer at once.
#[rstest]
#[case::status_503_token(Failure::Status(503), true)]
#[case::status_403_token(Failure::Status(403), true)]
#[case::retry_after_on_409_token(Failure::RetryAfter(409), true)]
#[case::timeout_token(Failure::Timeout, true)]
#[case::status_403_sar(Failure::Status(403), false)]
#[case::status_503_sar(Failure::Status(503), false)]
#[case::timeout_sar(Failure::Timeout, false)]
fn non_retryable_failures_fail_at_once(#[case] failure: Failure, #[case] in_authn: bool) {
    let vm = vm_136();
    let api = api();
    let s = bearer(req(&vm, "GET", "/pods"), "tok-prom")
        .send_headers(true)
        .unwrap();
    if !in_authn {
        api.answer_pending(&vm).unwrap();
    }
    fail_first(&vm, failure);
    if in_authn {
        assert_reply(&s, 401, "Unauthorized");
    } else {
        assert_reply(
            &s,
            500,
            &format!(
                "Authorization error (user={PROM}, verb=get, resource=nodes, subresource=pods)"
            ),
        );
    }
    assert_eq!(vm.calls().len(), if in_authn { 1 } else { 2 });
}

#[rstest]
#[case::token_review(true)]
#[case::subject_access_review(false)]
fn five_failures_exhaust_the_retries(#[case] in_authn: bool) {
    let vm = vm_136();
    let mut api = api();
    let s = bearer(req(&vm, "GET", "/pods"), "tok-prom")
        .send_headers(true)
        .unwrap();
    if !in_authn {
        api.answer_pending(&vm).unwrap();
    }
    api.set_down(true);
    let start = vm.elapsed();
    api.drive(&vm, &[&s]).unwrap();
    // 500ms x1.5 backoff between five attempts: at least 0.5+0.75+1.125+1.6875 s.
    assert!(
        vm.elapsed() - start >= Duration::from_millis(4062),
        "{:?}",
        vm.elapsed() - start
    );
    if in_authn {
        assert_reply(&s, 401, "Unauthorized");
        assert_eq!(sent(&vm), vec!["TokenReview"; 5]);
    } else {
        assert_reply(
            &s,
            500,
            &format!(
                "Authorization error (user={PROM}, verb=get, resource=nodes, subresource=pods)"
            ),
        );
        let mut want = vec!["TokenReview"];
        want.extend(["SAR get pods"; 5]);
        assert_eq!(sent(&vm), want);
    }
    let kind = if in_authn {
        "tokenreview"
    } else {
        "subjectaccessreview"
    };
    assert_eq!(callout_failures(&vm, kind), 5);
    assert_eq!(
        metric(
            &vm,
            &format!(r#"kubelet_authz_callout_retries_total{{kind="{kind}"}}"#)
        ),
        4
    );
}

// ---------------------------------------------------------------------------------------------
// Callout response size cap: a review is a few KB; a body over 1 MiB is refused unread (a
// failed attempt, retried like a broken connection), so an API server (or anything in its place)
// cannot make the VM buffer an unbounded answer. Fails closed: 401 / 500 after five attempts.

/// `r` with its JSON body padded by trailing spaces to `size` bytes (still valid JSON).
fn padded(mut r: CallResponse, size: usize) -> CallResponse {
    assert!(r.body.len() <= size);
    r.body.resize(size, b' ');
    r
}

#[rstest]
#[case::token_review_of_1mib_is_read(true, 1 << 20)]
#[case::token_review_over_1mib_is_refused(true, (1 << 20) + 1)]
#[case::token_review_of_16mib_is_refused(true, 16 << 20)]
#[case::sar_of_1mib_is_read(false, 1 << 20)]
#[case::sar_over_1mib_is_refused(false, (1 << 20) + 1)]
#[case::sar_of_16mib_is_refused(false, 16 << 20)]
fn callout_bodies_over_1mib_fail_closed(#[case] in_authn: bool, #[case] size: usize) {
    let vm = vm_136();
    let api = api();
    let s = bearer(req(&vm, "GET", "/pods"), "tok-prom")
        .send_headers(true)
        .unwrap();
    if !in_authn {
        api.answer_pending(&vm).unwrap();
    }
    let big = if in_authn {
        padded(tr_ok(PROM, &["monitoring"]), size)
    } else {
        padded(sar(Sar::Allow), size)
    };
    let read = size <= 1 << 20;
    for attempt in 1..=5 {
        if vm.pending_calls().is_empty() {
            // The retry timer (500ms x1.5^n, +20% jitter at most).
            vm.advance_clock(Duration::from_secs(3)).unwrap();
        }
        answer(&vm, big.clone());
        if read {
            assert_eq!(attempt, 1);
            break;
        }
    }
    if in_authn && read {
        // Authenticated from the padded answer: the SAR follows.
        api.answer_pending(&vm).unwrap();
    }
    let sar_sent = usize::from(!in_authn);
    match (read, in_authn) {
        (true, _) => {
            assert_forwarded(&s);
            assert_eq!(callout_failures(&vm, ""), 0);
        }
        (false, true) => {
            assert_reply(&s, 401, "Unauthorized");
            assert_eq!(sent(&vm), vec!["TokenReview"; 5]);
        }
        (false, false) => {
            assert_reply(
                &s,
                500,
                &format!(
                    "Authorization error (user={PROM}, verb=get, resource=nodes, subresource=pods)"
                ),
            );
            let mut want = vec!["TokenReview"];
            want.extend(["SAR get pods"; 5]);
            assert_eq!(sent(&vm), want);
        }
    }
    if !read {
        assert_eq!(callout_failures(&vm, ""), 5);
        assert_eq!(vm.calls().len(), 5 + sar_sent);
        assert!(
            vm.logs_contain(&format!("response body of {size} bytes is too large")),
            "the refusal is logged: {:#?}",
            vm.logs()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// API server down: 401 while authenticating, 500 while authorizing; recovery when it returns.

#[test]
fn api_server_down_then_back() {
    let vm = vm_136();
    let mut api = api();
    // The token is cached by a first request; then the API server goes away.
    assert_forwarded(&run(&vm, &api, "GET", "/metrics", "tok-prom"));
    api.set_down(true);
    assert_reply(
        &run(&vm, &api, "GET", "/pods", "tok-alice"),
        401,
        "Unauthorized",
    );
    assert_reply(
        &run(&vm, &api, "GET", "/pods", "tok-prom"),
        500,
        &format!("Authorization error (user={PROM}, verb=get, resource=nodes, subresource=pods)"),
    );
    api.set_down(false);
    assert_forwarded(&run(&vm, &api, "GET", "/pods", "tok-prom"));
    let s = run(&vm, &api, "GET", "/pods", "tok-alice");
    assert_reply(&s, 403, F_ON);
}

// ---------------------------------------------------------------------------------------------
// strictUpgradeVerb (DESIGN difference 1).

#[rstest]
#[case::strict_ws_exec(
    true,
    "tok-debugger",
    "GET",
    "/exec/ns/pod/ctr?command=sh",
    "websocket",
    403,
    "create"
)]
#[case::exact_ws_exec(
    false,
    "tok-debugger",
    "GET",
    "/exec/ns/pod/ctr?command=sh",
    "websocket",
    200,
    "get"
)]
#[case::strict_ws_attach(
    true,
    "tok-debugger",
    "GET",
    "/attach/ns/pod/ctr",
    "websocket",
    403,
    "create"
)]
#[case::strict_ws_port_forward(
    true,
    "tok-debugger",
    "GET",
    "/portForward/ns/pod",
    "websocket",
    403,
    "create"
)]
#[case::strict_ws_run(
    true,
    "tok-debugger",
    "GET",
    "/run/ns/pod/ctr",
    "websocket",
    403,
    "create"
)]
#[case::strict_spdy_exec(
    true,
    "tok-debugger",
    "POST",
    "/exec/ns/pod/ctr",
    "SPDY/3.1",
    403,
    "create"
)]
#[case::exact_spdy_exec(
    false,
    "tok-debugger",
    "POST",
    "/exec/ns/pod/ctr",
    "SPDY/3.1",
    403,
    "create"
)]
#[case::strict_container_logs_is_get(
    true,
    "tok-debugger",
    "GET",
    "/containerLogs/ns/pod/ctr",
    "",
    200,
    "get"
)]
#[case::strict_admin_ws_exec(
    true,
    "tok-admin",
    "GET",
    "/exec/ns/pod/ctr",
    "websocket",
    200,
    "create"
)]
#[case::exact_admin_ws_attach(
    false,
    "tok-admin",
    "GET",
    "/attach/ns/pod/ctr",
    "websocket",
    200,
    "get"
)]
fn strict_upgrade_verb(
    #[case] strict: bool,
    #[case] token: &str,
    #[case] method: &str,
    #[case] path: &str,
    #[case] upgrade: &str,
    #[case] status: u32,
    #[case] verb: &str,
) {
    let vm = vm(&format!(
        r#""kubeletVersion":"1.36","authorization":{{"strictUpgradeVerb":{strict}}}"#
    ));
    let mut b = bearer(req(&vm, method, path), token);
    if !upgrade.is_empty() {
        b = b.header("connection", "Upgrade").header("upgrade", upgrade);
    }
    let s = api().run(b).unwrap();
    if status == 403 {
        assert_reply(
            &s,
            403,
            &format!(
                "Forbidden (user=debugger, verb={verb}, resource=nodes, subresource(s)=[proxy])\n"
            ),
        );
    } else {
        assert_forwarded(&s);
    }
    assert_eq!(
        sent(&vm),
        ["TokenReview".to_string(), format!("SAR {verb} proxy")]
    );
    let applied = strict && method == "GET" && verb == "create";
    assert_eq!(
        audit(
            &last_audit(&vm),
            "annotations.kubelet-authz.io/strict-upgrade-verb"
        ),
        if applied { json!("true") } else { Value::Null }
    );
}

// ---------------------------------------------------------------------------------------------
// Credentials on the forwarded request: the bearer header and the WebSocket token are removed.

#[test]
fn websocket_token_authenticates_and_is_removed_from_the_forwarded_protocols() {
    let vm = vm_136();
    let b = websocket(
        req(&vm, "GET", "/exec/ns/pod/ctr?command=sh"),
        &format!(
            "v4.channel.k8s.io, {}, v5.channel.k8s.io",
            ws_token("tok-admin")
        ),
    );
    let s = api().run(b).unwrap();
    assert_forwarded(&s);
    assert_eq!(
        s.request_header("sec-websocket-protocol").as_deref(),
        Some("v4.channel.k8s.io,v5.channel.k8s.io")
    );
    let calls = vm.calls();
    assert_eq!(
        calls[0].body_str(),
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"tok-admin"}}"#
    );
    assert_eq!(
        audit(&last_audit(&vm), "annotations.kubelet-authz.io/authn"),
        json!("websocket")
    );
    assert_eq!(
        metric(
            &vm,
            r#"kubelet_authz_authentications_total{method="websocket"}"#
        ),
        1
    );
}

#[rstest]
#[case::token_protocol_only(ws_token("tok-admin"), true)]
#[case::bad_encoding("v4.channel.k8s.io,base64url.bearer.authorization.k8s.io.!!!".to_string(), true)]
#[case::two_tokens(format!("v4.channel.k8s.io,{},{}", ws_token("tok-admin"), ws_token("tok-admin")), true)]
#[case::rejected_token(format!("v4.channel.k8s.io,{}", ws_token("nope")), true)]
#[case::without_upgrade_headers(format!("v4.channel.k8s.io,{}", ws_token("tok-admin")), false)]
fn websocket_token_failures(#[case] protocols: String, #[case] upgrade: bool) {
    let vm = vm(r#""kubeletVersion":"1.36","authentication":{"anonymous":{"enabled":true}}"#);
    let mut b = req(&vm, "GET", "/pods").header("sec-websocket-protocol", &protocols);
    if upgrade {
        b = b
            .header("connection", "Upgrade")
            .header("upgrade", "websocket");
    }
    let s = api().run(b).unwrap();
    if upgrade {
        assert_reply(&s, 401, "Unauthorized");
    } else {
        // Not a WebSocket request: the protocol header is no credential, the user is anonymous.
        assert_reply(
            &s,
            403,
            "Forbidden (user=system:anonymous, verb=get, resource=nodes, subresource(s)=[pods proxy])\n",
        );
        assert!(vm.calls().iter().all(|c| describe_call(c) != "TokenReview"));
    }
}

#[test]
fn bearer_header_is_stripped_and_other_headers_kept() {
    let vm = vm_136();
    let b = bearer(req(&vm, "GET", "/pods"), "tok-prom").header("x-trace", "keep-me");
    let s = api().run(b).unwrap();
    assert_forwarded(&s);
    let headers = s.forwarded_headers();
    assert!(
        headers.iter().all(|(k, _)| k != "authorization"),
        "{headers:?}"
    );
    assert_eq!(s.request_header("x-trace").as_deref(), Some("keep-me"));
    assert_eq!(s.request_header(":path").as_deref(), Some("/pods"));
}

#[test]
fn the_token_never_reaches_the_logs() {
    let vm = vm_136();
    let api = api();
    run(&vm, &api, "GET", "/pods", "tok-prom");
    run(&vm, &api, "GET", "/pods", "nope");
    for line in vm.logs() {
        assert!(
            !line.message.contains("tok-prom") && !line.message.contains("nope"),
            "{line}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Spoofed XFCC (DESIGN difference 4).

#[rstest]
#[case::plain_connection(false, false)]
#[case::digest_of_another_certificate(true, true)]
fn spoofed_xfcc_is_ignored_and_counted(#[case] mtls: bool, #[case] other_digest: bool) {
    let vm = vm_136();
    let admin = cert("kube-apiserver-kubelet-client", &["system:masters"], &[]);
    let mut b = req(&vm, "GET", "/pods")
        .header(
            "x-forwarded-client-cert",
            &kubelet_authz_harness::scenario::runner::xfcc(&admin.hash, &admin.pem),
        )
        .property_bool("connection.mtls", mtls);
    if other_digest {
        b = b.property("connection.sha256_peer_certificate_digest", "ab".repeat(32));
    }
    let s = api().run(b).unwrap();
    assert_reply(&s, 401, "Unauthorized");
    assert!(vm.calls().is_empty());
    assert_eq!(metric(&vm, "kubelet_authz_xfcc_spoofed_total"), 1);
    assert!(audit(
        &last_audit(&vm),
        "annotations.kubelet-authz.io/xfcc-ignored"
    )
    .is_string());
}

#[test]
fn spoofed_xfcc_does_not_hide_a_valid_token() {
    let vm = vm_136();
    let admin = cert("kube-apiserver-kubelet-client", &["system:masters"], &[]);
    let b = bearer(req(&vm, "GET", "/pods"), "tok-alice").header(
        "x-forwarded-client-cert",
        &kubelet_authz_harness::scenario::runner::xfcc(&admin.hash, &admin.pem),
    );
    let s = api().run(b).unwrap();
    assert_reply(&s, 403, F_ON);
    assert_eq!(audit(&last_audit(&vm), "user.username"), json!("alice"));
    assert_eq!(metric(&vm, "kubelet_authz_xfcc_spoofed_total"), 1);
}

#[test]
fn verified_certificate_is_used() {
    let vm = vm_136();
    let admin = cert("kube-apiserver-kubelet-client", &["system:masters"], &[]);
    let s = api()
        .run(with_cert(req(&vm, "POST", "/exec/ns/pod/ctr"), &admin))
        .unwrap();
    assert_forwarded(&s);
    assert_eq!(sent(&vm), ["SAR create proxy"]);
    assert_eq!(metric(&vm, "kubelet_authz_xfcc_spoofed_total"), 0);
    assert_eq!(
        audit(&last_audit(&vm), "annotations.kubelet-authz.io/authn"),
        json!("x509")
    );
}

// ---------------------------------------------------------------------------------------------
// Non-canonical paths (DESIGN difference 2): 400 before authentication, no callout.

#[rstest]
#[case::empty_segment("//exec/ns/pod/ctr", "path contains an empty segment (`//`)")]
#[case::dot_dot("/pods/../exec/ns/pod/ctr", "path contains a `.` or `..` segment")]
#[case::dot("/./exec/ns/pod/ctr", "path contains a `.` or `..` segment")]
#[case::encoded_dots(
    "/pods/%2e%2e/exec/ns/pod/ctr",
    "path contains an encoded slash, backslash, dot or percent sign"
)]
#[case::encoded_slash(
    "/pods%2F..%2Fexec/ns/pod/ctr",
    "path contains an encoded slash, backslash, dot or percent sign"
)]
#[case::backslash("/pods\\..\\exec", "path contains a backslash")]
#[case::fragment("/pods#x", "request target contains a fragment")]
#[case::absolute_form("http://worker-1/pods", "request target is not an absolute path")]
fn non_canonical_paths_are_400_with_no_callout(#[case] target: &str, #[case] why: &str) {
    let vm = vm_136();
    let s = run(&vm, &api(), "GET", target, "tok-admin");
    assert_reply(
        &s,
        400,
        &format!("Bad Request: non-canonical path: {why}\n"),
    );
    assert!(vm.calls().is_empty());
    assert_eq!(
        metric(
            &vm,
            r#"kubelet_authz_decisions_total{outcome="bad_request",subresource="none"}"#
        ),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// Audit line and counters per decision.

#[rstest]
#[case::allowed("tok-prom", "/pods", None, "allow", "allowed", "pods")]
#[case::forbidden("tok-alice", "/pods", Some(403), "forbid", "forbidden", "proxy")]
#[case::unauthenticated("", "/pods", Some(401), "forbid", "unauthenticated", "none")]
#[case::bad_request("tok-prom", "//pods", Some(400), "forbid", "bad_request", "none")]
#[case::authorizer_error(
    "tok-prom",
    "/configz",
    Some(500),
    "forbid",
    "authorizer_error",
    "configz"
)]
fn audit_line_and_counters_per_decision(
    #[case] token: &str,
    #[case] path: &str,
    #[case] code: Option<u16>,
    #[case] decision: &str,
    #[case] outcome: &str,
    #[case] sub: &str,
) {
    let vm = vm_136();
    let mut b = req(&vm, "GET", path).header("x-request-id", "req-42");
    if !token.is_empty() {
        b = bearer(b, token);
    }
    let s = b.send_headers(true).unwrap();
    if outcome == "authorizer_error" {
        answer(&vm, tr_ok(PROM, &[]));
        answer(&vm, sar(Sar::Error));
    } else {
        api().drive(&vm, &[&s]).unwrap();
    }
    assert_ne!(s.outcome(), Outcome::Paused);
    let events = audit_events(&vm);
    assert_eq!(events.len(), 1, "one audit event per decision");
    let ev = &events[0];
    assert_eq!(audit(ev, "kind"), json!("Event"));
    assert_eq!(audit(ev, "apiVersion"), json!("audit.k8s.io/v1"));
    assert_eq!(audit(ev, "level"), json!("Metadata"));
    assert_eq!(audit(ev, "auditID"), json!("req-42"));
    assert_eq!(audit(ev, "requestURI"), json!(path));
    assert_eq!(audit(ev, "sourceIPs"), json!(["10.0.0.1"]));
    assert_eq!(audit(ev, "userAgent"), json!("scenario-test/1.0"));
    assert_eq!(audit(ev, "objectRef.resource"), json!("nodes"));
    assert_eq!(audit(ev, "objectRef.name"), json!(NODE));
    assert_eq!(
        audit(ev, "responseStatus.code"),
        code.map_or(Value::Null, |c| json!(c))
    );
    assert_eq!(
        audit(ev, "annotations.authorization.k8s.io/decision"),
        json!(decision)
    );
    assert_eq!(
        audit(ev, "annotations.kubelet-authz.io/outcome"),
        json!(outcome)
    );
    assert!(audit(ev, "annotations.authorization.k8s.io/reason").is_string());
    if sub != "none" {
        assert_eq!(audit(ev, "objectRef.subresource"), json!(sub));
        assert_eq!(audit(ev, "verb"), json!("get"));
    }
    assert_eq!(metric(&vm, &decisions_series(outcome, sub)), 1);
    let decisions: i64 = vm
        .prometheus()
        .iter()
        .filter(|(k, _)| k.starts_with("kubelet_authz_decisions_total{"))
        .map(|(_, m)| m.value)
        .sum();
    assert_eq!(decisions, 1, "{:#?}", vm.metrics());
    if outcome == "allowed" {
        assert_eq!(
            metric(
                &vm,
                r#"kubelet_authz_authentications_total{method="bearer"}"#
            ),
            1
        );
        for kind in ["tokenreview", "subjectaccessreview"] {
            let ok = format!(r#"kubelet_authz_callouts_total{{kind="{kind}",result="ok"}}"#);
            assert_eq!(metric(&vm, &ok), 1);
        }
        assert_eq!(audit(ev, "user.username"), json!(PROM));
        assert_eq!(audit(ev, "user.uid"), json!("uid-prom"));
    }
}

// ---------------------------------------------------------------------------------------------
// The audit policy (issue 13): which decisions are written.

/// The built-in policy drops allowed `get` of metrics, stats and healthz (cached or not) and
/// writes every other decision: a denial, an exec, a refused path, an authorizer error, and a
/// scrape that only `nodes/proxy` allowed.
#[rstest]
#[case::metrics_allowed("tok-prom", "GET", "/metrics", 200, None)]
#[case::metrics_cadvisor_allowed("tok-prom", "GET", "/metrics/cadvisor", 200, None)]
#[case::stats_allowed("tok-prom", "GET", "/stats/summary", 200, None)]
#[case::healthz_allowed("tok-obs", "GET", "/healthz", 200, None)]
#[case::metrics_denied("tok-alice", "GET", "/metrics", 403, Some("forbidden"))]
#[case::healthz_through_proxy("tok-debugger", "GET", "/healthz", 200, Some("allowed"))]
#[case::pods_allowed("tok-prom", "GET", "/pods", 200, Some("allowed"))]
#[case::exec_allowed(
    "tok-admin",
    "POST",
    "/exec/ns/pod/ctr?command=sh",
    200,
    Some("allowed")
)]
#[case::exec_denied(
    "tok-prom",
    "POST",
    "/exec/ns/pod/ctr?command=sh",
    403,
    Some("forbidden")
)]
#[case::refused("tok-prom", "GET", "/metrics/../metrics", 400, Some("bad_request"))]
#[case::unauthenticated("nope", "GET", "/metrics", 401, Some("unauthenticated"))]
fn default_audit_policy(
    #[case] token: &str,
    #[case] method: &str,
    #[case] path: &str,
    #[case] status: u32,
    #[case] written: Option<&str>,
) {
    let vm = vm_136();
    let api = api();
    // Twice: the second decision is answered from the caches.
    let mut calls = Vec::new();
    for round in 0..2 {
        let s = run(&vm, &api, method, path, token);
        calls.push(vm.calls().len());
        assert_status(&s, status, None);
        let events = audit_events(&vm);
        match written {
            None => assert!(events.is_empty(), "round {round}: {events:#?}"),
            Some(outcome) => {
                assert_eq!(events.len(), round + 1, "round {round}: {events:#?}");
                assert_eq!(
                    audit(&events[round], "annotations.kubelet-authz.io/outcome"),
                    json!(outcome)
                );
            }
        }
    }
    if written.is_none() {
        // Reviewed once, then answered from the caches, and written neither time.
        assert!(calls[0] >= 2, "{:#?}", vm.calls());
        assert_eq!(calls[0], calls[1], "{:#?}", vm.calls());
    }
}

#[test]
fn default_audit_policy_writes_an_authorizer_error() {
    let vm = vm_136();
    let s = bearer(req(&vm, "GET", "/metrics"), "tok-prom")
        .send_headers(true)
        .unwrap();
    answer(&vm, tr_ok(PROM, &[]));
    answer(&vm, sar(Sar::Error));
    assert_status(&s, 500, None);
    let events = audit_events(&vm);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        audit(&events[0], "annotations.kubelet-authz.io/outcome"),
        json!("authorizer_error")
    );
    assert_eq!(audit(&events[0], "objectRef.subresource"), json!("metrics"));
}

const DROP_ALICE: &str = r#""audit":{"policy":{"rules":[{"level":"None","users":["alice"]}]}}"#;
const DROP_FORBIDDEN_PROXY: &str = r#""audit":{"policy":{"rules":[{"level":"None","outcomes":["forbidden"],"subresources":["proxy"]}]}}"#;
const DROP_ALLOWED: &str =
    r#""audit":{"policy":{"rules":[{"level":"None","outcomes":["allowed"]}]}}"#;
const DROP_SERVICEACCOUNTS: &str = r#""audit":{"policy":{"rules":[{"level":"Metadata","verbs":["create"]},{"level":"None","userGroups":["system:authenticated"]}]}}"#;
const WRITE_ALL: &str = r#""audit":{"policy":{"rules":[{"level":"Metadata"}]}}"#;
const DISABLED: &str = r#""audit":{"enabled":false,"policy":{"rules":[{"level":"Metadata"}]}}"#;

/// A user policy is taken as written: a decision its first matching rule gives `None` writes
/// nothing, and a decision no rule matches is written.
#[rstest]
#[case::drop_alice_denial(
    DROP_ALICE,
    "Enforce",
    "tok-alice",
    "POST",
    "/exec/ns/pod/ctr",
    403,
    false
)]
#[case::drop_alice_keeps_others(DROP_ALICE, "Enforce", "tok-prom", "GET", "/metrics", 200, true)]
#[case::drop_forbidden_proxy(
    DROP_FORBIDDEN_PROXY,
    "Enforce",
    "tok-alice",
    "GET",
    "/pods",
    403,
    false
)]
#[case::drop_forbidden_proxy_keeps_unauthenticated(
    DROP_FORBIDDEN_PROXY,
    "Enforce",
    "nope",
    "GET",
    "/pods",
    401,
    true
)]
#[case::drop_allowed(
    DROP_ALLOWED,
    "Enforce",
    "tok-admin",
    "POST",
    "/exec/ns/pod/ctr",
    200,
    false
)]
#[case::shadow_would_deny_is_not_allowed(
    DROP_ALLOWED,
    "Shadow",
    "tok-alice",
    "GET",
    "/pods",
    200,
    true
)]
#[case::shadow_allowed_dropped(DROP_ALLOWED, "Shadow", "tok-prom", "GET", "/pods", 200, false)]
#[case::first_match_wins(
    DROP_SERVICEACCOUNTS,
    "Enforce",
    "tok-admin",
    "POST",
    "/exec/ns/pod/ctr",
    200,
    true
)]
#[case::authenticated_group(
    DROP_SERVICEACCOUNTS,
    "Enforce",
    "tok-alice",
    "GET",
    "/pods",
    403,
    false
)]
#[case::group_needs_a_user(DROP_SERVICEACCOUNTS, "Enforce", "nope", "GET", "/pods", 401, true)]
#[case::write_all(WRITE_ALL, "Enforce", "tok-prom", "GET", "/metrics", 200, true)]
#[case::disabled(DISABLED, "Enforce", "tok-alice", "GET", "/pods", 403, false)]
fn user_audit_policy(
    #[case] policy: &str,
    #[case] enforcement: &str,
    #[case] token: &str,
    #[case] method: &str,
    #[case] path: &str,
    #[case] status: u32,
    #[case] written: bool,
) {
    let vm = vm(&format!(
        r#""kubeletVersion":"1.36","enforcement":"{enforcement}",{policy}"#
    ));
    let s = run(&vm, &api(), method, path, token);
    assert_status(&s, status, None);
    let events = audit_events(&vm);
    assert_eq!(events.len(), usize::from(written), "{events:#?}");
    if written && enforcement == "Shadow" {
        assert_eq!(
            audit(&events[0], "annotations.kubelet-authz.io/enforcement"),
            json!("shadow")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Shadow enforcement (issue 8).

#[rstest]
#[case::enforce_denies("Enforce", "tok-alice")]
#[case::shadow_forwards_a_denial("Shadow", "tok-alice")]
#[case::shadow_forwards_an_unauthenticated("Shadow", "nope")]
fn shadow_forwards_what_enforce_denies(#[case] mode: &str, #[case] token: &str) {
    let vm = vm(&format!(
        r#""kubeletVersion":"1.36","enforcement":"{mode}""#
    ));
    let s = run(&vm, &api(), "GET", "/pods", token);
    let ev = last_audit(&vm);
    let (outcome, reviews, sub) = if token == "nope" {
        ("unauthenticated", vec!["TokenReview"], "none")
    } else {
        (
            "forbidden",
            vec!["TokenReview", "SAR get pods", "SAR get proxy"],
            "proxy",
        )
    };
    assert_eq!(sent(&vm), reviews, "the same reviews in both modes");
    assert_eq!(
        audit(&ev, "annotations.kubelet-authz.io/outcome"),
        json!(outcome)
    );
    assert_eq!(
        audit(&ev, "annotations.authorization.k8s.io/decision"),
        json!("forbid")
    );
    assert_eq!(metric(&vm, &decisions_series(outcome, sub)), 1);
    if mode == "Shadow" {
        assert_forwarded(&s);
        assert_eq!(
            audit(&ev, "annotations.kubelet-authz.io/enforcement"),
            json!("shadow")
        );
        // By deciding subresource (issue 8): `none` for an authentication failure.
        assert_eq!(shadow_denials(&vm), 1);
        assert_eq!(metric(&vm, &shadow_series(sub)), 1);
    } else {
        let body = if token == "nope" {
            "Unauthorized"
        } else {
            F_ON
        };
        assert_reply(&s, if token == "nope" { 401 } else { 403 }, body);
        assert_eq!(
            audit(&ev, "annotations.kubelet-authz.io/enforcement"),
            Value::Null
        );
        assert_eq!(shadow_denials(&vm), 0);
    }
}

#[test]
fn shadow_allowed_requests_are_not_counted_as_denials() {
    let vm = vm(r#""kubeletVersion":"1.36","enforcement":"Shadow""#);
    let s = run(&vm, &api(), "GET", "/pods", "tok-prom");
    assert_forwarded(&s);
    assert!(s.request_header("authorization").is_none());
    assert_eq!(shadow_denials(&vm), 0);
    assert_eq!(
        audit(&last_audit(&vm), "annotations.kubelet-authz.io/enforcement"),
        json!("shadow")
    );
}

// ---------------------------------------------------------------------------------------------
// Stale-if-error (issue 8): an expired answer stands in for a failed callout within the window.

#[rstest]
#[case::sar_within_window("1m", "1h", 330, 200)]
#[case::sar_outside_window("1m", "1h", 390, 500)]
#[case::sar_off("0s", "1h", 330, 500)]
#[case::token_within_window("1m", "2m", 150, 200)]
#[case::token_outside_window("1m", "2m", 190, 401)]
#[case::token_off("0s", "2m", 150, 401)]
fn stale_if_error(
    #[case] window: &str,
    #[case] token_ttl: &str,
    #[case] after_secs: u64,
    #[case] status: u32,
) {
    let vm = vm(&format!(
        r#""kubeletVersion":"1.36","authentication":{{"webhook":{{"cacheTTL":"{token_ttl}"}}}},"apiServer":{{"staleIfError":"{window}"}}"#
    ));
    let mut api = api();
    assert_forwarded(&run(&vm, &api, "GET", "/pods", "tok-prom"));
    vm.advance_clock(Duration::from_secs(after_secs)).unwrap();
    api.set_down(true);
    let s = run(&vm, &api, "GET", "/pods", "tok-prom");
    let ev = last_audit(&vm);
    match status {
        // A stale token answer is not flagged yet (see `stale_token_answer_is_audited_and_counted`).
        200 if token_ttl == "2m" => assert_forwarded(&s),
        200 => {
            assert_forwarded(&s);
            assert_eq!(
                audit(&ev, "annotations.kubelet-authz.io/stale"),
                json!("true")
            );
            assert_eq!(metric(&vm, "kubelet_authz_stale_answers_total"), 1);
        }
        401 => assert_reply(&s, 401, "Unauthorized"),
        _ => assert_reply(
            &s,
            500,
            &format!(
                "Authorization error (user={PROM}, verb=get, resource=nodes, subresource=pods)"
            ),
        ),
    }
    if status != 200 {
        assert_eq!(
            audit(&ev, "annotations.kubelet-authz.io/stale"),
            Value::Null
        );
        assert_eq!(metric(&vm, "kubelet_authz_stale_answers_total"), 0);
    }
    // Every attempt was made before the stale answer was used.
    assert_eq!(vm.calls().len(), 2 + 5);
}

/// Issue 8 asks for every stale answer to be audited (`kubelet-authz.io/stale: "true"`) and
/// counted; the engine flags only SubjectAccessReviews (`Session::resume_with` sets `stale` for
/// `Shared::Sar`, never for a stale `Shared::Token`).
#[test]
fn stale_token_answer_is_audited_and_counted() {
    let vm = vm(r#""kubeletVersion":"1.36","apiServer":{"staleIfError":"1m"}"#);
    let mut api = api();
    assert_forwarded(&run(&vm, &api, "GET", "/pods", "tok-prom"));
    vm.advance_clock(Duration::from_secs(150)).unwrap();
    api.set_down(true);
    assert_forwarded(&run(&vm, &api, "GET", "/pods", "tok-prom"));
    let ev = last_audit(&vm);
    assert_eq!(
        audit(&ev, "annotations.kubelet-authz.io/stale"),
        json!("true")
    );
    assert_eq!(metric(&vm, "kubelet_authz_stale_answers_total"), 1);
}

// ---------------------------------------------------------------------------------------------
// Configuration errors name the field (Envoy refuses the plugin).

#[rstest]
#[case::missing_node_name(r#"{}"#, "nodeName")]
#[case::empty_node_name(r#"{"nodeName":""}"#, "nodeName")]
#[case::bad_mode(
    r#"{"nodeName":"n","authorization":{"mode":"RBAC"}}"#,
    "authorization.mode"
)]
#[case::bad_duration(
    r#"{"nodeName":"n","apiServer":{"staleIfError":"soon"}}"#,
    "apiServer.staleIfError"
)]
#[case::bad_enforcement(r#"{"nodeName":"n","enforcement":"Maybe"}"#, "enforcement")]
#[case::unknown_field(r#"{"nodeName":"n","nodename":"x"}"#, "nodename")]
#[case::audit_level(
    r#"{"nodeName":"n","audit":{"policy":{"rules":[{"level":"None"},{"level":"Request"}]}}}"#,
    r#"audit.policy.rules[1].level: unknown level "Request""#
)]
#[case::audit_outcome(
    r#"{"nodeName":"n","audit":{"policy":{"rules":[{"level":"None","outcomes":["denied"]}]}}}"#,
    r#"audit.policy.rules[0].outcomes[0]: unknown outcome "denied""#
)]
#[case::audit_empty_rules(
    r#"{"nodeName":"n","audit":{"policy":{"rules":[]}}}"#,
    "audit.policy.rules: must not be empty"
)]
#[case::audit_unknown_field(
    r#"{"nodeName":"n","audit":{"policy":{"rules":[{"level":"None","resources":["nodes/proxy"]}]}}}"#,
    "audit.policy.rules[0].resources: unknown field"
)]
fn bad_configuration_is_refused_naming_the_field(#[case] config: &str, #[case] field: &str) {
    let vm = Host::load(wasm()).unwrap();
    let err = vm
        .configure(config)
        .expect_err("configuration must be refused");
    assert!(
        err.logs_contain(&format!("invalid configuration: {field}")),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Scenario files and the runner.

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios")
}

#[test]
fn every_scenario_file_passes() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenario_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    let wasm = wasm();
    for file in files {
        let report = kubelet_authz_harness::scenario::runner::run_file(&file, &wasm);
        assert!(report.passed(), "{}:\n{report}", file.display());
        assert!(!report.steps.is_empty(), "{}", file.display());
    }
}

#[test]
fn the_runner_reports_failing_steps() {
    let yaml = r#"
name: wrong on purpose
config: { nodeName: worker-1, kubeletVersion: "1.36" }
tokens: { tok-alice: { user: alice, groups: [dev] } }
steps:
  - name: right
    request: { path: /pods, headers: { authorization: Bearer tok-alice } }
    expect: { status: 403, callouts: [TokenReview, SAR get pods, SAR get proxy] }
  - name: wrong
    request: { path: /pods, headers: { authorization: Bearer tok-alice } }
    expect: { status: 200, callouts: [TokenReview], metrics: { 'kubelet_authz_decisions_total{outcome="forbidden",subresource="proxy"}': 7 } }
"#;
    let scenario = serde_yaml_ng::from_str(yaml).unwrap();
    let report = kubelet_authz_harness::scenario::runner::run(&scenario, Path::new("."), &wasm());
    assert!(!report.passed());
    assert!(report.steps[0].passed(), "{report}");
    assert_eq!(report.steps[1].failures.len(), 3, "{report}");
    assert!(
        report.to_string().contains("FAIL step 2: wrong"),
        "{report}"
    );
}
