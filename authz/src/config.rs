//! The filter configuration (DESIGN.md "Filter configuration"), in two stages, as ripgrep's
//! `LowArgs` -> `HiArgs`: stage one reads the JSON into raw structs (`raw`; unknown fields and
//! wrong types are errors naming the field path, e.g. `authentication.webhook.cacheTtl: unknown
//! field`), then [`Config::from_value`] checks them into a [`Config`] (defaults are the kubelet's
//! config-file defaults; e.g. `authorization.mode: expected Webhook or AlwaysAllow, got "RBAC"`),
//! which the engine reads on every request without further validation.

mod duration;
mod raw;

use std::time::Duration;

use serde_json::Value;

use crate::audit::policy::{self, AuditOutcome, Level, Policy, Rule};
use crate::audit::Auditor;
use crate::decision::Callout;
pub use crate::decision::{AuthorizationMode, Enforcement, Limits, Settings};
use crate::kubelet::{FeatureGates, KubeletModel, KubeletVersion};
pub use duration::parse_go_duration;
use raw::{GoDuration, RawAuditPolicy, RawAuditRule, RawConfig};

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
}

impl ApiServer {
    /// The HTTP/2 pseudo-headers and headers to send `callout` with.
    pub fn headers(&self, callout: &Callout) -> Vec<(String, String)> {
        let mut h = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), callout.path.to_string()),
            (":authority".to_string(), self.authority.clone()),
            ("content-type".to_string(), "application/json".to_string()),
            ("accept".to_string(), "application/json".to_string()),
            ("user-agent".to_string(), "kubelet-authz".to_string()),
        ];
        if !self.bearer_token.is_empty() {
            h.push((
                "authorization".to_string(),
                format!("Bearer {}", self.bearer_token),
            ));
        }
        h
    }
}

/// The checked configuration: the engine's decision [`Settings`] (which a `Config` reads as,
/// through `Deref`), and what only the filter uses: the API server transport and the audit log.
/// Built only by [`Config::from_json`] / [`Config::from_value`] (every field checked) or
/// [`Config::with_defaults`]; its fields are read, never set, from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    settings: Settings,
    api_server: ApiServer,
    audit_enabled: bool,
    audit_policy: Policy,
}

impl std::ops::Deref for Config {
    type Target = Settings;

    fn deref(&self) -> &Settings {
        &self.settings
    }
}

impl From<Config> for Settings {
    fn from(config: Config) -> Settings {
        config.settings
    }
}

impl Config {
    /// A configuration with every default, for a node name.
    pub fn with_defaults(node_name: &str) -> Config {
        Config {
            settings: Settings::with_defaults(node_name),
            api_server: ApiServer {
                cluster: "kube-apiserver".into(),
                authority: "kubernetes.default.svc".into(),
                bearer_token: String::new(),
                timeout: Duration::from_secs(10),
            },
            audit_enabled: true,
            audit_policy: Policy::builtin(),
        }
    }

    /// The engine's decision settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// `apiServer`: where and how the filter sends its reviews.
    pub fn api_server(&self) -> &ApiServer {
        &self.api_server
    }

    /// `audit.enabled`.
    pub fn audit_enabled(&self) -> bool {
        self.audit_enabled
    }

    /// `audit.policy` (the built-in policy when absent).
    pub fn audit_policy(&self) -> &Policy {
        &self.audit_policy
    }

    /// The audit log these settings describe (`audit`, the node, the enforcement).
    pub fn auditor(&self) -> Auditor {
        Auditor::new(
            self.audit_enabled,
            self.audit_policy.clone(),
            &self.settings.node_name,
            self.settings.enforcement == Enforcement::Shadow,
        )
    }

    /// Parse and check the plugin configuration JSON.
    pub fn from_json(text: &[u8]) -> Result<Config, ConfigError> {
        let value: Value = serde_json::from_slice(text)
            .map_err(|e| err("configuration", format!("not valid JSON: {e}")))?;
        Config::from_value(&value)
    }

    /// Check a parsed JSON value: stage one deserialises it into the raw structs (naming the field
    /// of any type error or unknown field), stage two checks the raw structs into a [`Config`].
    pub fn from_value(value: &Value) -> Result<Config, ConfigError> {
        let raw = RawConfig::read(value).map_err(|e| ConfigError {
            field: if e.path.is_empty() {
                "configuration".to_string()
            } else {
                e.path
            },
            message: e.message,
        })?;
        Config::check(raw)
    }

    /// Stage two: defaults, values that depend on other fields, and the kubelet's own refusals.
    fn check(raw: RawConfig) -> Result<Config, ConfigError> {
        let node_name = raw.node_name.ok_or_else(|| {
            err(
                "nodeName",
                "required: the name of the Node object this kubelet registers as",
            )
        })?;
        if node_name.is_empty() {
            return Err(err("nodeName", "must not be empty"));
        }
        let mut c = Config::with_defaults(&node_name);

        let version = match raw.kubelet_version {
            Some(v) => v
                .parse::<KubeletVersion>()
                .map_err(|e| err("kubeletVersion", e.to_string()))?,
            None => KubeletVersion::LATEST,
        };
        let raw_gates = raw.feature_gates.unwrap_or_default();
        let gates = FeatureGates {
            kubelet_fine_grained_authz: raw_gates.kubelet_fine_grained_authz,
            allow_parsing_user_uid_from_cert_auth: raw_gates.allow_parsing_user_uid_from_cert_auth,
        };
        c.settings.model = KubeletModel::new(version, gates)
            .map_err(|e| err(e.field(), strip_field(e.field(), &e.to_string())))?;

        let authn = raw.authentication.unwrap_or_default();
        let x509 = authn.x509.unwrap_or_default();
        c.settings.x509_enabled = x509.enabled.unwrap_or(c.settings.x509_enabled);
        let webhook = authn.webhook.unwrap_or_default();
        c.settings.webhook_authn_enabled =
            webhook.enabled.unwrap_or(c.settings.webhook_authn_enabled);
        c.settings.token_cache_ttl = webhook
            .cache_ttl
            .map_or(c.settings.token_cache_ttl, |d| d.0);
        let anonymous = authn.anonymous.unwrap_or_default();
        c.settings.anonymous_enabled = anonymous.enabled.unwrap_or(c.settings.anonymous_enabled);
        if !c.settings.x509_enabled
            && !c.settings.webhook_authn_enabled
            && !c.settings.anonymous_enabled
        {
            return Err(err(
                "authentication",
                "no authentication method configured: enable x509, webhook or anonymous (the kubelet refuses to start)",
            ));
        }

        let authz = raw.authorization.unwrap_or_default();
        if let Some(m) = authz.mode {
            c.settings.mode = match m.as_str() {
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
        let webhook = authz.webhook.unwrap_or_default();
        c.settings.authorized_ttl = webhook
            .cache_authorized_ttl
            .map_or(c.settings.authorized_ttl, |d| d.0);
        c.settings.unauthorized_ttl = webhook
            .cache_unauthorized_ttl
            .map_or(c.settings.unauthorized_ttl, |d| d.0);
        c.settings.strict_upgrade_verb = authz
            .strict_upgrade_verb
            .unwrap_or(c.settings.strict_upgrade_verb);

        let api = raw.api_server.unwrap_or_default();
        if let Some(v) = api.cluster {
            if v.is_empty() {
                return Err(err(
                    "apiServer.cluster",
                    "must not be empty: name the Envoy cluster of the API server",
                ));
            }
            c.api_server.cluster = v;
        }
        if let Some(v) = api.authority {
            if v.is_empty() {
                return Err(err("apiServer.authority", "must not be empty"));
            }
            c.api_server.authority = v;
        }
        if let Some(v) = api.bearer_token {
            if v.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                return Err(err(
                    "apiServer.bearerToken",
                    "must not contain spaces or control characters",
                ));
            }
            c.api_server.bearer_token = v;
        }
        if let Some(GoDuration(t)) = api.timeout {
            if t.is_zero() {
                return Err(err("apiServer.timeout", "must be greater than 0s"));
            }
            c.api_server.timeout = t;
        }
        c.settings.stale_if_error = api.stale_if_error.map_or(Duration::ZERO, |d| d.0);

        if let Some(e) = raw.enforcement {
            c.settings.enforcement = match e.as_str() {
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
        let audit = raw.audit.unwrap_or_default();
        c.audit_enabled = audit.enabled.unwrap_or(c.audit_enabled);
        if let Some(p) = audit.policy {
            c.audit_policy = audit_policy(p)?;
        }
        let limits = raw.limits.unwrap_or_default();
        let l = &mut c.settings.limits;
        l.token_cache_size = limits.token_cache_size.map_or(l.token_cache_size, |s| s.0);
        l.sar_cache_size = limits.sar_cache_size.map_or(l.sar_cache_size, |s| s.0);
        l.max_inflight = limits.max_inflight.map_or(l.max_inflight, |s| s.0);
        l.max_waiters = limits.max_waiters.map_or(l.max_waiters, |s| s.0);
        Ok(c)
    }
}

/// Stage two of `audit.policy`: every rule has a known level; every list it names is non-empty
/// (an empty list would match nothing, or everything in Kubernetes: omit the field instead) and
/// holds known names.
fn audit_policy(raw: RawAuditPolicy) -> Result<Policy, ConfigError> {
    const RULES: &str = "audit.policy.rules";
    let rules = raw.rules.ok_or_else(|| {
        err(
            RULES,
            "missing: list the rules, e.g. [{\"level\":\"Metadata\"}] to write every decision",
        )
    })?;
    if rules.is_empty() {
        return Err(err(
            RULES,
            "must not be empty: leave `audit.policy` out for the built-in policy, write [{\"level\":\"Metadata\"}] to write every decision, or set `audit.enabled` to false to write none",
        ));
    }
    rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| audit_rule(&format!("{RULES}[{i}]"), r))
        .collect::<Result<Vec<_>, _>>()
        .map(Policy::new)
}

fn audit_rule(at: &str, raw: RawAuditRule) -> Result<Rule, ConfigError> {
    let level = raw
        .level
        .ok_or_else(|| err(&format!("{at}.level"), "missing: None or Metadata"))?;
    let mut rule = Rule::new(Level::parse(&level).map_err(|m| err(&format!("{at}.level"), m))?);
    if let Some(users) = raw.users {
        rule = rule.users(names(&format!("{at}.users"), users, "user names")?);
    }
    if let Some(groups) = raw.user_groups {
        rule = rule.user_groups(names(&format!("{at}.userGroups"), groups, "group names")?);
    }
    if let Some(verbs) = raw.verbs {
        let field = format!("{at}.verbs");
        let verbs = non_empty(&field, verbs)?;
        for (i, v) in verbs.iter().enumerate() {
            Rule::new(Level::None)
                .verbs([v.as_str()])
                .map_err(|m| err(&format!("{field}[{i}]"), m))?;
        }
        rule = rule
            .verbs(verbs.iter().map(String::as_str))
            .map_err(|m| err(&field, m))?;
    }
    if let Some(subs) = raw.subresources {
        let field = format!("{at}.subresources");
        let subs = non_empty(&field, subs)?
            .iter()
            .enumerate()
            .map(|(i, s)| {
                policy::parse_subresource(s).map_err(|m| err(&format!("{field}[{i}]"), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        rule = rule.subresources(subs);
    }
    if let Some(outcomes) = raw.outcomes {
        let field = format!("{at}.outcomes");
        let outcomes = non_empty(&field, outcomes)?
            .iter()
            .enumerate()
            .map(|(i, o)| AuditOutcome::parse(o).map_err(|m| err(&format!("{field}[{i}]"), m)))
            .collect::<Result<Vec<_>, _>>()?;
        rule = rule.outcomes(outcomes);
    }
    Ok(rule)
}

fn non_empty(field: &str, list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if list.is_empty() {
        return Err(err(
            field,
            "must not be empty: leave the field out to match every decision",
        ));
    }
    Ok(list)
}

fn names(field: &str, list: Vec<String>, what: &str) -> Result<Vec<String>, ConfigError> {
    let list = non_empty(field, list)?;
    if let Some(i) = list.iter().position(String::is_empty) {
        return Err(err(
            &format!("{field}[{i}]"),
            format!("must not be empty: {what} are matched exactly"),
        ));
    }
    Ok(list)
}

fn strip_field(field: &str, msg: &str) -> String {
    msg.strip_prefix(field)
        .and_then(|m| m.strip_prefix(": "))
        .unwrap_or(msg)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

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
    fn audit_policy_parses() {
        use crate::audit::policy::{Facts, Level};
        use crate::identity::UserInfo;
        use crate::kubelet::Subresource;
        let c = Config::from_json(
            br#"{"nodeName":"n","audit":{"enabled":true,"policy":{"rules":[
              {"level":"Metadata","users":["alice"],"userGroups":["dev"],"verbs":["get",""],
               "subresources":["nodes/metrics","stats"],"outcomes":["allowed","refused"]},
              {"level":"None"}
            ]}}}"#,
        )
        .unwrap();
        assert!(c.audit_enabled);
        let alice = UserInfo {
            name: "alice".into(),
            groups: vec!["dev".into()],
            ..UserInfo::default()
        };
        let facts = |sub, outcome| Facts {
            user: Some(&alice),
            verb: "",
            subresource: Some(sub),
            outcome,
        };
        let p = &c.audit_policy;
        assert_eq!(
            p.level(&facts(Subresource::Metrics, AuditOutcome::Allowed)),
            Level::Metadata
        );
        assert_eq!(
            p.level(&facts(Subresource::Stats, AuditOutcome::Refused)),
            Level::Metadata
        );
        assert_eq!(
            p.level(&facts(Subresource::Log, AuditOutcome::Allowed)),
            Level::None
        );
        assert_eq!(
            p.level(&facts(Subresource::Metrics, AuditOutcome::Forbidden)),
            Level::None
        );
        // Absent: the built-in policy; `enabled: false` keeps a policy but writes nothing.
        let d = Config::from_json(br#"{"nodeName":"n","audit":{"enabled":false}}"#).unwrap();
        assert!(!d.audit_enabled);
        assert_eq!(d.audit_policy, Policy::builtin());
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
        assert_eq!(c.stale_if_error, Duration::from_secs(60));
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
    #[case::cert_uid_gate_absent(r#"{"nodeName":"n","kubeletVersion":"1.32","featureGates":{"AllowParsingUserUIDFromCertAuth":false}}"#, "featureGates.AllowParsingUserUIDFromCertAuth")]
    #[case::cert_uid_gate_not_bool(
        r#"{"nodeName":"n","featureGates":{"AllowParsingUserUIDFromCertAuth":"no"}}"#,
        "featureGates.AllowParsingUserUIDFromCertAuth"
    )]
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
    #[case::audit_level(
        r#"{"nodeName":"n","audit":{"policy":{"rules":[{"level":"None"},{"level":"Metadata"},{"level":"Request"}]}}}"#,
        "audit.policy.rules[2].level"
    )]
    #[case::audit_no_level(
        r#"{"nodeName":"n","audit":{"policy":{"rules":[{"users":["a"]}]}}}"#,
        "audit.policy.rules[0].level"
    )]
    #[case::audit_outcome(
        r#"{"nodeName":"n","audit":{"policy":{"rules":[{"level":"None","outcomes":["allowed","denied"]}]}}}"#,
        "audit.policy.rules[0].outcomes[1]"
    )]
    #[case::audit_verb(
        r#"{"nodeName":"n","audit":{"policy":{"rules":[{"level":"None","verbs":["GET"]}]}}}"#,
        "audit.policy.rules[0].verbs[0]"
    )]
    #[case::audit_subresource(
        r#"{"nodeName":"n","audit":{"policy":{"rules":[{"level":"None","subresources":["exec"]}]}}}"#,
        "audit.policy.rules[0].subresources[0]"
    )]
    #[case::audit_empty_rules(
        r#"{"nodeName":"n","audit":{"policy":{"rules":[]}}}"#,
        "audit.policy.rules"
    )]
    #[case::audit_missing_rules(r#"{"nodeName":"n","audit":{"policy":{}}}"#, "audit.policy.rules")]
    #[case::audit_empty_list(
        r#"{"nodeName":"n","audit":{"policy":{"rules":[{"level":"None","outcomes":[]}]}}}"#,
        "audit.policy.rules[0].outcomes"
    )]
    #[case::audit_empty_user(
        r#"{"nodeName":"n","audit":{"policy":{"rules":[{"level":"None","users":["a",""]}]}}}"#,
        "audit.policy.rules[0].users[1]"
    )]
    #[case::audit_unknown_field(
        r#"{"nodeName":"n","audit":{"policy":{"rules":[{"level":"None","resources":["nodes"]}]}}}"#,
        "audit.policy.rules[0].resources"
    )]
    #[case::audit_unknown_policy_field(
        r#"{"nodeName":"n","audit":{"policy":{"omitStages":["RequestReceived"],"rules":[]}}}"#,
        "audit.policy.omitStages"
    )]
    #[case::audit_groups_not_list(
        r#"{"nodeName":"n","audit":{"policy":{"rules":[{"level":"None","userGroups":"dev"}]}}}"#,
        "audit.policy.rules[0].userGroups"
    )]
    fn errors_name_the_field(#[case] json: &str, #[case] field: &str) {
        let e = Config::from_json(json.as_bytes()).unwrap_err();
        assert_eq!(e.field, field, "{e}");
        assert!(e.to_string().starts_with(&format!("{field}: ")), "{e}");
    }

    #[rstest]
    #[case::unknown_nested(
        r#"{"nodeName":"n","authentication":{"webhook":{"cacheTtl":"2m"}}}"#,
        "authentication.webhook.cacheTtl: unknown field; known fields here: enabled, cacheTTL"
    )]
    #[case::bad_bool(
        r#"{"nodeName":"n","authentication":{"anonymous":{"enabled":"yes"}}}"#,
        "authentication.anonymous.enabled: expected true or false, got a string"
    )]
    #[case::bad_mode(
        r#"{"nodeName":"n","authorization":{"mode":"RBAC"}}"#,
        r#"authorization.mode: expected Webhook or AlwaysAllow, got "RBAC""#
    )]
    #[case::bad_duration(
        r#"{"nodeName":"n","apiServer":{"timeout":"5 s"}}"#,
        r#"apiServer.timeout: "5 s" is not a duration: expected a Go duration such as "2m0s", "30s" or "500ms""#
    )]
    #[case::negative_size(
        r#"{"nodeName":"n","limits":{"maxWaiters":-1}}"#,
        "limits.maxWaiters: expected a whole number from 1 to 1000000, got -1"
    )]
    #[case::not_object(r#"[1]"#, "configuration: expected an object, got a list")]
    #[case::audit_level(
        r#"{"nodeName":"n","audit":{"policy":{"rules":[{"level":"None"},{"level":"Metadata"},{"level":"Request"}]}}}"#,
        r#"audit.policy.rules[2].level: unknown level "Request": expected None or Metadata (the filter never reads request or response bodies)"#
    )]
    #[case::audit_outcome(
        r#"{"nodeName":"n","audit":{"policy":{"rules":[{"level":"None","outcomes":["denied"]}]}}}"#,
        r#"audit.policy.rules[0].outcomes[0]: unknown outcome "denied": expected allowed, forbidden, unauthenticated, error or refused"#
    )]
    #[case::audit_unknown_field(
        r#"{"nodeName":"n","audit":{"policy":{"rules":[{"level":"None","user":["a"]}]}}}"#,
        "audit.policy.rules[0].user: unknown field; known fields here: level, users, userGroups, verbs, subresources, outcomes"
    )]
    #[case::cert_uid_gate_absent(
        r#"{"nodeName":"n","kubeletVersion":"1.32","featureGates":{"AllowParsingUserUIDFromCertAuth":true}}"#,
        "featureGates.AllowParsingUserUIDFromCertAuth: the gate does not exist in kubelet 1.32 (it was added in 1.33)"
    )]
    #[case::fine_grained_gate_locked(
        r#"{"nodeName":"n","kubeletVersion":"1.36","featureGates":{"KubeletFineGrainedAuthz":false}}"#,
        "featureGates.KubeletFineGrainedAuthz: the gate is locked to true in kubelet 1.36 and cannot be disabled"
    )]
    fn error_messages(#[case] json: &str, #[case] message: &str) {
        let e = Config::from_json(json.as_bytes()).unwrap_err();
        assert_eq!(e.to_string(), message);
    }

    /// `featureGates.AllowParsingUserUIDFromCertAuth`: accepted from 1.33 (default on), either
    /// value; the x509 user's UID is read exactly when it is on.
    #[rstest]
    #[case::v1_32_default("1.32", "{}", false)]
    #[case::v1_33_default("1.33", "{}", true)]
    #[case::v1_33_off("1.33", r#"{"AllowParsingUserUIDFromCertAuth":false}"#, false)]
    #[case::v1_34_on("1.34", r#"{"AllowParsingUserUIDFromCertAuth":true}"#, true)]
    #[case::v1_36_default("1.36", "{}", true)]
    #[case::v1_36_off("1.36", r#"{"AllowParsingUserUIDFromCertAuth":false}"#, false)]
    #[case::v1_35_both_gates(
        "1.35",
        r#"{"KubeletFineGrainedAuthz":false,"AllowParsingUserUIDFromCertAuth":false}"#,
        false
    )]
    fn cert_uid_gate(#[case] version: &str, #[case] gates: &str, #[case] reads_uid: bool) {
        let c = Config::from_json(
            format!(r#"{{"nodeName":"n","kubeletVersion":"{version}","featureGates":{gates}}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(c.model.reads_cert_uid(), reads_uid);
    }
}
