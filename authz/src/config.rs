//! The filter configuration (DESIGN.md "Filter configuration"), in two stages: the JSON is walked
//! field by field (so every error names its field, e.g. `authorization.mode: expected Webhook or
//! AlwaysAllow, got "RBAC"`), defaults are the kubelet's config-file defaults, and the result is a
//! checked [`Config`] that the engine reads on every request without further validation.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::kubelet::{FeatureGates, KubeletModel, KubeletVersion};

/// A configuration error: the dotted field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// Dotted path of the field (`authentication.webhook.cacheTTL`), or `configuration`.
    pub field: String,
    /// What is wrong, and what is expected.
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// `authorization.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationMode {
    /// SubjectAccessReview against the API server (the config-file default).
    Webhook,
    /// Allow every authenticated request (attributes are still built and audited).
    AlwaysAllow,
}

/// `enforcement`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Deny what the kubelet would deny.
    Enforce,
    /// Decide and audit, but forward everything.
    Shadow,
}

/// Where and how the filter calls the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiServer {
    /// Envoy cluster name for TokenReview and SubjectAccessReview calls.
    pub cluster: String,
    /// `:authority` of those calls.
    pub authority: String,
    /// Sent as `Authorization: Bearer` on those calls when non-empty.
    pub bearer_token: String,
    /// Per-call timeout.
    pub timeout: Duration,
    /// How long past expiry a cached answer may stand in for a failed call (0 = off).
    pub stale_if_error: Duration,
}

/// Bounds on every cache and queue (not kubelet settings: the kubelet's token cache is unbounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Token cache entries.
    pub token_cache_size: usize,
    /// SubjectAccessReview cache entries (the kubelet's is 8192).
    pub sar_cache_size: usize,
    /// Distinct callouts in flight at once per VM.
    pub max_inflight: usize,
    /// Requests waiting on one in-flight callout.
    pub max_waiters: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            token_cache_size: 4096,
            sar_cache_size: 8192,
            max_inflight: 1024,
            max_waiters: 1024,
        }
    }
}

/// The checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The node name: the resource name in every SubjectAccessReview.
    pub node_name: String,
    /// Kubelet version and effective fine-grained gate.
    pub model: KubeletModel,
    /// `authentication.x509.enabled`.
    pub x509_enabled: bool,
    /// `authentication.webhook.enabled`.
    pub webhook_authn_enabled: bool,
    /// `authentication.webhook.cacheTTL`.
    pub token_cache_ttl: Duration,
    /// `authentication.anonymous.enabled`.
    pub anonymous_enabled: bool,
    /// `authorization.mode`.
    pub mode: AuthorizationMode,
    /// `authorization.webhook.cacheAuthorizedTTL`.
    pub authorized_ttl: Duration,
    /// `authorization.webhook.cacheUnauthorizedTTL`.
    pub unauthorized_ttl: Duration,
    /// `authorization.strictUpgradeVerb`.
    pub strict_upgrade_verb: bool,
    /// `apiServer`.
    pub api_server: ApiServer,
    /// `enforcement`.
    pub enforcement: Enforcement,
    /// `audit.enabled`.
    pub audit_enabled: bool,
    /// `limits`.
    pub limits: Limits,
}

impl Config {
    /// A configuration with every default, for a node name.
    pub fn with_defaults(node_name: &str) -> Config {
        Config {
            node_name: node_name.to_string(),
            model: KubeletModel::for_version(KubeletVersion::LATEST),
            x509_enabled: true,
            webhook_authn_enabled: true,
            token_cache_ttl: Duration::from_secs(120),
            anonymous_enabled: false,
            mode: AuthorizationMode::Webhook,
            authorized_ttl: Duration::from_secs(300),
            unauthorized_ttl: Duration::from_secs(30),
            strict_upgrade_verb: true,
            api_server: ApiServer {
                cluster: "kube-apiserver".into(),
                authority: "kubernetes.default.svc".into(),
                bearer_token: String::new(),
                timeout: Duration::from_secs(10),
                stale_if_error: Duration::ZERO,
            },
            enforcement: Enforcement::Enforce,
            audit_enabled: true,
            limits: Limits::default(),
        }
    }

    /// Parse and check the plugin configuration JSON.
    pub fn from_json(text: &[u8]) -> Result<Config, ConfigError> {
        let value: Value = serde_json::from_slice(text)
            .map_err(|e| err("configuration", format!("not valid JSON: {e}")))?;
        Config::from_value(&value)
    }

    /// Check a parsed JSON value.
    pub fn from_value(value: &Value) -> Result<Config, ConfigError> {
        let root = Obj::new(
            value,
            "",
            &[
                "nodeName",
                "kubeletVersion",
                "featureGates",
                "authentication",
                "authorization",
                "apiServer",
                "enforcement",
                "audit",
                "limits",
            ],
        )?;
        let node_name = root.string("nodeName")?.ok_or_else(|| {
            err(
                "nodeName",
                "required: the name of the Node object this kubelet registers as",
            )
        })?;
        if node_name.is_empty() {
            return Err(err("nodeName", "must not be empty"));
        }
        let mut c = Config::with_defaults(&node_name);

        let version = match root.string("kubeletVersion")? {
            Some(v) => v
                .parse::<KubeletVersion>()
                .map_err(|e| err("kubeletVersion", e.to_string()))?,
            None => KubeletVersion::LATEST,
        };
        let mut gates = FeatureGates::default();
        if let Some(g) = root.object("featureGates", &["KubeletFineGrainedAuthz"])? {
            gates.kubelet_fine_grained_authz = g.bool("KubeletFineGrainedAuthz")?;
        }
        c.model = KubeletModel::new(version, gates).map_err(|e| {
            err(
                "featureGates.KubeletFineGrainedAuthz",
                strip_field(&e.to_string()),
            )
        })?;

        if let Some(a) = root.object("authentication", &["x509", "webhook", "anonymous"])? {
            if let Some(x) = a.object("x509", &["enabled"])? {
                c.x509_enabled = x.bool("enabled")?.unwrap_or(c.x509_enabled);
            }
            if let Some(w) = a.object("webhook", &["enabled", "cacheTTL"])? {
                c.webhook_authn_enabled = w.bool("enabled")?.unwrap_or(c.webhook_authn_enabled);
                c.token_cache_ttl = w.duration("cacheTTL")?.unwrap_or(c.token_cache_ttl);
            }
            if let Some(x) = a.object("anonymous", &["enabled"])? {
                c.anonymous_enabled = x.bool("enabled")?.unwrap_or(c.anonymous_enabled);
            }
        }
        if !c.x509_enabled && !c.webhook_authn_enabled && !c.anonymous_enabled {
            return Err(err(
                "authentication",
                "no authentication method configured: enable x509, webhook or anonymous (the kubelet refuses to start)",
            ));
        }

        if let Some(a) = root.object("authorization", &["mode", "webhook", "strictUpgradeVerb"])? {
            if let Some(m) = a.string("mode")? {
                c.mode = match m.as_str() {
                    "Webhook" => AuthorizationMode::Webhook,
                    "AlwaysAllow" => AuthorizationMode::AlwaysAllow,
                    "" => {
                        return Err(err(
                            "authorization.mode",
                            "no authorization mode specified: expected Webhook or AlwaysAllow",
                        ))
                    }
                    other => {
                        return Err(err(
                            "authorization.mode",
                            format!("expected Webhook or AlwaysAllow, got {other:?}"),
                        ))
                    }
                };
            }
            if let Some(w) = a.object("webhook", &["cacheAuthorizedTTL", "cacheUnauthorizedTTL"])? {
                c.authorized_ttl = w
                    .duration("cacheAuthorizedTTL")?
                    .unwrap_or(c.authorized_ttl);
                c.unauthorized_ttl = w
                    .duration("cacheUnauthorizedTTL")?
                    .unwrap_or(c.unauthorized_ttl);
            }
            c.strict_upgrade_verb = a
                .bool("strictUpgradeVerb")?
                .unwrap_or(c.strict_upgrade_verb);
        }

        if let Some(s) = root.object(
            "apiServer",
            &[
                "cluster",
                "authority",
                "bearerToken",
                "timeout",
                "staleIfError",
            ],
        )? {
            if let Some(v) = s.string("cluster")? {
                if v.is_empty() {
                    return Err(err(
                        "apiServer.cluster",
                        "must not be empty: name the Envoy cluster of the API server",
                    ));
                }
                c.api_server.cluster = v;
            }
            if let Some(v) = s.string("authority")? {
                if v.is_empty() {
                    return Err(err("apiServer.authority", "must not be empty"));
                }
                c.api_server.authority = v;
            }
            if let Some(v) = s.string("bearerToken")? {
                if v.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                    return Err(err(
                        "apiServer.bearerToken",
                        "must not contain spaces or control characters",
                    ));
                }
                c.api_server.bearer_token = v;
            }
            if let Some(t) = s.duration("timeout")? {
                if t.is_zero() {
                    return Err(err("apiServer.timeout", "must be greater than 0s"));
                }
                c.api_server.timeout = t;
            }
            c.api_server.stale_if_error = s.duration("staleIfError")?.unwrap_or(Duration::ZERO);
        }

        if let Some(e) = root.string("enforcement")? {
            c.enforcement = match e.as_str() {
                "Enforce" => Enforcement::Enforce,
                "Shadow" => Enforcement::Shadow,
                other => {
                    return Err(err(
                        "enforcement",
                        format!("expected Enforce or Shadow, got {other:?}"),
                    ))
                }
            };
        }
        if let Some(a) = root.object("audit", &["enabled"])? {
            c.audit_enabled = a.bool("enabled")?.unwrap_or(c.audit_enabled);
        }
        if let Some(l) = root.object(
            "limits",
            &[
                "tokenCacheSize",
                "sarCacheSize",
                "maxInflight",
                "maxWaiters",
            ],
        )? {
            c.limits.token_cache_size = l
                .size("tokenCacheSize")?
                .unwrap_or(c.limits.token_cache_size);
            c.limits.sar_cache_size = l.size("sarCacheSize")?.unwrap_or(c.limits.sar_cache_size);
            c.limits.max_inflight = l.size("maxInflight")?.unwrap_or(c.limits.max_inflight);
            c.limits.max_waiters = l.size("maxWaiters")?.unwrap_or(c.limits.max_waiters);
        }
        Ok(c)
    }
}

fn strip_field(msg: &str) -> String {
    msg.strip_prefix("featureGates.KubeletFineGrainedAuthz: ")
        .unwrap_or(msg)
        .to_string()
}

/// One JSON object being checked, with its dotted path.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    fn new(value: &'a Value, path: &str, known: &[&str]) -> Result<Self, ConfigError> {
        let field = if path.is_empty() {
            "configuration"
        } else {
            path
        };
        let map = value
            .as_object()
            .ok_or_else(|| err(field, format!("expected an object, got {}", kind(value))))?;
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                return Err(err(
                    &join(path, key),
                    format!("unknown field; known fields here: {}", known.join(", ")),
                ));
            }
        }
        Ok(Obj {
            map,
            path: path.to_string(),
        })
    }

    fn field(&self, key: &str) -> String {
        join(&self.path, key)
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn object(&self, key: &str, known: &[&str]) -> Result<Option<Obj<'a>>, ConfigError> {
        self.get(key)
            .map(|v| Obj::new(v, &self.field(key), known))
            .transpose()
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(err(
                &self.field(key),
                format!("expected a string, got {}", kind(v)),
            )),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(err(
                &self.field(key),
                format!("expected true or false, got {}", kind(v)),
            )),
        }
    }

    fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => parse_go_duration(&s)
                .map(Some)
                .map_err(|m| err(&self.field(key), m)),
        }
    }

    fn size(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (1..=1_000_000).contains(&n) => {
                    Ok(Some(usize::try_from(n).unwrap_or(1_000_000)))
                }
                _ => Err(err(
                    &self.field(key),
                    format!("expected a whole number from 1 to 1000000, got {v}"),
                )),
            },
        }
    }
}

/// The dotted path of `key` under `path`. A key that is empty or holds anything but letters,
/// digits, `_` and `-` is written as a JSON string (`authentication.""`, `"a.b"`), so that an
/// error always names a field and the name cannot be mistaken for another path (found by
/// `cargo fuzz run config`: `{"":{}}` gave an error naming no field).
fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if plain {
        key.to_string()
    } else {
        serde_json::to_string(key).unwrap_or_else(|_| "\"?\"".to_string())
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parse a Go duration string (`2m0s`, `30s`, `1h30m`, `500ms`, `1.5s`, `0`). Negative durations
/// are refused (every duration here is a TTL or a timeout).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("{s:?} is not a duration: expected a Go duration such as \"2m0s\", \"30s\" or \"500ms\"")
    };
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(format!(
            "{s:?} is negative: expected a duration of 0s or more"
        ));
    }
    let s2 = s.strip_prefix('+').unwrap_or(s);
    if s2.is_empty() {
        return Err(bad());
    }
    let mut rest = s2;
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(bad());
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| bad())?
        };
        let mut frac_ns: u128 = 0;
        let mut scale: u128 = unit_ns;
        for d in frac_part.bytes() {
            scale /= 10;
            frac_ns += u128::from(d - b'0') * scale;
        }
        total_ns = total_ns
            .checked_add(int.checked_mul(unit_ns).ok_or_else(bad)?)
            .and_then(|t| t.checked_add(frac_ns))
            .ok_or_else(bad)?;
        rest = next;
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| bad())?;
    let nanos = u32::try_from(total_ns % 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("2m0s", 120_000)]
    #[case("30s", 30_000)]
    #[case("5m0s", 300_000)]
    #[case("1h30m", 5_400_000)]
    #[case("500ms", 500)]
    #[case("1.5s", 1_500)]
    #[case("0s", 0)]
    #[case("0", 0)]
    #[case("+10s", 10_000)]
    #[case("1m30.5s", 90_500)]
    #[case("2000us", 2)]
    fn go_durations(#[case] s: &str, #[case] ms: u128) {
        assert_eq!(parse_go_duration(s).unwrap().as_millis(), ms);
    }

    #[rstest]
    #[case("")]
    #[case("10")]
    #[case("s")]
    #[case("1d")]
    #[case("-5s")]
    #[case("1..5s")]
    #[case("5 s")]
    #[case("1.s2")]
    fn bad_durations(#[case] s: &str) {
        assert!(parse_go_duration(s).is_err(), "{s}");
    }

    #[test]
    fn defaults_are_the_kubelet_config_file_defaults() {
        let c = Config::from_json(br#"{"nodeName":"n1"}"#).unwrap();
        assert_eq!(c, Config::with_defaults("n1"));
        assert!(!c.anonymous_enabled);
        assert!(c.webhook_authn_enabled);
        assert_eq!(c.mode, AuthorizationMode::Webhook);
        assert_eq!(c.token_cache_ttl, Duration::from_secs(120));
        assert_eq!(c.authorized_ttl, Duration::from_secs(300));
        assert_eq!(c.unauthorized_ttl, Duration::from_secs(30));
        assert!(c.strict_upgrade_verb);
        assert_eq!(c.model.version(), KubeletVersion::LATEST);
        assert!(c.model.fine_grained());
    }

    #[test]
    fn full_design_example_parses() {
        let c = Config::from_json(
            br#"{
          "nodeName": "worker-1", "kubeletVersion": "1.33",
          "featureGates": { "KubeletFineGrainedAuthz": false },
          "authentication": { "x509": { "enabled": true }, "webhook": { "enabled": true, "cacheTTL": "1m" }, "anonymous": { "enabled": true } },
          "authorization": { "mode": "AlwaysAllow", "webhook": { "cacheAuthorizedTTL": "10s", "cacheUnauthorizedTTL": "0s" }, "strictUpgradeVerb": false },
          "apiServer": { "cluster": "api", "authority": "k8s", "bearerToken": "t0k", "timeout": "3s", "staleIfError": "1m" },
          "enforcement": "Shadow", "audit": { "enabled": false },
          "limits": { "tokenCacheSize": 10, "sarCacheSize": 20, "maxInflight": 5, "maxWaiters": 7 }
        }"#,
        )
        .unwrap();
        assert_eq!(c.model.version().minor(), 33);
        assert!(!c.model.fine_grained());
        assert!(c.anonymous_enabled);
        assert_eq!(c.token_cache_ttl, Duration::from_secs(60));
        assert_eq!(c.mode, AuthorizationMode::AlwaysAllow);
        assert_eq!(c.unauthorized_ttl, Duration::ZERO);
        assert!(!c.strict_upgrade_verb);
        assert_eq!(c.api_server.cluster, "api");
        assert_eq!(c.api_server.bearer_token, "t0k");
        assert_eq!(c.api_server.timeout, Duration::from_secs(3));
        assert_eq!(c.api_server.stale_if_error, Duration::from_secs(60));
        assert_eq!(c.enforcement, Enforcement::Shadow);
        assert!(!c.audit_enabled);
        assert_eq!(c.limits.max_waiters, 7);
    }

    #[rstest]
    #[case::missing_node_name(r#"{}"#, "nodeName")]
    #[case::empty_node_name(r#"{"nodeName":""}"#, "nodeName")]
    #[case::not_json(r#"{"nodeName":"#, "configuration")]
    #[case::not_object(r#"[1]"#, "configuration")]
    #[case::unknown_top(r#"{"nodeName":"n","nodename":"x"}"#, "nodename")]
    #[case::empty_key(r#"{"":{}}"#, r#""""#)]
    #[case::dotted_key(
        r#"{"nodeName":"n","authentication":{"x.y":1}}"#,
        r#"authentication."x.y""#
    )]
    #[case::unknown_nested(
        r#"{"nodeName":"n","authentication":{"webhook":{"cacheTtl":"2m"}}}"#,
        "authentication.webhook.cacheTtl"
    )]
    #[case::bad_mode(
        r#"{"nodeName":"n","authorization":{"mode":"RBAC"}}"#,
        "authorization.mode"
    )]
    #[case::empty_mode(
        r#"{"nodeName":"n","authorization":{"mode":""}}"#,
        "authorization.mode"
    )]
    #[case::bad_duration(
        r#"{"nodeName":"n","authorization":{"webhook":{"cacheAuthorizedTTL":"5 minutes"}}}"#,
        "authorization.webhook.cacheAuthorizedTTL"
    )]
    #[case::bad_bool(
        r#"{"nodeName":"n","authentication":{"anonymous":{"enabled":"yes"}}}"#,
        "authentication.anonymous.enabled"
    )]
    #[case::bad_version(r#"{"nodeName":"n","kubeletVersion":"2.1"}"#, "kubeletVersion")]
    #[case::old_version(r#"{"nodeName":"n","kubeletVersion":"1.19"}"#, "kubeletVersion")]
    #[case::gate_locked(r#"{"nodeName":"n","kubeletVersion":"1.36","featureGates":{"KubeletFineGrainedAuthz":false}}"#, "featureGates.KubeletFineGrainedAuthz")]
    #[case::gate_absent(r#"{"nodeName":"n","kubeletVersion":"1.31","featureGates":{"KubeletFineGrainedAuthz":true}}"#, "featureGates.KubeletFineGrainedAuthz")]
    #[case::unknown_gate(r#"{"nodeName":"n","featureGates":{"Foo":true}}"#, "featureGates.Foo")]
    #[case::bad_enforcement(r#"{"nodeName":"n","enforcement":"enforce"}"#, "enforcement")]
    #[case::zero_timeout(
        r#"{"nodeName":"n","apiServer":{"timeout":"0s"}}"#,
        "apiServer.timeout"
    )]
    #[case::empty_cluster(r#"{"nodeName":"n","apiServer":{"cluster":""}}"#, "apiServer.cluster")]
    #[case::no_authn(r#"{"nodeName":"n","authentication":{"x509":{"enabled":false},"webhook":{"enabled":false}}}"#, "authentication")]
    #[case::bad_limit(
        r#"{"nodeName":"n","limits":{"sarCacheSize":0}}"#,
        "limits.sarCacheSize"
    )]
    fn errors_name_the_field(#[case] json: &str, #[case] field: &str) {
        let e = Config::from_json(json.as_bytes()).unwrap_err();
        assert_eq!(e.field, field, "{e}");
        assert!(e.to_string().starts_with(&format!("{field}: ")), "{e}");
    }
}
