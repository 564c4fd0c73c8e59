//! Properties: the identity parsers and the kubelet attribute builder never panic on arbitrary
//! input, and the encodings round-trip (a token put into a WebSocket protocol entry comes back; an
//! XFCC header built from quoted fields parses back to those fields; PEM wraps DER losslessly).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::OnceLock;

use base64::Engine as _;
use kubelet_authz::identity::x509;
use kubelet_authz::identity::xfcc::{self, ClientCert};
use kubelet_authz::identity::{
    add_authenticated_group, is_websocket_request, parse_bearer, websocket_token,
    without_websocket_tokens, BearerHeader, UserInfo, AUTHENTICATED_GROUP, UNAUTHENTICATED_GROUP,
    WEBSOCKET_TOKEN_PREFIX,
};
use kubelet_authz::kubelet::{
    is_subpath, subresources, verb_for_method, FeatureGates, KubeletModel, KubeletVersion,
    Subresource,
};
use proptest::prelude::*;

/// One rcgen certificate for the whole test binary: (DER, PEM).
fn cert() -> &'static (Vec<u8>, String) {
    static CERT: OnceLock<(Vec<u8>, String)> = OnceLock::new();
    CERT.get_or_init(|| {
        let mut params = rcgen::CertificateParams::new(vec!["node-1".to_string()]).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "system:node:node-1");
        dn.push(rcgen::DnType::OrganizationName, "system:nodes");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let c = params.self_signed(&key).unwrap();
        (c.der().to_vec(), c.pem())
    })
}

use kubelet_authz_test_support::encode::url_encode;

/// Quote an XFCC value: `\` and `"` escaped.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A key spelled in a random case.
fn spell(key: &str, mask: u32) -> String {
    key.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 32) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

fn model_strategy() -> impl Strategy<Value = KubeletModel> {
    (21u32..=40, prop::option::of(any::<bool>())).prop_filter_map(
        "impossible gate",
        |(minor, gate)| {
            KubeletModel::new(
                KubeletVersion::new(minor).ok()?,
                FeatureGates {
                    kubelet_fine_grained_authz: gate,
                    ..FeatureGates::default()
                },
            )
            .ok()
        },
    )
}

/// Paths built from kubelet path segments, so that the interesting prefixes come up often.
fn kubelet_path() -> impl Strategy<Value = String> {
    let seg = prop::sample::select(vec![
        "stats",
        "metrics",
        "logs",
        "checkpoint",
        "pods",
        "runningpods",
        "runningPods",
        "healthz",
        "configz",
        "statusz",
        "flagz",
        "exec",
        "debug",
        "x",
        "",
        "statsx",
    ]);
    prop::collection::vec(seg, 0..4).prop_map(|segs| format!("/{}", segs.join("/")))
}

proptest! {
    #[test]
    fn bearer_never_panics(header in prop::option::of(any::<String>())) {
        match parse_bearer(header.as_deref()) {
            BearerHeader::Token(t) => {
                prop_assert!(!t.is_empty());
                prop_assert!(!t.contains(' '));
            }
            BearerHeader::NoOpinion | BearerHeader::EmptyTokenWarning => {}
        }
    }

    #[test]
    fn bearer_round_trip(
        token in "[^\\s]{1,64}",
        scheme in prop::sample::select(vec!["Bearer", "bearer", "BEARER", "bEaReR"]),
        rest in prop::option::of("[a-z ]{0,10}"),
    ) {
        let header = match &rest {
            Some(r) => format!("{scheme} {token} {r}"),
            None => format!("{scheme} {token}"),
        };
        prop_assert_eq!(parse_bearer(Some(&header)), BearerHeader::Token(&token));
    }

    #[test]
    fn bearer_other_schemes_no_opinion(scheme in "[A-Za-z]{1,10}", token in "[a-z0-9]{1,20}") {
        prop_assume!(!scheme.eq_ignore_ascii_case("bearer"));
        let header = format!("{scheme} {token}");
        prop_assert_eq!(parse_bearer(Some(&header)), BearerHeader::NoOpinion);
    }

    #[test]
    fn websocket_never_panics(values in prop::collection::vec(any::<String>(), 0..4)) {
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let _ = websocket_token(&refs);
    }

    #[test]
    fn websocket_never_panics_with_prefix(
        suffixes in prop::collection::vec("[A-Za-z0-9_=+/ -]{0,12}", 1..4),
        other in prop::option::of("[a-z.]{1,8}"),
    ) {
        let mut entries: Vec<String> =
            suffixes.iter().map(|s| format!("{WEBSOCKET_TOKEN_PREFIX}{s}")).collect();
        entries.extend(other);
        let header = entries.join(",");
        let got = websocket_token(&[&header]);
        if let Ok(Some(t)) = got {
            prop_assert!(!t.token.is_empty());
        }
        // Whatever the parse, what would be forwarded carries no token entry.
        let forwarded = without_websocket_tokens(&[&header]);
        prop_assert!(forwarded.is_some_and(|f| !f.contains(WEBSOCKET_TOKEN_PREFIX)));
    }

    #[test]
    fn websocket_round_trip(
        token in any::<String>(),
        before in prop::collection::vec("[a-z0-9.]{1,12}", 0..3),
        after in prop::collection::vec("[a-z0-9.]{1,12}", 0..3),
    ) {
        prop_assume!(!token.is_empty());
        prop_assume!(!before.is_empty() || !after.is_empty());
        let entry = kubelet_authz_test_support::encode::websocket_token(&token);
        let mut all: Vec<String> = before.clone();
        all.push(entry);
        all.extend(after.iter().cloned());
        let header = all.join(", ");
        let got = websocket_token(&[&header]).unwrap().unwrap();
        prop_assert_eq!(&got.token, &token);
        let others: Vec<String> = before.into_iter().chain(after).collect();
        prop_assert_eq!(without_websocket_tokens(&[&header]), Some(others.join(",")));
    }

    #[test]
    fn websocket_request_never_panics(
        connection in prop::collection::vec(any::<String>(), 0..3),
        upgrade in prop::collection::vec(any::<String>(), 0..3),
    ) {
        let c: Vec<&str> = connection.iter().map(String::as_str).collect();
        let u: Vec<&str> = upgrade.iter().map(String::as_str).collect();
        let got = is_websocket_request(&c, &u);
        if got {
            prop_assert!(c.first().is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")));
            prop_assert_eq!(u.first().map(|v| v.chars().count()), Some(9));
        }
    }

    #[test]
    fn xfcc_parse_never_panics(header in any::<String>()) {
        let _ = xfcc::parse(&header);
    }

    #[test]
    fn xfcc_parse_never_panics_on_xfcc_like(header in "[A-Za-z=;,\" \\\\%0-9]{0,40}") {
        let _ = xfcc::parse(&header);
    }

    #[test]
    fn xfcc_round_trip(
        by in any::<String>(),
        subject in any::<String>(),
        cert in any::<String>(),
        uris in prop::collection::vec(any::<String>(), 0..3),
        dns in prop::collection::vec(any::<String>(), 0..3),
        mask in any::<u32>(),
        elements in 1usize..4,
    ) {
        let one = {
            let mut pairs = vec![
                format!("{}={}", spell("By", mask), quote(&by)),
                format!("{}={}", spell("Subject", mask.rotate_left(3)), quote(&subject)),
                format!("{}=\"{}\"", spell("Cert", mask.rotate_left(7)), url_encode(&cert)),
            ];
            pairs.extend(uris.iter().map(|u| format!("{}={}", spell("URI", mask), quote(u))));
            pairs.extend(dns.iter().map(|d| format!("{}={}", spell("DNS", !mask), quote(d))));
            pairs.join(";")
        };
        let header = vec![one; elements].join(",");
        let got = xfcc::parse(&header).unwrap();
        prop_assert_eq!(got.len(), elements);
        for el in got {
            prop_assert_eq!(el.by.as_deref(), Some(by.as_str()));
            prop_assert_eq!(el.subject.as_deref(), Some(subject.as_str()));
            prop_assert_eq!(el.cert.as_deref(), Some(cert.as_str()));
            prop_assert_eq!(&el.uri, &uris);
            prop_assert_eq!(&el.dns, &dns);
            prop_assert_eq!(el.hash, None);
        }
    }

    #[test]
    fn client_cert_never_panics(
        values in prop::collection::vec(any::<String>(), 0..3),
        mtls in any::<bool>(),
        digest in prop::option::of(any::<String>()),
    ) {
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let got = xfcc::client_cert(&refs, mtls, digest.as_deref());
        // Random text never yields a verified certificate; no header never yields a spoof.
        prop_assert!(!matches!(got, ClientCert::Verified(_)));
        if values.is_empty() {
            prop_assert_eq!(got, ClientCert::None);
        } else {
            prop_assert!(matches!(got, ClientCert::Spoofed(_)));
        }
    }

    #[test]
    fn client_cert_only_the_peer_digest_verifies(digest in "[0-9a-f]{64}", mtls in any::<bool>()) {
        let (der, pem) = cert();
        let real = x509::sha256_hex(der);
        let header = format!("Hash={real};Cert=\"{}\"", url_encode(pem));
        let got = xfcc::client_cert(&[&header], mtls, Some(&digest));
        if mtls && digest == real {
            prop_assert_eq!(got, ClientCert::Verified(der.clone()));
        } else {
            prop_assert!(matches!(got, ClientCert::Spoofed(_)));
        }
        let good = xfcc::client_cert(&[&header], mtls, Some(&real));
        prop_assert_eq!(matches!(good, ClientCert::Verified(_)), mtls);
    }

    #[test]
    fn pem_never_panics(text in any::<String>()) {
        let _ = x509::pem_to_der(&text);
        let wrapped = format!("-----BEGIN CERTIFICATE-----\n{text}\n-----END CERTIFICATE-----\n");
        let _ = x509::pem_to_der(&wrapped);
    }

    #[test]
    fn pem_round_trip(bytes in prop::collection::vec(any::<u8>(), 1..600), width in 1usize..100) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let lines: Vec<String> = b64
            .as_bytes()
            .chunks(width)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        );
        prop_assert_eq!(x509::pem_to_der(&pem).unwrap(), bytes);
    }

    #[test]
    fn user_from_der_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400), minor in 21u32..40) {
        let _ = x509::user_from_der(&bytes, KubeletVersion::new(minor).unwrap());
    }

    #[test]
    fn user_from_der_never_panics_on_mutated_cert(
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let (der, _) = cert();
        let mut m = der.clone();
        let i = at.index(m.len());
        m[i] = byte;
        let v = KubeletVersion::LATEST;
        if let Ok(Some(user)) = x509::user_from_der(&m, v) {
            prop_assert!(!user.name.is_empty());
        }
        let _ = x509::user_from_der(&m[..cut.index(m.len())], v);
    }

    #[test]
    fn is_subpath_never_panics(a in any::<String>(), b in any::<String>()) {
        let _ = is_subpath(&a, &b);
        prop_assert!(is_subpath(&a, &a));
    }

    #[test]
    fn is_subpath_children(p in "(/[a-zA-Z]{0,5}){0,3}/?", child in "[a-z/]{0,8}") {
        let base = p.strip_suffix('/').unwrap_or(&p);
        let sub = format!("{base}/{child}");
        prop_assert!(is_subpath(&sub, &p));
        prop_assert!(is_subpath(base, &p));
        // A sibling that only shares a prefix is not a subpath.
        let sibling = format!("{base}x{child}");
        prop_assert!(!is_subpath(&sibling, &p));
    }

    #[test]
    fn subresources_never_panic(model in model_strategy(), path in any::<String>()) {
        let subs = subresources(model, &path);
        prop_assert!(subs.len() == 1 || subs.len() == 2);
    }

    #[test]
    fn subresources_shape(model in model_strategy(), path in kubelet_path()) {
        let subs = model.subresources(&path);
        let v = subs.to_vec();
        if v.len() == 2 {
            prop_assert!(model.fine_grained());
            prop_assert_eq!(v[1], Subresource::Proxy);
            prop_assert!(matches!(
                v[0],
                Subresource::Pods | Subresource::Healthz | Subresource::Configz | Subresource::Statusz
            ));
        }
        if model.version().minor() < 32 {
            prop_assert_eq!(v.len(), 1);
        }
        if !model.version().has_checkpoint() {
            prop_assert!(!v.contains(&Subresource::Checkpoint));
        }
        if model.version().minor() < 33 {
            prop_assert!(!v.contains(&Subresource::Statusz));
        }
        // Paths outside every kubelet prefix are proxy everywhere.
        if !["/stats", "/metrics", "/logs", "/checkpoint", "/pods", "/runningpods", "/healthz",
             "/configz", "/statusz", "/flagz"].iter().any(|p| is_subpath(&path, p)) {
            prop_assert_eq!(v, vec![Subresource::Proxy]);
        }
    }

    #[test]
    fn verb_only_for_five_methods(method in any::<String>()) {
        let verb = verb_for_method(&method);
        let known = ["POST", "GET", "PUT", "PATCH", "DELETE"].contains(&method.as_str());
        prop_assert_eq!(!verb.is_empty(), known);
    }

    #[test]
    fn version_parse_never_panics(s in any::<String>()) {
        if let Ok(v) = s.parse::<KubeletVersion>() {
            prop_assert!(v.minor() >= 21);
            prop_assert_eq!(v.to_string().parse::<KubeletVersion>().unwrap(), v);
        }
    }

    #[test]
    fn group_adder_idempotent(
        name in "[a-z:]{0,16}",
        groups in prop::collection::vec(
            prop::sample::select(vec!["a", "b", "system:authenticated", "system:unauthenticated", "system:masters"]),
            0..4,
        ),
    ) {
        let user = UserInfo::new(name.clone(), &groups);
        let once = add_authenticated_group(user.clone());
        prop_assert_eq!(add_authenticated_group(once.clone()), once.clone());
        prop_assert!(once.groups.starts_with(&user.groups));
        let has_marker = user
            .groups
            .iter()
            .any(|g| g == AUTHENTICATED_GROUP || g == UNAUTHENTICATED_GROUP);
        let added = once.groups.len() == user.groups.len() + 1;
        prop_assert_eq!(added, !has_marker && name != "system:anonymous");
    }
}
