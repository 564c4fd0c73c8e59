//! The RBAC objects in the API server's JSON shape (`apiVersion`, `kind`, `metadata`, ...), so
//! that a stand-in API server can serve them back as `kubectl get -o json` expects, and the
//! `<Kind>List` of a list request.

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use super::{
    ClusterRole, ClusterRoleBinding, ObjectMeta, PolicyRule, Role, RoleBinding, RoleRef, Subject,
    CLUSTER_ROLE_BINDING_KIND, CLUSTER_ROLE_KIND, RBAC_API_VERSION, ROLE_BINDING_KIND, ROLE_KIND,
};

fn serialize_role<S: Serializer>(
    serializer: S,
    kind: &'static str,
    metadata: &ObjectMeta,
    aggregation_rule: Option<&serde_json::Value>,
    rules: &[PolicyRule],
) -> Result<S::Ok, S::Error> {
    let mut st = serializer.serialize_struct(kind, 5)?;
    st.serialize_field("apiVersion", RBAC_API_VERSION)?;
    st.serialize_field("kind", kind)?;
    st.serialize_field("metadata", metadata)?;
    match aggregation_rule {
        Some(rule) => st.serialize_field("aggregationRule", rule)?,
        None => st.skip_field("aggregationRule")?,
    }
    st.serialize_field("rules", rules)?;
    st.end()
}

fn serialize_binding<S: Serializer>(
    serializer: S,
    kind: &'static str,
    metadata: &ObjectMeta,
    subjects: &[Subject],
    role_ref: &RoleRef,
) -> Result<S::Ok, S::Error> {
    let mut st = serializer.serialize_struct(kind, 5)?;
    st.serialize_field("apiVersion", RBAC_API_VERSION)?;
    st.serialize_field("kind", kind)?;
    st.serialize_field("metadata", metadata)?;
    if subjects.is_empty() {
        st.skip_field("subjects")?;
    } else {
        st.serialize_field("subjects", subjects)?;
    }
    st.serialize_field("roleRef", role_ref)?;
    st.end()
}

impl Serialize for ClusterRole {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_role(
            serializer,
            CLUSTER_ROLE_KIND,
            &self.metadata,
            self.aggregation_rule.as_ref(),
            &self.rules,
        )
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_role(serializer, ROLE_KIND, &self.metadata, None, &self.rules)
    }
}

impl Serialize for ClusterRoleBinding {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_binding(
            serializer,
            CLUSTER_ROLE_BINDING_KIND,
            &self.metadata,
            &self.subjects,
            &self.role_ref,
        )
    }
}

impl Serialize for RoleBinding {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_binding(
            serializer,
            ROLE_BINDING_KIND,
            &self.metadata,
            &self.subjects,
            &self.role_ref,
        )
    }
}

/// A `<Kind>List` object as the API server returns it for a list request
/// (`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleList","metadata":{"resourceVersion":""},"items":[...]}`).
/// Serialization of these types cannot fail; should it, the items come out as `null`.
pub fn list_value<T: Serialize>(list_kind: &str, items: &[T]) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": RBAC_API_VERSION,
        "kind": list_kind,
        "metadata": { "resourceVersion": "" },
        "items": serde_json::to_value(items).unwrap_or(serde_json::Value::Null),
    })
}
