//! The case corpus (`authz/tests/cases/*.yaml`, loaded by `kubelet-authz-test-support`) end to
//! end: one real Envoy with the release filter per kubelet version the corpus uses, in front of
//! the stand-in kubelet, the stand-in API server answering from `tests/fixtures/tokens.csv` and
//! the corpus's RBAC files. Token identities send their bearer token; certificate identities use
//! the stand-ins' client certificate with that subject.
//!
//! For each case: the status; the exact body of the filter's answer and what reached the kubelet
//! (neither for `HEAD`: no body on the wire); the SubjectAccessReviews the API server received -
//! the case's checks, less those the filter answered from its cache (an earlier case of the same
//! identity made them) - each for the identity's user, uid and groups (plus
//! `system:authenticated`) on `nodes/<subresource>` of the node. Per Envoy: one TokenReview per
//! token, every review from the proxy's own certificate, and anonymous refused with 401 before
//! any review.
//!
//! Every case is sent as a raw HTTP/1.1 request line over TLS (`kubelet_authz_e2e::raw`), so that
//! the path-confusion targets (control bytes, absolute- and asterisk-form, fragments, lower-case
//! methods) reach Envoy byte for byte. Where Envoy normalises or refuses a request itself, the
//! case's `envoy:` answer is what must be seen: Envoy's own refusal with no review and nothing
//! forwarded, or the filter's answer for the path Envoy hands over.
//!
//! Needs Envoy (`ENVOY_BIN`) and the release filter (`KUBELET_AUTHZ_FILTER_WASM`); fails without.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kubelet_authz_e2e::raw::{send, tls_config};
use kubelet_authz_e2e::stack::{users, ProxyOptions, Standins, CERT_ADMIN, CERT_ALICE, CERT_CAROL};
use kubelet_authz_standins::apiserver::ReviewRecord;
use kubelet_authz_test_support::corpus::{self, Case, EnvoyAnswer};
use serde_json::json;

/// The stand-ins' client certificate with the identity's subject.
fn client_cert(case: &Case) -> Option<&'static str> {
    let x = case.identity.x509.as_ref()?;
    match (x.cn.as_str(), x.o.as_slice()) {
        (users::ALICE, [a, b]) if a == "observability" && b == "dev" && x.uid.is_none() => {
            Some(CERT_ALICE)
        }
        (users::ADMIN, []) if x.uid.is_none() => Some(CERT_ADMIN),
        (users::CAROL, [a])
            if a == "observability" && x.uid.as_deref() == Some(users::CAROL_UID) =>
        {
            Some(CERT_CAROL)
        }
        _ => panic!(
            "{}: no stand-in client certificate for {x:?}: add one in tests/src/stack.rs",
            case.name
        ),
    }
}

/// What the client must see through Envoy: the case's `envoy:` answer, or the filter's own.
fn through_envoy(case: &Case) -> EnvoyAnswer {
    case.envoy.clone().unwrap_or_else(|| EnvoyAnswer {
        status: case.status,
        body: case.body.clone(),
        checks: case.checks.clone(),
        forwarded_as: None,
    })
}

/// The raw request head: the request line byte for byte, `Host`, the case's headers and the
/// identity's bearer token (its bytes as sent).
fn head(case: &Case) -> Vec<u8> {
    let mut h = format!("{} {} HTTP/1.1\r\nHost: worker-1", case.method, case.target);
    for (k, v) in &case.headers {
        h.push_str(&format!("\r\n{k}: {v}"));
    }
    let mut h = h.into_bytes();
    if let Some(bearer) = case.identity.bearer() {
        h.extend_from_slice(b"\r\nAuthorization: ");
        h.extend_from_slice(&bearer);
    }
    h
}

/// A recorded SubjectAccessReview as (verb, subresource), after checking who and what it is for.
fn sar_check(r: &ReviewRecord, case: &Case, ctx: &str) -> (String, String) {
    let spec = &r.request["spec"];
    let ra = &spec["resourceAttributes"];
    assert_eq!(spec["user"], case.identity.user_name(), "{ctx}");
    assert_eq!(
        spec["uid"].as_str().unwrap_or(""),
        case.identity.uid_for(case.minor()),
        "{ctx}"
    );
    let mut groups = case.identity.group_names().to_vec();
    groups.push("system:authenticated".into());
    assert_eq!(spec["groups"], json!(groups), "{ctx}");
    assert_eq!(ra["resource"], "nodes", "{ctx}");
    assert_eq!(ra["group"].as_str().unwrap_or(""), "", "{ctx}");
    assert_eq!(ra["name"], case.node_name.as_str(), "{ctx}");
    (
        ra["verb"].as_str().unwrap_or("").to_string(),
        ra["subresource"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_through_envoy() {
    let cases = corpus::load().unwrap();
    let mut versions: Vec<&str> = cases.iter().map(|c| c.kubelet.as_str()).collect();
    versions.sort();
    versions.dedup();
    let s = Standins::start().await.unwrap();
    let mut ran = 0;
    for version in versions {
        let envoy = s
            .front_proxy(
                &format!("cases-{}", version.replace('.', "-")),
                &ProxyOptions::version(version),
            )
            .await
            .unwrap();
        let start = s.apiserver.records().len();
        // (identity, verb, subresource) already reviewed through this Envoy: its cache answers.
        let mut seen: BTreeSet<(String, String, String)> = BTreeSet::new();
        let mut tokens: BTreeSet<&str> = BTreeSet::new();
        let mut configs: BTreeMap<Option<&str>, Arc<rustls::ClientConfig>> = BTreeMap::new();
        for case in cases.iter().filter(|c| c.kubelet == version) {
            let ctx = format!("{}: {}", case.file, case.name);
            let want = through_envoy(case);
            let cert = client_cert(case);
            let config = match configs.get(&cert) {
                Some(c) => Arc::clone(c),
                None => {
                    let c = tls_config(&s, cert).unwrap();
                    configs.insert(cert, Arc::clone(&c));
                    c
                }
            };
            let mark = s.apiserver.records().len();
            s.kubelet.clear_records();
            let r = send(&config, envoy.listener(), &head(case))
                .await
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
            let forwarded = s.kubelet.records();
            assert_eq!(r.status, want.status, "{ctx}: {r:?}");
            if want.status == 200 {
                let target = want.forwarded_as.as_deref().unwrap_or(&case.target);
                assert_eq!(forwarded.len(), 1, "{ctx}: forwarded {forwarded:?}");
                let echo = &forwarded[0];
                assert_eq!(echo["path"], target, "{ctx}: {echo}");
                assert_eq!(echo["method"], case.method.as_str(), "{ctx}: {echo}");
                assert_eq!(
                    echo["clientCert"]["commonName"],
                    users::PROXY,
                    "{ctx}: {echo}"
                );
                assert!(
                    echo["headers"].get("authorization").is_none(),
                    "{ctx}: {echo}"
                );
            } else {
                assert!(forwarded.is_empty(), "{ctx}: forwarded {forwarded:?}");
                match &want.body {
                    // No body on the wire for HEAD.
                    Some(_) if case.method == "HEAD" => assert_eq!(r.body, "", "{ctx}"),
                    Some(body) => assert_eq!(&r.body, body, "{ctx}"),
                    // Envoy's own answer: not the filter's.
                    None => assert!(
                        !r.body.starts_with("Bad Request: non-canonical path")
                            && !r.body.starts_with("Forbidden"),
                        "{ctx}: Envoy answers itself: {r:?}"
                    ),
                }
            }
            let key =
                |(v, sub): &(String, String)| (case.identity_name.clone(), v.clone(), sub.clone());
            let expected: Vec<(String, String)> = want
                .checks
                .iter()
                .filter(|c| !seen.contains(&key(c)))
                .cloned()
                .collect();
            let records = s.apiserver.records_since(mark);
            let got: Vec<(String, String)> = records
                .iter()
                .filter(|r| r.kind == "SubjectAccessReview")
                .map(|r| sar_check(r, case, &ctx))
                .collect();
            assert_eq!(got, expected, "{ctx}: SubjectAccessReviews");
            // Authentication happens for everything that is not refused before it.
            let refused_first = want.status == 400 && want.checks.is_empty();
            if refused_first {
                assert!(
                    records.is_empty(),
                    "{ctx}: reviews before the 400: {records:?}"
                );
            }
            seen.extend(want.checks.iter().map(key));
            if !refused_first {
                tokens.extend(case.identity.token.as_deref());
            }
            ran += 1;
        }
        // One TokenReview per token (successes are cached), each with the token as sent, and
        // every review from the proxy's own certificate.
        let mut reviewed = s.apiserver.token_reviews_since(start);
        reviewed.sort();
        assert_eq!(
            reviewed,
            tokens.into_iter().collect::<Vec<_>>(),
            "{version}: TokenReviews"
        );
        for rec in s.apiserver.records_since(start) {
            assert_eq!(
                rec.caller,
                users::PROXY,
                "{version}: reviews come from the proxy"
            );
        }
        // Anonymous is off: 401 without any review.
        let mark = s.apiserver.records().len();
        let r = s
            .client(None)
            .unwrap()
            .request("GET", &format!("{}/healthz", envoy.url()), &[], "")
            .await
            .unwrap();
        assert_eq!(
            (r.status, String::from_utf8_lossy(&r.body).as_ref()),
            (401, "Unauthorized"),
            "{version}: anonymous"
        );
        assert_eq!(s.apiserver.records().len(), mark, "{version}: anonymous");
        envoy.stop().await;
    }
    s.shutdown().await;
    eprintln!("corpus: {ran} cases");
    assert_eq!(ran, cases.len());
    assert!(ran > 0);
}
