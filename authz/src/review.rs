//! TokenReview (authentication.k8s.io/v1) and SubjectAccessReview (authorization.k8s.io/v1) wire
//! types, shaped as the kubelet's webhook clients send them (reference sections 2.6 and 3.6):
//! empty strings and empty collections are omitted, as Go's `omitempty` does; no `path`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The API group of TokenReview and SelfSubjectReview.
pub const AUTHENTICATION_GROUP: &str = "authentication.k8s.io";
/// The API group of SubjectAccessReview and SelfSubjectAccessReview.
pub const AUTHORIZATION_GROUP: &str = "authorization.k8s.io";
/// API path of SelfSubjectReview (`kubectl auth whoami`).
pub const SELF_SUBJECT_REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
/// API path of TokenReview.
pub const TOKEN_REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
/// API path of SubjectAccessReview.
pub const SUBJECT_ACCESS_REVIEW_PATH: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
/// API path of SelfSubjectAccessReview.
pub const SELF_SUBJECT_ACCESS_REVIEW_PATH: &str =
    "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

fn is_false(b: &bool) -> bool {
    !*b
}

/// `authentication.k8s.io/v1` TokenReview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TokenReview {
    /// Always `authentication.k8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// Always `TokenReview`.
    #[serde(default)]
    pub kind: String,
    /// The token to review.
    #[serde(default)]
    pub spec: TokenReviewSpec,
    /// Filled by the API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TokenReviewStatus>,
}

/// TokenReview spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TokenReviewSpec {
    /// The bearer token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// Audiences; the kubelet sends none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
}

/// TokenReview status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TokenReviewStatus {
    /// Whether the token is valid.
    #[serde(default, skip_serializing_if = "is_false")]
    pub authenticated: bool,
    /// The user the token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<ReviewUser>,
    /// Audiences the token is valid for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// An error reviewing the token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// `UserInfo` as TokenReview carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReviewUser {
    /// User name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// UID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Groups, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Extra attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

impl TokenReview {
    /// The request the kubelet's token webhook sends: the token, no audiences.
    pub fn request(token: &str) -> Self {
        TokenReview {
            api_version: "authentication.k8s.io/v1".into(),
            kind: "TokenReview".into(),
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Vec::new(),
            },
            status: None,
        }
    }
}

/// `authorization.k8s.io/v1` SubjectAccessReview (and SelfSubjectAccessReview, whose spec has only
/// the attributes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SubjectAccessReview {
    /// Always `authorization.k8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// `SubjectAccessReview` or `SelfSubjectAccessReview`.
    #[serde(default)]
    pub kind: String,
    /// Who and what.
    #[serde(default)]
    pub spec: SubjectAccessReviewSpec,
    /// Filled by the API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SubjectAccessReviewStatus>,
}

/// SubjectAccessReview spec. Field order is the Go struct's, so the JSON of a spec is also the
/// kubelet's SAR cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SubjectAccessReviewSpec {
    /// Resource attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_attributes: Option<ResourceAttributes>,
    /// Non-resource attributes (never sent by the kubelet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_resource_attributes: Option<NonResourceAttributes>,
    /// User name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Groups, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Extra attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
    /// UID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// Resource attributes of a SubjectAccessReview.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResourceAttributes {
    /// Namespace; `""` for nodes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// API verb; `""` for HEAD and other unmapped methods.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verb: String,
    /// API group; `""` (core) for nodes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// API version; `v1`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Resource; `nodes`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    /// Subresource.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
    /// Object name; the node name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Non-resource attributes of a SubjectAccessReview.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NonResourceAttributes {
    /// URL path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Verb.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verb: String,
}

/// SubjectAccessReview status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SubjectAccessReviewStatus {
    /// Allowed.
    #[serde(default)]
    pub allowed: bool,
    /// Explicitly denied.
    #[serde(default, skip_serializing_if = "is_false")]
    pub denied: bool,
    /// Why.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Evaluation error (ignored by the kubelet).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub evaluation_error: String,
}

impl SubjectAccessReview {
    /// A SubjectAccessReview request for a spec.
    pub fn request(spec: SubjectAccessReviewSpec) -> Self {
        SubjectAccessReview {
            api_version: "authorization.k8s.io/v1".into(),
            kind: "SubjectAccessReview".into(),
            spec,
            status: None,
        }
    }
}

impl ResourceAttributes {
    /// The attributes the kubelet builds: `nodes/<subresource>` named after the node, group `""`,
    /// version `v1`, namespace `""`.
    pub fn kubelet(verb: &str, subresource: &str, node_name: &str) -> Self {
        ResourceAttributes {
            namespace: String::new(),
            verb: verb.to_string(),
            group: String::new(),
            version: "v1".into(),
            resource: "nodes".into(),
            subresource: subresource.to_string(),
            name: node_name.to_string(),
        }
    }
}
