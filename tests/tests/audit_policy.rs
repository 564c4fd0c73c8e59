//! The audit policy end to end through a real Envoy 1.40 with the release filter (issue 13): the
//! built-in policy writes no line for an allowed metrics scrape (cached or not) and one for a
//! denial; a user policy that drops a decision writes nothing for it; a bad `audit.policy` makes
//! Envoy refuse to start, with the field named in its log.
//!
//! Needs Envoy (`ENVOY_BIN`) and the release filter (`KUBELET_AUTHZ_FILTER_WASM`); fails without.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use kubelet_authz_e2e::envoy::Envoy;
use kubelet_authz_e2e::stack::{
    users, ProxyOptions, Standins, NOBODY_TOKEN, PODLISTER_TOKEN, PROMETHEUS_TOKEN,
};
use kubelet_authz_standins::client::ClientResponse;

/// The front proxy (kubelet 1.36) with the filter configuration's `audit` member set to `audit`
/// (a JSON object on one line).
async fn front_proxy(s: &Standins, name: &str, audit: &str) -> anyhow::Result<Envoy> {
    s.front_proxy(name, &ProxyOptions::version("1.36").audit(audit))
        .await
}

async fn get(s: &Standins, envoy: &Envoy, token: &str, path: &str) -> ClientResponse {
    let bearer = format!("Bearer {token}");
    s.client(None)
        .unwrap()
        .request(
            "GET",
            &format!("{}{path}", envoy.url()),
            &[("authorization", &bearer)],
            "",
        )
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Send each (token, path, status) in order; answer the audit events logged meanwhile (waiting
/// for `want` of them; none is missed: each request finishes before the next is sent, and its
/// event is logged before its response).
async fn audited(
    s: &Standins,
    envoy: &Envoy,
    requests: &[(&str, &str, u16)],
    want: usize,
) -> Vec<serde_json::Value> {
    let mark = envoy.log_len();
    for (token, path, status) in requests {
        let r = get(s, envoy, token, path).await;
        assert_eq!(
            r.status,
            *status,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // Past the last request: a denial that is always written, as a fence.
    let fence = get(s, envoy, NOBODY_TOKEN, "/configz").await;
    assert_eq!(fence.status, 403);
    let events = envoy
        .wait_audit_since(mark, want + 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(events.len(), want + 1, "{events:#?}");
    let (last, events) = events.split_last().unwrap();
    assert_eq!(last["requestURI"], "/configz");
    assert_eq!(last["user"]["username"], users::NOBODY);
    events.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_drops_allowed_scrapes_and_writes_denials() {
    let s = Standins::start().await.unwrap();
    let envoy = front_proxy(&s, "audit-default", r#"{ "enabled": true }"#)
        .await
        .unwrap();
    // Allowed scrapes, the second from the caches: no line. A denial of the same path: one.
    let events = audited(
        &s,
        &envoy,
        &[
            (PROMETHEUS_TOKEN, "/metrics", 200),
            (PROMETHEUS_TOKEN, "/metrics", 200),
            (PROMETHEUS_TOKEN, "/stats/summary", 200),
            (PODLISTER_TOKEN, "/metrics", 403),
            (PODLISTER_TOKEN, "/pods", 200),
        ],
        2,
    )
    .await;
    assert_eq!(events[0]["requestURI"], "/metrics");
    assert_eq!(events[0]["user"]["username"], users::PODLISTER);
    assert_eq!(events[0]["responseStatus"]["code"], 403);
    assert_eq!(
        events[0]["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
    assert_eq!(events[1]["requestURI"], "/pods");
    assert_eq!(events[1]["objectRef"]["subresource"], "pods");
    envoy.stop().await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_drops_a_decision_writes_nothing_for_it() {
    let s = Standins::start().await.unwrap();
    let policy = format!(
        r#"{{ "policy": {{ "rules": [ {{ "level": "None", "users": ["{}"], "outcomes": ["forbidden"] }}, {{ "level": "Metadata" }} ] }} }}"#,
        users::PODLISTER
    );
    let envoy = front_proxy(&s, "audit-user-policy", &policy).await.unwrap();
    let events = audited(
        &s,
        &envoy,
        &[
            (PODLISTER_TOKEN, "/metrics", 403),
            (PROMETHEUS_TOKEN, "/metrics", 200),
        ],
        1,
    )
    .await;
    assert_eq!(events[0]["user"]["username"], users::PROMETHEUS);
    assert_eq!(events[0]["objectRef"]["subresource"], "metrics");
    envoy.stop().await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_audit_policy_stops_envoy_naming_the_field() {
    let s = Standins::start().await.unwrap();
    let cases = [
        (
            r#"{ "policy": { "rules": [ { "level": "None" }, { "level": "Request" } ] } }"#,
            r#"invalid configuration: audit.policy.rules[1].level: unknown level "Request""#,
        ),
        (
            r#"{ "policy": { "rules": [ { "level": "None", "outcomes": ["denied"] } ] } }"#,
            r#"invalid configuration: audit.policy.rules[0].outcomes[0]: unknown outcome "denied""#,
        ),
    ];
    for (i, (audit, want)) in cases.into_iter().enumerate() {
        let err = front_proxy(&s, &format!("audit-bad-{i}"), audit)
            .await
            .err()
            .unwrap_or_else(|| panic!("envoy started with audit {audit}"));
        let text = format!("{err:#}");
        assert!(text.contains(want), "{want} not in:\n{text}");
    }
    s.shutdown().await;
}
