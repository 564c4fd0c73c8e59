//! The path-confusion corpus (issue 7) through the REAL filter module (`kubelet_authz_filter.wasm`,
//! from `$KUBELET_AUTHZ_FILTER_WASM` or the release artefact) in the harness host, with no Envoy
//! and no normaliser of any kind in front: the request targets reach the filter byte for byte as
//! written here (`//`, `..`, `%2e%2e`, `%2F`, `..;`, backslashes, `%5C`, overlong UTF-8, invalid
//! escapes, NUL and control bytes, `/runningPods/`, queries and fragments that look like paths,
//! absolute- and asterisk-form targets, `HEAD`/`OPTIONS`/lower-case methods).
//!
//! What it proves, row by row and crossed with an `X-HTTP-Method-Override` header (absent, `POST`,
//! `GET`, `DELETE`): the caller is the pod lister (`get nodes/pods` only, from a one-line rule in
//! the fake API server, not canned answers), on a 1.36 kubelet, and each request has exactly one
//! of two outcomes:
//! - refused: the filter's 400 `Bad Request: non-canonical path: <why>` with no callout at all (no
//!   TokenReview, no SubjectAccessReview) and nothing forwarded; or
//! - reviewed: one TokenReview, then exactly the SubjectAccessReviews (verb, subresource) a 1.36
//!   kubelet makes for the decoded path it will serve, the verb coming from the method alone
//!   (`X-HTTP-Method-Override` changes nothing), and then forwarded unchanged (allowed) or the
//!   kubelet's exact 403.
//!
//! Whatever is forwarded resolves (Go's way) to a pods path: the pod lister never reaches `/exec`
//! or anything else. Through Envoy (`tests/tests/hardening_paths.rs`) the normaliser hides a
//! filter that accepts dot and empty segments; here such a filter fails the refused rows.
//!
//! The module is compiled once per process (the host caches it); every case gets a fresh VM. A
//! missing module is a failure, never a skip.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kubelet_authz::review::{SubjectAccessReview, TokenReview};
use kubelet_authz_harness::host::{Host, HttpCall, Outcome, Stream};
use rstest::rstest;

use kubelet_authz_test_support::oracle::{checks_136, resolved};

mod host_support;

use host_support::podlister::{NODE, TOKEN, USER as PODLISTER};
use kubelet_authz::review::{SUBJECT_ACCESS_REVIEW_PATH as SAR_PATH, TOKEN_REVIEW_PATH};

// Why a target is refused (the filter's 400 body is `Bad Request: non-canonical path: <why>\n`).
const NOT_ORIGIN: &str = "request target is not an absolute path";
const FRAGMENT: &str = "request target contains a fragment";
const BYTE: &str = "path contains a control, space or non-ASCII byte";
const BAD_ESCAPE: &str = "path contains invalid percent-encoding";
const ENCODED: &str = "path contains an encoded slash, backslash, dot or percent sign";
const BACKSLASH: &str = "path contains a backslash";
const EMPTY: &str = "path contains an empty segment (`//`)";
const DOT: &str = "path contains a `.` or `..` segment";

/// The expected outcome of one row.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// 400 before authentication, for this reason; no callout, nothing forwarded.
    Refused(&'static str),
    /// Authenticated and authorized for `path` (the decoded path, without the query, that the
    /// kubelet serves) with `verb` (what the kubelet maps the method to).
    Served {
        path: &'static str,
        verb: &'static str,
    },
}

fn refused(why: &'static str) -> Want {
    Want::Refused(why)
}

fn served(path: &'static str, verb: &'static str) -> Want {
    Want::Served { path, verb }
}

// ---------------------------------------------------------------------------------------------
// Setup.

use host_support::podlister::{api, vm};

/// Answers callouts until the request is decided.
fn drive(vm: &Host, s: &Stream) {
    for _ in 0..16 {
        if s.outcome() != Outcome::Paused {
            return;
        }
        let pending = vm.pending_calls();
        assert!(
            !pending.is_empty(),
            "request paused with no callout pending; logs: {:#?}",
            vm.logs()
        );
        for call in &pending {
            vm.reply_call_with(call.token, api(call)).unwrap();
        }
    }
    panic!(
        "request not decided after 16 rounds of callouts: {:#?}",
        vm.logs()
    );
}

// ---------------------------------------------------------------------------------------------
// The kubelet, written out independently of the engine.

/// The path Go's `URL.Path` gives for a request target: the path of an absolute-form target, no
/// query or fragment, valid percent-escapes decoded (lossy for non-UTF-8 results).
fn go_path(target: &str) -> String {
    let t = target.split(['?', '#']).next().unwrap_or_default();
    let t = ["http://", "https://"]
        .iter()
        .find_map(|scheme| t.strip_prefix(scheme))
        .map_or(t, |rest| rest.find('/').map_or("/", |i| &rest[i..]));
    let bytes = t.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(d)) => {
                out.push(d);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The SubjectAccessReviews the kubelet makes for `path` with `verb` against the pod lister's
/// rule: each check in order until one is allowed. Returns them and whether one was allowed.
fn expected_reviews(path: &str, verb: &str) -> (Vec<(String, String)>, bool) {
    let mut sent = Vec::new();
    for sub in checks_136(path) {
        sent.push((verb.to_string(), sub.to_string()));
        if verb == "get" && sub == "pods" {
            return (sent, true);
        }
    }
    (sent, false)
}

// ---------------------------------------------------------------------------------------------
// The corpus.

const E: &str = "/exec/default/web/app";

#[rstest]
// Controls: the canonical forms.
#[case::canonical_pods("GET", "/pods", served("/pods", "get"))]
#[case::canonical_pods_trailing_slash("GET", "/pods/", served("/pods/", "get"))]
#[case::canonical_exec_get("GET", "/exec/default/web/app?command=id", served(E, "create"))]
#[case::canonical_exec_post("POST", "/exec/default/web/app?command=id", served(E, "create"))]
#[case::canonical_attach_get(
    "GET",
    "/attach/default/web/app",
    served("/attach/default/web/app", "create")
)]
#[case::canonical_portforward_get(
    "GET",
    "/portForward/default/web",
    served("/portForward/default/web", "create")
)]
#[case::canonical_delete_pods("DELETE", "/pods", served("/pods", "delete"))]
// Empty and dot segments.
#[case::double_slash_exec("GET", "//exec/default/web/app", refused(EMPTY))]
#[case::double_slash_pods("GET", "//pods", refused(EMPTY))]
#[case::pods_double_trailing_slash("GET", "/pods//", refused(EMPTY))]
#[case::pods_dotdot_exec("GET", "/pods/../exec/default/web/app", refused(DOT))]
#[case::pods_dot_dotdot_exec("GET", "/pods/./../exec/default/web/app", refused(DOT))]
#[case::above_the_root("GET", "/pods/../../../exec/default/web/app", refused(DOT))]
#[case::dot_exec("GET", "/./exec/default/web/app", refused(DOT))]
#[case::pods_dot("GET", "/pods/.", refused(DOT))]
#[case::pods_dotdot("GET", "/pods/..", refused(DOT))]
#[case::healthz_dotdot_exec("GET", "/healthz/../exec/default/web/app", refused(DOT))]
#[case::metrics_dotdot_exec("GET", "/metrics/../exec/default/web/app", refused(DOT))]
#[case::semicolon_then_dotdot("GET", "/pods;/../exec", refused(DOT))]
#[case::post_dotdot_exec_with_query(
    "POST",
    "/pods/../exec/default/web/app?command=id",
    refused(DOT)
)]
// Encoded dots, slashes, backslashes and percent signs.
#[case::pods_enc_dotdot_exec("GET", "/pods/%2e%2e/exec/default/web/app", refused(ENCODED))]
#[case::pods_enc_dotdot_upper_exec("GET", "/pods/%2E%2E/exec/default/web/app", refused(ENCODED))]
#[case::pods_half_enc_dotdot_exec("GET", "/pods/%2E./exec/default/web/app", refused(ENCODED))]
#[case::pods_enc_dot("GET", "/pods/%2e", refused(ENCODED))]
#[case::pods_enc_slash_exec("GET", "/pods%2F..%2Fexec/default/web/app", refused(ENCODED))]
#[case::pods_enc_slash_lower_exec("GET", "/pods%2f..%2fexec/default/web/app", refused(ENCODED))]
#[case::exec_enc_slash("GET", "/exec%2Fdefault%2Fweb%2Fapp", refused(ENCODED))]
#[case::pods_enc_backslash_exec("GET", "/pods%5C..%5Cexec", refused(ENCODED))]
#[case::pods_enc_backslash_lower("GET", "/pods%5c", refused(ENCODED))]
#[case::double_encoded_slash("GET", "/pods%252F..%252Fexec", refused(ENCODED))]
// Literal backslashes and `..;`.
#[case::backslash_dotdot_exec("GET", "/pods\\..\\exec", refused(BACKSLASH))]
#[case::slash_dotdot_backslash_exec("GET", "/pods/..\\exec/default/web/app", refused(BACKSLASH))]
#[case::dotdot_semicolon_exec("GET", "/pods/..;/exec", served("/pods/..;/exec", "get"))]
// Overlong UTF-8 and invalid percent-encoding.
#[case::overlong_utf8_dots("GET", "/pods/%c0%ae%c0%ae/exec", refused(BYTE))]
#[case::invalid_escape_zz("GET", "/pods%zz", refused(BAD_ESCAPE))]
#[case::truncated_escape("GET", "/pods%2", refused(BAD_ESCAPE))]
#[case::bare_percent("GET", "/pods%", refused(BAD_ESCAPE))]
// NUL, control, space and non-ASCII bytes, raw or encoded.
#[case::raw_nul("GET", "/pods\u{0}/../exec", refused(BYTE))]
#[case::encoded_nul("GET", "/pods%00", refused(BYTE))]
#[case::encoded_newline("GET", "/pods%0a", refused(BYTE))]
#[case::raw_tab("GET", "/pods\t", refused(BYTE))]
#[case::raw_newline("GET", "/pods\n/../exec", refused(BYTE))]
#[case::raw_del("GET", "/pods\u{7f}", refused(BYTE))]
#[case::raw_space("GET", "/pods /../exec", refused(BYTE))]
#[case::raw_non_ascii("GET", "/pods\u{e9}", refused(BYTE))]
#[case::encoded_non_ascii("GET", "/pods%c3%a9", refused(BYTE))]
// Encoded ordinary characters decode as Go does.
#[case::encoded_letter("GET", "/%70ods", served("/pods", "get"))]
#[case::encoded_letter_exec("GET", "/%65xec/default/web/app", served(E, "create"))]
// Case: `/runningpods/` is the pods endpoint, `/runningPods/` is not.
#[case::runningpods("GET", "/runningpods/", served("/runningpods/", "get"))]
#[case::runningpods_no_slash("GET", "/runningpods", served("/runningpods", "get"))]
#[case::running_pods_camel("GET", "/runningPods/", served("/runningPods/", "get"))]
#[case::exec_capitalised("GET", "/Exec/default/web/app", served("/Exec/default/web/app", "get"))]
// Queries and fragments that look like paths.
#[case::query_dotdot_exec("GET", "/pods?/../exec", served("/pods", "get"))]
#[case::query_enc_slash_exec("GET", "/pods?x=%2F..%2Fexec", served("/pods", "get"))]
#[case::healthz_query_dotdot_exec(
    "GET",
    "/healthz?/../exec/default/web/app",
    served("/healthz", "get")
)]
#[case::exec_query_looks_like_pods(
    "GET",
    "/exec/default/web/app?x=/../../pods",
    served(E, "create")
)]
// An encoded `?` or `#` is path, not query or fragment (found by `cargo fuzz run path`): the
// kubelet serves `/pods?x` (not `/pods`), which needs `proxy`.
#[case::encoded_question_mark("GET", "/pods%3Fx", served("/pods?x", "get"))]
#[case::encoded_hash("GET", "/pods%23x", served("/pods#x", "get"))]
#[case::fragment_dotdot_exec("GET", "/pods#/../exec", refused(FRAGMENT))]
#[case::query_then_fragment("GET", "/pods?x#/../exec", refused(FRAGMENT))]
// Targets that are not origin-form.
#[case::absolute_form_exec("GET", "http://x/exec/default/web/app", refused(NOT_ORIGIN))]
#[case::absolute_form_https_dotdot(
    "GET",
    "https://worker-1/pods/../exec/default/web/app",
    refused(NOT_ORIGIN)
)]
#[case::absolute_form_pods("GET", "http://worker-1/pods", refused(NOT_ORIGIN))]
#[case::asterisk_form("GET", "*", refused(NOT_ORIGIN))]
#[case::asterisk_form_options("OPTIONS", "*", refused(NOT_ORIGIN))]
#[case::relative_target("GET", "exec/default/web/app", refused(NOT_ORIGIN))]
#[case::empty_target("GET", "", refused(NOT_ORIGIN))]
// Methods: HEAD, OPTIONS and anything not exactly upper-case are the empty verb.
#[case::head_pods("HEAD", "/pods", served("/pods", ""))]
#[case::head_exec("HEAD", "/exec/default/web/app", served(E, ""))]
#[case::options_exec("OPTIONS", "/exec/default/web/app", served(E, ""))]
#[case::lower_get_pods("get", "/pods", served("/pods", ""))]
#[case::mixed_get_pods("Get", "/pods", served("/pods", ""))]
#[case::lower_post_exec("post", "/exec/default/web/app", served(E, ""))]
#[case::lower_head_dotdot("head", "/pods/../exec", refused(DOT))]
fn path_confusion_corpus(
    #[case] method: &str,
    #[case] target: &str,
    #[case] want: Want,
    #[values(None, Some("POST"), Some("GET"), Some("DELETE"))] method_override: Option<&str>,
) {
    assert!(
        in_case_corpus(method, target),
        "{method} {target:?} is not in the case corpus (authz/tests/cases/path-confusion.yaml)"
    );
    let vm = vm();
    let mut b = vm
        .request()
        .method(method)
        .path(target)
        .authority("worker-1:10250")
        .header("user-agent", "corpus-test/1.0")
        .header("authorization", &format!("Bearer {TOKEN}"))
        .property_bool("connection.mtls", false)
        .property("source.address", "10.0.0.1:40000");
    if let Some(o) = method_override {
        b = b.header("x-http-method-override", o);
    }
    let s = b.send_headers(true).unwrap();
    drive(&vm, &s);
    let outcome = s.outcome();
    let calls = vm.calls();
    let what = format!("{method} {target:?} (X-HTTP-Method-Override: {method_override:?})");

    // The invariant first: whatever is forwarded is the target as sent, and it resolves (Go's
    // way, after decoding) to a pods path. Anything else reaching the kubelet is a bypass.
    if outcome == Outcome::Forwarded {
        let fwd_path = s.request_header(":path").unwrap_or_default();
        let reaches = resolved(&go_path(&fwd_path));
        assert!(
            fwd_path == target && checks_136(&reaches).first() == Some(&"pods"),
            "BYPASS: {what} was forwarded as {fwd_path:?}, which the kubelet serves as {reaches:?} \
             (expected outcome {want:?}); reviews sent: {:?}",
            calls.iter().map(describe).collect::<Vec<_>>()
        );
    }

    match want {
        Want::Refused(why) => {
            match &outcome {
                Outcome::Replied(r) => assert_eq!(
                    (r.status, r.body_str()),
                    (400, format!("Bad Request: non-canonical path: {why}\n")),
                    "{what}"
                ),
                other => panic!(
                    "{what}: want the filter's 400 ({why}), got {other:?}; reviews sent: {:?}",
                    calls.iter().map(describe).collect::<Vec<_>>()
                ),
            }
            assert!(
                calls.is_empty(),
                "{what}: callouts before the 400: {:?}",
                calls.iter().map(describe).collect::<Vec<_>>()
            );
        }
        Want::Served { path, verb } => {
            assert_eq!(go_path(target), path, "{what}: the row's decoded path");
            // One TokenReview for the caller's token, then the kubelet's SARs, nothing else.
            let first = calls
                .first()
                .unwrap_or_else(|| panic!("{what}: no callout at all, outcome {outcome:?}"));
            assert_eq!(first.path(), Some(TOKEN_REVIEW_PATH), "{what}");
            let review: TokenReview = first.body_json().unwrap();
            assert_eq!(review.spec.token, TOKEN, "{what}");
            let sars: Vec<(String, String)> = calls
                .iter()
                .skip(1)
                .map(|c| {
                    assert_eq!(c.path(), Some(SAR_PATH), "{what}: {c:#?}");
                    let sar: SubjectAccessReview = c.body_json().unwrap();
                    let a = sar.spec.resource_attributes.unwrap_or_default();
                    assert_eq!(
                        (sar.spec.user.as_str(), a.resource.as_str(), a.name.as_str()),
                        (PODLISTER, "nodes", NODE),
                        "{what}"
                    );
                    (a.verb, a.subresource)
                })
                .collect();
            let (want_sars, allowed) = expected_reviews(path, verb);
            assert_eq!(
                sars, want_sars,
                "{what}: the SubjectAccessReviews (verb, subresource) must be the kubelet's for \
                 {path} with verb {verb:?}"
            );
            if allowed {
                assert_eq!(outcome, Outcome::Forwarded, "{what}: logs {:#?}", vm.logs());
                assert_eq!(
                    s.request_header(":method").as_deref(),
                    Some(method),
                    "{what}"
                );
                assert_eq!(
                    s.request_header("authorization"),
                    None,
                    "{what}: the caller's token is stripped"
                );
            } else {
                let tried: Vec<&str> = want_sars.iter().map(|(_, sub)| sub.as_str()).collect();
                let body = format!(
                    "Forbidden (user={PODLISTER}, verb={verb}, resource=nodes, subresource(s)=[{}])\n",
                    tried.join(" ")
                );
                match &outcome {
                    Outcome::Replied(r) => {
                        assert_eq!((r.status, r.body_str()), (403, body), "{what}");
                    }
                    other => panic!("{what}: want 403 {body:?}, got {other:?}"),
                }
            }
        }
    }
}

/// Whether the case corpus (`authz/tests/cases/*.yaml`, which every driver and `can-i` run) has
/// a case with this method and target: every row here must be one.
fn in_case_corpus(method: &str, target: &str) -> bool {
    static CASES: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    CASES
        .get_or_init(|| {
            kubelet_authz_test_support::corpus::load()
                .unwrap()
                .into_iter()
                .map(|c| (c.method, c.target))
                .collect()
        })
        .iter()
        .any(|(m, t)| m == method && t == target)
}

/// `TokenReview` or `SAR <verb> <subresource>`, for failure messages.
fn describe(call: &HttpCall) -> String {
    match call.path() {
        Some(TOKEN_REVIEW_PATH) => "TokenReview".to_string(),
        Some(SAR_PATH) => match call.body_json::<SubjectAccessReview>() {
            Ok(sar) => {
                let a = sar.spec.resource_attributes.unwrap_or_default();
                format!("SAR {:?} {}", a.verb, a.subresource)
            }
            Err(e) => format!("SAR <malformed: {e}>"),
        },
        other => format!("{other:?}"),
    }
}
