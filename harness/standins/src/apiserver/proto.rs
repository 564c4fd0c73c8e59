//! Just enough of Kubernetes' protobuf wire format to read the review requests `kubectl` sends as
//! `application/vnd.kubernetes.protobuf` (it does for `auth can-i`): the `k8s\0` envelope
//! (`runtime.Unknown`), then TokenReview, SubjectAccessReview and SelfSubjectAccessReview
//! turned into the JSON the rest of the server reads (empty fields omitted, as Go's JSON does).

use serde_json::{json, Map, Value};

/// The content type kubectl uses for protobuf.
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// One protobuf field: number and value (varint or bytes; fixed-width values are skipped).
enum Field<'a> {
    Varint,
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Parse a message into its fields, in order. `None` when malformed.
fn fields(buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (number, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(buf, &mut pos)?;
                out.push((number, Field::Varint));
            }
            1 => pos = pos.checked_add(8)?,
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len)?;
                out.push((number, Field::Bytes(buf.get(pos..end)?)));
                pos = end;
            }
            5 => pos = pos.checked_add(4)?,
            _ => return None,
        }
    }
    (pos == buf.len()).then_some(out)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A message of string fields, named by field number; empty strings omitted.
fn strings(buf: &[u8], names: &[(u64, &str)]) -> Option<Map<String, Value>> {
    let mut obj = Map::new();
    for (n, f) in fields(buf)? {
        if let (Some((_, name)), Field::Bytes(b)) = (names.iter().find(|(k, _)| *k == n), f) {
            if !b.is_empty() {
                obj.insert((*name).to_string(), json!(text(b)));
            }
        }
    }
    Some(obj)
}

fn resource_attributes(buf: &[u8]) -> Option<Value> {
    let names = [
        (1, "namespace"),
        (2, "verb"),
        (3, "group"),
        (4, "version"),
        (5, "resource"),
        (6, "subresource"),
        (7, "name"),
    ];
    strings(buf, &names).map(Value::Object)
}

fn non_resource_attributes(buf: &[u8]) -> Option<Value> {
    strings(buf, &[(1, "path"), (2, "verb")]).map(Value::Object)
}

fn sar_spec(buf: &[u8]) -> Option<Value> {
    let mut spec = Map::new();
    let mut groups = Vec::new();
    let mut extra = Map::new();
    for (n, f) in fields(buf)? {
        let Field::Bytes(b) = f else { continue };
        match n {
            1 => {
                spec.insert("resourceAttributes".into(), resource_attributes(b)?);
            }
            2 => {
                spec.insert("nonResourceAttributes".into(), non_resource_attributes(b)?);
            }
            3 if !b.is_empty() => {
                spec.insert("user".into(), json!(text(b)));
            }
            4 => groups.push(json!(text(b))),
            5 => {
                // map<string, ExtraValue>: entry {1: key, 2: ExtraValue {1: repeated items}}
                let mut key = String::new();
                let mut items = Vec::new();
                for (en, ef) in fields(b)? {
                    match (en, ef) {
                        (1, Field::Bytes(k)) => key = text(k),
                        (2, Field::Bytes(v)) => {
                            for (_, item) in fields(v)? {
                                if let Field::Bytes(i) = item {
                                    items.push(json!(text(i)));
                                }
                            }
                        }
                        _ => {}
                    }
                }
                extra.insert(key, Value::Array(items));
            }
            6 if !b.is_empty() => {
                spec.insert("uid".into(), json!(text(b)));
            }
            _ => {}
        }
    }
    if !groups.is_empty() {
        spec.insert("groups".into(), Value::Array(groups));
    }
    if !extra.is_empty() {
        spec.insert("extra".into(), Value::Object(extra));
    }
    Some(Value::Object(spec))
}

fn token_review_spec(buf: &[u8]) -> Option<Value> {
    let mut spec = Map::new();
    let mut audiences = Vec::new();
    for (n, f) in fields(buf)? {
        match (n, f) {
            (1, Field::Bytes(b)) if !b.is_empty() => {
                spec.insert("token".into(), json!(text(b)));
            }
            (2, Field::Bytes(b)) => audiences.push(json!(text(b))),
            _ => {}
        }
    }
    if !audiences.is_empty() {
        spec.insert("audiences".into(), Value::Array(audiences));
    }
    Some(Value::Object(spec))
}

/// Decode a protobuf review request into its JSON form. `None` when the body is not a
/// `k8s\0`-enveloped TokenReview, SubjectAccessReview or SelfSubjectAccessReview.
pub fn decode_review(body: &[u8]) -> Option<Value> {
    let unknown = body.strip_prefix(MAGIC)?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, f) in fields(unknown)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (tn, tf) in fields(tm)? {
                    match (tn, tf) {
                        (1, Field::Bytes(v)) => api_version = text(v),
                        (2, Field::Bytes(k)) => kind = text(k),
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    let mut spec = None;
    for (n, f) in fields(raw)? {
        if let (2, Field::Bytes(s)) = (n, f) {
            spec = Some(match kind.as_str() {
                "TokenReview" => token_review_spec(s)?,
                "SubjectAccessReview" | "SelfSubjectAccessReview" => sar_spec(s)?,
                "SelfSubjectReview" => json!({}),
                _ => return None,
            });
        }
    }
    if !matches!(
        kind.as_str(),
        "TokenReview" | "SubjectAccessReview" | "SelfSubjectAccessReview" | "SelfSubjectReview"
    ) {
        return None;
    }
    let spec = spec.unwrap_or_else(|| json!({}));
    Some(json!({"kind": kind, "apiVersion": api_version, "metadata": {}, "spec": spec}))
}

/// Whether a `Content-Type` value is Kubernetes protobuf.
pub fn is_protobuf(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| c.trim().starts_with(PROTOBUF))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes kubectl v1.32 sent for `auth can-i get nodes --subresource=proxy`.
    const CAN_I_PROXY: &[u8] = b"k8s\0\n2\n\x17authorization.k8s.io/v1\x12\x17SelfSubjectAccessReview\x12B\n\x10\n\0\x12\0\x1a\0\"\0*\x002\x008\0B\0\x12$\n\"\n\x07default\x12\x03get\x1a\0\"\0*\x05nodes2\x05proxy:\0\x1a\x08\x08\0\x12\0\x1a\0 \0\x1a\0\"\0";

    #[test]
    fn decodes_kubectl_can_i() {
        let v = decode_review(CAN_I_PROXY).unwrap();
        assert_eq!(v["kind"], "SelfSubjectAccessReview");
        assert_eq!(
            v["spec"],
            json!({"resourceAttributes": {"namespace": "default", "verb": "get",
                                          "resource": "nodes", "subresource": "proxy"}})
        );
        assert!(decode_review(b"{}").is_none());
        assert!(decode_review(b"k8s\0\x0a\xff").is_none());
    }
}
