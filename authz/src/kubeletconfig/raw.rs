//! Stage one of a KubeletConfiguration file: the few fields that decide API access and what the
//! proxy serves (address, port, TLS policy), as written. Other fields are ignored here (the
//! unknown-field check of the effective configuration is `fields`); an absent or `null` field is
//! `None`, so stage two can tell "not set" from the default.

use serde::Deserialize;

/// `kind` and `apiVersion`, read before anything else.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "a mapping")]
pub(super) struct RawHead {
    pub kind: Option<String>,
    pub api_version: Option<String>,
}

/// The fields of a KubeletConfiguration this module reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "a mapping")]
pub(super) struct RawKubeletConfiguration {
    pub authentication: Option<RawAuthentication>,
    pub authorization: Option<RawAuthorization>,
    pub read_only_port: Option<i64>,
    pub feature_gates: Option<RawFeatureGates>,
    pub address: Option<String>,
    pub port: Option<i64>,
    pub tls_min_version: Option<String>,
    pub tls_cipher_suites: Option<Vec<String>>,
}

/// `authentication`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "a mapping")]
pub(super) struct RawAuthentication {
    pub anonymous: Option<RawEnabled>,
    pub webhook: Option<RawEnabled>,
    pub x509: Option<RawX509>,
}

/// `{ enabled: bool }`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "a mapping")]
pub(super) struct RawEnabled {
    pub enabled: Option<bool>,
}

/// `authentication.x509`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a mapping")]
pub(super) struct RawX509 {
    #[serde(rename = "clientCAFile")]
    pub client_ca_file: Option<String>,
}

/// `authorization`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "a mapping")]
pub(super) struct RawAuthorization {
    pub mode: Option<String>,
}

/// `featureGates`: only the gates the kubelet's authentication and authorization read.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a mapping")]
pub(super) struct RawFeatureGates {
    #[serde(rename = "KubeletFineGrainedAuthz")]
    pub kubelet_fine_grained_authz: Option<bool>,
    #[serde(rename = "AllowParsingUserUIDFromCertAuth")]
    pub allow_parsing_user_uid_from_cert_auth: Option<bool>,
}
