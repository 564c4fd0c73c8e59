//! A Kubernetes RBAC evaluator, exactly as kube-apiserver's `RBACAuthorizer` decides
//! (`reference/rbac.md`): ClusterRoleBindings always, RoleBindings only for a namespaced request in
//! their namespace; the first rule that allows wins; otherwise NoOpinion (RBAC never denies).
//! Objects load from multi-document YAML or JSON (`List`s included).
//!
//! Beyond `authorize`, the store answers the questions the kubectl plugin and the stand-in API
//! server ask offline: who can do something ([`RbacStore::subjects_allowed`]), which rules exist
//! ([`RbacStore::rules`]) and which bindings grant a role ([`RbacStore::bindings_referencing`]).
//!
//! Submodules: [`model`] (the objects and their JSON shape), [`eval`] (the rule matchers), and a
//! private loader.

pub mod eval;
mod load;
pub mod model;

use std::collections::BTreeMap;

use crate::identity::UserInfo;
use crate::review::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};

pub use eval::{
    api_group_matches, non_resource_url_matches, resource_matches, resource_name_matches,
    rule_allows, rule_grants, verb_matches,
};
pub use model::{
    go_quote, list_value, service_account_user_matches, BindingRef, ClusterRole,
    ClusterRoleBinding, ObjectMeta, PolicyRule, Role, RoleBinding, RoleKey, RoleRef, RoleRule,
    Subject, CLUSTER_ROLE_BINDING_KIND, CLUSTER_ROLE_KIND, DEFAULT_NAMESPACE, GROUP_KIND,
    RBAC_API_VERSION, RBAC_GROUP, ROLE_BINDING_KIND, ROLE_KIND, SERVICE_ACCOUNT_KIND,
    SERVICE_ACCOUNT_USER_PREFIX, USER_KIND, WILDCARD,
};

/// Why RBAC objects could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RbacError {
    /// The text is not YAML or JSON.
    #[error("{source_name}: document {doc}: {message}")]
    Syntax {
        /// File name or `-`.
        source_name: String,
        /// 1-based document number.
        doc: usize,
        /// What the parser said.
        message: String,
    },
    /// A document that is not an RBAC object (or List of them).
    #[error("{source_name}: document {doc}: unsupported kind `{kind}`: expected ClusterRole, Role, ClusterRoleBinding, RoleBinding or List")]
    UnknownKind {
        /// File name or `-`.
        source_name: String,
        /// 1-based document number.
        doc: usize,
        /// The kind found.
        kind: String,
    },
    /// A required field is missing or has the wrong type.
    #[error("{source_name}: document {doc}: {field}: {message}")]
    Field {
        /// File name or `-`.
        source_name: String,
        /// 1-based document number.
        doc: usize,
        /// Dotted field path.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// What is being asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attributes {
    /// A resource request.
    Resource(ResourceAttributes),
    /// A non-resource request.
    NonResource(NonResourceAttributes),
}

/// The `evaluationError` of a SubjectAccessReview spec with neither or both kinds of attributes.
pub const REVIEW_ATTRIBUTES_ERROR: &str =
    "exactly one of nonResourceAttributes or resourceAttributes must be specified";

impl Attributes {
    /// A resource request.
    pub fn resource(
        verb: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        name: &str,
        namespace: &str,
    ) -> Self {
        Attributes::Resource(ResourceAttributes {
            namespace: namespace.to_string(),
            verb: verb.to_string(),
            group: group.to_string(),
            version: String::new(),
            resource: resource.to_string(),
            subresource: subresource.to_string(),
            name: name.to_string(),
        })
    }

    /// The attributes a kubelet checks: `verb` on `nodes/<subresource>` named `node_name`.
    pub fn kubelet(verb: &str, subresource: &str, node_name: &str) -> Self {
        Attributes::Resource(ResourceAttributes::kubelet(verb, subresource, node_name))
    }

    /// A non-resource request.
    pub fn non_resource(verb: &str, path: &str) -> Self {
        Attributes::NonResource(NonResourceAttributes {
            path: path.to_string(),
            verb: verb.to_string(),
        })
    }

    /// The attributes of a SubjectAccessReview spec; `None` unless exactly one of
    /// `resourceAttributes` and `nonResourceAttributes` is set (the API server rejects such a
    /// review as invalid).
    pub fn from_review_spec(spec: &SubjectAccessReviewSpec) -> Option<Self> {
        match (&spec.resource_attributes, &spec.non_resource_attributes) {
            (Some(r), None) => Some(Attributes::Resource(r.clone())),
            (None, Some(n)) => Some(Attributes::NonResource(n.clone())),
            _ => None,
        }
    }

    /// The request namespace (`""` for cluster-scoped and non-resource requests).
    pub fn namespace(&self) -> &str {
        match self {
            Attributes::Resource(r) => &r.namespace,
            Attributes::NonResource(_) => "",
        }
    }

    /// The verb.
    pub fn verb(&self) -> &str {
        match self {
            Attributes::Resource(r) => &r.verb,
            Attributes::NonResource(n) => &n.verb,
        }
    }
}

/// Where an allow came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `ClusterRoleBinding` or `RoleBinding`.
    pub binding_kind: String,
    /// Binding name.
    pub binding_name: String,
    /// Binding namespace (`""` for ClusterRoleBindings).
    pub binding_namespace: String,
    /// `ClusterRole` or `Role`.
    pub role_kind: String,
    /// Role name.
    pub role_name: String,
    /// Index of the allowing rule in the role's `rules`.
    pub rule_index: usize,
}

impl Grant {
    fn new(binding: BindingRef<'_>, rule_index: usize) -> Self {
        let role_ref = binding.role_ref();
        Grant {
            binding_kind: binding.kind().to_string(),
            binding_name: binding.name().to_string(),
            binding_namespace: binding.namespace().to_string(),
            role_kind: role_ref.kind.clone(),
            role_name: role_ref.name.clone(),
            rule_index,
        }
    }

    /// The role that granted (a Role lives in the binding's namespace).
    pub fn role_key(&self) -> RoleKey {
        if self.role_kind == ROLE_KIND {
            RoleKey::role(self.binding_namespace.clone(), self.role_name.clone())
        } else {
            RoleKey::cluster_role(self.role_name.clone())
        }
    }
}

/// RBAC's answer: Allow with the grant, or NoOpinion. `reason` is kube-apiserver's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacDecision {
    /// Whether a rule allowed the request.
    pub allowed: bool,
    /// The reason string as kube-apiserver writes it.
    pub reason: String,
    /// The grant that allowed it.
    pub grant: Option<Grant>,
}

/// One way a subject reaches a request, for who-can: the subject (a service account with its
/// namespace resolved), and the binding, role and rule that allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectGrant {
    /// The subject; for a `ServiceAccount`, `namespace` is the resolved one.
    pub subject: Subject,
    /// The binding, role and rule.
    pub grant: Grant,
}

/// A binding whose `roleRef` cannot be resolved, with kube-apiserver's error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DanglingRef {
    /// `ClusterRoleBinding` or `RoleBinding`.
    pub binding_kind: &'static str,
    /// Binding name.
    pub binding_name: String,
    /// Binding namespace (`""` for ClusterRoleBindings).
    pub binding_namespace: String,
    /// The error, e.g. `clusterrole.rbac.authorization.k8s.io "x" not found`.
    pub error: String,
}

/// A loaded set of RBAC objects. Objects keep the order they were added in (which decides which
/// allowing binding a reason names); adding an object with the kind, namespace and name of an
/// existing one replaces it in place, as `kubectl apply` would.
#[derive(Debug, Clone, Default)]
pub struct RbacStore {
    cluster_roles: Vec<ClusterRole>,
    roles: Vec<Role>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    role_bindings: Vec<RoleBinding>,
    cluster_role_index: BTreeMap<String, usize>,
    role_index: BTreeMap<(String, String), usize>,
    cluster_role_binding_index: BTreeMap<String, usize>,
    role_binding_index: BTreeMap<(String, String), usize>,
}

/// Insert or replace `item` under `key`.
fn upsert<K: Ord, T>(items: &mut Vec<T>, index: &mut BTreeMap<K, usize>, key: K, item: T) {
    if let Some(slot) = index.get(&key).and_then(|&i| items.get_mut(i)) {
        *slot = item;
    } else {
        index.insert(key, items.len());
        items.push(item);
    }
}

/// `utilerrors.NewAggregate(errs).Error()`: one error as is; several de-duplicated, in brackets
/// when more than one distinct message remains.
fn aggregate(errors: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for e in errors {
        if !seen.contains(&e.as_str()) {
            seen.push(e);
        }
    }
    if seen.len() == 1 {
        seen.concat()
    } else {
        format!("[{}]", seen.join(", "))
    }
}

impl RbacStore {
    /// An empty store.
    pub fn new() -> Self {
        RbacStore::default()
    }

    /// A store holding every object in `text` (see [`RbacStore::load_str`]).
    pub fn parse(text: &str, source_name: &str) -> Result<Self, RbacError> {
        let mut store = RbacStore::new();
        store.load_str(text, source_name)?;
        Ok(store)
    }

    /// Load every object in `text` (YAML documents or JSON, `List`s flattened); `source_name`
    /// appears in errors. Returns how many objects were added (or replaced). On error nothing is
    /// added. A Role or RoleBinding without a namespace goes to `default`; the namespace of a
    /// cluster-scoped object is dropped.
    pub fn load_str(&mut self, text: &str, source_name: &str) -> Result<usize, RbacError> {
        let objects = load::parse_objects(text, source_name)?;
        let n = objects.len();
        for object in objects {
            match object {
                load::Object::ClusterRole(o) => self.insert_cluster_role(o),
                load::Object::Role(o) => self.insert_role(o),
                load::Object::ClusterRoleBinding(o) => self.insert_cluster_role_binding(o),
                load::Object::RoleBinding(o) => self.insert_role_binding(o),
            }
        }
        Ok(n)
    }

    /// Add or replace a ClusterRole.
    pub fn insert_cluster_role(&mut self, role: ClusterRole) {
        let key = role.metadata.name.clone();
        upsert(
            &mut self.cluster_roles,
            &mut self.cluster_role_index,
            key,
            role,
        );
    }

    /// Add or replace a Role.
    pub fn insert_role(&mut self, role: Role) {
        let key = (role.metadata.namespace.clone(), role.metadata.name.clone());
        upsert(&mut self.roles, &mut self.role_index, key, role);
    }

    /// Add or replace a ClusterRoleBinding.
    pub fn insert_cluster_role_binding(&mut self, binding: ClusterRoleBinding) {
        let key = binding.metadata.name.clone();
        upsert(
            &mut self.cluster_role_bindings,
            &mut self.cluster_role_binding_index,
            key,
            binding,
        );
    }

    /// Add or replace a RoleBinding.
    pub fn insert_role_binding(&mut self, binding: RoleBinding) {
        let key = (
            binding.metadata.namespace.clone(),
            binding.metadata.name.clone(),
        );
        upsert(
            &mut self.role_bindings,
            &mut self.role_binding_index,
            key,
            binding,
        );
    }

    /// Every ClusterRole, in load order.
    pub fn cluster_roles(&self) -> &[ClusterRole] {
        &self.cluster_roles
    }

    /// Every Role, in load order.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// Every ClusterRoleBinding, in load order.
    pub fn cluster_role_bindings(&self) -> &[ClusterRoleBinding] {
        &self.cluster_role_bindings
    }

    /// Every RoleBinding, in load order.
    pub fn role_bindings(&self) -> &[RoleBinding] {
        &self.role_bindings
    }

    /// Every binding: ClusterRoleBindings first, then RoleBindings.
    pub fn bindings(&self) -> impl Iterator<Item = BindingRef<'_>> {
        self.cluster_role_bindings
            .iter()
            .map(BindingRef::Cluster)
            .chain(self.role_bindings.iter().map(BindingRef::Namespaced))
    }

    /// The ClusterRole `name`.
    pub fn cluster_role(&self, name: &str) -> Option<&ClusterRole> {
        self.cluster_role_index
            .get(name)
            .and_then(|&i| self.cluster_roles.get(i))
    }

    /// The Role `namespace/name`.
    pub fn role(&self, namespace: &str, name: &str) -> Option<&Role> {
        self.role_index
            .get(&(namespace.to_string(), name.to_string()))
            .and_then(|&i| self.roles.get(i))
    }

    /// The rules of a role, if it exists.
    pub fn role_rules(&self, role: &RoleKey) -> Option<&[PolicyRule]> {
        match role {
            RoleKey::ClusterRole { name } => self.cluster_role(name).map(|r| r.rules.as_slice()),
            RoleKey::Role { namespace, name } => {
                self.role(namespace, name).map(|r| r.rules.as_slice())
            }
        }
    }

    /// How many objects the store holds.
    pub fn len(&self) -> usize {
        self.cluster_roles.len()
            + self.roles.len()
            + self.cluster_role_bindings.len()
            + self.role_bindings.len()
    }

    /// Whether the store holds no objects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `GetRoleReferenceRules`: the rules a binding in `binding_namespace` grants, or
    /// kube-apiserver's error text.
    pub fn resolve_role_ref(
        &self,
        role_ref: &RoleRef,
        binding_namespace: &str,
    ) -> Result<&[PolicyRule], String> {
        match role_ref.kind.as_str() {
            ROLE_KIND => self
                .role(binding_namespace, &role_ref.name)
                .map(|r| r.rules.as_slice())
                .ok_or_else(|| format!("role.{RBAC_GROUP} {} not found", go_quote(&role_ref.name))),
            CLUSTER_ROLE_KIND => self
                .cluster_role(&role_ref.name)
                .map(|r| r.rules.as_slice())
                .ok_or_else(|| {
                    format!(
                        "clusterrole.{RBAC_GROUP} {} not found",
                        go_quote(&role_ref.name)
                    )
                }),
            other => Err(format!(
                "unsupported role reference kind: {}",
                go_quote(other)
            )),
        }
    }

    /// The bindings `VisitRulesFor` walks for a request in `namespace`: every ClusterRoleBinding,
    /// then, when `namespace` is not empty, the RoleBindings in it.
    fn visited_bindings<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = BindingRef<'a>> {
        let namespaced = self
            .role_bindings
            .iter()
            .filter(move |b| !namespace.is_empty() && b.metadata.namespace == namespace)
            .map(BindingRef::Namespaced);
        self.cluster_role_bindings
            .iter()
            .map(BindingRef::Cluster)
            .chain(namespaced)
    }

    /// Authorize a request as kube-apiserver's RBAC authorizer: Allow with
    /// `RBAC: allowed by <binding description>` for the first rule that allows; otherwise
    /// NoOpinion with an empty reason, or `RBAC: <errors>` when a bound role could not be resolved.
    pub fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> RbacDecision {
        let mut errors: Vec<String> = Vec::new();
        for binding in self.visited_bindings(attrs.namespace()) {
            let ns = binding.namespace();
            let Some(subject) = binding.subjects().iter().find(|s| s.applies_to(user, ns)) else {
                continue;
            };
            match self.resolve_role_ref(binding.role_ref(), ns) {
                Err(e) => errors.push(e),
                Ok(rules) => {
                    if let Some(i) = rules.iter().position(|r| rule_allows(r, attrs)) {
                        return RbacDecision {
                            allowed: true,
                            reason: format!("RBAC: allowed by {}", binding.describe(subject)),
                            grant: Some(Grant::new(binding, i)),
                        };
                    }
                }
            }
        }
        RbacDecision {
            allowed: false,
            reason: if errors.is_empty() {
                String::new()
            } else {
                format!("RBAC: {}", aggregate(&errors))
            },
            grant: None,
        }
    }

    /// Answer a SubjectAccessReview as kube-apiserver would with RBAC as its only authorizer: the
    /// user is `spec.user`, `groups`, `uid` and `extra` as given (no groups are added). RBAC never
    /// denies, so `denied` is always false. A spec without exactly one kind of attributes gets
    /// `evaluationError` [`REVIEW_ATTRIBUTES_ERROR`] (the API server would reject it as invalid).
    pub fn authorize_review(&self, spec: &SubjectAccessReviewSpec) -> SubjectAccessReviewStatus {
        let Some(attrs) = Attributes::from_review_spec(spec) else {
            return SubjectAccessReviewStatus {
                allowed: false,
                denied: false,
                reason: String::new(),
                evaluation_error: REVIEW_ATTRIBUTES_ERROR.to_string(),
            };
        };
        let user = UserInfo {
            name: spec.user.clone(),
            uid: spec.uid.clone(),
            groups: spec.groups.clone(),
            extra: spec.extra.clone(),
        };
        let decision = self.authorize(&user, &attrs);
        SubjectAccessReviewStatus {
            allowed: decision.allowed,
            denied: false,
            reason: decision.reason,
            evaluation_error: String::new(),
        }
    }

    /// Who can: every (subject, binding, role, rule) through which some user would be allowed
    /// `attrs`, in visiting order (ClusterRoleBindings, then RoleBindings of the request's
    /// namespace; rules in order; subjects in order). Subjects that can match nobody (an unknown
    /// kind, a service account without a namespace in a ClusterRoleBinding) are left out; a
    /// service account comes with its resolved namespace. `User "*"` is a user literally named
    /// `*`, not everyone. Bindings whose role is missing grant nothing.
    pub fn subjects_allowed(&self, attrs: &Attributes) -> Vec<SubjectGrant> {
        let mut out = Vec::new();
        for binding in self.visited_bindings(attrs.namespace()) {
            let ns = binding.namespace();
            let Ok(rules) = self.resolve_role_ref(binding.role_ref(), ns) else {
                continue;
            };
            for (i, rule) in rules.iter().enumerate() {
                if !rule_allows(rule, attrs) {
                    continue;
                }
                for subject in binding.subjects() {
                    if let Some(subject) = subject.resolved(ns) {
                        out.push(SubjectGrant {
                            subject,
                            grant: Grant::new(binding, i),
                        });
                    }
                }
            }
        }
        out
    }

    /// Audit: every rule of every role, ClusterRoles first, in load and rule order.
    pub fn rules(&self) -> impl Iterator<Item = RoleRule<'_>> {
        let cluster = self.cluster_roles.iter().flat_map(|r| {
            r.rules.iter().enumerate().map(move |(i, rule)| RoleRule {
                role_kind: CLUSTER_ROLE_KIND,
                role_name: &r.metadata.name,
                role_namespace: "",
                rule_index: i,
                rule,
            })
        });
        let namespaced = self.roles.iter().flat_map(|r| {
            r.rules.iter().enumerate().map(move |(i, rule)| RoleRule {
                role_kind: ROLE_KIND,
                role_name: &r.metadata.name,
                role_namespace: &r.metadata.namespace,
                rule_index: i,
                rule,
            })
        });
        cluster.chain(namespaced)
    }

    /// Audit: the bindings that grant `role`. A ClusterRole is granted by ClusterRoleBindings and
    /// by RoleBindings in any namespace; a Role only by RoleBindings in its namespace.
    pub fn bindings_referencing(&self, role: &RoleKey) -> Vec<BindingRef<'_>> {
        self.bindings()
            .filter(|b| b.role_key().as_ref() == Some(role))
            .collect()
    }

    /// Audit: bindings whose `roleRef` cannot be resolved (a missing role, or a kind other than
    /// Role and ClusterRole), with kube-apiserver's error text.
    pub fn dangling_role_refs(&self) -> Vec<DanglingRef> {
        self.bindings()
            .filter_map(|b| {
                self.resolve_role_ref(b.role_ref(), b.namespace())
                    .err()
                    .map(|error| DanglingRef {
                        binding_kind: b.kind(),
                        binding_name: b.name().to_string(),
                        binding_namespace: b.namespace().to_string(),
                        error,
                    })
            })
            .collect()
    }
}
