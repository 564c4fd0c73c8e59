//! The kubelet's TLS policy (`tlsMinVersion`, `tlsCipherSuites`) carried over to Envoy.
//!
//! The kubelet takes Go's names: `tlsMinVersion` is one of `VersionTLS10` ... `VersionTLS13`
//! (empty: `VersionTLS12`, `DefaultTLSVersion` of `k8s.io/component-base/cli/flag`), and
//! `tlsCipherSuites` any name of Go's `tls.CipherSuites()` or `tls.InsecureCipherSuites()` plus the
//! two legacy ChaCha20 names (`ciphersuites_flag.go`). Envoy takes `TLSv1_0` ... `TLSv1_3` and
//! BoringSSL's OpenSSL-style names (`ECDHE-RSA-AES128-GCM-SHA256`).
//!
//! Three kinds of Go name need a decision:
//! - **TLS 1.3 suites** (`TLS_AES_128_GCM_SHA256`, ...): Go ignores them in `CipherSuites` (TLS 1.3
//!   suites are not configurable) and so does BoringSSL (Envoy's `cipher_suites` applies to TLS 1.2
//!   and older only). They are accepted and left out of Envoy's list. One case is not a no-op: a
//!   list holding *only* TLS 1.3 suites leaves Go no TLS 1.2 suite, so the kubelet can only speak
//!   TLS 1.3; Envoy then gets `TLSv1_3` as its minimum version (an empty Envoy list would mean
//!   "BoringSSL's defaults" and open TLS 1.2 again).
//! - **Suites Go accepts and BoringSSL cannot serve** (RC4, `TLS_RSA_WITH_AES_128_CBC_SHA256`,
//!   `TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA`): refused with the field named, as Envoy would refuse
//!   to start with them and dropping them silently would serve another policy than the kubelet's.
//! - **No list** (the kubelet uses Go's default suites): Envoy's cipher list is left empty, which
//!   means Envoy's own default list: ECDHE with AES-GCM or ChaCha20 only, a subset of Go's defaults.
//!
//! Every BoringSSL name here was checked against Envoy 1.40 (`envoy --mode validate`).

use serde::{Deserialize, Serialize};

use super::KubeletConfigError;

/// What Envoy's `tls_params` take from the kubelet's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyTls {
    /// `tls_minimum_protocol_version`, as Envoy spells it: `TLSv1_0` ... `TLSv1_3`.
    pub tls_minimum_protocol_version: String,
    /// `cipher_suites`, BoringSSL names, in the kubelet's order; empty means Envoy's defaults.
    pub cipher_suites: Vec<String>,
}

/// Go's TLS version names and Envoy's.
pub const TLS_VERSIONS: &[(&str, &str)] = &[
    ("VersionTLS10", "TLSv1_0"),
    ("VersionTLS11", "TLSv1_1"),
    ("VersionTLS12", "TLSv1_2"),
    ("VersionTLS13", "TLSv1_3"),
];

/// Envoy's name of the kubelet's default minimum version (`VersionTLS12`).
pub const DEFAULT_TLS_VERSION: &str = "TLSv1_2";

/// What a Go cipher suite name becomes in Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherMapping {
    /// A TLS 1.2 (and older) suite BoringSSL serves under this name.
    Envoy(&'static str),
    /// A TLS 1.3 suite: not configurable in Go nor in BoringSSL; left out.
    Tls13,
    /// Go accepts it, BoringSSL cannot serve it.
    Unsupported,
}

/// Every cipher suite name the kubelet accepts, and its Envoy mapping.
pub const CIPHER_SUITES: &[(&str, CipherMapping)] = {
    use CipherMapping::{Envoy, Tls13, Unsupported};
    &[
        // tls.CipherSuites(): TLS 1.3.
        ("TLS_AES_128_GCM_SHA256", Tls13),
        ("TLS_AES_256_GCM_SHA384", Tls13),
        ("TLS_CHACHA20_POLY1305_SHA256", Tls13),
        // tls.CipherSuites(): TLS 1.0-1.2.
        (
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
            Envoy("ECDHE-ECDSA-AES128-SHA"),
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
            Envoy("ECDHE-ECDSA-AES256-SHA"),
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
            Envoy("ECDHE-RSA-AES128-SHA"),
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
            Envoy("ECDHE-RSA-AES256-SHA"),
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            Envoy("ECDHE-ECDSA-AES128-GCM-SHA256"),
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            Envoy("ECDHE-ECDSA-AES256-GCM-SHA384"),
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            Envoy("ECDHE-RSA-AES128-GCM-SHA256"),
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            Envoy("ECDHE-RSA-AES256-GCM-SHA384"),
        ),
        (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            Envoy("ECDHE-RSA-CHACHA20-POLY1305"),
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            Envoy("ECDHE-ECDSA-CHACHA20-POLY1305"),
        ),
        // The legacy names ciphersuites_flag.go keeps.
        (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
            Envoy("ECDHE-RSA-CHACHA20-POLY1305"),
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
            Envoy("ECDHE-ECDSA-CHACHA20-POLY1305"),
        ),
        // tls.InsecureCipherSuites(), which the kubelet accepts too.
        ("TLS_RSA_WITH_RC4_128_SHA", Unsupported),
        ("TLS_RSA_WITH_3DES_EDE_CBC_SHA", Envoy("DES-CBC3-SHA")),
        ("TLS_RSA_WITH_AES_128_CBC_SHA", Envoy("AES128-SHA")),
        ("TLS_RSA_WITH_AES_256_CBC_SHA", Envoy("AES256-SHA")),
        ("TLS_RSA_WITH_AES_128_CBC_SHA256", Unsupported),
        (
            "TLS_RSA_WITH_AES_128_GCM_SHA256",
            Envoy("AES128-GCM-SHA256"),
        ),
        (
            "TLS_RSA_WITH_AES_256_GCM_SHA384",
            Envoy("AES256-GCM-SHA384"),
        ),
        ("TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", Unsupported),
        ("TLS_ECDHE_RSA_WITH_RC4_128_SHA", Unsupported),
        ("TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", Unsupported),
        (
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
            Envoy("ECDHE-ECDSA-AES128-SHA256"),
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
            Envoy("ECDHE-RSA-AES128-SHA256"),
        ),
    ]
};

/// Envoy's minimum version for the kubelet's `tlsMinVersion` (`None` or empty: the default).
pub fn envoy_tls_version(go_name: Option<&str>) -> Result<&'static str, KubeletConfigError> {
    let name = go_name.unwrap_or_default();
    if name.is_empty() {
        return Ok(DEFAULT_TLS_VERSION);
    }
    TLS_VERSIONS
        .iter()
        .find(|(go, _)| *go == name)
        .map(|(_, envoy)| *envoy)
        .ok_or_else(|| KubeletConfigError::Field {
            field: "tlsMinVersion".into(),
            message: format!(
                "unknown TLS version {name:?}: the kubelet takes VersionTLS10, VersionTLS11, VersionTLS12 or VersionTLS13"
            ),
        })
}

/// The Envoy mapping of one Go cipher suite name; the error names `field` (`tlsCipherSuites[2]`).
pub fn envoy_cipher(go_name: &str, field: &str) -> Result<CipherMapping, KubeletConfigError> {
    match CIPHER_SUITES.iter().find(|(go, _)| *go == go_name) {
        None => Err(KubeletConfigError::Field {
            field: field.to_string(),
            message: format!(
                "unknown cipher suite {go_name:?}: the kubelet takes the names of Go's crypto/tls (TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, ...)"
            ),
        }),
        Some((_, CipherMapping::Unsupported)) => Err(KubeletConfigError::Field {
            field: field.to_string(),
            message: format!(
                "cipher suite {go_name:?} is accepted by the kubelet but Envoy (BoringSSL) cannot serve it: remove it from tlsCipherSuites"
            ),
        }),
        Some((_, m)) => Ok(*m),
    }
}

/// Envoy's TLS parameters for the kubelet's `tlsMinVersion` and `tlsCipherSuites`.
pub fn envoy_tls(
    min_version: Option<&str>,
    cipher_suites: &[String],
) -> Result<EnvoyTls, KubeletConfigError> {
    let mut version = envoy_tls_version(min_version)?;
    let mut suites: Vec<String> = Vec::new();
    for (i, name) in cipher_suites.iter().enumerate() {
        if let CipherMapping::Envoy(envoy) = envoy_cipher(name, &format!("tlsCipherSuites[{i}]"))? {
            if !suites.iter().any(|s| s == envoy) {
                suites.push(envoy.to_string());
            }
        }
    }
    if !cipher_suites.is_empty() && suites.is_empty() {
        // Only TLS 1.3 suites: Go has no TLS 1.2 suite left, so the kubelet speaks TLS 1.3 only.
        version = "TLSv1_3";
    }
    Ok(EnvoyTls {
        tls_minimum_protocol_version: version.to_string(),
        cipher_suites: suites,
    })
}
