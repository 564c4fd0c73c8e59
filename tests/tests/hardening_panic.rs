//! A crashed filter VM comes back, enforcing: Envoy 1.40 with the shipped front-proxy
//! configuration (`failure_policy: FAIL_RELOAD`, `fail_open: false`) and a test build of the
//! filter (cargo feature `panic-probe`) that panics on a request carrying
//! `x-kubelet-authz-panic-probe`. The panicking request is never forwarded; after it the VM is
//! reloaded and decides exactly as before (allows, denials, exec refused, reviews sent); and this
//! holds crash after crash. The release module does not contain the probe at all.
//!
//! Needs Envoy (`ENVOY_BIN`), the release filter (`KUBELET_AUTHZ_FILTER_WASM`) and the probe
//! build (`KUBELET_AUTHZ_PANIC_PROBE_WASM`, default
//! `target/panic-probe/wasm32-wasip1/release/kubelet_authz_filter.wasm`); fails without.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kubelet_authz_e2e::envoy::{filter_wasm, Envoy};
use kubelet_authz_e2e::render::workspace;
use kubelet_authz_e2e::stack::{
    users, ProxyOptions, Standins, CERT_ALICE, PODLISTER_TOKEN, PROMETHEUS_TOKEN,
};
use kubelet_authz_standins::apiserver::{Fault, FaultKind};

const PROBE: &str = "x-kubelet-authz-panic-probe";

/// The probe build; missing is a failure with how to build it.
fn probe_wasm() -> PathBuf {
    let p = std::env::var_os("KUBELET_AUTHZ_PANIC_PROBE_WASM").map_or_else(
        || workspace().join("target/panic-probe/wasm32-wasip1/release/kubelet_authz_filter.wasm"),
        PathBuf::from,
    );
    assert!(
        p.is_file(),
        "the panic-probe filter build {} is missing: run `cargo build -p kubelet-authz-filter \
         --target wasm32-wasip1 --release --features panic-probe --target-dir target/panic-probe` \
         or set KUBELET_AUTHZ_PANIC_PROBE_WASM",
        p.display()
    );
    p
}

/// Status of `method path` through `envoy` as Alice (client certificate) or, with `token`, as
/// that bearer; `probe` adds the panic header.
async fn status(
    s: &Standins,
    envoy: &Envoy,
    method: &str,
    path: &str,
    token: Option<&str>,
    probe: bool,
) -> u16 {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    if probe {
        headers.push((PROBE, "1"));
    }
    let cert = if token.is_some() {
        None
    } else {
        Some(CERT_ALICE)
    };
    s.client(cert)
        .unwrap()
        .request(method, &format!("{}{path}", envoy.url()), &headers, "")
        .await
        .map_or(0, |r| r.status)
}

/// The decisions that must hold whenever the VM is up: Alice may read pods, not exec; the pod
/// lister (TokenReview + SAR) may list pods, not exec. Returns the statuses in that order.
async fn decisions(s: &Standins, envoy: &Envoy) -> [u16; 4] {
    [
        status(s, envoy, "GET", "/pods", None, false).await,
        status(
            s,
            envoy,
            "POST",
            "/exec/default/web/app?command=id",
            None,
            false,
        )
        .await,
        status(s, envoy, "GET", "/pods", Some(PODLISTER_TOKEN), false).await,
        status(
            s,
            envoy,
            "POST",
            "/exec/default/web/app?command=id",
            Some(PODLISTER_TOKEN),
            false,
        )
        .await,
    ]
}

#[test]
fn the_release_module_has_no_panic_probe() {
    let release = std::fs::read(filter_wasm().unwrap()).unwrap();
    assert!(
        !release.windows(PROBE.len()).any(|w| w == PROBE.as_bytes()),
        "the release filter contains the panic probe"
    );
    let probe = std::fs::read(probe_wasm()).unwrap();
    assert!(
        probe.windows(PROBE.len()).any(|w| w == PROBE.as_bytes()),
        "the probe build lacks the probe (wrong module?)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_vm_is_reloaded_and_keeps_enforcing() {
    let s = Standins::start().await.unwrap();
    let envoy = s
        .front_proxy(
            "hardening-panic",
            &ProxyOptions::version("1.36").filter_wasm(&probe_wasm()),
        )
        .await
        .unwrap();
    let want = [200, 403, 200, 403];
    assert_eq!(decisions(&s, &envoy).await, want, "before any crash");

    for crash in 1..=3 {
        s.kubelet.clear_records();
        let mark = s.apiserver.records().len();
        // The probe on a request the filter would allow: the VM dies before deciding.
        let crashed = status(&s, &envoy, "GET", "/pods", None, true).await;
        // `fail_open: false`: the request whose VM died is answered 503 by Envoy.
        assert_eq!(crashed, 503, "crash {crash}: the panicking request");
        assert!(
            s.kubelet.records().is_empty(),
            "crash {crash}: the panicking request was forwarded: {:?}",
            s.kubelet.records()
        );
        assert_eq!(
            s.apiserver.records().len(),
            mark,
            "no review before the panic"
        );

        // Until the reload (the shipped `reload_config` backs off from 1s) every request is
        // refused with 503, never forwarded undecided; after it the decisions are exactly the
        // same, made afresh (the caches went with the old VM).
        let started = Instant::now();
        loop {
            let after = decisions(&s, &envoy).await;
            if after == want {
                break;
            }
            for (got, right) in after.iter().zip(want) {
                assert!(
                    *got == 503 || *got == right,
                    "crash {crash}: {after:?} while reloading (want {want:?} or 503)"
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "crash {crash}: no reload after {:?}: {after:?}",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        eprintln!(
            "crash {crash}: {crashed}, reloaded after {:?}",
            started.elapsed()
        );
        let forwarded: Vec<String> = s
            .kubelet
            .records()
            .iter()
            .map(|r| r["path"].as_str().unwrap_or_default().to_string())
            .collect();
        assert!(
            forwarded.iter().all(|p| p.starts_with("/pods")),
            "crash {crash}: forwarded {forwarded:?}"
        );
        let reviews: Vec<String> = s.apiserver.records()[mark..]
            .iter()
            .map(|r| r.kind.clone())
            .collect();
        assert!(
            reviews.iter().any(|k| k == "TokenReview"),
            "crash {crash}: the reloaded VM has an empty token cache, so it asks again: {reviews:?}"
        );
        let sars = s.apiserver.records()[mark..]
            .iter()
            .filter(|r| {
                r.kind == "SubjectAccessReview" && r.request["spec"]["user"] == users::ALICE
            })
            .count();
        assert!(sars >= 1, "crash {crash}: Alice's answers were asked again");
    }
    envoy.stop().await;
    s.shutdown().await;
}

/// The route idle timeout the shipped template gives non-streaming endpoints.
const SHIPPED_IDLE: &str = "idle_timeout: 180s";
/// The same bound, shortened for this test.
const TEST_IDLE: Duration = Duration::from_secs(3);

/// Requests the filter holds (waiting for a TokenReview) when its VM dies are answered within the
/// route's idle timeout (503), never forwarded. Before issue 16 they waited for the 4h
/// stream idle timeout. The shipped template is rendered as is, with only the non-streaming idle
/// timeout shortened (180s -> 3s) to keep the test short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_held_when_the_vm_dies_are_answered_within_the_route_idle_timeout() {
    let s = Standins::start().await.unwrap();
    let yaml = s
        .params(&ProxyOptions::version("1.36").filter_wasm(&probe_wasm()))
        .unwrap()
        .render()
        .unwrap();
    assert_eq!(
        yaml.matches(SHIPPED_IDLE).count(),
        1,
        "the template's bound moved"
    );
    let yaml = yaml.replace(
        SHIPPED_IDLE,
        &format!("idle_timeout: {}s", TEST_IDLE.as_secs()),
    );
    let envoy = Envoy::start(&yaml, s.dir(), "hardening-panic-held")
        .await
        .unwrap();

    // Every TokenReview hangs: requests with tokens are held by the filter.
    s.apiserver
        .set_fault(Fault::always(FaultKind::Hang).for_reviews(&["TokenReview"]));
    let url = envoy.url();
    let held: Vec<_> = [PODLISTER_TOKEN, PROMETHEUS_TOKEN]
        .into_iter()
        .map(|token| {
            let client = s.client(None).unwrap();
            let url = url.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let auth = format!("Bearer {token}");
                let r = client
                    .request(
                        "GET",
                        &format!("{url}/pods"),
                        &[("authorization", &auth)],
                        "",
                    )
                    .await;
                let r = r.map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()));
                (r.unwrap_or_default(), started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The probe kills the VM while both are held.
    let crashed = status(&s, &envoy, "GET", "/pods", None, true).await;
    assert_eq!(crashed, 503, "the panicking request");
    for h in held {
        let ((code, body), took) = h.await.unwrap();
        // The route's idle timer answers it; the dead VM's failure policy (`fail_open: false`)
        // makes that local reply Envoy's bodiless 503, as for every request the VM cannot see.
        assert_eq!(
            (code, body.as_str()),
            (503, ""),
            "a held request after the VM died (took {took:?})"
        );
        assert!(
            took >= TEST_IDLE - Duration::from_millis(600)
                && took < TEST_IDLE + Duration::from_secs(3),
            "answered after {took:?}, not by the route idle timeout of {TEST_IDLE:?}"
        );
    }
    assert!(
        s.kubelet.records().is_empty(),
        "a held request was forwarded: {:?}",
        s.kubelet.records()
    );
    s.apiserver.clear_fault();
    envoy.stop().await;
    s.shutdown().await;
}
