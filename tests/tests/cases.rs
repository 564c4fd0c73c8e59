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
//! Needs Envoy (`ENVOY_BIN`) and the release filter (`KUBELET_AUTHZ_FILTER_WASM`); fails without.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;

use kubelet_authz_e2e::stack::{users, ProxyOptions, Standins, CERT_ADMIN, CERT_ALICE};
use kubelet_authz_standins::apiserver::ReviewRecord;
use kubelet_authz_test_support::corpus::{self, Case};
use serde_json::json;

/// The stand-ins' client certificate with the identity's subject.
fn client_cert(case: &Case) -> Option<&'static str> {
    let x = case.identity.x509.as_ref()?;
    match (x.cn.as_str(), x.o.as_slice()) {
        (users::ALICE, [a, b]) if a == "observability" && b == "dev" => Some(CERT_ALICE),
        (users::ADMIN, []) => Some(CERT_ADMIN),
        _ => panic!(
            "{}: no stand-in client certificate for {x:?}: add one in tests/src/stack.rs",
            case.name
        ),
    }
}

/// A recorded SubjectAccessReview as (verb, subresource), after checking who and what it is for.
fn sar_check(r: &ReviewRecord, case: &Case, ctx: &str) -> (String, String) {
    let spec = &r.request["spec"];
    let ra = &spec["resourceAttributes"];
    assert_eq!(spec["user"], case.identity.user_name(), "{ctx}");
    assert_eq!(
        spec["uid"].as_str().unwrap_or(""),
        case.identity.uid.as_deref().unwrap_or(""),
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
        for case in cases.iter().filter(|c| c.kubelet == version) {
            let ctx = format!("{}: {}", case.file, case.name);
            let bearer = case.identity.token.as_ref().map(|t| format!("Bearer {t}"));
            let mut headers: Vec<(&str, &str)> = case
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if let Some(b) = &bearer {
                headers.push(("authorization", b));
            }
            let mark = s.apiserver.records().len();
            let r = s
                .client(client_cert(case))
                .unwrap()
                .request(
                    &case.method,
                    &format!("{}{}", envoy.url(), case.target),
                    &headers,
                    "",
                )
                .await
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
            let body = String::from_utf8_lossy(&r.body).into_owned();
            assert_eq!(r.status, case.status, "{ctx}: {body}");
            if case.method == "HEAD" {
                // No body on the wire either way.
            } else if case.status == 200 {
                let echo = r.json();
                assert_eq!(echo["path"], case.target.as_str(), "{ctx}: {echo}");
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
                assert_eq!(Some(&body), case.body.as_ref(), "{ctx}");
            }
            let key =
                |(v, sub): &(String, String)| (case.identity_name.clone(), v.clone(), sub.clone());
            let want: Vec<(String, String)> = case
                .checks
                .iter()
                .filter(|c| !seen.contains(&key(c)))
                .cloned()
                .collect();
            let got: Vec<(String, String)> = s
                .apiserver
                .records_since(mark)
                .iter()
                .filter(|r| r.kind == "SubjectAccessReview")
                .map(|r| sar_check(r, case, &ctx))
                .collect();
            assert_eq!(got, want, "{ctx}: SubjectAccessReviews");
            seen.extend(case.checks.iter().map(key));
            tokens.extend(case.identity.token.as_deref());
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
