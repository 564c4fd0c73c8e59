//! The case corpus (`authz/tests/cases/*.yaml`, loaded by `kubelet-authz-test-support`) through
//! the engine natively: one fresh engine per case, the TokenReviews answered from the corpus's
//! identities and the SubjectAccessReviews by the RBAC evaluator over the corpus's RBAC files.
//! Each case's status, body and ordered (verb, subresource) SubjectAccessReviews must match.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;

use kubelet_authz::config::Config;
use kubelet_authz::decision::{run_to_end, CalloutKind, CalloutResponse, Engine, Request, Session};
use kubelet_authz::rbac::RbacStore;
use kubelet_authz::review::{SubjectAccessReview, TokenReview};
use kubelet_authz_test_support::cert::{cert, Cert};
use kubelet_authz_test_support::corpus::{self, Case};
use kubelet_authz_test_support::encode::xfcc;

fn rbac(case: &Case) -> RbacStore {
    let mut store = RbacStore::new();
    for f in &case.rbac_files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        store.load_str(&text, &f.display().to_string()).unwrap();
    }
    store
}

fn ok(v: serde_json::Value) -> CalloutResponse {
    CalloutResponse::Http {
        status: 201,
        retry_after: None,
        body: v.to_string().into_bytes(),
    }
}

/// The request as Envoy hands it over: a bearer token, or a verified client certificate with
/// its XFCC header and peer digest.
fn request(case: &Case, certs: &mut HashMap<String, Cert>) -> Request {
    let mut req = Request::new(&case.method, &case.target);
    for (k, v) in &case.headers {
        req = req.header(k, v);
    }
    if let Some(bearer) = case.identity.bearer() {
        // Read as a proxy hands the bytes over (a token may not be UTF-8).
        let read = Request::from_header_bytes([(&b"authorization"[..], bearer.as_slice())]);
        req.headers.extend(read.headers);
    }
    if let Some(x) = &case.identity.x509 {
        let c = certs.entry(case.identity_name.clone()).or_insert_with(|| {
            let orgs: Vec<&str> = x.o.iter().map(String::as_str).collect();
            cert(&x.cn, &orgs, &case.identity.cert_uids())
        });
        req.mtls = true;
        req.peer_cert_sha256 = Some(c.hash.clone());
        req = req.header("x-forwarded-client-cert", &xfcc(&c.hash, &c.pem));
    }
    req
}

#[test]
fn corpus_through_the_engine() {
    let cases = corpus::load().unwrap();
    let mut certs = HashMap::new();
    let mut stores: HashMap<Vec<std::path::PathBuf>, RbacStore> = HashMap::new();
    let mut ran = 0;
    for case in &cases {
        let store = stores
            .entry(case.rbac_files.clone())
            .or_insert_with(|| rbac(case));
        let config = Config::from_json(
            format!(
                r#"{{"nodeName":"{}","kubeletVersion":"{}"}}"#,
                case.node_name, case.kubelet
            )
            .as_bytes(),
        )
        .unwrap();
        let mut engine = Engine::new(config, [7; 32]);
        let mut session = Session::new(1, request(case, &mut certs));
        let mut sars = Vec::new();
        let verdict = run_to_end(&mut engine, &mut session, 0, &mut |c| match c.kind {
            CalloutKind::TokenReview => {
                let tr: TokenReview = serde_json::from_str(&c.body).unwrap();
                let id = &case.identity;
                let status = if id.token.as_deref() == Some(tr.spec.token.as_str()) {
                    serde_json::json!({"authenticated": true, "user": {
                        "username": id.user_name(), "uid": id.uid.clone().unwrap_or_default(),
                        "groups": id.group_names()}})
                } else {
                    serde_json::json!({"authenticated": false})
                };
                ok(serde_json::json!({"apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenReview", "status": status}))
            }
            CalloutKind::SubjectAccessReview => {
                let sar: SubjectAccessReview = serde_json::from_str(&c.body).unwrap();
                assert_eq!(
                    (sar.spec.user.as_str(), sar.spec.uid.as_str()),
                    (
                        case.identity.user_name(),
                        case.identity.uid_for(case.minor())
                    ),
                    "{}: {}: the reviews' user",
                    case.file,
                    case.name
                );
                let a = sar.spec.resource_attributes.clone().unwrap();
                sars.push((a.verb, a.subresource));
                let status = store.authorize_review(&sar.spec);
                ok(serde_json::json!({"apiVersion": "authorization.k8s.io/v1",
                    "kind": "SubjectAccessReview", "status": status}))
            }
        });
        let ctx = format!("{}: {}", case.file, case.name);
        assert_eq!(verdict.status, case.status, "{ctx}: {verdict:?}");
        if let Some(body) = &case.body {
            assert_eq!(&verdict.body, body, "{ctx}");
        }
        assert_eq!(sars, case.checks, "{ctx}: SubjectAccessReviews");
        ran += 1;
    }
    eprintln!("corpus: {ran} cases");
    assert_eq!(ran, cases.len());
    assert!(ran > 0);
}
