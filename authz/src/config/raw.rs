//! Stage one of the filter configuration: the plugin JSON as written, deserialised by serde derive
//! (unknown fields are an error; an absent or `null` field is `None`, so stage two can tell it
//! from a default). Values that need no context are typed here already: Go durations and bounded
//! sizes. Everything that depends on other fields is checked in stage two ([`super::Config`]).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::Deserialize;

use super::duration::parse_go_duration;

/// The whole plugin configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
pub(super) struct RawConfig {
    pub node_name: Option<String>,
    pub kubelet_version: Option<String>,
    pub feature_gates: Option<RawFeatureGates>,
    pub authentication: Option<RawAuthentication>,
    pub authorization: Option<RawAuthorization>,
    pub api_server: Option<RawApiServer>,
    pub enforcement: Option<String>,
    pub audit: Option<RawAudit>,
    pub limits: Option<RawLimits>,
}

/// `featureGates`: only the gates the kubelet's authentication and authorization read.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(super) struct RawFeatureGates {
    #[serde(rename = "KubeletFineGrainedAuthz")]
    pub kubelet_fine_grained_authz: Option<bool>,
    #[serde(rename = "AllowParsingUserUIDFromCertAuth")]
    pub allow_parsing_user_uid_from_cert_auth: Option<bool>,
}

/// `authentication`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
pub(super) struct RawAuthentication {
    pub x509: Option<RawEnabled>,
    pub webhook: Option<RawAuthnWebhook>,
    pub anonymous: Option<RawEnabled>,
}

/// `{ "enabled": bool }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
pub(super) struct RawEnabled {
    pub enabled: Option<bool>,
}

/// `authentication.webhook`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
pub(super) struct RawAuthnWebhook {
    pub enabled: Option<bool>,
    #[serde(rename = "cacheTTL")]
    pub cache_ttl: Option<GoDuration>,
}

/// `authorization`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
pub(super) struct RawAuthorization {
    pub mode: Option<String>,
    pub webhook: Option<RawAuthzWebhook>,
    pub strict_upgrade_verb: Option<bool>,
}

/// `authorization.webhook`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(super) struct RawAuthzWebhook {
    #[serde(rename = "cacheAuthorizedTTL")]
    pub cache_authorized_ttl: Option<GoDuration>,
    #[serde(rename = "cacheUnauthorizedTTL")]
    pub cache_unauthorized_ttl: Option<GoDuration>,
}

/// `audit`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
pub(super) struct RawAudit {
    pub enabled: Option<bool>,
    pub policy: Option<RawAuditPolicy>,
}

/// `audit.policy`: a subset of the audit.k8s.io/v1 `Policy`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
pub(super) struct RawAuditPolicy {
    pub rules: Option<Vec<RawAuditRule>>,
}

/// `audit.policy.rules[i]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
pub(super) struct RawAuditRule {
    pub level: Option<String>,
    pub users: Option<Vec<String>>,
    pub user_groups: Option<Vec<String>>,
    pub verbs: Option<Vec<String>>,
    pub subresources: Option<Vec<String>>,
    pub outcomes: Option<Vec<String>>,
}

/// `apiServer`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
pub(super) struct RawApiServer {
    pub cluster: Option<String>,
    pub authority: Option<String>,
    pub bearer_token: Option<String>,
    pub timeout: Option<GoDuration>,
    pub stale_if_error: Option<GoDuration>,
}

/// `limits`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
pub(super) struct RawLimits {
    pub token_cache_size: Option<Size>,
    pub sar_cache_size: Option<Size>,
    pub max_inflight: Option<Size>,
    pub max_waiters: Option<Size>,
}

/// A Go duration string (`2m0s`), refused if negative.
#[derive(Debug, Clone, Copy)]
pub(super) struct GoDuration(pub Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<GoDuration, E> {
                parse_go_duration(s).map(GoDuration).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// The largest cache, queue or waiter count a limit may name.
pub(super) const MAX_SIZE: u64 = 1_000_000;

/// A cache or queue size from 1 to [`MAX_SIZE`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Size(pub usize);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a whole number from 1 to {MAX_SIZE}")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Size, E> {
                match usize::try_from(n) {
                    Ok(size) if (1..=MAX_SIZE).contains(&n) => Ok(Size(size)),
                    _ => Err(E::invalid_value(Unexpected::Unsigned(n), &self)),
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Size, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::invalid_value(Unexpected::Signed(n), &self)),
                }
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Size, E> {
                Err(E::invalid_value(Unexpected::Float(n), &self))
            }
        }
        d.deserialize_u64(V)
    }
}
