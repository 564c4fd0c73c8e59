//! Stage one of every loader (the filter configuration, KubeletConfiguration, RBAC objects): a
//! parsed JSON value is read into a loader's raw structs so that any error names the field path
//! (`authorization.mode`, `rules[0].verbs`) and says what was expected and what was found
//! (`expected true or false, got a string`). Stage two, each loader's checking step, turns the raw
//! structs into engine types.
//!
//! The KubeletConfiguration and RBAC loaders (feature `yaml`) read theirs with serde derive,
//! through the small `Deserializer` of `walk`; the filter configuration, the one loader in the
//! filter's module, reads its structs by hand in `config::raw` with the helpers here, to the same
//! contract and in the same words (docs/PERFORMANCE.md "Module size").

use serde_json::Value;

#[cfg(feature = "yaml")]
mod walk;
#[cfg(feature = "yaml")]
pub use walk::from_value;

/// A stage-one error: the field path and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// Dotted path of the field (`authentication.webhook.cacheTTL`, `items[1].roleRef`); empty
    /// for the value itself.
    pub path: String,
    /// What is wrong, and what is expected.
    pub message: String,
}

/// What a value is, as a noun phrase (`got a string`).
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The dotted path of `key` under `path`. A key that is empty or holds anything but letters,
/// digits, `_` and `-` is written as a JSON string (`authentication.""`, `"a.b"`), so that an
/// error always names a field and the name cannot be mistaken for another path (found by
/// `cargo fuzz run config`: `{"":{}}` gave an error naming no field).
pub fn join(path: &str, key: &str) -> String {
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
