//! The case corpus (`authz/tests/cases/*.yaml`, loaded by `kubelet-authz-test-support`) through
//! the REAL filter module in the harness host: one fresh VM per case, configured for the case's
//! kubelet version; the API server is the harness's auto-responder with the corpus's identities as
//! its token table and its RBAC files as its authorizer. Each case's outcome (forwarded, or the
//! filter's exact reply) and the ordered (verb, subresource) SubjectAccessReviews must match.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;

use kubelet_authz::review::{SubjectAccessReview, SUBJECT_ACCESS_REVIEW_PATH};
use kubelet_authz::UserInfo;
use kubelet_authz_harness::host::{Host, Outcome};
use kubelet_authz_harness::scenario::AutoResponder;
use kubelet_authz_test_support::cert::{cert, Cert};
use kubelet_authz_test_support::corpus::{self, Case};
use kubelet_authz_test_support::encode::xfcc;

mod host_support;

/// The API server for a case's file: its token identities and its RBAC files.
fn api(case: &Case, cases: &[Case]) -> AutoResponder {
    let mut api = AutoResponder::new();
    for c in cases.iter().filter(|c| c.file == case.file) {
        if let Some(token) = &c.identity.token {
            let user = UserInfo {
                uid: c.identity.uid.clone().unwrap_or_default(),
                ..UserInfo::new(
                    c.identity.user_name(),
                    &c.identity
                        .group_names()
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                )
            };
            api.add_token(token, user);
        }
    }
    for f in &case.rbac_files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        api.load_rbac(&text, &f.display().to_string()).unwrap();
    }
    api
}

#[test]
fn corpus_through_the_filter_module() {
    let cases = corpus::load().unwrap();
    let wasm = host_support::filter_module();
    let mut apis: HashMap<String, AutoResponder> = HashMap::new();
    let mut certs: HashMap<String, Cert> = HashMap::new();
    let mut ran = 0;
    for case in &cases {
        let api = apis
            .entry(case.file.clone())
            .or_insert_with(|| api(case, &cases));
        let vm = Host::load(&wasm).unwrap();
        vm.configure(format!(
            r#"{{"nodeName":"{}","kubeletVersion":"{}"}}"#,
            case.node_name, case.kubelet
        ))
        .unwrap();
        let mut b = vm
            .request()
            .method(&case.method)
            .path(&case.target)
            .authority("worker-1:10250")
            .property("source.address", "10.0.0.1:40000");
        for (k, v) in &case.headers {
            b = b.header(k, v);
        }
        if let Some(bearer) = case.identity.bearer() {
            b = b
                .header_bytes(b"authorization", &bearer)
                .property_bool("connection.mtls", false);
        }
        if let Some(x) = &case.identity.x509 {
            let c = certs.entry(case.identity_name.clone()).or_insert_with(|| {
                let orgs: Vec<&str> = x.o.iter().map(String::as_str).collect();
                cert(&x.cn, &orgs, &case.identity.cert_uids())
            });
            b = b
                .header("x-forwarded-client-cert", &xfcc(&c.hash, &c.pem))
                .property_bool("connection.mtls", true)
                .property("connection.sha256_peer_certificate_digest", c.hash.clone());
        }
        let s = api.run(b).unwrap();
        let ctx = format!("{}: {}", case.file, case.name);
        match s.outcome() {
            Outcome::Forwarded => assert_eq!(case.status, 200, "{ctx}: forwarded"),
            Outcome::Replied(r) => {
                assert_eq!(u32::from(case.status), r.status, "{ctx}: {r:?}");
                assert_eq!(Some(r.body_str()), case.body, "{ctx}");
            }
            other => panic!("{ctx}: {other:?}\nlogs: {:#?}", vm.logs()),
        }
        let sars: Vec<(String, String)> = vm
            .calls()
            .iter()
            .filter(|c| c.path() == Some(SUBJECT_ACCESS_REVIEW_PATH))
            .map(|c| {
                let sar: SubjectAccessReview = serde_json::from_str(&c.body_str()).unwrap();
                assert_eq!(
                    (sar.spec.user.as_str(), sar.spec.uid.as_str()),
                    (
                        case.identity.user_name(),
                        case.identity.uid_for(case.minor())
                    ),
                    "{ctx}: the reviews' user"
                );
                let a = sar.spec.resource_attributes.unwrap();
                (a.verb, a.subresource)
            })
            .collect();
        assert_eq!(sars, case.checks, "{ctx}: SubjectAccessReviews");
        ran += 1;
    }
    eprintln!("corpus: {ran} cases");
    assert_eq!(ran, cases.len());
    assert!(ran > 0);
}
