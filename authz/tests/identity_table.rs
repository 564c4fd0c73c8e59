//! Identities, row by row: the bearer header table of reference 2.4, the WebSocket subprotocol
//! token of 2.5, the group adder of 2.9, users from X.509 certificates generated at test time
//! with `rcgen` (2.3), Envoy's XFCC header and every `client_cert` outcome.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use der::asn1::{Any, ObjectIdentifier, SetOfVec};
use der::{Decode as _, Encode as _, Tag};
use kubelet_authz::identity::x509::{self, X509Error};
use kubelet_authz::identity::xfcc::{self, ClientCert, XfccElement};
use kubelet_authz::identity::{
    add_authenticated_group, anonymous, is_websocket_request, parse_bearer, token_review_status,
    websocket_token, without_websocket_tokens, BearerHeader, UserInfo, WebSocketToken,
    WebSocketTokenError, ANONYMOUS_USER, AUTHENTICATED_GROUP, CREDENTIAL_ID_EXTRA,
    UNAUTHENTICATED_GROUP, WEBSOCKET_TOKEN_PREFIX,
};
use kubelet_authz::review::ReviewUser;
use kubelet_authz::KubeletVersion;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rstest::rstest;
use sha2::Digest as _;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::{RdnSequence, RelativeDistinguishedName};
use x509_cert::Certificate;

// ---------------------------------------------------------------------------------------------
// 2.4 Bearer header
// ---------------------------------------------------------------------------------------------

#[rstest]
#[case::missing(None, BearerHeader::NoOpinion)]
#[case::empty(Some(""), BearerHeader::NoOpinion)]
#[case::whitespace_only(Some("   "), BearerHeader::NoOpinion)]
#[case::tabs_newlines(Some("\t\r\n "), BearerHeader::NoOpinion)]
#[case::basic(Some("Basic dXNlcjpwYXNz"), BearerHeader::NoOpinion)]
#[case::token_scheme(Some("Token x"), BearerHeader::NoOpinion)]
#[case::bearer_no_token(Some("Bearer"), BearerHeader::NoOpinion)]
#[case::bearer_trailing_space(Some("Bearer "), BearerHeader::NoOpinion)]
#[case::bearer_tab(Some("Bearer\tX"), BearerHeader::NoOpinion)]
#[case::bearer_nbsp(Some("Bearer\u{a0}X"), BearerHeader::NoOpinion)]
#[case::bearer_colon(Some("Bearer: X"), BearerHeader::NoOpinion)]
#[case::bearers(Some("Bearers X"), BearerHeader::NoOpinion)]
#[case::bear(Some("Bear X"), BearerHeader::NoOpinion)]
#[case::leading_space_no_token(Some(" Bearer"), BearerHeader::NoOpinion)]
#[case::lower(Some("bearer X"), BearerHeader::Token("X"))]
#[case::upper(Some("BEARER X"), BearerHeader::Token("X"))]
#[case::mixed(Some("BeArEr X"), BearerHeader::Token("X"))]
#[case::canonical(Some("Bearer abc.def-ghi_jkl"), BearerHeader::Token("abc.def-ghi_jkl"))]
#[case::trailing_stuff(Some("Bearer X trailing stuff"), BearerHeader::Token("X"))]
#[case::trailing_spaces(Some("Bearer X   "), BearerHeader::Token("X"))]
#[case::leading_spaces(Some("   Bearer X"), BearerHeader::Token("X"))]
#[case::surrounding_unicode_space(Some("\u{a0}Bearer X\u{3000}"), BearerHeader::Token("X"))]
#[case::two_spaces(Some("Bearer  X"), BearerHeader::EmptyTokenWarning)]
#[case::three_spaces(Some("Bearer   X"), BearerHeader::EmptyTokenWarning)]
#[case::token_with_tab(Some("Bearer X\tY"), BearerHeader::Token("X\tY"))]
#[case::two_bearers(Some("Bearer X,Bearer Y"), BearerHeader::Token("X,Bearer"))]
#[case::equals_token(Some("Bearer ="), BearerHeader::Token("="))]
#[case::unicode_token(Some("Bearer tök"), BearerHeader::Token("tök"))]
#[case::kelvin_scheme(Some("Bearer\u{212A} X"), BearerHeader::NoOpinion)]
fn bearer_header(#[case] header: Option<&str>, #[case] want: BearerHeader<'static>) {
    assert_eq!(parse_bearer(header), want);
}

// ---------------------------------------------------------------------------------------------
// 2.5 WebSocket subprotocol token
// ---------------------------------------------------------------------------------------------

use kubelet_authz_test_support::encode::websocket_token as enc;

/// The token found, and the header value forwarded without it.
type WsWant = Result<Option<(WebSocketToken, String)>, WebSocketTokenError>;

fn ok(token: &str, remaining: &str) -> WsWant {
    Ok(Some((
        WebSocketToken {
            token: token.to_string(),
        },
        remaining.to_string(),
    )))
}

#[rstest]
#[case::no_header(vec![], Ok(None))]
#[case::no_token(vec!["v4.channel.k8s.io".into()], Ok(None))]
#[case::token_and_protocol(vec![format!("{},v4.channel.k8s.io", enc(b"token"))], ok("token", "v4.channel.k8s.io"))]
#[case::protocol_then_token(vec![format!("chat, {} , v5.channel.k8s.io", enc(b"token"))], ok("token", "chat,v5.channel.k8s.io"))]
#[case::token_in_second_value(vec!["chat".into(), enc(b"token")], ok("token", "chat"))]
#[case::token_in_first_value(vec![enc(b"token"), "a, b".into()], ok("token", "a,b"))]
#[case::padded_surroundings(vec![format!("  {}  ,  chat  ", enc(b"t"))], ok("t", "chat"))]
#[case::empty_other_entry(vec![format!("{},", enc(b"token"))], ok("token", ""))]
#[case::two_tokens_one_value(vec![format!("{},{},chat", enc(b"a"), enc(b"b"))], Err(WebSocketTokenError::Multiple))]
#[case::two_tokens_two_values(vec![format!("{},chat", enc(b"a")), enc(b"a")], Err(WebSocketTokenError::Multiple))]
#[case::empty_then_token(vec![format!("{WEBSOCKET_TOKEN_PREFIX},{},chat", enc(b"a"))], Err(WebSocketTokenError::Multiple))]
#[case::bad_base64(vec![format!("{WEBSOCKET_TOKEN_PREFIX}!!!,chat")], Err(WebSocketTokenError::Encoding))]
#[case::padded_base64(vec![format!("{WEBSOCKET_TOKEN_PREFIX}dG9rZW4=,chat")], Err(WebSocketTokenError::Encoding))]
#[case::std_alphabet(vec![format!("{WEBSOCKET_TOKEN_PREFIX}a+b/,chat")], Err(WebSocketTokenError::Encoding))]
#[case::one_char_quantum(vec![format!("{WEBSOCKET_TOKEN_PREFIX}abcde,chat")], Err(WebSocketTokenError::Encoding))]
#[case::not_utf8(vec![format!("{},chat", enc([0xff, 0xfe, 0x80]))], Err(WebSocketTokenError::NotUtf8))]
#[case::token_alone(vec![enc(b"token")], Err(WebSocketTokenError::MissingSubprotocol))]
#[case::token_alone_two_values(vec![enc(b"token"), "  ".into()], ok("token", ""))]
#[case::empty_token_alone(vec![WEBSOCKET_TOKEN_PREFIX.to_string()], Ok(None))]
#[case::empty_token_with_protocol(vec![format!("{WEBSOCKET_TOKEN_PREFIX},chat")], Ok(None))]
#[case::go_trailing_bits(vec![format!("{WEBSOCKET_TOKEN_PREFIX}dG9rZW5,chat")], ok("token", "chat"))]
#[case::prefix_case_sensitive(vec![format!("Base64url.bearer.authorization.k8s.io.dG9rZW4,chat")], Ok(None))]
#[case::other_prefix(vec!["base64.bearer.authorization.k8s.io.dG9rZW4,chat".into()], Ok(None))]
#[case::bad_base64_beats_missing(vec![format!("{WEBSOCKET_TOKEN_PREFIX}%%")], Err(WebSocketTokenError::Encoding))]
#[case::multiple_beats_missing(vec![format!("{},{}", enc(b"a"), enc(b"b"))], Err(WebSocketTokenError::Multiple))]
fn websocket_protocol(#[case] values: Vec<String>, #[case] want: WsWant) {
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let (want, remaining) = match want {
        Ok(Some((t, r))) => (Ok(Some(t)), Some(r)),
        Ok(None) => (Ok(None), None),
        Err(e) => (Err(e), None),
    };
    assert_eq!(websocket_token(&refs), want);
    if let Some(r) = remaining {
        // What the kubelet forwards once the token authenticated.
        assert_eq!(without_websocket_tokens(&refs), Some(r));
    }
}

#[rstest]
#[case::multiple(
    WebSocketTokenError::Multiple,
    "multiple base64.bearer.authorization tokens specified"
)]
#[case::encoding(
    WebSocketTokenError::Encoding,
    "invalid base64.bearer.authorization token encoding"
)]
#[case::not_utf8(
    WebSocketTokenError::NotUtf8,
    "invalid base64.bearer.authorization token"
)]
#[case::missing(
    WebSocketTokenError::MissingSubprotocol,
    "missing additional subprotocol"
)]
fn websocket_error_texts(#[case] err: WebSocketTokenError, #[case] text: &str) {
    assert_eq!(err.to_string(), text);
}

#[test]
fn websocket_token_entry_is_removed() {
    let header = format!("v4.channel.k8s.io, {}, v5.channel.k8s.io", enc(b"secret"));
    let got = websocket_token(&[&header]).unwrap().unwrap();
    assert_eq!(got.token, "secret");
    let forwarded = without_websocket_tokens(&[&header]).unwrap();
    assert!(!forwarded.contains(WEBSOCKET_TOKEN_PREFIX));
    assert!(!forwarded.contains(&enc(b"secret")));
    assert_eq!(forwarded, "v4.channel.k8s.io,v5.channel.k8s.io");
}

#[rstest]
#[case::simple(&["Upgrade"], &["websocket"], true)]
#[case::lower(&["upgrade"], &["WebSocket"], true)]
#[case::list(&["keep-alive, Upgrade"], &["websocket"], true)]
#[case::list_middle(&["keep-alive,upgrade , close"], &["websocket"], true)]
#[case::list_no_space(&["keep-alive,Upgrade"], &["websocket"], true)]
#[case::no_connection(&[], &["websocket"], false)]
#[case::no_upgrade(&["Upgrade"], &[], false)]
#[case::neither(&[], &[], false)]
#[case::close(&["close"], &["websocket"], false)]
#[case::h2c(&["Upgrade"], &["h2c"], false)]
#[case::upgrade_suffix(&["upgrade2"], &["websocket"], false)]
#[case::upgrade_prefix(&["x-upgrade"], &["websocket"], false)]
#[case::trailing_space(&["upgrade "], &["websocket"], false)]
#[case::leading_space(&[" upgrade"], &["websocket"], false)]
#[case::upgrade_value_padded(&["Upgrade"], &[" websocket"], false)]
#[case::upgrade_list(&["Upgrade"], &["websocket, h2c"], false)]
#[case::second_connection_value(&["close", "Upgrade"], &["websocket"], false)]
#[case::second_upgrade_value(&["Upgrade"], &["h2c", "websocket"], false)]
#[case::kelvin_sign(&["Upgrade"], &["websoc\u{212A}et"], true)]
#[case::long_s(&["Upgrade"], &["web\u{17F}ocket"], true)]
#[case::dotless_i(&["Upgrade"], &["websocket\u{131}"], false)]
fn websocket_request_detection(
    #[case] connection: &[&str],
    #[case] upgrade: &[&str],
    #[case] want: bool,
) {
    assert_eq!(is_websocket_request(connection, upgrade), want);
}

// ---------------------------------------------------------------------------------------------
// 2.9 Group adder, anonymous, UserInfo
// ---------------------------------------------------------------------------------------------

#[rstest]
#[case::no_groups("alice", &[], &["system:authenticated"])]
#[case::keeps_order("alice", &["b", "a"], &["b", "a", "system:authenticated"])]
#[case::already_authenticated("alice", &["system:authenticated", "x"], &["system:authenticated", "x"])]
#[case::unauthenticated("alice", &["x", "system:unauthenticated"], &["x", "system:unauthenticated"])]
#[case::cert_o_unauthenticated("cert-user", &["system:unauthenticated"], &["system:unauthenticated"])]
#[case::anonymous_no_groups("system:anonymous", &[], &[])]
#[case::anonymous_other_group("system:anonymous", &["x"], &["x"])]
#[case::case_sensitive_group("alice", &["System:Authenticated"], &["System:Authenticated", "system:authenticated"])]
#[case::anonymous_lookalike("System:Anonymous", &[], &["system:authenticated"])]
#[case::masters("admin", &["system:masters"], &["system:masters", "system:authenticated"])]
fn group_adder(#[case] name: &str, #[case] groups: &[&str], #[case] want: &[&str]) {
    let mut user = UserInfo::new(name, groups);
    user.uid = "u-1".into();
    user.extra.insert("k".into(), vec!["v".into()]);
    let got = add_authenticated_group(user.clone());
    assert_eq!(got.groups, want);
    assert_eq!(got.name, user.name);
    assert_eq!(got.uid, user.uid);
    assert_eq!(got.extra, user.extra);
}

/// The stand-in API servers' TokenReview status (one function): the user's groups through the
/// group adder, as kube-apiserver answers; an unknown token is not authenticated, with an empty
/// user object (Go's `omitempty` on a struct keeps it, on a bool drops `false`).
#[rstest]
#[case::user(Some(("alice", &["dev"][..])), serde_json::json!({"authenticated": true,
    "user": {"username": "alice", "uid": "u-1", "groups": ["dev", "system:authenticated"]}}))]
#[case::already_there(Some(("bob", &["system:authenticated"][..])), serde_json::json!({
    "authenticated": true, "user": {"username": "bob", "uid": "u-1", "groups": ["system:authenticated"]}}))]
#[case::unknown(None, serde_json::json!({"user": {}}))]
fn token_review_answers(#[case] user: Option<(&str, &[&str])>, #[case] want: serde_json::Value) {
    let user = user.map(|(name, groups)| UserInfo {
        uid: "u-1".into(),
        ..UserInfo::new(name, groups)
    });
    let status = token_review_status(user.as_ref());
    assert_eq!(serde_json::to_value(&status).unwrap(), want);
}

#[test]
fn anonymous_user() {
    let a = anonymous();
    assert_eq!(a.name, ANONYMOUS_USER);
    assert_eq!(a.name, "system:anonymous");
    assert_eq!(a.groups, vec![UNAUTHENTICATED_GROUP.to_string()]);
    assert_eq!(UNAUTHENTICATED_GROUP, "system:unauthenticated");
    assert_eq!(AUTHENTICATED_GROUP, "system:authenticated");
    assert!(a.uid.is_empty() && a.extra.is_empty());
    assert!(a.is_anonymous());
    assert_eq!(add_authenticated_group(a.clone()), a);
}

#[test]
fn user_info_from_review_and_serde() {
    let r: ReviewUser = serde_json::from_value(serde_json::json!({
        "username": "bob", "uid": "42", "groups": ["g1", "g2"], "extra": {"k": ["v"]}
    }))
    .unwrap();
    let u = UserInfo::from_review(&r);
    assert_eq!(u.name, "bob");
    assert_eq!(u.uid, "42");
    assert_eq!(u.groups, ["g1", "g2"]);
    assert_eq!(u.extra["k"], ["v"]);
    assert!(!u.is_anonymous());
    let json = serde_json::to_value(UserInfo::new("x", &[])).unwrap();
    assert_eq!(json, serde_json::json!({"name": "x"}));
}

// ---------------------------------------------------------------------------------------------
// 2.3 X.509: certificates generated with rcgen
// ---------------------------------------------------------------------------------------------

const OID_CN: &str = "2.5.4.3";
const OID_O: &str = "2.5.4.10";
const OID_K8S_UID: &str = "1.3.6.1.4.1.57683.2";
const OID_LDAP_UID: &str = "0.9.2342.19200300.100.1.1";

fn v(minor: u32) -> KubeletVersion {
    KubeletVersion::new(minor).unwrap()
}

/// A self-signed certificate made by rcgen with CN and (at most one) O.
fn rcgen_cert(cn: Option<&str>, o: Option<&str>) -> (Vec<u8>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    if let Some(cn) = cn {
        dn.push(DnType::CommonName, cn);
    }
    if let Some(o) = o {
        dn.push(DnType::OrganizationName, o);
    }
    params.distinguished_name = dn;
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.der().to_vec(), cert.pem())
}

/// An rcgen certificate with one custom attribute (e.g. the UID) besides the CN.
fn rcgen_cert_with(cn: &str, oid: &[u64], value: &str) -> Vec<u8> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::CustomDnType(oid.to_vec()), value);
    params.distinguished_name = dn;
    let key = KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

/// An rcgen certificate whose subject is replaced by `attrs` (one RDN each, in order). The
/// signature no longer matches, which `user_from_der` does not look at (Envoy verified the chain).
fn cert_with_subject(attrs: &[(&str, Tag, &[u8])]) -> Vec<u8> {
    let (der, _) = rcgen_cert(Some("placeholder"), None);
    let mut cert = Certificate::from_der(&der).unwrap();
    let rdns = attrs
        .iter()
        .map(|(oid, tag, bytes)| {
            let atv = AttributeTypeAndValue {
                oid: ObjectIdentifier::new(oid).unwrap(),
                value: Any::new(*tag, bytes.to_vec()).unwrap(),
            };
            RelativeDistinguishedName(SetOfVec::try_from(vec![atv]).unwrap())
        })
        .collect();
    cert.tbs_certificate.subject = RdnSequence(rdns);
    cert.to_der().unwrap()
}

fn utf8(oid: &'static str, s: &'static str) -> (&'static str, Tag, &'static [u8]) {
    (oid, Tag::Utf8String, s.as_bytes())
}

fn credential_id(der: &[u8]) -> String {
    format!("X509SHA256={}", hex::encode(sha2::Sha256::digest(der)))
}

#[rstest]
#[case::v1_21(21)]
#[case::v1_31(31)]
#[case::v1_32(32)]
#[case::v1_33(33)]
#[case::v1_36(36)]
fn x509_cn_and_o(#[case] minor: u32) {
    let (der, _) = rcgen_cert(Some("alice"), Some("developers"));
    let user = x509::user_from_der(&der, v(minor)).unwrap().unwrap();
    assert_eq!(user.name, "alice");
    assert_eq!(user.groups, ["developers"]);
    assert_eq!(user.uid, "");
    if minor >= 32 {
        assert_eq!(user.extra.len(), 1);
        assert_eq!(user.extra[CREDENTIAL_ID_EXTRA], [credential_id(&der)]);
    } else {
        assert!(user.extra.is_empty(), "no credential-id before 1.32");
    }
}

#[test]
fn x509_credential_id_key_and_format() {
    assert_eq!(
        CREDENTIAL_ID_EXTRA,
        "authentication.kubernetes.io/credential-id"
    );
    let (der, _) = rcgen_cert(Some("alice"), None);
    let user = x509::user_from_der(&der, v(32)).unwrap().unwrap();
    let id = &user.extra[CREDENTIAL_ID_EXTRA][0];
    let hex_part = id.strip_prefix("X509SHA256=").unwrap();
    assert_eq!(hex_part.len(), 64);
    assert!(hex_part
        .chars()
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    assert_eq!(hex_part, x509::sha256_hex(&der));
}

#[test]
fn x509_no_o_means_no_groups() {
    let (der, _) = rcgen_cert(Some("bob"), None);
    let user = x509::user_from_der(&der, v(36)).unwrap().unwrap();
    assert_eq!(user.name, "bob");
    assert!(user.groups.is_empty());
}

#[rstest]
#[case::no_cn(None)]
#[case::empty_cn(Some(""))]
fn x509_empty_cn_is_no_opinion(#[case] cn: Option<&str>) {
    let (der, _) = rcgen_cert(cn, Some("system:masters"));
    for minor in [21, 31, 32, 33, 36] {
        assert_eq!(x509::user_from_der(&der, v(minor)), Ok(None), "1.{minor}");
    }
}

#[test]
fn x509_every_o_in_order() {
    let der = cert_with_subject(&[
        utf8(OID_O, "zeta"),
        utf8(OID_CN, "carol"),
        utf8(OID_O, "alpha"),
        utf8(OID_O, "system:nodes"),
        utf8(OID_O, "alpha"),
    ]);
    let user = x509::user_from_der(&der, v(36)).unwrap().unwrap();
    assert_eq!(user.name, "carol");
    assert_eq!(user.groups, ["zeta", "alpha", "system:nodes", "alpha"]);
}

#[test]
fn x509_last_cn_wins() {
    let der = cert_with_subject(&[utf8(OID_CN, "first"), utf8(OID_CN, "second")]);
    let user = x509::user_from_der(&der, v(36)).unwrap().unwrap();
    assert_eq!(user.name, "second");
    // An empty last CN empties the name, as in Go's pkix.Name.
    let der = cert_with_subject(&[utf8(OID_CN, "first"), utf8(OID_CN, "")]);
    assert_eq!(x509::user_from_der(&der, v(36)), Ok(None));
}

#[rstest]
#[case::v1_33(33, "uid-1234")]
#[case::v1_34(34, "uid-1234")]
#[case::v1_35(35, "uid-1234")]
#[case::v1_36(36, "uid-1234")]
#[case::v1_32_ignored(32, "")]
#[case::v1_31_ignored(31, "")]
#[case::v1_21_ignored(21, "")]
fn x509_uid_attribute(#[case] minor: u32, #[case] want: &str) {
    let der = rcgen_cert_with("dave", &[1, 3, 6, 1, 4, 1, 57683, 2], "uid-1234");
    let user = x509::user_from_der(&der, v(minor)).unwrap().unwrap();
    assert_eq!(user.name, "dave");
    assert_eq!(user.uid, want);
}

/// `AllowParsingUserUIDFromCertAuth` (1.33+, on by default): turned off, the UID attribute is not
/// read at all, so that neither a UID nor the UID errors (two UIDs, an empty or a non-string
/// one) come from it.
#[rstest]
#[case::v1_33_default(33, None, &[utf8(OID_CN, "e"), utf8(OID_K8S_UID, "u-1")], Ok("u-1"))]
#[case::v1_33_on(33, Some(true), &[utf8(OID_CN, "e"), utf8(OID_K8S_UID, "u-1")], Ok("u-1"))]
#[case::v1_33_off(33, Some(false), &[utf8(OID_CN, "e"), utf8(OID_K8S_UID, "u-1")], Ok(""))]
#[case::v1_35_off(35, Some(false), &[utf8(OID_CN, "e"), utf8(OID_K8S_UID, "u-1")], Ok(""))]
#[case::v1_36_off(36, Some(false), &[utf8(OID_CN, "e"), utf8(OID_K8S_UID, "u-1")], Ok(""))]
#[case::v1_36_on(36, Some(true), &[utf8(OID_CN, "e"), utf8(OID_K8S_UID, "u-1")], Ok("u-1"))]
#[case::two_uids_off(36, Some(false), &[utf8(OID_CN, "e"), utf8(OID_K8S_UID, "a"), utf8(OID_K8S_UID, "b")], Ok(""))]
#[case::two_uids_on(36, Some(true), &[utf8(OID_CN, "e"), utf8(OID_K8S_UID, "a"), utf8(OID_K8S_UID, "b")], Err("expected 1 UID, but found multiple: [a b]"))]
#[case::empty_uid_off(34, Some(false), &[utf8(OID_CN, "e"), utf8(OID_K8S_UID, "")], Ok(""))]
// Not read, the UID is any other attribute: a non-string value fails the certificate, as on 1.32.
#[case::non_string_uid_off(36, Some(false), &[utf8(OID_CN, "e"), (OID_K8S_UID, Tag::OctetString, b"\x01\x02")], Err("invalid RDNSequence: invalid attribute value: unsupported string type: OCTET STRING"))]
#[case::v1_32_default(32, None, &[utf8(OID_CN, "e"), utf8(OID_K8S_UID, "u-1")], Ok(""))]
fn x509_uid_gate(
    #[case] minor: u32,
    #[case] gate: Option<bool>,
    #[case] attrs: &[(&str, Tag, &[u8])],
    #[case] want: Result<&str, &str>,
) {
    let model = kubelet_authz::kubelet::KubeletModel::new(
        v(minor),
        kubelet_authz::FeatureGates {
            allow_parsing_user_uid_from_cert_auth: gate,
            ..Default::default()
        },
    )
    .unwrap();
    let der = cert_with_subject(attrs);
    let got = x509::user_from_der(&der, model);
    if gate == Some(false) {
        // Off, the certificate gives what a 1.32 kubelet (no such gate) makes of it.
        assert_eq!(got, x509::user_from_der(&der, v(32)));
    }
    match want {
        Ok(uid) => {
            let user = got.unwrap().unwrap();
            assert_eq!((user.name.as_str(), user.uid.as_str()), ("e", uid));
        }
        Err(text) => assert!(got.unwrap_err().to_string().ends_with(text)),
    }
}

#[test]
fn x509_ldap_uid_attribute_is_not_the_kubernetes_uid() {
    let der = rcgen_cert_with("dave", &[0, 9, 2342, 19200300, 100, 1, 1], "ldap-uid");
    let user = x509::user_from_der(&der, v(36)).unwrap().unwrap();
    assert_eq!(user.uid, "");
    assert_eq!(x509::UID_OID.to_string(), OID_K8S_UID);
}

#[rstest]
#[case::two_uids_1_33(33, &[utf8(OID_CN, "e"), utf8(OID_K8S_UID, "a"), utf8(OID_K8S_UID, "b")], Err("expected 1 UID, but found multiple: [a b]"))]
#[case::two_uids_1_36(36, &[utf8(OID_K8S_UID, "a"), utf8(OID_CN, "e"), utf8(OID_K8S_UID, "a")], Err("expected 1 UID, but found multiple: [a a]"))]
#[case::two_uids_1_32(32, &[utf8(OID_CN, "e"), utf8(OID_K8S_UID, "a"), utf8(OID_K8S_UID, "b")], Ok(""))]
#[case::empty_uid_1_33(33, &[utf8(OID_CN, "e"), utf8(OID_K8S_UID, "")], Err("UID cannot be an empty string"))]
#[case::empty_uid_1_31(31, &[utf8(OID_CN, "e"), utf8(OID_K8S_UID, "")], Ok(""))]
#[case::non_string_uid_1_33(33, &[utf8(OID_CN, "e"), (OID_K8S_UID, Tag::OctetString, b"\x01\x02")], Err("unable to parse UID into a string"))]
#[case::integer_uid_1_36(36, &[utf8(OID_CN, "e"), (OID_K8S_UID, Tag::Integer, b"\x05")], Err("unable to parse UID into a string"))]
#[case::printable_uid(36, &[utf8(OID_CN, "e"), (OID_K8S_UID, Tag::PrintableString, b"u-1")], Ok("u-1"))]
#[case::two_ldap_uids(36, &[utf8(OID_CN, "e"), utf8(OID_LDAP_UID, "a"), utf8(OID_LDAP_UID, "b")], Ok(""))]
#[case::one_of_each(36, &[utf8(OID_CN, "e"), utf8(OID_LDAP_UID, "a"), utf8(OID_K8S_UID, "b")], Ok("b"))]
fn x509_uid_rules(
    #[case] minor: u32,
    #[case] attrs: &[(&str, Tag, &[u8])],
    #[case] want: Result<&str, &str>,
) {
    let der = cert_with_subject(attrs);
    let got = x509::user_from_der(&der, v(minor));
    match want {
        Ok(uid) => assert_eq!(got.unwrap().unwrap().uid, uid),
        Err(text) => {
            let err = got.unwrap_err();
            assert!(matches!(err, X509Error::Uid(_)), "{err:?}");
            assert_eq!(err.to_string(), text);
        }
    }
}

#[test]
fn x509_empty_cn_with_bad_uids_is_no_opinion() {
    // CommonNameUserConversion checks the CN before the UID.
    let der = cert_with_subject(&[utf8(OID_K8S_UID, "a"), utf8(OID_K8S_UID, "b")]);
    assert_eq!(x509::user_from_der(&der, v(36)), Ok(None));
}

#[rstest]
#[case::printable(
    Tag::PrintableString,
    b"Node 1 (a+b),-./:=?*&'",
    Some("Node 1 (a+b),-./:=?*&'")
)]
#[case::printable_bad(Tag::PrintableString, b"a@b", None)]
#[case::printable_underscore(Tag::PrintableString, b"a_b", None)]
#[case::ia5(Tag::Ia5String, b"user@example", Some("user@example"))]
#[case::ia5_bad(Tag::Ia5String, b"caf\xc3\xa9", None)]
#[case::numeric(Tag::NumericString, b"123 456", Some("123 456"))]
#[case::numeric_bad(Tag::NumericString, b"12a", None)]
#[case::utf8(Tag::Utf8String, "café".as_bytes(), Some("café"))]
#[case::utf8_bad(Tag::Utf8String, b"\xff", None)]
#[case::bmp(Tag::BmpString, b"\x00c\x00a\x00f\x00\xe9", Some("café"))]
#[case::bmp_terminated(Tag::BmpString, b"\x00o\x00k\x00\x00", Some("ok"))]
#[case::bmp_odd(Tag::BmpString, b"\x00o\x00", None)]
#[case::bmp_lone_surrogate(Tag::BmpString, b"\xd8\x00\x00x", Some("\u{fffd}x"))]
#[case::t61(Tag::TeletexString, b"plain", Some("plain"))]
#[case::t61_latin1(Tag::TeletexString, b"caf\xe9", Some("café"))]
#[case::octet(Tag::OctetString, b"bytes", None)]
#[case::visible(Tag::VisibleString, b"visible", None)]
fn x509_string_types(#[case] tag: Tag, #[case] bytes: &[u8], #[case] want: Option<&str>) {
    // As the O value and as the CN value.
    let der = cert_with_subject(&[utf8(OID_CN, "frank"), (OID_O, tag, bytes)]);
    let got = x509::user_from_der(&der, v(36));
    let der_cn = cert_with_subject(&[(OID_CN, tag, bytes)]);
    let got_cn = x509::user_from_der(&der_cn, v(36));
    match want {
        Some(text) => {
            assert_eq!(got.unwrap().unwrap().groups, [text]);
            assert_eq!(got_cn.unwrap().unwrap().name, text);
        }
        None => {
            assert!(matches!(got, Err(X509Error::Der(_))), "{got:?}");
            assert!(matches!(got_cn, Err(X509Error::Der(_))), "{got_cn:?}");
        }
    }
}

#[test]
fn x509_other_attributes_ignored() {
    let der = cert_with_subject(&[
        utf8("2.5.4.6", "DE"),
        utf8(OID_CN, "gina"),
        utf8("2.5.4.11", "ou-is-not-a-group"),
        (
            "1.2.840.113549.1.9.1",
            Tag::Ia5String,
            b"gina@example.com".as_slice(),
        ),
    ]);
    let user = x509::user_from_der(&der, v(36)).unwrap().unwrap();
    assert_eq!(user.name, "gina");
    assert!(user.groups.is_empty());
    assert_eq!(user.uid, "");
}

#[rstest]
#[case::empty(b"".as_slice())]
#[case::garbage(b"not a certificate".as_slice())]
#[case::sequence_header_only(b"\x30\x03\x02\x01\x01".as_slice())]
#[case::truncated_length(b"\x30\x82\xff".as_slice())]
fn x509_bad_der(#[case] der: &[u8]) {
    let err = x509::user_from_der(der, v(36)).unwrap_err();
    assert!(matches!(err, X509Error::Der(_)), "{err:?}");
    assert!(err
        .to_string()
        .starts_with("client certificate is not valid DER"));
}

#[test]
fn x509_trailing_and_truncated_der() {
    let (der, _) = rcgen_cert(Some("alice"), None);
    let mut longer = der.clone();
    longer.push(0);
    assert!(matches!(
        x509::user_from_der(&longer, v(36)),
        Err(X509Error::Der(_))
    ));
    assert!(matches!(
        x509::user_from_der(&der[..der.len() - 1], v(36)),
        Err(X509Error::Der(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// PEM
// ---------------------------------------------------------------------------------------------

#[test]
fn pem_round_trip_rcgen() {
    let (der, pem) = rcgen_cert(Some("alice"), Some("devs"));
    assert_eq!(x509::pem_to_der(&pem).unwrap(), der);
    assert_eq!(x509::pem_to_der(pem.trim_end()).unwrap(), der);
    assert_eq!(x509::pem_to_der(&pem.replace('\n', "\r\n")).unwrap(), der);
    assert_eq!(x509::pem_to_der(&format!("\n\n  {pem}\n\n")).unwrap(), der);
}

#[test]
fn pem_any_line_width() {
    use base64::Engine as _;
    let (der, _) = rcgen_cert(Some("alice"), None);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let one_line = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
    assert_eq!(x509::pem_to_der(&one_line).unwrap(), der);
    let wrapped: Vec<String> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let wide = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----",
        wrapped.join("\n")
    );
    assert_eq!(x509::pem_to_der(&wide).unwrap(), der);
}

#[rstest]
#[case::empty("")]
#[case::no_markers("MIIBszCCAVmgAwIBAgIU")]
#[case::wrong_label("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")]
#[case::no_end("-----BEGIN CERTIFICATE-----\nAAAA\n")]
#[case::empty_body("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")]
#[case::bad_base64("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")]
#[case::unpadded("-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n")]
#[case::leading_garbage("junk-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")]
#[case::trailing_garbage("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\njunk")]
#[case::two_blocks("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")]
#[case::headers(
    "-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END CERTIFICATE-----\n"
)]
fn pem_refused(#[case] pem: &str) {
    let err = x509::pem_to_der(pem).unwrap_err();
    assert!(matches!(err, X509Error::Pem(_)), "{err:?}");
    assert!(err
        .to_string()
        .starts_with("client certificate is not valid PEM"));
}

// ---------------------------------------------------------------------------------------------
// XFCC parsing
// ---------------------------------------------------------------------------------------------

use kubelet_authz_test_support::encode::url_encode;

fn element() -> XfccElement {
    XfccElement::default()
}

#[test]
fn xfcc_envoy_shaped_header() {
    let (der, pem) = rcgen_cert(Some("alice"), Some("devs"));
    let hash = x509::sha256_hex(&der);
    let header = format!(
        "By=spiffe://cluster.local/ns/kube-system/sa/kubelet-proxy;Hash={hash};Cert=\"{}\";Subject=\"CN=alice,O=devs\";URI=;DNS=node-1;DNS=node-1.local",
        url_encode(&pem)
    );
    assert!(header.contains("%2B") || !pem.contains('+'));
    let got = xfcc::parse(&header).unwrap();
    assert_eq!(got.len(), 1);
    let el = &got[0];
    assert_eq!(
        el.by.as_deref(),
        Some("spiffe://cluster.local/ns/kube-system/sa/kubelet-proxy")
    );
    assert_eq!(el.hash.as_deref(), Some(hash.as_str()));
    assert_eq!(el.cert.as_deref(), Some(pem.as_str()));
    assert_eq!(el.subject.as_deref(), Some("CN=alice,O=devs"));
    assert_eq!(el.uri, [""]);
    assert_eq!(el.dns, ["node-1", "node-1.local"]);
    assert_eq!(el.chain, None);
    assert_eq!(x509::pem_to_der(el.cert.as_deref().unwrap()).unwrap(), der);
}

#[rstest]
#[case::by_only("By=x", vec![XfccElement { by: Some("x".into()), ..element() }])]
#[case::quoted_commas("Subject=\"CN=a,O=b,O=c\"", vec![XfccElement { subject: Some("CN=a,O=b,O=c".into()), ..element() }])]
#[case::quoted_semicolons_equals("Subject=\"a;b=c\";Hash=h", vec![XfccElement { subject: Some("a;b=c".into()), hash: Some("h".into()), ..element() }])]
#[case::escaped_quote("Subject=\"CN=a\\\"b\"", vec![XfccElement { subject: Some("CN=a\"b".into()), ..element() }])]
#[case::escaped_backslash("Subject=\"a\\\\\"", vec![XfccElement { subject: Some("a\\".into()), ..element() }])]
#[case::other_backslash_kept("Subject=\"CN=a\\,b\"", vec![XfccElement { subject: Some("CN=a\\,b".into()), ..element() }])]
#[case::empty_quoted("Subject=\"\"", vec![XfccElement { subject: Some(String::new()), ..element() }])]
#[case::empty_unquoted("URI=", vec![XfccElement { uri: vec![String::new()], ..element() }])]
#[case::two_elements("By=a;Hash=1,By=b;Hash=2", vec![
    XfccElement { by: Some("a".into()), hash: Some("1".into()), ..element() },
    XfccElement { by: Some("b".into()), hash: Some("2".into()), ..element() },
])]
#[case::two_elements_space("By=a, By=b", vec![
    XfccElement { by: Some("a".into()), ..element() },
    XfccElement { by: Some("b".into()), ..element() },
])]
#[case::three_elements_quoted("Subject=\"x,y\",Subject=\"z\",By=w", vec![
    XfccElement { subject: Some("x,y".into()), ..element() },
    XfccElement { subject: Some("z".into()), ..element() },
    XfccElement { by: Some("w".into()), ..element() },
])]
#[case::keys_case_insensitive("hash=h;BY=b;SUBJECT=s;uri=u;dNs=d;CERT=c;chain=k", vec![XfccElement {
    hash: Some("h".into()), by: Some("b".into()), subject: Some("s".into()), uri: vec!["u".into()],
    dns: vec!["d".into()], cert: Some("c".into()), chain: Some("k".into()),
}])]
#[case::url_decoded_cert("Cert=\"a%2Bb%2F%3D%0A+c\"", vec![XfccElement { cert: Some("a+b/=\n+c".into()), ..element() }])]
#[case::url_decoded_chain("Chain=%2D%2D%2D", vec![XfccElement { chain: Some("---".into()), ..element() }])]
#[case::subject_not_url_decoded("Subject=\"a%2Bb\"", vec![XfccElement { subject: Some("a%2Bb".into()), ..element() }])]
#[case::unknown_key_ignored("Foo=bar;By=b", vec![XfccElement { by: Some("b".into()), ..element() }])]
#[case::value_with_equals("By=spiffe://a/b=c", vec![XfccElement { by: Some("spiffe://a/b=c".into()), ..element() }])]
#[case::multiple_uri("URI=a;URI=\"b,c\"", vec![XfccElement { uri: vec!["a".into(), "b,c".into()], ..element() }])]
#[case::spaces_around("By = b ; Hash= h", vec![XfccElement { by: Some("b".into()), hash: Some("h".into()), ..element() }])]
fn xfcc_parse_ok(#[case] header: &str, #[case] want: Vec<XfccElement>) {
    assert_eq!(xfcc::parse(header).unwrap(), want);
}

#[rstest]
#[case::empty("")]
#[case::spaces("   ")]
#[case::no_equals("By")]
#[case::empty_key("=x")]
#[case::unterminated_quote("Subject=\"abc")]
#[case::unterminated_escape("Subject=\"abc\\")]
#[case::junk_after_quote("Subject=\"a\"b")]
#[case::quote_in_unquoted("By=a\"b")]
#[case::duplicate_hash("Hash=a;Hash=b")]
#[case::duplicate_cert("Cert=a;cert=b")]
#[case::duplicate_by("By=a;By=b")]
#[case::duplicate_subject("Subject=a;Subject=b")]
#[case::bad_percent("Cert=\"%zz\"")]
#[case::truncated_percent("Cert=\"abc%2\"")]
#[case::percent_not_utf8("Cert=\"%FF\"")]
#[case::trailing_semicolon("By=a;")]
#[case::trailing_comma("By=a,")]
#[case::double_comma("By=a,,By=b")]
#[case::key_with_comma("B,y=a")]
fn xfcc_parse_malformed(#[case] header: &str) {
    let err = xfcc::parse(header).unwrap_err();
    assert!(err
        .to_string()
        .starts_with("malformed x-forwarded-client-cert header: "));
}

// ---------------------------------------------------------------------------------------------
// client_cert
// ---------------------------------------------------------------------------------------------

struct Fixture {
    der: Vec<u8>,
    digest: String,
    header: String,
}

fn fixture() -> Fixture {
    let (der, pem) = rcgen_cert(Some("system:node:worker-1"), Some("system:nodes"));
    let digest = x509::sha256_hex(&der);
    let header = format!(
        "Hash={digest};Cert=\"{}\";Subject=\"CN=system:node:worker-1,O=system:nodes\";URI=",
        url_encode(&pem)
    );
    Fixture {
        der,
        digest,
        header,
    }
}

#[derive(Debug, Clone, Copy)]
enum Want {
    None,
    Verified,
    Spoofed,
}

#[rstest]
#[case::no_header_plain(0, false, Some("digest"), Want::None)]
#[case::no_header_no_digest(0, false, None, Want::None)]
#[case::no_header_mtls(0, true, Some("digest"), Want::None)]
#[case::verified(1, true, Some("digest"), Want::Verified)]
#[case::verified_upper_digest(1, true, Some("DIGEST"), Want::Verified)]
#[case::not_mtls(1, false, Some("digest"), Want::Spoofed)]
#[case::no_digest(1, true, None, Want::Spoofed)]
#[case::empty_digest(1, true, Some(""), Want::Spoofed)]
#[case::other_digest(1, true, Some("other"), Want::Spoofed)]
#[case::two_headers(2, true, Some("digest"), Want::Spoofed)]
fn client_cert_outcomes(
    #[case] headers: usize,
    #[case] mtls: bool,
    #[case] digest: Option<&str>,
    #[case] want: Want,
) {
    let f = fixture();
    let values: Vec<&str> = std::iter::repeat_n(f.header.as_str(), headers).collect();
    let other = x509::sha256_hex(b"another certificate");
    let digest = digest.map(|d| match d {
        "digest" => f.digest.clone(),
        "DIGEST" => f.digest.to_uppercase(),
        "other" => other.clone(),
        d => d.to_string(),
    });
    let got = xfcc::client_cert(&values, mtls, digest.as_deref());
    match (want, got) {
        (Want::None, ClientCert::None) => {}
        (Want::Verified, ClientCert::Verified(der)) => assert_eq!(der, f.der),
        (Want::Spoofed, ClientCert::Spoofed(why)) => assert!(!why.is_empty()),
        (want, got) => panic!("want {want:?}, got {got:?}"),
    }
}

/// Headers that are present but cannot be trusted, on an mTLS connection with the right digest.
#[rstest]
#[case::two_elements("two-elements")]
#[case::hash_only("hash-only")]
#[case::no_cert("no-cert")]
#[case::cert_not_pem("cert-not-pem")]
#[case::cert_other("cert-other")]
#[case::hash_mismatch("hash-mismatch")]
#[case::unparseable("unparseable")]
#[case::empty_value("empty")]
#[case::cert_not_url_encoded_newlines("raw-quote")]
fn client_cert_spoofed(#[case] kind: &str) {
    let f = fixture();
    let (_, other_pem) = rcgen_cert(Some("mallory"), Some("system:masters"));
    let header = match kind {
        "two-elements" => format!("{},{}", f.header, f.header),
        "hash-only" => format!("Hash={};Subject=\"CN=admin\"", f.digest),
        "no-cert" => "By=spiffe://x;URI=".to_string(),
        "cert-not-pem" => format!("Hash={};Cert=\"bm90IGEgY2VydA%3D%3D\"", f.digest),
        "cert-other" => format!("Hash={};Cert=\"{}\"", f.digest, url_encode(&other_pem)),
        "hash-mismatch" => f.header.replace(&f.digest, &"0".repeat(64)),
        "unparseable" => format!("{};Subject=\"unterminated", f.header),
        "empty" => String::new(),
        "raw-quote" => format!("Cert=\"{}\"", other_pem.replace('\n', "\"")),
        other => panic!("unknown kind {other}"),
    };
    let got = xfcc::client_cert(&[&header], true, Some(&f.digest));
    assert!(matches!(got, ClientCert::Spoofed(_)), "{kind}: {got:?}");
}

#[test]
fn client_cert_without_hash_field_is_verified_by_digest() {
    let f = fixture();
    let header = f
        .header
        .replace(&format!("Hash={};", f.digest), "")
        .to_string();
    assert!(!header.contains("Hash="));
    assert_eq!(
        xfcc::client_cert(&[&header], true, Some(&f.digest)),
        ClientCert::Verified(f.der.clone())
    );
}

#[test]
fn client_cert_hash_field_case_insensitive() {
    let f = fixture();
    let header = f.header.replace(&f.digest, &f.digest.to_uppercase());
    assert_eq!(
        xfcc::client_cert(&[&header], true, Some(&f.digest)),
        ClientCert::Verified(f.der.clone())
    );
}

#[test]
fn client_cert_verified_feeds_the_x509_user() {
    let f = fixture();
    let ClientCert::Verified(der) = xfcc::client_cert(&[&f.header], true, Some(&f.digest)) else {
        panic!("not verified");
    };
    let user = x509::user_from_der(&der, v(36)).unwrap().unwrap();
    assert_eq!(user.name, "system:node:worker-1");
    assert_eq!(user.groups, ["system:nodes"]);
    assert_eq!(
        user.extra[CREDENTIAL_ID_EXTRA],
        [format!("X509SHA256={}", f.digest)]
    );
}

#[test]
fn client_cert_spoof_reasons_differ() {
    let f = fixture();
    let reason =
        |values: &[&str], mtls: bool, d: Option<&str>| match xfcc::client_cert(values, mtls, d) {
            ClientCert::Spoofed(why) => why,
            other => panic!("{other:?}"),
        };
    let not_mtls = reason(&[&f.header], false, Some(&f.digest));
    let mismatch = reason(&[&f.header], true, Some(&"0".repeat(64)));
    let two = reason(&[&f.header, &f.header], true, Some(&f.digest));
    assert_ne!(not_mtls, mismatch);
    assert_ne!(mismatch, two);
    assert_ne!(two, not_mtls);
}
