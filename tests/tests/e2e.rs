//! End to end through a real Envoy 1.40 with the release filter, over TLS, in front of the
//! stand-in kubelet, with the stand-in API server answering TokenReviews and SubjectAccessReviews
//! from the seed RBAC roles. Each test starts its own stand-ins and Envoy(s) and stops them.
//!
//! Needs Envoy (`ENVOY_BIN`) and the release filter (`KUBELET_AUTHZ_FILTER_WASM`); fails without.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use kubelet_authz_e2e::envoy::{prometheus_sum, prometheus_value, Envoy, METRICS_FLUSH};
use kubelet_authz_e2e::stack::{
    users, ProxyOptions, Standins, CERT_ADMIN, CERT_ALICE, DEBUGGER_TOKEN, NOBODY_TOKEN, NODE_NAME,
    OPS_TOKEN, PODLISTER_TOKEN, PROMETHEUS_TOKEN, SCRAPER_TOKEN,
};
use kubelet_authz_standins::apiserver::{Fault, FaultKind};
use kubelet_authz_standins::client::ClientResponse;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// Who sends a request.
#[derive(Debug, Clone, Copy)]
enum Who {
    Anonymous,
    Token(&'static str),
    Cert(&'static str),
}

impl Who {
    fn user(self) -> &'static str {
        match self {
            Who::Anonymous => "system:anonymous",
            Who::Token(PROMETHEUS_TOKEN) => users::PROMETHEUS,
            Who::Token(SCRAPER_TOKEN) => users::SCRAPER,
            Who::Token(PODLISTER_TOKEN) => users::PODLISTER,
            Who::Token(DEBUGGER_TOKEN) => users::DEBUGGER,
            Who::Token(NOBODY_TOKEN) => users::NOBODY,
            Who::Token(OPS_TOKEN) => users::OPS,
            Who::Cert(CERT_ADMIN) => users::ADMIN,
            Who::Cert(CERT_ALICE) => users::ALICE,
            other => panic!("no user for {other:?}"),
        }
    }
}

async fn send(
    s: &Standins,
    envoy: &Envoy,
    who: Who,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> ClientResponse {
    let cert = match who {
        Who::Cert(c) => Some(c),
        _ => None,
    };
    let bearer;
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Who::Token(t) = who {
        bearer = format!("Bearer {t}");
        headers.push(("authorization", &bearer));
    }
    s.client(cert)
        .unwrap()
        .request(method, &format!("{}{path}", envoy.url()), &headers, "")
        .await
        .unwrap_or_else(|e| panic!("{method} {path} as {who:?}: {e}"))
}

async fn get(s: &Standins, envoy: &Envoy, who: Who, path: &str) -> ClientResponse {
    send(s, envoy, who, "GET", path, &[]).await
}

fn body(r: &ClientResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The SubjectAccessReviews recorded after `mark`: (subresource, verb, allowed, spec).
fn sars_since(s: &Standins, mark: usize) -> Vec<(String, String, bool, Value)> {
    s.apiserver.records()[mark..]
        .iter()
        .filter(|r| r.kind == "SubjectAccessReview")
        .map(|r| {
            let spec = r.request["spec"].clone();
            let ra = &spec["resourceAttributes"];
            (
                ra["subresource"].as_str().unwrap_or("").to_string(),
                ra["verb"].as_str().unwrap_or("").to_string(),
                r.response
                    .as_ref()
                    .and_then(|v| v["status"]["allowed"].as_bool())
                    == Some(true),
                spec,
            )
        })
        .collect()
}

fn forbidden(minor: u32, user: &str, verb: &str, tried: &[&str]) -> String {
    if minor >= 32 {
        format!(
            "Forbidden (user={user}, verb={verb}, resource=nodes, subresource(s)=[{}])\n",
            tried.join(" ")
        )
    } else {
        format!(
            "Forbidden (user={user}, verb={verb}, resource=nodes, subresource={})",
            tried[0]
        )
    }
}

/// What the kubelet stand-in echoed for a forwarded request: the path, the proxy's certificate,
/// no bearer token.
fn assert_forwarded(r: &ClientResponse, path: &str) {
    let echo = r.json();
    assert_eq!(echo["path"], path, "forwarded path: {echo}");
    assert_eq!(
        echo["clientCert"]["commonName"],
        users::PROXY,
        "the kubelet must see the proxy's own client certificate: {echo}"
    );
    assert!(
        echo["headers"].get("authorization").is_none(),
        "the bearer token reached the kubelet: {echo}"
    );
}

// The seed roles against every path per kubelet version (status, exact body, the reviews sent,
// what reached the kubelet, one TokenReview per token, anonymous refused) are the case corpus
// `authz/tests/cases/seed-roles.yaml`, run through Envoy by `tests/tests/cases.rs`.

/// x509 (CN = user, every O = a group), bearer tokens (a bad one is 401 even with anonymous on),
/// anonymous on and off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_bearer_and_anonymous() {
    let s = Standins::start().await.unwrap();
    let off = s
        .front_proxy("anon-off", &ProxyOptions::version("1.36"))
        .await
        .unwrap();
    let on = s
        .front_proxy("anon-on", &ProxyOptions::version("1.36").anonymous(true))
        .await
        .unwrap();

    // x509: alice's groups come from her certificate's O values.
    let mark = s.apiserver.records().len();
    let r = get(&s, &off, Who::Cert(CERT_ALICE), "/pods").await;
    assert_eq!(r.status, 200, "{}", body(&r));
    assert_forwarded(&r, "/pods");
    let sars = sars_since(&s, mark);
    assert_eq!(sars.len(), 1);
    let spec = &sars[0].3;
    assert_eq!(spec["user"], "alice");
    assert_eq!(
        spec["groups"],
        serde_json::json!(["observability", "dev", "system:authenticated"])
    );
    let cred = spec["extra"]["authentication.kubernetes.io/credential-id"][0]
        .as_str()
        .unwrap();
    assert!(cred.starts_with("X509SHA256="), "{cred}");
    assert!(
        s.apiserver.token_reviews_since(mark).is_empty(),
        "x509 needs no TokenReview"
    );
    // The kubelet sees the identity only through Envoy's own XFCC (set from the connection).
    let xfcc = r.json()["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(xfcc.contains("CN=alice"), "{xfcc}");

    // A client certificate beats a bearer token (the kubelet tries x509 first).
    let mark = s.apiserver.records().len();
    let r = send(
        &s,
        &off,
        Who::Cert(CERT_ALICE),
        "GET",
        "/configz",
        &[("authorization", "Bearer nobody-token")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", body(&r));
    assert!(s.apiserver.token_reviews_since(mark).is_empty());

    // ServiceAccount tokens: TokenReview, then SARs for the token's user; the token is stripped.
    let mark = s.apiserver.records().len();
    let r = get(&s, &off, Who::Token(PODLISTER_TOKEN), "/pods").await;
    assert_eq!(r.status, 200, "{}", body(&r));
    assert_forwarded(&r, "/pods");
    assert_eq!(s.apiserver.token_reviews_since(mark), [PODLISTER_TOKEN]);
    let tr = s.apiserver.records()[mark..]
        .iter()
        .find(|r| r.kind == "TokenReview")
        .unwrap()
        .clone();
    assert_eq!(tr.request["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(tr.response.unwrap()["status"]["authenticated"], true);
    let r = get(&s, &off, Who::Token(NOBODY_TOKEN), "/pods").await;
    assert_eq!(r.status, 403);
    assert_eq!(
        body(&r),
        "Forbidden (user=system:serviceaccount:default:nobody, verb=get, resource=nodes, subresource(s)=[pods proxy])\n"
    );

    // Unknown token: 401 with anonymous off and on.
    for envoy in [&off, &on] {
        let r = get(&s, envoy, Who::Token("not-a-token"), "/healthz").await;
        assert_eq!((r.status, body(&r).as_str()), (401, "Unauthorized"));
    }
    // A malformed Authorization header is not a credential: anonymous decides.
    // No credentials: 401 when anonymous is off; system:anonymous is authorized when on.
    let r = get(&s, &off, Who::Anonymous, "/healthz").await;
    assert_eq!((r.status, body(&r).as_str()), (401, "Unauthorized"));
    let mark = s.apiserver.records().len();
    let r = get(&s, &on, Who::Anonymous, "/healthz").await;
    assert_eq!(r.status, 403);
    assert_eq!(
        body(&r),
        "Forbidden (user=system:anonymous, verb=get, resource=nodes, subresource(s)=[healthz proxy])\n"
    );
    let sars = sars_since(&s, mark);
    assert_eq!(sars.len(), 2);
    assert_eq!(sars[0].3["user"], "system:anonymous");
    assert_eq!(
        sars[0].3["groups"],
        serde_json::json!(["system:unauthenticated"])
    );
    // An anonymous request with a valid token is that token's user, not anonymous.
    let r = get(&s, &on, Who::Token(SCRAPER_TOKEN), "/metrics").await;
    assert_eq!(r.status, 200, "{}", body(&r));
    on.stop().await;
    off.stop().await;
    s.shutdown().await;
}

/// A client-sent `x-forwarded-client-cert` never makes anyone the admin: Envoy replaces it on a
/// connection with a certificate and drops it on one without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_xfcc_is_ignored() {
    let s = Standins::start().await.unwrap();
    let envoy = s
        .front_proxy("xfcc", &ProxyOptions::version("1.36").anonymous(true))
        .await
        .unwrap();
    // A genuine XFCC element for the admin, as Envoy would write it (the certificate is public).
    let admin_pem = std::fs::read_to_string(s.cert(CERT_ADMIN).cert).unwrap();
    let encoded: String = admin_pem
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let spoof = format!("Hash=00;Cert=\"{encoded}\";Subject=\"CN=kube-apiserver-kubelet-client\"");
    let headers = [("x-forwarded-client-cert", spoof.as_str())];

    // No certificate (TLS without a client certificate): anonymous, not the admin.
    let r = send(&s, &envoy, Who::Anonymous, "GET", "/pods", &headers).await;
    assert_eq!(r.status, 403, "{}", body(&r));
    assert!(body(&r).contains("user=system:anonymous"), "{}", body(&r));
    // With a bearer token: the token's user.
    let r = send(
        &s,
        &envoy,
        Who::Token(NOBODY_TOKEN),
        "GET",
        "/pods",
        &headers,
    )
    .await;
    assert_eq!(r.status, 403, "{}", body(&r));
    assert!(body(&r).contains(&format!("user={}", users::NOBODY)));
    // With alice's certificate: alice (Envoy's XFCC), and the kubelet gets only alice's element.
    let r = send(&s, &envoy, Who::Cert(CERT_ALICE), "GET", "/pods", &headers).await;
    assert_eq!(r.status, 200, "{}", body(&r));
    let forwarded = r.json()["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(forwarded.contains("CN=alice"), "{forwarded}");
    assert!(
        !forwarded.contains("kube-apiserver-kubelet-client"),
        "{forwarded}"
    );
    let r = send(
        &s,
        &envoy,
        Who::Cert(CERT_ALICE),
        "GET",
        "/exec/ns/pod/c",
        &headers,
    )
    .await;
    assert_eq!(r.status, 403, "{}", body(&r));
    assert!(body(&r).contains("user=alice"), "{}", body(&r));
    // Envoy removed every client-sent header before the filter ran: the filter never saw one.
    assert_eq!(
        envoy
            .counter("kubelet_authz_xfcc_spoofed_total")
            .await
            .unwrap(),
        0
    );
    // No SubjectAccessReview ever named the admin.
    for rec in s.apiserver.records() {
        assert_ne!(
            rec.request["spec"]["user"],
            users::ADMIN,
            "{:?}",
            rec.request
        );
    }
    envoy.stop().await;
    s.shutdown().await;
}

use kubelet_authz_test_support::encode::websocket_token as ws_protocol_token;

const EXEC: &str = "/exec/default/web-0/app?command=id&stdout=1";
const WS_HEADERS: &[(&str, &str)] = &[
    ("connection", "Upgrade"),
    ("upgrade", "websocket"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("sec-websocket-protocol", "v5.channel.k8s.io"),
];

/// WebSocket exec through Envoy: allowed for `create nodes/proxy` (x509 and the WebSocket token
/// subprotocol), refused for `get nodes/proxy` with the strict verb; with it off, kubelet-exact
/// (the hole). SPDY exec (POST upgrade) for the admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_exec_needs_create_in_strict_mode() {
    let s = Standins::start().await.unwrap();
    let strict = s
        .front_proxy("ws-strict", &ProxyOptions::version("1.33"))
        .await
        .unwrap();
    let exact = s
        .front_proxy("ws-exact", &ProxyOptions::version("1.33").strict(false))
        .await
        .unwrap();
    let url = format!("{}{EXEC}", strict.url());

    // The admin's certificate: the upgrade completes and the kubelet echoes through Envoy.
    let mark = s.apiserver.records().len();
    let client = s.client(Some(CERT_ADMIN)).unwrap();
    let (mut ws, resp) = client
        .websocket(&url, &[("sec-websocket-protocol", "v5.channel.k8s.io")])
        .await
        .unwrap();
    assert_eq!(resp.status, 101);
    ws.send(Message::Text("hello from exec".into()))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::Text("hello from exec".into()));
    let _ = ws.close(None).await;
    let sars = sars_since(&s, mark);
    assert_eq!(sars.len(), 1);
    assert_eq!(
        (sars[0].0.as_str(), sars[0].1.as_str(), sars[0].2),
        ("proxy", "create", true)
    );

    // A token in the WebSocket subprotocol (as browsers send it) for a `create` holder.
    let client = s.client(None).unwrap();
    let proto = format!("{}, v5.channel.k8s.io", ws_protocol_token(OPS_TOKEN));
    let (mut ws, resp) = client
        .websocket(&url, &[("sec-websocket-protocol", proto.as_str())])
        .await
        .unwrap();
    assert_eq!(resp.status, 101);
    assert_eq!(
        resp.header("sec-websocket-protocol"),
        Some("v5.channel.k8s.io")
    );
    ws.send(Message::Binary(vec![0u8, 1, 2].into()))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::Binary(vec![0u8, 1, 2].into()));
    let _ = ws.close(None).await;

    // `get nodes/proxy` (debugger): refused with verb create in strict mode, exact body.
    let mark = s.apiserver.records().len();
    let err = client
        .websocket(&url, &[("authorization", "Bearer debugger-token")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    let r = send(
        &s,
        &strict,
        Who::Token(DEBUGGER_TOKEN),
        "GET",
        EXEC,
        WS_HEADERS,
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        body(&r),
        "Forbidden (user=debugger, verb=create, resource=nodes, subresource(s)=[proxy])\n"
    );
    let sars = sars_since(&s, mark);
    assert_eq!(sars.len(), 1, "the second refusal comes from the cache");
    assert_eq!((sars[0].1.as_str(), sars[0].2), ("create", false));
    // The same debugger may still read through nodes/proxy with a plain GET.
    let r = get(&s, &strict, Who::Token(DEBUGGER_TOKEN), "/pods").await;
    assert_eq!(r.status, 200, "{}", body(&r));

    // strictUpgradeVerb false: kubelet-exact, the WebSocket exec is a `get` and goes through.
    let client = s.client(None).unwrap();
    let (mut ws, resp) = client
        .websocket(
            &format!("{}{EXEC}", exact.url()),
            &[("authorization", "Bearer debugger-token")],
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 101);
    ws.send(Message::Text("id".into())).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .is_some());
    let _ = ws.close(None).await;

    // SPDY (POST + Upgrade) is `create` in both modes: the admin gets 101, the debugger 403.
    let spdy = [
        ("connection", "Upgrade"),
        ("upgrade", "SPDY/3.1"),
        ("x-stream-protocol-version", "v4.channel.k8s.io"),
    ];
    let r = send(&s, &strict, Who::Cert(CERT_ADMIN), "POST", EXEC, &spdy).await;
    assert_eq!(r.status, 101, "{}", body(&r));
    assert_eq!(
        r.header("x-stream-protocol-version"),
        Some("v4.channel.k8s.io")
    );
    let r = send(&s, &exact, Who::Token(DEBUGGER_TOKEN), "POST", EXEC, &spdy).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        body(&r),
        "Forbidden (user=debugger, verb=create, resource=nodes, subresource(s)=[proxy])\n"
    );
    exact.stop().await;
    strict.stop().await;
    s.shutdown().await;
}

/// The API server fails (500 on every review): a new token is 401, a new authorization check is
/// 500 with the kubelet's body, cached answers still serve; when it recovers, so do they.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_outage_and_recovery() {
    let s = Standins::start().await.unwrap();
    let envoy = s
        .front_proxy("outage", &ProxyOptions::version("1.36"))
        .await
        .unwrap();
    let r = get(&s, &envoy, Who::Token(SCRAPER_TOKEN), "/metrics").await;
    assert_eq!(r.status, 200, "{}", body(&r));

    s.apiserver.set_fault(Fault::always(FaultKind::Error500));
    let mark = s.apiserver.records().len();
    let r = get(&s, &envoy, Who::Token(PROMETHEUS_TOKEN), "/metrics").await;
    assert_eq!((r.status, body(&r).as_str()), (401, "Unauthorized"));
    let failed: Vec<_> = s.apiserver.records()[mark..]
        .iter()
        .filter(|r| r.kind == "TokenReview")
        .map(|r| (r.status, r.fault.clone()))
        .collect();
    assert_eq!(
        failed.len(),
        5,
        "the TokenReview is tried 5 times: {failed:?}"
    );
    assert!(failed
        .iter()
        .all(|(st, f)| *st == 500 && f.as_deref() == Some("error500")));

    let r = get(&s, &envoy, Who::Token(SCRAPER_TOKEN), "/stats/summary").await;
    assert_eq!(r.status, 500);
    assert_eq!(
        body(&r),
        "Authorization error (user=system:serviceaccount:monitoring:metrics-scraper, verb=get, resource=nodes, subresource=stats)"
    );
    // Cached token and cached decision: served through the outage.
    let r = get(&s, &envoy, Who::Token(SCRAPER_TOKEN), "/metrics").await;
    assert_eq!(r.status, 200, "{}", body(&r));
    // Five attempts per callout (the kubelet's backoff), each failure counted.
    tokio::time::sleep(METRICS_FLUSH).await;
    let prom = envoy.prometheus().await.unwrap();
    for kind in ["tokenreview", "subjectaccessreview"] {
        let kind = format!(r#"kind="{kind}""#);
        let total = "kubelet_authz_callouts_total";
        assert_eq!(
            prometheus_sum(&prom, total, &[&kind, r#"result="status_5xx""#]),
            5,
            "{kind}: {prom}"
        );
        assert_eq!(
            prometheus_sum(&prom, "kubelet_authz_callout_retries_total", &[&kind]),
            4,
            "{kind}"
        );
    }
    assert_eq!(
        prometheus_value(
            &prom,
            r#"kubelet_authz_decisions_total{outcome="authorizer_error",subresource="stats"}"#
        ),
        Some(1)
    );

    // Recovery: errors were not cached.
    s.apiserver.clear_fault();
    let r = get(&s, &envoy, Who::Token(PROMETHEUS_TOKEN), "/metrics").await;
    assert_eq!(r.status, 200, "{}", body(&r));
    let r = get(&s, &envoy, Who::Token(SCRAPER_TOKEN), "/stats/summary").await;
    assert_eq!(r.status, 200, "{}", body(&r));
    assert_forwarded(&r, "/stats/summary");
    envoy.stop().await;
    s.shutdown().await;
}

/// The filter's labelled counters and its callout-latency histogram in Envoy's Prometheus output
/// (the names and labels operators scrape, through the bootstrap's tag extraction), and one
/// audit.k8s.io/v1 Event per decision in Envoy's log (never the token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_counters_and_audit_events() {
    let s = Standins::start().await.unwrap();
    let envoy = s
        .front_proxy("observe", &ProxyOptions::version("1.36"))
        .await
        .unwrap();
    let mark = envoy.log_len();
    let cases = [
        (Who::Token(PODLISTER_TOKEN), "/pods", 200),
        (Who::Token(PODLISTER_TOKEN), "/pods", 200),
        (Who::Token(SCRAPER_TOKEN), "/configz", 403),
        (Who::Cert(CERT_ALICE), "/healthz", 200),
        (Who::Anonymous, "/metrics", 401),
        (Who::Token(SCRAPER_TOKEN), "/metrics", 200),
        (Who::Token(SCRAPER_TOKEN), "/metrics", 200),
        (Who::Token(SCRAPER_TOKEN), "/metrics", 200),
    ];
    for (who, path, status) in cases {
        let r = get(&s, &envoy, who, path).await;
        assert_eq!(r.status, status, "{who:?} {path}: {}", body(&r));
    }
    // Counters reach Envoy on the filter's 1 s tick; histograms at Envoy's stats flush (5 s).
    const ALLOWED_METRICS: &str =
        r#"kubelet_authz_decisions_total{outcome="allowed",subresource="metrics"}"#;
    const TR_LATENCY: &str =
        "kubelet_authz_callout_duration_milliseconds_count{kind=\"tokenreview\"}";
    let prom = envoy
        .wait_prometheus(Duration::from_secs(15), |t| {
            prometheus_value(t, ALLOWED_METRICS) == Some(3)
                && prometheus_value(t, TR_LATENCY).is_some_and(|n| n > 0)
        })
        .await
        .unwrap();
    let lines: Vec<&str> = prom.lines().collect();
    for line in [
        r#"kubelet_authz_decisions_total{outcome="allowed",subresource="metrics"} 3"#,
        r#"kubelet_authz_decisions_total{outcome="allowed",subresource="pods"} 2"#,
        r#"kubelet_authz_decisions_total{outcome="allowed",subresource="healthz"} 1"#,
        r#"kubelet_authz_decisions_total{outcome="forbidden",subresource="proxy"} 1"#,
        r#"kubelet_authz_decisions_total{outcome="unauthenticated",subresource="none"} 1"#,
        r#"kubelet_authz_authentications_total{method="bearer"} 6"#,
        r#"kubelet_authz_authentications_total{method="x509"} 1"#,
        r#"kubelet_authz_authentications_total{method="none"} 1"#,
        r#"kubelet_authz_callouts_total{kind="tokenreview",result="ok"} 2"#,
        r#"kubelet_authz_callouts_total{kind="subjectaccessreview",result="ok"} 5"#,
        r#"kubelet_authz_cache_hits_total{cache="token"} 4"#,
        r#"kubelet_authz_cache_hits_total{cache="sar"} 3"#,
        r#"kubelet_authz_cache_misses_total{cache="token"} 2"#,
        r#"kubelet_authz_cache_misses_total{cache="sar"} 5"#,
        "# TYPE kubelet_authz_decisions_total counter",
        "# TYPE kubelet_authz_callout_duration_milliseconds histogram",
    ] {
        assert!(lines.contains(&line), "{line} missing:\n{prom}");
    }
    // The histogram: Envoy's default buckets (milliseconds), `_sum` and `_count`, by kind.
    for kind in ["tokenreview", "subjectaccessreview"] {
        let count =
            format!(r#"kubelet_authz_callout_duration_milliseconds_count{{kind="{kind}"}}"#);
        let inf = format!(
            r#"kubelet_authz_callout_duration_milliseconds_bucket{{kind="{kind}",le="+Inf"}}"#
        );
        let n = prometheus_value(&prom, &count).unwrap_or_else(|| panic!("{count}:\n{prom}"));
        assert_eq!(prometheus_value(&prom, &inf), Some(n), "{inf}");
        let le_1s = format!(
            r#"kubelet_authz_callout_duration_milliseconds_bucket{{kind="{kind}",le="1000"}}"#
        );
        assert_eq!(
            prometheus_value(&prom, &le_1s),
            Some(n),
            "loopback reviews take < 1 s"
        );
        assert!(
            prom.contains(&format!(
                r#"kubelet_authz_callout_duration_milliseconds_sum{{kind="{kind}"}}"#
            )),
            "{prom}"
        );
    }
    // No encoded name left (every label extracted), no `envoy_` or `wasmcustom` prefix.
    let filter_lines = lines.iter().filter(|l| l.starts_with("kubelet_authz_"));
    for l in filter_lines {
        let family = l.split(['{', ' ']).next().unwrap_or_default();
        assert!(
            family.ends_with("_total")
                || family.starts_with("kubelet_authz_callout_duration_milliseconds_"),
            "{l}"
        );
    }
    assert!(
        !prom.contains("=.=") && !prom.contains("wasmcustom"),
        "{prom}"
    );
    assert!(!prom.contains("envoy_kubelet_authz_"), "{prom}");

    // The built-in audit policy writes every decision but the allowed scrapes of /healthz and
    // /metrics (allowed `get` of `healthz`, `metrics` and `stats`).
    let cases: Vec<_> = cases
        .into_iter()
        .filter(|(_, path, status)| !(matches!(*path, "/healthz" | "/metrics") && *status == 200))
        .collect();
    let events = envoy
        .wait_audit_since(mark, cases.len(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(events.len(), cases.len(), "{events:#?}");
    for line in envoy.log_lines() {
        assert!(
            !line.contains(PODLISTER_TOKEN) && !line.contains(SCRAPER_TOKEN),
            "{line}"
        );
    }
    for (ev, (who, path, status)) in events.iter().zip(cases) {
        assert_eq!(ev["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(ev["kind"], "Event");
        assert_eq!(ev["level"], "Metadata");
        assert!(!ev["auditID"].as_str().unwrap().is_empty());
        assert_eq!(ev["requestURI"], path);
        assert_eq!(ev["verb"], "get");
        assert_eq!(ev["sourceIPs"], serde_json::json!(["127.0.0.1"]));
        assert_eq!(ev["objectRef"]["resource"], "nodes");
        assert_eq!(ev["objectRef"]["name"], NODE_NAME);
        assert!(ev["requestReceivedTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z'));
        let decision = &ev["annotations"]["authorization.k8s.io/decision"];
        assert!(ev["annotations"]["authorization.k8s.io/reason"].is_string());
        match status {
            200 => {
                assert_eq!(decision, "allow");
                assert_eq!(ev["user"]["username"], who.user());
            }
            403 => {
                assert_eq!(decision, "forbid");
                assert_eq!(ev["responseStatus"]["code"], 403);
                assert_eq!(ev["user"]["username"], who.user());
                assert_eq!(ev["objectRef"]["subresource"], "proxy");
            }
            _ => {
                assert_eq!(decision, "forbid");
                assert_eq!(ev["responseStatus"]["code"], 401);
            }
        }
    }
    assert_eq!(events[0]["objectRef"]["subresource"], "pods");

    // An x509 user's groups (every O of the certificate) in a written event: alice's `/pods`.
    let mark = envoy.log_len();
    let r = get(&s, &envoy, Who::Cert(CERT_ALICE), "/pods").await;
    assert_eq!(r.status, 200, "{}", body(&r));
    let events = envoy
        .wait_audit_since(mark, 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["user"]["username"], Who::Cert(CERT_ALICE).user());
    assert_eq!(
        events[0]["user"]["groups"],
        serde_json::json!(["observability", "dev", "system:authenticated"])
    );
    envoy.stop().await;
    s.shutdown().await;
}

/// Envoy normalizes the path before the filter sees it, so the path authorized is the path the
/// kubelet receives: dot segments and double slashes are resolved first, an encoded slash is
/// refused, and a plaintext connection never reaches the filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalized_before_authorization() {
    let s = Standins::start().await.unwrap();
    let envoy = s
        .front_proxy("paths", &ProxyOptions::version("1.36"))
        .await
        .unwrap();
    let scraper = Who::Token(SCRAPER_TOKEN);
    // `stats` is allowed, `pods` is not: a dot segment cannot borrow the allowed prefix.
    for path in ["/stats/../pods", "/stats/%2e%2e/pods", "/stats/./../pods"] {
        let r = get(&s, &envoy, scraper, path).await;
        assert_eq!(r.status, 403, "{path}: {}", body(&r));
        assert_eq!(
            body(&r),
            forbidden(36, users::SCRAPER, "get", &["pods", "proxy"]),
            "{path}"
        );
    }
    // Merged slashes: authorized and forwarded as `/metrics`.
    let r = get(&s, &envoy, scraper, "//metrics").await;
    assert_eq!(r.status, 200, "{}", body(&r));
    assert_forwarded(&r, "/metrics");
    // An encoded slash is refused before anything is forwarded.
    let before = s.kubelet.records().len();
    for path in ["/stats%2Fsummary", "/metrics%2f..%2fpods"] {
        let r = get(&s, &envoy, scraper, path).await;
        assert_eq!(r.status, 400, "{path}: {}", body(&r));
    }
    assert_eq!(
        s.kubelet.records().len(),
        before,
        "nothing reached the kubelet"
    );

    // Plaintext HTTP to the TLS listener: no HTTP answer at all.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(envoy.listener())
        .await
        .unwrap();
    tcp.write_all(b"GET /pods HTTP/1.1\r\nHost: x\r\nx-forwarded-client-cert: Hash=00\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"),
        "plaintext got an answer"
    );
    assert_eq!(s.kubelet.records().len(), before);
    envoy.stop().await;
    s.shutdown().await;
}
