//! The wasm filter's configuration for this node: the cluster-wide settings of the
//! `kubelet-authz-filter` ConfigMap (`filter.yaml`: enforcement, audit policy, TTLs, limits, ...)
//! merged with the node's own values (`nodeName`, `kubeletVersion`, `apiServer.cluster` and
//! `.authority`), checked with the engine's own parser ([`kubelet_authz::config::Config`]) and
//! written as Envoy's ECDS discovery response. A configuration the engine refuses is never
//! written: the error names the field, and Envoy keeps serving the previous one.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::bootstrap;

/// The node's own values, which the ConfigMap may not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeValues {
    /// `nodeName`.
    pub node_name: String,
    /// `kubeletVersion` (a minor version such as `1.34`).
    pub kubelet_version: String,
    /// `apiServer.authority`: the name in the API server's certificate.
    pub apiserver_authority: String,
}

/// Why a filter configuration was not written.
#[derive(Debug, thiserror::Error)]
pub enum FilterConfigError {
    /// The ConfigMap file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not YAML, or not a mapping.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A field that belongs to the node (set by the agent), not to the ConfigMap.
    #[error("{path}: {field}: set by the node agent for each node; remove it from the ConfigMap")]
    NodeField {
        /// The file.
        path: PathBuf,
        /// The dotted field.
        field: String,
    },
    /// The engine refuses the merged configuration.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The engine's error (it names the field).
        source: kubelet_authz::config::ConfigError,
    },
    /// The ECDS file could not be written.
    #[error(transparent)]
    Write(#[from] bootstrap::WriteError),
}

/// Fields the node agent owns.
const NODE_FIELDS: &[&[&str]] = &[
    &["nodeName"],
    &["kubeletVersion"],
    &["apiServer", "cluster"],
    &["apiServer", "authority"],
    // The credential is Envoy's (the node certificate, or the injected ServiceAccount token).
    &["apiServer", "bearerToken"],
];

fn lookup<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

/// Merge the ConfigMap's text (YAML or JSON, a mapping; empty = every default) with the node's
/// values and check it; the JSON the filter is configured with.
pub fn merge(source: &Path, text: &str, node: &NodeValues) -> Result<String, FilterConfigError> {
    let syntax = |message: String| FilterConfigError::Syntax {
        path: source.to_path_buf(),
        message,
    };
    let mut value: Value = if text.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| syntax(format!("not YAML: {e}")))?
    };
    if value.is_null() {
        value = Value::Object(Map::new());
    }
    for field in NODE_FIELDS {
        if lookup(&value, field).is_some() {
            return Err(FilterConfigError::NodeField {
                path: source.to_path_buf(),
                field: field.join("."),
            });
        }
    }
    let Value::Object(top) = &mut value else {
        return Err(syntax(
            "expected a mapping of filter settings (enforcement, authorization, ...)".into(),
        ));
    };
    top.insert("nodeName".into(), Value::String(node.node_name.clone()));
    top.insert(
        "kubeletVersion".into(),
        Value::String(node.kubelet_version.clone()),
    );
    let api = top
        .entry("apiServer")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(api) = api else {
        return Err(syntax("apiServer: expected a mapping".into()));
    };
    api.insert(
        "cluster".into(),
        Value::String(bootstrap::APISERVER_CLUSTER.into()),
    );
    api.insert(
        "authority".into(),
        Value::String(node.apiserver_authority.clone()),
    );
    kubelet_authz::config::Config::from_value(&value).map_err(|e| FilterConfigError::Invalid {
        path: source.to_path_buf(),
        source: e,
    })?;
    serde_json::to_string_pretty(&value).map_err(|e| syntax(e.to_string()))
}

/// Read the ConfigMap file, merge, check, and write the ECDS file `ecds_dir/filter.yaml`
/// atomically. On any error nothing is written (Envoy keeps the previous configuration).
pub fn write_ecds(
    filter_file: &Path,
    node: &NodeValues,
    filter_wasm: &Path,
    ecds_dir: &Path,
) -> Result<String, FilterConfigError> {
    let text = std::fs::read_to_string(filter_file).map_err(|source| FilterConfigError::Read {
        path: filter_file.to_path_buf(),
        source,
    })?;
    let json = merge(filter_file, &text, node)?;
    let target = ecds_dir.join(bootstrap::ECDS_FILE);
    let response = bootstrap::ecds_response(filter_wasm, &json);
    // The same configuration again (an agent restart, a ConfigMap rewritten unchanged) is not
    // renamed in: Envoy would reload the filter for nothing.
    let unchanged = std::fs::read_to_string(&target)
        .ok()
        .and_then(|t| serde_yaml_ng::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|old| old == response);
    if !unchanged {
        bootstrap::write_atomic(&target, &response)?;
    }
    Ok(json)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use rstest::rstest;

    fn node() -> NodeValues {
        NodeValues {
            node_name: "worker-1".into(),
            kubelet_version: "1.34".into(),
            apiserver_authority: "kubernetes.default.svc".into(),
        }
    }

    #[rstest]
    #[case::empty("", "Enforce")]
    #[case::shadow("enforcement: Shadow\n", "Shadow")]
    #[case::json("{\"enforcement\": \"Enforce\", \"limits\": {}}", "Enforce")]
    #[case::ttl("enforcement: Shadow\nauthorization: {webhook: {cacheAuthorizedTTL: 1m0s}}\napiServer: {timeout: 5s}\n", "Shadow")]
    fn a_good_configmap_gets_the_node_values(#[case] text: &str, #[case] enforcement: &str) {
        let json = merge(Path::new("filter.yaml"), text, &node()).unwrap();
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["nodeName"], "worker-1");
        assert_eq!(v["kubeletVersion"], "1.34");
        assert_eq!(v["apiServer"]["cluster"], "kube-apiserver");
        assert_eq!(v["apiServer"]["authority"], "kubernetes.default.svc");
        let c = kubelet_authz::config::Config::from_json(json.as_bytes()).unwrap();
        assert_eq!(format!("{:?}", c.enforcement), enforcement);
    }

    #[rstest]
    #[case::typo("enforcment: Shadow\n", "enforcment")]
    #[case::bad_value("enforcement: enforce\n", "enforcement")]
    #[case::bad_ttl(
        "authorization: {webhook: {cacheAuthorizedTTL: soon}}\n",
        "cacheAuthorizedTTL"
    )]
    #[case::node_name("nodeName: worker-2\n", "nodeName")]
    #[case::version("kubeletVersion: \"1.30\"\n", "kubeletVersion")]
    #[case::cluster("apiServer: {cluster: other}\n", "apiServer.cluster")]
    #[case::token("apiServer: {bearerToken: x}\n", "apiServer.bearerToken")]
    #[case::list("- a\n", "expected a mapping")]
    #[case::yaml("enforcement: [\n", "not YAML")]
    fn a_bad_configmap_is_refused_naming_the_field(#[case] text: &str, #[case] field: &str) {
        let e = merge(Path::new("/config/filter.yaml"), text, &node())
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{e}");
        assert!(e.starts_with("/config/filter.yaml: "), "{e}");
    }

    #[test]
    fn an_unchanged_configuration_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let cm = dir.path().join("filter.yaml");
        let ecds = dir.path().join("ecds");
        std::fs::write(&cm, "enforcement: Shadow\n").unwrap();
        write_ecds(&cm, &node(), Path::new("/w.wasm"), &ecds).unwrap();
        let f = ecds.join("filter.yaml");
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = inode(&f);
        std::fs::write(&cm, "# a comment only\nenforcement: Shadow\n").unwrap();
        write_ecds(&cm, &node(), Path::new("/w.wasm"), &ecds).unwrap();
        assert_eq!(inode(&f), before, "rewritten although unchanged");
        std::fs::write(&cm, "enforcement: Enforce\n").unwrap();
        write_ecds(&cm, &node(), Path::new("/w.wasm"), &ecds).unwrap();
        assert_ne!(inode(&f), before);
    }

    #[test]
    fn a_refused_configuration_leaves_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let cm = dir.path().join("filter.yaml");
        let ecds = dir.path().join("ecds");
        std::fs::write(&cm, "enforcement: Shadow\n").unwrap();
        write_ecds(&cm, &node(), Path::new("/w.wasm"), &ecds).unwrap();
        let before = std::fs::read_to_string(ecds.join("filter.yaml")).unwrap();
        assert!(before.contains("Shadow"), "{before}");
        std::fs::write(&cm, "enforcement: Sometimes\n").unwrap();
        assert!(write_ecds(&cm, &node(), Path::new("/w.wasm"), &ecds).is_err());
        assert_eq!(
            std::fs::read_to_string(ecds.join("filter.yaml")).unwrap(),
            before
        );
    }
}
