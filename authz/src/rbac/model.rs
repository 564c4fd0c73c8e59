//! The RBAC objects (`rbac.authorization.k8s.io/v1`): ClusterRole, Role, ClusterRoleBinding,
//! RoleBinding and their parts. They serialize in the API server's JSON shape (`apiVersion`, `kind`,
//! `metadata`, ...), so a stand-in API server can serve them back as `kubectl get -o json` expects.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod wire;
pub use wire::list_value;

use crate::identity::UserInfo;

/// The API group of RBAC objects.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// The `apiVersion` the objects serialize with.
pub const RBAC_API_VERSION: &str = "rbac.authorization.k8s.io/v1";
/// Kind `ClusterRole`.
pub const CLUSTER_ROLE_KIND: &str = "ClusterRole";
/// Kind `Role`.
pub const ROLE_KIND: &str = "Role";
/// Kind `ClusterRoleBinding`.
pub const CLUSTER_ROLE_BINDING_KIND: &str = "ClusterRoleBinding";
/// Kind `RoleBinding`.
pub const ROLE_BINDING_KIND: &str = "RoleBinding";
/// Subject kind `User`.
pub const USER_KIND: &str = "User";
/// Subject kind `Group`.
pub const GROUP_KIND: &str = "Group";
/// Subject kind `ServiceAccount`.
pub const SERVICE_ACCOUNT_KIND: &str = "ServiceAccount";
/// The user-name prefix of a ServiceAccount (the one definition is in [`crate::identity`]).
pub use crate::identity::SERVICE_ACCOUNT_USER_PREFIX;
/// The namespace a Role or RoleBinding gets when its manifest names none (as `kubectl apply` with
/// no namespace in the context).
pub const DEFAULT_NAMESPACE: &str = "default";
/// The wildcard of verbs, API groups, resources and non-resource URLs.
pub const WILDCARD: &str = "*";

/// The parts of `metadata` the evaluator keeps.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Object name.
    pub name: String,
    /// Namespace; empty for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ObjectMeta {
    /// Metadata with a name and a namespace (`""` for cluster-scoped objects).
    pub fn new(name: impl Into<String>, namespace: impl Into<String>) -> Self {
        ObjectMeta {
            name: name.into(),
            namespace: namespace.into(),
            ..ObjectMeta::default()
        }
    }
}

/// One rule of a role. Empty `verbs`, `apiGroups` or `resources` match nothing; empty
/// `resourceNames` match every name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Verbs (`get`, `create`, ..., `*`), compared case-sensitively.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// API groups (`""` is the core group, `*` any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// Resources, possibly with a subresource (`nodes/proxy`, `*/proxy`, `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Object names the rule is limited to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// Non-resource URL paths (`/healthz`, `/logs/*`, `*`).
    #[serde(
        default,
        rename = "nonResourceURLs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

impl PolicyRule {
    /// A resource rule: verbs, API groups and resources.
    pub fn resource(verbs: &[&str], api_groups: &[&str], resources: &[&str]) -> Self {
        PolicyRule {
            verbs: strings(verbs),
            api_groups: strings(api_groups),
            resources: strings(resources),
            ..PolicyRule::default()
        }
    }

    /// A non-resource rule: verbs and URL paths.
    pub fn non_resource(verbs: &[&str], urls: &[&str]) -> Self {
        PolicyRule {
            verbs: strings(verbs),
            non_resource_urls: strings(urls),
            ..PolicyRule::default()
        }
    }

    /// The same rule limited to `names`.
    pub fn with_resource_names(mut self, names: &[&str]) -> Self {
        self.resource_names = strings(names);
        self
    }
}

/// Who a binding grants its role to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount` (any other kind never matches).
    pub kind: String,
    /// `rbac.authorization.k8s.io` for users and groups, `""` for service accounts.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    /// User, group or service account name.
    pub name: String,
    /// Service account namespace; when empty, the binding's namespace is used.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

impl Subject {
    /// A `User` subject.
    pub fn user(name: impl Into<String>) -> Self {
        Subject {
            kind: USER_KIND.into(),
            api_group: RBAC_GROUP.into(),
            name: name.into(),
            namespace: String::new(),
        }
    }

    /// A `Group` subject.
    pub fn group(name: impl Into<String>) -> Self {
        Subject {
            kind: GROUP_KIND.into(),
            api_group: RBAC_GROUP.into(),
            name: name.into(),
            namespace: String::new(),
        }
    }

    /// A `ServiceAccount` subject (`namespace` may be empty: the binding's namespace is used).
    pub fn service_account(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Subject {
            kind: SERVICE_ACCOUNT_KIND.into(),
            api_group: String::new(),
            name: name.into(),
            namespace: namespace.into(),
        }
    }

    /// The namespace a `ServiceAccount` subject stands for in a binding in `binding_namespace`
    /// (`""` for ClusterRoleBindings): its own namespace, or else the binding's. `None` when that
    /// is empty (such a subject matches nobody) or when the subject is not a service account.
    pub fn service_account_namespace<'a>(&'a self, binding_namespace: &'a str) -> Option<&'a str> {
        if self.kind != SERVICE_ACCOUNT_KIND {
            return None;
        }
        let ns = if self.namespace.is_empty() {
            binding_namespace
        } else {
            self.namespace.as_str()
        };
        (!ns.is_empty()).then_some(ns)
    }

    /// Whether this subject of a binding in `binding_namespace` (`""` for ClusterRoleBindings)
    /// applies to `user`, as kube-apiserver's `appliesToUser`: users by exact name (`*` is not a
    /// wildcard), groups by membership, service accounts by the exact user name
    /// `system:serviceaccount:<ns>:<name>` only (groups are not consulted).
    pub fn applies_to(&self, user: &UserInfo, binding_namespace: &str) -> bool {
        match self.kind.as_str() {
            USER_KIND => user.name == self.name,
            GROUP_KIND => user.groups.contains(&self.name),
            SERVICE_ACCOUNT_KIND => match self.service_account_namespace(binding_namespace) {
                Some(ns) => service_account_user_matches(ns, &self.name, &user.name),
                None => false,
            },
            _ => false,
        }
    }

    /// The subject as it can match users of a binding in `binding_namespace`: a service account
    /// gets its resolved namespace. `None` when it can match nobody (an unknown kind, or a service
    /// account with no namespace in a ClusterRoleBinding).
    pub fn resolved(&self, binding_namespace: &str) -> Option<Subject> {
        match self.kind.as_str() {
            USER_KIND | GROUP_KIND => Some(self.clone()),
            SERVICE_ACCOUNT_KIND => {
                let ns = self.service_account_namespace(binding_namespace)?;
                Some(Subject {
                    namespace: ns.to_string(),
                    ..self.clone()
                })
            }
            _ => None,
        }
    }

    /// The user name a `ServiceAccount` subject matches (`system:serviceaccount:<ns>:<name>`), or
    /// a `User` subject's name; `None` for groups and for subjects that match nobody.
    pub fn user_name(&self, binding_namespace: &str) -> Option<String> {
        match self.kind.as_str() {
            USER_KIND => Some(self.name.clone()),
            SERVICE_ACCOUNT_KIND => {
                let ns = self.service_account_namespace(binding_namespace)?;
                Some(format!("{SERVICE_ACCOUNT_USER_PREFIX}{ns}:{}", self.name))
            }
            _ => None,
        }
    }

    /// kube-apiserver's description of the subject in reasons: `User "alice"`, `Group "g"`, and
    /// for service accounts `ServiceAccount "<name>/<namespace>"` (name first).
    pub fn describe(&self, binding_namespace: &str) -> String {
        if self.kind == SERVICE_ACCOUNT_KIND {
            let ns = if self.namespace.is_empty() {
                binding_namespace
            } else {
                self.namespace.as_str()
            };
            format!(
                "{} {}",
                self.kind,
                go_quote(&format!("{}/{}", self.name, ns))
            )
        } else {
            format!("{} {}", self.kind, go_quote(&self.name))
        }
    }
}

/// `serviceaccount.MatchesUsername`: whether `user_name` is exactly
/// `system:serviceaccount:<namespace>:<name>`.
pub fn service_account_user_matches(namespace: &str, name: &str, user_name: &str) -> bool {
    user_name
        .strip_prefix(SERVICE_ACCOUNT_USER_PREFIX)
        .and_then(|rest| rest.strip_prefix(namespace))
        .and_then(|rest| rest.strip_prefix(':'))
        .is_some_and(|rest| rest == name)
}

/// The role a binding grants.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    /// `rbac.authorization.k8s.io`.
    #[serde(default)]
    pub api_group: String,
    /// `ClusterRole` or `Role` (anything else is a resolution error at evaluation).
    pub kind: String,
    /// Role name.
    pub name: String,
}

impl RoleRef {
    /// A reference to the ClusterRole `name`.
    pub fn cluster_role(name: impl Into<String>) -> Self {
        RoleRef {
            api_group: RBAC_GROUP.into(),
            kind: CLUSTER_ROLE_KIND.into(),
            name: name.into(),
        }
    }

    /// A reference to the Role `name` (in the binding's namespace).
    pub fn role(name: impl Into<String>) -> Self {
        RoleRef {
            api_group: RBAC_GROUP.into(),
            kind: ROLE_KIND.into(),
            name: name.into(),
        }
    }
}

/// A ClusterRole. Only the stored `rules` are evaluated: an `aggregationRule` is kept for display
/// but never re-evaluated (the aggregation controller fills `rules` in a real cluster).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterRole {
    /// Metadata (no namespace).
    pub metadata: ObjectMeta,
    /// Rules, in order.
    pub rules: Vec<PolicyRule>,
    /// The `aggregationRule` as written, if any.
    pub aggregation_rule: Option<serde_json::Value>,
}

/// A namespaced Role.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Role {
    /// Metadata (with namespace).
    pub metadata: ObjectMeta,
    /// Rules, in order.
    pub rules: Vec<PolicyRule>,
}

/// A ClusterRoleBinding: grants a ClusterRole cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterRoleBinding {
    /// Metadata (no namespace).
    pub metadata: ObjectMeta,
    /// Subjects, in order.
    pub subjects: Vec<Subject>,
    /// The role granted.
    pub role_ref: RoleRef,
}

/// A RoleBinding: grants a Role or ClusterRole within its namespace only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoleBinding {
    /// Metadata (with namespace).
    pub metadata: ObjectMeta,
    /// Subjects, in order.
    pub subjects: Vec<Subject>,
    /// The role granted.
    pub role_ref: RoleRef,
}

impl ClusterRole {
    /// A ClusterRole with rules.
    pub fn new(name: impl Into<String>, rules: Vec<PolicyRule>) -> Self {
        ClusterRole {
            metadata: ObjectMeta::new(name, ""),
            rules,
            aggregation_rule: None,
        }
    }
}

impl Role {
    /// A Role with rules.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        rules: Vec<PolicyRule>,
    ) -> Self {
        Role {
            metadata: ObjectMeta::new(name, namespace),
            rules,
        }
    }
}

impl ClusterRoleBinding {
    /// A ClusterRoleBinding of `role_ref` to `subjects`.
    pub fn new(name: impl Into<String>, role_ref: RoleRef, subjects: Vec<Subject>) -> Self {
        ClusterRoleBinding {
            metadata: ObjectMeta::new(name, ""),
            subjects,
            role_ref,
        }
    }

    /// kube-apiserver's description in reasons:
    /// `ClusterRoleBinding "<name>" of <RoleKind> "<role>" to <subject>`.
    pub fn describe(&self, subject: &Subject) -> String {
        format!(
            "{} {} of {} {} to {}",
            CLUSTER_ROLE_BINDING_KIND,
            go_quote(&self.metadata.name),
            self.role_ref.kind,
            go_quote(&self.role_ref.name),
            subject.describe("")
        )
    }
}

impl RoleBinding {
    /// A RoleBinding in `namespace` of `role_ref` to `subjects`.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        role_ref: RoleRef,
        subjects: Vec<Subject>,
    ) -> Self {
        RoleBinding {
            metadata: ObjectMeta::new(name, namespace),
            subjects,
            role_ref,
        }
    }

    /// kube-apiserver's description in reasons:
    /// `RoleBinding "<name>/<namespace>" of <RoleKind> "<role>" to <subject>`.
    pub fn describe(&self, subject: &Subject) -> String {
        format!(
            "{} {} of {} {} to {}",
            ROLE_BINDING_KIND,
            go_quote(&format!(
                "{}/{}",
                self.metadata.name, self.metadata.namespace
            )),
            self.role_ref.kind,
            go_quote(&self.role_ref.name),
            subject.describe(&self.metadata.namespace)
        )
    }
}

/// Which role: a ClusterRole by name, or a Role by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RoleKey {
    /// A ClusterRole.
    ClusterRole {
        /// Its name.
        name: String,
    },
    /// A namespaced Role.
    Role {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

impl RoleKey {
    /// The ClusterRole `name`.
    pub fn cluster_role(name: impl Into<String>) -> Self {
        RoleKey::ClusterRole { name: name.into() }
    }

    /// The Role `namespace/name`.
    pub fn role(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        RoleKey::Role {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// What a binding's `roleRef` points at, for a binding in `binding_namespace` (`""` for a
    /// ClusterRoleBinding); `None` when the kind is neither Role nor ClusterRole.
    pub fn from_role_ref(role_ref: &RoleRef, binding_namespace: &str) -> Option<Self> {
        match role_ref.kind.as_str() {
            CLUSTER_ROLE_KIND => Some(RoleKey::cluster_role(role_ref.name.clone())),
            ROLE_KIND => Some(RoleKey::role(binding_namespace, role_ref.name.clone())),
            _ => None,
        }
    }

    /// `ClusterRole` or `Role`.
    pub fn kind(&self) -> &'static str {
        match self {
            RoleKey::ClusterRole { .. } => CLUSTER_ROLE_KIND,
            RoleKey::Role { .. } => ROLE_KIND,
        }
    }

    /// The role's name.
    pub fn name(&self) -> &str {
        match self {
            RoleKey::ClusterRole { name } | RoleKey::Role { name, .. } => name,
        }
    }

    /// The role's namespace (`""` for a ClusterRole).
    pub fn namespace(&self) -> &str {
        match self {
            RoleKey::ClusterRole { .. } => "",
            RoleKey::Role { namespace, .. } => namespace,
        }
    }
}

impl std::fmt::Display for RoleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoleKey::ClusterRole { name } => write!(f, "ClusterRole/{name}"),
            RoleKey::Role { namespace, name } => write!(f, "Role/{namespace}/{name}"),
        }
    }
}

/// A borrowed view of either kind of binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingRef<'a> {
    /// A ClusterRoleBinding.
    Cluster(&'a ClusterRoleBinding),
    /// A RoleBinding.
    Namespaced(&'a RoleBinding),
}

impl<'a> BindingRef<'a> {
    /// `ClusterRoleBinding` or `RoleBinding`.
    pub fn kind(&self) -> &'static str {
        match self {
            BindingRef::Cluster(_) => CLUSTER_ROLE_BINDING_KIND,
            BindingRef::Namespaced(_) => ROLE_BINDING_KIND,
        }
    }

    /// The binding's metadata.
    pub fn metadata(&self) -> &'a ObjectMeta {
        match self {
            BindingRef::Cluster(b) => &b.metadata,
            BindingRef::Namespaced(b) => &b.metadata,
        }
    }

    /// The binding's name.
    pub fn name(&self) -> &'a str {
        &self.metadata().name
    }

    /// The binding's namespace (`""` for a ClusterRoleBinding).
    pub fn namespace(&self) -> &'a str {
        &self.metadata().namespace
    }

    /// The subjects.
    pub fn subjects(&self) -> &'a [Subject] {
        match self {
            BindingRef::Cluster(b) => &b.subjects,
            BindingRef::Namespaced(b) => &b.subjects,
        }
    }

    /// The role reference.
    pub fn role_ref(&self) -> &'a RoleRef {
        match self {
            BindingRef::Cluster(b) => &b.role_ref,
            BindingRef::Namespaced(b) => &b.role_ref,
        }
    }

    /// The role it points at (`None` for an unsupported `roleRef.kind`).
    pub fn role_key(&self) -> Option<RoleKey> {
        RoleKey::from_role_ref(self.role_ref(), self.namespace())
    }

    /// kube-apiserver's description of this binding granting to `subject`.
    pub fn describe(&self, subject: &Subject) -> String {
        match self {
            BindingRef::Cluster(b) => b.describe(subject),
            BindingRef::Namespaced(b) => b.describe(subject),
        }
    }
}

/// One rule of one role, as the audit iterator yields it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleRule<'a> {
    /// `ClusterRole` or `Role`.
    pub role_kind: &'static str,
    /// The role's name.
    pub role_name: &'a str,
    /// The role's namespace (`""` for a ClusterRole).
    pub role_namespace: &'a str,
    /// Index of the rule in the role's `rules`.
    pub rule_index: usize,
    /// The rule.
    pub rule: &'a PolicyRule,
}

impl RoleRule<'_> {
    /// The role the rule belongs to.
    pub fn role_key(&self) -> RoleKey {
        if self.role_kind == CLUSTER_ROLE_KIND {
            RoleKey::cluster_role(self.role_name)
        } else {
            RoleKey::role(self.role_namespace, self.role_name)
        }
    }
}

/// Go's `%q` of a string (as `strconv.Quote`): double quotes, with `"`, `\` and control
/// characters escaped. Used so reasons read exactly like kube-apiserver's.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                let n = c as u32;
                if n <= 0xffff {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
