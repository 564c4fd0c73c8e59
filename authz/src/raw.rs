//! Stage one of every loader (the filter configuration, KubeletConfiguration, RBAC objects): a
//! parsed JSON value is deserialised by serde derive into a loader's raw structs, through
//! `serde_path_to_error`, so that any error names the field path (`authorization.mode`,
//! `rules[0].verbs`) and says what was expected and what was found (`expected true or false, got
//! a string`). Stage two, each loader's checking step, turns the raw structs into engine types.
//!
//! The value is walked by a small serde `Deserializer` over `serde_json::Value` whose error type
//! is [`FieldError`], so the wording of type errors is ours rather than serde_json's.

use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Unexpected, Visitor};
use serde_json::Value;

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

/// The error type the deserialiser reports to serde; the path is added afterwards.
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

impl de::Error for Message {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Message(msg.to_string())
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Message(format!(
            "expected {}, got {}",
            expected(&exp.to_string()),
            kind(&unexp)
        ))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        let got = match unexp {
            Unexpected::Unsigned(n) => n.to_string(),
            Unexpected::Signed(n) => n.to_string(),
            Unexpected::Float(n) => n.to_string(),
            Unexpected::Str(s) => format!("{s:?}"),
            other => kind(&other).to_string(),
        };
        Message(format!(
            "expected {}, got {got}",
            expected(&exp.to_string())
        ))
    }

    fn unknown_field(_field: &str, known: &'static [&'static str]) -> Self {
        Message(format!(
            "unknown field; known fields here: {}",
            known.join(", ")
        ))
    }

    fn missing_field(_field: &'static str) -> Self {
        Message("missing".into())
    }
}

/// serde's names for what a primitive visitor expects, in the words our messages use.
fn expected(exp: &str) -> &str {
    match exp {
        "a boolean" => "true or false",
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" => "an integer",
        "a sequence" => "a list",
        "a map" => "an object",
        other => other,
    }
}

/// What was found, as a noun phrase.
fn kind(unexp: &Unexpected<'_>) -> &'static str {
    match unexp {
        Unexpected::Bool(_) => "a boolean",
        Unexpected::Unsigned(_) | Unexpected::Signed(_) | Unexpected::Float(_) => "a number",
        Unexpected::Char(_) | Unexpected::Str(_) => "a string",
        Unexpected::Unit | Unexpected::Option => "null",
        Unexpected::Seq => "a list",
        Unexpected::Map => "an object",
        Unexpected::Other(what) if *what == "a number" => "a number",
        _ => "another kind of value",
    }
}

/// Deserialise `value` into `T`, naming the field of any error.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(Node(value)).map_err(|e| FieldError {
        path: path_string(e.path()),
        message: e.into_inner().0,
    })
}

fn path_string(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => out = join(&out, key),
            Segment::Unknown if out.is_empty() => out.push('?'),
            Segment::Unknown => out.push_str(".?"),
        }
    }
    out
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

/// A JSON value as a serde `Deserializer` with [`Message`] errors.
#[derive(Clone, Copy)]
struct Node<'a>(&'a Value);

impl<'de> IntoDeserializer<'de, Message> for Node<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for Node<'de> {
    type Error = Message;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => visitor.visit_u64(u),
                (None, Some(i), _) => visitor.visit_i64(i),
                (None, None, Some(f)) => visitor.visit_f64(f),
                (None, None, None) => visitor.visit_str(&n.to_string()),
            },
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => {
                let mut seq = de::value::SeqDeserializer::new(items.iter().map(Node));
                let out = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(out)
            }
            Value::Object(map) => {
                let mut entries =
                    de::value::MapDeserializer::new(map.iter().map(|(k, v)| (k.as_str(), Node(v))));
                let out = visitor.visit_map(&mut entries)?;
                entries.end()?;
                Ok(out)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Message> {
        visitor.visit_newtype_struct(self)
    }

    /// A struct is read from an object only (serde derive would also take a list of values).
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Message> {
        match self.0 {
            Value::Object(_) => self.deserialize_any(visitor),
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(_) => Unexpected::Other("a number"),
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
    struct Outer {
        inner: Option<Inner>,
        list: Option<Vec<String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, expecting = "an object")]
    #[expect(dead_code, reason = "only the errors are read")]
    struct Inner {
        enabled: Option<bool>,
        port: Option<i64>,
    }

    fn err(json: &str) -> String {
        let v: Value = serde_json::from_str(json).unwrap();
        from_value::<Outer>(&v).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_path_and_both_kinds() {
        assert_eq!(
            err(r#"{"inner":{"enabled":"yes"}}"#),
            "inner.enabled: expected true or false, got a string"
        );
        assert_eq!(
            err(r#"{"inner":{"port":1.5}}"#),
            "inner.port: expected an integer, got a number"
        );
        assert_eq!(
            err(r#"{"list":["a",3]}"#),
            "list[1]: expected a string, got a number"
        );
        assert_eq!(
            err(r#"{"inner":{"x.y":1}}"#),
            r#"inner."x.y": unknown field; known fields here: enabled, port"#
        );
        assert_eq!(
            err(r#"{"inner":3}"#),
            "inner: expected an object, got a number"
        );
        assert_eq!(err("[]"), ": expected an object, got a list");
    }

    #[test]
    fn null_is_absent() {
        let v: Value = serde_json::from_str(r#"{"inner":null,"list":null}"#).unwrap();
        let o: Outer = from_value(&v).unwrap();
        assert!(o.inner.is_none() && o.list.is_none());
    }
}
