//! Reading RBAC objects from text: multi-document YAML, or JSON (one value or several in a row).
//! `List` and `<Kind>List` objects are flattened; empty and `null` documents are skipped. Every
//! error is one line naming the source, the document and the field.
//!
//! Each document is read in two stages: serde derive into the raw structs of `raw` (the kind
//! first, then the object of that kind; a wrong type names its field path, e.g.
//! `rules[0].verbs: expected a list of strings, got a string`), then a checking step into the
//! model's types (required fields, namespace defaulting).

mod raw;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use raw::{
    RawApiVersion, RawBinding, RawClusterRole, RawHead, RawList, RawObjectMeta, RawPolicyRule,
    RawRole, StrList,
};

use super::model::{
    ClusterRole, ClusterRoleBinding, ObjectMeta, PolicyRule, Role, RoleBinding, RoleRef, Subject,
    CLUSTER_ROLE_BINDING_KIND, CLUSTER_ROLE_KIND, DEFAULT_NAMESPACE, RBAC_GROUP, ROLE_BINDING_KIND,
    ROLE_KIND,
};
use super::RbacError;

/// One object read from text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Object {
    ClusterRole(ClusterRole),
    Role(Role),
    ClusterRoleBinding(ClusterRoleBinding),
    RoleBinding(RoleBinding),
}

/// Where in the input we are, for errors.
struct Cx<'a> {
    source_name: &'a str,
    doc: usize,
}

impl Cx<'_> {
    fn field(&self, field: &str, message: impl Into<String>) -> RbacError {
        RbacError::Field {
            source_name: self.source_name.to_string(),
            doc: self.doc,
            field: if field.is_empty() {
                "(document)".to_string()
            } else {
                field.to_string()
            },
            message: message.into(),
        }
    }

    fn unknown_kind(&self, kind: &str) -> RbacError {
        RbacError::UnknownKind {
            source_name: self.source_name.to_string(),
            doc: self.doc,
            kind: kind.to_string(),
        }
    }
}

fn syntax(source_name: &str, doc: usize, message: &str) -> RbacError {
    RbacError::Syntax {
        source_name: source_name.to_string(),
        doc,
        message: one_line(message),
    }
}

/// Collapse a message onto one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parse every document of `text`.
pub(crate) fn parse_objects(text: &str, source_name: &str) -> Result<Vec<Object>, RbacError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let docs = documents(text, source_name)?;
    let mut out = Vec::new();
    for (i, value) in docs.iter().enumerate() {
        if value.is_null() {
            continue;
        }
        let cx = Cx {
            source_name,
            doc: i + 1,
        };
        parse_value(&cx, value, "", None, &mut out)?;
    }
    Ok(out)
}

/// The deepest `[`/`{` nesting the parsers accept. RBAC objects nest about five levels; libyaml's
/// scanner costs O(tokens x flow depth), so deeper input is refused before parsing (100 KB of
/// `{a: ` would otherwise take minutes).
const MAX_NESTING: usize = 128;

/// Where `text` first nests brackets deeper than [`MAX_NESTING`] (quotes are not honoured: a
/// manifest has no reason to hold 128 unclosed brackets even in strings), as a 1-based document
/// number (counting `---` lines before it).
fn too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut doc = 1usize;
    let mut line_start = true;
    for (i, c) in text.char_indices() {
        if line_start && text.get(i..).is_some_and(|rest| rest.starts_with("---")) && i > 0 {
            doc += 1;
        }
        line_start = c == '\n';
        match c {
            '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(doc);
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Split `text` into documents: JSON when it looks like JSON and parses as such, YAML otherwise.
fn documents(text: &str, source_name: &str) -> Result<Vec<Value>, RbacError> {
    if let Some(doc) = too_deep(text) {
        return Err(syntax(
            source_name,
            doc,
            &format!("nesting deeper than {MAX_NESTING} levels"),
        ));
    }
    let looks_json = text.trim_start().starts_with(['{', '[']);
    if looks_json {
        let mut values = Vec::new();
        let mut json_error = None;
        for (i, v) in serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .enumerate()
        {
            match v {
                Ok(v) => values.push(v),
                Err(e) => {
                    json_error = Some(syntax(source_name, i + 1, &e.to_string()));
                    break;
                }
            }
        }
        match json_error {
            None => return Ok(values),
            // A YAML flow mapping also starts with `{`: try YAML before giving the JSON error.
            Some(err) => return yaml_documents(text, source_name).map_err(|_| err),
        }
    }
    yaml_documents(text, source_name)
}

fn yaml_documents(text: &str, source_name: &str) -> Result<Vec<Value>, RbacError> {
    let mut values = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        match Value::deserialize(de) {
            Ok(v) => values.push(v),
            Err(e) => return Err(syntax(source_name, i + 1, &e.to_string())),
        }
    }
    Ok(values)
}

/// `path` (relative to the object at `prefix`) as a path from the document.
fn under(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty(), path.starts_with('[')) {
        (true, _, _) => path.to_string(),
        (false, true, _) => prefix.to_string(),
        (false, false, true) => format!("{prefix}{path}"),
        (false, false, false) => format!("{prefix}.{path}"),
    }
}

/// Stage one for the object at `path`: deserialise it into `T`, naming the field of any error.
fn read<T: DeserializeOwned>(cx: &Cx<'_>, value: &Value, path: &str) -> Result<T, RbacError> {
    crate::raw::from_value(value).map_err(|e| cx.field(&under(path, &e.path), e.message))
}

fn is_rbac_kind(kind: &str) -> bool {
    matches!(
        kind,
        CLUSTER_ROLE_KIND | ROLE_KIND | CLUSTER_ROLE_BINDING_KIND | ROLE_BINDING_KIND
    )
}

fn parse_value(
    cx: &Cx<'_>,
    value: &Value,
    path: &str,
    default_kind: Option<&str>,
    out: &mut Vec<Object>,
) -> Result<(), RbacError> {
    let head: RawHead = read(cx, value, path)?;
    let kind = match (head.kind.as_deref(), default_kind) {
        (None | Some(""), Some(k)) => k,
        (None | Some(""), None) => return Err(cx.field(&under(path, "kind"), "missing")),
        (Some(k), _) => k,
    };
    if is_rbac_kind(kind) {
        let RawApiVersion { api_version } = read(cx, value, path)?;
        check_api_version(cx, api_version.as_deref(), path)?;
        let object = match kind {
            CLUSTER_ROLE_KIND => {
                Object::ClusterRole(cluster_role(cx, read(cx, value, path)?, path)?)
            }
            ROLE_KIND => Object::Role(role(cx, read(cx, value, path)?, path)?),
            CLUSTER_ROLE_BINDING_KIND => {
                let (metadata, subjects, role_ref) =
                    binding(cx, read(cx, value, path)?, path, false)?;
                Object::ClusterRoleBinding(ClusterRoleBinding {
                    metadata,
                    subjects,
                    role_ref,
                })
            }
            _ => {
                let (metadata, subjects, role_ref) =
                    binding(cx, read(cx, value, path)?, path, true)?;
                Object::RoleBinding(RoleBinding {
                    metadata,
                    subjects,
                    role_ref,
                })
            }
        };
        out.push(object);
        return Ok(());
    }
    let element_kind = if kind == "List" {
        None
    } else {
        match kind.strip_suffix("List") {
            Some(k) if is_rbac_kind(k) => Some(k),
            _ => return Err(cx.unknown_kind(kind)),
        }
    };
    let list: RawList = read(cx, value, path)?;
    for (i, item) in list.items.unwrap_or_default().iter().enumerate() {
        let item_path = under(path, &format!("items[{i}]"));
        parse_value(cx, item, &item_path, element_kind, out)?;
    }
    Ok(())
}

fn check_api_version(cx: &Cx<'_>, api_version: Option<&str>, path: &str) -> Result<(), RbacError> {
    let Some(v) = api_version else {
        return Ok(());
    };
    let ok = v
        .strip_prefix(RBAC_GROUP)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|version| matches!(version, "v1" | "v1beta1" | "v1alpha1"));
    if ok {
        Ok(())
    } else {
        Err(cx.field(
            &under(path, "apiVersion"),
            format!("expected `rbac.authorization.k8s.io/v1`, got `{v}`"),
        ))
    }
}

/// A required, non-empty string field.
fn required(cx: &Cx<'_>, value: Option<String>, field: &str) -> Result<String, RbacError> {
    match value {
        None => Err(cx.field(field, "missing")),
        Some(s) if s.is_empty() => Err(cx.field(field, "must not be empty")),
        Some(s) => Ok(s),
    }
}

fn strings(list: Option<StrList>) -> Vec<String> {
    list.unwrap_or_default().0
}

/// `metadata`: name required; namespace defaulted for namespaced kinds, dropped otherwise.
fn metadata(
    cx: &Cx<'_>,
    meta: Option<RawObjectMeta>,
    path: &str,
    namespaced: bool,
) -> Result<ObjectMeta, RbacError> {
    let meta_path = under(path, "metadata");
    let meta = meta.ok_or_else(|| cx.field(&meta_path, "missing"))?;
    let name = required(cx, meta.name, &under(&meta_path, "name"))?;
    let namespace = meta.namespace.unwrap_or_default();
    let namespace = match (namespaced, namespace.is_empty()) {
        (false, _) => String::new(),
        (true, true) => DEFAULT_NAMESPACE.to_string(),
        (true, false) => namespace,
    };
    Ok(ObjectMeta {
        name,
        namespace,
        labels: meta.labels.unwrap_or_default(),
        annotations: meta.annotations.unwrap_or_default(),
    })
}

fn rules(rules: Option<Vec<RawPolicyRule>>) -> Vec<PolicyRule> {
    rules
        .unwrap_or_default()
        .into_iter()
        .map(|r| PolicyRule {
            verbs: strings(r.verbs),
            api_groups: strings(r.api_groups),
            resources: strings(r.resources),
            resource_names: strings(r.resource_names),
            non_resource_urls: strings(r.non_resource_urls),
        })
        .collect()
}

fn cluster_role(cx: &Cx<'_>, raw: RawClusterRole, path: &str) -> Result<ClusterRole, RbacError> {
    Ok(ClusterRole {
        metadata: metadata(cx, raw.metadata, path, false)?,
        rules: rules(raw.rules),
        aggregation_rule: raw.aggregation_rule,
    })
}

fn role(cx: &Cx<'_>, raw: RawRole, path: &str) -> Result<Role, RbacError> {
    Ok(Role {
        metadata: metadata(cx, raw.metadata, path, true)?,
        rules: rules(raw.rules),
    })
}

/// The parts of a ClusterRoleBinding or RoleBinding.
fn binding(
    cx: &Cx<'_>,
    raw: RawBinding,
    path: &str,
    namespaced: bool,
) -> Result<(ObjectMeta, Vec<Subject>, RoleRef), RbacError> {
    let metadata = metadata(cx, raw.metadata, path, namespaced)?;
    let subjects = raw
        .subjects
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let p = under(path, &format!("subjects[{i}]"));
            Ok(Subject {
                kind: required(cx, s.kind, &under(&p, "kind"))?,
                api_group: s.api_group.unwrap_or_default(),
                name: required(cx, s.name, &under(&p, "name"))?,
                namespace: s.namespace.unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, RbacError>>()?;
    let ref_path = under(path, "roleRef");
    let r = raw.role_ref.ok_or_else(|| cx.field(&ref_path, "missing"))?;
    let role_ref = RoleRef {
        api_group: r.api_group.unwrap_or_default(),
        kind: required(cx, r.kind, &under(&ref_path, "kind"))?,
        name: required(cx, r.name, &under(&ref_path, "name"))?,
    };
    Ok((metadata, subjects, role_ref))
}
