//! Floods through one real Envoy (`--concurrency 1`: one wasm VM, one engine) with small limits
//! (`tokenCacheSize: 256`):
//!
//! - two waves of 2,000 distinct random unknown bearer tokens, 50 requests in flight at a time:
//!   every one is answered 401 `Unauthorized`, nothing reaches the kubelet, the API server sees
//!   exactly one TokenReview per token; Envoy's resident memory after the second wave is within a
//!   stated bound of the first (the token cache is capped, so a second wave adds no state); a
//!   token from the start of the first wave is reviewed again (evicted, least recently used)
//!   while the last one of the second wave is still cached;
//! - 400 concurrent identical requests with a valid token never seen before: all get the same
//!   answer (200, forwarded), and the API server sees one TokenReview and one SubjectAccessReview
//!   (DESIGN.md "Callouts": one callout in flight per token and per attribute set; the others
//!   wait for it or read its cached answer);
//! - afterwards Envoy's admin answers and a normal request is served.
//!
//! `KUBELET_AUTHZ_FLOOD_SCALE=25` runs it at the issue's scale by hand (two waves of 50,000
//! tokens, 10,000 identical requests at once; several minutes): then the identical requests may
//! also meet the documented overflow (more than `maxWaiters` waiting on one callout: 401 while
//! authenticating, 500 while authorizing), and still exactly one review of each kind is sent.
//!
//! Needs Envoy (`ENVOY_BIN`) and the release filter (`KUBELET_AUTHZ_FILTER_WASM`); fails without.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher as _, Hasher as _};
use std::time::Instant;

use futures_util::StreamExt as _;
use kubelet_authz_e2e::envoy::{admin_get, Envoy};
use kubelet_authz_e2e::stack::{ProxyOptions, Standins, PODLISTER_TOKEN, PROMETHEUS_TOKEN};
use kubelet_authz_standins::client::Client;

/// Tokens per wave at scale 1.
const WAVE_1X: usize = 2_000;
/// Client requests in flight at a time during a wave.
const IN_FLIGHT: usize = 50;
/// Identical requests sent at once at scale 1.
const IDENTICAL_1X: usize = 400;

/// `KUBELET_AUTHZ_FLOOD_SCALE` (default 1): a multiplier of the wave size and of the identical
/// requests.
fn scale() -> usize {
    std::env::var("KUBELET_AUTHZ_FLOOD_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1)
}
/// The token cache capacity configured.
const TOKEN_CACHE: usize = 256;

/// Bound on Envoy's RSS growth from the end of wave 1 to the end of wave 2, in KiB. Measured here
/// (2 cores, Envoy 1.40 with V8, three runs): Envoy starts at ~98 MiB, wave 1 adds 1.3-1.7 MiB
/// (V8 and wasm heap, connection buffers, the 256-entry cache filling), wave 2 adds 12-184 KiB.
/// 1 MiB is over 5x the largest wave-2 growth seen, and catches anything retained per request
/// (a request, its headers or a waiter kept after the answer: 2,000 of them are megabytes).
/// It does not by itself prove the cache cap: the same Envoy with `tokenCacheSize: 100000`
/// (every token kept) grew only 588 KiB over wave 2, which is why the cap is asserted directly
/// (the first token of wave 1 is evicted and reviewed again).
const RSS_GROWTH_BOUND_KIB: u64 = 1024;

/// `n` random tokens (unknown to the API server), distinct, with a wave prefix for readability.
fn random_tokens(wave: &str, n: usize) -> Vec<String> {
    let state = std::collections::hash_map::RandomState::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut h = state.build_hasher();
        h.write_usize(i);
        let a = h.finish();
        h.write_u64(a);
        out.push(format!("{wave}-{i}-{a:016x}{:016x}", h.finish()));
    }
    out
}

/// Send `GET path` with each token, `IN_FLIGHT` at a time: (status, body) counts.
async fn flood(
    client: &Client,
    envoy: &Envoy,
    path: &str,
    tokens: &[String],
) -> BTreeMap<(u16, String), usize> {
    let url = format!("{}{path}", envoy.url());
    let answers: Vec<(u16, String)> = futures_util::stream::iter(tokens.iter().cloned())
        .map(|t| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let auth = format!("Bearer {t}");
                match client.get(&url, &[("authorization", auth.as_str())]).await {
                    Ok(r) => (r.status, String::from_utf8_lossy(&r.body).into_owned()),
                    Err(e) => (0, e.to_string()),
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let mut counts = BTreeMap::new();
    for a in answers {
        *counts.entry(a).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_stay_bounded_and_deduplicated() {
    let started = Instant::now();
    let (wave, identical) = (WAVE_1X * scale(), IDENTICAL_1X * scale());
    let s = Standins::start().await.unwrap();
    let envoy = s
        .front_proxy(
            "hardening-flood",
            &ProxyOptions::version("1.36")
                .limits(&format!(r#"{{"tokenCacheSize":{TOKEN_CACHE}}}"#)),
        )
        .await
        .unwrap();
    let client = s.client(None).unwrap();
    let rss_start = envoy.rss_kib().unwrap();
    let unauthorized = BTreeMap::from([((401, "Unauthorized".to_string()), wave)]);

    // (a) Wave 1: 2,000 unknown tokens, one TokenReview each, all 401, nothing forwarded.
    let wave1 = random_tokens("wave1", wave);
    let mark = s.apiserver.records().len();
    let t = Instant::now();
    assert_eq!(flood(&client, &envoy, "/pods", &wave1).await, unauthorized);
    let wave1_time = t.elapsed();
    let reviewed = s.apiserver.token_reviews_since(mark);
    assert_eq!(reviewed.len(), wave, "one TokenReview per token");
    assert_eq!(
        reviewed.iter().cloned().collect::<BTreeSet<_>>(),
        wave1.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert_eq!(
        s.apiserver.records().len() - mark,
        wave,
        "no SubjectAccessReview"
    );
    assert!(s.kubelet.records().is_empty(), "nothing forwarded");
    let rss_wave1 = envoy.rss_kib().unwrap();

    // Wave 2: 2,000 new tokens, the same.
    let wave2 = random_tokens("wave2", wave);
    let mark = s.apiserver.records().len();
    let t = Instant::now();
    assert_eq!(flood(&client, &envoy, "/pods", &wave2).await, unauthorized);
    let wave2_time = t.elapsed();
    let reviewed = s.apiserver.token_reviews_since(mark);
    assert_eq!(reviewed.len(), wave, "one TokenReview per token");
    assert_eq!(
        reviewed.iter().cloned().collect::<BTreeSet<_>>(),
        wave2.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert!(s.kubelet.records().is_empty(), "nothing forwarded");
    let rss_wave2 = envoy.rss_kib().unwrap();
    eprintln!(
        "RSS KiB: start {rss_start}, after wave 1 {rss_wave1} (+{}), after wave 2 {rss_wave2} \
         (+{}); wave 1 {wave1_time:?}, wave 2 {wave2_time:?}",
        rss_wave1.saturating_sub(rss_start),
        rss_wave2.saturating_sub(rss_wave1)
    );
    assert!(
        rss_wave2 <= rss_wave1 + RSS_GROWTH_BOUND_KIB,
        "Envoy RSS grew {} KiB over wave 2 (bound {RSS_GROWTH_BOUND_KIB} KiB): {rss_wave1} -> \
         {rss_wave2}",
        rss_wave2.saturating_sub(rss_wave1)
    );

    // The cache is capped (least recently used goes): the first token of wave 1 is reviewed
    // again, the last of wave 2 is still cached ("not authenticated" is cached, reference 2.7).
    let url = format!("{}/pods", envoy.url());
    for (token, reviews) in [(&wave1[0], 1), (&wave2[wave - 1], 0)] {
        let mark = s.apiserver.records().len();
        let auth = format!("Bearer {token}");
        let r = client
            .get(&url, &[("authorization", auth.as_str())])
            .await
            .unwrap();
        assert_eq!(
            (r.status, String::from_utf8_lossy(&r.body).as_ref()),
            (401, "Unauthorized")
        );
        assert_eq!(
            s.apiserver.token_reviews_since(mark),
            vec![token.clone(); reviews],
            "{token}"
        );
    }

    // (b) 400 concurrent identical new requests: one TokenReview, one SubjectAccessReview.
    let mark = s.apiserver.records().len();
    let t = Instant::now();
    let auth = format!("Bearer {PODLISTER_TOKEN}");
    let answers = futures_util::future::join_all((0..identical).map(|_| {
        let client = client.clone();
        let url = url.clone();
        let auth = auth.clone();
        async move {
            let r = client
                .get(&url, &[("authorization", auth.as_str())])
                .await
                .unwrap();
            (
                r.status,
                r.json()["path"].as_str().unwrap_or("").to_string(),
            )
        }
    }))
    .await;
    let identical_time = t.elapsed();
    let mut counts: BTreeMap<(u16, String), usize> = BTreeMap::new();
    for a in &answers {
        *counts.entry(a.clone()).or_insert(0) += 1;
    }
    eprintln!("{identical} identical requests: {counts:?}");
    if identical <= 1024 {
        // Under `maxWaiters` (1024): every one is served.
        assert_eq!(answers, vec![(200, "/pods".to_string()); identical]);
    } else {
        // Over it, the overflow fails closed (401 / 500 with no body path), nothing else.
        assert!(
            counts
                .keys()
                .all(|(status, path)| (*status == 200 && path == "/pods")
                    || (matches!(status, 401 | 500) && path.is_empty())),
            "{counts:?}"
        );
    }
    let served = counts
        .get(&(200, "/pods".to_string()))
        .copied()
        .unwrap_or(0);
    let kinds: Vec<String> = s.apiserver.records()[mark..]
        .iter()
        .map(|r| match r.kind.as_str() {
            "TokenReview" => format!(
                "TokenReview {}",
                r.request["spec"]["token"].as_str().unwrap_or("")
            ),
            k => format!(
                "{k} {} {}",
                r.request["spec"]["user"].as_str().unwrap_or(""),
                r.request["spec"]["resourceAttributes"]["subresource"]
                    .as_str()
                    .unwrap_or("")
            ),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            format!("TokenReview {PODLISTER_TOKEN}"),
            "SubjectAccessReview system:serviceaccount:inventory:pod-lister pods".to_string()
        ]
    );
    let forwarded = s.kubelet.records();
    assert_eq!(forwarded.len(), served);
    assert!(forwarded
        .iter()
        .all(|f| f["path"] == "/pods" && f["headers"].get("authorization").is_none()));
    eprintln!("{identical} identical requests in {identical_time:?}");

    // Still serving: the admin answers, and a normal request is allowed and forwarded.
    assert_eq!(
        admin_get(envoy.admin(), "/ready").await.unwrap(),
        (200, "LIVE\n".to_string())
    );
    let auth = format!("Bearer {PROMETHEUS_TOKEN}");
    let r = client
        .get(
            &format!("{}/metrics", envoy.url()),
            &[("authorization", auth.as_str())],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "/metrics");
    let rss_end = envoy.rss_kib().unwrap();
    eprintln!(
        "RSS KiB at the end: {rss_end}; whole test {:?}",
        started.elapsed()
    );
    envoy.stop().await;
    s.shutdown().await;
}
