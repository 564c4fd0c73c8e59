//! The decision state machine, natively: every row of the authentication decision table
//! (reference 2.8), every branch of the authorization loop (3.5) with the exact bodies (4), the
//! bodies of the reviews sent (2.6, 3.6), caches and their TTLs, retries, de-duplication of
//! identical callouts, and the deliberate differences (strict upgrade verb, canonical paths,
//! XFCC spoofing, shadow, stale-if-error).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;

use kubelet_authz::config::Config;
use kubelet_authz::decision::{
    run_to_end, AuthnMethod, Callout, CalloutKind, CalloutResponse, Decision, Engine, Outcome,
    Request, Session, Shared, Step, Verdict,
};
use kubelet_authz::review::{SubjectAccessReview, TokenReview};
use kubelet_authz::UserInfo;
use rstest::rstest;

// ---------------------------------------------------------------------------------------------
// A small world: a token table and a rule list answered like an API server would.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sar {
    Allow,
    Deny,
    NoOpinion,
    Both,
    Fail,
}

struct World {
    tokens: HashMap<String, UserInfo>,
    token_error: Option<String>,
    api_down: bool,
    /// (user or group, verb, subresource) -> answer; `*` verb matches any.
    rules: Vec<(String, String, String, Sar)>,
    calls: Vec<Callout>,
}

impl World {
    fn new() -> Self {
        let mut tokens = HashMap::new();
        tokens.insert("tok-alice".to_string(), UserInfo::new("alice", &["dev"]));
        tokens.insert(
            "tok-prom".to_string(),
            UserInfo {
                name: "system:serviceaccount:monitoring:prometheus".into(),
                uid: "uid-prom".into(),
                groups: vec![
                    "system:serviceaccounts".into(),
                    "system:serviceaccounts:monitoring".into(),
                    "system:authenticated".into(),
                ],
                extra: Default::default(),
            },
        );
        World {
            tokens,
            token_error: None,
            api_down: false,
            rules: Vec::new(),
            calls: Vec::new(),
        }
    }

    fn rule(mut self, who: &str, verb: &str, sub: &str, answer: Sar) -> Self {
        self.rules
            .push((who.into(), verb.into(), sub.into(), answer));
        self
    }

    fn answer(&mut self, c: &Callout) -> CalloutResponse {
        self.calls.push(c.clone());
        if self.api_down {
            return CalloutResponse::Failed("connection reset".into());
        }
        match c.kind {
            CalloutKind::TokenReview => {
                let tr: TokenReview = serde_json::from_str(&c.body).unwrap();
                let status = if let Some(e) = &self.token_error {
                    serde_json::json!({"authenticated": false, "error": e})
                } else if let Some(u) = self.tokens.get(&tr.spec.token) {
                    serde_json::json!({"authenticated": true, "user": {
                        "username": u.name, "uid": u.uid, "groups": u.groups}})
                } else {
                    serde_json::json!({"authenticated": false})
                };
                ok(
                    serde_json::json!({"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","status": status}),
                )
            }
            CalloutKind::SubjectAccessReview => {
                let sar: SubjectAccessReview = serde_json::from_str(&c.body).unwrap();
                let a = sar.spec.resource_attributes.clone().unwrap();
                let mut answer = Sar::NoOpinion;
                for (who, verb, sub, ans) in &self.rules {
                    let who_ok = *who == sar.spec.user || sar.spec.groups.contains(who);
                    let verb_ok = verb == "*" || *verb == a.verb;
                    if who_ok && verb_ok && *sub == a.subresource {
                        answer = *ans;
                        break;
                    }
                }
                let status = match answer {
                    Sar::Allow => serde_json::json!({"allowed": true, "reason": "rule allows"}),
                    Sar::Deny => {
                        serde_json::json!({"allowed": false, "denied": true, "reason": "rule denies"})
                    }
                    Sar::NoOpinion => serde_json::json!({"allowed": false}),
                    Sar::Both => serde_json::json!({"allowed": true, "denied": true}),
                    Sar::Fail => {
                        return CalloutResponse::Http {
                            status: 403,
                            retry_after: None,
                            body: b"{}".to_vec(),
                        }
                    }
                };
                ok(
                    serde_json::json!({"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","status": status}),
                )
            }
        }
    }

    fn kinds(&self) -> Vec<String> {
        self.calls
            .iter()
            .map(|c| match c.kind {
                CalloutKind::TokenReview => "TokenReview".to_string(),
                CalloutKind::SubjectAccessReview => {
                    let sar: SubjectAccessReview = serde_json::from_str(&c.body).unwrap();
                    let a = sar.spec.resource_attributes.unwrap();
                    format!("SAR {} {}", a.verb, a.subresource)
                }
            })
            .collect()
    }
}

fn ok(v: serde_json::Value) -> CalloutResponse {
    CalloutResponse::Http {
        status: 201,
        retry_after: None,
        body: v.to_string().into_bytes(),
    }
}

fn config(extra: &str) -> Config {
    let json = if extra.is_empty() {
        r#"{"nodeName":"node-1"}"#.to_string()
    } else {
        format!(r#"{{"nodeName":"node-1",{extra}}}"#)
    };
    Config::from_json(json.as_bytes()).unwrap()
}

fn engine(extra: &str) -> Engine {
    Engine::new(config(extra), [7; 32])
}

fn decide(engine: &mut Engine, world: &mut World, req: Request, now: u64) -> Verdict {
    let mut s = Session::new(1, req);
    run_to_end(engine, &mut s, now, &mut |c| world.answer(c))
}

fn get(path: &str) -> Request {
    Request::new("GET", path)
}

fn bearer(req: Request, token: &str) -> Request {
    req.header("authorization", &format!("Bearer {token}"))
}

// ---------------------------------------------------------------------------------------------
// Client certificates through XFCC, as Envoy sets them.

use kubelet_authz_test_support::cert::{cert, Cert};
use kubelet_authz_test_support::encode::url_encode;

fn sha256_hex(der: &[u8]) -> String {
    kubelet_authz::identity::x509::sha256_hex(der)
}

/// A request on an mTLS connection whose verified peer certificate is `c`, with Envoy's XFCC.
fn with_cert(mut req: Request, c: &Cert) -> Request {
    let hash = sha256_hex(&c.der);
    req.mtls = true;
    req.peer_cert_sha256 = Some(hash.clone());
    req.header(
        "x-forwarded-client-cert",
        &format!(
            "Hash={hash};Cert=\"{}\";Subject=\"CN=x\"",
            url_encode(&c.pem)
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Reference 2.8: the authentication decision table, one case per row.

#[derive(Clone, Copy, Debug)]
enum CertCase {
    None,
    ValidCn,
    ValidEmptyCn,
    /// A certificate the x509 authenticator fails on (two UID attributes, 1.33+).
    Failing,
}

#[derive(Clone, Copy, Debug)]
enum TokenCase {
    None,
    Valid,
    Invalid,
    ApiDown,
    NonBearer,
}

#[rstest]
#[case::none_none_anon(
    "row 1",
    CertCase::None,
    TokenCase::None,
    true,
    Some("system:anonymous")
)]
#[case::none_none_no_anon("row 2", CertCase::None, TokenCase::None, false, None)]
#[case::valid_cn_token_valid(
    "row 3",
    CertCase::ValidCn,
    TokenCase::Valid,
    false,
    Some("system:node:worker-1")
)]
#[case::valid_cn_token_invalid(
    "row 3b",
    CertCase::ValidCn,
    TokenCase::Invalid,
    true,
    Some("system:node:worker-1")
)]
#[case::empty_cn_token_valid(
    "row 4",
    CertCase::ValidEmptyCn,
    TokenCase::Valid,
    false,
    Some("alice")
)]
#[case::empty_cn_none_anon(
    "row 5a",
    CertCase::ValidEmptyCn,
    TokenCase::None,
    true,
    Some("system:anonymous")
)]
#[case::empty_cn_none_no_anon("row 5b", CertCase::ValidEmptyCn, TokenCase::None, false, None)]
#[case::failing_cert_token_valid("row 6", CertCase::Failing, TokenCase::Valid, true, Some("alice"))]
#[case::failing_cert_no_token_anon("row 7", CertCase::Failing, TokenCase::None, true, None)]
#[case::invalid_token_anon("row 8a", CertCase::None, TokenCase::Invalid, true, None)]
#[case::invalid_token_no_anon("row 8b", CertCase::None, TokenCase::Invalid, false, None)]
#[case::api_down_anon("row 9", CertCase::None, TokenCase::ApiDown, true, None)]
#[case::non_bearer_anon(
    "row 10",
    CertCase::None,
    TokenCase::NonBearer,
    true,
    Some("system:anonymous")
)]
#[case::non_bearer_no_anon("row 10b", CertCase::None, TokenCase::NonBearer, false, None)]
fn authentication_table(
    #[case] row: &str,
    #[case] cert_case: CertCase,
    #[case] token: TokenCase,
    #[case] anonymous: bool,
    #[case] expected_user: Option<&str>,
) {
    let mut e = engine(&format!(
        r#""kubeletVersion":"1.33","authentication":{{"anonymous":{{"enabled":{anonymous}}}}},"authorization":{{"mode":"AlwaysAllow"}}"#
    ));
    let mut w = World::new();
    w.api_down = matches!(token, TokenCase::ApiDown);
    let mut req = get("/pods");
    req = match cert_case {
        CertCase::None => req,
        CertCase::ValidCn => with_cert(req, &cert("system:node:worker-1", &["system:nodes"], &[])),
        CertCase::ValidEmptyCn => with_cert(req, &cert("", &["ops"], &[])),
        CertCase::Failing => with_cert(req, &cert("mallory", &[], &["u1", "u2"])),
    };
    req = match token {
        TokenCase::None => req,
        TokenCase::Valid => bearer(req, "tok-alice"),
        TokenCase::Invalid => bearer(req, "nope"),
        TokenCase::ApiDown => bearer(req, "tok-alice"),
        TokenCase::NonBearer => req.header("authorization", "Basic YWxpY2U6cHc="),
    };
    let v = decide(&mut e, &mut w, req, 0);
    match expected_user {
        Some(name) => {
            assert_eq!(v.outcome, Outcome::Allowed, "{row}: {v:?}");
            assert_eq!(v.user.as_ref().unwrap().name, name, "{row}");
        }
        None => {
            assert_eq!(v.outcome, Outcome::Unauthenticated, "{row}: {v:?}");
            assert_eq!((v.status, v.body.as_str()), (401, "Unauthorized"), "{row}");
        }
    }
    if matches!(cert_case, CertCase::ValidCn) {
        assert!(
            w.calls.is_empty(),
            "{row}: a valid certificate means the token is never looked at"
        );
    }
}

#[test]
fn cert_identity_has_groups_credential_id_and_authenticated_group() {
    let mut e = engine(r#""kubeletVersion":"1.33","authorization":{"mode":"AlwaysAllow"}"#);
    let c = cert(
        "system:node:worker-1",
        &["system:nodes", "extra"],
        &["uid-7"],
    );
    let v = decide(&mut e, &mut World::new(), with_cert(get("/pods"), &c), 0);
    let u = v.user.unwrap();
    assert_eq!(v.authn, AuthnMethod::X509);
    assert_eq!(
        u.groups,
        vec!["system:nodes", "extra", "system:authenticated"]
    );
    assert_eq!(u.uid, "uid-7");
    assert_eq!(
        u.extra["authentication.kubernetes.io/credential-id"],
        vec![format!("X509SHA256={}", sha256_hex(&c.der))]
    );
}

/// `featureGates.AllowParsingUserUIDFromCertAuth` in the filter's configuration: the certificate
/// user's UID (and so the reviews' `uid`) is read on 1.33+ unless the gate is off.
#[rstest]
#[case::v1_32(r#""kubeletVersion":"1.32""#, "")]
#[case::v1_33_default(r#""kubeletVersion":"1.33""#, "uid-7")]
#[case::v1_33_off(
    r#""kubeletVersion":"1.33","featureGates":{"AllowParsingUserUIDFromCertAuth":false}"#,
    ""
)]
#[case::v1_36_on(
    r#""kubeletVersion":"1.36","featureGates":{"AllowParsingUserUIDFromCertAuth":true}"#,
    "uid-7"
)]
#[case::v1_36_off(
    r#""kubeletVersion":"1.36","featureGates":{"AllowParsingUserUIDFromCertAuth":false}"#,
    ""
)]
fn cert_uid_follows_the_gate(#[case] extra: &str, #[case] uid: &str) {
    let mut e = engine(&format!(
        r#"{extra},"authorization":{{"mode":"AlwaysAllow"}}"#
    ));
    let c = cert("system:node:worker-1", &["system:nodes"], &["uid-7"]);
    let v = decide(&mut e, &mut World::new(), with_cert(get("/pods"), &c), 0);
    assert_eq!(v.authn, AuthnMethod::X509);
    let u = v.user.unwrap();
    assert_eq!(
        (u.name.as_str(), u.uid.as_str()),
        ("system:node:worker-1", uid)
    );
}

#[test]
fn cert_with_unauthenticated_org_does_not_get_authenticated_group() {
    let mut e = engine(r#""authorization":{"mode":"AlwaysAllow"}"#);
    let c = cert("bob", &["system:unauthenticated"], &[]);
    let v = decide(&mut e, &mut World::new(), with_cert(get("/pods"), &c), 0);
    assert_eq!(v.user.unwrap().groups, vec!["system:unauthenticated"]);
}

#[test]
fn anonymous_does_not_get_authenticated_group() {
    let mut e = engine(
        r#""authentication":{"anonymous":{"enabled":true}},"authorization":{"mode":"AlwaysAllow"}"#,
    );
    let v = decide(&mut e, &mut World::new(), get("/pods"), 0);
    assert_eq!(v.authn, AuthnMethod::Anonymous);
    assert_eq!(v.user.unwrap().groups, vec!["system:unauthenticated"]);
}

#[rstest]
#[case::xfcc_without_mtls(false, true, "client-sent header on a plain connection")]
#[case::xfcc_hash_mismatch(true, false, "digest of another certificate")]
fn spoofed_xfcc_is_ignored(#[case] mtls: bool, #[case] right_digest: bool, #[case] what: &str) {
    let mut e = engine(r#""authorization":{"mode":"AlwaysAllow"}"#);
    let c = cert("system:masters-wannabe", &["system:masters"], &[]);
    let mut req = with_cert(get("/pods"), &c);
    req.mtls = mtls;
    if !right_digest {
        req.peer_cert_sha256 = Some(sha256_hex(b"another certificate"));
    }
    let v = decide(&mut e, &mut World::new(), req, 0);
    assert_eq!(v.outcome, Outcome::Unauthenticated, "{what}");
    assert!(v.spoofed_xfcc.is_some(), "{what}: spoof must be reported");
}

#[test]
fn x509_disabled_ignores_the_certificate() {
    let mut e = engine(
        r#""authentication":{"x509":{"enabled":false}},"authorization":{"mode":"AlwaysAllow"}"#,
    );
    let c = cert("admin", &[], &[]);
    let v = decide(&mut e, &mut World::new(), with_cert(get("/pods"), &c), 0);
    assert_eq!(v.outcome, Outcome::Unauthenticated);
}

#[test]
fn webhook_authn_disabled_ignores_tokens() {
    let mut e = engine(
        r#""authentication":{"webhook":{"enabled":false},"anonymous":{"enabled":true}},"authorization":{"mode":"AlwaysAllow"}"#,
    );
    let mut w = World::new();
    let v = decide(&mut e, &mut w, bearer(get("/pods"), "tok-alice"), 0);
    assert_eq!(v.user.unwrap().name, "system:anonymous");
    assert!(w.calls.is_empty());
}

// Reference 2.4 through the engine: which Authorization headers are looked at.
#[rstest]
#[case::lower_scheme("bearer tok-alice", Some("alice"))]
#[case::upper_scheme("BEARER tok-alice", Some("alice"))]
#[case::trailing("Bearer tok-alice trailing stuff", Some("alice"))]
#[case::two_spaces("Bearer  tok-alice", Some("system:anonymous"))]
#[case::tab("Bearer\ttok-alice", Some("system:anonymous"))]
#[case::no_token("Bearer", Some("system:anonymous"))]
#[case::whitespace("   ", Some("system:anonymous"))]
#[case::token_scheme("Token tok-alice", Some("system:anonymous"))]
#[case::rejected("Bearer nope", None)]
fn bearer_header_through_the_engine(#[case] header: &str, #[case] user: Option<&str>) {
    let mut e = engine(
        r#""authentication":{"anonymous":{"enabled":true}},"authorization":{"mode":"AlwaysAllow"}"#,
    );
    let v = decide(
        &mut e,
        &mut World::new(),
        get("/pods").header("authorization", header),
        0,
    );
    assert_eq!(
        v.user
            .as_ref()
            .filter(|_| v.outcome == Outcome::Allowed)
            .map(|u| u.name.as_str()),
        user
    );
}

#[test]
fn only_the_first_authorization_header_counts() {
    let mut e = engine(
        r#""authentication":{"anonymous":{"enabled":true}},"authorization":{"mode":"AlwaysAllow"}"#,
    );
    let req = get("/pods")
        .header("authorization", "Basic x")
        .header("authorization", "Bearer tok-alice");
    let v = decide(&mut e, &mut World::new(), req, 0);
    assert_eq!(v.user.unwrap().name, "system:anonymous");
}

#[test]
fn bearer_header_is_stripped_when_it_authenticates() {
    let mut e = engine(r#""authorization":{"mode":"AlwaysAllow"}"#);
    let v = decide(
        &mut e,
        &mut World::new(),
        bearer(get("/pods"), "tok-alice"),
        0,
    );
    assert_eq!(v.remove_headers, vec!["authorization"]);
    assert_eq!(v.authn, AuthnMethod::Bearer);
    assert_eq!(v.user.unwrap().groups, vec!["dev", "system:authenticated"]);
}

// Reference 2.5 through the engine.
fn ws(req: Request, protocols: &str) -> Request {
    req.header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-protocol", protocols)
}

use kubelet_authz_test_support::encode::websocket_token as ws_token;

#[test]
fn websocket_token_authenticates_and_is_removed() {
    let mut e = engine(r#""authorization":{"mode":"AlwaysAllow"}"#);
    let req = ws(
        get("/exec/ns/pod/ctr"),
        &format!("v4.channel.k8s.io, {}", ws_token("tok-alice")),
    );
    let v = decide(&mut e, &mut World::new(), req, 0);
    assert_eq!(v.authn, AuthnMethod::WebSocket);
    assert_eq!(v.user.unwrap().name, "alice");
    assert_eq!(
        v.set_headers,
        vec![(
            "sec-websocket-protocol".to_string(),
            "v4.channel.k8s.io".to_string()
        )]
    );
}

#[rstest]
#[case::only_token_protocol(ws_token("tok-alice"))]
#[case::bad_encoding("v4.channel.k8s.io,base64url.bearer.authorization.k8s.io.!!!".to_string())]
#[case::two_tokens(format!("v4.channel.k8s.io,{},{}", ws_token("tok-alice"), ws_token("tok-alice")))]
#[case::rejected_token(format!("v4.channel.k8s.io,{}", ws_token("nope")))]
fn websocket_token_errors_are_401_even_with_anonymous(#[case] protocols: String) {
    let mut e = engine(
        r#""authentication":{"anonymous":{"enabled":true}},"authorization":{"mode":"AlwaysAllow"}"#,
    );
    let v = decide(
        &mut e,
        &mut World::new(),
        ws(get("/exec/ns/pod/ctr"), &protocols),
        0,
    );
    assert_eq!(v.outcome, Outcome::Unauthenticated, "{v:?}");
}

#[test]
fn websocket_token_ignored_without_upgrade() {
    let mut e = engine(
        r#""authentication":{"anonymous":{"enabled":true}},"authorization":{"mode":"AlwaysAllow"}"#,
    );
    let req = get("/exec/ns/pod/ctr").header("sec-websocket-protocol", &ws_token("tok-alice"));
    let v = decide(&mut e, &mut World::new(), req, 0);
    assert_eq!(v.user.unwrap().name, "system:anonymous");
}

#[test]
fn invalid_bearer_then_valid_websocket_token_authenticates() {
    // union: the bearer error is recorded, the next authenticator still runs.
    let mut e = engine(r#""authorization":{"mode":"AlwaysAllow"}"#);
    let req = ws(
        bearer(get("/exec/ns/pod/ctr"), "nope"),
        &format!("v4.channel.k8s.io,{}", ws_token("tok-alice")),
    );
    let v = decide(&mut e, &mut World::new(), req, 0);
    assert_eq!(v.user.unwrap().name, "alice");
}

/// How a request for the credential table is made.
#[derive(Clone, Copy, Debug)]
enum Creds {
    /// `Authorization: Bearer <token>`.
    Bearer(&'static str),
    /// Another `Authorization` scheme (no opinion).
    Basic,
    /// A verified client certificate (CN `carol`).
    Cert,
    /// A WebSocket upgrade with `v4.channel.k8s.io` and this token's entry.
    WsToken(&'static str),
    /// A WebSocket upgrade whose only subprotocol is this token's entry.
    WsOnlyToken(&'static str),
    /// The token entry without an upgrade (the kubelet does not read it).
    ProtocolNoUpgrade(&'static str),
}

fn with_creds(mut req: Request, creds: &[Creds]) -> Request {
    for c in creds {
        req = match *c {
            Creds::Bearer(t) => bearer(req, t),
            Creds::Basic => req.header("authorization", "Basic eDp5"),
            Creds::Cert => with_cert(req, &cert("carol", &["ops"], &[])),
            Creds::WsToken(t) => ws(req, &format!("v4.channel.k8s.io, {}", ws_token(t))),
            Creds::WsOnlyToken(t) => ws(req, &ws_token(t)),
            Creds::ProtocolNoUpgrade(t) => req.header(
                "sec-websocket-protocol",
                &format!("v4.channel.k8s.io,{}", ws_token(t)),
            ),
        };
    }
    req
}

/// A forwarded request never carries the caller's credentials, whichever authenticator
/// succeeded (a deliberate difference: the kubelet strips only the credential that
/// authenticated, and the kubelet behind the proxy needs none). `(who, removed, protocols set)`.
#[rstest]
#[case::bearer(&[Creds::Bearer("tok-alice")], "alice", &["authorization"], None)]
#[case::cert_ignores_the_bearer(&[Creds::Cert, Creds::Bearer("tok-alice")], "carol", &["authorization"], None)]
#[case::cert_with_a_rejected_bearer(&[Creds::Cert, Creds::Bearer("nope")], "carol", &["authorization"], None)]
#[case::anonymous_with_basic(&[Creds::Basic], "system:anonymous", &["authorization"], None)]
#[case::websocket_token(&[Creds::WsToken("tok-alice")], "alice", &[], Some("v4.channel.k8s.io"))]
#[case::bearer_wins_over_another_websocket_token(&[Creds::Bearer("tok-prom"), Creds::WsToken("tok-alice")], "system:serviceaccount:monitoring:prometheus", &["authorization"], Some("v4.channel.k8s.io"))]
#[case::rejected_bearer_then_websocket_token(&[Creds::Bearer("nope"), Creds::WsToken("tok-alice")], "alice", &["authorization"], Some("v4.channel.k8s.io"))]
#[case::cert_with_a_websocket_token(&[Creds::Cert, Creds::WsToken("tok-alice")], "carol", &[], Some("v4.channel.k8s.io"))]
#[case::cert_with_only_a_token_protocol(&[Creds::Cert, Creds::WsOnlyToken("tok-alice")], "carol", &["sec-websocket-protocol"], None)]
#[case::token_protocol_without_upgrade(&[Creds::ProtocolNoUpgrade("tok-alice")], "system:anonymous", &[], Some("v4.channel.k8s.io"))]
#[case::nothing(&[], "system:anonymous", &[], None)]
fn forwarded_requests_never_carry_caller_credentials(
    #[case] creds: &[Creds],
    #[case] user: &str,
    #[case] removed: &[&str],
    #[case] protocols: Option<&str>,
) {
    let mut e = engine(
        r#""authentication":{"anonymous":{"enabled":true}},"authorization":{"mode":"AlwaysAllow"}"#,
    );
    let v = decide(
        &mut e,
        &mut World::new(),
        with_creds(get("/exec/ns/pod/ctr"), creds),
        0,
    );
    assert_eq!(v.outcome, Outcome::Allowed, "{v:?}");
    assert_eq!(v.user.as_ref().map(|u| u.name.as_str()), Some(user));
    assert_eq!(v.remove_headers, removed);
    let set: Vec<(String, String)> = protocols
        .map(|p| vec![("sec-websocket-protocol".to_string(), p.to_string())])
        .unwrap_or_default();
    assert_eq!(v.set_headers, set);
}

#[rstest]
#[case::none(&[], None)]
#[case::no_token(&["v4.channel.k8s.io, v5.channel.k8s.io"], None)]
#[case::one(&["v4.channel.k8s.io, base64url.bearer.authorization.k8s.io.dG9r"], Some("v4.channel.k8s.io"))]
#[case::only_the_token(&["base64url.bearer.authorization.k8s.io.dG9r"], Some(""))]
#[case::two_tokens_in_two_values(&["base64url.bearer.authorization.k8s.io.YQ, x", "base64url.bearer.authorization.k8s.io.Yg"], Some("x"))]
#[case::undecodable(&["v4.channel.k8s.io,base64url.bearer.authorization.k8s.io.!!!"], Some("v4.channel.k8s.io"))]
#[case::other_case_is_not_a_token(&["Base64url.bearer.authorization.k8s.io.YQ"], None)]
fn websocket_token_entries_are_all_removed(#[case] values: &[&str], #[case] want: Option<&str>) {
    assert_eq!(
        kubelet_authz::identity::without_websocket_tokens(values).as_deref(),
        want
    );
}

#[test]
fn token_review_error_status_is_401() {
    let mut e = engine(
        r#""authentication":{"anonymous":{"enabled":true}},"authorization":{"mode":"AlwaysAllow"}"#,
    );
    let mut w = World::new();
    w.token_error = Some("token expired".into());
    let v = decide(&mut e, &mut w, bearer(get("/pods"), "tok-alice"), 0);
    assert_eq!(v.status, 401);
    assert_eq!(v.authn_errors, vec!["token expired"]);
}

// ---------------------------------------------------------------------------------------------
// Reference 3.5 and 4: the authorization loop and its exact bodies.

#[rstest]
#[case::fine_allows("1.36", "GET", "/pods", &[("pods", Sar::Allow)], 200, "", &["SAR get pods"])]
#[case::fallback_to_proxy("1.36", "GET", "/pods", &[("pods", Sar::NoOpinion), ("proxy", Sar::Allow)], 200, "", &["SAR get pods", "SAR get proxy"])]
#[case::deny_does_not_block_fallback("1.36", "GET", "/pods", &[("pods", Sar::Deny), ("proxy", Sar::Allow)], 200, "", &["SAR get pods", "SAR get proxy"])]
#[case::forbidden_both("1.36", "GET", "/pods", &[], 403, "Forbidden (user=alice, verb=get, resource=nodes, subresource(s)=[pods proxy])\n", &["SAR get pods", "SAR get proxy"])]
#[case::forbidden_single_132("1.36", "GET", "/stats/summary", &[], 403, "Forbidden (user=alice, verb=get, resource=nodes, subresource(s)=[stats])\n", &["SAR get stats"])]
#[case::pre_132_text("1.31", "GET", "/pods", &[("pods", Sar::Allow)], 403, "Forbidden (user=alice, verb=get, resource=nodes, subresource=proxy)", &["SAR get proxy"])]
#[case::gate_off_133("1.33", "GET", "/healthz", &[("healthz", Sar::Allow)], 403, "Forbidden (user=alice, verb=get, resource=nodes, subresource(s)=[proxy])\n", &["SAR get proxy"])]
#[case::error_first_no_fallback("1.36", "GET", "/pods", &[("pods", Sar::Fail), ("proxy", Sar::Allow)], 500, "Authorization error (user=alice, verb=get, resource=nodes, subresource=pods)", &["SAR get pods"])]
#[case::error_second("1.36", "GET", "/pods", &[("pods", Sar::NoOpinion), ("proxy", Sar::Fail)], 500, "Authorization error (user=alice, verb=get, resource=nodes, subresource=proxy)", &["SAR get pods", "SAR get proxy"])]
#[case::allowed_and_denied_is_error("1.36", "GET", "/metrics", &[("metrics", Sar::Both)], 500, "Authorization error (user=alice, verb=get, resource=nodes, subresource=metrics)", &["SAR get metrics"])]
#[case::head_needs_star("1.36", "HEAD", "/healthz", &[("healthz", Sar::Allow)], 403, "Forbidden (user=alice, verb=, resource=nodes, subresource(s)=[healthz proxy])\n", &["SAR  healthz", "SAR  proxy"])]
#[case::statusz_136_no_fallback("1.36", "GET", "/statusz", &[("proxy", Sar::Allow)], 403, "Forbidden (user=alice, verb=get, resource=nodes, subresource(s)=[statusz])\n", &["SAR get statusz"])]
#[case::flagz_is_configz("1.36", "GET", "/flagz", &[("configz", Sar::Allow)], 200, "", &["SAR get configz"])]
#[case::post_is_create("1.36", "POST", "/exec/ns/pod/ctr", &[("proxy", Sar::Allow)], 200, "", &["SAR create proxy"])]
#[case::put_is_update("1.36", "PUT", "/debug/flags/v", &[], 403, "Forbidden (user=alice, verb=update, resource=nodes, subresource(s)=[proxy])\n", &["SAR update proxy"])]
fn authorization_loop(
    #[case] version: &str,
    #[case] method: &str,
    #[case] path: &str,
    #[case] answers: &[(&str, Sar)],
    #[case] status: u16,
    #[case] body: &str,
    #[case] sent: &[&str],
) {
    let mut e = engine(&format!(
        r#""kubeletVersion":"{version}"{}"#,
        if version == "1.33" {
            r#","featureGates":{"KubeletFineGrainedAuthz":false}"#
        } else {
            ""
        }
    ));
    let mut w = World::new();
    for (sub, ans) in answers {
        // `*` verb so that HEAD (verb "") is matched by the world; the engine decides the rest.
        let verb = if method == "HEAD" { "get" } else { "*" };
        w = w.rule("alice", verb, sub, *ans);
    }
    let v = decide(
        &mut e,
        &mut w,
        bearer(Request::new(method, path), "tok-alice"),
        0,
    );
    assert_eq!((v.status, v.body.as_str()), (status, body), "{v:?}");
    let sars: Vec<String> = w
        .kinds()
        .into_iter()
        .filter(|k| k.starts_with("SAR"))
        .collect();
    assert_eq!(sars, sent);
}

#[test]
fn head_with_star_grant_is_allowed() {
    let mut e = engine("");
    let mut w = World::new().rule("alice", "", "healthz", Sar::Allow);
    let v = decide(
        &mut e,
        &mut w,
        bearer(Request::new("HEAD", "/healthz"), "tok-alice"),
        0,
    );
    assert_eq!(v.outcome, Outcome::Allowed);
}

#[test]
fn sar_and_token_review_bodies_are_exact() {
    let mut e = engine(r#""kubeletVersion":"1.36""#);
    let mut w = World::new().rule(
        "system:serviceaccount:monitoring:prometheus",
        "get",
        "pods",
        Sar::Allow,
    );
    decide(&mut e, &mut w, bearer(get("/pods?x=1"), "tok-prom"), 0);
    assert_eq!(
        w.calls[0].body,
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"tok-prom"}}"#
    );
    assert_eq!(
        w.calls[1].body,
        r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"resourceAttributes":{"verb":"get","version":"v1","resource":"nodes","subresource":"pods","name":"node-1"},"user":"system:serviceaccount:monitoring:prometheus","groups":["system:serviceaccounts","system:serviceaccounts:monitoring","system:authenticated"],"uid":"uid-prom"}}"#
    );
    assert_eq!(
        w.calls[1].path,
        "/apis/authorization.k8s.io/v1/subjectaccessreviews"
    );
    assert_eq!(
        w.calls[0].path,
        "/apis/authentication.k8s.io/v1/tokenreviews"
    );
}

#[test]
fn callout_headers_carry_pseudo_headers_and_optional_bearer() {
    let c = config(r#""apiServer":{"authority":"api.local","bearerToken":"proxy-token"}"#);
    let callout = Callout {
        kind: CalloutKind::TokenReview,
        path: "/x",
        body: String::new(),
        attempt: 1,
    };
    let h = c.api_server().headers(&callout);
    for (k, v) in [
        (":method", "POST"),
        (":path", "/x"),
        (":authority", "api.local"),
        ("content-type", "application/json"),
        ("authorization", "Bearer proxy-token"),
    ] {
        assert!(h.contains(&(k.to_string(), v.to_string())), "{k}");
    }
}

#[test]
fn always_allow_sends_no_review() {
    let mut e = engine(r#""authorization":{"mode":"AlwaysAllow"}"#);
    let mut w = World::new();
    let v = decide(&mut e, &mut w, bearer(get("/exec/a/b/c"), "tok-alice"), 0);
    assert_eq!(v.outcome, Outcome::Allowed);
    assert_eq!(w.kinds(), vec!["TokenReview"]);
}

// ---------------------------------------------------------------------------------------------
// Deliberate difference 1: strict upgrade verb.

#[rstest]
#[case::ws_exec_strict(true, "/exec/ns/pod/ctr", 403, "create")]
#[case::ws_attach_strict(true, "/attach/ns/pod/ctr", 403, "create")]
#[case::ws_portforward_strict(true, "/portForward/ns/pod", 403, "create")]
#[case::ws_run_strict(true, "/run/ns/pod/ctr", 403, "create")]
#[case::ws_exec_kubelet_exact(false, "/exec/ns/pod/ctr", 200, "get")]
#[case::container_logs_not_streaming_exec(true, "/containerLogs/ns/pod/ctr", 200, "get")]
fn strict_upgrade_verb(
    #[case] strict: bool,
    #[case] path: &str,
    #[case] status: u16,
    #[case] verb: &str,
) {
    let mut e = engine(&format!(
        r#""authorization":{{"strictUpgradeVerb":{strict}}}"#
    ));
    let mut w = World::new().rule("alice", "get", "proxy", Sar::Allow);
    let req = ws(bearer(get(path), "tok-alice"), "v4.channel.k8s.io");
    let v = decide(&mut e, &mut w, req, 0);
    assert_eq!(v.status, status, "{v:?}");
    assert_eq!(v.verb, verb);
}

#[test]
fn strict_mode_lets_create_grants_exec() {
    let mut e = engine("");
    let mut w = World::new().rule("alice", "create", "proxy", Sar::Allow);
    let v = decide(
        &mut e,
        &mut w,
        ws(
            bearer(get("/exec/ns/pod/ctr"), "tok-alice"),
            "v4.channel.k8s.io",
        ),
        0,
    );
    assert_eq!(v.outcome, Outcome::Allowed);
    assert!(v.strict_upgrade_applied);
}

// Deliberate difference 2: non-canonical paths are refused before authentication.
#[rstest]
#[case("//exec/a/b/c")]
#[case("/pods/../exec/a/b/c")]
#[case("/pods/%2e%2e/exec/a/b/c")]
#[case("/pods%2F..%2Fexec/a/b/c")]
#[case("/./exec/a/b/c")]
#[case("/pods\\..\\exec")]
fn non_canonical_paths_are_400_with_no_callout(#[case] target: &str) {
    let mut e = engine("");
    let mut w = World::new().rule("alice", "*", "proxy", Sar::Allow);
    let v = decide(&mut e, &mut w, bearer(get(target), "tok-alice"), 0);
    assert_eq!(v.status, 400);
    assert!(v.body.starts_with("Bad Request: non-canonical path"));
    assert!(w.calls.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Caches (2.7, 3.6).

#[test]
fn cache_hits_send_nothing_and_expire_on_time() {
    let mut e = engine("");
    let mut w = World::new().rule("alice", "get", "pods", Sar::Allow);
    let req = bearer(get("/pods"), "tok-alice");
    decide(&mut e, &mut w, req.clone(), 0);
    assert_eq!(w.calls.len(), 2);
    let v = decide(&mut e, &mut w, req.clone(), 119_999);
    assert_eq!(
        w.calls.len(),
        2,
        "token (2m) and allowed SAR (5m) both cached"
    );
    assert_eq!((v.cache_hits, v.cache_misses), (2, 0));
    assert_eq!((v.sar_cache_hits, v.sar_cache_misses), (1, 0));
    let v = decide(&mut e, &mut w, req.clone(), 120_000);
    assert_eq!(
        (v.cache_hits, v.cache_misses),
        (1, 1),
        "token missed, SAR hit"
    );
    assert_eq!((v.sar_cache_hits, v.sar_cache_misses), (1, 0));
    assert_eq!(
        w.kinds()[2..],
        ["TokenReview"],
        "token expires at 2m; SAR still cached"
    );
    decide(&mut e, &mut w, req.clone(), 239_999);
    assert_eq!(w.calls.len(), 3, "token cached again at 2m for 2m");
    decide(&mut e, &mut w, req, 300_000);
    assert_eq!(
        w.kinds()[3..],
        ["TokenReview", "SAR get pods"],
        "allowed SAR expires at 5m"
    );
}

#[test]
fn unauthorized_answers_cache_for_30s_and_rejections_for_2m() {
    let mut e = engine("");
    let mut w = World::new();
    let req = bearer(get("/metrics"), "tok-alice");
    decide(&mut e, &mut w, req.clone(), 0);
    decide(&mut e, &mut w, req.clone(), 29_999);
    assert_eq!(w.calls.len(), 2);
    decide(&mut e, &mut w, req, 30_000);
    assert_eq!(w.kinds()[2..], ["SAR get metrics"]);
    let bad = bearer(get("/metrics"), "nope");
    decide(&mut e, &mut w, bad.clone(), 0);
    decide(&mut e, &mut w, bad, 100_000);
    assert_eq!(
        w.kinds().iter().filter(|k| *k == "TokenReview").count(),
        2,
        "clean rejection cached"
    );
}

#[test]
fn errors_are_not_cached() {
    let mut e = engine("");
    let mut w = World::new();
    w.token_error = Some("boom".into());
    decide(&mut e, &mut w, bearer(get("/pods"), "tok-alice"), 0);
    decide(&mut e, &mut w, bearer(get("/pods"), "tok-alice"), 1);
    assert_eq!(w.calls.len(), 2);
    let mut w = World::new().rule("alice", "*", "metrics", Sar::Fail);
    decide(&mut e, &mut w, bearer(get("/metrics"), "tok-alice"), 0);
    decide(&mut e, &mut w, bearer(get("/metrics"), "tok-alice"), 1);
    assert_eq!(w.kinds().iter().filter(|k| k.starts_with("SAR")).count(), 2);
}

#[test]
fn zero_ttls_disable_caches() {
    let mut e = engine(
        r#""authentication":{"webhook":{"cacheTTL":"0s"}},"authorization":{"webhook":{"cacheAuthorizedTTL":"0s"}}"#,
    );
    let mut w = World::new().rule("alice", "get", "pods", Sar::Allow);
    decide(&mut e, &mut w, bearer(get("/pods"), "tok-alice"), 0);
    decide(&mut e, &mut w, bearer(get("/pods"), "tok-alice"), 0);
    assert_eq!(w.calls.len(), 4);
}

#[test]
fn token_is_never_a_cache_key() {
    let mut e = engine("");
    let mut w = World::new().rule("alice", "get", "pods", Sar::Allow);
    decide(&mut e, &mut w, bearer(get("/pods"), "tok-alice"), 0);
    let dump = format!("{e:?}");
    assert!(
        !dump.contains("tok-alice"),
        "the engine must not hold raw tokens"
    );
}

#[test]
fn caches_stay_bounded_under_a_token_flood() {
    let mut e = engine(r#""limits":{"tokenCacheSize":100}"#);
    let mut w = World::new();
    for i in 0..2_000 {
        decide(&mut e, &mut w, bearer(get("/pods"), &format!("t{i}")), 0);
    }
    assert_eq!(e.token_cache_len(), 100);
}

// ---------------------------------------------------------------------------------------------
// Retries (2.10), driven step by step.

fn step_of(p: kubelet_authz::decision::Progress) -> Step {
    p.step
}

#[test]
fn retries_with_backoff_then_success() {
    let mut e = engine(r#""authorization":{"mode":"AlwaysAllow"}"#);
    let mut s = Session::new(1, bearer(get("/pods"), "tok-alice"));
    assert!(matches!(step_of(s.start(&mut e, 0)), Step::Call(c) if c.attempt == 1));
    let fail = CalloutResponse::Http {
        status: 500,
        retry_after: None,
        body: vec![],
    };
    let mut delays = vec![];
    for attempt in 1..=3 {
        match step_of(s.on_callout(&mut e, 0, fail.clone(), 0)) {
            Step::RetryAfter(d) => delays.push(d),
            other => panic!("attempt {attempt}: {other:?}"),
        }
        assert!(
            matches!(step_of(s.on_retry(&mut e, 0)), Step::Call(c) if c.attempt == attempt + 1)
        );
    }
    assert_eq!(delays, vec![500, 750, 1125]);
    let mut w = World::new();
    let good = w.answer(&Callout {
        kind: CalloutKind::TokenReview,
        path: "",
        body: r#"{"spec":{"token":"tok-alice"}}"#.into(),
        attempt: 4,
    });
    match step_of(s.on_callout(&mut e, 0, good, 0)) {
        Step::Forward(v) => assert_eq!(v.user.unwrap().name, "alice"),
        other => panic!("{other:?}"),
    }
}

#[rstest]
// The retry table of DESIGN.md (client-go's webhook rules; every row in retry_table.rs): the
// session schedules a retry (backoff or Retry-After resend) or answers at once.
#[case::status_500(CalloutResponse::Http { status: 500, retry_after: None, body: vec![] }, true)]
#[case::status_429(CalloutResponse::Http { status: 429, retry_after: None, body: vec![] }, true)]
#[case::status_504(CalloutResponse::Http { status: 504, retry_after: None, body: vec![] }, true)]
#[case::status_502(CalloutResponse::Http { status: 502, retry_after: None, body: vec![] }, true)]
#[case::status_501(CalloutResponse::Http { status: 501, retry_after: None, body: vec![] }, true)]
#[case::status_505(CalloutResponse::Http { status: 505, retry_after: None, body: vec![] }, true)]
#[case::retry_after(CalloutResponse::Http { status: 503, retry_after: Some("1".into()), body: vec![] }, true)]
#[case::reset(CalloutResponse::Failed("reset".into()), true)]
#[case::status_503_without_retry_after(CalloutResponse::Http { status: 503, retry_after: None, body: vec![] }, false)]
#[case::created_with_retry_after(CalloutResponse::Http { status: 201, retry_after: Some("1".into()), body: b"{not json".to_vec() }, false)]
#[case::connection_refused(CalloutResponse::ConnectFailed("refused".into()), false)]
#[case::client_timeout(CalloutResponse::TimedOut("timeout".into()), false)]
#[case::status_403(CalloutResponse::Http { status: 403, retry_after: None, body: vec![] }, false)]
#[case::malformed(CalloutResponse::Http { status: 201, retry_after: None, body: b"{not json".to_vec() }, false)]
fn which_failures_retry(#[case] response: CalloutResponse, #[case] retried: bool) {
    let mut e = engine(r#""authentication":{"anonymous":{"enabled":true}}"#);
    let mut s = Session::new(1, bearer(get("/pods"), "tok-alice"));
    s.start(&mut e, 0);
    let step = step_of(s.on_callout(&mut e, 0, response, 0));
    if retried {
        assert!(matches!(step, Step::RetryAfter(_)), "{step:?}");
    } else {
        assert!(
            matches!(step, Step::Reply(ref v) if v.status == 401),
            "{step:?}"
        );
    }
}

#[test]
fn retries_exhausted_is_401_for_authn_and_500_for_authz() {
    let mut e = engine("");
    let mut w = World::new();
    w.api_down = true;
    let v = decide(&mut e, &mut w, bearer(get("/pods"), "tok-alice"), 0);
    assert_eq!(v.status, 401);
    assert_eq!(w.calls.len(), 5, "five attempts");
    // Cached token, API server down for the SAR.
    let mut e = engine("");
    let mut w = World::new().rule("alice", "get", "pods", Sar::Allow);
    decide(
        &mut e,
        &mut w,
        bearer(get("/stats/summary"), "tok-alice"),
        0,
    );
    w.api_down = true;
    w.calls.clear();
    let v = decide(&mut e, &mut w, bearer(get("/pods"), "tok-alice"), 1);
    assert_eq!(
        (v.status, v.body.as_str()),
        (
            500,
            "Authorization error (user=alice, verb=get, resource=nodes, subresource=pods)"
        )
    );
    assert_eq!(w.calls.len(), 5);
    // Recovery.
    w.api_down = false;
    let v = decide(&mut e, &mut w, bearer(get("/pods"), "tok-alice"), 2);
    assert_eq!(v.outcome, Outcome::Allowed);
}

// ---------------------------------------------------------------------------------------------
// De-duplication of identical concurrent lookups.

#[test]
fn identical_concurrent_requests_share_one_callout() {
    let mut e = engine("");
    let mut w = World::new().rule("alice", "get", "pods", Sar::Allow);
    let req = bearer(get("/pods"), "tok-alice");
    let mut a = Session::new(1, req.clone());
    let mut b = Session::new(2, req.clone());
    let mut c = Session::new(3, req);
    let Step::Call(tr) = step_of(a.start(&mut e, 0)) else {
        panic!()
    };
    assert_eq!(step_of(b.start(&mut e, 0)), Step::Wait);
    assert_eq!(step_of(c.start(&mut e, 0)), Step::Wait);
    let resp = w.answer(&tr);
    let p = a.on_callout(&mut e, 0, resp, 0);
    let Step::Call(sar) = p.step else {
        panic!("{:?}", p.step)
    };
    let wake = p.wake.unwrap();
    assert_eq!(wake.waiters, vec![2, 3]);
    // Waiters continue to the SAR, which `a` now leads: they wait again.
    assert_eq!(
        step_of(b.on_shared(&mut e, 0, wake.result.clone())),
        Step::Wait
    );
    assert_eq!(step_of(c.on_shared(&mut e, 0, wake.result)), Step::Wait);
    let resp = w.answer(&sar);
    let p = a.on_callout(&mut e, 0, resp, 0);
    assert!(matches!(p.step, Step::Forward(_)));
    let wake = p.wake.unwrap();
    for (id, s) in [(2, &mut b), (3, &mut c)] {
        assert!(wake.waiters.contains(&id));
        assert!(matches!(
            step_of(s.on_shared(&mut e, 0, wake.result.clone())),
            Step::Forward(_)
        ));
    }
    assert_eq!(
        w.calls.len(),
        2,
        "one TokenReview and one SAR for three requests"
    );
    assert_eq!(e.inflight_len(), 0);
}

#[test]
fn abandoned_leader_hands_over_to_a_waiter() {
    let mut e = engine(r#""authorization":{"mode":"AlwaysAllow"}"#);
    let req = bearer(get("/pods"), "tok-alice");
    let mut a = Session::new(1, req.clone());
    let mut b = Session::new(2, req);
    a.start(&mut e, 0);
    assert_eq!(step_of(b.start(&mut e, 0)), Step::Wait);
    let wake = a.abandon(&mut e).unwrap();
    assert_eq!(wake.waiters, vec![2]);
    assert_eq!(wake.result, Shared::Abandoned);
    assert!(matches!(
        step_of(b.on_shared(&mut e, 0, Shared::Abandoned)),
        Step::Call(_)
    ));
}

#[test]
fn waiter_overflow_fails_closed() {
    let mut e = engine(r#""limits":{"maxWaiters":1}"#);
    let req = bearer(get("/pods"), "tok-alice");
    let mut a = Session::new(1, req.clone());
    let mut b = Session::new(2, req.clone());
    let mut c = Session::new(3, req);
    a.start(&mut e, 0);
    assert_eq!(step_of(b.start(&mut e, 0)), Step::Wait);
    assert!(matches!(step_of(c.start(&mut e, 0)), Step::Reply(v) if v.status == 401));
}

// ---------------------------------------------------------------------------------------------
// Shadow and stale-if-error.

#[test]
fn shadow_forwards_what_enforce_denies_with_the_same_reviews() {
    for (mode, forwarded) in [("Enforce", false), ("Shadow", true)] {
        let mut e = engine(&format!(r#""enforcement":"{mode}""#));
        let mut w = World::new();
        let v = decide(&mut e, &mut w, bearer(get("/pods"), "tok-alice"), 0);
        assert_eq!(v.outcome, Outcome::Forbidden);
        assert_eq!(v.shadowed, forwarded, "{mode}");
        assert_eq!(
            w.kinds(),
            vec!["TokenReview", "SAR get pods", "SAR get proxy"],
            "{mode}"
        );
    }
}

#[test]
fn stale_if_error_serves_a_recently_expired_token() {
    for (window, stale_ok) in [("0s", false), ("1m", true)] {
        let mut e = engine(&format!(r#""apiServer":{{"staleIfError":"{window}"}}"#));
        let mut w = World::new().rule("alice", "get", "pods", Sar::Allow);
        decide(&mut e, &mut w, bearer(get("/pods"), "tok-alice"), 0);
        w.api_down = true;
        // The token expired at 2m; 2m30s is within a 1m window. The SAR is still fresh.
        let v = decide(&mut e, &mut w, bearer(get("/pods"), "tok-alice"), 150_000);
        if stale_ok {
            assert_eq!(v.outcome, Outcome::Allowed, "{v:?}");
            assert!(v.stale, "a stale token answer is reported (audit, counter)");
        } else {
            assert_eq!(v.status, 401);
        }
        // Outside the window: the kubelet's answer.
        let v = decide(&mut e, &mut w, bearer(get("/pods"), "tok-alice"), 181_000);
        assert_eq!(v.status, 401, "{window}");
    }
}

#[test]
fn stale_if_error_serves_a_recently_expired_sar() {
    for (window, stale_ok) in [("0s", false), ("1m", true)] {
        let mut e = engine(&format!(
            r#""authentication":{{"webhook":{{"cacheTTL":"1h"}}}},"apiServer":{{"staleIfError":"{window}"}}"#
        ));
        let mut w = World::new().rule("alice", "get", "pods", Sar::Allow);
        decide(&mut e, &mut w, bearer(get("/pods"), "tok-alice"), 0);
        w.api_down = true;
        let v = decide(&mut e, &mut w, bearer(get("/pods"), "tok-alice"), 330_000);
        if stale_ok {
            assert_eq!(v.outcome, Outcome::Allowed, "{v:?}");
            assert!(v.stale && v.checks[0].stale);
        } else {
            assert_eq!(v.status, 500);
        }
        let v = decide(&mut e, &mut w, bearer(get("/pods"), "tok-alice"), 361_000);
        assert_eq!(v.status, 500, "{window}");
    }
}

#[test]
fn verdict_reports_checks_and_deciding_subresource() {
    let mut e = engine("");
    let mut w = World::new().rule("alice", "get", "proxy", Sar::Allow);
    let v = decide(&mut e, &mut w, bearer(get("/healthz"), "tok-alice"), 0);
    let d: Vec<Decision> = v.checks.iter().map(|c| c.decision).collect();
    assert_eq!(d, vec![Decision::NoOpinion, Decision::Allow]);
    assert_eq!(v.deciding_subresource().map(|s| s.as_str()), Some("proxy"));
}

#[test]
fn shadow_never_forwards_credentials_that_failed() {
    let mut e = engine(r#""enforcement":"Shadow""#);
    let mut w = World::new();
    let v = decide(&mut e, &mut w, bearer(get("/pods"), "nope"), 0);
    assert_eq!(v.outcome, Outcome::Unauthenticated);
    assert!(v.shadowed);
    assert_eq!(v.remove_headers, vec!["authorization"]);
    let req = ws(
        get("/exec/ns/pod/ctr"),
        &format!("v4.channel.k8s.io,{}", ws_token("nope")),
    );
    let v = decide(&mut e, &mut w, req, 0);
    assert!(v.shadowed);
    assert_eq!(
        v.set_headers,
        vec![(
            "sec-websocket-protocol".to_string(),
            "v4.channel.k8s.io".to_string()
        )]
    );
}
