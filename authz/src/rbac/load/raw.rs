//! Stage one of the RBAC loader: RBAC objects as written. Unknown fields are ignored (a manifest
//! carries `uid`, `creationTimestamp`, `managedFields`, ... that RBAC does not read); an absent or
//! `null` field is `None`, so stage two can say "missing" where a field is required.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// What every document or List item is read as first.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a Kubernetes object (with `kind`)")]
pub(super) struct RawHead {
    pub kind: Option<String>,
}

/// `apiVersion`, read before the body of an RBAC object.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an object")]
pub(super) struct RawApiVersion {
    pub api_version: Option<String>,
}

/// A `List` or `<Kind>List`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "an object")]
pub(super) struct RawList {
    pub items: Option<Vec<serde_json::Value>>,
}

/// `metadata`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "an object")]
pub(super) struct RawObjectMeta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A ClusterRole.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an object")]
pub(super) struct RawClusterRole {
    pub metadata: Option<RawObjectMeta>,
    pub rules: Option<Vec<RawPolicyRule>>,
    pub aggregation_rule: Option<serde_json::Value>,
}

/// A Role.
#[derive(Debug, Deserialize)]
#[serde(expecting = "an object")]
pub(super) struct RawRole {
    pub metadata: Option<RawObjectMeta>,
    pub rules: Option<Vec<RawPolicyRule>>,
}

/// A ClusterRoleBinding or a RoleBinding.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an object")]
pub(super) struct RawBinding {
    pub metadata: Option<RawObjectMeta>,
    pub subjects: Option<Vec<RawSubject>>,
    pub role_ref: Option<RawRoleRef>,
}

/// One rule.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an object")]
pub(super) struct RawPolicyRule {
    pub verbs: Option<StrList>,
    pub api_groups: Option<StrList>,
    pub resources: Option<StrList>,
    pub resource_names: Option<StrList>,
    #[serde(rename = "nonResourceURLs")]
    pub non_resource_urls: Option<StrList>,
}

/// One subject of a binding.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an object")]
pub(super) struct RawSubject {
    pub kind: Option<String>,
    pub api_group: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

/// `roleRef`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an object")]
pub(super) struct RawRoleRef {
    pub api_group: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
}

/// A list of strings, so named in errors (`expected a list of strings, got a string`).
#[derive(Debug, Default)]
pub(super) struct StrList(pub Vec<String>);

impl<'de> Deserialize<'de> for StrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrList, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(StrList(out))
            }
        }
        d.deserialize_seq(V)
    }
}
