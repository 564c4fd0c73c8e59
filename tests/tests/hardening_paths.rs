//! Path-confusion corpus, end to end: raw HTTP/1.1 request lines (targets, methods and headers no
//! ordinary client would send) over TLS to a real Envoy 1.40 rendered from the shipped
//! `envoy/kubelet-front-proxy.yaml`, the release filter, the stand-in API server and the stand-in
//! kubelet (which echoes the path it received).
//!
//! The caller is the pod lister (`get nodes/pods` only). For every case the exact outcome is
//! asserted: refused (Envoy's own 400/404 or the filter's 400, with no review sent and nothing
//! forwarded), denied (403 after the checks the kubelet would make for the normalised path), or
//! forwarded with the subresource authorized being the one the kubelet would check for the path
//! it finally receives. Any request reaching `/exec` as the pod lister is a bypass. One Envoy
//! serves the whole file.
//!
//! Needs Envoy (`ENVOY_BIN`) and the release filter (`KUBELET_AUTHZ_FILTER_WASM`); fails without.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use kubelet_authz_e2e::envoy::Envoy;
use kubelet_authz_e2e::raw::{send, RawResponse as Raw};
use kubelet_authz_e2e::stack::{
    users, ProxyOptions, Standins, CERT_ADMIN, PODLISTER_TOKEN, PROMETHEUS_TOKEN,
};

use kubelet_authz_test_support::corpus;
use kubelet_authz_test_support::oracle::checks_136;

async fn raw(config: &Arc<rustls::ClientConfig>, envoy: &Envoy, head: &[u8]) -> Raw {
    send(config, envoy.listener(), head).await.unwrap()
}

fn tls_config(s: &Standins, cert: Option<&str>) -> Arc<rustls::ClientConfig> {
    kubelet_authz_e2e::raw::tls_config(s, cert).unwrap()
}

/// The expected outcome of one case.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Refused by Envoy itself (the filter never saw it): this status, no audit event.
    Envoy(u16),
    /// Refused by the filter with 400 before authentication.
    Filter400,
    /// 403 with this verb after trying these subresources (the filter saw `seen`).
    Denied {
        seen: &'static str,
        verb: &'static str,
        tried: &'static [&'static str],
    },
    /// Forwarded: the kubelet received `served`; authorized with `verb` on `sub`.
    Forwarded {
        served: &'static str,
        method: &'static str,
        verb: &'static str,
        sub: &'static str,
    },
}

/// One case: a name, the raw head, the expected outcome.
struct Case {
    name: &'static str,
    head: Vec<u8>,
    expect: Expect,
}

fn case(name: &'static str, head: &[u8], expect: Expect) -> Case {
    Case {
        name,
        head: head.to_vec(),
        expect,
    }
}

const E: &str = "/exec/default/web/app?command=id&stdout=1";

fn corpus() -> Vec<Case> {
    use Expect::*;
    let deny_exec = |verb| Denied {
        seen: "/exec/default/web/app?command=id&stdout=1",
        verb,
        tried: &["proxy"],
    };
    let get = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: worker-1").into_bytes();
    vec![
        // Control cases: the canonical forms.
        case(
            "canonical /pods is forwarded",
            &get("/pods"),
            Forwarded {
                served: "/pods",
                method: "GET",
                verb: "get",
                sub: "pods",
            },
        ),
        case("canonical /exec is denied", &get(E), deny_exec("create")),
        // Slashes and dot segments: Envoy merges and resolves them; the result is authorized.
        case(
            "//exec",
            &get("//exec/default/web/app?command=id&stdout=1"),
            deny_exec("create"),
        ),
        case(
            "/pods/../exec",
            &get("/pods/../exec/default/web/app?command=id&stdout=1"),
            deny_exec("create"),
        ),
        case(
            "/pods/%2e%2e/exec",
            &get("/pods/%2e%2e/exec/default/web/app?command=id&stdout=1"),
            deny_exec("create"),
        ),
        case(
            "/pods/%2E%2E/exec",
            &get("/pods/%2E%2E/exec/default/web/app?command=id&stdout=1"),
            deny_exec("create"),
        ),
        case(
            "/./exec",
            &get("/./exec/default/web/app?command=id&stdout=1"),
            deny_exec("create"),
        ),
        case(
            "/healthz/../exec",
            &get("/healthz/../exec/default/web/app?command=id&stdout=1"),
            deny_exec("create"),
        ),
        case(
            "/pods/./../exec",
            &get("/pods/./../exec/default/web/app?command=id&stdout=1"),
            deny_exec("create"),
        ),
        case(
            "/pods/../../../exec (above the root)",
            &get("/pods/../../../exec/default/web/app?command=id&stdout=1"),
            deny_exec("create"),
        ),
        // Encoded slashes and backslashes: Envoy rejects them (REJECT_REQUEST).
        case(
            "/pods%2F..%2Fexec",
            &get("/pods%2F..%2Fexec/default/web/app"),
            Envoy(400),
        ),
        case(
            "/pods%2f..%2fexec",
            &get("/pods%2f..%2fexec/default/web/app"),
            Envoy(400),
        ),
        case(
            "/pods%5C..%5Cexec",
            &get("/pods%5C..%5Cexec/default/web/app"),
            Envoy(400),
        ),
        case("/pods%5c", &get("/pods%5c"), Envoy(400)),
        // `..;`: Envoy's normaliser resolves it as `..`, and authorizes what it forwards.
        case(
            "/pods/..;/exec",
            &get("/pods/..;/exec/default/web/app"),
            Denied {
                seen: "/exec/default/web/app",
                verb: "create",
                tried: &["proxy"],
            },
        ),
        // Literal backslashes: Envoy's normaliser turns them into slashes, then resolves.
        case(
            "/pods\\..\\exec",
            &get("/pods\\..\\exec/default/web/app"),
            Denied {
                seen: "/exec/default/web/app",
                verb: "create",
                tried: &["proxy"],
            },
        ),
        case(
            "/pods/..\\exec",
            &get("/pods/..\\exec/default/web/app"),
            Denied {
                seen: "/exec/default/web/app",
                verb: "create",
                tried: &["proxy"],
            },
        ),
        // Overlong UTF-8, invalid and encoded-percent escapes.
        case(
            "/pods/%c0%ae%c0%ae/exec",
            &get("/pods/%c0%ae%c0%ae/exec/default/web/app"),
            Filter400,
        ),
        case("/pods%zz", &get("/pods%zz"), Filter400),
        case("/pods%2", &get("/pods%2"), Filter400),
        case("/pods%", &get("/pods%"), Filter400),
        case(
            "/pods%252F..%252Fexec",
            &get("/pods%252F..%252Fexec/default/web/app"),
            Filter400,
        ),
        // An encoded `?` or `#` is path, not query or fragment (found by `cargo fuzz run path`):
        // the kubelet would serve `/pods?x`, which needs `proxy`.
        case(
            "/pods%3Fx",
            &get("/pods%3Fx"),
            Denied {
                seen: "/pods%3Fx",
                verb: "get",
                tried: &["proxy"],
            },
        ),
        case(
            "/pods%23x",
            &get("/pods%23x"),
            Denied {
                seen: "/pods%23x",
                verb: "get",
                tried: &["proxy"],
            },
        ),
        case("/pods%00", &get("/pods%00"), Envoy(400)),
        case("/pods%0a", &get("/pods%0a"), Filter400),
        // NUL, control and non-ASCII bytes on the wire: Envoy's codec refuses them.
        case("NUL byte", b"GET /pods\0/../exec HTTP/1.1\r\nHost: worker-1", Envoy(400)),
        case("TAB byte", b"GET /pods\t/exec HTTP/1.1\r\nHost: worker-1", Envoy(400)),
        case("DEL byte", b"GET /pods\x7f HTTP/1.1\r\nHost: worker-1", Envoy(400)),
        case("non-ASCII byte", b"GET /pods\xc3\xa9 HTTP/1.1\r\nHost: worker-1", Envoy(400)),
        // Case: `/runningpods/` is the pods endpoint, `/runningPods/` is not (proxy).
        case(
            "/runningpods/",
            &get("/runningpods/"),
            Forwarded {
                served: "/runningpods/",
                method: "GET",
                verb: "get",
                sub: "pods",
            },
        ),
        case(
            "/runningPods/",
            &get("/runningPods/"),
            Denied {
                seen: "/runningPods/",
                verb: "get",
                tried: &["proxy"],
            },
        ),
        case(
            "/Exec",
            &get("/Exec/default/web/app"),
            Denied {
                seen: "/Exec/default/web/app",
                verb: "get",
                tried: &["proxy"],
            },
        ),
        // Queries and fragments that look like paths.
        case(
            "/pods?/../exec",
            &get("/pods?/../exec/default/web/app"),
            Forwarded {
                served: "/pods?/../exec/default/web/app",
                method: "GET",
                verb: "get",
                sub: "pods",
            },
        ),
        case(
            "/pods?%2F..%2Fexec",
            &get("/pods?x=%2F..%2Fexec"),
            Forwarded {
                served: "/pods?x=%2F..%2Fexec",
                method: "GET",
                verb: "get",
                sub: "pods",
            },
        ),
        case("/pods#/../exec", &get("/pods#/../exec/default/web/app"), Envoy(400)),
        // Absolute-form targets: Envoy takes the path from them.
        case(
            "absolute-form http://x/exec",
            &get("http://worker-1/exec/default/web/app?command=id&stdout=1"),
            deny_exec("create"),
        ),
        case(
            "absolute-form https://x/pods/../exec",
            &get("https://worker-1/pods/../exec/default/web/app?command=id&stdout=1"),
            deny_exec("create"),
        ),
        case("asterisk-form", &get("*"), Envoy(400)),
        case("relative target", &get("exec/default/web/app"), Envoy(400)),
        // Methods: HEAD, OPTIONS and anything not upper-case are the empty verb.
        case(
            "HEAD /pods",
            b"HEAD /pods HTTP/1.1\r\nHost: worker-1",
            Denied {
                seen: "/pods",
                verb: "",
                tried: &["pods", "proxy"],
            },
        ),
        case(
            "OPTIONS /exec",
            b"OPTIONS /exec/default/web/app?command=id&stdout=1 HTTP/1.1\r\nHost: worker-1",
            deny_exec(""),
        ),
        case(
            "lower-case get /pods",
            b"get /pods HTTP/1.1\r\nHost: worker-1",
            Envoy(400),
        ),
        case(
            "lower-case post /exec",
            b"post /exec/default/web/app?command=id HTTP/1.1\r\nHost: worker-1\r\nContent-Length: 0",
            Envoy(400),
        ),
        // A method override header changes nothing: the kubelet ignores it, so do we.
        case(
            "X-HTTP-Method-Override: POST on GET /pods",
            b"GET /pods HTTP/1.1\r\nHost: worker-1\r\nX-HTTP-Method-Override: POST",
            Forwarded {
                served: "/pods",
                method: "GET",
                verb: "get",
                sub: "pods",
            },
        ),
        case(
            "X-HTTP-Method-Override: GET on POST /exec",
            b"POST /exec/default/web/app?command=id HTTP/1.1\r\nHost: worker-1\r\nX-HTTP-Method-Override: GET\r\nContent-Length: 0",
            Denied {
                seen: "/exec/default/web/app?command=id",
                verb: "create",
                tried: &["proxy"],
            },
        ),
    ]
}

fn with_token(head: &[u8], token: &str) -> Vec<u8> {
    let mut h = head.to_vec();
    h.extend_from_slice(format!("\r\nAuthorization: Bearer {token}").as_bytes());
    h
}

/// The decoded path (no query) of what the kubelet received.
fn served_path(p: &str) -> &str {
    p.split_once('?').map_or(p, |(a, _)| a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_confusion_corpus_through_envoy_has_no_bypass() {
    let s = Standins::start().await.unwrap();
    let envoy = s
        .front_proxy("hardening-paths", &ProxyOptions::version("1.36"))
        .await
        .unwrap();
    let plain = tls_config(&s, None);
    let mut failures = Vec::new();
    let mut bypasses = Vec::new();
    let cases = corpus::load().unwrap();
    for c in corpus() {
        // Every target here is a case of the case corpus (authz/tests/cases/path-confusion.yaml),
        // which every driver and `can-i` run.
        let line = c.head.split(|&b| b == b'\r').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let (method, rest) = line.split_once(' ').unwrap();
        let target = rest.strip_suffix(" HTTP/1.1").unwrap();
        assert!(
            cases
                .iter()
                .any(|k| k.method == method && k.target == target),
            "{}: {method} {target:?} is not in the case corpus",
            c.name
        );
        let mark = envoy.log_len();
        let reviews = s.apiserver.records().len();
        s.kubelet.clear_records();
        let r = raw(&plain, &envoy, &with_token(&c.head, PODLISTER_TOKEN)).await;
        let forwarded = s.kubelet.records();
        // The invariant first: the pod lister never reaches anything but the pods endpoint.
        for f in &forwarded {
            let p = f["path"].as_str().unwrap_or("");
            if checks_136(served_path(p)).first() != Some(&"pods") {
                bypasses.push(format!("{}: the kubelet received {p}", c.name));
            }
        }
        let want_events = usize::from(!matches!(c.expect, Expect::Envoy(_)));
        let events = envoy
            .wait_audit_since(mark, want_events, Duration::from_secs(5))
            .await
            .unwrap();
        let new_reviews = s.apiserver.records().len() - reviews;
        let mut fail = |why: String| failures.push(format!("{}: {why} (got {r:?})", c.name));
        match c.expect {
            Expect::Envoy(status) => {
                if r.status != status || !events.is_empty() || !forwarded.is_empty() {
                    fail(format!(
                        "want Envoy's {status}, no audit event, nothing forwarded; events \
                         {events:?}, forwarded {forwarded:?}"
                    ));
                }
                if new_reviews != 0 {
                    fail(format!("{new_reviews} reviews sent"));
                }
            }
            Expect::Filter400 => {
                let ok = r.status == 400
                    && r.body.starts_with("Bad Request: non-canonical path")
                    && events.len() == 1
                    && events[0]["annotations"]["kubelet-authz.io/outcome"] == "bad_request"
                    && forwarded.is_empty()
                    && new_reviews == 0;
                if !ok {
                    fail(format!(
                        "want the filter's 400 before authentication; events {events:?}, \
                         reviews {new_reviews}, forwarded {forwarded:?}"
                    ));
                }
            }
            Expect::Denied { seen, verb, tried } => {
                let want_body = format!(
                    "Forbidden (user={}, verb={verb}, resource=nodes, subresource(s)=[{}])\n",
                    users::PODLISTER,
                    tried.join(" ")
                );
                // A HEAD answer has no body.
                let body_ok = r.body == want_body || (verb.is_empty() && r.body.is_empty());
                let ok = r.status == 403
                    && body_ok
                    && forwarded.is_empty()
                    && events.len() == 1
                    && events[0]["requestURI"] == seen
                    && events[0]["verb"] == verb
                    && events[0]["annotations"]["kubelet-authz.io/subresources"] == tried.join(",");
                // The checks are those of the path the filter saw (what Envoy would forward).
                let ok = ok && checks_136(served_path(seen)) == tried;
                if !ok {
                    fail(format!(
                        "want 403 {want_body:?} for {seen}; events {events:?}, forwarded \
                         {forwarded:?}"
                    ));
                }
            }
            Expect::Forwarded {
                served,
                method,
                verb,
                sub,
            } => {
                let ok = r.status == 200
                    && forwarded.len() == 1
                    && forwarded[0]["path"] == served
                    && forwarded[0]["method"] == method
                    && events.len() == 1
                    && events[0]["requestURI"] == served
                    && events[0]["verb"] == verb
                    && events[0]["objectRef"]["subresource"] == sub
                    && checks_136(served_path(served)).first() == Some(&sub);
                if !ok {
                    fail(format!(
                        "want forwarded to {served} as {verb} {sub}; events {events:?}, \
                         forwarded {forwarded:?}"
                    ));
                }
            }
        }
    }
    // Positive control: what the pod lister is denied, an identity with `nodes/proxy` gets, on
    // the normalised path (so the 403s above are not vacuous, and normalisation is what the
    // kubelet serves).
    let admin = tls_config(&s, Some(CERT_ADMIN));
    for target in [
        "/pods/../exec/default/web/app?command=id",
        "//exec/default/web/app?command=id",
        "/pods/%2e%2e/exec/default/web/app?command=id",
        "http://worker-1/exec/default/web/app?command=id",
    ] {
        s.kubelet.clear_records();
        let mark = envoy.log_len();
        let r = raw(
            &admin,
            &envoy,
            format!("GET {target} HTTP/1.1\r\nHost: worker-1").as_bytes(),
        )
        .await;
        let fwd = s.kubelet.records();
        let ev = envoy
            .wait_audit_since(mark, 1, Duration::from_secs(5))
            .await
            .unwrap();
        if r.status != 200
            || fwd.len() != 1
            || fwd[0]["path"] != "/exec/default/web/app?command=id"
            || ev.len() != 1
            || ev[0]["requestURI"] != "/exec/default/web/app?command=id"
            || ev[0]["objectRef"]["subresource"] != "proxy"
        {
            failures.push(format!(
                "admin control {target}: {r:?}, forwarded {fwd:?}, events {ev:?}"
            ));
        }
    }
    // A second identity with more rights (metrics, stats, log, pods) must not widen either:
    // `/metrics/../exec` is the exec endpoint.
    s.kubelet.clear_records();
    let r = raw(
        &plain,
        &envoy,
        &with_token(
            b"GET /metrics/../exec/default/web/app HTTP/1.1\r\nHost: worker-1",
            PROMETHEUS_TOKEN,
        ),
    )
    .await;
    if r.status != 403 || !s.kubelet.records().is_empty() {
        bypasses.push(format!("prometheus /metrics/../exec: {r:?}"));
    }
    envoy.stop().await;
    s.shutdown().await;
    assert!(bypasses.is_empty(), "BYPASSES:\n{}", bypasses.join("\n"));
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
