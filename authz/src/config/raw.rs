//! Stage one of the filter configuration: the plugin JSON as written, read into raw structs
//! (unknown fields are an error; an absent or `null` field is `None`, so stage two can tell it
//! from a default). Values that need no context are typed here already: Go durations and bounded
//! sizes. Everything that depends on other fields is checked in stage two ([`super::Config`]).
//!
//! The structs are read by hand from the `serde_json::Value` rather than by serde derive: the
//! derive's visitors, one copy per struct and per access path, were 79 KB of the filter's module
//! (docs/PERFORMANCE.md "Module size"). The readers keep the derive's contract exactly, which
//! `crate::raw` gives the other loaders: the entries of an object are taken in order and the first
//! error wins, an unknown field names the known ones in declaration order, and every message
//! reads as `crate::raw` words it (`expected true or false, got a string`).

use std::time::Duration;

use serde_json::{Map, Value};

use super::duration::parse_go_duration;
use crate::raw::{join, kind_of, FieldError};

type Read<T> = Result<T, FieldError>;

fn error(path: &str, message: String) -> FieldError {
    FieldError {
        path: path.to_string(),
        message,
    }
}

/// `expected WHAT, got KIND`, as a type error of `crate::raw` reads.
fn expected(path: &str, what: &str, got: &Value) -> FieldError {
    error(path, format!("expected {what}, got {}", kind_of(got)))
}

/// The entries of the object at `path`, each handed to `field` with its own path; a key not in
/// `known` is an error naming it and the known fields.
fn object<'a>(
    value: &'a Value,
    path: &str,
    known: &[&str],
    mut field: impl FnMut(&str, &'a Value, &str) -> Read<()>,
) -> Read<()> {
    let map: &Map<String, Value> = match value {
        Value::Object(map) => map,
        other => return Err(expected(path, "an object", other)),
    };
    for (key, value) in map {
        let at = join(path, key);
        if !known.contains(&key.as_str()) {
            return Err(error(
                &at,
                format!("unknown field; known fields here: {}", known.join(", ")),
            ));
        }
        field(key, value, &at)?;
    }
    Ok(())
}

/// An optional field: `null` is absent.
fn optional<'a, T>(value: &'a Value, read: impl FnOnce(&'a Value) -> Read<T>) -> Read<Option<T>> {
    match value {
        Value::Null => Ok(None),
        value => read(value).map(Some),
    }
}

fn string(value: &Value, path: &str) -> Read<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => Err(expected(path, "a string", other)),
    }
}

fn opt_string(value: &Value, path: &str) -> Read<Option<String>> {
    optional(value, |v| string(v, path))
}

fn opt_bool(value: &Value, path: &str) -> Read<Option<bool>> {
    optional(value, |v| match v {
        Value::Bool(b) => Ok(*b),
        other => Err(expected(path, "true or false", other)),
    })
}

fn opt_strings(value: &Value, path: &str) -> Read<Option<Vec<String>>> {
    optional(value, |v| match v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| string(item, &format!("{path}[{i}]")))
            .collect(),
        other => Err(expected(path, "a list", other)),
    })
}

fn opt_duration(value: &Value, path: &str) -> Read<Option<GoDuration>> {
    optional(value, |v| match v {
        Value::String(s) => parse_go_duration(s)
            .map(GoDuration)
            .map_err(|m| error(path, m)),
        other => Err(expected(path, "a string", other)),
    })
}

fn opt_size(value: &Value, path: &str) -> Read<Option<Size>> {
    optional(value, |v| {
        let what = format!("a whole number from 1 to {MAX_SIZE}");
        let Value::Number(n) = v else {
            return Err(expected(path, &what, v));
        };
        let got = match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => match usize::try_from(u) {
                Ok(size) if (1..=MAX_SIZE).contains(&u) => return Ok(Size(size)),
                _ => u.to_string(),
            },
            (None, Some(i), _) => i.to_string(),
            (None, None, Some(f)) => f.to_string(),
            (None, None, None) => n.to_string(),
        };
        Err(error(path, format!("expected {what}, got {got}")))
    })
}

/// The whole plugin configuration.
#[derive(Debug, Default)]
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
#[derive(Debug, Default)]
pub(super) struct RawFeatureGates {
    pub kubelet_fine_grained_authz: Option<bool>,
    pub allow_parsing_user_uid_from_cert_auth: Option<bool>,
}

/// `authentication`.
#[derive(Debug, Default)]
pub(super) struct RawAuthentication {
    pub x509: Option<RawEnabled>,
    pub webhook: Option<RawAuthnWebhook>,
    pub anonymous: Option<RawEnabled>,
}

/// `{ "enabled": bool }`.
#[derive(Debug, Default)]
pub(super) struct RawEnabled {
    pub enabled: Option<bool>,
}

/// `authentication.webhook`.
#[derive(Debug, Default)]
pub(super) struct RawAuthnWebhook {
    pub enabled: Option<bool>,
    pub cache_ttl: Option<GoDuration>,
}

/// `authorization`.
#[derive(Debug, Default)]
pub(super) struct RawAuthorization {
    pub mode: Option<String>,
    pub webhook: Option<RawAuthzWebhook>,
    pub strict_upgrade_verb: Option<bool>,
}

/// `authorization.webhook`.
#[derive(Debug, Default)]
pub(super) struct RawAuthzWebhook {
    pub cache_authorized_ttl: Option<GoDuration>,
    pub cache_unauthorized_ttl: Option<GoDuration>,
}

/// `audit`.
#[derive(Debug, Default)]
pub(super) struct RawAudit {
    pub enabled: Option<bool>,
    pub policy: Option<RawAuditPolicy>,
}

/// `audit.policy`: a subset of the audit.k8s.io/v1 `Policy`.
#[derive(Debug, Default)]
pub(super) struct RawAuditPolicy {
    pub rules: Option<Vec<RawAuditRule>>,
}

/// `audit.policy.rules[i]`.
#[derive(Debug, Default)]
pub(super) struct RawAuditRule {
    pub level: Option<String>,
    pub users: Option<Vec<String>>,
    pub user_groups: Option<Vec<String>>,
    pub verbs: Option<Vec<String>>,
    pub subresources: Option<Vec<String>>,
    pub outcomes: Option<Vec<String>>,
}

/// `apiServer`.
#[derive(Debug, Default)]
pub(super) struct RawApiServer {
    pub cluster: Option<String>,
    pub authority: Option<String>,
    pub bearer_token: Option<String>,
    pub timeout: Option<GoDuration>,
    pub stale_if_error: Option<GoDuration>,
}

/// `limits`.
#[derive(Debug, Default)]
pub(super) struct RawLimits {
    pub token_cache_size: Option<Size>,
    pub sar_cache_size: Option<Size>,
    pub max_inflight: Option<Size>,
    pub max_waiters: Option<Size>,
}

/// A Go duration string (`2m0s`), refused if negative.
#[derive(Debug, Clone, Copy)]
pub(super) struct GoDuration(pub Duration);

/// The largest cache, queue or waiter count a limit may name.
pub(super) const MAX_SIZE: u64 = 1_000_000;

/// A cache or queue size from 1 to [`MAX_SIZE`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Size(pub usize);

impl RawConfig {
    /// Read the whole configuration (`path` is empty: the value itself).
    pub(super) fn read(value: &Value) -> Read<RawConfig> {
        let mut c = RawConfig::default();
        let known = [
            "nodeName",
            "kubeletVersion",
            "featureGates",
            "authentication",
            "authorization",
            "apiServer",
            "enforcement",
            "audit",
            "limits",
        ];
        object(value, "", &known, |key, v, at| {
            match key {
                "nodeName" => c.node_name = opt_string(v, at)?,
                "kubeletVersion" => c.kubelet_version = opt_string(v, at)?,
                "featureGates" => c.feature_gates = optional(v, |v| RawFeatureGates::read(v, at))?,
                "authentication" => {
                    c.authentication = optional(v, |v| RawAuthentication::read(v, at))?;
                }
                "authorization" => {
                    c.authorization = optional(v, |v| RawAuthorization::read(v, at))?;
                }
                "apiServer" => c.api_server = optional(v, |v| RawApiServer::read(v, at))?,
                "enforcement" => c.enforcement = opt_string(v, at)?,
                "audit" => c.audit = optional(v, |v| RawAudit::read(v, at))?,
                _ => c.limits = optional(v, |v| RawLimits::read(v, at))?,
            }
            Ok(())
        })?;
        Ok(c)
    }
}

impl RawFeatureGates {
    fn read(value: &Value, path: &str) -> Read<Self> {
        let mut g = RawFeatureGates::default();
        let known = ["KubeletFineGrainedAuthz", "AllowParsingUserUIDFromCertAuth"];
        object(value, path, &known, |key, v, at| {
            match key {
                "KubeletFineGrainedAuthz" => g.kubelet_fine_grained_authz = opt_bool(v, at)?,
                _ => g.allow_parsing_user_uid_from_cert_auth = opt_bool(v, at)?,
            }
            Ok(())
        })?;
        Ok(g)
    }
}

impl RawAuthentication {
    fn read(value: &Value, path: &str) -> Read<Self> {
        let mut a = RawAuthentication::default();
        object(
            value,
            path,
            &["x509", "webhook", "anonymous"],
            |key, v, at| {
                match key {
                    "x509" => a.x509 = optional(v, |v| RawEnabled::read(v, at))?,
                    "webhook" => a.webhook = optional(v, |v| RawAuthnWebhook::read(v, at))?,
                    _ => a.anonymous = optional(v, |v| RawEnabled::read(v, at))?,
                }
                Ok(())
            },
        )?;
        Ok(a)
    }
}

impl RawEnabled {
    fn read(value: &Value, path: &str) -> Read<Self> {
        let mut e = RawEnabled::default();
        object(value, path, &["enabled"], |_, v, at| {
            e.enabled = opt_bool(v, at)?;
            Ok(())
        })?;
        Ok(e)
    }
}

impl RawAuthnWebhook {
    fn read(value: &Value, path: &str) -> Read<Self> {
        let mut w = RawAuthnWebhook::default();
        object(value, path, &["enabled", "cacheTTL"], |key, v, at| {
            match key {
                "enabled" => w.enabled = opt_bool(v, at)?,
                _ => w.cache_ttl = opt_duration(v, at)?,
            }
            Ok(())
        })?;
        Ok(w)
    }
}

impl RawAuthorization {
    fn read(value: &Value, path: &str) -> Read<Self> {
        let mut a = RawAuthorization::default();
        let known = ["mode", "webhook", "strictUpgradeVerb"];
        object(value, path, &known, |key, v, at| {
            match key {
                "mode" => a.mode = opt_string(v, at)?,
                "webhook" => a.webhook = optional(v, |v| RawAuthzWebhook::read(v, at))?,
                _ => a.strict_upgrade_verb = opt_bool(v, at)?,
            }
            Ok(())
        })?;
        Ok(a)
    }
}

impl RawAuthzWebhook {
    fn read(value: &Value, path: &str) -> Read<Self> {
        let mut w = RawAuthzWebhook::default();
        let known = ["cacheAuthorizedTTL", "cacheUnauthorizedTTL"];
        object(value, path, &known, |key, v, at| {
            match key {
                "cacheAuthorizedTTL" => w.cache_authorized_ttl = opt_duration(v, at)?,
                _ => w.cache_unauthorized_ttl = opt_duration(v, at)?,
            }
            Ok(())
        })?;
        Ok(w)
    }
}

impl RawAudit {
    fn read(value: &Value, path: &str) -> Read<Self> {
        let mut a = RawAudit::default();
        object(value, path, &["enabled", "policy"], |key, v, at| {
            match key {
                "enabled" => a.enabled = opt_bool(v, at)?,
                _ => a.policy = optional(v, |v| RawAuditPolicy::read(v, at))?,
            }
            Ok(())
        })?;
        Ok(a)
    }
}

impl RawAuditPolicy {
    fn read(value: &Value, path: &str) -> Read<Self> {
        let mut p = RawAuditPolicy::default();
        object(value, path, &["rules"], |_, v, at| {
            p.rules = optional(v, |v| match v {
                Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| RawAuditRule::read(item, &format!("{at}[{i}]")))
                    .collect(),
                other => Err(expected(at, "a list", other)),
            })?;
            Ok(())
        })?;
        Ok(p)
    }
}

impl RawAuditRule {
    fn read(value: &Value, path: &str) -> Read<Self> {
        let mut r = RawAuditRule::default();
        let known = [
            "level",
            "users",
            "userGroups",
            "verbs",
            "subresources",
            "outcomes",
        ];
        object(value, path, &known, |key, v, at| {
            match key {
                "level" => r.level = opt_string(v, at)?,
                "users" => r.users = opt_strings(v, at)?,
                "userGroups" => r.user_groups = opt_strings(v, at)?,
                "verbs" => r.verbs = opt_strings(v, at)?,
                "subresources" => r.subresources = opt_strings(v, at)?,
                _ => r.outcomes = opt_strings(v, at)?,
            }
            Ok(())
        })?;
        Ok(r)
    }
}

impl RawApiServer {
    fn read(value: &Value, path: &str) -> Read<Self> {
        let mut a = RawApiServer::default();
        let known = [
            "cluster",
            "authority",
            "bearerToken",
            "timeout",
            "staleIfError",
        ];
        object(value, path, &known, |key, v, at| {
            match key {
                "cluster" => a.cluster = opt_string(v, at)?,
                "authority" => a.authority = opt_string(v, at)?,
                "bearerToken" => a.bearer_token = opt_string(v, at)?,
                "timeout" => a.timeout = opt_duration(v, at)?,
                _ => a.stale_if_error = opt_duration(v, at)?,
            }
            Ok(())
        })?;
        Ok(a)
    }
}

impl RawLimits {
    fn read(value: &Value, path: &str) -> Read<Self> {
        let mut l = RawLimits::default();
        let known = [
            "tokenCacheSize",
            "sarCacheSize",
            "maxInflight",
            "maxWaiters",
        ];
        object(value, path, &known, |key, v, at| {
            match key {
                "tokenCacheSize" => l.token_cache_size = opt_size(v, at)?,
                "sarCacheSize" => l.sar_cache_size = opt_size(v, at)?,
                "maxInflight" => l.max_inflight = opt_size(v, at)?,
                _ => l.max_waiters = opt_size(v, at)?,
            }
            Ok(())
        })?;
        Ok(l)
    }
}
