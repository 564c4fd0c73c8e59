//! Bytes that are not UTF-8 (issue 16: one `\xff` in any request header killed the filter's VM,
//! taking the node's kubelet API down) through the REAL filter module in the harness host, which
//! hands header names and values over as raw bytes, exactly as Envoy does.
//!
//! - One corpus row per header family with a `\xff` (or other non-UTF-8) byte: headers the engine
//!   does not read, credentials, the upgrade headers, `x-forwarded-client-cert`, `:path`,
//!   `:method`, a header name, and callout responses. Each row asserts the kubelet-shaped answer
//!   (and the reviews sent), that the VM is alive, and that the next request is served.
//! - A property test: arbitrary bytes in header names and values, the path and the method, and in
//!   callout responses (status, headers, body). Never a trap; always a kubelet-shaped answer; the
//!   VM serves the next request.
//!
//! A missing module is a failure, never a skip.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use kubelet_authz::review::{SubjectAccessReview, TokenReview};
use kubelet_authz_harness::host::{CallResponse, Host, HttpCall, Outcome, Stream};
use proptest::prelude::*;
use rstest::rstest;

mod host_support;

use host_support::podlister::{api, vm, TOKEN};
use kubelet_authz::review::{SUBJECT_ACCESS_REVIEW_PATH as SAR_PATH, TOKEN_REVIEW_PATH};

/// Answers callouts with `answer` (and fires retry timers) until the request is decided.
fn drive(vm: &Host, s: &Stream, answer: &dyn Fn(&HttpCall) -> CallResponse) {
    for _ in 0..32 {
        if s.outcome() != Outcome::Paused {
            return;
        }
        let pending = vm.pending_calls();
        if pending.is_empty() {
            // A retry is scheduled: let its timer fire.
            vm.advance_clock(Duration::from_secs(2)).unwrap();
            continue;
        }
        for call in &pending {
            vm.reply_call_with(call.token, answer(call)).unwrap();
        }
    }
    panic!("request not decided: {:#?}", vm.logs());
}

/// The reviews sent so far: ("tokenreview", token) or ("sar", "verb subresource").
fn reviews(vm: &Host) -> Vec<(String, String)> {
    vm.calls()
        .iter()
        .map(|c| match c.path() {
            Some(TOKEN_REVIEW_PATH) => {
                let r: TokenReview = c.body_json().unwrap();
                ("tokenreview".to_string(), r.spec.token)
            }
            Some(SAR_PATH) => {
                let r: SubjectAccessReview = c.body_json().unwrap();
                let a = r.spec.resource_attributes.unwrap_or_default();
                ("sar".to_string(), format!("{} {}", a.verb, a.subresource))
            }
            other => panic!("unexpected callout to {other:?}"),
        })
        .collect()
}

/// The VM is alive and the next ordinary request is served (allowed and forwarded).
fn assert_still_serving(vm: &Host) {
    assert!(!vm.is_dead(), "the VM died: {:#?}", vm.logs());
    let s = vm
        .request()
        .method("GET")
        .path("/pods")
        .header("authorization", &format!("Bearer {TOKEN}"))
        .send_headers(true)
        .unwrap_or_else(|e| panic!("the next request trapped: {e}"));
    drive(vm, &s, &api);
    assert_eq!(s.outcome(), Outcome::Forwarded, "logs: {:#?}", vm.logs());
}

fn ws_token(token: &[u8]) -> Vec<u8> {
    format!(
        "v4.channel.k8s.io, {}",
        kubelet_authz_test_support::encode::websocket_token(token)
    )
    .into_bytes()
}

/// Headers written as `name: value` lines (any bytes but `\n`).
fn lines(text: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let at = l.windows(2).position(|w| w == b": ").unwrap();
            (l[..at].to_vec(), l[at + 2..].to_vec())
        })
        .collect()
}

/// What a row expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Forwarded, after these reviews.
    Forwarded(&'static [(&'static str, &'static str)]),
    /// Answered locally with this status and body, after these reviews.
    Replied(u32, &'static str, &'static [(&'static str, &'static str)]),
}

const ALLOWED: &[(&str, &str)] = &[("tokenreview", TOKEN), ("sar", "get pods")];
const NONE: &[(&str, &str)] = &[];
const NON_CANONICAL: &str =
    "Bad Request: non-canonical path: path contains a control, space or non-ASCII byte\n";

/// One row per header family. `bearer`: whether the request also carries the pod lister's token.
#[rstest]
#[case::user_agent(b":x-none", b"", b"user-agent: \xff", true, Want::Forwarded(ALLOWED))]
#[case::cookie(b":x-none", b"", b"cookie: a=\x80", true, Want::Forwarded(ALLOWED))]
#[case::other_header(
    b":x-none",
    b"",
    b"x-anything: caf\xe9",
    true,
    Want::Forwarded(ALLOWED)
)]
#[case::header_name(b":x-none", b"", b"x-\xff\xfe: v", true, Want::Forwarded(ALLOWED))]
#[case::header_name_and_value(
    b":x-none",
    b"",
    b"\xc3\x28: \xf0\x28\x8c\x28",
    true,
    Want::Forwarded(ALLOWED)
)]
#[case::request_id(
    b":x-none",
    b"",
    b"x-request-id: \xff-id",
    true,
    Want::Forwarded(ALLOWED)
)]
// A token with such a byte is reviewed as the kubelet's JSON sends it (U+FFFD) and rejected.
#[case::bearer_only_byte(b":x-none", b"", b"authorization: Bearer \xff", false,
    Want::Replied(401, "Unauthorized", &[("tokenreview", "\u{fffd}")]))]
#[case::bearer_trailing_byte(b":x-none", b"", b"authorization: Bearer tok-podlister\xff", false,
    Want::Replied(401, "Unauthorized", &[("tokenreview", "tok-podlister\u{fffd}")]))]
#[case::bearer_scheme(
    b":x-none",
    b"",
    b"authorization: Bearer\xff tok-podlister",
    false,
    Want::Replied(401, "Unauthorized", NONE)
)]
// The WebSocket token: the byte in the encoded entry fails its decoding (an authenticator error,
// 401 without a review); in another entry it is ignored and the token is reviewed.
#[case::ws_token_entry(b":x-none", b"", b"connection: Upgrade\nupgrade: websocket\nsec-websocket-protocol: v4.channel.k8s.io, base64url.bearer.authorization.k8s.io.\xff", false,
    Want::Replied(401, "Unauthorized", NONE))]
#[case::ws_other_entry(
    b"sec-websocket-protocol",
    b"",
    b"connection: Upgrade\nupgrade: websocket",
    false,
    Want::Forwarded(ALLOWED)
)]
// Upgrade headers with such a byte are not `upgrade`/`websocket`: the WebSocket token is not read.
#[case::connection(
    b"sec-websocket-protocol",
    b"",
    b"connection: Upgrade\xff\nupgrade: websocket",
    false,
    Want::Replied(401, "Unauthorized", NONE)
)]
#[case::upgrade(
    b"sec-websocket-protocol",
    b"",
    b"connection: Upgrade\nupgrade: websocket\xff",
    false,
    Want::Replied(401, "Unauthorized", NONE)
)]
// An XFCC on a connection without a verified certificate is ignored (counted as spoofed).
#[case::xfcc(
    b":x-none",
    b"",
    b"x-forwarded-client-cert: Hash=\xff;Cert=\"\xfe\"",
    true,
    Want::Forwarded(ALLOWED)
)]
#[case::xfcc_alone(
    b":x-none",
    b"",
    b"x-forwarded-client-cert: Subject=\"CN=\xff\"",
    false,
    Want::Replied(401, "Unauthorized", NONE)
)]
// The path: refused as non-canonical before authentication.
#[case::path(
    b":path",
    b"/pods\xff",
    b"",
    true,
    Want::Replied(400, NON_CANONICAL, NONE)
)]
#[case::path_only_byte(b":path", b"/\x80", b"", true, Want::Replied(400, NON_CANONICAL, NONE))]
// The method: not one of the five, so verb "" (denied for the pod lister).
#[case::method(b":method", b"G\xffT", b"", true, Want::Replied(403,
    "Forbidden (user=podlister, verb=, resource=nodes, subresource(s)=[pods proxy])\n",
    &[("tokenreview", TOKEN), ("sar", " pods"), ("sar", " proxy")]))]
fn non_utf8_header(
    #[case] replace_name: &[u8],
    #[case] replace_value: &[u8],
    #[case] extra: &[u8],
    #[case] bearer: bool,
    #[case] want: Want,
) {
    let vm = vm();
    let mut b = vm.request();
    let method: &[u8] = if replace_name == b":method" {
        replace_value
    } else {
        b"GET"
    };
    let path: &[u8] = if replace_name == b":path" {
        replace_value
    } else {
        b"/pods"
    };
    b = b
        .header_bytes(b":method", method)
        .header_bytes(b":path", path);
    if bearer {
        b = b.header("authorization", &format!("Bearer {TOKEN}"));
    }
    if replace_name == b"sec-websocket-protocol" {
        // The pod lister's WebSocket token, with a non-UTF-8 entry beside it.
        let mut v = ws_token(TOKEN.as_bytes());
        v.extend_from_slice(b", x\xff");
        b = b.header_bytes(b"sec-websocket-protocol", &v);
    }
    let extra = lines(extra);
    for (name, value) in &extra {
        b = b.header_bytes(name, value);
    }
    let s = b.send_headers(true).unwrap_or_else(|e| panic!("trap: {e}"));
    drive(&vm, &s, &api);
    let (status, body, want_reviews) = match want {
        Want::Forwarded(r) => {
            assert_eq!(s.outcome(), Outcome::Forwarded, "logs: {:#?}", vm.logs());
            // Headers the engine does not read are passed on byte for byte.
            let forwarded = s.forwarded_pairs();
            for (name, value) in &extra {
                if !matches!(
                    name.as_slice(),
                    b"authorization" | b"sec-websocket-protocol"
                ) {
                    assert!(
                        forwarded.iter().any(|(k, v)| k == name && v == value),
                        "{name:?} not forwarded unchanged: {forwarded:?}"
                    );
                }
            }
            (None, None, r)
        }
        Want::Replied(status, body, r) => (Some(status), Some(body), r),
    };
    if let (Some(status), Some(body)) = (status, body) {
        let reply = s
            .local_reply()
            .unwrap_or_else(|| panic!("no reply: {:?}", s.outcome()));
        assert_eq!(reply.status, status, "body: {}", reply.body_str());
        assert_eq!(reply.body_str(), body);
    }
    let want_reviews: Vec<(String, String)> = want_reviews
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    assert_eq!(reviews(&vm), want_reviews);
    assert_still_serving(&vm);
}

/// Callout responses with non-UTF-8 bytes: in a header the filter does not read they change
/// nothing; in `:status` or the body they are a failed callout (the kubelet's error answer after
/// its retries), never a trap.
#[rstest]
#[case::header_name(vec![(b":status".to_vec(), b"201".to_vec()), (b"x-\xff".to_vec(), b"v".to_vec())], None, 200)]
#[case::header_value(vec![(b":status".to_vec(), b"201".to_vec()), (b"content-type".to_vec(), b"\xff".to_vec())], None, 200)]
#[case::retry_after(vec![(b":status".to_vec(), b"201".to_vec()), (b"retry-after".to_vec(), b"\xff".to_vec())], None, 200)]
#[case::status(vec![(b":status".to_vec(), b"2\xff1".to_vec())], None, 401)]
#[case::body(vec![(b":status".to_vec(), b"201".to_vec())], Some(b"\xff\xfe{".to_vec()), 401)]
fn non_utf8_callout_response(
    #[case] headers: Vec<(Vec<u8>, Vec<u8>)>,
    #[case] body: Option<Vec<u8>>,
    #[case] want: u32,
) {
    let vm = vm();
    let s = vm
        .request()
        .method("GET")
        .path("/pods")
        .header("authorization", &format!("Bearer {TOKEN}"))
        .send_headers(true)
        .unwrap();
    let answer = |call: &HttpCall| {
        let good = api(call);
        let body = body.clone().unwrap_or(good.body);
        CallResponse::raw(headers.clone(), body)
    };
    drive(&vm, &s, &answer);
    match want {
        200 => assert_eq!(s.outcome(), Outcome::Forwarded, "logs: {:#?}", vm.logs()),
        status => assert_eq!(s.local_reply().map(|r| r.status), Some(status)),
    }
    assert_still_serving(&vm);
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

/// A byte string biased towards what matters here: high bytes, separators and header syntax.
fn nasty(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            any::<u8>(),
            Just(0xffu8),
            Just(0x80u8),
            Just(b'/'),
            Just(b'%'),
            Just(b','),
            Just(b' '),
        ],
        0..max,
    )
}

const NAMES: &[&[u8]] = &[
    b"authorization",
    b"sec-websocket-protocol",
    b"connection",
    b"upgrade",
    b"x-forwarded-client-cert",
    b"user-agent",
    b"x-request-id",
    b"cookie",
];

fn header() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    (
        prop_oneof![
            prop::sample::select(NAMES).prop_map(<[u8]>::to_vec),
            bytes(12)
        ],
        nasty(48),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary bytes in the request (header names and values, method, path) and in every
    /// callout response (status, headers, body): no trap, a kubelet-shaped answer, and the VM
    /// serves the next request.
    #[test]
    fn arbitrary_bytes_never_trap(
        method in prop_oneof![Just(b"GET".to_vec()), nasty(8)],
        path in prop_oneof![nasty(24).prop_map(|p| [b"/".to_vec(), p].concat()), bytes(24)],
        headers in prop::collection::vec(header(), 0..6),
        bearer in any::<bool>(),
        status in prop_oneof![Just(b"201".to_vec()), nasty(4)],
        response_headers in prop::collection::vec((bytes(10), bytes(10)), 0..3),
        response_body in prop_oneof![Just(None), bytes(64).prop_map(Some)],
    ) {
        let vm = vm();
        let mut b = vm.request().header_bytes(b":method", &method).header_bytes(b":path", &path);
        if bearer {
            b = b.header("authorization", &format!("Bearer {TOKEN}"));
        }
        for (name, value) in &headers {
            b = b.header_bytes(name, value);
        }
        let s = b.send_headers(true);
        prop_assert!(s.is_ok(), "trap on the request: {:?}", s.err());
        let s = s.unwrap();
        let answer = |call: &HttpCall| {
            let good = api(call);
            let mut h = vec![(b":status".to_vec(), status.clone())];
            h.extend(response_headers.iter().cloned());
            CallResponse::raw(h, response_body.clone().unwrap_or(good.body))
        };
        drive(&vm, &s, &answer);
        prop_assert!(!vm.is_dead(), "the VM died: {:#?}", vm.logs());
        match s.outcome() {
            Outcome::Forwarded => {}
            Outcome::Replied(r) => prop_assert!(
                matches!(r.status, 400 | 401 | 403 | 500),
                "not a kubelet answer: {} {}", r.status, r.body_str()
            ),
            other => prop_assert!(false, "neither forwarded nor answered: {other:?}"),
        }
        assert_still_serving(&vm);
    }
}
