//! Shared setup for the host tests: builds the probe module (`harness/testdata/probe-filter`)
//! for `wasm32-wasip1` once per test process and loads it, and finds the real filter module.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kubelet_authz_harness::host::{find_header, Headers, Host, HostOptions, Stream};

/// The real filter module (`Host::default_module_path`: `$KUBELET_AUTHZ_FILTER_WASM` or the
/// release artefact); a missing one fails the test with how to build it, never skips it.
pub fn filter_module() -> PathBuf {
    let path = Host::default_module_path();
    assert!(
        path.exists(),
        "filter module {} is missing: run `cargo build -p kubelet-authz-filter --target wasm32-wasip1 --release` \
         (with the same CARGO_TARGET_DIR) or set KUBELET_AUTHZ_FILTER_WASM",
        path.display()
    );
    path
}

/// Path of the probe module, building it on first use.
pub fn probe_path() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            kubelet_authz_harness::testdata::build(
                "probe-filter",
                "probe_filter",
                Path::new(env!("CARGO_TARGET_TMPDIR")),
            )
            .unwrap_or_else(|e| panic!("{e}"))
        })
        .clone()
}

/// A fresh probe VM, not configured.
pub fn probe() -> Host {
    Host::load(probe_path()).unwrap()
}

/// A fresh probe VM with options.
pub fn probe_with(options: HostOptions) -> Host {
    Host::load_with(probe_path(), options).unwrap()
}

/// A fresh probe VM, configured with an empty configuration.
pub fn configured() -> Host {
    let vm = probe();
    vm.configure("").unwrap();
    vm
}

/// Sends a GET in probe mode `mode` with extra headers.
pub fn send(vm: &Host, mode: &str, extra: &[(&str, &str)]) -> Stream {
    vm.request()
        .method("GET")
        .path("/probe?x=1")
        .authority("node")
        .header("x-probe", mode)
        .headers(extra)
        .send_headers(true)
        .unwrap()
}

/// A header from a list, panicking with the list when absent.
pub fn header(headers: &Headers, name: &str) -> String {
    find_header(headers, name)
        .unwrap_or_else(|| panic!("no header {name} in {headers:?}"))
        .to_owned()
}

/// The pod lister's world, shared by the corpus and the byte-level hardening tests: a 1.36 kubelet
/// on node `worker-1`; the API server knows one token, the pod lister's, who may `get nodes/pods`
/// and nothing else (a one-line RBAC rule, not canned answers).
pub mod podlister {
    use kubelet_authz::review::{
        SubjectAccessReview, TokenReview, SUBJECT_ACCESS_REVIEW_PATH, TOKEN_REVIEW_PATH,
    };
    use kubelet_authz_harness::host::{CallResponse, Host, HttpCall};
    use serde_json::json;

    /// The node name every SubjectAccessReview names.
    pub const NODE: &str = "worker-1";
    /// The pod lister's bearer token.
    pub const TOKEN: &str = "tok-podlister";
    /// The pod lister's user name.
    pub const USER: &str = "podlister";

    /// A fresh VM of the real filter for a 1.36 kubelet, everything else default.
    pub fn vm() -> Host {
        let vm = Host::load(super::filter_module()).unwrap();
        vm.configure(format!(
            r#"{{"nodeName":"{NODE}","kubeletVersion":"1.36"}}"#
        ))
        .unwrap_or_else(|e| panic!("configuration: {e}"));
        vm
    }

    /// The API server's answer to a callout.
    pub fn api(call: &HttpCall) -> CallResponse {
        match call.path() {
            Some(TOKEN_REVIEW_PATH) => {
                let review: TokenReview = call.body_json().unwrap();
                let status = if review.spec.token == TOKEN {
                    json!({"authenticated": true,
                           "user": {"username": USER, "groups": ["system:authenticated"]}})
                } else {
                    json!({"authenticated": false})
                };
                CallResponse::json(
                    201,
                    &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                            "status": status}),
                )
            }
            Some(SUBJECT_ACCESS_REVIEW_PATH) => {
                let review: SubjectAccessReview = call.body_json().unwrap();
                let a = review.spec.resource_attributes.unwrap_or_default();
                let allowed = review.spec.user == USER
                    && a.resource == "nodes"
                    && a.name == NODE
                    && a.verb == "get"
                    && a.subresource == "pods";
                CallResponse::json(
                    201,
                    &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                            "status": {"allowed": allowed}}),
                )
            }
            other => panic!("unexpected callout to {other:?}: {call:#?}"),
        }
    }
}
