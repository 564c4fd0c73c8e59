//! KubeletConfiguration (kubelet.config.k8s.io/v1beta1) parsing, defaults, and the CIS kubelet checks.
//!
//! Two inputs give the same [`KubeletSettings`]:
//! - a configuration file (YAML or JSON), whose missing fields take the config-file defaults
//!   (`reference/kubelet-authz.md` section 2.1: anonymous off, webhook authentication on, mode
//!   `Webhook`, read-only port 0);
//! - a kubelet command line, whose missing flags take the legacy flag defaults that
//!   `applyLegacyDefaults` sets when no config file is given (anonymous on, webhook authentication
//!   off, mode `AlwaysAllow`, read-only port 10255). When the command line names `--config`, the
//!   caller loads that file first and lays the flags over it ([`apply_command_line`]).
//!
//! [`check`] then grades the settings: CIS Kubernetes Benchmark 4.2.1 to 4.2.4, webhook
//! authentication, and the `KubeletFineGrainedAuthz` gate on the kubelet versions where it can be off.
//! Everything here is pure: no file or network access.

use serde::Serialize;

use crate::kubelet::{FeatureGates, KubeletModel, KubeletVersion};

/// The only configuration API version the kubelet reads from a file.
pub const API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
/// The configuration kind.
pub const KIND: &str = "KubeletConfiguration";

/// Why a configuration file or command line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeletConfigError {
    /// Neither YAML nor JSON, or more than one document.
    #[error("not a YAML or JSON document: {0}")]
    Syntax(String),
    /// The document is not a KubeletConfiguration.
    #[error(
        "unsupported kind `{0}`: expected `KubeletConfiguration` (kubelet.config.k8s.io/v1beta1)"
    )]
    UnknownKind(String),
    /// A KubeletConfiguration of another API version.
    #[error("unsupported apiVersion `{0}`: expected `kubelet.config.k8s.io/v1beta1`")]
    UnknownApiVersion(String),
    /// A field has the wrong type or an impossible value.
    #[error("{field}: {message}")]
    Field {
        /// Dotted field path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A command-line flag has a bad value.
    #[error("`{flag}`: {message}")]
    Flag {
        /// The flag as written.
        flag: String,
        /// What is wrong.
        message: String,
    },
}

/// Where the settings came from; it decides the defaults of anything not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SettingsSource {
    /// A KubeletConfiguration file: config-file defaults.
    ConfigFile,
    /// A command line without `--config`: legacy flag defaults.
    CommandLine,
    /// A command line laid over a configuration file (`--config`).
    ConfigFileAndCommandLine,
}

/// One setting and whether it was written explicitly (`false`: it is the default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting<T> {
    /// The effective value.
    pub value: T,
    /// Whether the file or command line set it.
    pub explicit: bool,
}

impl<T> Setting<T> {
    fn default(value: T) -> Self {
        Setting {
            value,
            explicit: false,
        }
    }

    fn set(&mut self, value: T) {
        self.value = value;
        self.explicit = true;
    }
}

/// The kubelet settings that decide who may reach its API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletSettings {
    /// Where the settings came from.
    pub source: SettingsSource,
    /// `authentication.anonymous.enabled` / `--anonymous-auth`.
    pub anonymous_auth: Setting<bool>,
    /// `authentication.webhook.enabled` / `--authentication-token-webhook`.
    pub webhook_authentication: Setting<bool>,
    /// `authentication.x509.clientCAFile` / `--client-ca-file`.
    pub client_ca_file: Setting<String>,
    /// `authorization.mode` / `--authorization-mode`.
    pub authorization_mode: Setting<String>,
    /// `readOnlyPort` / `--read-only-port`.
    pub read_only_port: Setting<i64>,
    /// `featureGates.KubeletFineGrainedAuthz` / `--feature-gates`; `None` when not set.
    pub fine_grained_authz_gate: Option<bool>,
    /// The `--config` file named on a command line, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
}

impl KubeletSettings {
    /// The defaults of a configuration file with nothing in it (v1beta1 defaulting).
    pub fn config_file_defaults() -> Self {
        KubeletSettings {
            source: SettingsSource::ConfigFile,
            anonymous_auth: Setting::default(false),
            webhook_authentication: Setting::default(true),
            client_ca_file: Setting::default(String::new()),
            authorization_mode: Setting::default("Webhook".to_string()),
            read_only_port: Setting::default(0),
            fine_grained_authz_gate: None,
            config_file: None,
        }
    }

    /// The legacy flag defaults (`applyLegacyDefaults`), used when no config file is given.
    pub fn legacy_flag_defaults() -> Self {
        KubeletSettings {
            source: SettingsSource::CommandLine,
            anonymous_auth: Setting::default(true),
            webhook_authentication: Setting::default(false),
            client_ca_file: Setting::default(String::new()),
            authorization_mode: Setting::default("AlwaysAllow".to_string()),
            read_only_port: Setting::default(10255),
            fine_grained_authz_gate: None,
            config_file: None,
        }
    }

    /// The feature gates as the kubelet model takes them.
    pub fn feature_gates(&self) -> FeatureGates {
        FeatureGates {
            kubelet_fine_grained_authz: self.fine_grained_authz_gate,
        }
    }
}

/// Go's `strconv.ParseBool`, which both pflag and feature gates use.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn field_error(field: &str, message: impl Into<String>) -> KubeletConfigError {
    KubeletConfigError::Field {
        field: field.to_string(),
        message: message.into(),
    }
}

fn yaml_type(v: &serde_yaml_ng::Value) -> &'static str {
    use serde_yaml_ng::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Look up a dotted path; `Ok(None)` when any part is missing or null.
fn lookup<'a>(
    root: &'a serde_yaml_ng::Value,
    path: &[&str],
) -> Result<Option<&'a serde_yaml_ng::Value>, KubeletConfigError> {
    let mut cur = root;
    for (i, key) in path.iter().enumerate() {
        let Some(map) = cur.as_mapping() else {
            let field = path.get(..i).unwrap_or_default().join(".");
            return Err(field_error(
                &field,
                format!("expected a mapping, got {}", yaml_type(cur)),
            ));
        };
        match map.get(*key) {
            None | Some(serde_yaml_ng::Value::Null) => return Ok(None),
            Some(v) => cur = v,
        }
    }
    Ok(Some(cur))
}

fn get_bool(
    root: &serde_yaml_ng::Value,
    path: &[&str],
) -> Result<Option<bool>, KubeletConfigError> {
    match lookup(root, path)? {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| {
            field_error(
                &path.join("."),
                format!("expected true or false, got {}", yaml_type(v)),
            )
        }),
    }
}

fn get_string(
    root: &serde_yaml_ng::Value,
    path: &[&str],
) -> Result<Option<String>, KubeletConfigError> {
    match lookup(root, path)? {
        None => Ok(None),
        Some(v) => v.as_str().map(|s| Some(s.to_string())).ok_or_else(|| {
            field_error(
                &path.join("."),
                format!("expected a string, got {}", yaml_type(v)),
            )
        }),
    }
}

fn get_int(root: &serde_yaml_ng::Value, path: &[&str]) -> Result<Option<i64>, KubeletConfigError> {
    match lookup(root, path)? {
        None => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| {
            field_error(
                &path.join("."),
                format!("expected an integer, got {}", yaml_type(v)),
            )
        }),
    }
}

/// Parse a KubeletConfiguration file (YAML or JSON) and apply the config-file defaults.
///
/// Fields this module does not check are ignored, as the kubelet's lenient decoding does;
/// a wrong type in a checked field, another kind or another API version is an error.
pub fn parse_config(text: &str) -> Result<KubeletSettings, KubeletConfigError> {
    let doc: serde_yaml_ng::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| KubeletConfigError::Syntax(e.to_string()))?
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| KubeletConfigError::Syntax(e.to_string()))?
    };
    if doc.as_mapping().is_none() {
        return Err(KubeletConfigError::Syntax(format!(
            "expected a KubeletConfiguration mapping, got {}",
            yaml_type(&doc)
        )));
    }
    let kind = get_string(&doc, &["kind"])?.unwrap_or_default();
    if kind != KIND {
        return Err(KubeletConfigError::UnknownKind(kind));
    }
    let api_version = get_string(&doc, &["apiVersion"])?.unwrap_or_default();
    if api_version != API_VERSION {
        return Err(KubeletConfigError::UnknownApiVersion(api_version));
    }

    let mut s = KubeletSettings::config_file_defaults();
    if let Some(v) = get_bool(&doc, &["authentication", "anonymous", "enabled"])? {
        s.anonymous_auth.set(v);
    }
    if let Some(v) = get_bool(&doc, &["authentication", "webhook", "enabled"])? {
        s.webhook_authentication.set(v);
    }
    if let Some(v) = get_string(&doc, &["authentication", "x509", "clientCAFile"])? {
        s.client_ca_file.set(v);
    }
    // An empty mode is defaulted to Webhook by v1beta1 defaulting, so only a non-empty one counts.
    if let Some(v) = get_string(&doc, &["authorization", "mode"])? {
        if !v.is_empty() {
            s.authorization_mode.set(v);
        }
    }
    if let Some(v) = get_int(&doc, &["readOnlyPort"])? {
        s.read_only_port.set(v);
    }
    if let Some(v) = get_bool(&doc, &["featureGates", "KubeletFineGrainedAuthz"])? {
        s.fine_grained_authz_gate = Some(v);
    }
    Ok(s)
}

/// Split a shell-like command line into words: white space separates, single and double quotes
/// group, a backslash escapes the next character (so `\` + newline continues a line).
fn split_words(text: &str) -> Result<Vec<String>, KubeletConfigError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => match chars.next() {
                Some('\n') | None => {}
                Some(n) => {
                    cur.push(n);
                    in_word = true;
                }
            },
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(KubeletConfigError::Syntax(
            "unterminated quote in the command line".into(),
        ));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// The flags this module reads, and whether each is boolean.
const BOOL_FLAGS: &[&str] = &["anonymous-auth", "authentication-token-webhook"];
const VALUE_FLAGS: &[&str] = &[
    "client-ca-file",
    "authorization-mode",
    "read-only-port",
    "feature-gates",
    "config",
];

/// One parsed flag occurrence.
struct FlagUse {
    name: String,
    value: String,
}

/// Parse a command line into the flags this module reads (the last occurrence wins).
/// Unknown flags are skipped: the kubelet has hundreds that do not affect API access.
fn parse_flags(text: &str) -> Result<Vec<FlagUse>, KubeletConfigError> {
    let words = split_words(text)?;
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(word) = words.get(i) {
        i += 1;
        let Some(body) = word.strip_prefix("--").or_else(|| word.strip_prefix('-')) else {
            continue; // the binary name, or a value of a flag we do not read
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        if BOOL_FLAGS.contains(&name) {
            let value = match inline {
                Some(v) => v.to_string(),
                None => {
                    if let Some(next) = words.get(i) {
                        if parse_go_bool(next).is_some() {
                            return Err(KubeletConfigError::Flag {
                                flag: format!("--{name} {next}"),
                                message: format!(
                                    "a boolean flag takes its value after `=`: write `--{name}={next}` (the kubelet reads `--{name} {next}` as `--{name}=true`)"
                                ),
                            });
                        }
                    }
                    "true".to_string()
                }
            };
            out.push(FlagUse {
                name: name.to_string(),
                value,
            });
        } else if VALUE_FLAGS.contains(&name) {
            let value = match inline {
                Some(v) => v.to_string(),
                None => {
                    let v = words
                        .get(i)
                        .cloned()
                        .ok_or_else(|| KubeletConfigError::Flag {
                            flag: format!("--{name}"),
                            message: "flag needs a value".into(),
                        })?;
                    i += 1;
                    v
                }
            };
            out.push(FlagUse {
                name: name.to_string(),
                value,
            });
        }
    }
    Ok(out)
}

/// The `--config` file a kubelet command line names, if any.
pub fn command_line_config_path(text: &str) -> Result<Option<String>, KubeletConfigError> {
    Ok(parse_flags(text)?
        .into_iter()
        .rfind(|f| f.name == "config" && !f.value.is_empty())
        .map(|f| f.value))
}

/// Parse a kubelet command line with the legacy flag defaults (no config file).
pub fn parse_command_line(text: &str) -> Result<KubeletSettings, KubeletConfigError> {
    apply_command_line(KubeletSettings::legacy_flag_defaults(), text)
}

/// Lay a command line's flags over `base` (the legacy defaults, or the settings of the
/// `--config` file); flags win over the file, as in the kubelet.
pub fn apply_command_line(
    mut base: KubeletSettings,
    text: &str,
) -> Result<KubeletSettings, KubeletConfigError> {
    for flag in parse_flags(text)? {
        let bad = |message: String| KubeletConfigError::Flag {
            flag: format!("--{}={}", flag.name, flag.value),
            message,
        };
        match flag.name.as_str() {
            "anonymous-auth" => base.anonymous_auth.set(
                parse_go_bool(&flag.value).ok_or_else(|| bad("expected true or false".into()))?,
            ),
            "authentication-token-webhook" => base.webhook_authentication.set(
                parse_go_bool(&flag.value).ok_or_else(|| bad("expected true or false".into()))?,
            ),
            "client-ca-file" => base.client_ca_file.set(flag.value.clone()),
            "authorization-mode" => base.authorization_mode.set(flag.value.clone()),
            "read-only-port" => base.read_only_port.set(
                flag.value
                    .parse()
                    .map_err(|_| bad("expected a port number (0 disables the port)".into()))?,
            ),
            "feature-gates" => {
                for pair in flag
                    .value
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                {
                    let Some((k, v)) = pair.split_once('=') else {
                        return Err(bad(format!("`{pair}` is not NAME=true|false")));
                    };
                    if k.trim() == "KubeletFineGrainedAuthz" {
                        let v = parse_go_bool(v.trim())
                            .ok_or_else(|| bad(format!("`{pair}`: expected true or false")))?;
                        base.fine_grained_authz_gate = Some(v);
                    }
                }
            }
            "config" => {
                base.config_file = Some(flag.value.clone());
                if base.source == SettingsSource::ConfigFile {
                    base.source = SettingsSource::ConfigFileAndCommandLine;
                }
            }
            _ => {}
        }
    }
    Ok(base)
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// The setting is safe.
    Pass,
    /// The setting is unsafe (or makes the kubelet refuse to start).
    Fail,
    /// The check does not apply to this kubelet version.
    Skip,
}

/// One graded check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// Stable identifier (`4.2.1`, ..., `webhook-authentication`, `fine-grained-authz`).
    pub id: &'static str,
    /// The CIS Kubernetes Benchmark item, when the check is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cis: Option<&'static str>,
    /// What is checked.
    pub title: &'static str,
    /// Pass, fail or skip.
    pub status: CheckStatus,
    /// The effective value, with `(default)` when nothing set it.
    pub actual: String,
    /// How to fix a failure (and why a skip was skipped); empty on a pass.
    pub fix: String,
}

fn shown<T: std::fmt::Display>(s: &Setting<T>) -> String {
    if s.explicit {
        s.value.to_string()
    } else {
        format!("{} (default)", s.value)
    }
}

fn fix_for(source: SettingsSource, file: &str, flag: &str) -> String {
    match source {
        SettingsSource::CommandLine => format!("start the kubelet with `{flag}`"),
        _ => format!("set `{file}` in the KubeletConfiguration"),
    }
}

/// Grade the settings for a kubelet version.
pub fn check(settings: &KubeletSettings, version: KubeletVersion) -> Vec<CheckResult> {
    let src = settings.source;
    let mut out = Vec::new();
    let grade = |ok: bool, fix: String| {
        if ok {
            (CheckStatus::Pass, String::new())
        } else {
            (CheckStatus::Fail, fix)
        }
    };

    let (status, fix) = grade(
        !settings.anonymous_auth.value,
        fix_for(
            src,
            "authentication.anonymous.enabled: false",
            "--anonymous-auth=false",
        ),
    );
    out.push(CheckResult {
        id: "4.2.1",
        cis: Some("4.2.1"),
        title: "anonymous authentication is disabled",
        status,
        actual: shown(&settings.anonymous_auth),
        fix,
    });

    let mode = &settings.authorization_mode.value;
    let (status, fix) = match mode.as_str() {
        "Webhook" => (CheckStatus::Pass, String::new()),
        "AlwaysAllow" => (
            CheckStatus::Fail,
            fix_for(
                src,
                "authorization.mode: Webhook",
                "--authorization-mode=Webhook",
            ),
        ),
        "" => (
            CheckStatus::Fail,
            format!(
                "the kubelet refuses to start without an authorization mode: {}",
                fix_for(
                    src,
                    "authorization.mode: Webhook",
                    "--authorization-mode=Webhook"
                )
            ),
        ),
        other => (
            CheckStatus::Fail,
            format!(
                "the kubelet refuses to start with unknown mode `{other}`: {}",
                fix_for(
                    src,
                    "authorization.mode: Webhook",
                    "--authorization-mode=Webhook"
                )
            ),
        ),
    };
    out.push(CheckResult {
        id: "4.2.2",
        cis: Some("4.2.2"),
        title: "authorization mode is not AlwaysAllow",
        status,
        actual: shown(&settings.authorization_mode),
        fix,
    });

    let (status, fix) = grade(
        !settings.client_ca_file.value.is_empty(),
        fix_for(
            src,
            "authentication.x509.clientCAFile: /etc/kubernetes/pki/ca.crt",
            "--client-ca-file=/etc/kubernetes/pki/ca.crt",
        ),
    );
    let ca = &settings.client_ca_file;
    out.push(CheckResult {
        id: "4.2.3",
        cis: Some("4.2.3"),
        title: "client certificate authority file is set",
        status,
        actual: if ca.value.is_empty() {
            format!("\"\"{}", if ca.explicit { "" } else { " (default)" })
        } else {
            shown(ca)
        },
        fix,
    });

    let (status, fix) = grade(
        settings.read_only_port.value == 0,
        fix_for(src, "readOnlyPort: 0", "--read-only-port=0"),
    );
    out.push(CheckResult {
        id: "4.2.4",
        cis: Some("4.2.4"),
        title: "read-only port is disabled",
        status,
        actual: shown(&settings.read_only_port),
        fix,
    });

    let (status, fix) = grade(
        settings.webhook_authentication.value,
        fix_for(
            src,
            "authentication.webhook.enabled: true",
            "--authentication-token-webhook=true",
        ),
    );
    out.push(CheckResult {
        id: "webhook-authentication",
        cis: None,
        title: "webhook (TokenReview) authentication is enabled",
        status,
        actual: shown(&settings.webhook_authentication),
        fix: if status == CheckStatus::Fail {
            format!("{fix}: bearer tokens (ServiceAccounts) are otherwise refused with 401")
        } else {
            fix
        },
    });

    out.push(fine_grained_check(settings, version));
    out
}

fn fine_grained_check(settings: &KubeletSettings, version: KubeletVersion) -> CheckResult {
    let gate_fix = fix_for(
        settings.source,
        "featureGates: {KubeletFineGrainedAuthz: true}",
        "--feature-gates=KubeletFineGrainedAuthz=true",
    );
    let actual = match settings.fine_grained_authz_gate {
        Some(v) => format!("{v} (kubelet {version})"),
        None => match version.fine_grained_default() {
            Some(d) => format!("{d} (default in kubelet {version})"),
            None => format!("absent (kubelet {version})"),
        },
    };
    let (status, fix) = match KubeletModel::new(version, settings.feature_gates()) {
        Err(e) => (
            CheckStatus::Fail,
            format!("the kubelet refuses to start: {e}; remove the setting"),
        ),
        Ok(_) if version.fine_grained_default().is_none() => (
            CheckStatus::Skip,
            format!(
                "kubelet {version} has no KubeletFineGrainedAuthz gate: /pods, /healthz and /configz need nodes/proxy; upgrade to 1.33 or later"
            ),
        ),
        Ok(m) if m.fine_grained() => (CheckStatus::Pass, String::new()),
        Ok(_) => (
            CheckStatus::Fail,
            format!("{gate_fix}: without it /pods, /healthz and /configz need nodes/proxy"),
        ),
    };
    CheckResult {
        id: "fine-grained-authz",
        cis: None,
        title: "KubeletFineGrainedAuthz is enabled (1.32-1.35)",
        status,
        actual,
        fix,
    }
}
