//! Identity spoofing through a real Envoy (what `e2e.rs` does not cover): identity headers a
//! front proxy might honour (`x-remote-user`/`x-remote-group`, `Impersonate-*`) change nothing and
//! never reach a SubjectAccessReview, and two `Authorization` headers never let the second one in.
//!
//! Needs Envoy (`ENVOY_BIN`) and the release filter (`KUBELET_AUTHZ_FILTER_WASM`); fails without.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kubelet_authz_e2e::stack::{users, ProxyOptions, Standins, OPS_TOKEN, PODLISTER_TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_change_nothing() {
    let s = Standins::start().await.unwrap();
    let envoy = s
        .front_proxy("hardening-identity", &ProxyOptions::version("1.36"))
        .await
        .unwrap();
    let url = format!("{}/exec/default/web/app?command=id", envoy.url());
    let bearer = format!("Bearer {PODLISTER_TOKEN}");
    let ops = format!("Bearer {OPS_TOKEN}");
    let spoof: &[(&str, &str)] = &[
        ("x-remote-user", users::OPS),
        ("x-remote-group", "system:masters"),
        ("impersonate-user", users::OPS),
        ("impersonate-group", "system:masters"),
        ("impersonate-uid", "uid-ops"),
        ("impersonate-extra-scopes", "all"),
    ];
    let mark = s.apiserver.records().len();
    let mut headers = vec![("authorization", bearer.as_str())];
    headers.extend_from_slice(spoof);
    let r = s
        .client(None)
        .unwrap()
        .request("POST", &url, &headers, "")
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        format!(
            "Forbidden (user={}, verb=create, resource=nodes, subresource(s)=[proxy])\n",
            users::PODLISTER
        )
    );
    for rec in &s.apiserver.records()[mark..] {
        let text = rec.request.to_string();
        assert!(
            !text.contains("system:masters") && !text.contains(users::OPS),
            "a spoofed identity reached a review: {text}"
        );
        if rec.kind == "SubjectAccessReview" {
            assert_eq!(rec.request["spec"]["user"], users::PODLISTER);
        }
    }
    assert!(s.kubelet.records().is_empty());

    // Two Authorization headers (either order): never the union, never an exec.
    for (first, second) in [(&bearer, &ops), (&ops, &bearer)] {
        s.kubelet.clear_records();
        let r = s
            .client(None)
            .unwrap()
            .request(
                "POST",
                &url,
                &[
                    ("authorization", first.as_str()),
                    ("authorization", second.as_str()),
                ],
                "",
            )
            .await
            .unwrap();
        if r.status == 200 {
            // Only acceptable if the identity authorized is the first one and it may exec.
            assert!(first == &ops, "second Authorization header was used: {r:?}");
        } else {
            assert!(matches!(r.status, 400 | 401 | 403), "{r:?}");
            assert!(s.kubelet.records().is_empty());
        }
    }
    envoy.stop().await;
    s.shutdown().await;
}
