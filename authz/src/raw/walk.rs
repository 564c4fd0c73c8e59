//! The serde `Deserializer` over a `serde_json::Value` that the serde-derived loaders read
//! through: its error type is `Message`, so the wording of type errors is ours rather than
//! serde_json's, and it records the path itself: each map key and list index the walk enters is
//! added to an error on its way out (as `serde_path_to_error` did, without wrapping every visitor
//! in a second copy).

use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Unexpected, Visitor};
use serde_json::Value;

use super::{join, FieldError};

/// The error type the deserialiser reports to serde: the text, and the path from where it arose
/// (innermost segment first; each level the error leaves adds its own).
#[derive(Debug)]
struct Message {
    text: String,
    path: Vec<Segment>,
}

/// One step of a path: a map key or a list index.
#[derive(Debug)]
enum Segment {
    Key(String),
    Index(usize),
}

impl Message {
    fn new(text: String) -> Self {
        Message {
            text,
            path: Vec::new(),
        }
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Message {}

impl de::Error for Message {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Message::new(msg.to_string())
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Message::new(format!(
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
        Message::new(format!(
            "expected {}, got {got}",
            expected(&exp.to_string())
        ))
    }

    fn unknown_field(_field: &str, known: &'static [&'static str]) -> Self {
        Message::new(format!(
            "unknown field; known fields here: {}",
            known.join(", ")
        ))
    }

    fn missing_field(_field: &'static str) -> Self {
        Message::new("missing".into())
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
    T::deserialize(Node::root(value)).map_err(|e| FieldError {
        path: path_string(&e.path),
        message: e.text,
    })
}

/// The dotted path of an error's segments (innermost first): keys joined by `.`, indices as `[i]`.
fn path_string(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path.iter().rev() {
        match segment {
            Segment::Index(index) => {
                out.push('[');
                out.push_str(&index.to_string());
                out.push(']');
            }
            Segment::Key(key) => out = join(&out, key),
        }
    }
    out
}
/// A JSON value as a serde `Deserializer` with [`Message`] errors; `at` is where it sits in its
/// parent (a key or an index; none for the root), added to any error that leaves it.
#[derive(Clone, Copy)]
struct Node<'a> {
    value: &'a Value,
    at: At<'a>,
}

/// Where a [`Node`] sits in its parent.
#[derive(Clone, Copy)]
enum At<'a> {
    Root,
    Key(&'a str),
    Index(usize),
}

impl<'a> Node<'a> {
    fn root(value: &'a Value) -> Self {
        Node {
            value,
            at: At::Root,
        }
    }

    /// The same value with no place, for a visitor that reads it again (`Some`, a newtype): the
    /// place is added once, by the call that handed it out.
    fn bare(self) -> Self {
        Node::root(self.value)
    }

    fn place(self, mut e: Message) -> Message {
        match self.at {
            At::Root => {}
            At::Key(key) => e.path.push(Segment::Key(key.to_string())),
            At::Index(index) => e.path.push(Segment::Index(index)),
        }
        e
    }
}

impl<'de> IntoDeserializer<'de, Message> for Node<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// A map key: deserialised as a borrowed string; an error it raises (an unknown field) names it.
#[derive(Clone, Copy)]
struct Key<'a>(&'a str);

impl<'de> IntoDeserializer<'de, Message> for Key<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for Key<'de> {
    type Error = Message;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        visitor
            .visit_borrowed_str(self.0)
            .map_err(|mut e: Message| {
                e.path.push(Segment::Key(self.0.to_string()));
                e
            })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
        struct enum identifier ignored_any
    }
}

impl<'de> Node<'de> {
    fn any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        match self.value {
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
                let mut seq =
                    de::value::SeqDeserializer::new(items.iter().enumerate().map(|(i, value)| {
                        Node {
                            value,
                            at: At::Index(i),
                        }
                    }));
                let out = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(out)
            }
            Value::Object(map) => {
                let mut entries = de::value::MapDeserializer::new(map.iter().map(|(k, value)| {
                    (
                        Key(k.as_str()),
                        Node {
                            value,
                            at: At::Key(k.as_str()),
                        },
                    )
                }));
                let out = visitor.visit_map(&mut entries)?;
                entries.end()?;
                Ok(out)
            }
        }
    }
}

impl<'de> de::Deserializer<'de> for Node<'de> {
    type Error = Message;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        self.bare().any(visitor).map_err(|e| self.place(e))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self.bare()),
        }
        .map_err(|e| self.place(e))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Message> {
        visitor
            .visit_newtype_struct(self.bare())
            .map_err(|e| self.place(e))
    }

    /// A struct is read from an object only (serde derive would also take a list of values).
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Message> {
        match self.value {
            Value::Object(_) => self.bare().any(visitor),
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        }
        .map_err(|e| self.place(e))
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

    /// Paths through lists of objects, and nested lists, as `serde_path_to_error` wrote them.
    #[test]
    fn paths_through_lists_and_nesting() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields, expecting = "an object")]
        #[expect(dead_code, reason = "only the errors are read")]
        struct Top {
            items: Option<Vec<Outer>>,
            grid: Option<Vec<Vec<u8>>>,
        }
        let err = |json: &str| {
            let v: Value = serde_json::from_str(json).unwrap();
            from_value::<Top>(&v).unwrap_err().to_string()
        };
        assert_eq!(
            err(r#"{"items":[{},{"inner":{"enabled":true,"bad":1}}]}"#),
            "items[1].inner.bad: unknown field; known fields here: enabled, port"
        );
        assert_eq!(
            err(r#"{"items":[{"list":["a","b",null]}]}"#),
            "items[0].list[2]: expected a string, got null"
        );
        assert_eq!(
            err(r#"{"grid":[[1],[2,-3]]}"#),
            "grid[1][1]: expected an integer, got -3"
        );
        assert_eq!(
            err(r#"{"": 1}"#),
            r#""": unknown field; known fields here: items, grid"#
        );
    }
}
