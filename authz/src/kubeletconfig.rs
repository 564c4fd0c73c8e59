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
//! A file is read in two stages: serde derive into raw structs (`raw`; a wrong type names its
//! field path), then [`parse_config`] checks kind and apiVersion and lays the values over the
//! defaults. A command line is split and read by `flags`. [`check`] then grades the settings: CIS
//! Kubernetes Benchmark 4.2.1 to 4.2.4, webhook authentication, and the `KubeletFineGrainedAuthz`
//! gate on the kubelet versions where it can be off.
//!
//! The node agent and `check-config --behind-proxy` read the kubelet's **effective configuration**
//! instead ([`effective_config`], module `effective`): the `--config` file plus the `--config-dir`
//! drop-ins merged as the kubelet merges them, with unknown fields refused (`fields`), the TLS policy
//! mapped to Envoy's names (`tls`), and [`behind_proxy`] grading it against the profile of a
//! kubelet that only the proxy can reach, whose settings ship as one drop-in ([`PROXY_DROPIN`]).
//! Everything here is pure: no file or network access.

mod behind_proxy;
mod check;
mod effective;
mod fields;
mod flags;
mod raw;
mod tls;

use serde::Serialize;

use crate::kubelet::FeatureGates;
pub use behind_proxy::{
    behind_proxy, is_loopback, PER_NODE_CA_FILE, PROXY_DROPIN, PROXY_DROPIN_NAME,
};
pub use check::{check, CheckResult, CheckStatus};
pub use effective::{
    dropin_names, effective_config, EffectiveConfig, Source, DEFAULT_ADDRESS, DEFAULT_PORT,
};
pub use fields::TOP_LEVEL_FIELDS;
pub use flags::{apply_command_line, command_line_config_path, parse_command_line};
use raw::{RawHead, RawKubeletConfiguration};
pub use tls::{
    envoy_cipher, envoy_tls, envoy_tls_version, CipherMapping, EnvoyTls, CIPHER_SUITES,
    DEFAULT_TLS_VERSION, TLS_VERSIONS,
};

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
    /// An error in one file of several (the base configuration or a drop-in), named by `source_name`.
    #[error("{source_name}: {error}")]
    InSource {
        /// The file (its path) the error is in.
        source_name: String,
        /// The error.
        error: Box<KubeletConfigError>,
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
    /// `featureGates.AllowParsingUserUIDFromCertAuth` / `--feature-gates`; `None` when not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_uid_gate: Option<bool>,
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
            cert_uid_gate: None,
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
            cert_uid_gate: None,
            config_file: None,
        }
    }

    /// The feature gates as the kubelet model takes them.
    pub fn feature_gates(&self) -> FeatureGates {
        FeatureGates {
            kubelet_fine_grained_authz: self.fine_grained_authz_gate,
            allow_parsing_user_uid_from_cert_auth: self.cert_uid_gate,
        }
    }
}

/// Go's `strconv.ParseBool` (the engine's one copy, in [`crate::gates`]).
pub use crate::gates::parse_go_bool;

/// Parse a KubeletConfiguration file (YAML or JSON) and apply the config-file defaults.
///
/// Fields this function does not check are ignored, as the kubelet's lenient decoding does;
/// a wrong type in a checked field, another kind or another API version is an error. The node
/// agent reads with [`effective_config`] instead, which refuses unknown fields.
pub fn parse_config(text: &str) -> Result<KubeletSettings, KubeletConfigError> {
    let doc = parse_document(text)?;
    check_head(&doc)?;
    let raw: RawKubeletConfiguration = crate::raw::from_value(&doc).map_err(field_error)?;
    Ok(settings_from_raw(&raw))
}

/// YAML or JSON text to one mapping (a JSON document is read as JSON, anything else as YAML).
fn parse_document(text: &str) -> Result<serde_json::Value, KubeletConfigError> {
    let doc: serde_json::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| KubeletConfigError::Syntax(e.to_string()))?
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| KubeletConfigError::Syntax(e.to_string()))?
    };
    if !doc.is_object() {
        let got = match doc {
            serde_json::Value::Null => "null (an empty file?)",
            serde_json::Value::Bool(_) => "a boolean",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Array(_) => "a list",
            serde_json::Value::Object(_) => "a mapping",
        };
        return Err(KubeletConfigError::Syntax(format!(
            "expected a KubeletConfiguration mapping, got {got}"
        )));
    }
    Ok(doc)
}

/// Kind and apiVersion, read before anything else, so that another kind is reported as such
/// rather than by the first field of it this module reads.
fn check_head(doc: &serde_json::Value) -> Result<(), KubeletConfigError> {
    let head: RawHead = crate::raw::from_value(doc).map_err(field_error)?;
    let kind = head.kind.unwrap_or_default();
    if kind != KIND {
        return Err(KubeletConfigError::UnknownKind(kind));
    }
    let api_version = head.api_version.unwrap_or_default();
    if api_version != API_VERSION {
        return Err(KubeletConfigError::UnknownApiVersion(api_version));
    }
    Ok(())
}

/// Stage two: lay what was written over the config-file defaults.
fn settings_from_raw(raw: &RawKubeletConfiguration) -> KubeletSettings {
    let mut s = KubeletSettings::config_file_defaults();
    if let Some(authn) = &raw.authentication {
        if let Some(v) = authn.anonymous.as_ref().and_then(|a| a.enabled) {
            s.anonymous_auth.set(v);
        }
        if let Some(v) = authn.webhook.as_ref().and_then(|w| w.enabled) {
            s.webhook_authentication.set(v);
        }
        if let Some(v) = authn.x509.as_ref().and_then(|x| x.client_ca_file.clone()) {
            s.client_ca_file.set(v);
        }
    }
    // An empty mode is defaulted to Webhook by v1beta1 defaulting, so only a non-empty one counts.
    if let Some(v) = raw.authorization.as_ref().and_then(|a| a.mode.clone()) {
        if !v.is_empty() {
            s.authorization_mode.set(v);
        }
    }
    if let Some(v) = raw.read_only_port {
        s.read_only_port.set(v);
    }
    if let Some(g) = &raw.feature_gates {
        s.fine_grained_authz_gate = g.kubelet_fine_grained_authz;
        s.cert_uid_gate = g.allow_parsing_user_uid_from_cert_auth;
    }
    s
}

fn field_error(e: crate::raw::FieldError) -> KubeletConfigError {
    KubeletConfigError::Field {
        field: e.path,
        message: e.message,
    }
}
