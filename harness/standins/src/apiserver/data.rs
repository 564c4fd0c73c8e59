//! The stand-in API server's data: the static token file (kube-apiserver's `--token-auth-file`
//! CSV), RBAC objects (kept both in the evaluator and as the raw objects the list endpoints
//! return), and Node objects.

use std::collections::BTreeMap;

use kubelet_authz::rbac::RbacStore;
use kubelet_authz::UserInfo;
use serde::Deserialize as _;
use serde_json::Value;

use crate::StandinError;

/// Parse CSV text as Go's `encoding/csv` reads it with a variable number of fields: fields
/// separated by `,`, a field that starts with `"` is quoted (`""` is a literal quote, and commas
/// and line breaks inside it are kept), blank lines are skipped, `\r\n` ends a line.
pub fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut records = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut line = 1usize;
    let mut at_field_start = true;
    let mut in_quotes = false;
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                in_quotes = true;
                quoted = true;
                at_field_start = false;
            }
            '"' if quoted => return Err(format!("line {line}: extraneous `\"` in quoted field")),
            '"' => return Err(format!("line {line}: bare `\"` in non-quoted field")),
            ',' => {
                record.push(std::mem::take(&mut field));
                at_field_start = true;
                quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                line += 1;
                if !(record.is_empty() && field.is_empty() && !quoted) {
                    record.push(std::mem::take(&mut field));
                    records.push(std::mem::take(&mut record));
                }
                at_field_start = true;
                quoted = false;
            }
            _ => {
                if quoted {
                    return Err(format!("line {line}: extraneous `\"` in quoted field"));
                }
                at_field_start = false;
                field.push(c);
            }
        }
    }
    if in_quotes {
        return Err(format!("line {line}: quoted field not closed"));
    }
    if !(record.is_empty() && field.is_empty() && !quoted) {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

/// Tokens of a `--token-auth-file`: `token,user,uid[,"group1,group2"]`, as kube-apiserver reads
/// it: at least three columns, groups split on `,`, empty tokens skipped, a repeated token keeps
/// its last line.
pub fn parse_tokens(
    text: &str,
    source_name: &str,
) -> Result<BTreeMap<String, UserInfo>, StandinError> {
    let records =
        parse_csv(text).map_err(|e| StandinError::Config(format!("{source_name}: {e}")))?;
    let mut tokens = BTreeMap::new();
    for record in records {
        let mut fields = record.into_iter();
        let (Some(token), Some(name), Some(uid)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(StandinError::Config(format!(
                "{source_name}: token file must have at least 3 columns (token, user name, user uid)"
            )));
        };
        if token.is_empty() {
            continue;
        }
        let groups = fields
            .next()
            .map(|g| g.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        tokens.insert(
            token,
            UserInfo {
                name,
                uid,
                groups,
                extra: BTreeMap::new(),
            },
        );
    }
    Ok(tokens)
}

/// Every object in multi-document YAML or JSON text, `List`s (any kind ending in `List` with
/// `items`) flattened; empty documents skipped.
pub fn parse_objects(text: &str, source_name: &str) -> Result<Vec<Value>, StandinError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc)
            .map_err(|e| StandinError::Config(format!("{source_name}: document {}: {e}", i + 1)))?;
        flatten(value, &mut out);
    }
    Ok(out)
}

fn flatten(value: Value, out: &mut Vec<Value>) {
    match value {
        Value::Null => {}
        Value::Object(mut map) => {
            let is_list = map
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List"));
            if is_list {
                if let Some(Value::Array(items)) = map.remove("items") {
                    for item in items {
                        flatten(item, out);
                    }
                }
            } else {
                out.push(Value::Object(map));
            }
        }
        Value::Array(items) => {
            for item in items {
                flatten(item, out);
            }
        }
        _ => {}
    }
}

/// The object's `metadata.<field>` as a string (`""` when absent).
pub fn meta<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The object's `kind`.
pub fn kind(obj: &Value) -> &str {
    obj.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// Everything the API server serves, loaded once at start.
#[derive(Debug, Default)]
pub struct Data {
    /// Bearer tokens and their users (groups as in the file, before `system:authenticated`).
    pub tokens: BTreeMap<String, UserInfo>,
    /// The RBAC evaluator.
    pub rbac: RbacStore,
    /// Raw RBAC objects, for the list endpoints.
    pub rbac_objects: Vec<Value>,
    /// Node objects.
    pub nodes: Vec<Value>,
}

impl Data {
    /// Load RBAC YAML or JSON into the evaluator and the list endpoints.
    pub fn load_rbac(&mut self, text: &str, source_name: &str) -> Result<(), StandinError> {
        self.rbac
            .load_str(text, source_name)
            .map_err(|e| StandinError::Config(e.to_string()))?;
        let objects = parse_objects(text, source_name)?;
        self.rbac_objects.extend(objects);
        Ok(())
    }

    /// Load Node objects from YAML or JSON.
    pub fn load_nodes(&mut self, text: &str, source_name: &str) -> Result<(), StandinError> {
        for obj in parse_objects(text, source_name)? {
            if kind(&obj) != "Node" {
                return Err(StandinError::Config(format!(
                    "{source_name}: unsupported kind `{}`: expected Node or NodeList",
                    kind(&obj)
                )));
            }
            self.nodes.push(obj);
        }
        Ok(())
    }

    /// Load a token CSV.
    pub fn load_tokens(&mut self, text: &str, source_name: &str) -> Result<(), StandinError> {
        self.tokens.extend(parse_tokens(text, source_name)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoted_groups() {
        let rows =
            parse_csv("t1,alice,u1,\"g1,g2\"\n\n t2,bob,u2\r\nt3,\"a \"\"b\"\"\",u3,g\n").unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0], vec!["t1", "alice", "u1", "g1,g2"]);
        assert_eq!(rows[1], vec![" t2", "bob", "u2"]);
        assert_eq!(rows[2], vec!["t3", "a \"b\"", "u3", "g"]);
        assert!(parse_csv("a,b\"c\n").is_err());
        assert!(parse_csv("a,\"b\n").is_err());
    }

    #[test]
    fn tokens_groups_split_and_short_rows_rejected() {
        let t = parse_tokens("t1,alice,u1,\"g1,g2\"\n,x,y\nt2,bob,u2\n", "f").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t["t1"].groups, vec!["g1", "g2"]);
        assert!(t["t2"].groups.is_empty());
        assert!(parse_tokens("t1,alice\n", "f").is_err());
    }

    #[test]
    fn objects_flatten_lists() {
        let objs = parse_objects(
            "kind: NodeList\nitems:\n- kind: Node\n  metadata: {name: a}\n---\n---\nkind: Node\nmetadata: {name: b}\n",
            "n",
        )
        .unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(meta(&objs[1], "name"), "b");
    }
}
