//! Reading RBAC objects from text: multi-document YAML, or JSON (one value or several in a row).
//! `List` and `<Kind>List` objects are flattened; empty and `null` documents are skipped. Every
//! error is one line naming the source, the document and the field.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

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

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
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
    let Value::Object(map) = value else {
        return Err(cx.field(
            path,
            format!(
                "expected a Kubernetes object (with `kind`), got {}",
                type_name(value)
            ),
        ));
    };
    let kind_path = join(path, "kind");
    let kind = match (map.get("kind"), default_kind) {
        (None | Some(Value::Null), Some(k)) => k,
        (Some(Value::String(s)), Some(k)) if s.is_empty() => k,
        (None | Some(Value::Null), None) => return Err(cx.field(&kind_path, "missing")),
        (Some(Value::String(s)), None) if s.is_empty() => {
            return Err(cx.field(&kind_path, "missing"))
        }
        (Some(Value::String(s)), _) => s.as_str(),
        (Some(other), _) => {
            return Err(cx.field(
                &kind_path,
                format!("expected a string, got {}", type_name(other)),
            ))
        }
    };
    if is_rbac_kind(kind) {
        check_api_version(cx, map, path)?;
        let object = match kind {
            CLUSTER_ROLE_KIND => Object::ClusterRole(parse_cluster_role(cx, map, path)?),
            ROLE_KIND => Object::Role(parse_role(cx, map, path)?),
            CLUSTER_ROLE_BINDING_KIND => {
                Object::ClusterRoleBinding(parse_cluster_role_binding(cx, map, path)?)
            }
            _ => Object::RoleBinding(parse_role_binding(cx, map, path)?),
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
    let items_path = join(path, "items");
    match map.get("items") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{items_path}[{i}]");
                parse_value(cx, item, &item_path, element_kind, out)?;
            }
            Ok(())
        }
        Some(other) => Err(cx.field(
            &items_path,
            format!("expected a list, got {}", type_name(other)),
        )),
    }
}

fn check_api_version(cx: &Cx<'_>, map: &Map<String, Value>, path: &str) -> Result<(), RbacError> {
    let field = join(path, "apiVersion");
    match map.get("apiVersion") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(v)) => {
            let ok = v
                .strip_prefix(RBAC_GROUP)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|version| matches!(version, "v1" | "v1beta1" | "v1alpha1"));
            if ok {
                Ok(())
            } else {
                Err(cx.field(
                    &field,
                    format!("expected `rbac.authorization.k8s.io/v1`, got `{v}`"),
                ))
            }
        }
        Some(other) => Err(cx.field(
            &field,
            format!("expected a string, got {}", type_name(other)),
        )),
    }
}

/// An optional string field: missing or `null` is `""`.
fn opt_str(
    cx: &Cx<'_>,
    map: &Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<String, RbacError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(cx.field(
            &join(path, key),
            format!("expected a string, got {}", type_name(other)),
        )),
    }
}

/// A required, non-empty string field.
fn req_str(
    cx: &Cx<'_>,
    map: &Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<String, RbacError> {
    match map.get(key) {
        None | Some(Value::Null) => Err(cx.field(&join(path, key), "missing")),
        Some(Value::String(s)) if s.is_empty() => {
            Err(cx.field(&join(path, key), "must not be empty"))
        }
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(cx.field(
            &join(path, key),
            format!("expected a string, got {}", type_name(other)),
        )),
    }
}

/// An optional list of strings: missing or `null` is empty.
fn str_list(
    cx: &Cx<'_>,
    map: &Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<Vec<String>, RbacError> {
    let field = join(path, key);
    match map.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(cx.field(
                    &format!("{field}[{i}]"),
                    format!("expected a string, got {}", type_name(other)),
                )),
            })
            .collect(),
        Some(other) => Err(cx.field(
            &field,
            format!("expected a list of strings, got {}", type_name(other)),
        )),
    }
}

/// An optional map of strings (labels, annotations).
fn str_map(
    cx: &Cx<'_>,
    map: &Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<BTreeMap<String, String>, RbacError> {
    let field = join(path, key);
    match map.get(key) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(cx.field(
                    &format!("{field}.{k}"),
                    format!("expected a string, got {}", type_name(other)),
                )),
            })
            .collect(),
        Some(other) => Err(cx.field(
            &field,
            format!("expected an object, got {}", type_name(other)),
        )),
    }
}

/// A required object field.
fn req_obj<'m>(
    cx: &Cx<'_>,
    map: &'m Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<&'m Map<String, Value>, RbacError> {
    match map.get(key) {
        None | Some(Value::Null) => Err(cx.field(&join(path, key), "missing")),
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(cx.field(
            &join(path, key),
            format!("expected an object, got {}", type_name(other)),
        )),
    }
}

/// An object with its field path.
type Located<'m> = (String, &'m Map<String, Value>);

/// An optional list of objects: missing or `null` is empty.
fn obj_list<'m>(
    cx: &Cx<'_>,
    map: &'m Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<Vec<Located<'m>>, RbacError> {
    let field = join(path, key);
    match map.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let item_path = format!("{field}[{i}]");
                match v {
                    Value::Object(m) => Ok((item_path, m)),
                    other => Err(cx.field(
                        &item_path,
                        format!("expected an object, got {}", type_name(other)),
                    )),
                }
            })
            .collect(),
        Some(other) => Err(cx.field(&field, format!("expected a list, got {}", type_name(other)))),
    }
}

/// `metadata`: name required; namespace defaulted for namespaced kinds, dropped otherwise.
fn parse_meta(
    cx: &Cx<'_>,
    map: &Map<String, Value>,
    path: &str,
    namespaced: bool,
) -> Result<ObjectMeta, RbacError> {
    let meta_path = join(path, "metadata");
    let meta = req_obj(cx, map, path, "metadata")?;
    let name = req_str(cx, meta, &meta_path, "name")?;
    let namespace = opt_str(cx, meta, &meta_path, "namespace")?;
    let namespace = match (namespaced, namespace.is_empty()) {
        (false, _) => String::new(),
        (true, true) => DEFAULT_NAMESPACE.to_string(),
        (true, false) => namespace,
    };
    Ok(ObjectMeta {
        name,
        namespace,
        labels: str_map(cx, meta, &meta_path, "labels")?,
        annotations: str_map(cx, meta, &meta_path, "annotations")?,
    })
}

fn parse_rules(
    cx: &Cx<'_>,
    map: &Map<String, Value>,
    path: &str,
) -> Result<Vec<PolicyRule>, RbacError> {
    obj_list(cx, map, path, "rules")?
        .into_iter()
        .map(|(p, rule)| {
            Ok(PolicyRule {
                verbs: str_list(cx, rule, &p, "verbs")?,
                api_groups: str_list(cx, rule, &p, "apiGroups")?,
                resources: str_list(cx, rule, &p, "resources")?,
                resource_names: str_list(cx, rule, &p, "resourceNames")?,
                non_resource_urls: str_list(cx, rule, &p, "nonResourceURLs")?,
            })
        })
        .collect()
}

fn parse_subjects(
    cx: &Cx<'_>,
    map: &Map<String, Value>,
    path: &str,
) -> Result<Vec<Subject>, RbacError> {
    obj_list(cx, map, path, "subjects")?
        .into_iter()
        .map(|(p, s)| {
            Ok(Subject {
                kind: req_str(cx, s, &p, "kind")?,
                api_group: opt_str(cx, s, &p, "apiGroup")?,
                name: req_str(cx, s, &p, "name")?,
                namespace: opt_str(cx, s, &p, "namespace")?,
            })
        })
        .collect()
}

fn parse_role_ref(cx: &Cx<'_>, map: &Map<String, Value>, path: &str) -> Result<RoleRef, RbacError> {
    let ref_path = join(path, "roleRef");
    let r = req_obj(cx, map, path, "roleRef")?;
    Ok(RoleRef {
        api_group: opt_str(cx, r, &ref_path, "apiGroup")?,
        kind: req_str(cx, r, &ref_path, "kind")?,
        name: req_str(cx, r, &ref_path, "name")?,
    })
}

fn parse_cluster_role(
    cx: &Cx<'_>,
    map: &Map<String, Value>,
    path: &str,
) -> Result<ClusterRole, RbacError> {
    Ok(ClusterRole {
        metadata: parse_meta(cx, map, path, false)?,
        rules: parse_rules(cx, map, path)?,
        aggregation_rule: map.get("aggregationRule").filter(|v| !v.is_null()).cloned(),
    })
}

fn parse_role(cx: &Cx<'_>, map: &Map<String, Value>, path: &str) -> Result<Role, RbacError> {
    Ok(Role {
        metadata: parse_meta(cx, map, path, true)?,
        rules: parse_rules(cx, map, path)?,
    })
}

fn parse_cluster_role_binding(
    cx: &Cx<'_>,
    map: &Map<String, Value>,
    path: &str,
) -> Result<ClusterRoleBinding, RbacError> {
    Ok(ClusterRoleBinding {
        metadata: parse_meta(cx, map, path, false)?,
        subjects: parse_subjects(cx, map, path)?,
        role_ref: parse_role_ref(cx, map, path)?,
    })
}

fn parse_role_binding(
    cx: &Cx<'_>,
    map: &Map<String, Value>,
    path: &str,
) -> Result<RoleBinding, RbacError> {
    Ok(RoleBinding {
        metadata: parse_meta(cx, map, path, true)?,
        subjects: parse_subjects(cx, map, path)?,
        role_ref: parse_role_ref(cx, map, path)?,
    })
}
