//! The kubelet's effective configuration: its `--config` file with the `--config-dir` drop-ins
//! merged over it, the way the kubelet does it (`cmd/kubelet/app/server.go`,
//! `mergeKubeletConfigurations`):
//!
//! - the drop-ins are the files under the directory whose name ends in `.conf` (Go's
//!   `filepath.Ext(name) == ".conf"`: hidden files such as `.10-x.conf` count, `x.conf.swp`,
//!   `x.yaml` and `x.json` do not), found by `filepath.WalkDir`, which descends into
//!   subdirectories and visits each directory's entries in lexical (byte) order; [`dropin_names`]
//!   is that rule;
//! - each drop-in is a whole KubeletConfiguration (kind and apiVersion required), YAML or JSON;
//! - each is applied in that order as a JSON merge patch over the configuration so far and the
//!   result decoded into the existing configuration: objects (nested structs and maps such as
//!   `featureGates`) merge key by key, lists and scalars are replaced, later files win, and a
//!   `null` leaves the value as it was (merge patch deletes the key, and Go's decoder then keeps
//!   the field of the struct it decodes into);
//! - defaults are applied to the base file alone, before the drop-ins: a drop-in's
//!   `authorization.mode: ""` stays empty (the kubelet refuses to start) and its `port: 0` is
//!   refused, where the same values in the base mean `Webhook` and 10250.
//!
//! Relative paths in the base file (`staticPodPath`, `authentication.x509.clientCAFile`,
//! `tlsCertFile`, `tlsPrivateKeyFile`, `resolvConf`, `volumePluginDir`, `podLogsDir`) are made
//! absolute against the base file's directory, as the kubelet's file loader does; drop-ins are not
//! resolved. Command-line flags, which the kubelet lays over all of this, are not read here.
//!
//! YAML is read as YAML 1.2: where the kubelet's YAML 1.1 reader takes `yes`/`on`/`off` as booleans,
//! they are strings here, and a string where the engine expects a boolean is refused with the field
//! named (never read as something else).

use serde_json::{Map, Value};

use super::raw::RawKubeletConfiguration;
use super::tls::{envoy_tls, EnvoyTls};
use super::{
    check_head, field_error, fields, parse_document, settings_from_raw, KubeletConfigError,
    KubeletSettings,
};

/// The kubelet's default `address`.
pub const DEFAULT_ADDRESS: &str = "0.0.0.0";
/// The kubelet's default `port`.
pub const DEFAULT_PORT: u16 = 10250;

/// One configuration file: its path (used in error messages and to resolve relative paths of the
/// base file) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file's path, as the caller names it.
    pub name: String,
    /// Its contents (YAML or JSON).
    pub text: String,
}

impl Source {
    /// A source from a name and a text.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// The kubelet's effective configuration, as far as the files say.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveConfig {
    /// The merged document, in KubeletConfiguration field names, as written (no defaults added;
    /// see [`EffectiveConfig::effective_document`]).
    pub document: Value,
    /// The files read, base first, in the order they were applied.
    pub sources: Vec<String>,
    /// `address` (default `0.0.0.0`).
    pub address: String,
    /// `port` (default 10250).
    pub port: u16,
    /// The settings that decide who may reach the kubelet's API.
    pub settings: KubeletSettings,
    tls: EnvoyTls,
}

impl EffectiveConfig {
    /// What Envoy serves in front of this kubelet: its minimum TLS version and cipher suites.
    pub fn envoy_tls(&self) -> EnvoyTls {
        self.tls.clone()
    }

    /// The merged document with the defaults of the fields the engine reads filled in (`address`,
    /// `port`, `readOnlyPort`, `tlsMinVersion`, `authentication.{anonymous,webhook}.enabled`,
    /// `authentication.x509.clientCAFile`, `authorization.mode`): what the kubelet runs with.
    pub fn effective_document(&self) -> Value {
        let mut doc = self.document.clone();
        let s = &self.settings;
        let tls_min = match doc.get("tlsMinVersion").and_then(Value::as_str) {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => "VersionTLS12".to_string(),
        };
        let set = [
            (&["address"][..], Value::from(self.address.clone())),
            (&["port"][..], Value::from(self.port)),
            (&["readOnlyPort"][..], Value::from(s.read_only_port.value)),
            (&["tlsMinVersion"][..], Value::from(tls_min)),
            (
                &["authentication", "anonymous", "enabled"][..],
                Value::from(s.anonymous_auth.value),
            ),
            (
                &["authentication", "webhook", "enabled"][..],
                Value::from(s.webhook_authentication.value),
            ),
            (
                &["authentication", "x509", "clientCAFile"][..],
                Value::from(s.client_ca_file.value.clone()),
            ),
            (
                &["authorization", "mode"][..],
                Value::from(s.authorization_mode.value.clone()),
            ),
        ];
        for (path, value) in set {
            put(&mut doc, path, value);
        }
        doc
    }
}

/// Set `value` at `path`, creating the objects on the way.
fn put(doc: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = doc;
    for key in parents {
        let Some(map) = node.as_object_mut() else {
            return;
        };
        let child = map
            .entry((*key).to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !child.is_object() {
            *child = Value::Object(Map::new());
        }
        node = child;
    }
    if let Some(map) = node.as_object_mut() {
        map.insert((*last).to_string(), value);
    }
}

/// The drop-in files the kubelet reads, in the order it applies them, out of the entries of its
/// `--config-dir` (paths relative to it, `/`-separated, subdirectories included; directories
/// themselves are not passed): names ending in `.conf`, ordered as `filepath.WalkDir` visits them
/// (each directory's entries in byte order, a subdirectory's files where its name sorts).
pub fn dropin_names(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = names
        .into_iter()
        .filter(|n| {
            n.rsplit('/')
                .next()
                .is_some_and(|last| last.ends_with(".conf"))
        })
        .collect();
    out.sort_by(|a, b| a.split('/').cmp(b.split('/')));
    out.dedup();
    out
}

/// Read the base configuration and the drop-ins (in the order [`dropin_names`] gives) and merge
/// them as the kubelet does. Every file must be a KubeletConfiguration v1beta1 with no unknown
/// field; errors name the file and the field.
pub fn effective_config(
    base: &Source,
    dropins: &[Source],
) -> Result<EffectiveConfig, KubeletConfigError> {
    let mut merged = read_source(base)?;
    resolve_relative_paths(&mut merged, &base.name);
    let mut sources = vec![base.name.clone()];
    // Defaulting runs on the base file only (the kubelet defaults it, then decodes each drop-in
    // over it as written): an empty `authorization.mode` or a `port: 0` in a drop-in stays empty or
    // zero. The last drop-in that writes each of them, if any:
    let mut dropin_mode: Option<String> = None;
    let mut dropin_port: Option<(String, i64)> = None;
    for dropin in dropins {
        let doc = read_source(dropin)?;
        if let Some(mode) = doc.pointer("/authorization/mode").and_then(Value::as_str) {
            dropin_mode = Some(mode.to_string());
        }
        if let Some(port) = doc.get("port").and_then(Value::as_i64) {
            dropin_port = Some((dropin.name.clone(), port));
        }
        merge(&mut merged, doc);
        sources.push(dropin.name.clone());
    }
    if let Some((name, 0)) = dropin_port {
        return Err(KubeletConfigError::InSource {
            source_name: name,
            error: Box::new(KubeletConfigError::Field {
                field: "port".into(),
                message: "0 in a drop-in is not defaulted: the kubelet refuses to start (a port between 1 and 65535); set the port or remove the field".into(),
            }),
        });
    }
    // Every file was type-checked on its own; the merge of well-typed files is well typed.
    let raw: RawKubeletConfiguration = crate::raw::from_value(&merged).map_err(field_error)?;
    let mut settings = settings_from_raw(&raw);
    if dropin_mode.as_deref() == Some("") {
        settings.authorization_mode.set(String::new());
    }
    let address = match raw.address.as_deref() {
        None | Some("") => DEFAULT_ADDRESS.to_string(),
        Some(a) => a.to_string(),
    };
    let port = match raw.port {
        None | Some(0) => DEFAULT_PORT,
        Some(p) => u16::try_from(p).map_err(|_| port_error(p))?,
    };
    let tls = envoy_tls(
        raw.tls_min_version.as_deref(),
        raw.tls_cipher_suites.as_deref().unwrap_or_default(),
    )?;
    Ok(EffectiveConfig {
        document: merged,
        sources,
        address,
        port,
        settings,
        tls,
    })
}

fn port_error(p: i64) -> KubeletConfigError {
    KubeletConfigError::Field {
        field: "port".into(),
        message: format!("expected a port between 1 and 65535, got {p}"),
    }
}

/// One file, checked on its own: syntax, kind and apiVersion, unknown fields, the types and TLS
/// names of the fields the engine reads. Errors carry the file's name.
fn read_source(source: &Source) -> Result<Value, KubeletConfigError> {
    let in_source = |error: KubeletConfigError| KubeletConfigError::InSource {
        source_name: source.name.clone(),
        error: Box::new(error),
    };
    let doc = parse_document(&source.text).map_err(in_source)?;
    check_head(&doc).map_err(in_source)?;
    fields::check_unknown_fields(&doc).map_err(in_source)?;
    let raw: RawKubeletConfiguration = crate::raw::from_value(&doc)
        .map_err(field_error)
        .map_err(in_source)?;
    if let Some(p) = raw.port {
        if !(0..=65535).contains(&p) {
            return Err(in_source(port_error(p)));
        }
    }
    envoy_tls(
        raw.tls_min_version.as_deref(),
        raw.tls_cipher_suites.as_deref().unwrap_or_default(),
    )
    .map_err(in_source)?;
    Ok(doc)
}

/// Apply one drop-in: objects merge key by key, `null` keeps what was there, anything else
/// replaces.
fn merge(target: &mut Value, patch: Value) {
    match patch {
        Value::Null => {}
        Value::Object(patch) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Some(map) = target.as_object_mut() {
                for (key, value) in patch {
                    match map.get_mut(&key) {
                        Some(existing) => merge(existing, value),
                        None => {
                            let mut fresh = Value::Null;
                            merge(&mut fresh, value);
                            if !fresh.is_null() {
                                map.insert(key, fresh);
                            }
                        }
                    }
                }
            }
        }
        other => *target = other,
    }
}

/// The base file's path fields the kubelet makes absolute (`KubeletConfigurationPathRefs`).
const PATH_FIELDS: &[&[&str]] = &[
    &["staticPodPath"],
    &["authentication", "x509", "clientCAFile"],
    &["tlsCertFile"],
    &["tlsPrivateKeyFile"],
    &["resolvConf"],
    &["volumePluginDir"],
    &["podLogsDir"],
];

fn resolve_relative_paths(doc: &mut Value, base_name: &str) {
    let Some((dir, _)) = base_name.rsplit_once('/') else {
        return; // no directory known: leave the paths as written
    };
    let dir = if dir.is_empty() { "/" } else { dir };
    for path in PATH_FIELDS {
        let mut node = Some(&mut *doc);
        for key in *path {
            node = node.and_then(|n| n.get_mut(*key));
        }
        if let Some(Value::String(s)) = node {
            if !s.is_empty() && !s.starts_with('/') {
                *s = clean_join(dir, s);
            }
        }
    }
}

/// Go's `filepath.Join(dir, rel)`: joined, then `.` and `..` removed lexically.
fn clean_join(dir: &str, rel: &str) -> String {
    let absolute = dir.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in dir.split('/').chain(rel.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_join_is_go_filepath_join() {
        assert_eq!(
            clean_join("/var/lib/kubelet", "pki/ca.crt"),
            "/var/lib/kubelet/pki/ca.crt"
        );
        assert_eq!(
            clean_join("/etc/kubernetes/kubelet", "../pki/ca.crt"),
            "/etc/kubernetes/pki/ca.crt"
        );
        assert_eq!(clean_join("/", "../../x"), "/x");
        assert_eq!(clean_join("conf", "./x"), "conf/x");
        assert_eq!(clean_join("..", "../x"), "../../x");
    }

    #[test]
    fn merge_is_the_kubelets() {
        let mut base = serde_json::json!({"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": {"f": true}});
        merge(
            &mut base,
            serde_json::json!({"a": {"c": [3], "n": null}, "d": null, "e": {"f": null, "g": {"h": null, "i": 1}}}),
        );
        assert_eq!(
            base,
            serde_json::json!({"a": {"b": 1, "c": [3]}, "d": "x", "e": {"f": true, "g": {"i": 1}}})
        );
    }
}
