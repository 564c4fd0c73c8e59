//! Shadow mode end to end (issue 8): a real Envoy 1.40 rendered from the shipped front-proxy
//! template with `enforcement: Shadow` forwards what an enforcing one refuses, after the very same
//! TokenReviews and SubjectAccessReviews; its audit lines carry
//! `kubelet-authz.io/enforcement: shadow` and the real decision; fed to the kubectl plugin
//! (`kubectl-kubelet_authz audit-log FILE -o json`), they give the would-be denials.
//!
//! Needs Envoy (`ENVOY_BIN`), the release filter (`KUBELET_AUTHZ_FILTER_WASM`) and the plugin
//! binary (`KUBECTL_KUBELET_AUTHZ`, else `$CARGO_TARGET_DIR/debug/kubectl-kubelet_authz`, else
//! `<workspace>/target/debug/kubectl-kubelet_authz`); fails without.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::time::Duration;

use kubelet_authz_e2e::envoy::{prometheus_sum, Envoy, AUDIT_PREFIX, METRICS_FLUSH};
use kubelet_authz_e2e::render::workspace;
use kubelet_authz_e2e::stack::{
    users, ProxyOptions, Standins, CERT_ALICE, NOBODY_TOKEN, PODLISTER_TOKEN, PROMETHEUS_TOKEN,
};
use serde_json::Value;

/// The plugin binary; an error (never a skip) when it is missing.
fn plugin_bin() -> PathBuf {
    let candidates: Vec<PathBuf> = [
        std::env::var_os("KUBECTL_KUBELET_AUTHZ").map(PathBuf::from),
        std::env::var_os("CARGO_TARGET_DIR")
            .map(|d| PathBuf::from(d).join("debug/kubectl-kubelet_authz")),
        Some(workspace().join("target/debug/kubectl-kubelet_authz")),
    ]
    .into_iter()
    .flatten()
    .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "the kubectl plugin binary is missing (looked at {candidates:?}): build it with \
                 `cargo build -p kubectl-kubelet-authz` or set KUBECTL_KUBELET_AUTHZ"
            )
        })
}

/// One request of the scenario: who, method, path, and what Enforce answers.
struct Step {
    token: Option<&'static str>,
    cert: Option<&'static str>,
    method: &'static str,
    path: &'static str,
    enforce_status: u16,
}

const STEPS: &[Step] = &[
    // allowed: the pod lister reads /pods
    Step {
        token: Some(PODLISTER_TOKEN),
        cert: None,
        method: "GET",
        path: "/pods",
        enforce_status: 200,
    },
    // would-be denial: the pod lister reads /configz (configz, proxy)
    Step {
        token: Some(PODLISTER_TOKEN),
        cert: None,
        method: "GET",
        path: "/configz",
        enforce_status: 403,
    },
    // would-be denial: the pod lister runs exec (SPDY POST, create proxy)
    Step {
        token: Some(PODLISTER_TOKEN),
        cert: None,
        method: "POST",
        path: "/exec/default/web/app?command=id",
        enforce_status: 403,
    },
    // would-be denial: no role at all
    Step {
        token: Some(NOBODY_TOKEN),
        cert: None,
        method: "GET",
        path: "/stats/summary",
        enforce_status: 403,
    },
    // would-be 401: an unknown token
    Step {
        token: Some("no-such-token"),
        cert: None,
        method: "GET",
        path: "/pods",
        enforce_status: 401,
    },
    // allowed: metrics for prometheus, healthz for alice's certificate
    Step {
        token: Some(PROMETHEUS_TOKEN),
        cert: None,
        method: "GET",
        path: "/metrics/cadvisor",
        enforce_status: 200,
    },
    Step {
        token: None,
        cert: Some(CERT_ALICE),
        method: "GET",
        path: "/healthz",
        enforce_status: 200,
    },
];

/// Whether the built-in audit policy writes the step's decision: all but an allowed `get` of
/// metrics, stats or healthz (a shadow would-denial is matched as the denial it would be).
fn written_by_default(st: &Step) -> bool {
    let scrape = ["/metrics", "/stats", "/healthz"]
        .iter()
        .any(|p| st.path.starts_with(p));
    !(st.enforce_status == 200 && st.method == "GET" && scrape)
}

/// Run the scenario through `envoy`; answers the statuses, and the (kind, spec) of every review
/// the API server received meanwhile.
async fn run(s: &Standins, envoy: &Envoy) -> (Vec<u16>, Vec<(String, Value)>) {
    let mark = s.apiserver.records().len();
    let mut statuses = Vec::new();
    for st in STEPS {
        let auth = st.token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let r = s
            .client(st.cert)
            .unwrap()
            .request(
                st.method,
                &format!("{}{}", envoy.url(), st.path),
                &headers,
                "",
            )
            .await
            .unwrap();
        statuses.push(r.status);
    }
    let reviews = s.apiserver.records()[mark..]
        .iter()
        .map(|r| (r.kind.clone(), r.request["spec"].clone()))
        .collect();
    (statuses, reviews)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_forwards_what_enforce_refuses_and_audit_log_reports_it() {
    let s = Standins::start().await.unwrap();

    // Enforce first: the reference answers and reviews.
    let enforce = s
        .front_proxy("shadow-enforce", &ProxyOptions::version("1.36"))
        .await
        .unwrap();
    let (enforce_statuses, enforce_reviews) = run(&s, &enforce).await;
    let want: Vec<u16> = STEPS.iter().map(|st| st.enforce_status).collect();
    assert_eq!(enforce_statuses, want, "Enforce answers");
    enforce.stop().await;

    // Shadow: everything forwarded, the same reviews sent (each Envoy has its own caches).
    let mut opts = ProxyOptions::version("1.36");
    opts.enforcement = "Shadow".into();
    let shadow = s.front_proxy("shadow", &opts).await.unwrap();
    s.kubelet.clear_records();
    let log_mark = shadow.log_len();
    let (shadow_statuses, shadow_reviews) = run(&s, &shadow).await;
    assert_eq!(
        shadow_statuses,
        vec![200; STEPS.len()],
        "Shadow forwards every request"
    );
    assert_eq!(
        shadow_reviews, enforce_reviews,
        "Shadow sends exactly the reviews Enforce sends"
    );
    let forwarded = s.kubelet.records();
    let paths: Vec<&str> = forwarded
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    let want_paths: Vec<&str> = STEPS.iter().map(|st| st.path).collect();
    assert_eq!(paths, want_paths, "the stand-in kubelet saw every request");
    for (r, _st) in forwarded.iter().zip(STEPS) {
        // Whether or not the token authenticated, the client's credentials never reach the kubelet.
        assert!(
            r["headers"].get("authorization").is_none(),
            "Shadow must still strip the client's token before the kubelet: {r}"
        );
        assert_eq!(r["clientCert"]["commonName"], users::PROXY, "{r}");
    }

    // Audit: one event per request that the built-in audit policy writes (every one but the
    // allowed scrapes), the real decision, the shadow annotation.
    let written: Vec<&Step> = STEPS.iter().filter(|st| written_by_default(st)).collect();
    assert_eq!(written.len(), STEPS.len() - 2);
    let events = shadow
        .wait_audit_since(log_mark, written.len(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(events.len(), written.len(), "{events:#?}");
    for (ev, st) in events.iter().zip(written.iter().copied()) {
        let a = &ev["annotations"];
        assert_eq!(a["kubelet-authz.io/enforcement"], "shadow", "{ev}");
        let want = if st.enforce_status == 200 {
            "allow"
        } else {
            "forbid"
        };
        assert_eq!(a["authorization.k8s.io/decision"], want, "{} {ev}", st.path);
        assert_eq!(ev["requestURI"], st.path, "{ev}");
    }
    tokio::time::sleep(METRICS_FLUSH).await;
    let prom = shadow.prometheus().await.unwrap();
    assert_eq!(
        prometheus_sum(&prom, "kubelet_authz_shadow_denials_total", &[]),
        4,
        "the would-be denial counter, by subresource: {prom}"
    );

    // The Envoy log lines, as an operator would collect them, into the plugin.
    let lines: Vec<String> = shadow.log_lines()[log_mark..]
        .iter()
        .filter(|l| l.contains(AUDIT_PREFIX))
        .cloned()
        .collect();
    let mut log_text = shadow.log_lines()[..log_mark].join("\n");
    log_text.push('\n');
    log_text.push_str(&lines.join("\n"));
    log_text.push('\n');
    let file = s.dir().join("shadow-envoy.log");
    std::fs::write(&file, &log_text).unwrap();
    shadow.stop().await;

    let out = std::process::Command::new(plugin_bin())
        .arg("audit-log")
        .arg(&file)
        .arg("-o")
        .arg("json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.code().is_some(),
        "audit-log: {out:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("audit-log -o json: {e}\n{stdout}\n{out:?}"));
    assert_eq!(summary["events"], written.len(), "{summary:#}");
    assert_eq!(summary["shadowEvents"], written.len(), "{summary:#}");
    assert_eq!(summary["shadowWouldForbid"], 4, "{summary:#}");
    assert_eq!(summary["byDecision"]["allow"], 1, "{summary:#}");
    assert_eq!(summary["byDecision"]["forbid"], 4, "{summary:#}");
    // The would-be denials by identity, verb and subresource.
    let mut denied: Vec<(String, String, String, u64)> = summary["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["decision"] == "forbid")
        .map(|g| {
            assert_eq!(g["enforcement"], "shadow", "{g}");
            (
                g["user"].as_str().unwrap().to_string(),
                g["verb"].as_str().unwrap().to_string(),
                g["subresource"].as_str().unwrap().to_string(),
                g["count"].as_u64().unwrap(),
            )
        })
        .collect();
    denied.sort();
    let mut want_denied = vec![
        (
            users::PODLISTER.to_string(),
            "get".into(),
            "proxy".into(),
            1,
        ),
        (
            users::PODLISTER.to_string(),
            "create".into(),
            "proxy".into(),
            1,
        ),
        (users::NOBODY.to_string(), "get".into(), "stats".into(), 1),
        (String::new(), "get".into(), String::new(), 1),
    ];
    want_denied.sort();
    assert_eq!(denied, want_denied, "{summary:#}");
    s.shutdown().await;
}
